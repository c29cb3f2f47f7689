//! Measuring a cell's energy: sensors, the meter, carbon intensity, emission records and sinks.

use crate::registry::MagicSpec;

/// The magics this module implements (`%%carbon`, `%carbon …`).
pub fn magic_specs() -> Vec<MagicSpec> {
    Vec::new()
}
