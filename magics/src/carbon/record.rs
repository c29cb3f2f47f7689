//! One row of `emissions.csv`: CodeCarbon 3.x's 38 columns in its order (METHODOLOGY.md §2,
//! `EmissionsData` field order of codecarbon/output_methods/emissions_data.py, 3.3.2), then ours.
//!
//! The columns are declared once ([`Column`]): the header, each field's value and the class
//! report's reader all come from that one table.

use super::intensity::Zone;
use super::meter::{Measurement, Parts};
use super::sensor::Scope;
use crate::lang::Language;
use crate::units::{Joules, KgCo2};

/// Declares a column-valued enum written with exactly the given words; a word this version does
/// not know (read from another tool's or a newer version's file) is kept as written in `Other`.
macro_rules! word_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $var:ident = $word:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vmeta])* $var,)*
            /// A word this version does not know, kept as written.
            Other(String),
        }

        impl $name {
            /// The word written in `emissions.csv`.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$var => $word,)*
                    $name::Other(w) => w,
                }
            }
        }

        impl From<&str> for $name {
            /// Reads a word (ASCII case and surrounding spaces ignored).
            fn from(s: &str) -> Self {
                let s = s.trim();
                $(if s.eq_ignore_ascii_case($word) {
                    return $name::$var;
                })*
                $name::Other(s.to_string())
            }
        }

        impl std::str::FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok($name::from(s))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

word_enum! {
    /// What produced a row (`kind` column).
    RowKind {
        /// A metered cell, file or command (`cell`).
        #[default]
        Cell = "cell",
        /// An LLM request (`llm`).
        Llm = "llm",
        /// The start of a language runtime (the JVM and JShell, evcxr's context) that a metered
        /// cell triggered (`startup`); its `language` is the runtime's.
        Startup = "startup",
    }
}

word_enum! {
    /// How a metered run or a request ended (`status` column).
    RowStatus {
        /// It finished normally (`ok`).
        #[default]
        Ok = "ok",
        /// The code raised an error or the request failed (`error`).
        Error = "error",
        /// The user interrupted it (`interrupted`).
        Interrupted = "interrupted",
        /// `--timeout` ended it (`timeout`).
        Timeout = "timeout",
        /// The runtime itself failed (crashed, could not start) (`runtime-error`).
        RuntimeError = "runtime-error",
        /// An LLM answer cut at `LLM_MAX_ANSWER_BYTES` (`truncated`): its figures cover the
        /// part received.
        Truncated = "truncated",
    }
}

/// What ran (`language` column): a language of the table ([`crate::lang::LANGUAGES`]), a
/// `%carbon exec` command, nothing (LLM rows), or a word this version does not know, kept as
/// written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowLanguage {
    /// Empty: the row is not about code (an LLM request).
    #[default]
    None,
    /// A cell or file of one of the kernel's languages.
    Code(Language),
    /// A `%carbon exec` command (`command`).
    Command,
    /// A word this version does not know.
    Other(String),
}

impl RowLanguage {
    /// The word written in `emissions.csv`.
    pub fn as_str(&self) -> &str {
        match self {
            RowLanguage::None => "",
            RowLanguage::Code(l) => l.name(),
            RowLanguage::Command => "command",
            RowLanguage::Other(w) => w,
        }
    }
}

impl From<Language> for RowLanguage {
    fn from(l: Language) -> Self {
        RowLanguage::Code(l)
    }
}

impl From<&str> for RowLanguage {
    /// Reads a word: a language name or alias of the table, `command`, empty, or kept as written.
    fn from(s: &str) -> Self {
        let s = s.trim();
        if s.is_empty() {
            RowLanguage::None
        } else if s.eq_ignore_ascii_case("command") {
            RowLanguage::Command
        } else {
            Language::parse(s).map_or_else(|| RowLanguage::Other(s.to_string()), RowLanguage::Code)
        }
    }
}

impl std::fmt::Display for RowLanguage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RowLanguage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `x` as Rust writes an `f64`: shortest round-trip digits, never an exponent (what the file has
/// always held; readers parse it back exactly).
fn num(x: f64) -> String {
    format!("{x}")
}

fn opt_num(x: Option<f64>) -> String {
    x.map(num).unwrap_or_default()
}

fn opt_int(x: Option<impl ToString>) -> String {
    x.map(|v| v.to_string()).unwrap_or_default()
}

/// Declares the columns once: each one's header word and how its field is written.
macro_rules! columns {
    ($($(#[$doc:meta])* $id:ident = $name:literal => $value:expr;)*) => {
        /// One column of `emissions.csv`, in file order ([`Column::ALL`]).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Column {
            $($(#[$doc])* $id,)*
        }

        impl Column {
            /// Every column, in file order: CodeCarbon's ([`CODECARBON_COLUMN_COUNT`]), then ours.
            pub const ALL: &'static [Column] = &[$(Column::$id,)*];

            /// The header word.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Column::$id => $name,)*
                }
            }

            /// The field of `r` in this column, as written to the file.
            pub fn value(self, r: &EmissionRecord) -> String {
                match self {
                    $(Column::$id => {
                        let f: fn(&EmissionRecord) -> String = $value;
                        f(r)
                    })*
                }
            }
        }
    };
}

columns! {
    /// End of the run (local time, no zone).
    Timestamp = "timestamp" => |r| r.timestamp.clone();
    /// `CARBON_PROJECT`.
    ProjectName = "project_name" => |r| r.project_name.clone();
    /// UUID of the row.
    RunId = "run_id" => |r| r.run_id.clone();
    /// UUID of the kernel session.
    ExperimentId = "experiment_id" => |r| r.experiment_id.clone();
    /// Seconds.
    Duration = "duration" => |r| num(r.duration);
    /// kgCO₂eq.
    Emissions = "emissions" => |r| num(r.emissions);
    /// kgCO₂eq per second.
    EmissionsRate = "emissions_rate" => |r| num(r.emissions_rate());
    /// W.
    CpuPower = "cpu_power" => |r| num(r.cpu_power);
    /// W.
    GpuPower = "gpu_power" => |r| num(r.gpu_power);
    /// W.
    RamPower = "ram_power" => |r| num(r.ram_power);
    /// kWh.
    CpuEnergy = "cpu_energy" => |r| num(r.cpu_energy);
    /// kWh.
    GpuEnergy = "gpu_energy" => |r| num(r.gpu_energy);
    /// kWh.
    RamEnergy = "ram_energy" => |r| num(r.ram_energy);
    /// kWh, CPU + GPU + RAM.
    EnergyConsumed = "energy_consumed" => |r| num(r.energy_consumed());
    /// Litres: WUE 0 (CodeCarbon's default).
    WaterConsumed = "water_consumed" => |_| "0".into();
    /// Country name or "World average".
    CountryName = "country_name" => |r| r.country_name.clone();
    /// ISO3, empty for the world average.
    CountryIsoCode = "country_iso_code" => |r| r.country_iso_code.clone();
    /// Not recorded (no geo-IP: offline by design).
    Region = "region" => |_| String::new();
    /// Not recorded.
    CloudProvider = "cloud_provider" => |_| String::new();
    /// Not recorded.
    CloudRegion = "cloud_region" => |_| String::new();
    /// OS description.
    Os = "os" => |r| r.os.clone();
    /// Python version of the runtime when known.
    PythonVersion = "python_version" => |r| r.python_version.clone();
    /// Empty: not CodeCarbon (our version is `kernel_version`).
    CodecarbonVersion = "codecarbon_version" => |_| String::new();
    /// Logical CPUs.
    CpuCount = "cpu_count" => |r| r.cpu_count.to_string();
    /// CPU brand.
    CpuModel = "cpu_model" => |r| r.cpu_model.clone();
    /// GPUs metered.
    GpuCount = "gpu_count" => |r| r.gpu_count.to_string();
    /// `N x MODEL`.
    GpuModel = "gpu_model" => |r| r.gpu_model.clone();
    /// Not recorded (no geo-IP).
    Longitude = "longitude" => |_| String::new();
    /// Not recorded (no geo-IP).
    Latitude = "latitude" => |_| String::new();
    /// GiB.
    RamTotalSize = "ram_total_size" => |r| num(r.ram_total_size);
    /// `process` or `machine`; empty for LLM rows.
    TrackingMode = "tracking_mode" => |r| {
        r.tracking_mode.map(|s| s.name().to_string()).unwrap_or_default()
    };
    /// Machine CPU load, %.
    CpuUtilizationPercent = "cpu_utilization_percent" => |r| num(r.cpu_utilization_percent);
    /// Not measured.
    GpuUtilizationPercent = "gpu_utilization_percent" => |_| String::new();
    /// Not measured.
    RamUtilizationPercent = "ram_utilization_percent" => |_| String::new();
    /// Not measured.
    RamUsedGb = "ram_used_gb" => |_| String::new();
    /// Always `N`.
    OnCloud = "on_cloud" => |_| "N".into();
    /// PUE applied.
    Pue = "pue" => |r| num(r.pue);
    /// Water usage effectiveness: 0 (CodeCarbon's default).
    Wue = "wue" => |_| "0".into();
    /// [`RowKind`].
    Kind = "kind" => |r| r.kind.to_string();
    /// [`RowStatus`].
    Status = "status" => |r| r.status.to_string();
    /// `python`, `java`, `rust`, `command`, or empty.
    Language = "language" => |r| r.language.to_string();
    /// `--label` or file/command.
    Label = "label" => |r| r.label.clone();
    /// One-line method summary.
    Method = "method" => |r| r.method.clone();
    /// CPU sensor.
    CpuMethod = "cpu_method" => |r| r.cpu_method.clone();
    /// RAM sensor.
    RamMethod = "ram_method" => |r| r.ram_method.clone();
    /// GPU sensor.
    GpuMethod = "gpu_method" => |r| r.gpu_method.clone();
    /// CPU seconds of the process tree.
    ProcessCpuSeconds = "process_cpu_seconds" => |r| opt_num(r.process_cpu_seconds);
    /// kWh spent compiling.
    CompileEnergy = "compile_energy" => |r| opt_num(r.compile_energy);
    /// kWh spent running.
    RunEnergy = "run_energy" => |r| opt_num(r.run_energy);
    /// gCO₂eq/kWh applied.
    CarbonIntensity = "carbon_intensity" => |r| num(r.carbon_intensity);
    /// Source of the intensity.
    IntensitySource = "intensity_source" => |r| r.intensity_source.clone();
    /// 1-based run number of `--repeat`.
    RepeatIndex = "repeat_index" => |r| opt_int(r.repeat_index);
    /// carbon-kernel's version.
    KernelVersion = "kernel_version" => |_| env!("CARGO_PKG_VERSION").to_string();
    /// LLM provider.
    LlmProvider = "llm_provider" => |r| r.llm_provider.clone();
    /// LLM model.
    LlmModel = "llm_model" => |r| r.llm_model.clone();
    /// Prompt tokens.
    PromptTokens = "prompt_tokens" => |r| opt_int(r.prompt_tokens);
    /// Completion tokens.
    CompletionTokens = "completion_tokens" => |r| opt_int(r.completion_tokens);
    /// Low estimate, kg.
    EmissionsMinKg = "emissions_min_kg" => |r| opt_num(r.emissions_min_kg);
    /// High estimate, kg.
    EmissionsMaxKg = "emissions_max_kg" => |r| opt_num(r.emissions_max_kg);
}

/// CodeCarbon 3.2–3.3's columns come first, this many.
pub const CODECARBON_COLUMN_COUNT: usize = 38;

const fn names<const N: usize>(start: usize) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < N {
        out[i] = Column::ALL[start + i].name();
        i += 1;
    }
    out
}

/// CodeCarbon 3.2–3.3's columns, in file order (the first [`CODECARBON_COLUMN_COUNT`] of
/// [`Column::ALL`]).
pub const CODECARBON_COLUMNS: [&str; CODECARBON_COLUMN_COUNT] = names(0);

/// Our columns, after CodeCarbon's. Energies in kWh, emissions in kg, like CodeCarbon's.
pub const EXTRA_COLUMNS: [&str; 21] = names(CODECARBON_COLUMN_COUNT);

/// Every column, in order.
pub fn header() -> Vec<&'static str> {
    Column::ALL.iter().map(|c| c.name()).collect()
}

/// One row. Build it with [`EmissionRecord::base`] (machine and time filled) then set fields,
/// or [`EmissionRecord::from_measurement`] for a metered cell.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EmissionRecord {
    /// End of the run, local time `%Y-%m-%dT%H:%M:%S` (CodeCarbon's format, no zone).
    pub timestamp: String,
    /// `CARBON_PROJECT`, default the notebook folder's name.
    pub project_name: String,
    /// UUID4 of this row.
    pub run_id: String,
    /// UUID of the kernel session.
    pub experiment_id: String,
    /// s
    pub duration: f64,
    /// kgCO₂eq (PUE included)
    pub emissions: f64,
    /// W (energy ÷ duration, PUE included)
    pub cpu_power: f64,
    /// W
    pub gpu_power: f64,
    /// W
    pub ram_power: f64,
    /// kWh (PUE included)
    pub cpu_energy: f64,
    /// kWh
    pub gpu_energy: f64,
    /// kWh
    pub ram_energy: f64,
    /// Country name (or "World average").
    pub country_name: String,
    /// ISO3 (empty for the world average).
    pub country_iso_code: String,
    /// OS description.
    pub os: String,
    /// Python version of the runtime when known.
    pub python_version: String,
    /// Logical CPUs.
    pub cpu_count: usize,
    /// CPU brand.
    pub cpu_model: String,
    /// GPUs metered.
    pub gpu_count: usize,
    /// `N x MODEL`.
    pub gpu_model: String,
    /// GiB (CodeCarbon's unit under its "GB" label).
    pub ram_total_size: f64,
    /// `process` / `machine` (None: not a metered run, e.g. an LLM request).
    pub tracking_mode: Option<Scope>,
    /// Machine CPU load over the run, %.
    pub cpu_utilization_percent: f64,
    /// PUE applied.
    pub pue: f64,
    /// `cell` or `llm`.
    pub kind: RowKind,
    /// `ok`, `error`, `interrupted`, `timeout`, `runtime-error`.
    pub status: RowStatus,
    /// `python`, `java`, `rust`, `command`, or empty.
    pub language: RowLanguage,
    /// `--label` or file/command.
    pub label: String,
    /// One-line method summary.
    pub method: String,
    /// CPU sensor.
    pub cpu_method: String,
    /// RAM sensor.
    pub ram_method: String,
    /// GPU sensor.
    pub gpu_method: String,
    /// CPU seconds of the process tree.
    pub process_cpu_seconds: Option<f64>,
    /// kWh spent compiling (PUE included), when the runtime marked phases.
    pub compile_energy: Option<f64>,
    /// kWh spent running.
    pub run_energy: Option<f64>,
    /// gCO₂eq/kWh applied.
    pub carbon_intensity: f64,
    /// Source of the intensity.
    pub intensity_source: String,
    /// 1-based run number of `--repeat`.
    pub repeat_index: Option<u32>,
    /// LLM provider (kind = llm).
    pub llm_provider: String,
    /// LLM model.
    pub llm_model: String,
    /// Prompt tokens.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens.
    pub completion_tokens: Option<u64>,
    /// Low estimate, kg.
    pub emissions_min_kg: Option<f64>,
    /// High estimate, kg.
    pub emissions_max_kg: Option<f64>,
}

fn os_string() -> String {
    let info = sysinfo::System::long_os_version().unwrap_or_default();
    let kernel = sysinfo::System::kernel_version().unwrap_or_default();
    format!(
        "{}-{}-{}",
        std::env::consts::OS,
        kernel,
        std::env::consts::ARCH
    ) + &if info.is_empty() {
        String::new()
    } else {
        format!(" ({info})")
    }
}

impl EmissionRecord {
    /// A row with time, ids, machine and zone filled; energies zero.
    pub fn base(project: &str, session_id: &str, zone: &Zone, pue: f64) -> EmissionRecord {
        let m = super::hardware::machine();
        static OS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        EmissionRecord {
            timestamp: chrono::Local::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
            project_name: project.to_string(),
            run_id: uuid::Uuid::new_v4().to_string(),
            experiment_id: session_id.to_string(),
            country_name: zone.name.clone(),
            country_iso_code: zone.iso3.clone(),
            os: OS.get_or_init(os_string).clone(),
            cpu_count: m.logical_cpus,
            cpu_model: m.cpu_model.clone(),
            ram_total_size: m.mem_total as f64 / (1u64 << 30) as f64,
            tracking_mode: None,
            pue,
            carbon_intensity: zone.g_per_kwh,
            intensity_source: zone.source.clone(),
            ..Default::default()
        }
    }

    /// Sets energies (no PUE yet: it is applied here), powers and emissions from a duration and
    /// energy parts, as CodeCarbon does (energies and powers × PUE).
    pub fn set_energy(&mut self, duration_s: f64, parts: &Parts) {
        let p = parts.scaled(self.pue);
        self.duration = duration_s;
        self.cpu_energy = p.cpu.kwh();
        self.ram_energy = p.ram.kwh();
        self.gpu_energy = p.gpu.kwh();
        self.cpu_power = p.cpu.over(duration_s).0;
        self.ram_power = p.ram.over(duration_s).0;
        self.gpu_power = p.gpu.over(duration_s).0;
        self.emissions = KgCo2::of(p.total(), self.carbon_intensity).0;
    }

    /// The energy and machine columns of a metering `m` over `duration_s` seconds (a cell's run,
    /// or a local LLM server metered for a request).
    pub fn set_measurement(&mut self, duration_s: f64, m: &Measurement) {
        self.set_energy(duration_s, &m.energy);
        self.tracking_mode = Some(m.scope);
        self.cpu_utilization_percent = m.machine_load * 100.0;
        self.cpu_count = m.setup.machine.logical_cpus;
        self.cpu_model = m.setup.machine.cpu_model.clone();
        self.ram_total_size = m.setup.machine.mem_total as f64 / (1u64 << 30) as f64;
        self.gpu_count = m.setup.gpu_count;
        self.gpu_model = m.setup.gpu_model.clone();
        self.cpu_method = m.setup.cpu.name.clone();
        self.ram_method = m.setup.ram.name.clone();
        self.gpu_method = m.gpu_method();
    }
    /// A cell's row from its measurement.
    pub fn from_measurement(
        m: &Measurement,
        project: &str,
        session_id: &str,
        zone: &Zone,
        pue: f64,
    ) -> EmissionRecord {
        let mut r = EmissionRecord::base(project, session_id, zone, pue);
        r.kind = RowKind::Cell;
        r.set_measurement(m.duration_s, m);
        let measured = m.setup.cpu.kind.measured();
        r.method = format!(
            "{} ({} scope)",
            if measured { "measured" } else { "estimated" },
            m.scope.name()
        );
        r.process_cpu_seconds = Some(m.cpu_seconds);
        if let Some(c) = &m.compile {
            r.compile_energy = Some((c.total() * pue).kwh());
            r.run_energy = Some((m.run.total() * pue).kwh());
        }
        r
    }

    /// Total energy (PUE included), kWh.
    pub fn energy_consumed(&self) -> f64 {
        self.cpu_energy + self.ram_energy + self.gpu_energy
    }

    /// Total energy, joules.
    pub fn energy_joules(&self) -> Joules {
        Joules(self.energy_consumed() * crate::units::J_PER_KWH)
    }

    /// kgCO₂eq per second (0 for an empty run).
    pub fn emissions_rate(&self) -> f64 {
        if self.duration > 0.0 {
            self.emissions / self.duration
        } else {
            0.0
        }
    }

    /// The row's fields, in [`header`] order.
    pub fn fields(&self) -> Vec<String> {
        Column::ALL.iter().map(|c| c.value(self)).collect()
    }
}

/// One CSV line (with `\n`), quoted where needed.
pub fn csv_line(fields: &[impl AsRef<str>]) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(fields.iter().map(|s| s.as_ref()));
    let bytes = w.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_fields_line_up() {
        assert_eq!(header().len(), 59);
        assert_eq!(Column::ALL[CODECARBON_COLUMN_COUNT - 1], Column::Wue);
        assert_eq!(Column::ALL[CODECARBON_COLUMN_COUNT], Column::Kind);
        assert_eq!(
            EXTRA_COLUMNS.len() + CODECARBON_COLUMN_COUNT,
            Column::ALL.len()
        );
        let unique: std::collections::BTreeSet<_> = header().into_iter().collect();
        assert_eq!(unique.len(), 59, "a column name is declared twice");
        let z = super::super::intensity::zone(Some("FRA")).unwrap();
        let mut r = EmissionRecord::base("p", "s", &z, 1.5);
        r.set_energy(
            2.0,
            &Parts {
                cpu: Joules(3600.0),
                ram: Joules(0.0),
                gpu: Joules(0.0),
            },
        );
        assert_eq!(r.fields().len(), header().len());
        // 1 Wh × 1.5 PUE = 1.5e-3 kWh; × 56.039 g/kWh = 8.40585e-5 kg
        assert!((r.cpu_energy - 1.5e-3).abs() < 1e-15);
        assert!((r.emissions - 1.5e-3 * 56.039 / 1000.0).abs() < 1e-15);
        assert_eq!(r.cpu_power, 2700.0);
        let line = csv_line(&["a,b", "c\"d", "e"]);
        assert_eq!(line, "\"a,b\",\"c\"\"d\",e\n");
    }

    #[test]
    fn words_read_back_and_unknown_words_are_kept() {
        for k in [RowKind::Cell, RowKind::Llm, RowKind::Startup] {
            assert_eq!(RowKind::from(k.as_str()), k);
        }
        for st in [
            RowStatus::Ok,
            RowStatus::Error,
            RowStatus::Interrupted,
            RowStatus::Timeout,
            RowStatus::RuntimeError,
            RowStatus::Truncated,
        ] {
            assert_eq!(st.to_string().parse::<RowStatus>(), Ok(st));
        }
        assert_eq!(RowKind::from(" LLM "), RowKind::Llm);
        assert_eq!(RowStatus::RuntimeError.as_str(), "runtime-error");
        assert_eq!(RowKind::from("batch"), RowKind::Other("batch".into()));
        assert_eq!(RowKind::Other("batch".into()).to_string(), "batch");
        // languages come from the language table; `command` and empty have their own variants
        for l in Language::ALL {
            assert_eq!(RowLanguage::from(RowLanguage::from(l).as_str()), l.into());
        }
        assert_eq!(RowLanguage::from("Py"), RowLanguage::Code(Language::Python));
        assert_eq!(RowLanguage::from("command"), RowLanguage::Command);
        assert_eq!(RowLanguage::from("  "), RowLanguage::None);
        assert_eq!(RowLanguage::from("cobol").to_string(), "cobol");
    }

    /// One row, every field set, as the file has always held it (the 38 CodeCarbon fields, then
    /// ours): guards the column table against a change of order, format or computed value.
    #[test]
    fn a_row_is_written_as_before() {
        let r = EmissionRecord {
            timestamp: "2026-01-05T10:00:00".into(),
            project_name: "lab".into(),
            run_id: "r".into(),
            experiment_id: "x".into(),
            duration: 2.0,
            emissions: 1e-6,
            cpu_power: 1.5,
            gpu_power: 0.0,
            ram_power: 0.25,
            cpu_energy: 3e-7,
            gpu_energy: 0.0,
            ram_energy: 1e-7,
            country_name: "France".into(),
            country_iso_code: "FRA".into(),
            os: "linux".into(),
            python_version: "3.12".into(),
            cpu_count: 8,
            cpu_model: "cpu, fast".into(),
            gpu_count: 0,
            gpu_model: String::new(),
            ram_total_size: 15.5,
            tracking_mode: Some(Scope::Machine),
            cpu_utilization_percent: 12.5,
            pue: 1.2,
            kind: RowKind::Cell,
            status: RowStatus::RuntimeError,
            language: Language::Rust.into(),
            label: "l".into(),
            method: "m".into(),
            cpu_method: "c".into(),
            ram_method: "r".into(),
            gpu_method: "g".into(),
            process_cpu_seconds: Some(0.5),
            compile_energy: Some(1e-7),
            run_energy: None,
            carbon_intensity: 56.039,
            intensity_source: "s".into(),
            repeat_index: Some(2),
            llm_provider: String::new(),
            llm_model: String::new(),
            prompt_tokens: None,
            completion_tokens: Some(7),
            emissions_min_kg: None,
            emissions_max_kg: Some(2e-6),
        };
        let want = format!(
            "2026-01-05T10:00:00,lab,r,x,2,0.000001,0.0000005,1.5,0,0.25,0.0000003,0,0.0000001,\
             0.0000004,0,France,FRA,,,,linux,3.12,,8,\"cpu, fast\",0,,,,15.5,machine,\
             12.5,,,,N,1.2,0,cell,runtime-error,rust,l,m,c,r,g,0.5,0.0000001,,56.039,s,2,{},,,,7,,\
             0.000002\n",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(csv_line(&r.fields()), want);
    }
}
