//! Loopback HTTP servers (127.0.0.1 only) that speak the providers' real wire formats — status
//! codes, headers, JSON bodies, chunked SSE streams — and their fault modes, for tests. Not used by
//! the kernel itself.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// e.g. `POST`
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
    /// When the request was complete.
    pub at: Instant,
}

impl Recorded {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// How a streamed body ends.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEnd {
    /// Terminating chunk (`0\r\n\r\n`).
    Clean,
    /// Stop sending (connection open) for this long, then close.
    Stall(Duration),
    /// Cut the connection in the middle of a chunk.
    Break,
    /// Repeat the last event without end (no pause) until the client goes away or the server
    /// stops: a server that never finishes its answer.
    Endless,
}

/// What the server sends back.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Body,
    /// Wait before answering (timeouts).
    pub delay: Duration,
}

/// A reply body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A whole body with Content-Length (`application/json` unless a header says otherwise).
    Full(String),
    /// `text/event-stream`, chunked: one chunk per event, `gap` between events.
    Sse {
        /// events, each a complete `data: …\n\n` block
        events: Vec<String>,
        /// pause between events
        gap: Duration,
        /// how it ends
        end: StreamEnd,
    },
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(v: Value) -> Reply {
        Reply::status_json(200, v)
    }
    /// `status` with a JSON body.
    pub fn status_json(status: u16, v: Value) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: Body::Full(v.to_string()),
            delay: Duration::ZERO,
        }
    }
    /// 200 with a raw body (malformed JSON tests).
    pub fn raw(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: Body::Full(body.to_string()),
            delay: Duration::ZERO,
        }
    }
    /// 200 with an SSE stream ending cleanly.
    pub fn sse(events: Vec<String>) -> Reply {
        Reply {
            status: 200,
            headers: vec![],
            body: Body::Sse {
                events,
                gap: Duration::ZERO,
                end: StreamEnd::Clean,
            },
            delay: Duration::ZERO,
        }
    }
    /// Adds a header.
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    /// Answers after `d`.
    pub fn delayed(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
    /// Changes how a stream ends (and the gap between events).
    pub fn stream_end(mut self, gap: Duration, how: StreamEnd) -> Reply {
        if let Body::Sse { gap: g, end, .. } = &mut self.body {
            *g = gap;
            *end = how;
        }
        self
    }
}

type Handler = dyn Fn(usize, &Recorded) -> Reply + Send + Sync;

/// A running loopback server. Stops when dropped.
pub struct Server {
    addr: SocketAddr,
    /// Every request received, in order.
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Serves `handler(n, request)` for the n-th request (0-based).
    pub fn start(handler: impl Fn(usize, &Recorded) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let (r2, s2) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r3, h3, s3) = (r2.clone(), handler.clone(), s2.clone());
                std::thread::spawn(move || serve(conn, &r3, &*h3, &s3));
            }
        });
        Server {
            addr,
            requests,
            stop,
        }
    }

    /// Replies in order; the last one repeats.
    pub fn script(replies: Vec<Reply>) -> Server {
        Server::start(move |n, _| replies[n.min(replies.len() - 1)].clone())
    }

    /// `http://127.0.0.1:PORT` + `suffix` (e.g. `/v1`).
    pub fn url(&self, suffix: &str) -> String {
        format!("http://{}{suffix}", self.addr)
    }

    /// Requests received so far.
    pub fn received(&self) -> Vec<Recorded> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // wake the accept loop
        let _ = TcpStream::connect(self.addr);
    }
}

/// A URL on which nothing listens (connection refused).
pub fn refused_url(suffix: &str) -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}{suffix}")
}

fn read_request(rd: &mut BufReader<TcpStream>) -> Option<Recorded> {
    let mut line = String::new();
    rd.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        rd.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    rd.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn sleep_unless(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while Instant::now() < end && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn serve(conn: TcpStream, log: &Mutex<Vec<Recorded>>, handler: &Handler, stop: &AtomicBool) {
    let mut w = match conn.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut rd = BufReader::new(conn);
    let Some(req) = read_request(&mut rd) else {
        return;
    };
    let n = {
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        l.push(req.clone());
        l.len() - 1
    };
    let reply = handler(n, &req);
    sleep_unless(reply.delay, stop);
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status)
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let has_ct = reply
        .headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    match &reply.body {
        Body::Full(b) => {
            if !has_ct {
                head.push_str("Content-Type: application/json\r\n");
            }
            head.push_str(&format!("Content-Length: {}\r\n\r\n", b.len()));
            let _ = w.write_all(head.as_bytes());
            let _ = w.write_all(b.as_bytes());
        }
        Body::Sse { events, gap, end } => {
            head.push_str("Content-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
            if w.write_all(head.as_bytes()).is_err() {
                return;
            }
            let _ = w.flush();
            for (i, e) in events.iter().enumerate() {
                if i > 0 {
                    sleep_unless(*gap, stop);
                }
                let chunk = format!("{:x}\r\n{e}\r\n", e.len());
                if w.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                let _ = w.flush();
            }
            match end {
                StreamEnd::Clean => {
                    let _ = w.write_all(b"0\r\n\r\n");
                }
                StreamEnd::Stall(d) => sleep_unless(*d, stop),
                StreamEnd::Endless => {
                    let Some(e) = events.last() else { return };
                    let chunk = format!("{:x}\r\n{e}\r\n", e.len());
                    while !stop.load(Ordering::SeqCst) {
                        if w.write_all(chunk.as_bytes()).is_err() {
                            return;
                        }
                    }
                }
                StreamEnd::Break => {
                    // announce a chunk, send half of it, cut the connection
                    let _ = w.write_all(b"40\r\ndata: {\"choices\": [{\"delta\"");
                    let _ = w.flush();
                }
            }
        }
    }
    let _ = w.flush();
    let _ = w.shutdown(std::net::Shutdown::Both);
}

/// Wire-format builders (llm-footprint.md §3).
pub mod wire {
    use super::*;

    /// An OpenAI chat completion (non-streamed).
    pub fn openai(model: &str, text: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
        json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1730000000,
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": null},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens,
                      "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                      "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
            "service_tier": "default", "system_fingerprint": "fp_test"
        })
    }

    /// Groq's completion: OpenAI shape + timing fields in `usage` and `x_groq`.
    pub fn groq(
        model: &str,
        text: &str,
        prompt_tokens: u64,
        completion_tokens: u64,
        completion_time: f64,
    ) -> Value {
        let mut v = openai(model, text, prompt_tokens, completion_tokens);
        v["usage"] = json!({"queue_time": 0.021, "prompt_tokens": prompt_tokens, "prompt_time": 0.004,
            "completion_tokens": completion_tokens, "completion_time": completion_time,
            "total_tokens": prompt_tokens + completion_tokens, "total_time": completion_time + 0.004,
            "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}});
        v["x_groq"] = json!({"id": "req_test", "seed": 123, "usage": {"dram_cached_tokens": 0, "sram_cached_tokens": 0}});
        v
    }

    /// An OpenAI-compatible SSE stream of `pieces`, with a usage chunk and `[DONE]`.
    pub fn openai_sse(
        model: &str,
        pieces: &[&str],
        prompt_tokens: u64,
        completion_tokens: u64,
    ) -> Vec<String> {
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1730000000,
                       "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                       "usage": null})
            )
        };
        let mut ev = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        ev.push(": keep-alive\n\n".to_string());
        for p in pieces {
            ev.push(chunk(json!({"content": p}), Value::Null));
        }
        ev.push(chunk(json!({}), json!("stop")));
        ev.push(format!(
            "data: {}\n\n",
            json!({"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1730000000,
                   "model": model, "choices": [],
                   "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}})
        ));
        ev.push("data: [DONE]\n\n".to_string());
        ev
    }

    /// A Gemini generateContent response.
    pub fn gemini(
        model: &str,
        text: &str,
        prompt_tokens: u64,
        candidates: u64,
        thoughts: u64,
    ) -> Value {
        json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": candidates,
                              "thoughtsTokenCount": thoughts,
                              "totalTokenCount": prompt_tokens + candidates + thoughts,
                              "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}]},
            "modelVersion": model, "responseId": "resp-test"
        })
    }

    /// A Gemini `streamGenerateContent?alt=sse` stream (ends at EOF, no `[DONE]`).
    pub fn gemini_sse(
        model: &str,
        pieces: &[&str],
        prompt_tokens: u64,
        candidates: u64,
        thoughts: u64,
    ) -> Vec<String> {
        let n = pieces.len();
        pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut v = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}, "index": 0}],
                                   "modelVersion": model, "responseId": "resp-test"});
                if i + 1 == n {
                    v["candidates"][0]["finishReason"] = json!("STOP");
                    v["usageMetadata"] = json!({"promptTokenCount": prompt_tokens,
                        "candidatesTokenCount": candidates, "thoughtsTokenCount": thoughts,
                        "totalTokenCount": prompt_tokens + candidates + thoughts});
                }
                format!("data: {v}\r\n\r\n")
            })
            .collect()
    }

    /// An OpenAI-shaped error body.
    pub fn openai_error(message: &str, etype: &str, code: &str) -> Value {
        json!({"error": {"message": message, "type": etype, "param": null, "code": code}})
    }

    /// Gemini's invalid-key 400.
    pub fn gemini_bad_key() -> Value {
        json!({"error": {"code": 400, "message": "API key not valid. Please pass a valid API key.",
            "status": "INVALID_ARGUMENT",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                         "domain": "googleapis.com",
                         "metadata": {"service": "generativelanguage.googleapis.com"}}]}})
    }

    /// Gemini's 429 with a RetryInfo delay (e.g. `"0.3s"`).
    pub fn gemini_rate_limited(delay: &str) -> Value {
        json!({"error": {"code": 429, "message": "You exceeded your current quota, please check your plan and billing details.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                         "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                         "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}]}})
    }
}
