//! Per-process attribution from a `/proc` tree (injectable root, so tests lay out real-shaped files).
//!
//! A process tree's CPU time is Σ over its live members of `utime + stime + cutime + cstime`
//! (proc_pid_stat(5) fields 14–17, clock ticks): `cutime/cstime` hold the children that were
//! waited for, so children that ran and were reaped during a cell still count, and a child that
//! was alive at the start and reaped before the end moves from the live sum into its parent's
//! `cutime` without being counted twice.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

/// CPU times and memory of one process, from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PidStat {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    /// utime + stime (ticks): this process, all threads.
    pub own_ticks: u64,
    /// cutime + cstime (ticks): reaped children.
    pub child_ticks: u64,
    /// Resident set size, pages.
    pub rss_pages: u64,
}

/// Machine-wide CPU counters from the first line of `/proc/stat` (ticks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineTicks {
    /// user + nice + system + irq + softirq + steal.
    pub busy: u64,
    /// busy + idle + iowait.
    pub total: u64,
}

/// The state of the metered processes at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcSnapshot {
    /// Σ over the tree of own + reaped-children ticks.
    pub tree_ticks: u64,
    /// Machine counters.
    pub machine: MachineTicks,
    /// Σ resident memory of the tree, bytes.
    pub rss_bytes: u64,
    /// Members of the tree (roots and their live descendants).
    pub members: usize,
}

/// Reads `/proc` (or a fake root laid out like it).
#[derive(Debug, Clone)]
pub struct ProcReader {
    root: PathBuf,
    /// Clock ticks per second of the stat files (`sysconf(_SC_CLK_TCK)`, 100 on Linux x86/ARM).
    pub ticks_per_sec: u64,
    /// Bytes per page, for `rss`.
    pub page_size: u64,
}

/// One parsed `/proc/<pid>/stat` line: the numbers, plus the command name and the state letter
/// (borrowed from the text, so the meter's scan of every process allocates nothing for them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatLine<'a> {
    /// The numbers the meter uses.
    pub stat: PidStat,
    /// Field 2 without its parentheses (the executable's name, at most 15 bytes), e.g. `cargo`.
    pub comm: &'a str,
    /// Field 3: `R` running, `S` sleeping, `Z` zombie (exited, not yet reaped), …
    pub state: char,
}

/// Parses one `/proc/<pid>/stat` line. `comm` (field 2) may contain spaces and parentheses, so
/// fields are counted from the *last* `)`.
pub fn parse_stat_line(text: &str) -> Option<StatLine<'_>> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid = text[..open].trim().parse().ok()?;
    let comm = text.get(open + 1..close)?;
    // After ")": field 3 (state) is index 0.
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    // fields 4..=24, as index n - 4; only ppid and the CPU times must be there and parse
    let mut v = [0u64; 21];
    for (i, slot) in v.iter_mut().enumerate() {
        let required = matches!(i + 4, 4 | 14..=17);
        match rest.next().map(str::parse::<u64>) {
            Some(Ok(x)) => *slot = x,
            Some(Err(_)) if required => return None,
            Some(Err(_)) => {}
            None if required => return None,
            None => break,
        }
    }
    let f = |n: usize| v[n - 4];
    Some(StatLine {
        stat: PidStat {
            pid,
            ppid: u32::try_from(f(4)).ok()?,
            own_ticks: f(14) + f(15),
            child_ticks: f(16) + f(17),
            rss_pages: f(24),
        },
        comm,
        state,
    })
}

/// The numbers of one `/proc/<pid>/stat` line (see [`parse_stat_line`]).
pub fn parse_pid_stat(text: &str) -> Option<PidStat> {
    parse_stat_line(text).map(|l| l.stat)
}

/// Parses the `cpu ` line of `/proc/stat`.
pub fn parse_machine(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let g = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is already inside user)
    let busy = g(0) + g(1) + g(2) + g(5) + g(6) + g(7);
    Some(MachineTicks {
        busy,
        total: busy + g(3) + g(4),
    })
}

impl ProcReader {
    /// A reader of `root` (normally `/proc`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            // both from the process's auxiliary vector (AT_CLKTCK, AT_PAGESZ), read safely
            ticks_per_sec: rustix::param::clock_ticks_per_second(),
            page_size: rustix::param::page_size() as u64,
        }
    }

    /// The root read.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the file at `path` into `buf`. Through `take`: `File`'s own `read_to_string` first
    /// asks for the file's size (statx, lseek), two system calls more per file, for files that
    /// say they are empty (procfs), and a meter reads three at each end of a cell.
    fn read_small(path: &Path, buf: &mut String) -> bool {
        buf.clear();
        std::fs::File::open(path).is_ok_and(|f| f.take(u64::MAX).read_to_string(buf).is_ok())
    }

    /// One process's stat, if it exists.
    pub fn pid_stat(&self, pid: u32) -> Option<PidStat> {
        self.stat_line(pid, |l| l.stat)
    }

    /// `f` of one process's parsed stat line (with its name and state), if it exists.
    pub fn stat_line<T>(&self, pid: u32, f: impl FnOnce(StatLine<'_>) -> T) -> Option<T> {
        let mut buf = String::with_capacity(512);
        if Self::read_small(&self.root.join(pid.to_string()).join("stat"), &mut buf) {
            parse_stat_line(&buf).map(f)
        } else {
            None
        }
    }

    /// Machine counters (zeros when `/proc/stat` is unreadable).
    pub fn machine(&self) -> MachineTicks {
        let mut buf = String::with_capacity(4096);
        if Self::read_small(&self.root.join("stat"), &mut buf) {
            parse_machine(&buf).unwrap_or_default()
        } else {
            MachineTicks::default()
        }
    }

    /// Total memory in bytes from `meminfo` (`MemTotal`, kB), if readable.
    pub fn mem_total(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.root.join("meminfo")).ok()?;
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    }

    /// Every process of the root with a pid of at least `min_pid` (one `stat` read each).
    fn all(&self, min_pid: u32) -> Vec<PidStat> {
        let mut out = Vec::with_capacity(256);
        self.for_each_process(min_pid, |l| out.push(l.stat));
        out
    }

    /// Calls `f` with the parsed stat line of every process of the root whose pid is at least
    /// `min_pid` (one `stat` read each; processes that vanish meanwhile are skipped).
    pub fn for_each_process(&self, min_pid: u32, mut f: impl FnMut(StatLine<'_>)) {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return;
        };
        let mut buf = String::with_capacity(512);
        let mut path = self.root.clone();
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(s) = name.to_str() else { continue };
            let Ok(pid) = s.parse::<u32>() else { continue };
            if pid < min_pid {
                continue;
            }
            path.push(s);
            path.push("stat");
            if Self::read_small(&path, &mut buf)
                && let Some(line) = parse_stat_line(&buf)
            {
                f(line);
            }
            path.pop();
            path.pop();
        }
    }

    /// The namespace's last allocated pid (`sys/kernel/ns_last_pid`), if readable.
    fn last_pid(&self) -> Option<u32> {
        let mut buf = String::with_capacity(16);
        if Self::read_small(&self.root.join("sys/kernel/ns_last_pid"), &mut buf) {
            buf.trim().parse::<u32>().ok()
        } else {
            None
        }
    }

    /// Snapshot of `roots` and all their live descendants, plus the machine counters (reads
    /// every process; see [`ProcReader::snapshot_with`] for the cached form).
    pub fn snapshot(&self, roots: &[u32]) -> ProcSnapshot {
        self.snapshot_with(roots, &mut TreeCache::default())
    }

    /// [`ProcReader::snapshot`], remembering in `cache` which processes formed the tree.
    ///
    /// The lowest pid a descendant of `roots` can have is the lowest root's: descendants are
    /// created after their root, so while pid allocation has not wrapped since (the
    /// namespace's last pid is still above the root's) older processes need not be read.
    /// And a process that was not in the tree at the previous snapshot of the same roots
    /// cannot have joined it since (a process is only ever reparented upwards): only the
    /// members found then, and the tasks created since (the pids between the namespace's last
    /// pid then and now, when there are at most [`PROBE_MAX`]), are read. That spares listing
    /// `/proc` and reading every younger process (most of what metering a short cell cost)
    /// for the typical cell, which starts no process or a few. Without
    /// `sys/kernel/ns_last_pid`, after a wrap, or with more new tasks, everything is read.
    pub fn snapshot_with(&self, roots: &[u32], cache: &mut TreeCache) -> ProcSnapshot {
        let machine = self.machine();
        if roots.is_empty() {
            *cache = TreeCache::default();
            return ProcSnapshot {
                machine,
                ..Default::default()
            };
        }
        // Read before looking: a task created after this read is looked up next time.
        let last_pid = self.last_pid();
        let new_tasks = match (cache.last_pid, last_pid) {
            (Some(then), Some(now)) if cache.roots == roots && then <= now => {
                (now - then <= PROBE_MAX).then_some(then + 1..=now)
            }
            _ => None,
        };
        let mut missing = Vec::new();
        let all: Vec<PidStat> = match new_tasks {
            Some(new_tasks) => {
                let mut all: Vec<PidStat> = cache
                    .members
                    .iter()
                    .filter_map(|&p| self.pid_stat(p))
                    .collect();
                let mut tree: HashSet<u32> = roots.iter().copied().collect();
                tree.extend(all.iter().map(|p| p.pid));
                // Ascending: a new process's parent, when new too, has a smaller pid. Pids not
                // found last time are looked up once more: a task is counted in the last pid
                // a moment before it shows in /proc.
                let mut probe: Vec<u32> = cache.missing.clone();
                probe.extend(new_tasks.clone());
                probe.sort_unstable();
                probe.dedup();
                for pid in probe {
                    match self.pid_stat(pid) {
                        None if new_tasks.contains(&pid) => missing.push(pid),
                        None => {}
                        // /proc/<tid> of a thread shows its whole process under the thread's
                        // id and its process's parent: only a process may join
                        Some(st)
                            if tree.contains(&st.ppid)
                                && !tree.contains(&pid)
                                && self.is_process(pid) =>
                        {
                            tree.insert(pid);
                            all.push(st);
                        }
                        Some(_) => {}
                    }
                }
                all
            }
            None => {
                let lowest = roots.iter().copied().min().unwrap_or(0);
                let min_pid = match last_pid {
                    Some(last) if last >= lowest => lowest,
                    _ => 0,
                };
                let all = self.all(min_pid);
                if let Some(last) = last_pid {
                    let seen: HashSet<u32> = all.iter().map(|p| p.pid).collect();
                    missing = (last.saturating_sub(PROBE_MAX).max(min_pid)..=last)
                        .filter(|p| !seen.contains(p))
                        .collect();
                }
                all
            }
        };
        let (snap, members) = self.tree(machine, roots, &all);
        *cache = TreeCache {
            roots: roots.to_vec(),
            last_pid,
            members,
            missing,
        };
        snap
    }

    /// True when `pid` is a process (thread-group leader), not another thread of one.
    fn is_process(&self, pid: u32) -> bool {
        let mut buf = String::with_capacity(1024);
        Self::read_small(&self.root.join(pid.to_string()).join("status"), &mut buf)
            && buf
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
                == Some(pid)
    }

    /// Sums `roots` and their descendants among `all`; also returns the members' pids.
    fn tree(
        &self,
        machine: MachineTicks,
        roots: &[u32],
        all: &[PidStat],
    ) -> (ProcSnapshot, Vec<u32>) {
        let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
        let mut by_pid: HashMap<u32, usize> = HashMap::with_capacity(all.len());
        for (i, p) in all.iter().enumerate() {
            children.entry(p.ppid).or_default().push(i);
            by_pid.insert(p.pid, i);
        }
        let mut seen: HashSet<u32> = HashSet::new();
        let mut members = Vec::new();
        let mut stack: Vec<u32> = roots.to_vec();
        let mut snap = ProcSnapshot {
            machine,
            ..Default::default()
        };
        while let Some(pid) = stack.pop() {
            if !seen.insert(pid) {
                continue;
            }
            if let Some(&i) = by_pid.get(&pid) {
                let p = &all[i];
                snap.tree_ticks += p.own_ticks + p.child_ticks;
                snap.rss_bytes += p.rss_pages * self.page_size;
                snap.members += 1;
                members.push(pid);
            }
            if let Some(kids) = children.get(&pid) {
                stack.extend(kids.iter().map(|&k| all[k].pid));
            }
        }
        (snap, members)
    }
}

/// At most this many tasks created since the previous snapshot are looked up one by one (a
/// pid that is gone costs a failed open, a few µs); with more, `/proc` is listed (~100 µs).
pub const PROBE_MAX: u32 = 24;

/// Which processes formed a tree at the last snapshot, and the namespace's last pid then (see
/// [`ProcReader::snapshot_with`]). Starts empty; a meter keeps one across cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeCache {
    roots: Vec<u32>,
    last_pid: Option<u32>,
    members: Vec<u32>,
    /// Recent pids that were not found (looked up once more next time).
    missing: Vec<u32>,
}

impl TreeCache {
    /// The tree's members at the last snapshot (roots that exist, and their live descendants).
    pub fn members(&self) -> &[u32] {
        &self.members
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stat line with the given fields (1-based numbering as in proc_pid_stat(5)).
    pub(crate) fn stat_line(pid: u32, comm: &str, ppid: u32, ticks: [u64; 4], rss: u64) -> String {
        let mut f: Vec<String> = vec!["0".into(); 52];
        f[0] = pid.to_string();
        f[1] = format!("({comm})");
        f[2] = "S".into();
        f[3] = ppid.to_string();
        for (k, t) in ticks.iter().enumerate() {
            f[13 + k] = t.to_string();
        }
        f[23] = rss.to_string();
        f.join(" ") + "\n"
    }

    #[test]
    fn parses_comm_with_spaces_and_parens() {
        let line = stat_line(42, "my (odd) proc", 7, [10, 5, 3, 2], 100);
        let s = parse_pid_stat(&line).unwrap();
        assert_eq!(
            s,
            PidStat {
                pid: 42,
                ppid: 7,
                own_ticks: 15,
                child_ticks: 5,
                rss_pages: 100
            }
        );
        let l = parse_stat_line(&line).unwrap();
        assert_eq!((l.comm, l.state, l.stat), ("my (odd) proc", 'S', s));
        // a line cut before the CPU times is not a process; a missing rss is 0
        let plain = stat_line(42, "x", 7, [10, 5, 3, 2], 100);
        let fields: Vec<&str> = plain.split(' ').collect();
        assert!(parse_pid_stat(&fields[..16].join(" ")).is_none());
        let short = parse_pid_stat(&fields[..17].join(" ")).unwrap();
        assert_eq!((short.child_ticks, short.rss_pages), (5, 0));
        assert!(parse_pid_stat(&plain.replace(" 7 ", " -7 ")).is_none());
        let m = parse_machine("cpu  10 1 5 100 4 1 1 2 7 0\ncpu0 1 1 1 1 1 1 1 1\n").unwrap();
        assert_eq!(m.busy, 10 + 1 + 5 + 1 + 1 + 2);
        assert_eq!(m.total, m.busy + 104);
    }

    #[test]
    fn tree_includes_descendants_and_reaped_children_only() {
        let d = tempfile::tempdir().unwrap();
        let w = |pid: u32, ppid: u32, t: [u64; 4]| {
            let p = d.path().join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("stat"), stat_line(pid, "x", ppid, t, 10)).unwrap();
        };
        w(100, 1, [10, 10, 5, 0]); // root, 5 ticks of reaped children
        w(101, 100, [3, 1, 0, 0]); // child
        w(102, 101, [2, 0, 0, 0]); // grandchild
        w(200, 1, [999, 0, 0, 0]); // unrelated
        std::fs::write(d.path().join("stat"), "cpu  100 0 50 800 0 0 0 0\n").unwrap();
        let r = ProcReader::new(d.path());
        let s = r.snapshot(&[100]);
        assert_eq!(s.tree_ticks, 25 + 4 + 2);
        assert_eq!(s.members, 3);
        assert_eq!(s.rss_bytes, 30 * r.page_size);
        assert_eq!(s.machine.busy, 150);
        assert_eq!(s.machine.total, 950);
        // a missing root contributes nothing
        assert_eq!(r.snapshot(&[555]).tree_ticks, 0);
    }

    #[test]
    fn older_pids_are_skipped_unless_pids_wrapped() {
        let d = tempfile::tempdir().unwrap();
        let w = |pid: u32, ppid: u32| {
            let p = d.path().join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("stat"), stat_line(pid, "x", ppid, [1, 0, 0, 0], 0)).unwrap();
        };
        w(500, 1);
        w(600, 500);
        w(50, 500); // a child with a smaller pid: only possible after a wrap
        std::fs::create_dir_all(d.path().join("sys/kernel")).unwrap();
        let r = ProcReader::new(d.path());
        std::fs::write(d.path().join("sys/kernel/ns_last_pid"), "700\n").unwrap();
        assert_eq!(r.snapshot(&[500]).members, 2);
        std::fs::write(d.path().join("sys/kernel/ns_last_pid"), "60\n").unwrap();
        assert_eq!(r.snapshot(&[500]).members, 3);
    }

    #[test]
    fn cached_tree_reads_members_and_new_tasks_only() {
        let d = tempfile::tempdir().unwrap();
        let w = |pid: u32, ppid: u32, t: u64| {
            let p = d.path().join(pid.to_string());
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join("stat"), stat_line(pid, "x", ppid, [t, 0, 0, 0], 0)).unwrap();
            std::fs::write(p.join("status"), format!("Name:\tx\nTgid:\t{pid}\n")).unwrap();
        };
        let last = |n: u32| {
            std::fs::write(d.path().join("sys/kernel/ns_last_pid"), format!("{n}\n")).unwrap()
        };
        std::fs::create_dir_all(d.path().join("sys/kernel")).unwrap();
        w(500, 1, 1);
        w(600, 500, 2);
        last(600);
        let r = ProcReader::new(d.path());
        let mut cache = TreeCache::default();
        let s = r.snapshot_with(&[500], &mut cache);
        assert_eq!((s.members, s.tree_ticks), (2, 3));
        // no new task: members are re-read (fresh ticks), /proc is not listed again (a stat
        // file laid out meanwhile without a pid allocation stays unseen, which proves it)
        w(600, 500, 7);
        w(650, 600, 100);
        let s = r.snapshot_with(&[500], &mut cache);
        assert_eq!((s.members, s.tree_ticks), (2, 8));
        // a member reparented away leaves the tree, as with a full scan
        w(600, 1, 7);
        let s = r.snapshot_with(&[500], &mut cache);
        assert_eq!((s.members, s.tree_ticks), (1, 1));
        w(600, 500, 7);
        last(601);
        let s = r.snapshot_with(&[500], &mut cache);
        assert_eq!(s.members, 1, "600 left the tree for good");
        // a few new tasks are looked up: a child and a grandchild join, a thread (its Tgid is
        // its process's) and an unrelated process do not, a pid not shown yet is retried
        w(602, 500, 10);
        w(603, 602, 20);
        w(604, 500, 1000);
        std::fs::write(d.path().join("604/status"), "Tgid:\t602\n").unwrap();
        w(605, 1, 1000);
        last(606);
        let s = r.snapshot_with(&[500], &mut cache);
        assert_eq!((s.members, s.tree_ticks), (3, 31));
        w(606, 603, 5);
        last(606);
        let s = r.snapshot_with(&[500], &mut cache);
        assert_eq!((s.members, s.tree_ticks), (4, 36));
        // many new tasks: everything is listed again (a thread is not listed)
        std::fs::remove_dir_all(d.path().join("604")).unwrap();
        last(606 + PROBE_MAX + 1);
        let s = r.snapshot_with(&[500], &mut cache);
        assert_eq!((s.members, s.tree_ticks), (6, 143));
        assert_eq!(s, r.snapshot(&[500]));
        // other roots: listed again
        let s = r.snapshot_with(&[600], &mut cache);
        assert_eq!((s.members, s.tree_ticks), (2, 107));
    }

    #[test]
    fn real_proc_sees_this_process() {
        let r = ProcReader::new("/proc");
        let s = r.snapshot(&[std::process::id()]);
        assert!(s.members >= 1);
        assert!(s.machine.total > 0);
        assert!(r.mem_total().unwrap() > 0);
    }
}
