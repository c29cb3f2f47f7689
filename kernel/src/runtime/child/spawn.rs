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
    fd3: Option<OwnedFd>,
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
                let res = spawn_here(&mut job.cmd, job.fd3.take());
                let _ = job.reply.send(res);
            }
        })?;
    // A second thread racing here loses; its spawner ends when its sender is dropped.
    Ok(SPAWNER.get_or_init(|| Mutex::new(tx)))
}

fn spawn_here(cmd: &mut Command, fd3: Option<OwnedFd>) -> io::Result<Child> {
    sys::prepare_child(cmd, fd3.as_ref().map(|f| f.as_raw_fd()));
    // its own process group: what it starts is told from the kernel's own helpers, and ended
    // with it (see the `tree` module)
    cmd.process_group(0);
    let child = cmd.spawn();
    drop(fd3); // the parent's copy of the child's end
    if let Ok(c) = &child {
        tree::claim(c.id());
    }
    child
}

/// Spawns `cmd` with `PR_SET_PDEATHSIG = SIGKILL`, so the child dies with the kernel even when
/// the kernel is killed, as the leader of its own process group (so what it starts can be told
/// from the kernel's own helpers and ended with it), claimed (see [`super::claim`]): the
/// caller waits for it through the returned `Child`.
/// `fd3`, if given, becomes the child's fd 3 (e.g. the write end of a protocol pipe); the
/// parent's copy is closed once the child runs.
pub fn spawn(cmd: Command, fd3: Option<OwnedFd>) -> io::Result<Child> {
    let (reply, rx) = mpsc::channel();
    let job = SpawnJob { cmd, fd3, reply };
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
    sys::prepare_child(cmd, None);
    cmd.process_group(0);
}
