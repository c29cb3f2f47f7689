//! [`CarbonSession`]: the state and the domain work of `%carbon` / `%%carbon` in one kernel
//! session, free of the kernel: settings, the meter cache, the options of a metered run, the rows
//! and where they went, the status words, and the `%carbon status` / `config` / `summary` / `csv`
//! texts. The kernel's adapter (`carbon_kernel::exec::carbon`) adds only what needs the kernel:
//! runtimes, interrupts and the live display thread.
//!
//! [`EmissionsSink`] is the kernel's one `emissions.csv`: a cloneable handle created once and
//! passed to every session that writes rows (cells here, LLM requests in `llm::session`).

use super::intensity::{self, Zone};
use super::magic::{CarbonConfig, CellArgs};
use super::meter::{Measurement, Meter, MeterConfig, MeterPhase};
use super::record::{EmissionRecord, RowKind, RowLanguage, RowStatus};
use super::sink::{self, CsvSink, Sink, SinkError, Written};
use crate::MimeBundle;
use crate::config::Settings;
use crate::error::UsageError;
use crate::lang::{FileRun, Language};
use crate::report::cell::{self as report, RunReport, SessionEntry};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The kernel's one `emissions.csv`, shared by every magic that writes rows so they all go to the
/// same file with the same foreign-header handling. Clones share the file.
#[derive(Clone)]
pub struct EmissionsSink {
    inner: Arc<Mutex<SinkSlot>>,
    /// Told of every batch of rows once it is written (the kernel's live metrics view), so what
    /// it counts equals the file by construction.
    observer: Option<RowObserver>,
}

/// A callback told of rows after they were written to `emissions.csv`.
pub type RowObserver = Arc<dyn Fn(&[EmissionRecord]) + Send + Sync>;

impl std::fmt::Debug for EmissionsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmissionsSink")
            .field("inner", &self.inner)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct SinkSlot {
    /// Configured file (`CARBON_OUTPUT`).
    output: PathBuf,
    /// Opened on the first row.
    sink: Option<CsvSink>,
    /// How long a write waits for a lock held elsewhere.
    lock_wait: std::time::Duration,
    /// Ends a lock wait early (the kernel's interrupt).
    stop: Option<sink::StopCheck>,
}

impl SinkSlot {
    fn open(&mut self) -> &mut CsvSink {
        let (out, wait, stop) = (self.output.clone(), self.lock_wait, self.stop.clone());
        self.sink
            .get_or_insert_with(|| CsvSink::new(out).with_lock_wait(wait).with_stop(stop))
    }
}

impl Default for EmissionsSink {
    fn default() -> Self {
        Self::new("emissions.csv")
    }
}

impl EmissionsSink {
    /// A sink writing to `output` (opened on the first row).
    pub fn new(output: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Mutex::new(SinkSlot {
                output: output.into(),
                sink: None,
                lock_wait: sink::DEFAULT_LOCK_WAIT,
                stop: None,
            })),
            observer: None,
        }
    }

    /// The same sink, telling `observer` of every batch of rows written.
    pub fn with_observer(mut self, observer: RowObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// The same sink waiting at most `wait` for a lock another process holds on the file, and
    /// ending the wait early when `stop` returns true (the kernel passes its interrupt); the rows
    /// then wait beside the file (see [`sink`]).
    pub fn with_lock_wait(
        self,
        wait: std::time::Duration,
        stop: Option<Arc<dyn Fn() -> bool + Send + Sync>>,
    ) -> Self {
        {
            let mut s = self.slot();
            s.lock_wait = wait;
            s.stop = stop.map(sink::StopCheck);
            s.sink = None;
        }
        self
    }

    fn written(&self, rows: &[EmissionRecord]) {
        if let Some(o) = &self.observer {
            o(rows);
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, SinkSlot> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Points the sink at `output`; the open file is closed when that changes the path.
    pub fn set_output(&self, output: &Path) {
        let mut s = self.slot();
        if s.output != output {
            s.output = output.to_path_buf();
            s.sink = None;
        }
    }

    /// Appends one row.
    pub fn record(&self, rec: &EmissionRecord) -> Result<Written, SinkError> {
        let written = self.slot().open().record(rec)?;
        self.written(std::slice::from_ref(rec));
        Ok(written)
    }

    /// Appends rows.
    pub fn record_all(&self, rows: &[EmissionRecord]) -> Result<Written, SinkError> {
        let written = self.slot().open().record_all(rows)?;
        self.written(rows);
        Ok(written)
    }

    /// The file rows go to: the open file (which may be a side file when the configured one has
    /// a foreign header), else the configured one.
    pub fn path(&self) -> PathBuf {
        let s = self.slot();
        match &s.sink {
            Some(k) => k.path().to_path_buf(),
            None => s.output.clone(),
        }
    }
}

/// The `label` of a runtime's start-up row.
pub const STARTUP_LABEL: &str = "start-up";

/// Options of one metered run (a cell, a file, a command).
#[derive(Debug, Clone)]
pub struct RunOpts {
    /// Electricity zone.
    pub zone: Zone,
    /// PUE.
    pub pue: f64,
    /// Meter configuration (scope, TDP, roots).
    pub meter: MeterConfig,
    /// Row label.
    pub label: String,
    /// Seconds before the run is stopped.
    pub timeout: Option<f64>,
    /// Append the row to `emissions.csv`.
    pub csv: bool,
}

/// How a metered run of a runtime ended, for its row's status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd<'a> {
    /// The runtime itself failed (died, unavailable).
    RuntimeFailed,
    /// The code ran; `error` is the error's name if it raised one.
    Finished {
        /// `ename` of the error, if any.
        error: Option<&'a str>,
    },
}

/// The `ename` of a cell whose runtime process died under it and was restarted (the Rust
/// runtime's crash of evcxr's child).
pub const RUNTIME_DIED: &str = "RuntimeDied";

/// The status word of a run's row: `ok`, `error`, `interrupted`, `timeout`, `runtime-error`.
/// A crash reads the same in every language: Python and Java report a dead runtime as a
/// failure ([`RunEnd::RuntimeFailed`]); the Rust runtime restarts evcxr's child and reports the
/// crash as the cell's error [`RUNTIME_DIED`], which is the same `runtime-error`.
pub fn run_status(end: RunEnd<'_>, timed_out: bool, interrupted: bool) -> RowStatus {
    match end {
        RunEnd::RuntimeFailed => RowStatus::RuntimeError,
        RunEnd::Finished {
            error: Some(RUNTIME_DIED),
        } if !timed_out && !interrupted => RowStatus::RuntimeError,
        RunEnd::Finished { .. } if timed_out => RowStatus::Timeout,
        RunEnd::Finished { error: None } => RowStatus::Ok,
        RunEnd::Finished { error: Some(e) } if interrupted || e == "KeyboardInterrupt" => {
            RowStatus::Interrupted
        }
        RunEnd::Finished { error: Some(_) } => RowStatus::Error,
    }
}

/// Where the rows of several runs went, in one line (`3 rows appended to …`).
pub fn summarize_wheres(w: &[String]) -> String {
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

/// One program of a metered sequence (`%carbon exec`, `%carbon run`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The meter phase this program is (compile / run), if any.
    pub phase: Option<MeterPhase>,
    /// A file to delete after the sequence (a compiled binary).
    pub cleanup: Option<PathBuf>,
}

/// The programs that run `file` with `args` for `%carbon run`, given the language's toolchain
/// `program` (interpreter, launcher or compiler, as the language's row says).
pub fn file_steps(lang: Language, program: &Path, file: &Path, args: &[String]) -> Vec<Step> {
    let prog = program.to_string_lossy().to_string();
    let file = file.to_string_lossy().to_string();
    match lang.row().file_run {
        FileRun::Direct => {
            let mut argv = vec![prog, file];
            argv.extend(args.iter().cloned());
            vec![Step {
                argv,
                phase: None,
                cleanup: None,
            }]
        }
        FileRun::CompileThenRun { flags } => {
            let bin = std::env::temp_dir().join(format!("carbon-run-{}", uuid::Uuid::new_v4()));
            let b = bin.to_string_lossy().to_string();
            let mut compile = vec![prog];
            compile.extend(flags.iter().map(|f| f.to_string()));
            compile.extend(["-o".to_string(), b.clone(), file]);
            let mut run = vec![b];
            run.extend(args.iter().cloned());
            vec![
                Step {
                    argv: compile,
                    phase: Some(MeterPhase::Compile),
                    cleanup: None,
                },
                Step {
                    argv: run,
                    phase: Some(MeterPhase::Run),
                    cleanup: Some(bin),
                },
            ]
        }
    }
}

/// The `%carbon` state of one kernel session.
pub struct CarbonSession {
    auto: bool,
    cfg: CarbonConfig,
    warnings: Vec<String>,
    meters: Vec<Meter>,
    sink: EmissionsSink,
    session_id: String,
    entries: Vec<SessionEntry>,
    workdir: PathBuf,
}

impl CarbonSession {
    /// Loads the `CARBON_*` settings; rows go through `sink`, tagged with `session_id`
    /// (`experiment_id`, shared with the other magics' rows).
    pub fn new(
        settings: &Settings,
        workdir: &Path,
        sink: EmissionsSink,
        session_id: impl Into<String>,
    ) -> Self {
        let (cfg, warnings) = CarbonConfig::from_settings(settings, workdir);
        sink.set_output(&cfg.output);
        // Detect the CPU and memory now, off the caller's thread, so the first metered cell does
        // not pay for it.
        std::thread::spawn(|| {
            super::hardware::machine();
        });
        Self {
            auto: false,
            cfg,
            warnings,
            meters: Vec::new(),
            sink,
            session_id: session_id.into(),
            entries: Vec::new(),
            workdir: workdir.to_path_buf(),
        }
    }

    /// This kernel session's id: `experiment_id` of every row.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// `%carbon on` is active: every cell is metered.
    pub fn auto_meter(&self) -> bool {
        self.auto
    }

    /// `%carbon on` / `off`; returns the text shown.
    pub fn set_auto(&mut self, on: bool) -> &'static str {
        self.auto = on;
        if on {
            "carbon metering on: every cell is metered (%carbon off to stop)"
        } else {
            "carbon metering off"
        }
    }

    /// Re-reads the settings (after `%carbon config`).
    pub fn reload(&mut self, settings: &Settings) {
        let (cfg, warnings) = CarbonConfig::from_settings(settings, &self.workdir);
        self.sink.set_output(&cfg.output);
        self.cfg = cfg;
        self.warnings = warnings;
    }

    /// The settings in force.
    pub fn config(&self) -> &CarbonConfig {
        &self.cfg
    }

    /// The kernel's emissions sink.
    pub fn sink(&self) -> &EmissionsSink {
        &self.sink
    }

    /// The cells metered so far.
    pub fn entries(&self) -> &[SessionEntry] {
        &self.entries
    }

    /// The meter for a configuration (built once: sensor choice and detection are cached).
    pub fn meter(&mut self, mc: &MeterConfig) -> Meter {
        if let Some(m) = self.meters.iter().find(|m| &m.config() == mc) {
            return m.clone();
        }
        let m = Meter::new(mc.clone());
        self.meters.push(m.clone());
        m
    }

    /// The options of a run: the session's settings, overridden by `%%carbon`'s arguments.
    pub fn opts(&self, args: Option<&CellArgs>) -> Result<RunOpts, UsageError> {
        let cfg = &self.cfg;
        let country = args
            .and_then(|a| a.country.clone())
            .or_else(|| cfg.country.clone());
        let zone = intensity::zone(country.as_deref()).map_err(UsageError::general)?;
        let mut meter = cfg.meter.clone();
        if let Some(s) = args.and_then(|a| a.scope) {
            meter.scope = s;
        }
        Ok(RunOpts {
            zone,
            pue: args.and_then(|a| a.pue).unwrap_or(cfg.pue),
            meter,
            label: args.and_then(|a| a.label.clone()).unwrap_or_default(),
            timeout: args.and_then(|a| a.timeout),
            csv: !args.is_some_and(|a| a.no_csv),
        })
    }

    /// The first columns of a row of this session that is not a measurement (an LLM request):
    /// project, session id, the configured zone (world average when it does not resolve), PUE.
    pub fn row_base(&self) -> EmissionRecord {
        let zone = intensity::zone(self.cfg.country.as_deref())
            .or_else(|_| intensity::zone(None))
            .unwrap_or_else(|_| unreachable!("the world average always resolves"));
        EmissionRecord::base(&self.cfg.project, &self.session_id, &zone, self.cfg.pue)
    }

    /// Builds the row of a measurement, writes it (unless `--no-csv`), remembers the run for
    /// `%carbon summary`; returns the run's report data and where the row went, in words.
    pub fn record(
        &mut self,
        meas: &Measurement,
        opts: &RunOpts,
        language: RowLanguage,
        status: RowStatus,
        repeat_index: Option<u32>,
    ) -> (RunReport, String) {
        self.record_row(meas, opts, language, status, repeat_index, RowKind::Cell)
    }

    /// Records the start of `language`'s runtime that a metered cell triggered: a row of kind
    /// `startup` labelled [`STARTUP_LABEL`], so the cell's own row stays comparable with the
    /// cells after it and the notebook's total still covers the start.
    pub fn record_startup(
        &mut self,
        meas: &Measurement,
        opts: &RunOpts,
        language: RowLanguage,
        status: RowStatus,
    ) -> (RunReport, String) {
        let opts = RunOpts {
            label: STARTUP_LABEL.into(),
            ..opts.clone()
        };
        self.record_row(meas, &opts, language, status, None, RowKind::Startup)
    }

    fn record_row(
        &mut self,
        meas: &Measurement,
        opts: &RunOpts,
        language: RowLanguage,
        status: RowStatus,
        repeat_index: Option<u32>,
        kind: RowKind,
    ) -> (RunReport, String) {
        let mut rec = EmissionRecord::from_measurement(
            meas,
            &self.cfg.project,
            &self.session_id,
            &opts.zone,
            opts.pue,
        );
        rec.status = status;
        rec.kind = kind.clone();
        rec.language = language;
        rec.label = opts.label.clone();
        rec.repeat_index = repeat_index;
        let where_ = if opts.csv {
            match self.sink.record(&rec) {
                Ok(w) => match w.notice {
                    Some(n) => format!("⚠ {n}"),
                    None => format!("row appended to {}", w.path.display()),
                },
                Err(e) => format!("⚠ not recorded: {e}"),
            }
        } else {
            "not recorded (--no-csv)".to_string()
        };
        self.entries.push(SessionEntry {
            kind,
            repeat_index,
            language: rec.language.to_string(),
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

    /// `%carbon config` (no pairs: all settings; else "updated").
    pub fn config_text(&self, show_all: bool) -> String {
        let c = &self.cfg;
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
            c.country
                .as_deref()
                .unwrap_or("(world average 475 gCO₂eq/kWh)"),
            c.pue,
            c.meter.scope.name(),
            c.meter
                .tdp_w
                .map(|w| format!("{w} W"))
                .unwrap_or_else(|| "auto".into()),
            c.output.display(),
            c.project
        ));
        for w in &self.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
        s
    }

    /// `%carbon status`: sensors, machine, zone, PUE, scope, output, session totals.
    pub fn status_text(&mut self) -> String {
        self.status_text_with("")
    }

    /// `%carbon status` with `extra` lines (the kernel's own, e.g. where metrics are served)
    /// before the notes.
    pub fn status_text_with(&mut self, extra: &str) -> String {
        let mc = self.cfg.meter.clone();
        let setup = self.meter(&mc).setup();
        let zone = intensity::zone(self.cfg.country.as_deref())
            .map(|z| format!("{} — {} gCO₂eq/kWh ({})", z.name, z.g_per_kwh, z.source))
            .unwrap_or_else(|e| e);
        let total: f64 = self.entries.iter().map(|e| e.emissions).sum();
        let mut s = format!(
            "carbon metering: {}\n  CPU sensor  {}\n  RAM sensor  {}\n  GPU sensor  {}\n  machine     {} ({} logical CPUs, {:.1} GiB)\n  zone        {zone}\n  PUE         {}\n  scope       {}\n  output      {}\n  session     {}, {}\n",
            if self.auto {
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
            self.cfg.pue,
            mc.scope.name(),
            self.sink.path().display(),
            report::Counts::of(&self.entries).describe(),
            crate::units::fmt_co2(crate::units::KgCo2(total))
        );
        s.push_str(extra);
        for n in setup.notes.iter().chain(self.warnings.iter()) {
            s.push_str(&format!("  note: {n}\n"));
        }
        s
    }

    /// `%carbon intensity`: the table of the zones the kernel knows and the world map, the
    /// configured zone marked.
    pub fn intensity(&self) -> Vec<MimeBundle> {
        let zone = intensity::zone(self.cfg.country.as_deref())
            .or_else(|_| intensity::zone(None))
            .expect("the world average always resolves");
        crate::report::map::intensity_bundles(&zone)
    }

    /// `%carbon summary`: totals by language (the chart: [`Self::summary_chart`]).
    pub fn summary(&self) -> MimeBundle {
        report::summary(&self.entries)
    }

    /// `%carbon summary`'s chart (SVG + PNG), `None` before the first metered cell.
    pub fn summary_chart(&self) -> Option<MimeBundle> {
        report::summary_chart(&self.entries)
    }

    /// `%carbon csv [--rows N]`.
    pub fn csv_view(&self, rows: usize) -> MimeBundle {
        let path = self.sink.path();
        let view = sink::read_csv(&path);
        report::csv_view(&path, &view, rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::magic::keys;

    fn session(dir: &Path) -> CarbonSession {
        let mut s = Settings::empty();
        s.set(keys::NVML_LIB, "none");
        s.set(keys::POWERCAP_ROOT, &dir.join("powercap").to_string_lossy());
        s.set(keys::COUNTRY, "FRA");
        CarbonSession::new(&s, dir, EmissionsSink::default(), "session-1")
    }

    /// A real measurement of this test process (model sensors: no RAPL tree, no NVML).
    fn measurement(s: &mut CarbonSession) -> Measurement {
        let mc = s.config().meter.clone();
        let m = s.meter(&mc);
        m.start(&[std::process::id()]);
        m.stop().expect("a measurement")
    }

    #[test]
    fn a_measurement_makes_one_row_in_the_sink_and_an_entry() {
        let d = tempfile::tempdir().unwrap();
        let mut s = session(d.path());
        let mut opts = s.opts(None).unwrap();
        opts.label = "first".into();
        let meas = measurement(&mut s);
        let (r, w) = s.record(&meas, &opts, Language::Python.into(), RowStatus::Ok, None);
        assert!(w.starts_with("row appended to"), "{w}");
        assert_eq!(r.rec.country_iso_code, "FRA");
        assert_eq!(r.rec.experiment_id, "session-1");
        assert_eq!(r.rec.status, RowStatus::Ok);
        let v = sink::read_csv(&d.path().join("emissions.csv")).unwrap();
        assert_eq!(v.rows.len(), 1);
        assert_eq!(s.entries().len(), 1);
        opts.csv = false;
        let (_, w) = s.record(
            &meas,
            &opts,
            Language::Python.into(),
            RowStatus::Error,
            Some(2),
        );
        assert_eq!(w, "not recorded (--no-csv)");
        assert_eq!(
            sink::read_csv(&d.path().join("emissions.csv"))
                .unwrap()
                .rows
                .len(),
            1
        );
        assert!(s.summary().text("text/plain").unwrap().contains("python"));
        assert!(
            s.csv_view(5)
                .text("text/plain")
                .unwrap()
                .contains("1 row(s)")
        );
    }

    #[test]
    fn status_and_config_texts() {
        let d = tempfile::tempdir().unwrap();
        let mut s = session(d.path());
        let t = s.status_text();
        assert!(t.starts_with("carbon metering: off"), "{t}");
        assert!(t.contains("CPU sensor") && t.contains("France"), "{t}");
        assert!(t.contains("0 cells in 0 runs"), "{t}");
        s.set_auto(true);
        assert!(s.status_text().starts_with("carbon metering: on"));
        let c = s.config_text(true);
        assert!(
            c.contains("country  FRA") && c.contains("pue      1"),
            "{c}"
        );
        assert!(s.config_text(false).starts_with("carbon settings updated"));
    }

    #[test]
    fn status_words_and_where_rows_went() {
        let fin = |e| RunEnd::Finished { error: e };
        assert_eq!(run_status(fin(None), false, false), RowStatus::Ok);
        assert_eq!(
            run_status(fin(Some("ValueError")), false, false),
            RowStatus::Error
        );
        assert_eq!(
            run_status(fin(Some("KeyboardInterrupt")), false, false),
            RowStatus::Interrupted
        );
        assert_eq!(
            run_status(fin(Some("X")), false, true),
            RowStatus::Interrupted
        );
        assert_eq!(run_status(fin(None), true, false), RowStatus::Timeout);
        // a crash: the same word whether the runtime failed or reported its death as an error
        assert_eq!(
            run_status(fin(Some(RUNTIME_DIED)), false, false),
            RowStatus::RuntimeError
        );
        assert_eq!(
            run_status(RunEnd::RuntimeFailed, true, true),
            RowStatus::RuntimeError
        );
        let w = vec!["row appended to e.csv".to_string(); 3];
        assert_eq!(summarize_wheres(&w), "3 rows appended to e.csv");
    }

    #[test]
    fn file_steps_follow_the_language_row() {
        let s = file_steps(
            Language::Python,
            Path::new("/usr/bin/python3"),
            Path::new("/nb/a.py"),
            &["x".into()],
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].argv, ["/usr/bin/python3", "/nb/a.py", "x"]);
        let s = file_steps(Language::Rust, Path::new("rustc"), Path::new("m.rs"), &[]);
        assert_eq!(s.len(), 2);
        assert_eq!(&s[0].argv[..3], ["rustc", "-O", "-o"]);
        assert_eq!(s[0].phase, Some(MeterPhase::Compile));
        assert_eq!(Some(PathBuf::from(&s[1].argv[0])), s[1].cleanup);
    }
}
