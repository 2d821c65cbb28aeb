//! Starting wireguard-go so that a network whose WireGuard cannot start
//! fails at once with the reason, leaving nothing behind, and so that
//! 1,000 of them fit on a default host.
//!
//! wireguard-go creates its TUN and socket file, then forks a daemon that
//! holds the TUN, takes an inotify instance and serves the socket; the
//! command returns once forked. While the daemon lives its TUN exists, so a
//! TUN gone before the socket answers means it died (most often: no inotify
//! instance left). Then, or when it never answers, its TUN and socket file
//! are removed (deleting the TUN ends a daemon that is stuck).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{Driver, Source};
use crate::system::exec::runner::Cmd;
use crate::system::exec::wait::wait_for;
use crate::system::kernel::link_listeners;
use crate::system::kernel::procfs::{self, processes_running};
use crate::system::{SysError, System};

/// How long wireguard-go gets to answer on its socket.
pub const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// How long wireguard-go gets to exit.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// wireguard-go: one process per interface, serving a UAPI socket.
pub(super) struct Userspace;

impl Driver for Userspace {
    /// wireguard-go makes the interface: no line can.
    fn create_line(&self, _: &str) -> Option<String> {
        None
    }

    fn create<'a>(&'a self, sys: &'a System, iface: &'a str) -> BoxFuture<'a, Result<(), SysError>> {
        Box::pin(async move {
            // A wireguard-go whose interface went with its namespace exits a
            // moment later: one started meanwhile would find the name's
            // socket in use and fail. (A stale socket, of one killed, is
            // replaced by the new one at once.)
            let sock = sys.wireguard_socket(iface);
            let start = Instant::now();
            while start.elapsed() < EXIT_WAIT && uapi_answers(&sock).await {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sys.start_wireguard_go(iface).await?;
            crate::system::fault::point("after-wireguard-go-start");
            Ok(())
        })
    }

    fn wait_gone<'a>(&'a self, sys: &'a System, iface: &'a str) -> BoxFuture<'a, Result<(), SysError>> {
        Box::pin(async move {
            let sock = sys.wireguard_socket(iface);
            wait_for(|| !sock.exists(), EXIT_WAIT)
                .await
                .map_err(|_| SysError::WireguardGoLingers { iface: iface.to_string(), secs: EXIT_WAIT.as_secs() })
        })
    }

    fn undo_unfinished<'a>(&'a self, sys: &'a System, iface: &'a str) -> BoxFuture<'a, Result<(), SysError>> {
        Box::pin(sys.stop_wireguard_go(iface))
    }

    fn source(&self, sys: &System, iface: &str) -> Source {
        Source::Uapi(sys.wireguard_socket(iface))
    }

    /// Each wireguard-go takes an inotify instance.
    fn make_room(&self, sys: &System, networks: usize) -> Result<(), SysError> {
        sys.ensure_inotify_instances(networks)
    }
}

/// inotify instances left for everything else when raising the limit.
const INOTIFY_HEADROOM: u64 = 256;

impl System {
    /// Starts wireguard-go for `wg` and waits until it answers (see the module).
    pub(crate) async fn start_wireguard_go(&self, wg: &str) -> Result<(), SysError> {
        let sock = self.wireguard_socket(wg);
        // The runner passes no LOG_LEVEL: with it the forked daemon would
        // keep our output pipes open (and this command would never end).
        if let Err(e) = self.run(Cmd::new(&self.tools.wireguard_go, [wg])).await {
            self.remove_failed_start(wg, &sock).await;
            return Err(e);
        }
        let tun = self.paths.sys_class_net.join(wg);
        let start = Instant::now();
        loop {
            if uapi_answers(&sock).await {
                self.quiet_wireguard_go(wg);
                return Ok(());
            }
            let failure = if !tun.exists() {
                Some(SysError::WireguardGoDied { iface: wg.to_string(), hint: self.inotify_hint() })
            } else if start.elapsed() > ANSWER_WAIT {
                Some(SysError::WireguardGoSilent { sock: sock.display().to_string(), secs: ANSWER_WAIT.as_secs() })
            } else {
                None
            };
            if let Some(e) = failure {
                self.remove_failed_start(wg, &sock).await;
                return Err(e);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Takes the wireguard-go serving `wg` out of the root namespace's link
    /// events (see `kernel::link_listeners`); where it cannot, the root
    /// batches are paced for it instead (said once in the log).
    fn quiet_wireguard_go(&self, wg: &str) {
        let Ok(text) = std::fs::read_to_string(&self.paths.proc_net_netlink) else { return };
        let listeners = link_listeners::parse(&text);
        let Some(pid) = listeners.iter().map(|l| l.portid).find(|p| link_listeners::serves(&self.paths.proc_dir, *p, wg)) else {
            return;
        };
        match link_listeners::quiet(&self.paths.proc_dir, pid, wg, &listeners) {
            Ok(n) => tracing::debug!(wg, pid, sockets = n, "wireguard-go no longer hears the root namespace's link events"),
            Err(e) => {
                static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(wg, error = %e, "cannot take wireguard-go out of the root namespace's link events (pidfd_getfd): link changes are paced for it instead, slower at hundreds of networks");
                }
            }
        }
    }

    /// Removes what a failed start left: its TUN (which ends the daemon if
    /// it still runs) and its socket file.
    async fn remove_failed_start(&self, wg: &str, sock: &Path) {
        if self.paths.sys_class_net.join(wg).exists() {
            let _ = self.delete_link(None, wg).await;
        }
        let _ = std::fs::remove_file(sock);
    }

    /// What may have ended a wireguard-go: the inotify instances in use by
    /// root against `fs.inotify.max_user_instances`.
    fn inotify_hint(&self) -> String {
        let limit = procfs::read_trimmed(&self.paths.inotify_max_user_instances).unwrap_or_else(|| "?".into());
        let used = procfs::inotify_instances_of_uid(0);
        format!(
            "root uses {used} inotify instances of fs.inotify.max_user_instances = {limit}, and each wireguard-go takes one; if that is the limit, raise it (the daemon does so itself before it starts wireguard-go for many networks)"
        )
    }

    /// Raises `fs.inotify.max_user_instances` when `networks` wireguard-go
    /// (one instance each) plus some headroom would not fit; says so once.
    pub fn ensure_inotify_instances(&self, networks: usize) -> Result<(), SysError> {
        let path = &self.paths.inotify_max_user_instances;
        let Some(current) = procfs::read_trimmed(path).and_then(|v| v.parse::<u64>().ok()) else {
            return Ok(());
        };
        let needed = networks as u64 + INOTIFY_HEADROOM;
        if current >= needed {
            return Ok(());
        }
        let raised = needed.div_ceil(1024) * 1024;
        std::fs::write(path, format!("{raised}\n")).map_err(|source| SysError::Write { path: path.display().to_string(), source })?;
        tracing::info!(
            from = current,
            to = raised,
            networks,
            "raised fs.inotify.max_user_instances: each wireguard-go takes one inotify instance"
        );
        Ok(())
    }

    /// Ends a wireguard-go serving `iface` (found by its command line,
    /// `wireguard-go IFACE`: the name carries our prefix), e.g. one started
    /// before a crash that had not created its interface yet, and removes
    /// the socket a killed one leaves.
    async fn stop_wireguard_go(&self, iface: &str) -> Result<(), SysError> {
        let running = || processes_running("wireguard-go", iface);
        for (signal, wait) in [(libc::SIGTERM, 5), (libc::SIGKILL, 2)] {
            let pids = running();
            if pids.is_empty() {
                break;
            }
            tracing::warn!(iface, ?pids, "stopping a wireguard-go an interrupted pass left");
            for pid in pids {
                // SAFETY: kill(2) with a pid read from /proc has no memory-safety preconditions.
                unsafe { libc::kill(pid as libc::pid_t, signal) };
            }
            let _ = wait_for(|| running().is_empty(), std::time::Duration::from_secs(wait)).await;
        }
        if !running().is_empty() {
            return Err(SysError::WireguardGoLingers { iface: iface.to_string(), secs: 7 });
        }
        let sock = self.wireguard_socket(iface);
        match std::fs::remove_file(&sock) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SysError::Write { path: sock.display().to_string(), source: e }),
            _ => Ok(()),
        }
    }
}

/// Whether a wireguard-go control socket accepts a UAPI `get` and answers
/// it, within a second (async: a stuck socket must not block the runtime).
async fn uapi_answers(sock: &Path) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::UnixStream::connect(sock).await.ok()?;
        stream.write_all(b"get=1\n\n").await.ok()?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // The answer ends with an empty line after `errno=N`; it holds the
        // private key, so it is read and dropped, never logged.
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.ends_with(b"\n\n") {
                break;
            }
        }
        Some(answer.windows(8).any(|w| w == b"errno=0\n"))
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::system::{Backend, Reply, Script};
    use crate::testing::FakeHost;

    #[tokio::test]
    async fn the_inotify_limit_is_raised_only_when_needed() {
        let host = FakeHost::new();
        let s = host.system(Script::new(), Backend::Userspace);
        std::fs::write(&s.paths.inotify_max_user_instances, "128\n").unwrap();
        s.ensure_inotify_instances(100).unwrap();
        assert_eq!(std::fs::read_to_string(&s.paths.inotify_max_user_instances).unwrap(), "1024\n", "100 + 256 do not fit in 128");
        s.ensure_inotify_instances(700).unwrap();
        assert_eq!(std::fs::read_to_string(&s.paths.inotify_max_user_instances).unwrap(), "1024\n", "fits: left alone");
        s.ensure_inotify_instances(1000).unwrap();
        assert_eq!(std::fs::read_to_string(&s.paths.inotify_max_user_instances).unwrap(), "2048\n");
    }

    /// A wireguard-go whose daemon dies (here: its TUN never appears) fails
    /// the start at once, not after the answer wait, and its socket file
    /// goes.
    #[tokio::test]
    async fn a_wireguard_go_that_dies_fails_fast_and_leaves_no_socket() {
        let host = FakeHost::new();
        let s = host.system(Script::new().on("wireguard-go wg51820", Reply::ok("")), Backend::Userspace);
        std::fs::write(&s.paths.inotify_max_user_instances, "128\n").unwrap();
        let sock = s.paths.wireguard_sock_dir.join("wg51820.sock");
        std::fs::write(&sock, "").unwrap();
        let start = std::time::Instant::now();
        let err = s.start_wireguard_go("wg51820").await.unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(2), "failed fast: {:?}", start.elapsed());
        assert!(err.contains("wg51820") && err.contains("max_user_instances = 128"), "{err}");
        assert!(!sock.exists(), "the stale socket file is removed");
    }

    #[tokio::test]
    async fn a_missing_binary_fails_at_once() {
        let host = FakeHost::new();
        let s = host.system(Script::new().on("wireguard-go", Reply::not_found()), Backend::Userspace);
        let err = s.start_wireguard_go("wg51820").await.unwrap_err().to_string();
        assert!(err.contains("could not be started"), "{err}");
    }
}
