//! # carbon-magics
//!
//! Everything in carbon-kernel that is not Jupyter: parsing magics, measuring a cell's energy,
//! estimating an LLM request's footprint, recording `emissions.csv` rows and drawing charts.
//!
//! The API is blocking and free of tokio, ZeroMQ and Jupyter types; the kernel calls it from
//! its executor thread. Inside, `%llm`'s HTTP requests run on a tokio runtime thread of the
//! crate's own (`llm::client`), as they did inside reqwest's blocking client before. Method and
//! constants: `shared/design/METHODOLOGY.md`, each constant in code carries its source.

pub mod builtin;
pub mod carbon;
pub mod complete;
pub mod config;
pub mod error;
pub mod lang;
pub mod llm;
pub mod mime;
pub mod parse;
pub mod redact;
pub mod registry;
pub mod report;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod units;

pub use error::UsageError;
pub use lang::Language;
pub use mime::MimeBundle;
