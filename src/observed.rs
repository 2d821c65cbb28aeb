//! What the system looks like, in the same types as the desired state, so the
//! planner compares typed values. Filled by `system::observe` (from sysfs,
//! the namespace directory, nginx's files and the tools' output).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::render::{Family, Jump};
use crate::types::{Cidr, PublicKey, SecretKey};

/// One peer as `wg show IFACE dump` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgPeer {
    pub preshared_key: Option<SecretKey>,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<Cidr>,
    /// Unix seconds; 0 = never.
    pub latest_handshake: i64,
    pub rx: u64,
    pub tx: u64,
    pub keepalive: Option<u16>,
}

/// A WireGuard interface as `wg show IFACE dump` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgDump {
    pub private_key: Option<SecretKey>,
    pub public_key: Option<PublicKey>,
    /// 0 when none is set.
    pub listen_port: u16,
    pub peers: BTreeMap<PublicKey, WgPeer>,
}

/// A link as `ip -json addr` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    /// Changes when the interface is recreated (indexes are not reused soon).
    pub ifindex: u32,
    pub mtu: u32,
    pub up: bool,
    /// Global-scope addresses only (link-local ones come and go on their own), sorted.
    pub addresses: Vec<Cidr>,
}

/// The gateway's own rules as `iptables-save` and `ip6tables-save` print them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedRules {
    pub nat: Vec<String>,
    pub filter: Vec<String>,
    /// IPv6's filter; None where IPv6 rules are not read (a kernel without IPv6).
    pub filter6: Option<Vec<String>>,
    /// Jumps (from `render::JUMPS`) present in the built-in chains.
    pub jumps: BTreeSet<Jump>,
    /// The families whose FORWARD policy is DROP.
    pub forward_drop: BTreeSet<Family>,
}

/// What one network looks like inside its namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedNetwork {
    pub wg: Option<WgDump>,
    pub wg_link: Option<Link>,
    pub uplink: Option<Link>,
    /// Forwarding and the other `layout::NAMESPACE_SYSCTLS` are set.
    pub forwarding: bool,
    /// The gateway's rules; `None` when not read this pass (reading them
    /// costs a process): the planner then takes them as last verified.
    pub rules: Option<ObservedRules>,
    /// nf_tables' ruleset generation of the namespace when it was read: it
    /// changes with every change to its rules, so while it stays the rules
    /// need no reading. `None` where nf_tables cannot tell.
    pub rules_generation: Option<u32>,
    /// Static routes through the WireGuard interface (not the kernel's own), sorted.
    pub routes: Vec<Cidr>,
    /// A peer's desired endpoint differs from the one it was last given:
    /// WireGuard's own (possibly roamed) endpoint must not hide that change.
    pub endpoints_changed: bool,
    /// Problems met while reading (e.g. a peer line that did not parse).
    pub problems: Vec<String>,
    /// The root qdisc kind of the namespace end of the veth (`htb` where
    /// the gateway shapes it), read with the links.
    pub uplink_qdisc: Option<String>,
    /// Both ends' tc trees; `None` when not read (see `render::tc::steps`).
    pub shaping: Option<crate::render::tc::ObservedTc>,
    /// Connections open on the veth's address, by protocol and DNAT port
    /// (from the namespace's conntrack table, read with the links).
    pub open_connections: BTreeMap<(crate::types::Transport, u16), u64>,
}

/// The root-namespace end of a network's veth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostVeth {
    pub on_bridge: bool,
    pub up: bool,
    pub isolated: bool,
    /// Created by the gateway (tagged with `layout::OWNED_ALIAS`): only such
    /// links are ever deleted, whatever their name.
    pub owned: bool,
    /// Its root qdisc kind, when the root namespace's links were read (a
    /// drift check): `htb` where the gateway shapes it.
    pub qdisc: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedBridge {
    pub up: bool,
    /// Created by the gateway; only then deleted, or stripped of other addresses.
    pub owned: bool,
    /// None when not read this time (assumed right, see `reconcile`).
    pub addresses: Option<Vec<Cidr>>,
}

/// The whole system as far as the gateway is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub bridge: Option<ObservedBridge>,
    /// Ports of the namespaces with our prefix.
    pub namespaces: BTreeSet<u16>,
    /// Ports whose namespace name is taken by a file that holds no
    /// namespace (nothing mounted on it): left by a crash inside `ip netns
    /// add` or `del`, or by a mount namespace that ended (a container
    /// restart). Nothing can enter or create it until the file goes.
    pub stale_namespaces: BTreeSet<u16>,
    /// WireGuard interfaces with our prefix still in the root namespace
    /// (the value: created by the gateway).
    pub wg_in_root: BTreeMap<u16, bool>,
    /// Root ends of veths with our prefix, by port.
    pub host_veths: BTreeMap<u16, HostVeth>,
    /// Root ends of veths of the networks an apply trusts, not read (four
    /// sysfs reads each: 25 ms a pass at 1,000 networks); nothing is planned
    /// for them (`plan::plan_unchanged`), the next drift check reads them.
    pub host_veths_trusted: BTreeSet<u16>,
    /// Networks looked into this pass.
    pub networks: BTreeMap<u16, ObservedNetwork>,
    /// Desired networks not looked into: their target is the one a pass
    /// converged (the digests match), or they could not be read. Nothing is
    /// planned inside them (see `plan`).
    pub unchanged: BTreeSet<u16>,
    pub nginx_stream: Option<String>,
    pub nginx_http: Option<String>,
    pub nginx_running: bool,
    /// nginx runs with older files than those on disk (looked at only when
    /// no pass has confirmed what it runs: see `reconcile`).
    pub nginx_stale: bool,
    /// Each peer's last endpoint the daemon saw, by network (see
    /// `endpoints`): a WireGuard interface built anew gets them back.
    pub endpoints: crate::endpoints::Endpoints,
    /// Networks whose peers are to be reached now (`--ha-address`), by how:
    /// `Taken` the host just became active; `Started` the daemon started
    /// active (only where WireGuard knows no endpoint: elsewhere the host
    /// was active before the restart and its sessions live).
    pub reach_out: BTreeMap<u16, crate::ha::Reach>,
}
