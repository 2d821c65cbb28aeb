//! Reads of /proc and /sys that cost no process.

use std::collections::BTreeSet;
use std::path::Path;

pub fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

/// Whether a link's `flags` in sysfs (`/sys/class/net/NAME`) say it is up.
pub fn link_up(dir: &Path) -> bool {
    read_trimmed(&dir.join("flags")).and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok()).is_some_and(|f| f & 1 == 1)
}

/// The fields of `/proc/PID/stat` the gateway needs.
pub struct ProcStat {
    pub comm: String,
    pub state: String,
    pub ppid: Option<u32>,
}

impl ProcStat {
    /// `pid (comm) state ppid ...`; comm may hold spaces and parentheses, so
    /// the fields after it are split from the last ')'.
    pub fn parse(stat: &str) -> Option<Self> {
        let (head, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        Some(ProcStat {
            comm: head.split_once('(')?.1.to_string(),
            state: fields.next()?.to_string(),
            ppid: fields.next().and_then(|p| p.parse().ok()),
        })
    }

    pub fn read(proc_dir: &Path) -> Option<Self> {
        ProcStat::parse(&std::fs::read_to_string(proc_dir.join("stat")).ok()?)
    }

    /// Running (not a zombie or dead).
    pub fn alive(&self) -> bool {
        self.state != "Z" && self.state != "X"
    }
}

/// Children of a process, from /proc (no process spawned).
pub fn children_of(parent: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if ProcStat::read(&e.path()).and_then(|s| s.ppid) == Some(parent) {
            out.insert(pid);
        }
    }
    out
}

/// How many inotify instances the processes of user `uid` hold (each fd
/// that is `anon_inode:inotify`): the figure `fs.inotify.max_user_instances`
/// limits. Scans /proc: for error messages, not for every pass.
pub fn inotify_instances_of_uid(uid: u32) -> usize {
    use std::os::unix::fs::MetadataExt;
    let mut count = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let owned = e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
            && std::fs::metadata(e.path()).is_ok_and(|m| m.uid() == uid);
        if !owned {
            continue;
        }
        for fd in std::fs::read_dir(e.path().join("fd")).into_iter().flatten().flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:inotify") {
                count += 1;
            }
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_names() {
        let s = ProcStat::parse("4242 (nginx: master (x)) S 1 4242 4242 0 -1").unwrap();
        assert_eq!((s.comm.as_str(), s.state.as_str(), s.ppid), ("nginx: master (x)", "S", Some(1)));
        assert!(s.alive());
        assert!(!ProcStat::parse("7 (nginx) Z 1").unwrap().alive());
        assert!(ProcStat::parse("garbage").is_none());
    }

    #[test]
    fn this_process_is_a_child_of_its_parent() {
        let me = std::process::id();
        let parent = ProcStat::read(Path::new(&format!("/proc/{me}"))).and_then(|s| s.ppid).unwrap();
        assert!(children_of(parent).contains(&me));
    }
}
