//! Fault injection for crash tests: with `GATEWAY_FAULT=POINT` in its
//! environment the daemon kills itself with SIGKILL (as a crash, an OOM
//! kill or a power cut would end it) when it reaches POINT. Deliberately
//! not an option: only tests set it. The points:
//!
//! - `after-nginx-write`: nginx's files are written, not yet checked or
//!   loaded;
//! - `after-wireguard-go-start`: wireguard-go answers on its socket, its
//!   interface is not yet tagged as the gateway's.

use std::sync::OnceLock;

pub fn point(name: &str) {
    static FAULT: OnceLock<Option<String>> = OnceLock::new();
    if FAULT.get_or_init(|| std::env::var("GATEWAY_FAULT").ok()).as_deref() == Some(name) {
        tracing::error!(point = name, "GATEWAY_FAULT: the daemon kills itself here");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}
