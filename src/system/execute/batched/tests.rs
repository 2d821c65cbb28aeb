use std::sync::Arc;

use super::*;
use crate::observed::Observed;
use crate::render::NginxFiles;
use crate::render::tests::sample_desired;
use crate::spec::Desired;
use crate::store::Store;
use crate::system::intent::Journal;
use crate::system::{Record, Reply, Script};
use crate::target::Targets;
use crate::testing::FakeHost;

fn nginx() -> Arc<NginxFiles> {
    Arc::new(NginxFiles { stream: "s".into(), http: "h".into() })
}

/// The plan that builds `desired` from nothing.
fn plan(desired: &Desired, observed: &Observed, layout: &Layout) -> Vec<Action> {
    crate::plan::plan(&Targets::of(layout, desired), observed, layout, &nginx())
}

/// The sample's two networks and `more` copies of its second one.
fn desired(more: u16) -> Desired {
    let mut d = sample_desired();
    for p in 51822..51822 + more {
        let mut spec = (*d.networks[&51821]).clone();
        spec.port = p;
        d.networks.insert(p, Arc::new(spec));
    }
    d
}

fn kinds(steps: &[Step<'_>]) -> Vec<String> {
    steps
        .iter()
        .map(|s| match s {
            Step::Root(l, _) => format!("root: {}", l.line),
            Step::Ns(l, _) => format!("ns: {l}"),
            Step::CreateWgByProcess(p, _) => format!("start wireguard-go {p}"),
            Step::Own(a) => format!("own: {}", a.label().split([' ', '(']).next().unwrap_or_default()),
        })
        .collect()
}

/// Golden: what a new network's actions become, with each backend.
#[test]
fn a_new_network_in_steps() {
    let d = sample_desired();
    let actions = plan(&d, &Observed::default(), &Layout::default());
    let of = |backend| -> Vec<String> {
        let mine: Vec<&Action> = actions.iter().filter(|a| a.network() == Some(51820)).collect();
        kinds(&mine.into_iter().flat_map(|a| steps(a, &Layout::default(), backend)).collect::<Vec<_>>())
    };
    let kernel = of(Backend::Kernel);
    assert_eq!(
        kernel.join("\n"),
        "\
root: netns add network-51820
ns: link set lo up
own: SetRules
root: link add wg51820 type wireguard
root: link set dev wg51820 alias gateway
root: link set wg51820 netns network-51820
own: ConfigureWg
ns: link set wg51820 mtu 1380 up
ns: addr add 10.80.0.1/16 dev wg51820
ns: route replace 192.168.7.0/24 dev wg51820
root: link add gwv51820 type veth peer name gw-uplink address 02:67:77:00:ca:6c netns network-51820
root: link set dev gwv51820 alias gateway
root: link set gwv51820 master gwbr0 up
root: link set dev gwv51820 type bridge_slave isolated on
ns: link set gw-uplink up
ns: addr add 10.199.202.108/16 dev gw-uplink
own: SetForwarding"
    );
    let userspace = of(Backend::Userspace);
    assert_eq!(userspace[3..5], ["start wireguard-go 51820", "root: link set dev wg51820 alias gateway"]);
    assert!(!userspace.iter().any(|l| l.contains("type wireguard")), "wireguard-go makes the interface: {userspace:#?}");
    assert_eq!(userspace.len(), kernel.len());
}

/// Counted through the runner's records, no timing: a new network costs
/// its own 4 processes (kernel backend: both families' rules, WireGuard's
/// configuration, one `ip -batch` in its namespace; userspace adds
/// wireguard-go), and the root namespace's link work is 8 batches a pass
/// however many networks are new; the sysctls take no process.
#[tokio::test]
async fn processes_per_new_network() {
    let host = FakeHost::new();
    let count = |more: u16| {
        let host = &host;
        async move {
            let s = host.system(Script::new(), Backend::Kernel);
            let d = desired(more);
            let actions: Vec<Action> = plan(&d, &Observed::default(), &s.layout).into_iter().filter(|a| a.network().is_some()).collect();
            let report = s.execute_concurrently(&actions, 4).await;
            assert!(report.errors.is_empty(), "{:?}", report.errors);
            assert_eq!(report.changed.len(), d.networks.len());
            s.runner.take_records()
        }
    };
    let (two, ten) = (count(0).await, count(8).await);
    let processes = |r: &[Record]| r.iter().filter(|r| r.process).count();
    let root_batches = |r: &[Record]| r.iter().filter(|r| r.line == "ip -force -batch -").count();
    assert_eq!((root_batches(&two), root_batches(&ten)), (8, 8), "{ten:#?}");
    assert_eq!((processes(&ten) - processes(&two)) / 8, 4, "{ten:#?}");
    for p in [51820, 51825] {
        let own: Vec<&Record> = ten.iter().filter(|r| r.process && r.line.contains(&format!("network-{p} "))).collect();
        assert_eq!(own.len(), 4, "{own:#?}");
        assert_eq!(own.iter().filter(|r| r.line.contains("-batch")).count(), 1, "one batch in its namespace: {own:#?}");
    }
    let sysctls: Vec<&Record> = ten.iter().filter(|r| r.line.contains(" sysctl ")).collect();
    assert_eq!(sysctls.len(), 10);
    assert!(sysctls.iter().all(|r| !r.process), "{sysctls:#?}");
    let batch = ten.iter().find(|r| r.line == "ip -force -batch -").unwrap();
    assert_eq!(batch.batch.len(), 10, "every new namespace in one batch: {batch:#?}");
}

/// A failing line of a shared batch fails its own network; the others
/// converge, and the failed network's later lines never run (its link is
/// not tagged as the gateway's).
#[tokio::test]
async fn a_failing_line_fails_its_own_network_alone() {
    let host = FakeHost::new();
    let script = Script::new().on("ip link add gwv51820 type veth", Reply::fail(2, "RTNETLINK answers: File exists"));
    let s = host.system(script, Backend::Kernel);
    let d = desired(1);
    let actions = plan(&d, &Observed::default(), &s.layout);
    let report = s.execute_concurrently(&actions, 4).await;
    assert_eq!(report.failed.iter().copied().collect::<Vec<_>>(), [51820]);
    assert_eq!(report.changed.iter().copied().collect::<Vec<_>>(), [51820, 51821, 51822]);
    assert!(!report.global_failed);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    let e = &report.errors[0];
    assert!(e.contains("network 51820") && e.contains("ip link add gwv51820 type veth") && e.contains("File exists"), "{e}");
    let ran: Vec<String> = s.runner.take_records().iter().flat_map(Record::commands).map(String::from).collect();
    assert!(!ran.iter().any(|l| l.contains("alias gateway") && l.contains("gwv51820")), "someone else's link is not tagged: {ran:#?}");
    assert!(!ran.iter().any(|l| l.starts_with("setns network-51820 ")), "no forwarding after a failure: {ran:#?}");
    for p in [51821, 51822] {
        assert!(ran.iter().any(|l| *l == format!("ip link set dev gwv{p} alias gateway")), "{ran:#?}");
        assert!(ran.iter().any(|l| l.starts_with(&format!("setns network-{p} sysctl "))), "{ran:#?}");
    }
}

/// The same for a line of a network's own namespace batch.
#[tokio::test]
async fn a_failing_namespace_line_fails_its_own_network_alone() {
    let host = FakeHost::new();
    let script = Script::new().on("ip -n network-51821 addr add 10.199", Reply::fail(2, "Error: ipv4: Address already assigned."));
    let s = host.system(script, Backend::Kernel);
    let d = desired(1);
    let actions = plan(&d, &Observed::default(), &s.layout);
    let report = s.execute_concurrently(&actions, 4).await;
    assert_eq!(report.failed.iter().copied().collect::<Vec<_>>(), [51821]);
    assert!(report.errors[0].contains("network 51821") && report.errors[0].contains("Address already assigned"), "{:?}", report.errors);
    let ran: Vec<String> = s.runner.take_records().iter().flat_map(Record::commands).map(String::from).collect();
    assert!(!ran.iter().any(|l| l.starts_with("setns network-51821 ")), "no forwarding after a failure: {ran:#?}");
    assert!(ran.iter().any(|l| l.starts_with("setns network-51820 ")) && ran.iter().any(|l| l.starts_with("setns network-51822 ")));
}

/// Crash safety across batches: each created link's intent is recorded
/// before the batch that creates it and forgotten after the one that tags
/// it; a link whose tag failed keeps its intent (the next pass undoes it).
#[tokio::test]
async fn intents_span_the_batches_that_create_and_tag() {
    let host = FakeHost::new();
    let store = Store::open(None).await.unwrap();
    let script = Script::new().on("ip link set dev gwv51821 alias gateway", Reply::fail(2, "RTNETLINK answers: Operation not permitted"));
    let mut s = host.system(script, Backend::Kernel);
    s.journal = Arc::new(store.clone());
    let d = desired(0);
    let actions = plan(&d, &Observed::default(), &s.layout);
    let report = s.execute_concurrently(&actions, 4).await;
    assert_eq!(report.failed.iter().copied().collect::<Vec<_>>(), [51821]);
    let left: Vec<String> = store.unfinished().await.unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(left, ["gwv51821"], "kept where the tag failed, forgotten elsewhere");
}

/// A root batch takes only what the fullest listener of link events (a
/// wireguard-go's netlink socket) has room for: 10 networks' attachments
/// (20 KiB of events each, `batch::link_event_bytes`) do not go into a
/// socket with 150 KiB free in one batch, their veths (8 KiB each) do. A
/// listener that lost events already holds nothing back.
#[tokio::test]
async fn root_batches_fit_in_the_fullest_listener() {
    let host = FakeHost::new();
    let s = host.system(Script::new(), Backend::Kernel);
    let buffer = 1024 * 1024;
    std::fs::write(&s.paths.rmem_default, format!("{buffer}\n")).unwrap();
    let row = |queued: u64, drops: u64, inode: u64| format!("0000000078d25c74 0   29032      00000111 {queued} 0 0 2 {drops} {inode}\n");
    let table = format!("sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode\n{}{}", row(buffer - 150 * 1024, 0, 1), row(buffer, 3, 2));
    std::fs::write(&s.paths.proc_net_netlink, table).unwrap();
    a_live_wireguard_go(&s, 29032);
    let d = desired(8);
    let actions: Vec<Action> = plan(&d, &Observed::default(), &s.layout).into_iter().filter(|a| a.network().is_some()).collect();
    let report = s.execute_concurrently(&actions, 4).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let batches: Vec<Record> = s.runner.take_records().into_iter().filter(|r| r.line == "ip -force -batch -").collect();
    for b in &batches {
        let bytes: u64 = b.batch.iter().map(|l| batch::link_event_bytes(l.trim_start_matches("ip "))).sum();
        assert!(bytes <= 150 * 1024 || b.batch.len() == 1, "{bytes} bytes of events in one batch: {b:#?}");
    }
    let attach: Vec<usize> = batches.iter().filter(|b| b.batch[0].contains(" master ")).map(|b| b.batch.len()).collect();
    assert_eq!(attach, [7, 3], "{batches:#?}");
    let veths: Vec<usize> = batches.iter().filter(|b| b.batch[0].contains("type veth")).map(|b| b.batch.len()).collect();
    assert_eq!(veths, [10], "{batches:#?}");
}

/// `pid` a live wireguard-go in the fake /proc.
fn a_live_wireguard_go(s: &System, pid: u32) {
    let dir = s.paths.proc_dir.join(pid.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("stat"), format!("{pid} (wireguard-go) S 1 {pid} {pid} 0 -1\n")).unwrap();
}

/// Each wireguard-go also holds a socket the process that started it made
/// (its port id: that process's pid, gone) and that nobody reads: full, it
/// must neither cut a batch nor make one wait (it held every batch back
/// for the whole wait, 2 s, once per wireguard-go started).
#[tokio::test]
async fn an_unread_socket_of_a_process_gone_holds_nothing_back() {
    let host = FakeHost::new();
    let s = host.system(Script::new(), Backend::Kernel);
    let buffer = 212_992;
    std::fs::write(&s.paths.rmem_default, format!("{buffer}\n")).unwrap();
    let row = |pid: u32, queued: u64, inode: u64| format!("0000000078d25c74 0   {pid}      00000111 {queued} 0 0 2 0 {inode}\n");
    let table = format!("sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode\n{}{}", row(23952, buffer - 1024, 1), row(23958, 0, 2));
    std::fs::write(&s.paths.proc_net_netlink, table).unwrap();
    a_live_wireguard_go(&s, 23958);
    let d = desired(8);
    let actions: Vec<Action> = plan(&d, &Observed::default(), &s.layout).into_iter().filter(|a| a.network().is_some()).collect();
    let started = std::time::Instant::now();
    let report = s.execute_concurrently(&actions, 4).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert!(started.elapsed() < std::time::Duration::from_millis(1500), "waited for the unread socket: {:?}", started.elapsed());
    let batches: Vec<Record> = s.runner.take_records().into_iter().filter(|r| r.line == "ip -force -batch -").collect();
    let veths: Vec<usize> = batches.iter().filter(|b| b.batch[0].contains("type veth")).map(|b| b.batch.len()).collect();
    assert_eq!(veths, [10], "one batch for the 10 veths: {batches:#?}");
}

/// Deleting a route or an address inside a namespace that is gone already
/// succeeds (the fuzzer found `route del` answering "No such process" as a
/// 500); any other failure of a delete still fails its network.
#[tokio::test]
async fn deleting_what_is_gone_inside_a_namespace_succeeds() {
    let host = FakeHost::new();
    let route = "192.0.2.0/27".parse().unwrap();
    let addr = "10.80.0.9/16".parse().unwrap();
    let actions = [
        Action::DelRoute { port: 51820, cidr: route },
        Action::DelAddress { port: 51820, dev: Dev::Wg, cidr: addr },
        Action::DelRoute { port: 51821, cidr: route },
    ];
    let script = Script::new()
        .on("ip -n network-51820 route del 192.0.2.0/27", Reply::fail(2, "RTNETLINK answers: No such process"))
        .on("ip -n network-51820 addr del 10.80.0.9/16", Reply::fail(2, "RTNETLINK answers: Cannot assign requested address"))
        .on("ip -n network-51821 route del 192.0.2.0/27", Reply::fail(2, "RTNETLINK answers: Operation not permitted"));
    let s = host.system(script, Backend::Kernel);
    let report = s.execute_concurrently(&actions, 4).await;
    assert_eq!(report.failed.iter().copied().collect::<Vec<_>>(), [51821], "{:?}", report.errors);
    assert!(report.errors[0].contains("Operation not permitted"), "{:?}", report.errors);
}
