//! The providers' stream parser (SSE events of OpenAI-compatible servers and Gemini): any body
//! gives an answer or an error, an answer never exceeds the cap.
#![no_main]
use carbon_magics::config::Settings;
use carbon_magics::llm::client::{HttpProvider, RetryPolicy};
use carbon_magics::llm::providers::{LlmConfig, ProviderKind};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn providers() -> &'static [HttpProvider; 2] {
    static P: OnceLock<[HttpProvider; 2]> = OnceLock::new();
    P.get_or_init(|| {
        let cfg = LlmConfig::from_settings(&Settings::empty());
        [ProviderKind::OpenAi, ProviderKind::Gemini].map(|k| {
            HttpProvider::new(
                cfg.get(k).clone(),
                HttpProvider::default_client(),
                RetryPolicy::default(),
            )
        })
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, body)) = input.split_first() else {
        return;
    };
    let cap = 64 + usize::from(first) * 16;
    let p = &providers()[usize::from(first & 1)];
    if let Ok(r) = p.parse_sse_body(body, cap) {
        assert!(r.text.len() <= cap, "{} > {cap}", r.text.len());
    }
});
