//! Child-process plumbing shared by the runtimes that run a language in a child (Python, Java).
//!
//! * [`spawn`]: starts a [`Command`] in the kernel's process group, with `PR_SET_PDEATHSIG` so the
//!   child dies with the kernel, optionally handing one extra pipe to the child as fd 3.
//! * [`Supervised`]: a spawned child with its pid, signals, bounded waits and a description of how it
//!   ended ("killed by signal 9 (SIGKILL) — possibly the OOM killer").
//! * [`read_chunks`] / [`read_lines`]: reader threads that hand a pipe's bytes or lines to a callback.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One spawn request for the spawner thread.
struct SpawnJob {
    cmd: Command,
    fd3: Option<OwnedFd>,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits (prctl(2)), not the
/// process. Runtimes may be driven from pooled threads that come and go, so every spawn happens
/// on one thread that lives as long as the kernel.
fn spawner() -> &'static Mutex<mpsc::Sender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("carbon-spawner".into())
            .spawn(move || {
                for mut job in rx {
                    let res = spawn_here(&mut job.cmd, job.fd3.take());
                    let _ = job.reply.send(res);
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(tx)
    })
}

fn spawn_here(cmd: &mut Command, fd3: Option<OwnedFd>) -> io::Result<Child> {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let parent = unsafe { libc::getpid() };
    let fd3_raw = fd3.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (prctl, getppid, dup2, fcntl); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The kernel may have died between fork and prctl: then nobody would signal us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            if let Some(fd) = fd3_raw {
                if fd == 3 {
                    // dup2 onto itself keeps FD_CLOEXEC: clear it by hand.
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(fd3); // the parent's copy of the child's end
    child
}

/// Spawns `cmd` (in the kernel's process group, so jupyter_client's kill of the group reaches it)
/// with `PR_SET_PDEATHSIG = SIGKILL`. `fd3`, if given, becomes the child's fd 3 (e.g. the write
/// end of a protocol pipe); the parent's copy is closed once the child runs.
pub fn spawn(cmd: Command, fd3: Option<OwnedFd>) -> io::Result<Child> {
    let (reply, rx) = mpsc::channel();
    let job = SpawnJob { cmd, fd3, reply };
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Looks `name` up like a shell: a path with a slash is taken as is, else each `PATH` entry.
pub fn find_executable(name: &OsStr) -> Option<PathBuf> {
    let p = PathBuf::from(name);
    if name.to_string_lossy().contains('/') {
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|c| is_executable(c))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Name of a Linux signal number (signal(7), x86/ARM numbering).
pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

/// How a child ended, in words. `oom_killed`: the cgroup's `oom_kill` counter rose meanwhile
/// (see [`oom_kill_count`]), so a SIGKILL was the OOM killer's for sure.
pub fn describe_exit(status: ExitStatus, oom_killed: bool) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    let Some(sig) = status.signal() else {
        return format!("ended: {status}");
    };
    let name = signal_name(sig).unwrap_or("unknown signal");
    let mut s = format!("killed by signal {sig} ({name})");
    match sig {
        9 if oom_killed => s.push_str(" — by the OOM killer (out of memory)"),
        9 => s.push_str(" — possibly the OOM killer"),
        11 | 7 => s.push_str(" — a crash in native code"),
        6 => s.push_str(" — aborted"),
        _ => {}
    }
    if status.core_dumped() {
        s.push_str(", core dumped");
    }
    s
}

/// The `oom_kill` counter of the kernel's cgroup (v2 `memory.events`), when readable. Compared
/// before and after a child's death, it tells an OOM kill from any other SIGKILL.
pub fn oom_kill_count() -> Option<u64> {
    let cg = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // cgroup v2 line: "0::/some/path" (cgroups(7))
    let rel = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let path = format!("/sys/fs/cgroup{}/memory.events", rel.trim_end());
    let events = std::fs::read_to_string(path).ok()?;
    events
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// A spawned child under the kernel's watch.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    oom_before: Option<u64>,
    status: Option<ExitStatus>,
}

impl Supervised {
    /// Wraps a spawned child (records the cgroup's OOM counter now).
    pub fn new(child: Child) -> Self {
        Self {
            child,
            oom_before: oom_kill_count(),
            status: None,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child (to take its pipes).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Sends `sig` unless the child was already reaped (a reaped pid may belong to someone else).
    pub fn signal(&mut self, sig: i32) {
        if self.try_wait().is_none() {
            signal_pid(self.pid(), sig);
        }
    }

    /// The exit status if the child has ended (non-blocking; remembered once seen).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for the child to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL and reap. Returns the status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(s) = self.try_wait() {
            return Some(s);
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        self.status
    }

    /// How the child ended, in words (waits briefly for it: its pipes closing can come first).
    pub fn exit_description(&mut self) -> String {
        match self.wait_timeout(Duration::from_secs(2)) {
            Some(status) => {
                let oom = match (self.oom_before, oom_kill_count()) {
                    (Some(a), Some(b)) => b > a,
                    _ => false,
                };
                describe_exit(status, oom)
            }
            None => "closed its pipes but is still running".to_string(),
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `kill(pid, sig)`, ignoring errors (the process may be gone).
pub fn signal_pid(pid: u32, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Starts a thread that reads `r` in chunks of at most `chunk` bytes and hands each to `f`; at
/// end of file or on a read error `f` gets an empty slice and the thread ends. `f` returns false
/// to stop early.
pub fn read_chunks<R, F>(name: &str, mut r: R, chunk: usize, mut f: F) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(&[u8]) -> bool + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut buf = vec![0u8; chunk];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if !f(&buf[..n]) {
                            return;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            f(&[]);
        })
}

/// Starts a thread that reads `r` line by line (without the newline, invalid UTF-8 replaced) and
/// hands each to `f`; at end of file or on error `f` gets `None`. `f` returns false to stop.
pub fn read_lines<R, F>(name: &str, r: R, mut f: F) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(Option<String>) -> bool + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if !f(Some(String::from_utf8_lossy(&line).into_owned())) {
                            return;
                        }
                    }
                }
            }
            f(None);
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::Stdio;

    #[test]
    fn exit_descriptions_name_the_signal() {
        let s = ExitStatus::from_raw(9);
        assert_eq!(
            describe_exit(s, false),
            "killed by signal 9 (SIGKILL) — possibly the OOM killer"
        );
        assert!(describe_exit(s, true).contains("by the OOM killer"));
        assert!(describe_exit(ExitStatus::from_raw(11), false).contains("SIGSEGV"));
        assert_eq!(
            describe_exit(ExitStatus::from_raw(1 << 8), false),
            "exited with status 1"
        );
    }

    #[test]
    fn fd3_reaches_the_child_and_status_is_described() {
        let (r, w) = std::io::pipe().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello >&3; kill -9 $$"])
            .stdin(Stdio::null());
        let child = spawn(cmd, Some(w.into())).unwrap();
        let mut sup = Supervised::new(child);
        let (tx, rx) = mpsc::channel();
        read_lines("t", r, move |l| tx.send(l).is_ok()).unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("hello"));
        // EOF proves the parent's copy of the write end was closed
        assert_eq!(rx.recv().unwrap(), None);
        assert!(
            sup.exit_description()
                .starts_with("killed by signal 9 (SIGKILL)")
        );
    }

    #[test]
    fn chunks_end_with_an_empty_slice() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (tx, rx) = mpsc::channel();
        read_chunks("t", r, 4, move |b| tx.send(b.to_vec()).is_ok()).unwrap();
        w.write_all(b"abcdef").unwrap();
        drop(w);
        let mut all = Vec::new();
        loop {
            let c = rx.recv().unwrap();
            if c.is_empty() {
                break;
            }
            assert!(c.len() <= 4);
            all.extend(c);
        }
        assert_eq!(all, b"abcdef");
    }

    #[test]
    fn missing_programs_are_not_found() {
        assert!(find_executable(OsStr::new("/nonexistent/python")).is_none());
        assert!(find_executable(OsStr::new("sh")).is_some());
    }
}
