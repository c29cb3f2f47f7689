//! Language back-ends behind one [`Runtime`] trait (xeus' interpreter without the protocol
//! invariants). A runtime never sees sockets or Jupyter messages: it runs code and reports what it
//! produced through [`Publish`]. The protocol invariants (busy/idle, execution count, reply order)
//! live in `server`; metering and magics in `exec`.

use carbon_magics::MimeBundle;
use carbon_magics::config::Settings;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;

pub mod child;
mod idle;
pub mod java;
pub mod python;
pub mod rust;
#[doc(hidden)]
pub mod test_runtime;

pub use carbon_magics::lang::Language;

/// `language_info` of `kernel_info_reply`, free of Jupyter types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanguageInfo {
    /// e.g. `python`
    pub name: String,
    /// language version, e.g. `3.11.7`
    pub version: String,
    /// e.g. `text/x-python`
    pub mimetype: String,
    /// e.g. `.py`
    pub file_extension: String,
    /// e.g. `ipython3`
    pub pygments_lexer: String,
    /// CodeMirror mode name (e.g. `ipython`, `text/x-java`, `rust`)
    pub codemirror_mode: String,
    /// e.g. `python`
    pub nbconvert_exporter: String,
}

impl LanguageInfo {
    /// The `language_info` of `lang` from its row of the language table, with its `version`.
    pub fn of(lang: Language, version: impl Into<String>) -> Self {
        let r = lang.row();
        LanguageInfo {
            name: r.name.into(),
            version: version.into(),
            mimetype: r.mimetype.into(),
            file_extension: format!(".{}", r.extensions.first().copied().unwrap_or("txt")),
            pygments_lexer: r.pygments_lexer.into(),
            codemirror_mode: r.codemirror_mode.into(),
            nbconvert_exporter: r.nbconvert_exporter.into(),
        }
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamName {
    /// stdout
    Stdout,
    /// stderr
    Stderr,
}

/// A phase boundary inside one execution, so the meter can split compile from run energy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Compilation starts (javac, JShell's compiler, cargo/rustc).
    Compile,
    /// User code starts running.
    Run,
}

/// What a runtime may emit while it runs. Implemented by the kernel's iopub bridge (and by test
/// collectors). All methods are called from the runtime's blocking thread.
pub trait Publish: Send {
    /// Live stdout/stderr text (may be partial lines).
    fn stream(&mut self, name: StreamName, text: &str);
    /// `display_data`; `display_id` set for displays that can later be updated.
    fn display(&mut self, bundle: MimeBundle, display_id: Option<&str>);
    /// `update_display_data` of an earlier display with this id.
    fn update_display(&mut self, bundle: MimeBundle, display_id: &str);
    /// `clear_output`.
    fn clear_output(&mut self, wait: bool);
    /// `execute_result` in the middle of a cell: a value IPython's displayhook shows when it shows
    /// more than the cell's last one (`ast_node_interactivity` "all"), or when figures that the
    /// cell's end shows must come after it; published as it comes, between the cell's other
    /// outputs. Otherwise the cell's last value comes in [`ExecOutcome::result`].
    fn execute_result(&mut self, bundle: MimeBundle);
    /// An `error` output in the middle of a cell: a traceback the language showed as it happened
    /// (IPython's: a failing `%run` script, a nested `run_cell`, `showtraceback()`, and the
    /// cell's own error, then marked [`ExecError::shown`]).
    fn error(&mut self, error: &ExecError);
    /// Asks the front-end for a line of input (stdin channel). `None` when the front-end does not
    /// allow stdin or the request was interrupted.
    fn input(&mut self, prompt: &str, password: bool) -> Option<String>;
    /// A phase boundary (compile/run) for metering. Default: ignored.
    fn phase(&mut self, _phase: Phase) {}
    /// A second publisher to the same cell, for another thread (e.g. the live energy display).
    fn boxed_clone(&self) -> Box<dyn Publish>;
}

/// The result of running one cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecOutcome {
    /// The value of the last expression, as `execute_result`.
    pub result: Option<MimeBundle>,
    /// The cell failed with an error (already meaningful to the user).
    pub error: Option<ExecError>,
    /// Pager payloads (`obj?`): text/plain (and optionally html) to show in the pager.
    pub pager: Option<MimeBundle>,
    /// Text for the front-end's next cell (IPython's `set_next_input`: `%load`, `%recall`).
    pub next_input: Option<NextInput>,
}

/// IPython's `set_next_input` payload: text the front-end puts in a new cell after this one, or
/// in this one instead of its code (`replace`, as `%load` asks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextInput {
    /// The cell's text.
    pub text: String,
    /// Replace the cell that ran instead of adding one after it.
    pub replace: bool,
}

/// How the front-end asked for a cell to be kept: `execute_request`'s `store_history` and
/// `silent`, for a runtime that keeps a history of its own (IPython: its execution count, `In`,
/// `Out`, `_`, `_N`, and the `Cell In[n]` of tracebacks, which must follow the kernel's
/// `execution_count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecOptions {
    /// The cell counts and enters the history (the request's `store_history`; false when silent,
    /// as the kernel's own count).
    pub store_history: bool,
    /// Nothing of the cell is shown (the request's `silent`): IPython neither displays its last
    /// value nor runs its `pre_run_cell`/`post_run_cell` hooks.
    pub silent: bool,
}

impl Default for ExecOptions {
    /// A notebook cell: stored, not silent (`execute_request`'s defaults).
    fn default() -> Self {
        ExecOptions {
            store_history: true,
            silent: false,
        }
    }
}

/// An error of user code (exception, compile error, panic), as Jupyter's `error` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecError {
    /// e.g. `ZeroDivisionError`
    pub ename: String,
    /// e.g. `division by zero`
    pub evalue: String,
    /// Traceback lines (may contain ANSI colours).
    pub traceback: Vec<String>,
    /// Already published among the cell's outputs, in its place (IPython shows every traceback
    /// as it happens, through [`Publish::error`]): the reply carries it, no `error` output again.
    pub shown: bool,
}

impl ExecError {
    /// Convenience constructor with a one-line traceback.
    pub fn new(ename: impl Into<String>, evalue: impl Into<String>) -> Self {
        let ename = ename.into();
        let evalue = evalue.into();
        let traceback = vec![format!("{ename}: {evalue}")];
        Self {
            ename,
            evalue,
            traceback,
            shown: false,
        }
    }
}

/// Completeness of a code fragment (`is_complete_request`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completeness {
    /// Ready to run.
    Complete,
    /// Needs more lines; the indent to use for the next one.
    Incomplete(String),
    /// Will not compile whatever follows.
    Invalid,
    /// Cannot tell.
    Unknown,
}

/// Completion candidates (`complete_request`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completions {
    /// Candidate texts.
    pub matches: Vec<String>,
    /// Byte offset (in the code) where the replaced text starts.
    pub cursor_start: usize,
    /// Byte offset where it ends.
    pub cursor_end: usize,
}

/// Result of an inspection (`inspect_request`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inspection {
    /// Found something.
    pub found: bool,
    /// Documentation / signature.
    pub data: MimeBundle,
}

/// Failure of the runtime itself (not of user code).
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// The language toolchain is missing or too old.
    #[error("{language} runtime unavailable: {reason}")]
    Unavailable {
        /// language name
        language: &'static str,
        /// What is missing and what to install or set.
        reason: String,
    },
    /// The child process died; its state is lost. The runtime restarts on the next cell.
    #[error(
        "{language} runtime died ({how}); its state (variables, imports) is lost and it restarts on the next cell"
    )]
    Died {
        /// language name
        language: &'static str,
        /// exit status / signal in words
        how: String,
    },
    /// I/O with the child failed.
    #[error("{language} runtime I/O error: {source}")]
    Io {
        /// language name
        language: &'static str,
        /// cause
        #[source]
        source: std::io::Error,
    },
    /// Protocol violation by the child (malformed frame).
    #[error("{language} runtime protocol error: {detail}")]
    Protocol {
        /// language name
        language: &'static str,
        /// what was wrong
        detail: String,
    },
}

/// A cheap, cloneable handle that interrupts the running cell from another thread.
pub type InterruptHandle = Arc<dyn Fn() + Send + Sync>;

/// One language back-end. Implementations start their child lazily ([`Runtime::start`]).
pub trait Runtime: Send {
    /// Which language.
    fn language(&self) -> Language;
    /// `language_info` for `kernel_info_reply`.
    fn info(&self) -> LanguageInfo;
    /// Starts the child if not running (idempotent). Called before metering so the pid is known.
    fn start(&mut self) -> Result<(), RuntimeError>;
    /// Begins starting the child in the background and returns at once, so the first cell
    /// finds it ready; a failure is reported by the next [`Runtime::start`]. Default: nothing
    /// (the child starts with the first cell).
    fn prestart(&mut self) {}
    /// Whether [`Runtime::start`] would start a child now (the JVM and JShell, evcxr's
    /// context): a metered cell then meters that start-up as its own row, so its figures cover
    /// the cell's whole wall time. Default: `false` (runtimes that start in well under a second,
    /// or before the first cell, are not worth a row of their own).
    fn needs_start(&mut self) -> bool {
        false
    }
    /// Runs one cell, streaming outputs through `out`. Returns when the cell is done.
    fn execute(&mut self, code: &str, out: &mut dyn Publish) -> Result<ExecOutcome, RuntimeError>;
    /// [`Runtime::execute`] under the request's [`ExecOptions`]. The Python runtime hands them to
    /// IPython's `run_cell`, as ipykernel does. Default: they are ignored, and the cell runs as
    /// [`Runtime::execute`] runs it (the Java and Rust runtimes: JShell numbers its snippets and
    /// evcxr keeps no history, and neither number shows next to the kernel's execution count).
    fn execute_with(
        &mut self,
        code: &str,
        _opts: ExecOptions,
        out: &mut dyn Publish,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.execute(code, out)
    }
    /// A cell the kernel counted (stored, not silent) that did not run in this runtime: a kernel
    /// magic such as `%carbon status`, a cell of another language, an empty cell; a runtime
    /// created after the kernel's first cells is told of each of them as it is created. A
    /// runtime that numbers its cells (IPython: its count, `In`, the `Cell In[n]` of tracebacks)
    /// counts it too, so its numbers stay the kernel's `execution_count`. Default: nothing
    /// (JShell's snippet ids and evcxr show no number next to the kernel's).
    fn count_unrun_cell(&mut self, _code: &str) {}
    /// Whether [`Runtime::is_complete`] needs the child process. Runtimes that judge completeness
    /// without it (Rust's delimiter check) say `false`, so a console's Enter never starts a slow
    /// runtime (evcxr takes seconds to start).
    fn is_complete_needs_child(&self) -> bool {
        true
    }
    /// `is_complete_request`.
    fn is_complete(&mut self, _code: &str) -> Completeness {
        Completeness::Unknown
    }
    /// `complete_request`.
    fn complete(&mut self, _code: &str, cursor: usize) -> Completions {
        Completions {
            matches: vec![],
            cursor_start: cursor,
            cursor_end: cursor,
        }
    }
    /// `inspect_request`.
    fn inspect(&mut self, _code: &str, _cursor: usize, _detail: u8) -> Inspection {
        Inspection::default()
    }
    /// The language's own magics or commands, as its kernel lists them (for `%lsmagic`, after
    /// the kernel's): IPython's `%lsmagic`, evcxr's `:help`, the JShell commands answered.
    /// Starts the child if the list needs it; the text starts with its own heading line. `Err`
    /// says why there is no list.
    fn language_magics(&mut self) -> Result<String, String> {
        Err("this runtime has no magics of its own".into())
    }
    /// A handle that interrupts the cell running now (callable while `execute` blocks).
    fn interrupt_handle(&self) -> InterruptHandle;
    /// Stops the child (kernel shutdown or restart).
    fn shutdown(&mut self);
    /// The processes whose energy is this cell's (roots; the meter adds their descendants).
    fn pids(&self) -> Vec<u32>;
}

/// One thing a [`Collector`] received.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub enum Collected {
    /// stream text
    Stream(StreamName, String),
    /// display_data (bundle, display id)
    Display(MimeBundle, Option<String>),
    /// update_display_data
    Update(MimeBundle, String),
    /// clear_output
    Clear(bool),
    /// execute_result in the middle of a cell
    Result(MimeBundle),
    /// error output in the middle of a cell
    Error(ExecError),
    /// phase boundary
    Phase(Phase),
}

/// A [`Publish`] that records everything (the kernel's unit tests). Clones share the same log.
/// Input requests are answered from a queue.
#[cfg(test)]
#[derive(Clone, Default)]
pub struct Collector {
    /// Everything published, in order.
    pub log: Arc<std::sync::Mutex<Vec<Collected>>>,
    /// Answers to `input()` calls, front first.
    pub inputs: Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

#[cfg(test)]
impl Collector {
    /// All stream text of one stream, concatenated.
    pub fn text(&self, name: StreamName) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(|c| match c {
                Collected::Stream(n, t) if *n == name => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A copy of the log.
    pub fn items(&self) -> Vec<Collected> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn push(&self, c: Collected) {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(c);
    }
}

#[cfg(test)]
impl Publish for Collector {
    fn stream(&mut self, name: StreamName, text: &str) {
        self.push(Collected::Stream(name, text.to_string()));
    }
    fn display(&mut self, bundle: MimeBundle, display_id: Option<&str>) {
        self.push(Collected::Display(bundle, display_id.map(str::to_string)));
    }
    fn update_display(&mut self, bundle: MimeBundle, display_id: &str) {
        self.push(Collected::Update(bundle, display_id.to_string()));
    }
    fn clear_output(&mut self, wait: bool) {
        self.push(Collected::Clear(wait));
    }
    fn execute_result(&mut self, bundle: MimeBundle) {
        self.push(Collected::Result(bundle));
    }
    fn error(&mut self, error: &ExecError) {
        self.push(Collected::Error(error.clone()));
    }
    fn input(&mut self, _prompt: &str, _password: bool) -> Option<String> {
        self.inputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
    }
    fn phase(&mut self, phase: Phase) {
        self.push(Collected::Phase(phase));
    }
    fn boxed_clone(&self) -> Box<dyn Publish> {
        Box::new(self.clone())
    }
}

/// Creates a runtime for a language (real back-ends in the kernel, test runtimes in tests).
pub type RuntimeFactory = Box<dyn Fn(Language, &Settings) -> Box<dyn Runtime> + Send>;

/// What the kernel needs from a language's back-end file: how to build its runtime, and which
/// program runs a source file of it (`%carbon run FILE`; the steps come from the language's
/// table row, `carbon_magics::lang::FileRun`).
#[derive(Clone, Copy)]
pub struct Backend {
    /// Builds the (lazily started) runtime.
    pub runtime: fn(&Settings) -> Box<dyn Runtime>,
    /// The interpreter or compiler `%carbon run` calls for a file of this language.
    pub file_program: fn(&Settings) -> Result<PathBuf, RuntimeError>,
}

/// The back-end of a language: each back-end file exports its `BACKEND`.
///
/// Adding a language: its row in `carbon_magics::lang::LANGUAGES` (names, extensions,
/// kernelspec, MIME type, how files run…), its runtime file next to this one exporting a
/// `BACKEND`, and the arm of this `match` that the compiler asks for. Everything else (install,
/// `language_info`, `%%name` magics, `%lang`, `%carbon run`, CSV rows, tests) reads the table.
pub fn backend(lang: Language) -> Backend {
    match lang {
        Language::Python => python::BACKEND,
        Language::Java => java::BACKEND,
        Language::Rust => rust::BACKEND,
    }
}

/// The real back-ends: Python, Java (JShell) and Rust (evcxr), each started lazily.
pub fn default_factory() -> RuntimeFactory {
    Box::new(|lang, settings| (backend(lang).runtime)(settings))
}

/// Code of the counted cells kept, at most ([`CountedCells`]); the cells after it are counted
/// with empty code. Our choice: a thousand cells of 1 KiB, which a new Python worker reads in 16
/// of its 64 KiB reads (the driver's `_READ_CHUNK`).
pub(crate) const COUNTED_CODE_CAP: usize = 1024 * 1024;

/// The cells the kernel counted (stored, not silent), in order, each one's code whole up to
/// [`COUNTED_CODE_CAP`] bytes in all, then empty: the count is what a runtime created late, or a
/// worker started after another ended, must catch up with (IPython's `Cell In[n]`).
#[derive(Default)]
pub(crate) struct CountedCells {
    codes: Vec<String>,
    bytes: usize,
}

impl CountedCells {
    /// Counts one more cell.
    pub(crate) fn push(&mut self, code: &str) {
        if self.bytes + code.len() <= COUNTED_CODE_CAP {
            self.bytes += code.len();
            self.codes.push(code.to_string());
        } else {
            self.codes.push(String::new());
        }
    }

    /// The cells after the first `n`.
    pub(crate) fn after(&self, n: usize) -> &[String] {
        self.codes.get(n..).unwrap_or_default()
    }

    /// How many cells were counted.
    pub(crate) fn len(&self) -> usize {
        self.codes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_cells_keep_their_code_up_to_the_cap_and_their_count_after_it() {
        let mut c = CountedCells::default();
        let half = "x".repeat(COUNTED_CODE_CAP / 2);
        c.push(&half);
        c.push(&half);
        c.push("y"); // over the cap: counted, code dropped
        c.push("");
        assert_eq!(c.len(), 4);
        assert_eq!(c.after(1), [half.clone(), String::new(), String::new()]);
        assert!(c.after(4).is_empty() && c.after(9).is_empty());
    }
}
