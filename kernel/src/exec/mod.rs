//! The life of one `execute_request`: parse magics → pick the runtime → (meter) → run → record →
//! report. Runs on the kernel's single executor thread (blocking code is fine here); the server
//! owns every protocol invariant around it.

use crate::runtime::{
    ExecError, ExecOutcome, InterruptHandle, Language, Publish, Runtime, RuntimeError,
};
use carbon_magics::MimeBundle;
use carbon_magics::config::Settings;
use carbon_magics::parse::{MagicCall, parse_cell};
use carbon_magics::registry;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub mod carbon;
pub mod llm;

/// Creates a runtime for a language (real back-ends in the kernel, test runtimes in tests).
pub type RuntimeFactory = Box<dyn Fn(Language, &Settings) -> Box<dyn Runtime> + Send>;

/// The runtimes of this kernel, created lazily on first use of their language.
pub struct RuntimeSet {
    factory: RuntimeFactory,
    live: BTreeMap<Language, Box<dyn Runtime>>,
}

impl RuntimeSet {
    /// A set that builds runtimes with `factory`.
    pub fn new(factory: RuntimeFactory) -> Self {
        Self {
            factory,
            live: BTreeMap::new(),
        }
    }

    /// The runtime of `lang`, created (not started) if needed.
    pub fn get(&mut self, lang: Language, settings: &Settings) -> &mut Box<dyn Runtime> {
        let factory = &self.factory;
        self.live
            .entry(lang)
            .or_insert_with(|| factory(lang, settings))
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
    }
}

/// The interrupt of the cell running now, shared between the executor thread and the server's
/// control task. Holds the running runtime's handle and a flag other work (LLM requests, metered
/// waits) can poll.
#[derive(Default)]
pub struct Interrupts {
    handle: Mutex<Option<InterruptHandle>>,
    flag: AtomicBool,
}

impl Interrupts {
    /// Registers the handle of the runtime about to run, and clears the flag.
    pub fn arm(&self, h: Option<InterruptHandle>) {
        self.flag.store(false, Ordering::SeqCst);
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = h;
    }

    /// Forgets the handle once the cell is done.
    pub fn disarm(&self) {
        *self.handle.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Interrupts the running cell (from the control task or a SIGINT handler).
    pub fn interrupt(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let h = self
            .handle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(h) = h {
            h();
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
    pub runtimes: RuntimeSet,
    /// Language of plain cells.
    pub default_language: Language,
    /// `.env` + environment + session settings.
    pub settings: Settings,
    /// Folder of the notebook.
    pub workdir: PathBuf,
    /// Shared with the server for interrupts.
    pub interrupts: Arc<Interrupts>,
    /// `%%carbon` state (auto-metering, session records).
    pub carbon: carbon::CarbonState,
    /// `%llm` state (history, providers).
    pub llm: llm::LlmState,
}

/// Builds the error outcome of a usage error (bad magic, bad option).
pub fn usage_error(msg: impl Into<String>) -> ExecOutcome {
    let msg = msg.into();
    let (ename, evalue) = match msg.split_once(": ") {
        Some((a, b)) if !a.contains(' ') => (a.to_string(), b.to_string()),
        _ => ("UsageError".to_string(), msg.clone()),
    };
    ExecOutcome {
        error: Some(ExecError {
            ename,
            evalue,
            traceback: vec![format!("\x1b[0;31m{msg}\x1b[0m")],
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

impl Executor {
    /// A new executor; runtimes start lazily.
    pub fn new(cfg: ExecConfig) -> Self {
        let settings = Settings::load(&cfg.workdir);
        let carbon = carbon::CarbonState::new(&settings, &cfg.workdir);
        let llm = llm::LlmState::new(&settings, &cfg.workdir);
        Self {
            runtimes: RuntimeSet::new(cfg.factory),
            default_language: cfg.default_language,
            settings,
            workdir: cfg.workdir,
            interrupts: Arc::new(Interrupts::default()),
            carbon,
            llm,
        }
    }

    /// Runs one cell (magics included).
    pub fn execute(&mut self, code: &str, out: &mut dyn Publish) -> ExecOutcome {
        let plan = match parse_cell(code) {
            Ok(p) => p,
            Err(e) => return usage_error(e.to_string()),
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
        let res = rt.execute(code, out);
        self.interrupts.disarm();
        match res {
            Ok(o) => o,
            Err(e) => runtime_failure(&e),
        }
    }

    fn help(&self, call: &MagicCall, prefix: &str) -> ExecOutcome {
        match registry::find(&call.name) {
            Some(spec) => ExecOutcome {
                pager: Some(MimeBundle::plain(spec.long_help())),
                ..Default::default()
            },
            None => usage_error(format!(
                "UsageError: {prefix}{} is not a magic (see %lsmagic)",
                call.name
            )),
        }
    }

    fn line_magic(&mut self, call: &MagicCall, out: &mut dyn Publish) -> ExecOutcome {
        if call.help {
            return self.help(call, "%");
        }
        match call.name.as_str() {
            "lsmagic" => ExecOutcome {
                result: Some(MimeBundle::plain(registry::lsmagic_text())),
                ..Default::default()
            },
            "lang" => self.lang_magic(call),
            "carbon" => carbon::line_magic(self, call, out),
            "llm" => llm::line_magic(self, call, out),
            other => usage_error(format!(
                "UsageError: Line magic function `%{other}` not found (see %lsmagic)"
            )),
        }
    }

    fn cell_magic(&mut self, call: &MagicCall, body: &str, out: &mut dyn Publish) -> ExecOutcome {
        if call.help {
            return self.help(call, "%%");
        }
        if let Some(lang) = Language::ALL.into_iter().find(|l| l.name() == call.name) {
            if !call.args.trim().is_empty() {
                return usage_error(format!(
                    "UsageError: %%{} takes no arguments (got '{}'); use %%carbon {} … to meter",
                    call.name, call.args, call.name
                ));
            }
            if self.carbon.auto_meter() {
                return carbon::run_auto_metered(self, lang, body, out);
            }
            return self.run_plain(lang, body, out);
        }
        match call.name.as_str() {
            "carbon" => carbon::cell_magic(self, call, body, out),
            "llm" => llm::cell_magic(self, call, body, out),
            other => usage_error(format!(
                "UsageError: Cell magic `%%{other}` not found (see %lsmagic)"
            )),
        }
    }

    fn lang_magic(&mut self, call: &MagicCall) -> ExecOutcome {
        let Some(spec) = registry::find("lang") else {
            return usage_error("UsageError: %lang is not registered");
        };
        let argv = match call.argv() {
            Ok(a) => a,
            Err(e) => return usage_error(e.to_string()),
        };
        let m = match registry::parse_args(&spec, &argv) {
            Ok(m) => m,
            Err(e) => return usage_error(e),
        };
        if let Some(l) = m.get_one::<String>("language") {
            // the value parser only accepts the three names
            if let Some(lang) = Language::parse(l) {
                self.default_language = lang;
            }
        }
        ExecOutcome {
            result: Some(MimeBundle::plain(format!(
                "default language: {}",
                self.default_language.name()
            ))),
            ..Default::default()
        }
    }
}
