//! The HTTP providers against loopback servers speaking each wire format, faults included.

use super::client::*;
use super::providers::{LlmConfig, ProviderKind};
use crate::config::Settings;
use crate::testing::llm_server::{Reply, Server, StreamEnd, refused_url, wire};
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn provider(
    kind: ProviderKind,
    base: &str,
    key: Option<&str>,
    policy: RetryPolicy,
) -> HttpProvider {
    let mut s = Settings::empty();
    s.set(&kind.base_url_var(), base);
    if let Some(k) = key {
        s.set(&kind.key_var(), k);
    }
    let cfg = LlmConfig::from_settings(&s).get(kind).clone();
    HttpProvider::new(cfg, HttpProvider::default_client(), policy)
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 2,
        base: Duration::from_millis(10),
        cap: Duration::from_millis(40),
        max_wait: Duration::from_secs(5),
    }
}

fn req(model: &str, stream: bool) -> LlmRequest {
    LlmRequest {
        model: model.into(),
        system: Some("be terse".into()),
        prompt: "Hello".into(),
        max_tokens: Some(64),
        temperature: Some(0.5),
        timeout: Duration::from_secs(10),
        stream,
        max_answer_bytes: 1 << 20,
    }
}

fn call(p: &HttpProvider, r: &LlmRequest) -> (Result<LlmResponse, ProviderError>, Vec<String>) {
    let mut deltas = Vec::new();
    let res = p.complete(r, &AtomicBool::new(false), &mut |d| {
        deltas.push(d.to_string())
    });
    (res, deltas)
}

#[test]
fn openai_json_request_shape_and_usage() {
    let srv = Server::script(vec![Reply::json(wire::openai(
        "gpt-4o-mini-2024-07-18",
        "Hi!",
        19,
        10,
    ))]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-test-123"),
        fast(),
    );
    let (r, deltas) = call(&p, &req("gpt-4o-mini", false));
    let r = r.unwrap();
    assert_eq!(r.text, "Hi!");
    assert_eq!(deltas, vec!["Hi!"]);
    assert_eq!((r.prompt_tokens, r.completion_tokens), (Some(19), Some(10)));
    assert_eq!(r.response_model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    let got = &srv.received()[0];
    assert_eq!(got.path, "/v1/chat/completions");
    assert_eq!(got.header("authorization"), Some("Bearer sk-test-123"));
    let b = got.json();
    assert_eq!(
        b["messages"][0],
        json!({"role": "system", "content": "be terse"})
    );
    assert_eq!(b["max_completion_tokens"], 64);
    assert_eq!(b["stream"], false);
}

#[test]
fn openai_sse_stream_pieces_and_usage() {
    let srv = Server::script(vec![Reply::sse(wire::openai_sse(
        "gpt-4o",
        &["Hel", "lo", " world"],
        9,
        12,
    ))]);
    let p = provider(ProviderKind::OpenAi, &srv.url("/v1"), Some("sk-x1"), fast());
    let (r, deltas) = call(&p, &req("gpt-4o", true));
    let r = r.unwrap();
    assert_eq!(deltas, vec!["Hel", "lo", " world"]);
    assert_eq!(r.text, "Hello world");
    assert!(r.streamed && !r.tokens_estimated);
    assert_eq!(r.completion_tokens, Some(12));
    let b = srv.received()[0].json();
    assert_eq!(b["stream_options"]["include_usage"], true);
}

/// The stream's bytes arrive in pieces that cut lines anywhere (a proxy or a slow network
/// re-chunks them): each event is still read whole, its text once.
#[test]
fn stream_lines_cut_across_reads_come_whole() {
    let whole: String = wire::openai_sse("gpt-4o", &["Caf", "é au", " lait"], 9, 3).concat();
    // cut every 7 characters (inside `data:`, inside the JSON, between the two newlines)
    let chars: Vec<char> = whole.chars().collect();
    let pieces: Vec<String> = chars.chunks(7).map(|c| c.iter().collect()).collect();
    assert!(pieces.len() > 50);
    // a pause between pieces, so they reach the client as separate reads
    let srv = Server::script(vec![
        Reply::sse(pieces).stream_end(Duration::from_millis(1), StreamEnd::Clean),
    ]);
    let p = provider(ProviderKind::OpenAi, &srv.url("/v1"), Some("sk-x1"), fast());
    let (r, deltas) = call(&p, &req("gpt-4o", true));
    let r = r.unwrap();
    assert_eq!(deltas, vec!["Caf", "é au", " lait"]);
    assert_eq!(r.text, "Café au lait");
    assert_eq!(r.completion_tokens, Some(3));
}

#[test]
fn stream_without_usage_counts_chunks() {
    let mut ev = wire::openai_sse("m", &["a", "b", "c"], 1, 1);
    ev.remove(ev.len() - 2); // drop the usage chunk
    let srv = Server::script(vec![Reply::sse(ev)]);
    let p = provider(ProviderKind::Local, &srv.url("/v1"), None, fast());
    let (r, _) = call(&p, &req("m", true));
    let r = r.unwrap();
    assert!(r.tokens_estimated);
    assert_eq!(r.completion_tokens, Some(3));
    assert_eq!(srv.received()[0].header("authorization"), None);
    // local servers get max_tokens, not max_completion_tokens
    assert_eq!(srv.received()[0].json()["max_tokens"], 64);
}

#[test]
fn groq_timing_fields() {
    let srv = Server::script(vec![Reply::json(wire::groq(
        "llama-3.3-70b-versatile",
        "ok",
        42,
        120,
        0.43,
    ))]);
    let p = provider(
        ProviderKind::Groq,
        &srv.url("/openai/v1"),
        Some("gsk_1234"),
        fast(),
    );
    let r = call(&p, &req("llama-3.3-70b-versatile", false)).0.unwrap();
    let t = r.timing.unwrap();
    assert_eq!(t.completion_time, Some(0.43));
    assert_eq!(t.queue_time, Some(0.021));
}

#[test]
fn hf_router_keeps_provider_suffix() {
    let srv = Server::script(vec![Reply::json(wire::openai(
        "deepseek-ai/DeepSeek-V3.1",
        "x",
        1,
        2,
    ))]);
    let p = provider(
        ProviderKind::HuggingFace,
        &srv.url("/v1"),
        Some("hf_abcd"),
        fast(),
    );
    call(&p, &req("deepseek-ai/DeepSeek-V3.1:novita", false))
        .0
        .unwrap();
    assert_eq!(
        srv.received()[0].json()["model"],
        "deepseek-ai/DeepSeek-V3.1:novita"
    );
    assert_eq!(srv.received()[0].json()["max_tokens"], 64);
}

#[test]
fn gemini_json_and_sse() {
    let srv = Server::script(vec![
        Reply::json(wire::gemini("gemini-2.5-flash", "Hi!", 3, 5, 20)),
        Reply::sse(wire::gemini_sse(
            "gemini-2.5-flash",
            &["He", "llo"],
            3,
            5,
            0,
        )),
    ]);
    let p = provider(
        ProviderKind::Gemini,
        &srv.url("/v1beta"),
        Some("AIza-test"),
        fast(),
    );
    let r = call(&p, &req("gemini-2.5-flash", false)).0.unwrap();
    assert_eq!(r.text, "Hi!");
    // EcoLogits: output tokens = candidates + thoughts = 5 + 20
    assert_eq!(r.completion_tokens, Some(25));
    let (r, d) = call(&p, &req("gemini-2.5-flash", true));
    assert_eq!(r.unwrap().text, "Hello");
    assert_eq!(d, vec!["He", "llo"]);
    let got = srv.received();
    assert_eq!(
        got[0].path,
        "/v1beta/models/gemini-2.5-flash:generateContent"
    );
    assert_eq!(
        got[1].path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(got[0].header("x-goog-api-key"), Some("AIza-test"));
    let b = got[0].json();
    assert_eq!(b["systemInstruction"]["parts"][0]["text"], "be terse");
    assert_eq!(b["generationConfig"]["maxOutputTokens"], 64);
}

#[test]
fn rate_limit_hints_are_honoured() {
    // retry-after-ms: 300 ms while the backoff would be 10 ms: the gap proves the hint was used.
    for (reply, min_gap) in [
        (
            Reply::status_json(
                429,
                wire::openai_error("Rate limit reached", "tokens", "rate_limit_exceeded"),
            )
            .header("retry-after-ms", "300"),
            300,
        ),
        (
            Reply::status_json(
                429,
                wire::openai_error("Rate limit reached", "tokens", "rate_limit_exceeded"),
            )
            .header("retry-after", "1"),
            1000,
        ),
    ] {
        let srv = Server::script(vec![reply, Reply::json(wire::openai("m", "ok", 1, 1))]);
        let p = provider(
            ProviderKind::OpenAi,
            &srv.url("/v1"),
            Some("sk-abcd"),
            fast(),
        );
        let r = call(&p, &req("m", false)).0.unwrap();
        assert_eq!(r.attempts, 2);
        let got = srv.received();
        let gap = got[1].at.duration_since(got[0].at);
        assert!(gap >= Duration::from_millis(min_gap), "{gap:?}");
        assert!(r.notes[0].contains("as the server asked"), "{:?}", r.notes);
    }
    let srv = Server::script(vec![
        Reply::status_json(429, wire::gemini_rate_limited("0.3s")),
        Reply::json(wire::gemini("g", "ok", 1, 1, 0)),
    ]);
    let p = provider(
        ProviderKind::Gemini,
        &srv.url("/v1beta"),
        Some("AIza-x"),
        fast(),
    );
    let r = call(&p, &req("g", false)).0.unwrap();
    let got = srv.received();
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_millis(300));
    assert_eq!(r.attempts, 2);
}

#[test]
fn retries_are_bounded_and_hints_too_long_are_not_waited() {
    let srv = Server::script(vec![Reply::status_json(
        503,
        wire::openai_error("overloaded", "server_error", "x"),
    )]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-abcd"),
        fast(),
    );
    let e = call(&p, &req("m", false)).0.unwrap_err();
    assert_eq!(srv.received().len(), 3, "1 attempt + 2 retries");
    assert!(e.to_string().contains("gave up after 3 attempts"), "{e}");
    let srv = Server::script(vec![
        Reply::status_json(
            429,
            wire::openai_error("slow down", "tokens", "rate_limit_exceeded"),
        )
        .header("retry-after", "3600"),
    ]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-abcd"),
        fast(),
    );
    let e = call(&p, &req("m", false)).0.unwrap_err();
    assert_eq!(srv.received().len(), 1);
    assert!(e.to_string().contains("retry after 3600"), "{e}");
}

#[test]
fn quota_is_not_retried_and_bad_keys_name_the_variable() {
    let srv = Server::script(vec![Reply::status_json(
        429,
        wire::openai_error(
            "You exceeded your current quota, please check your plan",
            "insufficient_quota",
            "insufficient_quota",
        ),
    )]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-abcd"),
        fast(),
    );
    let e = call(&p, &req("m", false)).0.unwrap_err();
    assert!(matches!(e, ProviderError::Quota { .. }), "{e}");
    assert_eq!(srv.received().len(), 1);

    let key = "sk-proj-SECRET-0123456789";
    let srv = Server::script(vec![Reply::status_json(
        401,
        wire::openai_error(
            &format!("Incorrect API key provided: {key}."),
            "invalid_request_error",
            "invalid_api_key",
        ),
    )]);
    let p = provider(ProviderKind::OpenAi, &srv.url("/v1"), Some(key), fast());
    let e = call(&p, &req("m", false)).0.unwrap_err().to_string();
    assert!(e.contains("OPENAI_API_KEY") && !e.contains("SECRET"), "{e}");

    let srv = Server::script(vec![Reply::status_json(400, wire::gemini_bad_key())]);
    let p = provider(
        ProviderKind::Gemini,
        &srv.url("/v1beta"),
        Some("AIza-bad"),
        fast(),
    );
    let e = call(&p, &req("g", false)).0.unwrap_err().to_string();
    assert!(e.contains("GEMINI_API_KEY"), "{e}");

    let p = provider(ProviderKind::Groq, &srv.url("/v1"), None, fast());
    let e = call(&p, &req("g", false)).0.unwrap_err().to_string();
    assert!(e.contains("set GROQ_API_KEY"), "{e}");
}

#[test]
fn malformed_refused_timeout_stall_and_break() {
    let srv = Server::script(vec![Reply::raw(200, "{\"choices\": [ oops")]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-abcd"),
        fast(),
    );
    let e = call(&p, &req("m", false)).0.unwrap_err();
    assert!(matches!(e, ProviderError::Malformed { .. }), "{e}");

    let p = provider(ProviderKind::Ollama, &refused_url("/v1"), None, fast());
    let e = call(&p, &req("m", false)).0.unwrap_err().to_string();
    assert!(
        e.contains("cannot connect") && e.contains("OLLAMA_BASE_URL"),
        "{e}"
    );

    let srv = Server::script(vec![
        Reply::json(wire::openai("m", "late", 1, 1)).delayed(Duration::from_secs(3)),
    ]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-abcd"),
        RetryPolicy {
            max_retries: 0,
            ..fast()
        },
    );
    let mut r = req("m", false);
    r.timeout = Duration::from_millis(400);
    let e = call(&p, &r).0.unwrap_err();
    assert!(matches!(e, ProviderError::Timeout { .. }), "{e}");

    let ev = wire::openai_sse("m", &["par", "tial"], 1, 2);
    let srv = Server::script(vec![
        Reply::sse(ev[..4].to_vec())
            .stream_end(Duration::ZERO, StreamEnd::Stall(Duration::from_secs(3))),
    ]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-abcd"),
        fast(),
    );
    let mut r = req("m", true);
    r.timeout = Duration::from_millis(600);
    let (res, d) = call(&p, &r);
    let e = res.unwrap_err();
    assert!(matches!(e, ProviderError::Stalled { .. }), "{e}");
    assert_eq!(d, vec!["par", "tial"]);
    assert_eq!(
        srv.received().len(),
        1,
        "a stream that showed text is not replayed"
    );

    let srv = Server::script(vec![
        Reply::sse(ev[..3].to_vec()).stream_end(Duration::ZERO, StreamEnd::Break),
    ]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-abcd"),
        fast(),
    );
    let e = call(&p, &req("m", true)).0.unwrap_err();
    assert!(matches!(e, ProviderError::Broken { .. }), "{e}");
}

#[test]
fn cancel_stops_a_slow_stream() {
    let ev = wire::openai_sse("m", &["a", "b", "c", "d", "e", "f"], 1, 6);
    let srv = Server::script(vec![
        Reply::sse(ev).stream_end(Duration::from_millis(300), StreamEnd::Clean),
    ]);
    let p = provider(
        ProviderKind::OpenAi,
        &srv.url("/v1"),
        Some("sk-abcd"),
        fast(),
    );
    let cancel = AtomicBool::new(false);
    let mut n = 0;
    let e = p
        .complete(&req("m", true), &cancel, &mut |_| {
            n += 1;
            cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        })
        .unwrap_err();
    assert!(matches!(e, ProviderError::Cancelled { .. }), "{e}");
    assert_eq!(n, 1);
}

/// A server that keeps the connection of its first answer open (HTTP/1.1 keep-alive), then
/// closes it while the runtime is not driven (between two cells): the second request goes out
/// on a new connection and is answered at its first attempt, not failed or retried.
#[test]
fn a_kept_connection_the_server_closed_is_not_used_again() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}/v1", listener.local_addr().unwrap());
    let (closed_tx, closed_rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut accepted = 0;
        for (round, conn) in listener.incoming().take(2).enumerate() {
            let conn = conn.unwrap();
            accepted += 1;
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            r.read_exact(&mut vec![0; len]).unwrap();
            let body = wire::openai("m", &format!("answer {round}"), 1, 2).to_string();
            let mut w = conn;
            write!(
                w,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            w.flush().unwrap();
            if round == 0 {
                // the answer is read; the server then ends the kept connection
                std::thread::sleep(Duration::from_millis(100));
                drop(w);
                drop(r);
                closed_tx.send(()).unwrap();
            }
        }
        accepted
    });
    let p = provider(ProviderKind::OpenAi, &base, Some("sk-x"), fast());
    // `complete` gives the runtime its turn before the request, as `run::spawn` does
    let ask = |p: &HttpProvider| call(p, &req("m", false)).0;
    let first = ask(&p).unwrap();
    assert_eq!((first.text.as_str(), first.attempts), ("answer 0", 1));
    closed_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // the FIN has arrived; nothing drove the runtime since
    std::thread::sleep(Duration::from_millis(50));
    let second = ask(&p).unwrap();
    assert_eq!((second.text.as_str(), second.attempts), ("answer 1", 1));
    assert_eq!(server.join().unwrap(), 2);
}
