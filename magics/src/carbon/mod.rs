//! Measuring a cell's energy: sensors, the meter, carbon intensity, emission records and sinks.
//!
//! * [`sensor`]: `trait Sensor` and the sensors (RAPL via [`rapl`], CPU-time × TDP and RAM models
//!   from [`hardware`], NVML via [`gpu`]), chosen best-first by the [`meter::Meter`];
//! * [`procfs`]: per-process attribution from an injectable `/proc` root;
//! * [`intensity`]: gCO₂eq/kWh per country; [`record`]: `emissions.csv` rows; [`sink`]: where they go;
//! * [`magic`]: the magics' commands and the `CARBON_*` settings;
//! * [`session`]: [`CarbonSession`], a kernel session's `%carbon` state and texts, and the
//!   kernel's one [`EmissionsSink`].
//!
//! Method and constants: `shared/design/METHODOLOGY.md` §1–2; each constant carries its source.

pub mod gpu;
pub mod hardware;
pub mod intensity;
pub mod magic;
pub mod meter;
pub mod procfs;
pub mod rapl;
pub mod record;
pub mod sensor;
pub mod session;
pub mod sink;

pub use magic::{CarbonConfig, CellArgs, LineCommand, magic_spec};
pub use meter::{LiveSample, Measurement, Meter, MeterConfig, MeterPhase, Parts};
pub use record::{Column, EmissionRecord, RowKind, RowLanguage, RowStatus};
pub use sensor::{Scope, Sensor};
pub use session::{CarbonSession, EmissionsSink};
pub use sink::{CsvSink, MemorySink, Sink, SinkError, Written};
