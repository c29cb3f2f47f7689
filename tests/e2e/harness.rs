//! e2e: harness
