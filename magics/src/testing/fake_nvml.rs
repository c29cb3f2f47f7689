//! A fake `libnvidia-ml.so` for machines without an NVIDIA GPU: `tests/fixtures/fake_nvml/
//! fake_nvml.c`, compiled with the system's C compiler into a temporary folder, loaded through
//! the real NVML code path (`CARBON_NVML_LIB`, [`crate::carbon::gpu::NvmlChoice::Path`]). Its
//! state (energy counter, processes on the GPU, utilisation samples) is the file `state` beside
//! the library, which the test writes ([`FakeNvml::set`]) and the library re-reads on every call.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The C source, in the repository's test fixtures.
pub const SOURCE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/fake_nvml/fake_nvml.c"
);

/// One process on the fake GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// On the compute list.
    Compute(u32),
    /// On the graphics list.
    Graphics(u32),
}

/// The fake device's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    /// Device name (`None`: the library's default, "Fake NVIDIA GPU").
    pub name: Option<String>,
    /// Total-energy counter, mJ.
    pub energy_mj: u64,
    /// Processes on the device.
    pub procs: Vec<Use>,
    /// Utilisation samples: pid, CPU timestamp (µs since the epoch), SM %.
    pub samples: Vec<(u32, u64, u32)>,
    /// Device utilisation, %.
    pub util: u32,
    /// Queries that answer NOT_SUPPORTED: `energy`, `processes`, `samples`, `util`.
    pub unsupported: Vec<&'static str>,
}

impl State {
    fn text(&self) -> String {
        let mut s = String::new();
        if let Some(n) = &self.name {
            s.push_str(&format!("device {n}\n"));
        }
        s.push_str(&format!("energy {}\nutil {}\n", self.energy_mj, self.util));
        for p in &self.procs {
            match p {
                Use::Compute(pid) => s.push_str(&format!("proc {pid} compute\n")),
                Use::Graphics(pid) => s.push_str(&format!("proc {pid} graphics\n")),
            }
        }
        for (pid, ts, sm) in &self.samples {
            s.push_str(&format!("sample {pid} {ts} {sm}\n"));
        }
        for u in &self.unsupported {
            s.push_str(&format!("unsupported {u}\n"));
        }
        s
    }
}

/// The compiled library and its state file, in a folder of the test's.
pub struct FakeNvml {
    dir: PathBuf,
}

/// NVML's clock for utilisation samples: µs since the epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl FakeNvml {
    /// Compiles the library (`cc -shared -fPIC`) into `dir` (a test's temporary folder), with
    /// an initial `state`. `Err` says why when there is no C compiler, so a test can skip with
    /// that message.
    pub fn build(dir: &Path, state: &State) -> Result<FakeNvml, String> {
        let dir = dir.to_path_buf();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let out = std::process::Command::new(&cc)
            .args(["-shared", "-fPIC", "-O1", "-o"])
            .arg(dir.join("libnvidia-ml.so"))
            .arg(SOURCE)
            .output()
            .map_err(|e| format!("no C compiler ('{cc}': {e})"))?;
        if !out.status.success() {
            return Err(format!(
                "'{cc}' failed on {SOURCE}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let f = FakeNvml { dir };
        f.set(state);
        Ok(f)
    }

    /// The library's path (for `CARBON_NVML_LIB`).
    pub fn lib(&self) -> PathBuf {
        self.dir.join("libnvidia-ml.so")
    }

    /// The state file's path (beside the library, where it looks).
    pub fn state_path(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Replaces the state (written whole, then renamed into place: a call never reads half).
    pub fn set(&self, state: &State) {
        write_state(&self.state_path(), state);
    }
}

/// Writes `state` at `path` atomically.
pub fn write_state(path: &Path, state: &State) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, state.text()).expect("write the fake NVML state");
    std::fs::rename(&tmp, path).expect("rename the fake NVML state");
}
