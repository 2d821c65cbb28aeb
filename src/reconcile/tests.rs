//! Reconciler passes without root: a fake host and the converged fixtures
//! replayed by a scripted runner, with failures injected where needed.

use super::*;
use crate::model::GatewayConfig;
use crate::system::{Backend, Record, Reply, Script};
use crate::testing::{
    FakeHost, FixtureObserver, converged_config, converged_desired, converged_rules, converged_script, nginx_files, shared,
};

const PEER_A: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
const NETWORK_KEY_51820: &str = "4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=";

struct Setup {
    host: FakeHost,
    reader: Arc<FixtureObserver>,
    reconciler: Reconciler,
    shared: Arc<Shared>,
}

async fn setup(script: Script, config: &GatewayConfig) -> Setup {
    let host = FakeHost::converged(&nginx_files(&converged_desired()));
    let reader = Arc::new(FixtureObserver::default());
    let shared = shared(host.system_observing(script, Backend::Kernel, reader.clone())).await;
    shared.store().save_desired(config, 1).await.unwrap();
    let reconciler = Reconciler::new(shared.clone()).await;
    Setup { host, reader, reconciler, shared }
}

impl Setup {
    fn records(&self) -> Vec<Record> {
        self.shared.system().runner.take_records()
    }

    async fn store(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let mut cfg = serde_json::to_value(self.shared.store().desired().await.unwrap().1).unwrap();
        change(&mut cfg);
        self.shared.store().save_desired(&serde_json::from_value(cfg).unwrap(), 2).await.unwrap();
    }
}

fn mutating(records: &[Record]) -> Vec<&str> {
    records.iter().filter(|r| r.mutating).flat_map(Record::commands).collect()
}

#[tokio::test]
async fn nothing_accepted_yet_touches_nothing() {
    let host = FakeHost::new();
    host.add_namespace(40000);
    let shared = shared(host.system(Script::new(), Backend::Kernel)).await;
    let mut r = Reconciler::new(shared.clone()).await;
    assert!(r.tick(Mode::Drift).await.is_none());
    assert!(shared.system().runner.take_records().is_empty(), "not even a read");
}

#[tokio::test]
async fn a_drift_check_of_the_converged_system_changes_nothing_and_polls_every_network() {
    let mut s = setup(converged_script(), &converged_config()).await;
    let outcome = s.reconciler.tick(Mode::Drift).await.unwrap();
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    assert_eq!(outcome.actions, 0);
    assert_eq!(outcome.dumps.keys().copied().collect::<Vec<_>>(), [51820, 51821], "every network read");
    let records = s.records();
    assert!(mutating(&records).is_empty(), "{records:?}");
    // The fixture's keepalive peer had sent 148 bytes: counted once.
    let t = crate::traffic::traffic_since(s.shared.store(), 0, i64::MAX).await.unwrap();
    assert_eq!(t.networks[NETWORK_KEY_51820].devices[PEER_A].traffic, crate::model::Traffic { rx: 0, tx: 148 });
    s.reconciler.tick(Mode::Drift).await.unwrap();
    let t = crate::traffic::traffic_since(s.shared.store(), 0, i64::MAX).await.unwrap();
    assert_eq!(t.traffic.tx, 148, "the same counters read again add nothing");
    assert_eq!(s.shared.last_pass().as_ref().map(|r| r.applied_generation), Some(1));
}

#[tokio::test]
async fn an_apply_after_a_verified_pass_runs_no_process() {
    let mut s = setup(converged_script(), &converged_config()).await;
    s.reconciler.tick(Mode::Drift).await.unwrap();
    s.records();
    s.reader.take_reads();
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert!(outcome.record.ok && outcome.record.changed.is_empty());
    assert_eq!(s.records(), vec![], "a no-op apply runs nothing");
    assert_eq!(s.reader.take_reads(), Vec::<String>::new(), "and reads nothing");
}

/// The API hands the state it validated to the pass (no second parse and
/// validation of the stored JSON), but only for the generation it stored.
#[tokio::test]
async fn a_pass_takes_the_state_validated_for_its_generation() {
    let mut s = setup(converged_script(), &converged_config()).await;
    let mut accepted = converged_desired();
    Arc::make_mut(accepted.networks.get_mut(&51821).unwrap()).mtu = 1300;
    let accepted = Arc::new(accepted);
    s.shared.remember_accepted(1, Arc::new(converged_config()), accepted.clone());
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert_eq!(outcome.record.changed, [51821], "the handed-over state was applied");
    s.shared.remember_accepted(0, Arc::new(converged_config()), Arc::new(converged_desired()));
    assert!(Arc::ptr_eq(&s.shared.accepted(1).unwrap(), &accepted), "an older generation never replaces a newer one");
    assert!(s.shared.accepted(2).is_none());
}

#[tokio::test]
async fn a_change_to_one_network_reads_and_touches_only_it() {
    let mut s = setup(converged_script(), &converged_config()).await;
    s.reconciler.tick(Mode::Drift).await.unwrap();
    s.records();
    s.store(|c| c["51821"]["mtu"] = 1300.into()).await;
    s.reader.take_reads();
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert_eq!(outcome.record.changed, [51821]);
    assert_eq!(
        s.reader.take_reads(),
        ["network-51821", "network-51821"],
        "read before the change and after it (for status.json), without a process"
    );
    let lines: Vec<String> = s.records().iter().flat_map(Record::commands).map(String::from).collect();
    assert_eq!(lines, ["ip -n network-51821 link set wg51821 mtu 1300 up"], "rules rendering the same are not read again");
}

/// Open connections are asked of the kernel (a conntrack dump: about 4 ms
/// of its time a namespace, whatever the filter) only in networks that
/// routes lead into: here 51820, once 51821's routes are gone.
#[tokio::test]
async fn connections_are_counted_only_where_routes_lead() {
    let mut s = setup(converged_script(), &converged_config()).await;
    s.store(|c| drop(c["51821"].as_object_mut().unwrap().remove("proxy"))).await;
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert_eq!(outcome.record.changed, [51821], "{:?}", outcome.record.errors);
    assert_eq!(s.reader.take_counted(), ["network-51820"], "the look read both, the status re-read 51821");
    s.reader.take_reads();
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert!(s.reader.take_reads().iter().filter(|r| *r == "network-51821").count() >= 1, "a drift check reads both");
    assert_eq!(s.reader.take_counted(), ["network-51820"]);
}

/// A network's target is computed once per change of its spec: a pass
/// with nothing changed computes none, a drift check none either, and a
/// change to one network computes that one alone.
#[tokio::test]
async fn targets_are_computed_only_for_networks_that_changed() {
    let mut s = setup(converged_script(), &converged_config()).await;
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert_eq!(s.reconciler.computed, [51820, 51821], "the first pass computes every target");
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert_eq!(s.reconciler.computed, Vec::<u16>::new(), "nothing changed: nothing computed");
    assert_eq!(outcome.actions, 0, "and nothing planned");
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert_eq!(s.reconciler.computed, Vec::<u16>::new(), "a drift check computes none either");
    s.store(|c| c["51821"]["mtu"] = 1300.into()).await;
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert_eq!(s.reconciler.computed, [51821], "only the changed network");
    assert_eq!(outcome.record.changed, [51821]);
}

/// nginx's part of a network is rendered once per change of its spec: a
/// pass with nothing changed renders none (the files are put together from
/// the kept parts), and a change to one network renders that one alone.
#[tokio::test]
async fn nginx_is_rendered_only_for_networks_that_changed() {
    let mut s = setup(converged_script(), &converged_config()).await;
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert_eq!(s.reconciler.nginx_rendered, [51820, 51821], "the first pass renders every network");
    s.reconciler.tick(Mode::Apply).await.unwrap();
    assert_eq!(s.reconciler.nginx_rendered, Vec::<u16>::new(), "nothing changed: nothing rendered");
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert_eq!(s.reconciler.nginx_rendered, Vec::<u16>::new(), "a drift check renders none either");
    s.records();
    s.store(|c| c["51821"]["proxy"]["http://more.test"] = serde_json::json!(["10.81.0.9:8443"])).await;
    s.reconciler.tick(Mode::Apply).await.unwrap();
    assert_eq!(s.reconciler.nginx_rendered, [51821], "only the changed network");
    // The files, from the kept part and the new one, are the new state's.
    let (files, _) = s.reconciler.nginx_for(&s.reconciler.nginx_parts);
    let desired = crate::validate::validate(&s.shared.store().desired().await.unwrap().1, &Default::default()).unwrap();
    assert!(*files == nginx_files(&desired) && files.http.contains("server_name more.test;"), "{}", files.http);
}

/// Trust is the target's digest, not the spec: a change that leaves a
/// network's target as it was (PROXY protocol is nginx's alone) reads
/// nothing inside the network and plans nothing there.
#[tokio::test]
async fn a_change_that_leaves_the_target_alone_reads_no_network() {
    let mut s = setup(converged_script(), &converged_config()).await;
    s.reconciler.tick(Mode::Drift).await.unwrap();
    s.records();
    s.reader.take_reads();
    s.store(|c| c["51821"]["proxy"]["https://other.test"] = serde_json::json!({"upstreams": ["10.81.0.9:8443"], "proxy_protocol": true}))
        .await;
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert_eq!(s.reconciler.computed, [51821], "its spec changed: its target is computed again");
    assert_eq!(s.reader.take_reads(), Vec::<String>::new(), "the same digest: not looked into");
    assert!(outcome.record.changed.is_empty(), "nothing done inside a network");
    let records = s.records();
    assert!(mutating(&records).iter().all(|l| l.contains("nginx")), "nginx's files alone: {records:?}");
}

#[tokio::test]
async fn a_changed_endpoint_is_pushed_although_wireguard_has_one() {
    let mut s = setup(converged_script(), &converged_config()).await;
    s.reconciler.tick(Mode::Drift).await.unwrap();
    s.records();
    s.store(|c| c["51820"]["peers"][PEER_A]["endpoint"] = "10.254.0.7:41214".into()).await;
    s.reconciler.tick(Mode::Apply).await.unwrap();
    let records = s.records();
    assert_eq!(mutating(&records), ["ip netns exec network-51820 wg syncconf wg51820 /dev/stdin"]);
}

#[tokio::test]
async fn an_unreadable_network_is_reported_and_the_others_still_converge() {
    let script = converged_rules(Script::new().once("network-51820 iptables-save", Reply::fail(1, "iptables-save: Permission denied")));
    let mut s = setup(script, &converged_config()).await;
    s.store(|c| c["51821"]["mtu"] = 1300.into()).await;
    let outcome = s.reconciler.tick(Mode::Drift).await.unwrap();
    assert!(!outcome.record.ok);
    assert_eq!(outcome.record.errors.len(), 1, "{:?}", outcome.record.errors);
    assert!(
        outcome.record.errors[0].starts_with("network 51820: reading its state") && outcome.record.errors[0].contains("Permission denied")
    );
    assert_eq!(outcome.record.changed, [51821], "the other network still converged");
    assert!(mutating(&s.records()).iter().all(|l| !l.contains("51820")), "nothing planned for what could not be read");
    assert_eq!(outcome.record.applied_generation, 0, "a failed pass applies no generation");
    // The next apply looks at 51820 again (it is not trusted), not at 51821.
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    let records = s.records();
    assert!(records.iter().any(|r| r.line.contains("network-51820 iptables-save")));
    assert!(records.iter().all(|r| !r.line.contains("51821")), "{records:?}");
}

#[tokio::test]
async fn a_failing_command_fails_its_network_only_with_the_command_and_stderr() {
    let script = converged_rules(Script::new())
        .on("ip netns add network-51821", Reply::fail(1, "Cannot create namespace file: Read-only file system"));
    let mut s = setup(script, &converged_config()).await;
    s.host.remove_namespace(51821);
    let outcome = s.reconciler.tick(Mode::Drift).await.unwrap();
    assert!(!outcome.record.ok);
    let e = &outcome.record.errors;
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("network 51821") && e[0].contains("ip netns add network-51821") && e[0].contains("Read-only file system"),
        "{e:?}"
    );
    let records = s.records();
    assert!(!records.iter().flat_map(Record::commands).any(|l| l.contains("link add wg51821")), "the network's later actions are skipped");
    // The next apply tries again.
    s.reconciler.tick(Mode::Apply).await.unwrap();
    assert!(s.records().iter().flat_map(Record::commands).any(|l| l == "ip netns add network-51821"));
}

#[tokio::test]
async fn a_removed_network_is_read_for_its_counters_before_it_goes() {
    let mut s = setup(converged_script(), &converged_config()).await;
    // No nginx runs here: the scripted runner can start one, not reload it.
    s.host.stop_nginx();
    s.store(|c| drop(c.as_object_mut().unwrap().remove("51820"))).await;
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    let lines: Vec<String> = s.records().iter().flat_map(Record::commands).map(String::from).collect();
    assert!(lines.iter().any(|l| l == "ip netns del network-51820"), "network deleted: {lines:#?}");
    // (The counters are read before the pass executes anything: `pass`.)
    assert!(s.reader.take_reads().contains(&"network-51820".to_string()), "counters read");
    let t = crate::traffic::traffic_since(s.shared.store(), 0, i64::MAX).await.unwrap();
    assert_eq!(t.networks[NETWORK_KEY_51820].traffic.tx, 148, "the last bytes are kept");
}

#[tokio::test]
async fn an_invalid_stored_state_is_reported_not_applied() {
    let mut s = setup(converged_script(), &converged_config()).await;
    s.store(|c| c["51820"]["mtu"] = 1.into()).await;
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert!(!outcome.record.ok);
    assert!(outcome.record.errors[0].contains("stored desired state is invalid"), "{:?}", outcome.record.errors);
    assert!(mutating(&s.records()).is_empty(), "nothing removed on the strength of a bad state");
}

#[tokio::test]
async fn a_drift_check_reads_rules_only_where_their_generation_moved() {
    let mut s = setup(converged_script(), &converged_config()).await;
    let saves = |records: Vec<Record>| records.iter().filter(|r| r.line.contains("iptables-save")).count();
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert_eq!(saves(s.records()), 2, "nothing verified yet: both networks' rules are read");
    // The second check is the second network's turn of the safety rounds.
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert_eq!(saves(s.records()), 1);
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert_eq!(s.records(), vec![], "rules unchanged since verified: the drift check runs no process");
    assert_eq!(s.reader.take_reads().iter().filter(|n| n.starts_with("network-")).count(), 6, "but every network is read each time");
    *s.reader.generation.lock().unwrap() = Some(8);
    let outcome = s.reconciler.tick(Mode::Drift).await.unwrap();
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    assert_eq!(saves(s.records()), 2, "the rules changed somewhere: read again");
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert_eq!(s.records(), vec![]);
}

#[test]
fn retries_back_off_up_to_the_watchdog_and_reset_on_success() {
    let mut p = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(5));
    assert_eq!(p.after_pass(true), None, "nothing to retry");
    let delays: Vec<_> = (0..5).map(|_| p.after_pass(false).unwrap().as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 5, 5]);
    assert_eq!(p.after_pass(true), None);
    assert_eq!(p.after_pass(false), Some(Duration::from_secs(1)), "a new failure starts soon again");
}

#[tokio::test]
async fn an_apply_stores_the_counters_its_actions_end_and_only_those() {
    let mut s = setup(converged_script(), &converged_config()).await;
    let stored_tx = |t: crate::model::TrafficInfo| t.networks.get(NETWORK_KEY_51820).map_or(0, |n| n.traffic.tx);
    // A peer added: every counter goes on, so nothing is stored before the
    // next drift check.
    s.store(|c| c["51820"]["peers"]["AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="] = serde_json::json!({"allowed_ips": ["10.80.0.9/32"]}))
        .await;
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    assert!(s.records().iter().flat_map(Record::commands).any(|l| l.contains("wg syncconf wg51820")), "the peer was added");
    let t = crate::traffic::traffic_since(s.shared.store(), 0, i64::MAX).await.unwrap();
    assert_eq!(stored_tx(t), 0, "no tick for an added peer");
    // A peer removed: its bytes (the fixture's 148) are stored before it goes.
    s.store(|c| drop(c["51820"]["peers"].as_object_mut().unwrap().remove(PEER_A))).await;
    let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
    assert!(outcome.record.ok, "{:?}", outcome.record.errors);
    let t = crate::traffic::traffic_since(s.shared.store(), 0, i64::MAX).await.unwrap();
    assert_eq!(stored_tx(t), 148, "the removed peer's last bytes are kept");
}

#[tokio::test]
async fn peers_added_one_by_one_leave_the_verified_rules_unread() {
    let mut s = setup(converged_script(), &converged_config()).await;
    let saves = |records: &[Record]| records.iter().filter(|r| r.line.contains("iptables-save")).count();
    for _ in 0..3 {
        s.reconciler.tick(Mode::Drift).await.unwrap();
    }
    s.records();
    for (i, key) in ["AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=", "AgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fICE="].iter().enumerate() {
        s.store(|c| c["51820"]["peers"][key] = serde_json::json!({"allowed_ips": [format!("10.80.0.{}/32", 20 + i)]})).await;
        let outcome = s.reconciler.tick(Mode::Apply).await.unwrap();
        assert!(outcome.record.ok, "{:?}", outcome.record.errors);
        let records = s.records();
        assert!(records.iter().flat_map(Record::commands).any(|l| l.contains("wg syncconf wg51820")), "peer {i} added: {records:?}");
        assert_eq!(saves(&records), 0, "peer {i}: WireGuard alone changed, the rules stay verified: {records:?}");
    }
    // Rules set by a pass are read again by the next one. (No nginx runs
    // here: the scripted runner can start one, not reload it.)
    s.host.stop_nginx();
    s.store(|c| drop(c["51820"]["proxy"].as_object_mut().unwrap().remove("https://lan.example.com"))).await;
    s.reconciler.tick(Mode::Apply).await.unwrap();
    let records = s.records();
    assert!(records.iter().flat_map(Record::commands).any(|l| l.contains("iptables-restore")), "{records:?}");
    s.reconciler.tick(Mode::Drift).await.unwrap();
    assert!(s.records().iter().any(|r| r.line.contains("network-51820 iptables-save")), "the rules a pass set are read again");
}
