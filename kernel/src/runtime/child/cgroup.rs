//! A cgroup of the kernel's own, where the host lets the kernel make one (issue 13.1, the
//! `kill -9` window).
//!
//! Process groups and the child subreaper (`runtime::child::tree`) find what a cell started while the
//! kernel lives. After a `kill -9` of the kernel, its guard can only end what it saw at its last
//! look (every second) and the members of the groups it saw: a process that left its group
//! (`setsid`) after that look would escape. Cgroup membership cannot be left that way: a
//! process's children are born in its cgroup, whatever they do with sessions and groups. So,
//! where a cgroup hierarchy is writable (root, or a delegated subtree), the kernel makes
//! `carbon-kernel-<pid>` below its current cgroup (so limits and accounting of whatever runs
//! the kernel still apply), and moves *itself* into it, after starting its guard outside it:
//! every process forked from then on is a member from its first instruction, whoever spawns it
//! (a runtime, `%carbon exec`, evcxr's own child), with no window between a spawn and a move.
//! When the kernel is gone the guard kills every member and removes the cgroup.
//!
//! Hierarchies, best first: cgroup v2 (`cgroup.kill` ends every member at once, Linux 5.14+),
//! the v1 freezer (members are frozen, so none forks or exits while it is killed), the v1 pids
//! controller (members killed until none is left). Where none is writable the kernel tracks
//! by process groups alone, and says so (log and `%carbon status`).

use super::sys;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The name of a kernel's cgroup, followed by its pid.
const PREFIX: &str = "carbon-kernel-";

/// How long the guard keeps killing members of a cgroup that is not empty yet (a process that
/// forks while being killed; a member exiting takes a moment to leave `cgroup.procs`). Killing
/// takes milliseconds; this bound only ends a loop that would otherwise never end.
const KILL_BOUND: Duration = Duration::from_secs(5);

/// Pause between two rounds of killing and between two checks that the cgroup is empty.
const KILL_PAUSE: Duration = Duration::from_millis(20);

/// A kind of cgroup hierarchy the kernel can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The unified hierarchy (cgroup v2).
    V2,
    /// cgroup v1 with the freezer controller.
    Freezer,
    /// cgroup v1 with the pids controller.
    Pids,
}

impl Kind {
    /// In words, for the log and `%carbon status`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::V2 => "cgroup v2",
            Kind::Freezer => "cgroup v1 freezer",
            Kind::Pids => "cgroup v1 pids",
        }
    }

    const ALL: [Kind; 3] = [Kind::V2, Kind::Freezer, Kind::Pids];

    fn token(self) -> &'static str {
        match self {
            Kind::V2 => "v2",
            Kind::Freezer => "freezer",
            Kind::Pids => "pids",
        }
    }
}

/// A directory in a cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// Its directory (under the hierarchy's mount point).
    pub dir: PathBuf,
    /// Its hierarchy.
    pub kind: Kind,
}

/// Where each usable hierarchy keeps the current process's cgroup: its mount point joined with
/// the process's path in it (from `/proc/self/mountinfo` and `/proc/self/cgroup`), best first.
fn parents() -> Vec<(Kind, PathBuf)> {
    let (Ok(mounts), Ok(cgroups)) = (
        std::fs::read_to_string("/proc/self/mountinfo"),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        return Vec::new();
    };
    parents_from(&mounts, &cgroups)
}

/// [`parents`] from the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
fn parents_from(mountinfo: &str, cgroup: &str) -> Vec<(Kind, PathBuf)> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        // the process's path in that hierarchy (cgroups(7): "hierarchy-ID:controllers:path",
        // hierarchy 0 with no controllers for v2)
        let path = cgroup.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (id, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            let hit = match kind {
                Kind::V2 => id == "0" && ctrl.is_empty(),
                Kind::Freezer => ctrl.split(',').any(|c| c == "freezer"),
                Kind::Pids => ctrl.split(',').any(|c| c == "pids"),
            };
            hit.then_some(path)
        });
        let Some(path) = path else { continue };
        // its mount (proc(5) mountinfo: root is field 4, mount point 5; after " - ": the
        // filesystem type and the super options, which name a v1 hierarchy's controllers)
        let mount = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let f: Vec<&str> = left.split(' ').collect();
            let mut r = right.split(' ');
            let (fstype, _source, opts) = (r.next()?, r.next()?, r.next().unwrap_or(""));
            let hit = match kind {
                Kind::V2 => fstype == "cgroup2",
                Kind::Freezer => fstype == "cgroup" && opts.split(',').any(|o| o == "freezer"),
                Kind::Pids => fstype == "cgroup" && opts.split(',').any(|o| o == "pids"),
            };
            (hit && f.len() >= 5).then(|| (f[3], f[4]))
        });
        let Some((root, point)) = mount else { continue };
        // octal escapes (spaces in a mount point) are not worth decoding: such a host is skipped
        if point.contains('\\') || path.contains('\n') {
            continue;
        }
        // a mount of a subtree (a container's): the process's path is below its root
        let rel = if root == "/" {
            path
        } else {
            match path.strip_prefix(root) {
                Some(r) if r.is_empty() || r.starts_with('/') => r,
                _ => continue,
            }
        };
        out.push((kind, Path::new(point).join(rel.trim_start_matches('/'))));
    }
    out
}

/// Removes the cgroups of kernels that are gone, left where their guard could not remove them
/// (the guard killed too): empty ones only (`rmdir` refuses the others).
fn remove_stale(parent: &Path) {
    let Ok(dir) = std::fs::read_dir(parent) else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !sys::process_exists(pid) {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// Makes the cgroup of the kernel `pid` in the best writable hierarchy; the reason when none
/// is writable (one line).
pub fn create(pid: u32) -> Result<Cgroup, String> {
    let parents = parents();
    if parents.is_empty() {
        return Err("no cgroup hierarchy is mounted".into());
    }
    let mut why = Vec::new();
    for (kind, parent) in parents {
        remove_stale(&parent);
        let dir = parent.join(format!("{PREFIX}{pid}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(Cgroup { dir, kind }),
            Err(e) => why.push(format!("{}: {e}", parent.display())),
        }
    }
    Err(format!("no writable cgroup ({})", why.join("; ")))
}

/// The hierarchy the kernel would use here, if one is writable (tests; a cgroup is made and
/// removed at once to find out).
#[doc(hidden)]
pub fn available() -> Option<Kind> {
    parents().into_iter().find_map(|(kind, parent)| {
        // not a kernel's name: no kernel takes it for a stale one of its own
        let dir = parent.join(format!("carbon-probe-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        let _ = std::fs::remove_dir(&dir);
        Some(kind)
    })
}

impl Cgroup {
    /// The line that tells the guard of this cgroup (`cgroup KIND DIR`).
    pub fn line(&self) -> String {
        format!("cgroup {} {}", self.kind.token(), self.dir.display())
    }

    /// The cgroup a [`Cgroup::line`] tells of.
    pub fn from_line(line: &str) -> Option<Cgroup> {
        let mut f = line.strip_prefix("cgroup ")?.splitn(2, ' ');
        let (token, dir) = (f.next()?, f.next()?);
        let kind = Kind::ALL.into_iter().find(|k| k.token() == token)?;
        // only a kernel's cgroup: the guard never empties anything else
        let name = Path::new(dir).file_name()?.to_str()?;
        name.strip_prefix(PREFIX)?.parse::<u32>().ok()?;
        Some(Cgroup {
            dir: PathBuf::from(dir),
            kind,
        })
    }

    /// Moves process `pid` (all its threads) into this cgroup.
    pub fn enter(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// The pids in this cgroup now.
    pub fn members(&self) -> Vec<u32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills every member (bounded by `KILL_BOUND`), then removes the cgroup. Returns how
    /// many processes were killed: the members found before the kill, and any that joined
    /// (forked) later and were signalled by pid.
    pub fn kill_and_remove(&self) -> usize {
        let end = Instant::now() + KILL_BOUND;
        // Counted before the kill: cgroup.kill may end them all before the loop below reads
        // the members, which then signals none (the count said 0 for a killed group).
        let mut killed: std::collections::HashSet<u32> = self.members().into_iter().collect();
        if self.kind == Kind::V2 {
            // cgroups(7) v2: writing 1 to cgroup.kill SIGKILLs every process in the subtree,
            // including those forking meanwhile (absent before Linux 5.14: then by pid)
            let _ = std::fs::write(self.dir.join("cgroup.kill"), "1");
        }
        let frozen = self.kind == Kind::Freezer && self.freeze(end);
        loop {
            let members = self.members();
            if members.is_empty() {
                break;
            }
            for &p in &members {
                sys::signal_pid(p, libc::SIGKILL);
            }
            killed.extend(members);
            if frozen {
                // a frozen process dies of its SIGKILL once thawed
                let _ = std::fs::write(self.dir.join("freezer.state"), "THAWED");
            }
            if Instant::now() > end {
                break;
            }
            std::thread::sleep(KILL_PAUSE);
        }
        // a killed member takes a moment to leave: rmdir fails with EBUSY until then
        while std::fs::remove_dir(&self.dir).is_err() && self.dir.exists() {
            if Instant::now() > end {
                log::warn!("cannot remove {}", self.dir.display());
                break;
            }
            std::thread::sleep(KILL_PAUSE);
        }
        killed.len()
    }

    /// Freezes the members (v1 freezer), waiting until they are (bounded by `end`).
    fn freeze(&self, end: Instant) -> bool {
        let state = self.dir.join("freezer.state");
        if std::fs::write(&state, "FROZEN").is_err() {
            return false;
        }
        // "FREEZING" until every member is frozen (cgroup-v1/freezer-subsystem.rst)
        while std::fs::read_to_string(&state).is_ok_and(|s| s.trim() != "FROZEN") {
            if Instant::now() > end {
                break;
            }
            std::thread::sleep(KILL_PAUSE);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V1: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
33 25 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
34 33 0:29 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw
40 33 0:35 / /sys/fs/cgroup/freezer rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,freezer
45 33 0:40 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:22 - cgroup cgroup rw,cpu,cpuacct
46 33 0:41 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:23 - cgroup cgroup rw,pids
";

    #[test]
    fn the_guard_reads_back_the_line_it_is_told() {
        for kind in Kind::ALL {
            let c = Cgroup {
                dir: PathBuf::from(format!("/sys/fs/cgroup/x y/{PREFIX}42")),
                kind,
            };
            assert_eq!(Cgroup::from_line(&c.line()), Some(c));
        }
        assert_eq!(Cgroup::from_line("cgroup v2 /sys/fs/cgroup"), None);
        assert_eq!(Cgroup::from_line("cgroup v3 /x/carbon-kernel-1"), None);
        assert_eq!(Cgroup::from_line("hello"), None);
    }

    #[test]
    fn hierarchies_are_found_from_mountinfo_and_the_process_cgroup() {
        let cg = "12:pids:/user.slice/user-1000.slice\n6:freezer:/\n4:cpu,cpuacct:/user.slice\n0::/user.slice/session-2.scope\n";
        let p = parents_from(MOUNTINFO_V1, cg);
        assert_eq!(
            p,
            vec![
                (
                    Kind::V2,
                    PathBuf::from("/sys/fs/cgroup/unified/user.slice/session-2.scope")
                ),
                (Kind::Freezer, PathBuf::from("/sys/fs/cgroup/freezer")),
                (
                    Kind::Pids,
                    PathBuf::from("/sys/fs/cgroup/pids/user.slice/user-1000.slice")
                ),
            ]
        );
        // v2 alone, mounted at /sys/fs/cgroup
        let mi = "30 25 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            parents_from(mi, "0::/system.slice/jupyter.service\n"),
            vec![(
                Kind::V2,
                PathBuf::from("/sys/fs/cgroup/system.slice/jupyter.service")
            )]
        );
        // a container's mount of a subtree: the path is below the mount's root, else skipped
        let mi = "40 33 0:35 /docker/abc /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
        assert_eq!(
            parents_from(mi, "8:pids:/docker/abc/inner\n"),
            vec![(Kind::Pids, PathBuf::from("/sys/fs/cgroup/pids/inner"))]
        );
        assert!(parents_from(mi, "8:pids:/docker/abcdef\n").is_empty());
        // nothing mounted
        assert!(parents_from("", "0::/\n").is_empty());
    }

    #[test]
    fn a_cgroup_where_available_holds_what_is_forked_in_it_and_is_removed() {
        // needs a writable hierarchy (root, or a delegated subtree): each one found is tried
        let mut tried = 0;
        for (kind, parent) in parents() {
            let cg = Cgroup {
                dir: parent.join(format!("carbon-test-{}", std::process::id())),
                kind,
            };
            if std::fs::create_dir(&cg.dir).is_err() {
                continue;
            }
            tried += 1;
            // the shell forks only once it is in the cgroup (it waits for a line first)
            let mut c = std::process::Command::new("sh")
                .args(["-c", "read x; setsid sleep 30 & sleep 30"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            cg.enter(c.id()).unwrap();
            assert_eq!(cg.members(), vec![c.id()], "{kind:?}");
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"go\n").unwrap();
            let end = Instant::now() + Duration::from_secs(10);
            while cg.members().len() < 2 && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            let members = cg.members();
            assert!(members.len() >= 2, "{kind:?}: {members:?}");
            let n = cg.kill_and_remove();
            let _ = c.wait();
            assert!(n >= 1, "{kind:?}: {n}");
            assert!(!cg.dir.exists(), "{} is removed", cg.dir.display());
            for p in members {
                let end = Instant::now() + Duration::from_secs(10);
                while sys::process_exists(p) && !is_zombie(p) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
                assert!(
                    !sys::process_exists(p) || is_zombie(p),
                    "{kind:?}: {p} lives"
                );
            }
        }
        if tried == 0 {
            eprintln!("SKIP: no writable cgroup here");
        }
    }

    fn is_zombie(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| Some(t[t.rfind(')')? + 1..].trim_start().starts_with('Z')))
            .unwrap_or(true)
    }
}
