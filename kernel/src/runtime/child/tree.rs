//! Every process a cell starts, found and ended (issue 13.1): nothing outlives its cell's
//! interrupt or timeout, or the kernel's shutdown.
//!
//! How processes are found:
//!
//! * each runtime (the Python driver, the JShell helper, evcxr's child) and each `%carbon exec`
//!   program leads its own process group and is *claimed* (registered here by the pid the kernel
//!   waits for);
//! * the kernel is a child subreaper (`PR_SET_CHILD_SUBREAPER`, [`become_subreaper`]): a process
//!   whose parent exits (`sh -c 'x &'`, a double fork, a `setsid` daemon) is reparented to the
//!   kernel instead of init, so it stays findable. Such an *orphan* is a child of the kernel that
//!   nobody claimed and that is not in the kernel's own process group (the children that
//!   libraries start for the kernel itself, such as evcxr's cargo, stay in the kernel's group and
//!   are never touched here);
//! * a cell's processes are the descendants of the claimed processes (not those processes
//!   themselves: a runtime keeps its state across an interrupt), plus the orphans and theirs.
//!
//! Reaping: orphans that end become zombies of the kernel. [`reap_orphans`] waits for exactly
//! those (by pid, never `waitpid(-1)`), so the exit status of a child that a
//! `std::process::Child` waits for is never stolen.

use super::{cgroup, sys};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How often the reaper thread looks for ended orphans (a zombie costs only a pid slot, so a
/// second is plenty; it scans `/proc` once per look).
const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// `/proc/<pid>/cmdline` fragments of processes a runtime needs and that are not the cell's:
/// JShell's remote execution agent (`--engine jdi` runs the user's code in a second JVM, the
/// helper's child, which holds the session's state).
const PROTECTED_CMDLINE: &[&str] = &["jdk.jshell.execution.RemoteExecutionControl"];

fn claimed() -> &'static Mutex<HashSet<u32>> {
    static CLAIMED: OnceLock<Mutex<HashSet<u32>>> = OnceLock::new();
    CLAIMED.get_or_init(Default::default)
}

/// Registers `pid`, a child of the kernel that some code waits for (a `std::process::Child`):
/// it is neither reaped nor taken for an orphan here.
pub fn claim(pid: u32) {
    claimed()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid);
}

/// Forgets a claimed pid once its owner has reaped it.
pub fn release(pid: u32) {
    claimed()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid);
}

fn claimed_now() -> HashSet<u32> {
    claimed().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// How long the kernel waits, starting, for its guard and its cgroup to be set up (a fork, an
/// exec and a few writes to cgroupfs: milliseconds); past it, the kernel goes on and the rest
/// happens meanwhile (processes started before the move are then not in the cgroup).
const SETUP_BOUND: Duration = Duration::from_secs(5);

fn tracking_slot() -> &'static Mutex<String> {
    static T: OnceLock<Mutex<String>> = OnceLock::new();
    T.get_or_init(|| Mutex::new("process groups (the kernel is not set up yet)".into()))
}

/// How the kernel tracks the processes that cells start, in words (`%carbon status`).
pub fn tracking() -> String {
    tracking_slot()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

fn set_tracking(t: String) {
    log::info!("process tracking: {t}");
    *tracking_slot().lock().unwrap_or_else(|e| e.into_inner()) = t;
}

/// Makes the kernel a child subreaper and starts the thread that reaps its orphans. Returns
/// false where the system refuses (then orphans go to init as before).
///
/// The same thread starts the guard (see [`run_guard`]): a child of that thread, not of the main
/// one, so the main thread's `children` list shows the runtimes only. Then, where a cgroup
/// hierarchy is writable, it moves the kernel into a cgroup of its own (see the `cgroup`
/// module) and tells the guard; this returns once that is done (bounded), so every runtime
/// starts inside.
pub fn become_subreaper() -> bool {
    let reaper = sys::set_child_subreaper();
    if !reaper {
        log::warn!("cannot become a child subreaper: orphaned cell processes go to init");
    }
    let (ready, set_up) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("carbon-reaper".into())
        .spawn(move || {
            let guard = start_guard();
            set_tracking(track(guard, reaper));
            let _ = ready.send(());
            loop {
                std::thread::sleep(REAP_INTERVAL);
                if reaper {
                    reap_orphans();
                }
            }
        });
    match spawned {
        Ok(_) => {
            let _ = set_up.recv_timeout(SETUP_BOUND);
        }
        Err(e) => log::warn!("cannot start the orphan reaper: {e}"),
    }
    reaper
}

/// Sets up the kernel's cgroup where one can be made (the guard, outside it, is told where it
/// is); returns the tracking in use, in words.
fn track(guard: Option<std::process::ChildStdin>, reaper: bool) -> String {
    let groups = if reaper {
        "process groups and child subreaper"
    } else {
        "process groups"
    };
    let Some(mut guard) = guard else {
        return format!(
            "{groups} (no guard process: a kill -9 of the kernel ends only its runtimes)"
        );
    };
    let me = std::process::id();
    // the guard first learns of the cgroup (an empty one it just removes if the kernel dies
    // before entering), so no cgroup the kernel is in is left without someone to remove it
    let said = cgroup::create(me).and_then(|cg| {
        use std::io::Write;
        let entered = writeln!(guard, "{}", cg.line())
            .and_then(|()| guard.flush())
            .map_err(|e| format!("the guard was not told of the cgroup: {e}"))
            .and_then(|()| {
                cg.enter(me)
                    .map_err(|e| format!("cannot enter {}: {e}", cg.dir.display()))
            });
        match entered {
            Ok(()) => Ok(format!(
                "{} {} (a kill -9 of the kernel ends all it started), and {groups}",
                cg.kind.name(),
                cg.dir.display()
            )),
            Err(why) => {
                let _ = std::fs::remove_dir(&cg.dir);
                Err(why)
            }
        }
    });
    // The write end lives as long as the kernel (closed by the kernel's death, any death).
    // std pipes are close-on-exec: no child inherits it.
    std::mem::forget(guard);
    said.unwrap_or_else(|why| format!("{groups} ({why}; a process that leaves its group within a second before a kill -9 of the kernel can escape)"))
}

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: u32,
    ppid: u32,
    pgid: u32,
    zombie: bool,
}

/// Every process of the system (those that vanish meanwhile are skipped).
fn scan() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(p) = parse_stat(pid, &text)
        {
            out.push(p);
        }
    }
    out
}

/// `root` and its descendants, from the `children` files of each thread (proc(5),
/// `/proc/<pid>/task/<tid>/children`): far cheaper than reading every process of the system,
/// for the looks taken every second. `None` where the kernel does not provide those files.
fn tree_of(root: u32) -> Option<Vec<Proc>> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    let mut seen = HashSet::new();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(p) = parse_stat(pid, &text) else {
            continue;
        };
        out.push(p);
        let tasks = match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(t) => t,
            Err(_) if pid == root => return None,
            Err(_) => continue,
        };
        for t in tasks.flatten() {
            let kids = match std::fs::read_to_string(t.path().join("children")) {
                Ok(k) => k,
                Err(_) if pid == root => return None,
                Err(_) => continue,
            };
            stack.extend(
                kids.split_ascii_whitespace()
                    .filter_map(|k| k.parse::<u32>().ok()),
            );
        }
    }
    Some(out)
}

/// State, ppid and pgid from a stat line (proc(5): fields 3–5, counted after the last `)`,
/// since the command name may hold spaces and parentheses).
fn parse_stat(pid: u32, text: &str) -> Option<Proc> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgid = f.next()?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        pgid,
        zombie: state == "Z" || state == "X",
    })
}

fn own_pgid(procs: &[Proc], me: u32) -> Option<u32> {
    procs.iter().find(|p| p.pid == me).map(|p| p.pgid)
}

/// The kernel's orphans in `procs`: its children that nobody claimed and that are outside its
/// own process group.
fn orphans(procs: &[Proc], me: u32, claimed: &HashSet<u32>) -> Vec<Proc> {
    let Some(mine) = own_pgid(procs, me) else {
        return Vec::new();
    };
    procs
        .iter()
        .filter(|p| p.ppid == me && p.pgid != mine && !claimed.contains(&p.pid))
        .copied()
        .collect()
}

/// Every descendant of `roots` in `procs` (not the roots themselves).
fn descendants(procs: &[Proc], roots: &[u32]) -> Vec<u32> {
    let mut kids: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        kids.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = Vec::new();
    let mut stack: Vec<u32> = roots.to_vec();
    let mut seen: HashSet<u32> = roots.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        for &c in kids.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(c) {
                out.push(c);
                stack.push(c);
            }
        }
    }
    out
}

fn protected(pid: u32) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let cmd = String::from_utf8_lossy(&cmd);
    PROTECTED_CMDLINE.iter().any(|p| cmd.contains(p))
}

/// Waits for the kernel's orphans that have ended (zombies nobody claimed), by pid.
pub fn reap_orphans() {
    let me = std::process::id();
    let procs = tree_of(me).unwrap_or_else(scan);
    for p in orphans(&procs, me, &claimed_now()) {
        if p.zombie {
            sys::reap_pid(p.pid);
        }
    }
}

/// The processes of the cell: descendants of the claimed processes (a runtime's own helpers
/// such as JShell's agent excepted, with their descendants), the kernel's orphans and theirs.
pub fn cell_processes() -> Vec<u32> {
    let me = std::process::id();
    let procs = scan();
    let claimed = claimed_now();
    let roots: Vec<u32> = procs
        .iter()
        .filter(|p| p.ppid == me && claimed.contains(&p.pid))
        .map(|p| p.pid)
        .collect();
    let mut keep: Vec<u32> = roots.clone();
    let spared: Vec<u32> = descendants(&procs, &roots)
        .into_iter()
        .filter(|&p| protected(p))
        .collect();
    keep.extend(&spared);
    let mut out: Vec<u32> = descendants(&procs, &keep)
        .into_iter()
        .filter(|p| !spared.contains(p))
        .collect();
    let lost: Vec<u32> = orphans(&procs, me, &claimed)
        .into_iter()
        .filter(|p| !p.zombie)
        .map(|p| p.pid)
        .collect();
    out.extend(descendants(&procs, &lost));
    out.extend(lost);
    let zombies: HashSet<u32> = procs.iter().filter(|p| p.zombie).map(|p| p.pid).collect();
    out.retain(|p| !zombies.contains(p));
    out
}

/// SIGKILLs every process of the cell ([`cell_processes`]), twice over a short while so that a
/// process forked by one being killed is caught too. Returns how many were signalled.
pub fn end_cell_processes() -> usize {
    let mut n = 0;
    for _ in 0..3 {
        let pids = cell_processes();
        if pids.is_empty() {
            break;
        }
        for &p in &pids {
            sys::signal_pid(p, libc::SIGKILL);
        }
        n += pids.len();
        std::thread::sleep(Duration::from_millis(20));
    }
    if n > 0 {
        log::info!("ended {n} process(es) the cell had started");
        reap_orphans();
    }
    n
}

/// At shutdown: SIGKILLs every descendant of the kernel (runtimes included) but its guard
/// (which removes the kernel's cgroup once the kernel has exited, and guards a kernel that
/// restarts in place), then reaps its orphans.
pub fn end_all_processes() {
    let me = std::process::id();
    let guard = GUARD.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        let procs = scan();
        let all: Vec<u32> = descendants(&procs, &[me])
            .into_iter()
            .filter(|&p| p != guard)
            .filter(|p| procs.iter().any(|q| q.pid == *p && !q.zombie))
            .collect();
        if all.is_empty() {
            break;
        }
        for p in all {
            sys::signal_pid(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    reap_orphans();
}

/// Start time (clock ticks after boot, proc(5) field 22) of `pid`: with the pid, it names one
/// process for good (a pid can be reused, the pair cannot).
fn start_time(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The guard's pid (0: none).
static GUARD: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// How often the guard looks at the kernel's process tree.
const GUARD_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the guard: a second process (this binary's hidden `guard` command, in its own
/// process group, without a parent-death signal) that survives a `kill -9` of the kernel and
/// then ends what the kernel had started. A dead kernel's runtimes die by their parent-death
/// signal, but their children would be reparented to init and run on; the guard knows them
/// from its last look at the tree, and every member of the kernel's cgroup when it has one. It
/// learns of the cgroup from a line on its stdin and of the kernel's death from the end of its
/// stdin, whose other end (returned) only the kernel holds.
fn start_guard() -> Option<std::process::ChildStdin> {
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("guard")
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    match cmd.spawn() {
        Ok(mut child) => {
            claim(child.id());
            GUARD.store(child.id(), std::sync::atomic::Ordering::SeqCst);
            let w = child.stdin.take();
            std::mem::forget(child);
            w
        }
        Err(e) => {
            log::warn!("cannot start the process guard: {e}");
            None
        }
    }
}

/// What the guard hears from the kernel.
enum Told {
    /// The kernel's cgroup.
    Cgroup(cgroup::Cgroup),
    /// Its stdin ended: the kernel is gone.
    Gone,
}

/// The guard's loop (see `start_guard`): every `GUARD_INTERVAL`, remember the kernel's
/// descendants and their process groups; when stdin ends (the kernel is gone), kill every
/// member of the kernel's cgroup (and remove it), then SIGKILL those it remembers still alive
/// (same pid and start time) and every member of their groups.
pub fn run_guard(kernel: u32) {
    let (tx, rx) = std::sync::mpsc::channel::<Told>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Some(c) = cgroup::Cgroup::from_line(&line) {
                let _ = tx.send(Told::Cgroup(c));
            }
        }
        let _ = tx.send(Told::Gone);
    });
    let me = std::process::id();
    let mut known: Vec<(u32, u64, u32)> = Vec::new();
    let mut cg: Option<cgroup::Cgroup> = None;
    loop {
        let procs = tree_of(kernel).unwrap_or_else(scan);
        let kernel_group = own_pgid(&procs, kernel);
        match rx.recv_timeout(GUARD_INTERVAL) {
            Ok(Told::Cgroup(c)) => cg = Some(c),
            Ok(Told::Gone) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        known = descendants(&procs, &[kernel])
            .into_iter()
            .filter(|&p| p != me)
            .filter_map(|p| {
                let g = procs.iter().find(|q| q.pid == p)?.pgid;
                Some((p, start_time(p)?, g))
            })
            .collect();
        if let Some(g) = kernel_group {
            // the kernel's own group is the front-end's business (and the guard's parent's)
            for k in known.iter_mut() {
                if k.2 == g {
                    k.2 = 0;
                }
            }
        }
    }
    if let Some(c) = &cg {
        // every process the kernel forked since it entered, whatever its group or session
        c.kill_and_remove();
    }
    for _ in 0..3 {
        let mut n = 0;
        for &(pid, start, _) in &known {
            if start_time(pid) == Some(start) {
                sys::signal_pid(pid, libc::SIGKILL);
                n += 1;
            }
        }
        let groups: HashSet<u32> = known.iter().map(|k| k.2).filter(|&g| g > 1).collect();
        for p in scan() {
            if groups.contains(&p.pgid) && p.pid != me && !p.zombie {
                sys::signal_pid(p.pid, libc::SIGKILL);
                n += 1;
            }
        }
        if n == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, ppid: u32, pgid: u32) -> Proc {
        Proc {
            pid,
            ppid,
            pgid,
            zombie: false,
        }
    }

    #[test]
    fn the_tree_from_children_files_finds_grandchildren() {
        let Some(_) = tree_of(std::process::id()) else {
            return; // no children files on this system: the full scan is used instead
        };
        let mut c = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let me = std::process::id();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let (mut fast, mut full) = (Vec::new(), Vec::new());
        while std::time::Instant::now() < deadline {
            full = descendants(&scan(), &[c.id()]);
            fast = tree_of(me)
                .unwrap_or_default()
                .iter()
                .map(|p| p.pid)
                .collect();
            if !full.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in &full {
            sys::signal_pid(*p, libc::SIGKILL);
        }
        let _ = c.kill();
        let _ = c.wait();
        assert!(!full.is_empty(), "the sleep did not start");
        assert!(fast.contains(&c.id()), "{fast:?}");
        assert!(
            full.iter().all(|p| fast.contains(p)),
            "{fast:?} vs {full:?}"
        );
    }

    #[test]
    fn stat_lines_with_odd_names_parse() {
        let l = "42 (a) b (c)) S 7 42 42 0 -1 4194560 0 0";
        let p = parse_stat(42, l).unwrap();
        assert_eq!((p.ppid, p.pgid, p.zombie), (7, 42, false));
        assert!(parse_stat(1, "1 (x) Z 0 1 1").unwrap().zombie);
        assert!(parse_stat(1, "garbage").is_none());
    }

    #[test]
    fn orphans_are_unclaimed_children_outside_the_kernels_group() {
        // kernel 10 (group 10); 11 runtime (claimed, own group); 12 cargo (kernel's group);
        // 13 an orphan from the runtime's group; 14 its child; 15 the runtime's child
        let procs = [
            p(10, 1, 10),
            p(11, 10, 11),
            p(12, 10, 10),
            p(13, 10, 11),
            p(14, 13, 11),
            p(15, 11, 11),
        ];
        let claimed: HashSet<u32> = [11].into();
        let o: Vec<u32> = orphans(&procs, 10, &claimed)
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(o, vec![13]);
        let mut d = descendants(&procs, &[11]);
        d.sort();
        assert_eq!(d, vec![15]);
        let mut all = descendants(&procs, &[10]);
        all.sort();
        assert_eq!(all, vec![11, 12, 13, 14, 15]);
    }
}
