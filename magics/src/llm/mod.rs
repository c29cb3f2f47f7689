//! `%llm`: providers, the model tables and per-request footprints.

use crate::registry::MagicSpec;

/// The magics this module implements (`%llm`, `%%llm`).
pub fn magic_specs() -> Vec<MagicSpec> {
    Vec::new()
}
