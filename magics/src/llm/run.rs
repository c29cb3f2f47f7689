//! Running one prompt against several models at once: one task per model on the HTTP runtime
//! ([`client::spawn`]), events back over a channel so the caller (the kernel's executor thread)
//! can stream answers, watch for interrupts and abandon requests without waiting for them.

use super::AskArgs;
use super::client::{
    self, HttpProvider, LlmRequest, LlmResponse, ProviderError, ProviderErrorKind, RetryPolicy,
};
use super::footprint::{EcoEstimate, SeedEstimate};
use super::local::Measured;
use super::providers::{LlmConfig, ModelSpec};
use crate::carbon::record::RowStatus;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One model's request, finished (answer or error), with both footprints when it succeeded.
#[derive(Debug, Clone)]
pub struct RequestResult {
    /// The model asked.
    pub spec: ModelSpec,
    /// The answer, when the request succeeded.
    pub response: Option<LlmResponse>,
    /// The error (its text already redacted), when it failed.
    pub error: Option<RequestError>,
    /// Text received before a failure (broken or stalled stream).
    pub partial: String,
    /// Latency × hardware.
    pub seed: Option<SeedEstimate>,
    /// Tokens × parameters.
    pub eco: Option<EcoEstimate>,
    /// The third figure, for a request to a server on this machine: metered, or why not.
    pub measured: Option<Measured>,
}

impl RequestResult {
    /// The `status` of this request's `emissions.csv` row: `ok` when it answered; a failure is
    /// `interrupted` when the user interrupted the cell (whatever ended it) or it was cancelled,
    /// `error` otherwise; an answer cut at its size cap is `truncated`.
    pub fn row_status(&self, interrupted: bool) -> RowStatus {
        match (&self.response, &self.error) {
            (Some(r), _) if r.truncated => RowStatus::Truncated,
            (Some(_), _) => RowStatus::Ok,
            (None, Some(e)) if e.kind == ProviderErrorKind::Cancelled => RowStatus::Interrupted,
            (None, _) if interrupted => RowStatus::Interrupted,
            (None, _) => RowStatus::Error,
        }
    }
}

/// A failed request as the user sees it: its kind, to match on, and its text, already redacted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// Which failure.
    pub kind: ProviderErrorKind,
    /// What to show (keys redacted).
    pub message: String,
}

impl RequestError {
    /// An error of `kind` showing `message`.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        RequestError {
            kind,
            message: message.into(),
        }
    }
}

/// A shared HTTP client (keeps connections alive between requests). Cheap to clone.
#[derive(Clone)]
pub struct Http(reqwest::Client);

impl Http {
    /// A new client.
    pub fn new() -> Http {
        Http(HttpProvider::default_client())
    }
}

impl Default for Http {
    fn default() -> Self {
        Http::new()
    }
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Http")
    }
}

/// What the request tasks report.
#[derive(Debug)]
pub enum Event {
    /// Model `idx` has streamed text waiting in [`Streams`]. Sent only when its buffer was
    /// empty: a caller that takes the text less often than pieces arrive (a display refreshed
    /// at most every 50 ms) is woken once per take, not once per piece; and not before the
    /// caller's `show_from` (see [`spawn`]).
    Delta {
        /// index in the model list
        idx: usize,
    },
    /// Model `idx` is done.
    Done {
        /// index in the model list
        idx: usize,
        /// answer or error
        result: Box<Result<LlmResponse, ProviderError>>,
    },
}

/// The providers for `models` with the configuration `cfg`.
pub fn providers_for(
    models: &[ModelSpec],
    cfg: &LlmConfig,
    http: &Http,
    policy: RetryPolicy,
) -> Vec<Arc<HttpProvider>> {
    models
        .iter()
        .map(|m| {
            Arc::new(HttpProvider::new(
                cfg.get(m.provider).clone(),
                http.0.clone(),
                policy,
            ))
        })
        .collect()
}

/// The streamed text of each model not yet taken by the caller (see [`Event::Delta`]).
#[derive(Debug, Clone)]
pub struct Streams(Arc<Vec<Mutex<String>>>);

impl Streams {
    fn new(n: usize) -> Streams {
        Streams(Arc::new(
            (0..n).map(|_| Mutex::new(String::new())).collect(),
        ))
    }

    fn buf(&self, idx: usize) -> Option<MutexGuard<'_, String>> {
        self.0
            .get(idx)
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the text model `idx` streamed since the last take (all of it once its
    /// [`Event::Done`] has arrived: a request adds its last piece before it reports done).
    pub fn take(&self, idx: usize) -> String {
        self.buf(idx)
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }

    /// Whether model `idx` has text not yet taken.
    pub fn pending(&self, idx: usize) -> bool {
        self.buf(idx).is_some_and(|b| !b.is_empty())
    }

    /// Appends `text` to model `idx`'s buffer; true when it was empty (the caller is told).
    fn push(&self, idx: usize, text: &str) -> bool {
        self.buf(idx).is_some_and(|mut b| {
            let was_empty = b.is_empty();
            b.push_str(text);
            was_empty && !text.is_empty()
        })
    }
}

/// Starts each model's request as a task on the HTTP runtime. A task stops early once `cancel`
/// is set; its events are then ignored by dropping the receiver. Streamed text goes to the
/// returned [`Streams`]; [`Event::Delta`] says so only from `show_from` on: a caller that
/// shows nothing before then looks at [`Streams::pending`] itself when the time comes, and is
/// not woken for a stream it would not show (most answers of a fast server are whole before
/// that, and a wake-up is a context switch on the executor's CPU while the stream is read).
pub fn spawn(
    args: &AskArgs,
    providers: Vec<Arc<HttpProvider>>,
    cancel: Arc<AtomicBool>,
    show_from: Instant,
) -> (Receiver<Event>, Streams) {
    let (tx, rx) = channel();
    let streams = Streams::new(args.models.len());
    for (idx, (spec, p)) in args.models.iter().zip(providers).enumerate() {
        let req = LlmRequest {
            model: spec.model.clone(),
            system: args.system.clone(),
            prompt: args.prompt.clone(),
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            timeout: args.timeout,
            stream: args.stream,
            max_answer_bytes: args.max_answer_bytes,
        };
        let ttx: Sender<Event> = tx.clone();
        let cancel = cancel.clone();
        let bufs = streams.clone();
        let spawned = client::spawn(async move {
            let mut on_delta = |t: &str| {
                if bufs.push(idx, t) && Instant::now() >= show_from {
                    let _ = ttx.send(Event::Delta { idx });
                }
            };
            let result = p.complete_async(&req, &cancel, &mut on_delta).await;
            let _ = ttx.send(Event::Done {
                idx,
                result: Box::new(result),
            });
        });
        if let Err(message) = spawned {
            let _ = tx.send(Event::Done {
                idx,
                result: Box::new(Err(ProviderError::Api {
                    provider: spec.provider.label(),
                    message,
                })),
            });
        }
    }
    (rx, streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::providers::ProviderKind;

    #[test]
    fn streams_tell_once_per_take() {
        let s = Streams::new(2);
        assert!(s.push(1, "a"));
        assert!(!s.push(1, "b"));
        assert!(!s.push(1, ""));
        assert_eq!(s.take(1), "ab");
        assert!(!s.push(0, ""));
        assert!(s.push(1, "c"));
        assert_eq!(
            (s.take(0), s.take(1), s.take(1)),
            (String::new(), "c".into(), String::new())
        );
        assert!(!s.push(7, "x") && s.take(7).is_empty());
        assert!(!s.pending(0) && !s.pending(7));
        assert!(s.push(0, "d") && s.pending(0));
        s.take(0);
        assert!(!s.pending(0));
    }

    #[test]
    fn row_status_follows_the_error_kind_and_the_interrupt() {
        let r = |error: Option<RequestError>| RequestResult {
            spec: ModelSpec {
                provider: ProviderKind::OpenAi,
                model: "m".into(),
            },
            response: error.is_none().then(LlmResponse::default),
            error,
            partial: String::new(),
            seed: None,
            eco: None,
            measured: None,
        };
        assert_eq!(r(None).row_status(true), RowStatus::Ok);
        let mut cut = r(None);
        if let Some(resp) = cut.response.as_mut() {
            resp.truncated = true;
        }
        assert_eq!(cut.row_status(false), RowStatus::Truncated);
        let key = RequestError::new(ProviderErrorKind::MissingKey, "openai: no API key");
        assert_eq!(r(Some(key.clone())).row_status(false), RowStatus::Error);
        assert_eq!(
            r(Some(key.clone())).row_status(true),
            RowStatus::Interrupted
        );
        let cancelled = RequestError::new(ProviderErrorKind::Cancelled, "openai: interrupted");
        assert_eq!(r(Some(cancelled)).row_status(false), RowStatus::Interrupted);
        assert_eq!(key.to_string(), "openai: no API key");
    }
}
