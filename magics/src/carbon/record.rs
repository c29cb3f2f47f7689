//! One row of `emissions.csv`: CodeCarbon 3.x's 38 columns in its order (METHODOLOGY.md §2,
//! `EmissionsData` field order of codecarbon/output_methods/emissions_data.py, 3.3.2), then ours.

use super::intensity::Zone;
use super::meter::{Measurement, Parts};
use crate::units::{Joules, KgCo2};

/// CodeCarbon 3.2–3.3's columns, in file order.
pub const CODECARBON_COLUMNS: [&str; 38] = [
    "timestamp",
    "project_name",
    "run_id",
    "experiment_id",
    "duration",
    "emissions",
    "emissions_rate",
    "cpu_power",
    "gpu_power",
    "ram_power",
    "cpu_energy",
    "gpu_energy",
    "ram_energy",
    "energy_consumed",
    "water_consumed",
    "country_name",
    "country_iso_code",
    "region",
    "cloud_provider",
    "cloud_region",
    "os",
    "python_version",
    "codecarbon_version",
    "cpu_count",
    "cpu_model",
    "gpu_count",
    "gpu_model",
    "longitude",
    "latitude",
    "ram_total_size",
    "tracking_mode",
    "cpu_utilization_percent",
    "gpu_utilization_percent",
    "ram_utilization_percent",
    "ram_used_gb",
    "on_cloud",
    "pue",
    "wue",
];

/// Our columns, after CodeCarbon's. Energies in kWh, emissions in kg, like CodeCarbon's.
pub const EXTRA_COLUMNS: [&str; 21] = [
    "kind",
    "status",
    "language",
    "label",
    "method",
    "cpu_method",
    "ram_method",
    "gpu_method",
    "process_cpu_seconds",
    "compile_energy",
    "run_energy",
    "carbon_intensity",
    "intensity_source",
    "repeat_index",
    "kernel_version",
    "llm_provider",
    "llm_model",
    "prompt_tokens",
    "completion_tokens",
    "emissions_min_kg",
    "emissions_max_kg",
];

/// Every column, in order.
pub fn header() -> Vec<&'static str> {
    CODECARBON_COLUMNS
        .iter()
        .chain(EXTRA_COLUMNS.iter())
        .copied()
        .collect()
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
    /// `process` / `machine`.
    pub tracking_mode: String,
    /// Machine CPU load over the run, %.
    pub cpu_utilization_percent: f64,
    /// PUE applied.
    pub pue: f64,
    /// `cell` or `llm`.
    pub kind: String,
    /// `ok`, `error`, `interrupted`, `timeout`, `runtime-error`.
    pub status: String,
    /// `python`, `java`, `rust`, `command`, or empty.
    pub language: String,
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
            tracking_mode: String::new(),
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

    /// A cell's row from its measurement.
    pub fn from_measurement(
        m: &Measurement,
        project: &str,
        session_id: &str,
        zone: &Zone,
        pue: f64,
    ) -> EmissionRecord {
        let mut r = EmissionRecord::base(project, session_id, zone, pue);
        r.kind = "cell".into();
        r.set_energy(m.duration_s, &m.energy);
        r.tracking_mode = m.scope.name().into();
        r.cpu_utilization_percent = m.machine_load * 100.0;
        r.cpu_count = m.setup.machine.logical_cpus;
        r.cpu_model = m.setup.machine.cpu_model.clone();
        r.ram_total_size = m.setup.machine.mem_total as f64 / (1u64 << 30) as f64;
        r.gpu_count = m.setup.gpu_count;
        r.gpu_model = m.setup.gpu_model.clone();
        r.cpu_method = m.setup.cpu.name.clone();
        r.ram_method = m.setup.ram.name.clone();
        r.gpu_method = m.setup.gpu.name.clone();
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

    /// The row's fields, in [`header`] order.
    pub fn fields(&self) -> Vec<String> {
        let f = |x: f64| format!("{x}");
        let o = |x: Option<f64>| x.map(|v| format!("{v}")).unwrap_or_default();
        let ou = |x: Option<u64>| x.map(|v| v.to_string()).unwrap_or_default();
        let rate = if self.duration > 0.0 {
            self.emissions / self.duration
        } else {
            0.0
        };
        vec![
            self.timestamp.clone(),
            self.project_name.clone(),
            self.run_id.clone(),
            self.experiment_id.clone(),
            f(self.duration),
            f(self.emissions),
            f(rate),
            f(self.cpu_power),
            f(self.gpu_power),
            f(self.ram_power),
            f(self.cpu_energy),
            f(self.gpu_energy),
            f(self.ram_energy),
            f(self.energy_consumed()),
            "0".into(), // water_consumed: WUE 0 (CodeCarbon's default)
            self.country_name.clone(),
            self.country_iso_code.clone(),
            String::new(), // region
            String::new(), // cloud_provider
            String::new(), // cloud_region
            self.os.clone(),
            self.python_version.clone(),
            String::new(), // codecarbon_version: not CodeCarbon (our version is kernel_version)
            self.cpu_count.to_string(),
            self.cpu_model.clone(),
            self.gpu_count.to_string(),
            self.gpu_model.clone(),
            String::new(), // longitude: no geo-IP (offline by design)
            String::new(), // latitude
            f(self.ram_total_size),
            self.tracking_mode.clone(),
            f(self.cpu_utilization_percent),
            String::new(), // gpu_utilization_percent: not measured
            String::new(), // ram_utilization_percent: not measured
            String::new(), // ram_used_gb: not measured
            "N".into(),    // on_cloud
            f(self.pue),
            "0".into(), // wue
            self.kind.clone(),
            self.status.clone(),
            self.language.clone(),
            self.label.clone(),
            self.method.clone(),
            self.cpu_method.clone(),
            self.ram_method.clone(),
            self.gpu_method.clone(),
            o(self.process_cpu_seconds),
            o(self.compile_energy),
            o(self.run_energy),
            f(self.carbon_intensity),
            self.intensity_source.clone(),
            self.repeat_index.map(|i| i.to_string()).unwrap_or_default(),
            env!("CARGO_PKG_VERSION").to_string(),
            self.llm_provider.clone(),
            self.llm_model.clone(),
            ou(self.prompt_tokens),
            ou(self.completion_tokens),
            o(self.emissions_min_kg),
            o(self.emissions_max_kg),
        ]
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
}
