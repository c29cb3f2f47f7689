//! The kernel's one child-process layer, used by the Python, Java and Rust runtimes and by
//! `%carbon run` / `%carbon exec`. It owns, once:
//!
//! * spawning ([`spawn`]): every child starts on one long-lived thread with `PR_SET_PDEATHSIG`,
//!   so it dies with the kernel; optionally with an extra pipe as fd 3, or
//!   ([`Supervised::spawn_group`]) as the leader of its own process group;
//! * finding programs ([`find_program`], [`find_program_in`], with the `which` crate);
//! * text from byte streams ([`Utf8Carry`], [`read_text`]): a read may end inside a character;
//! * pipe readers that say how far they have handed on ([`read_chunks_watched`],
//!   [`PipeWatch`]): a message sent elsewhere can follow the output written before it;
//! * signals and waits ([`Supervised`], [`signal_pid`], [`signal_group`], [`process_exists`]):
//!   stopping is a polite signal, then SIGKILL after the one [`ESCALATION_DELAY`];
//! * how a child ended, in words ([`describe_exit`]: "killed by signal 9 (SIGKILL) — possibly
//!   the OOM killer");
//! * running a program to its end with live output ([`CommandRun`]);
//! * every process a cell started, found and ended even after its parent exited: the kernel
//!   is a child subreaper, each child leads its own process group ([`become_subreaper`],
//!   [`end_cell_processes`], [`end_all_processes`], the `tree` module).
//!
//! All of the kernel's `unsafe` code is in the private `sys` module, behind safe functions.

pub mod cgroup;
mod command;
mod exit;
mod path;
mod read;
mod spawn;
mod supervised;
mod sys;
mod tree;
mod utf8;

pub use command::{CommandError, CommandRun};
pub use exit::{describe_exit, oom_kill_count, signal_name};
pub use path::{find_program, find_program_in};
pub use read::{Doorbell, PipeWatch, read_chunks, read_chunks_watched, read_lines, read_text};
pub use spawn::{die_with_kernel, spawn};
pub use supervised::Supervised;
pub(crate) use sys::replace_fd;
pub use sys::{process_exists, signal_group, signal_pid};
pub use tree::{
    become_subreaper, cell_processes, claim, end_all_processes, end_cell_processes, reap_orphans,
    release, run_guard, tracking,
};
pub use utf8::Utf8Carry;

use std::time::Duration;

/// How long a child asked to stop (SIGINT on an interrupt, SIGTERM on a timeout, a STOP frame)
/// gets before it is killed with SIGKILL. "Escalate to SIGKILL after a few seconds"
/// (shared/reference/jupyter-kernel.md §4.6): Python's KeyboardInterrupt and JShell's stop land
/// well within a second when they can, so this only ends code that cannot be stopped politely.
pub const ESCALATION_DELAY: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;
    use carbon_magics::carbon::procfs::ProcReader;
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn two_fds_reach_the_child_as_fd3_and_fd4() {
        let (r3, w3) = std::io::pipe().unwrap();
        let (r4, w4) = std::io::pipe().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo three >&3; echo four >&4"])
            .stdin(Stdio::null());
        let child = spawn(cmd, vec![w3.into(), w4.into()]).unwrap();
        let mut sup = Supervised::new(child);
        for (r, want) in [(r3, "three"), (r4, "four")] {
            let (tx, rx) = mpsc::channel();
            read_lines("t", r, move |l| tx.send(l).is_ok()).unwrap();
            assert_eq!(rx.recv().unwrap().as_deref(), Some(want));
            assert_eq!(rx.recv().unwrap(), None, "the parent's copy is closed");
        }
        assert_eq!(sup.exit_description(), "exited with status 0");
    }

    #[test]
    fn fd3_reaches_the_child_and_status_is_described() {
        let (r, w) = std::io::pipe().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo hello >&3; kill -9 $$"])
            .stdin(Stdio::null());
        let child = spawn(cmd, vec![w.into()]).unwrap();
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

    /// Alive and not a zombie (a killed process reparented to init stays a zombie until reaped).
    fn running(pid: u32) -> bool {
        ProcReader::new("/proc")
            .stat_line(pid, |l| l.state != 'Z')
            .unwrap_or(false)
    }

    /// Starts `cmd` (a shell whose first stdout line is a background member's pid) as a process
    /// group: the supervisor, the leader's pid and the member's.
    fn group_with_member(cmd: Command) -> (Supervised, u32, u32) {
        let mut sup = Supervised::spawn_group(cmd).unwrap();
        let leader = sup.pid();
        let mut first = String::new();
        let mut out = sup.child_mut().stdout.take().unwrap();
        let mut byte = [0u8];
        while out.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            first.push(byte[0] as char);
        }
        (sup, leader, first.trim().parse().unwrap())
    }

    #[test]
    fn a_group_whose_leader_ignores_sigterm_is_killed_after_the_escalation_delay() {
        let mut cmd = Command::new("sh");
        // SIG_IGN survives fork and exec: the background sleep ignores SIGTERM too
        cmd.args(["-c", "trap '' TERM; sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped());
        let (mut sup, leader, member) = group_with_member(cmd);
        assert!(running(leader) && running(member));

        let t0 = Instant::now();
        sup.signal_group(libc::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        assert!(!sup.has_exited(), "the leader ignores SIGTERM");
        assert!(running(member), "so does the member");
        sup.wait_exited(|| true);
        let waited = t0.elapsed();
        // not before the delay (a bound load cannot break: load only lengthens the wait); that
        // the escalation then came is what the SIGKILL below shows
        assert!(waited >= ESCALATION_DELAY, "killed after {waited:?}");
        let status = sup.reap().unwrap();
        assert!(
            sup.describe(status)
                .starts_with("killed by signal 9 (SIGKILL)"),
            "{status:?}"
        );
        // SIGKILL went to the whole group
        let end = Instant::now() + Duration::from_secs(5);
        while running(member) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!running(member), "the group member {member} survived");
    }

    /// The command name of `pid` (`None` once it is gone).
    fn comm(pid: u32) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    #[test]
    fn a_stopped_group_that_obeys_is_not_killed() {
        // The leader obeys SIGTERM; a member ignores it (SIG_IGN survives exec). The escalation
        // is a SIGKILL to the whole group: a member still alive once wait_exited returned
        // shows that it was not taken.
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "(trap '' TERM; exec sleep 60) & echo $!; exec sleep 60",
        ])
        .stdout(Stdio::piped());
        let (mut sup, leader, member) = group_with_member(cmd);
        // both exec'd sleep: the member's trap is set, the leader is past the shell
        let end = Instant::now() + Duration::from_secs(10);
        while [leader, member]
            .iter()
            .any(|&p| comm(p).as_deref() != Some("sleep"))
            && Instant::now() < end
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(comm(member).as_deref(), Some("sleep"));

        sup.signal_group(libc::SIGTERM);
        sup.wait_exited(|| true);
        let status = sup.reap().unwrap();
        assert_eq!(sup.describe(status), "killed by signal 15 (SIGTERM)");
        let survived = running(member);
        signal_pid(member, libc::SIGKILL);
        assert!(survived, "the group got SIGKILL: the escalation was taken");
    }

    #[test]
    fn programs_are_found_like_a_shell_finds_them() {
        assert!(find_program("/nonexistent/python").is_none());
        let sh = find_program("sh").unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{sh:?}");
        assert_eq!(find_program(&sh), Some(sh.clone()));
        let dir = sh.parent().unwrap().as_os_str();
        assert_eq!(find_program_in("sh", dir), Some(sh));
        let empty = tempfile::tempdir().unwrap();
        assert!(find_program_in("sh", empty.path().as_os_str()).is_none());
        // a file that is not executable is not a program
        let f = empty.path().join("tool");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(find_program_in("tool", empty.path().as_os_str()).is_none());
        assert!(find_program(&f).is_none());
    }

    #[test]
    fn process_existence_and_safe_signal_targets() {
        assert!(process_exists(std::process::id()));
        assert!(!process_exists(0));
        let mut c = Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        assert!(!process_exists(pid) || !running(pid));
        // group 0 and 1 would hit the kernel's own group or every process: refused, no-ops
        signal_group(0, 0);
        signal_group(1, 0);
        signal_pid(0, 0);
    }
}
