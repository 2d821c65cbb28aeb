//! Reads what is on the system. Nothing here starts a process except
//! [`System::observe_rules`] (`iptables-save` inside one namespace): the
//! namespace directory, sysfs and nginx's files are read directly, and
//! every namespace's links, addresses, routes, sysctls, WireGuard state and
//! rule generation come from one pass of a reader thread ([`observer`]).
//! `reconcile` decides whose rules need reading.

use std::collections::BTreeMap;

use super::firewall::save_parse::parse_rules;
use super::kernel::netlink::{link_qdiscs, parse_links, parse_routes};
use super::kernel::observer::{NsRaw, Target, WgRaw};
use super::kernel::procfs::{link_up, read_trimmed};
use super::wireguard::Source;
use super::wireguard::observe as wgobserve;
use super::{SysError, System};
use std::collections::BTreeSet;

use crate::layout::{NAMESPACE_SYSCTLS, OWNED_ALIAS, VETH_NS_NAME};
use crate::observed::{HostVeth, Observed, ObservedBridge, ObservedNetwork, ObservedRules};
use crate::render::Family;

impl System {
    /// Everything that costs no process: namespaces, root links, nginx files.
    pub fn observe_cheap(&self) -> Observed {
        self.observe_cheap_trusting(&BTreeSet::new())
    }

    /// The same, but the root ends of the veths of the `trusted` networks
    /// are not read (`Observed::host_veths_trusted`).
    pub fn observe_cheap_trusting(&self, trusted: &BTreeSet<u16>) -> Observed {
        let (namespaces, stale_namespaces) = self.namespace_files();
        let mut o = Observed { namespaces, stale_namespaces, ..Default::default() };
        self.observe_root_links(&mut o, trusted);
        o.nginx_stream = std::fs::read_to_string(&self.paths.nginx_stream).ok();
        o.nginx_http = std::fs::read_to_string(&self.paths.nginx_http).ok();
        o.nginx_running = self.nginx_master().is_some();
        o
    }

    /// Ports of the namespaces with our prefix.
    pub fn namespaces(&self) -> BTreeSet<u16> {
        self.namespace_files().0
    }

    /// Ports of the namespace files with our prefix: those that hold a
    /// namespace, and the stale ones (see `Observed::stale_namespaces`). A
    /// namespace is mounted on its file, so it lies on another device than
    /// the directory (its inode is the namespace's, on nsfs).
    fn namespace_files(&self) -> (BTreeSet<u16>, BTreeSet<u16>) {
        use std::os::unix::fs::MetadataExt;
        let dir_dev = std::fs::metadata(&self.paths.netns_dir).map(|m| m.dev()).ok();
        let (mut live, mut stale) = (BTreeSet::new(), BTreeSet::new());
        for e in std::fs::read_dir(&self.paths.netns_dir).into_iter().flatten().flatten() {
            let Some(port) = e.file_name().to_str().and_then(|n| self.layout.port_of_netns(n)) else { continue };
            let mounted = std::fs::metadata(e.path()).is_ok_and(|m| Some(m.dev()) != dir_dev);
            if mounted {
                live.insert(port)
            } else {
                stale.insert(port)
            };
        }
        (live, stale)
    }

    /// Our links in the root namespace, from sysfs: WireGuard interfaces not
    /// (yet) moved, the root ends of veths, and the bridge.
    fn observe_root_links(&self, o: &mut Observed, trusted: &BTreeSet<u16>) {
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
                if trusted.contains(&port) {
                    o.host_veths_trusted.insert(port);
                    continue;
                }
                let dir = net.join(&name);
                let master = std::fs::read_link(dir.join("master")).ok();
                let on_bridge = master.as_ref().and_then(|m| m.file_name()).is_some_and(|m| m == self.layout.bridge.as_str());
                let isolated = read_trimmed(&dir.join("brport/isolated")).as_deref() == Some("1");
                o.host_veths.insert(port, HostVeth { on_bridge, up: link_up(&dir), isolated, owned: owned(&name), qdisc: None });
            }
        }
        let br = net.join(&self.layout.bridge);
        if br.exists() {
            o.bridge = Some(ObservedBridge { up: link_up(&br), addresses: None, owned: owned(&self.layout.bridge) });
        }
    }

    /// Runs the reader on a thread of its own: it enters namespaces, which
    /// must never happen to a thread the runtime reuses.
    async fn observe_raw(&self, targets: Vec<Target>) -> Vec<Result<NsRaw, String>> {
        let observer = self.observer.clone();
        let count = targets.len();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new().name("gateway-observe".into()).spawn(move || {
            let _ = tx.send(observer.observe(&targets));
        });
        let failed = |why: &str| (0..count).map(|_| Err(why.to_string())).collect();
        match spawned {
            Ok(_) => rx.await.unwrap_or_else(|_| failed("the namespace reader stopped")),
            Err(e) => failed(&format!("cannot start the namespace reader: {e}")),
        }
    }

    fn target(&self, port: u16, count_connections: bool) -> Target {
        let (genl_wg, uapi) = match self.wg_source(&self.layout.wg(port)) {
            Source::Genl(name) => (Some(name), None),
            Source::Uapi(sock) => (None, Some(sock)),
        };
        let netns = Some(self.paths.netns_dir.join(self.layout.netns(port)));
        let conntrack_to = count_connections.then(|| self.layout.veth_ns_ip(port));
        Target { netns, genl_wg, uapi, conntrack_to }
    }

    /// Reads the bridge's addresses (no process: netlink in our namespace).
    pub async fn observe_bridge_addresses(&self, o: &mut Observed) -> Result<(), SysError> {
        if let Some(b) = &mut o.bridge {
            let raw = self.observe_raw(vec![Target { netns: None, genl_wg: None, uapi: None, conntrack_to: None }]).await.pop();
            let raw = raw.unwrap_or(Err("no answer".into())).map_err(|e| unreadable("the bridge's addresses", e))?;
            let (links, _) = parse_links(&raw.links, &raw.addrs);
            b.addresses = Some(links.get(&self.layout.bridge).map(|l| l.addresses.clone()).unwrap_or_default());
            for (name, qdisc) in link_qdiscs(&raw.links) {
                if let Some(v) = self.layout.port_of_veth_host(&name).and_then(|p| o.host_veths.get_mut(&p)) {
                    v.qdisc = Some(qdisc);
                }
            }
        }
        Ok(())
    }

    /// Every network of `ports` in one pass of the reader, without a
    /// process: all but their rules (`rules: None`, see [`Self::observe_rules`]).
    /// Open connections are counted only where `count_connections` says
    /// (networks with routes): a conntrack dump walks the kernel's table of
    /// every namespace, about 4 ms each here even when filtered.
    pub async fn observe_networks(
        &self,
        ports: &[u16],
        count_connections: impl Fn(u16) -> bool,
    ) -> BTreeMap<u16, Result<ObservedNetwork, SysError>> {
        let raws = self.observe_raw(ports.iter().map(|p| self.target(*p, count_connections(*p))).collect()).await;
        ports
            .iter()
            .zip(raws)
            .map(|(port, raw)| {
                let ns = self.layout.netns(*port);
                let veth_ip = self.layout.veth_ns_ip(*port);
                let n =
                    raw.map_err(|e| unreadable(&format!("namespace {ns}"), e)).map(|raw| network_of(raw, &self.layout.wg(*port), veth_ip));
                (*port, n)
            })
            .collect()
    }

    /// The gateway's rules in one network's namespace: one `iptables-save`,
    /// and one `ip6tables-save` where the kernel has IPv6.
    pub async fn observe_rules(&self, port: u16) -> Result<ObservedRules, SysError> {
        let ns = self.layout.netns(port);
        let v6 = if self.ipv6 { Some(self.iptables_save(&ns, Family::Ipv6).await?) } else { None };
        Ok(parse_rules(&self.iptables_save(&ns, Family::Ipv4).await?, v6.as_deref()))
    }

    /// A full look into one network, rules included (one process).
    pub async fn observe_network(&self, port: u16) -> Result<ObservedNetwork, SysError> {
        let mut n = self.observe_networks(&[port], |_| true).await.remove(&port).unwrap_or(Err(SysError::NotDesired(port)))?;
        n.rules = Some(self.observe_rules(port).await?);
        Ok(n)
    }
}

/// One namespace's answers in the observed types.
fn network_of(raw: NsRaw, wg: &str, veth_ip: std::net::Ipv4Addr) -> ObservedNetwork {
    let (links, _) = parse_links(&raw.links, &raw.addrs);
    let wg_link = links.get(wg).cloned();
    let routes = wg_link.as_ref().map(|l| parse_routes(&raw.routes, l.ifindex)).unwrap_or_default();
    let mut n = ObservedNetwork {
        uplink: links.get(VETH_NS_NAME).cloned(),
        uplink_qdisc: link_qdiscs(&raw.links).remove(VETH_NS_NAME),
        open_connections: super::kernel::netlink::open_connections(&raw.conntrack, veth_ip),
        routes,
        forwarding: sysctls_match(&raw.sysctls),
        rules_generation: raw.nft_generation,
        ..Default::default()
    };
    if wg_link.is_some() {
        let parsed = match raw.wg {
            Some(Ok(WgRaw::Uapi(text))) => wgobserve::parse_uapi(&text),
            Some(Ok(WgRaw::Genl(msgs))) => wgobserve::parse_device(&msgs),
            Some(Err(e)) => Err(e),
            None => Err("not asked".into()),
        };
        match parsed {
            Ok((dump, problems)) => {
                n.wg = Some(dump);
                n.problems = problems;
            }
            // No usable answer: planned as unconfigured (a `wg syncconf`
            // then says what is wrong), and no counters are dropped.
            Err(e) => n.problems.push(format!("reading {wg}: {e}")),
        }
    }
    n.wg_link = wg_link;
    n
}

/// Every key this kernel has holds the wanted value (keys it lacks, e.g.
/// without IPv6, are skipped); nothing read is not set.
pub fn sysctls_match(values: &[Option<String>]) -> bool {
    let read: Vec<(&str, &str)> = values.iter().zip(NAMESPACE_SYSCTLS).filter_map(|(v, (_, want))| Some((v.as_deref()?, want))).collect();
    !read.is_empty() && read.iter().all(|(have, want)| have == want)
}

fn unreadable(what: &str, detail: impl ToString) -> SysError {
    SysError::Unreadable { what: what.to_string(), detail: detail.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_values() {
        let v = |s: &[Option<&str>]| s.iter().map(|x| x.map(str::to_string)).collect::<Vec<_>>();
        assert!(sysctls_match(&v(&[Some("1"), Some("1"), Some("1")])));
        assert!(sysctls_match(&v(&[Some("1"), None, Some("1")])), "a kernel without IPv6 lacks that key");
        assert!(!sysctls_match(&v(&[Some("1"), Some("0"), Some("1")])));
        assert!(!sysctls_match(&v(&[None, None, None])), "nothing read is not set");
    }

    #[test]
    fn namespace_files_that_hold_no_namespace_are_stale() {
        let host = crate::testing::FakeHost::new();
        host.add_namespace(51820);
        host.add_stale_namespace(51821);
        let system = host.system(crate::system::Script::new(), crate::system::Backend::Kernel);
        let o = system.observe_cheap();
        assert_eq!((o.namespaces, o.stale_namespaces), ([51820].into(), [51821].into()));
        assert_eq!(system.namespaces(), [51820].into());
    }
}
