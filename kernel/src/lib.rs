//! # carbon-kernel
//!
//! A Jupyter kernel that runs Python, Java and Rust cells in persistent runtimes and meters each
//! cell's energy and CO₂ (`%%carbon`), or an LLM request's footprint (`%llm`).
//!
//! Layout (see `shared/design/ARCHITECTURE.md`): `protocol` (messages, connection file, no I/O) →
//! `server` (sockets, heartbeat, iopub task, dispatch and every protocol invariant) → `exec` (one
//! cell: magics → meter → runtime → record → report) → `runtime` (language back-ends behind one
//! trait, and the `RuntimeFactory` that builds them). `cli` holds the binary's other subcommands:
//! `install` writes kernelspecs, `report` merges `emissions.csv` files for a class, `magics`
//! prints the magics reference.

pub mod cli;
pub mod exec;
pub mod metrics;
pub mod protocol;
pub mod runtime;
pub mod server;
