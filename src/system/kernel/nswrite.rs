//! Writes a namespace's sysctls without a process: the calling thread
//! enters the namespace (`setns`) and writes /proc/sys, which shows the
//! namespace of the thread that opens it. Called on a thread of its own
//! that ends afterwards (`Runner::run_in_thread`), so no other work ever
//! runs in the namespace it entered.

use std::os::fd::AsRawFd;
use std::path::Path;

/// Enters the namespace of `netns` (its `/run/netns` file) and sets each
/// `(key, value)`; a key this kernel lacks (e.g. IPv6's without IPv6) is
/// skipped, as `sysctl -e` does.
pub fn write_sysctls(netns: &Path, settings: &[(&str, &str)]) -> Result<(), String> {
    let ns = std::fs::File::open(netns).map_err(|e| format!("opening {}: {e}", netns.display()))?;
    // SAFETY: a valid descriptor; CLONE_NEWNET changes only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("entering {}: {}", netns.display(), std::io::Error::last_os_error()));
    }
    for (key, value) in settings {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        match std::fs::write(&path, value) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("setting {key} = {value}: {e}")),
            Ok(()) => {}
        }
    }
    Ok(())
}
