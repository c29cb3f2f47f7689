//! Fake powercap trees (`/sys/class/powercap` laid out in a directory) so RAPL metering can be
//! tested exactly, without the hardware: the meter reads `name`, `energy_uj` and
//! `max_energy_range_uj` of each zone, and a test moves `energy_uj` by writing it.

use std::path::{Path, PathBuf};

/// Writes a RAPL zone directory `root/id` (`name`, `energy_uj` = `energy`,
/// `max_energy_range_uj` = `max`) and returns it. Panics when the files cannot be written: a
/// test cannot go on without its fixture.
pub fn zone(root: &Path, id: &str, name: &str, energy: u64, max: u64) -> PathBuf {
    let d = root.join(id);
    let write = |file: &str, value: String| {
        std::fs::write(d.join(file), value)
            .unwrap_or_else(|e| panic!("fake powercap {}/{file}: {e}", d.display()));
    };
    std::fs::create_dir_all(&d)
        .unwrap_or_else(|e| panic!("fake powercap zone {}: {e}", d.display()));
    write("name", format!("{name}\n"));
    write("energy_uj", format!("{energy}\n"));
    write("max_energy_range_uj", format!("{max}\n"));
    d
}
