//! The API's answers to an apply, without root: the Rocket app on a local
//! client, its reconciler converging a fake host whose commands a script
//! answers (from output captured on a converged gateway), with failures and
//! slow commands injected.

use std::sync::Arc;
use std::time::Duration;

use rocket::http::{ContentType, Status};
use rocket::local::asynchronous::Client;
use serde_json::{Value, json};

use crate::reconcile::{Mode, Reconciler};
use crate::service::Shared;
use crate::system::{Backend, Reply, Script};
use crate::testing::{FakeHost, converged_config, converged_desired, converged_rules, nginx_files, shared};

/// The command that changes network 51821's MTU to 1300.
const SET_MTU: &str = "ip -n network-51821 link set wg51821 mtu 1300 up";

struct App {
    _host: FakeHost,
    client: Client,
    shared: Arc<Shared>,
    reconciler: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.reconciler.abort();
    }
}

/// The app on a converged fake host; `script`'s rules win over the fixtures.
/// The runner's time limit is 2 s; POST waits up to 5 s for the apply.
async fn app(script: Script) -> App {
    let host = FakeHost::converged(&nginx_files(&converged_desired()));
    let shared = shared(host.system(converged_rules(script), Backend::Kernel)).await;
    let mut reconciler = Reconciler::new(shared.clone()).await;
    let s = shared.clone();
    let reconciler = tokio::spawn(async move {
        let mut dry_runs = s.take_dry_runs();
        loop {
            tokio::select! {
                _ = s.woken() => {
                    reconciler.tick(Mode::Apply).await;
                }
                Some(request) = crate::reconcile::next_dry_run(&mut dry_runs) => reconciler.answer_dry_run(request).await,
            }
        }
    });
    let figment = rocket::figment::Figment::from(rocket::Config::default()).merge(("log_level", rocket::config::LogLevel::Off));
    let client = Client::untracked(super::rocket(shared.clone(), figment)).await.expect("rocket");
    App { _host: host, client, shared, reconciler }
}

impl App {
    async fn send(&self, method: rocket::http::Method, path: &str, body: Option<&Value>) -> (Status, Value) {
        let mut req = self.client.req(method, path.to_string());
        if let Some(b) = body {
            req = req.header(ContentType::JSON).body(b.to_string());
        }
        let r = req.dispatch().await;
        let status = r.status();
        let text = r.into_string().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn post(&self, body: &Value) -> (Status, Value) {
        self.send(rocket::http::Method::Post, "/api/v1/config.json", Some(body)).await
    }

    async fn status(&self) -> Value {
        let (code, st) = self.send(rocket::http::Method::Get, "/api/v1/status.json", None).await;
        assert_eq!(code, Status::Ok, "{st}");
        st
    }

    fn ran(&self) -> Vec<String> {
        self.shared
            .system()
            .runner
            .take_records()
            .into_iter()
            .filter(|r| r.mutating)
            .flat_map(|r| r.commands().into_iter().map(String::from).collect::<Vec<_>>())
            .collect()
    }
}

fn config() -> Value {
    serde_json::to_value(converged_config()).unwrap()
}

fn mtu_changed() -> Value {
    let mut c = config();
    c["51821"]["mtu"] = json!(1300);
    c
}

fn messages(body: &Value) -> Vec<String> {
    body["details"].as_array().into_iter().flatten().map(|d| d["message"].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test]
async fn a_converging_apply_answers_200_applied_with_the_changed_network() {
    let app = app(Script::new()).await;
    let (code, body) = app.post(&config()).await;
    assert_eq!((code, &body["result"], &body["changed_networks"]), (Status::Ok, &json!("applied"), &json!([])), "{body}");
    assert_eq!(app.ran(), Vec::<String>::new(), "the host is converged already");
    let (code, body) = app.post(&mtu_changed()).await;
    assert_eq!(code, Status::Ok, "{body}");
    assert_eq!((&body["result"], &body["generation"], &body["applied_generation"]), (&json!("applied"), &json!(2), &json!(2)));
    assert_eq!(body["changed_networks"], json!([51821]));
    assert_eq!(app.ran(), [SET_MTU]);
}

#[tokio::test]
async fn a_failing_command_answers_500_apply_failed_with_its_line_and_stderr() {
    let app = app(Script::new().on(SET_MTU, Reply::fail(2, "RTNETLINK answers: Invalid argument"))).await;
    app.post(&config()).await;
    let (code, body) = app.post(&mtu_changed()).await;
    assert_eq!(code, Status::InternalServerError, "{body}");
    assert_eq!(body["error"], "apply_failed", "{body}");
    let errors = messages(&body);
    assert_eq!(errors.len(), 1, "{body}");
    assert!(errors[0].starts_with("network 51821:"), "{errors:?}");
    assert!(errors[0].contains(SET_MTU) && errors[0].contains("RTNETLINK answers: Invalid argument"), "{errors:?}");
    let st = app.status().await;
    assert_eq!((&st["desired_generation"], &st["applied_generation"]), (&json!(2), &json!(1)), "{st}");
    assert_eq!(st["last_apply"]["result"], "failed");
}

#[tokio::test]
async fn a_command_over_the_time_limit_is_reported_as_a_timeout() {
    let app = app(Script::new().on(SET_MTU, Reply::ok("").after(Duration::from_secs(30)))).await;
    app.post(&config()).await;
    let (code, body) = app.post(&mtu_changed()).await;
    assert_eq!((code, &body["error"]), (Status::InternalServerError, &json!("apply_failed")), "{body}");
    let errors = messages(&body);
    assert!(errors.iter().any(|e| e.contains(SET_MTU) && e.contains("did not finish within 2 s and was killed")), "{errors:?}");
}

#[tokio::test]
async fn status_answers_during_a_slow_apply_with_the_state_before_it() {
    let app = app(Script::new().on(SET_MTU, Reply::ok("").after(Duration::from_millis(1500)))).await;
    let (code, _) = app.post(&config()).await;
    assert_eq!(code, Status::Ok);
    let changed = mtu_changed();
    let slow_apply = app.post(&changed);
    let read_meanwhile = async {
        // Once generation 2 is stored, the apply is under way (its one
        // command takes 1.5 s).
        while app.shared.store().desired().await.unwrap().0 < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let st = app.status().await;
        let apply_finished = app.shared.last_pass().as_ref().is_some_and(|r| r.generation == 2);
        (st, apply_finished)
    };
    let ((code, body), (st, apply_finished_before_status)) = tokio::join!(slow_apply, read_meanwhile);
    assert_eq!(code, Status::Ok, "{body}");
    assert!(!apply_finished_before_status, "status.json waited for the apply instead of answering at once");
    // Consistent: the new generation is desired, the previous one applied,
    // and the system as it is (the old MTU).
    assert_eq!((&st["desired_generation"], &st["applied_generation"]), (&json!(2), &json!(1)), "{st}");
    assert_eq!((&st["last_apply"]["generation"], &st["last_apply"]["result"]), (&json!(1), &json!("applied")), "{st}");
    assert_eq!(st["networks"]["51821"]["mtu"], 1420, "the MTU before the change: {st}");
    assert_eq!(app.status().await["applied_generation"], 2, "and afterwards the apply's result");
}

#[tokio::test]
async fn a_dry_run_lists_the_change_changes_nothing_and_the_apply_then_does_exactly_that() {
    use rocket::http::Method::{Patch, Post};
    let app = app(Script::new()).await;
    assert_eq!(app.post(&config()).await.0, Status::Ok);
    let (code, body) = app.send(Post, "/api/v1/config.json?dry_run=true", Some(&mtu_changed())).await;
    assert_eq!(code, Status::Ok, "{body}");
    assert_eq!(body["dry_run"], true);
    assert_eq!(body["generation"], 1);
    assert_eq!(body["changes"], json!({"51821": ["set mtu 1300 and up"]}), "{body}");
    assert_eq!((&body["nginx_reload"], &body["removed"], &body["shared"]), (&json!(false), &json!([]), &json!([])), "{body}");
    let removal = json!({"51820": null});
    let (code, body) = app.send(Patch, "/api/v1/config.json?dry_run=true", Some(&removal)).await;
    assert_eq!(code, Status::Ok, "{body}");
    assert_eq!(body["removed"], json!([51820]), "{body}");
    assert_eq!(body["changes"]["51820"][0], "delete the network (interface, namespace, rules)", "{body}");
    assert_eq!(body["nginx_reload"], true, "its hostnames leave nginx: {body}");
    assert_eq!(app.ran(), Vec::<String>::new(), "a dry run runs no command");
    assert_eq!(app.shared.store().desired().await.unwrap().0, 1, "no generation made");
    let (code, body) = app.send(Post, "/api/v1/config.json?dry_run=false", Some(&mtu_changed())).await;
    assert_eq!((code, &body["changed_networks"], &body["generation"]), (Status::Ok, &json!([51821]), &json!(2)), "{body}");
    assert_eq!(app.ran(), [SET_MTU], "the apply did what the dry run listed, and only that");
}

#[tokio::test]
async fn a_dry_run_of_bad_input_gets_the_same_422_and_a_bad_flag_a_400() {
    use rocket::http::Method::{Patch, Post};
    let app = app(Script::new()).await;
    let mut bad = config();
    bad["51821"]["mtu"] = json!(99);
    let (code, dry) = app.send(Post, "/api/v1/config.json?dry_run=true", Some(&bad)).await;
    assert_eq!(code, Status::UnprocessableEntity, "{dry}");
    assert_eq!(dry["details"][0]["path"], "$[\"51821\"].mtu", "{dry}");
    let (code, real) = app.post(&bad).await;
    assert_eq!((code, &dry), (Status::UnprocessableEntity, &real), "the same answer as without dry_run");
    let (code, body) = app.send(Patch, "/api/v1/config.json?dry_run=true", Some(&json!({"051820": null}))).await;
    assert_eq!((code, &body["details"][0]["path"]), (Status::UnprocessableEntity, &json!("$[\"051820\"]")), "{body}");
    for flag in ["yes", "1", "TRUE", "true&dry_run=true"] {
        let (code, body) = app.send(Post, &format!("/api/v1/config.json?dry_run={flag}"), Some(&config())).await;
        assert_eq!((code, &body["error"]), (Status::BadRequest, &json!("bad_request")), "{flag}: {body}");
    }
    assert_eq!(app.shared.store().desired().await.unwrap().0, 0, "nothing stored");
}

/// The events of an SSE response, read as they come.
struct Sse<'c> {
    response: rocket::local::asynchronous::LocalResponse<'c>,
    buffer: String,
}

/// One event: id, name, data.
type SseEvent = (u64, String, Value);

impl<'c> Sse<'c> {
    fn new(response: rocket::local::asynchronous::LocalResponse<'c>) -> Self {
        assert_eq!(response.status(), Status::Ok);
        assert_eq!(response.content_type(), Some(ContentType::EventStream));
        Sse { response, buffer: String::new() }
    }

    /// The next event (comments skipped), or None when the stream ends or `limit` passes.
    async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string());
                if let (Some(id), Some(name), Some(data)) = (field("id:"), field("event:"), field("data:")) {
                    return Some((id.parse().unwrap(), name, serde_json::from_str(&data).unwrap()));
                }
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.response.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buffer.push_str(std::str::from_utf8(&chunk[..n]).unwrap()),
                _ => return None,
            }
        }
    }
}

#[tokio::test]
async fn each_apply_is_an_event_and_a_client_resumes_after_its_last_event_id() {
    let app = app(Script::new()).await;
    let mut sse = Sse::new(app.client.get("/api/v1/events").dispatch().await);
    assert_eq!(app.post(&config()).await.0, Status::Ok);
    let (code, dry) = app.send(rocket::http::Method::Post, "/api/v1/config.json?dry_run=true", Some(&mtu_changed())).await;
    assert_eq!(code, Status::Ok, "{dry}");
    assert_eq!(app.post(&mtu_changed()).await.0, Status::Ok);
    let limit = Duration::from_secs(5);
    let (first, name, data) = sse.next(limit).await.expect("an event for the first apply");
    assert_eq!(name, "apply");
    assert_eq!(
        (&data["generation"], &data["result"], &data["changed_networks"], &data["errors"]),
        (&json!(1), &json!("applied"), &json!([]), &json!([]))
    );
    let (second, name, data) = sse.next(limit).await.expect("an event for the second apply (none for the dry run)");
    assert_eq!((name.as_str(), &data["generation"], &data["changed_networks"]), ("apply", &json!(2), &json!([51821])), "{data}");
    assert_eq!(second, first + 1, "ids count up by one");

    let resumed = app.client.get("/api/v1/events").header(rocket::http::Header::new("Last-Event-ID", first.to_string())).dispatch().await;
    let mut resumed = Sse::new(resumed);
    let (id, _, data) = resumed.next(limit).await.expect("the event after the last one seen");
    assert_eq!((id, &data["generation"]), (second, &json!(2)));
    assert!(resumed.next(Duration::from_millis(300)).await.is_none(), "nothing else yet");

    for bad in ["abc", "-1", "1.5", "99999999999999999999999"] {
        let r = app.client.get("/api/v1/events").header(rocket::http::Header::new("Last-Event-ID", bad)).dispatch().await;
        assert_eq!(r.status(), Status::BadRequest, "{bad}");
        let body: Value = serde_json::from_str(&r.into_string().await.unwrap()).unwrap();
        assert_eq!(body["error"], "bad_request", "{body}");
    }
}

/// A client that never reads holds up nothing: applies go on while events
/// pile up, and that client is dropped (its stream ends) once it is more
/// than the backlog behind.
#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_up_applies_and_is_dropped() {
    let app = app(Script::new()).await;
    let stalled = app.client.get("/api/v1/events").dispatch().await;
    for n in 0..2 * crate::events::BACKLOG {
        app.shared.events().publish("apply", &n);
    }
    let (code, _) = tokio::time::timeout(Duration::from_secs(10), app.post(&config())).await.expect("the apply was held up");
    assert_eq!(code, Status::Ok);
    let (code, _) = tokio::time::timeout(Duration::from_secs(10), app.post(&mtu_changed())).await.expect("the apply was held up");
    assert_eq!(code, Status::Ok);
    let rest = tokio::time::timeout(Duration::from_secs(10), stalled.into_string()).await.expect("the stalled stream was not ended");
    assert!(!rest.unwrap_or_default().contains("\"generation\""), "it got nothing after it fell behind");
}

/// A raw port, or a new network's WireGuard port, that another program holds
/// is a 422 at its path naming the holder; nothing is stored. Ports the
/// gateway opened before are not looked at again.
#[tokio::test]
async fn a_port_another_program_holds_is_refused_before_it_is_stored() {
    use crate::system::kernel::ports::Process;
    use crate::types::Transport::{Tcp, Udp};
    use rocket::http::Method::Post;
    let app = app(Script::new()).await;
    let (code, body) = app.post(&config()).await;
    assert_eq!(code, Status::Ok, "{body}");
    let ports = &app._host.ports;
    ports.hold(Tcp, 7000, vec![Process { pid: 812, program: "sshd".into() }]);
    ports.hold(Udp, 51822, vec![]);
    let mut c = config();
    c["51821"]["proxy"]["tcp://7000"] = json!(["10.81.0.9:22"]);
    c["51821"]["proxy"]["udp://7000"] = json!(["10.81.0.9:22"]);
    let mut other = c["51821"].clone();
    other["private_key"] = json!("4dcKbDNyb6pkkRuP22OPzkHgpOb9k67iaP5R9A0xv0c=");
    other["proxy"] = json!({});
    c["51822"] = other;
    for path in ["/api/v1/config.json", "/api/v1/config.json?dry_run=true"] {
        let (code, body) = app.send(Post, path, Some(&c)).await;
        assert_eq!((code, &body["error"]), (Status::UnprocessableEntity, &json!("invalid_config")), "{path}: {body}");
        let details: Vec<(String, String)> = body["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["path"].as_str().unwrap().into(), d["message"].as_str().unwrap().into()))
            .collect();
        assert_eq!(
            details,
            [
                (
                    r#"$["51821"].proxy["tcp://7000"]"#.to_string(),
                    "TCP port 7000 is in use by sshd (pid 812) on 0.0.0.0: nginx could not open it; choose another port or free it".to_string()
                ),
                (
                    r#"$["51822"]"#.to_string(),
                    "UDP port 51822 is in use by a socket no process shows (the kernel's, e.g. a WireGuard interface's) on 0.0.0.0: the network's WireGuard interface could not open it; choose another port or free it".to_string()
                ),
            ],
            "{path}: udp://7000 is free; only what is held"
        );
    }
    assert_eq!(app.status().await["desired_generation"], json!(1), "nothing stored");
    ports.free(Tcp, 7000);
    ports.free(Udp, 51822);
    let (code, body) = app.send(Post, "/api/v1/config.json?dry_run=true", Some(&c)).await;
    assert_eq!(code, Status::Ok, "freed: accepted {body}");
    // A port the gateway opened already is not looked at again: held behind
    // its back, other changes still go through.
    ports.hold(Udp, 51820, vec![Process { pid: 812, program: "wireguard-go".into() }]);
    let (code, body) = app.post(&mtu_changed()).await;
    assert_eq!((code, &body["generation"]), (Status::Ok, &json!(2)), "{body}");
}

/// status.json's `config_digest` is that of the state, not of how it was
/// sent: the same state with its defaults written out and its keys in
/// another order digests the same, a changed one differently; `role` is
/// absent without `--ha-address`.
#[tokio::test]
async fn status_digests_the_state_and_has_no_role_without_ha() {
    let app = app(Script::new()).await;
    app.post(&config()).await;
    let first = app.status().await;
    assert!(first.get("role").is_none(), "no --ha-address: no role ({first})");
    let digest = first["config_digest"].as_str().unwrap().to_string();
    assert_eq!(digest.len(), 64);
    // The same state written otherwise: the default MTU spelled out, a
    // listen port given, routes as objects (the list form's meaning).
    let mut same = config();
    for (port, network) in same.as_object_mut().unwrap() {
        if network.get("mtu").is_none() {
            network["mtu"] = json!(1420);
        }
        network["listen_port"] = json!(port.parse::<u16>().unwrap());
        for target in network["proxy"].as_object_mut().unwrap().values_mut() {
            if target.is_array() {
                *target = json!({"upstreams": target.clone(), "proxy_protocol": false});
            }
        }
    }
    assert_ne!(same, config(), "written otherwise");
    app.post(&same).await;
    assert_eq!(app.status().await["config_digest"], json!(digest), "the same state, sent otherwise");
    app.post(&mtu_changed()).await;
    assert_ne!(app.status().await["config_digest"], json!(digest));
}

/// Bad access-control and limit values are a 422 naming each value's path,
/// and nothing is stored; good ones are stored and read back as sent.
#[tokio::test]
async fn access_and_limit_fields_are_checked_at_their_paths_and_stored_as_sent() {
    use rocket::http::Method::Get;
    let app = app(Script::new()).await;
    let (code, body) = app.post(&config()).await;
    assert_eq!(code, Status::Ok, "{body}");
    let mut bad = config();
    bad["51820"]["proxy"]["https://app.example.com"] = json!({
        "upstreams": ["10.80.0.2:443"],
        "allow": ["203.0.113.7/24", []],
        "deny": [],
        "max_connections": 0,
        "max_connections_per_client": 1000001,
        "bandwidth": {"ingress_mbit": 0}
    });
    bad["51820"]["proxy"]["http://app.example.com"] = json!({"upstreams": ["10.80.0.2:80"], "allow": []});
    bad["51821"]["bandwidth"] = json!({"egress_mbit": "fast"});
    let (code, body) = app.post(&bad).await;
    assert_eq!((code, &body["error"]), (Status::UnprocessableEntity, &json!("invalid_config")), "{body}");
    let paths: Vec<&str> = body["details"].as_array().unwrap().iter().map(|d| d["path"].as_str().unwrap()).collect();
    let route = |k: &str, tail: &str| format!(r#"$["51820"].proxy["{k}"]{tail}"#);
    assert_eq!(
        paths,
        [
            route("http://app.example.com", ".allow"),
            route("https://app.example.com", ".allow[0]"),
            route("https://app.example.com", ".allow[1]"),
            route("https://app.example.com", ".max_connections"),
            route("https://app.example.com", ".max_connections_per_client"),
            route("https://app.example.com", ".bandwidth.ingress_mbit"),
            r#"$["51821"].bandwidth.egress_mbit"#.to_string(),
        ],
        "{body}"
    );
    assert!(messages(&body)[1].contains("the network is 203.0.113.0/24"), "{body}");
    assert_eq!(app.status().await["desired_generation"], json!(1), "nothing stored");

    let mut good = config();
    let route = json!({
        "upstreams": ["10.80.0.2:443"],
        "allow": ["203.0.113.0/24", "2001:db8::/32"],
        "deny": ["203.0.113.7/32"],
        "max_connections": 1000,
        "max_connections_per_client": 20,
        "bandwidth": {"ingress_mbit": 100, "egress_mbit": 50}
    });
    good["51820"]["proxy"]["https://app.example.com"] = route.clone();
    good["51821"]["bandwidth"] = json!({"ingress_mbit": 10});
    let digest = app.status().await["config_digest"].clone();
    let (code, body) = app.send(rocket::http::Method::Post, "/api/v1/config.json?dry_run=true", Some(&good)).await;
    assert_eq!(code, Status::Ok, "{body}");
    let (code, body) = app.post(&good).await;
    assert!(code == Status::Ok || code == Status::Accepted, "{code}: {body}");
    let (_, stored) = app.send(Get, "/api/v1/config.json", None).await;
    let mut with_default = route.clone();
    with_default["proxy_protocol"] = json!(false);
    assert_eq!(stored["config"]["51820"]["proxy"]["https://app.example.com"], with_default, "read back as sent (and the default written)");
    assert_eq!(stored["config"]["51821"]["bandwidth"], json!({"ingress_mbit": 10}));
    assert_ne!(app.status().await["config_digest"], digest, "the limits are part of the state's digest");
}
