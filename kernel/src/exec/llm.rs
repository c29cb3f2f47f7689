//! `%llm` / `%%llm` wiring: send prompts through `carbon_magics::llm` providers (one thread per
//! model), stream each answer into its own display, watch for interrupts, then show the
//! comparison table, the chart and the explanation, and record history (and CSV rows).
//!
//! The waiting loop runs on the executor thread and polls `Interrupts::requested()`: an interrupt
//! abandons the request threads (they notice the cancel flag between stream events and stop).

use super::{Executor, usage_error};
use crate::runtime::{ExecError, ExecOutcome, Publish};
use carbon_magics::MimeBundle;
use carbon_magics::carbon::{EmissionRecord, intensity};
use carbon_magics::config::Settings;
use carbon_magics::llm::client::{LlmResponse, RetryPolicy};
use carbon_magics::llm::footprint::{Tables, eco_estimate_in, seed_estimate};
use carbon_magics::llm::history::{History, HistoryEntry};
use carbon_magics::llm::providers::{LlmConfig, ModelSpec};
use carbon_magics::llm::record::llm_record;
use carbon_magics::llm::report::{self, RequestResult};
use carbon_magics::llm::run::{self, Event, Http};
use carbon_magics::llm::zone::{self, ZoneChoice};
use carbon_magics::llm::{self as llm, AskArgs, LlmCommand, TIMEOUT_KEY};
use carbon_magics::parse::MagicCall;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// How often a streaming answer's display is refreshed at most (keeps iopub traffic bounded).
const STREAM_REFRESH: Duration = Duration::from_millis(50);
/// How often the waiting loop checks for an interrupt when nothing arrives.
const POLL: Duration = Duration::from_millis(10);

/// Session state of the LLM magics.
pub struct LlmState {
    workdir: PathBuf,
    history: History,
    http: Option<Http>,
    tables: Option<(TablesKey, Tables)>,
}

type TablesKey = [Option<String>; 3];

fn tables_key(s: &Settings) -> TablesKey {
    use carbon_magics::llm::footprint::{MODELS_FILE_KEY, PROFILES_FILE_KEY, SEED_FILE_KEY};
    [PROFILES_FILE_KEY, SEED_FILE_KEY, MODELS_FILE_KEY].map(|k| s.get(k).map(String::from))
}

impl LlmState {
    /// Loads provider configuration.
    pub fn new(_settings: &Settings, workdir: &Path) -> Self {
        Self {
            workdir: workdir.to_path_buf(),
            history: History::new(workdir, uuid::Uuid::new_v4().to_string()),
            http: None,
            tables: None,
        }
    }

    fn http(&mut self) -> Http {
        self.http.get_or_insert_with(Http::new).clone()
    }

    /// The data tables, reloaded when the user's file settings change; warnings once per load.
    fn tables(&mut self, s: &Settings, out: &mut dyn Publish) -> Tables {
        let key = tables_key(s);
        match &self.tables {
            Some((k, t)) if *k == key => t.clone(),
            _ => {
                let (t, warnings) = Tables::load(s, &self.workdir);
                for w in warnings {
                    out.stream(crate::runtime::StreamName::Stderr, &format!("%llm: {w}\n"));
                }
                self.tables = Some((key, t.clone()));
                t
            }
        }
    }
}

fn settings_timeout(s: &Settings) -> Option<f64> {
    s.get(TIMEOUT_KEY)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0 && v.is_finite())
}

fn result_bundle(b: MimeBundle) -> ExecOutcome {
    ExecOutcome {
        result: Some(b),
        ..Default::default()
    }
}

/// `%llm …` line magic.
pub fn line_magic(ex: &mut Executor, call: &MagicCall, out: &mut dyn Publish) -> ExecOutcome {
    let cfg = LlmConfig::from_settings(&ex.settings);
    match llm::parse_line(&call.args, &cfg, settings_timeout(&ex.settings)) {
        Ok(cmd) => dispatch(ex, cmd, &cfg, out),
        Err(e) => usage_error(cfg.redact(&e)),
    }
}

/// `%%llm …` cell magic.
pub fn cell_magic(
    ex: &mut Executor,
    call: &MagicCall,
    body: &str,
    out: &mut dyn Publish,
) -> ExecOutcome {
    let cfg = LlmConfig::from_settings(&ex.settings);
    match llm::parse_cell(&call.args, body, &cfg, settings_timeout(&ex.settings)) {
        Ok(cmd) => dispatch(ex, cmd, &cfg, out),
        Err(e) => usage_error(cfg.redact(&e)),
    }
}

fn dispatch(
    ex: &mut Executor,
    cmd: LlmCommand,
    cfg: &LlmConfig,
    out: &mut dyn Publish,
) -> ExecOutcome {
    match cmd {
        LlmCommand::Models => result_bundle(report::models_bundle(cfg)),
        LlmCommand::History { clear } => {
            if clear {
                ex.llm.history.clear();
            }
            result_bundle(report::history_bundle(
                &ex.llm.history.entries,
                &ex.llm.history.path().display().to_string(),
            ))
        }
        LlmCommand::Summary => {
            let mut bundles = report::summary_bundles(&ex.llm.history.entries);
            let last = bundles.pop();
            for b in bundles {
                out.display(b, None);
            }
            match last {
                Some(b) => result_bundle(b),
                None => ExecOutcome::default(),
            }
        }
        LlmCommand::Estimate {
            model,
            tokens,
            latency,
            zone,
        } => {
            let tables = ex.llm.tables(&ex.settings, out);
            let zone = zone_choice(zone.as_deref(), &ex.settings, out);
            let r = estimate(&tables, &model, tokens, latency, zone.as_ref());
            let json = carbon_magics::llm::models::estimate_json(
                &r.spec.to_string(),
                r.eco.as_ref(),
                r.seed.as_ref(),
            );
            let rs = [r];
            if let Some(c) = report::chart_bundle(&rs) {
                out.display(c, None);
            }
            result_bundle(
                report::comparison_bundle(&rs, &tables)
                    .with(carbon_magics::llm::models::ESTIMATE_MIME, json),
            )
        }
        LlmCommand::Ask(args) => ask(ex, args, cfg, out),
    }
}

/// `--zone`, else `LLM_ZONE` (a bad value is reported on stderr and ignored).
fn zone_choice(cli: Option<&str>, s: &Settings, out: &mut dyn Publish) -> Option<ZoneChoice> {
    let (choice, warning) = zone::choose(cli, s);
    if let Some(w) = warning {
        out.stream(crate::runtime::StreamName::Stderr, &format!("%llm: {w}\n"));
    }
    choice
}

/// A hypothetical request: tokens given, latency given or the model's own generation time.
fn estimate(
    t: &Tables,
    spec: &ModelSpec,
    tokens: u64,
    latency: Option<f64>,
    zone: Option<&ZoneChoice>,
) -> RequestResult {
    let eco = eco_estimate_in(t, spec.provider.key(), &spec.model, tokens, latency, zone);
    let lat = latency.unwrap_or_else(|| eco.gen_time_s.mid());
    let seed = seed_estimate(t, &spec.model, lat);
    let mut resp = LlmResponse {
        completion_tokens: Some(tokens),
        latency_s: lat,
        attempts: 1,
        ..Default::default()
    };
    if latency.is_none() {
        resp.notes.push(format!(
            "no --latency: the seed's method uses the model's generation time from the tokens × parameters method, {lat:.3} s"
        ));
    }
    RequestResult {
        spec: spec.clone(),
        response: Some(resp),
        error: None,
        partial: String::new(),
        seed: Some(seed),
        eco: Some(eco),
    }
}

struct Slot {
    spec: ModelSpec,
    display_id: String,
    text: String,
    dirty: bool,
    last_update: Option<Instant>,
    result: Option<Result<LlmResponse, (&'static str, String)>>,
}

fn ask(ex: &mut Executor, args: AskArgs, cfg: &LlmConfig, out: &mut dyn Publish) -> ExecOutcome {
    let tables = ex.llm.tables(&ex.settings, out);
    let zone = zone_choice(args.zone.as_deref(), &ex.settings, out);
    let http = ex.llm.http();
    let policy = RetryPolicy::from_settings(&ex.settings);
    let providers = run::providers_for(&args.models, cfg, &http, policy);
    let cancel = Arc::new(AtomicBool::new(false));
    ex.interrupts.arm(None);
    let mut slots: Vec<Slot> = args
        .models
        .iter()
        .map(|m| Slot {
            spec: m.clone(),
            display_id: format!("llm-{}", uuid::Uuid::new_v4()),
            text: String::new(),
            dirty: false,
            last_update: None,
            result: None,
        })
        .collect();
    for s in &slots {
        out.display(
            report::answer_bundle(&s.spec, "", "waiting for the answer…"),
            Some(&s.display_id),
        );
    }
    let rx = run::spawn(&args, providers, cancel.clone());
    let mut interrupted = false;
    let redact = |s: &str| ex.settings.redact(&cfg.redact(s));
    while slots.iter().any(|s| s.result.is_none()) {
        match rx.recv_timeout(POLL) {
            Ok(Event::Delta { idx, text }) => {
                let s = &mut slots[idx];
                s.text.push_str(&text);
                s.dirty = true;
            }
            Ok(Event::Done { idx, result }) => {
                let s = &mut slots[idx];
                s.result = Some(match *result {
                    Ok(r) => Ok(r),
                    Err(e) => Err((e.kind_name(), redact(&e.to_string()))),
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for s in slots.iter_mut().filter(|s| s.result.is_none()) {
                    s.result = Some(Err((
                        "api_error",
                        format!("{}: the request thread ended without an answer", s.spec),
                    )));
                }
            }
        }
        if ex.interrupts.requested() {
            cancel.store(true, Ordering::SeqCst);
            interrupted = true;
            for s in slots.iter_mut().filter(|s| s.result.is_none()) {
                s.result = Some(Err((
                    "interrupted",
                    format!(
                        "{}: interrupted; request abandoned",
                        s.spec.provider.label()
                    ),
                )));
            }
        }
        // streaming refresh (the first piece at once, then at most every STREAM_REFRESH)
        for s in slots.iter_mut().filter(|s| s.dirty && s.result.is_none()) {
            if s.last_update.is_none_or(|t| t.elapsed() >= STREAM_REFRESH) {
                out.update_display(
                    report::answer_bundle(&s.spec, &s.text, "streaming…"),
                    &s.display_id,
                );
                s.last_update = Some(Instant::now());
                s.dirty = false;
            }
        }
    }
    drop(rx);
    ex.interrupts.disarm();

    let mut results = Vec::with_capacity(slots.len());
    let mut all_missing_keys = true;
    for s in slots {
        let r = match s.result.expect("every slot is finished") {
            Ok(resp) => {
                let seed = seed_estimate(&tables, &s.spec.model, resp.latency_s);
                // Groq's server-side completion_time bounds the generation time better than the
                // wall clock (llm-footprint.md §3.4).
                let bound = resp
                    .timing
                    .and_then(|t| t.completion_time)
                    .map(|c| c.min(resp.latency_s))
                    .unwrap_or(resp.latency_s);
                let eco = eco_estimate_in(
                    &tables,
                    s.spec.provider.key(),
                    &s.spec.model,
                    resp.completion_tokens.unwrap_or(0),
                    Some(bound),
                    zone.as_ref(),
                );
                RequestResult {
                    spec: s.spec,
                    response: Some(resp),
                    error: None,
                    partial: String::new(),
                    seed: Some(seed),
                    eco: Some(eco),
                }
            }
            Err((kind, e)) => {
                all_missing_keys &= kind == "missing_key";
                RequestResult {
                    spec: s.spec,
                    response: None,
                    error: Some(e),
                    partial: s.text,
                    seed: None,
                    eco: None,
                }
            }
        };
        let (text, status) = match &r.response {
            Some(resp) => (resp.text.clone(), report::answer_status(&r)),
            None => (r.partial.clone(), report::answer_status(&r)),
        };
        out.update_display(
            report::answer_bundle(&r.spec, &text, &status),
            &s.display_id,
        );
        results.push(r);
    }

    // chart_bundle is None when no request succeeded
    if let Some(c) = report::chart_bundle(&results) {
        out.display(c, None);
    }
    out.display(report::comparison_bundle(&results, &tables), None);
    record(ex, &args, &results, out);
    write_csv(ex, &results, interrupted, out);

    let failed: Vec<&RequestResult> = results.iter().filter(|r| r.error.is_some()).collect();
    if interrupted {
        return ExecOutcome {
            error: Some(ExecError::new(
                "KeyboardInterrupt",
                format!("%llm interrupted: {} request(s) abandoned", failed.len()),
            )),
            ..Default::default()
        };
    }
    // Every request failed: the cell fails, unless only keys are missing (a notebook run without
    // keys then shows "set X_API_KEY" in each model's place and continues).
    if failed.len() == results.len() && !all_missing_keys {
        let msg = failed
            .iter()
            .map(|r| r.error.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("; ");
        return ExecOutcome {
            error: Some(ExecError::new("LlmError", msg)),
            ..Default::default()
        };
    }
    ExecOutcome::default()
}

/// History (memory + `data/llm_history.jsonl`).
fn record(ex: &mut Executor, args: &AskArgs, results: &[RequestResult], out: &mut dyn Publish) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // One experiment_id per kernel session, shared with the metered cells' rows.
    let session = ex.carbon.session_id().to_string();
    let entries: Vec<HistoryEntry> = results
        .iter()
        .map(|r| {
            let (lat, pt, ct, answer) = match &r.response {
                Some(x) => (
                    x.latency_s,
                    x.prompt_tokens,
                    x.completion_tokens,
                    x.text.clone(),
                ),
                None => (0.0, None, None, r.partial.clone()),
            };
            HistoryEntry {
                timestamp: now.clone(),
                session: session.clone(),
                provider: r.spec.provider.key().to_string(),
                model: r.spec.model.clone(),
                prompt: args.prompt.clone(),
                answer,
                error: r.error.clone(),
                latency_s: lat,
                prompt_tokens: pt,
                completion_tokens: ct,
                seed_g: r
                    .seed
                    .as_ref()
                    .map(|s| s.total_kg() * 1000.0)
                    .unwrap_or(0.0),
                eco_g_min: r
                    .eco
                    .as_ref()
                    .map(|e| e.total_kg().min() * 1000.0)
                    .unwrap_or(0.0),
                eco_g_max: r
                    .eco
                    .as_ref()
                    .map(|e| e.total_kg().max() * 1000.0)
                    .unwrap_or(0.0),
                seed_kwh: r.seed.as_ref().map(|s| s.energy_kwh).unwrap_or(0.0),
                eco_kwh_min: r.eco.as_ref().map(|e| e.energy_kwh.min()).unwrap_or(0.0),
                eco_kwh_max: r.eco.as_ref().map(|e| e.energy_kwh.max()).unwrap_or(0.0),
            }
        })
        .collect();
    if let Err(e) = ex.llm.history.push(entries) {
        out.stream(
            crate::runtime::StreamName::Stderr,
            &format!(
                "%llm: could not write {}: {e} (history kept in memory)\n",
                ex.llm.history.path().display()
            ),
        );
    }
}

/// One `emissions.csv` row per request, in the file the cells use (`CARBON_OUTPUT`).
fn write_csv(
    ex: &mut Executor,
    results: &[RequestResult],
    interrupted: bool,
    out: &mut dyn Publish,
) {
    let cc = ex.carbon.config().clone();
    let zone = intensity::zone(cc.country.as_deref())
        .or_else(|_| intensity::zone(None))
        .expect("the world average always resolves");
    // One experiment_id per kernel session, shared with the metered cells' rows.
    let session = ex.carbon.session_id().to_string();
    let rows: Vec<EmissionRecord> = results
        .iter()
        .map(|r| {
            let status = match (&r.response, interrupted) {
                (Some(_), _) => "ok",
                (None, true) => "interrupted",
                (None, false) => "error",
            };
            llm_record(
                EmissionRecord::base(&cc.project, &session, &zone, cc.pue),
                r,
                status,
            )
        })
        .collect();
    match ex.carbon.record_rows(&rows) {
        Ok(w) => {
            if let Some(n) = w.notice {
                out.stream(crate::runtime::StreamName::Stderr, &format!("%llm: {n}\n"));
            }
        }
        Err(e) => out.stream(
            crate::runtime::StreamName::Stderr,
            &format!("%llm: {}\n", cfg_redact(&ex.settings, &e.to_string())),
        ),
    }
}

fn cfg_redact(s: &Settings, text: &str) -> String {
    LlmConfig::from_settings(s).redact(&s.redact(text))
}
