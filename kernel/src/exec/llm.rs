//! `%llm` / `%%llm` adapter: send prompts through `carbon_magics::llm` providers (one task per
//! model on the HTTP runtime), stream each answer into its own display, watch for interrupts,
//! then publish what the [`LlmSession`] computes: both footprints, the comparison table and
//! chart, history and rows.
//!
//! The waiting loop runs on the executor thread, which drives the requests while it waits for
//! their events; an interrupt wakes it (`Interrupts::set_waker`) and abandons the requests
//! (dropped with their connections).

use super::{Executor, usage_error};
use crate::runtime::{ExecError, ExecOutcome, Publish, StreamName};
use carbon_magics::MimeBundle;
use carbon_magics::config::Settings;
use carbon_magics::llm::client::{self, ProviderErrorKind};
use carbon_magics::llm::client::{LlmResponse, RetryPolicy};
use carbon_magics::llm::footprint::Tables;
use carbon_magics::llm::local::LocalMeters;
use carbon_magics::llm::providers::{LlmConfig, ModelSpec};
use carbon_magics::llm::run::{self, Event, RequestError};
use carbon_magics::llm::session::{self as session, LlmSession, RequestEnd};
use carbon_magics::llm::zone::{self, ZoneChoice};
use carbon_magics::llm::{self as llm, AskArgs, LlmCommand, TIMEOUT_KEY, models};
use carbon_magics::parse::MagicCall;
use carbon_magics::report::llm as report;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

/// How often a streaming answer's display is refreshed at most (keeps iopub traffic bounded).
const STREAM_REFRESH: Duration = Duration::from_millis(50);
/// Text bytes per second a streaming display may re-send. A display update replaces the whole
/// output (the messaging spec has no append for `update_display_data`), so each refresh costs
/// the whole answer so far: the refresh interval grows with the answer (a 3 KB answer still
/// refreshes every 50 ms, a 640 KB one every 10 s) and iopub carries at most this rate per
/// answer, times the two MIME types, instead of a quadratic total.
const STREAM_BYTES_PER_S: f64 = 64.0 * 1024.0;

/// The pause before the next refresh of a display showing `len` bytes.
fn refresh_interval(len: usize) -> Duration {
    STREAM_REFRESH.max(Duration::from_secs_f64(len as f64 / STREAM_BYTES_PER_S))
}
/// The longest the waiting loop sleeps when nothing is due. Nothing needs a wake-up meanwhile
/// (an event, an interrupt through [`super::Interrupts::set_waker`], a due refresh or meter reading
/// each end the wait), so this only bounds it: one wake-up a second while a slow provider
/// thinks, where polling for interrupts every 10 ms took a hundred.
const POLL: Duration = Duration::from_secs(1);
/// A model's place in the output appears only once its request has run this long, or with its
/// final answer if that comes first: about 0.1 s is the limit under which a reply feels
/// instantaneous (J. Nielsen, "Response Times: The 3 Important Limits", 1993, after R. B. Miller,
/// 1968), so a placeholder or a first piece shown sooner would only flicker. A fast answer is
/// then one message instead of three (placeholder, first piece, final), which the front-end and
/// iopub do not have to carry.
const SHOW_AFTER: Duration = Duration::from_millis(100);

/// The data tables; the warnings of a reload go to stderr.
fn tables(llm: &mut LlmSession, s: &Settings, out: &mut dyn Publish) -> Arc<Tables> {
    let (t, warnings) = llm.tables(s);
    for w in warnings {
        out.stream(StreamName::Stderr, &format!("%llm: {w}\n"));
    }
    t
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
        Err(e) => usage_error(e.map_message(|m| cfg.redact(m))),
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
        Err(e) => usage_error(e.map_message(|m| cfg.redact(m))),
    }
}

fn dispatch(
    ex: &mut Executor,
    cmd: LlmCommand,
    cfg: &LlmConfig,
    out: &mut dyn Publish,
) -> ExecOutcome {
    if !matches!(cmd, LlmCommand::Models) {
        ex.warn_settings_once(out);
    }
    match cmd {
        LlmCommand::Models => {
            let problems = ex.settings_problems();
            if !problems.is_empty() {
                out.stream(StreamName::Stderr, &problems);
            }
            result_bundle(report::models_bundle(cfg))
        }
        LlmCommand::History { clear } => {
            if clear {
                return result_bundle(MimeBundle::plain(ex.llm.clear_history()));
            }
            let h = ex.llm.history();
            result_bundle(report::history_bundle(
                &h.read_all(),
                &h.session,
                &h.path().display().to_string(),
            ))
        }
        LlmCommand::Summary => {
            let mut bundles = report::summary_bundles(&ex.llm.history().entries);
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
            let tables = tables(&mut ex.llm, &ex.settings, out);
            let zone = zone_choice(zone.as_deref(), &ex.settings, out);
            let r = session::estimate(&tables, &model, tokens, latency, zone.as_ref());
            // The exact figures, for tools (the accuracy test reads them); front-ends ignore
            // this MIME type.
            let json = models::estimate_json(&r.spec.to_string(), r.eco.as_ref(), r.seed.as_ref());
            let rs = [r];
            if let Some(c) = report::chart_bundle(&rs) {
                out.display(c, None);
            }
            result_bundle(report::comparison_bundle(&rs, &tables).with(models::ESTIMATE_MIME, json))
        }
        LlmCommand::Ask(args) => ask(ex, args, cfg, out),
    }
}

/// `--zone`, else `LLM_ZONE` (a bad value is reported on stderr and ignored).
fn zone_choice(cli: Option<&str>, s: &Settings, out: &mut dyn Publish) -> Option<ZoneChoice> {
    let (choice, warning) = zone::choose(cli, s);
    if let Some(w) = warning {
        out.stream(StreamName::Stderr, &format!("%llm: {w}\n"));
    }
    choice
}

struct Slot {
    spec: ModelSpec,
    place: Place,
    text: String,
    dirty: bool,
    last_update: Option<Instant>,
    result: Option<Result<LlmResponse, RequestError>>,
}

/// A model's place in the output: one display, created by the first bundle shown.
struct Place {
    display_id: String,
    /// The display exists (later bundles update it).
    shown: bool,
}

impl Place {
    /// Shows `bundle` here: the first bundle creates the display, later ones update it.
    fn show(&mut self, out: &mut dyn Publish, bundle: MimeBundle) {
        if self.shown {
            out.update_display(bundle, &self.display_id);
        } else {
            out.display(bundle, Some(&self.display_id));
            self.shown = true;
        }
    }
}

/// Gives every model before `idx` its place, so the answers keep the order of the command line
/// whichever comes first: a placeholder for a model still waiting; for one that has finished,
/// what it sent (its final display comes when every model has finished).
fn show_places_before(slots: &mut [Slot], idx: usize, out: &mut dyn Publish) {
    for s in slots.iter_mut().take(idx).filter(|s| !s.place.shown) {
        let b = if s.result.is_some() {
            let cut = carbon_magics::redact::global().hold_from(&s.text);
            report::answer_bundle(&s.spec, &s.text[..cut], "finished; waiting for the others…")
        } else {
            report::answer_bundle(&s.spec, "", "waiting for the answer…")
        };
        s.place.show(out, b);
    }
}

fn ask(
    ex: &mut Executor,
    mut args: AskArgs,
    cfg: &LlmConfig,
    out: &mut dyn Publish,
) -> ExecOutcome {
    let (cap, cap_warning) = client::max_answer_bytes(&ex.settings);
    args.max_answer_bytes = cap;
    if let Some(w) = cap_warning {
        out.stream(StreamName::Stderr, &format!("%llm: {w}\n"));
    }
    let tables = tables(&mut ex.llm, &ex.settings, out);
    let zone = zone_choice(args.zone.as_deref(), &ex.settings, out);
    for m in &args.models {
        if let Some(note) = cfg.list_note(m) {
            out.stream(StreamName::Stderr, &format!("%llm: {note}\n"));
        }
    }
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
            place: Place {
                display_id: format!("llm-{}", uuid::Uuid::new_v4()),
                shown: false,
            },
            text: String::new(),
            dirty: false,
            last_update: None,
            result: None,
        })
        .collect();
    let started = Instant::now();
    // Requests to a server on this machine: find it and meter it from before the request starts.
    let mut local = LocalMeters::for_session(&args.models, cfg, &ex.carbon);
    let (mut rx, streams) = run::spawn(&args, providers, cancel.clone(), started + SHOW_AFTER);
    ex.interrupts.set_waker(rx.waker());
    let mut interrupted = false;
    let redact = |s: &str| ex.settings.redact(&cfg.redact(s));
    while slots.iter().any(|s| s.result.is_none()) {
        // Wake for the next due refresh of a pending stream or meter reading (events and
        // interrupts end the wait themselves).
        let wait = slots
            .iter()
            .filter(|s| s.dirty && s.result.is_none())
            .filter_map(|s| {
                s.last_update
                    .map(|t| refresh_interval(s.text.len()).saturating_sub(t.elapsed()))
            })
            .fold(local.due_in().map_or(POLL, |d| d.min(POLL)), Duration::min);
        let wait = if slots.iter().any(|s| !s.place.shown && s.result.is_none()) {
            wait.min(SHOW_AFTER.saturating_sub(started.elapsed()))
        } else {
            wait
        };
        match rx.recv_timeout(wait) {
            Ok(Event::Delta { idx }) => {
                // the text stays in `streams` until it is shown: the thread does not wake us
                // again for more pieces meanwhile
                if let Some(s) = slots.get_mut(idx) {
                    s.dirty = true;
                }
            }
            Ok(Event::Done { idx, result }) => {
                local.finish(idx);
                let s = &mut slots[idx];
                s.text.push_str(&streams.take(idx));
                s.result = Some(match *result {
                    Ok(r) => Ok(r),
                    Err(e) => Err(RequestError::new(e.kind(), redact(&e.to_string()))),
                });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for (idx, s) in slots.iter_mut().enumerate() {
                    if s.result.is_some() {
                        continue;
                    }
                    s.text.push_str(&streams.take(idx));
                    s.result = Some(Err(RequestError::new(
                        ProviderErrorKind::Api,
                        format!("{}: the request ended without an answer", s.spec),
                    )));
                }
            }
        }
        local.tick();
        if ex.interrupts.requested() {
            cancel.store(true, Ordering::SeqCst);
            interrupted = true;
            for (idx, s) in slots.iter_mut().enumerate() {
                if s.result.is_some() {
                    continue;
                }
                s.text.push_str(&streams.take(idx));
                s.result = Some(Err(RequestError::new(
                    ProviderErrorKind::Cancelled,
                    format!(
                        "{}: interrupted; request abandoned",
                        s.spec.provider.label()
                    ),
                )));
            }
        }
        // Nothing is shown before SHOW_AFTER; then each pending model's place appears (its
        // stream so far, or a placeholder), and a stream refreshes at most every
        // refresh_interval.
        if started.elapsed() < SHOW_AFTER {
            continue;
        }
        // text that came before SHOW_AFTER woke nobody (see run::spawn)
        for (idx, s) in slots.iter_mut().enumerate() {
            if !s.dirty && s.result.is_none() && streams.pending(idx) {
                s.dirty = true;
            }
        }
        for idx in 0..slots.len() {
            let s = &slots[idx];
            if s.result.is_some() || (s.place.shown && !s.dirty) {
                continue;
            }
            if s.last_update
                .is_some_and(|t| t.elapsed() < refresh_interval(s.text.len()))
            {
                continue;
            }
            show_places_before(&mut slots, idx, out);
            let s = &mut slots[idx];
            s.text.push_str(&streams.take(idx));
            // a tail that may be the start of a key (a server echoing it across two events)
            // waits for the next refresh: the display then shows it masked whole, never its
            // first half (the output edge masks only whole keys)
            let cut = carbon_magics::redact::global().hold_from(&s.text);
            let b = if s.dirty {
                s.last_update = Some(Instant::now());
                s.dirty = false;
                report::answer_bundle(&s.spec, &s.text[..cut], "streaming…")
            } else {
                report::answer_bundle(&s.spec, "", "waiting for the answer…")
            };
            s.place.show(out, b);
        }
    }
    drop(rx);
    ex.interrupts.disarm();

    let mut results = Vec::with_capacity(slots.len());
    for (idx, s) in slots.into_iter().enumerate() {
        let mut place = s.place;
        let measured = local.take(idx);
        let end = match s.result.expect("every slot is finished") {
            Ok(resp) => RequestEnd::Answered(resp),
            Err(error) => RequestEnd::Failed {
                error,
                partial: s.text,
            },
        };
        let mut r = session::request_result(&tables, s.spec, end, zone.as_ref());
        // the third figure goes with an answer (a failed request has no estimates either)
        if r.response.is_some() {
            r.measured = measured;
        }
        if r.response.as_ref().is_some_and(|x| x.truncated) {
            out.stream(
                StreamName::Stderr,
                &format!(
                    "%llm: {}: the answer was cut at {cap} bytes ({}); its row says `truncated`\n",
                    r.spec,
                    client::MAX_ANSWER_BYTES_KEY
                ),
            );
        }
        let text = match &r.response {
            Some(resp) => resp.text.clone(),
            None => r.partial.clone(),
        };
        place.show(
            out,
            report::answer_bundle(&r.spec, &text, &report::answer_status(&r)),
        );
        results.push(r);
    }

    // chart_bundle is None when no request succeeded
    if let Some(c) = report::chart_bundle(&results) {
        out.display(c, None);
    }
    // With no answer there is nothing to compare or explain: each error is already in its
    // model's place (a table of dashes and an empty "How this was computed" said it again).
    if results.iter().any(|r| r.response.is_some()) {
        out.display(report::comparison_bundle(&results, &tables), None);
    }
    if let Err(e) = ex.llm.record_history(&args.prompt, &results) {
        out.stream(
            StreamName::Stderr,
            &format!("%llm: {e} (history kept in memory)\n"),
        );
    }
    // One row per request through the kernel's one sink; the carbon session gives the
    // project, zone, PUE and the session id shared with the metered cells' rows.
    let base = ex.carbon.row_base();
    match ex.llm.write_rows(&base, &results, interrupted) {
        Ok(w) => {
            if let Some(n) = w.notice {
                out.stream(StreamName::Stderr, &format!("%llm: {n}\n"));
            }
        }
        Err(e) => out.stream(
            StreamName::Stderr,
            &format!("%llm: {}\n", cfg_redact(&ex.settings, &e.to_string())),
        ),
    }
    match session::ask_error(&results, interrupted) {
        Some((ename, evalue)) => {
            // Every request failed: the cell fails, naming the models whose message is shown
            // above rather than repeating each message.
            let evalue = if ename == "LlmError" {
                let specs: Vec<String> = results.iter().map(|r| r.spec.to_string()).collect();
                format!(
                    "no answer from {} (the error is shown in its place above)",
                    specs.join(", ")
                )
            } else {
                evalue
            };
            ExecOutcome {
                error: Some(ExecError::new(ename, evalue)),
                ..Default::default()
            }
        }
        None => ExecOutcome::default(),
    }
}

fn cfg_redact(s: &Settings, text: &str) -> String {
    LlmConfig::from_settings(s).redact(&s.redact(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each refresh re-sends the whole answer; over a long, steady stream the bytes re-sent per
    /// second stay near STREAM_BYTES_PER_S instead of growing with the answer.
    #[test]
    fn refreshes_resend_a_bounded_rate() {
        // 1 MB arriving evenly over 100 s, refreshed as the loop does
        let (total, secs) = (1_000_000usize, 100.0);
        let (mut t, mut next, mut sent) = (0.0f64, 0.0f64, 0usize);
        while t < secs {
            if t >= next {
                let len = (total as f64 * t / secs) as usize;
                sent += len;
                next = t + refresh_interval(len).as_secs_f64();
            }
            t += 0.01;
        }
        let per_s = sent as f64 / secs;
        assert!(per_s <= 2.0 * STREAM_BYTES_PER_S, "{per_s} B/s");
        // the fixed 50 ms refresh alone would have sent ~10 GB (20 × 0.5 MB on average per s)
        assert!(sent < 20_000_000, "{sent}");
        assert_eq!(refresh_interval(10), STREAM_REFRESH);
    }
}
