//! End-to-end tests: the real `carbon-kernel` binary over real ZeroMQ sockets (one test binary for
//! the whole project, see ARCHITECTURE.md). Each module owns one area.

// Test code: a failed unwrap in a helper fails the test that called it, which is what it should do
// (clippy's allow-unwrap-in-tests covers only #[test] functions, not the shared helpers).
#![allow(clippy::unwrap_used)]

mod carbon;
mod charts;
mod faults;
mod gpu;
mod harness;
mod iofaults;
mod java;
mod llm;
mod llm_local;
mod metrics;
mod numbers;
mod passthrough;
mod protocol;
mod python;
mod report;
mod rust_lang;
