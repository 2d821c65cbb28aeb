//! Reads of /proc and /sys that cost no process.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

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

/// Children of a process from its tasks' `children` files (no scan of
/// every process); where the kernel lacks them, as [`children_of`].
pub fn children_of_quick(parent: u32) -> BTreeSet<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else { return BTreeSet::new() };
    let mut out = BTreeSet::new();
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else { return children_of(parent) };
        out.extend(list.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
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

/// Live processes named `comm` whose first argument is `arg`, from /proc
/// (e.g. the wireguard-go serving one interface: `wireguard-go wg51820`).
pub fn processes_running(comm: &str, arg: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !ProcStat::read(&e.path()).is_some_and(|s| s.comm == comm && s.alive()) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).nth(1) == Some(arg.as_bytes()) {
            out.insert(pid);
        }
    }
    out
}

/// When a process started (field 22 of /proc/PID/stat: clock ticks after
/// boot, boot time included), as wall-clock time.
pub fn started_at(pid: u32) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks: u64 = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()?;
    // SAFETY: sysconf and clock_gettime only write into the timespec given.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let mut boot = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    if hz <= 0 || unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut boot) } != 0 {
        return None;
    }
    let since_boot = Duration::new(boot.tv_sec as u64, boot.tv_nsec as u32);
    let booted = SystemTime::now().checked_sub(since_boot)?;
    Some(booted + Duration::from_secs_f64(ticks as f64 / hz as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_by_name_and_argument_and_their_start() {
        let before = SystemTime::now() - Duration::from_millis(50);
        let mut child = std::process::Command::new("sleep").arg("31.5").spawn().unwrap();
        let pid = child.id();
        assert!(processes_running("sleep", "31.5").contains(&pid));
        assert!(!processes_running("sleep", "31").contains(&pid), "the whole argument");
        assert!(!processes_running("sleepy", "31.5").contains(&pid));
        let started = started_at(pid).unwrap();
        assert!(started >= before && started <= SystemTime::now(), "{started:?} after {before:?}");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!processes_running("sleep", "31.5").contains(&pid), "gone once reaped");
    }

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
        assert!(children_of_quick(parent).contains(&me));
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        assert_eq!(children_of_quick(me), children_of(me), "the same children either way");
        assert!(children_of_quick(me).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!children_of_quick(me).contains(&child.id()), "reaped: gone");
    }
}
