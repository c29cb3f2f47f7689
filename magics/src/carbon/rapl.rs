//! RAPL energy counters through Linux powercap (`/sys/class/powercap`, injectable root).
//!
//! Each zone directory holds `name` (`package-N`, `core`, `uncore`, `dram`, `psys`), `energy_uj`
//! (a counter in µJ that wraps) and `max_energy_range_uj` (the value at which it wraps). Zones nest
//! (core ⊂ package ⊆ psys), so only packages are summed for the CPU, `dram` for the RAM, and `psys`
//! only when there is no package (powercap docs: docs.kernel.org/power/powercap/powercap.html).

use std::path::{Path, PathBuf};

/// One powercap zone directory: one RAPL energy counter (not a carbon-intensity zone, for which
/// see [`super::intensity::Zone`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowercapZone {
    /// Directory of the zone.
    pub dir: PathBuf,
    /// Its `name` file (`package-0`, `dram`, …).
    pub name: String,
    /// `max_energy_range_uj`: the counter wraps to 0 after this value (None when unreadable:
    /// wrap-arounds are then not corrected, as CodeCarbon does).
    pub max_range_uj: Option<u64>,
}

impl PowercapZone {
    /// Current `energy_uj`.
    pub fn read(&self) -> std::io::Result<u64> {
        let t = std::fs::read_to_string(self.dir.join("energy_uj"))?;
        t.trim()
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// Energy (µJ) between two readings of one counter, with one wrap-around corrected: a counter
/// that went down wrapped, and `to + max_range_uj - from` is what it counted (the correction of
/// the powercap docs and CodeCarbon; exact to one counter step, 15–61 µJ). Readings at least every wrap period (minutes at
/// full power) keep this exact; the meter samples about once a second for long cells.
pub fn delta_uj(from: u64, to: u64, max_range_uj: Option<u64>) -> u64 {
    if to >= from {
        to - from
    } else {
        match max_range_uj {
            Some(max) if max >= from => (max - from) + to,
            _ => 0,
        }
    }
}

/// The zones found under a powercap root.
#[derive(Debug, Clone, Default)]
pub struct Domains {
    /// CPU package zones (or psys when there is no package).
    pub packages: Vec<PowercapZone>,
    /// DRAM zones.
    pub dram: Vec<PowercapZone>,
}

fn zone_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            // `intel-rapl:0`, `intel-rapl:0:1`, `intel-rapl-mmio:0`; also the `intel-rapl`
            // control-type directory that contains them on some layouts.
            if !name.starts_with("intel-rapl") {
                continue;
            }
            let p = e.path();
            if name.contains(':') && p.join("energy_uj").exists() {
                out.push(p.clone());
            }
            if depth < 2 {
                stack.push((p, depth + 1));
            }
        }
    }
    // The same zone is visible flat (symlink) and nested: keep one path per zone id.
    out.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    out.dedup_by_key(|p| p.file_name().map(|n| n.to_os_string()));
    out
}

impl Domains {
    /// Scans `root`. Errors say why RAPL is not usable (no zones, unreadable counters).
    pub fn discover(root: &Path) -> Result<Domains, String> {
        if !root.exists() {
            return Err(format!("no powercap at {}", root.display()));
        }
        let mut pk: Vec<(bool, PowercapZone)> = Vec::new(); // (is_mmio, zone)
        let mut psys = Vec::new();
        let mut dram = Vec::new();
        for dir in zone_dirs(root) {
            let name = std::fs::read_to_string(dir.join("name"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            let max_range_uj = std::fs::read_to_string(dir.join("max_energy_range_uj"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let mmio = dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("intel-rapl-mmio"));
            let z = PowercapZone {
                dir,
                name: name.clone(),
                max_range_uj,
            };
            if name.starts_with("package") {
                pk.push((mmio, z));
            } else if name == "dram" {
                dram.push(z);
            } else if name == "psys" {
                psys.push(z);
            }
        }
        // MSR and MMIO interfaces may expose the same package: keep MMIO, as CodeCarbon 3.3 does.
        let mut packages: Vec<PowercapZone> = Vec::new();
        pk.sort_by_key(|(mmio, _)| !*mmio);
        for (_, z) in pk {
            if !packages.iter().any(|p| p.name == z.name) {
                packages.push(z);
            }
        }
        if packages.is_empty() {
            packages = psys;
        }
        if packages.is_empty() {
            return Err(format!("no RAPL package zone under {}", root.display()));
        }
        for z in packages.iter().chain(dram.iter()) {
            if let Err(e) = z.read() {
                return Err(format!(
                    "cannot read {}: {e} (energy_uj is root-only since CVE-2020-8694; \
                     `sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj` allows it)",
                    z.dir.join("energy_uj").display()
                ));
            }
        }
        Ok(Domains { packages, dram })
    }
}

/// Reads every zone in order (a failed read repeats nothing: it is reported as an error).
pub fn read_all(zones: &[PowercapZone]) -> std::io::Result<Vec<u64>> {
    zones.iter().map(PowercapZone::read).collect()
}

/// Σ of per-zone deltas, µJ.
pub fn sum_delta(zones: &[PowercapZone], from: &[u64], to: &[u64]) -> u64 {
    zones
        .iter()
        .zip(from.iter().zip(to))
        .map(|(z, (&a, &b))| delta_uj(a, b, z.max_range_uj))
        .sum()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The fake zones of the meter's tests too (`crate::carbon::rapl::tests::zone`).
    pub(crate) use crate::testing::powercap::zone;

    #[test]
    fn wrap_around_is_corrected() {
        assert_eq!(delta_uj(100, 250, Some(1000)), 150);
        // 900 → wraps at 1000 → 50: (1000 - 900) + 50
        assert_eq!(delta_uj(900, 50, Some(1000)), 150);
        assert_eq!(delta_uj(900, 50, None), 0);
        // real-sized: max 262143328850 µJ (a 2^32 × 61 µJ counter)
        let max = 262_143_328_850;
        assert_eq!(delta_uj(max - 5_000_000, 7_000_000, Some(max)), 12_000_000);
    }

    #[test]
    fn discovers_packages_and_dram_not_subzones() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        zone(r, "intel-rapl:0", "package-0", 10, 1000);
        zone(&r.join("intel-rapl:0"), "intel-rapl:0:0", "core", 5, 1000);
        zone(&r.join("intel-rapl:0"), "intel-rapl:0:1", "dram", 7, 1000);
        zone(r, "intel-rapl:1", "package-1", 20, 1000);
        zone(r, "intel-rapl-mmio:0", "package-0", 11, 1000);
        let dom = Domains::discover(r).unwrap();
        let names: Vec<_> = dom.packages.iter().map(|z| z.name.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            dom.packages
                .iter()
                .any(|z| z.dir.ends_with("intel-rapl-mmio:0"))
        );
        assert_eq!(dom.dram.len(), 1);
        assert!(Domains::discover(&r.join("nope")).is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(
            Domains::discover(empty.path())
                .unwrap_err()
                .contains("no RAPL")
        );
    }
}
