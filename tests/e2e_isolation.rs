//! End-to-end tests of what keeps tenants apart at the ingress (root, real
//! nginx and WireGuard): the gateway's own answer to Host names no route
//! serves, ports held by other processes, a route nginx cannot open, and
//! floods on a raw port. A test binary of its own: its process takes a slot
//! of its own, so its indexes do not meet the other binaries' tests.

mod common;

use common::*;
use serde_json::{Value, json};

fn network(t: &NodeTopology, proxy: Value) -> Value {
    let peer = json!({ "allowed_ips": ["10.80.0.2/32"], "endpoint": format!("{}:{}", t.n.node_ip(), t.node.listen_port) });
    json!({ t.port.to_string(): { "private_key": t.gw_private, "address": ["10.80.0.1/16"], "peers": { &t.node.public: peer }, "proxy": proxy } })
}

/// An HTTP request from the client with this Host header (none if empty).
fn http_get(n: &Names, host: &str) -> (bool, String) {
    let header = if host.is_empty() { "-0 -H 'Host:'".to_string() } else { format!("-H 'Host: {host}'") };
    client_curl(n, &format!("{header} http://{}:{}/", n.client_gw_ip(), n.http_port()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test.sh runs it with --include-ignored"]
async fn an_unknown_host_or_sni_reaches_no_node() {
    let t = node_topology(1);
    let n = &t.n;
    let d = TestDaemon::start(&args(n, &[])).await;
    let cfg = network(&t, json!({ "http://app.test": ["10.80.0.2:80"], "https://app.test": ["10.80.0.2:443"] }));
    let (code, body) = d.post(&cfg).await;
    assert_eq!((code, &body["result"]), (200, &json!("applied")), "{body}");
    let (ok, out) = http_get(n, "app.test");
    assert!(ok && out.contains("node-http host=app.test"), "the route works: {out}");

    // Nothing else is the default for this listen address (the test's nginx
    // has no server of its own): a name no route serves, and a request
    // without a Host, are closed by the gateway's own server.
    for host in ["other.test", "acme-check.other-tenant.test", ""] {
        let (ok, out) = http_get(n, host);
        assert!(!ok && !out.contains("node-"), "Host {host:?} reached a node: {out}");
        assert!(out.contains("Empty reply from server"), "closed without an answer (444): {out}");
    }
    // An unknown SNI name stays closed too.
    let hp = n.https_port();
    let (ok, out) = client_curl(n, &format!("-k --resolve other.test:{hp}:{} https://other.test:{hp}/", n.client_gw_ip()));
    assert!(!ok && !out.contains("node-"), "{out}");
    d.stop().await;
}
