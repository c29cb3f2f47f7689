//! e2e: llm_local — a `%llm local:…` request to a server on this machine gets a third figure,
//! the energy metered on the server's process tree. The loopback server of
//! `carbon_magics::testing::llm_server` runs inside this test process, so the server the kernel
//! finds through `/proc` is this process; a connection this test holds open is "another client",
//! and a fake `/proc` root (`CARBON_PROC_ROOT`) hides the server.

use crate::harness::{Exec, Kernel, Opts, csv_last_row};
use carbon_magics::report::llm::MEASURED_MIME;
use carbon_magics::testing::llm_server::{Reply, Server, StreamEnd, wire};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// A kernel whose `local` provider points at `url`.
fn kernel(dir: &Path, url: &str, extra: &[(&str, String)]) -> Kernel {
    let mut o = Opts::default()
        .test_runtime()
        .workdir(dir)
        .without_provider_env()
        .env_remove("LLM_DEFAULT")
        .env_remove("CARBON_COUNTRY")
        .env("LLM_LOCAL_BASE_URL", url)
        .env("CARBON_NVML_LIB", "none");
    for (k, v) in extra {
        o = o.env(*k, v.clone());
    }
    Kernel::start(o).expect("kernel starts")
}

/// CPU seconds of the calling thread (`/proc/thread-self/stat`, utime + stime).
fn thread_cpu_s() -> f64 {
    let text = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let st = carbon_magics::carbon::procfs::parse_pid_stat(&text).unwrap();
    st.own_ticks as f64 / rustix_ticks()
}

fn rustix_ticks() -> f64 {
    carbon_magics::carbon::procfs::ProcReader::new("/proc").ticks_per_sec as f64
}

/// A streamed OpenAI-style answer, after `burn` seconds of CPU time spent in the serving thread
/// (so the server's process, this one, is seen working, however loaded the machine is).
fn server(burn: f64) -> Server {
    Server::start(move |_, _| {
        let t0 = thread_cpu_s();
        let mut x = 0u64;
        while thread_cpu_s() - t0 < burn {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
        Reply::sse(wire::openai_sse("smollm2", &["Hel", "lo", "!"], 4, 3))
            .stream_end(Duration::from_millis(20), StreamEnd::Clean)
    })
}

/// The measured figures of the comparison.
fn measured(r: &Exec) -> Value {
    r.displays()
        .iter()
        .find_map(|d| d["data"].get(MEASURED_MIME).cloned())
        .unwrap_or_else(|| panic!("no {MEASURED_MIME}: {:?}", r.types()))
}

fn report_text(r: &Exec) -> String {
    r.displays()
        .iter()
        .filter_map(|d| d["data"]["text/plain"].as_str())
        .find(|t| t.contains("How this was computed"))
        .unwrap_or_else(|| panic!("no comparison: {:?}", r.types()))
        .to_string()
}

#[test]
fn a_local_server_is_found_and_its_process_metered() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(0.3);
    let mut k = kernel(dir.path(), &srv.url("/v1"), &[]);
    let r = k.execute("%llm local:smollm2 Say hello");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let v = measured(&r);
    let m = &v[0]["measured"];
    assert_eq!(v[0]["model"], "local:smollm2");
    // the server is this test process (the kernel is another process)
    assert_eq!(m["server"]["pids"][0], std::process::id(), "{v}");
    assert_eq!(
        m["server"]["listen"],
        srv.url("").trim_start_matches("http://")
    );
    // the serving thread burned 0.3 s of CPU in this process during the request
    let cpu_s = m["cpu_seconds"].as_f64().unwrap();
    assert!(cpu_s >= 0.25, "{v}");
    if let Some(w) = m["watts_per_cpu_second"].as_f64() {
        // CPU-time × TDP: the CPU energy is exactly the CPU seconds × the model's watts
        let j = m["cpu_j"].as_f64().unwrap();
        assert!((j - cpu_s * w).abs() < 1e-9 * j.max(1.0), "{v}");
    }
    assert!(m["energy_kwh"].as_f64().unwrap() > 0.0);
    // the estimates are beside it
    assert!(v[0]["eco_energy_kwh"]["min"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v[0]["seed_energy_kwh"].as_f64().unwrap() > 0.0, "{v}");
    let text = report_text(&r);
    assert!(text.contains("measured Wh"), "{text}");
    assert!(text.contains("Measured on this machine"), "{text}");
    assert!(
        text.contains(&format!("(pid {})", std::process::id())),
        "{text}"
    );
    // the row holds the measurement in CodeCarbon's columns, the estimate range beside it
    let row = csv_last_row(dir.path());
    assert_eq!(row["kind"], "llm");
    assert!(
        row["method"].starts_with("measured on this machine"),
        "{row:?}"
    );
    assert_eq!(row["tracking_mode"], "process");
    let row_cpu: f64 = row["process_cpu_seconds"].parse().unwrap();
    assert!((row_cpu - cpu_s).abs() < 1e-9);
    let kwh: f64 = row["energy_consumed"].parse().unwrap();
    assert!(
        (kwh - m["energy_kwh"].as_f64().unwrap()).abs() < 1e-12,
        "{row:?}"
    );
    assert!(row["emissions_min_kg"].parse::<f64>().unwrap() > 0.0);
    // a cloud request of the same session has no measured column
    let c = k.execute("%llm estimate openai:gpt-4o-mini --tokens 100");
    let t = c.result_text().unwrap();
    assert!(
        t.contains("How this was computed") && !t.contains("measured Wh"),
        "{t}"
    );
}

#[test]
fn another_client_or_a_hidden_owner_is_said_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(0.0);
    let mut k = kernel(dir.path(), &srv.url("/v1"), &[]);
    // this test process holds a second connection to the server during the request
    let other = std::net::TcpStream::connect(srv.url("").trim_start_matches("http://")).unwrap();
    let r = k.execute("%llm local:smollm2 Say hello");
    drop(other);
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let v = measured(&r);
    assert!(v[0]["measured"].is_null(), "{v}");
    let why = v[0]["not_measured"].as_str().unwrap();
    assert!(why.contains("other client connection"), "{why}");
    let text = report_text(&r);
    assert!(text.contains("not measured"), "{text}");
    assert!(text.contains("no measured figure"), "{text}");
    let row = csv_last_row(dir.path());
    assert!(
        row["method"].contains("not measured on this machine"),
        "{row:?}"
    );
    assert_eq!(row["tracking_mode"], "");

    // a /proc where nothing listens: the owner cannot be found (as in a container)
    let fake = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(fake.path().join("net")).unwrap();
    std::fs::write(
        fake.path().join("net/tcp"),
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
    )
    .unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let mut k2 = kernel(
        dir2.path(),
        &srv.url("/v1"),
        &[(
            "CARBON_PROC_ROOT",
            fake.path().to_string_lossy().to_string(),
        )],
    );
    let r = k2.execute("%llm local:smollm2 Say hello");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let why = measured(&r)[0]["not_measured"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        why.contains("no process on this machine listens on 127.0.0.1:"),
        "{why}"
    );
}
