//! What each network should be, computed once when its spec changes: the
//! WireGuard configuration, the DNAT ports, the rule set, the interface's
//! addresses and routes. The planner compares it with what was observed, the actions
//! carry its parts to the executor (which renders nothing), and its digest
//! tells a network unchanged since the last converged pass apart without a
//! look at it. Pure: no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::layout::{Layout, NetworkDnat};
use crate::render::{self, RuleSet, WgConf};
use crate::spec::{Desired, NetworkSpec};
use crate::types::Cidr;

/// A SHA-256 of a network's target.
pub type Digest = [u8; 32];

/// One network's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkTarget {
    /// The spec it was computed from (the planner still compares peers
    /// field by field with WireGuard's state, to say what changes).
    pub spec: Arc<NetworkSpec>,
    /// `wg setconf`/`wg syncconf`'s input.
    pub wg: WgConf,
    /// Where each route's connections enter the namespace: the rules DNAT
    /// them, the tc filters match them, nginx's upstreams (rendered from
    /// this target, `render::NginxParts`) and the usage counters use them.
    pub dnat: NetworkDnat,
    pub rules: RuleSet,
    /// The namespace end of the veth's address.
    pub uplink_address: Cidr,
    /// Routes through the WireGuard interface (`NetworkSpec::routes`).
    pub routes: Vec<Cidr>,
    /// The tc trees of the veth's ends (`None`: no bandwidth field, no tc).
    pub shaping: Option<render::tc::NetworkShaping>,
    /// Of everything above that reaches the system: equal digests, same network.
    pub digest: Digest,
}

impl NetworkTarget {
    /// `before`: the network's last target, whose DNAT ports stay where
    /// they were (see `Layout::dnat_ports`).
    pub fn of(layout: &Layout, spec: Arc<NetworkSpec>, before: Option<&NetworkTarget>) -> Self {
        let wg = WgConf::of(&spec);
        let dnat = layout.network_dnat(&spec, before.map(|b| &b.dnat));
        let rules = render::rules(layout, &spec, &dnat);
        let uplink_address = layout.veth_ns_addr(spec.port);
        let routes = spec.routes();
        // The DNAT ports are in the digest through the rules that name them.
        let digest = digest(&spec, &wg, &rules, uplink_address, &routes);
        let shaping = render::tc::of_spec(&spec, &dnat);
        NetworkTarget { spec, wg, dnat, rules, uplink_address, routes, shaping, digest }
    }

    pub fn port(&self) -> u16 {
        self.spec.port
    }
}

/// Every part that reaches the system, each delimited, so two different
/// targets never give the same text. Whatever an action inside the network
/// applies must go in here: a change to a part left out would be trusted
/// away (not looked at, not applied) by an apply. The routes' limits and
/// the bandwidth go in whole (traffic shaping sits on the network's veth).
fn digest(spec: &NetworkSpec, wg: &WgConf, rules: &RuleSet, uplink: Cidr, routes: &[Cidr]) -> Digest {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    let mut part = |name: &str, text: &str| {
        h.update(name.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    };
    let list = |items: &[Cidr]| items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
    part("port", &spec.port.to_string());
    part("wg", wg.text());
    part("mtu", &spec.mtu.to_string());
    part("standby", if spec.standby { "1" } else { "0" });
    part("addresses", &list(&spec.addresses));
    part("routes", &list(routes));
    part("uplink", &uplink.to_string());
    part("nat", &rules.nat.join("\n"));
    part("filter", &rules.filter.join("\n"));
    part("route_limits", &format!("{:?}", spec.route_limits));
    part("bandwidth", &format!("{:?}", spec.bandwidth));
    h.finalize().into()
}

/// The targets of a desired state, by port.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub networks: BTreeMap<u16, Arc<NetworkTarget>>,
}

impl Targets {
    /// The targets of `desired`: a network whose spec is the one `before`
    /// was computed from keeps that target; the others are computed. Also
    /// returns the ports computed (the work done).
    pub fn build(layout: &Layout, desired: &Desired, before: &Targets) -> (Targets, Vec<u16>) {
        let (networks, computed) = crate::spec::keep_or_make(
            desired.networks.values(),
            |spec| spec,
            &before.networks,
            |t| &t.spec,
            |spec, last| NetworkTarget::of(layout, (*spec).clone(), last),
        );
        (Targets { networks }, computed)
    }

    /// Every network's target computed anew.
    pub fn of(layout: &Layout, desired: &Desired) -> Targets {
        Targets::build(layout, desired, &Targets::default()).0
    }

    pub fn get(&self, port: u16) -> Option<&NetworkTarget> {
        self.networks.get(&port).map(|t| &**t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::converged_desired;

    #[test]
    fn an_unchanged_spec_keeps_its_target_and_a_changed_one_is_computed_again() {
        let l = Layout::default();
        let d = converged_desired();
        let (first, computed) = Targets::build(&l, &d, &Targets::default());
        assert_eq!(computed, [51820, 51821]);
        let (again, computed) = Targets::build(&l, &d, &first);
        assert_eq!(computed, Vec::<u16>::new(), "nothing changed: nothing computed");
        assert!(Arc::ptr_eq(&again.networks[&51820], &first.networks[&51820]));
        let mut changed = d.clone();
        Arc::make_mut(changed.networks.get_mut(&51821).unwrap()).mtu = 1300;
        let (next, computed) = Targets::build(&l, &changed, &again);
        assert_eq!(computed, [51821], "only the changed network");
        assert_ne!(next.networks[&51821].digest, again.networks[&51821].digest);
        assert_eq!(next.networks[&51820].digest, again.networks[&51820].digest);
    }

    #[test]
    fn the_digest_moves_with_every_part_that_reaches_the_system() {
        let l = Layout::default();
        let d = converged_desired();
        let base = NetworkTarget::of(&l, d.networks[&51820].clone(), None);
        let with = |change: &dyn Fn(&mut NetworkSpec)| {
            let mut s = (*d.networks[&51820]).clone();
            change(&mut s);
            NetworkTarget::of(&l, Arc::new(s), None).digest
        };
        assert_eq!(with(&|_| {}), base.digest, "the same spec, the same digest");
        type Change<'a> = (&'a str, &'a dyn Fn(&mut NetworkSpec));
        let changes: [Change; 5] = [
            ("mtu", &|s| s.mtu = 1300),
            ("standby", &|s| s.standby = true),
            ("addresses", &|s| s.addresses.push("10.99.0.1/24".parse().unwrap())),
            ("a peer", &|s| s.peers.values_mut().next().unwrap().persistent_keepalive = Some(7)),
            ("an upstream (the DNAT rules)", &|s| {
                s.https.values_mut().next().unwrap().push("10.80.0.77:443".parse().unwrap());
            }),
        ];
        for (what, change) in changes {
            assert_ne!(with(change), base.digest, "{what}");
        }
    }
}
