//! One program run to its end with its output shown live (`%carbon exec`, `%carbon run`).

use super::{Supervised, read_text};
use crate::runtime::{Publish, StreamName};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Bytes per read of the program's output pipes.
const READ_CHUNK: usize = 8192;

/// How long the output of a program that has exited is still read (what is already in the
/// pipes drains in far less).
const READER_GRACE: Duration = Duration::from_millis(500);

/// Why a [`CommandRun`] did not succeed.
#[derive(Debug, Error)]
pub enum CommandError {
    /// The program could not be started (not found, not executable).
    #[error("cannot start '{program}': {source}")]
    Start {
        /// `argv[0]`
        program: String,
        /// cause
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed: "false exited with status 1", "sh killed by signal 9 (SIGKILL) — …".
    #[error("{program} {how}")]
    Failed {
        /// `argv[0]`
        program: String,
        /// how it ended, see [`super::describe_exit`]
        how: String,
    },
    /// Waiting for it failed.
    #[error("{0}")]
    Wait(#[source] std::io::Error),
}

impl CommandError {
    /// The error name shown to the user (`ename`).
    pub fn ename(&self) -> &'static str {
        match self {
            CommandError::Failed { .. } => "CommandFailed",
            CommandError::Start { .. } | CommandError::Wait(_) => "CommandError",
        }
    }
}

/// A program running as the leader of its own process group (so an interrupt or a timeout
/// reaches everything it starts, and nothing of the kernel), stdin from `/dev/null`, its stdout
/// and stderr published as they come. The caller meters it between [`CommandRun::start`] and
/// [`CommandRun::finish`]: after [`CommandRun::wait_exited`] it is an unreaped zombie whose
/// `/proc` entry still holds its CPU time.
pub struct CommandRun {
    proc: Supervised,
    program: String,
    readers: Vec<JoinHandle<()>>,
}

impl CommandRun {
    /// Starts `argv` (`argv[0]` looked up on `PATH` by exec) in `cwd`.
    pub fn start(argv: &[String], cwd: &Path, out: &dyn Publish) -> Result<Self, CommandError> {
        let program = argv.first().cloned().unwrap_or_default();
        let start_err = |source| CommandError::Start {
            program: program.clone(),
            source,
        };
        let mut cmd = Command::new(&program);
        cmd.args(argv.iter().skip(1))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Supervised::spawn_group(cmd).map_err(start_err)?;
        let child = proc.child_mut();
        let pipes = [
            (child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)),
            (child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>)),
        ];
        let mut readers = Vec::new();
        for (pipe, name) in pipes
            .into_iter()
            .zip([StreamName::Stdout, StreamName::Stderr])
        {
            let Some(pipe) = pipe else { continue };
            let mut out = out.boxed_clone();
            let reader = read_text("carbon-command-out", pipe, READ_CHUNK, move |text| {
                if let Some(t) = text {
                    out.stream(name, t);
                }
                true
            })
            .map_err(start_err)?;
            readers.push(reader);
        }
        Ok(Self {
            proc,
            program,
            readers,
        })
    }

    /// The program's pid (and process group id).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Waits until the program has exited, leaving it unreaped. Once `stopping()` returns true
    /// (the caller has sent its group SIGINT or SIGTERM), the group is killed if it has not ended
    /// within the escalation delay (see [`Supervised::wait_exited`]).
    pub fn wait_exited(&mut self, stopping: impl FnMut() -> bool) {
        self.proc.wait_exited(stopping);
    }

    /// Reaps the program and waits for the rest of its output (processes it started in the
    /// background keep the pipes open until they end). `Ok` when it exited with status 0.
    pub fn finish(mut self) -> Result<(), CommandError> {
        // The program has exited: what it left running in its group (`sh -c 'x & …'`, whose
        // background job keeps the output pipes open) ends with it. The unreaped leader still
        // holds the group's id, so no other group can be hit.
        self.proc.signal_group(libc::SIGKILL);
        let status = self.proc.reap();
        // A process that left the group (setsid) may still hold the pipes: the command has
        // returned, so its output is not waited for past a short grace (the kernel ends it on
        // interrupt and shutdown).
        let deadline = Instant::now() + READER_GRACE;
        for r in self.readers.drain(..) {
            while !r.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if r.is_finished() {
                let _ = r.join();
            } else {
                log::info!(
                    "{}: a process it started keeps its output open",
                    self.program
                );
            }
        }
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(CommandError::Failed {
                how: self.proc.describe(s),
                program: std::mem::take(&mut self.program),
            }),
            Err(e) => Err(CommandError::Wait(e)),
        }
    }
}
