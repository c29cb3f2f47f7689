//! The [`Provider`] trait and its HTTP implementation for both wire formats (OpenAI chat
//! completions — OpenAI, Groq, Hugging Face router, Ollama, vLLM, llama.cpp — and Gemini
//! generateContent), with SSE streaming, bounded retries that honour the servers' hints, and
//! error classification (llm-footprint.md §3).
//!
//! Asynchronous (reqwest's async client) on a runtime driven by the thread that waits for the
//! answers ([`spawn`], [`drive`]): a request, its stream parsing and its retries run as one task
//! beside the connection it reads, on the caller's own thread. (The blocking client this
//! replaced ran each request on a thread of its own and handed every piece of a stream from
//! reqwest's runtime thread to it: two thread wake-ups per SSE event; a runtime thread of its
//! own still took two hand-overs per request.) Callers cancel through an [`AtomicBool`] that is
//! polled between stream events and during retry waits, or abort the task.

use super::providers::{ProviderConfig, ProviderKind, Wire};
use crate::config::Settings;
use serde_json::{Value, json};
use std::future::Future;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// One prompt to one model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// Model id as sent.
    pub model: String,
    /// Optional system prompt.
    pub system: Option<String>,
    /// The user prompt.
    pub prompt: String,
    /// Output token limit.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Per-attempt timeout (connect to the end of the body).
    pub timeout: Duration,
    /// Ask for an SSE stream.
    pub stream: bool,
    /// The answer is cut at this many bytes of text (`LLM_MAX_ANSWER_BYTES`): an endless stream
    /// ends there instead of filling memory and the front-end.
    pub max_answer_bytes: usize,
}

/// Server-side timing fields (Groq's `usage` / `x_groq.usage`, seconds).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ProviderTiming {
    /// Time queued.
    pub queue_time: Option<f64>,
    /// Prompt processing time.
    pub prompt_time: Option<f64>,
    /// Generation time.
    pub completion_time: Option<f64>,
    /// Total server time.
    pub total_time: Option<f64>,
}

/// A completed answer with what the footprint needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LlmResponse {
    /// Answer text (Markdown).
    pub text: String,
    /// Model named by the response (e.g. a dated snapshot).
    pub response_model: Option<String>,
    /// Prompt tokens (provider usage).
    pub prompt_tokens: Option<u64>,
    /// Output tokens (provider usage; for Gemini candidates + thoughts).
    pub completion_tokens: Option<u64>,
    /// True when `completion_tokens` was counted from stream chunks (no usage in the response).
    pub tokens_estimated: bool,
    /// Finish reason.
    pub finish_reason: Option<String>,
    /// Measured latency of the successful attempt: request sent → last byte (s).
    pub latency_s: f64,
    /// Time to the first content (s), streamed answers only.
    pub ttft_s: Option<f64>,
    /// Wall time including retries and their waits (s).
    pub total_s: f64,
    /// Attempts made (1 = no retry).
    pub attempts: u32,
    /// Provider timing fields.
    pub timing: Option<ProviderTiming>,
    /// Whether the answer arrived as a stream.
    pub streamed: bool,
    /// What happened on the way (retries and their waits).
    pub notes: Vec<String>,
    /// True when the answer was cut at [`LlmRequest::max_answer_bytes`] (its `finish_reason`
    /// says so too); the row's status is then `truncated`.
    pub truncated: bool,
}

/// A failed request, as the user sees it (texts never contain keys).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// No key configured.
    #[error("{provider}: no API key: set {var} in .env or the environment")]
    MissingKey {
        /// provider label
        provider: &'static str,
        /// variable to set
        var: String,
    },
    /// The key was refused.
    #[error("{provider}: invalid API key (HTTP {status}): set a valid {var} ({message})")]
    InvalidKey {
        /// provider label
        provider: &'static str,
        /// HTTP status
        status: u16,
        /// variable to set
        var: String,
        /// provider's message
        message: String,
    },
    /// 429 or overload with an optional hint.
    #[error("{provider}: rate limited (HTTP {status}){}: {message}", hint_text(*.retry_after))]
    RateLimited {
        /// provider label
        provider: &'static str,
        /// HTTP status
        status: u16,
        /// server's hint
        retry_after: Option<Duration>,
        /// provider's message
        message: String,
    },
    /// Quota or billing exhausted: retrying does not help.
    #[error("{provider}: quota exhausted (HTTP {status}), not retried: {message}")]
    Quota {
        /// provider label
        provider: &'static str,
        /// HTTP status
        status: u16,
        /// provider's message
        message: String,
    },
    /// 5xx.
    #[error("{provider}: server error (HTTP {status}){}: {message}", hint_text(*.retry_after))]
    Server {
        /// provider label
        provider: &'static str,
        /// HTTP status
        status: u16,
        /// server's hint
        retry_after: Option<Duration>,
        /// provider's message
        message: String,
    },
    /// Another HTTP error (400, 404, …).
    #[error("{provider}: HTTP {status}: {message}")]
    Http {
        /// provider label
        provider: &'static str,
        /// HTTP status
        status: u16,
        /// provider's message
        message: String,
        /// 408/409 are retried
        retryable: bool,
    },
    /// No answer within the timeout.
    #[error("{provider}: no answer within the timeout of {secs} s (--timeout to change)")]
    Timeout {
        /// provider label
        provider: &'static str,
        /// timeout
        secs: f64,
    },
    /// The stream stopped sending data.
    #[error(
        "{provider}: the stream stalled after {chunks} chunks (no data until the timeout of {secs} s); partial answer kept"
    )]
    Stalled {
        /// provider label
        provider: &'static str,
        /// chunks received
        chunks: usize,
        /// timeout
        secs: f64,
    },
    /// The stream ended early or broke.
    #[error("{provider}: the stream broke after {chunks} chunks ({detail}); partial answer kept")]
    Broken {
        /// provider label
        provider: &'static str,
        /// chunks received
        chunks: usize,
        /// what happened
        detail: String,
    },
    /// The body was not the JSON the wire format defines.
    #[error("{provider}: malformed response ({detail})")]
    Malformed {
        /// provider label
        provider: &'static str,
        /// parser message
        detail: String,
    },
    /// The server cannot be reached.
    #[error(
        "{provider}: cannot connect to {url} ({detail}); is the server up? ({var} sets the URL)"
    )]
    Connect {
        /// provider label
        provider: &'static str,
        /// base URL
        url: String,
        /// cause
        detail: String,
        /// variable overriding the URL
        var: String,
    },
    /// An error reported inside a 200 response or stream.
    #[error("{provider}: {message}")]
    Api {
        /// provider label
        provider: &'static str,
        /// message
        message: String,
    },
    /// Interrupted by the user.
    #[error("{provider}: interrupted")]
    Cancelled {
        /// provider label
        provider: &'static str,
    },
}

fn hint_text(d: Option<Duration>) -> String {
    match d {
        Some(d) => format!(", server asked to retry after {:.3} s", d.as_secs_f64()),
        None => String::new(),
    }
}

impl ProviderError {
    /// Whether another attempt may succeed (SDK policy: 408, 409, 429, 5xx, connection errors).
    pub fn retryable(&self) -> bool {
        match self {
            ProviderError::RateLimited { .. }
            | ProviderError::Server { .. }
            | ProviderError::Connect { .. } => true,
            ProviderError::Http { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The server's retry hint.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Which failure this is, without its text.
    pub fn kind(&self) -> ProviderErrorKind {
        match self {
            ProviderError::MissingKey { .. } => ProviderErrorKind::MissingKey,
            ProviderError::InvalidKey { .. } => ProviderErrorKind::InvalidKey,
            ProviderError::RateLimited { .. } => ProviderErrorKind::RateLimited,
            ProviderError::Quota { .. } => ProviderErrorKind::Quota,
            ProviderError::Server { .. } => ProviderErrorKind::Server,
            ProviderError::Http { .. } => ProviderErrorKind::Http,
            ProviderError::Timeout { .. } => ProviderErrorKind::Timeout,
            ProviderError::Stalled { .. } => ProviderErrorKind::Stalled,
            ProviderError::Broken { .. } => ProviderErrorKind::Broken,
            ProviderError::Malformed { .. } => ProviderErrorKind::Malformed,
            ProviderError::Connect { .. } => ProviderErrorKind::Connect,
            ProviderError::Api { .. } => ProviderErrorKind::Api,
            ProviderError::Cancelled { .. } => ProviderErrorKind::Cancelled,
        }
    }
}

/// The kind of a [`ProviderError`] without its text, kept after the text is redacted so the
/// kernel can match on it (a missing key does not fail the cell; an interrupt sets the row's
/// status) instead of comparing words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    /// [`ProviderError::MissingKey`]
    MissingKey,
    /// [`ProviderError::InvalidKey`]
    InvalidKey,
    /// [`ProviderError::RateLimited`]
    RateLimited,
    /// [`ProviderError::Quota`]
    Quota,
    /// [`ProviderError::Server`]
    Server,
    /// [`ProviderError::Http`]
    Http,
    /// [`ProviderError::Timeout`]
    Timeout,
    /// [`ProviderError::Stalled`]
    Stalled,
    /// [`ProviderError::Broken`]
    Broken,
    /// [`ProviderError::Malformed`]
    Malformed,
    /// [`ProviderError::Connect`]
    Connect,
    /// [`ProviderError::Api`], or a request task that ended without an answer.
    Api,
    /// [`ProviderError::Cancelled`]: the user interrupted the cell.
    Cancelled,
}

impl ProviderErrorKind {
    /// A short name for notes and tables (`timeout`, `rate_limited`, …).
    pub fn name(self) -> &'static str {
        match self {
            ProviderErrorKind::MissingKey => "missing_key",
            ProviderErrorKind::InvalidKey => "invalid_key",
            ProviderErrorKind::RateLimited => "rate_limited",
            ProviderErrorKind::Quota => "quota",
            ProviderErrorKind::Server => "server_error",
            ProviderErrorKind::Http => "http_error",
            ProviderErrorKind::Timeout => "timeout",
            ProviderErrorKind::Stalled => "stream_stalled",
            ProviderErrorKind::Broken => "stream_broken",
            ProviderErrorKind::Malformed => "malformed",
            ProviderErrorKind::Connect => "connection",
            ProviderErrorKind::Api => "api_error",
            ProviderErrorKind::Cancelled => "interrupted",
        }
    }
}

impl std::fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Retries (defaults from the official OpenAI/Groq SDKs, llm-footprint.md §3.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (SDK default 2).
    pub max_retries: u32,
    /// First backoff (SDK 0.5 s), doubled each time.
    pub base: Duration,
    /// Backoff cap (SDK 8 s).
    pub cap: Duration,
    /// Longest server hint honoured (Groq SDK 60 s); longer hints are reported, not waited.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(8),
            max_wait: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// From `LLM_MAX_RETRIES`, `LLM_RETRY_BASE_MS`, `LLM_RETRY_MAX_WAIT_S` (defaults above).
    pub fn from_settings(s: &Settings) -> RetryPolicy {
        let mut p = RetryPolicy::default();
        if let Some(v) = s.get("LLM_MAX_RETRIES").and_then(|v| v.trim().parse().ok()) {
            p.max_retries = v;
        }
        if let Some(v) = s
            .get("LLM_RETRY_BASE_MS")
            .and_then(|v| v.trim().parse().ok())
        {
            p.base = Duration::from_millis(v);
        }
        if let Some(v) = s
            .get("LLM_RETRY_MAX_WAIT_S")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| *v >= 0.0 && v.is_finite())
        {
            p.max_wait = Duration::from_secs_f64(v);
        }
        p
    }

    /// Backoff before retry `k` (0-based): base·2^k capped, minus up to 25 % jitter (SDK).
    pub fn backoff(&self, k: u32) -> Duration {
        let d = self.base.saturating_mul(1u32 << k.min(16)).min(self.cap);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let jitter = 1.0 - 0.25 * (nanos % 1000) as f64 / 1000.0;
        d.mul_f64(jitter)
    }
}

/// Something that answers prompts.
pub trait Provider: Send + Sync {
    /// Which provider.
    fn kind(&self) -> ProviderKind;
    /// Sends `req`, calling `on_delta` with each piece of streamed text, retrying as the policy
    /// allows; gives up early when `cancel` becomes true.
    fn complete(
        &self,
        req: &LlmRequest,
        cancel: &AtomicBool,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<LlmResponse, ProviderError>;
}

/// The HTTP provider for every [`ProviderKind`].
pub struct HttpProvider {
    cfg: ProviderConfig,
    client: reqwest::Client,
    policy: RetryPolicy,
}

/// The runtime the requests run on, one for the whole process (the connections it keeps alive
/// are reused by every request); `Err` when it could not start. It has no thread of its own: the
/// thread that waits for the requests drives it ([`drive`]), so a request's connection, its
/// stream parsing and its caller's wait share one thread, and no piece of a request is handed
/// between threads (with a runtime thread of its own, a streamed request took 6–10 % longer
/// beyond the server's time: bench/llm_bench-results.md, stop 20).
static RUNTIME: LazyLock<Result<tokio::runtime::Runtime, String>> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))
});

/// Queues `task` on the HTTP runtime; it runs while a thread [`drive`]s the runtime. The error
/// says why it cannot run (no runtime).
pub fn spawn(
    task: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::AbortHandle, String> {
    let rt = RUNTIME.as_ref().map_err(Clone::clone)?;
    Ok(rt.spawn(task).abort_handle())
}

/// Runs the HTTP runtime on this thread (the queued requests, their connections and timers)
/// until `f` is done; the error says why it cannot run (no runtime).
pub fn drive<T>(f: impl Future<Output = T>) -> Result<T, String> {
    let rt = RUNTIME.as_ref().map_err(Clone::clone)?;
    Ok(rt.block_on(f))
}

/// Lets the HTTP runtime handle what happened while nobody drove it (a kept connection the
/// server closed, an aborted task), without waiting for anything new: two turns of its loop
/// (the first polls the sockets, the second runs the tasks that woke).
pub fn settle() {
    let _ = drive(async {
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
    });
}

/// Polls a future that never waits (one that reads a body from memory) to its end.
fn ready<T>(f: impl Future<Output = T>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        // a body in memory is read without waiting
        std::task::Poll::Pending => unreachable!("a read from memory waited"),
    }
}

/// A body read line by line: from the network as its chunks arrive, or from memory.
struct Lines<'a> {
    src: Source<'a>,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    pos: usize,
    eof: bool,
}

enum Source<'a> {
    Net(reqwest::Response),
    Mem(&'a [u8]),
}

impl<'a> Lines<'a> {
    fn new(src: Source<'a>) -> Self {
        Lines {
            src,
            buf: Vec::new(),
            pos: 0,
            eof: false,
        }
    }

    /// The next line with its `\n`; at most `max` bytes (a longer line comes back cut, without
    /// its `\n`: the caller refuses it); the last line may lack its `\n`; empty at the end.
    async fn next(&mut self, max: usize) -> Result<&[u8], reqwest::Error> {
        loop {
            let rest = &self.buf[self.pos..];
            let end = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i < max => Some(i + 1),
                _ if rest.len() >= max => Some(max),
                _ if self.eof => Some(rest.len()),
                _ => None,
            };
            if let Some(n) = end {
                let start = self.pos;
                self.pos += n;
                return Ok(&self.buf[start..start + n]);
            }
            // keep only the unread part before reading more
            self.buf.drain(..self.pos);
            self.pos = 0;
            match &mut self.src {
                Source::Mem(b) => {
                    self.buf.extend_from_slice(b);
                    self.eof = true;
                }
                Source::Net(r) => match r.chunk().await? {
                    Some(c) => self.buf.extend_from_slice(&c),
                    None => self.eof = true,
                },
            }
        }
    }
}

/// Up to `max` bytes of a response's body, and the error that ended reading early, if one did
/// (what arrived before it is kept, as `Read::read_to_string` keeps it).
async fn read_body(mut r: reqwest::Response, max: usize) -> (Vec<u8>, Option<reqwest::Error>) {
    let mut out = Vec::new();
    while out.len() < max {
        match r.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(max - out.len())]),
            Ok(None) => break,
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

impl HttpProvider {
    /// A provider using `client` (share one client: it keeps connections alive).
    pub fn new(cfg: ProviderConfig, client: reqwest::Client, policy: RetryPolicy) -> Self {
        HttpProvider {
            cfg,
            client,
            policy,
        }
    }

    /// A client suitable for [`HttpProvider::new`].
    pub fn default_client() -> reqwest::Client {
        reqwest::Client::builder()
            .user_agent(concat!("carbon-kernel/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // timeouts are per request (LlmRequest::timeout); the client has none of its own
            // Keys travel in headers reqwest does not strip on a cross-host redirect
            // (`x-goog-api-key`), so a redirect may only stay on the configured origin.
            .redirect(same_origin_redirects())
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    }

    fn label(&self) -> &'static str {
        self.cfg.kind.label()
    }

    /// Reads a whole `text/event-stream` body from memory as a streamed answer would be read
    /// (the fuzz target of the stream parser and tests use it; no network).
    pub fn parse_sse_body(
        &self,
        body: &[u8],
        max_answer_bytes: usize,
    ) -> Result<LlmResponse, ProviderError> {
        let mut acc = Acc::default();
        let mut emitted = 0;
        ready(self.read_sse(
            &mut Lines::new(Source::Mem(body)),
            Instant::now(),
            1.0,
            max_answer_bytes,
            &AtomicBool::new(false),
            &mut |_| {},
            &mut emitted,
            &mut acc,
        ))?;
        Ok(acc.out)
    }

    fn build(&self, req: &LlmRequest) -> (String, Value) {
        let base = &self.cfg.base_url;
        match self.cfg.kind.wire() {
            Wire::OpenAiChat => {
                let mut messages = Vec::new();
                if let Some(s) = &req.system {
                    messages.push(json!({"role": "system", "content": s}));
                }
                messages.push(json!({"role": "user", "content": req.prompt}));
                let mut body =
                    json!({"model": req.model, "messages": messages, "stream": req.stream});
                if req.stream {
                    body["stream_options"] = json!({"include_usage": true});
                }
                if let Some(n) = req.max_tokens {
                    body[self.cfg.kind.row().max_tokens_field] = json!(n);
                }
                if let Some(t) = req.temperature {
                    body["temperature"] = json!(t);
                }
                (format!("{base}/chat/completions"), body)
            }
            Wire::Gemini => {
                let mut body =
                    json!({"contents": [{"role": "user", "parts": [{"text": req.prompt}]}]});
                if let Some(s) = &req.system {
                    body["systemInstruction"] = json!({"parts": [{"text": s}]});
                }
                let mut gc = serde_json::Map::new();
                if let Some(t) = req.temperature {
                    gc.insert("temperature".into(), json!(t));
                }
                if let Some(n) = req.max_tokens {
                    gc.insert("maxOutputTokens".into(), json!(n));
                }
                if !gc.is_empty() {
                    body["generationConfig"] = Value::Object(gc);
                }
                let url = if req.stream {
                    format!("{base}/models/{}:streamGenerateContent?alt=sse", req.model)
                } else {
                    format!("{base}/models/{}:generateContent", req.model)
                };
                (url, body)
            }
        }
    }

    async fn attempt<F: FnMut(&str) + ?Sized>(
        &self,
        req: &LlmRequest,
        cancel: &AtomicBool,
        on_delta: &mut F,
        emitted: &mut usize,
    ) -> Result<LlmResponse, ProviderError> {
        let p = self.label();
        let (url, body) = self.build(req);
        let mut rb = self.client.post(&url).timeout(req.timeout).json(&body);
        if let Some(k) = &self.cfg.api_key {
            rb = match self.cfg.kind.wire() {
                Wire::Gemini => rb.header("x-goog-api-key", k),
                Wire::OpenAiChat => rb.bearer_auth(k),
            };
        }
        let secs = req.timeout.as_secs_f64();
        let t0 = Instant::now();
        let resp = rb.send().await.map_err(|e| {
            if e.is_timeout() {
                ProviderError::Timeout { provider: p, secs }
            } else if e.is_redirect() {
                ProviderError::Api {
                    provider: p,
                    message: format!(
                        "refused to follow a redirect ({}): keys are sent only to {} ({} sets it)",
                        root_cause(&e),
                        self.cfg.base_url,
                        self.cfg.kind.base_url_var()
                    ),
                }
            } else {
                ProviderError::Connect {
                    provider: p,
                    url: self.cfg.base_url.clone(),
                    detail: root_cause(&e),
                    var: self.cfg.kind.base_url_var(),
                }
            }
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let headers = resp.headers().clone();
            // what arrived of the error's body (none when it is not UTF-8)
            let (body, _) = read_body(resp, 256 * 1024).await;
            let text = String::from_utf8(body).unwrap_or_default();
            return Err(self.classify(status, &headers, &text));
        }
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let mut acc = Acc::default();
        if is_sse {
            self.read_sse(
                &mut Lines::new(Source::Net(resp)),
                t0,
                secs,
                req.max_answer_bytes,
                cancel,
                on_delta,
                emitted,
                &mut acc,
            )
            .await?;
            acc.out.streamed = true;
        } else {
            let (body, failed) = read_body(resp, 64 * 1024 * 1024).await;
            if let Some(e) = failed {
                return Err(if e.is_timeout() {
                    ProviderError::Timeout { provider: p, secs }
                } else {
                    ProviderError::Broken {
                        provider: p,
                        chunks: 0,
                        detail: root_cause(&e),
                    }
                });
            }
            let text = String::from_utf8(body).map_err(|_| ProviderError::Broken {
                provider: p,
                chunks: 0,
                detail: "stream did not contain valid UTF-8".into(),
            })?;
            let v: Value = serde_json::from_str(&text).map_err(|e| ProviderError::Malformed {
                provider: p,
                detail: format!("{e}; body starts {:?}", snippet(&text, 80)),
            })?;
            self.absorb(&v, &mut acc)?;
            cap_answer(&mut acc.out, req.max_answer_bytes);
            if !acc.saw_answer {
                return Err(ProviderError::Malformed {
                    provider: p,
                    detail: match self.cfg.kind.wire() {
                        Wire::OpenAiChat => "no choices[0].message in the response".into(),
                        Wire::Gemini => "no candidates in the response".into(),
                    },
                });
            }
            if !acc.out.text.is_empty() {
                on_delta(&acc.out.text);
                *emitted += 1;
            }
        }
        let mut out = acc.out;
        out.latency_s = t0.elapsed().as_secs_f64();
        if out.completion_tokens.is_none() {
            // No usage (stream without include_usage, some local servers): EcoLogits' tracers
            // count content chunks; for a whole body we count ~4 characters per token.
            out.tokens_estimated = true;
            out.completion_tokens = Some(if out.streamed {
                acc.chunks as u64
            } else {
                (out.text.chars().count() as u64).div_ceil(4)
            });
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    async fn read_sse<F: FnMut(&str) + ?Sized>(
        &self,
        rd: &mut Lines<'_>,
        t0: Instant,
        secs: f64,
        max_answer_bytes: usize,
        cancel: &AtomicBool,
        on_delta: &mut F,
        emitted: &mut usize,
        acc: &mut Acc,
    ) -> Result<(), ProviderError> {
        let p = self.label();
        let mut data = String::new();
        let mut done = false;
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(ProviderError::Cancelled { provider: p });
            }
            // One line (or one event's data) longer than the whole answer may be is not read
            // to its end: a server sending bytes without a newline would fill memory.
            let max_line = max_answer_bytes.saturating_add(SSE_LINE_SLACK);
            let line = rd.next(max_line).await.map_err(|e| {
                if e.is_timeout() {
                    if acc.chunks == 0 {
                        ProviderError::Timeout { provider: p, secs }
                    } else {
                        ProviderError::Stalled {
                            provider: p,
                            chunks: acc.chunks,
                            secs,
                        }
                    }
                } else {
                    ProviderError::Broken {
                        provider: p,
                        chunks: acc.chunks,
                        detail: root_cause(&e),
                    }
                }
            })?;
            let n = line.len();
            if n == max_line && line.last() != Some(&b'\n') {
                return Err(ProviderError::Malformed {
                    provider: p,
                    detail: format!("a stream line longer than {max_line} bytes"),
                });
            }
            let eof = n == 0;
            let l = String::from_utf8_lossy(line);
            let l = l.trim_end_matches(['\n', '\r']);
            if eof || l.is_empty() {
                // end of one event
                if !data.is_empty() {
                    if data.trim() == "[DONE]" {
                        done = true;
                        break;
                    }
                    let v: Value =
                        serde_json::from_str(&data).map_err(|e| ProviderError::Malformed {
                            provider: p,
                            detail: format!(
                                "stream event is not JSON ({e}): {:?}",
                                snippet(&data, 80)
                            ),
                        })?;
                    data.clear();
                    let before = acc.out.text.len();
                    self.absorb(&v, acc)?;
                    let capped = cap_answer(&mut acc.out, max_answer_bytes);
                    if acc.out.text.len() > before {
                        if acc.out.ttft_s.is_none() {
                            acc.out.ttft_s = Some(t0.elapsed().as_secs_f64());
                        }
                        acc.chunks += 1;
                        *emitted += 1;
                        on_delta(&acc.out.text[before..]);
                    }
                    if capped {
                        // the rest of the stream is not read: dropping the reader closes it
                        return Ok(());
                    }
                }
                if eof {
                    break;
                }
                continue;
            }
            if l.starts_with(':') {
                continue; // keep-alive comment
            }
            if let Some(rest) = l.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
                if data.len() > max_line {
                    return Err(ProviderError::Malformed {
                        provider: p,
                        detail: format!("a stream event longer than {max_line} bytes"),
                    });
                }
            }
            // `event:`, `id:`, `retry:` carry nothing we use
        }
        // Gemini streams end at EOF; OpenAI-compatible ones with [DONE]. Without either end marker
        // the stream broke unless a finish reason already arrived.
        let complete = done || acc.out.finish_reason.is_some();
        if !complete {
            return Err(ProviderError::Broken {
                provider: p,
                chunks: acc.chunks,
                detail: "connection closed before the end of the stream".into(),
            });
        }
        Ok(())
    }

    /// Folds one response object (whole body or one stream event) into `acc`.
    fn absorb(&self, v: &Value, acc: &mut Acc) -> Result<(), ProviderError> {
        let p = self.label();
        if let Some(e) = v.get("error") {
            return Err(ProviderError::Api {
                provider: p,
                message: format!("error in the response: {}", error_message(e)),
            });
        }
        match self.cfg.kind.wire() {
            Wire::OpenAiChat => {
                if let Some(m) = v.get("model").and_then(Value::as_str) {
                    acc.out.response_model = Some(m.to_string());
                }
                if let Some(c) = v.get("choices").and_then(Value::as_array)
                    && let Some(c0) = c.first()
                {
                    acc.saw_answer = true;
                    let part = c0
                        .get("delta")
                        .or_else(|| c0.get("message"))
                        .and_then(|m| m.get("content"))
                        .and_then(Value::as_str);
                    if let Some(t) = part {
                        acc.out.text.push_str(t);
                    }
                    if let Some(f) = c0.get("finish_reason").and_then(Value::as_str) {
                        acc.out.finish_reason = Some(f.to_string());
                    }
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    read_openai_usage(u, &mut acc.out);
                }
                if let Some(x) = v.get("x_groq") {
                    if let Some(e) = x.get("error") {
                        return Err(ProviderError::Api {
                            provider: p,
                            message: format!("stream stopped by the server: {}", error_message(e)),
                        });
                    }
                    if let Some(u) = x.get("usage").filter(|u| u.is_object()) {
                        read_openai_usage(u, &mut acc.out);
                    }
                }
            }
            Wire::Gemini => {
                if let Some(m) = v.get("modelVersion").and_then(Value::as_str) {
                    acc.out.response_model = Some(m.to_string());
                }
                if let Some(r) = v
                    .get("promptFeedback")
                    .and_then(|f| f.get("blockReason"))
                    .and_then(Value::as_str)
                {
                    return Err(ProviderError::Api {
                        provider: p,
                        message: format!("the prompt was blocked ({r})"),
                    });
                }
                if let Some(c0) = v
                    .get("candidates")
                    .and_then(Value::as_array)
                    .and_then(|c| c.first())
                {
                    acc.saw_answer = true;
                    if let Some(parts) = c0
                        .get("content")
                        .and_then(|c| c.get("parts"))
                        .and_then(Value::as_array)
                    {
                        for part in parts {
                            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                                continue;
                            }
                            if let Some(t) = part.get("text").and_then(Value::as_str) {
                                acc.out.text.push_str(t);
                            }
                        }
                    }
                    if let Some(f) = c0.get("finishReason").and_then(Value::as_str) {
                        acc.out.finish_reason = Some(f.to_string());
                    }
                }
                if let Some(u) = v.get("usageMetadata") {
                    let n = |k: &str| u.get(k).and_then(Value::as_u64);
                    if let Some(pt) = n("promptTokenCount") {
                        acc.out.prompt_tokens = Some(pt);
                    }
                    // EcoLogits counts candidates + thoughts as output tokens.
                    if n("candidatesTokenCount").is_some() || n("thoughtsTokenCount").is_some() {
                        acc.out.completion_tokens = Some(
                            n("candidatesTokenCount").unwrap_or(0)
                                + n("thoughtsTokenCount").unwrap_or(0),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// Maps an HTTP error response to a [`ProviderError`] (llm-footprint.md §3.1, §3.3, §3.4).
    fn classify(
        &self,
        status: u16,
        headers: &reqwest::header::HeaderMap,
        body: &str,
    ) -> ProviderError {
        let p = self.label();
        let v: Option<Value> = serde_json::from_str(body).ok();
        let err = v.as_ref().and_then(|v| v.get("error"));
        let message = match err {
            Some(e) => error_message(e),
            None if body.trim().is_empty() => "empty body".to_string(),
            None => snippet(body, 160),
        };
        let code = err
            .and_then(|e| e.get("code").and_then(Value::as_str))
            .unwrap_or("");
        let etype = err
            .and_then(|e| e.get("type").and_then(Value::as_str))
            .unwrap_or("");
        let details: Vec<Value> = err
            .and_then(|e| e.get("details"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let var = self.cfg.kind.key_var();
        let hint = retry_hint(headers).or_else(|| gemini_retry_delay(&details));
        let key_invalid = status == 401
            || details
                .iter()
                .any(|d| d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID"))
            || (status == 400 && message.contains("API key not valid"));
        if key_invalid {
            return ProviderError::InvalidKey {
                provider: p,
                status,
                var,
                message,
            };
        }
        let quota = status == 402
            || code == "insufficient_quota"
            || etype == "insufficient_quota"
            || (status == 429
                && details.iter().any(|d| {
                    d.get("violations")
                        .and_then(Value::as_array)
                        .is_some_and(|vs| {
                            vs.iter().any(|x| {
                                x.get("quotaId")
                                    .and_then(Value::as_str)
                                    .is_some_and(|q| q.contains("PerDay"))
                            })
                        })
                }));
        if quota {
            return ProviderError::Quota {
                provider: p,
                status,
                message,
            };
        }
        let should_retry = headers
            .get("x-should-retry")
            .and_then(|v| v.to_str().ok())
            .map(|v| v == "true");
        match status {
            429 => ProviderError::RateLimited {
                provider: p,
                status,
                retry_after: hint,
                message,
            },
            500..=599 if should_retry != Some(false) => ProviderError::Server {
                provider: p,
                status,
                retry_after: hint,
                message,
            },
            _ => ProviderError::Http {
                provider: p,
                status,
                message,
                retryable: should_retry.unwrap_or(matches!(status, 408 | 409)),
            },
        }
    }
}

/// Room for the JSON around an answer's text in one stream line (an event carries its text
/// escaped inside a JSON object; escaping at most doubles plain text, plus the envelope).
const SSE_LINE_SLACK: usize = 64 * 1024;

/// Cuts `out.text` at `max` bytes (on a character boundary) and marks the answer truncated;
/// true when it did.
fn cap_answer(out: &mut LlmResponse, max: usize) -> bool {
    if out.text.len() <= max {
        return false;
    }
    let mut cut = max;
    while !out.text.is_char_boundary(cut) {
        cut -= 1;
    }
    out.text.truncate(cut);
    out.truncated = true;
    out.finish_reason = Some(format!(
        "answer cap of {max} bytes reached ({MAX_ANSWER_BYTES_KEY}); the rest was not read"
    ));
    true
}

/// The setting that caps an answer's size.
pub const MAX_ANSWER_BYTES_KEY: &str = "LLM_MAX_ANSWER_BYTES";

/// The default cap: 1 MiB. The longest answers current models may give are 64k–128k output
/// tokens (≈ 4 bytes of English each, so ≤ 512 KB); twice that leaves every real answer whole
/// while an endless stream stops after a second or two instead of growing without end.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 1 << 20;

/// `LLM_MAX_ANSWER_BYTES` from the settings (a positive integer), else the default; the warning
/// for a value that is not one.
pub fn max_answer_bytes(s: &Settings) -> (usize, Option<String>) {
    match s.get(MAX_ANSWER_BYTES_KEY).map(str::trim) {
        None | Some("") => (DEFAULT_MAX_ANSWER_BYTES, None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => (n, None),
            _ => (
                DEFAULT_MAX_ANSWER_BYTES,
                Some(format!(
                    "{MAX_ANSWER_BYTES_KEY}={v:?} is not a positive number of bytes; using {DEFAULT_MAX_ANSWER_BYTES}"
                )),
            ),
        },
    }
}

/// A redirect policy that follows at most 10 redirects and only within one origin (scheme,
/// host and port): a key must never reach another server.
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let same = first.as_ref().is_some_and(|f| {
            let u = attempt.url();
            f.scheme() == u.scheme()
                && f.host_str() == u.host_str()
                && f.port_or_known_default() == u.port_or_known_default()
        });
        if attempt.previous().len() > 10 {
            attempt.error("more than 10 redirects")
        } else if same {
            attempt.follow()
        } else {
            let to = attempt.url().origin().ascii_serialization();
            attempt.error(format!("it leads to another origin, {to}"))
        }
    })
}

#[derive(Default)]
struct Acc {
    out: LlmResponse,
    chunks: usize,
    saw_answer: bool,
}

fn read_openai_usage(u: &Value, out: &mut LlmResponse) {
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let f = |k: &str| u.get(k).and_then(Value::as_f64);
    if let Some(v) = n("prompt_tokens") {
        out.prompt_tokens = Some(v);
    }
    if let Some(v) = n("completion_tokens") {
        out.completion_tokens = Some(v);
    }
    if f("completion_time").is_some() || f("total_time").is_some() || f("queue_time").is_some() {
        out.timing = Some(ProviderTiming {
            queue_time: f("queue_time"),
            prompt_time: f("prompt_time"),
            completion_time: f("completion_time"),
            total_time: f("total_time"),
        });
    }
}

/// `error.message` of an OpenAI / Gemini error object, or a string error (HF), on one line.
fn error_message(e: &Value) -> String {
    let m = match e {
        Value::String(s) => s.clone(),
        _ => e
            .get("message")
            .and_then(Value::as_str)
            .map(String::from)
            .unwrap_or_else(|| e.to_string()),
    };
    snippet(&m, 300)
}

/// First `n` characters on one line.
fn snippet(s: &str, n: usize) -> String {
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > n {
        one.chars().take(n).collect::<String>() + "…"
    } else {
        one
    }
}

/// `retry-after-ms` (ms), else `Retry-After` (seconds or an HTTP date).
pub fn retry_hint(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = get("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let ra = get("retry-after")?;
    if let Ok(s) = ra.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s));
    }
    let when = chrono::DateTime::parse_from_rfc2822(ra).ok()?;
    let d = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(d.to_std().unwrap_or(Duration::ZERO))
}

/// Gemini's `google.rpc.RetryInfo.retryDelay` (`"37s"`, `"1.5s"`).
pub fn gemini_retry_delay(details: &[Value]) -> Option<Duration> {
    details.iter().find_map(|d| {
        let t = d.get("@type").and_then(Value::as_str)?;
        if !t.ends_with("google.rpc.RetryInfo") {
            return None;
        }
        let s = d.get("retryDelay").and_then(Value::as_str)?;
        let secs: f64 = s.trim().trim_end_matches('s').parse().ok()?;
        (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
    })
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}

/// Sleeps `d` in short slices; false when cancelled.
async fn sleep_cancellable(d: Duration, cancel: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if cancel.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(20))).await;
    }
}

impl Provider for HttpProvider {
    fn kind(&self) -> ProviderKind {
        self.cfg.kind
    }

    /// Waits here for [`HttpProvider::complete_async`], run with the HTTP runtime's timers and
    /// connections (the pieces of text are handed to `on_delta` on this thread).
    fn complete(
        &self,
        req: &LlmRequest,
        cancel: &AtomicBool,
        on_delta: &mut dyn FnMut(&str),
    ) -> Result<LlmResponse, ProviderError> {
        // as `run::spawn` does before its requests
        settle();
        drive(self.complete_async(req, cancel, on_delta)).unwrap_or_else(|message| {
            Err(ProviderError::Api {
                provider: self.label(),
                message,
            })
        })
    }
}

impl HttpProvider {
    /// Sends `req`, calling `on_delta` with each piece of streamed text, retrying as the policy
    /// allows; gives up early when `cancel` becomes true. Runs on the HTTP runtime ([`spawn`]).
    pub async fn complete_async<F: FnMut(&str) + ?Sized>(
        &self,
        req: &LlmRequest,
        cancel: &AtomicBool,
        on_delta: &mut F,
    ) -> Result<LlmResponse, ProviderError> {
        let p = self.label();
        if self.cfg.kind.needs_key() && self.cfg.api_key.is_none() {
            return Err(ProviderError::MissingKey {
                provider: p,
                var: self.cfg.kind.key_var(),
            });
        }
        let start = Instant::now();
        let mut notes = Vec::new();
        let mut k = 0u32;
        loop {
            if cancel.load(Ordering::SeqCst) {
                return Err(ProviderError::Cancelled { provider: p });
            }
            let mut emitted = 0usize;
            match self.attempt(req, cancel, on_delta, &mut emitted).await {
                Ok(mut r) => {
                    r.attempts = k + 1;
                    r.total_s = start.elapsed().as_secs_f64();
                    r.notes = notes;
                    return Ok(r);
                }
                // A stream that already showed text is not replayed.
                Err(e) if e.retryable() && emitted == 0 && k < self.policy.max_retries => {
                    let (wait, why) = match e.retry_after() {
                        Some(h) if h > self.policy.max_wait => {
                            return Err(redact_err(e, &self.cfg));
                        }
                        Some(h) => (h, "as the server asked"),
                        None => (self.policy.backoff(k), "backoff"),
                    };
                    notes.push(format!(
                        "attempt {} failed ({}); retried after {:.3} s ({why})",
                        k + 1,
                        e.kind(),
                        wait.as_secs_f64()
                    ));
                    if !sleep_cancellable(wait, cancel).await {
                        return Err(ProviderError::Cancelled { provider: p });
                    }
                    k += 1;
                }
                Err(e) => {
                    let e = if k > 0 && e.retryable() {
                        ProviderError::Api {
                            provider: p,
                            message: format!(
                                "gave up after {} attempts: {}",
                                k + 1,
                                redact_err(e, &self.cfg)
                                    .to_string()
                                    .trim_start_matches(&format!("{p}: "))
                            ),
                        }
                    } else {
                        e
                    };
                    return Err(redact_err(e, &self.cfg));
                }
            }
        }
    }
}

/// Removes keys from every text field of an error (servers echo parts of keys in messages).
fn redact_err(e: ProviderError, cfg: &ProviderConfig) -> ProviderError {
    let r = |s: String| match &cfg.api_key {
        Some(k) if k.len() >= 4 => s.replace(k.as_str(), "***"),
        _ => s,
    };
    match e {
        ProviderError::InvalidKey {
            provider,
            status,
            var,
            message,
        } => ProviderError::InvalidKey {
            provider,
            status,
            var,
            message: r(message),
        },
        ProviderError::RateLimited {
            provider,
            status,
            retry_after,
            message,
        } => ProviderError::RateLimited {
            provider,
            status,
            retry_after,
            message: r(message),
        },
        ProviderError::Quota {
            provider,
            status,
            message,
        } => ProviderError::Quota {
            provider,
            status,
            message: r(message),
        },
        ProviderError::Server {
            provider,
            status,
            retry_after,
            message,
        } => ProviderError::Server {
            provider,
            status,
            retry_after,
            message: r(message),
        },
        ProviderError::Http {
            provider,
            status,
            message,
            retryable,
        } => ProviderError::Http {
            provider,
            status,
            message: r(message),
            retryable,
        },
        ProviderError::Api { provider, message } => ProviderError::Api {
            provider,
            message: r(message),
        },
        ProviderError::Malformed { provider, detail } => ProviderError::Malformed {
            provider,
            detail: r(detail),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn retry_hints() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_hint(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_hint(&h), Some(Duration::from_millis(150)));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_hint(&h), Some(Duration::ZERO));
        let d =
            vec![json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"})];
        assert_eq!(gemini_retry_delay(&d), Some(Duration::from_secs(37)));
    }

    #[test]
    fn backoff_is_capped_with_at_most_25_percent_jitter() {
        let p = RetryPolicy::default();
        let b = p.backoff(0);
        assert!(b <= Duration::from_millis(500) && b >= Duration::from_millis(375));
        assert!(p.backoff(10) <= Duration::from_secs(8));
    }
}
