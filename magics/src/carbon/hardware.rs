//! What the machine is: CPU model and count (sysinfo, detected once per process), its TDP from the
//! shipped table (`data/cpu_tdp.csv`, CodeCarbon's Intel/AMD list), and the RAM power model.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

/// The CPU TDP table, with its source in its header comments.
pub const CPU_TDP_CSV: &str = include_str!("../../data/cpu_tdp.csv");

/// Watts per logical CPU for a CPU model not in the table: CodeCarbon's `DEFAULT_POWER_PER_CORE`
/// (codecarbon/external/hardware.py, 3.3.2), applied per thread as CodeCarbon does.
pub const DEFAULT_W_PER_THREAD: f64 = 4.0;

/// Static facts about the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// CPU brand string (e.g. `Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz`), empty if unknown.
    pub cpu_model: String,
    /// Logical CPUs (threads).
    pub logical_cpus: usize,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// x86 or ARM (the RAM model differs).
    pub arm: bool,
}

/// Detects the machine once per process (sysinfo reads /proc/cpuinfo and /proc/meminfo; a cell
/// must not pay for it: CodeCarbon's cold start spends ~1 s here, carbon-meters.md §3).
pub fn machine() -> &'static Machine {
    static M: OnceLock<Machine> = OnceLock::new();
    M.get_or_init(|| {
        let mut model = String::new();
        let mut logical = 0;
        let mut mem_total = 0;
        if let Ok(mut sys) = sysinfo::System::new() {
            sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
            sys.refresh_memory();
            logical = sys.cpus().len();
            model = sys
                .cpus()
                .first()
                .map(|c| c.brand().trim().to_string())
                .unwrap_or_default();
            mem_total = sys.total_memory();
        }
        if logical == 0 {
            logical = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1);
        }
        let arch = sysinfo::System::cpu_arch();
        Machine {
            cpu_model: model,
            logical_cpus: logical,
            mem_total,
            arm: arch.contains("arm") || arch.contains("aarch64"),
        }
    })
}

/// Normalises a CPU name for matching: drops `(R)`, `(TM)`, `CPU`, `@ 2.30GHz`, `Processor`, and
/// the integrated-graphics suffix (`with Radeon Graphics`), lower-cased.
pub fn normalize(name: &str) -> String {
    let mut s = name
        .replace("(R)", " ")
        .replace("(r)", " ")
        .replace("(TM)", " ")
        .replace("(tm)", " ");
    if let Some(i) = s.find('@') {
        s.truncate(i);
    }
    for cut in [" with ", " w/ "] {
        if let Some(i) = s.to_ascii_lowercase().find(cut) {
            s.truncate(i);
        }
    }
    s.split_whitespace()
        .filter(|w| {
            let l = w.to_ascii_lowercase();
            l != "cpu" && l != "processor" && !l.ends_with("-core")
        })
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

/// The TDP table (normalised name → W), parsed once.
fn table() -> &'static HashMap<String, f64> {
    static T: OnceLock<HashMap<String, f64>> = OnceLock::new();
    T.get_or_init(|| {
        let mut m = HashMap::new();
        for line in CPU_TDP_CSV.lines().filter(|l| !l.starts_with('#')).skip(1) {
            if let Some((name, tdp)) = line.rsplit_once(',')
                && let Ok(w) = tdp.trim().parse::<f64>()
            {
                m.insert(normalize(name.trim_matches('"')), w);
            }
        }
        m
    })
}

/// Number of models in the shipped table.
pub fn table_len() -> usize {
    table().len()
}

/// TDP (W) of a CPU model: exact match of the normalised name, else the one table entry whose
/// words are all in the model's name (the longest such entry; ambiguous ties → unknown). This is
/// the idea of CodeCarbon's two-step fuzzy match, without fuzziness: a wrong TDP is worse than
/// the documented 4 W-per-thread fallback.
pub fn lookup_tdp(model: &str) -> Option<f64> {
    let n = normalize(model);
    if n.is_empty() {
        return None;
    }
    let t = table();
    if let Some(w) = t.get(&n) {
        return Some(*w);
    }
    let words: BTreeSet<&str> = n.split(' ').collect();
    let mut best: Option<(usize, f64, bool)> = None; // (word count, tdp, ambiguous)
    for (name, w) in t {
        let nw: Vec<&str> = name.split(' ').collect();
        // a bare family name ("epyc") must not match every EPYC: require a model number
        if !nw.iter().any(|x| x.chars().any(|c| c.is_ascii_digit())) {
            continue;
        }
        if nw.iter().all(|x| words.contains(x)) {
            match best {
                Some((c, _, _)) if c > nw.len() => {}
                Some((c, bw, _)) if c == nw.len() => {
                    if (bw - w).abs() > f64::EPSILON {
                        best = Some((c, bw, true));
                    }
                }
                _ => best = Some((nw.len(), *w, false)),
            }
        }
    }
    match best {
        Some((_, w, false)) => Some(w),
        _ => None,
    }
}

/// Where the TDP used by the CPU model comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TdpSource {
    /// `CARBON_CPU_TDP` / `%carbon config tdp=…`.
    User,
    /// The shipped table (CodeCarbon's cpu_power.csv).
    Table,
    /// Unknown model: 4 W × logical CPUs.
    PerThreadDefault,
}

/// The TDP of this machine's CPU(s) and where it came from.
pub fn cpu_tdp(m: &Machine, user: Option<f64>) -> (f64, TdpSource) {
    if let Some(w) = user {
        return (w, TdpSource::User);
    }
    match lookup_tdp(&m.cpu_model) {
        Some(w) => (w, TdpSource::Table),
        None => (
            DEFAULT_W_PER_THREAD * m.logical_cpus as f64,
            TdpSource::PerThreadDefault,
        ),
    }
}

/// RAM power of the whole machine (W), CodeCarbon 3.x's model (codecarbon/external/ram.py):
/// 5 W per DIMM on x86 (1.5 W on ARM), the DIMM count estimated from the total size, at least 2
/// DIMMs; above 4 DIMMs each extra DIMM counts less (×0.9 up to 8, ×0.8 up to 16, ×0.7 beyond),
/// as in its table (carbon-meters.md §1b).
pub fn ram_power_w(total_bytes: u64, arm: bool) -> f64 {
    let gib = total_bytes as f64 / (1u64 << 30) as f64;
    let dimms: u64 = if gib <= 16.0 {
        2
    } else if gib <= 64.0 {
        4
    } else if gib <= 128.0 {
        8
    } else {
        // largest power-of-two DIMM size not above total/8, then the count, clamped to 8..=32
        let mut size = 1.0;
        while size * 2.0 <= gib / 8.0 {
            size *= 2.0;
        }
        ((gib / size).ceil() as u64).clamp(8, 32)
    };
    let per = if arm { 1.5 } else { 5.0 };
    let d = dimms as f64;
    let w = if dimms <= 4 {
        d * per
    } else if dimms <= 8 {
        4.0 * per + (d - 4.0) * per * 0.9
    } else if dimms <= 16 {
        4.0 * per + 4.0 * per * 0.9 + (d - 8.0) * per * 0.8
    } else {
        4.0 * per + 4.0 * per * 0.9 + 8.0 * per * 0.8 + (d - 16.0) * per * 0.7
    };
    w.max(2.0 * per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tdp_table_lookups() {
        assert!(table_len() > 4000, "{}", table_len());
        assert_eq!(
            normalize("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"),
            "intel core i7-8650u"
        );
        // rows of the shipped table (cpu_tdp.csv): "Intel Core i7-8650U,15" and "AMD EPYC 7763,280"
        assert_eq!(
            lookup_tdp("Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"),
            Some(15.0)
        );
        assert_eq!(lookup_tdp("AMD EPYC 7763 64-Core Processor"), Some(280.0));
        assert_eq!(lookup_tdp("AMD EPYC"), None);
        assert_eq!(lookup_tdp(""), None);
        let m = Machine {
            cpu_model: "AMD EPYC".into(),
            logical_cpus: 2,
            mem_total: 0,
            arm: false,
        };
        assert_eq!(cpu_tdp(&m, None), (8.0, TdpSource::PerThreadDefault));
        assert_eq!(cpu_tdp(&m, Some(65.0)), (65.0, TdpSource::User));
    }

    #[test]
    fn ram_model_matches_codecarbon_table() {
        let g = |x: u64| x << 30;
        assert_eq!(ram_power_w(g(2), false), 10.0);
        assert_eq!(ram_power_w(g(16), false), 10.0);
        assert_eq!(ram_power_w(g(24), false), 20.0); // this VM: 23.5 GiB → 4 DIMMs → 20 W
        assert_eq!(ram_power_w(g(128), false), 38.0);
        assert_eq!(ram_power_w(g(1024), false), 38.0);
        assert_eq!(ram_power_w(g(8), true), 3.0);
    }

    #[test]
    fn detects_this_machine_once() {
        let a = machine() as *const Machine;
        let b = machine() as *const Machine;
        assert_eq!(a, b);
        assert!(machine().logical_cpus >= 1);
    }
}
