//! The one place that starts processes. Every `ip`, `wg`, `iptables`, `nginx`
//! and `wireguard-go` invocation goes through [`Runner::run`], which logs the
//! command line (never its stdin, which carries keys), bounds its run time,
//! keeps stderr in the error, and can record what ran so tests can count it.

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
    /// Environment variables not passed on.
    env_remove: Vec<&'static str>,
}

impl Cmd {
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            program: program.to_string(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            mutating: true,
            env_remove: Vec::new(),
        }
    }

    /// Marks a command that only reads the system.
    pub fn read_only(mut self) -> Self {
        self.mutating = false;
        self
    }

    pub fn env_remove(mut self, name: &'static str) -> Self {
        self.env_remove.push(name);
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn line(&self) -> String {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
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

impl CmdError {
    pub fn stderr(&self) -> &str {
        match self {
            CmdError::Failed { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// One executed command, as recorded for tests and benchmarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: String,
    pub mutating: bool,
    pub ok: bool,
}

#[derive(Clone)]
pub struct Runner {
    timeout: Duration,
    records: Option<Arc<Mutex<Vec<Record>>>>,
    /// Record commands without running them (unit tests of command sequences).
    dry_run: bool,
}

impl Runner {
    pub fn new(timeout: Duration) -> Self {
        Runner { timeout, records: None, dry_run: false }
    }

    /// A runner that also remembers every command it ran.
    pub fn recording(timeout: Duration) -> Self {
        Runner { timeout, records: Some(Arc::new(Mutex::new(Vec::new()))), dry_run: false }
    }

    /// A runner that records every command and runs none (each "succeeds"
    /// with empty output): for unit tests of what would be run, without root.
    pub fn dry_run() -> Self {
        Runner { dry_run: true, ..Runner::recording(Duration::from_secs(1)) }
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
        let result = if self.dry_run { Ok(String::new()) } else { self.run_inner(cmd, &line).await };
        if let Some(r) = &self.records {
            r.lock().unwrap_or_else(|e| e.into_inner()).push(Record { line: line.clone(), mutating: cmd.mutating, ok: result.is_ok() });
        }
        if let Err(e) = &result {
            tracing::debug!(error = %e, "command failed");
        }
        result
    }

    async fn run_inner(&self, cmd: &Cmd, line: &str) -> Result<String, CmdError> {
        let mut command = tokio::process::Command::new(&cmd.program);
        for name in &cmd.env_remove {
            command.env_remove(name);
        }
        command
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

    #[tokio::test]
    async fn times_out() {
        let r = Runner::new(Duration::from_millis(200));
        let err = r.run(&Cmd::new("sleep", ["5"])).await.unwrap_err();
        assert!(matches!(err, CmdError::Timeout { .. }));
    }

    #[tokio::test]
    async fn missing_program() {
        let r = Runner::new(Duration::from_secs(1));
        assert!(matches!(r.run(&Cmd::new("/nonexistent/tool", ["x"])).await, Err(CmdError::Spawn { .. })));
    }
}
