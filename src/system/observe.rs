//! Reads what is on the system. Cheap reads (the namespace directory, sysfs,
//! nginx's files) cost no process; a deep look into one network costs four
//! read-only commands and is done only where needed (see `reconcile`).

use super::parse::{parse_batch, parse_ip_addr, parse_iptables_save, parse_wg_dump, sysctls_match};
use super::procfs::{link_up, read_trimmed};
use super::{SysError, System};
use crate::layout::{NAMESPACE_SYSCTLS, OWNED_ALIAS, VETH_NS_NAME};
use crate::observed::{HostVeth, Observed, ObservedBridge, ObservedNetwork, WgDump};

impl System {
    /// Everything that costs no process: namespaces, root links, nginx files.
    pub fn observe_cheap(&self) -> Observed {
        let mut o = Observed { namespaces: self.namespaces(), ..Default::default() };
        self.observe_root_links(&mut o);
        o.nginx_stream = std::fs::read_to_string(&self.paths.nginx_stream).ok();
        o.nginx_http = std::fs::read_to_string(&self.paths.nginx_http).ok();
        o.nginx_running = self.nginx_master().is_some();
        o
    }

    /// Ports of the namespaces with our prefix.
    pub fn namespaces(&self) -> std::collections::BTreeSet<u16> {
        let entries = std::fs::read_dir(&self.paths.netns_dir).into_iter().flatten().flatten();
        entries.filter_map(|e| e.file_name().to_str().and_then(|n| self.layout.port_of_netns(n))).collect()
    }

    /// Our links in the root namespace, from sysfs: WireGuard interfaces not
    /// (yet) moved, the root ends of veths, and the bridge.
    fn observe_root_links(&self, o: &mut Observed) {
        let net = &self.paths.sys_class_net;
        let owned = |name: &str| read_trimmed(&net.join(name).join("ifalias")).as_deref() == Some(OWNED_ALIAS);
        for e in std::fs::read_dir(net).into_iter().flatten().flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if let Some(port) = self.layout.port_of_wg(&name) {
                o.wg_in_root.insert(port, owned(&name));
            }
            if let Some(port) = self.layout.port_of_veth_host(&name) {
                let dir = net.join(&name);
                let master = std::fs::read_link(dir.join("master")).ok();
                let on_bridge = master.as_ref().and_then(|m| m.file_name()).is_some_and(|m| m == self.layout.bridge.as_str());
                let isolated = read_trimmed(&dir.join("brport/isolated")).as_deref() == Some("1");
                o.host_veths.insert(port, HostVeth { on_bridge, up: link_up(&dir), isolated, owned: owned(&name) });
            }
        }
        let br = net.join(&self.layout.bridge);
        if br.exists() {
            o.bridge = Some(ObservedBridge { up: link_up(&br), addresses: None, owned: owned(&self.layout.bridge) });
        }
    }

    /// Reads the bridge's addresses (one process).
    pub async fn observe_bridge_addresses(&self, o: &mut Observed) -> Result<(), SysError> {
        if let Some(b) = &mut o.bridge {
            let out = self.run(self.tools.ip(["-json", "addr", "show", "dev", &self.layout.bridge]).read_only()).await?;
            let json = serde_json::from_str(&out).map_err(|e| unreadable("the bridge's addresses", e))?;
            let links = parse_ip_addr(&json).map_err(|e| unreadable("the bridge's addresses", e))?;
            b.addresses = Some(links.get(&self.layout.bridge).map(|l| l.addresses.clone()).unwrap_or_default());
        }
        Ok(())
    }

    /// Network `port`'s WireGuard state, if its interface is there, with the
    /// peer lines that did not parse.
    pub async fn wg_dump(&self, port: u16) -> Result<Option<(WgDump, Vec<String>)>, SysError> {
        let Some(text) = self.wg_show_dump(&self.layout.netns(port), &self.layout.wg(port)).await? else {
            return Ok(None);
        };
        parse_wg_dump(&text).map(Some).map_err(|e| unreadable(&format!("`wg show {} dump`", self.layout.wg(port)), e))
    }

    /// A full look into one network's namespace (four read-only commands).
    pub async fn observe_network(&self, port: u16) -> Result<ObservedNetwork, SysError> {
        let ns = self.layout.netns(port);
        let wg = self.layout.wg(port);
        let (links, routes) = parse_batch(&self.ip_batch(&ns).await?, &wg).map_err(|e| unreadable(&format!("links of {ns}"), e))?;
        let mut n =
            ObservedNetwork { wg_link: links.get(&wg).cloned(), uplink: links.get(VETH_NS_NAME).cloned(), routes, ..Default::default() };
        if n.wg_link.is_some() {
            if let Some((dump, problems)) = self.wg_dump(port).await? {
                n.wg = Some(dump);
                n.problems = problems;
            }
        }
        n.rules = parse_iptables_save(&self.iptables_save(&ns).await?);
        n.forwarding = sysctls_match(&self.read_namespace_sysctls(&ns).await?, &NAMESPACE_SYSCTLS);
        Ok(n)
    }
}

fn unreadable(what: &str, detail: impl ToString) -> SysError {
    SysError::Unreadable { what: what.to_string(), detail: detail.to_string() }
}
