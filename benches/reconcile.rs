//! Benchmarks of the hot paths that need no root: planning a converged
//! gateway, parsing wireguard-go's answer, and storing one traffic tick, for 20
//! networks x 10 peers. `cargo bench --bench reconcile`.

use std::time::{Duration, Instant};

use gateway::layout::Layout;
use gateway::model::{GatewayConfig, NetworkConfig, PeerConfig};
use gateway::observed::{HostVeth, Observed, ObservedBridge};
use gateway::plan::plan;
use gateway::render::{Listen, NginxFiles, NginxOptions};
use gateway::store::Store;
use gateway::system::wireguard::observe::parse_uapi;
use gateway::target::Targets;
use gateway::traffic::{Reading, store_tick};
use gateway::validate::{Context, validate};

const PEERS: u8 = 10;

/// Networks in the benchmark's state: `BENCH_NETWORKS` (default 20).
fn networks() -> u16 {
    std::env::var("BENCH_NETWORKS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn key(n: u16, p: u8) -> String {
    use base64::Engine;
    // Byte 0 and 31 are clamped in private keys: vary the ones in between.
    let mut b = [0x40u8; 32];
    b[1] = (n & 0xff) as u8;
    b[2] = (n >> 8) as u8;
    b[3] = p;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn config() -> GatewayConfig {
    (0..networks())
        .map(|n| {
            let peers = (1..=PEERS)
                .map(|p| {
                    (
                        key(n, p),
                        PeerConfig {
                            preshared_key: None,
                            allowed_ips: vec![format!("10.80.0.{}/32", p + 1)],
                            endpoint: None,
                            persistent_keepalive: None,
                        },
                    )
                })
                .collect();
            let proxy = [(format!("https://svc{n}.example.com"), vec!["10.80.0.2:443".to_string()].into())].into();
            let net = NetworkConfig {
                private_key: key(n, 0),
                listen_port: None,
                mtu: None,
                address: vec!["10.80.0.1/16".into()],
                peers,
                proxy,
                bandwidth: None,
            };
            ((51000 + n).to_string(), net)
        })
        .collect()
}

/// The same networks, each route with an allow list of 4 networks, a deny
/// entry and both connection limits (per-route access control).
fn limited_config() -> GatewayConfig {
    let mut config = config();
    for net in config.values_mut() {
        for target in net.proxy.values_mut() {
            let upstreams = serde_json::to_value(&*target).expect("json");
            let limited = serde_json::json!({
                "upstreams": upstreams,
                "allow": ["203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24", "2001:db8::/32"],
                "deny": ["203.0.113.7/32"],
                "max_connections": 1000,
                "max_connections_per_client": 20,
            });
            *target = serde_json::from_value(limited).expect("proxy value");
        }
    }
    config
}

fn time<T>(label: &str, iterations: u32, mut f: impl FnMut() -> T) {
    let start = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(f());
    }
    let per = start.elapsed() / iterations;
    println!("{label:<58} {per:>12.3?} per iteration ({iterations} iterations)");
}

fn main() {
    let layout = Layout::default();
    let desired = validate(&config(), &Context::default()).expect("valid");
    let observed = Observed {
        bridge: Some(ObservedBridge { up: true, addresses: Some(vec![layout.bridge_addr()]), owned: true }),
        namespaces: desired.networks.keys().copied().collect(),
        stale_namespaces: Default::default(),
        wg_in_root: Default::default(),
        host_veths: desired
            .networks
            .keys()
            .map(|p| (*p, HostVeth { on_bridge: true, up: true, isolated: true, owned: true, qdisc: None }))
            .collect(),
        host_veths_trusted: Default::default(),
        networks: Default::default(),
        // What a no-op apply plans: every network's target is the one a pass converged.
        unchanged: desired.networks.keys().copied().collect(),
        nginx_stream: Some("s".into()),
        nginx_http: Some("h".into()),
        nginx_running: true,
        nginx_stale: false,
        endpoints: Default::default(),
        reach_out: Default::default(),
    };
    let nginx = std::sync::Arc::new(NginxFiles { stream: "s".into(), http: "h".into() });
    let targets = Targets::of(&layout, &desired);
    assert!(plan(&targets, &observed, &layout, &nginx).is_empty());
    let n = networks();
    let iterations = (4000 / u32::from(n)).max(5);
    let json = serde_json::to_string(&config()).expect("json");
    time(&format!("parse the JSON of {n} networks x 10 peers"), iterations, || {
        serde_json::from_str::<GatewayConfig>(&json).map(|c| c.len()).unwrap_or(0)
    });
    let parsed = config();
    time(&format!("validate {n} networks x 10 peers"), iterations, || validate(&parsed, &Context::default()).is_ok());
    let secrets: Vec<gateway::types::SecretKey> = (0..n).map(|i| key(i, 0).parse().expect("key")).collect();
    time(&format!("derive {n} public keys (x25519)"), iterations, || secrets.iter().map(|k| k.public_key()).collect::<Vec<_>>());
    let options = NginxOptions {
        https_listen: vec![Listen::Port(443)],
        http_listen: vec![Listen::Port(80)],
        raw_listen: vec![std::net::Ipv4Addr::UNSPECIFIED.into()],
        sni_socket: "/run/gateway-sni.sock".into(),
        server_names_hash_bucket_size: 0,
        worker_shutdown_timeout: Some(std::time::Duration::from_secs(3600)),
        access_log: None,
        usage_socket: Some("/run/gateway-usage.sock".into()),
    };
    time(&format!("render nginx's files, {n} networks"), iterations, || NginxFiles::render(&layout, &desired, &[], &options).stream.len());
    let limited = limited_config();
    let limited_desired = validate(&limited, &Context::default()).expect("valid");
    time(&format!("validate {n} networks, routes with allow lists and limits"), iterations, || {
        validate(&limited, &Context::default()).is_ok()
    });
    time(&format!("render nginx's files, {n} networks, routes with allow lists and limits"), iterations, || {
        NginxFiles::render(&layout, &limited_desired, &[], &options).stream.len()
    });
    time(&format!("targets of {n} networks, all computed"), iterations, || Targets::of(&layout, &desired).networks.len());
    time(&format!("targets of {n} networks, none changed (kept)"), iterations * 10, || Targets::build(&layout, &desired, &targets).1.len());
    time(&format!("plan, {n} unchanged networks x 10 peers (no actions)"), iterations * 10, || {
        plan(&targets, &observed, &layout, &nginx).len()
    });

    let hex = |k: String| -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(k).expect("key").iter().map(|b| format!("{b:02x}")).collect()
    };
    let mut uapi = format!("private_key={}\nlisten_port=51000\n", hex(key(0, 0)));
    for p in 1..=PEERS {
        uapi += &format!(
            "public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=192.0.2.{p}:51820\nlast_handshake_time_sec=1764077400\n\
             last_handshake_time_nsec=0\ntx_bytes=987654321\nrx_bytes=123456789\npersistent_keepalive_interval=0\nallowed_ip=10.80.0.{}/32\n",
            hex(key(0, p)),
            "0".repeat(64),
            p + 1
        );
    }
    uapi += "errno=0\n\n";
    time("parse wireguard-go's answer for 10 peers", 20000, || parse_uapi(&uapi).map(|d| d.0.peers.len()));

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = rt.block_on(Store::open(Some(dir.path().join("bench.db").to_str().expect("utf-8")))).expect("store");
    let readings = |tick: u64| -> Vec<Reading> {
        (0..networks())
            .flat_map(|n| {
                (1..=PEERS).map(move |p| Reading {
                    network: (51000 + n).to_string(),
                    network_key: key(n, 0),
                    peer_key: key(n, p),
                    epoch: 1,
                    rx: 1000 * tick,
                    tx: 2000 * tick,
                })
            })
            .collect()
    };
    let networks: Vec<String> = (0..networks()).map(|n| (51000 + n).to_string()).collect();
    let mut tick = 1u64;
    let ticks = 50;
    let start = Instant::now();
    let mut rows = 0;
    for _ in 0..ticks {
        tick += 1;
        let w = rt.block_on(store_tick(&store, &networks, true, readings(tick), tick as i64, Duration::from_secs(86400))).expect("tick");
        rows += w.counters.len() + w.samples.len();
    }
    println!(
        "{:<58} {:>12.3?} per tick, {} rows written per tick",
        format!("store a traffic tick, {} busy peers (one transaction)", networks.len() * PEERS as usize),
        start.elapsed() / ticks,
        rows / ticks as usize
    );
    let start = Instant::now();
    for _ in 0..ticks {
        let w = rt.block_on(store_tick(&store, &networks, true, readings(tick), tick as i64, Duration::from_secs(86400))).expect("tick");
        assert!(w.samples.is_empty() && w.counters.is_empty());
    }
    let idle = format!("store a traffic tick, {} idle peers", networks.len() * PEERS as usize);
    println!("{idle:<58} {:>12.3?} per tick, 0 rows written", start.elapsed() / ticks);
}
