use std::path::Path;
use std::time::Duration;

use super::*;
use crate::layout::Layout;
use crate::observed::Observed;
use crate::render::NginxFiles;
use crate::render::tests::sample_desired;
use crate::spec::Desired;
use crate::system::{Backend, Reply, Runner, Script, SystemPaths, Tools};
use crate::target::Targets;

fn system(dir: &Path, runner: Runner) -> System {
    let observer = std::sync::Arc::new(crate::testing::FixtureObserver::default());
    let journal = std::sync::Arc::new(crate::system::intent::NoJournal);
    System {
        runner,
        layout: Layout::default(),
        tools: Tools::default(),
        paths: SystemPaths::under(dir),
        backend: Backend::Kernel,
        observer,
        journal,
        ports: std::sync::Arc::new(crate::testing::FakePorts::default()),
        ipv6: true,
    }
}

fn nginx() -> NginxFiles {
    NginxFiles { stream: "s".into(), http: "h".into() }
}

fn write_nginx() -> Action {
    Action::WriteNginx(std::sync::Arc::new(nginx()))
}

/// The plan that builds `desired` from nothing.
fn plan(desired: &Desired, observed: &Observed, layout: &Layout) -> Vec<Action> {
    crate::plan::plan(&Targets::of(layout, desired), observed, layout, &std::sync::Arc::new(nginx()))
}

fn lines(s: &System) -> Vec<String> {
    s.runner.take_records().iter().flat_map(|r| r.commands().into_iter().map(String::from).collect::<Vec<_>>()).collect()
}

fn position(lines: &[String], needle: &str) -> usize {
    lines.iter().position(|l| l == needle).unwrap_or_else(|| panic!("`{needle}` not run: {lines:#?}"))
}

/// The kernel backend cannot run here (no module; the VM test runs it for
/// real): the interface is created in the root namespace, tagged, then moved,
/// then configured inside the namespace.
#[tokio::test]
async fn kernel_backend_creates_in_the_root_namespace_then_moves() {
    let dir = tempfile::tempdir().unwrap();
    let s = system(dir.path(), Runner::dry_run());
    let desired = sample_desired();
    let actions = plan(&desired, &Observed::default(), &s.layout);
    let report = s.execute(&actions).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let l = lines(&s);
    let ns = position(&l, "ip netns add network-51820");
    let create = position(&l, "ip link add wg51820 type wireguard");
    let tag = position(&l, "ip link set dev wg51820 alias gateway");
    let mv = position(&l, "ip link set wg51820 netns network-51820");
    let conf = position(&l, "ip netns exec network-51820 wg syncconf wg51820 /dev/stdin");
    let up = position(&l, "ip -n network-51820 link set wg51820 mtu 1380 up");
    assert!(ns < create && create < tag && tag < mv && mv < conf && conf < up, "{l:#?}");
    position(&l, "ip -n network-51820 addr add 10.80.0.1/16 dev wg51820");
    position(&l, "ip -n network-51820 route replace 192.168.7.0/24 dev wg51820");
    position(&l, "ip link set gwv51820 master gwbr0 up");
    position(&l, "ip link set dev gwv51820 type bridge_slave isolated on");
    // The filter of both families right after the namespace, before any
    // link exists; forwarding after everything else of the network.
    let rules6 = position(&l, "ip netns exec network-51820 ip6tables-restore --noflush");
    let rules = position(&l, "ip netns exec network-51820 iptables-restore --noflush");
    let forwarding = l.iter().position(|x| x.starts_with("setns network-51820 sysctl ")).expect("forwarding set");
    let last = l.iter().rposition(|x| x.contains("network-51820") || x.contains("gwv51820")).unwrap();
    assert!(ns < rules6 && rules6 < rules && rules < create && forwarding == last, "{l:#?}");
    assert_eq!(report.changed.into_iter().collect::<Vec<_>>(), vec![51820, 51821]);
    assert_eq!(std::fs::read_to_string(dir.path().join("stream.conf")).unwrap(), "s", "nginx's files are written");
}

#[tokio::test]
async fn removal_deletes_the_interface_then_the_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let s = system(dir.path(), Runner::dry_run());
    let actions = [Action::DeleteNetwork(51820), Action::DeleteRootWg(51821)];
    let report = s.execute(&actions).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(lines(&s), ["ip -n network-51820 link del wg51820", "ip netns del network-51820", "ip link del wg51821"]);
}

#[tokio::test]
async fn deleting_what_is_gone_is_not_an_error_but_other_failures_are() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new()
        .on("link del wg51820", Reply::fail(1, "Cannot find device \"wg51820\""))
        .on("link del wg51821", Reply::fail(2, "RTNETLINK answers: Operation not permitted"));
    let s = system(dir.path(), Runner::scripted(script, Duration::from_secs(1)));
    let report = s.execute(&[Action::DeleteNetwork(51820), Action::DeleteNetwork(51821)]).await;
    assert_eq!(report.failed.into_iter().collect::<Vec<_>>(), [51821]);
    assert_eq!(report.errors.len(), 1);
    assert!(report.errors[0].contains("network 51821") && report.errors[0].contains("Operation not permitted"), "{:?}", report.errors);
    let l = lines(&s);
    assert!(l.contains(&"ip netns del network-51820".to_string()), "an interface already gone does not stop the removal");
    assert!(!l.contains(&"ip netns del network-51821".to_string()), "a real failure stops that network's actions");
}

#[tokio::test]
async fn a_failing_network_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new().on("network-40000", Reply::fail(1, "boom"));
    let s = system(dir.path(), Runner::scripted(script, Duration::from_secs(1)));
    let actions = [Action::SetForwarding(40000), Action::UplinkUp(40000), Action::SetForwarding(40001), Action::BridgeUp];
    let report = s.execute(&actions).await;
    assert_eq!(report.failed.iter().copied().collect::<Vec<_>>(), vec![40000]);
    assert_eq!(report.changed.iter().copied().collect::<Vec<_>>(), vec![40001]);
    assert!(!report.global_failed);
    let l = lines(&s);
    assert_eq!(l.iter().filter(|l| l.contains("network-40000")).count(), 1, "40000's later actions skipped: {l:?}");
    assert!(l.iter().any(|l| l.contains("network-40001")), "{l:?}");
    assert!(l.contains(&"ip link set gwbr0 up".to_string()), "shared actions still run: {l:?}");
}

/// The executor renders nothing: each command gets what its action
/// carries. An `ip` standing in for iproute2 keeps each command's stdin.
#[tokio::test]
async fn each_command_gets_the_payload_its_action_carries() {
    let dir = tempfile::tempdir().unwrap();
    let fake_ip = dir.path().join("ip");
    let script = format!("#!/bin/sh\necho \"$*\" >> {0}/lines\ncat >> {0}/stdin\necho '---' >> {0}/stdin\n", dir.path().display());
    std::fs::write(&fake_ip, script).unwrap();
    std::fs::set_permissions(&fake_ip, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut s = system(dir.path(), Runner::new(Duration::from_secs(10)));
    s.tools.ip = fake_ip.to_string_lossy().into_owned();
    let l = Layout::default();
    let spec = sample_desired().networks[&51820].clone();
    let target = crate::target::NetworkTarget::of(&l, spec, None);
    let mut rules = target.rules.clone();
    rules.filter.push("-A GATEWAY-FORWARD -s 192.0.2.9/32 -j DROP".into());
    let actions = [
        Action::ConfigureWg(40000, target.wg.clone(), vec![crate::plan::WgChange::PrivateKey]),
        Action::SetRules { port: 40000, rules: rules.clone(), missing_jumps: vec![] },
    ];
    let report = s.execute(&actions).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(
        read("lines").lines().collect::<Vec<_>>(),
        [
            "netns exec network-40000 wg syncconf wg40000 /dev/stdin",
            "netns exec network-40000 ip6tables-restore --noflush",
            "netns exec network-40000 iptables-restore --noflush",
        ],
        "the network of the action, not the spec's port"
    );
    let stdin = read("stdin");
    let inputs: Vec<&str> = stdin.split("---\n").collect();
    assert_eq!(inputs[0], target.wg.text(), "wg gets the carried configuration");
    assert!(inputs[1].contains("-A GATEWAY-FORWARD -s 192.0.2.9/32 -j DROP\n"), "ip6tables gets the carried rules: {}", inputs[1]);
    assert_eq!(inputs[2], crate::render::iptables_restore(&rules, crate::render::Family::Ipv4, &[]), "iptables too");
}

#[tokio::test]
async fn failing_nginx_check_restores_the_previous_files_or_removes_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new().on("-t -q", Reply::fail(1, "nginx: [emerg] unexpected \"}\""));
    let s = system(dir.path(), Runner::scripted(script, Duration::from_secs(1)));
    let report = s.execute(&[write_nginx()]).await;
    assert!(report.global_failed);
    assert!(report.errors[0].contains("nginx config check failed") && report.errors[0].contains("previous nginx files were restored"));
    assert!(!dir.path().join("stream.conf").exists() && !dir.path().join("http.conf").exists(), "no previous files: none left");
    std::fs::write(dir.path().join("stream.conf"), "old stream").unwrap();
    std::fs::write(dir.path().join("http.conf"), "old http").unwrap();
    let report = s.execute(&[write_nginx()]).await;
    assert!(report.global_failed);
    assert_eq!(std::fs::read_to_string(dir.path().join("stream.conf")).unwrap(), "old stream");
    assert_eq!(std::fs::read_to_string(dir.path().join("http.conf")).unwrap(), "old http");
}

#[tokio::test]
async fn nginx_that_cannot_start_restores_the_files() {
    let dir = tempfile::tempdir().unwrap();
    // The check passes, starting fails (a port in use).
    let script = Script::new().on("-t -q", Reply::ok("")).on("nginx", Reply::fail(1, "bind() to 0.0.0.0:443 failed (98: Address in use)"));
    let s = system(dir.path(), Runner::scripted(script, Duration::from_secs(1)));
    std::fs::write(dir.path().join("stream.conf"), "old stream").unwrap();
    let report = s.execute(&[write_nginx()]).await;
    assert!(report.errors[0].contains("Address in use"), "{:?}", report.errors);
    assert_eq!(std::fs::read_to_string(dir.path().join("stream.conf")).unwrap(), "old stream");
    assert!(!dir.path().join("http.conf").exists());
}

#[tokio::test]
async fn missing_wireguard_go_fails_the_network_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new().on("wireguard-go", Reply::not_found());
    let mut s = system(dir.path(), Runner::scripted(script, Duration::from_secs(1)));
    s.backend = Backend::Userspace;
    let start = std::time::Instant::now();
    let report = s.execute(&[Action::CreateWg(51820), Action::MoveWg(51820)]).await;
    assert!(start.elapsed() < Duration::from_secs(1), "no wait for a socket that cannot come");
    assert_eq!(report.failed.into_iter().collect::<Vec<_>>(), [51820]);
    assert!(report.errors[0].contains("could not be started"), "{:?}", report.errors);
}

#[tokio::test]
async fn mtu_edges_reach_the_interface() {
    for mtu in [1280, 9000] {
        let dir = tempfile::tempdir().unwrap();
        let s = system(dir.path(), Runner::dry_run());
        let mut cfg = crate::render::tests::sample_config();
        cfg.get_mut("51820").unwrap().mtu = Some(mtu);
        let desired = crate::validate::validate(&cfg, &crate::validate::Context::default()).expect("valid");
        let actions = plan(&desired, &Observed::default(), &s.layout);
        let report = s.execute(&actions).await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        position(&lines(&s), &format!("ip -n network-51820 link set wg51820 mtu {mtu} up"));
    }
}

/// Networks converge side by side: one failing stops only its own later
/// steps, the others and nginx still converge, the error names it, and
/// each network's steps keep their order.
#[tokio::test]
async fn concurrent_apply_one_network_fails_the_others_converge() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new().on("ip netns add network-51821", Reply::fail(1, "Cannot create namespace file: No space left on device"));
    let s = system(dir.path(), Runner::scripted(script, Duration::from_secs(2)));
    let desired = sample_desired();
    let actions = plan(&desired, &Observed::default(), &s.layout);
    let report = s.execute_concurrently(&actions, 8).await;
    assert_eq!(report.failed.iter().copied().collect::<Vec<_>>(), [51821]);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].starts_with("network 51821: CreateNamespace(51821)") && report.errors[0].contains("No space left"));
    assert_eq!(report.changed.iter().copied().collect::<Vec<_>>(), [51820]);
    let l = lines(&s);
    assert!(!l.iter().any(|x| x.contains("wg51821")), "the failed network's later steps are skipped: {l:#?}");
    let ns = position(&l, "ip netns add network-51820");
    let mv = position(&l, "ip link set wg51820 netns network-51820");
    let conf = position(&l, "ip netns exec network-51820 wg syncconf wg51820 /dev/stdin");
    let bridge = position(&l, "ip link add gwbr0 type bridge");
    assert!(bridge < ns && ns < mv && mv < conf, "{l:#?}");
    assert_eq!(std::fs::read_to_string(dir.path().join("stream.conf")).unwrap(), "s", "nginx is written once the networks are done");
}

#[tokio::test]
async fn concurrent_apply_gives_the_sequential_result() {
    let desired = sample_desired();
    let mut reports = Vec::new();
    for limit in [1, 8] {
        let dir = tempfile::tempdir().unwrap();
        let s = system(dir.path(), Runner::dry_run());
        let actions = plan(&desired, &Observed::default(), &s.layout);
        let r = s.execute_concurrently(&actions, limit).await;
        let dir = dir.path().display().to_string();
        let mut l: Vec<String> = lines(&s).into_iter().map(|x| x.replace(&dir, "DIR")).collect();
        l.sort();
        reports.push((r.changed, r.failed, r.errors, l));
    }
    assert_eq!(reports[0], reports[1], "the same commands and the same report, whatever the concurrency");
}

/// A kernel without IPv6 has no IPv6 filter to set: IPv4's alone.
#[tokio::test]
async fn without_ipv6_in_the_kernel_only_ipv4_rules_are_set() {
    let dir = tempfile::tempdir().unwrap();
    let s = System { ipv6: false, ..system(dir.path(), Runner::dry_run()) };
    let spec = &sample_desired().networks[&51820];
    let rules = crate::render::rules(&Layout::default(), spec, &Layout::default().network_dnat(spec, None));
    let actions = [Action::SetRules { port: 51820, rules, missing_jumps: crate::render::JUMPS.to_vec() }];
    let report = s.execute(&actions).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(lines(&s), ["ip netns exec network-51820 iptables-restore --noflush"]);
}
