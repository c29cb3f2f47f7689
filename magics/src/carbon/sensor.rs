//! Energy sensors behind one trait. A sensor reads cumulative counters (possibly none, for models)
//! and turns two readings plus what happened in between (an [`Interval`]) into the energy of the
//! metered processes. Chosen automatically, best first: RAPL → CPU-time × TDP model (CPU), RAPL
//! `dram` → RAM model (RAM), NVML → none (GPU).

use super::gpu::{self, GpuUse, Gpus};
use super::hardware::TdpSource;
use super::rapl::{self, PowercapZone};
use crate::units::{Joules, Watts};
use std::collections::HashSet;
use std::path::PathBuf;
use thiserror::Error;

/// What the energy is attributed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// The runtime's process tree (default).
    #[default]
    Process,
    /// The whole machine (CodeCarbon's default).
    Machine,
}

impl Scope {
    /// `process` / `machine`.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Process => "process",
            Scope::Machine => "machine",
        }
    }
    /// Parses `process` / `machine`.
    pub fn parse(s: &str) -> Option<Scope> {
        match s.trim().to_ascii_lowercase().as_str() {
            "process" => Some(Scope::Process),
            "machine" => Some(Scope::Machine),
            _ => None,
        }
    }
}

/// Hardware part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// CPU packages.
    Cpu,
    /// Memory.
    Ram,
    /// GPUs.
    Gpu,
}

/// What happened between two readings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Interval {
    /// Wall-clock seconds.
    pub secs: f64,
    /// CPU seconds of the metered tree (user + system, reaped children included).
    pub tree_cpu_secs: f64,
    /// Δ tree CPU ÷ Δ busy CPU of the machine, in [0, 1] (share of measured energy).
    pub busy_share: f64,
    /// Δ busy ÷ Δ total CPU time of the machine, in [0, 1].
    pub machine_load: f64,
    /// Resident memory of the tree ÷ total memory, in [0, 1].
    pub rss_frac: f64,
    /// Logical CPUs.
    pub logical_cpus: f64,
    /// Attribution scope.
    pub scope: Scope,
}

/// Which method a sensor uses (drives the report's "how this was computed").
#[derive(Debug, Clone, PartialEq)]
pub enum SensorKind {
    /// RAPL package counters.
    RaplPackage {
        /// number of packages
        zones: usize,
    },
    /// RAPL dram counters.
    RaplDram {
        /// number of dram zones
        zones: usize,
    },
    /// CPU-time × TDP.
    TdpModel {
        /// W
        tdp_w: f64,
        /// where the TDP comes from
        source: TdpSource,
    },
    /// Machine RAM power model.
    RamModel {
        /// W for the whole machine
        watts: f64,
    },
    /// NVML total-energy counters.
    Nvml {
        /// devices
        devices: usize,
    },
    /// No GPU.
    NoGpu,
}

impl SensorKind {
    /// True for counters, false for models.
    pub fn measured(&self) -> bool {
        matches!(
            self,
            SensorKind::RaplPackage { .. } | SensorKind::RaplDram { .. } | SensorKind::Nvml { .. }
        )
    }
}

/// A sensor failed to read.
#[derive(Debug, Error)]
pub enum SensorError {
    /// Reading a counter failed.
    #[error("{sensor}: {detail}")]
    Read {
        /// sensor name
        sensor: String,
        /// what failed
        detail: String,
    },
}

/// Energy of one component between two readings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SensorEnergy {
    /// Attributed to the scope.
    pub attributed: Joules,
    /// What the counter measured for the whole machine/device (models: same as attributed).
    pub whole: Joules,
    /// How GPU energy went to the metered processes (NVML in process scope).
    pub gpu: Option<GpuUse>,
}

/// One energy source.
pub trait Sensor: Send {
    /// Name shown in reports and the CSV (`RAPL package (powercap)`, …).
    fn name(&self) -> String;
    /// The part it measures.
    fn component(&self) -> Component;
    /// Its method.
    fn kind(&self) -> SensorKind;
    /// Reads the cumulative counters (models read nothing).
    fn read(&mut self) -> Result<Vec<u64>, SensorError>;
    /// Energy between two readings over `iv`.
    fn energy(&self, from: &[u64], to: &[u64], iv: &Interval) -> SensorEnergy;
    /// Energy between two readings for the metered processes, `tree` being every pid seen in
    /// the metered tree so far. The default shares by `iv` alone ([`Sensor::energy`]); a sensor
    /// whose device tells which processes use it (NVML) overrides this and may ask it now.
    fn energy_of_tree(
        &mut self,
        from: &[u64],
        to: &[u64],
        iv: &Interval,
        tree: &HashSet<u32>,
    ) -> SensorEnergy {
        let _ = tree;
        self.energy(from, to, iv)
    }
    /// The devices it reads (model, count), for sensors of discrete devices such as GPUs.
    fn devices(&self) -> Option<(String, usize)> {
        None
    }
}

/// RAPL package (CPU) or dram (RAM) zones, shared by busy CPU time in process scope.
pub struct RaplSensor {
    zones: Vec<PowercapZone>,
    component: Component,
}

impl RaplSensor {
    /// A sensor over these zones.
    pub fn new(zones: Vec<PowercapZone>, component: Component) -> Self {
        Self { zones, component }
    }
}

impl Sensor for RaplSensor {
    fn name(&self) -> String {
        match self.component {
            Component::Ram => "RAPL dram (powercap)".into(),
            _ => format!("RAPL package (powercap, {} package(s))", self.zones.len()),
        }
    }
    fn component(&self) -> Component {
        self.component
    }
    fn kind(&self) -> SensorKind {
        match self.component {
            Component::Ram => SensorKind::RaplDram {
                zones: self.zones.len(),
            },
            _ => SensorKind::RaplPackage {
                zones: self.zones.len(),
            },
        }
    }
    fn read(&mut self) -> Result<Vec<u64>, SensorError> {
        rapl::read_all(&self.zones).map_err(|e| SensorError::Read {
            sensor: self.name(),
            detail: e.to_string(),
        })
    }
    fn energy(&self, from: &[u64], to: &[u64], iv: &Interval) -> SensorEnergy {
        let whole = Joules::from_uj(rapl::sum_delta(&self.zones, from, to));
        let attributed = match iv.scope {
            Scope::Machine => whole,
            // Share of busy time (PowerJoular/JoularJX style): all measured power goes to busy
            // processes, so idle/static power is charged to whoever keeps the CPU busy.
            Scope::Process => whole * iv.busy_share,
        };
        SensorEnergy {
            attributed,
            whole,
            gpu: None,
        }
    }
}

/// CPU-time × TDP model (CodeCarbon's `cpu_load` method).
pub struct TdpModel {
    /// CPU(s) TDP, W.
    pub tdp: Watts,
    /// Where it comes from.
    pub source: TdpSource,
}

impl Sensor for TdpModel {
    fn name(&self) -> String {
        format!("CPU-time × TDP model ({:.0} W)", self.tdp.0)
    }
    fn component(&self) -> Component {
        Component::Cpu
    }
    fn kind(&self) -> SensorKind {
        SensorKind::TdpModel {
            tdp_w: self.tdp.0,
            source: self.source.clone(),
        }
    }
    fn read(&mut self) -> Result<Vec<u64>, SensorError> {
        Ok(Vec::new())
    }
    fn energy(&self, _: &[u64], _: &[u64], iv: &Interval) -> SensorEnergy {
        let e = match iv.scope {
            // E = TDP × CPU seconds ÷ logical CPUs (CodeCarbon process mode).
            Scope::Process => Joules(self.tdp.0 * iv.tree_cpu_secs / iv.logical_cpus.max(1.0)),
            // P = TDP × (0.1 + 0.9 · load³), CodeCarbon ≥ 3.0.3 cpu_load curve.
            Scope::Machine => {
                let u = iv.machine_load.clamp(0.0, 1.0);
                Watts(self.tdp.0 * (0.1 + 0.9 * u * u * u)).for_secs(iv.secs)
            }
        };
        SensorEnergy {
            attributed: e,
            whole: e,
            gpu: None,
        }
    }
}

/// RAM model: the machine's DIMM power, shared by resident memory in process scope.
pub struct RamModel {
    /// Whole-machine RAM power.
    pub watts: Watts,
}

impl Sensor for RamModel {
    fn name(&self) -> String {
        format!("RAM model ({:.0} W for the machine)", self.watts.0)
    }
    fn component(&self) -> Component {
        Component::Ram
    }
    fn kind(&self) -> SensorKind {
        SensorKind::RamModel {
            watts: self.watts.0,
        }
    }
    fn read(&mut self) -> Result<Vec<u64>, SensorError> {
        Ok(Vec::new())
    }
    fn energy(&self, _: &[u64], _: &[u64], iv: &Interval) -> SensorEnergy {
        let whole = self.watts.for_secs(iv.secs);
        let attributed = match iv.scope {
            Scope::Machine => whole,
            Scope::Process => whole * iv.rss_frac,
        };
        SensorEnergy {
            attributed,
            whole,
            gpu: None,
        }
    }
}

/// NVML total-energy counters: whole devices in machine scope; in process scope each device's
/// delta goes to the metered tree by what NVML tells about the processes on it
/// ([`gpu::attribute`]). A reading is the devices' counters (mJ) followed by the CPU timestamp
/// of the reading (µs since the epoch, NVML's clock for its utilisation samples).
pub struct NvmlSensor {
    gpus: Gpus,
    /// `/proc` root: whether NVML's pids belong to this PID namespace.
    proc_root: PathBuf,
}

impl NvmlSensor {
    /// A sensor over the discovered GPUs; `proc_root` is the meter's `/proc`.
    pub fn new(gpus: Gpus, proc_root: impl Into<PathBuf>) -> Self {
        Self {
            gpus,
            proc_root: proc_root.into(),
        }
    }
    /// `N x MODEL`.
    pub fn model(&self) -> &str {
        &self.gpus.model
    }
    /// Number of devices.
    pub fn count(&self) -> usize {
        self.gpus.devices.len()
    }
    /// Each device's delta (the readings' last entry is their timestamp).
    fn deltas<'a>(&self, from: &'a [u64], to: &'a [u64]) -> impl Iterator<Item = Joules> + 'a {
        from.iter()
            .zip(to)
            .take(self.count())
            .map(|(a, b)| Joules::from_mj(b.saturating_sub(*a)))
    }
}

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Sensor for NvmlSensor {
    fn devices(&self) -> Option<(String, usize)> {
        Some((self.model().to_string(), self.count()))
    }

    fn name(&self) -> String {
        format!("NVML total energy ({})", self.gpus.model)
    }
    fn component(&self) -> Component {
        Component::Gpu
    }
    fn kind(&self) -> SensorKind {
        SensorKind::Nvml {
            devices: self.gpus.devices.len(),
        }
    }
    fn read(&mut self) -> Result<Vec<u64>, SensorError> {
        let mut v = self.gpus.read().map_err(|detail| SensorError::Read {
            sensor: "NVML".into(),
            detail,
        })?;
        v.push(now_us());
        Ok(v)
    }
    fn energy(&self, from: &[u64], to: &[u64], _: &Interval) -> SensorEnergy {
        let e = self.deltas(from, to).fold(Joules(0.0), |acc, d| acc + d);
        SensorEnergy {
            attributed: e,
            whole: e,
            gpu: None,
        }
    }
    fn energy_of_tree(
        &mut self,
        from: &[u64],
        to: &[u64],
        iv: &Interval,
        tree: &HashSet<u32>,
    ) -> SensorEnergy {
        if iv.scope == Scope::Machine {
            return self.energy(from, to, iv);
        }
        // NVML's samples newer than the earlier reading
        let since = from.get(self.count()).copied().unwrap_or(0);
        let root = self.proc_root.clone();
        let visible = move |pid: u32| root.join(pid.to_string()).exists();
        let mut out = SensorEnergy {
            gpu: Some(GpuUse::default()),
            ..Default::default()
        };
        let deltas: Vec<Joules> = self.deltas(from, to).collect();
        for (pos, whole) in deltas.into_iter().enumerate() {
            let share = gpu::attribute(tree, &self.gpus.device_use(pos, since), &visible);
            out.attributed += share.of(whole);
            out.whole += whole;
            if let Some(g) = out.gpu.as_mut() {
                g.add(&share, whole);
            }
        }
        out
    }
}
