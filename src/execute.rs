//! Runs the planned actions. Every command goes through the [`Runner`]; a
//! failing action stops only the rest of its own network's actions.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::layout::VETH_NS_NAME;
use crate::observe::{OWNED_ALIAS, Observer};
use crate::plan::{Action, Dev, NginxText};
use crate::render;
use crate::runner::{Cmd, CmdError};
use crate::validate::Desired;

/// Settings inside a network's namespace: forwarding for both families (`-e`:
/// a kernel without IPv6 just skips it), and secondary addresses promoted
/// when a primary is removed (or removing one address drops the others).
pub const NAMESPACE_SYSCTLS: [(&str, &str); 3] =
    [("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1"), ("net.ipv4.conf.all.promote_secondaries", "1")];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Kernel,
    Userspace,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        }
    }

    /// `auto`: kernel if `ip link add ... type wireguard` works here.
    pub async fn detect(observer: &Observer, choice: &str) -> Result<Backend, String> {
        match choice {
            "kernel" => Ok(Backend::Kernel),
            "userspace" => Ok(Backend::Userspace),
            "auto" => {
                let probe = format!("gwprobe{}", std::process::id() % 100_000);
                let ip = &observer.tools.ip;
                match observer.runner.run(&Cmd::new(ip, ["link", "add", &probe, "type", "wireguard"])).await {
                    Ok(_) => {
                        let _ = observer.runner.run(&Cmd::new(ip, ["link", "del", &probe])).await;
                        Ok(Backend::Kernel)
                    }
                    Err(_) => Ok(Backend::Userspace),
                }
            }
            other => Err(format!("unknown WireGuard backend '{other}': use kernel, userspace or auto")),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct ExecReport {
    /// Networks on which something was changed.
    pub changed: BTreeSet<u16>,
    /// Networks whose actions did not all succeed.
    pub failed: BTreeSet<u16>,
    pub errors: Vec<String>,
    pub nginx_reloaded: bool,
    /// A shared action (bridge, nginx) failed.
    pub global_failed: bool,
}

pub struct Executor<'a> {
    pub observer: &'a Observer,
    pub backend: Backend,
}

impl Executor<'_> {
    pub async fn execute(&self, actions: &[Action], desired: &Desired, nginx: &NginxText) -> ExecReport {
        let mut report = ExecReport::default();
        for action in actions {
            let net = action.network();
            if let Some(p) = net {
                if report.failed.contains(&p) {
                    continue;
                }
            }
            match self.run(action, desired, nginx, &mut report).await {
                Ok(()) => {
                    if let Some(p) = net {
                        report.changed.insert(p);
                    }
                }
                Err(e) => {
                    let what = match net {
                        Some(p) => format!("network {p}: {action:?}: {e}"),
                        None => format!("{action:?}: {e}"),
                    };
                    tracing::warn!("{what}");
                    report.errors.push(what);
                    match net {
                        Some(p) => {
                            report.failed.insert(p);
                        }
                        None => report.global_failed = true,
                    }
                }
            }
        }
        report
    }

    async fn cmd<I, S>(&self, program: &str, args: I) -> Result<String, CmdError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.observer.runner.run(&Cmd::new(program, args)).await
    }

    async fn run(&self, action: &Action, desired: &Desired, nginx: &NginxText, report: &mut ExecReport) -> Result<(), String> {
        let o = self.observer;
        let l = &o.layout;
        let t = &o.tools;
        let ip = t.ip.as_str();
        let e = |e: CmdError| e.to_string();
        let spec = |p: &u16| desired.networks.get(p).ok_or_else(|| format!("network {p} is not desired"));
        match action {
            Action::CreateBridge => {
                self.cmd(ip, ["link", "add", &l.bridge, "type", "bridge"]).await.map_err(e)?;
                self.cmd(ip, ["link", "set", "dev", &l.bridge, "alias", OWNED_ALIAS]).await.map_err(e)?
            }
            Action::AddBridgeAddress(c) => self.cmd(ip, ["addr", "add", &c.to_string(), "dev", &l.bridge]).await.map_err(e)?,
            Action::DelBridgeAddress(c) => self.cmd(ip, ["addr", "del", &c.to_string(), "dev", &l.bridge]).await.map_err(e)?,
            Action::BridgeUp => self.cmd(ip, ["link", "set", &l.bridge, "up"]).await.map_err(e)?,
            Action::DeleteBridge => self.delete_link(&l.bridge).await?,
            Action::CreateNamespace(p) => {
                let ns = l.netns(*p);
                self.cmd(ip, ["netns", "add", &ns]).await.map_err(e)?;
                self.cmd(ip, ["-n", &ns, "link", "set", "lo", "up"]).await.map_err(e)?
            }
            Action::CreateWg(p) => {
                let wg = l.wg(*p);
                match self.backend {
                    Backend::Kernel => self.cmd(ip, ["link", "add", &wg, "type", "wireguard"]).await.map_err(e)?,
                    Backend::Userspace => {
                        // With LOG_LEVEL set, the forked daemon would keep our
                        // output pipes open (and this command would never end).
                        o.runner.run(&Cmd::new(&t.wireguard_go, [wg.as_str()]).env_remove("LOG_LEVEL")).await.map_err(e)?;
                        // wireguard-go creates its socket a moment after it forks, and
                        // listens on it a moment after that: wait until it answers.
                        let sock = o.paths.wireguard_sock_dir.join(format!("{wg}.sock"));
                        wait_for_async(|| uapi_answers(&sock), Duration::from_secs(10))
                            .await
                            .map_err(|_| format!("wireguard-go's socket {} did not answer", sock.display()))?;
                        String::new()
                    }
                };
                // Tagged as ours: only tagged links are ever deleted.
                self.cmd(ip, ["link", "set", "dev", &wg, "alias", OWNED_ALIAS]).await.map_err(e)?
            }
            Action::MoveWg(p) => self.cmd(ip, ["link", "set", &l.wg(*p), "netns", &l.netns(*p)]).await.map_err(e)?,
            Action::ConfigureWg(p) => {
                let conf = render::wg_conf(spec(p)?);
                let cmd = Cmd::new(ip, ["netns", "exec", &l.netns(*p), &t.wg, "syncconf", &l.wg(*p), "/dev/stdin"]).stdin(conf);
                o.runner.run(&cmd).await.map_err(e)?
            }
            Action::SetWgLink { port, mtu } => {
                self.cmd(ip, ["-n", &l.netns(*port), "link", "set", &l.wg(*port), "mtu", &mtu.to_string(), "up"]).await.map_err(e)?
            }
            Action::AddAddress { port, dev, cidr } | Action::DelAddress { port, dev, cidr } => {
                let verb = if matches!(action, Action::AddAddress { .. }) { "add" } else { "del" };
                let dev = match dev {
                    Dev::Wg => l.wg(*port),
                    Dev::Uplink => VETH_NS_NAME.to_string(),
                };
                self.cmd(ip, ["-n", &l.netns(*port), "addr", verb, &cidr.to_string(), "dev", &dev]).await.map_err(e)?
            }
            Action::AddRoute { port, cidr } => {
                self.cmd(ip, ["-n", &l.netns(*port), "route", "replace", &cidr.to_string(), "dev", &l.wg(*port)]).await.map_err(e)?
            }
            Action::DelRoute { port, cidr } => {
                self.cmd(ip, ["-n", &l.netns(*port), "route", "del", &cidr.to_string(), "dev", &l.wg(*port)]).await.map_err(e)?
            }
            Action::CreateVeth(p) => {
                let v = l.veth_host(*p);
                self.cmd(ip, ["link", "add", &v, "type", "veth", "peer", "name", VETH_NS_NAME, "netns", &l.netns(*p)]).await.map_err(e)?;
                self.cmd(ip, ["link", "set", "dev", &v, "alias", OWNED_ALIAS]).await.map_err(e)?
            }
            Action::AttachVeth(p) => {
                let v = l.veth_host(*p);
                self.cmd(ip, ["link", "set", &v, "master", &l.bridge, "up"]).await.map_err(e)?;
                // Isolated bridge ports cannot reach each other: networks stay apart.
                self.cmd(ip, ["link", "set", "dev", &v, "type", "bridge_slave", "isolated", "on"]).await.map_err(e)?
            }
            Action::UplinkUp(p) => self.cmd(ip, ["-n", &l.netns(*p), "link", "set", VETH_NS_NAME, "up"]).await.map_err(e)?,
            Action::SetForwarding(p) => {
                let settings: Vec<String> = NAMESPACE_SYSCTLS.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let mut args =
                    vec!["netns".to_string(), "exec".into(), l.netns(*p), t.sysctl.clone(), "-q".into(), "-e".into(), "-w".into()];
                args.extend(settings);
                self.cmd(ip, args).await.map_err(e)?
            }
            Action::SetRules { port, missing_jumps } => {
                let text = render::iptables_restore(&render::rules(l, spec(port)?), missing_jumps);
                let cmd = Cmd::new(ip, ["netns", "exec", &l.netns(*port), &t.iptables_restore, "--noflush"]).stdin(text);
                o.runner.run(&cmd).await.map_err(e)?
            }
            Action::DeleteNetwork(p) => {
                let ns = l.netns(*p);
                // Deleting the interface first makes wireguard-go exit now,
                // not whenever the kernel gets round to tearing the namespace down.
                let had_interface = match self.cmd(ip, ["-n", &ns, "link", "del", &l.wg(*p)]).await {
                    Ok(_) => true,
                    Err(err) if err.stderr().contains("Cannot find device") => false,
                    Err(err) => return Err(err.to_string()),
                };
                self.cmd(ip, ["netns", "del", &ns]).await.map_err(e)?;
                // Without an interface in the namespace, a wireguard-go that
                // is still around holds one in the root namespace instead, and
                // DeleteRootWg deals with it.
                if had_interface {
                    self.wait_wireguard_go_gone(*p).await?;
                }
                String::new()
            }
            Action::DeleteRootWg(p) => {
                self.delete_link(&l.wg(*p)).await?;
                self.wait_wireguard_go_gone(*p).await?;
                String::new()
            }
            Action::DeleteHostVeth(p) => self.delete_link(&l.veth_host(*p)).await?,
            Action::WriteNginx => {
                report.nginx_reloaded = self.write_nginx(nginx).await?;
                String::new()
            }
            Action::StartNginx => {
                self.nginx_test().await?;
                self.cmd(&t.nginx, ["-c", &o.paths.nginx_conf.to_string_lossy()]).await.map_err(e)?
            }
        };
        Ok(())
    }

    /// Deletes a root-namespace link; one already gone (e.g. a veth the
    /// kernel is still tearing down with its namespace) is not an error.
    async fn delete_link(&self, name: &str) -> Result<String, String> {
        match self.cmd(&self.observer.tools.ip, ["link", "del", name]).await {
            Ok(out) => Ok(out),
            Err(err) if err.stderr().contains("Cannot find device") => Ok(String::new()),
            Err(err) => Err(err.to_string()),
        }
    }

    async fn wait_wireguard_go_gone(&self, port: u16) -> Result<(), String> {
        if self.backend == Backend::Userspace {
            let sock = self.observer.paths.wireguard_sock_dir.join(format!("{}.sock", self.observer.layout.wg(port)));
            wait_for(|| !sock.exists(), Duration::from_secs(10))
                .await
                .map_err(|_| format!("wireguard-go for {} did not exit", self.observer.layout.wg(port)))?;
        }
        Ok(())
    }

    async fn nginx_test(&self) -> Result<(), String> {
        let conf = self.observer.paths.nginx_conf.to_string_lossy().to_string();
        self.cmd(&self.observer.tools.nginx, ["-t", "-q", "-c", &conf])
            .await
            .map(|_| ())
            .map_err(|e| format!("nginx config check failed: {e}"))
    }

    /// Writes both files, checks the whole config, then reloads (or starts)
    /// nginx. If the check fails the previous files are put back, so a bad
    /// config is never left in place. Returns whether nginx was reloaded.
    async fn write_nginx(&self, text: &NginxText) -> Result<bool, String> {
        let paths = &self.observer.paths;
        let files = [(&paths.nginx_stream, &text.stream), (&paths.nginx_http, &text.http)];
        let previous: Vec<Option<String>> = files.iter().map(|(p, _)| std::fs::read_to_string(p).ok()).collect();
        let restore = |prev: &[Option<String>]| {
            for ((path, _), old) in files.iter().zip(prev) {
                let _ = match old {
                    Some(old) => write_atomic(path, old),
                    None => std::fs::remove_file(path).map_err(|e| e.to_string()),
                };
            }
        };
        for (path, content) in files {
            if let Err(err) = write_atomic(path, content) {
                restore(&previous);
                return Err(err);
            }
        }
        if let Err(err) = self.nginx_test().await {
            restore(&previous);
            return Err(format!("{err}; the previous nginx files were restored"));
        }
        let conf = paths.nginx_conf.to_string_lossy().to_string();
        let nginx = &self.observer.tools.nginx;
        let loaded = if let Some(master) = self.observer.nginx_master() {
            let old_workers = crate::observe::children_of(master);
            match self.cmd(nginx, ["-c", &conf, "-s", "reload"]).await {
                // `-s reload` only signals the master. Wait until new workers
                // run the new config (old ones stop accepting right after), so
                // an applied route is live when the API says so. None appear
                // when nginx could not load it (e.g. a listen port in use,
                // which `nginx -t` does not check).
                Ok(_) => wait_for(|| !crate::observe::children_of(master).is_subset(&old_workers), Duration::from_secs(5))
                    .await
                    .map(|_| true)
                    .map_err(|_| "nginx did not load the new configuration within 5 s (see its error log, e.g. a port in use)".to_string()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            self.cmd(nginx, ["-c", &conf]).await.map(|_| false).map_err(|e| e.to_string())
        };
        if let Err(err) = &loaded {
            // The files must show what nginx runs, so the next pass tries again.
            restore(&previous);
            return Err(format!("{err}; the previous nginx files were restored"));
        }
        loaded
    }
}

/// Whether a wireguard-go control socket accepts a UAPI `get` and answers
/// it, within a second (async: a stuck socket must not block the runtime).
async fn uapi_answers(sock: &Path) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::UnixStream::connect(sock).await.ok()?;
        stream.write_all(b"get=1\n\n").await.ok()?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        // The answer ends with an empty line after `errno=N`; it holds the
        // private key, so it is read and dropped, never logged.
        loop {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.ends_with(b"\n\n") {
                break;
            }
        }
        Some(answer.windows(8).any(|w| w == b"errno=0\n"))
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some(true)))
}

fn write_atomic(path: &Path, content: &str) -> Result<(), String> {
    let tmp = path.with_extension("gateway-tmp");
    let err = |e: std::io::Error| format!("writing {}: {e}", path.display());
    std::fs::write(&tmp, content).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

async fn wait_for_async<F: std::future::Future<Output = bool>>(cond: impl Fn() -> F, limit: Duration) -> Result<(), ()> {
    let start = std::time::Instant::now();
    while !cond().await {
        if start.elapsed() > limit {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_for(cond: impl Fn() -> bool, limit: Duration) -> Result<(), ()> {
    wait_for_async(|| std::future::ready(cond()), limit).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Layout;
    use crate::observe::Observed;
    use crate::observe::{SystemPaths, Tools};
    use crate::plan::plan;
    use crate::render::tests::sample_config;
    use crate::runner::Runner;
    use crate::validate::{Context, validate};

    fn observer(dir: &Path) -> Observer {
        Observer {
            runner: Runner::dry_run(),
            layout: Layout::default(),
            tools: Tools::default(),
            paths: SystemPaths {
                netns_dir: dir.join("netns"),
                sys_class_net: dir.join("net"),
                wireguard_sock_dir: dir.join("wg"),
                nginx_stream: dir.join("stream.conf"),
                nginx_http: dir.join("http.conf"),
                nginx_conf: dir.join("nginx.conf"),
                nginx_pid: dir.join("nginx.pid"),
            },
        }
    }

    /// The kernel backend cannot run here (no module); its commands are
    /// pinned instead: created in the root namespace, then moved, then
    /// configured inside the namespace.
    #[tokio::test]
    async fn kernel_backend_commands_for_a_new_network() {
        let dir = tempfile::tempdir().unwrap();
        let o = observer(dir.path());
        let desired = validate(&sample_config(), &Context::default()).unwrap();
        let nginx = NginxText { stream: "s".into(), http: "h".into() };
        let actions = plan(&desired, &Observed::default(), &o.layout, &nginx);
        let report = Executor { observer: &o, backend: Backend::Kernel }.execute(&actions, &desired, &nginx).await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let lines: Vec<String> = o.runner.take_records().into_iter().map(|r| r.line).filter(|l| l.contains("51820")).collect();
        let expected = [
            "ip netns add network-51820",
            "ip -n network-51820 link set lo up",
            "ip link add wg51820 type wireguard",
            "ip link set dev wg51820 alias gateway",
            "ip link set wg51820 netns network-51820",
            "ip netns exec network-51820 wg syncconf wg51820 /dev/stdin",
            "ip -n network-51820 link set wg51820 mtu 1380 up",
            "ip -n network-51820 addr add 10.80.0.1/16 dev wg51820",
            "ip -n network-51820 route replace 192.168.7.0/24 dev wg51820",
            "ip link add gwv51820 type veth peer name gw-uplink netns network-51820",
            "ip link set dev gwv51820 alias gateway",
            "ip link set gwv51820 master gwbr0 up",
            "ip link set dev gwv51820 type bridge_slave isolated on",
            "ip -n network-51820 link set gw-uplink up",
            "ip -n network-51820 addr add 10.199.202.108/16 dev gw-uplink",
            "ip netns exec network-51820 sysctl -q -e -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv4.conf.all.promote_secondaries=1",
            "ip netns exec network-51820 iptables-restore --noflush",
        ];
        assert_eq!(lines, expected);
        assert_eq!(report.changed.into_iter().collect::<Vec<_>>(), vec![51820, 51821]);
        // Written nginx files are there; the (dry) check passed, nginx was started.
        assert_eq!(std::fs::read_to_string(dir.path().join("stream.conf")).unwrap(), "s");
    }

    #[tokio::test]
    async fn kernel_backend_removal_deletes_interface_then_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let o = observer(dir.path());
        let nginx = NginxText { stream: "s".into(), http: "h".into() };
        let actions = [Action::DeleteNetwork(51820), Action::DeleteRootWg(51821)];
        let report = Executor { observer: &o, backend: Backend::Kernel }.execute(&actions, &Desired::default(), &nginx).await;
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let lines: Vec<String> = o.runner.take_records().into_iter().map(|r| r.line).collect();
        assert_eq!(lines, ["ip -n network-51820 link del wg51820", "ip netns del network-51820", "ip link del wg51821"]);
    }

    #[tokio::test]
    async fn a_failing_network_does_not_stop_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let o = observer(dir.path());
        let nginx = NginxText { stream: "s".into(), http: "h".into() };
        // ConfigureWg of a network that is not desired fails before any command.
        let actions = [Action::ConfigureWg(40000), Action::SetForwarding(40000), Action::SetForwarding(40001)];
        let report = Executor { observer: &o, backend: Backend::Kernel }.execute(&actions, &Desired::default(), &nginx).await;
        assert_eq!(report.failed.into_iter().collect::<Vec<_>>(), vec![40000]);
        assert_eq!(report.errors.len(), 1);
        let lines: Vec<String> = o.runner.take_records().into_iter().map(|r| r.line).collect();
        assert_eq!(
            lines,
            [
                "ip netns exec network-40001 sysctl -q -e -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 net.ipv4.conf.all.promote_secondaries=1"
            ],
            "40000's later actions skipped"
        );
    }
}
