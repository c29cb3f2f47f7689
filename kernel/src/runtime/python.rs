//! Python: a persistent `python3` child running the driver embedded from
//! `kernel/assets/python_driver.py` (IPython's `InteractiveShell` when importable, a standard-library
//! runner otherwise; the first cells may run on that runner while IPython is still being imported,
//! when IPython would give the same result).
//!
//! Channels (see the driver's docstring): commands as NDJSON on the child's stdin, frames as NDJSON
//! on its fd 3, the user's fd 1/2 on two pipes that reader threads here pump live. Frames that must
//! follow earlier output (displays, input requests) carry a sequence number; the driver writes a
//! marker with that number into both output pipes first, and `Pump` publishes the frame only once
//! both markers came through, so `print(1); display(2); print(3)` arrives in order. The end of a
//! cell needs no place in the output (what comes after it is not the cell's): it is published
//! once both readers have handed on what they had taken from their pipes, and what waited in
//! them, when it arrived ([`child::PipeWatch`]), which spares a `pass` cell two reader
//! wake-ups (issue 9). It comes on a pipe of its own (fd 4) that the executor waits on itself:
//! no reader thread wakes between the worker's last write and the executor (`DonePipe`).
//! Memory stays bounded whatever a cell prints: the pipes are read in small chunks through a
//! bounded channel, and each chunk is published (not accumulated) before the next is read.

use super::child::{self, ESCALATION_DELAY, Supervised, Utf8Carry};
use super::idle::Idle;
use super::{
    Completeness, Completions, CountedCells, ExecError, ExecOptions, ExecOutcome, Inspection,
    InterruptHandle, Language, LanguageInfo, NextInput, Publish, Runtime, RuntimeError, StreamName,
};
use carbon_magics::MimeBundle;
use carbon_magics::config::Settings;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The driver, embedded so the binary is all one needs.
const DRIVER: &str = include_str!("../../assets/python_driver.py");

/// Runs first, in syntax any Python (2.x included) parses, so a too-old interpreter says so
/// instead of failing on the driver's syntax. The driver travels in an env var the bootstrap
/// removes before user code runs.
const BOOTSTRAP: &str = "import sys\n\
if sys.version_info < (3, 8):\n    \
sys.stderr.write('CARBON_TOO_OLD %s\\n' % sys.version.split()[0]); sys.exit(3)\n\
import os, types\n\
_m = types.ModuleType('_carbon_driver'); sys.modules['_carbon_driver'] = _m\n\
exec(compile(os.environ.pop('CARBON_DRIVER_SOURCE'), '<carbon driver>', 'exec'), _m.__dict__)\n\
del os, types\n\
_m.main()\n";

/// Oldest supported Python: 3.8 brings `ast.Expression` handling and walrus-era `ast` the driver
/// uses, and is the oldest IPython 8 supports.
const MIN_VERSION: &str = "3.8";

/// Bytes per read of an output pipe: half a default Linux pipe buffer (pipe(7): 64 KiB).
const READ_CHUNK: usize = 32 * 1024;
/// Events in flight between the reader threads and the pump; with [`READ_CHUNK`] this bounds
/// buffered output to ~0.5 MiB however much a cell prints.
const CHANNEL_CAP: usize = 16;
/// Largest stream message published at once (merged small writes).
const MAX_PUBLISH: usize = 64 * 1024;
/// Small writes are merged for this long before publishing (reference §4.4: merge over 10–50 ms
/// so iopub is not flooded; ipykernel flushes every 200 ms).
const MERGE: Duration = Duration::from_millis(20);
/// Time allowed for the worker to say ready (a cold .pyc cache on a loaded 2-core machine takes a
/// few seconds; measured warm start is 25–37 ms). The worker imports IPython after "ready", on a
/// thread, and reports it with an "ipython" frame (see [`PythonRuntime::on_ipython`]).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time allowed for completion / inspection / is_complete answers; plus [`START_TIMEOUT`] while
/// the worker still imports IPython (it answers these with IPython, once it is in).
const SIDE_TIMEOUT: Duration = Duration::from_secs(5);
/// A frame still waiting for its markers after this long without any output is released anyway
/// (user code replaced fd 1/2 between our check and the write).
const MARKER_GRACE: Duration = Duration::from_secs(2);
/// How soon a cell's end that waits for an output reader to hand on a chunk looks again (see
/// `Pump::syncing`).
const SYNC_RETRY: Duration = Duration::from_millis(1);
/// Output produced between cells (background threads), kept for the next cell, at most.
const LEFTOVER_CAP: usize = 1024 * 1024;

/// Which python runs cells: `CARBON_PYTHON` (settings or environment), else the active virtual
/// environment's (`$VIRTUAL_ENV/bin/python`), else `python3` on `PATH`. The `%carbon run FILE.py`
/// magic uses the same one.
pub fn python_executable(settings: &Settings) -> Result<PathBuf, RuntimeError> {
    let configured = settings
        .get("CARBON_PYTHON")
        .map(OsString::from)
        .or_else(|| std::env::var_os("CARBON_PYTHON").filter(|v| !v.is_empty()));
    resolve_python(
        configured.as_deref(),
        std::env::var_os("VIRTUAL_ENV").as_deref(),
    )
}

fn unavailable(reason: String) -> RuntimeError {
    RuntimeError::Unavailable {
        language: "python",
        reason,
    }
}

fn resolve_python(
    configured: Option<&OsStr>,
    venv: Option<&OsStr>,
) -> Result<PathBuf, RuntimeError> {
    if let Some(c) = configured {
        return child::find_program(c).ok_or_else(|| {
            unavailable(format!(
                "CARBON_PYTHON={} is not an executable file; set CARBON_PYTHON to a Python >= {MIN_VERSION}",
                c.to_string_lossy()
            ))
        });
    }
    if let Some(v) = venv.filter(|v| !v.is_empty())
        && let Some(p) = child::find_program(Path::new(v).join("bin/python"))
    {
        return Ok(p);
    }
    child::find_program("python3").ok_or_else(|| {
        unavailable(format!(
            "no python3 on PATH; install Python >= {MIN_VERSION} or set CARBON_PYTHON=/path/to/python"
        ))
    })
}

/// A cheap guess of the version behind `exe` for `language_info` before the worker ever ran:
/// a venv's `pyvenv.cfg`, else a `pythonX.Y` file name.
fn guess_version(exe: &Path) -> Option<String> {
    if let Some(dir) = exe.parent().and_then(Path::parent)
        && let Ok(cfg) = std::fs::read_to_string(dir.join("pyvenv.cfg"))
    {
        for line in cfg.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if matches!(k.trim(), "version" | "version_info") {
                return Some(v.trim().to_string());
            }
        }
    }
    let real = std::fs::canonicalize(exe).ok()?;
    let name = real.file_name()?.to_str()?;
    let v = name.strip_prefix("python")?;
    (!v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.')).then(|| v.to_string())
}

/// One thing a reader thread saw.
enum Ev {
    /// Output text of stream 0 (stdout) or 1 (stderr).
    Text(usize, String),
    /// An ordering marker with this sequence number on stream 0/1.
    Marker(usize, u64),
    /// The stream's pipe closed.
    StreamEnd(usize),
    /// A protocol frame.
    Frame(Value),
    /// A line on the protocol channel that is not JSON.
    Bad(String),
    /// The protocol channel closed: the worker is gone.
    ProtoEnd,
}

/// Lets a stream reader continue past marker `k` once the frame `k` was published, so output
/// written after a display cannot overtake it.
#[derive(Default)]
struct Gate {
    released: Mutex<u64>,
    cv: Condvar,
}

impl Gate {
    fn release(&self, seq: u64) {
        let mut r = self.released.lock().unwrap_or_else(|e| e.into_inner());
        if seq > *r {
            *r = seq;
        }
        self.cv.notify_all();
    }
    fn open(&self) {
        self.release(u64::MAX);
    }
    fn wait(&self, seq: u64) {
        let mut r = self.released.lock().unwrap_or_else(|e| e.into_inner());
        while *r < seq {
            r = self.cv.wait(r).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Splits a pipe's bytes into text and markers (markers may straddle reads, and so may UTF-8:
/// the bytes become text through a [`Utf8Carry`] first; markers are ASCII).
struct MarkerSplitter {
    prefix: String,
    carry: Utf8Carry,
    pending: String,
}

/// What [`MarkerSplitter::feed`] found, in order.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(String),
    Marker(u64),
}

impl MarkerSplitter {
    fn new(token: &str) -> Self {
        Self {
            prefix: format!("\x00\x1fC{token}:"),
            carry: Utf8Carry::default(),
            pending: String::new(),
        }
    }

    /// Feeds bytes; `eof` flushes everything held back.
    fn feed(&mut self, bytes: &[u8], eof: bool, out: &mut Vec<Piece>) {
        let text = self.carry.push(bytes);
        if self.pending.is_empty() {
            self.pending = text; // the common case: no copy
        } else {
            self.pending.push_str(&text);
        }
        if eof {
            let rest = self.carry.finish();
            self.pending.push_str(&rest);
        }
        loop {
            if let Some(i) = self.pending.find(&self.prefix) {
                let after = i + self.prefix.len();
                let Some(end) = self.pending[after..].find('\x1f') else {
                    // the marker's tail has not arrived yet
                    self.emit_text(i, out);
                    if eof {
                        self.emit_text(self.pending.len(), out);
                    }
                    return;
                };
                let seq = self.pending[after..after + end].parse().ok();
                self.emit_text(i, out);
                let consumed = after + end + 1 - i;
                match seq {
                    Some(seq) => {
                        self.pending.drain(..consumed);
                        out.push(Piece::Marker(seq));
                    }
                    None => {
                        // not ours after all: pass the bytes through as text
                        self.emit_text(consumed, out);
                    }
                }
                continue;
            }
            let keep = if eof {
                0
            } else {
                partial_suffix(&self.pending, &self.prefix)
            };
            self.emit_text(self.pending.len() - keep, out);
            return;
        }
    }

    /// Moves the first `n` bytes of `pending` (a char boundary: markers are ASCII) to `out`.
    fn emit_text(&mut self, n: usize, out: &mut Vec<Piece>) {
        if n == 0 {
            return;
        }
        let text = if n == self.pending.len() {
            std::mem::take(&mut self.pending)
        } else {
            self.pending.drain(..n).collect()
        };
        match out.last_mut() {
            Some(Piece::Text(t)) => t.push_str(&text),
            _ => out.push(Piece::Text(text)),
        }
    }
}

/// Length of the longest suffix of `hay` that is a proper prefix of `needle` (ASCII).
fn partial_suffix(hay: &str, needle: &str) -> usize {
    let (hay, needle) = (hay.as_bytes(), needle.as_bytes());
    (1..needle.len().min(hay.len() + 1))
        .rev()
        .find(|&k| hay[hay.len() - k..] == needle[..k])
        .unwrap_or(0)
}

/// A running worker.
struct Worker {
    proc: Supervised,
    stdin: Option<ChildStdin>,
    rx: Receiver<Ev>,
    gate: Arc<Gate>,
    /// The stdout and stderr readers' progress: a cell's `done` comes without markers and is
    /// published once both have handed on everything written before it (see [`Pump::syncing`]).
    watch: Vec<Arc<child::PipeWatch>>,
    next_id: u64,
    /// Between cells, output goes to the last cell at once (see [`Idle`]).
    idle: Arc<Idle>,
    /// An event read after a cell's end that the next pump handles first.
    held: Option<Ev>,
    /// The cells' `done` frames (fd 4), read by the executor itself.
    done: DonePipe,
    /// Rung by the reader threads when they hand the pump an event while it waits.
    bell: Arc<child::Doorbell>,
    /// Ordered frames (with a `seq`) the protocol reader has handed on (see [`DonePipe`]).
    proto_handed: Arc<AtomicU64>,
    /// How many of the runtime's [`CountedCells`] cells this worker's IPython counted: a worker
    /// started after another (a crash, `exit()`) counts the cells before it first.
    counted: usize,
}

/// Where a reader of the worker's pipes hands an event (see [`Idle`]): between cells it
/// publishes text, displays and clears itself through a publisher of the last cell; the rest (and
/// everything while a cell runs) goes to the pump. Each reader calls it on its own thread: no
/// router thread between the pipes and the executor, so a cell's end wakes one thread fewer.
fn hand_over(
    ev: Ev,
    idle: &Idle,
    gate: &Gate,
    to_pump: &SyncSender<Ev>,
    bell: &child::Doorbell,
) -> bool {
    let rest = idle.offer(ev, |o, ev| match ev {
        Ev::Text(i, t) => {
            o.stream(stream_name(i), &t);
            None
        }
        // the frame it announces is published below (no cell output to order against)
        Ev::Marker(..) => None,
        Ev::Frame(f) if is_output(&f) => {
            publish_output(o, &f);
            gate.release(f["seq"].as_u64().unwrap_or(0));
            None
        }
        ev => Some(ev),
    });
    match rest {
        Some(ev) => {
            let sent = to_pump.send(ev).is_ok();
            bell.ring();
            sent
        }
        None => true,
    }
}

/// The cells' `done` frames, on a pipe of their own (the worker's fd 4) that the executor polls
/// beside the doorbell of the reader threads: a cell's end wakes the executor directly instead
/// of the protocol reader thread and then the executor (one thread wake-up fewer per cell on the
/// critical path, issue 9). A `done` says how many ordered frames (displays, clears, input
/// requests) the driver wrote to the protocol pipe before it (`after`); it is handed to the pump
/// once the protocol reader has handed on as many, so it never overtakes them.
struct DonePipe {
    /// None once the worker closed it (its end: the protocol reader reports it).
    file: Option<std::fs::File>,
    /// Bytes read, not yet a whole line.
    buf: Vec<u8>,
    /// Frames read, waiting for the ordered frames before them; with the time they were read.
    frames: VecDeque<(Value, Instant)>,
}

impl DonePipe {
    fn new(file: std::fs::File) -> Self {
        Self {
            file: Some(file),
            buf: Vec::new(),
            frames: VecDeque::new(),
        }
    }

    fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.file.as_ref().map(|f| f.as_fd())
    }

    /// One read (the pipe is readable: it does not block), split into frames.
    fn read(&mut self) {
        use std::io::Read;
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 4096];
        match f.read(&mut chunk) {
            Ok(0) => self.file = None,
            Ok(n) => self.push(&chunk[..n], Instant::now()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("python: cannot read the done pipe: {e}");
                self.file = None;
            }
        }
    }

    fn push(&mut self, bytes: &[u8], now: Instant) {
        self.buf.extend_from_slice(bytes);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            match serde_json::from_slice::<Value>(&line) {
                Ok(v) => self.frames.push_back((v, now)),
                Err(_) => log::warn!(
                    "python: malformed done frame: {:.200}",
                    String::from_utf8_lossy(&line)
                ),
            }
        }
    }

    /// The first frame read, once the protocol reader has handed on the `handed` ordered frames
    /// it waits for (or after [`MARKER_GRACE`]: a frame line the reader could not parse is
    /// not counted).
    fn take(&mut self, handed: u64, now: Instant) -> Option<Value> {
        let (f, read_at) = self.frames.front()?;
        let after = f["after"].as_u64().unwrap_or(0);
        if handed < after {
            if now.duration_since(*read_at) < MARKER_GRACE {
                return None;
            }
            log::warn!("python: a cell's end released without the frames written before it");
        }
        self.frames.pop_front().map(|(f, _)| f)
    }
}

impl Worker {
    /// The pump's next event: from the readers' channel, or a `done` from its pipe once the
    /// ordered frames before it are through; waits at most `timeout`.
    fn next_event(&mut self, timeout: Duration) -> Result<Ev, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        loop {
            // Counted before the channel is looked at: a frame counted is in the channel.
            let handed = self.proto_handed.load(Ordering::SeqCst);
            match self.rx.try_recv() {
                Ok(ev) => return Ok(ev),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            if let Some(f) = self.done.take(handed, Instant::now()) {
                return Ok(Ev::Frame(f));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            let mut left = deadline - now;
            if !self.done.frames.is_empty() {
                // a `done` waiting for its frames: their reader rings; the grace is looked at
                left = left.min(MARKER_GRACE / 10);
            }
            let mut got = None;
            let rx = &self.rx;
            let readable = self
                .bell
                .wait(self.done.fd(), left, || match rx.try_recv() {
                    Ok(ev) => {
                        got = Some(Ok(ev));
                        true
                    }
                    Err(TryRecvError::Disconnected) => {
                        got = Some(Err(RecvTimeoutError::Disconnected));
                        true
                    }
                    Err(TryRecvError::Empty) => false,
                })
                .unwrap_or_else(|e| {
                    log::warn!("python: cannot wait for the worker: {e}");
                    std::thread::sleep(SYNC_RETRY); // no busy loop on a failing poll
                    false
                });
            if let Some(r) = got {
                return r;
            }
            if readable {
                self.done.read();
            }
        }
    }

    fn send(&mut self, v: &Value) -> std::io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| std::io::Error::other("stdin closed"))?;
        let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
        line.push(b'\n');
        stdin.write_all(&line)?;
        stdin.flush()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.gate.open();
    }
}

/// A worker spawned but not yet known to be ready (see [`PythonRuntime::prestart`]).
struct Launch {
    worker: Worker,
    exe: PathBuf,
}

/// State the interrupt handle shares with the runtime.
#[derive(Default)]
struct Shared {
    /// pid of the python process (0: none), for SIGINT.
    pid: AtomicU32,
    /// a cell is running
    busy: AtomicBool,
    /// when the running cell was interrupted
    interrupted_at: Mutex<Option<Instant>>,
}

/// The Python back-end.
pub struct PythonRuntime {
    configured: Option<OsString>,
    worker: Option<Worker>,
    /// Prestarted, not yet waited for: the next [`Runtime::start`] takes it over.
    launching: Option<Launch>,
    shared: Arc<Shared>,
    version: Option<String>,
    ipython: Option<String>,
    /// The worker said ready while still importing IPython, and has not reported it yet.
    ipython_pending: bool,
    /// Told to the user at the start of the next cell (restart after a crash, IPython trouble).
    notice: Option<String>,
    /// Output of background threads between cells.
    leftover: VecDeque<(StreamName, String)>,
    leftover_len: usize,
    /// Every cell the kernel counted since this runtime's start: the ones it ran as stored
    /// cells and the ones it was told of ([`Runtime::count_unrun_cell`]). A worker's next cell
    /// carries those it has not counted yet, for IPython to count first: the cells that ran
    /// elsewhere since its last cell, and all of them for a worker started after another ended
    /// (a crash, `exit()`), as the kernel's execution_count goes on.
    counted: CountedCells,
}

impl PythonRuntime {
    /// A runtime that starts lazily, with the python of [`python_executable`].
    pub fn new(settings: &Settings) -> Self {
        Self {
            configured: settings.get("CARBON_PYTHON").map(OsString::from),
            worker: None,
            launching: None,
            shared: Arc::default(),
            version: None,
            ipython: None,
            ipython_pending: false,
            notice: None,
            leftover: VecDeque::new(),
            leftover_len: 0,
            counted: CountedCells::default(),
        }
    }

    fn executable(&self) -> Result<PathBuf, RuntimeError> {
        let configured = self
            .configured
            .clone()
            .or_else(|| std::env::var_os("CARBON_PYTHON").filter(|v| !v.is_empty()));
        resolve_python(
            configured.as_deref(),
            std::env::var_os("VIRTUAL_ENV").as_deref(),
        )
    }

    /// The IPython version the worker uses (`None`: standard-library runner, not started, or
    /// IPython's import not reported yet: the worker's first cells may run before it).
    pub fn ipython_version(&self) -> Option<&str> {
        self.ipython.as_deref()
    }

    /// The worker's "ipython" frame: IPython's import (on a thread of the worker, after "ready")
    /// finished and its shell took over the namespace (`version`), or it failed (`warning`,
    /// said as "ready"'s warning was: in the current cell, else at the start of the next).
    fn on_ipython(&mut self, f: &Value, out: &mut Option<&mut dyn Publish>) {
        self.ipython = f["version"].as_str().map(str::to_string);
        self.ipython_pending = false;
        if let Some(said) = f["said"].as_str().filter(|s| !s.trim().is_empty()) {
            log::debug!("python worker: IPython start-up output: {}", said.trim());
        }
        if let Some(w) = f["warning"].as_str() {
            match out.as_mut() {
                Some(o) => o.stream(StreamName::Stderr, &format!("{w}\n")),
                None => self.notice = Some(format!("{w}\n")),
            }
        }
    }

    /// Starts a worker and waits until it is ready.
    fn spawn_worker(&mut self) -> Result<(), RuntimeError> {
        let launch = self.launch()?;
        self.await_ready(launch)
    }

    /// Spawns a worker and its reader threads, without waiting for it (a few ms).
    fn launch(&self) -> Result<Launch, RuntimeError> {
        let exe = self.executable()?;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut cmd = Command::new(&exe);
        cmd.args(["-u", "-c", BOOTSTRAP])
            .env("CARBON_DRIVER_SOURCE", DRIVER)
            .env("CARBON_MARKER_TOKEN", &token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Ok(me) = std::env::current_exe() {
            // so notebooks can call `carbon-kernel report …` without it on PATH
            cmd.env("CARBON_KERNEL_BIN", me);
        }
        if std::env::var_os("PYTHONIOENCODING").is_none() {
            // the pumps decode UTF-8 whatever the locale
            cmd.env("PYTHONIOENCODING", "utf-8");
        }
        let cannot = |e: std::io::Error| {
            unavailable(format!(
                "cannot run {}: {e}; set CARBON_PYTHON to a Python >= {MIN_VERSION}",
                exe.display()
            ))
        };
        let (proto_r, proto_w) = std::io::pipe().map_err(cannot)?;
        let (done_r, done_w) = std::io::pipe().map_err(cannot)?;
        let bell = Arc::new(child::Doorbell::new().map_err(cannot)?);
        cmd.env("CARBON_DONE_FD", "4");
        let child = child::spawn(cmd, vec![proto_w.into(), done_w.into()]).map_err(cannot)?;
        let mut proc = Supervised::new(child);
        let c = proc.child_mut();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (c.stdin.take(), c.stdout.take(), c.stderr.take())
        else {
            return Err(unavailable("the python child has no pipes".into()));
        };
        let (tx, rx) = mpsc::sync_channel::<Ev>(CHANNEL_CAP);
        let gate = Arc::new(Gate::default());
        let idle = Arc::new(Idle::default());
        let io_err = |e| RuntimeError::Io {
            language: "python",
            source: e,
        };
        let mut watch = Vec::with_capacity(2);
        for (i, pipe) in [
            std::fs::File::from(std::os::fd::OwnedFd::from(stdout)),
            std::fs::File::from(std::os::fd::OwnedFd::from(stderr)),
        ]
        .into_iter()
        .enumerate()
        {
            let tx: SyncSender<Ev> = tx.clone();
            let (gate, idle, bell) = (gate.clone(), idle.clone(), bell.clone());
            let mut split = MarkerSplitter::new(&token);
            let mut pieces = Vec::new();
            let (_, w) =
                child::read_chunks_watched("carbon-py-out", pipe, READ_CHUNK, move |bytes| {
                    let eof = bytes.is_empty();
                    pieces.clear();
                    split.feed(bytes, eof, &mut pieces);
                    for p in pieces.drain(..) {
                        let sent = match p {
                            Piece::Text(t) => hand_over(Ev::Text(i, t), &idle, &gate, &tx, &bell),
                            Piece::Marker(k) => {
                                let r = hand_over(Ev::Marker(i, k), &idle, &gate, &tx, &bell);
                                gate.wait(k);
                                r
                            }
                        };
                        if !sent {
                            return false;
                        }
                    }
                    if eof {
                        hand_over(Ev::StreamEnd(i), &idle, &gate, &tx, &bell);
                    }
                    true
                })
                .map_err(io_err)?;
            watch.push(w);
        }
        let proto_handed = Arc::new(AtomicU64::new(0));
        {
            let (gate, idle, bell) = (gate.clone(), idle.clone(), bell.clone());
            let handed = proto_handed.clone();
            child::read_lines("carbon-py-proto", proto_r, move |line| {
                let ev = match line {
                    None => Ev::ProtoEnd,
                    Some(l) => match serde_json::from_str::<Value>(&l) {
                        Ok(v) => Ev::Frame(v),
                        Err(_) => Ev::Bad(l),
                    },
                };
                let ordered = matches!(&ev, Ev::Frame(v) if v.get("seq").is_some());
                let go = hand_over(ev, &idle, &gate, &tx, &bell);
                if ordered {
                    // after the hand-over: a `done` waiting for this frame may go once it is
                    // counted (see `DonePipe`), so the pump must already have it
                    handed.fetch_add(1, Ordering::SeqCst);
                    bell.ring();
                }
                go
            })
            .map_err(io_err)?;
        }
        let worker = Worker {
            proc,
            stdin: Some(stdin),
            rx,
            gate,
            watch,
            next_id: 1,
            idle,
            held: None,
            done: DonePipe::new(std::fs::File::from(std::os::fd::OwnedFd::from(done_r))),
            bell,
            proto_handed,
            counted: 0,
        };
        Ok(Launch { worker, exe })
    }

    /// Waits for a launched worker's "ready" and keeps it; else says why it could not start.
    fn await_ready(&mut self, launch: Launch) -> Result<(), RuntimeError> {
        let Launch { mut worker, exe } = launch;
        // Wait for "ready", keeping what the child says meanwhile for the error message. (A
        // prestarted worker had extra time in the background: the clock starts here.)
        let deadline = Instant::now() + START_TIMEOUT;
        let mut said = String::new();
        let mut ended = [false, false];
        let mut proto_end = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                worker.proc.kill();
                return Err(unavailable(format!(
                    "{} did not start within {} s: {}",
                    exe.display(),
                    START_TIMEOUT.as_secs(),
                    tail(&said)
                )));
            }
            let ev = match worker.rx.recv_timeout(if proto_end {
                Duration::from_millis(500).min(left)
            } else {
                left
            }) {
                Ok(ev) => ev,
                Err(RecvTimeoutError::Timeout) if proto_end => break,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            match ev {
                Ev::Frame(v) if v["t"] == "ready" => {
                    self.version = v["version"].as_str().map(str::to_string);
                    self.ipython = v["ipython"].as_str().map(str::to_string);
                    self.ipython_pending = v["loading"] == true;
                    let pid = v["pid"]
                        .as_u64()
                        .and_then(|p| u32::try_from(p).ok())
                        .unwrap_or(worker.proc.pid());
                    self.shared.pid.store(pid, Ordering::SeqCst);
                    if let Some(w) = v["warning"].as_str() {
                        self.notice = Some(format!("{w}\n"));
                    }
                    if !said.trim().is_empty() {
                        log::debug!("python worker start-up output: {}", said.trim());
                    }
                    self.worker = Some(worker);
                    return Ok(());
                }
                Ev::Text(_, t) => {
                    if said.len() < 64 * 1024 {
                        said.push_str(&t);
                    }
                }
                Ev::StreamEnd(i) => {
                    ended[i] = true;
                    if proto_end && ended == [true, true] {
                        break;
                    }
                }
                Ev::ProtoEnd => {
                    proto_end = true;
                    if ended == [true, true] {
                        break;
                    }
                }
                Ev::Marker(..) | Ev::Frame(_) | Ev::Bad(_) => {}
            }
        }
        let how = worker.proc.exit_description();
        if let Some(v) = said
            .lines()
            .find_map(|l| l.trim().strip_prefix("CARBON_TOO_OLD "))
        {
            return Err(unavailable(format!(
                "{} is Python {v}; carbon-kernel needs Python >= {MIN_VERSION}: set CARBON_PYTHON to a newer python",
                exe.display()
            )));
        }
        Err(unavailable(format!(
            "{} could not start the kernel's driver ({how}): {}; set CARBON_PYTHON to a working Python >= {MIN_VERSION}",
            exe.display(),
            tail(&said)
        )))
    }

    /// Stops the worker (and one still starting); the next cell starts another.
    fn stop_worker(&mut self) {
        self.shared.pid.store(0, Ordering::SeqCst);
        if let Some(mut launch) = self.launching.take() {
            // no user code ran in it: nothing to let finish
            launch.worker.proc.kill();
        }
        if let Some(mut w) = self.worker.take() {
            // EOF on its command channel ends the driver's loop (atexit handlers run).
            w.stdin.take();
            if w.proc.wait_timeout(Duration::from_millis(500)).is_none() {
                w.proc.kill();
            }
        }
    }

    /// The worker died (or was killed): forget it and tell the next cell.
    fn lose_worker(&mut self, how: String) -> RuntimeError {
        self.shared.pid.store(0, Ordering::SeqCst);
        self.worker = None;
        self.notice = Some(format!(
            "[python restarted: the previous worker {how}; variables and imports defined before are gone]\n"
        ));
        RuntimeError::Died {
            language: "python",
            how,
        }
    }

    fn keep_leftover(&mut self, name: StreamName, text: String) {
        self.leftover_len += text.len();
        self.leftover.push_back((name, text));
        while self.leftover_len > LEFTOVER_CAP {
            match self.leftover.pop_front() {
                Some((_, t)) => self.leftover_len -= t.len(),
                None => break,
            }
        }
    }

    /// Sends a side request (complete, inspect, is_complete) and waits for its reply.
    fn side_request(&mut self, mut req: Value) -> Option<Value> {
        self.start().ok()?;
        let w = self.worker.as_mut()?;
        let id = w.next_id;
        w.next_id += 1;
        req["id"] = json!(id);
        if w.send(&req).is_err() {
            return None;
        }
        let mut limit = SIDE_TIMEOUT;
        if self.ipython_pending {
            limit += START_TIMEOUT;
        }
        match self.pump(None, Wait::Reply(id, limit)) {
            Ok(Some(v)) => Some(v),
            Ok(None) => None,
            Err(e) => {
                log::warn!("python side request failed: {e}");
                None
            }
        }
    }

    /// Publishes the worker's events until the awaited frame (a cell's `done`, or a side reply).
    /// `out` is `None` between cells (completion, inspection): output goes to the last cell, as
    /// the readers publish it between cells (see [`Idle`]), or, before any cell, to the next.
    fn pump(
        &mut self,
        out: Option<&mut dyn Publish>,
        wait: Wait,
    ) -> Result<Option<Value>, RuntimeError> {
        let Some(idle) = self.worker.as_ref().map(|w| w.idle.clone()) else {
            return self.pump_events(out, wait);
        };
        idle.pause();
        let cell = matches!(wait, Wait::Done(_));
        match out {
            Some(o) => {
                let r = self.pump_events(Some(&mut *o), wait);
                if cell {
                    // text already queued behind the cell's end is the cell's too
                    if let Some(w) = self.worker.as_mut() {
                        while let Ok(ev) = w.rx.try_recv() {
                            match ev {
                                Ev::Text(i, t) => o.stream(stream_name(i), &t),
                                other => {
                                    w.held = Some(other);
                                    break;
                                }
                            }
                        }
                    }
                    idle.resume(Some(o.boxed_clone()));
                } else {
                    idle.resume(None);
                }
                r
            }
            None => {
                let mut last = idle.take();
                let r = self.pump_events(last.as_mut().map(|b| &mut **b as &mut dyn Publish), wait);
                idle.resume(last);
                r
            }
        }
    }

    fn pump_events(
        &mut self,
        mut out: Option<&mut dyn Publish>,
        wait: Wait,
    ) -> Result<Option<Value>, RuntimeError> {
        let mut p = Pump {
            text: None,
            seen: [0, 0],
            ended: [false, false],
            pending: VecDeque::new(),
            last_activity: Instant::now(),
            force: false,
            syncing: false,
            sync_marks: None,
        };
        let started = Instant::now();
        let mut proto_end: Option<Instant> = None;
        loop {
            if let Wait::Done(_) = wait {
                let since = *self
                    .shared
                    .interrupted_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if let Some(t) = since
                    && t.elapsed() >= ESCALATION_DELAY
                {
                    p.flush(&mut out, self);
                    if let Some(w) = self.worker.as_mut() {
                        w.proc.kill();
                    }
                    return Err(self.lose_worker(format!(
                        "did not stop within {} s of the interrupt and was killed (SIGKILL)",
                        ESCALATION_DELAY.as_secs()
                    )));
                }
            }
            if let Wait::Reply(_, limit) = wait
                && started.elapsed() > limit
            {
                p.flush(&mut out, self);
                self.unblock_readers(&p);
                return Ok(None);
            }
            if let Some(t) = proto_end
                && (p.ended == [true, true] || t.elapsed() > Duration::from_millis(500))
            {
                // The worker is gone and its last output is in: publish what it sent, then say so.
                p.force = true;
                self.release(&mut p, &mut out, &wait)?;
                p.flush(&mut out, self);
                let how = match self.worker.as_mut() {
                    Some(w) => w.proc.exit_description(),
                    None => "ended".into(),
                };
                return Err(self.lose_worker(how));
            }
            let Some(w) = self.worker.as_mut() else {
                return Err(self.lose_worker("is gone".into()));
            };
            let timeout = if p.syncing {
                SYNC_RETRY
            } else if p.text.is_some() {
                MERGE
            } else {
                Duration::from_millis(100)
            };
            let ev = match w.held.take() {
                Some(ev) => Ok(ev),
                None => w.next_event(timeout),
            };
            match ev {
                Ok(Ev::Text(i, t)) => {
                    p.last_activity = Instant::now();
                    p.push_text(i, t, &mut out, self);
                }
                Ok(Ev::Marker(i, k)) => {
                    p.last_activity = Instant::now();
                    p.seen[i] = k;
                }
                Ok(Ev::StreamEnd(i)) => p.ended[i] = true,
                Ok(Ev::Frame(v)) => {
                    if v.get("seq").is_some() {
                        p.pending.push_back(v);
                    } else if v["t"] == "ipython" {
                        p.flush(&mut out, self);
                        self.on_ipython(&v, &mut out);
                    } else if v["t"] == "interrupted" {
                        // The worker caught the interrupt and ends the cell once IPython (still
                        // being imported) can show it: no escalation to SIGKILL for that wait.
                        *self
                            .shared
                            .interrupted_at
                            .lock()
                            .unwrap_or_else(|e| e.into_inner()) = None;
                    } else if let Wait::Reply(id, _) = wait
                        && v["t"] == "reply"
                        && v["id"].as_u64() == Some(id)
                    {
                        p.flush(&mut out, self);
                        self.unblock_readers(&p);
                        return Ok(Some(v));
                    } else {
                        log::debug!("python: unexpected frame {v}");
                    }
                }
                Ok(Ev::Bad(line)) => {
                    log::warn!("python: malformed frame from the worker: {line:.200}")
                }
                Ok(Ev::ProtoEnd) | Err(RecvTimeoutError::Disconnected) => {
                    proto_end.get_or_insert_with(Instant::now);
                }
                Err(RecvTimeoutError::Timeout) => {
                    // A look again for a cell's end (SYNC_RETRY) is not the end of the merge
                    // window: `print` writes its text and its newline apart, and publishing the
                    // text alone here sent `b` and `\n` as two outputs when the reader was
                    // slow; the cell's end publishes the merged text first anyway.
                    if !p.syncing {
                        p.flush(&mut out, self);
                    }
                    if !p.pending.is_empty() && p.last_activity.elapsed() > MARKER_GRACE {
                        log::warn!("python: frame released without its output markers");
                        p.force = true;
                    }
                }
            }
            if let Some(done) = self.release(&mut p, &mut out, &wait)? {
                return Ok(Some(done));
            }
        }
    }

    /// Between cells, frames of background threads still waiting for markers are dropped with
    /// this pump; their readers must not stay parked on the gate.
    fn unblock_readers(&self, p: &Pump) {
        if let Some(w) = self.worker.as_ref() {
            w.gate.release(p.seen[0].max(p.seen[1]));
        }
    }

    /// Publishes the pending frames whose markers came through (all of them with `p.force`).
    /// Returns the awaited `done` frame when it is released.
    fn release(
        &mut self,
        p: &mut Pump,
        out: &mut Option<&mut dyn Publish>,
        wait: &Wait,
    ) -> Result<Option<Value>, RuntimeError> {
        p.syncing = false;
        while let Some(front) = p.pending.front() {
            let seq = front["seq"].as_u64().unwrap_or(0);
            let marked = (0..2).all(|i| {
                !front["m"][i].as_bool().unwrap_or(false) || p.seen[i] >= seq || p.ended[i]
            });
            // a frame sent with "sync" instead of markers: what was written before it has come
            // through once both readers have handed on the bytes up to a mark taken after it
            // arrived (the mark stays put however much is written after it)
            let synced = front["sync"] != true
                || self.worker.as_ref().is_none_or(|w| {
                    let marks = *p
                        .sync_marks
                        .get_or_insert_with(|| [w.watch[0].mark(), w.watch[1].mark()]);
                    (0..2).all(|i| p.ended[i] || w.watch[i].reached(marks[i]))
                });
            p.syncing = marked && !synced;
            if !(p.force || marked && synced) {
                break;
            }
            let f = p.pending.pop_front().unwrap_or_default();
            p.sync_marks = None;
            p.flush(out, self);
            let gate = self.worker.as_ref().map(|w| w.gate.clone());
            let mut result = None;
            match f["t"].as_str().unwrap_or("") {
                "done" => {
                    if let Wait::Done(id) = wait
                        && f["id"].as_u64() == Some(*id)
                    {
                        result = Some(f);
                    }
                }
                t if is_output(&f) => match out.as_mut() {
                    Some(o) => publish_output(&mut **o, &f),
                    None => log::debug!("python: {t} frame between cells dropped"),
                },
                "ipython" => self.on_ipython(&f, out),
                "input" => {
                    let prompt = f["prompt"].as_str().unwrap_or("");
                    let answer = match out.as_mut() {
                        Some(o) => o.input(prompt, f["password"] == true),
                        None => None,
                    };
                    let interrupted = {
                        let mut g = self
                            .shared
                            .interrupted_at
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        // The escalation clock restarts: the worker could not react while the
                        // front-end was being asked.
                        g.as_mut().map(|t| *t = Instant::now()).is_some()
                    };
                    let reply = json!({
                        "op": "input_reply",
                        "value": answer,
                        "interrupted": interrupted && answer.is_none(),
                    });
                    if let Some(w) = self.worker.as_mut()
                        && let Err(e) = w.send(&reply)
                    {
                        log::warn!("python: cannot send the input reply: {e}");
                    }
                }
                other => log::debug!("python: unknown frame type {other:?}"),
            }
            if let Some(g) = gate {
                g.release(seq);
            }
            if result.is_some() {
                return Ok(result);
            }
        }
        if p.pending.is_empty() {
            p.force = false;
        }
        Ok(None)
    }
}

/// What [`PythonRuntime::pump`] waits for.
enum Wait {
    /// The `done` frame of this execute id.
    Done(u64),
    /// The reply to this side-request id, within this time.
    Reply(u64, Duration),
}

/// Per-call state of [`PythonRuntime::pump`].
struct Pump {
    /// Merged text not yet published: (stream index, text).
    text: Option<(usize, String)>,
    /// Last marker seen per stream.
    seen: [u64; 2],
    /// Stream pipes closed.
    ended: [bool; 2],
    /// Frames waiting for their markers.
    pending: VecDeque<Value>,
    /// Last output or marker.
    last_activity: Instant,
    /// Release pending frames without waiting for markers.
    force: bool,
    /// The first pending frame waits for the output readers to hand on what they hold (a
    /// chunk taken from the pipe, usually gone in microseconds): look again soon, not only
    /// when they send something (a chunk held back whole, a cut character, sends nothing).
    syncing: bool,
    /// The stdout and stderr marks the first pending frame, a "sync" one, waits for (see
    /// [`child::PipeWatch::mark`]).
    sync_marks: Option<[u64; 2]>,
}

fn stream_name(i: usize) -> StreamName {
    if i == 0 {
        StreamName::Stdout
    } else {
        StreamName::Stderr
    }
}

impl Pump {
    fn push_text(
        &mut self,
        i: usize,
        t: String,
        out: &mut Option<&mut dyn Publish>,
        rt: &mut PythonRuntime,
    ) {
        match &mut self.text {
            Some((j, buf)) if *j == i && buf.len() + t.len() <= MAX_PUBLISH => buf.push_str(&t),
            _ => {
                self.flush(out, rt);
                self.text = Some((i, t));
            }
        }
        if self
            .text
            .as_ref()
            .is_some_and(|(_, b)| b.len() >= MAX_PUBLISH)
        {
            self.flush(out, rt);
        }
    }

    fn flush(&mut self, out: &mut Option<&mut dyn Publish>, rt: &mut PythonRuntime) {
        if let Some((i, t)) = self.text.take() {
            match out.as_mut() {
                Some(o) => o.stream(stream_name(i), &t),
                None => rt.keep_leftover(stream_name(i), t),
            }
        }
    }
}

fn bundle(data: &Value, metadata: &Value) -> MimeBundle {
    let mut b = MimeBundle::new();
    if let Some(d) = data.as_object() {
        for (k, v) in d {
            b.data.insert(k.clone(), v.clone());
        }
    }
    if let Some(m) = metadata.as_object() {
        for (k, v) in m {
            b.metadata.insert(k.clone(), v.clone());
        }
    }
    b
}

/// Whether `f` is one of the cell's outputs the driver sends as ordered frames: a display (or
/// its update), a `clear_output`, an `execute_result` in the middle of a cell, an `error`.
fn is_output(f: &Value) -> bool {
    matches!(
        f["t"].as_str(),
        Some("display" | "clear" | "result" | "error")
    )
}

/// Publishes an output frame ([`is_output`]) on `o`.
fn publish_output(o: &mut dyn Publish, f: &Value) {
    match f["t"].as_str().unwrap_or("") {
        "clear" => o.clear_output(f["wait"] == true),
        "error" => o.error(&exec_error(f)),
        "result" => o.execute_result(bundle(&f["data"], &f["metadata"])),
        _ => {
            let b = bundle(&f["data"], &f["metadata"]);
            match f["display_id"].as_str() {
                Some(id) if f["update"] == true => o.update_display(b, id),
                id => o.display(b, id),
            }
        }
    }
}

/// An `error` as the driver writes it (`{"ename", "evalue", "traceback", "shown"}`).
fn exec_error(e: &Value) -> ExecError {
    ExecError {
        ename: e["ename"].as_str().unwrap_or("Error").to_string(),
        evalue: e["evalue"].as_str().unwrap_or("").to_string(),
        traceback: e["traceback"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| l.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default(),
        shown: e["shown"] == true,
    }
}

fn outcome(f: &Value) -> ExecOutcome {
    let result = f["result"]
        .as_object()
        .map(|r| bundle(&r["data"], r.get("metadata").unwrap_or(&Value::Null)))
        .filter(|b| !b.is_empty());
    let pager = Some(bundle(&f["pager"], &Value::Null)).filter(|b| !b.is_empty());
    let error = match f["error"].as_object() {
        Some(_) => Some(exec_error(&f["error"])),
        None if f["status"] == "error" => Some(ExecError::new("Error", "the cell failed")),
        None => None,
    };
    let next_input = f["next_input"]["text"].as_str().map(|t| NextInput {
        text: t.to_string(),
        replace: f["next_input"]["replace"] == true,
    });
    ExecOutcome {
        result,
        error,
        pager,
        next_input,
    }
}

/// The last ~20 lines of what a failing child said, for error messages.
fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    let t = lines[lines.len().saturating_sub(20)..].join("\n");
    if t.is_empty() { "no output".into() } else { t }
}

/// Byte offset → character index (Python indexes code points).
fn char_index(code: &str, byte: usize) -> usize {
    let mut b = byte.min(code.len());
    while !code.is_char_boundary(b) {
        b -= 1;
    }
    code[..b].chars().count()
}

/// Character index → byte offset.
fn byte_offset(code: &str, chars: usize) -> usize {
    code.char_indices()
        .nth(chars)
        .map(|(b, _)| b)
        .unwrap_or(code.len())
}

impl Runtime for PythonRuntime {
    fn language(&self) -> Language {
        Language::Python
    }

    fn info(&self) -> LanguageInfo {
        // Never starts the worker: kernel_info must stay fast.
        let version = self
            .version
            .clone()
            .or_else(|| self.executable().ok().and_then(|e| guess_version(&e)))
            .unwrap_or_else(|| "3".into());
        LanguageInfo::of(Language::Python, version)
    }

    fn start(&mut self) -> Result<(), RuntimeError> {
        if let Some(w) = self.worker.as_mut() {
            if w.proc.try_wait().is_none() {
                return Ok(());
            }
            // died between cells (OOM killer, kill from outside)
            let how = w.proc.exit_description();
            let _ = self.lose_worker(how);
        }
        if let Some(launch) = self.launching.take() {
            // prestarted: usually ready by now; if it failed, this start reports why
            return self.await_ready(launch);
        }
        self.spawn_worker()
    }

    /// Spawns the worker without waiting for it, so that its interpreter start (~30 ms) overlaps
    /// with the client connecting; the first cell's [`Runtime::start`] then waits only for what
    /// is left. (The worker says ready before IPython's import, 0.2–1 s, is done: it imports
    /// IPython on a thread and runs the first cells meanwhile when IPython would give the same
    /// result; see the driver's `_plan_early`.) Returns at once: spawning is a fork/exec on the spawner thread, and nothing waits
    /// for the worker's "ready" here. A worker that fails to start is reported by that
    /// `start` with the usual error (and the cell after it tries again); shutdown and restart
    /// kill a worker still starting.
    fn prestart(&mut self) {
        if self.worker.is_some() || self.launching.is_some() {
            return;
        }
        match self.launch() {
            Ok(launch) => self.launching = Some(launch),
            Err(e) => log::debug!("python: not prestarted ({e}); the first cell will retry"),
        }
    }

    fn execute(&mut self, code: &str, out: &mut dyn Publish) -> Result<ExecOutcome, RuntimeError> {
        self.execute_with(code, ExecOptions::default(), out)
    }

    /// The options go to IPython's `run_cell(code, store_history, silent)`, as ipykernel passes
    /// them, so IPython's count, `In`/`Out`/`_` and `Cell In[n]` follow the kernel's count.
    fn execute_with(
        &mut self,
        code: &str,
        opts: ExecOptions,
        out: &mut dyn Publish,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.start()?;
        if let Some(n) = self.notice.take() {
            out.stream(StreamName::Stderr, &n);
        }
        while let Some((name, t)) = self.leftover.pop_front() {
            out.stream(name, &t);
        }
        self.leftover_len = 0;
        let Some(w) = self.worker.as_mut() else {
            return Err(self.lose_worker("is gone".into()));
        };
        let id = w.next_id;
        w.next_id += 1;
        *self
            .shared
            .interrupted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        // busy before the code can run: an interrupt that comes as soon as the cell starts
        // (the executor thread descheduled right after the send) must not be ignored
        self.shared.busy.store(true, Ordering::SeqCst);
        // The cell's output is its own from the first byte: if the readers still published
        // between cells when the worker's first display comes (this thread descheduled right
        // after the send), the display went to the previous cell.
        w.idle.pause();
        let unrun = self.counted.after(w.counted);
        let msg = json!({
            "op": "execute", "id": id, "code": code,
            "store_history": opts.store_history, "silent": opts.silent,
            "unrun": unrun,
        });
        // The kernel counts this cell whatever becomes of it (the worker may die in it): a
        // worker started after this one counts it too. (The driver stores a cell that is
        // neither silent nor unstored.)
        if opts.store_history && !opts.silent {
            self.counted.push(code);
        }
        w.counted = self.counted.len();
        if w.send(&msg).is_err() {
            self.shared.busy.store(false, Ordering::SeqCst);
            let how = w.proc.exit_description();
            return Err(self.lose_worker(how));
        }
        let r = self.pump(Some(out), Wait::Done(id));
        self.shared.busy.store(false, Ordering::SeqCst);
        match r? {
            Some(f) => {
                if f["exit"] == true {
                    // exit()/quit(): the worker ends after this cell, like a kernel restart;
                    // but the kernel's count goes on, and the next worker's with it.
                    self.stop_worker();
                    self.notice = Some(
                        "[python restarted after exit(): variables and imports defined before are gone]\n"
                            .into(),
                    );
                }
                Ok(outcome(&f))
            }
            None => Err(RuntimeError::Protocol {
                language: "python",
                detail: "the cell ended without a result".into(),
            }),
        }
    }

    fn is_complete(&mut self, code: &str) -> Completeness {
        let Some(r) = self.side_request(json!({"op": "is_complete", "code": code})) else {
            return Completeness::Unknown;
        };
        match r["status"].as_str() {
            Some("complete") => Completeness::Complete,
            Some("incomplete") => {
                Completeness::Incomplete(r["indent"].as_str().unwrap_or("").to_string())
            }
            Some("invalid") => Completeness::Invalid,
            _ => Completeness::Unknown,
        }
    }

    fn complete(&mut self, code: &str, cursor: usize) -> Completions {
        let cursor = cursor.min(code.len());
        let empty = Completions {
            matches: vec![],
            cursor_start: cursor,
            cursor_end: cursor,
        };
        let req = json!({"op": "complete", "code": code, "cursor": char_index(code, cursor)});
        let Some(r) = self.side_request(req) else {
            return empty;
        };
        let (Some(matches), Some(start), Some(end)) = (
            r["matches"].as_array(),
            r["start"].as_u64(),
            r["end"].as_u64(),
        ) else {
            return empty;
        };
        Completions {
            matches: matches
                .iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect(),
            cursor_start: byte_offset(code, start as usize),
            cursor_end: byte_offset(code, end as usize),
        }
    }

    fn inspect(&mut self, code: &str, cursor: usize, detail: u8) -> Inspection {
        let req = json!({
            "op": "inspect", "code": code,
            "cursor": char_index(code, cursor), "detail": detail.min(1),
        });
        match self.side_request(req) {
            Some(r) if r["found"] == true => Inspection {
                found: true,
                data: bundle(&r["data"], &Value::Null),
            },
            _ => Inspection::default(),
        }
    }

    fn count_unrun_cell(&mut self, code: &str) {
        self.counted.push(code);
    }

    fn language_magics(&mut self) -> Result<String, String> {
        let r = self
            .side_request(json!({"op": "magics"}))
            .ok_or("the Python worker did not answer")?;
        match (r["text"].as_str(), r["error"].as_str()) {
            (Some(t), _) => Ok(t.to_string()),
            (None, Some(e)) => Err(e.to_string()),
            (None, None) => Err("the Python worker sent no list".into()),
        }
    }

    fn interrupt_handle(&self) -> InterruptHandle {
        let shared = self.shared.clone();
        Arc::new(move || {
            if !shared.busy.load(Ordering::SeqCst) {
                return;
            }
            let pid = shared.pid.load(Ordering::SeqCst);
            if pid != 0 {
                child::signal_pid(pid, libc::SIGINT);
            }
            let mut t = shared
                .interrupted_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            t.get_or_insert_with(Instant::now);
        })
    }

    fn shutdown(&mut self) {
        self.stop_worker();
        // a kernel restart: the kernel's count starts again at 1, as the next worker's
        self.counted = CountedCells::default();
    }

    fn pids(&self) -> Vec<u32> {
        let launching = self.launching.iter().map(|l| &l.worker);
        self.worker
            .iter()
            .chain(launching)
            .map(|w| w.proc.pid())
            .collect()
    }
}

impl Drop for PythonRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// This back-end, for [`super::backend`].
pub const BACKEND: super::Backend = super::Backend {
    runtime: |settings| Box::new(PythonRuntime::new(settings)),
    file_program: python_executable,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Collected, Collector};
    use std::os::unix::fs::PermissionsExt;

    fn runtime_with(python: Option<&Path>) -> PythonRuntime {
        let mut s = Settings::empty();
        if let Some(p) = python {
            s.set("CARBON_PYTHON", &p.to_string_lossy());
        }
        PythonRuntime::new(&s)
    }

    fn run(rt: &mut PythonRuntime, code: &str) -> (ExecOutcome, Collector) {
        let c = Collector::default();
        let mut out = c.clone();
        let o = rt.execute(code, &mut out).expect("runtime failure");
        (o, c)
    }

    fn run_with(rt: &mut PythonRuntime, code: &str, opts: ExecOptions) -> (ExecOutcome, Collector) {
        let c = Collector::default();
        let mut out = c.clone();
        let o = rt
            .execute_with(code, opts, &mut out)
            .expect("runtime failure");
        (o, c)
    }

    /// `execute_request` with `store_history: false`.
    const NOT_STORED: ExecOptions = ExecOptions {
        store_history: false,
        silent: false,
    };
    /// `execute_request` with `silent: true` (the kernel stores no silent cell).
    const SILENT: ExecOptions = ExecOptions {
        store_history: false,
        silent: true,
    };

    fn plain(b: &Option<MimeBundle>) -> String {
        b.as_ref()
            .and_then(|b| b.text("text/plain"))
            .unwrap_or("")
            .to_string()
    }

    /// A script that runs python3 with extra arguments.
    fn wrapper(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// Runs `code` and interrupts it once its stdout shows `marker`; `then` runs on the
    /// interrupting thread right after the interrupt.
    fn execute_interrupted(
        rt: &mut PythonRuntime,
        code: &str,
        marker: &'static str,
        then: impl FnOnce() + Send + 'static,
    ) -> Result<ExecOutcome, RuntimeError> {
        let c = Collector::default();
        let mut out = c.clone();
        let h = rt.interrupt_handle();
        let t = std::thread::spawn(move || {
            while !c.text(StreamName::Stdout).contains(marker) {
                std::thread::sleep(Duration::from_millis(10));
            }
            h();
            then();
        });
        let r = rt.execute(code, &mut out);
        t.join().unwrap();
        r
    }

    /// A runtime whose python3 runs with `env` assignments before it and `args` after it.
    fn runtime_wrapped(dir: &Path, env: &str, args: &str) -> PythonRuntime {
        let py = system_python();
        let w = wrapper(
            dir,
            "py",
            &format!("{env} exec '{}' {args} \"$@\"", py.display()),
        );
        runtime_with(Some(&w))
    }

    use carbon_magics::testing::strip_ansi;

    fn system_python() -> PathBuf {
        child::find_program("python3").expect("python3 on PATH")
    }

    #[test]
    fn a_done_waits_for_the_ordered_frames_written_before_it() {
        let (r, _w) = std::io::pipe().unwrap();
        let mut d = DonePipe::new(std::fs::File::from(std::os::fd::OwnedFd::from(r)));
        let t0 = Instant::now();
        // a frame split across two reads, then a second one in the same read as its end
        d.push(br#"{"t":"done","id":1,"af"#, t0);
        assert!(d.take(0, t0).is_none(), "half a line is no frame");
        d.push(b"ter\":2}\n{\"t\":\"done\",\"id\":2,\"after\":3}\n", t0);
        assert!(
            d.take(0, t0).is_none(),
            "two ordered frames before it not handed on"
        );
        assert!(d.take(1, t0).is_none());
        assert_eq!(d.take(2, t0).unwrap()["id"], 1);
        assert!(
            d.take(2, t0).is_none(),
            "the second waits for a third frame"
        );
        // a frame the protocol reader could not count does not hold the cell's end for ever
        assert_eq!(d.take(2, t0 + MARKER_GRACE).unwrap()["id"], 2);
        assert!(d.take(9, t0).is_none(), "nothing left");
        d.push(b"not json\n", t0);
        assert!(d.take(9, t0).is_none(), "a malformed line is dropped");
    }

    #[test]
    fn splitter_finds_markers_across_reads_and_keeps_utf8_whole() {
        let mut s = MarkerSplitter::new("tok");
        let mut out = Vec::new();
        let bytes = "é a\x00\x1fCtok:7\x1fb".as_bytes();
        for b in bytes.chunks(1) {
            s.feed(b, false, &mut out);
        }
        s.feed(b"", true, &mut out);
        let text: Vec<_> = out.iter().collect();
        assert_eq!(
            text,
            [
                &Piece::Text("é a".into()),
                &Piece::Marker(7),
                &Piece::Text("b".into())
            ]
        );
        // a foreign marker-looking sequence passes through as text
        let mut out = Vec::new();
        s.feed(b"\x00\x1fCtok:x\x1f!", true, &mut out);
        assert_eq!(out, [Piece::Text("\u{0}\u{1f}Ctok:x\u{1f}!".into())]);
    }

    #[test]
    fn displays_at_a_cells_end_stay_in_the_cell() {
        // The cell's end comes on its own pipe, read by the executor: it must not overtake the
        // displays written to the protocol pipe just before it (its `after`). Without that, 17
        // of 300 one-display cells had lost their display when the cell returned (it went out
        // later, after the cell, through the idle path).
        let mut rt = runtime_with(None);
        let shown = |c: &Collector| -> Vec<String> {
            c.items()
                .iter()
                .filter_map(|i| match i {
                    Collected::Display(b, _) => b.text("text/plain").map(str::to_string),
                    _ => None,
                })
                .collect()
        };
        for i in 0..100 {
            let c = Collector::default();
            let o = rt
                .execute(&format!("display({i})"), &mut c.clone())
                .expect("runtime failure");
            // at once: what comes later went out after the cell's end
            assert_eq!(shown(&c), [i.to_string()], "cell {i}");
            assert!(o.error.is_none(), "{o:?}");
        }
        let c = Collector::default();
        let o = rt
            .execute("for i in range(300): display(i)", &mut c.clone())
            .expect("runtime failure");
        let want: Vec<String> = (0..300).map(|i| i.to_string()).collect();
        assert_eq!(shown(&c), want);
        assert!(o.error.is_none(), "{o:?}");
    }

    #[test]
    fn state_persists_and_results_streams_displays_arrive_in_order() {
        let mut rt = runtime_with(None);
        let (o, _) = run(&mut rt, "x = 41");
        assert!(o.error.is_none(), "{o:?}");
        let (o, c) = run(
            &mut rt,
            "import os, sys\nprint(x)\nos.write(1, b'raw\\n')\ndisplay(3)\nprint('after')\nsys.stderr.write('err\\n')\nx + 1",
        );
        assert!(o.error.is_none(), "{o:?}");
        assert_eq!(plain(&o.result), "42");
        let items = c.items();
        let disp = items
            .iter()
            .position(|i| matches!(i, Collected::Display(..)))
            .expect("display");
        let before: String = items[..disp]
            .iter()
            .filter_map(|i| match i {
                Collected::Stream(StreamName::Stdout, t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(before, "41\nraw\n");
        let after: String = items[disp..]
            .iter()
            .filter_map(|i| match i {
                Collected::Stream(StreamName::Stdout, t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(after, "after\n");
        assert_eq!(c.text(StreamName::Stderr), "err\n");
        let Collected::Display(b, _) = &items[disp] else {
            unreachable!()
        };
        assert_eq!(b.text("text/plain"), Some("3"));
        assert!(rt.pids().len() == 1);
        assert!(rt.info().version.starts_with('3'));
    }

    #[test]
    fn errors_inputs_displays_and_pager() {
        let mut rt = runtime_with(None);
        let (o, _) = run(&mut rt, "1/0");
        let e = o.error.expect("error");
        assert_eq!(e.ename, "ZeroDivisionError");
        assert!(strip_ansi(&e.traceback.join("\n")).contains("1/0"), "{e:?}");

        let c = Collector::default();
        c.inputs.lock().unwrap().push_back("carbon".into());
        let mut out = c.clone();
        let o = rt
            .execute("s = input('name? ')\nprint(s.upper())", &mut out)
            .unwrap();
        assert!(o.error.is_none(), "{o:?}");
        assert_eq!(c.text(StreamName::Stdout), "CARBON\n");
        // no answer (stdin not allowed): a clear Python error, not a hang
        let (o, _) = run(&mut rt, "input()");
        assert_eq!(o.error.expect("error").ename, "StdinNotImplementedError");

        let (_, c) = run(
            &mut rt,
            "h = display('a', display_id=True)\nh.update('b')\nfrom IPython.display import clear_output\nclear_output(wait=True)",
        );
        let items = c.items();
        let Some(Collected::Display(_, Some(id))) = items.first() else {
            panic!("{items:?}")
        };
        assert!(
            matches!(&items[1], Collected::Update(b, i) if i == id && b.text("text/plain") == Some("'b'"))
        );
        assert_eq!(items[2], Collected::Clear(true));

        let (o, _) = run(&mut rt, "gone = 1\nexit()");
        assert!(o.error.is_none(), "{o:?}");
        let (o, c) = run(&mut rt, "'gone' in dir()");
        assert_eq!(plain(&o.result), "False");
        assert!(c.text(StreamName::Stderr).contains("exit()"));

        let (o, _) = run(&mut rt, "len?");
        assert!(
            plain(&o.pager).contains("Return the number of items"),
            "{o:?}"
        );
    }

    #[test]
    fn cells_not_stored_stay_out_of_ipythons_count_and_history() {
        let mut rt = runtime_with(None);
        if let Err(e) = rt.language_magics() {
            eprintln!("skipped: no IPython ({e})");
            return;
        }
        run(&mut rt, "a = 1");
        // not stored: its value shows, and is `_` (IPython's displayhook, as under ipykernel)
        let (o, _) = run_with(&mut rt, "5", NOT_STORED);
        assert_eq!(plain(&o.result), "5");
        // silent: no value shown, `_` left alone; the code still runs
        let (o, _) = run_with(&mut rt, "b = 2\n7", SILENT);
        assert!(o.result.is_none() && o.error.is_none(), "{o:?}");
        // the second stored cell is IPython's In[2], as it is the kernel's execution_count 2
        let (o, _) = run(&mut rt, "def f():\n    return 1 / 0\nf()");
        let e = o.error.expect("error");
        let tb = strip_ansi(&e.traceback.join("\n"));
        assert!(
            tb.contains("Cell In[2], line 3") && tb.contains("Cell In[2], line 2"),
            "{tb}"
        );
        let (o, _) = run(&mut rt, "len(In), In[2].split()[0], _, b");
        assert_eq!(plain(&o.result), "(4, 'def', 5, 2)");
    }

    #[test]
    fn cells_that_ran_elsewhere_count_in_ipython() {
        let mut rt = runtime_with(None);
        if let Err(e) = rt.language_magics() {
            eprintln!("skipped: no IPython ({e})");
            return;
        }
        run(&mut rt, "a = 1");
        // the kernel's cells 2 and 3 ran in the kernel (a magic) and in another runtime
        rt.count_unrun_cell("%carbon status");
        rt.count_unrun_cell("%%java\nint x = 1;");
        let (o, _) = run(&mut rt, "def f():\n    return 1 / 0\nf()");
        let tb = strip_ansi(&o.error.expect("error").traceback.join("\n"));
        assert!(
            tb.contains("Cell In[4], line 3") && tb.contains("Cell In[4], line 2"),
            "{tb}"
        );
        let (o, _) = run(&mut rt, "len(In), In[2], In[3].splitlines()[0]");
        assert_eq!(plain(&o.result), "(6, '%carbon status', '%%java')");
    }

    /// The `Cell In[n]` of a traceback (IPython's number of the cell that raised).
    fn cell_number(o: ExecOutcome) -> String {
        let tb = strip_ansi(&o.error.expect("error").traceback.join("\n"));
        let Some(at) = tb.find("Cell In[") else {
            panic!("no Cell In[n]: {tb}")
        };
        tb[at + "Cell In[".len()..]
            .split(']')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn a_worker_started_after_another_ended_counts_the_cells_before_it() {
        let mut rt = runtime_with(None);
        if let Err(e) = rt.language_magics() {
            eprintln!("skipped: no IPython ({e})");
            return;
        }
        run(&mut rt, "a = 1"); // 1
        run_with(&mut rt, "b = 2", NOT_STORED); // not counted
        rt.count_unrun_cell("%carbon status"); // 2
        // 3: the worker dies in the kernel's 3rd cell
        let c = Collector::default();
        let e = rt.execute(
            "import os
os._exit(1)",
            &mut c.clone(),
        );
        assert!(matches!(e, Err(RuntimeError::Died { .. })), "{e:?}");
        rt.count_unrun_cell("%%java\nint x = 1;"); // 4, told before the next worker runs
        let (o, c) = run(&mut rt, "1 / 0"); // 5, in a new worker
        assert!(c.text(StreamName::Stderr).contains("are gone"));
        assert_eq!(cell_number(o), "5");
        let (o, _) = run(&mut rt, "len(In), In[2], In[3].split()[0], In[5]");
        assert_eq!(plain(&o.result), "(7, '%carbon status', 'import', '1 / 0')");
        // exit(): the kernel's count goes on too (7)
        run(&mut rt, "exit()");
        let (o, _) = run(&mut rt, "1 / 0");
        assert_eq!(cell_number(o), "8");
        // a kernel restart starts the count again at 1
        rt.shutdown();
        let (o, _) = run(&mut rt, "1 / 0");
        assert_eq!(cell_number(o), "1");
    }

    #[test]
    fn a_late_jedi_leaves_the_answer_to_ipythons_own_completer() {
        // Budget 0 is jedi missing its budget every time: the answer still comes, from IPython's
        // completer without jedi, which knows live names but cannot read an import not yet run.
        let dir = tempfile::tempdir().unwrap();
        let mut rt = runtime_wrapped(dir.path(), "CARBON_JEDI_BUDGET_S=0", "");
        run(&mut rt, "my_variable = 1");
        let c = rt.complete("my_v", 4);
        assert!(c.matches.iter().any(|m| m == "my_variable"), "{c:?}");
        let code = "import collections; collections.Ordered";
        let c = rt.complete(code, code.len());
        assert!(
            !c.matches.iter().any(|m| m.contains("OrderedDict")),
            "{c:?}"
        );
        // (With the default budget jedi reads the import, as in ipykernel: the conformance
        // test's `collections.Ordered` sample, tests/python/test_conformance.py.)
    }

    #[test]
    fn complete_inspect_is_complete() {
        let mut rt = runtime_with(None);
        run(&mut rt, "import os\nmy_variable = 1");
        let c = rt.complete("os.pa", 5);
        assert_eq!(c.cursor_end, 5);
        assert!(
            c.matches
                .iter()
                .any(|m| format!("{}{m}", &"os.pa"[..c.cursor_start]) == "os.path"),
            "{c:?}"
        );
        let c = rt.complete("é = my_v", "é = my_v".len());
        assert!(c.matches.iter().any(|m| m == "my_variable"), "{c:?}");
        assert_eq!(c.cursor_start, "é = ".len());
        let i = rt.inspect("len(", 3, 0);
        assert!(i.found);
        assert!(i.data.text("text/plain").is_some());
        assert!(!rt.inspect("no_such_name", 5, 0).found);
        assert_eq!(rt.is_complete("x = 1"), Completeness::Complete);
        assert_eq!(
            rt.is_complete("for i in range(3):"),
            Completeness::Incomplete("    ".into())
        );
        assert_eq!(rt.is_complete("1 +* 2)"), Completeness::Invalid);
    }

    #[test]
    fn output_streams_live_in_bounded_chunks() {
        let mut rt = runtime_with(None);
        let (o, c) = run(
            &mut rt,
            "import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)",
        );
        assert!(o.error.is_none());
        let chunks: Vec<String> = c
            .items()
            .into_iter()
            .filter_map(|i| match i {
                Collected::Stream(StreamName::Stdout, t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(chunks, ["0\n", "1\n", "2\n"]);

        let (o, c) = run(&mut rt, "print('x' * 10_000_000)");
        assert!(o.error.is_none());
        let items = c.items();
        let mut total = 0;
        for i in &items {
            if let Collected::Stream(_, t) = i {
                assert!(t.len() <= MAX_PUBLISH);
                total += t.len();
            }
        }
        assert_eq!(total, 10_000_001);
        assert!(items.len() > 100);
    }

    /// A cell's end comes without markers ("sync"): all the cell wrote before it, by `print`,
    /// `os.write` or a child process, small or more than a pipe holds, is the cell's output,
    /// and none of it spills into the next cell.
    #[test]
    fn output_written_just_before_the_end_is_the_cells() {
        let mut rt = runtime_with(None);
        for n in [1usize, 100, 5_000, 65_536, 300_000] {
            let code = format!(
                "import os, subprocess, sys\nsys.stdout.write('a' * {n})\n\
                 os.write(2, b'b' * {n})\nsubprocess.run(['sh', '-c', 'printf c'])\n{n}"
            );
            for round in 0..3 {
                let (o, c) = run(&mut rt, &code);
                assert!(o.error.is_none(), "{n}/{round}");
                let out = c.text(StreamName::Stdout);
                assert!(
                    out.len() == n + 1 && out.ends_with('c') && out[..n].bytes().all(|b| b == b'a'),
                    "{n}/{round}: stdout of {} bytes",
                    out.len()
                );
                assert_eq!(c.text(StreamName::Stderr).len(), n, "{n}/{round}");
                assert_eq!(plain(&o.result), n.to_string(), "{n}/{round}");
            }
        }
        let (o, c) = run(&mut rt, "pass");
        assert!(o.error.is_none() && c.items().is_empty(), "{:?}", c.items());
    }

    /// A child that keeps writing into the cell's stdout (the pipe never empties) does not hold
    /// the cell's end: it waits for the output written before it, not for a quiet pipe.
    #[test]
    fn a_child_that_keeps_writing_does_not_hold_the_cells_end() {
        let mut rt = runtime_with(None);
        let (o, _) = run(
            &mut rt,
            "import subprocess\np = subprocess.Popen(['sh', '-c', 'while :; do echo y; done'])\n\
             import time; time.sleep(0.2)\nprint('started', flush=True)",
        );
        assert!(o.error.is_none());
        for _ in 0..5 {
            // one write (print writes the text and its newline apart: a "y" may come between)
            let (o, c) = run(&mut rt, "import os; os.write(1, b'next\\n')");
            assert!(o.error.is_none());
            assert!(c.text(StreamName::Stdout).contains("next\n"));
        }
        let (o, _) = run(&mut rt, "p.kill(); p.wait(); print('stopped')");
        assert!(o.error.is_none());
    }

    #[test]
    fn interrupt_stops_a_busy_loop_and_keeps_state() {
        let mut rt = runtime_with(None);
        run(&mut rt, "kept = 'yes'");
        let o = execute_interrupted(
            &mut rt,
            "print('spinning', flush=True)\nwhile True: pass",
            "spinning",
            || {},
        )
        .unwrap();
        assert_eq!(o.error.expect("interrupted").ename, "KeyboardInterrupt");
        let (o, _) = run(&mut rt, "kept");
        assert_eq!(plain(&o.result), "'yes'");
    }

    #[test]
    fn a_worker_that_ignores_interrupts_is_killed_and_restarted() {
        let mut rt = runtime_with(None);
        let e = execute_interrupted(
            &mut rt,
            "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nprint('deaf', flush=True)\nwhile True: pass",
            "deaf",
            || {},
        )
        .unwrap_err();
        assert!(matches!(e, RuntimeError::Died { .. }));
        assert!(e.to_string().contains("did not stop"), "{e}");
        let (o, c) = run(&mut rt, "1 + 1");
        assert_eq!(plain(&o.result), "2");
        assert!(c.text(StreamName::Stderr).contains("are gone"));
    }

    #[test]
    fn crashes_are_described_and_the_next_cell_works() {
        let mut rt = runtime_with(None);
        for (code, says) in [
            (
                "print('bye')\nimport os\nos._exit(1)",
                "exited with status 1",
            ),
            ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
            (
                "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
                "SIGKILL",
            ),
        ] {
            run(&mut rt, "lost = 1");
            let c = Collector::default();
            let mut out = c.clone();
            let e = rt.execute(code, &mut out).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
            assert!(e.to_string().contains("state"), "{e}");
            if code.contains("bye") {
                assert_eq!(c.text(StreamName::Stdout), "bye\n");
            }
            let (o, c) = run(&mut rt, "'lost' in dir()");
            assert_eq!(plain(&o.result), "False");
            assert!(c.text(StreamName::Stderr).contains(says));
        }
    }

    #[test]
    fn plain_python_without_ipython() {
        let dir = tempfile::tempdir().unwrap();
        // -S: no site-packages, hence no IPython
        let mut rt = runtime_wrapped(dir.path(), "", "-S");
        let (o, c) = run(
            &mut rt,
            "class H:\n    def _repr_html_(self): return '<b>h</b>'\nprint('p')\ndisplay(H())\nH()",
        );
        assert!(o.error.is_none(), "{o:?}");
        assert!(rt.ipython_version().is_none());
        assert_eq!(c.text(StreamName::Stdout), "p\n");
        let r = o.result.expect("result");
        assert_eq!(r.text("text/html"), Some("<b>h</b>"));
        assert!(
            matches!(&c.items()[1], Collected::Display(b, None) if b.text("text/html").is_some())
        );
        let (o, _) = run(&mut rt, "def f():\n    raise ValueError('bad')\nf()");
        let e = o.error.expect("error");
        assert_eq!((e.ename.as_str(), e.evalue.as_str()), ("ValueError", "bad"));
        assert!(e.traceback.join("").contains("raise ValueError('bad')"));
        assert!(!e.traceback.join("").contains("carbon driver"));
        let (o, _) = run(&mut rt, "def g(:");
        assert_eq!(o.error.expect("error").ename, "SyntaxError");
        assert_eq!(
            rt.is_complete("if x:"),
            Completeness::Incomplete("    ".into())
        );
        assert!(rt.complete("pri", 3).matches.contains(&"print".to_string()));
    }

    #[test]
    fn missing_or_old_python_is_unavailable() {
        let mut rt = runtime_with(Some(Path::new("/nonexistent/python")));
        let e = rt.start().unwrap_err();
        assert!(matches!(e, RuntimeError::Unavailable { .. }));
        assert!(e.to_string().contains("CARBON_PYTHON"), "{e}");
        assert_eq!(rt.info().name, "python"); // info never needs the child

        let dir = tempfile::tempdir().unwrap();
        let py = system_python();
        // the real bootstrap, on an interpreter that reports 3.7
        let old = wrapper(
            dir.path(),
            "old",
            &format!(
                "exec '{}' -c 'import sys; sys.version_info = (3, 7, 9); sys.version = \"3.7.9 (fake)\"; exec(sys.argv[-1])' \"$@\"",
                py.display()
            ),
        );
        let mut rt = runtime_with(Some(&old));
        let e = rt.start().unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("3.7.9") && msg.contains("CARBON_PYTHON"),
            "{msg}"
        );
    }

    #[test]
    fn a_prestarted_worker_serves_the_first_cell_and_failures_surface_there() {
        // prestart returns before the worker is ready: its python cannot start until a gate
        // file exists, opened only once prestart returned (or, if prestart waited for the
        // worker, by a thread after a bound, which the check after prestart then sees). The
        // first cell uses that same worker.
        let dir = tempfile::tempdir().unwrap();
        let gate = dir.path().join("gate");
        let py = python_executable(&Settings::empty()).expect("a python");
        let gated = wrapper(
            dir.path(),
            "gated-start",
            &format!(
                "while [ ! -e '{g}' ]; do sleep 0.01; done\nexec '{}' \"$@\"",
                py.display(),
                g = gate.display()
            ),
        );
        {
            // bound only: a prestart that waits for "ready" must not hang the test
            let gate = gate.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(30));
                let _ = std::fs::write(gate, "");
            });
        }
        let mut rt = runtime_with(Some(&gated));
        rt.prestart();
        assert!(!gate.exists(), "prestart waited for the worker");
        let early = rt.pids();
        assert_eq!(early.len(), 1);
        rt.prestart(); // idempotent: still one worker
        assert_eq!(rt.pids(), early);
        std::fs::write(&gate, "").unwrap();
        let (o, _) = run(&mut rt, "import os; os.getpid()");
        assert!(o.error.is_none(), "{o:?}");
        assert_eq!(plain(&o.result), early[0].to_string());

        // shutdown while it is still starting kills it
        let mut rt = runtime_with(None);
        rt.prestart();
        let pid = rt.pids()[0];
        rt.shutdown();
        assert!(rt.pids().is_empty());
        let procfs = carbon_magics::carbon::procfs::ProcReader::new("/proc");
        assert!(procfs.stat_line(pid, |l| l.state != 'Z') != Some(true));

        // a worker that dies while starting: the first cell gets the usual error, the next
        // cell starts a fresh worker
        let dir = tempfile::tempdir().unwrap();
        let py = system_python();
        let flaky = wrapper(
            dir.path(),
            "flaky",
            &format!(
                "if [ ! -e '{m}' ]; then touch '{m}'; echo 'no luck' >&2; exit 7; fi\nexec '{}' \"$@\"",
                py.display(),
                m = dir.path().join("tried").display()
            ),
        );
        let mut rt = runtime_with(Some(&flaky));
        rt.prestart();
        let c = Collector::default();
        let mut out = c.clone();
        let e = rt.execute("1", &mut out).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, RuntimeError::Unavailable { .. })
                && msg.contains("exited with status 7")
                && msg.contains("no luck"),
            "{msg}"
        );
        let (o, _) = run(&mut rt, "6 * 7");
        assert_eq!(plain(&o.result), "42");
    }

    /// The sitecustomize that holds `import IPython` back until a gate file exists.
    const GATE_SITECUSTOMIZE: &str =
        include_str!("../../../tests/e2e/fixtures/python/sitecustomize.py");

    /// The test's python (with IPython), wrapped so that its `import IPython` waits for the file
    /// `gate` and then writes `gate.imported`: (python, gate). None (skipped) without IPython.
    fn gated_python(dir: &Path) -> Option<(PathBuf, PathBuf)> {
        let py = python_executable(&Settings::empty()).expect("a python");
        let has_ipython = Command::new(&py)
            .args(["-c", "import IPython"])
            .status()
            .is_ok_and(|s| s.success());
        if !has_ipython {
            eprintln!("skipped: no IPython in {}", py.display());
            return None;
        }
        std::fs::write(dir.join("sitecustomize.py"), GATE_SITECUSTOMIZE).unwrap();
        let gate = dir.join("gate");
        let w = wrapper(
            dir,
            "gated-python",
            &format!(
                "PYTHONPATH='{d}' CARBON_TEST_IPYTHON_GATE='{g}' exec '{}' \"$@\"",
                py.display(),
                d = dir.display(),
                g = gate.display()
            ),
        );
        Some((w, gate))
    }

    /// Runs `code`; a thread opens `gate` once the cell printed `signal` (so the cell started
    /// before IPython's import could finish).
    fn run_then_open(rt: &mut PythonRuntime, code: &str, signal: &str, gate: &Path) -> ExecOutcome {
        let c = Collector::default();
        let mut out = c.clone();
        let (watcher, signal, gate) = (c.clone(), signal.to_string(), gate.to_path_buf());
        let t = std::thread::spawn(move || {
            while !watcher.text(StreamName::Stdout).contains(&signal) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::fs::write(gate, "").unwrap();
        });
        let o = rt.execute(code, &mut out).expect("runtime failure");
        t.join().unwrap();
        o
    }

    const EARLY_CELLS: [&str; 3] = [
        "x = 1\nimport math\ny = math.sqrt(16)\nprint('early', y)",
        "def f():\n    return 1 / 0\nprint(None)",
        "print('raising', flush=True)\nz = f()",
    ];

    #[test]
    fn the_first_cells_run_before_ipython_and_ipython_takes_over_their_state() {
        let dir = tempfile::tempdir().unwrap();
        let Some((py, gate)) = gated_python(dir.path()) else {
            return;
        };
        let imported = dir.path().join("gate.imported");
        let mut rt = runtime_with(Some(&py));
        let (o, c) = run(&mut rt, EARLY_CELLS[0]);
        assert!(o.error.is_none() && o.result.is_none(), "{o:?}");
        assert_eq!(c.text(StreamName::Stdout), "early 4.0\n");
        let (o, _) = run(&mut rt, EARLY_CELLS[1]);
        assert!(o.error.is_none() && o.result.is_none(), "{o:?}");
        // both ran while IPython's import was held back
        assert!(!imported.exists());
        assert!(rt.ipython_version().is_none());

        // an early cell that raises: its error waits for IPython and is IPython's
        let early = run_then_open(&mut rt, EARLY_CELLS[2], "raising", &gate);
        assert!(imported.exists());
        assert!(rt.ipython_version().is_some());
        let e = early.error.clone().expect("error");
        assert_eq!(e.ename, "ZeroDivisionError");
        let tb = strip_ansi(&e.traceback.join("\n"));
        assert!(
            tb.contains("Cell In[3], line 2") && tb.contains("Cell In[2], line 2"),
            "{tb}"
        );
        assert!(!tb.contains("carbon driver"), "{tb}");

        // the state survives the switch, and IPython counts the early cells as its own
        let (o, _) = run(&mut rt, "x + y");
        assert_eq!(plain(&o.result), "5.0");
        let (o, _) = run(
            &mut rt,
            "In[1].splitlines()[0], len(In), Out[4], _i2.split()[1]",
        );
        assert_eq!(plain(&o.result), "('x = 1', 6, 5.0, 'f():')");
        let (o, c) = run(&mut rt, "%who");
        assert!(o.error.is_none(), "{o:?}");
        assert!(
            c.text(StreamName::Stdout).contains("math"),
            "{:?}",
            c.items()
        );

        // the same cells with IPython in from the start: the same outcome, traceback included
        let mut late = runtime_with(None);
        late.language_magics().expect("IPython's magics"); // waits for IPython
        assert!(late.ipython_version().is_some());
        for (i, code) in EARLY_CELLS.iter().enumerate() {
            let (o, _) = run(&mut late, code);
            if i == 2 {
                assert_eq!(o, early);
            }
        }
    }

    #[test]
    fn early_cells_not_stored_stay_out_of_ipythons_count_and_history() {
        let dir = tempfile::tempdir().unwrap();
        let Some((py, gate)) = gated_python(dir.path()) else {
            return;
        };
        let imported = dir.path().join("gate.imported");
        let mut rt = runtime_with(Some(&py));
        let (o, _) = run(&mut rt, EARLY_CELLS[1]);
        assert!(o.error.is_none(), "{o:?}");
        let (o, _) = run_with(&mut rt, "y = 2\nprint(None)", NOT_STORED);
        assert!(o.error.is_none(), "{o:?}");
        // a silent cell's value is not shown: it needs no IPython either
        let (o, _) = run_with(&mut rt, "w = 3\nw", SILENT);
        assert!(o.error.is_none() && o.result.is_none(), "{o:?}");
        assert!(!imported.exists() && rt.ipython_version().is_none());

        // the second stored cell: In[2] for IPython once it takes over
        let early = run_then_open(&mut rt, EARLY_CELLS[2], "raising", &gate);
        assert!(rt.ipython_version().is_some());
        let e = early.error.expect("error");
        let tb = strip_ansi(&e.traceback.join("\n"));
        assert!(
            tb.contains("Cell In[2], line 2") && tb.contains("Cell In[1], line 2"),
            "{tb}"
        );
        let (o, _) = run(&mut rt, "len(In), In[2].split()[0], y + w");
        assert_eq!(plain(&o.result), "(4, \"print('raising',\", 5)");
    }

    #[test]
    fn cells_that_ran_elsewhere_before_ipython_count_when_it_takes_over() {
        let dir = tempfile::tempdir().unwrap();
        let Some((py, gate)) = gated_python(dir.path()) else {
            return;
        };
        let imported = dir.path().join("gate.imported");
        let mut rt = runtime_with(Some(&py));
        rt.count_unrun_cell("%carbon on");
        let (o, _) = run(&mut rt, EARLY_CELLS[1]);
        assert!(o.error.is_none(), "{o:?}");
        rt.count_unrun_cell("%carbon status");
        assert!(!imported.exists() && rt.ipython_version().is_none());
        // the kernel's fourth cell, run before IPython: named In[4], its f from In[2]
        let early = run_then_open(&mut rt, EARLY_CELLS[2], "raising", &gate);
        assert!(rt.ipython_version().is_some());
        let tb = strip_ansi(&early.error.expect("error").traceback.join("\n"));
        assert!(
            tb.contains("Cell In[4], line 2") && tb.contains("Cell In[2], line 2"),
            "{tb}"
        );
        let (o, _) = run(&mut rt, "len(In), In[1], In[3]");
        assert_eq!(plain(&o.result), "(6, '%carbon on', '%carbon status')");
    }

    #[test]
    fn an_early_cell_interrupted_while_ipython_loads_keeps_its_worker() {
        let dir = tempfile::tempdir().unwrap();
        let Some((py, gate)) = gated_python(dir.path()) else {
            return;
        };
        let mut rt = runtime_with(Some(&py));
        run(&mut rt, "kept = 'yes'");
        let o = execute_interrupted(
            &mut rt,
            "print('spinning', flush=True)\nwhile True: pass",
            "spinning",
            move || {
                // IPython (to show the KeyboardInterrupt) comes later than the kernel's escalation
                // to SIGKILL would: the worker said it handled the interrupt, so it is not killed
                std::thread::sleep(ESCALATION_DELAY + Duration::from_secs(1));
                std::fs::write(gate, "").unwrap();
            },
        )
        .expect("the worker was killed");
        let e = o.error.expect("interrupted");
        assert_eq!(e.ename, "KeyboardInterrupt");
        let tb = strip_ansi(&e.traceback.join("\n"));
        assert!(tb.contains("Cell In[2], line 2"), "{tb}");
        let (o, _) = run(&mut rt, "kept");
        assert_eq!(plain(&o.result), "'yes'");
    }

    #[test]
    fn a_first_cell_that_needs_ipython_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let Some((py, gate)) = gated_python(dir.path()) else {
            return;
        };
        let mut rt = runtime_with(Some(&py));
        // a magic, then a value to show: both need IPython (the second its displayhook)
        let opener = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                // after the cell was sent (it cannot end before this: the import waits for it)
                std::thread::sleep(Duration::from_millis(300));
                std::fs::write(gate, "").unwrap();
            })
        };
        let (o, c) = run(&mut rt, "%time t = 6 * 7");
        opener.join().unwrap();
        assert!(o.error.is_none(), "{o:?}");
        assert!(
            c.text(StreamName::Stdout).contains("Wall time"),
            "{:?}",
            c.items()
        );
        assert!(rt.ipython_version().is_some());
        let (o, _) = run(&mut rt, "t");
        assert_eq!(plain(&o.result), "42");
    }

    #[test]
    fn a_broken_ipython_leaves_the_plain_runner_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("IPython");
        std::fs::create_dir(&pkg).unwrap();
        std::fs::write(
            pkg.join("__init__.py"),
            "raise RuntimeError('broken for the test')\n",
        )
        .unwrap();
        let env = format!("PYTHONPATH='{}'", dir.path().display());
        let mut rt = runtime_wrapped(dir.path(), &env, "");
        let (o1, c1) = run(&mut rt, "x = 1");
        assert!(o1.error.is_none(), "{o1:?}");
        let (o2, c2) = run(&mut rt, "x + 1");
        assert_eq!(plain(&o2.result), "2");
        assert!(rt.ipython_version().is_none());
        let said = c1.text(StreamName::Stderr) + &c2.text(StreamName::Stderr);
        assert!(
            said.contains("IPython failed to start (RuntimeError: broken for the test)"),
            "{said}"
        );
    }

    #[test]
    fn matplotlib_figures_show_inline_when_available() {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        let probe = Command::new(&venv)
            .args(["-c", "import matplotlib"])
            .status();
        if !probe.map(|s| s.success()).unwrap_or(false) {
            eprintln!("skipped: no matplotlib in {}", venv.display());
            return;
        }
        let mut rt = runtime_with(Some(&venv));
        let (o, c) = run(
            &mut rt,
            "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nprint('drawn')",
        );
        assert!(o.error.is_none(), "{o:?}");
        let items = c.items();
        assert!(
            items.iter().any(|i| matches!(i, Collected::Display(b, _)
                if b.data.contains_key("image/png"))),
            "{items:?}"
        );
        // figures are closed after being shown
        let (o, _) = run(&mut rt, "len(plt.get_fignums())");
        assert_eq!(plain(&o.result), "0");
        // plt.show() shows the figure where it is called, without Agg's "cannot show" warning
        let (o, c) = run(&mut rt, "print('a')\nplt.plot([1])\nplt.show()\nprint('b')");
        assert!(o.error.is_none(), "{o:?}");
        let kinds: Vec<&str> = c
            .items()
            .iter()
            .map(|i| match i {
                Collected::Stream(StreamName::Stdout, t) if t == "a\n" => "a",
                Collected::Stream(StreamName::Stdout, t) if t == "b\n" => "b",
                Collected::Display(b, _) if b.data.contains_key("image/png") => "png",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["a", "png", "b"]);
        // pandas tables are HTML
        let (o, _) = run(&mut rt, "import pandas as pd\npd.DataFrame({'a': [1, 2]})");
        let r = o.result.expect("result");
        assert!(
            r.text("text/html").is_some_and(|h| h.contains("<table")),
            "{r:?}"
        );
    }

    #[test]
    fn the_driver_fits_in_an_environment_variable() {
        // Linux caps one environment string at 32 pages (MAX_ARG_STRLEN, execve(2)).
        assert!(DRIVER.len() < 128 * 1024 - 64);
    }
}
