//! The usage socket: a unix datagram socket the daemon binds and nginx's
//! workers write to. Only they may: the socket is 0600 and owned by the
//! user nginx.conf runs its workers as (connecting to a unix socket needs
//! write permission on it), so no other local user can forge a line.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use super::MAX_DATAGRAM;
use crate::service::Shared;

/// The user nginx's workers run as: nginx.conf's `user` directive, else
/// nginx's own default (`nobody`) when its master runs as root.
pub fn worker_user(nginx_conf: &str) -> String {
    let statements = nginx_conf.lines().map(|l| l.split('#').next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    statements
        .split([';', '{', '}'])
        .find_map(|s| {
            let mut words = s.split_whitespace();
            (words.next() == Some("user")).then(|| words.next().map(str::to_string)).flatten()
        })
        .unwrap_or_else(|| "nobody".to_string())
}

/// The uid of a user name (None: no such user).
fn uid_of(user: &str) -> Option<u32> {
    let name = std::ffi::CString::new(user).ok()?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getpwnam_r writes only
    // into `pwd` and `buf` (of the length given) and sets `found`.
    let r = unsafe { libc::getpwnam_r(name.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    (r == 0 && !found.is_null()).then_some(pwd.pw_uid)
}

/// Binds the socket at `path` (a socket left there by an earlier run is
/// replaced; anything else there is an error) for the workers' `user`.
/// Nothing is left at `path` if it fails.
pub fn bind(path: &Path, user: &str) -> std::io::Result<tokio::net::UnixDatagram> {
    use std::os::unix::fs::FileTypeExt;
    let uid = uid_of(user).ok_or_else(|| std::io::Error::other(format!("nginx's worker user '{user}' does not exist")))?;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(std::io::Error::other(format!("{} exists and is not a socket", path.display())));
        }
        std::fs::remove_file(path)?;
    }
    let socket = tokio::net::UnixDatagram::bind(path)?;
    let owned = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::os::unix::fs::chown(path, Some(uid), None));
    if let Err(e) = owned {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(socket)
}

/// The usage socket of `--usage-socket` for the workers of `nginx_conf`,
/// bound at start: where it cannot be made, one error line says why and
/// nginx is told of no socket (its servers log no usage line at all).
pub fn open(path: &str, nginx_conf: &Path) -> Option<tokio::net::UnixDatagram> {
    let user = worker_user(&std::fs::read_to_string(nginx_conf).unwrap_or_default());
    match bind(Path::new(path), &user) {
        Ok(s) => {
            tracing::info!(socket = %path, user = %user, "counting per-route usage");
            Some(s)
        }
        Err(e) => {
            tracing::error!(socket = %path, error = %e, "the usage socket cannot be made: per-route usage is not counted");
            None
        }
    }
}

/// Reads datagrams from the usage socket for as long as the daemon runs,
/// counting each (see `Usage::record`).
pub async fn run(shared: Arc<Shared>, socket: tokio::net::UnixDatagram) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => shared.usage().record(&buf[..n], shared.metrics()),
            Err(e) => {
                tracing::warn!(error = %e, "reading the usage socket");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_user_of_nginx_conf() {
        assert_eq!(worker_user("user www-data;\nworker_processes auto;"), "www-data");
        assert_eq!(worker_user("# user nginx;\nuser  nginx  nginx;"), "nginx");
        assert_eq!(worker_user("worker_processes 1;\nevents { }"), "nobody");
        assert_eq!(worker_user("http { useragent x; }"), "nobody");
    }

    #[tokio::test]
    async fn the_socket_is_for_the_workers_alone_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.sock");
        let me = unsafe { libc::getuid() };
        let user = ["root", "nobody"].into_iter().find(|u| uid_of(u) == Some(me)).unwrap_or("root");
        let first = bind(&path, user);
        if me != 0 && user == "root" {
            assert!(first.is_err(), "only root may give the socket away");
            assert!(std::fs::symlink_metadata(&path).is_err(), "a socket that failed is not left behind");
            return;
        }
        drop(first.unwrap());
        let socket = bind(&path, user).expect("a stale socket is replaced");
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender.send_to(b"hello", &path).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(socket.recv(&mut buf).await.unwrap(), 5);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "not a socket").unwrap();
        assert!(bind(&path, user).is_err(), "a file that is not a socket is left alone");
        let stale = dir.path().join("x.sock");
        drop(std::os::unix::net::UnixDatagram::bind(&stale).unwrap());
        std::fs::set_permissions(&stale, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(bind(&stale, "no-such-user-here").is_err());
        let left = std::fs::symlink_metadata(&stale).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(left.ok(), Some(0o644), "an unknown user is refused before anything at the path is touched");
    }
}
