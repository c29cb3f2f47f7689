//! `%%carbon` / `%carbon …` wiring: meter a runtime's process tree around a cell, record the row,
//! show the live display and the report. (In progress: issue 3.)

use super::{Executor, usage_error};
use crate::runtime::{ExecOutcome, Language, Publish};
use carbon_magics::config::Settings;
use carbon_magics::parse::MagicCall;
use std::path::Path;

/// Session state of the carbon magics.
pub struct CarbonState {
    auto: bool,
}

impl CarbonState {
    /// Loads configuration (`CARBON_*` keys).
    pub fn new(_settings: &Settings, _workdir: &Path) -> Self {
        Self { auto: false }
    }

    /// `%carbon on` is active: every cell is metered.
    pub fn auto_meter(&self) -> bool {
        self.auto
    }
}

/// `%carbon …` line magic.
pub fn line_magic(_ex: &mut Executor, call: &MagicCall, _out: &mut dyn Publish) -> ExecOutcome {
    usage_error(format!(
        "UsageError: %carbon {}: not available yet",
        call.args
    ))
}

/// `%%carbon …` cell magic.
pub fn cell_magic(
    _ex: &mut Executor,
    call: &MagicCall,
    _body: &str,
    _out: &mut dyn Publish,
) -> ExecOutcome {
    usage_error(format!(
        "UsageError: %%carbon {}: not available yet",
        call.args
    ))
}

/// A plain cell while `%carbon on` is active.
pub fn run_auto_metered(
    ex: &mut Executor,
    lang: Language,
    body: &str,
    out: &mut dyn Publish,
) -> ExecOutcome {
    ex.run_plain(lang, body, out)
}
