//! `%%carbon` / `%carbon …` adapter: meter a runtime's process tree around a cell and publish
//! what the [`CarbonSession`] (carbon-magics) computes: rows, status words, texts, reports.
//!
//! Per cell: start the runtime, `meter.start(pids)` (two boundary reads, no sampling thread for
//! short cells), run it with a publisher that forwards compile/run phase marks to the meter, a
//! live thread (reused from cell to cell) that shows progress after ~1 s and enforces
//! `--timeout`, `meter.stop()`, one CSV row (failing, interrupted and timed-out runs too, with
//! their status), the report.
//! What needs the kernel stays here: runtimes, interrupts, the live display thread, child
//! processes of `%carbon run` / `exec`.

use super::{Executor, runtime_failure, usage_error};
use crate::runtime::child::{self, CommandRun};
use crate::runtime::{ExecOutcome, Language, Phase, Publish, RuntimeError, StreamName};
use carbon_magics::carbon::magic::{self, LineCommand};
use carbon_magics::carbon::record::{RowLanguage, RowStatus};
use carbon_magics::carbon::session::{
    CarbonSession, RunEnd, RunOpts, Step, file_steps, run_status, summarize_wheres,
};
use carbon_magics::carbon::{Measurement, Meter, MeterPhase};
use carbon_magics::parse::MagicCall;
use carbon_magics::report::cell::{self as report, RunReport};
use carbon_magics::{MimeBundle, UsageError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Options of one metered execution.
type Opts = RunOpts;

fn opts_from(session: &CarbonSession, args: Option<&magic::CellArgs>) -> Result<Opts, UsageError> {
    session.opts(args)
}

/// Forwards everything, and phase marks to the meter too. `P` is `&mut dyn Publish` for the
/// executor's own publisher and `Box<dyn Publish>` for its clones.
struct PhasePublish<P> {
    inner: P,
    meter: Meter,
}

impl<'a, P: std::ops::DerefMut<Target = dyn Publish + 'a> + Send> Publish for PhasePublish<P> {
    fn stream(&mut self, name: StreamName, text: &str) {
        self.inner.stream(name, text)
    }
    fn display(&mut self, bundle: MimeBundle, display_id: Option<&str>) {
        self.inner.display(bundle, display_id)
    }
    fn update_display(&mut self, bundle: MimeBundle, display_id: &str) {
        self.inner.update_display(bundle, display_id)
    }
    fn clear_output(&mut self, wait: bool) {
        self.inner.clear_output(wait)
    }
    fn execute_result(&mut self, bundle: MimeBundle) {
        self.inner.execute_result(bundle)
    }
    fn error(&mut self, error: &crate::runtime::ExecError) {
        self.inner.error(error)
    }
    fn input(&mut self, prompt: &str, password: bool) -> Option<String> {
        self.inner.input(prompt, password)
    }
    fn phase(&mut self, phase: Phase) {
        self.meter.mark_phase(match phase {
            Phase::Compile => MeterPhase::Compile,
            Phase::Run => MeterPhase::Run,
        });
        self.inner.phase(phase)
    }
    /// The clone marks phases too: Rust's pump thread reports the start of the compiled code
    /// through a clone (without the meter, a Rust cell's run energy was counted as compiling).
    fn boxed_clone(&self) -> Box<dyn Publish> {
        Box::new(PhasePublish {
            inner: self.inner.boxed_clone(),
            meter: self.meter.clone(),
        })
    }
}

/// What the executor and the live thread share about one run.
struct LiveShared {
    state: Mutex<LiveState>,
    timed_out: AtomicBool,
}

struct LiveState {
    /// The run ended: the live thread must not display anything any more.
    stopped: bool,
    /// The live display's id, once shown (the report replaces it).
    shown: Option<String>,
}

impl LiveShared {
    fn lock(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One run's live display and timeout, served by the live thread (see [`LIVE`]).
struct LiveJob {
    shared: Arc<LiveShared>,
    meter: Meter,
    out: Box<dyn Publish>,
    /// The run's start.
    t0: Instant,
    /// The next live sample, after `t0`: `live_after`, then about every second.
    next_live: Duration,
    timeout: Option<Duration>,
    on_timeout: Box<dyn Fn() + Send>,
    pue: f64,
    g_per_kwh: f64,
}

/// The runs the live thread serves, and when it wakes next.
///
/// One thread serves every run, and neither the start nor the end of a run wakes it unless it
/// must: a run that ends before its first live sample is forgotten the next time the thread
/// wakes for its own reasons. Before, each run was handed to a pooled thread at its start and
/// woke it again at its end: two thread wake-ups on a 2-core machine for every `%%carbon` cell,
/// most of which end well within `live_after` (issue 9: what `%%carbon` adds to a cell).
struct LiveTimer {
    jobs: Vec<LiveJob>,
    /// When the thread wakes next on its own; `None` while it waits for a run (or before it
    /// exists).
    wakes_at: Option<Instant>,
    /// The thread exists.
    started: bool,
}

/// A `live_after` or timeout beyond any cell (about ten years).
const NEVER: Duration = Duration::from_secs(10 * 365 * 86_400);

/// The live thread's runs; [`LIVE_WAKE`] wakes it for one that is due before `wakes_at`.
static LIVE: Mutex<LiveTimer> = Mutex::new(LiveTimer {
    jobs: Vec::new(),
    wakes_at: None,
    started: false,
});
static LIVE_WAKE: Condvar = Condvar::new();

fn live_timer() -> MutexGuard<'static, LiveTimer> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds `job` to the live thread's runs (starting the thread the first time), waking it only
/// when the job is due before the thread would wake anyway.
fn submit_live(job: LiveJob) {
    let due = job.due(&job.shared.lock());
    let mut timer = live_timer();
    timer.jobs.push(job);
    if !timer.started {
        match std::thread::Builder::new()
            .name("carbon-live".into())
            .spawn(serve_live)
        {
            Ok(_) => timer.started = true,
            Err(e) => {
                timer.jobs.clear();
                log::warn!("%%carbon: no live display or --timeout for this run: {e}");
            }
        }
        return;
    }
    if let Some(due) = due
        && timer.wakes_at.is_none_or(|w| due < w)
    {
        LIVE_WAKE.notify_one();
    }
}

/// The live thread: does what is due (a sample shown, a timeout fired), forgets ended runs,
/// and sleeps until the next run is due, or until a run is added.
fn serve_live() {
    let mut timer = live_timer();
    loop {
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        timer.jobs.retain_mut(|job| {
            let due = job.tick(now);
            if let Some(t) = due {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
            due.is_some()
        });
        timer.wakes_at = next;
        timer = match next {
            None => LIVE_WAKE.wait(timer).unwrap_or_else(|e| e.into_inner()),
            Some(t) => {
                LIVE_WAKE
                    .wait_timeout(timer, t.saturating_duration_since(now))
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

impl LiveJob {
    /// When the job next needs the live thread (its next sample, or its timeout); `None` once
    /// the run has ended.
    fn due(&self, st: &LiveState) -> Option<Instant> {
        if st.stopped {
            return None;
        }
        // a huge `live_after` or timeout is never (Instant + Duration panics on overflow)
        let after = |d: Duration| self.t0.checked_add(d).unwrap_or(self.t0 + NEVER);
        let mut at = after(self.next_live);
        if let Some(d) = self.timeout
            && !self.shared.timed_out.load(Ordering::SeqCst)
        {
            at = at.min(after(d));
        }
        Some(at)
    }

    /// Fires the timeout and shows a sample when due at `now` (no sampling for short cells:
    /// the first comes at `live_after`, then about once a second); when the job is due next.
    fn tick(&mut self, now: Instant) -> Option<Instant> {
        let shared = self.shared.clone();
        // Held while displaying: the run cannot end (and miss the display id) meanwhile.
        let mut st = shared.lock();
        if st.stopped {
            return None;
        }
        let el = now.saturating_duration_since(self.t0);
        if let Some(d) = self.timeout
            && el >= d
            && !shared.timed_out.swap(true, Ordering::SeqCst)
        {
            (self.on_timeout)();
        }
        if el >= self.next_live {
            if let Some(s) = self.meter.sample() {
                let b = report::live(&s, self.pue, self.g_per_kwh);
                match &st.shown {
                    Some(id) => self.out.update_display(b, id),
                    None => {
                        let id = format!("carbon-{}", uuid::Uuid::new_v4());
                        self.out.display(b, Some(&id));
                        st.shown = Some(id);
                    }
                }
            }
            self.next_live = el + Duration::from_secs(1);
        }
        self.due(&st)
    }
}

/// The live display + timeout of one run, served by the live thread: nothing before
/// `live_after` (no sampling for short cells), then a sample about once a second.
struct Live {
    shared: Arc<LiveShared>,
}

impl Live {
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        meter: Meter,
        out: Box<dyn Publish>,
        shown: Option<String>,
        live_after: f64,
        timeout: Option<f64>,
        on_timeout: Box<dyn Fn() + Send>,
        pue: f64,
        g_per_kwh: f64,
    ) -> Live {
        let shared = Arc::new(LiveShared {
            state: Mutex::new(LiveState {
                stopped: false,
                shown,
            }),
            timed_out: AtomicBool::new(false),
        });
        let secs = |s: f64| Duration::try_from_secs_f64(s).map_or(NEVER, |d| d.min(NEVER));
        submit_live(LiveJob {
            shared: shared.clone(),
            meter,
            out,
            t0: Instant::now(),
            next_live: secs(live_after),
            timeout: timeout.map(secs),
            on_timeout,
            pue,
            g_per_kwh,
        });
        Live { shared }
    }

    /// True once the timeout fired.
    fn timed_out(&self) -> bool {
        self.shared.timed_out.load(Ordering::SeqCst)
    }

    /// Stops the live display; returns its id (if shown) and whether the run timed out. Wakes
    /// nobody: once `stopped` is set under the lock, the live thread displays nothing more for
    /// this run (a display in progress finishes first, holding the lock) and forgets it when
    /// it next wakes.
    fn finish(self) -> (Option<String>, bool) {
        let shown = {
            let mut st = self.shared.lock();
            st.stopped = true;
            st.shown.take()
        };
        (shown, self.timed_out())
    }
}

/// The cell's error when an interrupt stopped a `--repeat` series before run `done + 1`.
fn interrupted_between_runs(done: u32, repeat: u32) -> ExecOutcome {
    ExecOutcome {
        error: Some(crate::runtime::ExecError::new(
            "KeyboardInterrupt",
            format!("interrupted: the series stopped after {done} of {repeat} runs"),
        )),
        ..Default::default()
    }
}

fn status_of(
    res: &Result<ExecOutcome, RuntimeError>,
    timed_out: bool,
    interrupted: bool,
) -> RowStatus {
    let end = match res {
        Err(_) => RunEnd::RuntimeFailed,
        Ok(o) => RunEnd::Finished {
            error: o.error.as_ref().map(|e| e.ename.as_str()),
        },
    };
    run_status(end, timed_out, interrupted)
}

/// The session's row of a run (see [`CarbonSession::record`]).
fn record(
    session: &mut CarbonSession,
    meas: &Measurement,
    opts: &Opts,
    language: RowLanguage,
    status: RowStatus,
    repeat_index: Option<u32>,
) -> (RunReport, String) {
    session.record(meas, opts, language, status, repeat_index)
}

fn show_report(
    out: &mut dyn Publish,
    runs: &[RunReport],
    startup: Option<&RunReport>,
    where_: &str,
    shown: Option<String>,
) {
    let b = report::cell_report_with_startup(runs, startup, where_);
    match shown {
        Some(id) => out.update_display(b, &id),
        None => out.display(b, None),
    }
    // The chart is an output of its own (SVG + PNG): see carbon_magics::report::png.
    if let Some(c) = report::cell_chart(runs) {
        out.display(c, None);
    }
}

/// Runs `body` in `lang` metered, `repeat` times; one row per run, one report.
fn metered(
    ex: &mut Executor,
    lang: Language,
    body: &str,
    opts: Opts,
    repeat: u32,
    out: &mut dyn Publish,
) -> ExecOutcome {
    ex.warn_settings_once(out);
    let meter = ex.carbon.meter(&opts.meter);
    let live_after = ex.carbon.config().live_after_s;
    let mut runs = Vec::new();
    let mut wheres = Vec::new();
    let mut shown: Option<String> = None;
    let mut last = ExecOutcome::default();
    let mut startup: Option<RunReport> = None;
    for i in 0..repeat {
        let rt = ex.runtimes.get(lang, &ex.settings);
        if rt.needs_start() {
            // The start is this cell's cost too (JVM and JShell, evcxr's warm-up compile): meter
            // it as its own row, rooted at the kernel (the runtime's processes are its children,
            // and evcxr's analysis runs in it), so the cell's own figures stay comparable.
            meter.start(&[std::process::id()]);
            // the JVM or evcxr takes seconds to start: the live line shows it meanwhile, and the
            // cell's own live line then updates the same display
            let live = Live::spawn(
                meter.clone(),
                out.boxed_clone(),
                shown.take(),
                live_after,
                None,
                Box::new(|| {}),
                opts.pue,
                opts.zone.g_per_kwh,
            );
            let started = rt.start();
            shown = live.finish().0;
            let status = if started.is_ok() {
                RowStatus::Ok
            } else {
                RowStatus::RuntimeError
            };
            if let Some(meas) = meter.stop() {
                let (r, w) = ex.carbon.record_startup(&meas, &opts, lang.into(), status);
                startup = Some(r);
                wheres.push(w);
            }
            if let Err(e) = started {
                if let Some(s) = &startup {
                    show_report(
                        out,
                        std::slice::from_ref(s),
                        None,
                        &summarize_wheres(&wheres),
                        shown.take(),
                    );
                }
                return runtime_failure(&e);
            }
        }
        let rt = ex.runtimes.get(lang, &ex.settings);
        if let Err(e) = rt.start() {
            return runtime_failure(&e);
        }
        let pids = rt.pids();
        // The first run clears the flag; later runs keep it, so an interrupt that lands between
        // two runs (while a row is written) stops the series instead of being forgotten.
        if i == 0 {
            ex.interrupts.arm(Some(rt.interrupt_handle()));
        } else if ex.interrupts.rearm(Some(rt.interrupt_handle())) {
            ex.interrupts.disarm();
            last = interrupted_between_runs(i, repeat);
            break;
        }
        let ints = ex.interrupts.clone();
        meter.start(&pids);
        let live = Live::spawn(
            meter.clone(),
            out.boxed_clone(),
            shown.take(),
            live_after,
            opts.timeout,
            Box::new(move || ints.interrupt()),
            opts.pue,
            opts.zone.g_per_kwh,
        );
        let res = {
            let mut p = PhasePublish {
                inner: &mut *out,
                meter: meter.clone(),
            };
            // One cell for the language's history however often it runs: the repeats are not
            // stored, so IPython's count and `In` stay with the kernel's execution count.
            let mut cell = ex.cell_options;
            cell.store_history &= i == 0;
            rt.execute_with(body, cell, &mut p)
        };
        if ex.cell_options.store_history && i == 0 {
            ex.stored_in.push(lang);
        }
        let (id, timed_out) = live.finish();
        shown = id;
        let meas = meter.stop();
        let interrupted = ex.interrupts.requested();
        ex.interrupts.disarm();
        let status = status_of(&res, timed_out, interrupted);
        if let Some(meas) = meas {
            let idx = (repeat > 1).then_some(i + 1);
            let (r, w) = record(&mut ex.carbon, &meas, &opts, lang.into(), status, idx);
            runs.push(r);
            wheres.push(w);
        }
        last = match res {
            Ok(o) => o,
            Err(e) => runtime_failure(&e),
        };
        if timed_out && let Some(err) = last.error.as_mut() {
            err.evalue = format!(
                "{} (stopped by --timeout {} s)",
                err.evalue,
                opts.timeout.unwrap_or_default()
            );
        }
        if last.error.is_some() {
            break;
        }
        if interrupted {
            // the run ended without an error although an interrupt came (it landed as the
            // code finished): the series still stops here
            if i + 1 < repeat {
                last = interrupted_between_runs(i + 1, repeat);
            }
            break;
        }
    }
    if !runs.is_empty() {
        let where_ = summarize_wheres(&wheres);
        show_report(out, &runs, startup.as_ref(), &where_, shown);
    }
    last
}

/// `%carbon …` line magic.
pub fn line_magic(ex: &mut Executor, call: &MagicCall, out: &mut dyn Publish) -> ExecOutcome {
    let cmd = match magic::parse_line_args(&call.args) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    match cmd {
        LineCommand::On => text(ex.carbon.set_auto(true)),
        LineCommand::Off => text(ex.carbon.set_auto(false)),
        LineCommand::Status => {
            let status = ex.carbon.status_text_with(&format!(
                "{}  processes   {}\n",
                crate::metrics::status_line(),
                crate::runtime::child::tracking()
            ));
            let problems = ex.settings_problems();
            if problems.is_empty() {
                text(status)
            } else {
                text(format!("{}\n{problems}", status.trim_end()))
            }
        }
        LineCommand::Config(pairs) => {
            for (k, v) in &pairs {
                ex.settings.set(k, v);
            }
            // a key set here is masked from this cell's own outputs on
            carbon_magics::redact::Redactor::from_settings(&ex.settings).install();
            ex.carbon.reload(&ex.settings);
            text(ex.carbon.config_text(pairs.is_empty()))
        }
        LineCommand::Summary => {
            out.display(ex.carbon.summary(), None);
            if let Some(c) = ex.carbon.summary_chart() {
                out.display(c, None);
            }
            ExecOutcome::default()
        }
        LineCommand::Intensity => {
            for b in ex.carbon.intensity() {
                out.display(b, None);
            }
            ExecOutcome::default()
        }
        LineCommand::Csv { rows } => result(ex.carbon.csv_view(rows)),
        LineCommand::Exec { argv, timeout } => {
            if let Some(word) = shell_word(&argv) {
                out.stream(
                    StreamName::Stderr,
                    &format!(
                        "note: %carbon exec runs no shell, so `{word}` reaches the program as an \
                         argument; for a shell line write %carbon exec --shell '{}'\n",
                        argv.join(" ")
                    ),
                );
            }
            let label = argv.join(" ");
            let steps = vec![Step {
                argv,
                phase: None,
                cleanup: None,
            }];
            run_commands(ex, RowLanguage::Command, &label, steps, timeout, out)
        }
        LineCommand::Run {
            file,
            args,
            timeout,
        } => run_file(ex, &file, &args, timeout, out),
    }
}

/// The first word of `argv` (after the program) that only a shell would act on: an operator
/// (`&&`, `|`, `>`, `;`, …), a `$VAR` or a glob. `None` for `sh -c LINE` and plain arguments.
fn shell_word(argv: &[String]) -> Option<&str> {
    const OPERATORS: [&str; 10] = ["&&", "||", "|", ";", ">", ">>", "<", "2>", "2>&1", "&"];
    argv.iter().skip(1).map(String::as_str).find(|w| {
        OPERATORS.contains(w) || w.starts_with('$') || w.contains('*') || w.starts_with('~')
    })
}

fn result(b: MimeBundle) -> ExecOutcome {
    ExecOutcome {
        result: Some(b),
        ..Default::default()
    }
}

fn text(s: impl Into<String>) -> ExecOutcome {
    result(MimeBundle::plain(s))
}

/// `%%carbon …` cell magic.
pub fn cell_magic(
    ex: &mut Executor,
    call: &MagicCall,
    body: &str,
    out: &mut dyn Publish,
) -> ExecOutcome {
    let args = match magic::parse_cell_args(&call.args) {
        Ok(a) => a,
        Err(e) => return usage_error(e),
    };
    let lang = args
        .language
        .as_deref()
        .and_then(Language::parse)
        .unwrap_or(ex.default_language);
    let opts = match opts_from(&ex.carbon, Some(&args)) {
        Ok(o) => o,
        Err(e) => return usage_error(e),
    };
    if body.trim().is_empty() {
        return usage_error(UsageError::new(
            "%%carbon",
            "the cell is empty: put the code to meter after the %%carbon line",
        ));
    }
    metered(ex, lang, body, opts, args.repeat, out)
}

/// A plain cell while `%carbon on` is active.
pub fn run_auto_metered(
    ex: &mut Executor,
    lang: Language,
    body: &str,
    out: &mut dyn Publish,
) -> ExecOutcome {
    match opts_from(&ex.carbon, None) {
        Ok(opts) => metered(ex, lang, body, opts, 1, out),
        Err(_) => ex.run_plain(lang, body, out),
    }
}

fn run_file(
    ex: &mut Executor,
    file: &Path,
    args: &[String],
    timeout: Option<f64>,
    out: &mut dyn Publish,
) -> ExecOutcome {
    let path = if file.is_absolute() {
        file.to_path_buf()
    } else {
        ex.workdir.join(file)
    };
    if !path.is_file() {
        return usage_error(UsageError::new(
            "%carbon run",
            format!("no such file: {}", path.display()),
        ));
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let label = file.display().to_string();
    let Some(language) = Language::from_extension(&ext) else {
        return usage_error(UsageError::new(
            "%carbon run",
            format!(
                "cannot run '.{ext}' files [possible values: {}]; use %carbon exec COMMAND for anything else",
                carbon_magics::lang::run_extensions()
            ),
        ));
    };
    // The language's toolchain comes from its back-end, the steps from its table row.
    let program = match (crate::runtime::backend(language).file_program)(&ex.settings) {
        Ok(p) => p,
        Err(e) => return runtime_failure(&e),
    };
    let steps = file_steps(language, &program, &path, args);
    run_commands(ex, language.into(), &label, steps, timeout, out)
}

/// Runs programs one after the other as one metered run (`%carbon exec`, `%carbon run`).
fn run_commands(
    ex: &mut Executor,
    language: RowLanguage,
    label: &str,
    steps: Vec<Step>,
    timeout: Option<f64>,
    out: &mut dyn Publish,
) -> ExecOutcome {
    ex.warn_settings_once(out);
    let mut opts = match opts_from(&ex.carbon, None) {
        Ok(o) => o,
        Err(e) => return usage_error(e),
    };
    opts.label = label.to_string();
    opts.timeout = timeout;
    let meter = ex.carbon.meter(&opts.meter);
    let live_after = ex.carbon.config().live_after_s;
    let group = Arc::new(std::sync::Mutex::new(None::<u32>));
    let g2 = group.clone();
    ex.interrupts.arm(Some(Arc::new(move || {
        if let Some(pg) = *g2.lock().unwrap_or_else(|e| e.into_inner()) {
            child::signal_group(pg, libc::SIGINT);
        }
    })));
    let ints = ex.interrupts.clone();
    let g3 = group.clone();
    meter.start(&[]);
    let live = Live::spawn(
        meter.clone(),
        out.boxed_clone(),
        None,
        live_after,
        timeout,
        Box::new(move || {
            if let Some(pg) = *g3.lock().unwrap_or_else(|e| e.into_inner()) {
                child::signal_group(pg, libc::SIGTERM);
            }
        }),
        opts.pue,
        opts.zone.g_per_kwh,
    );
    let mut failure: Option<(String, String)> = None;
    // A program that could not start: the report says why, next to its `error` status.
    let mut not_started: Option<String> = None;
    let mut cleanups = Vec::new();
    for step in steps {
        if let Some(c) = step.cleanup.clone() {
            cleanups.push(c);
        }
        if let Some(ph) = step.phase {
            meter.mark_phase(ph);
        }
        let mut run = match CommandRun::start(&step.argv, &ex.workdir, out) {
            Ok(r) => r,
            Err(e) => {
                not_started = Some(e.to_string());
                failure = Some((e.ename().into(), e.to_string()));
                break;
            }
        };
        let pid = run.pid();
        *group.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
        meter.add_root(pid);
        // SIGINT/SIGTERM come from the handlers above; SIGKILL follows if they are ignored.
        run.wait_exited(|| ints.requested() || live.timed_out());
        // Read it while it is an unreaped zombie (its stat still holds its and its reaped
        // children's CPU time), then let it leave the tree before reaping it. The handlers
        // forget the group first: it must not be signalled once its id may be reused.
        meter.retire_root(pid);
        *group.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = run.finish() {
            failure = Some((e.ename().into(), e.to_string()));
            break;
        }
        if ints.requested() || live.timed_out() {
            break;
        }
    }
    let timed_out_now = live.timed_out();
    let (shown, timed_out) = live.finish();
    let meas = meter.stop();
    let interrupted = ints.requested();
    ex.interrupts.disarm();
    for c in cleanups {
        let _ = std::fs::remove_file(c);
    }
    let status = if timed_out || timed_out_now {
        RowStatus::Timeout
    } else if interrupted {
        RowStatus::Interrupted
    } else if failure.is_some() {
        RowStatus::Error
    } else {
        RowStatus::Ok
    };
    let mut outcome = ExecOutcome::default();
    if let Some(meas) = meas {
        let (r, w) = record(&mut ex.carbon, &meas, &opts, language, status.clone(), None);
        let w = match &not_started {
            Some(why) => format!("{why}; {w}"),
            None => w,
        };
        show_report(out, &[r], None, &w, shown);
    }
    let err = match status {
        RowStatus::Timeout => Some((
            "TimeoutError".to_string(),
            format!(
                "stopped after --timeout {} s (metered and recorded)",
                timeout.unwrap_or_default()
            ),
        )),
        RowStatus::Interrupted => {
            Some(("KeyboardInterrupt".to_string(), "interrupted".to_string()))
        }
        _ => failure,
    };
    if let Some((ename, evalue)) = err {
        outcome.error = Some(crate::runtime::ExecError::new(ename, evalue));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::{ExecConfig, Executor};
    use crate::runtime::Collected;
    use crate::runtime::Collector;
    use crate::runtime::test_runtime::TestRuntime;
    use carbon_magics::carbon::magic::keys;
    use carbon_magics::carbon::sink;

    fn executor(dir: &Path) -> Executor {
        let mut ex = Executor::new(ExecConfig {
            default_language: Language::Python,
            workdir: dir.to_path_buf(),
            factory: TestRuntime::factory(),
        });
        ex.settings.set(keys::NVML_LIB, "none");
        ex.settings
            .set(keys::POWERCAP_ROOT, &dir.join("powercap").to_string_lossy());
        ex.carbon.reload(&ex.settings);
        ex
    }

    fn displays(c: &Collector) -> Vec<MimeBundle> {
        c.items()
            .into_iter()
            .filter_map(|i| match i {
                Collected::Display(b, _) | Collected::Update(b, _) => Some(b),
                _ => None,
            })
            // Charts are outputs of their own (SVG + PNG); these tests read the reports.
            .filter(|b| b.text("image/svg+xml").is_none())
            .collect()
    }

    #[test]
    fn cell_is_metered_recorded_and_reported() {
        let d = tempfile::tempdir().unwrap();
        let mut ex = executor(d.path());
        let mut c = Collector::default();
        let o = ex.execute(
            "%%carbon --country FRA --label first\nprint hello\n",
            &mut c,
        );
        assert!(o.error.is_none(), "{o:?}");
        assert_eq!(c.text(StreamName::Stdout), "hello\n");
        let ds = displays(&c);
        let rep = ds.last().unwrap().text("text/plain").unwrap().to_string();
        assert!(rep.contains("France") && rep.contains("first"), "{rep}");
        let v = sink::read_csv(&d.path().join("emissions.csv")).unwrap();
        assert_eq!(v.rows.len(), 1);
        let col = |n: &str| v.header.iter().position(|h| h == n).unwrap();
        assert_eq!(v.rows[0][col("status")], "ok");
        assert_eq!(v.rows[0][col("country_iso_code")], "FRA");
        assert_eq!(v.rows[0][col("label")], "first");
    }

    #[test]
    fn failing_repeat_timeout_and_bad_options() {
        let d = tempfile::tempdir().unwrap();
        let mut ex = executor(d.path());
        let mut c = Collector::default();
        let o = ex.execute("%%carbon\nerror ValueError boom\n", &mut c);
        assert_eq!(o.error.unwrap().ename, "ValueError");
        let o = ex.execute("%%carbon --repeat 3 --no-csv\nprint x\n", &mut c);
        assert!(o.error.is_none());
        let rep = displays(&c)
            .last()
            .unwrap()
            .text("text/plain")
            .unwrap()
            .to_string();
        assert!(rep.contains("3 runs"), "{rep}");
        let o = ex.execute("%%carbon --timeout 0.2\nsleep 30\n", &mut c);
        assert!(o.error.unwrap().evalue.contains("--timeout"));
        let v = sink::read_csv(&d.path().join("emissions.csv")).unwrap();
        let st = v.header.iter().position(|h| h == "status").unwrap();
        let statuses: Vec<&str> = v.rows.iter().map(|r| r[st].as_str()).collect();
        assert_eq!(statuses, vec!["error", "timeout"]);
        for bad in [
            "%%carbon --pue -1\nprint x",
            "%%carbon --country XXX\nprint x",
            "%carbon fly",
        ] {
            let o = ex.execute(bad, &mut c);
            let e = o.error.unwrap();
            assert_eq!(e.ename, "UsageError", "{bad}");
            assert!(!e.evalue.contains('\n'));
        }
        assert_eq!(
            sink::read_csv(&d.path().join("emissions.csv"))
                .unwrap()
                .rows
                .len(),
            2
        );
    }

    /// The live thread sleeps until the runs it knows are due (here 30 s after a short run
    /// that has ended, which it is not told about); a run whose timeout comes sooner wakes it.
    #[test]
    fn a_timeout_sooner_than_the_live_threads_next_wake_still_fires() {
        let d = tempfile::tempdir().unwrap();
        let mut ex = executor(d.path());
        ex.settings.set(keys::LIVE_AFTER, "30");
        ex.carbon.reload(&ex.settings);
        let mut c = Collector::default();
        for _ in 0..3 {
            assert!(ex.execute("%%carbon\nprint x\n", &mut c).error.is_none());
        }
        let o = ex.execute("%%carbon --timeout 0.2\nsleep 60\n", &mut c);
        assert!(o.error.unwrap().evalue.contains("--timeout"));
        let v = sink::read_csv(&d.path().join("emissions.csv")).unwrap();
        let col = |n: &str| v.header.iter().position(|h| h == n).unwrap();
        assert_eq!(v.rows[3][col("status")], "timeout");
        let secs: f64 = v.rows[3][col("duration")].parse().unwrap();
        // stopped by its own timeout, not when the thread would have woken (30 s)
        assert!((0.2..20.0).contains(&secs), "{secs} s");
        assert!(
            !c.items()
                .iter()
                .any(|i| matches!(i, Collected::Display(_, Some(_)))),
            "no live display before live_after"
        );
    }

    #[test]
    fn live_display_is_replaced_by_report() {
        let d = tempfile::tempdir().unwrap();
        let mut ex = executor(d.path());
        ex.settings.set(keys::LIVE_AFTER, "0.05");
        ex.carbon.reload(&ex.settings);
        let mut c = Collector::default();
        ex.execute("%%carbon\nsleep 0.4\n", &mut c);
        let items = c.items();
        let first = items.iter().find_map(|i| match i {
            Collected::Display(b, Some(id)) => Some((b.clone(), id.clone())),
            _ => None,
        });
        let (b, id) = first.expect("no live display");
        assert!(b.text("text/plain").unwrap().contains("running"));
        let last = items
            .iter()
            .rev()
            .find(|i| matches!(i, Collected::Update(..)))
            .unwrap();
        assert!(
            matches!(last, Collected::Update(b, i) if i == &id && b.text("text/plain").unwrap().contains("emissions")),
            "{last:?}"
        );
    }

    #[test]
    fn exec_meters_a_command_with_exact_fake_rapl_in_machine_scope() {
        let d = tempfile::tempdir().unwrap();
        let pc = d.path().join("powercap").join("intel-rapl:0");
        std::fs::create_dir_all(&pc).unwrap();
        std::fs::write(pc.join("name"), "package-0\n").unwrap();
        std::fs::write(pc.join("max_energy_range_uj"), "1000000000\n").unwrap();
        std::fs::write(pc.join("energy_uj"), "999000000\n").unwrap();
        let mut ex = executor(d.path());
        let mut c = Collector::default();
        ex.execute("%carbon config scope=machine", &mut c);
        // the command itself moves the counter across the wrap: 999 J → 1000 J (wrap) → 41 J
        let cmd = format!(
            "%carbon exec sh -c 'echo 41000000 > {}/energy_uj; echo done'",
            pc.display()
        );
        let o = ex.execute(&cmd, &mut c);
        assert!(o.error.is_none(), "{o:?}");
        assert!(c.text(StreamName::Stdout).contains("done"));
        let v = sink::read_csv(&d.path().join("emissions.csv")).unwrap();
        let col = |n: &str| v.header.iter().position(|h| h == n).unwrap();
        let kwh: f64 = v.rows[0][col("cpu_energy")].parse().unwrap();
        assert!((kwh * 3.6e6 - 42.0).abs() < 1e-9, "{} J", kwh * 3.6e6);
        assert_eq!(v.rows[0][col("tracking_mode")], "machine");
        assert_eq!(v.rows[0][col("language")], "command");
        // a failing command is recorded with its status
        let o = ex.execute("%carbon exec sh -c 'exit 3'", &mut c);
        assert!(o.error.unwrap().evalue.contains("exited with status 3"));
        let v = sink::read_csv(&d.path().join("emissions.csv")).unwrap();
        assert_eq!(v.rows[1][col("status")], "error");
        // summary and csv views
        ex.execute("%carbon summary", &mut c);
        let s = displays(&c).last().unwrap().clone();
        assert!(s.text("text/plain").unwrap().contains("command"));
        let s = ex.execute("%carbon csv", &mut c).result.unwrap();
        assert!(s.text("text/plain").unwrap().contains("2 row(s)"));
    }

    #[test]
    fn shell_words_are_named() {
        let v = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(shell_word(&v("echo a && echo b")), Some("&&"));
        assert_eq!(shell_word(&v("ls *.py")), Some("*.py"));
        assert_eq!(shell_word(&v("echo $HOME")), Some("$HOME"));
        assert_eq!(shell_word(&v("python3 -c print(1)")), None);
        let sh = vec!["sh".into(), "-c".into(), "a && b".into()];
        assert_eq!(shell_word(&sh), None);
    }
}
