//! Networks' actions with few processes. Each action becomes steps
//! ([`steps`]): a line of the root namespace's `ip -batch` (links made,
//! tagged, attached, moved, namespaces added), a line of the network's own
//! namespace `ip -batch` (its link states, addresses, routes), or the
//! action run on its own (rules, WireGuard, sysctls from a thread).
//!
//! A network's steps run in its order, in turns: in a root turn every
//! network waiting at root lines gives one line to each of a few shared
//! `ip -force -batch` (its first line to the first batch, its second to the
//! second, ...: a network's line runs only once its previous one
//! succeeded); in a local turn the networks run their own steps side by
//! side (up to the limit). A network's namespace lines wait, in order,
//! until a step needs them done (sending to peers, forwarding) or its steps
//! end, then go as one `ip -n NS -batch`; they only ever run later, never
//! before a step that came ahead of them. A failing line fails its own
//! network alone (iproute2 names the line), and that network's later steps
//! are skipped. Crash safety is kept: the intent of a link is recorded
//! before the batch that creates it, and forgotten after the one that tags it.
//!
//! A root batch is cut to what the fullest wireguard-go listening to the root
//! namespace's link events has room for, and waits for that room: each
//! wireguard-go exits when its socket overruns (`kernel::link_listeners`;
//! 300 networks' lines in one batch cost an interface now and then).

use std::collections::{BTreeMap, VecDeque};

use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::Instrument;

use super::ExecReport;
use crate::layout::{Layout, VETH_NS_NAME};
use crate::plan::{Action, Dev};
use crate::system::intent::{LinkIntent, LinkKind};
use crate::system::kernel::link_listeners;
use crate::system::kernel::procfs::read_trimmed;
use crate::system::netns::{Change, batch};
use crate::system::{Backend, CmdError, FailureKind, SysError, System};

/// One line of the root namespace's batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RootLine {
    pub line: String,
    /// Recorded before the batch that runs this line (a link it creates).
    pub intent: Option<LinkIntent>,
    /// Forgotten once this line succeeded (it tagged the link).
    pub forget: Option<String>,
    /// "Not there" is success (deleting what is gone).
    pub missing_ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    Root(RootLine, &'a Action),
    Ns(String, &'a Action),
    /// A WireGuard interface its backend makes with a process of its own
    /// (wireguard-go), its intent recorded first; tagged by a root line.
    CreateWgByProcess(u16, &'a Action),
    Own(&'a Action),
}

impl<'a> Step<'a> {
    fn action(&self) -> &'a Action {
        match self {
            Step::Root(_, a) | Step::Ns(_, a) | Step::CreateWgByProcess(_, a) | Step::Own(a) => a,
        }
    }
}

fn root(line: String, action: &Action) -> Step<'_> {
    Step::Root(RootLine { line, intent: None, forget: None, missing_ok: false }, action)
}

/// The lines that create and tag root-namespace link `name`, its intent
/// recorded before the first and forgotten after the second.
fn created_and_tagged<'a>(create: String, name: &str, kind: LinkKind, port: u16, action: &'a Action) -> [Step<'a>; 2] {
    let intent = LinkIntent { name: name.to_string(), kind, network: Some(port) };
    [
        Step::Root(RootLine { line: create, intent: Some(intent), forget: None, missing_ok: false }, action),
        Step::Root(RootLine { line: batch::tag(name), intent: None, forget: Some(name.to_string()), missing_ok: false }, action),
    ]
}

/// How a network's action is carried out (see the module).
pub(crate) fn steps<'a>(action: &'a Action, layout: &Layout, backend: Backend) -> Vec<Step<'a>> {
    let dev = |port: u16, d: &Dev| match d {
        Dev::Wg => layout.wg(port),
        Dev::Uplink => VETH_NS_NAME.to_string(),
    };
    let ns = |line: String| Step::Ns(line, action);
    match action {
        Action::CreateNamespace(p) => vec![root(batch::netns_add(&layout.netns(*p)), action), ns(batch::link_up("lo", None))],
        Action::CreateWg(p) => {
            let wg = layout.wg(*p);
            match backend.create_line(&wg) {
                Some(line) => created_and_tagged(line, &wg, LinkKind::Wireguard, *p, action).into(),
                None => vec![
                    Step::CreateWgByProcess(*p, action),
                    Step::Root(RootLine { line: batch::tag(&wg), intent: None, forget: Some(wg), missing_ok: false }, action),
                ],
            }
        }
        Action::MoveWg(p) => vec![root(batch::move_link(&layout.wg(*p), &layout.netns(*p)), action)],
        Action::CreateVeth(p) => {
            let host = layout.veth_host(*p);
            let create = batch::veth_add(&host, VETH_NS_NAME, &layout.uplink_mac(*p), &layout.netns(*p));
            created_and_tagged(create, &host, LinkKind::Veth, *p, action).into()
        }
        Action::AttachVeth(p) => {
            batch::attach_isolated(&layout.veth_host(*p), &layout.bridge).into_iter().map(|l| root(l, action)).collect()
        }
        Action::DeleteHostVeth(p) => {
            vec![Step::Root(
                RootLine { line: batch::link_del(&layout.veth_host(*p)), intent: None, forget: None, missing_ok: true },
                action,
            )]
        }
        Action::SetWgLink { port, mtu } => vec![ns(batch::link_up(&layout.wg(*port), Some(*mtu)))],
        Action::UplinkUp(_) => vec![ns(batch::link_up(VETH_NS_NAME, None))],
        Action::AddAddress { port, dev: d, cidr } => vec![ns(batch::address(Change::Add, *cidr, &dev(*port, d)))],
        Action::DelAddress { port, dev: d, cidr } => vec![ns(batch::address(Change::Del, *cidr, &dev(*port, d)))],
        Action::AddRoute { port, cidr } => vec![ns(batch::route(Change::Add, *cidr, &layout.wg(*port)))],
        Action::DelRoute { port, cidr } => vec![ns(batch::route(Change::Del, *cidr, &layout.wg(*port)))],
        _ => vec![Step::Own(action)],
    }
}

/// Whether a step may run before the namespace lines ahead of it: it
/// neither uses the links nor may run ahead of them (sending to peers needs
/// the interface up; forwarding goes last; anything else waits to be safe).
fn runs_ahead_of_ns_lines(step: &Step<'_>) -> bool {
    match step {
        Step::Root(..) | Step::Ns(..) | Step::CreateWgByProcess(..) => true,
        Step::Own(action) => matches!(action, Action::SetRules { .. } | Action::ConfigureWg(..)),
    }
}

/// A network in flight.
struct Network<'a> {
    port: u16,
    steps: VecDeque<Step<'a>>,
    /// Namespace lines not run yet, in order.
    pending: Vec<(String, &'a Action)>,
    report: ExecReport,
}

/// A delete inside a namespace whose object is gone already (a route the
/// kernel removed with its address, found by the fuzzer as a 500): it did
/// what it was for.
fn gone_already(action: &Action, outcome: &Result<(), SysError>) -> bool {
    let Err(SysError::Command(e)) = outcome else { return false };
    match action {
        Action::DelRoute { .. } => e.stderr().contains("No such process"),
        Action::DelAddress { .. } => e.stderr().contains("Cannot assign requested address"),
        _ => false,
    }
}

/// What the `ip -batch` line `index` (1-based) of a failed batch `err`
/// did: Ok, or the error of the command it stands for.
fn line_result(err: &CmdError, failures: &BTreeMap<usize, String>, index: usize, command: &str) -> Result<(), SysError> {
    let said = match err {
        CmdError::Failed { .. } => match failures.get(&index) {
            Some(said) => said.clone(),
            // Nothing read back: every line is in doubt.
            None if failures.is_empty() => err.to_string(),
            // iproute2 stopped early on a line it names nowhere: each line
            // after the last one it reported may not have run.
            None if failures.contains_key(&0) && failures.keys().filter(|k| **k > 0).all(|k| *k < index) => failures[&0].clone(),
            None => return Ok(()),
        },
        other => other.to_string(),
    };
    Err(CmdError::Failed { line: command.to_string(), status: "failed in an ip -batch".into(), stderr: said }.into())
}

/// The room (bytes of link events) a batch waits for: two thirds of a
/// default socket buffer, so that batches do not shrink to a line each
/// while a listener reads, and the events that follow a batch later (a
/// carrier coming up) or come from the networks worked on side by side
/// (wireguard-go's interfaces, uplinks set up) fit beside them. A batch
/// then takes what fits in the room there is.
const MIN_ROOM: u64 = 144 * 1024;

/// How long a batch waits for a listener to read: one the scheduler left
/// waiting this long is given up on (it overruns, and the next drift check
/// rebuilds its interface), so that a process that never reads stalls the
/// pass once, not at every batch.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// How many of the lines (their link events' bytes, in order) fit in
/// `room`: at least one, so the pass goes on.
fn lines_within(costs: impl Iterator<Item = u64>, room: u64) -> usize {
    let mut used = 0u64;
    let mut count = 0;
    for cost in costs {
        used = used.saturating_add(cost);
        if count > 0 && used > room {
            break;
        }
        count += 1;
    }
    count
}

/// A root line waiting for a batch, and where its outcome goes.
struct RootRequest {
    line: RootLine,
    reply: tokio::sync::oneshot::Sender<Result<(), SysError>>,
}

/// How long the root batcher, woken by a line while other networks are
/// still at steps of their own, waits for more lines to join its batch:
/// long enough that networks arriving together share a process, short
/// beside a batch's own time (moving a link takes tens of milliseconds).
const GATHER: std::time::Duration = std::time::Duration::from_millis(20);

impl System {
    /// Runs one segment's network actions (see the module); up to `limit`
    /// networks' own steps at once. The report is in network order.
    ///
    /// Each network runs on its own; its root lines go to one batcher,
    /// which runs the lines waiting as one `ip -batch` while the other
    /// networks go on with their own steps: the root namespace's link work
    /// (serialised by the kernel anyway) overlaps the networks' processes
    /// instead of alternating with them.
    pub(super) async fn run_networks_batched(&self, by_network: BTreeMap<u16, Vec<&Action>>, limit: usize) -> ExecReport {
        let permits = Semaphore::new(limit.max(1));
        let running = AtomicUsize::new(by_network.len());
        let (to_batcher, requests) = mpsc::unbounded_channel();
        let mut networks = FuturesUnordered::new();
        for (port, actions) in by_network {
            let n = Network {
                port,
                steps: actions.into_iter().flat_map(|a| steps(a, &self.layout, self.backend)).collect(),
                pending: Vec::new(),
                report: ExecReport::default(),
            };
            let span = tracing::debug_span!("network", network = port);
            networks.push(self.run_network(n, to_batcher.clone(), &permits, &running).instrument(span));
        }
        // The batcher ends once every network (each with its own sender) has.
        drop(to_batcher);
        let all_done = async {
            let mut done = Vec::new();
            while let Some(n) = networks.next().await {
                done.push(n);
            }
            done
        };
        let batcher = self.root_batcher(requests, &running).instrument(tracing::debug_span!("root batch"));
        let (mut done, ()) = tokio::join!(all_done, batcher);
        done.sort_by_key(|n| n.port);
        let mut report = ExecReport::default();
        for n in done {
            report.merge(n.report);
        }
        report
    }

    /// A network's steps in order until one fails: root lines through the
    /// batcher, its own steps each holding one of the `permits`.
    async fn run_network<'a>(
        &self,
        mut n: Network<'a>,
        to_batcher: mpsc::UnboundedSender<RootRequest>,
        permits: &Semaphore,
        running: &AtomicUsize,
    ) -> Network<'a> {
        let mut ok = true;
        while ok {
            let Some(step) = n.steps.pop_front() else { break };
            ok = match step {
                Step::Root(line, action) => {
                    let (reply, outcome) = oneshot::channel();
                    let _ = to_batcher.send(RootRequest { line, reply });
                    // The batcher answers every line it takes, and outlives the networks.
                    let outcome = outcome.await.unwrap_or_else(|_| {
                        Err(SysError::Unreadable { what: "a root batch's outcome".into(), detail: "the batcher ended first".into() })
                    });
                    let failed = outcome.is_err();
                    n.report.record(action, outcome);
                    !failed
                }
                step => {
                    let _permit = permits.acquire().await;
                    self.local_step(&mut n, step).await
                }
            };
        }
        if ok {
            let _permit = permits.acquire().await;
            self.run_ns_lines(&mut n).await;
        }
        // Before its sender goes: the batcher then waits for one network fewer.
        running.fetch_sub(1, Ordering::SeqCst);
        drop(to_batcher);
        n
    }

    /// One step of a network's own (not a root line); false if it failed.
    async fn local_step<'a>(&self, n: &mut Network<'a>, step: Step<'a>) -> bool {
        if !runs_ahead_of_ns_lines(&step) && !self.run_ns_lines(n).await {
            return false;
        }
        let action = step.action();
        let result = match step {
            Step::Ns(line, action) => {
                n.pending.push((line, action));
                return true;
            }
            Step::CreateWgByProcess(port, _) => self.create_wg_by_process(port).await,
            Step::Own(action) => self.run_own(action).await,
            Step::Root(..) => unreachable!("root lines go to the batcher"),
        };
        let failed = result.is_err();
        n.report.record(action, result);
        !failed
    }

    /// Runs the root lines the networks send in as few batches as it can:
    /// woken by a line, it takes every line waiting, then waits up to
    /// [`GATHER`] for more unless every network still running waits at one
    /// already. A batch is cut where the link listeners lack room.
    async fn root_batcher(&self, mut requests: mpsc::UnboundedReceiver<RootRequest>, running: &AtomicUsize) {
        while let Some(first) = requests.recv().await {
            let mut waiting = vec![first];
            let deadline = tokio::time::Instant::now() + GATHER;
            loop {
                while let Ok(r) = requests.try_recv() {
                    waiting.push(r);
                }
                if waiting.len() >= running.load(Ordering::SeqCst) {
                    break;
                }
                tokio::select! {
                    r = requests.recv() => match r {
                        Some(r) => waiting.push(r),
                        None => break,
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            while !waiting.is_empty() {
                let room = self.link_listeners_room().await;
                let take = lines_within(waiting.iter().map(|r| batch::link_event_bytes(&r.line.line)), room);
                let rest = waiting.split_off(take);
                self.root_batch(waiting).await;
                waiting = rest;
            }
        }
    }

    /// One `ip -force -batch` of root lines, each intent recorded first;
    /// each line's outcome goes back to its network.
    async fn root_batch(&self, lines: Vec<RootRequest>) {
        let mut batch: Vec<RootRequest> = Vec::new();
        for r in lines {
            if let Some(intent) = &r.line.intent {
                if let Err(e) = self.record_intent(intent).await {
                    let _ = r.reply.send(Err(e));
                    continue;
                }
            }
            batch.push(r);
        }
        if batch.is_empty() {
            return;
        }
        let lines: Vec<&str> = batch.iter().map(|r| r.line.line.as_str()).collect();
        let outcomes = self.ip_batch(None, &lines).await;
        for (r, mut outcome) in batch.into_iter().zip(outcomes) {
            if r.line.missing_ok && matches!(&outcome, Err(SysError::Command(e)) if e.kind() == FailureKind::Missing) {
                outcome = Ok(());
            }
            if outcome.is_ok() {
                if let Some(name) = &r.line.forget {
                    self.forget_intent(name).await;
                }
            }
            let _ = r.reply.send(outcome);
        }
    }

    /// Bytes of link events every listener that still reads can take now
    /// (see `kernel::link_listeners`): waits, up to [`ROOM_WAIT`], until
    /// the fullest has room for [`MIN_ROOM`]. Unknown (no /proc/net/netlink):
    /// no limit.
    async fn link_listeners_room(&self) -> u64 {
        let start = std::time::Instant::now();
        let buffer = read_trimmed(&self.paths.rmem_default).and_then(|v| v.parse::<u64>().ok()).unwrap_or(212_992);
        loop {
            let Ok(text) = std::fs::read_to_string(&self.paths.proc_net_netlink) else { return u64::MAX };
            let watched = |l: &link_listeners::Listener| link_listeners::is_wireguard_go(&self.paths.proc_dir, l);
            let room = link_listeners::room(&link_listeners::parse(&text), buffer, watched);
            if room >= MIN_ROOM.min(buffer) {
                if start.elapsed() >= std::time::Duration::from_millis(10) {
                    tracing::debug!(waited_ms = start.elapsed().as_millis() as u64, room, "link listeners had room");
                }
                return room;
            }
            if start.elapsed() >= ROOM_WAIT {
                tracing::debug!(room, "gave up waiting for link listeners' room");
                // Given up on: one buffer's worth, so that a listener that
                // never reads overruns now (it then holds nothing back).
                return buffer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// The network's waiting namespace lines as one `ip -n NS -force -batch`
    /// (each line runs, and iproute2 names each that failed); false if one
    /// failed, but a delete of what is gone already (`gone_already`).
    async fn run_ns_lines(&self, n: &mut Network<'_>) -> bool {
        if n.pending.is_empty() {
            return true;
        }
        // Setting the uplink up brings the carrier of its root end up: link
        // events in the root namespace too, a moment later.
        self.link_listeners_room().await;
        let pending = std::mem::take(&mut n.pending);
        let lines: Vec<&str> = pending.iter().map(|(l, _)| l.as_str()).collect();
        let outcomes = self.ip_batch(Some(&self.layout.netns(n.port)), &lines).await;
        for ((_, action), mut outcome) in pending.into_iter().zip(outcomes) {
            if gone_already(action, &outcome) {
                outcome = Ok(());
            }
            let failed = outcome.is_err();
            n.report.record(action, outcome);
            if failed {
                return false;
            }
        }
        true
    }

    /// One `ip -force -batch` of `lines` (inside namespace `ns`, or the
    /// root one): each line's outcome, in order. With `-force` every line
    /// runs and iproute2 names each that failed (see [`line_result`]).
    async fn ip_batch(&self, ns: Option<&str>, lines: &[&str]) -> Vec<Result<(), SysError>> {
        debug_assert!(lines.iter().all(|l| !l.trim().is_empty() && !l.contains('\n')), "one command per line: {lines:?}");
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let args = ["-force", "-batch", "-"];
        let cmd = match ns {
            Some(ns) => self.tools.ip_in(ns, args),
            None => self.tools.ip(args),
        }
        .stdin(text);
        // By position: iproute2 numbers every line it reads.
        let commands = cmd.batch_commands();
        let result = self.runner.run(&cmd).await;
        let failures = result.as_ref().err().map(|e| batch::line_failures(e.stderr())).unwrap_or_default();
        (0..lines.len())
            .map(|k| match &result {
                Ok(_) => Ok(()),
                Err(e) => line_result(e, &failures, k + 1, commands.get(k).map_or(lines[k], String::as_str)),
            })
            .collect()
    }

    /// Network `port`'s interface made by its backend's process, its intent
    /// recorded first; a root line tags it afterwards.
    async fn create_wg_by_process(&self, port: u16) -> Result<(), SysError> {
        let wg = self.layout.wg(port);
        self.record_intent(&LinkIntent { name: wg.clone(), kind: LinkKind::Wireguard, network: Some(port) }).await?;
        // Its interface's creation is link events too.
        self.link_listeners_room().await;
        self.create_wg_untagged(&wg).await
    }
}

#[cfg(test)]
mod tests;
