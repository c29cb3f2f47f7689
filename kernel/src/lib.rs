//! # carbon-kernel
//!
//! A Jupyter kernel that runs Python, Java and Rust cells in persistent runtimes and meters each
//! cell's energy and CO₂ (`%%carbon`), or an LLM request's footprint (`%llm`).
//!
//! Layout (see `shared/design/ARCHITECTURE.md`): `protocol` (messages, connection file, no I/O) →
//! `server` (sockets, heartbeat, iopub task, dispatch and every protocol invariant) → `exec` (one
//! cell: magics → meter → runtime → record → report) → `runtime` (language back-ends behind one
//! trait). `install` writes kernelspecs; `report` merges `emissions.csv` files for a class.

pub mod exec;
pub mod install;
pub mod metrics;
pub mod protocol;
pub mod report;
pub mod runtime;
pub mod server;
