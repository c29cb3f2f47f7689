//! java runtime (in progress)
