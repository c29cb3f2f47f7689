//! `%llm` / `%%llm` wiring: send prompts through `carbon_magics::llm` providers, stream answers,
//! show the comparison and record rows. (In progress: issue 5.)

use super::{Executor, usage_error};
use crate::runtime::{ExecOutcome, Publish};
use carbon_magics::config::Settings;
use carbon_magics::parse::MagicCall;
use std::path::Path;

/// Session state of the LLM magics.
pub struct LlmState {}

impl LlmState {
    /// Loads provider configuration.
    pub fn new(_settings: &Settings, _workdir: &Path) -> Self {
        Self {}
    }
}

/// `%llm …` line magic.
pub fn line_magic(_ex: &mut Executor, call: &MagicCall, _out: &mut dyn Publish) -> ExecOutcome {
    usage_error(format!("UsageError: %llm {}: not available yet", call.args))
}

/// `%%llm …` cell magic.
pub fn cell_magic(
    _ex: &mut Executor,
    call: &MagicCall,
    _body: &str,
    _out: &mut dyn Publish,
) -> ExecOutcome {
    usage_error(format!(
        "UsageError: %%llm {}: not available yet",
        call.args
    ))
}
