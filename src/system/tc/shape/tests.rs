use super::*;

const TOWARD_NODES: &str = include_str!("../../../../tests/fixtures/tc/toward-nodes.txt");
const TOWARD_CLIENTS: &str = include_str!("../../../../tests/fixtures/tc/toward-clients.txt");
const UNSHAPED: &str = include_str!("../../../../tests/fixtures/tc/unshaped.txt");

fn bw(ingress: Option<u32>, egress: Option<u32>) -> Option<Bandwidth> {
    Some(Bandwidth { ingress_mbit: ingress, egress_mbit: egress })
}

fn class(minor: u16, parent: Option<u16>, rate_kbit: u64, ceil_kbit: u64) -> TcClass {
    TcClass { minor, parent, rate_kbit, ceil_kbit }
}

/// The tree the fixtures were captured from (`tc -batch` of what
/// `tc_batch` writes for it, on a veth, read back with `tc_show_batch`): a
/// network of 40 Mbit/s; a TCP route of 16 Mbit/s on port 20000, a UDP
/// route of 40 on port 20000 (UDP's own space), a TCP route without a limit
/// of its own on port 25837.
fn captured() -> Shaping {
    Shaping {
        classes: vec![
            class(1, None, 40000, 40000),
            class(2, Some(1), 13333, 40000),
            class(0x10, Some(1), 13333, 16000),
            class(0x11, Some(1), 13333, 40000),
        ],
        filters: vec![
            TcFilter { proto: Transport::Tcp, port: 20000, minor: 0x10 },
            TcFilter { proto: Transport::Tcp, port: 25837, minor: 2 },
            TcFilter { proto: Transport::Udp, port: 20000, minor: 0x11 },
        ],
    }
}

#[test]
fn captured_output_parses_to_the_tree() {
    for (text, side) in [(TOWARD_NODES, Side::TowardNodes), (TOWARD_CLIENTS, Side::TowardClients)] {
        let seen = parse_tc_show(text, side);
        assert!(seen.htb && seen.ours, "{side}");
        assert_eq!(seen.foreign, 0, "{side}");
        assert_eq!(seen.tree, captured(), "{side}");
        assert!(seen.matches(&captured()));
    }
    // Read on the wrong end, the port matches are another form: rebuilt.
    let wrong = parse_tc_show(TOWARD_NODES, Side::TowardClients);
    assert_eq!((wrong.foreign, wrong.tree.filters.len()), (3, 0));
    assert!(!wrong.matches(&captured()));
    let none = parse_tc_show(UNSHAPED, Side::TowardNodes);
    assert_eq!(none, ObservedShaping::default());
    assert!(!none.matches(&Shaping::default()), "no HTB: even an empty tree is to be made");
}

#[test]
fn the_network_limit_is_the_parent_of_its_routes() {
    let routes = [
        ShapedRoute { bandwidth: bw(None, Some(16)), ports: vec![(Transport::Tcp, 20000)] },
        ShapedRoute { bandwidth: bw(None, Some(40)), ports: vec![(Transport::Udp, 20000)] },
        ShapedRoute { bandwidth: None, ports: vec![(Transport::Tcp, 25837)] },
    ];
    let all = [(Transport::Tcp, 20000), (Transport::Tcp, 25837), (Transport::Udp, 20000)];
    let s = shaping(bw(None, Some(40)), &routes, &all).unwrap();
    assert_eq!(s.toward_clients, captured());
    assert_eq!(s.toward_nodes, Shaping::default(), "no limit toward the nodes: an empty tree (the qdisc alone)");
    // The rates of the leaves add up to no more than the network's.
    let leaves: u64 = s.toward_clients.classes.iter().filter(|c| c.parent.is_some()).map(|c| c.rate_kbit).sum();
    assert!(leaves <= 40000, "{leaves}");
}

#[test]
fn routes_alone_sit_under_the_root_and_nothing_is_shaped_without_fields() {
    let routes = [
        ShapedRoute { bandwidth: bw(Some(100), Some(16)), ports: vec![(Transport::Tcp, 20001), (Transport::Tcp, 20002)] },
        ShapedRoute { bandwidth: None, ports: vec![(Transport::Tcp, 20003)] },
    ];
    let all = [(Transport::Tcp, 20001), (Transport::Tcp, 20002), (Transport::Tcp, 20003)];
    let s = shaping(None, &routes, &all).unwrap();
    assert_eq!(s.toward_nodes.classes, vec![class(0x10, None, 100_000, 100_000)]);
    assert_eq!(s.toward_clients.classes, vec![class(0x10, None, 16000, 16000)]);
    let ports: Vec<u16> = s.toward_clients.filters.iter().map(|f| f.port).collect();
    assert_eq!(ports, [20001, 20002], "the unlimited route's port is not classified");
    assert_eq!(shaping(None, &routes[1..], &all), None);
    // A route's limit above the network's is held to it.
    let s = shaping(bw(Some(10), None), &routes[..1], &all).unwrap();
    assert!(s.toward_nodes.classes.contains(&class(0x10, Some(1), 5000, 10000)), "{:?}", s.toward_nodes);
}

#[test]
fn shared_ports_go_to_the_first_limited_route() {
    let routes = [
        ShapedRoute { bandwidth: bw(Some(5), None), ports: vec![(Transport::Tcp, 20001)] },
        ShapedRoute { bandwidth: bw(Some(7), None), ports: vec![(Transport::Tcp, 20001), (Transport::Tcp, 20002)] },
    ];
    let s = shaping(None, &routes, &[]).unwrap();
    assert_eq!(
        s.toward_nodes.filters,
        vec![TcFilter { proto: Transport::Tcp, port: 20001, minor: 0x10 }, TcFilter { proto: Transport::Tcp, port: 20002, minor: 0x11 }]
    );
}

#[test]
fn rendered_batch_and_its_reading_round_trip() {
    let batch = tc_batch("gwv7", Side::TowardNodes, &captured());
    assert_eq!(
        batch,
        "qdisc add dev gwv7 root handle 1: htb default 0\n\
         class add dev gwv7 parent 1: classid 1:1 htb rate 40000kbit ceil 40000kbit quantum 1514\n\
         class add dev gwv7 parent 1:1 classid 1:2 htb rate 13333kbit ceil 40000kbit quantum 1514\n\
         class add dev gwv7 parent 1:1 classid 1:10 htb rate 13333kbit ceil 16000kbit quantum 1514\n\
         class add dev gwv7 parent 1:1 classid 1:11 htb rate 13333kbit ceil 40000kbit quantum 1514\n\
         filter add dev gwv7 parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match ip dport 20000 0xffff flowid 1:10\n\
         filter add dev gwv7 parent 1: protocol ip prio 1 u32 match ip protocol 6 0xff match ip dport 25837 0xffff flowid 1:2\n\
         filter add dev gwv7 parent 1: protocol ip prio 1 u32 match ip protocol 17 0xff match ip dport 20000 0xffff flowid 1:11\n"
    );
    let back = tc_batch("gw-uplink", Side::TowardClients, &captured());
    assert!(back.contains("match ip sport 25837 0xffff flowid 1:2\n"), "{back}");
    assert_eq!(tc_show_batch("gwv7"), "qdisc show dev gwv7\nclass show dev gwv7\nfilter show dev gwv7\n");
}

#[test]
fn rates_as_tc_prints_them() {
    for (text, kbit) in [
        ("16Mbit", Some(16000)),
        ("13333Kbit", Some(13333)),
        ("1Gbit", Some(1_000_000)),
        ("8000bit", Some(8)),
        ("1500bit", None),
        ("16", None),
        ("Mbit", None),
        ("16mbit", None),
        ("99999999999999999999Mbit", None),
    ] {
        assert_eq!(kbit_of(text), kbit, "{text}");
    }
}

#[test]
fn other_forms_are_foreign_and_never_panic() {
    let odd = "qdisc htb 2: root refcnt 2 r2q 10 default 0x10\nclass htb 1:10 parent 1:1 leaf 8001: prio 0 rate 1Mbit ceil 1Mbit\nclass hfsc 1:3 parent 1:\nclass htb 1:zz root rate 1Mbit ceil 1Mbit\nfilter parent 1: protocol ip pref 1 u32 chain 0 fh 800::800 order 2048 key ht 800 bkt 0 flowid 1:10\n  match 00060000/00ff0000 at 8\nmatch\nfilter parent 1: protocol all pref 9 basic chain 0 fh 800::1 flowid 1:2\n\u{0}\u{7f}ÿ\n";
    let seen = parse_tc_show(odd, Side::TowardNodes);
    assert!(seen.htb && !seen.ours);
    assert_eq!(seen.tree.classes, vec![class(0x10, Some(1), 1000, 1000)]);
    assert_eq!(seen.foreign, 4, "hfsc, 1:zz, a filter with one good match, the basic filter: {seen:?}");
    assert!(seen.tree.filters.is_empty());
}

fn one_route() -> NetworkShaping {
    let routes = [ShapedRoute { bandwidth: bw(None, Some(16)), ports: vec![(Transport::Tcp, 20000)] }];
    shaping(None, &routes, &[(Transport::Tcp, 20000)]).unwrap()
}

#[test]
fn steps_make_the_namespace_end_first_and_clear_it_last() {
    let want = one_route();
    // A network made in this pass: both ends built, the namespace's first, nothing to clear.
    let fresh = steps(Some(&want), None, None, None);
    assert_eq!(fresh.iter().map(|s| (s.side, s.clear)).collect::<Vec<_>>(), [(Side::TowardClients, false), (Side::TowardNodes, false)]);
    assert_eq!(fresh[0].set.as_ref(), Some(&want.toward_clients));
    // Converged: nothing at all (re-applying runs no command).
    assert!(steps(Some(&want), Some(&ObservedTc::converged(Some(&want))), Some("htb"), None).is_empty());
    // Drift on one end (a class's rate changed by hand): that end alone, cleared and built.
    let mut drifted = ObservedTc::converged(Some(&want));
    drifted.toward_clients.tree.classes[0].ceil_kbit = 1000;
    let fix = steps(Some(&want), Some(&drifted), Some("htb"), None);
    assert_eq!(fix, vec![ShapingStep { side: Side::TowardClients, clear: true, set: Some(want.toward_clients.clone()) }]);
    // A qdisc of another kind in the way is cleared first; none at all is not.
    let mut other = ObservedTc::default();
    other.toward_nodes.custom_root = true;
    let fix = steps(Some(&want), Some(&other), Some("noqueue"), Some("fq_codel"));
    assert_eq!(fix.iter().map(|s| (s.side, s.clear)).collect::<Vec<_>>(), [(Side::TowardClients, false), (Side::TowardNodes, true)]);
}

#[test]
fn steps_remove_htb_when_the_fields_go_and_touch_nothing_else() {
    // No field, nothing read, no HTB seen on the links: no tc at all.
    assert!(steps(None, None, Some("noqueue"), None).is_empty());
    assert!(steps(None, None, None, Some("noqueue")).is_empty());
    // The fields went: the root end cleared first, the namespace's last.
    let gone = steps(None, Some(&ObservedTc::converged(Some(&one_route()))), Some("htb"), Some("htb"));
    assert_eq!(
        gone.iter().map(|s| (s.side, s.clear, s.set.is_some())).collect::<Vec<_>>(),
        [(Side::TowardNodes, true, false), (Side::TowardClients, true, false)]
    );
    // Seen on the links alone (a crash between the two removals, or a drift check's root read).
    assert_eq!(steps(None, None, Some("htb"), None), vec![ShapingStep { side: Side::TowardClients, clear: true, set: None }]);
    assert_eq!(steps(None, None, Some("noqueue"), Some("htb")), vec![ShapingStep { side: Side::TowardNodes, clear: true, set: None }]);
    // Somebody's own qdisc of another kind stays.
    assert!(steps(None, None, Some("fq_codel"), Some("pfifo")).is_empty());
}
