//! child runtime (in progress)
