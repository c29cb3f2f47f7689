//! Faults a hostile or broken server can cause: endless streams (the answer cap) and redirects
//! to another origin (keys stay with their provider); the in-memory stream parser.

use super::client::*;
use super::providers::{LlmConfig, ProviderKind};
use crate::config::Settings;
use crate::testing::llm_server::{Reply, Server, StreamEnd};
use serde_json::json;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn provider(kind: ProviderKind, base: &str, key: &str) -> HttpProvider {
    let mut s = Settings::empty();
    s.set(&kind.base_url_var(), base);
    s.set(&kind.key_var(), key);
    let cfg = LlmConfig::from_settings(&s).get(kind).clone();
    let policy = RetryPolicy {
        max_retries: 0,
        ..RetryPolicy::default()
    };
    HttpProvider::new(cfg, HttpProvider::default_client(), policy)
}

fn req(model: &str, stream: bool, cap: usize) -> LlmRequest {
    LlmRequest {
        model: model.into(),
        system: None,
        prompt: "Hello".into(),
        max_tokens: None,
        temperature: None,
        timeout: Duration::from_secs(20),
        stream,
        max_answer_bytes: cap,
    }
}

fn piece(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

#[test]
fn an_endless_stream_stops_at_the_answer_cap() {
    let srv = Server::script(vec![
        Reply::sse(vec![piece("é123456789")]).stream_end(Duration::ZERO, StreamEnd::Endless),
    ]);
    let p = provider(ProviderKind::OpenAi, &srv.url("/v1"), "sk-cap-test");
    let mut got = 0usize;
    let r = p
        .complete(&req("m", true, 1000), &AtomicBool::new(false), &mut |d| {
            got += d.len()
        })
        .expect("a capped answer is an answer");
    assert!(r.truncated);
    // cut on a character boundary, never past the cap
    assert!(
        r.text.len() <= 1000 && r.text.len() > 980,
        "{}",
        r.text.len()
    );
    assert_eq!(got, r.text.len(), "the deltas add up to the kept text");
    assert!(
        r.finish_reason
            .as_deref()
            .is_some_and(|f| f.contains(MAX_ANSWER_BYTES_KEY))
    );
}

#[test]
fn a_whole_body_is_capped_too_and_the_setting_is_read() {
    let text = "a".repeat(5000);
    let srv = Server::script(vec![Reply::json(json!({
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]
    }))]);
    let p = provider(ProviderKind::OpenAi, &srv.url("/v1"), "sk-cap-test");
    let r = p
        .complete(&req("m", false, 100), &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    assert!(r.truncated && r.text.len() == 100);
    let mut s = Settings::empty();
    assert_eq!(max_answer_bytes(&s), (DEFAULT_MAX_ANSWER_BYTES, None));
    s.set(MAX_ANSWER_BYTES_KEY, "4096");
    assert_eq!(max_answer_bytes(&s), (4096, None));
    s.set(MAX_ANSWER_BYTES_KEY, "-3");
    let (n, w) = max_answer_bytes(&s);
    assert_eq!(n, DEFAULT_MAX_ANSWER_BYTES);
    assert!(w.unwrap().contains(MAX_ANSWER_BYTES_KEY));
}

#[test]
fn a_line_without_end_is_refused_not_buffered() {
    let p = provider(ProviderKind::OpenAi, "http://127.0.0.1:9/v1", "k");
    let body = vec![b'x'; 10_000_000];
    let e = p.parse_sse_body(&body, 1000).unwrap_err();
    assert!(e.to_string().contains("longer than"), "{e}");
}

#[test]
fn a_cross_origin_redirect_is_refused_and_sends_no_key() {
    for kind in [ProviderKind::Gemini, ProviderKind::OpenAi] {
        let thief = Server::script(vec![Reply::json(json!({"stolen": true}))]);
        let target = thief.url("/steal");
        let srv = Server::start(move |_, _| {
            Reply::status_json(307, json!({})).header("Location", &target)
        });
        let p = provider(kind, &srv.url("/v1"), "KEY-MUST-STAY-7788");
        let e = p
            .complete(&req("m", false, 1000), &AtomicBool::new(false), &mut |_| {})
            .unwrap_err();
        assert!(e.to_string().contains("redirect"), "{e}");
        assert!(e.to_string().contains("another origin"), "{e}");
        assert!(!e.to_string().contains("KEY-MUST-STAY"), "{e}");
        assert!(
            thief.received().is_empty(),
            "the other origin got a request"
        );
        assert_eq!(srv.received().len(), 1);
    }
}

#[test]
fn a_same_origin_redirect_is_followed_with_the_key() {
    let srv = Server::start(|n, _| {
        if n == 0 {
            Reply::status_json(307, json!({})).header("Location", "/v2/chat/completions")
        } else {
            Reply::json(json!({"choices": [{"index": 0,
                "message": {"role": "assistant", "content": "moved"}, "finish_reason": "stop"}]}))
        }
    });
    let p = provider(ProviderKind::OpenAi, &srv.url("/v1"), "sk-same-origin");
    let r = p
        .complete(&req("m", false, 1000), &AtomicBool::new(false), &mut |_| {})
        .unwrap();
    assert_eq!(r.text, "moved");
    let got = srv.received();
    assert_eq!(got[1].path, "/v2/chat/completions");
    assert_eq!(
        got[1].header("authorization"),
        Some("Bearer sk-same-origin")
    );
}
