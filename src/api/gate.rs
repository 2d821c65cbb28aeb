//! The API's front door: the socket clients connect to. Rocket 0.5.1
//! (hyper 0.14) has neither a header-read timeout nor a connection cap, and
//! takes no listener of ours, so the gate owns the public socket and hands
//! each connection to Rocket on a private loopback port once it has shown
//! a complete request head:
//!
//! - at most `max_connections` at once; one more is closed at once;
//! - TLS (Rocket's rustls listener, client certificates when asked) and the
//!   request head within `timeout` of the accept, else closed: an idle or
//!   slow socket never reaches Rocket nor holds more than one descriptor;
//! - then closed after `idle` without a byte either way (never shorter than
//!   a POST's wait for its apply, so a slow apply still gets its answer).
//!
//! Rocket answers one request per connection (no keep-alive), so every
//! request head goes through this check. Rocket learns the client's real
//! address through [`Peers`] (keyed by the private hop's port); a request
//! to the private port that did not come through the gate is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocket::http::private::{Connection, Listener};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// The largest request head the gate waits for (hyper's own limit is near).
const MAX_HEAD: usize = 64 * 1024;

/// Which client each connection of the private hop carries.
#[derive(Default)]
pub struct Peers(Mutex<HashMap<u16, SocketAddr>>);

impl Peers {
    fn insert(&self, hop: u16, client: SocketAddr) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(hop, client);
    }

    fn remove(&self, hop: u16) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&hop);
    }

    /// The client behind the private hop's connection from `hop`.
    pub fn client(&self, hop: SocketAddr) -> Option<SocketAddr> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&hop.port()).copied()
    }
}

/// What the gate enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the TLS handshake and the request head.
    pub timeout: Duration,
    /// Without a byte either way once the request went in: at least as long
    /// as a POST may wait for its apply, or the answer is cut off.
    pub idle: Duration,
    pub max_connections: usize,
}

/// The public socket, plain or TLS.
pub enum Front {
    Plain(TcpListener),
    Tls(Box<rocket::http::tls::TlsListener>),
}

impl Front {
    pub fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Front::Plain(l) => l.local_addr().ok(),
            Front::Tls(l) => l.local_addr(),
        }
    }
}

type Stream = Box<dyn Io>;
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Accepts forever; `upstream` is Rocket's private address once it listens.
pub async fn serve(mut front: Front, upstream: watch::Receiver<Option<SocketAddr>>, limits: Limits, peers: Arc<Peers>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let accepted = match &mut front {
            Front::Plain(l) => l.accept().await.map(|(s, a)| {
                // Answers go out as written (see `connection`).
                let _ = s.set_nodelay(true);
                (Box::new(s) as Stream, a)
            }),
            Front::Tls(l) => {
                let l = &mut **l;
                std::future::poll_fn(|cx| Pin::new(&mut *l).poll_accept(cx))
                    .await
                    .and_then(|s| s.peer_address().map(|a| (Box::new(s) as Stream, a)).ok_or_else(|| std::io::ErrorKind::Other.into()))
            }
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "API: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (upstream, peers) = (upstream.clone(), peers.clone());
        tokio::spawn(async move {
            let _slot = slot;
            connection(stream, client, upstream, limits, &peers).await;
        });
    }
}

/// One client connection: its head within the time limit, then the private
/// hop, then bytes both ways until either side ends or it goes idle.
async fn connection(
    mut client: Stream,
    addr: SocketAddr,
    mut upstream: watch::Receiver<Option<SocketAddr>>,
    limits: Limits,
    peers: &Peers,
) {
    let deadline = Instant::now() + limits.timeout;
    let Ok(Some(head)) = tokio::time::timeout_at(deadline, read_head(&mut client)).await else { return };
    let Ok(Ok(rocket)) = tokio::time::timeout_at(deadline, upstream.wait_for(Option::is_some)).await.map(|r| r.map(|a| a.unwrap())) else {
        return;
    };
    let Ok(mut hop) = TcpStream::connect(rocket).await else { return };
    // Each piece goes on at once: with Nagle's algorithm a body's last
    // short piece waited for the ACK of the one before, which the other end
    // delays by 40 ms (a 1 MiB POST took 1 ms or 43 ms to arrive, by luck).
    let _ = hop.set_nodelay(true);
    let Ok(port) = hop.local_addr().map(|a| a.port()) else { return };
    peers.insert(port, addr);
    if hop.write_all(&head).await.is_ok() {
        pipe(client, hop, limits.idle).await;
    }
    peers.remove(port);
}

/// Reads until the end of the request head (`\r\n\r\n`); `None` if the
/// client closed, failed (a TLS handshake without the client certificate)
/// or sent more than [`MAX_HEAD`] without one.
async fn read_head(client: &mut Stream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = client.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[scan_from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(buf);
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
    }
}

/// Copies both ways; ends when Rocket's side ends (it closes after each
/// answer), on an error, or after `idle` without a byte either way.
async fn pipe(client: Stream, hop: TcpStream, idle: Duration) {
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut hop_read, mut hop_write) = hop.into_split();
    let last = Mutex::new(Instant::now());
    let touch = || *last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    let up = async {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 || hop_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            touch();
        }
        let _ = hop_write.shutdown().await;
        // The client is done sending; the answer may still be coming.
        std::future::pending::<()>().await;
    };
    let down = async {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = hop_read.read(&mut buf).await {
            if n == 0 || client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
            let _ = client_write.flush().await;
            touch();
        }
        let _ = client_write.shutdown().await;
    };
    let watch = async {
        loop {
            let until = *last.lock().unwrap_or_else(|e| e.into_inner()) + idle;
            if Instant::now() >= until {
                return;
            }
            tokio::time::sleep_until(until).await;
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = watch => {}
    }
}

/// The PEM files of `--api-tls-cert`, `--api-tls-key`, `--api-client-ca`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// Client certificates signed by this CA are required (mutual TLS).
    pub client_ca: Option<std::path::PathBuf>,
}

/// Binds the public socket: TLS when `tls` is given. A file that cannot be
/// read or used stops the start with its name; so does a key file others
/// may read.
pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> anyhow::Result<Front> {
    use anyhow::Context as _;
    let Some(files) = tls else {
        return Ok(Front::Plain(TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?));
    };
    use std::os::unix::fs::PermissionsExt;
    let read = |p: &std::path::Path| std::fs::read(p).map(std::io::Cursor::new).with_context(|| format!("cannot read {}", p.display()));
    let mode = std::fs::metadata(&files.key).with_context(|| format!("cannot read {}", files.key.display()))?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let shown = files.key.display();
        anyhow::bail!(
            "TLS key file {shown} is open to group or others (mode {mode:04o}): only its owner may read it, e.g. chmod 600 {shown}"
        );
    }
    let config = rocket::http::tls::Config {
        cert_chain: read(&files.cert)?,
        private_key: read(&files.key)?,
        ciphersuites: rocket::http::tls::rustls::DEFAULT_CIPHER_SUITES.to_vec(),
        prefer_server_order: true,
        ca_certs: files.client_ca.as_deref().map(read).transpose()?,
        mandatory_mtls: true,
    };
    let listener = rocket::http::tls::TlsListener::bind(addr, config).await.with_context(|| {
        let ca = files.client_ca.as_ref().map(|c| format!(", {}", c.display())).unwrap_or_default();
        format!("cannot serve TLS on {addr} with {}, {}{ca}", files.cert.display(), files.key.display())
    })?;
    Ok(Front::Tls(Box::new(listener)))
}
