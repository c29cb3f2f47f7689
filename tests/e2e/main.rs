//! End-to-end tests: the real `carbon-kernel` binary over real ZeroMQ sockets (one test binary for
//! the whole project, see ARCHITECTURE.md). Each module owns one area.

mod carbon;
mod harness;
mod java;
mod llm;
mod metrics;
mod protocol;
mod python;
mod report;
mod rust_lang;
