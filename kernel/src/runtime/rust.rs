//! Rust runtime (in progress).

use super::{ExecOutcome, InterruptHandle, Language, LanguageInfo, Publish, Runtime, RuntimeError};
use carbon_magics::config::Settings;
use std::sync::Arc;

/// The Rust back-end.
pub struct RustRuntime {}

impl RustRuntime {
    /// A runtime that starts lazily.
    pub fn new(_settings: &Settings) -> Self {
        Self {}
    }
}

impl Runtime for RustRuntime {
    fn language(&self) -> Language {
        Language::Rust
    }
    fn info(&self) -> LanguageInfo {
        LanguageInfo {
            name: "rust".into(),
            version: String::new(),
            mimetype: String::new(),
            file_extension: String::new(),
            pygments_lexer: String::new(),
            codemirror_mode: String::new(),
            nbconvert_exporter: String::new(),
        }
    }
    fn start(&mut self) -> Result<(), RuntimeError> {
        Err(RuntimeError::Unavailable {
            language: "rust",
            reason: "not implemented yet".into(),
        })
    }
    fn execute(
        &mut self,
        _code: &str,
        _out: &mut dyn Publish,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.start().map(|_| ExecOutcome::default())
    }
    fn interrupt_handle(&self) -> InterruptHandle {
        Arc::new(|| {})
    }
    fn shutdown(&mut self) {}
    fn pids(&self) -> Vec<u32> {
        Vec::new()
    }
}
