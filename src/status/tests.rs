use super::*;
use crate::system::Backend;
use crate::testing::{FakeHost, converged_config, converged_desired, converged_script, nginx_files, shared};

#[tokio::test]
async fn status_reports_what_was_read_without_a_process() {
    let host = FakeHost::converged(&nginx_files(&converged_desired()));
    host.add_namespace(40000);
    // The replayed reader cannot enter 40000: a namespace it knows nothing of.
    let script = converged_script();
    let shared = shared(host.system(script, Backend::Userspace)).await;
    let mut config = converged_config();
    config.insert("40001".into(), config["51821"].clone());
    config.get_mut("40001").unwrap().private_key = "cMXKVx1hAvvJ0Hj9OtBhFTXDA4MVk9LlHBr8rBsq5F8=".into();
    shared.store().save_desired(&config, 1).await.unwrap();
    refresh(&shared).await;
    let st = collect(&shared).await.unwrap();
    assert_eq!((st.backend.as_str(), st.desired_generation, st.applied_generation, st.nginx_running), ("userspace", 1, 0, true));
    let n = &st.networks["51820"];
    assert!(n.namespace_present && n.interface_present && n.interface_up && n.desired);
    assert_eq!(n.public_key.as_deref(), Some("4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c="));
    assert_eq!((n.listen_port, n.mtu), (Some(51820), Some(1380)));
    assert_eq!(n.addresses, ["10.80.0.1/16", "fd80::1/64"]);
    let peer = &n.peers["OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA="];
    assert_eq!((peer.endpoint.as_deref(), peer.latest_handshake, peer.tx_bytes), (Some("10.254.0.7:41213"), None, 148));
    assert_eq!(peer.allowed_ips, ["10.80.0.2/32", "fd80::2/128"]);
    let stray = &st.networks["40000"];
    assert!(stray.namespace_present && !stray.desired, "a leftover being removed");
    assert!(!stray.interface_present, "unreadable: shown as not there, not as an error");
    let missing = &st.networks["40001"];
    assert!(missing.desired && !missing.namespace_present && !missing.interface_present && missing.peers.is_empty());
    assert_eq!(missing.observed_at, None, "never looked at");
    assert!(n.observed_at.is_some_and(|t| t > 1_700_000_000));
    // No process was started for any of it.
    assert_eq!(shared.system().runner.take_records(), vec![]);
}
