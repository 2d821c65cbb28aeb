//! The tools the gateway drives, and the command lines it builds with them.
//! Every command is built here, so the `ip -n NS` / `ip netns exec NS` forms
//! exist once.

use std::path::{Path, PathBuf};

use super::runner::Cmd;

/// Paths of the tools the gateway drives.
#[derive(Debug, Clone)]
pub struct Tools {
    pub ip: String,
    pub wg: String,
    pub wireguard_go: String,
    pub iptables_save: String,
    pub iptables_restore: String,
    pub ip6tables_save: String,
    pub ip6tables_restore: String,
    pub tc: String,
    pub nginx: String,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            ip: "ip".into(),
            wg: "wg".into(),
            wireguard_go: "wireguard-go".into(),
            iptables_save: "iptables-save".into(),
            iptables_restore: "iptables-restore".into(),
            ip6tables_save: "ip6tables-save".into(),
            ip6tables_restore: "ip6tables-restore".into(),
            tc: "tc".into(),
            nginx: "nginx".into(),
        }
    }
}

/// The absolute path of a bare program name, looked up in `path` (a
/// `PATH`-style list) once; a name with a `/`, or one not found, stays as it is.
pub fn resolve_program(name: &str, path: &str) -> String {
    if name.contains('/') {
        return name.to_string();
    }
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
    };
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| executable(p))
        .map_or_else(|| name.to_string(), |p| p.to_string_lossy().into_owned())
}

impl Tools {
    /// Every bare name replaced by its absolute path: each spawn then costs
    /// one `execve`, not one per `PATH` entry.
    pub fn resolved(self, path: &str) -> Tools {
        let r = |name: String| resolve_program(&name, path);
        Tools {
            ip: r(self.ip),
            wg: r(self.wg),
            wireguard_go: r(self.wireguard_go),
            iptables_save: r(self.iptables_save),
            iptables_restore: r(self.iptables_restore),
            ip6tables_save: r(self.ip6tables_save),
            ip6tables_restore: r(self.ip6tables_restore),
            tc: r(self.tc),
            nginx: r(self.nginx),
        }
    }

    /// `ip ARGS` in the root namespace.
    pub fn ip<I: IntoIterator<Item = S>, S: Into<String>>(&self, args: I) -> Cmd {
        Cmd::new(&self.ip, args)
    }

    /// `ip -n NS ARGS`: iproute2 inside a namespace.
    pub fn ip_in<I: IntoIterator<Item = S>, S: Into<String>>(&self, ns: &str, args: I) -> Cmd {
        Cmd::new(&self.ip, ["-n".to_string(), ns.to_string()].into_iter().chain(args.into_iter().map(Into::into)))
    }

    /// `ip netns exec NS PROGRAM ARGS`: any other tool inside a namespace.
    pub fn in_netns<I: IntoIterator<Item = S>, S: Into<String>>(&self, ns: &str, program: &str, args: I) -> Cmd {
        let prefix = ["netns", "exec", ns, program].map(String::from);
        Cmd::new(&self.ip, prefix.into_iter().chain(args.into_iter().map(Into::into)))
    }

    /// `nginx -c CONF ARGS`.
    pub fn nginx<I: IntoIterator<Item = S>, S: Into<String>>(&self, conf: &Path, args: I) -> Cmd {
        let prefix = ["-c".to_string(), conf.to_string_lossy().into_owned()];
        Cmd::new(&self.nginx, prefix.into_iter().chain(args.into_iter().map(Into::into)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let t = Tools::default();
        assert_eq!(t.ip(["link", "del", "x"]).line(), "ip link del x");
        assert_eq!(t.ip_in("ns1", ["addr", "show"]).line(), "ip -n ns1 addr show");
        assert_eq!(t.in_netns("ns1", &t.wg, ["show", "wg1", "dump"]).line(), "ip netns exec ns1 wg show wg1 dump");
        assert_eq!(t.nginx(Path::new("/etc/nginx/nginx.conf"), ["-t", "-q"]).line(), "nginx -c /etc/nginx/nginx.conf -t -q");
    }

    #[test]
    fn bare_names_resolve_once_to_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("mytool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("plainfile"), "").unwrap();
        let path = format!("/nonexistent:{}", dir.path().display());
        assert_eq!(resolve_program("mytool", &path), tool.to_string_lossy());
        assert_eq!(resolve_program("plainfile", &path), "plainfile", "not executable: left to fail at use");
        assert_eq!(resolve_program("absent", &path), "absent");
        assert_eq!(resolve_program("/usr/bin/x", &path), "/usr/bin/x");
    }
}
