//! Namespaces, links, the bridge, addresses and a namespace's sysctls: the
//! operations that run on their own (the bridge's, deletions). A network's
//! own link work runs as lines of one `ip -batch` ([`batch`], where every
//! line is built, also those run here alone). Expected failures are mapped
//! by kind: deleting what is already gone is not an error.

pub mod batch;

use super::exec::runner::{Cmd, FailureKind};
use super::{SysError, System};
use crate::layout::NAMESPACE_SYSCTLS;
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
    /// One [`batch`] line as its own `ip` command; `ns: None` is the root
    /// namespace. (Its words hold no spaces: names and addresses are
    /// validated to their exact form.)
    fn ip_line(&self, ns: Option<&str>, line: &str) -> Cmd {
        let words = line.split_whitespace();
        match ns {
            Some(ns) => self.tools.ip_in(ns, words),
            None => self.tools.ip(words),
        }
    }

    /// Tags a root-namespace link as the gateway's: only tagged links are
    /// ever deleted.
    pub async fn tag_owned(&self, link: &str) -> Result<(), SysError> {
        self.run(self.ip_line(None, &batch::tag(link))).await.map(drop)
    }

    pub async fn create_bridge(&self) -> Result<(), SysError> {
        let bridge = &self.layout.bridge;
        self.run(self.tools.ip(["link", "add", bridge, "type", "bridge"])).await?;
        self.tag_owned(bridge).await
    }

    /// Adds or removes an address; `ns: None` is the root namespace.
    pub async fn address(&self, ns: Option<&str>, change: Change, cidr: Cidr, dev: &str) -> Result<(), SysError> {
        self.run(self.ip_line(ns, &batch::address(change, cidr, dev))).await.map(drop)
    }

    /// `ip link set DEV up` (with an MTU if given), in a namespace or the root.
    pub async fn link_up(&self, ns: Option<&str>, dev: &str, mtu: Option<u32>) -> Result<(), SysError> {
        self.run(self.ip_line(ns, &batch::link_up(dev, mtu))).await.map(drop)
    }

    pub async fn delete_namespace(&self, ns: &str) -> Result<(), SysError> {
        self.run(self.tools.ip(["netns", "del", ns])).await.map(drop)
    }

    /// Deletes a link; one already gone (e.g. a veth the kernel is still
    /// tearing down with its namespace) is not an error. Returns whether it
    /// was there.
    pub async fn delete_link(&self, ns: Option<&str>, link: &str) -> Result<bool, SysError> {
        match self.runner.run(&self.ip_line(ns, &batch::link_del(link))).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == FailureKind::Missing => Ok(false),
            Err(e) => Err(e.into()),
        }
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
