//! A spawned child under the kernel's watch: signals, bounded waits, escalation, how it ended.

use super::exit::{describe_exit, oom_kill_count};
use super::{ESCALATION_DELAY, spawn, sys};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How often waits look at the child again.
const POLL: Duration = Duration::from_millis(5);

/// A spawned child under the kernel's watch. Dropping it kills the child (its whole process
/// group when it leads one) and reaps it.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    oom_before: Option<u64>,
    status: Option<ExitStatus>,
    /// The child leads its own process group (pgid = its pid).
    leads_group: bool,
}

impl Supervised {
    /// Wraps a spawned child (records the cgroup's OOM counter now). [`spawn`] makes every
    /// child lead its own process group: stopping it then reaches what it started.
    pub fn new(child: Child) -> Self {
        let leads_group = sys::pgid_of(child.id()) == Some(child.id());
        Self {
            child,
            oom_before: oom_kill_count(),
            status: None,
            leads_group,
        }
    }

    /// Spawns `cmd` (as [`spawn`](super::spawn) does) as the leader of a new process group, so
    /// that [`Supervised::signal_group`] reaches everything it starts and nothing of the kernel.
    pub fn spawn_group(mut cmd: Command) -> io::Result<Self> {
        cmd.process_group(0);
        let child = spawn(cmd, Vec::new())?;
        let mut me = Self::new(child);
        me.leads_group = true;
        Ok(me)
    }

    /// Whether the child leads its own process group.
    pub fn leads_group(&self) -> bool {
        self.leads_group
    }

    /// The child's pid (its process group's id too after [`Supervised::spawn_group`]).
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
            sys::signal_pid(self.pid(), sig);
        }
    }

    /// Sends `sig` to the child's whole process group (the child alone when it leads none),
    /// unless the child was reaped.
    pub fn signal_group(&mut self, sig: i32) {
        if self.status.is_some() {
            return;
        }
        if self.leads_group {
            // an exited but unreaped leader still holds the group's id: no reuse possible
            sys::signal_group(self.pid(), sig);
        } else {
            self.signal(sig);
        }
    }

    /// The exit status if the child has ended (non-blocking; reaps it; remembered once seen).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
            if self.status.is_some() {
                super::release(self.pid());
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the child to end (and reaps it).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether the child has exited, leaving it unreaped: its `/proc/<pid>/stat` still holds its
    /// (and its reaped children's) CPU times, and its pid cannot be reused.
    pub fn has_exited(&self) -> bool {
        self.status.is_some() || sys::exited_unreaped(self.pid())
    }

    /// Waits until the child has exited, without reaping it (see [`Supervised::has_exited`]).
    /// Once `stopping()` returns true (whoever stops the child has sent it a polite signal:
    /// SIGINT, SIGTERM), the child's group gets SIGKILL if it has not ended
    /// [`ESCALATION_DELAY`] later.
    pub fn wait_exited(&mut self, mut stopping: impl FnMut() -> bool) {
        let mut since: Option<Instant> = None;
        while !self.has_exited() {
            std::thread::sleep(POLL);
            if stopping() {
                let t = *since.get_or_insert_with(Instant::now);
                if t.elapsed() >= ESCALATION_DELAY {
                    self.signal_group(libc::SIGKILL);
                }
            }
        }
    }

    /// Reaps the child (waits for it to end).
    pub fn reap(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = self.child.wait()?;
        self.status = Some(s);
        super::release(self.pid());
        Ok(s)
    }

    /// SIGKILL (to the group when the child leads one) and reap. Returns the status.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.leads_group && self.status.is_none() {
            sys::signal_group(self.pid(), libc::SIGKILL);
        }
        if let Some(s) = self.try_wait() {
            return Some(s);
        }
        let _ = self.child.kill();
        self.reap().ok()
    }

    /// How the child ended, in words (waits briefly for it: its pipes closing can come first).
    pub fn exit_description(&mut self) -> String {
        match self.wait_timeout(Duration::from_secs(2)) {
            Some(status) => self.describe(status),
            None => "closed its pipes but is still running".to_string(),
        }
    }

    /// `status` (this child's) in words, telling an OOM kill by the cgroup's counter.
    pub fn describe(&self, status: ExitStatus) -> String {
        let oom = match (self.oom_before, oom_kill_count()) {
            (Some(a), Some(b)) => b > a,
            _ => false,
        };
        describe_exit(status, oom)
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}
