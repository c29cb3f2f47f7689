//! Running one prompt against several models at once: one task per model on the HTTP runtime
//! ([`client::spawn`]), events back over a channel ([`Events`]) that the caller (the kernel's
//! executor thread) waits on while it drives the requests, so it can stream answers, watch for
//! interrupts and abandon requests without waiting for them.

use super::AskArgs;
use super::client::{
    self, HttpProvider, LlmRequest, LlmResponse, ProviderError, ProviderErrorKind, RetryPolicy,
};
use super::footprint::{EcoEstimate, SeedEstimate};
use super::local::Measured;
use super::providers::{LlmConfig, ModelSpec};
use crate::carbon::record::RowStatus;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::AbortHandle;

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

/// The events of the requests [`spawn`] started. The requests run only while their caller
/// waits here ([`Events::recv_timeout`] drives the HTTP runtime on the caller's thread); those
/// still running when this is dropped are abandoned (their connections closed).
#[derive(Debug)]
pub struct Events {
    rx: UnboundedReceiver<Event>,
    tasks: Vec<AbortHandle>,
    /// Ends a wait early ([`Events::waker`]).
    wake: Arc<Notify>,
}

impl Events {
    /// The next event, running the requests meanwhile for at most `wait`; `Timeout` also when
    /// the [`Events::waker`] was called (since the last wait); `Disconnected` once every
    /// request has reported (or the HTTP runtime could not start).
    pub fn recv_timeout(&mut self, wait: Duration) -> Result<Event, RecvTimeoutError> {
        match self.rx.try_recv() {
            Ok(e) => return Ok(e),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let (rx, wake) = (&mut self.rx, &self.wake);
        // the timer is made inside: it needs the runtime's context
        let got = client::drive(async {
            tokio::select! {
                biased;
                e = rx.recv() => Some(e),
                () = wake.notified() => None,
                () = tokio::time::sleep(wait) => None,
            }
        });
        match got {
            Ok(Some(Some(e))) => Ok(e),
            Ok(None) => Err(RecvTimeoutError::Timeout),
            Ok(Some(None)) | Err(_) => Err(RecvTimeoutError::Disconnected),
        }
    }

    /// Ends the current or next [`Events::recv_timeout`] early, from any thread (an interrupt):
    /// the caller's wait need not poll for it.
    pub fn waker(&self) -> Arc<dyn Fn() + Send + Sync> {
        let wake = Arc::clone(&self.wake);
        Arc::new(move || wake.notify_one())
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let mut running = false;
        for t in self.tasks.iter().filter(|t| !t.is_finished()) {
            t.abort();
            running = true;
        }
        // an aborted task is dropped (its request and connection with it) when the runtime
        // next runs: now, not at the next `%llm` cell
        if running {
            client::settle();
        }
    }
}

/// Starts each model's request as a task on the HTTP runtime; they run while the caller waits
/// on the returned [`Events`]. A task stops early once `cancel` is set, or when the events are
/// dropped. Streamed text goes to the returned [`Streams`]; [`Event::Delta`] says so only from
/// `show_from` on: a caller that shows nothing before then looks at [`Streams::pending`]
/// itself when the time comes (most answers of a fast server are whole before that).
pub fn spawn(
    args: &AskArgs,
    providers: Vec<Arc<HttpProvider>>,
    cancel: Arc<AtomicBool>,
    show_from: Instant,
) -> (Events, Streams) {
    let (tx, rx) = unbounded_channel();
    let streams = Streams::new(args.models.len());
    // a kept connection that its server closed since the last request is noticed now, so the
    // request does not go out on it
    client::settle();
    let mut tasks = Vec::with_capacity(args.models.len());
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
        let ttx = tx.clone();
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
        match spawned {
            Ok(task) => tasks.push(task),
            Err(message) => {
                let _ = tx.send(Event::Done {
                    idx,
                    result: Box::new(Err(ProviderError::Api {
                        provider: spec.provider.label(),
                        message,
                    })),
                });
            }
        }
    }
    let wake = Arc::new(Notify::new());
    (Events { rx, tasks, wake }, streams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::providers::ProviderKind;

    #[test]
    fn a_waker_ends_a_wait_from_another_thread() {
        let (tx, rx) = unbounded_channel();
        let mut ev = Events {
            rx,
            tasks: Vec::new(),
            wake: Arc::new(Notify::new()),
        };
        let long = Duration::from_secs(60);
        let t = Instant::now();
        // a wake that comes before the wait is kept for it
        let w = ev.waker();
        w();
        assert!(matches!(
            ev.recv_timeout(long),
            Err(RecvTimeoutError::Timeout)
        ));
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            w();
        });
        assert!(matches!(
            ev.recv_timeout(long),
            Err(RecvTimeoutError::Timeout)
        ));
        // without the wakes, the two waits took their 60 s each
        assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
        h.join().unwrap();
        tx.send(Event::Delta { idx: 3 }).unwrap();
        assert!(matches!(ev.recv_timeout(long), Ok(Event::Delta { idx: 3 })));
        drop(tx);
        assert!(matches!(
            ev.recv_timeout(long),
            Err(RecvTimeoutError::Disconnected)
        ));
    }

    /// A request still running when its events are dropped (an interrupt) is dropped then, with
    /// its connection, not when the runtime next runs (the next `%llm` cell).
    #[test]
    fn dropped_events_drop_the_requests_still_running() {
        struct Dropped(Arc<AtomicBool>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let gone = Arc::new(AtomicBool::new(false));
        let guard = Dropped(Arc::clone(&gone));
        let task = client::spawn(async move {
            let _held = guard;
            std::future::pending::<()>().await;
        })
        .unwrap();
        let (_tx, rx) = unbounded_channel();
        let mut ev = Events {
            rx,
            tasks: vec![task],
            wake: Arc::new(Notify::new()),
        };
        // the task starts and waits
        assert!(matches!(
            ev.recv_timeout(Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        ));
        assert!(!gone.load(std::sync::atomic::Ordering::SeqCst));
        drop(ev);
        // Nothing drives the runtime here after the drop: the drop's own turn of the runtime
        // dropped the task, or (when another test drives the shared runtime at that moment)
        // that test's thread does. Without the turn, the task would wait for the next driver.
        let t = Instant::now();
        while !gone.load(std::sync::atomic::Ordering::SeqCst)
            && t.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(gone.load(std::sync::atomic::Ordering::SeqCst));
    }

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
