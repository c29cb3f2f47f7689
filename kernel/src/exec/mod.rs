//! The life of one `execute_request`: parse magics → pick the runtime → (meter) → run → record →
//! report. Runs on the kernel's single executor thread (blocking code is fine here); the server
//! owns every protocol invariant around it.

use crate::runtime::{
    CountedCells, ExecError, ExecOptions, ExecOutcome, InterruptHandle, Language, Publish, Runtime,
    RuntimeError, RuntimeFactory,
};
use carbon_magics::carbon::session::{CarbonSession, EmissionsSink};
use carbon_magics::config::Settings;
use carbon_magics::llm::session::LlmSession;
use carbon_magics::parse::{MagicCall, parse_cell};
use carbon_magics::redact::Redactor;
use carbon_magics::registry::{self, MagicKind, MagicSpec};
use carbon_magics::{MimeBundle, UsageError, builtin};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

pub mod carbon;
pub mod complete;
pub mod llm;
pub mod redacting;

/// Runs `%name ARGS` (a line magic).
pub type LineHandler = fn(&mut Executor, &MagicCall, &mut dyn Publish) -> ExecOutcome;
/// Runs `%%name ARGS` with the cell's body (a cell magic).
pub type CellHandler = fn(&mut Executor, &MagicCall, &str, &mut dyn Publish) -> ExecOutcome;

/// The handlers of a magic. Which forms a magic has (`%name`, `%%name`, both) is *derived* from
/// this, never declared separately, so a form listed in `%lsmagic` always has its handler.
#[derive(Clone, Copy)]
pub enum Handlers {
    /// Only `%name`.
    Line(LineHandler),
    /// Only `%%name`.
    Cell(CellHandler),
    /// `%name` and `%%name`.
    Both(LineHandler, CellHandler),
}

impl Handlers {
    /// The forms these handlers serve.
    pub fn kind(&self) -> MagicKind {
        match self {
            Handlers::Line(_) => MagicKind::Line,
            Handlers::Cell(_) => MagicKind::Cell,
            Handlers::Both(..) => MagicKind::Both,
        }
    }

    fn line(&self) -> Option<LineHandler> {
        match self {
            Handlers::Line(f) | Handlers::Both(f, _) => Some(*f),
            Handlers::Cell(_) => None,
        }
    }

    fn cell(&self) -> Option<CellHandler> {
        match self {
            Handlers::Cell(g) | Handlers::Both(_, g) => Some(*g),
            Handlers::Line(_) => None,
        }
    }
}

/// One magic: what it says about itself (help, options, summary) and what runs it.
pub struct Magic {
    /// Name, summary, clap command (exported by the magic's module in carbon-magics).
    pub spec: MagicSpec,
    /// Its line and/or cell handler.
    pub handlers: Handlers,
    /// The parser of the cell form's arguments when it is not the spec's command (`%%carbon`
    /// takes options, `%carbon` sub-commands); completion offers what this parser accepts.
    pub cell_command: Option<fn() -> clap::Command>,
}

impl Magic {
    /// The forms of this magic (from its handlers).
    pub fn kind(&self) -> MagicKind {
        self.handlers.kind()
    }

    /// The parser of the arguments of the form `form` ([`MagicKind::Line`] or
    /// [`MagicKind::Cell`]).
    pub fn command(&self, form: MagicKind) -> clap::Command {
        match (form, self.cell_command) {
            (MagicKind::Cell, Some(cmd)) => cmd(),
            _ => (self.spec.command)(),
        }
    }

    /// `%name?`.
    pub fn long_help(&self) -> String {
        self.spec.long_help(self.kind())
    }
}

/// Every magic of the kernel, in `%lsmagic` order: one entry per language cell magic (from the
/// language table), then `%lang`, `%lsmagic`, `%carbon`, `%llm`. Adding a magic: its module in
/// carbon-magics exports a `MagicSpec`, its adapter here has the handlers, and one entry goes
/// here. `%lsmagic`, `%name?` and the README reference (`carbon-kernel magics --update
/// README.md`) are generated from this list.
pub static MAGICS: LazyLock<Vec<Magic>> = LazyLock::new(|| {
    let mut v: Vec<Magic> = Language::ALL
        .into_iter()
        .map(|l| Magic {
            spec: builtin::language_cell_spec(l),
            handlers: Handlers::Cell(language_cell),
            cell_command: None,
        })
        .collect();
    v.extend([
        Magic {
            spec: builtin::lang_spec(),
            handlers: Handlers::Line(lang_magic),
            cell_command: None,
        },
        Magic {
            spec: builtin::lsmagic_spec(),
            handlers: Handlers::Line(lsmagic),
            cell_command: None,
        },
        Magic {
            spec: carbon_magics::carbon::magic_spec(),
            handlers: Handlers::Both(carbon::line_magic, carbon::cell_magic),
            cell_command: Some(carbon_magics::carbon::magic::cell_cmd),
        },
        Magic {
            spec: carbon_magics::llm::magic_spec(),
            handlers: Handlers::Both(llm::line_magic, llm::cell_magic),
            cell_command: None,
        },
    ]);
    v
});

/// The magic called `name` (either form).
pub fn find_magic(name: &str) -> Option<&'static Magic> {
    MAGICS.iter().find(|m| m.spec.name == name)
}

fn listing() -> Vec<(MagicKind, &'static MagicSpec)> {
    MAGICS.iter().map(|m| (m.kind(), &m.spec)).collect()
}

/// Whether a `%name`/`%%name` line (in the form `form`) is one of the kernel's magics, which
/// the kernel runs itself; every other magic line goes to the cell's language. A help request
/// (`%name?`) is ours whatever the form.
pub fn is_own_magic(call: &MagicCall, form: MagicKind) -> bool {
    find_magic(&call.name)
        .is_some_and(|m| call.help || m.kind() == MagicKind::Both || m.kind() == form)
}

/// The `%lsmagic` text.
pub fn lsmagic_text() -> String {
    registry::lsmagic_text(&listing())
}

/// The README's magics reference (Markdown).
pub fn markdown_reference() -> String {
    registry::markdown_reference(&listing())
}

/// The runtimes of this kernel, created lazily on first use of their language.
pub struct RuntimeSet {
    factory: RuntimeFactory,
    live: BTreeMap<Language, Box<dyn Runtime>>,
    /// The code of every cell the kernel counted (stored, not silent) since start or restart, in
    /// order. A runtime created after them (a `%%python` cell in a Java kernel's 5th cell) counts
    /// them first ([`Runtime::count_unrun_cell`], as the runtimes that exist count each cell that
    /// did not run in them), so IPython's `Cell In[n]` is the kernel's execution_count from its
    /// first cell.
    counted: CountedCells,
}

impl RuntimeSet {
    /// A set that builds runtimes with `factory`.
    pub fn new(factory: RuntimeFactory) -> Self {
        Self {
            factory,
            live: BTreeMap::new(),
            counted: CountedCells::default(),
        }
    }

    /// The runtime of `lang`, created (not started) if needed. A new runtime is told of the
    /// cells the kernel counted before it existed.
    pub fn get(&mut self, lang: Language, settings: &Settings) -> &mut Box<dyn Runtime> {
        let (factory, counted) = (&self.factory, &self.counted);
        self.live.entry(lang).or_insert_with(|| {
            let mut rt = factory(lang, settings);
            for code in counted.after(0) {
                rt.count_unrun_cell(code);
            }
            rt
        })
    }

    /// The kernel counted the cell `code` (stored, not silent): the runtimes that did not run it
    /// as a stored cell (not in `ran_in`) count it now, the runtimes created later when they
    /// are created.
    fn count_cell(&mut self, code: &str, ran_in: &[Language]) {
        for (lang, rt) in self.live.iter_mut() {
            if !ran_in.contains(lang) {
                rt.count_unrun_cell(code);
            }
        }
        self.counted.push(code);
    }

    /// The runtime of `lang` if it was created.
    pub fn existing(&mut self, lang: Language) -> Option<&mut Box<dyn Runtime>> {
        self.live.get_mut(&lang)
    }

    /// Shuts every runtime down (kernel shutdown/restart).
    pub fn shutdown_all(&mut self) {
        for rt in self.live.values_mut() {
            rt.shutdown();
        }
        self.live.clear();
        // the kernel's count starts again at 1 (restart), as the runtimes' will
        self.counted = CountedCells::default();
    }
}

/// The interrupt of the cell running now, shared between the executor thread and the server's
/// control task. Holds the running runtime's handle, a flag other work (LLM requests, metered
/// waits) can poll, and what wakes a wait that is not a runtime's ([`Interrupts::set_waker`]).
#[derive(Default)]
pub struct Interrupts {
    handle: Mutex<Option<InterruptHandle>>,
    /// Called at an interrupt, after the flag is set: wakes the executor where it waits for
    /// something other than a runtime (an `%llm` request).
    waker: Mutex<Option<InterruptHandle>>,
    flag: AtomicBool,
    /// The threads ending the processes of the interrupted cell (one per interrupt).
    ending: Mutex<Vec<std::thread::JoinHandle<usize>>>,
}

impl Interrupts {
    /// Registers the handle of the runtime about to run, and clears the flag.
    pub fn arm(&self, h: Option<InterruptHandle>) {
        self.settle();
        self.flag.store(false, Ordering::SeqCst);
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = h;
    }

    /// For a cell armed without a runtime that waits on something else: `wake` is called at an
    /// interrupt (after the flag is set), and now if one came since [`Interrupts::arm`], so the
    /// wait need not poll the flag. [`Interrupts::disarm`] forgets it.
    pub fn set_waker(&self, wake: InterruptHandle) {
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&wake));
        // checked after the waker is in place: an interrupt now either saw it or set the flag
        if self.requested() {
            wake();
        }
    }

    /// Waits until the processes of an interrupted cell are ended. Its sweep kills every
    /// descendant of the runtimes: still running when the next cell starts, it killed what
    /// that cell started (a subprocess launched right after an interrupt died at once).
    fn settle(&self) {
        let ending = std::mem::take(&mut *self.ending.lock().unwrap_or_else(|e| e.into_inner()));
        for t in ending {
            let _ = t.join();
        }
    }

    /// Registers the handle of the next run of a series (`--repeat`) without clearing the flag,
    /// so an interrupt that arrived between two runs is not lost. Returns true when an
    /// interrupt is already pending: the series must stop before this run starts.
    pub fn rearm(&self, h: Option<InterruptHandle>) -> bool {
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = h;
        // checked after the handle is in place: an interrupt now either saw the handle (and
        // stops the run) or set the flag before (and the run does not start)
        self.requested()
    }

    /// Forgets the handle once the cell is done; after an interrupt, returns once what the cell
    /// started is ended (so nothing of it outlives its reply).
    pub fn disarm(&self) {
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.settle();
    }

    /// Interrupts the running cell (from the control task or a SIGINT handler).
    pub fn interrupt(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let wake = self.waker.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(wake) = wake {
            wake();
        }
        let h = self
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(h) = h {
            h();
            // The runtime stops its code; the processes that code started (a subprocess, a
            // shell and its background jobs, orphans) are ended here, as jupyter_client's
            // SIGINT to the kernel's process group reaches ipykernel's. Off this thread: it
            // scans /proc and waits a little.
            let ending = std::thread::Builder::new()
                .name("carbon-end-cell".into())
                .spawn(crate::runtime::child::end_cell_processes);
            // not joined here (the control task must not wait): the cell's end does
            if let Ok(t) = ending {
                self.ending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(t);
            }
        }
    }

    /// True once an interrupt arrived for the current cell.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// Everything the executor needs at start.
pub struct ExecConfig {
    /// Default language of plain cells (from the kernelspec: `carbon`, `carbon-java`, `carbon-rust`).
    pub default_language: Language,
    /// Folder the kernel runs in (the notebook's folder): `.env`, `emissions.csv`, `data/`.
    pub workdir: PathBuf,
    /// Builds runtimes.
    pub factory: RuntimeFactory,
}

/// Runs cells. One per kernel, owned by the executor thread.
pub struct Executor {
    /// Lazily started language runtimes.
    runtimes: RuntimeSet,
    /// Language of plain cells.
    default_language: Language,
    /// `.env` + environment + session settings.
    settings: Settings,
    /// Folder of the notebook.
    workdir: PathBuf,
    /// Shared with the server for interrupts.
    interrupts: Arc<Interrupts>,
    /// `%%carbon` state (auto-metering, session records).
    carbon: CarbonSession,
    /// `%llm` state (history, providers).
    llm: LlmSession,
    /// Whether the settings' problems (unreadable `.env` lines) were shown in this session.
    settings_warned: bool,
    /// The running cell's request options, for each runtime execution of it (its plain body or
    /// a magic's body: a silent cell's `%%carbon` body stays out of IPython's history too).
    cell_options: ExecOptions,
    /// The languages whose runtime ran the running cell as a stored cell; the others count it
    /// after it ([`Runtime::count_unrun_cell`]).
    stored_in: Vec<Language>,
}

/// The error outcome of a usage error (bad magic, bad option): `ename` `UsageError`, the
/// message as `evalue`, the whole line in red as the traceback.
pub fn usage_error(e: UsageError) -> ExecOutcome {
    ExecOutcome {
        error: Some(ExecError {
            ename: "UsageError".to_string(),
            evalue: e.evalue(),
            traceback: vec![format!("\x1b[0;31m{e}\x1b[0m")],
            shown: false,
        }),
        ..Default::default()
    }
}

/// Maps a runtime failure to the user-visible error of the cell.
pub fn runtime_failure(e: &RuntimeError) -> ExecOutcome {
    let ename = match e {
        RuntimeError::Unavailable { .. } => "RuntimeUnavailable",
        RuntimeError::Died { .. } => "RuntimeDied",
        RuntimeError::Io { .. } | RuntimeError::Protocol { .. } => "RuntimeError",
    };
    ExecOutcome {
        error: Some(ExecError::new(ename, e.to_string())),
        ..Default::default()
    }
}

/// `CARBON_LOCK_WAIT_S`: seconds a row waits for a lock another process holds on
/// `emissions.csv` (default [`carbon_magics::carbon::sink::DEFAULT_LOCK_WAIT`]).
const LOCK_WAIT_KEY: &str = "CARBON_LOCK_WAIT_S";

fn lock_wait(s: &Settings) -> std::time::Duration {
    s.get(LOCK_WAIT_KEY)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 3600.0)
        .map(std::time::Duration::from_secs_f64)
        .unwrap_or(carbon_magics::carbon::sink::DEFAULT_LOCK_WAIT)
}

impl Executor {
    /// A new executor; runtimes start lazily.
    pub fn new(cfg: ExecConfig) -> Self {
        let settings = Settings::load(&cfg.workdir);
        // the log, the CSV and the history mask the keys from the start
        Redactor::from_settings(&settings).install();
        // One session id (`experiment_id` of every row) and one emissions sink for the kernel,
        // handed to each session that writes rows.
        let session_id = uuid::Uuid::new_v4().to_string();
        // The live metrics (`crate::metrics`) are a view of the rows written, told by the sink.
        let interrupts = Arc::new(Interrupts::default());
        // A lock another process holds on emissions.csv is waited for a bounded time (an
        // interrupt ends the wait); the rows then wait beside the file.
        let stop = interrupts.clone();
        let sink = EmissionsSink::default()
            .with_observer(Arc::new(crate::metrics::observe))
            .with_lock_wait(
                lock_wait(&settings),
                Some(Arc::new(move || stop.requested())),
            );
        let carbon = CarbonSession::new(&settings, &cfg.workdir, sink.clone(), &*session_id);
        let llm = LlmSession::new(&cfg.workdir, sink, session_id);
        Self {
            runtimes: RuntimeSet::new(cfg.factory),
            default_language: cfg.default_language,
            settings,
            workdir: cfg.workdir,
            interrupts,
            carbon,
            llm,
            settings_warned: false,
            cell_options: ExecOptions::default(),
            stored_in: Vec::new(),
        }
    }

    /// The problems met reading the settings (a `.env` line that could not be read: its number
    /// and why, never its value), one per line, each ending with a newline; empty when none.
    fn settings_problems(&mut self) -> String {
        self.settings_warned = true;
        self.settings
            .warnings
            .iter()
            .map(|w| format!("settings: {w}\n"))
            .collect()
    }

    /// Shows the settings' problems on stderr with the session's first report (first metered
    /// cell or first `%llm` output), so a `.env` line that was skipped does not go unnoticed;
    /// `%carbon status` and `%llm models` show them every time.
    fn warn_settings_once(&mut self, out: &mut dyn Publish) {
        if self.settings_warned {
            return;
        }
        let text = self.settings_problems();
        if !text.is_empty() {
            out.stream(crate::runtime::StreamName::Stderr, &text);
        }
    }

    /// The interrupt of the running cell, shared with the server's control task.
    pub fn interrupts(&self) -> Arc<Interrupts> {
        self.interrupts.clone()
    }

    /// Language of plain cells.
    pub fn default_language(&self) -> Language {
        self.default_language
    }

    /// The runtime of `lang`, created (not started) if needed.
    pub fn runtime(&mut self, lang: Language) -> &mut Box<dyn Runtime> {
        self.runtimes.get(lang, &self.settings)
    }

    /// The runtime of plain cells, created (not started) if needed.
    pub fn default_runtime(&mut self) -> &mut Box<dyn Runtime> {
        self.runtime(self.default_language)
    }

    /// Stops every runtime (kernel restart or shutdown); they start again on their next cell.
    pub fn shutdown_runtimes(&mut self) {
        self.runtimes.shutdown_all();
    }

    /// Runs one cell (magics included). Every output goes through the one redaction layer,
    /// installed with the settings and again where they change (`%carbon config`), so it is
    /// read here, not rebuilt per cell.
    pub fn execute(&mut self, code: &str, out: &mut dyn Publish) -> ExecOutcome {
        self.execute_with(code, ExecOptions::default(), out)
    }

    /// [`Executor::execute`] under the request's options (`store_history`, `silent`), which every
    /// runtime execution of the cell passes on ([`Runtime::execute_with`]).
    pub fn execute_with(
        &mut self,
        code: &str,
        opts: ExecOptions,
        out: &mut dyn Publish,
    ) -> ExecOutcome {
        self.cell_options = opts;
        self.stored_in.clear();
        let mut r = redacting::Redacting::new(out);
        let o = self.execute_cell(code, &mut r);
        self.cell_options = ExecOptions::default();
        // The kernel counted this cell: the runtimes it did not run in count it too, now or when
        // they are created (IPython's `Cell In[n]` after a `%carbon status` cell, or in a Java
        // kernel's first `%%python` cell, stays the kernel's execution_count).
        if opts.store_history {
            self.runtimes.count_cell(code, &self.stored_in);
        }
        // what the streams hold back goes out now, before the reply and the idle status
        r.finish();
        drop(r);
        redacting::outcome(&carbon_magics::redact::global(), o)
    }

    fn execute_cell(&mut self, code: &str, out: &mut dyn Publish) -> ExecOutcome {
        let plan = match parse_cell(code, is_own_magic) {
            Ok(p) => p,
            Err(e) => return usage_error(e.into()),
        };
        for call in &plan.line_magics {
            let outcome = self.line_magic(call, out);
            if outcome.error.is_some() || outcome.pager.is_some() {
                return outcome;
            }
            if let Some(r) = outcome.result {
                // A line magic's value shows only when it is the whole cell.
                if plan.body.trim().is_empty() && plan.line_magics.len() == 1 {
                    return ExecOutcome {
                        result: Some(r),
                        ..Default::default()
                    };
                }
                out.display(r, None);
            }
        }
        if let Some(call) = &plan.cell_magic {
            return self.cell_magic(call, &plan.body, out);
        }
        if plan.body.trim().is_empty() {
            return ExecOutcome::default();
        }
        let lang = self.default_language;
        if self.carbon.auto_meter() {
            carbon::run_auto_metered(self, lang, &plan.body, out)
        } else {
            self.run_plain(lang, &plan.body, out)
        }
    }

    /// Runs `code` in `lang` without metering: start, arm interrupt, execute, map failures.
    pub fn run_plain(&mut self, lang: Language, code: &str, out: &mut dyn Publish) -> ExecOutcome {
        let rt = self.runtimes.get(lang, &self.settings);
        if let Err(e) = rt.start() {
            return runtime_failure(&e);
        }
        self.interrupts.arm(Some(rt.interrupt_handle()));
        let res = rt.execute_with(code, self.cell_options, out);
        if self.cell_options.store_history {
            self.stored_in.push(lang);
        }
        self.interrupts.disarm();
        match res {
            Ok(o) => o,
            Err(e) => runtime_failure(&e),
        }
    }

    fn help(&self, call: &MagicCall, prefix: &str) -> ExecOutcome {
        match find_magic(&call.name) {
            Some(m) => ExecOutcome {
                pager: Some(MimeBundle::plain(m.long_help())),
                ..Default::default()
            },
            None => usage_error(UsageError::general(format!(
                "{prefix}{} is not a magic (see %lsmagic)",
                call.name
            ))),
        }
    }

    fn line_magic(&mut self, call: &MagicCall, out: &mut dyn Publish) -> ExecOutcome {
        if call.help {
            return self.help(call, "%");
        }
        match find_magic(&call.name).and_then(|m| Some((m, m.handlers.line()?))) {
            Some((m, run)) => help_as_output(m, call).unwrap_or_else(|| run(self, call, out)),
            None => usage_error(UsageError::general(format!(
                "Line magic function `%{}` not found (see %lsmagic)",
                call.name
            ))),
        }
    }

    fn cell_magic(&mut self, call: &MagicCall, body: &str, out: &mut dyn Publish) -> ExecOutcome {
        if call.help {
            return self.help(call, "%%");
        }
        match find_magic(&call.name).and_then(|m| Some((m, m.handlers.cell()?))) {
            Some((m, run)) => help_as_output(m, call).unwrap_or_else(|| run(self, call, body, out)),
            None => usage_error(UsageError::general(format!(
                "Cell magic `%%{}` not found (see %lsmagic)",
                call.name
            ))),
        }
    }
}

/// `%name --help`, `-h`, `help [SUB]` (see [`MagicSpec::help_for_args`]): the help as the
/// cell's result, which every front-end shows (the pager of `%name?` is JupyterLab's only).
/// Decided here, once for every magic of the table, before its handler parses the arguments.
fn help_as_output(m: &Magic, call: &MagicCall) -> Option<ExecOutcome> {
    let text = m.spec.help_for_args(m.kind(), &call.args)?;
    Some(ExecOutcome {
        result: Some(MimeBundle::plain(text)),
        ..Default::default()
    })
}

/// `%%python`, `%%java`, `%%rust`: the cell in that runtime (metered while `%carbon on`).
fn language_cell(
    ex: &mut Executor,
    call: &MagicCall,
    body: &str,
    out: &mut dyn Publish,
) -> ExecOutcome {
    // Registered once per row of the language table under the row's name.
    let Some(lang) = Language::ALL.into_iter().find(|l| l.name() == call.name) else {
        return usage_error(UsageError::general(format!(
            "Cell magic `%%{}` not found (see %lsmagic)",
            call.name
        )));
    };
    if let Err(e) = builtin::check_language_cell_args(lang, &call.args) {
        return usage_error(e);
    }
    if ex.carbon.auto_meter() {
        return carbon::run_auto_metered(ex, lang, body, out);
    }
    ex.run_plain(lang, body, out)
}

/// `%lsmagic`: the kernel's magics, then those of the language of plain cells (IPython's
/// `%lsmagic`, evcxr's `:help`, the JShell commands the Java runtime answers).
fn lsmagic(ex: &mut Executor, _call: &MagicCall, _out: &mut dyn Publish) -> ExecOutcome {
    let mut text = lsmagic_text();
    let lang = ex.default_language;
    let own = ex.runtime(lang).language_magics();
    // The runtime's block starts with its own heading ("IPython's magics (python cells):").
    match own {
        Ok(listing) => text.push_str(&format!("\n{listing}")),
        Err(why) => text.push_str(&format!(
            "\n{} cells: no list of the language's own magics ({why})",
            lang.name()
        )),
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    ExecOutcome {
        result: Some(MimeBundle::plain(text)),
        ..Default::default()
    }
}

/// `%lang [LANGUAGE]`.
fn lang_magic(ex: &mut Executor, call: &MagicCall, _out: &mut dyn Publish) -> ExecOutcome {
    match builtin::parse_lang_args(&call.args) {
        Ok(Some(lang)) => ex.default_language = lang,
        Ok(None) => {}
        Err(e) => return usage_error(e),
    }
    ExecOutcome {
        result: Some(MimeBundle::plain(format!(
            "default language: {}",
            ex.default_language.name()
        ))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::test_runtime::TestRuntime;
    use crate::runtime::{Collector, LanguageInfo};

    /// A scripted runtime that logs what it is told: the cells it runs (stored or not) and the
    /// cells it counts without running them.
    struct Logging {
        inner: TestRuntime,
        log: Arc<Mutex<Vec<String>>>,
    }

    impl Logging {
        fn note(&self, what: &str, code: &str) {
            let lang = self.inner.language().name();
            let line = format!("{lang} {what}: {}", code.trim_end());
            self.log.lock().unwrap().push(line);
        }
    }

    impl Runtime for Logging {
        fn language(&self) -> Language {
            self.inner.language()
        }
        fn info(&self) -> LanguageInfo {
            self.inner.info()
        }
        fn start(&mut self) -> Result<(), RuntimeError> {
            self.inner.start()
        }
        fn execute(
            &mut self,
            code: &str,
            out: &mut dyn Publish,
        ) -> Result<ExecOutcome, RuntimeError> {
            self.execute_with(code, ExecOptions::default(), out)
        }
        fn execute_with(
            &mut self,
            code: &str,
            opts: ExecOptions,
            out: &mut dyn Publish,
        ) -> Result<ExecOutcome, RuntimeError> {
            self.note(
                if opts.store_history {
                    "ran"
                } else {
                    "ran unstored"
                },
                code,
            );
            self.inner.execute(code, out)
        }
        fn count_unrun_cell(&mut self, code: &str) {
            self.note("counted", code);
        }
        fn interrupt_handle(&self) -> InterruptHandle {
            self.inner.interrupt_handle()
        }
        fn shutdown(&mut self) {
            self.inner.shutdown()
        }
        fn pids(&self) -> Vec<u32> {
            self.inner.pids()
        }
    }

    /// An executor for `default` whose runtimes log to the returned log.
    fn logging_executor(
        default: Language,
        dir: &std::path::Path,
    ) -> (Executor, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let ex = Executor::new(ExecConfig {
            default_language: default,
            workdir: dir.to_path_buf(),
            factory: Box::new(move |lang, _| -> Box<dyn Runtime> {
                Box::new(Logging {
                    inner: TestRuntime::new(lang),
                    log: l.clone(),
                })
            }),
        });
        (ex, log)
    }

    fn python_lines(log: &Mutex<Vec<String>>) -> Vec<String> {
        let log = log.lock().unwrap();
        log.iter()
            .filter(|l| l.starts_with("python "))
            .cloned()
            .collect()
    }

    #[test]
    fn a_runtime_created_after_the_first_cells_counts_them_first() {
        let d = tempfile::tempdir().unwrap();
        let (mut ex, log) = logging_executor(Language::Java, d.path());
        let mut c = Collector::default();
        let quiet = ExecOptions {
            store_history: false,
            silent: true,
        };
        ex.execute("print a", &mut c);
        // a silent cell is not counted by the kernel, so not by a later runtime either
        ex.execute_with("print quiet", quiet, &mut c);
        ex.execute("%lsmagic", &mut c);
        // the kernel's 3rd counted cell: IPython's count must be 3 when it runs
        ex.execute("%%python\nprint b", &mut c);
        ex.execute("print c", &mut c);
        assert_eq!(
            python_lines(&log),
            [
                "python counted: print a",
                "python counted: %lsmagic",
                "python ran: print b",
                "python counted: print c",
            ]
        );
        // a restart starts the kernel's count again, and the runtimes created after it with it
        ex.shutdown_runtimes();
        log.lock().unwrap().clear();
        ex.execute("%%python\nprint d", &mut c);
        assert_eq!(python_lines(&log), ["python ran: print d"]);
    }

    #[test]
    fn every_magic_has_help_and_a_unique_name() {
        let mut names: Vec<_> = MAGICS.iter().map(|m| m.spec.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), MAGICS.len(), "duplicate magic names");
        for m in MAGICS.iter() {
            assert!(!m.spec.summary.is_empty());
            assert!(m.long_help().contains(m.spec.name), "{}", m.spec.name);
        }
        let ls = lsmagic_text();
        assert!(
            ls.contains("%lang") && ls.contains("%carbon, %%carbon"),
            "{ls}"
        );
        for l in Language::ALL {
            assert_eq!(find_magic(l.name()).map(Magic::kind), Some(MagicKind::Cell));
        }
    }
}
