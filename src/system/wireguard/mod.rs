//! WireGuard interfaces. Two backends: the kernel module (`ip link add
//! type wireguard`, [`kernel`]) and wireguard-go ([`userspace`]). Either
//! way the interface is born in the root namespace, so its UDP socket
//! listens on the host, and is moved afterwards; it is configured with `wg`
//! and observed ([`observe`]) the same way. What differs is the [`Driver`]
//! trait, and nothing outside this room asks which backend runs.

use std::path::PathBuf;

use futures_util::future::BoxFuture;

use super::exec::runner::Runner;
use super::exec::tools::Tools;
use super::{SysError, System};

mod kernel;
pub mod observe;
mod userspace;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Kernel,
    Userspace,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        }
    }

    /// The backend's behaviour: the one place that tells them apart.
    fn driver(self) -> &'static dyn Driver {
        match self {
            Backend::Kernel => &kernel::Kernel,
            Backend::Userspace => &userspace::Userspace,
        }
    }

    /// The line of the root namespace's `ip -batch` that creates interface
    /// `iface`, where the kernel makes it; `None` where the backend's own
    /// process does ([`System::create_wg_untagged`]).
    pub fn create_line(self, iface: &str) -> Option<String> {
        self.driver().create_line(iface)
    }

    /// `auto`: kernel if `ip link add ... type wireguard` works here.
    pub async fn detect(runner: &Runner, tools: &Tools, choice: &str) -> Result<Backend, String> {
        match choice {
            "kernel" => Ok(Backend::Kernel),
            "userspace" => Ok(Backend::Userspace),
            "auto" => {
                let probe = format!("gwprobe{}", std::process::id() % 100_000);
                match runner.run(&tools.ip(["link", "add", &probe, "type", "wireguard"])).await {
                    Ok(_) => {
                        let _ = runner.run(&tools.ip(["link", "del", &probe])).await;
                        Ok(Backend::Kernel)
                    }
                    Err(_) => Ok(Backend::Userspace),
                }
            }
            other => Err(format!("unknown WireGuard backend '{other}': use kernel, userspace or auto")),
        }
    }
}

/// Where an interface's state is observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Over generic netlink, by the interface's name (kernel).
    Genl(String),
    /// On wireguard-go's UAPI socket.
    Uapi(PathBuf),
}

/// What differs between the backends, one file each.
trait Driver: Sync {
    /// The `ip -batch` line that creates `iface`, if a line can.
    fn create_line(&self, iface: &str) -> Option<String>;
    /// Creates interface `iface` in the root namespace (not yet tagged).
    fn create<'a>(&'a self, sys: &'a System, iface: &'a str) -> BoxFuture<'a, Result<(), SysError>>;
    /// After the namespace holding `iface` was deleted: waits until
    /// whatever served it is gone.
    fn wait_gone<'a>(&'a self, sys: &'a System, iface: &'a str) -> BoxFuture<'a, Result<(), SysError>>;
    /// Ends what an interrupted creation of `iface` left besides its link.
    fn undo_unfinished<'a>(&'a self, sys: &'a System, iface: &'a str) -> BoxFuture<'a, Result<(), SysError>>;
    /// Where `iface`'s state is observed.
    fn source(&self, sys: &System, iface: &str) -> Source;
    /// Before interfaces are created with `networks` networks desired:
    /// makes room for them.
    fn make_room(&self, sys: &System, networks: usize) -> Result<(), SysError>;
}

impl System {
    pub(in crate::system) fn wireguard_socket(&self, iface: &str) -> PathBuf {
        self.paths.wireguard_sock_dir.join(format!("{iface}.sock"))
    }

    /// Creates interface `iface` in the root namespace, untagged (the
    /// caller records its intent before and tags it after).
    pub(in crate::system) async fn create_wg_untagged(&self, iface: &str) -> Result<(), SysError> {
        self.backend.driver().create(self, iface).await
    }

    /// Waits until what served network `port`'s interface is gone (with
    /// wireguard-go: its socket removed; nothing to wait for with the
    /// kernel backend).
    pub async fn wait_wireguard_go_gone(&self, port: u16) -> Result<(), SysError> {
        self.backend.driver().wait_gone(self, &self.layout.wg(port)).await
    }

    /// Ends what an interrupted creation of interface `iface` left (see
    /// [`super::intent`]) besides its link.
    pub(in crate::system) async fn undo_unfinished_wg(&self, iface: &str) -> Result<(), SysError> {
        self.backend.driver().undo_unfinished(self, iface).await
    }

    /// Where interface `iface`'s state is observed.
    pub(in crate::system) fn wg_source(&self, iface: &str) -> Source {
        self.backend.driver().source(self, iface)
    }

    /// Makes room for the interfaces of `networks` networks before some
    /// are created; a failure is logged, not fatal (creating one may fail
    /// later, with its reason).
    pub fn make_room_for_wg(&self, networks: usize) {
        if let Err(e) = self.backend.driver().make_room(self, networks) {
            tracing::warn!(error = %e, "cannot make room for the WireGuard interfaces");
        }
    }

    /// `wg syncconf` inside the namespace: the whole configuration on stdin
    /// (it holds the private key), peers not in it removed.
    pub async fn wg_syncconf(&self, ns: &str, iface: &str, conf: String) -> Result<(), SysError> {
        let cmd = self.tools.in_netns(ns, &self.tools.wg, ["syncconf", iface, "/dev/stdin"]).stdin(conf);
        self.run(cmd).await.map(drop)
    }

    /// `wg setconf`: like `syncconf`, but every peer is set anew, so
    /// endpoints WireGuard learned are forgotten (a standby's).
    pub async fn wg_setconf(&self, ns: &str, iface: &str, conf: String) -> Result<(), SysError> {
        let cmd = self.tools.in_netns(ns, &self.tools.wg, ["setconf", iface, "/dev/stdin"]).stdin(conf);
        self.run(cmd).await.map(drop)
    }

    /// `wg addconf` (changes only what the text sets; see `render::wg_kick`).
    pub async fn wg_addconf(&self, ns: &str, iface: &str, conf: String) -> Result<(), SysError> {
        let cmd = self.tools.in_netns(ns, &self.tools.wg, ["addconf", iface, "/dev/stdin"]).stdin(conf);
        self.run(cmd).await.map(drop)
    }
}
