//! NVIDIA GPUs through NVML (`nvml-wrapper`, which loads `libnvidia-ml.so` at run time): no GPU,
//! no driver or an old GPU give zero GPU energy and a note, never an error.
//!
//! NVML has no per-process energy counter, only a whole-device one. A metered process tree gets
//! a device's energy by what NVML tells about the processes on it during the interval
//! ([`attribute`]): the whole delta when only the tree's processes used it, the tree's share of
//! the SM-utilisation samples when others did too, nothing when the tree did not use it, and the
//! whole delta with the reason said when NVML cannot tell (the figure may then include other
//! processes' use).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::sync::{Mutex, OnceLock};

use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;

use crate::units::{Joules, fmt_energy};

/// Which NVML library to load.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum NvmlChoice {
    /// The system's `libnvidia-ml.so.1`.
    System,
    /// A specific library file (`CARBON_NVML_LIB=/path`).
    Path(String),
    /// Do not load NVML (`CARBON_NVML_LIB=none`).
    Disabled,
}

/// The GPUs found.
pub struct Gpus {
    nvml: &'static Nvml,
    /// Indices of devices whose total-energy counter works.
    pub devices: Vec<u32>,
    /// e.g. `1 x NVIDIA H200` (CodeCarbon's gpu_model format).
    pub model: String,
}

impl std::fmt::Debug for Gpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpus")
            .field("devices", &self.devices)
            .field("model", &self.model)
            .finish()
    }
}

/// Loads NVML once per library choice: `nvmlInit` takes tens of ms, a cell must not pay for it.
fn load(choice: &NvmlChoice) -> Result<&'static Nvml, String> {
    static CACHE: OnceLock<Mutex<HashMap<NvmlChoice, Result<&'static Nvml, String>>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    c.entry(choice.clone())
        .or_insert_with(|| {
            let r = match choice {
                NvmlChoice::Disabled => return Err("NVML disabled (CARBON_NVML_LIB=none)".into()),
                NvmlChoice::System => Nvml::init(),
                NvmlChoice::Path(p) => Nvml::builder().lib_path(OsStr::new(p)).init(),
            };
            // Leaked on purpose: one per library for the life of the kernel.
            r.map(|n| &*Box::leak(Box::new(n)))
                .map_err(|e| format!("no NVIDIA GPU energy ({e})"))
        })
        .clone()
}

impl Gpus {
    /// Finds GPUs whose energy counter is readable (Volta and later).
    pub fn discover(choice: &NvmlChoice) -> Result<Gpus, String> {
        let nvml = load(choice)?;
        let n = nvml
            .device_count()
            .map_err(|e| format!("NVML: no device count ({e})"))?;
        let mut devices = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut skipped = Vec::new();
        for i in 0..n {
            let Ok(d) = nvml.device_by_index(i) else {
                continue;
            };
            match d.total_energy_consumption() {
                Ok(_) => {
                    devices.push(i);
                    names.push(d.name().unwrap_or_else(|_| "NVIDIA GPU".into()));
                }
                Err(e) => skipped.push(format!("GPU {i}: {e}")),
            }
        }
        if devices.is_empty() {
            return Err(if skipped.is_empty() {
                "no NVIDIA GPU".into()
            } else {
                format!(
                    "no GPU with an energy counter (Volta or later needed): {}",
                    skipped.join("; ")
                )
            });
        }
        // "2 x NVIDIA H100" like CodeCarbon when all GPUs are the same model
        let model = if names.iter().all(|n| *n == names[0]) {
            format!("{} x {}", names.len(), names[0])
        } else {
            names.join(", ")
        };
        Ok(Gpus {
            nvml,
            devices,
            model,
        })
    }

    /// Total energy counters (mJ since the driver loaded), one per device.
    pub fn read(&self) -> Result<Vec<u64>, String> {
        self.devices
            .iter()
            .map(|&i| {
                self.nvml
                    .device_by_index(i)
                    .and_then(|d| d.total_energy_consumption())
                    .map_err(|e| format!("GPU {i}: {e}"))
            })
            .collect()
    }
}

impl Gpus {
    /// What NVML tells about the processes on the `pos`-th metered device: the processes on its
    /// compute and graphics lists now, the utilisation samples taken after `since_us` (NVML's
    /// CPU timestamp, µs since the epoch), and its utilisation.
    pub fn device_use(&self, pos: usize, since_us: u64) -> DeviceUse {
        let index = self.devices.get(pos).copied().unwrap_or(u32::MAX);
        let d = match self.nvml.device_by_index(index) {
            Ok(d) => d,
            Err(e) => {
                return DeviceUse {
                    running: Err(format!("GPU {index}: {e}")),
                    samples: Err(format!("GPU {index}: {e}")),
                    busy: None,
                };
            }
        };
        // A compute-only GPU may not support the graphics list (and the reverse): one list is
        // enough, both failing is not.
        let running = match (
            d.running_compute_processes(),
            d.running_graphics_processes(),
        ) {
            (Err(e), Err(_)) => Err(e.to_string()),
            (c, g) => Ok(c
                .unwrap_or_default()
                .into_iter()
                .chain(g.unwrap_or_default())
                .map(|p| p.pid)
                .collect()),
        };
        let samples = match d.process_utilization_stats(since_us) {
            Ok(v) => Ok(v.into_iter().map(|s| (s.pid, s.sm_util)).collect()),
            // the driver's answer when no process had a non-zero utilisation since then
            Err(NvmlError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e.to_string()),
        };
        DeviceUse {
            running,
            samples,
            busy: d.utilization_rates().ok().map(|u| u.gpu),
        }
    }
}

/// What NVML said about the processes on one device over an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceUse {
    /// Pids on the device's compute and graphics lists at the end of the interval, or why NVML
    /// cannot list them.
    pub running: Result<Vec<u32>, String>,
    /// `(pid, SM utilisation %)` of each sample taken during the interval, or why none can be
    /// read.
    pub samples: Result<Vec<(u32, u32)>, String>,
    /// The device's utilisation (%) over the driver's last sample period, when readable.
    pub busy: Option<u32>,
}

/// How one device's energy over an interval goes to the metered tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Share {
    /// Only the tree's processes used the device: the whole delta.
    Alone,
    /// Other processes used it too: the tree's share of the SM-utilisation samples.
    Shared {
        /// Σ SM % of the tree's samples ÷ Σ SM % of all samples, in [0, 1].
        share: f64,
        /// The other processes.
        others: Vec<u32>,
    },
    /// None of the tree's processes used the device: nothing (an idle device, or others').
    Unused {
        /// The processes that did use it.
        others: Vec<u32>,
    },
    /// NVML cannot tell who used the device: the whole delta, which may include other
    /// processes' use, and why.
    Unknown(String),
}

impl Share {
    /// The part of a device delta `whole` this share gives the tree.
    pub fn of(&self, whole: Joules) -> Joules {
        match self {
            Share::Alone | Share::Unknown(_) => whole,
            Share::Shared { share, .. } => whole * *share,
            Share::Unused { .. } => Joules(0.0),
        }
    }
}

/// Attributes a device's use over an interval to the process tree `tree`. `visible` tells
/// whether a pid exists in this PID namespace (`/proc/<pid>`): NVML reports the host's pids, so
/// inside a container none of them is ours and the tree would wrongly look idle.
pub fn attribute(tree: &HashSet<u32>, u: &DeviceUse, visible: &dyn Fn(u32) -> bool) -> Share {
    let running = match &u.running {
        Ok(r) => r,
        Err(e) => {
            return Share::Unknown(format!(
                "NVML cannot list the processes using the GPU ({e})"
            ));
        }
    };
    let samples: &[(u32, u32)] = u.samples.as_deref().unwrap_or(&[]);
    let users: BTreeSet<u32> = running
        .iter()
        .copied()
        .chain(samples.iter().map(|s| s.0))
        .collect();
    if users.is_empty() {
        return match u.busy {
            Some(0) => Share::Unused { others: Vec::new() },
            Some(b) => Share::Unknown(format!(
                "the GPU was {b} % busy but NVML lists no process using it (processes of another PID namespace are not listed)"
            )),
            None => Share::Unknown(
                "NVML lists no process using the GPU and cannot tell whether it was busy".into(),
            ),
        };
    }
    if !users.iter().any(|p| visible(*p)) {
        let list: Vec<String> = users.iter().map(u32::to_string).collect();
        return Share::Unknown(format!(
            "the pids NVML reports ({}) are not in this PID namespace (a container?)",
            list.join(", ")
        ));
    }
    let others: Vec<u32> = users
        .iter()
        .copied()
        .filter(|p| !tree.contains(p))
        .collect();
    if others.len() == users.len() {
        return Share::Unused { others };
    }
    if others.is_empty() {
        return Share::Alone;
    }
    let n = others.len();
    match &u.samples {
        Err(e) => Share::Unknown(format!(
            "the GPU was shared with {n} other process(es) and NVML gives no utilisation samples ({e})"
        )),
        Ok(s) => {
            // Σ over samples: each covers one driver sampling period, so a process busy for
            // longer weighs more.
            let total: u64 = s.iter().map(|x| u64::from(x.1)).sum();
            let ours: u64 = s
                .iter()
                .filter(|x| tree.contains(&x.0))
                .map(|x| u64::from(x.1))
                .sum();
            if total == 0 {
                Share::Unknown(format!(
                    "the GPU was shared with {n} other process(es) and NVML took no SM-utilisation sample during the interval"
                ))
            } else {
                Share::Shared {
                    share: ours as f64 / total as f64,
                    others,
                }
            }
        }
    }
}

/// How a run's GPU energy was attributed, summed over its intervals and devices (process scope).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuUse {
    /// Intervals × devices where only the metered processes used the GPU.
    pub alone_n: u32,
    /// Their energy (the whole deltas).
    pub alone: Joules,
    /// Intervals × devices shared with other processes.
    pub shared_n: u32,
    /// The metered processes' SM-utilisation share of those deltas.
    pub shared: Joules,
    /// Those deltas, whole.
    pub shared_whole: Joules,
    /// Intervals × devices the metered processes did not use.
    pub unused_n: u32,
    /// Those deltas (not attributed).
    pub unused_whole: Joules,
    /// Intervals × devices where NVML could not tell who used the GPU.
    pub unknown_n: u32,
    /// Those deltas, counted whole.
    pub unknown: Joules,
    /// Why NVML could not tell (distinct reasons).
    pub reasons: Vec<String>,
    /// Other processes seen using the GPUs.
    pub others: BTreeSet<u32>,
}

impl GpuUse {
    /// Adds one device's interval: its delta `whole`, attributed by `share`.
    pub fn add(&mut self, share: &Share, whole: Joules) {
        match share {
            Share::Alone => {
                self.alone_n += 1;
                self.alone += whole;
            }
            Share::Shared { others, .. } => {
                self.shared_n += 1;
                self.shared += share.of(whole);
                self.shared_whole += whole;
                self.others.extend(others);
            }
            Share::Unused { others } => {
                self.unused_n += 1;
                self.unused_whole += whole;
                self.others.extend(others);
            }
            Share::Unknown(why) => {
                self.unknown_n += 1;
                self.unknown += whole;
                if !self.reasons.contains(why) {
                    self.reasons.push(why.clone());
                }
            }
        }
    }

    /// Adds another tally (a later interval).
    pub fn merge(&mut self, o: &GpuUse) {
        self.alone_n += o.alone_n;
        self.alone += o.alone;
        self.shared_n += o.shared_n;
        self.shared += o.shared;
        self.shared_whole += o.shared_whole;
        self.unused_n += o.unused_n;
        self.unused_whole += o.unused_whole;
        self.unknown_n += o.unknown_n;
        self.unknown += o.unknown;
        for r in &o.reasons {
            if !self.reasons.contains(r) {
                self.reasons.push(r.clone());
            }
        }
        self.others.extend(&o.others);
    }

    /// The energy attributed to the metered processes.
    pub fn attributed(&self) -> Joules {
        self.alone + self.shared + self.unknown
    }

    /// The method, as the CSV's `gpu_method` and the reports name it, like the other sensors'
    /// names (no energies): `NVML per process (1 x NVIDIA H200): …` when NVML told who used
    /// the GPUs, `NVML total energy (…), whole device: …` when it never could.
    pub fn method(&self, model: &str) -> String {
        self.describe(model, false)
    }

    /// [`GpuUse::method`] with each part's energy, for "how this was computed".
    pub fn explain(&self, model: &str) -> String {
        self.describe(model, true)
    }

    fn describe(&self, model: &str, energies: bool) -> String {
        let others = |n: usize| {
            if n == 1 {
                "1 other process".to_string()
            } else {
                format!("{n} other processes")
            }
        };
        let e = |j: Joules| {
            if energies {
                format!(" {}", fmt_energy(j))
            } else {
                String::new()
            }
        };
        let mut parts = Vec::new();
        if self.alone_n > 0 {
            parts.push(format!(
                "only the metered processes used the GPU: whole device delta{}",
                e(self.alone)
            ));
        }
        if self.shared_n > 0 {
            let pct = if self.shared_whole.0 > 0.0 {
                100.0 * self.shared.0 / self.shared_whole.0
            } else {
                0.0
            };
            parts.push(if energies {
                format!(
                    "shared with {}: the metered processes' SM-utilisation share, {pct:.1} % of {} = {}",
                    others(self.others.len()),
                    fmt_energy(self.shared_whole),
                    fmt_energy(self.shared)
                )
            } else {
                format!(
                    "shared with {}: the metered processes' SM-utilisation share, {pct:.1} %",
                    others(self.others.len()),
                )
            });
        }
        if self.unused_n > 0 {
            parts.push(format!(
                "the metered processes did not use the GPU: 0 J{}{}",
                if energies {
                    format!(" of the device's {}", fmt_energy(self.unused_whole))
                } else {
                    String::new()
                },
                if self.others.is_empty() {
                    " (idle)".to_string()
                } else {
                    format!(" (used by {})", others(self.others.len()))
                }
            ));
        }
        if self.unknown_n > 0 {
            parts.push(format!(
                "per-process data unavailable ({}): whole device delta{}, which may include other processes' GPU use",
                self.reasons.join("; "),
                e(self.unknown)
            ));
        }
        if self.alone_n + self.shared_n + self.unused_n == 0 {
            format!(
                "NVML total energy ({model}), whole device: {}",
                parts.join("; ")
            )
        } else {
            format!("NVML per process ({model}): {}", parts.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_a_note_not_a_failure() {
        let e =
            Gpus::discover(&NvmlChoice::Path("/nonexistent/libnvidia-ml.so".into())).unwrap_err();
        assert!(e.contains("no NVIDIA GPU energy"), "{e}");
        assert!(Gpus::discover(&NvmlChoice::Disabled).is_err());
    }

    fn use_of(running: &[u32], samples: &[(u32, u32)]) -> DeviceUse {
        DeviceUse {
            running: Ok(running.to_vec()),
            samples: Ok(samples.to_vec()),
            busy: Some(0),
        }
    }

    #[test]
    fn a_tree_alone_on_the_gpu_gets_the_whole_delta() {
        let tree: HashSet<u32> = [100, 101].into();
        let all = |_: u32| true;
        // on the compute list, or only seen in a sample (a child that has exited since)
        for u in [use_of(&[100], &[]), use_of(&[], &[(101, 40)])] {
            let s = attribute(&tree, &u, &all);
            assert_eq!(s, Share::Alone);
            assert_eq!(s.of(Joules(50.0)), Joules(50.0));
        }
    }

    #[test]
    fn a_shared_gpu_is_split_by_sm_utilisation_samples() {
        let tree: HashSet<u32> = [100, 101].into();
        let all = |_: u32| true;
        // the tree's samples: 30 + 10 % SM, the other process's 60 + 60 %: share 40 / 160
        let u = use_of(&[100, 200], &[(100, 30), (200, 60), (101, 10), (200, 60)]);
        let s = attribute(&tree, &u, &all);
        assert_eq!(
            s,
            Share::Shared {
                share: 0.25,
                others: vec![200]
            }
        );
        assert_eq!(s.of(Joules(80.0)), Joules(20.0));
        // the tree on the list but idle while the other computes: nothing
        let s = attribute(&tree, &use_of(&[100, 200], &[(200, 90)]), &all);
        assert_eq!(s.of(Joules(80.0)), Joules(0.0));
    }

    #[test]
    fn what_nvml_cannot_tell_is_the_whole_delta_with_the_reason() {
        let tree: HashSet<u32> = [100].into();
        let all = |_: u32| true;
        // shared, but no sample during the interval: no share to compute
        let s = attribute(&tree, &use_of(&[100, 200], &[]), &all);
        assert!(
            matches!(&s, Share::Unknown(w) if w.contains("shared with 1 other process(es)")),
            "{s:?}"
        );
        assert_eq!(s.of(Joules(10.0)), Joules(10.0));
        // samples unsupported while shared
        let mut u = use_of(&[100, 200], &[]);
        u.samples = Err("Not Supported".into());
        let s = attribute(&tree, &u, &all);
        assert!(
            matches!(&s, Share::Unknown(w) if w.contains("Not Supported")),
            "{s:?}"
        );
        // the lists unsupported
        u.running = Err("Not Supported".into());
        let s = attribute(&tree, &u, &all);
        assert!(
            matches!(&s, Share::Unknown(w) if w.contains("cannot list the processes")),
            "{s:?}"
        );
        // a busy GPU that lists nobody (another PID namespace), and host pids seen from a
        // container
        let mut u = use_of(&[], &[]);
        u.busy = Some(70);
        assert!(matches!(attribute(&tree, &u, &all), Share::Unknown(w) if w.contains("70 % busy")));
        let s = attribute(&tree, &use_of(&[4242], &[]), &|_| false);
        assert!(
            matches!(&s, Share::Unknown(w) if w.contains("(4242) are not in this PID namespace")),
            "{s:?}"
        );
        // an idle GPU nobody uses, and one only others use: nothing for the tree
        assert_eq!(
            attribute(&tree, &use_of(&[], &[]), &all),
            Share::Unused { others: vec![] }
        );
        assert_eq!(
            attribute(&tree, &use_of(&[300], &[(300, 99)]), &all),
            Share::Unused { others: vec![300] }
        );
    }

    #[test]
    fn the_tally_names_each_method_with_its_energy() {
        let mut g = GpuUse::default();
        g.add(&Share::Alone, Joules(30.0));
        assert_eq!(g.attributed(), Joules(30.0));
        assert_eq!(
            g.method("1 x NVIDIA H200"),
            "NVML per process (1 x NVIDIA H200): only the metered processes used the GPU: whole device delta"
        );
        let m = g.explain("1 x NVIDIA H200");
        assert!(m.ends_with("whole device delta 30.0 J"), "{m}");
        let mut later = GpuUse::default();
        later.add(
            &Share::Shared {
                share: 0.25,
                others: vec![200],
            },
            Joules(80.0),
        );
        g.merge(&later);
        assert_eq!(g.attributed(), Joules(50.0));
        let m = g.method("1 x NVIDIA H200");
        assert!(
            m.ends_with(
                "; shared with 1 other process: the metered processes' SM-utilisation share, 25.0 %"
            ),
            "{m}"
        );
        let m = g.explain("1 x NVIDIA H200");
        assert!(m.contains("share, 25.0 % of 80.0 J = 20.0 J"), "{m}");
        let mut unknown = GpuUse::default();
        unknown.add(&Share::Unknown("why".into()), Joules(5.0));
        unknown.add(&Share::Unknown("why".into()), Joules(5.0));
        assert_eq!(unknown.reasons.len(), 1);
        let m = unknown.explain("1 x NVIDIA H200");
        assert!(m.starts_with("NVML total energy (1 x NVIDIA H200), whole device: per-process data unavailable (why): whole device delta 10.0 J"), "{m}");
        assert!(m.contains("may include other processes' GPU use"), "{m}");
    }
}
