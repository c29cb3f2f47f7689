//! The [`Meter`]: reads every sensor and the process tree at a cell's boundaries (and about once
//! a second for long cells, from the live display), and turns the differences into a
//! [`Measurement`]. Short cells cost two boundary reads and no thread; sensors are chosen and the
//! machine detected once, when the meter is built.

use super::gpu::{GpuUse, Gpus, NvmlChoice};
use super::hardware::{self, Machine};
use super::procfs::{ProcReader, ProcSnapshot, TreeCache};
use super::rapl::Domains;
use super::sensor::{
    Component, Interval, NvmlSensor, RamModel, RaplSensor, Scope, Sensor, SensorKind, TdpModel,
};
use crate::units::{Joules, Watts};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// What the meter reads and how it attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct MeterConfig {
    /// Process tree or machine.
    pub scope: Scope,
    /// CPU TDP override (W).
    pub tdp_w: Option<f64>,
    /// Powercap root (default `/sys/class/powercap`).
    pub powercap_root: PathBuf,
    /// `/proc` root.
    pub proc_root: PathBuf,
    /// NVML library.
    pub nvml: NvmlChoice,
}

impl Default for MeterConfig {
    fn default() -> Self {
        Self {
            scope: Scope::Process,
            tdp_w: None,
            powercap_root: PathBuf::from("/sys/class/powercap"),
            proc_root: PathBuf::from("/proc"),
            nvml: NvmlChoice::System,
        }
    }
}

/// Energy split by component.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Parts {
    /// CPU.
    pub cpu: Joules,
    /// RAM.
    pub ram: Joules,
    /// GPU.
    pub gpu: Joules,
}

impl Parts {
    /// CPU + RAM + GPU.
    pub fn total(&self) -> Joules {
        self.cpu + self.ram + self.gpu
    }
    fn add(&mut self, c: Component, e: Joules) {
        match c {
            Component::Cpu => self.cpu += e,
            Component::Ram => self.ram += e,
            Component::Gpu => self.gpu += e,
        }
    }
    /// Every part × k (PUE).
    pub fn scaled(&self, k: f64) -> Parts {
        Parts {
            cpu: self.cpu * k,
            ram: self.ram * k,
            gpu: self.gpu * k,
        }
    }
}

/// Part of a cell, for compile vs run energy (`Publish::phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeterPhase {
    /// Compiling (javac, rustc, JShell's compiler).
    Compile,
    /// Running user code (and everything before the first mark).
    Run,
}

/// Name and method of the sensor used for one component.
#[derive(Debug, Clone, PartialEq)]
pub struct SensorInfo {
    /// Display name.
    pub name: String,
    /// Method.
    pub kind: SensorKind,
}

/// What the meter found at build time (for `%carbon status` and reports).
#[derive(Debug, Clone, PartialEq)]
pub struct MeterSetup {
    /// CPU sensor.
    pub cpu: SensorInfo,
    /// RAM sensor.
    pub ram: SensorInfo,
    /// GPU sensor.
    pub gpu: SensorInfo,
    /// Why better sensors were not used.
    pub notes: Vec<String>,
    /// The machine.
    pub machine: Machine,
    /// `N x MODEL`, empty without GPU.
    pub gpu_model: String,
    /// GPUs metered.
    pub gpu_count: usize,
    /// Seconds per clock tick of the `/proc` CPU times.
    pub tick_secs: f64,
}

/// A live reading while the cell runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LiveSample {
    /// Seconds since start.
    pub elapsed_s: f64,
    /// Energy so far (no PUE).
    pub energy: Parts,
    /// Mean power since the previous sample.
    pub power: Watts,
}

/// The result of one metered run.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Wall-clock seconds.
    pub duration_s: f64,
    /// Energy attributed to the scope (no PUE).
    pub energy: Parts,
    /// What counters measured for the whole machine/devices (models: = energy).
    pub whole: Parts,
    /// Compile part, when the runtime marked phases.
    pub compile: Option<Parts>,
    /// Run part (everything when no compile phase).
    pub run: Parts,
    /// CPU seconds of the process tree.
    pub cpu_seconds: f64,
    /// Δ tree CPU ÷ Δ machine busy CPU over the run.
    pub busy_share: f64,
    /// Machine load (busy ÷ total CPU time) over the run.
    pub machine_load: f64,
    /// Mean resident memory of the tree ÷ total memory.
    pub rss_frac: f64,
    /// Mean resident memory of the tree, bytes.
    pub rss_bytes: f64,
    /// Scope.
    pub scope: Scope,
    /// Sensors and machine.
    pub setup: MeterSetup,
    /// Problems met while reading (a counter that failed mid-run).
    pub read_errors: Vec<String>,
    /// How the GPU energy went to the metered processes (NVML in process scope), else `None`.
    pub gpu_use: Option<GpuUse>,
}

impl Measurement {
    /// The GPU method as reports and the CSV's `gpu_method` name it: the per-process
    /// attribution when there was one, else the sensor's name.
    pub fn gpu_method(&self) -> String {
        match &self.gpu_use {
            Some(g) => g.method(&self.setup.gpu_model),
            None => self.setup.gpu.name.clone(),
        }
    }
}

struct Point {
    t: Instant,
    readings: Vec<Option<Vec<u64>>>,
    proc: ProcSnapshot,
}

struct Run {
    roots: Vec<u32>,
    t0: Instant,
    last: Point,
    phase: MeterPhase,
    compile: Option<Parts>,
    run: Parts,
    whole: Parts,
    tree_ticks: u64,
    busy_ticks: u64,
    total_ticks: u64,
    rss_frac_secs: f64,
    rss_bytes_secs: f64,
    read_errors: Vec<String>,
    last_power: Watts,
    /// Every pid seen in the metered tree during the run (GPU attribution: a process that used
    /// the GPU and exited still counts as the tree's).
    tree_pids: HashSet<u32>,
    gpu_use: Option<GpuUse>,
}

struct Inner {
    cfg: MeterConfig,
    sensors: Vec<Box<dyn Sensor>>,
    proc: ProcReader,
    /// The tree found by the last snapshot: kept across cells, so a cell that starts no
    /// process re-reads only its members, not all of `/proc`.
    tree: TreeCache,
    setup: MeterSetup,
    run: Option<Run>,
}

/// Meters one cell at a time. Cheap to clone (shared state), so the live-display thread and the
/// phase-forwarding publisher can use the same meter as the executor.
#[derive(Clone)]
pub struct Meter {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").finish_non_exhaustive()
    }
}

/// What a probe gives: the sensor, or why it is unavailable (`None`: nothing worth a note).
pub type Probed = Result<Box<dyn Sensor>, Option<String>>;

/// What a sensor probe may look at when the meter is built.
pub struct ProbeContext<'a> {
    /// The meter's configuration (roots, TDP override, NVML library).
    pub cfg: &'a MeterConfig,
    /// The machine (CPU model, memory).
    pub machine: &'a Machine,
    /// The powercap domains, discovered once for every RAPL probe.
    pub powercap: &'a Result<Domains, String>,
}

/// One way to measure a component. The meter tries [`SENSORS`] in order and keeps, for each
/// component, the first probe that works.
pub struct SensorProbe {
    /// What it measures.
    pub component: Component,
    /// Builds the sensor, or says why it is unavailable (`Err(None)`: unavailable as expected,
    /// nothing worth a note, e.g. a machine without DRAM zones).
    pub probe: fn(&ProbeContext<'_>) -> Probed,
    /// The note's ending when this probe is used because a better one failed.
    pub fallback_note: &'static str,
}

/// Every sensor, best first per component. Adding a sensor: its file (a [`Sensor`] and a probe
/// function) and one row here.
pub const SENSORS: &[SensorProbe] = &[
    SensorProbe {
        component: Component::Cpu,
        probe: rapl_packages,
        fallback_note: "",
    },
    SensorProbe {
        component: Component::Cpu,
        probe: tdp_model,
        fallback_note: "CPU-time × TDP model used",
    },
    SensorProbe {
        component: Component::Ram,
        probe: rapl_dram,
        fallback_note: "",
    },
    SensorProbe {
        component: Component::Ram,
        probe: ram_model,
        fallback_note: "RAM power model used",
    },
    SensorProbe {
        component: Component::Gpu,
        probe: nvml,
        fallback_note: "",
    },
];

fn rapl_packages(c: &ProbeContext<'_>) -> Probed {
    match c.powercap {
        Ok(d) => Ok(Box::new(RaplSensor::new(
            d.packages.clone(),
            Component::Cpu,
        ))),
        Err(why) => Err(Some(format!("RAPL unavailable ({why})"))),
    }
}

fn tdp_model(c: &ProbeContext<'_>) -> Probed {
    let (tdp, source) = hardware::cpu_tdp(c.machine, c.cfg.tdp_w);
    Ok(Box::new(TdpModel {
        tdp: Watts(tdp),
        source,
    }))
}

fn rapl_dram(c: &ProbeContext<'_>) -> Probed {
    match c.powercap {
        Ok(d) if !d.dram.is_empty() => {
            Ok(Box::new(RaplSensor::new(d.dram.clone(), Component::Ram)))
        }
        // Most machines expose no DRAM zone: the model is the normal case, not worth a note.
        _ => Err(None),
    }
}

fn ram_model(c: &ProbeContext<'_>) -> Probed {
    Ok(Box::new(RamModel {
        watts: Watts(hardware::ram_power_w(c.machine.mem_total, c.machine.arm)),
    }))
}

fn nvml(c: &ProbeContext<'_>) -> Probed {
    Gpus::discover(&c.cfg.nvml)
        .map(|g| Box::new(NvmlSensor::new(g, &c.cfg.proc_root)) as Box<dyn Sensor>)
        .map_err(Some)
}

fn label(c: Component) -> &'static str {
    match c {
        Component::Cpu => "CPU",
        Component::Ram => "RAM",
        Component::Gpu => "GPU",
    }
}

impl Meter {
    /// Chooses the sensors (best available first) and detects the machine (cached per process).
    pub fn new(cfg: MeterConfig) -> Meter {
        let machine = hardware::machine().clone();
        let proc = ProcReader::new(&cfg.proc_root);
        let mut machine = machine;
        // An injected /proc root also tells the total memory (tests); else sysinfo's value.
        if cfg.proc_root != std::path::Path::new("/proc")
            && let Some(t) = proc.mem_total()
        {
            machine.mem_total = t;
        }
        let powercap = Domains::discover(&cfg.powercap_root);
        let ctx = ProbeContext {
            cfg: &cfg,
            machine: &machine,
            powercap: &powercap,
        };
        let mut sensors: Vec<Box<dyn Sensor>> = Vec::new();
        let mut notes = Vec::new();
        let mut gpu_model = String::new();
        let mut gpu_count = 0;
        let mut gpu_info = SensorInfo {
            name: "none".into(),
            kind: SensorKind::NoGpu,
        };
        for component in [Component::Cpu, Component::Ram, Component::Gpu] {
            let mut why: Option<String> = None;
            let mut found = false;
            for p in SENSORS.iter().filter(|p| p.component == component) {
                match (p.probe)(&ctx) {
                    Ok(s) => {
                        if let Some(w) = why.take() {
                            notes.push(format!("{}: {w}; {}", label(component), p.fallback_note));
                        }
                        if component == Component::Gpu {
                            if let Some((model, count)) = s.devices() {
                                gpu_model = model;
                                gpu_count = count;
                            }
                            gpu_info = SensorInfo {
                                name: s.name(),
                                kind: s.kind(),
                            };
                        }
                        sensors.push(s);
                        found = true;
                        break;
                    }
                    Err(w) => why = why.or(w),
                }
            }
            if !found && let Some(w) = why {
                let c = label(component);
                notes.push(format!("{c}: {w}; {c} energy counted as 0"));
            }
        }
        let info = |c: Component| {
            sensors
                .iter()
                .find(|s| s.component() == c)
                .map(|s| SensorInfo {
                    name: s.name(),
                    kind: s.kind(),
                })
        };
        let setup = MeterSetup {
            cpu: info(Component::Cpu).unwrap_or(gpu_info.clone()),
            ram: info(Component::Ram).unwrap_or(gpu_info.clone()),
            gpu: gpu_info,
            notes,
            machine,
            gpu_model,
            gpu_count,
            tick_secs: 1.0 / proc.ticks_per_sec as f64,
        };
        Meter {
            inner: Arc::new(Mutex::new(Inner {
                cfg,
                sensors,
                proc,
                tree: TreeCache::default(),
                setup,
                run: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The configuration it was built with.
    pub fn config(&self) -> MeterConfig {
        self.lock().cfg.clone()
    }

    /// Sensors and machine.
    pub fn setup(&self) -> MeterSetup {
        self.lock().setup.clone()
    }

    /// Starts metering `pids` and their descendants (a run in progress is discarded).
    pub fn start(&self, pids: &[u32]) {
        let mut g = self.lock();
        let last = g.point(pids);
        let tree_pids = pids.iter().chain(g.tree.members()).copied().collect();
        g.run = Some(Run {
            roots: pids.to_vec(),
            t0: last.t,
            last,
            phase: MeterPhase::Run,
            compile: None,
            run: Parts::default(),
            whole: Parts::default(),
            tree_ticks: 0,
            busy_ticks: 0,
            total_ticks: 0,
            rss_frac_secs: 0.0,
            rss_bytes_secs: 0.0,
            read_errors: Vec::new(),
            last_power: Watts(0.0),
            tree_pids,
            gpu_use: None,
        });
    }

    /// Adds a process started after [`Meter::start`] (its CPU time so far counts in full).
    pub fn add_root(&self, pid: u32) {
        let mut g = self.lock();
        if let Some(r) = g.run.as_mut()
            && !r.roots.contains(&pid)
        {
            r.roots.push(pid);
        }
    }

    /// Stops following a root that has exited but is not reaped yet (a zombie still shows its
    /// CPU time): its time so far is accumulated, then it leaves the tree so that reaping it
    /// later does not look like negative CPU time (e.g. rustc before the program it built).
    pub fn retire_root(&self, pid: u32) {
        let mut g = self.lock();
        if g.accumulate().is_none() {
            return;
        }
        let roots: Vec<u32> = match g.run.as_mut() {
            Some(r) => {
                r.roots.retain(|p| *p != pid);
                r.roots.clone()
            }
            None => return,
        };
        let inner = &mut *g;
        let snap = inner.proc.snapshot_with(&roots, &mut inner.tree);
        if let Some(r) = g.run.as_mut() {
            r.last.proc = snap;
        }
    }

    /// True between start and stop.
    pub fn running(&self) -> bool {
        self.lock().run.is_some()
    }

    /// Reads now and accumulates; None when not running.
    pub fn sample(&self) -> Option<LiveSample> {
        let mut g = self.lock();
        g.accumulate()?;
        let r = g.run.as_ref()?;
        let mut energy = r.run;
        if let Some(c) = r.compile {
            energy.cpu += c.cpu;
            energy.ram += c.ram;
            energy.gpu += c.gpu;
        }
        Some(LiveSample {
            elapsed_s: r.last.t.duration_since(r.t0).as_secs_f64(),
            energy,
            power: r.last_power,
        })
    }

    /// Closes the current phase and starts `phase` (compile vs run energy).
    pub fn mark_phase(&self, phase: MeterPhase) {
        let mut g = self.lock();
        if g.accumulate().is_some()
            && let Some(r) = g.run.as_mut()
        {
            r.phase = phase;
            if phase == MeterPhase::Compile && r.compile.is_none() {
                r.compile = Some(Parts::default());
            }
        }
    }

    /// Final reading; None when not running.
    pub fn stop(&self) -> Option<Measurement> {
        let mut g = self.lock();
        g.accumulate()?;
        let r = g.run.take()?;
        let duration_s = r.last.t.duration_since(r.t0).as_secs_f64();
        let mut energy = r.run;
        if let Some(c) = r.compile {
            energy.cpu += c.cpu;
            energy.ram += c.ram;
            energy.gpu += c.gpu;
        }
        let tick = g.setup.tick_secs;
        let frac = |a: u64, b: u64| {
            if b > 0 {
                (a as f64 / b as f64).min(1.0)
            } else {
                0.0
            }
        };
        let mean = |x: f64| {
            if duration_s > 0.0 {
                x / duration_s
            } else {
                0.0
            }
        };
        Some(Measurement {
            duration_s,
            energy,
            whole: r.whole,
            compile: r.compile,
            run: r.run,
            cpu_seconds: r.tree_ticks as f64 * tick,
            busy_share: frac(r.tree_ticks, r.busy_ticks),
            machine_load: frac(r.busy_ticks, r.total_ticks),
            rss_frac: mean(r.rss_frac_secs),
            rss_bytes: mean(r.rss_bytes_secs),
            scope: g.cfg.scope,
            setup: g.setup.clone(),
            read_errors: r.read_errors,
            gpu_use: r.gpu_use,
        })
    }
}

impl Inner {
    fn point(&mut self, roots: &[u32]) -> Point {
        let proc = self.proc.snapshot_with(roots, &mut self.tree);
        let readings = self.sensors.iter_mut().map(|s| s.read().ok()).collect();
        Point {
            t: Instant::now(),
            readings,
            proc,
        }
    }

    /// Reads now and adds the interval since the last reading to the current phase.
    fn accumulate(&mut self) -> Option<()> {
        let roots = self.run.as_ref()?.roots.clone();
        let now = self.point(&roots);
        let mem_total = self.setup.machine.mem_total;
        let logical = self.setup.machine.logical_cpus as f64;
        let tick = self.setup.tick_secs;
        let scope = self.cfg.scope;
        let r = self.run.as_mut()?;
        r.tree_pids.extend(roots.iter().chain(self.tree.members()));
        let prev = &r.last;
        let d_tree = now.proc.tree_ticks.saturating_sub(prev.proc.tree_ticks);
        let d_busy = now.proc.machine.busy.saturating_sub(prev.proc.machine.busy);
        let d_total = now
            .proc
            .machine
            .total
            .saturating_sub(prev.proc.machine.total);
        let secs = now.t.duration_since(prev.t).as_secs_f64();
        let rss = (now.proc.rss_bytes + prev.proc.rss_bytes) as f64 / 2.0;
        let rss_frac = if mem_total > 0 {
            (rss / mem_total as f64).min(1.0)
        } else {
            0.0
        };
        let iv = Interval {
            secs,
            tree_cpu_secs: d_tree as f64 * tick,
            // A tree busier than the machine's counters (tick rounding) gets everything.
            busy_share: if d_busy > 0 {
                (d_tree as f64 / d_busy as f64).min(1.0)
            } else if d_tree > 0 {
                1.0
            } else {
                0.0
            },
            machine_load: if d_total > 0 {
                d_busy as f64 / d_total as f64
            } else {
                0.0
            },
            rss_frac,
            logical_cpus: logical,
            scope,
        };
        let mut step = Parts::default();
        for (i, s) in self.sensors.iter_mut().enumerate() {
            match (&prev.readings[i], &now.readings[i]) {
                (Some(a), Some(b)) => {
                    let e = s.energy_of_tree(a, b, &iv, &r.tree_pids);
                    step.add(s.component(), e.attributed);
                    r.whole.add(s.component(), e.whole);
                    if let Some(g) = &e.gpu {
                        r.gpu_use.get_or_insert_with(GpuUse::default).merge(g);
                    }
                }
                _ => {
                    let msg = format!("{}: a reading failed; this interval counts 0 J", s.name());
                    if !r.read_errors.contains(&msg) {
                        r.read_errors.push(msg);
                    }
                }
            }
        }
        let bucket = match (r.phase, r.compile.as_mut()) {
            (MeterPhase::Compile, Some(c)) => c,
            _ => &mut r.run,
        };
        bucket.cpu += step.cpu;
        bucket.ram += step.ram;
        bucket.gpu += step.gpu;
        r.tree_ticks += d_tree;
        r.busy_ticks += d_busy;
        r.total_ticks += d_total;
        r.rss_frac_secs += rss_frac * secs;
        r.rss_bytes_secs += rss * secs;
        r.last_power = step.total().over(secs);
        // Keep the old reading of a sensor that failed now, so the next good one still spans it.
        let mut now = now;
        for (i, rd) in now.readings.iter_mut().enumerate() {
            if rd.is_none() {
                *rd = r.last.readings[i].clone();
            }
        }
        r.last = now;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::procfs::tests::stat_line;
    use crate::carbon::rapl::tests::zone;
    use std::path::Path;

    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new() -> Fake {
            let f = Fake {
                dir: tempfile::tempdir().unwrap(),
            };
            std::fs::create_dir_all(f.proc()).unwrap();
            std::fs::write(f.proc().join("meminfo"), "MemTotal:  16777216 kB\n").unwrap();
            f
        }
        fn pc(&self) -> PathBuf {
            self.dir.path().join("powercap")
        }
        fn proc(&self) -> PathBuf {
            self.dir.path().join("proc")
        }
        fn energy(&self, id: &str, uj: u64) {
            std::fs::write(self.pc().join(id).join("energy_uj"), format!("{uj}\n")).unwrap();
        }
        fn machine(&self, busy: u64, idle: u64) {
            std::fs::write(
                self.proc().join("stat"),
                format!("cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n"),
            )
            .unwrap();
        }
        fn pid(&self, pid: u32, ppid: u32, ticks: [u64; 4], rss_pages: u64) {
            let d = self.proc().join(pid.to_string());
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("stat"),
                stat_line(pid, "python3", ppid, ticks, rss_pages),
            )
            .unwrap();
        }
        fn cfg(&self, scope: Scope) -> MeterConfig {
            MeterConfig {
                scope,
                tdp_w: None,
                powercap_root: self.pc(),
                proc_root: self.proc(),
                nvml: NvmlChoice::Disabled,
            }
        }
    }

    const MAX: u64 = 262_143_328_850; // a real max_energy_range_uj (2^32 × 61.035 µJ)

    #[test]
    fn rapl_machine_scope_is_exact_with_wrap_around() {
        let f = Fake::new();
        zone(&f.pc(), "intel-rapl:0", "package-0", MAX - 2_000_000, MAX);
        zone(&f.pc(), "intel-rapl:1", "package-1", 5_000_000, MAX);
        zone(&f.pc(), "intel-rapl:0:2", "dram", 1_000_000, MAX);
        f.machine(100, 900);
        let m = Meter::new(f.cfg(Scope::Machine));
        assert!(matches!(
            m.setup().cpu.kind,
            SensorKind::RaplPackage { zones: 2 }
        ));
        assert!(matches!(
            m.setup().ram.kind,
            SensorKind::RaplDram { zones: 1 }
        ));
        m.start(&[]);
        // package-0 wraps: 2 J before the top, 3 J after → 5 J; package-1 +7 J; dram +4 J
        f.energy("intel-rapl:0", 3_000_000);
        f.energy("intel-rapl:1", 12_000_000);
        f.energy("intel-rapl:0:2", 5_000_000);
        let s = m.sample().unwrap();
        assert_eq!(s.energy.cpu, Joules(12.0));
        // a second wrap of package-0 between samples (long cell): +MAX-3 J … +1 J
        f.energy("intel-rapl:0", MAX - 1_000_000);
        m.sample().unwrap();
        f.energy("intel-rapl:0", 1_000_000);
        let meas = m.stop().unwrap();
        let expect_cpu = 12.0 + (MAX - 1_000_000 - 3_000_000) as f64 / 1e6 + 2.0;
        assert!(
            (meas.energy.cpu.0 - expect_cpu).abs() < 1e-6,
            "{:?}",
            meas.energy
        );
        assert_eq!(meas.energy.ram, Joules(4.0));
        assert_eq!(meas.energy.gpu, Joules(0.0));
        assert!(m.stop().is_none());
    }

    #[test]
    fn rapl_process_scope_shares_by_busy_time() {
        let f = Fake::new();
        zone(&f.pc(), "intel-rapl:0", "package-0", 0, MAX);
        f.machine(1000, 9000);
        f.pid(500, 1, [100, 20, 0, 0], 1024);
        f.pid(501, 500, [10, 0, 0, 0], 1024);
        f.pid(600, 1, [5000, 0, 0, 0], 1024); // another user's process
        let m = Meter::new(f.cfg(Scope::Process));
        m.start(&[500]);
        // the tree used 30 + 10 ticks (child reaped: its 10 move to cutime, +10 new), the
        // machine 200 busy ticks → share 40/200 = 0.2 of 50 J
        f.energy("intel-rapl:0", 50_000_000);
        f.machine(1200, 9800);
        f.pid(500, 1, [120, 30, 20, 0], 1024);
        std::fs::remove_dir_all(f.proc().join("501")).unwrap();
        let meas = m.stop().unwrap();
        assert_eq!(meas.whole.cpu, Joules(50.0));
        assert!((meas.busy_share - 0.2).abs() < 1e-12, "{}", meas.busy_share);
        assert!((meas.energy.cpu.0 - 10.0).abs() < 1e-9, "{:?}", meas.energy);
        assert!((meas.cpu_seconds - 0.4).abs() < 1e-12);
        // RAM model: 16 GiB → 10 W machine, shared by RSS (2 pages → 1 page at the end)
        assert!(matches!(meas.setup.ram.kind, SensorKind::RamModel { watts } if watts == 10.0));
    }

    #[test]
    fn tdp_model_without_rapl_and_phases() {
        let f = Fake::new();
        f.machine(0, 1000);
        f.pid(700, 1, [0, 0, 0, 0], 0);
        let mut cfg = f.cfg(Scope::Process);
        cfg.tdp_w = Some(80.0);
        let m = Meter::new(cfg);
        let setup = m.setup();
        assert!(
            setup.notes.iter().any(|n| n.contains("RAPL unavailable")),
            "{:?}",
            setup.notes
        );
        let n = setup.machine.logical_cpus as f64;
        m.start(&[700]);
        m.mark_phase(MeterPhase::Compile);
        f.pid(700, 1, [100, 50, 0, 0], 0); // 1.5 s of CPU compiling
        m.mark_phase(MeterPhase::Run);
        f.pid(700, 1, [400, 50, 0, 0], 0); // 3 s more running
        let meas = m.stop().unwrap();
        let tick = setup.tick_secs;
        let c = meas.compile.unwrap();
        assert!((c.cpu.0 - 80.0 * 150.0 * tick / n).abs() < 1e-9);
        assert!((meas.run.cpu.0 - 80.0 * 300.0 * tick / n).abs() < 1e-9);
        assert!((meas.energy.cpu.0 - 80.0 * 450.0 * tick / n).abs() < 1e-9);
    }

    #[test]
    fn unreadable_counter_falls_back_with_reason() {
        let f = Fake::new();
        let d = zone(&f.pc(), "intel-rapl:0", "package-0", 0, MAX);
        std::fs::remove_file(d.join("energy_uj")).unwrap();
        std::fs::create_dir(d.join("energy_uj")).unwrap(); // exists but unreadable as a file
        let m = Meter::new(f.cfg(Scope::Machine));
        let s = m.setup();
        assert!(matches!(s.cpu.kind, SensorKind::TdpModel { .. }));
        assert!(s.notes[0].contains("cannot read"), "{:?}", s.notes);
        let _ = Path::new("/");
    }

    /// The real NVML code path (nvml-wrapper over the fake `libnvidia-ml.so` of
    /// tests/fixtures/fake_nvml, whose state the test rewrites between readings): the device's
    /// delta goes to the metered tree alone, by its SM share, not at all, or whole with a reason.
    #[test]
    fn nvml_energy_goes_to_the_tree_by_what_nvml_tells() {
        use crate::testing::fake_nvml::{FakeNvml, State, Use, now_us};
        let f = Fake::new();
        f.machine(100, 900);
        f.pid(500, 1, [0, 0, 0, 0], 10);
        f.pid(501, 500, [0, 0, 0, 0], 10);
        f.pid(600, 1, [0, 0, 0, 0], 10); // not in the tree
        let state = |mj: u64, procs: Vec<Use>, samples: Vec<(u32, u64, u32)>| State {
            name: Some("NVIDIA H200".into()),
            energy_mj: mj,
            procs,
            samples,
            ..State::default()
        };
        let nv = match FakeNvml::build(f.dir.path(), &state(1_000_000, vec![], vec![])) {
            Ok(n) => n,
            Err(why) => {
                eprintln!("SKIP: no fake NVML library: {why}");
                return;
            }
        };
        let mut cfg = f.cfg(Scope::Process);
        cfg.nvml = NvmlChoice::Path(nv.lib().display().to_string());
        let m = Meter::new(cfg.clone());
        assert_eq!(m.setup().gpu.kind, SensorKind::Nvml { devices: 1 });
        assert_eq!(m.setup().gpu_model, "1 x NVIDIA H200");

        // the tree's child alone on the GPU: the whole 50 J
        m.start(&[500]);
        nv.set(&state(
            1_050_000,
            vec![Use::Compute(501)],
            vec![(501, now_us(), 80)],
        ));
        let meas = m.stop().unwrap();
        assert_eq!(meas.energy.gpu, Joules(50.0));
        assert_eq!(meas.whole.gpu, Joules(50.0));
        assert!(
            meas.gpu_method()
                .contains("only the metered processes used the GPU"),
            "{}",
            meas.gpu_method()
        );

        // shared with 600: SM 30 % vs 90 % → a quarter of 80 J; a sample of the tree taken
        // before the cell (timestamp 1) is not this interval's
        m.start(&[500]);
        let t = now_us();
        nv.set(&state(
            1_130_000,
            vec![Use::Compute(501), Use::Graphics(600)],
            vec![(501, 1, 100), (501, t, 30), (600, t, 90)],
        ));
        let meas = m.stop().unwrap();
        assert!((meas.energy.gpu.0 - 20.0).abs() < 1e-9, "{:?}", meas.energy);
        assert_eq!(meas.whole.gpu, Joules(80.0));
        let g = meas.gpu_use.clone().unwrap();
        assert_eq!((g.shared_n, g.others.len()), (1, 1));
        assert!(
            meas.gpu_method().contains("share, 25.0 %"),
            "{}",
            meas.gpu_method()
        );

        // two intervals of one cell: alone first (10 J), then only 600 (10 J, not the tree's)
        m.start(&[500]);
        nv.set(&state(1_140_000, vec![Use::Compute(500)], vec![]));
        m.sample().unwrap();
        nv.set(&state(1_150_000, vec![Use::Compute(600)], vec![]));
        let meas = m.stop().unwrap();
        assert_eq!(meas.energy.gpu, Joules(10.0));
        assert_eq!(meas.whole.gpu, Joules(20.0));
        let method = meas.gpu_method();
        assert!(
            method.contains("whole device delta; the metered processes did not use the GPU: 0 J (used by 1 other process)"),
            "{method}"
        );

        // a driver that cannot list processes: the whole delta, said to possibly be shared
        nv.set(&State {
            unsupported: vec!["processes"],
            ..state(1_150_000, vec![], vec![])
        });
        m.start(&[500]);
        nv.set(&State {
            unsupported: vec!["processes"],
            ..state(1_155_000, vec![], vec![])
        });
        let meas = m.stop().unwrap();
        assert_eq!(meas.energy.gpu, Joules(5.0));
        assert!(
            meas.gpu_method().starts_with(
                "NVML total energy (1 x NVIDIA H200), whole device: per-process data unavailable"
            ),
            "{}",
            meas.gpu_method()
        );

        // machine scope: whole devices, the sensor's own name
        cfg.scope = Scope::Machine;
        let m = Meter::new(cfg);
        m.start(&[]);
        nv.set(&state(1_160_000, vec![Use::Compute(600)], vec![]));
        let meas = m.stop().unwrap();
        assert_eq!(meas.energy.gpu, Joules(5.0));
        assert_eq!(meas.gpu_use, None);
        assert_eq!(meas.gpu_method(), "NVML total energy (1 x NVIDIA H200)");
    }

    /// The shell's own user + system seconds as its `times` builtin prints them (times(2), an
    /// oracle independent of /proc parsing), e.g. `0m0.120000s 0m0.004000s` on the first line.
    fn shell_times_secs(out: &str) -> f64 {
        let first = out.lines().next().unwrap_or_default();
        first
            .split_whitespace()
            .map(|t| {
                let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
                m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
            })
            .sum()
    }

    fn busy_child(iterations: u64) -> (Measurement, f64) {
        let m = Meter::new(MeterConfig {
            scope: Scope::Process,
            tdp_w: Some(100.0),
            powercap_root: PathBuf::from("/nonexistent-powercap"),
            proc_root: PathBuf::from("/proc"),
            nvml: NvmlChoice::Disabled,
        });
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "i=0; while [ $i -lt {iterations} ]; do i=$((i+1)); done; times"
            ))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        m.start(&[]);
        m.add_root(child.id());
        let mut out = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
        // wait without reaping, so the zombie's /proc/<pid>/stat still holds its CPU time
        let procfs = crate::carbon::procfs::ProcReader::new("/proc");
        while procfs.stat_line(child.id(), |l| l.state) != Some('Z') {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let meas = m.stop().unwrap();
        child.wait().unwrap();
        (meas, shell_times_secs(&out))
    }

    #[test]
    fn tdp_model_on_a_real_busy_child_is_proportional_to_its_cpu_time() {
        let n = hardware::machine().logical_cpus as f64;
        for iterations in [150_000u64, 450_000] {
            let (meas, oracle) = busy_child(iterations);
            assert!(oracle > 0.05, "child too short: {oracle}");
            // 100 W TDP: E = 100 × cpu_s ÷ n, cpu_s equal to times(2)'s within 2 ticks
            assert!(
                (meas.cpu_seconds - oracle).abs() <= 0.02 + 0.02 * oracle,
                "proc {} vs times {oracle}",
                meas.cpu_seconds
            );
            let per_cpu_second = meas.energy.cpu.0 / meas.cpu_seconds;
            assert!(
                (per_cpu_second - 100.0 / n).abs() < 1e-9,
                "{per_cpu_second}"
            );
        }
    }
}
