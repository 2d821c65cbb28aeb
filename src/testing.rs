//! Test support without root: a fake host (a temp dir standing in for
//! /run/netns, /sys/class/net, nginx's files and pid) and a scripted runner
//! that replays what the tools printed for a really converged gateway
//! (`tests/fixtures/converged`, captured by `scripts/capture-fixtures.sh`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{Settings, Shared};
use crate::layout::Layout;
use crate::model::GatewayConfig;
use crate::observed::Observed;
use crate::render::NginxOptions;
use crate::spec::Desired;
use crate::store::Store;
use crate::system::{Backend, Reply, Runner, Script, System, SystemPaths, Tools};
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

/// A script answering every read of the converged networks with what the
/// tools printed; everything else (the changes) succeeds silently.
pub fn converged_script() -> Script {
    converged_rules(Script::new())
}

/// `script`'s own rules first (they win), then the converged fixtures.
pub fn converged_rules(script: Script) -> Script {
    let mut script = script.on("-json addr show dev gwbr0", Reply::ok(fixture("bridge-addr.json")));
    for p in PORTS {
        script = script
            .on(&format!("-n network-{p} -json -batch -"), Reply::ok(fixture(&format!("ip-batch-{p}.json"))))
            .on(&format!("wg show wg{p} dump"), Reply::ok(fixture(&format!("wg-dump-{p}.txt"))))
            .on(&format!("network-{p} iptables-save"), Reply::ok(fixture(&format!("iptables-save-{p}.txt"))))
            .on(&format!("network-{p} sysctl -n -e"), Reply::ok(fixture(&format!("sysctl-{p}.txt"))));
    }
    script
}

/// A host directory laid out like the real one, with a stand-in nginx
/// master (a `sleep` named `nginx`) when asked for.
pub struct FakeHost {
    pub dir: tempfile::TempDir,
    nginx: Option<Child>,
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
        FakeHost { dir, nginx: None }
    }

    pub fn paths(&self) -> SystemPaths {
        SystemPaths::under(self.dir.path())
    }

    fn net(&self, link: &str) -> PathBuf {
        let d = self.dir.path().join("net").join(link);
        std::fs::create_dir_all(&d).expect("link dir");
        d
    }

    pub fn add_namespace(&self, port: u16) {
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
        let child = Command::new(&bin).arg("600").spawn().expect("fake nginx");
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
        System {
            runner: Runner::scripted(script, Duration::from_secs(2)),
            layout: Layout::default(),
            tools: Tools::default(),
            paths: self.paths(),
            backend,
        }
    }
}

pub fn nginx_options() -> NginxOptions {
    NginxOptions { https_listen: "443".into(), http_listen: "80".into(), server_names_hash_bucket_size: 512 }
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
        watchdog: Duration::from_secs(60),
        token: None,
        apply_wait: Duration::from_secs(5),
    };
    let store = Store::open(None).await.expect("in-memory database");
    Arc::new(Shared::new(store, system, settings, None, Duration::from_secs(86400)))
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
