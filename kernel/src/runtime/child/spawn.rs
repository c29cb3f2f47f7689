//! Spawning: every child of the kernel starts on one long-lived thread, with the parent-death
//! signal set.

use super::{sys, tree};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// One spawn request for the spawner thread.
struct SpawnJob {
    cmd: Command,
    fds: Vec<OwnedFd>,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits (prctl(2)), not the
/// process. Runtimes may be driven from pooled threads that come and go, so every spawn happens
/// on one thread that lives as long as the kernel.
fn spawner() -> io::Result<&'static Mutex<mpsc::Sender<SpawnJob>>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    if let Some(s) = SPAWNER.get() {
        return Ok(s);
    }
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    std::thread::Builder::new()
        .name("carbon-spawner".into())
        .spawn(move || {
            for mut job in rx {
                let res = spawn_here(&mut job.cmd, std::mem::take(&mut job.fds));
                let _ = job.reply.send(res);
            }
        })?;
    // A second thread racing here loses; its spawner ends when its sender is dropped.
    Ok(SPAWNER.get_or_init(|| Mutex::new(tx)))
}

fn spawn_here(cmd: &mut Command, fds: Vec<OwnedFd>) -> io::Result<Child> {
    if fds.len() > sys::MAX_EXTRA_FDS {
        return Err(io::Error::other("too many fds for a child"));
    }
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    sys::prepare_child(cmd, &raw);
    // its own process group: what it starts is told from the kernel's own helpers, and ended
    // with it (see the `tree` module)
    cmd.process_group(0);
    let child = cmd.spawn();
    drop(fds); // the parent's copies of the child's ends
    if let Ok(c) = &child {
        tree::claim(c.id());
    }
    child
}

/// Spawns `cmd` with `PR_SET_PDEATHSIG = SIGKILL`, so the child dies with the kernel even when
/// the kernel is killed, as the leader of its own process group (so what it starts can be told
/// from the kernel's own helpers and ended with it), claimed (see [`super::claim`]): the
/// caller waits for it through the returned `Child`.
/// `fds` (at most two) become the child's fd 3 and 4 (e.g. the write ends of protocol pipes);
/// the parent's copies are closed once the child runs.
pub fn spawn(cmd: Command, fds: Vec<OwnedFd>) -> io::Result<Child> {
    let (reply, rx) = mpsc::channel();
    let job = SpawnJob { cmd, fds, reply };
    spawner()?
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Sets the parent-death signal on a command that someone else spawns (evcxr spawns its own
/// child). The caller must make sure the spawning thread lives as long as the kernel.
/// The child also leads its own process group; the caller claims its pid once known
/// ([`super::claim`]).
pub fn die_with_kernel(cmd: &mut Command) {
    sys::prepare_child(cmd, &[]);
    cmd.process_group(0);
}
