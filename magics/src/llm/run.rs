//! Running one prompt against several models at once: one thread per model, events back over a
//! channel so the caller (the kernel's executor thread) can stream answers, watch for interrupts
//! and abandon requests without waiting for them.

use super::AskArgs;
use super::client::{HttpProvider, LlmRequest, LlmResponse, Provider, ProviderError, RetryPolicy};
use super::providers::{LlmConfig, ModelSpec};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender, channel};

/// A shared HTTP client (keeps connections alive between requests). Cheap to clone.
#[derive(Clone)]
pub struct Http(reqwest::blocking::Client);

impl Http {
    /// A new client. Build it outside any async runtime (the kernel's executor thread is fine).
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

/// What the request threads report.
#[derive(Debug)]
pub enum Event {
    /// More text of model `idx`.
    Delta {
        /// index in the model list
        idx: usize,
        /// the new text
        text: String,
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
) -> Vec<Arc<dyn Provider>> {
    models
        .iter()
        .map(|m| {
            Arc::new(HttpProvider::new(
                cfg.get(m.provider).clone(),
                http.0.clone(),
                policy,
            )) as Arc<dyn Provider>
        })
        .collect()
}

/// Starts one thread per model. Threads stop early once `cancel` is set; their events are then
/// ignored by dropping the receiver.
pub fn spawn(
    args: &AskArgs,
    providers: Vec<Arc<dyn Provider>>,
    cancel: Arc<AtomicBool>,
) -> Receiver<Event> {
    let (tx, rx) = channel();
    for (idx, (spec, p)) in args.models.iter().zip(providers).enumerate() {
        let req = LlmRequest {
            model: spec.model.clone(),
            system: args.system.clone(),
            prompt: args.prompt.clone(),
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            timeout: args.timeout,
            stream: args.stream,
        };
        let ttx: Sender<Event> = tx.clone();
        let cancel = cancel.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("llm-{}", spec.provider.key()))
            .spawn(move || {
                let mut on_delta = |t: &str| {
                    let _ = ttx.send(Event::Delta {
                        idx,
                        text: t.to_string(),
                    });
                };
                let result = p.complete(&req, &cancel, &mut on_delta);
                let _ = ttx.send(Event::Done {
                    idx,
                    result: Box::new(result),
                });
            });
        if let Err(e) = spawned {
            let _ = tx.send(Event::Done {
                idx,
                result: Box::new(Err(ProviderError::Api {
                    provider: spec.provider.label(),
                    message: format!("cannot start a thread: {e}"),
                })),
            });
        }
    }
    rx
}
