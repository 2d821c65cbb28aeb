//! API tests on Rocket's local client with the same app `main` builds. No
//! reconciler runs here, so nothing on the system changes: POST/PATCH answer
//! `202 pending` after the (short) wait, and the stored state is checked.

mod common;

use std::time::Duration;

use gateway::daemon::build;
use gateway::system::Runner;
use rocket::http::{ContentType, Header, Method, Status};
use rocket::local::asynchronous::Client;
use serde_json::{Value, json};

const KEY1: &str = "0EtpYOfpZyKaIcpkq+KO/+joyV431f1X99CcB2OMo3c=";
const KEY2: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
const KEY3: &str = "S0DGe1Pns8GtjaEnjj/Twc2KUKtHerUm8bYxMUHwOQ8=";

async fn client(extra: &[&str]) -> Client {
    let mut argv = vec!["--apply-wait=200ms"];
    argv.extend(extra);
    let args = common::isolated_args(&argv);
    let d = build(&args, Runner::new(Duration::from_secs(5))).await.unwrap();
    Client::untracked(gateway::api::rocket(d.shared, d.figment)).await.unwrap()
}

async fn call(c: &Client, method: Method, path: &str, auth: Option<Header<'static>>, body: Option<&str>) -> (Status, Value) {
    let mut req = c.req(method, path.to_string());
    if let Some(h) = auth {
        req = req.header(h);
    }
    if let Some(b) = body {
        req = req.header(ContentType::JSON).body(b);
    }
    let r = req.dispatch().await;
    let status = r.status();
    let text = r.into_string().await.unwrap_or_default();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn token() -> Option<Header<'static>> {
    Some(Header::new("Token", "s3cret"))
}

fn net(key: &str, host: &str) -> Value {
    json!({
        "private_key": key,
        "address": ["10.80.0.1/16"],
        "peers": { KEY3: { "allowed_ips": ["10.80.0.2/32"], "endpoint": "203.0.113.7:41213" } },
        "proxy": { format!("https://{host}"): ["10.80.0.2:443"], format!("http://{host}"): ["10.80.0.2:80"] }
    })
}

fn assert_error_shape(v: &Value, code: &str) {
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["details"].is_array(), "{v}");
}

#[tokio::test]
async fn every_route_but_health_needs_the_token() {
    let c = client(&["--token", "s3cret"]).await;
    let routes = [
        (Method::Get, "/api/v1/config.json", None),
        (Method::Post, "/api/v1/config.json", Some("{}")),
        (Method::Patch, "/api/v1/config.json", Some("{}")),
        (Method::Get, "/api/v1/status.json", None),
        (Method::Get, "/api/v1/traffic.json?start=0", None),
        (Method::Get, "/metrics", None),
    ];
    for (m, path, body) in routes {
        for auth in [
            None,
            Some(Header::new("Token", "wrong")),
            Some(Header::new("Authorization", "Bearer s3cre")),
            Some(Header::new("Authorization", "s3cret")),
        ] {
            let (s, v) = call(&c, m, path, auth.clone(), body).await;
            assert_eq!(s, Status::Unauthorized, "{m} {path} with {auth:?}");
            assert_error_shape(&v, "unauthorized");
        }
        for auth in [Header::new("Token", "s3cret"), Header::new("Authorization", "Bearer s3cret")] {
            let (s, v) = call(&c, m, path, Some(auth.clone()), body).await;
            assert!(s.code < 300, "{m} {path} with {auth:?}: {s} {v}");
        }
    }
    let (s, v) = call(&c, Method::Get, "/health", None, None).await;
    assert_eq!((s, v), (Status::Ok, json!({"status": "ok"})));
    let (s, v) = call(&c, Method::Get, "/openapi.json", None, None).await;
    assert_eq!(s, Status::NotFound, "the spec is not served unauthenticated");
    assert_error_shape(&v, "not_found");
}

#[tokio::test]
async fn invalid_config_lists_every_problem_and_changes_nothing() {
    let c = client(&["--token", "s3cret"]).await;
    let mut bad = net("not-a-key", "App.test");
    bad["mtu"] = json!(70000);
    bad["peers"][KEY3]["endpoint"] = json!("host;rm -rf /:1");
    bad["proxy"]["gopher://x.test"] = json!(["10.80.0.2:70"]);
    bad["proxy"]["https://y.test"] = json!(["10.80.0.2:443;"]);
    let body = json!({ "51820": bad, "abc": net(KEY1, "z.test") }).to_string();
    let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await;
    assert_eq!(s, Status::UnprocessableEntity, "{v}");
    assert_error_shape(&v, "invalid_config");
    let paths: Vec<&str> = v["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    for want in [
        r#"$["51820"].private_key"#,
        r#"$["51820"].mtu"#,
        &format!(r#"$["51820"].peers["{KEY3}"].endpoint"#),
        r#"$["51820"].proxy["gopher://x.test"]"#,
        r#"$["51820"].proxy["https://y.test"][0]"#,
        r#"$["51820"].proxy["https://App.test"]"#,
        r#"$["abc"]"#,
    ] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(cfg, json!({"generation": 0, "config": {}}), "nothing stored");

    // An endpoint the host's WireGuard socket must not send to (here inside
    // the default bridge subnet, in its IPv4-mapped form): 422 at its path.
    for endpoint in ["127.0.0.1:51820", "[::ffff:10.199.0.1]:51820", "[fe80::1%2]:51820"] {
        let mut n = net(KEY1, "e.test");
        n["peers"][KEY3]["endpoint"] = json!(endpoint);
        let body = json!({ "51820": n }).to_string();
        let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await;
        assert_eq!(s, Status::UnprocessableEntity, "{endpoint}: {v}");
        assert_eq!(v["details"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["details"][0]["path"], format!(r#"$["51820"].peers["{KEY3}"].endpoint"#), "{v}");
        assert!(v["details"][0]["message"].as_str().unwrap().contains(endpoint), "{v}");
    }
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(cfg["generation"], 0, "nothing stored");

    // Not JSON, wrong types, unknown fields: a JSON 422 with serde's reason.
    for body in ["{", "[]", r#"{"51820": {"private_key": 5}}"#, &json!({"51820": {"private_key": KEY1, "surprise": 1}}).to_string()] {
        let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(body)).await;
        assert_eq!(s, Status::UnprocessableEntity, "{body}: {v}");
        assert_error_shape(&v, "invalid_config");
        assert!(v["details"][0]["message"].as_str().unwrap().contains("line"), "{v}");
    }

    // One hostname in two networks.
    let body = json!({ "51820": net(KEY1, "same.test"), "51821": net(KEY2, "same.test") }).to_string();
    let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await;
    assert_eq!(s, Status::UnprocessableEntity);
    assert!(v["details"].to_string().contains("only one network"), "{v}");
}

#[tokio::test]
async fn post_stores_a_generation_and_patch_replaces_or_removes_ports() {
    // A namespace directory of our own, where a namespace can appear.
    let netns = tempfile::tempdir().unwrap();
    let netns_arg = format!("--netns-dir={}", netns.path().display());
    let c = client(&["--token", "s3cret", &netns_arg]).await;
    let body = json!({ "51820": net(KEY1, "a.test"), "51821": net(KEY2, "b.test") }).to_string();
    let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await;
    // No reconciler runs in this test: the wait ends and says so.
    assert_eq!(s, Status::Accepted, "{v}");
    assert_eq!((v["generation"].clone(), v["result"].clone()), (json!(1), json!("pending")));

    let patch = json!({ "51821": null, "51822": net(KEY2, "c.test") }).to_string();
    let (s, v) = call(&c, Method::Patch, "/api/v1/config.json", token(), Some(&patch)).await;
    assert_eq!((s, v["generation"].clone()), (Status::Accepted, json!(2)), "{v}");
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(cfg["generation"], 2);
    let ports: Vec<&String> = cfg["config"].as_object().unwrap().keys().collect();
    assert_eq!(ports, ["51820", "51822"]);
    assert_eq!(cfg["config"]["51822"]["proxy"]["https://c.test"], json!(["10.80.0.2:443"]));
    assert_eq!(cfg["config"]["51820"], net(KEY1, "a.test"), "unlisted ports stay as they were");

    // A PATCH that would make the whole state invalid is refused as a whole.
    let patch = json!({ "51820": null, "51823": net(KEY1, "c.test") }).to_string();
    let (s, v) = call(&c, Method::Patch, "/api/v1/config.json", token(), Some(&patch)).await;
    assert_eq!(s, Status::UnprocessableEntity, "{v}");
    let (_, after) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(after, cfg, "nothing changed");

    // Removing a port that is not there is harmless.
    let (s, v) = call(&c, Method::Patch, "/api/v1/config.json", token(), Some(r#"{"40000": null}"#)).await;
    assert_eq!((s, v["generation"].clone()), (Status::Accepted, json!(3)), "{v}");

    let (s, st) = call(&c, Method::Get, "/api/v1/status.json", token(), None).await;
    assert_eq!(s, Status::Ok);
    assert_eq!(st["desired_generation"], 3);
    assert_eq!(st["applied_generation"], 0);
    assert_eq!(st["networks"]["51820"]["namespace_present"], false, "really observed: nothing was applied");
    // A namespace file holds a namespace (it lies on nsfs, as this link
    // does); a plain file is what a crash inside `ip netns add` leaves.
    std::os::unix::fs::symlink("/proc/self/ns/net", netns.path().join("network-51820")).unwrap();
    std::fs::write(netns.path().join("network-51822"), "").unwrap();
    let (_, st) = call(&c, Method::Get, "/api/v1/status.json", token(), None).await;
    assert_eq!(st["networks"]["51820"]["namespace_present"], true, "read from the namespace directory: {st}");
    assert_eq!(st["networks"]["51822"]["namespace_present"], false, "a file that holds no namespace: {st}");
}

#[tokio::test]
async fn traffic_query_errors_are_clear() {
    let c = client(&["--token", "s3cret"]).await;
    for (path, needle) in [
        ("/api/v1/traffic.json", "required"),
        ("/api/v1/traffic.json?start=abc", "unix seconds"),
        ("/api/v1/traffic.json?start=-5", "unix seconds"),
        ("/api/v1/traffic.json?start=1.5", "unix seconds"),
        ("/api/v1/traffic.json?start=1&start=2", "more than once"),
        ("/api/v1/traffic.json?start=0&step=30", "from 60 to 31622400"),
        ("/api/v1/traffic.json?start=0&step=x", "hourly sums"),
    ] {
        let (s, v) = call(&c, Method::Get, path, token(), None).await;
        assert_eq!(s, Status::BadRequest, "{path}: {v}");
        assert_error_shape(&v, "bad_request");
        assert!(v["message"].as_str().unwrap().contains(needle), "{v}");
    }
    let (s, v) = call(&c, Method::Get, "/api/v1/traffic.json?start=0", token(), None).await;
    assert_eq!(s, Status::Ok);
    assert_eq!(v["start_time"], 0);
    assert_eq!(v["traffic"], json!({"rx": 0, "tx": 0}));
    assert!(v["stop_time"].as_i64().unwrap() > 1_700_000_000);
    // Integers in any spelling JSON Schema allows (as generated clients print them).
    for (path, start) in
        [("/api/v1/traffic.json?start=1.7e9", 1_700_000_000), ("/api/v1/traffic.json?start=1.8e9&step=3600.0", 1_800_000_000)]
    {
        let (s, v) = call(&c, Method::Get, path, token(), None).await;
        assert_eq!((s, &v["start_time"]), (Status::Ok, &json!(start)), "{path}: {v}");
    }
    let (s, v) = call(&c, Method::Get, "/api/v1/nothing", token(), None).await;
    assert_eq!(s, Status::NotFound);
    assert_error_shape(&v, "not_found");
}

/// A known path asked with a method it does not have: 405 with `Allow`
/// (before the token is checked: the methods are no secret); an unknown
/// path stays 404 whatever the method.
#[tokio::test]
async fn wrong_method_is_405_with_allow_and_unknown_path_404() {
    let c = client(&["--token", "s3cret"]).await;
    for (method, path, allow) in [
        (Method::Trace, "/health", "GET, HEAD"),
        (Method::Delete, "/api/v1/config.json", "GET, HEAD, PATCH, POST"),
        (Method::Put, "/metrics", "GET, HEAD"),
        (Method::Options, "/api/v1/traffic.json", "GET, HEAD"),
        (Method::Post, "/api/v1/status.json", "GET, HEAD"),
    ] {
        let r = c.req(method, path).dispatch().await;
        assert_eq!(r.status(), Status::MethodNotAllowed, "{method} {path}");
        assert_eq!(r.headers().get_one("Allow"), Some(allow), "{method} {path}");
        let v: Value = serde_json::from_str(&r.into_string().await.unwrap()).unwrap();
        assert_error_shape(&v, "method_not_allowed");
    }
    for method in [Method::Delete, Method::Get, Method::Post] {
        let (s, v) = call(&c, method, "/api/v1/config", token(), None).await;
        assert_eq!(s, Status::NotFound, "{method}: {v}");
        assert_error_shape(&v, "not_found");
    }
    let (s, _) = call(&c, Method::Head, "/health", None, None).await;
    assert_eq!(s, Status::Ok, "HEAD is answered wherever GET is");
}

/// A method Rocket does not know at all (QUERY) reaches the server only
/// over a socket: on a known path it is 405 with `Allow` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_on_a_known_path_is_405() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let args = common::isolated_args(&["--port", &port.to_string()]);
    let d = build(&args, Runner::new(Duration::from_secs(5))).await.unwrap();
    let rocket = gateway::api::rocket(d.shared, d.figment).ignite().await.unwrap();
    let shutdown = rocket.shutdown();
    let server = tokio::spawn(rocket.launch());
    let ask = |request: &'static str| async move {
        for _ in 0..100 {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                s.write_all(request.as_bytes()).await.unwrap();
                let mut answer = String::new();
                s.read_to_string(&mut answer).await.unwrap();
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the API did not listen on {port}");
    };
    let answer = ask("QUERY /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("\r\nallow: get, head\r\n"), "{answer}");
    assert!(answer.contains("method_not_allowed"), "{answer}");
    let answer = ask("QUERY /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "an unknown method on an unknown path: {answer}");
    shutdown.notify();
    let _ = server.await;
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let c = client(&["--token", "s3cret"]).await;
    let r = c.get("/metrics").header(Header::new("Authorization", "Bearer s3cret")).dispatch().await;
    assert_eq!(r.status(), Status::Ok);
    assert!(r.content_type().unwrap().to_string().starts_with("application/openmetrics-text"));
    let text = r.into_string().await.unwrap();
    for name in [
        "gateway_apply_failures_total",
        "gateway_networks",
        "gateway_poll_errors_total",
        "gateway_last_successful_reconcile_timestamp_seconds",
    ] {
        assert!(text.contains(name), "{name} missing in {text}");
    }
}

#[tokio::test]
async fn without_a_token_the_api_is_open_on_loopback() {
    let c = client(&[]).await;
    let (s, _) = call(&c, Method::Get, "/api/v1/config.json", None, None).await;
    assert_eq!(s, Status::Ok);
}

#[tokio::test]
async fn concurrent_posts_get_distinct_generations_and_the_last_wins() {
    let c = client(&["--token", "s3cret"]).await;
    let bodies: Vec<String> = (0..8).map(|i| json!({ (51820 + i).to_string(): net(KEY1, &format!("h{i}.test")) }).to_string()).collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| call(&c, Method::Post, "/api/v1/config.json", token(), Some(b)))).await;
    let mut gens: Vec<i64> = answers.iter().map(|(_, v)| v["generation"].as_i64().unwrap()).collect();
    gens.sort();
    assert_eq!(gens, (1..=8).collect::<Vec<_>>(), "each request got its own generation: {answers:?}");
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(cfg["generation"], 8);
    let last = answers.iter().position(|(_, v)| v["generation"] == 8).unwrap();
    let want: Value = serde_json::from_str(&bodies[last]).unwrap();
    assert_eq!(cfg["config"], want, "the state is the body of the last accepted POST, whole");
}

#[tokio::test]
async fn token_forms_and_patch_keys_and_body_size() {
    let c = client(&["--token", "s3cret"]).await;
    // Whitespace around a header's value is not part of it (HTTP trims it);
    // inside the value it is. (A configured token with surrounding
    // whitespace is refused at start: `daemon::build`.)
    for h in [
        Header::new("Authorization", "bearer s3cret"),
        Header::new("Authorization", "BEARER   s3cret "),
        Header::new("Token", "  s3cret\t"),
    ] {
        let (s, _) = call(&c, Method::Get, "/api/v1/config.json", Some(h.clone()), None).await;
        assert_eq!(s, Status::Ok, "{h:?}");
    }
    for h in [Header::new("Token", "s3 cret"), Header::new("Token", "s3cret s3cret"), Header::new("Authorization", "Bearer s3cret x")] {
        let (s, _) = call(&c, Method::Get, "/api/v1/config.json", Some(h.clone()), None).await;
        assert_eq!(s, Status::Unauthorized, "{h:?}");
    }
    // A stale Token header does not hide a right Bearer token (nor the reverse).
    let r = c
        .get("/api/v1/config.json")
        .header(Header::new("Token", "old"))
        .header(Header::new("Authorization", "Bearer s3cret"))
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Ok);

    let (s, v) = call(&c, Method::Patch, "/api/v1/config.json", token(), Some(r#"{"051820": null, "x": null}"#)).await;
    assert_eq!(s, Status::UnprocessableEntity, "{v}");
    let paths: Vec<&str> = v["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    assert_eq!(paths, [r#"$["051820"]"#, r#"$["x"]"#]);
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(cfg["generation"], 0, "no generation for a refused PATCH");

    let huge = format!("{{\"51820\": {{\"private_key\": \"{}\"}}}}", "A".repeat(17 * 1024 * 1024));
    let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&huge)).await;
    assert_eq!(s, Status::PayloadTooLarge);
    assert_error_shape(&v, "too_large");
}

#[tokio::test]
async fn concurrent_patches_lose_no_update() {
    // Each PATCH builds on the state before it: without the write lock two
    // could read the same state and one addition would be lost.
    let c = client(&["--token", "s3cret"]).await;
    let keys: Vec<String> = (0..8u8)
        .map(|i| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode([i + 1; 32])
        })
        .collect();
    let bodies: Vec<String> =
        (0..8).map(|i| json!({ (51820 + i).to_string(): net(&keys[i], &format!("h{i}.test")) }).to_string()).collect();
    let answers = futures::future::join_all(bodies.iter().map(|b| call(&c, Method::Patch, "/api/v1/config.json", token(), Some(b)))).await;
    assert!(answers.iter().all(|(s, _)| *s == Status::Accepted), "{answers:?}");
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(cfg["generation"], 8);
    let ports: Vec<&String> = cfg["config"].as_object().unwrap().keys().collect();
    assert_eq!(ports.len(), 8, "lost updates: {ports:?}");
}

/// Each new form of a proxy entry, bad, gets a 422 naming its JSON path;
/// good, it is stored as given (the list form unchanged).
#[tokio::test]
async fn ingress_forms_are_checked_with_their_paths() {
    let c = client(&["--token", "s3cret", "--custom-forwarding", "https://api.test=127.0.0.1:8443"]).await;
    // Each value's own form, then (in a config otherwise valid: rules that
    // span values are checked on valid networks) the ports.
    let forms = [
        ("https://pp.test", json!({"upstreams": ["10.80.0.2:443"], "proxy_protocol": "yes"})),
        ("https://extra.test", json!({"upstreams": ["10.80.0.2:443"], "weight": 2})),
        ("http://h.test", json!({"upstreams": ["10.80.0.2:80"], "proxy_protocol": true})),
        ("udp://5000", json!({"upstreams": ["10.80.0.2:5000"], "proxy_protocol": true})),
        ("tcp://080", json!(["10.80.0.2:22"])),
        ("tcp://0", json!(["10.80.0.2:22"])),
        ("tcp://2222", json!({"upstreams": ["10.80.0.2:22;"]})),
    ];
    let ports = ["tcp://443", "tcp://80", "tcp://8000", "tcp://8443", "udp://51821"].map(|k| (k, json!(["10.80.0.2:22"])));
    let mut got: Vec<(String, String)> = Vec::new();
    for entries in [&forms[..], &ports[..]] {
        let mut bad = net(KEY1, "a.test");
        for (key, value) in entries {
            bad["proxy"][*key] = value.clone();
        }
        let mut other = net(KEY2, "b.test");
        other["proxy"]["udp://2222"] = json!(["10.80.0.2:22"]);
        if entries.len() == ports.len() {
            bad["proxy"]["tcp://2222"] = json!(["10.80.0.2:22"]);
        }
        let body = json!({ "51820": bad, "51821": other }).to_string();
        let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await;
        assert_eq!(s, Status::UnprocessableEntity, "{v}");
        assert_error_shape(&v, "invalid_config");
        got.extend(v["details"].as_array().unwrap().iter().map(|d| (d["path"].to_string(), d["message"].to_string())));
    }
    let p = |net: &str, key: &str, tail: &str| json!(format!(r#"$["{net}"].proxy["{key}"]{tail}"#)).to_string();
    for (want, says) in [
        (p("51820", "https://pp.test", ".proxy_protocol"), "true or false"),
        (p("51820", "https://extra.test", r#"["weight"]"#), "unknown field"),
        (p("51820", "http://h.test", ".proxy_protocol"), "only for https:// and tcp://"),
        (p("51820", "udp://5000", ".proxy_protocol"), "only for https:// and tcp://"),
        (p("51820", "tcp://080", ""), "plain decimal"),
        (p("51820", "tcp://0", ""), "1..=65535"),
        (p("51820", "tcp://2222", ".upstreams[0]"), "upstream"),
        (p("51820", "tcp://443", ""), "the HTTPS listener"),
        (p("51820", "tcp://80", ""), "the HTTP listener"),
        (p("51820", "tcp://8000", ""), "the API"),
        (p("51820", "tcp://8443", ""), "--custom-forwarding https://api.test"),
        (p("51820", "udp://51821", ""), "network 51821's WireGuard listen port"),
        (p("51821", "udp://2222", ""), "network 51820"),
    ] {
        assert!(got.iter().any(|(path, m)| *path == want && m.contains(says)), "no {want}: ...{says}... in {got:#?}");
    }
    assert_eq!(got.len(), 13, "one problem each: {got:#?}");
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(cfg["generation"], 0, "nothing stored");

    let mut good = net(KEY1, "a.test");
    good["proxy"]["https://pp.test"] = json!({"upstreams": ["10.80.0.2:8443"], "proxy_protocol": true});
    good["proxy"]["tcp://2222"] = json!({"upstreams": ["10.80.0.2:22"]});
    good["proxy"]["udp://2222"] = json!(["10.80.0.2:22"]);
    let body = json!({ "51820": good.clone() }).to_string();
    let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await;
    assert!(s == Status::Ok || s == Status::Accepted, "{s}: {v}");
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    good["proxy"]["tcp://2222"]["proxy_protocol"] = json!(false);
    assert_eq!(cfg["config"]["51820"]["proxy"], good["proxy"], "stored as given, the list form as a list");
}

/// The event stream needs the token too, and answers `text/event-stream`.
#[tokio::test]
async fn the_event_stream_needs_the_token() {
    let c = client(&["--token", "s3cret"]).await;
    let (s, v) = call(&c, Method::Get, "/api/v1/events", None, None).await;
    assert_eq!(s, Status::Unauthorized);
    assert_error_shape(&v, "unauthorized");
    // Not read to its end: it has none.
    let r = c.get("/api/v1/events").header(Header::new("Authorization", "Bearer s3cret")).dispatch().await;
    assert_eq!((r.status(), r.content_type()), (Status::Ok, Some(rocket::http::ContentType::EventStream)));
}

#[tokio::test]
async fn database_memory_is_in_memory_and_leaves_no_file() {
    // SQLite's own spelling: a file named `:memory:` in the working
    // directory (where cargo runs the tests) would be the bug.
    let file = std::path::Path::new(":memory:");
    let _ = std::fs::remove_file(file);
    let c = client(&["--token", "s3cret", "--database", ":memory:"]).await;
    let body = json!({ "51820": net(KEY1, "a.test") }).to_string();
    for generation in 1..=3 {
        let (s, v) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await;
        assert_eq!((s, v["generation"].clone()), (Status::Accepted, json!(generation)), "{v}");
    }
    let (s, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!((s, cfg["generation"].clone()), (Status::Ok, json!(3)), "{cfg}");
    assert!(!file.exists(), "no file named :memory: is made");
}

/// One request with extra headers: status, ETag, body.
async fn call_with(
    c: &Client,
    method: Method,
    path: &str,
    headers: &[(&'static str, &str)],
    body: Option<&str>,
) -> (Status, Option<String>, Value) {
    let mut req = c.req(method, path.to_string()).header(Header::new("Token", "s3cret"));
    for (name, value) in headers {
        req = req.header(Header::new(*name, value.to_string()));
    }
    if let Some(b) = body {
        req = req.header(ContentType::JSON).body(b);
    }
    let r = req.dispatch().await;
    let (status, etag) = (r.status(), r.headers().get_one("ETag").map(str::to_string));
    let text = r.into_string().await.unwrap_or_default();
    (status, etag, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn if_match_refuses_a_stale_generation_and_takes_the_current_one() {
    let c = client(&["--token", "s3cret"]).await;
    let (s, etag, _) = call_with(&c, Method::Get, "/api/v1/config.json", &[], None).await;
    assert_eq!((s, etag.as_deref()), (Status::Ok, Some("\"0\"")), "nothing accepted yet: generation 0");
    let body = json!({ "51820": net(KEY1, "a.test") }).to_string();
    let (s, _, v) = call_with(&c, Method::Post, "/api/v1/config.json", &[("If-Match", "\"0\"")], Some(&body)).await;
    assert_eq!((s, v["generation"].clone()), (Status::Accepted, json!(1)), "the current generation: {v}");
    let (_, etag, cfg) = call_with(&c, Method::Get, "/api/v1/config.json", &[], None).await;
    assert_eq!(etag.as_deref(), Some("\"1\""));

    // A writer that read generation 0 is too late, with POST, PATCH and a dry run.
    let other = json!({ "51821": net(KEY2, "b.test") }).to_string();
    for (method, path) in
        [(Method::Post, "/api/v1/config.json"), (Method::Patch, "/api/v1/config.json"), (Method::Post, "/api/v1/config.json?dry_run=true")]
    {
        let (s, _, v) = call_with(&c, method, path, &[("If-Match", "\"0\"")], Some(&other)).await;
        assert_eq!(s, Status::PreconditionFailed, "{method} {path}: {v}");
        assert_error_shape(&v, "precondition_failed");
        assert!(v["message"].as_str().unwrap().contains("stored generation is 1"), "{v}");
    }
    let (_, _, after) = call_with(&c, Method::Get, "/api/v1/config.json", &[], None).await;
    assert_eq!(after, cfg, "nothing changed");

    // The current one, then without the header (as before), then `*`.
    let (s, _, v) = call_with(&c, Method::Patch, "/api/v1/config.json", &[("If-Match", "\"1\"")], Some(&other)).await;
    assert_eq!((s, v["generation"].clone()), (Status::Accepted, json!(2)), "{v}");
    let (s, _, v) = call_with(&c, Method::Patch, "/api/v1/config.json", &[], Some(r#"{"51821": null}"#)).await;
    assert_eq!((s, v["generation"].clone()), (Status::Accepted, json!(3)), "{v}");
    let (s, _, v) = call_with(&c, Method::Post, "/api/v1/config.json", &[("If-Match", "*")], Some(&body)).await;
    assert_eq!((s, v["generation"].clone()), (Status::Accepted, json!(4)), "{v}");
    for bad in ["4", "W/\"4\"", "\"four\""] {
        let (s, _, v) = call_with(&c, Method::Post, "/api/v1/config.json", &[("If-Match", bad)], Some(&body)).await;
        assert_eq!(s, Status::BadRequest, "{bad}: {v}");
        assert!(v["message"].as_str().unwrap().contains("If-Match"), "{v}");
    }
    let (_, etag, _) = call_with(&c, Method::Get, "/api/v1/config.json", &[], None).await;
    assert_eq!(etag.as_deref(), Some("\"4\""), "the refused requests stored nothing");
}

#[tokio::test]
async fn concurrent_writes_with_the_same_if_match_store_exactly_one() {
    let c = client(&["--token", "s3cret"]).await;
    let bodies: Vec<String> = (0..8).map(|i| json!({ (51820 + i).to_string(): net(KEY1, "a.test") }).to_string()).collect();
    let answers = futures::future::join_all(
        bodies.iter().map(|b| call_with(&c, Method::Post, "/api/v1/config.json", &[("If-Match", "\"0\"")], Some(b))),
    )
    .await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _, _)| s.code).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 412).count(), 7, "{statuses:?}");
    let (_, etag, _) = call_with(&c, Method::Get, "/api/v1/config.json", &[], None).await;
    assert_eq!(etag.as_deref(), Some("\"1\""));
}

/// A read token (the Prometheus scrape's, a dashboard's) reads status,
/// traffic, metrics and events; config.json (private keys) and every write
/// answer 403 with it, and nothing is stored. The admin token does all.
#[tokio::test]
async fn the_read_token_reads_and_never_sees_keys_nor_writes() {
    let c = client(&["--token", "s3cret", "--read-token", "scrape"]).await;
    let read = || Some(Header::new("Authorization", "Bearer scrape"));
    for path in ["/api/v1/status.json", "/api/v1/traffic.json?start=0", "/metrics"] {
        let (s, v) = call(&c, Method::Get, path, read(), None).await;
        assert_eq!(s, Status::Ok, "{path}: {v}");
    }
    let r = c.get("/api/v1/events").header(Header::new("Token", "scrape")).dispatch().await;
    assert_eq!((r.status(), r.content_type()), (Status::Ok, Some(ContentType::EventStream)));
    let body = json!({"51820": net(KEY1, "a.example.com")}).to_string();
    let writes = [
        (Method::Get, "/api/v1/config.json", None),
        (Method::Post, "/api/v1/config.json", Some(body.as_str())),
        (Method::Post, "/api/v1/config.json?dry_run=true", Some(body.as_str())),
        (Method::Patch, "/api/v1/config.json", Some(r#"{"51820": null}"#)),
    ];
    for (m, path, body) in writes {
        let (s, v) = call(&c, m, path, read(), body).await;
        assert_eq!(s, Status::Forbidden, "{m} {path}: {v}");
        assert_error_shape(&v, "forbidden");
        assert!(v["message"].as_str().unwrap().contains("admin token"), "{v}");
    }
    let (s, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!((s, &cfg["generation"]), (Status::Ok, &json!(0)), "nothing stored: {cfg}");
    let (s, _) = call(&c, Method::Get, "/metrics", token(), None).await;
    assert_eq!(s, Status::Ok, "the admin token reads too");
    for wrong in ["scrap", "scrapes", "s3cret-"] {
        let (s, v) = call(&c, Method::Get, "/api/v1/status.json", Some(Header::new("Token", wrong)), None).await;
        assert_eq!(s, Status::Unauthorized, "{wrong:?}: {v}");
    }
}

/// A web page may POST `text/plain` (or a form) anywhere without asking
/// first; the API takes writes only as `application/json`: 415 otherwise,
/// nothing stored, before the body is read.
#[tokio::test]
async fn writes_need_a_json_content_type() {
    let c = client(&["--token", "s3cret"]).await;
    let body = json!({ "51820": net(KEY1, "a.test") }).to_string();
    let types = [Some(ContentType::Plain), Some(ContentType::Form), Some(ContentType::new("multipart", "form-data")), None];
    for method in [Method::Post, Method::Patch] {
        for path in ["/api/v1/config.json", "/api/v1/config.json?dry_run=true"] {
            for ct in &types {
                let mut req = c.req(method, path).header(Header::new("Token", "s3cret")).body(&body);
                if let Some(ct) = ct {
                    req = req.header(ct.clone());
                }
                let r = req.dispatch().await;
                assert_eq!(r.status(), Status::UnsupportedMediaType, "{method} {path} {ct:?}");
                let v: Value = serde_json::from_str(&r.into_string().await.unwrap()).unwrap();
                assert_error_shape(&v, "unsupported_media_type");
                assert!(v["message"].as_str().unwrap().contains("application/json"), "{v}");
            }
        }
    }
    // The token is checked first: no hint about the body to a stranger.
    let r = c.post("/api/v1/config.json").header(ContentType::Plain).body(&body).dispatch().await;
    assert_eq!(r.status(), Status::Unauthorized);
    let (s, cfg) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!((s, &cfg["generation"]), (Status::Ok, &json!(0)), "nothing stored: {cfg}");
    let r = c
        .post("/api/v1/config.json")
        .header(Header::new("Token", "s3cret"))
        .header(Header::new("Content-Type", "application/json; charset=utf-8"))
        .body(&body)
        .dispatch()
        .await;
    assert_eq!(r.status(), Status::Accepted, "JSON with a charset is JSON");
}

/// Without a token (loopback only), a request must name loopback or the
/// API's address as its Host: a page on a name that resolves to 127.0.0.1
/// (DNS rebinding) gets 421 and neither reads nor writes. With a token, any
/// Host is fine (the token is what a page cannot have).
#[tokio::test]
async fn without_a_token_a_foreign_host_is_refused() {
    let c = client(&[]).await;
    let body = json!({ "51820": net(KEY1, "a.test") }).to_string();
    for host in ["evil.example", "evil.example:8000", "127.0.0.1.evil.example:8000", "192.0.2.1:8000"] {
        for (m, path, body) in [
            (Method::Get, "/api/v1/config.json", None),
            (Method::Get, "/api/v1/status.json", None),
            (Method::Get, "/metrics", None),
            (Method::Post, "/api/v1/config.json", Some(body.as_str())),
        ] {
            let (s, v) = call(&c, m, path, Some(Header::new("Host", host)), body).await;
            assert_eq!(s, Status::MisdirectedRequest, "{m} {path} Host: {host}: {v}");
            assert_error_shape(&v, "misdirected_request");
        }
    }
    let (_, cfg) = call(&c, Method::Get, "/api/v1/config.json", None, None).await;
    assert_eq!(cfg["generation"], 0, "nothing stored: {cfg}");
    for host in ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "LOCALHOST"] {
        let (s, v) = call(&c, Method::Get, "/api/v1/config.json", Some(Header::new("Host", host)), None).await;
        assert_eq!(s, Status::Ok, "Host: {host}: {v}");
    }
    let c = client(&["--token", "s3cret"]).await;
    let r =
        c.get("/api/v1/config.json").header(Header::new("Token", "s3cret")).header(Header::new("Host", "gw.example:8000")).dispatch().await;
    assert_eq!(r.status(), Status::Ok, "with a token, any name");
}

/// Each refused token is counted by reason: none sent, no such token, a
/// read token on an admin route.
#[tokio::test]
async fn auth_failures_are_counted_by_reason() {
    let c = client(&["--token", "s3cret", "--read-token", "scrape"]).await;
    let count = |text: &str, reason: &str| -> u64 {
        let prefix = format!("gateway_api_auth_failures_total{{reason=\"{reason}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{reason} missing in {text}")).parse().unwrap()
    };
    let metrics = || async { c.get("/metrics").header(Header::new("Token", "s3cret")).dispatch().await.into_string().await.unwrap() };
    let before = metrics().await;
    for reason in ["missing", "invalid", "forbidden"] {
        assert_eq!(count(&before, reason), 0, "every reason has a series from the start");
    }
    let _ = call(&c, Method::Get, "/api/v1/status.json", None, None).await;
    for wrong in ["nope", "s3cre"] {
        let _ = call(&c, Method::Get, "/api/v1/config.json", Some(Header::new("Token", wrong)), None).await;
    }
    for _ in 0..3 {
        let _ = call(&c, Method::Get, "/api/v1/config.json", Some(Header::new("Token", "scrape")), None).await;
    }
    let _ = call(&c, Method::Get, "/api/v1/status.json", Some(Header::new("Token", "scrape")), None).await;
    let after = metrics().await;
    assert_eq!((count(&after, "missing"), count(&after, "invalid"), count(&after, "forbidden")), (1, 2, 3), "{after}");
}

#[tokio::test]
async fn ready_needs_no_token_and_says_why_not() {
    let c = client(&["--token", "s3cret", "--nginx-pid=/nonexistent/nginx.pid"]).await;
    let (s, v) = call(&c, Method::Get, "/ready", None, None).await;
    assert_eq!(s, Status::ServiceUnavailable, "{v}");
    assert_eq!((&v["ready"], &v["nginx_running"]), (&json!(false), &json!(false)), "{v}");
    assert_eq!(v["reasons"], json!([{"path": "$", "message": "nginx is not running", "code": "nginx_not_running"}]));
    let body = json!({ "51820": net(KEY1, "a.test") }).to_string();
    let (s, _) = call(&c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await;
    assert_eq!(s, Status::Accepted, "no reconciler here: never applied");
    let (s, v) = call(&c, Method::Get, "/ready", None, None).await;
    assert_eq!((s, &v["desired_generation"], &v["applied_generation"]), (Status::ServiceUnavailable, &json!(1), &json!(0)), "{v}");
    assert_eq!(v["reasons"][0]["code"], "not_applied", "{v}");
    let (_, text) = call(&c, Method::Get, "/metrics", token(), None).await;
    let text = text.as_str().unwrap();
    assert!(text.contains("gateway_generation{kind=\"desired\"} 1") && text.contains("gateway_generation{kind=\"applied\"} 0"), "{text}");
}

/// A write the database cannot take (its disk full: here an in-memory
/// database held at its size, `SQLITE_FULL` either way) is answered 507 at
/// once with nothing stored, counted, shown in status.json, and stored
/// again once there is room.
#[tokio::test]
async fn a_full_database_answers_507_stores_nothing_and_recovers() {
    let args = common::isolated_args(&["--apply-wait=200ms", "--token=s3cret"]);
    let d = build(&args, Runner::new(Duration::from_secs(5))).await.unwrap();
    let store = d.shared.store().clone();
    let c = Client::untracked(gateway::api::rocket(d.shared, d.figment)).await.unwrap();
    let post = |body: String| {
        let c = &c;
        async move { call(c, Method::Post, "/api/v1/config.json", token(), Some(&body)).await }
    };
    let (s, v) = post(json!({ "51820": net(KEY1, "a.example.com") }).to_string()).await;
    assert_eq!(s, Status::Accepted, "{v}");
    // Bigger than what is left: 400 more peers.
    let mut big = json!({ "51820": net(KEY1, "a.example.com") });
    for i in 0..400u32 {
        use base64::Engine as _;
        let mut key = [9u8; 32];
        key[..4].copy_from_slice(&i.to_be_bytes());
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        big["51820"]["peers"][key] = json!({ "allowed_ips": [format!("10.80.{}.{}/32", 10 + i / 200, i % 200 + 1)] });
    }
    // In memory there is one connection, so the limit holds for every write.
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&store.pool).await.unwrap();
    sqlx::query(&format!("PRAGMA max_page_count = {pages}")).execute(&store.pool).await.unwrap();
    let start = std::time::Instant::now();
    let (s, v) = post(big.to_string()).await;
    assert_eq!(s, Status::InsufficientStorage, "{v}");
    assert_error_shape(&v, "insufficient_storage");
    assert!(start.elapsed() < Duration::from_secs(1), "at once, not after {:?}", start.elapsed());
    let (_, stored) = call(&c, Method::Get, "/api/v1/config.json", token(), None).await;
    assert_eq!(stored["generation"], 1, "nothing stored");
    let (s, st) = call(&c, Method::Get, "/api/v1/status.json", token(), None).await;
    assert_eq!(s, Status::Ok, "{st}");
    assert_eq!(st["store_errors"]["config"]["disk_full"], true, "{st}");
    let (_, metrics) = call(&c, Method::Get, "/metrics", token(), None).await;
    assert!(metrics.as_str().unwrap().contains(r#"gateway_store_errors_total{operation="config"} 1"#), "{metrics}");

    sqlx::query("PRAGMA max_page_count = 1073741823").execute(&store.pool).await.unwrap();
    let (s, v) = post(big.to_string()).await;
    assert_eq!((s, &v["generation"]), (Status::Accepted, &json!(2)), "{v}");
    let (_, st) = call(&c, Method::Get, "/api/v1/status.json", token(), None).await;
    assert_eq!(st["store_errors"], json!({}), "{st}");
}
