//! python runtime (in progress)
