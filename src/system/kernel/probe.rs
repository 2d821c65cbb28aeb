//! Upstream health checks without a process: TCP connects opened inside
//! each network's namespace by one long-lived thread of the daemon's own.
//!
//! The thread enters a namespace (`setns`), opens a non-blocking socket per
//! upstream and starts its connect, and comes back to its own namespace at
//! once: a socket stays in the namespace it was made in, so every connect of
//! a round then runs at the same time (at most [`MAX_IN_FLIGHT`] sockets),
//! waited for together with `poll` in slices of [`SLICE`]. Each socket is
//! closed as soon as its connect ends, fails, or outlives the timeout; one
//! whose namespace was deleted meanwhile (its file gone or another
//! namespace's now) is closed within a slice, so a check never keeps a
//! removed network's namespace alive longer than that. The thread never
//! holds a namespace's descriptor past starting its connects.
//!
//! [`Probe`] is the seam: unit tests of the checker script the answers.

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sockets connecting at once, whatever the number of upstreams: the rest
/// wait their turn (a round then takes longer, never more descriptors).
/// Fewer where the open-files limit is low ([`max_in_flight`]).
pub const MAX_IN_FLIGHT: usize = 1024;

/// [`MAX_IN_FLIGHT`], or a quarter of the soft open-files limit if that is
/// less (the daemon raises it at start; a process that did not keeps most
/// of its descriptors for everything else).
fn max_in_flight() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 1024 };
    MAX_IN_FLIGHT.min(usize::try_from(soft / 4).unwrap_or(MAX_IN_FLIGHT)).max(16)
}

/// How long one `poll` waits at most: how soon a deleted namespace's
/// sockets are closed.
pub const SLICE: Duration = Duration::from_millis(100);

/// The upstreams to check inside one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsChecks {
    /// The namespace's file (`/run/netns/NAME`); None: the daemon's own.
    pub netns: Option<PathBuf>,
    pub upstreams: Vec<SocketAddrV4>,
}

/// A check's outcome: connected, or why not.
pub type Outcome = Result<(), String>;

/// Checks upstreams; each result list is in the order of its `NsChecks`.
pub trait Probe: Send + Sync {
    fn check(&self, jobs: Vec<NsChecks>, timeout: Duration) -> futures_util::future::BoxFuture<'_, Vec<Vec<Outcome>>>;
}

/// One round handed to the thread.
struct Job {
    jobs: Vec<NsChecks>,
    timeout: Duration,
    reply: tokio::sync::oneshot::Sender<Vec<Vec<Outcome>>>,
}

/// The real thing: one long-lived thread, started at the first round and
/// ended when this is dropped (its channel closes). A thread that could not
/// come back to its own namespace ends after its round; the next round
/// starts a new one.
#[derive(Default)]
pub struct KernelProbe {
    thread: Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

impl Probe for KernelProbe {
    fn check(&self, jobs: Vec<NsChecks>, timeout: Duration) -> futures_util::future::BoxFuture<'_, Vec<Vec<Outcome>>> {
        let sizes: Vec<usize> = jobs.iter().map(|j| j.upstreams.len()).collect();
        let failed = move |why: &str| sizes.iter().map(|n| vec![Err(why.to_string()); *n]).collect::<Vec<_>>();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = self.send(Job { jobs, timeout, reply });
        Box::pin(async move {
            if let Err(e) = sent {
                return failed(&format!("cannot start the health check thread: {e}"));
            }
            answer.await.unwrap_or_else(|_| failed("the health check thread stopped"))
        })
    }
}

impl KernelProbe {
    fn send(&self, job: Job) -> io::Result<()> {
        let mut thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        let job = match thread.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new().name("gateway-health".into()).spawn(move || serve(rx))?;
        let sent = tx.send(job).map_err(|_| io::Error::other("the new thread ended at once"));
        *thread = Some(tx);
        sent
    }
}

/// The thread: rounds one after the other until the channel closes.
fn serve(rx: std::sync::mpsc::Receiver<Job>) {
    let Ok(home) = std::fs::File::open("/proc/thread-self/ns/net") else {
        // Without a way back, never enter a namespace: every check fails.
        for job in rx {
            let why = "cannot open the thread's own network namespace";
            let _ = job.reply.send(job.jobs.iter().map(|j| vec![Err(why.to_string()); j.upstreams.len()]).collect());
        }
        return;
    };
    for job in rx {
        let mut round = Round::new(&job.jobs, job.timeout, &home);
        round.run();
        let stranded = round.stranded;
        let _ = job.reply.send(round.results());
        if stranded {
            tracing::error!(
                "the health check thread could not return to its own network namespace; it ends (the next round starts another)"
            );
            return;
        }
    }
}

/// A namespace's identity: a deleted one's file is gone, or names another.
type NsId = (u64, u64);

struct Pending {
    fd: OwnedFd,
    job: usize,
    index: usize,
    started: Instant,
    ns: Option<NsId>,
}

/// One round: every upstream of every job, at most `limit` sockets at once.
struct Round<'a> {
    jobs: &'a [NsChecks],
    timeout: Duration,
    home: &'a std::fs::File,
    results: Vec<Vec<Option<Outcome>>>,
    /// The next upstream to start: (job, index).
    next: (usize, usize),
    in_flight: Vec<Pending>,
    /// The thread could not come back to its own namespace.
    stranded: bool,
    /// Sockets open at once at most.
    limit: usize,
}

impl<'a> Round<'a> {
    fn new(jobs: &'a [NsChecks], timeout: Duration, home: &'a std::fs::File) -> Self {
        let results = jobs.iter().map(|j| vec![None; j.upstreams.len()]).collect();
        Round { jobs, timeout, home, results, next: (0, 0), in_flight: Vec::new(), stranded: false, limit: max_in_flight() }
    }

    fn results(self) -> Vec<Vec<Outcome>> {
        let unfinished = || Err("not checked".to_string());
        self.results.into_iter().map(|r| r.into_iter().map(|o| o.unwrap_or_else(unfinished)).collect()).collect()
    }

    fn run(&mut self) {
        loop {
            self.start_more();
            if self.in_flight.is_empty() && self.next.0 >= self.jobs.len() {
                return;
            }
            self.wait_slice();
        }
    }

    /// Starts connects until `limit` are open or none is left.
    fn start_more(&mut self) {
        while self.in_flight.len() < self.limit && self.next.0 < self.jobs.len() && !self.stranded {
            let (j, from) = self.next;
            let job = &self.jobs[j];
            let room = self.limit - self.in_flight.len();
            let to = job.upstreams.len().min(from + room);
            self.next = if to == job.upstreams.len() { (j + 1, 0) } else { (j, to) };
            if from == to {
                continue;
            }
            let entered = match &job.netns {
                Some(path) => enter(path),
                None => Ok(None),
            };
            let ns = match entered {
                Ok(ns) => ns,
                Err(e) => {
                    for i in from..to {
                        self.results[j][i] = Some(Err(e.clone()));
                    }
                    continue;
                }
            };
            for i in from..to {
                let addr = job.upstreams[i];
                match start_connect(addr) {
                    Ok(Some(fd)) => self.in_flight.push(Pending { fd, job: j, index: i, started: Instant::now(), ns }),
                    Ok(None) => self.results[j][i] = Some(Ok(())),
                    Err(e) => self.results[j][i] = Some(Err(connect_error(addr, &e))),
                }
            }
            // SAFETY: a valid namespace descriptor; CLONE_NEWNET changes only this thread.
            if job.netns.is_some() && unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                self.stranded = true;
            }
        }
    }

    /// One `poll` over the open sockets, then ends what finished, timed
    /// out, or lost its namespace.
    fn wait_slice(&mut self) {
        let now = Instant::now();
        let soonest = self.in_flight.iter().map(|p| (p.started + self.timeout).saturating_duration_since(now)).min().unwrap_or(SLICE);
        let wait = soonest.min(SLICE).max(Duration::from_millis(1));
        let mut fds: Vec<libc::pollfd> =
            self.in_flight.iter().map(|p| libc::pollfd { fd: p.fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 }).collect();
        // SAFETY: `fds` is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait.as_millis() as libc::c_int) };
        let ready: Vec<bool> = fds.iter().map(|f| n > 0 && f.revents != 0).collect();
        let gone = self.deleted_namespaces();
        let now = Instant::now();
        let mut keep = Vec::with_capacity(self.in_flight.len());
        for (p, ready) in std::mem::take(&mut self.in_flight).into_iter().zip(ready) {
            let addr = self.jobs[p.job].upstreams[p.index];
            let outcome = if ready {
                Some(match socket_error(&p.fd) {
                    Ok(()) => Ok(()),
                    Err(e) => Err(connect_error(addr, &e)),
                })
            } else if p.ns.is_some_and(|ns| gone.contains(&ns)) {
                Some(Err(format!("TCP connect to {addr}: the network's namespace was deleted during the check")))
            } else if now.duration_since(p.started) >= self.timeout {
                Some(Err(format!("TCP connect to {addr}: no answer within {}", seconds(self.timeout))))
            } else {
                None
            };
            match outcome {
                // Dropping `p` closes its socket.
                Some(o) => self.results[p.job][p.index] = Some(o),
                None => keep.push(p),
            }
        }
        self.in_flight = keep;
    }

    /// The namespaces of open sockets whose file is gone or names another
    /// namespace now (one `stat` per namespace in flight).
    fn deleted_namespaces(&self) -> Vec<NsId> {
        let mut checked: Vec<(NsId, bool)> = Vec::new();
        for p in &self.in_flight {
            let Some(ns) = p.ns else { continue };
            if checked.iter().any(|(id, _)| *id == ns) {
                continue;
            }
            let path = self.jobs[p.job].netns.as_ref();
            let same = path.and_then(|path| std::fs::metadata(path).ok()).is_some_and(|m| (m.dev(), m.ino()) == ns);
            checked.push((ns, !same));
        }
        checked.into_iter().filter(|(_, gone)| *gone).map(|(id, _)| id).collect()
    }
}

/// Enters a namespace; its identity, to notice its deletion. The
/// descriptor is closed on return: the sockets made there hold it, not us.
fn enter(path: &std::path::Path) -> Result<Option<NsId>, String> {
    let ns = std::fs::File::open(path).map_err(|e| format!("cannot open the namespace {}: {e}", path.display()))?;
    let meta = ns.metadata().map_err(|e| format!("cannot read the namespace {}: {e}", path.display()))?;
    // SAFETY: a valid descriptor; CLONE_NEWNET changes only this thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("cannot enter the namespace {}: {}", path.display(), io::Error::last_os_error()));
    }
    Ok(Some((meta.dev(), meta.ino())))
}

/// A non-blocking socket connecting to `addr`; None: it connected at once.
fn start_connect(addr: SocketAddrV4) -> io::Result<Option<OwnedFd>> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: `sin` is a valid sockaddr_in of the size given.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Ok(None);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINPROGRESS) { Ok(Some(fd)) } else { Err(e) }
}

/// How a connect that `poll` reported ended (`SO_ERROR`).
fn socket_error(fd: &OwnedFd) -> io::Result<()> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are valid for getsockopt to write.
    let r =
        unsafe { libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut _ as *mut libc::c_void, &mut len) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if err == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(err)) }
}

/// `TCP connect to 10.80.0.2:443: connection refused`.
fn connect_error(addr: SocketAddrV4, e: &io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    let text: String = chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default();
    format!("TCP connect to {addr}: {text}")
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{} s", d.as_secs()) } else { format!("{} ms", d.as_millis()) }
}

#[cfg(test)]
mod tests;
