//! The two WireGuard backends: the kernel module (`ip link add type
//! wireguard`) and wireguard-go. Either way the interface is born in the root
//! namespace, so its UDP socket listens on the host, and is moved afterwards.

use std::path::Path;
use std::time::Duration;

use super::runner::Runner;
use super::tools::Tools;
use super::wait::wait_for;
use super::{SysError, System};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Kernel,
    Userspace,
}

/// How long wireguard-go gets to answer on its socket, and to exit.
const WIREGUARD_GO_WAIT: Duration = Duration::from_secs(10);

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Userspace => "userspace",
        }
    }

    /// `auto`: kernel if `ip link add ... type wireguard` works here.
    pub async fn detect(runner: &Runner, tools: &Tools, choice: &str) -> Result<Backend, String> {
        match choice {
            "kernel" => Ok(Backend::Kernel),
            "userspace" => Ok(Backend::Userspace),
            "auto" => {
                let probe = format!("gwprobe{}", std::process::id() % 100_000);
                match runner.run(&tools.ip(["link", "add", &probe, "type", "wireguard"])).await {
                    Ok(_) => {
                        let _ = runner.run(&tools.ip(["link", "del", &probe])).await;
                        Ok(Backend::Kernel)
                    }
                    Err(_) => Ok(Backend::Userspace),
                }
            }
            other => Err(format!("unknown WireGuard backend '{other}': use kernel, userspace or auto")),
        }
    }
}

impl System {
    pub(super) fn wireguard_socket(&self, iface: &str) -> std::path::PathBuf {
        self.paths.wireguard_sock_dir.join(format!("{iface}.sock"))
    }

    /// Creates network `port`'s interface in the root namespace and tags it.
    pub async fn create_wg(&self, port: u16) -> Result<(), SysError> {
        let wg = self.layout.wg(port);
        match self.backend {
            Backend::Kernel => {
                self.run(self.tools.ip(["link", "add", &wg, "type", "wireguard"])).await?;
            }
            Backend::Userspace => {
                self.start_wireguard_go(&wg).await?;
                super::fault::point("after-wireguard-go-start");
            }
        }
        self.tag_owned(&wg).await
    }

    /// Waits until the wireguard-go serving network `port` is gone (its
    /// socket removed); nothing to wait for with the kernel backend.
    pub async fn wait_wireguard_go_gone(&self, port: u16) -> Result<(), SysError> {
        if self.backend == Backend::Userspace {
            let iface = self.layout.wg(port);
            let sock = self.wireguard_socket(&iface);
            wait_for(|| !sock.exists(), WIREGUARD_GO_WAIT)
                .await
                .map_err(|_| SysError::WireguardGoLingers { iface, secs: WIREGUARD_GO_WAIT.as_secs() })?;
        }
        Ok(())
    }
}

/// Whether a wireguard-go control socket accepts a UAPI `get` and answers
/// it, within a second (async: a stuck socket must not block the runtime).
pub(super) async fn uapi_answers(sock: &Path) -> bool {
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
