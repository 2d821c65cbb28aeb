//! Namespaces, links, the bridge, veths, addresses, routes and a
//! namespace's sysctls: one method per operation, each a command line built
//! by [`Tools`](super::Tools) and run by the runner. Expected failures are
//! mapped by kind: deleting what is already gone is not an error.

pub mod batch;

use super::exec::runner::FailureKind;
use super::{SysError, System};
use crate::layout::{NAMESPACE_SYSCTLS, OWNED_ALIAS};
use crate::types::Cidr;

/// `add` or `del` for addresses and routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Add,
    Del,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Add => "add",
            Change::Del => "del",
        }
    }
}

impl System {
    /// Tags a root-namespace link as the gateway's: only tagged links are
    /// ever deleted.
    pub async fn tag_owned(&self, link: &str) -> Result<(), SysError> {
        self.run(self.tools.ip(["link", "set", "dev", link, "alias", OWNED_ALIAS])).await.map(drop)
    }

    pub async fn create_bridge(&self) -> Result<(), SysError> {
        let bridge = &self.layout.bridge;
        self.run(self.tools.ip(["link", "add", bridge, "type", "bridge"])).await?;
        self.tag_owned(bridge).await
    }

    /// Adds or removes an address; `ns: None` is the root namespace.
    pub async fn address(&self, ns: Option<&str>, change: Change, cidr: Cidr, dev: &str) -> Result<(), SysError> {
        let args = ["addr", change.verb(), &cidr.to_string(), "dev", dev].map(String::from);
        let cmd = match ns {
            Some(ns) => self.tools.ip_in(ns, args),
            None => self.tools.ip(args),
        };
        self.run(cmd).await.map(drop)
    }

    /// `ip link set DEV up` (with an MTU if given), in a namespace or the root.
    pub async fn link_up(&self, ns: Option<&str>, dev: &str, mtu: Option<u32>) -> Result<(), SysError> {
        let mut args = vec!["link".to_string(), "set".into(), dev.into()];
        if let Some(mtu) = mtu {
            args.extend(["mtu".into(), mtu.to_string()]);
        }
        args.push("up".into());
        let cmd = match ns {
            Some(ns) => self.tools.ip_in(ns, args),
            None => self.tools.ip(args),
        };
        self.run(cmd).await.map(drop)
    }

    pub async fn create_namespace(&self, ns: &str) -> Result<(), SysError> {
        self.run(self.tools.ip(["netns", "add", ns])).await?;
        self.link_up(Some(ns), "lo", None).await
    }

    pub async fn delete_namespace(&self, ns: &str) -> Result<(), SysError> {
        self.run(self.tools.ip(["netns", "del", ns])).await.map(drop)
    }

    /// Moves a root-namespace link into a namespace.
    pub async fn move_link(&self, link: &str, ns: &str) -> Result<(), SysError> {
        self.run(self.tools.ip(["link", "set", link, "netns", ns])).await.map(drop)
    }

    /// Deletes a link; one already gone (e.g. a veth the kernel is still
    /// tearing down with its namespace) is not an error. Returns whether it
    /// was there.
    pub async fn delete_link(&self, ns: Option<&str>, link: &str) -> Result<bool, SysError> {
        let cmd = match ns {
            Some(ns) => self.tools.ip_in(ns, ["link", "del", link]),
            None => self.tools.ip(["link", "del", link]),
        };
        match self.runner.run(&cmd).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == FailureKind::Missing => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// A route through `dev` (replaced if one exists) or its removal.
    pub async fn route(&self, ns: &str, change: Change, cidr: Cidr, dev: &str) -> Result<(), SysError> {
        let verb = if change == Change::Add { "replace" } else { "del" };
        self.run(self.tools.ip_in(ns, ["route", verb, &cidr.to_string(), "dev", dev])).await.map(drop)
    }

    /// A veth pair: `host` in the root namespace (tagged), `inside` in `ns`
    /// with the MAC address `mac`.
    pub async fn create_veth(&self, host: &str, inside: &str, mac: &str, ns: &str) -> Result<(), SysError> {
        self.run(self.tools.ip(["link", "add", host, "type", "veth", "peer", "name", inside, "address", mac, "netns", ns])).await?;
        self.tag_owned(host).await
    }

    /// Makes a link an isolated port of the bridge: isolated ports cannot
    /// reach each other, so networks stay apart.
    pub async fn attach_isolated(&self, link: &str) -> Result<(), SysError> {
        self.run(self.tools.ip(["link", "set", link, "master", &self.layout.bridge, "up"])).await?;
        self.run(self.tools.ip(["link", "set", "dev", link, "type", "bridge_slave", "isolated", "on"])).await.map(drop)
    }

    /// Sets [`NAMESPACE_SYSCTLS`] inside a namespace from a thread that
    /// enters it (no process; keys this kernel lacks are skipped).
    pub async fn set_namespace_sysctls(&self, ns: &str) -> Result<(), SysError> {
        let settings: Vec<String> = NAMESPACE_SYSCTLS.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let line = format!("setns {ns} sysctl -e -w {}", settings.join(" "));
        let path = self.paths.netns_dir.join(ns);
        Ok(self.runner.run_in_thread(line, move || super::kernel::nswrite::write_sysctls(&path, &NAMESPACE_SYSCTLS)).await?)
    }
}
