//! The one place that starts processes. Every `ip`, `wg`, `iptables`, `nginx`
//! and `wireguard-go` invocation goes through [`Runner::run`], which logs the
//! command line (never its stdin, which carries keys), bounds its run time,
//! keeps stderr in the error, and can record what ran so tests can count it.
//! In tests a [`Script`] answers instead of real processes: canned output per
//! command line, failures, delays.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// A command to run. Arguments are passed as a vector, never through a shell.
#[derive(Clone)]
pub struct Cmd {
    pub program: String,
    pub args: Vec<String>,
    /// Written to the process's stdin; may hold secrets, so never logged.
    stdin: Option<Vec<u8>>,
    /// False for commands that only read the system.
    pub mutating: bool,
}

impl Cmd {
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd { program: program.to_string(), args: args.into_iter().map(Into::into).collect(), stdin: None, mutating: true }
    }

    /// Marks a command that only reads the system.
    pub fn read_only(mut self) -> Self {
        self.mutating = false;
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn line(&self) -> String {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }

    /// For `ip [-n NS] [-force] -batch -`, the command each line of its
    /// stdin stands for (`ip [-n NS] LINE`); empty for any other command.
    pub fn batch_commands(&self) -> Vec<String> {
        let Some(at) = self.args.iter().position(|a| a == "-batch") else { return Vec::new() };
        let prefix: Vec<&str> =
            std::iter::once(self.program.as_str()).chain(self.args[..at].iter().map(String::as_str).filter(|a| *a != "-force")).collect();
        let text = self.stdin.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
        text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("{} {l}", prefix.join(" "))).collect()
    }

    /// Whether `ip -batch` goes on after a failing line (`-force`).
    fn batch_forced(&self) -> bool {
        self.args.iter().any(|a| a == "-force")
    }
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error("`{line}` could not be started: {source}")]
    Spawn { line: String, source: std::io::Error },
    #[error("`{line}` failed ({status}): {stderr}")]
    Failed { line: String, status: String, stderr: String },
    #[error("`{line}` did not finish within {secs} s and was killed")]
    Timeout { line: String, secs: u64 },
}

/// What a failed tool said, as far as the gateway cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The device, namespace or file named is not there.
    Missing,
    /// What was to be created is there already.
    Exists,
    Other,
}

impl CmdError {
    pub fn stderr(&self) -> &str {
        match self {
            CmdError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }

    /// Classifies the failure from the tool's message: the one place that
    /// knows how `ip`, `wg` and friends say "not there" and "already there".
    pub fn kind(&self) -> FailureKind {
        const MISSING: [&str; 5] =
            ["Cannot find device", "No such device", "Unable to access interface", "does not exist", "No such file or directory"];
        let stderr = self.stderr();
        if MISSING.iter().any(|m| stderr.contains(m)) {
            FailureKind::Missing
        } else if stderr.contains("File exists") || stderr.contains("already exists") {
            FailureKind::Exists
        } else {
            FailureKind::Other
        }
    }
}

/// One executed command, as recorded for tests and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: String,
    pub mutating: bool,
    pub ok: bool,
    /// For an `ip -batch`, the command each of its lines stands for (`ip
    /// -n NS addr add ...`); empty otherwise.
    pub batch: Vec<String>,
    /// False for work done on a thread of the daemon's own (a namespace's
    /// sysctls): recorded beside the processes, but no process was started.
    pub process: bool,
}

impl Record {
    /// The commands this record stands for: each line of a batch, or its own.
    pub fn commands(&self) -> Vec<&str> {
        if self.batch.is_empty() { vec![self.line.as_str()] } else { self.batch.iter().map(String::as_str).collect() }
    }
}

/// A canned answer of a [`Script`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Exit status; 0 is success. `None`: the program could not be started.
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// How long the "process" takes (the runner's time limit applies).
    pub delay: Duration,
}

impl Reply {
    pub fn ok(stdout: impl Into<String>) -> Self {
        Reply { status: Some(0), stdout: stdout.into(), ..Default::default() }
    }
    pub fn fail(status: i32, stderr: impl Into<String>) -> Self {
        Reply { status: Some(status), stderr: stderr.into(), ..Default::default() }
    }
    /// The program is not installed.
    pub fn not_found() -> Self {
        Reply { status: None, ..Default::default() }
    }
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

struct Rule {
    /// Matches when the command line contains this text.
    pattern: String,
    reply: Reply,
    /// Answers this many times, then is used up; `None`: every time.
    remaining: Option<usize>,
}

/// Answers commands from canned replies instead of running them: the first
/// rule whose pattern the command line contains answers, else `otherwise`.
pub struct Script {
    rules: Mutex<Vec<Rule>>,
    otherwise: Reply,
}

impl Default for Script {
    fn default() -> Self {
        Script::new()
    }
}

impl Script {
    /// Every command succeeds with empty output unless a rule says otherwise.
    pub fn new() -> Self {
        Script { rules: Mutex::new(Vec::new()), otherwise: Reply::ok("") }
    }

    /// Every command line containing `pattern` gets `reply`.
    pub fn on(self, pattern: &str, reply: Reply) -> Self {
        self.push(pattern, reply, None)
    }

    /// The next command line containing `pattern` gets `reply`, once.
    pub fn once(self, pattern: &str, reply: Reply) -> Self {
        self.push(pattern, reply, Some(1))
    }

    /// What commands no rule matches get.
    pub fn otherwise(mut self, reply: Reply) -> Self {
        self.otherwise = reply;
        self
    }

    fn push(self, pattern: &str, reply: Reply, remaining: Option<usize>) -> Self {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).push(Rule { pattern: pattern.into(), reply, remaining });
        self
    }

    fn answer(&self, line: &str) -> Reply {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = rules.iter().position(|r| r.remaining != Some(0) && line.contains(&r.pattern)) else {
            return self.otherwise.clone();
        };
        let rule = &mut rules[i];
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
        }
        rule.reply.clone()
    }
}

/// How a command ended, for whoever counts commands (the metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandOutcome {
    Ok,
    Failed,
    Timeout,
    NotStarted,
}

impl CommandOutcome {
    fn of(result: &Result<String, CmdError>) -> Self {
        match result {
            Ok(_) => CommandOutcome::Ok,
            Err(CmdError::Failed { .. }) => CommandOutcome::Failed,
            Err(CmdError::Timeout { .. }) => CommandOutcome::Timeout,
            Err(CmdError::Spawn { .. }) => CommandOutcome::NotStarted,
        }
    }
}

/// Told about every command the runner finishes.
pub trait CommandObserver: Send + Sync {
    /// `program`: the tool's file name (for `ip netns exec NS TOOL ...`, TOOL's).
    fn command_done(&self, program: &str, outcome: CommandOutcome, duration: Duration);
}

/// The tool a command runs: `ip netns exec NS wg show` runs `wg`.
pub fn tool_of(cmd: &Cmd) -> &str {
    let program = match cmd.args.as_slice() {
        [netns, exec, _ns, tool, ..] if netns == "netns" && exec == "exec" => tool.as_str(),
        _ => cmd.program.as_str(),
    };
    program.rsplit('/').next().unwrap_or(program)
}

/// The whole environment of every process the daemon starts: `PATH` (so
/// `ip netns exec` and nginx find their tools), nothing else. The daemon's
/// own environment may hold secrets (`GATEWAY_TOKEN`) and settings meant
/// for it alone (`GATEWAY_*`, `ROCKET_*`, `RUST_LOG`), and wireguard-go and
/// nginx run for as long as the networks serve, their environment readable
/// in `/proc`. It also keeps `LOG_LEVEL` from wireguard-go, whose forked
/// daemon would then keep our output pipes open (and the command never end),
/// and the locale from the tools whose output is parsed.
fn child_environment() -> &'static [(&'static str, std::ffi::OsString)] {
    static ENV: std::sync::OnceLock<Vec<(&'static str, std::ffi::OsString)>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::env::var_os("PATH").filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PATH.into());
        vec![("PATH", path)]
    })
}

/// `PATH` for the tools when the daemon was started without one.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone)]
enum Mode {
    Real,
    Scripted(Arc<Script>),
}

#[derive(Clone)]
pub struct Runner {
    timeout: Duration,
    records: Option<Arc<Mutex<Vec<Record>>>>,
    mode: Mode,
    observer: Option<Arc<dyn CommandObserver>>,
}

impl Runner {
    pub fn new(timeout: Duration) -> Self {
        Runner { timeout, records: None, mode: Mode::Real, observer: None }
    }

    /// The same runner, telling `observer` about every command it finishes.
    pub fn observed_by(self, observer: Arc<dyn CommandObserver>) -> Self {
        Runner { observer: Some(observer), ..self }
    }

    /// A runner that also remembers every command it ran.
    pub fn recording(timeout: Duration) -> Self {
        Runner { timeout, records: Some(Arc::new(Mutex::new(Vec::new()))), mode: Mode::Real, observer: None }
    }

    /// A recording runner that runs nothing: `script` answers every command.
    pub fn scripted(script: Script, timeout: Duration) -> Self {
        Runner { mode: Mode::Scripted(Arc::new(script)), ..Runner::recording(timeout) }
    }

    /// A runner that records every command and runs none (each "succeeds"
    /// with empty output): for unit tests of what would be run, without root.
    pub fn dry_run() -> Self {
        Runner::scripted(Script::new(), Duration::from_secs(1))
    }

    /// Returns and clears what was recorded so far.
    pub fn take_records(&self) -> Vec<Record> {
        match &self.records {
            Some(r) => std::mem::take(&mut *r.lock().unwrap_or_else(|e| e.into_inner())),
            None => Vec::new(),
        }
    }

    /// Runs the command and returns its stdout; a non-zero exit is an error
    /// that carries stderr.
    pub async fn run(&self, cmd: &Cmd) -> Result<String, CmdError> {
        let line = cmd.line();
        if cmd.mutating {
            tracing::debug!(command = %line, "run");
        } else {
            tracing::trace!(command = %line, "read");
        }
        let start = std::time::Instant::now();
        let batch = cmd.batch_commands();
        let result = match &self.mode {
            Mode::Real => self.run_process(cmd, &line).await,
            Mode::Scripted(script) if !batch.is_empty() => self.run_scripted_batch(script, &line, &batch, cmd.batch_forced()).await,
            Mode::Scripted(script) => self.run_scripted(script, &line).await,
        };
        if let Some(observer) = &self.observer {
            observer.command_done(tool_of(cmd), CommandOutcome::of(&result), start.elapsed());
        }
        if let Some(r) = &self.records {
            let record = Record { line: line.clone(), mutating: cmd.mutating, ok: result.is_ok(), batch, process: true };
            r.lock().unwrap_or_else(|e| e.into_inner()).push(record);
        }
        if let Err(e) = &result {
            tracing::debug!(error = %e, "command failed");
        }
        result
    }

    /// Runs `work` on a thread of its own, which ends with it: work that
    /// enters a namespace (`setns` changes only the calling thread) without
    /// starting a process. `line` says what it does, as a command line would
    /// (recorded, and answered by the script in tests, like a command); the
    /// runner's time limit applies. Not a process: the observer is not told.
    pub async fn run_in_thread(&self, line: String, work: impl FnOnce() -> Result<(), String> + Send + 'static) -> Result<(), CmdError> {
        tracing::debug!(work = %line, "run in a thread");
        let result = match &self.mode {
            Mode::Real => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let spawned = std::thread::Builder::new().name("gateway-setns".into()).spawn(move || {
                    let _ = tx.send(work());
                });
                match spawned {
                    Err(source) => Err(CmdError::Spawn { line: line.clone(), source }),
                    Ok(_) => match tokio::time::timeout(self.timeout, rx).await {
                        Err(_) => Err(CmdError::Timeout { line: line.clone(), secs: self.timeout.as_secs() }),
                        Ok(Ok(Ok(()))) => Ok(String::new()),
                        Ok(Ok(Err(stderr))) => Err(CmdError::Failed { line: line.clone(), status: "failed in a thread".into(), stderr }),
                        Ok(Err(_)) => Err(CmdError::Failed {
                            line: line.clone(),
                            status: "failed in a thread".into(),
                            stderr: "the thread panicked".into(),
                        }),
                    },
                }
            }
            Mode::Scripted(script) => self.run_scripted(script, &line).await,
        };
        if let Some(r) = &self.records {
            let record = Record { line: line.clone(), mutating: true, ok: result.is_ok(), batch: Vec::new(), process: false };
            r.lock().unwrap_or_else(|e| e.into_inner()).push(record);
        }
        if let Err(e) = &result {
            tracing::debug!(error = %e, "work in a thread failed");
        }
        result.map(drop)
    }

    async fn run_scripted(&self, script: &Script, line: &str) -> Result<String, CmdError> {
        let reply = script.answer(line);
        if reply.delay > self.timeout {
            tokio::time::sleep(self.timeout).await;
            return Err(CmdError::Timeout { line: line.to_string(), secs: self.timeout.as_secs() });
        }
        tokio::time::sleep(reply.delay).await;
        match reply.status {
            None => Err(CmdError::Spawn { line: line.to_string(), source: std::io::ErrorKind::NotFound.into() }),
            Some(0) => Ok(reply.stdout),
            Some(code) => Err(CmdError::Failed { line: line.to_string(), status: format!("exit status: {code}"), stderr: reply.stderr }),
        }
    }

    /// `ip -batch` as iproute2 runs it: each line answered by the script as
    /// the command it stands for; a failing line's message followed by
    /// `Command failed -:N` on stderr, then the next line only with `-force`.
    async fn run_scripted_batch(&self, script: &Script, line: &str, commands: &[String], force: bool) -> Result<String, CmdError> {
        let (mut stderr, mut took) = (String::new(), Duration::ZERO);
        for (i, command) in commands.iter().enumerate() {
            let reply = script.answer(command);
            took += reply.delay;
            if took > self.timeout {
                tokio::time::sleep(self.timeout.saturating_sub(took - reply.delay)).await;
                return Err(CmdError::Timeout { line: line.to_string(), secs: self.timeout.as_secs() });
            }
            tokio::time::sleep(reply.delay).await;
            if reply.status != Some(0) {
                let said = if reply.status.is_none() { "No such file or directory" } else { reply.stderr.trim() };
                stderr.push_str(&format!("{said}\nCommand failed -:{}\n", i + 1));
                if !force {
                    break;
                }
            }
        }
        if stderr.is_empty() {
            Ok(String::new())
        } else {
            Err(CmdError::Failed { line: line.to_string(), status: "exit status: 1".into(), stderr: stderr.trim().to_string() })
        }
    }

    async fn run_process(&self, cmd: &Cmd, line: &str) -> Result<String, CmdError> {
        let mut command = tokio::process::Command::new(&cmd.program);
        command
            .env_clear()
            .envs(child_environment().iter().map(|(name, value)| (name, value)))
            .args(&cmd.args)
            .stdin(if cmd.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| CmdError::Spawn { line: line.to_string(), source })?;
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(input), Some(mut pipe)) = (&cmd.stdin, stdin) {
                // A failed write shows up as the command's own error below.
                let _ = pipe.write_all(input).await;
            }
        };
        // Feeding stdin is inside the time limit too: a child that stops
        // reading must not hang the reconciler.
        let output = tokio::time::timeout(self.timeout, async { tokio::join!(feed, child.wait_with_output()).1 })
            .await
            .map_err(|_| CmdError::Timeout { line: line.to_string(), secs: self.timeout.as_secs() })?
            .map_err(|source| CmdError::Spawn { line: line.to_string(), source })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            let mut stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            if stderr.is_empty() {
                stderr = String::from_utf8_lossy(&output.stdout).trim().chars().take(2000).collect();
            }
            Err(CmdError::Failed { line: line.to_string(), status: output.status.to_string(), stderr })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_stderr_and_records() {
        let r = Runner::recording(Duration::from_secs(5));
        let out = r.run(&Cmd::new("sh", ["-c", "cat; echo out"]).stdin("in-")).await.unwrap();
        assert_eq!(out, "in-out\n");
        let err = r.run(&Cmd::new("sh", ["-c", "echo boom >&2; exit 3"]).read_only()).await.unwrap_err();
        assert_eq!(err.stderr(), "boom");
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        let rec = r.take_records();
        assert_eq!(rec.len(), 2);
        assert!(rec[0].mutating && rec[0].ok);
        assert!(!rec[1].mutating && !rec[1].ok);
        assert!(r.take_records().is_empty());
    }

    /// Nothing of the daemon's environment reaches a child but PATH (the
    /// test process has plenty: HOME, cargo's CARGO_*, ...).
    #[tokio::test]
    async fn children_get_only_path() {
        assert!(std::env::vars_os().count() > 1);
        let out = Runner::new(Duration::from_secs(5)).run(&Cmd::new("env", Vec::<String>::new())).await.unwrap();
        let names: Vec<&str> = out.lines().filter_map(|l| l.split_once('=').map(|(n, _)| n)).collect();
        assert_eq!(names, ["PATH"], "{out}");
    }

    #[tokio::test]
    async fn times_out() {
        let r = Runner::new(Duration::from_millis(200));
        let err = r.run(&Cmd::new("sleep", ["5"])).await.unwrap_err();
        assert!(matches!(err, CmdError::Timeout { .. }));
    }

    #[tokio::test]
    async fn scripts_answer_by_pattern_once_or_always() {
        let script = Script::new()
            .once("link add", Reply::fail(2, "RTNETLINK answers: File exists"))
            .on("wg show", Reply::ok("dump"))
            .on("nginx", Reply::not_found())
            .on("slow", Reply::ok("").after(Duration::from_secs(5)));
        let r = Runner::scripted(script, Duration::from_millis(100));
        let err = r.run(&Cmd::new("ip", ["link", "add", "x"])).await.unwrap_err();
        assert_eq!(err.kind(), FailureKind::Exists);
        assert_eq!(r.run(&Cmd::new("ip", ["link", "add", "x"])).await.unwrap(), "", "used up: the default answers");
        assert_eq!(r.run(&Cmd::new("wg", ["show", "wg0", "dump"])).await.unwrap(), "dump");
        assert_eq!(r.run(&Cmd::new("wg", ["show", "wg0", "dump"])).await.unwrap(), "dump", "answers every time");
        assert!(matches!(r.run(&Cmd::new("nginx", ["-t"])).await, Err(CmdError::Spawn { .. })));
        assert!(matches!(r.run(&Cmd::new("slow", ["x"])).await, Err(CmdError::Timeout { .. })));
        let rec = r.take_records();
        assert_eq!(rec.iter().filter(|r| r.ok).count(), 3, "{rec:?}");
    }

    #[test]
    fn failures_are_classified_by_what_the_tool_said() {
        let failed = |stderr: &str| CmdError::Failed { line: "x".into(), status: "exit status: 1".into(), stderr: stderr.into() };
        assert_eq!(failed("Cannot find device \"wg1\"").kind(), FailureKind::Missing);
        assert_eq!(failed("Unable to access interface: No such device").kind(), FailureKind::Missing);
        assert_eq!(failed("Cannot remove namespace file \"/run/netns/x\": No such file or directory").kind(), FailureKind::Missing);
        assert_eq!(failed("RTNETLINK answers: File exists").kind(), FailureKind::Exists);
        assert_eq!(failed("RTNETLINK answers: Operation not permitted").kind(), FailureKind::Other);
    }

    #[test]
    fn the_tool_of_a_command() {
        assert_eq!(tool_of(&Cmd::new("/usr/sbin/ip", ["netns", "exec", "ns1", "/usr/bin/wg", "show"])), "wg");
        assert_eq!(tool_of(&Cmd::new("/usr/sbin/ip", ["-n", "ns1", "link"])), "ip");
        assert_eq!(tool_of(&Cmd::new("nginx", ["-t"])), "nginx");
    }

    #[tokio::test]
    async fn the_observer_hears_every_command() {
        #[derive(Default)]
        struct Tally(Mutex<Vec<(String, CommandOutcome)>>);
        impl CommandObserver for Tally {
            fn command_done(&self, program: &str, outcome: CommandOutcome, _: Duration) {
                self.0.lock().unwrap().push((program.to_string(), outcome));
            }
        }
        let tally = Arc::new(Tally::default());
        let script = Script::new().on("fail", Reply::fail(1, "no")).on("gone", Reply::not_found());
        let r = Runner::scripted(script, Duration::from_secs(1)).observed_by(tally.clone());
        let _ = r.run(&Cmd::new("ip", ["ok"])).await;
        let _ = r.run(&Cmd::new("ip", ["netns", "exec", "x", "iptables-save", "fail"])).await;
        let _ = r.run(&Cmd::new("gone", Vec::<String>::new())).await;
        let seen = tally.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                ("ip".to_string(), CommandOutcome::Ok),
                ("iptables-save".to_string(), CommandOutcome::Failed),
                ("gone".to_string(), CommandOutcome::NotStarted)
            ]
        );
    }

    #[tokio::test]
    async fn missing_program() {
        let r = Runner::new(Duration::from_secs(1));
        assert!(matches!(r.run(&Cmd::new("/nonexistent/tool", ["x"])).await, Err(CmdError::Spawn { .. })));
    }
}
