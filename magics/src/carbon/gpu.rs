//! NVIDIA GPUs through NVML (`nvml-wrapper`, which loads `libnvidia-ml.so` at run time): no GPU,
//! no driver or an old GPU give zero GPU energy and a note, never an error.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Mutex, OnceLock};

use nvml_wrapper::Nvml;

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
}
