//! Test support without root: a fake host (a temp dir standing in for
//! /run/netns, /sys/class/net, nginx's files and pid) and a scripted runner
//! that replays what the tools printed for a really converged gateway
//! (`tests/fixtures/converged`, captured by `scripts/capture-fixtures.sh`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::layout::Layout;
use crate::model::GatewayConfig;
use crate::observed::Observed;
use crate::render::NginxOptions;
use crate::service::{Settings, Shared};
use crate::spec::Desired;
use crate::store::Store;
use crate::system::kernel::netlink::{self, Message};
use crate::system::kernel::observer::{NsRaw, Observer, Target, WgRaw};
use crate::system::kernel::ports::{PortProbe, Probe, Process};
use crate::system::{Backend, Reply, Runner, Script, System, SystemPaths, Tools};
use crate::types::Transport;
use crate::validate::{Context, validate};

pub const PORTS: [u16; 2] = [51820, 51821];

pub fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/converged").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The configuration the fixtures were captured with.
pub fn converged_config() -> GatewayConfig {
    serde_json::from_str(&fixture("config.json")).expect("fixture config")
}

pub fn converged_desired() -> Desired {
    validate(&converged_config(), &Context::default()).expect("the fixture config is valid")
}

/// A script answering every process-read of the converged networks (their
/// rules) with what the tools printed; everything else (the changes)
/// succeeds silently.
pub fn converged_script() -> Script {
    converged_rules(Script::new())
}

/// `script`'s own rules first (they win), then the converged fixtures.
pub fn converged_rules(mut script: Script) -> Script {
    for p in PORTS {
        script = script.on(&format!("network-{p} iptables-save"), Reply::ok(fixture(&format!("iptables-save-{p}.txt"))));
        script = script.on(&format!("network-{p} ip6tables-save"), Reply::ok(fixture(&format!("ip6tables-save-{p}.txt"))));
    }
    script
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/converged").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The messages of a captured netlink dump.
pub fn netlink_fixture(name: &str) -> Vec<Message> {
    let mut out = Vec::new();
    netlink::answers(&fixture_bytes(name), 1, &mut out).expect("captured dump parses");
    out
}

/// Replays what the kernel and wireguard-go answered for the converged
/// gateway (`netlink-*` fixtures, by `scripts/capture-fixtures.sh`): the
/// namespaces `network-P` of [`PORTS`] whose file exists on the fake host,
/// and the root namespace (the bridge). Other namespaces cannot be entered.
pub struct FixtureObserver {
    /// The nf_tables generation every namespace reports.
    pub generation: Mutex<Option<u32>>,
    /// The namespaces read so far (`root` for the daemon's own).
    pub reads: Mutex<Vec<String>>,
    /// The namespaces whose open connections were asked for, so far.
    pub counted: Mutex<Vec<String>>,
}

impl Default for FixtureObserver {
    fn default() -> Self {
        FixtureObserver { generation: Mutex::new(Some(7)), reads: Mutex::new(Vec::new()), counted: Mutex::new(Vec::new()) }
    }
}

impl Observer for FixtureObserver {
    fn observe(&self, targets: &[Target]) -> Vec<Result<NsRaw, String>> {
        let name = |t: &Target| t.netns.as_ref().and_then(|p| p.file_name()).map_or("root".into(), |n| n.to_string_lossy().into_owned());
        self.reads.lock().unwrap_or_else(|e| e.into_inner()).extend(targets.iter().map(name));
        self.counted.lock().unwrap_or_else(|e| e.into_inner()).extend(targets.iter().filter(|t| t.conntrack_to.is_some()).map(name));
        targets.iter().map(|t| self.observe_one(t)).collect()
    }
}

impl FixtureObserver {
    /// Returns and clears the namespaces read so far.
    pub fn take_reads(&self) -> Vec<String> {
        std::mem::take(&mut *self.reads.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Returns and clears the namespaces whose connections were asked for.
    pub fn take_counted(&self) -> Vec<String> {
        std::mem::take(&mut *self.counted.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl FixtureObserver {
    fn observe_one(&self, t: &Target) -> Result<NsRaw, String> {
        let Some(path) = &t.netns else {
            let (links, addrs) = (netlink_fixture("netlink-root-links.bin"), netlink_fixture("netlink-root-addrs.bin"));
            return Ok(NsRaw { links, addrs, ..Default::default() });
        };
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let port = name.strip_prefix("network-").and_then(|p| p.parse::<u16>().ok()).filter(|p| PORTS.contains(p));
        let (Some(port), true) = (port, path.exists()) else {
            return Err(format!("opening {}: No such file or directory", path.display()));
        };
        let want = |file: &str| netlink_fixture(&format!("netlink-{port}-{file}.bin"));
        let sysctls = fixture(&format!("sysctl-{port}.txt")).lines().map(|l| Some(l.trim().to_string())).collect();
        let asked_wg = t.uapi.is_some() || t.genl_wg.is_some();
        Ok(NsRaw {
            links: want("links"),
            addrs: want("addrs"),
            routes: want("routes"),
            sysctls,
            nft_generation: *self.generation.lock().unwrap_or_else(|e| e.into_inner()),
            wg: asked_wg.then(|| Ok(WgRaw::Uapi(fixture(&format!("netlink-{port}-uapi.txt"))))),
            conntrack: Vec::new(),
        })
    }
}

/// Ports of a fake host: free unless a test says who holds them.
#[derive(Default)]
pub struct FakePorts {
    held: Mutex<std::collections::BTreeMap<(Transport, u16), Vec<Process>>>,
}

impl FakePorts {
    /// `transport` port `port` is held on every address, by `holders`.
    pub fn hold(&self, transport: Transport, port: u16, holders: Vec<Process>) {
        self.held.lock().unwrap().insert((transport, port), holders);
    }

    pub fn free(&self, transport: Transport, port: u16) {
        self.held.lock().unwrap().remove(&(transport, port));
    }
}

impl PortProbe for FakePorts {
    fn probe(&self, transport: Transport, _ip: std::net::IpAddr, port: u16) -> Probe {
        self.held.lock().unwrap().get(&(transport, port)).map_or(Probe::Free, |h| Probe::Held(h.clone()))
    }
}

/// A host directory laid out like the real one, with a stand-in nginx
/// master (a `sleep` named `nginx`) when asked for, and ports a test may
/// say are held.
pub struct FakeHost {
    pub dir: tempfile::TempDir,
    nginx: Option<Child>,
    pub ports: Arc<FakePorts>,
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.stop_nginx();
    }
}

impl FakeHost {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for d in ["netns", "net", "wireguard"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("fake host dirs");
        }
        FakeHost { dir, nginx: None, ports: Arc::default() }
    }

    pub fn paths(&self) -> SystemPaths {
        SystemPaths::under(self.dir.path())
    }

    fn net(&self, link: &str) -> PathBuf {
        let d = self.dir.path().join("net").join(link);
        std::fs::create_dir_all(&d).expect("link dir");
        d
    }

    /// A namespace file that holds a namespace, as far as the observer can
    /// tell (it lies on nsfs, not on the directory's file system).
    pub fn add_namespace(&self, port: u16) {
        let _ = std::os::unix::fs::symlink("/proc/self/ns/net", self.dir.path().join("netns").join(format!("network-{port}")));
    }

    /// A namespace file that holds no namespace (left by a crash).
    pub fn add_stale_namespace(&self, port: u16) {
        std::fs::write(self.dir.path().join("netns").join(format!("network-{port}")), "").expect("netns file");
    }

    pub fn remove_namespace(&self, port: u16) {
        let _ = std::fs::remove_file(self.dir.path().join("netns").join(format!("network-{port}")));
    }

    /// A root-namespace link, up, tagged as the gateway's when `owned`.
    pub fn add_link(&self, name: &str, owned: bool) -> PathBuf {
        let d = self.net(name);
        std::fs::write(d.join("flags"), "0x1003\n").expect("flags");
        std::fs::write(d.join("ifalias"), if owned { "gateway\n" } else { "\n" }).expect("ifalias");
        d
    }

    /// Network `port`'s root veth end, attached to the bridge and isolated.
    pub fn add_host_veth(&self, port: u16) {
        let d = self.add_link(&format!("gwv{port}"), true);
        std::fs::create_dir_all(d.join("brport")).expect("brport");
        std::fs::write(d.join("brport/isolated"), "1\n").expect("isolated");
        let _ = std::os::unix::fs::symlink("../gwbr0", d.join("master"));
    }

    /// Starts a process named `nginx` and writes its pid where nginx's goes.
    pub fn start_nginx(&mut self) {
        let bin = self.dir.path().join("nginx");
        std::fs::copy("/bin/sleep", &bin).expect("copy sleep");
        // Another test thread forking while the copy is open for writing
        // makes exec fail with ETXTBSY for a moment: try again.
        let spawn = || Command::new(&bin).arg("600").spawn();
        let child = (0..100)
            .find_map(|_| match spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(10));
                    None
                }
                other => Some(other),
            })
            .expect("fake nginx: text file busy for a second")
            .expect("fake nginx");
        std::fs::write(self.dir.path().join("nginx.pid"), child.id().to_string()).expect("pid file");
        self.nginx = Some(child);
    }

    pub fn stop_nginx(&mut self) {
        if let Some(mut child) = self.nginx.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The host as a converged gateway leaves it (with nginx's files for `nginx`).
    pub fn converged(nginx: &crate::render::NginxFiles) -> Self {
        let mut host = FakeHost::new();
        host.add_link("gwbr0", true);
        for p in PORTS {
            host.add_namespace(p);
            host.add_host_veth(p);
        }
        std::fs::write(host.dir.path().join("stream.conf"), &nginx.stream).expect("stream file");
        std::fs::write(host.dir.path().join("http.conf"), &nginx.http).expect("http file");
        host.start_nginx();
        host
    }

    pub fn system(&self, script: Script, backend: Backend) -> System {
        self.system_observing(script, backend, Arc::new(FixtureObserver::default()))
    }

    /// With an observer of the test's own (e.g. one whose generation it moves).
    pub fn system_observing(&self, script: Script, backend: Backend, observer: Arc<dyn Observer>) -> System {
        System {
            observer,
            runner: Runner::scripted(script, Duration::from_secs(2)),
            layout: Layout::default(),
            tools: Tools::default(),
            paths: self.paths(),
            backend,
            journal: Arc::new(crate::system::intent::NoJournal),
            ports: self.ports.clone(),
            ipv6: true,
        }
    }
}

pub fn nginx_options() -> NginxOptions {
    NginxOptions {
        https_listen: vec![crate::render::Listen::Port(443)],
        http_listen: vec![crate::render::Listen::Port(80)],
        raw_listen: vec![std::net::Ipv4Addr::UNSPECIFIED.into()],
        sni_socket: "/run/gateway-sni.sock".into(),
        server_names_hash_bucket_size: 512,
        worker_shutdown_timeout: Some(std::time::Duration::from_secs(3600)),
        access_log: None,
        usage_socket: None,
    }
}

/// The nginx files for `desired` with the default layout and options.
pub fn nginx_files(desired: &Desired) -> crate::render::NginxFiles {
    crate::render::NginxFiles::render(&Layout::default(), desired, &[], &nginx_options())
}

/// Shared state around `system`, with an in-memory database.
pub async fn shared(system: System) -> Arc<Shared> {
    let settings = Settings {
        nginx: nginx_options(),
        custom: vec![],
        reserved: vec![system.layout.bridge_subnet()],
        ports: vec![(8000, "the API".into()), (443, "the HTTPS listener".into()), (80, "the HTTP listener".into())],
        raw_ports: Default::default(),
        limits: Default::default(),
        watchdog: Duration::from_secs(60),
        tokens: Default::default(),
        api_address: std::net::Ipv4Addr::LOCALHOST.into(),
        apply_wait: Duration::from_secs(5),
        apply_concurrency: 4,
        shutdown_timeout: Duration::from_secs(5),
        peer_timeout: Duration::from_secs(180),
        health_interval: Duration::ZERO,
        ha_address: None,
    };
    let store = Store::open(None).await.expect("in-memory database");
    Arc::new(Shared::new(store, system, settings, Arc::new(crate::metrics::Metrics::default()), None, Duration::from_secs(86400)))
}

/// What the observer makes of the converged fixtures.
pub async fn observed_converged() -> Observed {
    let desired = converged_desired();
    let host = FakeHost::converged(&nginx_files(&desired));
    let system = host.system(converged_script(), Backend::Userspace);
    let mut observed = system.observe_cheap();
    system.observe_bridge_addresses(&mut observed).await.expect("bridge");
    for p in PORTS {
        observed.networks.insert(p, system.observe_network(p).await.expect("network"));
    }
    observed
}
