//! [`LlmSession`]: the state and the domain work of `%llm` in one kernel session, free of the
//! kernel: the data tables (reloaded when their settings change), the HTTP client, the
//! combination of the two footprint methods for each answer, the history and the
//! `emissions.csv` rows (through the kernel's one [`EmissionsSink`], passed in explicitly). The
//! kernel's adapter (`carbon_kernel::exec::llm`) keeps the waiting loop, interrupts and the
//! streaming displays.

use super::client::LlmResponse;
use super::client::ProviderErrorKind;
use super::footprint::{
    MODELS_FILE_KEY, PROFILES_FILE_KEY, SEED_FILE_KEY, Tables, eco_estimate_in, seed_estimate,
};
use super::history::{History, HistoryEntry};
use super::providers::ModelSpec;
use super::row::llm_record;
use super::run::Http;
use super::run::{RequestError, RequestResult};
use super::zone::ZoneChoice;
use crate::carbon::record::EmissionRecord;
use crate::carbon::session::EmissionsSink;
use crate::carbon::sink::{SinkError, Written};
use crate::config::Settings;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type TablesKey = [Option<String>; 3];

fn tables_key(s: &Settings) -> TablesKey {
    [PROFILES_FILE_KEY, SEED_FILE_KEY, MODELS_FILE_KEY].map(|k| s.get(k).map(String::from))
}

/// How one request ended, before its footprint is computed.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestEnd {
    /// The answer.
    Answered(LlmResponse),
    /// The request failed.
    Failed {
        /// What failed, and the text to show (already redacted).
        error: RequestError,
        /// Text received before the failure.
        partial: String,
    },
}

/// The `%llm` state of one kernel session.
pub struct LlmSession {
    workdir: PathBuf,
    history: History,
    http: Option<Http>,
    /// Shared, not copied, by each request: the model table alone is every model EcoLogits
    /// knows, and cloning it was a visible part of a request's time (perf, issue 9).
    tables: Option<(TablesKey, Arc<Tables>)>,
    sink: EmissionsSink,
}

impl LlmSession {
    /// A session whose history lives under `workdir/data/` and whose rows go through `sink`,
    /// tagged `session_id` (the kernel session's id, shared with the metered cells' rows).
    pub fn new(workdir: &Path, sink: EmissionsSink, session_id: impl Into<String>) -> Self {
        Self {
            workdir: workdir.to_path_buf(),
            history: History::new(workdir, session_id.into()),
            http: None,
            tables: None,
            sink,
        }
    }

    /// The HTTP client (built on first use, then shared by every request).
    pub fn http(&mut self) -> Http {
        self.http.get_or_insert_with(Http::new).clone()
    }

    /// The data tables, reloaded when the user's file settings change; the warnings of a reload
    /// (once per load; empty when the cached tables were used).
    pub fn tables(&mut self, s: &Settings) -> (Arc<Tables>, Vec<String>) {
        let key = tables_key(s);
        match &self.tables {
            Some((k, t)) if *k == key => (t.clone(), Vec::new()),
            _ => {
                let (t, warnings) = Tables::load(s, &self.workdir);
                let t = Arc::new(t);
                self.tables = Some((key, t.clone()));
                (t, warnings)
            }
        }
    }

    /// This session's history.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// `%llm history --clear`: empties the history file; says what it did, in words.
    pub fn clear_history(&mut self) -> String {
        let path = self.history.path().display().to_string();
        match self.history.clear() {
            Ok(n) => format!(
                "LLM history cleared: {n} request(s) removed from {path} (emissions.csv keeps their rows)."
            ),
            Err(e) => format!("could not clear {path}: {e}"),
        }
    }

    /// Appends the requests of one `%llm` to the history (memory and file). On a write error
    /// the entries stay in memory; the error names the file.
    pub fn record_history(
        &mut self,
        prompt: &str,
        results: &[RequestResult],
    ) -> Result<(), String> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let entries = history_entries(&self.history.session, &now, prompt, results);
        self.history
            .push(entries)
            .map_err(|e| format!("could not write {}: {e}", self.history.path().display()))
    }

    /// Writes one `emissions.csv` row per request through the kernel's sink; `base` carries the
    /// session's project, zone and PUE (from the carbon session).
    pub fn write_rows(
        &self,
        base: &EmissionRecord,
        results: &[RequestResult],
        interrupted: bool,
    ) -> Result<Written, SinkError> {
        self.sink.record_all(&rows(base, results, interrupted))
    }
}

/// A finished request with both footprints: latency × hardware (the seed's method) and tokens ×
/// parameters (EcoLogits-class), the latter bounded by the provider's own generation time when it
/// reports one.
/// `zone` is the user's `--zone` / `LLM_ZONE` choice (else the provider's datacenter zone).
pub fn request_result(
    t: &Tables,
    spec: ModelSpec,
    end: RequestEnd,
    zone: Option<&ZoneChoice>,
) -> RequestResult {
    match end {
        RequestEnd::Answered(resp) => {
            let seed = seed_estimate(t, &spec.model, resp.latency_s);
            // Groq's server-side completion_time bounds the generation time better than the
            // wall clock (llm-footprint.md §3.4).
            let bound = resp
                .timing
                .and_then(|t| t.completion_time)
                .map(|c| c.min(resp.latency_s))
                .unwrap_or(resp.latency_s);
            let eco = eco_estimate_in(
                t,
                spec.provider.key(),
                &spec.model,
                resp.completion_tokens.unwrap_or(0),
                Some(bound),
                zone,
            );
            RequestResult {
                spec,
                response: Some(resp),
                error: None,
                partial: String::new(),
                seed: Some(seed),
                eco: Some(eco),
                measured: None,
            }
        }
        RequestEnd::Failed { error, partial } => RequestResult {
            spec,
            response: None,
            error: Some(error),
            partial,
            seed: None,
            eco: None,
            measured: None,
        },
    }
}

/// `%llm estimate`: a hypothetical request of `tokens` output tokens; the latency given, or the
/// model's own generation time from the tokens × parameters method.
pub fn estimate(
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
        measured: None,
    }
}

/// The error of a whole `%llm` (name, value), if it fails: interrupted, or every request failed
/// for another reason than a missing key (a notebook run without keys shows "set X_API_KEY" in
/// each model's place and continues).
pub fn ask_error(results: &[RequestResult], interrupted: bool) -> Option<(&'static str, String)> {
    let failed: Vec<&RequestResult> = results.iter().filter(|r| r.error.is_some()).collect();
    if interrupted {
        return Some((
            "KeyboardInterrupt",
            format!("%llm interrupted: {} request(s) abandoned", failed.len()),
        ));
    }
    let all_missing_keys = failed
        .iter()
        .all(|r| r.error.as_ref().map(|e| e.kind) == Some(ProviderErrorKind::MissingKey));
    if failed.len() == results.len() && !all_missing_keys {
        let msg = failed
            .iter()
            .filter_map(|r| r.error.as_ref().map(|e| e.message.clone()))
            .collect::<Vec<_>>()
            .join("; ");
        return Some(("LlmError", msg));
    }
    None
}

/// The history entries of one `%llm`'s requests.
pub fn history_entries(
    session: &str,
    timestamp: &str,
    prompt: &str,
    results: &[RequestResult],
) -> Vec<HistoryEntry> {
    results
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
                timestamp: timestamp.to_string(),
                session: session.to_string(),
                provider: r.spec.provider.key().to_string(),
                model: r.spec.model.clone(),
                prompt: prompt.to_string(),
                answer,
                error: r.error.as_ref().map(|e| e.message.clone()),
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
                measured_g: r
                    .measured
                    .as_ref()
                    .and_then(|m| m.metered())
                    .map(|lm| lm.emissions().grams()),
                measured_kwh: r
                    .measured
                    .as_ref()
                    .and_then(|m| m.metered())
                    .map(|lm| lm.energy_kwh()),
            }
        })
        .collect()
}

/// One `emissions.csv` row per request: `ok`, else `interrupted` or `error`.
pub fn rows(
    base: &EmissionRecord,
    results: &[RequestResult],
    interrupted: bool,
) -> Vec<EmissionRecord> {
    results
        .iter()
        .map(|r| llm_record(base.clone(), r, r.row_status(interrupted)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::intensity;
    use crate::carbon::record::{RowKind, RowStatus};
    use crate::llm::providers::LlmConfig;

    fn spec() -> ModelSpec {
        let mut s = Settings::empty();
        s.set("GROQ_API_KEY", "gsk-test");
        s.set("GROQ_MODEL", "llama-3.3-70b-versatile");
        LlmConfig::from_settings(&s)
            .resolve("groq:llama-3.3-70b-versatile")
            .unwrap()
    }

    fn answered(latency: f64, tokens: u64) -> RequestEnd {
        RequestEnd::Answered(LlmResponse {
            text: "4".into(),
            completion_tokens: Some(tokens),
            prompt_tokens: Some(10),
            latency_s: latency,
            attempts: 1,
            ..Default::default()
        })
    }

    #[test]
    fn an_answer_gets_both_footprints_and_a_failure_none() {
        let t = Tables::builtin();
        let r = request_result(&t, spec(), answered(2.0, 200), None);
        let seed = r.seed.as_ref().unwrap();
        let eco = r.eco.as_ref().unwrap();
        assert!(seed.total_kg() > 0.0);
        assert!(eco.total_kg().min() > 0.0 && eco.total_kg().min() <= eco.total_kg().max());
        // the seed's method scales with the latency, the other with the tokens
        let slow = request_result(&t, spec(), answered(4.0, 200), None);
        assert!(slow.seed.as_ref().unwrap().total_kg() > seed.total_kg());
        let f = request_result(
            &t,
            spec(),
            RequestEnd::Failed {
                error: RequestError::new(ProviderErrorKind::Api, "boom"),
                partial: "par".into(),
            },
            None,
        );
        assert!(f.seed.is_none() && f.eco.is_none());
        assert_eq!(f.partial, "par");
        let e = estimate(&t, &spec(), 100, None, None);
        assert!(e.response.unwrap().notes[0].contains("no --latency"));
    }

    #[test]
    fn history_rows_and_errors_of_a_request() {
        let t = Tables::builtin();
        let ok = request_result(&t, spec(), answered(1.0, 50), None);
        let h = history_entries(
            "s1",
            "2026-01-01T00:00:00Z",
            "2+2?",
            std::slice::from_ref(&ok),
        );
        assert_eq!(h[0].session, "s1");
        assert_eq!(h[0].answer, "4");
        assert!((h[0].seed_g - ok.seed.as_ref().unwrap().total_kg() * 1000.0).abs() < 1e-12);
        let zone = intensity::zone(None).unwrap();
        let base = EmissionRecord::base("p", "s1", &zone, 1.0);
        let failed = request_result(
            &t,
            spec(),
            RequestEnd::Failed {
                error: RequestError::new(ProviderErrorKind::MissingKey, "set GROQ_API_KEY"),
                partial: String::new(),
            },
            None,
        );
        let rs = rows(&base, &[ok.clone(), failed.clone()], false);
        assert_eq!(rs[0].status, RowStatus::Ok);
        assert_eq!(rs[1].status, RowStatus::Error);
        assert_eq!(rs[0].kind, RowKind::Llm);
        assert_eq!(
            rows(&base, std::slice::from_ref(&failed), true)[0].status,
            RowStatus::Interrupted
        );
        // a notebook run without keys goes on: missing keys alone are not the cell's error
        assert!(ask_error(std::slice::from_ref(&failed), false).is_none());
        let api = request_result(
            &t,
            spec(),
            RequestEnd::Failed {
                error: RequestError::new(ProviderErrorKind::Api, "HTTP 500"),
                partial: String::new(),
            },
            None,
        );
        assert_eq!(
            ask_error(std::slice::from_ref(&api), false),
            Some(("LlmError", "HTTP 500".to_string()))
        );
        assert_eq!(
            ask_error(&[ok, failed], true).map(|e| e.0),
            Some("KeyboardInterrupt")
        );
    }

    #[test]
    fn rows_go_through_the_shared_sink() {
        let d = tempfile::tempdir().unwrap();
        let sink = EmissionsSink::new(d.path().join("emissions.csv"));
        let s = LlmSession::new(d.path(), sink.clone(), "s1");
        let t = Tables::builtin();
        let r = request_result(&t, spec(), answered(1.0, 50), None);
        let zone = intensity::zone(None).unwrap();
        let base = EmissionRecord::base("p", "s1", &zone, 1.0);
        s.write_rows(&base, &[r], false).unwrap();
        let v = crate::carbon::sink::read_csv(&sink.path()).unwrap();
        assert_eq!(v.rows.len(), 1);
    }
}
