//! e2e: gpu — GPU energy attributed per process through NVML, on machines without a GPU: the
//! fake `libnvidia-ml.so` of `tests/fixtures/fake_nvml/` (compiled here with `cc`) is loaded by
//! the real kernel through `CARBON_NVML_LIB`, and its state file (beside it) is rewritten during
//! the cell or the request to make the energy counter advance and say which processes use the
//! GPU. A `%%carbon` Python cell alone on the GPU gets the whole delta; one sharing it with
//! another process gets its SM-utilisation share; a local LLM server's request gets the server's
//! GPU energy; and a library that cannot list processes gives the whole delta with the reason.

use crate::harness::{Exec, Kernel, Opts, csv_last_row};
use carbon_magics::testing::fake_nvml::{FakeNvml, State, Use, now_us};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// NVML counts millijoules (nvmlDeviceGetTotalEnergyConsumption); the counter starts here.
const START_MJ: u64 = 7_000_000;

fn fake_or_skip(dir: &Path) -> Option<FakeNvml> {
    let st = State {
        name: Some("NVIDIA H200".into()),
        energy_mj: START_MJ,
        ..State::default()
    };
    match FakeNvml::build(dir, &st) {
        Ok(f) => Some(f),
        Err(why) => {
            eprintln!("SKIP: the fake NVML library cannot be built here: {why}");
            None
        }
    }
}

/// A Python kernel loading the fake NVML (None, with a message, when Python does not work here).
fn python_kernel(dir: &Path, nvml: &FakeNvml) -> Option<Kernel> {
    let mut k = Kernel::start(
        Opts::default()
            .workdir(dir)
            .env("CARBON_NVML_LIB", nvml.lib().to_string_lossy())
            .env(
                "CARBON_POWERCAP_ROOT",
                dir.join("no-powercap").to_string_lossy(),
            )
            .env("CARBON_CPU_TDP", "100")
            .env_remove("CARBON_PUE")
            .timeout(Duration::from_secs(90)),
    )
    .expect("kernel starts");
    let e = k.execute("print('py', 1 + 1)");
    if e.stdout() != "py 2\n" {
        eprintln!("SKIP: Python runtime not usable: {:?}", e.errors());
        return None;
    }
    Some(k)
}

/// Python that rewrites the fake's state as the device would read after the cell's GPU work:
/// the counter `+delta_mj`, the cell's process on the compute list, and the given samples
/// (`ME` stands for the cell's pid), timestamped now.
fn cell_code(state: &Path, delta_mj: u64, extra_procs: &[u32], samples: &[(&str, u32)]) -> String {
    let mut lines = vec![
        "import os, time".to_string(),
        "ts = int(time.time() * 1e6)".to_string(),
        "me = os.getpid()".to_string(),
        format!(
            "text = 'device NVIDIA H200\\nenergy {}\\nutil 90\\nproc %d compute\\n' % me",
            START_MJ + delta_mj
        ),
    ];
    for p in extra_procs {
        lines.push(format!("text += 'proc {p} graphics\\n'"));
    }
    for (who, sm) in samples {
        let pid = if *who == "ME" {
            "me".to_string()
        } else {
            who.to_string()
        };
        lines.push(format!("text += 'sample %d %d {sm}\\n' % ({pid}, ts)"));
    }
    lines.push(format!(
        "open({0:?} + '.tmp', 'w').write(text); os.replace({0:?} + '.tmp', {0:?})",
        state.to_string_lossy()
    ));
    lines.push("print('gpu work done by', me)".to_string());
    lines.join("\n")
}

fn report(e: &Exec) -> String {
    e.displays()
        .into_iter()
        .chain(e.result())
        .filter_map(|d| d["data"]["text/plain"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The row's GPU energy in joules, PUE taken out.
fn gpu_joules(row: &std::collections::HashMap<String, String>) -> f64 {
    let kwh: f64 = row["gpu_energy"].parse().unwrap();
    let pue: f64 = row["pue"].parse().unwrap();
    kwh * 3.6e6 / pue
}

#[test]
fn a_carbon_cell_gets_its_gpu_energy_alone_or_its_share() {
    let d = tempfile::tempdir().unwrap();
    let Some(nvml) = fake_or_skip(&d.path().join("nvml").tap_mkdir()) else {
        return;
    };
    let Some(mut k) = python_kernel(d.path(), &nvml) else {
        return;
    };
    let status = k
        .execute("%carbon status")
        .result_text()
        .unwrap_or_default();
    assert!(
        status.contains("NVML total energy (1 x NVIDIA H200)"),
        "{status}"
    );

    // alone: the cell's process is the only one on the GPU, 50 J
    let e = k.execute(&format!(
        "%%carbon\n{}",
        cell_code(&nvml.state_path(), 50_000, &[], &[("ME", 80)])
    ));
    assert_eq!(e.status(), "ok", "{:?}", e.errors());
    assert!(e.stdout().starts_with("gpu work done by"), "{}", e.stdout());
    let row = csv_last_row(d.path());
    assert!((gpu_joules(&row) - 50.0).abs() < 1e-6, "{row:?}");
    assert_eq!(
        row["gpu_method"],
        "NVML per process (1 x NVIDIA H200): only the metered processes used the GPU: whole device delta",
        "{row:?}"
    );
    assert_eq!(row["gpu_model"], "1 x NVIDIA H200");
    let text = report(&e);
    assert!(
        text.contains("only the metered processes used the GPU: whole device delta 50.0 J"),
        "{text}"
    );

    // shared with pid 1 (another process, visible in /proc): SM 30 % vs 90 % → a quarter of 80 J
    let e = k.execute(&format!(
        "%%carbon\n{}",
        cell_code(
            &nvml.state_path(),
            50_000 + 80_000,
            &[1],
            &[("ME", 30), ("1", 90)]
        )
    ));
    assert_eq!(e.status(), "ok", "{:?}", e.errors());
    let row = csv_last_row(d.path());
    assert!((gpu_joules(&row) - 20.0).abs() < 1e-6, "{row:?}");
    assert!(
        row["gpu_method"].contains(
            "shared with 1 other process: the metered processes' SM-utilisation share, 25.0 %"
        ),
        "{row:?}"
    );
    let text = report(&e);
    assert!(text.contains("25.0 % of 80.0 J = 20.0 J"), "{text}");

    // a cell that does not touch the GPU while the counter advances (another process's work)
    nvml.set(&State {
        name: Some("NVIDIA H200".into()),
        energy_mj: START_MJ + 130_000,
        procs: vec![Use::Compute(1)],
        ..State::default()
    });
    let e = k.execute(&format!(
        "%%carbon\nimport os\ntext = open({0:?}).read().replace('energy {1}', 'energy {2}')\nopen({0:?} + '.tmp', 'w').write(text); os.replace({0:?} + '.tmp', {0:?})",
        nvml.state_path().to_string_lossy(),
        START_MJ + 130_000,
        START_MJ + 140_000
    ));
    assert_eq!(e.status(), "ok", "{:?}", e.errors());
    let row = csv_last_row(d.path());
    assert_eq!(gpu_joules(&row), 0.0, "{row:?}");
    assert!(
        row["gpu_method"]
            .contains("the metered processes did not use the GPU: 0 J (used by 1 other process)"),
        "{row:?}"
    );
}

#[test]
fn without_per_process_data_the_whole_delta_is_said_to_be_shared() {
    let d = tempfile::tempdir().unwrap();
    let Some(nvml) = fake_or_skip(&d.path().join("nvml").tap_mkdir()) else {
        return;
    };
    // this driver lists no process and gives no samples (NOT_SUPPORTED)
    let unsupported = |mj: u64| State {
        name: Some("NVIDIA H200".into()),
        energy_mj: mj,
        unsupported: vec!["processes", "samples"],
        ..State::default()
    };
    nvml.set(&unsupported(START_MJ));
    let Some(mut k) = python_kernel(d.path(), &nvml) else {
        return;
    };
    let code = format!(
        "%%carbon\nimport os\ntext = open({0:?}).read().replace('energy {1}', 'energy {2}')\nopen({0:?} + '.tmp', 'w').write(text); os.replace({0:?} + '.tmp', {0:?})",
        nvml.state_path().to_string_lossy(),
        START_MJ,
        START_MJ + 12_000
    );
    let e = k.execute(&code);
    assert_eq!(e.status(), "ok", "{:?}", e.errors());
    let row = csv_last_row(d.path());
    assert!((gpu_joules(&row) - 12.0).abs() < 1e-6, "{row:?}");
    let m = &row["gpu_method"];
    assert!(
        m.starts_with("NVML total energy (1 x NVIDIA H200), whole device: per-process data unavailable (NVML cannot list the processes using the GPU"),
        "{m}"
    );
    assert!(m.contains("may include other processes' GPU use"), "{m}");
}

#[test]
fn a_local_llm_servers_gpu_energy_is_measured_per_process() {
    use carbon_magics::testing::llm_server::{Reply, Server, StreamEnd, wire};
    let d = tempfile::tempdir().unwrap();
    let Some(nvml) = fake_or_skip(&d.path().join("nvml").tap_mkdir()) else {
        return;
    };
    // the server (this test process) "runs the model on the GPU" while it answers: 30 J, and it
    // is the only process on the GPU
    let state = nvml.state_path();
    let srv = Server::start(move |_, _| {
        let me = std::process::id();
        carbon_magics::testing::fake_nvml::write_state(
            &state,
            &State {
                name: Some("NVIDIA H200".into()),
                energy_mj: START_MJ + 30_000,
                procs: vec![Use::Compute(me)],
                samples: vec![(me, now_us(), 70)],
                util: 70,
                ..State::default()
            },
        );
        Reply::sse(wire::openai_sse("smollm2", &["Hel", "lo", "!"], 4, 3))
            .stream_end(Duration::from_millis(20), StreamEnd::Clean)
    });
    let mut k = Kernel::start(
        Opts::default()
            .test_runtime()
            .workdir(d.path())
            .without_provider_env()
            .env_remove("LLM_DEFAULT")
            .env_remove("CARBON_COUNTRY")
            .env("LLM_LOCAL_BASE_URL", srv.url("/v1"))
            .env("CARBON_NVML_LIB", nvml.lib().to_string_lossy()),
    )
    .expect("kernel starts");
    let r = k.execute("%llm local:smollm2 Say hello");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let v = r
        .displays()
        .iter()
        .find_map(|d| {
            d["data"]
                .get(carbon_magics::report::llm::MEASURED_MIME)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no measured figures: {:?}", r.types()));
    let m = &v[0]["measured"];
    assert_eq!(m["server"]["pids"][0], std::process::id(), "{v}");
    assert!((m["gpu_j"].as_f64().unwrap() - 30.0).abs() < 1e-9, "{v}");
    assert_eq!(
        m["gpu_method"],
        "NVML per process (1 x NVIDIA H200): only the metered processes used the GPU: whole device delta",
        "{v}"
    );
    let row = csv_last_row(d.path());
    assert!(
        row["method"].starts_with("measured on this machine"),
        "{row:?}"
    );
    assert!((gpu_joules(&row) - 30.0).abs() < 1e-6, "{row:?}");
    assert_eq!(row["gpu_method"], m["gpu_method"].as_str().unwrap());
}

/// `path` created, for a one-line folder set-up.
trait TapMkdir {
    fn tap_mkdir(self) -> PathBuf;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> PathBuf {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
