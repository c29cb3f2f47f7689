//! The system calls of the child-process layer: the one file of the workspace's kernel crate
//! allowed to use `unsafe`.
//!
//! Why unsafe is needed at all: `libc::kill`, `libc::waitid`, `libc::prctl`, `libc::poll`,
//! `libc::ioctl` and `libc::eventfd` (with its `read`/`write`) are foreign functions (always
//! `unsafe` to call), and the hook that runs in a forked child before `exec` goes through
//! `CommandExt::pre_exec`, an `unsafe fn` because the hook must be async-signal-safe. Each
//! function below wraps one such call behind a safe signature whose arguments cannot break
//! memory safety, so the rest of the kernel stays `unsafe`-free (`unsafe_code = "deny"` in the
//! workspace lints).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes `cmd`'s child, between fork and exec: ask for SIGKILL when its parent thread ends
/// (`PR_SET_PDEATHSIG`), exit at once if the kernel already died, and take `fds[i]` as its fd
/// `3 + i` (at most [`MAX_EXTRA_FDS`]).
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child ends (prctl(2)), so the
/// command must be spawned from a thread that lives as long as the kernel (see `spawn`).
pub(super) fn prepare_child(cmd: &mut Command, fds: &[RawFd]) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    let mut given = [-1 as RawFd; MAX_EXTRA_FDS];
    for (g, fd) in given.iter_mut().zip(fds) {
        *g = *fd;
    }
    let n = fds.len().min(MAX_EXTRA_FDS);
    // SAFETY: the closure runs in the forked child before exec and only calls async-signal-safe
    // functions (prctl, getppid, _exit, dup2, fcntl); it allocates nothing (`given` is a copied
    // array).
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
            // First out of the way (fd 10 and up, closed at exec), then into place: a given fd
            // that is already 3 or 4 is not overwritten before it is moved. dup2 leaves the new
            // fd without FD_CLOEXEC, so it survives exec.
            let mut high = [-1 as RawFd; MAX_EXTRA_FDS];
            for i in 0..n {
                high[i] = libc::fcntl(given[i], libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (i, h) in high.iter().enumerate().take(n) {
                if libc::dup2(*h, 3 + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// How many fds [`prepare_child`] can hand a child (fd 3 and fd 4).
pub(super) const MAX_EXTRA_FDS: usize = 2;

/// `kill(pid, sig)`, ignoring errors (the process may be gone). Pids that would address more
/// than one process (0, negative) are refused.
pub fn signal_pid(pid: u32, sig: i32) {
    if let Ok(pid) = libc::pid_t::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// `kill(-pgid, sig)`: signals every process of the group `pgid`, ignoring errors. Group 0
/// (the kernel's own) and 1 (`kill(-1)` would mean every process) are refused.
pub fn signal_group(pgid: u32, sig: i32) {
    if let Ok(pgid) = libc::pid_t::try_from(pgid)
        && pgid > 1
    {
        // SAFETY: kill(2) with a negative pid signals a group; no memory is involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Whether a process `pid` exists (zombies included): `kill(pid, 0)` does not fail with ESRCH.
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists; no memory is involved.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Blocks until `fd` can be read without blocking (bytes, end of file or an error):
/// `poll(2)` without a timeout, restarted when a signal interrupts it.
pub(super) fn wait_readable(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: poll reads and writes the one pollfd we own, and we pass its count (1).
        if unsafe { libc::poll(&mut p, 1, -1) } >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Waits until `a` (if given) or `b` is readable, or `timeout` passed: (a readable, b
/// readable). An end of file or an error on a file counts as readable (its read says which).
pub(super) fn poll_two(
    a: Option<BorrowedFd<'_>>,
    b: BorrowedFd<'_>,
    timeout: std::time::Duration,
) -> io::Result<(bool, bool)> {
    let mut p = [
        libc::pollfd {
            fd: a.map_or(-1, |a| a.as_raw_fd()), // poll(2) skips a negative fd
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: b.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: poll reads and writes the two pollfds we own, and we pass their count (2).
    if unsafe { libc::poll(p.as_mut_ptr(), 2, ms) } < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok((false, false));
        }
        return Err(e);
    }
    Ok((p[0].revents != 0, p[1].revents != 0))
}

/// A non-blocking, close-on-exec `eventfd(2)` (a counter one thread adds to and another waits
/// on with `poll`).
pub(super) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes integers and returns a new fd that nothing else owns.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to the eventfd `fd` (wakes its `poll`); errors ignored (a full counter is awake).
pub(super) fn eventfd_add(fd: BorrowedFd<'_>) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes the 8 bytes of a local to an fd we borrow.
    unsafe {
        libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len());
    }
}

/// Resets the eventfd `fd` to 0 (non-blocking: nothing to read is fine).
pub(super) fn eventfd_clear(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    // SAFETY: reads at most 8 bytes into a local buffer of 8 bytes.
    unsafe {
        libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
    }
}

/// How many bytes wait in the pipe `fd`, unread (`ioctl(FIONREAD)`, pipe(7)).
pub(super) fn unread_bytes(fd: BorrowedFd<'_>) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int, into the local we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(n).unwrap_or(0))
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`: processes orphaned below the kernel are reparented to
/// it instead of init (prctl(2)), so they can be found and ended. False if refused.
pub(super) fn set_child_subreaper() -> bool {
    // SAFETY: prctl with integer arguments only; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) == 0 }
}

/// Reaps `pid` if it is an ended child of ours (`waitpid(pid, WNOHANG)`); true if it was.
/// Only for pids no `std::process::Child` waits for (see `tree::reap_orphans`).
pub(super) fn reap_pid(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    let mut status: libc::c_int = 0;
    // SAFETY: waitpid writes the status into a local we own; a positive pid names one child.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
}

/// The process group of `pid`, if it exists.
pub(super) fn pgid_of(pid: u32) -> Option<u32> {
    let pid = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0)?;
    // SAFETY: getpgid(2) has no memory-safety preconditions.
    let g = unsafe { libc::getpgid(pid) };
    u32::try_from(g).ok()
}

/// Whether our child `pid` has exited, without reaping it (`waitid` with `WNOWAIT`): its
/// `/proc/<pid>/stat` then still holds its CPU times and its pid cannot be reused.
pub(super) fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: waitid writes into a zeroed siginfo_t we own; P_PID limits it to this child.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOWAIT | libc::WNOHANG,
        );
        r == 0 && info.si_pid() != 0
    }
}

/// The kernel's unit-test binary is evcxr's child too (evcxr re-executes the current executable
/// with `EVCXR_IS_RUNTIME=1`): run its hook before the test harness starts, as `main` does.
/// `link_section` is an unsafe attribute (the linker runs whatever the section holds), so it
/// lives here with the other unsafe code of the crate.
#[cfg(test)]
#[used]
#[unsafe(link_section = ".init_array")]
static EVCXR_CHILD_HOOK: extern "C" fn() = {
    extern "C" fn hook() {
        evcxr::runtime_hook();
    }
    hook
};

/// Makes `fd` of this process a copy of `with` (`dup2`): the evcxr child's stdin and stdout go
/// through pipes of the kernel's (see `runtime::rust::child_hook`). dup2 takes plain integers
/// and `with` is open for the call: it cannot break memory safety.
pub(crate) fn replace_fd(fd: RawFd, with: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: dup2 on two integers; no memory is touched.
    if unsafe { libc::dup2(with.as_raw_fd(), fd) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
