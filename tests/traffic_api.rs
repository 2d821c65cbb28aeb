//! traffic.json through the API (Rocket's local client, the app `main`
//! builds): `end=`, its checks, and each network's port beside its public
//! key. Samples are written into the daemon's database as a traffic tick
//! writes them; nothing on the system is touched.

mod common;

use std::time::Duration;

use gateway::daemon::build;
use gateway::system::Runner;
use gateway::traffic::{Reading, store_tick};
use rocket::http::{Header, Status};
use rocket::local::asynchronous::Client;
use serde_json::Value;

const NET: &str = "LRj4SHqfSjzR+dz1Zmcq7dfiZk4tFWIm+wKv1QqGXx0=";
const PEER: &str = "OxvFhrgLnI9e4xzMMA2qQ7wm/xCUzxaWW5cb1JGkWSA=";
/// A whole day (and so a whole hour), far enough in the past.
const T0: i64 = 1_700_006_400;

/// A daemon whose network 51820 (key NET) had one peer sending 10 bytes a
/// minute for two hours from T0 (the first reading, at T0, is a baseline).
async fn daemon_with_two_hours_of_traffic() -> Client {
    let args = common::isolated_args(&["--token=s3cret"]);
    let d = build(&args, Runner::new(Duration::from_secs(5))).await.unwrap();
    let read = ["51820".to_string()];
    for m in 0..=120 {
        let r = Reading { network: "51820".into(), network_key: NET.into(), peer_key: PEER.into(), epoch: 1, rx: 10 * m, tx: 0 };
        store_tick(d.shared.store(), &read, true, vec![r], T0 + 60 * m as i64, Duration::from_secs(100 * 86400 * 365)).await.unwrap();
    }
    Client::untracked(gateway::api::rocket(d.shared, d.figment)).await.unwrap()
}

async fn traffic(c: &Client, query: &str) -> (Status, Value) {
    let r = c.get(format!("/api/v1/traffic.json?{query}")).header(Header::new("Token", "s3cret")).dispatch().await;
    let status = r.status();
    (status, serde_json::from_str(&r.into_string().await.unwrap()).unwrap())
}

fn times(v: &Value) -> Vec<i64> {
    let times = v["networks"][NET]["devices"][PEER]["times"].as_object().map(|t| t.keys().map(|k| k.parse().unwrap()).collect());
    let mut times: Vec<i64> = times.unwrap_or_default();
    times.sort();
    times
}

#[tokio::test]
async fn end_bounds_the_samples_and_each_network_has_its_port() {
    let c = daemon_with_two_hours_of_traffic().await;
    let (s, all) = traffic(&c, &format!("start={T0}")).await;
    assert_eq!(s, Status::Ok, "{all}");
    assert_eq!(times(&all).len(), 120, "{all}");
    assert_eq!(all["networks"][NET]["port"], 51820, "the port beside the public key: {all}");
    assert_eq!(all["traffic"]["rx"], 1200);

    // (start, end]: the sample at `end` counts, the next one does not.
    let (s, v) = traffic(&c, &format!("start={T0}&end={}", T0 + 600)).await;
    assert_eq!(s, Status::Ok, "{v}");
    assert_eq!(times(&v), (1..=10).map(|m| T0 + 60 * m).collect::<Vec<_>>(), "{v}");
    assert_eq!((v["start_time"].as_i64(), v["stop_time"].as_i64(), v["traffic"]["rx"].as_i64()), (Some(T0), Some(T0 + 600), Some(100)));
    assert_eq!(v["networks"][NET]["port"], 51820);
    let (_, v) = traffic(&c, &format!("start={}&end={}", T0 + 600, T0 + 600)).await;
    assert_eq!((times(&v), &v["traffic"]["rx"]), (vec![], &Value::from(0)), "end = start: an empty range, not an error: {v}");
    // An end in the future: up to now.
    let (_, v) = traffic(&c, &format!("start={T0}&end={}", i64::MAX)).await;
    assert_eq!(times(&v).len(), 120);
    assert!(v["stop_time"].as_i64().unwrap() < T0 * 2, "stop_time is now, not the asked end: {v}");

    // With a step, end is rounded up to a multiple of it: whole buckets.
    let (_, v) = traffic(&c, &format!("start={T0}&end={}&step=3600", T0 + 1)).await;
    assert_eq!((times(&v), v["stop_time"].as_i64()), (vec![T0 + 3600], Some(T0 + 3600)), "{v}");
    assert_eq!(v["traffic"]["rx"], 600, "the whole first hour: {v}");
    let (_, v) = traffic(&c, &format!("start={T0}&end={}&step=600", T0 + 1200)).await;
    assert_eq!(times(&v), [T0 + 600, T0 + 1200], "{v}");
    assert_eq!(v["traffic"]["rx"], 200, "{v}");
}

#[tokio::test]
async fn a_bad_or_inverted_range_is_refused_and_says_why() {
    let c = daemon_with_two_hours_of_traffic().await;
    let (s, v) = traffic(&c, &format!("start={}&end={}", T0 + 600, T0 + 599)).await;
    assert_eq!((s, v["error"].as_str()), (Status::UnprocessableEntity, Some("invalid_query")), "{v}");
    assert_eq!(v["details"][0]["path"], "$.end", "{v}");
    let message = v["details"][0]["message"].as_str().unwrap();
    assert!(message.contains("before `start`") && message.contains(&(T0 + 599).to_string()), "{message}");
    assert_eq!(v["message"].as_str(), Some(message), "{v}");
    for bad in ["end=abc", "end=-1", "end=1.5", "end=1&end=2", "end="] {
        let (s, v) = traffic(&c, &format!("start={T0}&{bad}")).await;
        assert_eq!((s, v["error"].as_str()), (Status::BadRequest, Some("bad_request")), "{bad}: {v}");
        assert!(v["message"].as_str().unwrap().contains("`end`"), "{bad}: names the parameter: {v}");
    }
}
