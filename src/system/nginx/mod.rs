//! nginx control: its two files written atomically, checked with `nginx -t`,
//! reloaded (answering once new workers run) or started; the previous files
//! put back when the check or the reload fails, so a bad config is never
//! left in place.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::exec::wait::wait_for;
use super::kernel::procfs::{ProcStat, children_of, read_trimmed, started_at};
use super::{SysError, System};
use crate::render::NginxFiles;

const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// Where the new content of `path` is written before it is renamed over
/// it: in a directory of its own beside `path`'s directory
/// (`/etc/nginx/sites-enabled.gateway-tmp/gateway.conf`), on the same file
/// system, so a crash before the rename never leaves a second copy where
/// nginx includes every file of a directory (Debian's `sites-enabled/*`);
/// no glob of nginx's reaches it.
fn temp_path(path: &Path) -> Option<std::path::PathBuf> {
    let dir = path.parent().filter(|d| d.file_name().is_some())?;
    let mut own = dir.as_os_str().to_os_string();
    own.push(".gateway-tmp");
    Some(Path::new(&own).join(path.file_name()?))
}

fn write_atomic(path: &Path, content: &str) -> Result<(), SysError> {
    let err = |source| SysError::Write { path: path.display().to_string(), source };
    let tmp = temp_path(path).ok_or_else(|| err(std::io::Error::other("the file must be in a directory other than /")))?;
    let tmp_dir = tmp.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(tmp_dir).map_err(err)?;
    std::fs::write(&tmp, content).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    // Empty now; another instance writing beside it keeps it (not empty).
    let _ = std::fs::remove_dir(tmp_dir);
    Ok(())
}

/// Whether an nginx worker has stopped accepting connections: its title is
/// `nginx: worker process is shutting down` then (or it is gone).
fn shutting_down(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).map_or(true, |c| String::from_utf8_lossy(&c).contains("shutting down"))
}

/// What an nginx process's title (`/proc/PID/cmdline`) says it is: a
/// worker taking connections (`nginx: worker process`), a worker draining
/// after a reload (`nginx: worker process is shutting down`), or something
/// else (the cache manager or loader).
pub fn worker_state(title: &str) -> Option<WorkerState> {
    let title = title.trim_end_matches(['\0', ' ']);
    if !title.contains("worker process") {
        return None;
    }
    Some(if title.contains("is shutting down") { WorkerState::Draining } else { WorkerState::Active })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Active,
    Draining,
}

/// nginx's workers by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Workers {
    pub active: u64,
    pub draining: u64,
}

/// Whether workers started at `worker` cannot have read files written at
/// `written` (unknown either way: they can, as far as anyone can tell).
fn loaded_before(worker: Option<SystemTime>, written: Option<SystemTime>) -> bool {
    matches!((worker, written), (Some(w), Some(f)) if w < f)
}

impl System {
    /// The pid of nginx's master process, if it runs: the pid file may be
    /// stale (its pid reused by another program) or name a zombie.
    pub fn nginx_master(&self) -> Option<u32> {
        let pid = read_trimmed(&self.paths.nginx_pid)?.parse::<u32>().ok()?;
        let stat = ProcStat::read(Path::new(&format!("/proc/{pid}")))?;
        (stat.comm == "nginx" && stat.alive()).then_some(pid)
    }

    /// nginx's workers, active and draining, from the titles of the master's
    /// children in /proc (no process); none when nginx is not running.
    pub fn nginx_workers(&self) -> Workers {
        let mut workers = Workers::default();
        let Some(master) = self.nginx_master() else { return workers };
        for pid in super::kernel::procfs::children_of_quick(master) {
            let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            match worker_state(&String::from_utf8_lossy(&title)) {
                Some(WorkerState::Active) => workers.active += 1,
                Some(WorkerState::Draining) => workers.draining += 1,
                None => {}
            }
        }
        workers
    }

    /// Whether the running nginx has not loaded the files on disk: its
    /// newest worker started before the files were last written, as after a
    /// crash between writing them and the reload (the files then equal the
    /// desired ones, and nothing else would ever reload nginx). Reads /proc
    /// and two file times, no process. False when nginx is not running or
    /// nothing tells (no files, no workers).
    pub fn nginx_runs_older_files(&self) -> bool {
        let Some(master) = self.nginx_master() else { return false };
        let written = [&self.paths.nginx_stream, &self.paths.nginx_http]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max();
        let newest_worker = children_of(master).into_iter().filter_map(started_at).max();
        loaded_before(newest_worker, written)
    }

    /// The figures nginx's connections depend on: the main config's worker
    /// directives (None if it cannot be read), the CPUs (`worker_processes
    /// auto`), and the open-file limit an nginx the daemon starts inherits.
    pub fn nginx_worker_limits(&self) -> Option<(crate::render::WorkerLimits, u64, u64)> {
        let conf = std::fs::read_to_string(&self.paths.nginx_conf).ok()?;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let mut rlimit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct given.
        let open_files = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlimit) } == 0 { rlimit.rlim_cur } else { 1024 };
        Some((crate::render::WorkerLimits::parse(&conf), cpus, open_files))
    }

    pub async fn nginx_test(&self) -> Result<(), SysError> {
        self.runner.run(&self.tools.nginx(&self.paths.nginx_conf, ["-t", "-q"])).await.map(drop).map_err(SysError::NginxCheck)
    }

    /// Checks the config, then starts nginx.
    pub async fn start_nginx(&self) -> Result<(), SysError> {
        self.nginx_test().await?;
        self.launch_nginx().await
    }

    /// Starts nginx (not running), first removing the SNI hop socket a
    /// killed nginx left behind: nginx would fail to bind it again. Only a
    /// socket is removed, never a file of another kind.
    async fn launch_nginx(&self) -> Result<(), SysError> {
        use std::os::unix::fs::FileTypeExt;
        for stale in Self::hop_sockets(&self.paths.nginx_sni_socket) {
            if std::fs::symlink_metadata(&stale).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(&stale).map_err(|source| SysError::Write { path: stale.display().to_string(), source })?;
            }
        }
        self.run(self.tools.nginx(&self.paths.nginx_conf, Vec::<String>::new())).await.map(drop)
    }

    /// The SNI hop's socket and those of the HTTPS routes with connection
    /// limits beside it (`SOCKET.N`, see the stream renderer).
    fn hop_sockets(sni: &Path) -> Vec<std::path::PathBuf> {
        let mut out = vec![sni.to_path_buf()];
        let (Some(dir), Some(name)) = (sni.parent(), sni.file_name().and_then(|n| n.to_str())) else { return out };
        let prefix = format!("{name}.");
        let Ok(entries) = std::fs::read_dir(dir) else { return out };
        for e in entries.flatten() {
            let hop = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if hop {
                out.push(e.path());
            }
        }
        out
    }

    /// `-s reload` only signals the master. Waits until new workers run the
    /// new config and the old ones no longer accept connections (gone, or
    /// shutting down gracefully: their title says so), so an applied route
    /// is live for every new connection when the API says so. No new worker
    /// appears when nginx could not load the config (e.g. a listen port in
    /// use, which `nginx -t` does not check).
    async fn reload_nginx(&self, master: u32) -> Result<(), SysError> {
        let old_workers = children_of(master);
        self.run(self.tools.nginx(&self.paths.nginx_conf, ["-s", "reload"])).await?;
        let switched = || {
            let now = children_of(master);
            !now.is_subset(&old_workers) && old_workers.iter().filter(|p| now.contains(p)).all(|p| shutting_down(*p))
        };
        wait_for(switched, RELOAD_WAIT).await.map_err(|_| SysError::NginxNotReloaded { secs: RELOAD_WAIT.as_secs() })
    }

    /// Writes both files, checks the whole config, then reloads (or starts)
    /// nginx; on failure the previous files are put back, so the files always
    /// show what nginx runs and the next pass tries again. Returns whether
    /// nginx was reloaded.
    pub async fn write_nginx(&self, files: &NginxFiles) -> Result<bool, SysError> {
        let targets = [(&self.paths.nginx_stream, &files.stream), (&self.paths.nginx_http, &files.http)];
        let previous: Vec<Option<String>> = targets.iter().map(|(p, _)| std::fs::read_to_string(p).ok()).collect();
        let restore = || {
            for ((path, _), old) in targets.iter().zip(&previous) {
                let _ = match old {
                    Some(old) => write_atomic(path, old),
                    None => std::fs::remove_file(path).map_err(|source| SysError::Write { path: path.display().to_string(), source }),
                };
            }
        };
        let loaded = async {
            for (path, content) in targets {
                write_atomic(path, content)?;
            }
            super::fault::point("after-nginx-write");
            self.nginx_test().await?;
            match self.nginx_master() {
                Some(master) => self.reload_nginx(master).await.map(|()| true),
                None => self.launch_nginx().await.map(|()| false),
            }
        };
        let result = loaded.await;
        if let Err(err) = result {
            restore();
            return Err(SysError::NginxRestored(Box::new(err)));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_sni_socket_goes_before_nginx_starts_and_nothing_else_does() {
        use crate::system::{Backend, Script};
        let host = crate::testing::FakeHost::new();
        let system = host.system(Script::new(), Backend::Userspace);
        let socket = &system.paths.nginx_sni_socket;
        // A killed nginx leaves its socket file behind.
        drop(std::os::unix::net::UnixListener::bind(socket).unwrap());
        assert!(socket.exists());
        system.start_nginx().await.unwrap();
        assert!(!socket.exists(), "nginx would fail to bind it");
        std::fs::write(socket, "not a socket").unwrap();
        // The hops of routes with connection limits beside it, too.
        let hop = socket.with_file_name("sni.sock.3");
        let other = socket.with_file_name("sni.sock.x");
        drop(std::os::unix::net::UnixListener::bind(&hop).unwrap());
        drop(std::os::unix::net::UnixListener::bind(&other).unwrap());
        system.start_nginx().await.unwrap();
        assert_eq!(std::fs::read_to_string(socket).unwrap(), "not a socket", "only a socket is removed");
        assert!(!hop.exists() && other.exists(), "a hop's socket goes, nothing else");
    }

    #[test]
    fn temporary_files_stay_out_of_the_directory_nginx_includes() {
        let tmp = temp_path(Path::new("/etc/nginx/sites-enabled/gateway.conf")).unwrap();
        assert_eq!(tmp, Path::new("/etc/nginx/sites-enabled.gateway-tmp/gateway.conf"));
        assert_eq!(temp_path(Path::new("/gateway.conf")), None, "no directory beside /");
        // A write leaves the target alone in its directory, and nothing beside it.
        let dir = tempfile::tempdir().unwrap();
        let included = dir.path().join("sites-enabled");
        std::fs::create_dir(&included).unwrap();
        let target = included.join("gateway.conf");
        write_atomic(&target, "one").unwrap();
        write_atomic(&target, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "two");
        let names = |d: &Path| std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect::<Vec<_>>();
        assert_eq!(names(&included), ["gateway.conf"]);
        assert_eq!(names(dir.path()), ["sites-enabled"], "the temporary directory goes once empty");
        // What a crash before the rename leaves is outside the included directory.
        std::fs::create_dir(included.with_extension("gateway-tmp")).unwrap();
        std::fs::write(temp_path(&target).unwrap(), "half").unwrap();
        assert_eq!(names(&included), ["gateway.conf"]);
        write_atomic(&target, "three").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "three", "a leftover is overwritten");
    }

    #[test]
    fn workers_are_told_apart_by_their_titles() {
        // As nginx writes them over its argv (padded with NULs or spaces).
        assert_eq!(worker_state("nginx: worker process\0\0\0"), Some(WorkerState::Active));
        assert_eq!(worker_state("nginx: worker process is shutting down\0"), Some(WorkerState::Draining));
        assert_eq!(worker_state("nginx: worker process is shutting down   "), Some(WorkerState::Draining));
        assert_eq!(worker_state("nginx: cache manager process"), None);
        assert_eq!(worker_state("nginx: master process nginx -c /etc/nginx/nginx.conf"), None);
    }

    #[test]
    fn workers_older_than_the_files_have_not_loaded_them() {
        let t = SystemTime::now();
        let later = t + Duration::from_millis(30);
        assert!(loaded_before(Some(t), Some(later)), "files written after the newest worker started");
        assert!(!loaded_before(Some(later), Some(t)), "a worker started after the write read it");
        assert!(!loaded_before(None, Some(t)), "no worker: nothing tells");
        assert!(!loaded_before(Some(t), None), "no files: nothing to load");
    }
}
