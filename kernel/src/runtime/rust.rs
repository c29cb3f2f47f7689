//! Rust cells through the `evcxr` crate, embedded in the kernel process.
//!
//! evcxr compiles each cell with cargo into a cdylib and runs it in a **child process**: the kernel
//! binary itself, re-executed with `EVCXR_IS_RUNTIME=1` (that is why `main` calls
//! `evcxr::runtime_hook()` first). Variables live in that child; fns, types and `use` items live in
//! evcxr's state in the kernel and are recompiled into every cell.
//!
//! What this module adds around evcxr's [`CommandContext`]:
//!
//! * **Lazy start**: nothing of evcxr runs before the first Rust cell (or completion);
//!   `EvalContext::new` takes ~4 s because it compiles `42` to warm up
//!   (shared/reference/jupyter-kernel.md §2).
//! * **Live output**: evcxr hands the child's stdout/stderr lines to two channels; a pump thread
//!   forwards them through [`Publish::stream`] while the cell runs.
//! * **Compile/run split**: evcxr reports its phases (`EvalOutputs::phases`) only after the fact and
//!   has no callback at the moment user code starts. So each cell gets one generated first line that
//!   prints a marker ([`RUN_MARKER`]) on the child's stdout; the pump sees it and calls
//!   [`Publish::phase`]`(Phase::Run)` on the spot. Errors' line numbers are shifted back by that line.
//! * **Panics as errors**: evcxr catches a panic, prints the default hook's message and backtrace on
//!   stderr and returns `Ok`. The same generated line installs a panic hook in the child that
//!   reports the message on stdout ([`PANIC_MARKER`]), so the cell ends with `ename = "panic"`.
//! * **Interrupt**: as evcxr_jupyter does, the child is killed (its variables are lost; evcxr
//!   restarts it). While the cell is still compiling, the cargo processes are killed instead, which
//!   keeps every variable.
//! * **Crash of the child** (`std::process::abort`, segfault): evcxr restarts the child itself; the
//!   cell reports which signal killed it and that the variables are gone.

use super::child;
use super::{
    Completeness, Completions, ExecError, ExecOutcome, Inspection, InterruptHandle, Language,
    LanguageInfo, Phase, Publish, Runtime, RuntimeError, StreamName,
};
use carbon_magics::MimeBundle;
use carbon_magics::carbon::procfs::ProcReader;
use carbon_magics::config::Settings;
use evcxr::{CommandContext, CompilationError, EvalCallbacks, EvalContext, EvalContextOutputs};
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

/// Printed by the child on its own stdout line when the cell's code starts running.
pub const RUN_MARKER: &str = "\u{1}CARBON_RUN";
/// Prefix of the line the child's panic hook prints: `MARKER \x01 line \x01 message`, where line is
/// the panic's line in evcxr's generated `lib.rs` (0 when elsewhere) and newlines are `\x02`.
pub const PANIC_MARKER: &str = "\u{1}CARBON_PANIC";

/// Put in front of the first cell of each evcxr child (and again after evcxr restarts it): installs
/// a panic hook in the child. The hook stays valid because evcxr never unloads a cell's cdylib;
/// compiling it only once keeps later cells as cheap as bare evcxr (bench/rust_bench.py). The hook
/// tells the cell's thread by its id (the cdylib's std does not know the child's main thread by
/// name); panics of other threads keep a one-line report on stderr and do not fail the cell, like
/// Python's threads. A hook the user installs replaces ours for the rest of that child's life
/// (panics then show on stderr only). The line must not start with `:` (evcxr would take it for
/// a `:command`).
const HOOK_PRELUDE: &str = r#"std::panic::set_hook({ let carbon_cell_thread = ::std::thread::current().id(); ::std::boxed::Box::new(move |carbon_info| { let carbon_msg = if let Some(s) = carbon_info.payload().downcast_ref::<&str>() { s.to_string() } else if let Some(s) = carbon_info.payload().downcast_ref::<::std::string::String>() { s.clone() } else { ::std::string::String::from("Box<dyn Any>") }; let carbon_thread = ::std::thread::current(); if carbon_thread.id() == carbon_cell_thread { let carbon_line = carbon_info.location().filter(|l| l.file().ends_with("lib.rs")).map_or(0, |l| l.line()); println!("\u{1}CARBON_PANIC\u{1}{}\u{1}{}", carbon_line, carbon_msg.replace('\n', "\u{2}")); } else { eprintln!("thread '{}' panicked: {}", carbon_thread.name().unwrap_or("<unnamed>"), carbon_msg); } }) }); "#;
/// The generated first line of every cell with code: prints [`RUN_MARKER`] when the code starts.
const RUN_PRELUDE: &str = r#"println!("\u{1}CARBON_RUN");"#;

/// How long the pump keeps listening to stderr after evcxr returned. evcxr reads the child's
/// stderr on its own thread and only waits for stdout at the end of a cell, so the last stderr
/// lines can arrive a moment later. 5 ms is 2 % of the ~250 ms of the cheapest cell (measured,
/// shared/reference/jupyter-kernel.md §2). A line later than that is not lost: [`Between`]
/// publishes it under the same cell.
const STDERR_GRACE: Duration = Duration::from_millis(5);
/// Poll period of the pump (it also re-applies a pending interrupt, e.g. to a cargo started after
/// the interrupt arrived). It bounds how long the end of a cell waits for the pump to notice: at
/// 10 ms that cost ~5 ms per cell, a measurable share of a ~250 ms cell in bench/rust_bench.py;
/// 2 ms wakes the thread 500 times a second while a cell runs, negligible CPU.
const PUMP_TICK: Duration = Duration::from_millis(2);

/// Prefix of a stdout line of the child that a background thread wrote between cells; the
/// child sends it on stderr, which evcxr reads all the time (see [`child_hook`]).
const LATE_STDOUT: &str = "\u{1}CARBON_OUT";
/// evcxr's line after a cell's code (`evcxr::runtime::EVCXR_EXECUTION_COMPLETE`, 0.22, private).
const EVCXR_COMPLETE: &[u8] = b"EVCXR_EXECUTION_COMPLETE\n";

/// Run first in `main`: in evcxr's child only (`EVCXR_IS_RUNTIME`), puts the child's stdin and
/// stdout behind pipes of its own. evcxr reads the child's stdout only while a cell runs, up to
/// its end-of-cell line; between that line and evcxr's next command, stdout lines (of background
/// threads) go to stderr behind `LATE_STDOUT`, which the kernel publishes as stdout at once.
pub fn child_hook() {
    if std::env::var_os("EVCXR_IS_RUNTIME").is_none() {
        return;
    }
    if let Err(e) = interpose() {
        eprintln!("carbon: output of background threads waits for the next cell: {e}");
    }
}

fn interpose() -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, BufWriter, Write};
    use std::os::fd::AsFd;
    let orig_in = std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let orig_out = std::fs::File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
    let (in_r, mut in_w) = std::io::pipe()?;
    let (out_r, out_w) = std::io::pipe()?;
    child::replace_fd(0, in_r.as_fd())?;
    child::replace_fd(1, out_w.as_fd())?;
    drop((in_r, out_w));
    // evcxr's commands: one arriving means a cell runs until evcxr's end-of-cell line
    let busy = Arc::new(AtomicBool::new(false));
    let b = busy.clone();
    std::thread::Builder::new()
        .name("carbon-child-in".into())
        .spawn(move || {
            let mut r = BufReader::new(orig_in);
            let mut line = Vec::new();
            // at the end of evcxr's commands, dropping `in_w` ends the child's loop
            while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                b.store(true, Ordering::SeqCst);
                if in_w.write_all(&line).is_err() {
                    return;
                }
                line.clear();
            }
        })?;
    std::thread::Builder::new()
        .name("carbon-child-out".into())
        .spawn(move || {
            let mut r = BufReader::new(out_r);
            let mut o = BufWriter::new(orig_out);
            let mut line = Vec::new();
            while matches!(r.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if busy.load(Ordering::SeqCst) {
                    if o.write_all(&line).is_err() {
                        return;
                    }
                    if line == EVCXR_COMPLETE {
                        busy.store(false, Ordering::SeqCst);
                    }
                    if (line == EVCXR_COMPLETE || r.buffer().is_empty()) && o.flush().is_err() {
                        return;
                    }
                } else {
                    let text = String::from_utf8_lossy(&line);
                    eprint!("{LATE_STDOUT}{text}");
                }
                line.clear();
            }
        })?;
    Ok(())
}

/// Publishes one stderr line of evcxr's child (a [`LATE_STDOUT`] line as stdout).
fn publish_stderr_line(out: &mut dyn Publish, line: &str) {
    match line.strip_prefix(LATE_STDOUT) {
        Some(l) => out.stream(StreamName::Stdout, &format!("{l}\n")),
        None => out.stream(StreamName::Stderr, &format!("{line}\n")),
    }
}

/// Poll period of [`Between`] (a stop request waits at most this long). 20 ms keeps a
/// background thread's line well under the ~100 ms a reader perceives as at once, and wakes an
/// idle kernel 50 times a second, negligible CPU.
const BETWEEN_TICK: Duration = Duration::from_millis(20);

/// Publishes the child's output between cells under the last cell, as ipykernel publishes a
/// background thread's output under the cell that started it (see the `idle` module). It owns
/// clones of evcxr's receivers until [`Between::stop`]: the next cell's pump is then the only
/// reader, so no line goes to the wrong cell. evcxr 0.22 reads the child's stderr all the time
/// (a thread of its own) but its stdout only inside `execute` (`ChildProcess::recv_line`): the
/// child sends a background thread's stdout lines on stderr between cells ([`child_hook`]).
struct Between {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Between {
    fn start(outputs: EvalContextOutputs, mut out: Box<dyn Publish>) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("carbon-rust-idle".into())
            .spawn(move || {
                let EvalContextOutputs { stdout, stderr } = outputs;
                while !flag.load(Ordering::SeqCst) {
                    while let Ok(line) = stderr.try_recv() {
                        publish_stderr_line(&mut *out, &line);
                    }
                    match stdout.recv_timeout(BETWEEN_TICK) {
                        Ok(line) => out.stream(StreamName::Stdout, &format!("{line}\n")),
                        Err(e) if e.is_disconnected() => return,
                        Err(_) => {}
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Ends the thread; what it did not read stays for the next cell.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Between {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// State shared with the interrupt handle (called from the server's control thread) and the pump.
#[derive(Default)]
struct Shared {
    /// evcxr's handle of its child; stays valid across evcxr's restarts of the child.
    child: Mutex<Option<Arc<Mutex<Child>>>>,
    /// An interrupt arrived for the cell running now.
    interrupted: AtomicBool,
    /// A cell is being evaluated (compile or run).
    busy: AtomicBool,
    /// The cell's code has started running (the pump saw [`RUN_MARKER`]).
    running: AtomicBool,
    /// The child that runs the cell's code (its pid when the cell started; 0: unknown): an
    /// interrupt kills that one only, never the child evcxr starts in its place while the cell
    /// winds down.
    run_pid: AtomicU32,
}

impl Shared {
    fn child_pid(&self) -> Option<u32> {
        let slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
        let child = slot.as_ref()?;
        let pid = child.lock().unwrap_or_else(|e| e.into_inner()).id();
        Some(pid)
    }

    /// Applies a pending interrupt: kills the child once user code runs, or cargo (and everything
    /// under it) while the cell compiles, so a cell is never left running after an interrupt.
    fn enforce_interrupt(&self) {
        if !self.interrupted.load(Ordering::SeqCst) || !self.busy.load(Ordering::SeqCst) {
            return;
        }
        if self.running.load(Ordering::SeqCst) {
            let slot = self.child.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(child) = slot.as_ref() {
                // try_lock: evcxr holds this lock only while it reaps a child that already died.
                // The pid check: the pump re-applies the interrupt every tick until the cell ends,
                // and by then evcxr may have respawned the child we killed (seen under load: the
                // next cell found its fresh child SIGKILLed).
                let run_pid = self.run_pid.load(Ordering::SeqCst);
                if let Ok(mut c) = child.try_lock()
                    && (run_pid == 0 || c.id() == run_pid)
                {
                    let _ = c.kill();
                }
            }
        } else {
            kill_cargo_trees(std::process::id());
        }
    }
}

/// A live evcxr context and the receiving ends of its output channels.
struct Session {
    ctx: CommandContext,
    /// Receivers of the child's stdout/stderr lines (crossbeam channels, cloned for each pump).
    outputs: EvalContextOutputs,
}

/// The Rust back-end (evcxr in-process, user code in evcxr's child).
pub struct RustRuntime {
    session: Option<Session>,
    shared: Arc<Shared>,
    /// `rustc --version`, computed on the first `info()`.
    version: OnceLock<String>,
    /// The binary evcxr re-executes as its child; `None` = this executable.
    runtime_exe: Option<PathBuf>,
    /// PATH used to look for the toolchain; `None` = the process's PATH.
    path_override: Option<OsString>,
    /// pid of the evcxr child that has our panic hook (see [`HOOK_PRELUDE`]).
    hook_pid: Option<u32>,
    /// Between cells: the last cell's late output (see [`Between`]).
    between: Option<Between>,
}

impl RustRuntime {
    /// A runtime that starts lazily (on the first Rust cell or completion request).
    pub fn new(_settings: &Settings) -> Self {
        Self {
            session: None,
            shared: Arc::new(Shared::default()),
            version: OnceLock::new(),
            runtime_exe: None,
            path_override: None,
            hook_pid: None,
            between: None,
        }
    }

    /// Uses `exe` as evcxr's child instead of the current executable. The binary must call
    /// `evcxr::runtime_hook()` first thing (tests use this; the kernel binary does it in `main`).
    #[doc(hidden)]
    pub fn with_runtime_exe(mut self, exe: PathBuf) -> Self {
        self.runtime_exe = Some(exe);
        self
    }

    /// Looks for the toolchain in `path` instead of `$PATH` (tests of the missing-toolchain error).
    #[doc(hidden)]
    pub fn with_path(mut self, path: OsString) -> Self {
        self.path_override = Some(path);
        self
    }

    fn path_var(&self) -> OsString {
        self.path_override
            .clone()
            .or_else(|| std::env::var_os("PATH"))
            .unwrap_or_default()
    }
}

/// Checks that evcxr can work with `path`: `cargo` and `rustc` (evcxr runs both by name) and a C
/// linker (`cc`, which rustc drives to link). Returns the path of `rustc`.
pub fn check_toolchain(path: &OsStr) -> Result<PathBuf, RuntimeError> {
    let unavailable = |reason: String| RuntimeError::Unavailable {
        language: "rust",
        reason,
    };
    let missing: Vec<&str> = ["cargo", "rustc"]
        .into_iter()
        .filter(|t| child::find_program_in(t, path).is_none())
        .collect();
    if !missing.is_empty() {
        let mut reason = format!(
            "{} not found on PATH; install the Rust toolchain with rustup \
             (https://rustup.rs, then `rustup default stable`) and restart the kernel",
            missing
                .iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(" and ")
        );
        if let Some(home) = std::env::var_os("HOME") {
            let bin = Path::new(&home).join(".cargo/bin");
            if bin.join("cargo").is_file() {
                reason.push_str(&format!(
                    " (rustup's {} exists but is not on the kernel's PATH: add it)",
                    bin.display()
                ));
            }
        }
        return Err(unavailable(reason));
    }
    let rustc = child::find_program_in("rustc", path).unwrap_or_else(|| PathBuf::from("rustc"));
    match Command::new(&rustc)
        .arg("--version")
        .env("PATH", path)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(unavailable(format!(
                "`rustc --version` failed ({}): {}; with rustup, run `rustup default stable`",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        Err(e) => return Err(unavailable(format!("cannot run {}: {e}", rustc.display()))),
    }
    if child::find_program_in("cc", path).is_none() {
        return Err(unavailable(
            "no C linker (`cc`) on PATH; rustc needs one to link each cell: install gcc or clang \
             (Debian/Ubuntu: `apt install build-essential`)"
                .into(),
        ));
    }
    Ok(rustc)
}

/// `rustc --version` of `path`'s rustc, e.g. `1.95.0`; empty when it does not run.
fn rustc_version(path: &OsStr) -> String {
    let Some(rustc) = child::find_program_in("rustc", path) else {
        return String::new();
    };
    Command::new(rustc)
        .arg("--version")
        .env("PATH", path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            // "rustc 1.95.0 (59807616e 2026-04-14)" → "1.95.0"
            text.split_whitespace().nth(1).unwrap_or("").to_string()
        })
        .unwrap_or_default()
}

/// (pid, parent pid, command name) of every process, from `/proc/*/stat`.
fn process_table() -> Vec<(u32, u32, String)> {
    let mut table = Vec::new();
    ProcReader::new("/proc").for_each_process(0, |l| {
        table.push((l.stat.pid, l.stat.ppid, l.comm.to_string()));
    });
    table
}

/// Kills every `cargo` that is a direct child of `parent`, with all of its descendants (rustc, the
/// linker, build scripts). evcxr runs cargo as a child of the kernel process.
fn kill_cargo_trees(parent: u32) {
    let table = process_table();
    let mut doomed: Vec<u32> = table
        .iter()
        .filter(|(_, ppid, comm)| *ppid == parent && comm == "cargo")
        .map(|(pid, _, _)| *pid)
        .collect();
    let mut i = 0;
    while i < doomed.len() {
        let p = doomed[i];
        doomed.extend(
            table
                .iter()
                .filter(|(_, ppid, _)| *ppid == p)
                .map(|(pid, _, _)| *pid),
        );
        i += 1;
    }
    for pid in doomed {
        child::signal_pid(pid, libc::SIGKILL);
    }
}

/// Adds one generated line ([`RUN_PRELUDE`], after [`HOOK_PRELUDE`] when `with_hook`) in front
/// of a cell that has code. Returns the code to run and how many
/// lines were added. Cells of only `:commands`, `!shell` lines, comments and blank lines run
/// nothing, so they get no prelude (they have no run phase).
fn instrument(code: &str, with_hook: bool) -> (String, usize) {
    let not_code = |l: &str| {
        let t = l.trim_start();
        t.is_empty() || t.starts_with(':') || t.starts_with('!') || t.starts_with("//")
    };
    let has_code = code.lines().any(|l| !not_code(l));
    if has_code {
        let hook = if with_hook { HOOK_PRELUDE } else { "" };
        // evcxr takes `:commands` only before the first line of code (`:dep x` then code in
        // one cell), so the generated line goes after them.
        let lead: usize = code
            .split_inclusive('\n')
            .take_while(|l| not_code(l))
            .map(str::len)
            .sum();
        let (head, rest) = code.split_at(lead);
        (format!("{head}{hook}{RUN_PRELUDE}\n{rest}"), 1)
    } else {
        (code.to_string(), 0)
    }
}

/// What the pump saw while the cell ran.
#[derive(Default)]
struct PumpReport {
    /// Panics of the cell's thread: line in the generated source (0 = unknown) and message.
    panics: Vec<(usize, String)>,
}

/// Forwards evcxr's output lines to `out` until `done` is set, then drains what is left.
fn pump(
    outputs: EvalContextOutputs,
    mut out: Box<dyn Publish>,
    shared: Arc<Shared>,
    done: Arc<AtomicBool>,
) -> PumpReport {
    let EvalContextOutputs { stdout, stderr } = outputs;
    let mut report = PumpReport::default();
    let on_stdout = |line: String, out: &mut Box<dyn Publish>, report: &mut PumpReport| {
        if line == RUN_MARKER {
            shared.running.store(true, Ordering::SeqCst);
            out.phase(Phase::Run);
            // An interrupt that arrived during compilation applies to the code now starting.
            shared.enforce_interrupt();
        } else if let Some(rest) = line.strip_prefix(PANIC_MARKER) {
            let rest = rest.strip_prefix('\u{1}').unwrap_or(rest);
            let (line, msg) = rest.split_once('\u{1}').unwrap_or(("0", rest));
            report
                .panics
                .push((line.parse().unwrap_or(0), msg.replace('\u{2}', "\n")));
        } else {
            out.stream(StreamName::Stdout, &format!("{line}\n"));
        }
    };
    loop {
        let finished = done.load(Ordering::SeqCst);
        while let Ok(line) = stderr.try_recv() {
            publish_stderr_line(&mut *out, &line);
        }
        if finished {
            while let Ok(line) = stdout.try_recv() {
                on_stdout(line, &mut out, &mut report);
            }
            while let Ok(line) = stderr.recv_timeout(STDERR_GRACE) {
                publish_stderr_line(&mut *out, &line);
            }
            return report;
        }
        if let Ok(line) = stdout.recv_timeout(PUMP_TICK) {
            on_stdout(line, &mut out, &mut report);
        }
        shared.enforce_interrupt();
    }
}

/// True when cargo's message says the package registry could not be reached.
fn looks_like_registry_unreachable(text: &str) -> bool {
    // cargo's wording (cargo 1.95: `download of config.json failed`, `failed to download from`,
    // curl's `[7] Could not connect to server`, `[6] Couldn't resolve host`).
    const SIGNS: [&str; 9] = [
        "failed to query replaced source registry",
        "Unable to update registry",
        "failed to download",
        "download of config.json failed",
        "Could not connect to server",
        "Couldn't resolve host",
        "network failure",
        "spurious network error",
        "failed to fetch `https://github.com/rust-lang/crates.io-index`",
    ];
    SIGNS.iter().any(|s| text.contains(s))
}

const REGISTRY_HINT: &str = "the crate registry (crates.io or the mirror configured in \
    ~/.cargo/config.toml) is unreachable from this machine: `:dep` can only use crates already \
    in the local cargo cache (try `:offline 1` first)";

/// Renders evcxr's compilation errors like rustc does: message, `--> cell:L:C`, the code line and
/// carets under the span. `shift` lines were added in front of the user's code.
fn format_compile_errors(errors: &[CompilationError], code: &str, shift: usize) -> ExecError {
    let lines: Vec<&str> = code.lines().collect();
    let mut traceback = Vec::new();
    let mut first = None;
    for e in errors {
        let message = e.message();
        let head = match e.code() {
            Some(c) => format!("{}[{c}]", e.level()),
            None => e.level().to_string(),
        };
        first.get_or_insert_with(|| message.clone());
        traceback.push(format!("\x1b[1;31m{head}\x1b[0m\x1b[1m: {message}\x1b[0m"));
        let spanned: Vec<_> = e
            .spanned_messages()
            .iter()
            .filter(|m| m.span.is_some())
            .collect();
        for (i, sm) in spanned.iter().enumerate() {
            let Some(span) = sm.span else { continue };
            let line_no = span.start_line.saturating_sub(shift);
            let Some(text) = line_no.checked_sub(1).and_then(|i| lines.get(i)) else {
                continue;
            };
            let width = line_no.to_string().len();
            let pad = " ".repeat(width);
            if i == 0 {
                traceback.push(format!(
                    "{pad}\x1b[1;34m-->\x1b[0m cell:{line_no}:{}",
                    span.start_column
                ));
                traceback.push(format!("{pad} \x1b[1;34m|\x1b[0m"));
            }
            traceback.push(format!("\x1b[1;34m{line_no} |\x1b[0m {text}"));
            let start = span.start_column.max(1) - 1;
            let end = if span.end_line == span.start_line {
                span.end_column.max(span.start_column + 1) - 1
            } else {
                text.chars().count().max(start + 1)
            };
            let mark = if sm.is_primary { '^' } else { '-' };
            traceback.push(format!(
                "{pad} \x1b[1;34m|\x1b[0m {}\x1b[1;31m{}\x1b[0m {}",
                " ".repeat(start),
                mark.to_string().repeat(end - start),
                sm.label
            ));
        }
        for help in e.help() {
            traceback.push(format!("\x1b[1;36mhelp\x1b[0m: {help}"));
        }
        if let Some(hint) = e.evcxr_extra_hint() {
            traceback.push(format!("\x1b[1;36mnote\x1b[0m: {hint}"));
        }
    }
    let evalue = first.unwrap_or_else(|| "compilation failed".into());
    let all = traceback.join("\n");
    if looks_like_registry_unreachable(&all) {
        traceback.push(format!("\x1b[1;36mnote\x1b[0m: {REGISTRY_HINT}"));
    }
    ExecError {
        ename: "CompilationError".into(),
        evalue,
        traceback,
        shown: false,
    }
}

/// Turns evcxr's `EvalOutputs` into the cell's result and displays: `text/plain` is the value of
/// the last expression (`execute_result`); every other MIME type came from an
/// `EVCXR_BEGIN_CONTENT` block (`evcxr_display`, plotters' `evcxr_figure`) and is shown as
/// `display_data`. evcxr merges all blocks of one cell into one map, so they arrive at the end.
fn split_outputs(content: HashMap<String, String>) -> (Option<MimeBundle>, Option<MimeBundle>) {
    let mut result = None;
    let mut display = MimeBundle::new();
    for (mime, text) in content {
        if mime == "text/plain" {
            result = Some(MimeBundle::plain(text));
        } else if mime.contains("json") {
            let value = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
            display = display.with(&mime, value);
        } else {
            display = display.with(&mime, text);
        }
    }
    let display = (!display.is_empty()).then_some(display);
    (result, display)
}

impl RustRuntime {
    fn session(&mut self) -> Result<&mut Session, RuntimeError> {
        self.start()?;
        self.session
            .as_mut()
            .ok_or_else(|| RuntimeError::Unavailable {
                language: "rust",
                reason: "evcxr did not start".into(),
            })
    }

    /// Drops a context whose child could not be restarted; the next cell starts a new one.
    fn discard_session_if_dead(&mut self) {
        let alive = self
            .session
            .as_ref()
            .map(|s| {
                let handle = s.ctx.process_handle();
                let mut child = handle.lock().unwrap_or_else(|e| e.into_inner());
                matches!(child.try_wait(), Ok(None))
            })
            .unwrap_or(true);
        if !alive {
            self.shutdown();
        }
    }

    fn run_cell(&mut self, code: &str, out: &mut dyn Publish) -> Result<ExecOutcome, RuntimeError> {
        let shared = Arc::clone(&self.shared);
        self.start()?;
        let child_pid = shared.child_pid();
        if let Some(pid) = child_pid {
            // evcxr waits for its child (and respawns it): never an orphan to reap
            child::claim(pid);
        }
        let with_hook = child_pid.is_none() || self.hook_pid != child_pid;
        let session = self.session()?;
        let (body, shift) = instrument(code, with_hook);
        shared
            .run_pid
            .store(child_pid.unwrap_or(0), Ordering::SeqCst);
        shared.running.store(false, Ordering::SeqCst);
        shared.busy.store(true, Ordering::SeqCst);
        out.phase(Phase::Compile);
        let done = Arc::new(AtomicBool::new(false));
        let pump_thread: JoinHandle<PumpReport> = {
            let outputs = EvalContextOutputs {
                stdout: session.outputs.stdout.clone(),
                stderr: session.outputs.stderr.clone(),
            };
            let (publisher, shared, done) = (out.boxed_clone(), Arc::clone(&shared), done.clone());
            std::thread::Builder::new()
                .name("carbon-rust-pump".into())
                .spawn(move || pump(outputs, publisher, shared, done))
                .map_err(|source| RuntimeError::Io {
                    language: "rust",
                    source,
                })?
        };
        let input_out = RefCell::new(&mut *out);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.ctx.execute_with_callbacks(
                &body,
                &mut EvalCallbacks {
                    input_reader: &|req| {
                        input_out
                            .borrow_mut()
                            .input(&req.prompt, req.is_password)
                            .unwrap_or_default()
                    },
                },
            )
        }));
        shared.busy.store(false, Ordering::SeqCst);
        done.store(true, Ordering::SeqCst);
        let report = pump_thread.join().unwrap_or_default();
        let interrupted = shared.interrupted.swap(false, Ordering::SeqCst);
        let ran = shared.running.swap(false, Ordering::SeqCst);
        if with_hook && ran {
            // Installed in that child; if it died meanwhile its pid no longer matches.
            self.hook_pid = child_pid;
        }
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                // evcxr itself panicked (its CrashGuard printed the details on stderr): start over.
                self.shutdown();
                return Err(RuntimeError::Died {
                    language: "rust",
                    how: "evcxr panicked inside the kernel".into(),
                });
            }
        };
        let outcome = match result {
            Ok(outputs) => {
                if let Some(t) = outputs.timing {
                    out.stream(StreamName::Stdout, &format!("Took {}ms\n", t.as_millis()));
                }
                let (result, display) = split_outputs(outputs.content_by_mime_type);
                if let Some(d) = display {
                    out.display(d, None);
                }
                if let Some((line, msg)) = report.panics.first() {
                    let generated = self
                        .session
                        .as_ref()
                        .and_then(|s| s.ctx.last_source().ok())
                        .unwrap_or_default();
                    ExecOutcome {
                        error: Some(panic_error(msg, user_line(&generated, *line, code))),
                        ..Default::default()
                    }
                } else {
                    ExecOutcome {
                        result,
                        ..Default::default()
                    }
                }
            }
            Err(e) if interrupted => {
                let detail = if ran {
                    "the cell was interrupted: evcxr's child process was killed, so all \
                     variables are lost (fns, types and `use` items remain)"
                        .to_string()
                } else {
                    format!(
                        "the cell was interrupted while compiling; nothing ran and every \
                         variable is kept ({})",
                        first_line(&e.to_string())
                    )
                };
                ExecOutcome {
                    error: Some(ExecError::new("Interrupted", detail)),
                    ..Default::default()
                }
            }
            Err(evcxr::Error::CompilationErrors(errors)) => ExecOutcome {
                error: Some(format_compile_errors(&errors, code, shift)),
                ..Default::default()
            },
            Err(evcxr::Error::SubprocessTerminated(msg)) => {
                let how = msg
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim_start_matches("Subprocess terminated with status: ")
                    .to_string();
                self.discard_session_if_dead();
                ExecOutcome {
                    error: Some(ExecError::new(
                        carbon_magics::carbon::session::RUNTIME_DIED,
                        format!(
                            "evcxr's child process died ({how}); it was restarted: all variables \
                             are lost (fns, types and `use` items remain)"
                        ),
                    )),
                    ..Default::default()
                }
            }
            Err(e) => {
                let text = e.to_string();
                let mut err = ExecError::new("EvcxrError", first_line(&text));
                err.traceback = text.lines().map(str::to_string).collect();
                if looks_like_registry_unreachable(&text) {
                    err.traceback.push(format!("note: {REGISTRY_HINT}"));
                    err.evalue = format!("{}; {REGISTRY_HINT}", err.evalue);
                }
                ExecOutcome {
                    error: Some(err),
                    ..Default::default()
                }
            }
        };
        Ok(outcome)
    }
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Maps line `line` (1-based) of evcxr's generated source back to the user's cell: evcxr copies the
/// user's lines verbatim, so the cell line with the same text is the one, when it is unique.
fn user_line(generated: &str, line: usize, code: &str) -> Option<(usize, String)> {
    let wanted = generated.lines().nth(line.checked_sub(1)?)?.trim();
    if wanted.is_empty() {
        return None;
    }
    let mut hits = code.lines().enumerate().filter(|(_, l)| l.trim() == wanted);
    let (i, text) = hits.next()?;
    hits.next().is_none().then(|| (i + 1, text.to_string()))
}

/// A panic of the cell's code as Jupyter's error: `ename` "panic", the panic message as `evalue`,
/// and the cell line that panicked when it can be told.
fn panic_error(msg: &str, at: Option<(usize, String)>) -> ExecError {
    let mut traceback = vec![format!("\x1b[1;31mpanic\x1b[0m: {}", first_line(msg))];
    traceback.extend(msg.lines().skip(1).map(str::to_string));
    if let Some((n, text)) = at {
        traceback.push(format!("  \x1b[1;34m-->\x1b[0m cell:{n}"));
        traceback.push(format!("\x1b[1;34m{n} |\x1b[0m {text}"));
    }
    traceback.push(
        "note: variables defined in this cell are dropped; earlier ones are kept".to_string(),
    );
    ExecError {
        ename: "panic".into(),
        evalue: msg.to_string(),
        traceback,
        shown: false,
    }
}

/// Brace/bracket/paren balance of Rust code, skipping strings, chars, lifetimes and comments.
/// Returns `None` when a closer does not match (the code can never compile).
fn open_delimiters(code: &str) -> Option<Vec<char>> {
    let chars: Vec<char> = code.chars().collect();
    let mut stack = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 1;
                i += 2;
                while i < chars.len() && depth > 0 {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 1;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 1;
                    }
                    i += 1;
                }
                if depth > 0 {
                    stack.push('*');
                }
                continue;
            }
            'r' if matches!(next, Some('#') | Some('"'))
                && !chars[..i]
                    .last()
                    .is_some_and(|p| p.is_alphanumeric() || *p == '_') =>
            {
                // raw string r#"…"#
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    i += 1;
                    continue;
                }
                j += 1;
                let mut closed = false;
                while j < chars.len() {
                    if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                        j += hashes + 1;
                        closed = true;
                        break;
                    }
                    j += 1;
                }
                if !closed {
                    stack.push('"');
                }
                i = j;
                continue;
            }
            '"' => {
                let mut j = i + 1;
                let mut closed = false;
                while j < chars.len() {
                    match chars[j] {
                        '\\' => j += 1,
                        '"' => {
                            closed = true;
                            break;
                        }
                        _ => {}
                    }
                    j += 1;
                }
                if !closed {
                    stack.push('"');
                }
                i = j + 1;
                continue;
            }
            '\'' => {
                // 'a' or '\n' is a char literal; 'a (no closing quote right after) is a lifetime.
                if next == Some('\\') {
                    let mut j = i + 2;
                    while j < chars.len() && chars[j] != '\'' {
                        j += 1;
                    }
                    i = j + 1;
                    continue;
                }
                if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                    continue;
                }
            }
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(want) {
                    return None;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Some(stack)
}

impl Runtime for RustRuntime {
    fn language(&self) -> Language {
        Language::Rust
    }

    fn info(&self) -> LanguageInfo {
        let version = self
            .version
            .get_or_init(|| rustc_version(&self.path_var()))
            .clone();
        LanguageInfo::of(Language::Rust, version)
    }

    fn start(&mut self) -> Result<(), RuntimeError> {
        if self.session.is_some() {
            return Ok(());
        }
        check_toolchain(&self.path_var())?;
        let exe = match &self.runtime_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|source| RuntimeError::Io {
                language: "rust",
                source,
            })?,
        };
        let mut command = Command::new(exe);
        // If the kernel is killed (SIGKILL, OOM) the child must not outlive it, e.g. in a
        // `loop {}`. PDEATHSIG fires when the spawning thread ends: evcxr spawns (and respawns)
        // the child from the thread that runs cells, the kernel's long-lived executor thread.
        child::die_with_kernel(&mut command);
        if let Some(path) = &self.path_override {
            command.env("PATH", path);
        }
        let (ctx, outputs) = EvalContext::with_subprocess_command(command).map_err(|e| {
            RuntimeError::Unavailable {
                language: "rust",
                reason: format!("evcxr could not start: {}", first_line(&e.to_string())),
            }
        })?;
        let ctx = CommandContext::with_eval_context(ctx);
        *self.shared.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(ctx.process_handle());
        self.session = Some(Session { ctx, outputs });
        Ok(())
    }

    fn needs_start(&mut self) -> bool {
        self.session.is_none()
    }

    fn execute(&mut self, code: &str, out: &mut dyn Publish) -> Result<ExecOutcome, RuntimeError> {
        if let Some(b) = self.between.take() {
            b.stop();
        }
        let r = self.run_cell(code, out);
        if let Some(s) = self.session.as_ref() {
            let outputs = EvalContextOutputs {
                stdout: s.outputs.stdout.clone(),
                stderr: s.outputs.stderr.clone(),
            };
            match Between::start(outputs, out.boxed_clone()) {
                Ok(b) => self.between = Some(b),
                Err(e) => log::warn!("rust: cannot publish output between cells: {e}"),
            }
        }
        r
    }

    fn is_complete_needs_child(&self) -> bool {
        false
    }

    fn is_complete(&mut self, code: &str) -> Completeness {
        match open_delimiters(code) {
            None => Completeness::Invalid,
            Some(open) if open.is_empty() => Completeness::Complete,
            Some(open) => Completeness::Incomplete("    ".repeat(open.len().min(8))),
        }
    }

    fn complete(&mut self, code: &str, cursor: usize) -> Completions {
        let empty = Completions {
            matches: vec![],
            cursor_start: cursor,
            cursor_end: cursor,
        };
        let Ok(session) = self.session() else {
            return empty;
        };
        // rust-analyzer inside evcxr; without the rust-src component std items are missing, and a
        // failure of the analysis just means no suggestions.
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.ctx.completions(code, cursor.min(code.len()))
        }));
        match found {
            Ok(Ok(c)) => {
                let mut matches: Vec<String> = Vec::new();
                for m in c.completions {
                    if !matches.contains(&m.code) {
                        matches.push(m.code);
                    }
                }
                Completions {
                    matches,
                    cursor_start: c.start_offset,
                    cursor_end: c.end_offset,
                }
            }
            _ => empty,
        }
    }

    fn inspect(&mut self, code: &str, cursor: usize, _detail: u8) -> Inspection {
        let Ok(session) = self.session() else {
            return Inspection::default();
        };
        let cursor = cursor.min(code.len());
        if !code.is_char_boundary(cursor) {
            return Inspection::default();
        }
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.ctx.hover_at(code, cursor)
        }));
        match found {
            Ok(Ok((plain, html))) if !plain.trim().is_empty() => Inspection {
                found: true,
                data: MimeBundle::plain(plain).with("text/html", html),
            },
            _ => Inspection::default(),
        }
    }

    fn language_magics(&mut self) -> Result<String, String> {
        // evcxr's `:help` lists its `:` commands; it runs no code and compiles nothing.
        let session = self.session().map_err(|e| e.to_string())?;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            session.ctx.execute(":help")
        }));
        match found {
            Ok(Ok(o)) => o
                .content_by_mime_type
                .get("text/plain")
                .map(|t| format!("evcxr's commands (rust cells):\n{t}"))
                .ok_or_else(|| "evcxr's :help returned no text".to_string()),
            Ok(Err(e)) => Err(first_line(&e.to_string())),
            Err(_) => Err("evcxr panicked listing its commands".into()),
        }
    }

    fn interrupt_handle(&self) -> InterruptHandle {
        let shared = Arc::clone(&self.shared);
        Arc::new(move || {
            if shared.busy.load(Ordering::SeqCst) {
                shared.interrupted.store(true, Ordering::SeqCst);
                shared.enforce_interrupt();
            }
        })
    }

    fn shutdown(&mut self) {
        self.between = None;
        if let Some(session) = self.session.take() {
            let handle = session.ctx.process_handle();
            {
                let mut child = handle.lock().unwrap_or_else(|e| e.into_inner());
                let _ = child.kill();
            }
            // Dropping the context reaps the child and removes evcxr's temporary crate.
            drop(session);
        }
        *self.shared.child.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// The evcxr child (user code) and **the kernel process itself**: evcxr runs rust-analyzer's
    /// type inference inside the kernel and cargo/rustc as the kernel's children, so the kernel
    /// pid (with its descendants, which include the child) is the root of a Rust cell's compile
    /// energy. The meter tells compile from run by the [`Phase`] events: `Compile` when the cell
    /// starts, `Run` (from the pump thread, through a `boxed_clone` of the publisher) the moment
    /// user code starts. Other runtimes' children are idle while a Rust cell runs (one executor).
    fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.shared.child_pid().into_iter().collect();
        pids.push(std::process::id());
        pids
    }
}

impl Drop for RustRuntime {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// This back-end, for [`super::backend`].
pub const BACKEND: super::Backend = super::Backend {
    runtime: |settings| Box::new(RustRuntime::new(settings)),
    file_program: rustc_program,
};

/// `rustc` from the `PATH` (the toolchain evcxr uses too); a missing one is reported by the
/// command layer when it fails to start.
fn rustc_program(_settings: &Settings) -> Result<PathBuf, RuntimeError> {
    Ok(PathBuf::from("rustc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Collected, Collector};

    // The unit-test binary is evcxr's child too: the hook that makes it one runs from
    // `.init_array`, an unsafe attribute, so it lives in the child layer (`child/sys.rs`).

    use carbon_magics::testing::strip_ansi;

    fn plain(o: &ExecOutcome) -> Option<String> {
        o.result
            .as_ref()
            .and_then(|r| r.text("text/plain"))
            .map(str::to_string)
    }

    #[test]
    fn missing_toolchain_names_rustup() {
        let empty = tempfile::tempdir().unwrap();
        let err = check_toolchain(empty.path().as_os_str()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, RuntimeError::Unavailable { .. }), "{text}");
        assert!(
            text.contains("`cargo`") && text.contains("rustup"),
            "{text}"
        );
        let mut rt = RustRuntime::new(&Settings::empty()).with_path(empty.path().into());
        assert!(rt.start().is_err());
        // info() never starts evcxr and works without a toolchain
        let info = rt.info();
        assert_eq!(
            (info.name.as_str(), info.file_extension.as_str()),
            ("rust", ".rs")
        );
        assert!(rt.session.is_none());
    }

    #[test]
    fn is_complete_balances_delimiters() {
        let mut rt = RustRuntime::new(&Settings::empty());
        assert_eq!(rt.is_complete("let x = 1;"), Completeness::Complete);
        assert_eq!(
            rt.is_complete("fn f() {\n"),
            Completeness::Incomplete("    ".into())
        );
        assert_eq!(rt.is_complete("let s = \"{\";"), Completeness::Complete);
        assert_eq!(rt.is_complete("let c = '{';"), Completeness::Complete);
        assert_eq!(
            rt.is_complete("fn f<'a>(x: &'a str) {}"),
            Completeness::Complete
        );
        assert_eq!(rt.is_complete("let r = r#\"}\"#;"), Completeness::Complete);
        assert_eq!(rt.is_complete("// {\nlet x = 1;"), Completeness::Complete);
        assert_eq!(
            rt.is_complete("/* { */ (1"),
            Completeness::Incomplete("    ".into())
        );
        assert_eq!(
            rt.is_complete("let s = \"abc"),
            Completeness::Incomplete("    ".into())
        );
        assert_eq!(rt.is_complete("fn f() { ) }"), Completeness::Invalid);
        assert!(rt.session.is_none(), "is_complete must not start evcxr");
    }

    #[test]
    fn registry_errors_are_recognised() {
        // cargo 1.95's answer with CARGO_HTTP_PROXY pointing at a closed loopback port
        let unreachable = "error: failed to get `zz` as a dependency\n\nCaused by:\n  download of \
             config.json failed\n\nCaused by:\n  [7] Could not connect to server";
        assert!(looks_like_registry_unreachable(unreachable));
        let missing =
            "error: no matching package named `zz` found\nlocation searched: crates.io index";
        assert!(!looks_like_registry_unreachable(missing));
    }

    #[test]
    fn panic_lines_map_back_to_the_cell() {
        let generated = "fn run() {\nlet a = 1;\n    panic!(\"x\");\n}";
        let cell = "let a = 1;\npanic!(\"x\");";
        assert_eq!(
            user_line(generated, 3, cell),
            Some((2, "panic!(\"x\");".into()))
        );
        assert_eq!(user_line(generated, 1, cell), None);
        assert_eq!(user_line(generated, 0, cell), None);
        // the same text twice in the cell: no guess
        assert_eq!(user_line(generated, 2, "let a = 1;\nlet a = 1;"), None);
    }

    #[test]
    fn prelude_only_for_code() {
        assert_eq!(
            instrument(":dep rand\n// c\n", true),
            (":dep rand\n// c\n".into(), 0)
        );
        let (code, shift) = instrument("1 + 1", true);
        assert_eq!(shift, 1);
        assert!(code.ends_with("\n1 + 1") && code.lines().count() == 2);
        assert!(code.contains("set_hook") && code.contains(RUN_PRELUDE));
        let (code, _) = instrument("1 + 1", false);
        assert_eq!(code, format!("{RUN_PRELUDE}\n1 + 1"));
        // evcxr reads `:commands` only before the code: the generated line goes after them
        let (code, shift) = instrument("// c\n:dep x = \"1\"\nx::f()", false);
        assert_eq!(shift, 1);
        assert_eq!(code, format!("// c\n:dep x = \"1\"\n{RUN_PRELUDE}\nx::f()"));
    }

    /// One evcxr session for every check that needs a compiler (each eval compiles, ~0.3–3 s).
    #[test]
    fn evcxr_cells_end_to_end() {
        let mut rt = RustRuntime::new(&Settings::empty());
        rt.start()
            .expect("cargo and rustc are on PATH while cargo test runs");
        assert_eq!(rt.pids().len(), 2);
        let run = |rt: &mut RustRuntime, code: &str| {
            let c = Collector::default();
            let mut out = c.clone();
            let o = rt.execute(code, &mut out).expect("runtime error");
            (o, c)
        };

        // state across cells: let, fn, struct, use
        let (o, _) = run(
            &mut rt,
            "use std::collections::HashMap;\nlet x = 40 + 2;\nfn double(v: i32) -> i32 { v * 2 }\n\
             #[derive(Debug)]\nstruct P { a: i32 }\nx",
        );
        assert_eq!(plain(&o).as_deref(), Some("42"), "{o:?}");
        let (o, c) = run(
            &mut rt,
            "let m: HashMap<i32, i32> = HashMap::new();\nprintln!(\"{:?} {}\", P { a: double(x) }, m.len());\nx + 1",
        );
        assert_eq!(plain(&o).as_deref(), Some("43"), "{o:?}");
        assert_eq!(c.text(StreamName::Stdout), "P { a: 84 } 0\n");
        let items = c.items();
        let compile = items
            .iter()
            .position(|i| *i == Collected::Phase(Phase::Compile));
        let run_at = items
            .iter()
            .position(|i| *i == Collected::Phase(Phase::Run));
        let printed = items
            .iter()
            .position(|i| matches!(i, Collected::Stream(..)));
        assert!(compile < run_at && run_at < printed, "{items:?}");

        // compile error with its span
        let (o, c) = run(&mut rt, "let y = 1;\nlet z: i32 = \"no\";");
        let e = o.error.expect("compile error");
        assert_eq!(e.ename, "CompilationError");
        let tb = strip_ansi(&e.traceback.join("\n"));
        assert!(tb.contains("mismatched types"), "{tb}");
        assert!(tb.contains("cell:2:14"), "{tb}");
        assert!(tb.contains("let z: i32 = \"no\";"), "{tb}");
        assert!(tb.contains("^^^^"), "{tb}");
        assert!(!c.items().contains(&Collected::Phase(Phase::Run)));

        // panic → error "panic"; earlier variables survive
        let (o, _) = run(&mut rt, "let w = 1;\npanic!(\"boom {}\", w)");
        let e = o.error.expect("panic error");
        assert_eq!((e.ename.as_str(), e.evalue.as_str()), ("panic", "boom 1"));
        let tb = strip_ansi(&e.traceback.join("\n"));
        assert!(
            tb.contains("cell:2") && tb.contains("panic!(\"boom {}\", w)"),
            "{tb}"
        );
        let (o, _) = run(&mut rt, "x");
        assert_eq!(plain(&o).as_deref(), Some("42"));

        // mime output → display_data
        let (o, c) = run(
            &mut rt,
            "println!(\"EVCXR_BEGIN_CONTENT text/html\\n<b>hi</b>\\nEVCXR_END_CONTENT\");",
        );
        assert!(o.error.is_none() && o.result.is_none(), "{o:?}");
        let shown: Vec<_> = c
            .items()
            .into_iter()
            .filter_map(|i| match i {
                Collected::Display(b, _) => b.text("text/html").map(str::to_string),
                _ => None,
            })
            .collect();
        assert_eq!(shown, ["<b>hi</b>"]);

        // interrupt while compiling: cargo is killed, variables stay
        let handle = rt.interrupt_handle();
        let (o, _) = {
            let c = Collector::default();
            let watcher = {
                let c = c.clone();
                let handle = handle.clone();
                std::thread::spawn(move || {
                    while !c.items().contains(&Collected::Phase(Phase::Compile)) {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    handle();
                })
            };
            let mut out = c.clone();
            let o = rt
                .execute("let v = vec![1, 2];\nloop {}", &mut out)
                .unwrap();
            watcher.join().unwrap();
            (o, c)
        };
        let e = o.error.expect("interrupted");
        assert_eq!(e.ename, "Interrupted");
        assert!(e.evalue.contains("while compiling"), "{e:?}");
        let (o, _) = run(&mut rt, "x");
        assert_eq!(plain(&o).as_deref(), Some("42"));

        // interrupt of running code: the child is killed, variables are lost, fns remain
        let c = Collector::default();
        let watcher = {
            let c = c.clone();
            std::thread::spawn(move || {
                while !c.items().contains(&Collected::Phase(Phase::Run)) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                handle();
            })
        };
        let mut out = c.clone();
        let o = rt.execute("loop {}", &mut out).unwrap();
        watcher.join().unwrap();
        let e = o.error.expect("interrupted");
        assert_eq!(e.ename, "Interrupted");
        assert!(e.evalue.contains("variables are lost"), "{e:?}");
        let (o, _) = run(&mut rt, "double(2)");
        assert_eq!(plain(&o).as_deref(), Some("4"), "{o:?}");

        // crash of the child: clear error, restart, next cell works
        let (o, _) = run(&mut rt, "let k = 3;\nk");
        assert_eq!(plain(&o).as_deref(), Some("3"));
        let (o, _) = run(&mut rt, "std::process::abort();");
        let e = o.error.expect("died");
        assert_eq!(e.ename, "RuntimeDied");
        assert!(
            e.evalue.contains("SIGABRT") && e.evalue.contains("variables"),
            "{e:?}"
        );
        let (o, _) = run(&mut rt, "k");
        assert!(o.error.is_some(), "k is gone after the crash: {o:?}");
        let (o, _) = run(&mut rt, "1 + double(1)");
        assert_eq!(plain(&o).as_deref(), Some("3"), "{o:?}");
        rt.shutdown();
        assert!(rt.pids().len() == 1);
    }
}
