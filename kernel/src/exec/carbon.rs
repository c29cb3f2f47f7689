//! `%%carbon` / `%carbon …` wiring: meter a runtime's process tree around a cell, record the row,
//! show the live display and the report.
//!
//! Per cell: start the runtime, `meter.start(pids)` (two boundary reads, no sampling thread for
//! short cells), run it with a publisher that forwards compile/run phase marks to the meter, a
//! small live thread that shows progress after ~1 s and enforces `--timeout`, `meter.stop()`,
//! one CSV row (failing, interrupted and timed-out runs too, with their status), the report.

use super::{Executor, runtime_failure, usage_error};
use crate::runtime::child::{self, CommandRun};
use crate::runtime::{ExecOutcome, Language, Phase, Publish, RuntimeError, StreamName};
use carbon_magics::MimeBundle;
use carbon_magics::carbon::intensity::{self, Zone};
use carbon_magics::carbon::magic::{self, CarbonConfig, LineCommand};
use carbon_magics::carbon::report::{self, RunReport, SessionEntry};
use carbon_magics::carbon::sink::{self, CsvSink, Sink, SinkError, Written};
use carbon_magics::carbon::{EmissionRecord, Measurement, Meter, MeterConfig, MeterPhase};
use carbon_magics::config::Settings;
use carbon_magics::parse::MagicCall;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Session state of the carbon magics.
pub struct CarbonState {
    auto: bool,
    cfg: CarbonConfig,
    warnings: Vec<String>,
    meters: Vec<Meter>,
    sink: Option<CsvSink>,
    session_id: String,
    entries: Vec<SessionEntry>,
    workdir: PathBuf,
}

impl CarbonState {
    /// Loads configuration (`CARBON_*` keys).
    pub fn new(settings: &Settings, workdir: &Path) -> Self {
        let (cfg, warnings) = CarbonConfig::from_settings(settings, workdir);
        // Detect the CPU and memory now, off the executor thread, so the first metered cell does
        // not pay for it.
        std::thread::spawn(|| {
            carbon_magics::carbon::hardware::machine();
        });
        Self {
            auto: false,
            cfg,
            warnings,
            meters: Vec::new(),
            sink: None,
            session_id: uuid::Uuid::new_v4().to_string(),
            entries: Vec::new(),
            workdir: workdir.to_path_buf(),
        }
    }

    /// This kernel session's id: `experiment_id` of every `emissions.csv` row it writes (cells and
    /// LLM requests alike), so a session's rows can be grouped.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// `%carbon on` is active: every cell is metered.
    pub fn auto_meter(&self) -> bool {
        self.auto
    }

    fn reload(&mut self, settings: &Settings) {
        let (cfg, warnings) = CarbonConfig::from_settings(settings, &self.workdir);
        if cfg.output != self.cfg.output {
            self.sink = None;
        }
        self.cfg = cfg;
        self.warnings = warnings;
    }

    /// The meter for a configuration (built once: sensor choice and detection are cached).
    fn meter(&mut self, mc: &MeterConfig) -> Meter {
        if let Some(m) = self.meters.iter().find(|m| &m.config() == mc) {
            return m.clone();
        }
        let m = Meter::new(mc.clone());
        self.meters.push(m.clone());
        m
    }

    fn sink(&mut self) -> &mut CsvSink {
        let out = self.cfg.output.clone();
        self.sink.get_or_insert_with(|| CsvSink::new(out))
    }

    /// The carbon settings in force (country, PUE, output file, project…).
    pub fn config(&self) -> &CarbonConfig {
        &self.cfg
    }

    /// Appends rows written by another magic (`%llm`) through this session's one sink, so every
    /// row of the kernel goes to the same file, with the same foreign-header handling.
    pub fn record_rows(&mut self, rows: &[EmissionRecord]) -> Result<Written, SinkError> {
        self.sink().record_all(rows)
    }
}

/// Options of one metered execution.
#[derive(Debug, Clone)]
struct Opts {
    zone: Zone,
    pue: f64,
    meter: MeterConfig,
    label: String,
    timeout: Option<f64>,
    csv: bool,
}

fn opts_from(state: &CarbonState, args: Option<&magic::CellArgs>) -> Result<Opts, String> {
    let cfg = &state.cfg;
    let country = args
        .and_then(|a| a.country.clone())
        .or_else(|| cfg.country.clone());
    let zone = intensity::zone(country.as_deref()).map_err(|e| format!("UsageError: {e}"))?;
    let mut meter = cfg.meter.clone();
    if let Some(s) = args.and_then(|a| a.scope) {
        meter.scope = s;
    }
    Ok(Opts {
        zone,
        pue: args.and_then(|a| a.pue).unwrap_or(cfg.pue),
        meter,
        label: args.and_then(|a| a.label.clone()).unwrap_or_default(),
        timeout: args.and_then(|a| a.timeout),
        csv: !args.is_some_and(|a| a.no_csv),
    })
}

/// Forwards everything, and phase marks to the meter too.
struct PhasePublish<'a> {
    inner: &'a mut dyn Publish,
    meter: Meter,
}

impl Publish for PhasePublish<'_> {
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
    fn boxed_clone(&self) -> Box<dyn Publish> {
        self.inner.boxed_clone()
    }
}

/// The live display + timeout thread of one run. It sleeps until `live_after` (no sampling for
/// short cells), then samples the meter about once a second.
struct Live {
    stop: mpsc::Sender<()>,
    handle: JoinHandle<Option<String>>,
    timed_out: Arc<AtomicBool>,
}

impl Live {
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        meter: Meter,
        mut out: Box<dyn Publish>,
        shown: Option<String>,
        live_after: f64,
        timeout: Option<f64>,
        on_timeout: Box<dyn Fn() + Send>,
        pue: f64,
        g_per_kwh: f64,
    ) -> Live {
        let (tx, rx) = mpsc::channel::<()>();
        let timed_out = Arc::new(AtomicBool::new(false));
        let flag = timed_out.clone();
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut shown = shown;
            let live_at = Duration::from_secs_f64(live_after);
            let deadline = timeout.map(Duration::from_secs_f64);
            let mut next_live = live_at;
            loop {
                let mut wake = next_live;
                if let Some(d) = deadline
                    && !flag.load(Ordering::SeqCst)
                {
                    wake = wake.min(d);
                }
                let wait = wake.saturating_sub(t0.elapsed());
                match rx.recv_timeout(wait) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => break,
                }
                let el = t0.elapsed();
                if let Some(d) = deadline
                    && el >= d
                    && !flag.swap(true, Ordering::SeqCst)
                {
                    on_timeout();
                }
                if el >= next_live {
                    if let Some(s) = meter.sample() {
                        let b = report::live(&s, pue, g_per_kwh);
                        match &shown {
                            Some(id) => out.update_display(b, id),
                            None => {
                                let id = format!("carbon-{}", uuid::Uuid::new_v4());
                                out.display(b, Some(&id));
                                shown = Some(id);
                            }
                        }
                    }
                    next_live = el + Duration::from_secs(1);
                }
            }
            shown
        });
        Live {
            stop: tx,
            handle,
            timed_out,
        }
    }

    /// Stops the thread; returns the live display's id (if shown) and whether it timed out.
    fn finish(self) -> (Option<String>, bool) {
        let _ = self.stop.send(());
        let shown = self.handle.join().unwrap_or(None);
        (shown, self.timed_out.load(Ordering::SeqCst))
    }
}

fn status_of(
    res: &Result<ExecOutcome, RuntimeError>,
    timed_out: bool,
    interrupted: bool,
) -> String {
    match res {
        Err(_) => "runtime-error".into(),
        Ok(_) if timed_out => "timeout".into(),
        Ok(o) => match &o.error {
            None => "ok".into(),
            Some(e) if interrupted || e.ename == "KeyboardInterrupt" => "interrupted".into(),
            Some(_) => "error".into(),
        },
    }
}

/// Builds the row, writes it (unless `--no-csv`), remembers the cell for the summary.
fn record(
    state: &mut CarbonState,
    meas: &Measurement,
    opts: &Opts,
    language: &str,
    status: &str,
    repeat_index: Option<u32>,
) -> (RunReport, String) {
    let mut rec = EmissionRecord::from_measurement(
        meas,
        &state.cfg.project,
        &state.session_id,
        &opts.zone,
        opts.pue,
    );
    rec.status = status.to_string();
    rec.language = language.to_string();
    rec.label = opts.label.clone();
    rec.repeat_index = repeat_index;
    let where_ = if opts.csv {
        match state.sink().record(&rec) {
            Ok(w) => match w.notice {
                Some(n) => format!("⚠ {n}"),
                None => format!("row appended to {}", w.path.display()),
            },
            Err(e) => format!("⚠ not recorded: {e}"),
        }
    } else {
        "not recorded (--no-csv)".to_string()
    };
    state.entries.push(SessionEntry {
        language: language.to_string(),
        label: opts.label.clone(),
        parts: meas.energy.scaled(opts.pue),
        emissions: rec.emissions,
        duration: meas.duration_s,
    });
    (
        RunReport {
            rec,
            meas: meas.clone(),
        },
        where_,
    )
}

fn show_report(out: &mut dyn Publish, runs: &[RunReport], where_: &str, shown: Option<String>) {
    let b = report::cell_report(runs, where_);
    match shown {
        Some(id) => out.update_display(b, &id),
        None => out.display(b, None),
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
    let meter = ex.carbon.meter(&opts.meter);
    let live_after = ex.carbon.cfg.live_after_s;
    let mut runs = Vec::new();
    let mut wheres = Vec::new();
    let mut shown: Option<String> = None;
    let mut last = ExecOutcome::default();
    for i in 0..repeat {
        let rt = ex.runtimes.get(lang, &ex.settings);
        if let Err(e) = rt.start() {
            return runtime_failure(&e);
        }
        let pids = rt.pids();
        ex.interrupts.arm(Some(rt.interrupt_handle()));
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
            rt.execute(body, &mut p)
        };
        let (id, timed_out) = live.finish();
        shown = id;
        let meas = meter.stop();
        let interrupted = ex.interrupts.requested();
        ex.interrupts.disarm();
        let status = status_of(&res, timed_out, interrupted);
        if let Some(meas) = meas {
            let idx = (repeat > 1).then_some(i + 1);
            let (r, w) = record(&mut ex.carbon, &meas, &opts, lang.name(), &status, idx);
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
    }
    if !runs.is_empty() {
        let where_ = summarize_wheres(&wheres);
        show_report(out, &runs, &where_, shown);
    }
    last
}

fn summarize_wheres(w: &[String]) -> String {
    let mut u: Vec<&String> = Vec::new();
    for x in w {
        if !u.contains(&x) {
            u.push(x);
        }
    }
    if w.len() > 1 && u.len() == 1 {
        u[0].replace("row appended", &format!("{} rows appended", w.len()))
    } else {
        u.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
    }
}

/// `%carbon …` line magic.
pub fn line_magic(ex: &mut Executor, call: &MagicCall, out: &mut dyn Publish) -> ExecOutcome {
    let cmd = match magic::parse_line_args(&call.args) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    match cmd {
        LineCommand::On => {
            ex.carbon.auto = true;
            text("carbon metering on: every cell is metered (%carbon off to stop)")
        }
        LineCommand::Off => {
            ex.carbon.auto = false;
            text("carbon metering off")
        }
        LineCommand::Status => status(ex),
        LineCommand::Config(pairs) => {
            for (k, v) in &pairs {
                ex.settings.set(k, v);
            }
            ex.carbon.reload(&ex.settings);
            config_text(ex, pairs.is_empty())
        }
        LineCommand::Summary => ExecOutcome {
            result: Some(report::summary(&ex.carbon.entries)),
            ..Default::default()
        },
        LineCommand::Csv { rows } => {
            let path = ex
                .carbon
                .sink
                .as_ref()
                .map(|s| s.path().to_path_buf())
                .unwrap_or_else(|| ex.carbon.cfg.output.clone());
            let view = sink::read_csv(&path);
            ExecOutcome {
                result: Some(report::csv_view(&path, &view, rows)),
                ..Default::default()
            }
        }
        LineCommand::Exec { argv, timeout } => {
            let label = argv.join(" ");
            let steps = vec![Step {
                argv,
                phase: None,
                cleanup: None,
            }];
            run_commands(ex, "command", &label, steps, timeout, out)
        }
        LineCommand::Run {
            file,
            args,
            timeout,
        } => run_file(ex, &file, &args, timeout, out),
    }
}

fn text(s: impl Into<String>) -> ExecOutcome {
    ExecOutcome {
        result: Some(MimeBundle::plain(s)),
        ..Default::default()
    }
}

fn config_text(ex: &Executor, show_all: bool) -> ExecOutcome {
    let c = &ex.carbon.cfg;
    let mut s = String::new();
    if show_all {
        s.push_str(
            "carbon settings (set with %carbon config KEY=VALUE, or in .env / the environment):\n",
        );
    } else {
        s.push_str("carbon settings updated:\n");
    }
    s.push_str(&format!(
        "  country  {}\n  pue      {}\n  scope    {}\n  tdp      {}\n  output   {}\n  project  {}\n",
        c.country.as_deref().unwrap_or("(world average 475 gCO₂eq/kWh)"),
        c.pue,
        c.meter.scope.name(),
        c.meter
            .tdp_w
            .map(|w| format!("{w} W"))
            .unwrap_or_else(|| "auto".into()),
        c.output.display(),
        c.project
    ));
    for w in &ex.carbon.warnings {
        s.push_str(&format!("  warning: {w}\n"));
    }
    text(s)
}

fn status(ex: &mut Executor) -> ExecOutcome {
    let mc = ex.carbon.cfg.meter.clone();
    let setup = ex.carbon.meter(&mc).setup();
    let zone = intensity::zone(ex.carbon.cfg.country.as_deref())
        .map(|z| format!("{} — {} gCO₂eq/kWh ({})", z.name, z.g_per_kwh, z.source))
        .unwrap_or_else(|e| e);
    let total: f64 = ex.carbon.entries.iter().map(|e| e.emissions).sum();
    let mut s = format!(
        "carbon metering: {}\n  CPU sensor  {}\n  RAM sensor  {}\n  GPU sensor  {}\n  machine     {} ({} logical CPUs, {:.1} GiB)\n  zone        {zone}\n  PUE         {}\n  scope       {}\n  output      {}\n  session     {} metered cell(s), {:.3e} kgCO₂eq\n",
        if ex.carbon.auto {
            "on (every cell)"
        } else {
            "off (use %%carbon, or %carbon on)"
        },
        setup.cpu.name,
        setup.ram.name,
        setup.gpu.name,
        if setup.machine.cpu_model.is_empty() {
            "unknown CPU"
        } else {
            setup.machine.cpu_model.as_str()
        },
        setup.machine.logical_cpus,
        setup.machine.mem_total as f64 / (1u64 << 30) as f64,
        ex.carbon.cfg.pue,
        mc.scope.name(),
        ex.carbon
            .sink
            .as_ref()
            .map(|s| s.path().to_path_buf())
            .unwrap_or_else(|| ex.carbon.cfg.output.clone())
            .display(),
        ex.carbon.entries.len(),
        total
    );
    for n in setup.notes.iter().chain(ex.carbon.warnings.iter()) {
        s.push_str(&format!("  note: {n}\n"));
    }
    text(s)
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
        return usage_error(
            "UsageError: %%carbon: the cell is empty: put the code to meter after the %%carbon line",
        );
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

/// One program to run in a metered sequence.
struct Step {
    argv: Vec<String>,
    phase: Option<MeterPhase>,
    cleanup: Option<PathBuf>,
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
        return usage_error(format!(
            "UsageError: %carbon run: no such file: {}",
            path.display()
        ));
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let p = path.to_string_lossy().to_string();
    let label = file.display().to_string();
    let (lang, steps) = match ext.as_str() {
        "py" => {
            let py = match crate::runtime::python::python_executable(&ex.settings) {
                Ok(p) => p,
                Err(e) => return runtime_failure(&e),
            };
            let mut argv = vec![py.to_string_lossy().to_string(), p];
            argv.extend(args.iter().cloned());
            (
                "python",
                vec![Step {
                    argv,
                    phase: None,
                    cleanup: None,
                }],
            )
        }
        "java" => {
            let (java, _javac) = match crate::runtime::java::java_tools(&ex.settings) {
                Ok(t) => t,
                Err(e) => return runtime_failure(&e),
            };
            // Source-file mode (JEP 330, JDK 11+): compiles in memory and runs in one JVM.
            let mut argv = vec![java.to_string_lossy().to_string(), p];
            argv.extend(args.iter().cloned());
            (
                "java",
                vec![Step {
                    argv,
                    phase: None,
                    cleanup: None,
                }],
            )
        }
        "rs" => {
            let bin = std::env::temp_dir().join(format!("carbon-run-{}", uuid::Uuid::new_v4()));
            let b = bin.to_string_lossy().to_string();
            let mut run = vec![b.clone()];
            run.extend(args.iter().cloned());
            (
                "rust",
                vec![
                    Step {
                        argv: vec!["rustc".into(), "-O".into(), "-o".into(), b, p],
                        phase: Some(MeterPhase::Compile),
                        cleanup: None,
                    },
                    Step {
                        argv: run,
                        phase: Some(MeterPhase::Run),
                        cleanup: Some(bin),
                    },
                ],
            )
        }
        other => {
            return usage_error(format!(
                "UsageError: %carbon run: cannot run '.{other}' files [possible values: .py, .java, .rs]; use %carbon exec COMMAND for anything else"
            ));
        }
    };
    run_commands(ex, lang, &label, steps, timeout, out)
}

/// Runs programs one after the other as one metered run (`%carbon exec`, `%carbon run`).
fn run_commands(
    ex: &mut Executor,
    language: &str,
    label: &str,
    steps: Vec<Step>,
    timeout: Option<f64>,
    out: &mut dyn Publish,
) -> ExecOutcome {
    let mut opts = match opts_from(&ex.carbon, None) {
        Ok(o) => o,
        Err(e) => return usage_error(e),
    };
    opts.label = label.to_string();
    opts.timeout = timeout;
    let meter = ex.carbon.meter(&opts.meter);
    let live_after = ex.carbon.cfg.live_after_s;
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
                failure = Some((e.ename().into(), e.to_string()));
                break;
            }
        };
        let pid = run.pid();
        *group.lock().unwrap_or_else(|e| e.into_inner()) = Some(pid);
        meter.add_root(pid);
        // SIGINT/SIGTERM come from the handlers above; SIGKILL follows if they are ignored.
        run.wait_exited(|| ints.requested() || live.timed_out.load(Ordering::SeqCst));
        // Read it while it is an unreaped zombie (its stat still holds its and its reaped
        // children's CPU time), then let it leave the tree before reaping it. The handlers
        // forget the group first: it must not be signalled once its id may be reused.
        meter.retire_root(pid);
        *group.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Err(e) = run.finish() {
            failure = Some((e.ename().into(), e.to_string()));
            break;
        }
        if ints.requested() || live.timed_out.load(Ordering::SeqCst) {
            break;
        }
    }
    let timed_out_now = live.timed_out.load(Ordering::SeqCst);
    let (shown, timed_out) = live.finish();
    let meas = meter.stop();
    let interrupted = ints.requested();
    ex.interrupts.disarm();
    for c in cleanups {
        let _ = std::fs::remove_file(c);
    }
    let status = if timed_out || timed_out_now {
        "timeout"
    } else if interrupted {
        "interrupted"
    } else if failure.is_some() {
        "error"
    } else {
        "ok"
    };
    let mut outcome = ExecOutcome::default();
    if let Some(meas) = meas {
        let (r, w) = record(&mut ex.carbon, &meas, &opts, language, status, None);
        show_report(out, &[r], &w, shown);
    }
    let err = match status {
        "timeout" => Some((
            "TimeoutError".to_string(),
            format!(
                "stopped after --timeout {} s (metered and recorded)",
                timeout.unwrap_or_default()
            ),
        )),
        "interrupted" => Some(("KeyboardInterrupt".to_string(), "interrupted".to_string())),
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
        let last = items.last().unwrap();
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
        let s = ex.execute("%carbon summary", &mut c).result.unwrap();
        assert!(s.text("text/plain").unwrap().contains("command"));
        let s = ex.execute("%carbon csv", &mut c).result.unwrap();
        assert!(s.text("text/plain").unwrap().contains("2 row(s)"));
    }
}
