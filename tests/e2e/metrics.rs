//! e2e: Prometheus metrics (`CARBON_METRICS_ADDR`) and `file_sd` targets (`CARBON_METRICS_SD_DIR`)
//! through the real kernel binary: the scraped counters equal the sums of the `emissions.csv`
//! rows (cells, commands and an `%llm` request against a loopback server), no code, prompt,
//! answer, path or key in any metric, a scrape during a cell does not wait for it, the target
//! file appears on start and goes on shutdown, a dead kernel's target is cleaned on start, and
//! faults (port in use, unwritable folder) are said and metering goes on.

use crate::harness::{Exec, Kernel, Opts, csv_rows};
use carbon_magics::testing::llm_server::{Reply, Server, wire};
use carbon_magics::testing::powercap::zone;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

const KEY: &str = "sk-proj-METRICS-SECRET-4242";
const CODE_MARK: &str = "CODEMARK_c0ffee";
const PROMPT_MARK: &str = "PROMPTMARK_beef";
const ANSWER_MARK: &str = "ANSWERMARK_f00d";
/// A pid above any pid_max: no process has it.
const DEAD_PID: u32 = 2_147_483_632;

fn opts(dir: &Path) -> Opts {
    let mut o = Opts::default()
        .test_runtime()
        .workdir(dir)
        .timeout(Duration::from_secs(90))
        .env("CARBON_NVML_LIB", "none")
        .env(
            "CARBON_POWERCAP_ROOT",
            dir.join("powercap").to_string_lossy(),
        )
        .env_remove("CARBON_METRICS_ADDR")
        .env_remove("CARBON_METRICS_SD_DIR")
        .env_remove("CARBON_PROJECT")
        .env_remove("JUPYTERHUB_USER")
        .env_remove("CARBON_COURSE");
    o = o.without_provider_env();
    o
}

fn start(o: Opts) -> Kernel {
    Kernel::start(o).unwrap_or_else(|e| panic!("kernel did not start: {e}"))
}

/// A fake RAPL package whose counter the metered commands move.
fn powercap(dir: &Path) -> PathBuf {
    let z = zone(
        &dir.join("powercap"),
        "intel-rapl:0",
        "package-0",
        1_000_000,
        262_143_328_850,
    );
    z.join("energy_uj")
}

/// `GET /metrics` over a plain socket: (status line, body).
fn scrape(addr: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Samples `name{labels} value` of the exposition (comments skipped).
fn samples(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut map = HashMap::new();
        // Label values here have no `",` inside (checked by the unit tests' escaping).
        for kv in labels.split("\",").filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once("=\"").unwrap();
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        out.push((name.to_string(), map, value.parse().unwrap()));
    }
    out
}

fn sum(s: &[(String, HashMap<String, String>, f64)], name: &str, want: &[(&str, &str)]) -> f64 {
    s.iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

fn target_of(sd: &Path) -> (PathBuf, String) {
    let files: Vec<PathBuf> = std::fs::read_dir(sd)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(files.len(), 1, "one target file: {files:?}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    let t = v[0]["targets"][0].as_str().unwrap().to_string();
    (files[0].clone(), t)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-12)
}

fn ok(e: &Exec) {
    assert_eq!(e.status(), "ok", "{:?} {}", e.errors(), e.stderr());
}

#[test]
fn scraped_counters_equal_the_csv_rows_and_the_target_lives_with_the_kernel() {
    let d = tempfile::tempdir().unwrap();
    let sd = d.path().join("sd");
    std::fs::create_dir(&sd).unwrap();
    // A kernel killed with -9 left its target; a file of something else stays.
    let stale = sd.join(format!("carbon-kernel-{DEAD_PID}-dead.json"));
    std::fs::write(&stale, "[{\"targets\":[\"127.0.0.1:1\"],\"labels\":{}}]").unwrap();
    let other = sd.join("static-targets.json");
    std::fs::write(&other, "[]").unwrap();
    let energy = powercap(d.path());
    let srv = Server::script(vec![Reply::json(wire::openai(
        "gpt-4o-mini",
        &format!("the answer {ANSWER_MARK}"),
        17,
        230,
    ))]);
    let mut k = start(
        opts(d.path())
            .env("CARBON_METRICS_ADDR", "127.0.0.1:0")
            .env("CARBON_METRICS_SD_DIR", sd.to_string_lossy())
            .env("JUPYTERHUB_USER", "alice")
            .env("CARBON_COURSE", "ml101")
            .env("OPENAI_API_KEY", KEY)
            .env("OPENAI_MODEL", "gpt-4o-mini")
            .env("OPENAI_BASE_URL", srv.url("/v1")),
    );
    assert!(!stale.exists(), "the dead kernel's target is removed");
    assert!(other.exists(), "other files are left alone");
    std::fs::remove_file(&other).unwrap();
    let (file, target) = target_of(&sd);
    assert!(
        file.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("carbon-kernel-{}-", k.pid())),
        "{file:?}"
    );
    assert!(target.starts_with("127.0.0.1:"), "{target}");
    // Before any row: served, the info metric only.
    let (status, body) = scrape(&target);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("carbon_kernel_info{"), "{body}");

    ok(&k.execute("%carbon config scope=machine country=FRA"));
    let p = energy.display();
    ok(&k.execute(&format!(
        "%carbon exec sh -c 'echo 6000000 > {p}; echo {CODE_MARK}'"
    )));
    ok(&k.execute(&format!("%%carbon\nprint {CODE_MARK}\nsleep 0.05")));
    let e = k.execute(&format!(
        "%%carbon --label {CODE_MARK}\nerror ValueError {CODE_MARK}"
    ));
    assert_eq!(e.status(), "error");
    ok(&k.execute(&format!("%llm {PROMPT_MARK} say something")));
    // A scrape while a cell runs is answered while the cell still runs, not after it: the cell
    // waits for an input only this test gives, after the scrape (an ordering, not a time: a
    // scrape queued behind the cell would never be answered, and `scrape` would fail).
    let id = k.send_execute("%%carbon\ninput go on?").unwrap();
    let asked = k.input_request(&id).unwrap();
    assert_eq!(asked["prompt"], "go on?", "{asked}");
    let (_, during) = scrape(&target);
    assert!(during.contains("carbon_cells_total"), "{during}");
    k.push_input("yes");
    let r = k.wait(&id).unwrap();
    ok(&r);
    assert!(r.stdout().contains("got: yes"), "{:?}", r.iopub);
    let st = k.execute("%carbon status");
    assert!(
        st.stdout()
            .contains(&format!("metrics     http://{target}/metrics"))
            || st
                .displays()
                .iter()
                .any(|d| d.to_string().contains(&target))
            || st.result_text().is_some_and(|t| t.contains(&target)),
        "{:?}",
        st.iopub
    );

    let (_, body) = scrape(&target);
    let dir = d.path().to_string_lossy().into_owned();
    for secret in [
        CODE_MARK,
        PROMPT_MARK,
        ANSWER_MARK,
        "SECRET",
        "sk-",
        "/tmp",
        &dir,
    ] {
        assert!(!body.contains(secret), "{secret} in the metrics:\n{body}");
    }
    let s = samples(&body);
    let rows = csv_rows(&d.path().join("emissions.csv"));
    assert_eq!(rows.len(), 5, "{rows:?}");
    for (n, l, _) in &s {
        if n.starts_with("carbon_") {
            assert_eq!(l["user"], "alice", "{n}");
            assert_eq!(l["course"], "ml101", "{n}");
            assert!(!l["kernel_id"].is_empty());
        }
    }
    let f = |r: &HashMap<String, String>, c: &str| r[c].parse::<f64>().unwrap_or(0.0);
    // Emissions (g) and energy (J) by kind and language; cells by language and status.
    let mut keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r["kind"].clone(), r["language"].clone()))
        .collect();
    keys.sort();
    keys.dedup();
    assert!(keys.len() >= 3, "{keys:?}");
    for (kind, lang) in &keys {
        let of: Vec<&HashMap<String, String>> = rows
            .iter()
            .filter(|r| &r["kind"] == kind && &r["language"] == lang)
            .collect();
        let want_g: f64 = of.iter().map(|r| f(r, "emissions") * 1000.0).sum();
        let got_g = sum(
            &s,
            "carbon_emissions_grams_total",
            &[("kind", kind.as_str()), ("language", lang.as_str())],
        );
        assert!(close(got_g, want_g), "{kind}/{lang}: {got_g} g vs {want_g}");
        for comp in ["cpu", "ram", "gpu"] {
            let want_j: f64 = of
                .iter()
                .map(|r| f(r, &format!("{comp}_energy")) * 3.6e6)
                .sum();
            let got_j = sum(
                &s,
                "carbon_energy_joules_total",
                &[
                    ("kind", kind.as_str()),
                    ("language", lang.as_str()),
                    ("component", comp),
                ],
            );
            assert!(
                close(got_j, want_j),
                "{kind}/{lang}/{comp}: {got_j} J vs {want_j}"
            );
        }
    }
    let total_g: f64 = rows.iter().map(|r| f(r, "emissions") * 1000.0).sum();
    assert!(total_g > 0.0);
    assert!(close(sum(&s, "carbon_emissions_grams_total", &[]), total_g));
    for r in rows.iter().filter(|r| r["kind"] == "cell") {
        let n = rows
            .iter()
            .filter(|x| {
                x["kind"] == "cell" && x["language"] == r["language"] && x["status"] == r["status"]
            })
            .count() as f64;
        let got = sum(
            &s,
            "carbon_cells_total",
            &[
                ("language", r["language"].as_str()),
                ("status", r["status"].as_str()),
            ],
        );
        assert_eq!(got, n, "{} {}", r["language"], r["status"]);
    }
    assert_eq!(
        sum(&s, "carbon_cells_total", &[("language", "command")]),
        1.0
    );
    assert_eq!(sum(&s, "carbon_cells_total", &[("status", "error")]), 1.0);
    let llm = rows.iter().find(|r| r["kind"] == "llm").unwrap();
    assert_eq!(
        sum(
            &s,
            "carbon_llm_requests_total",
            &[
                ("provider", "openai"),
                ("model", "gpt-4o-mini"),
                ("status", "ok")
            ]
        ),
        1.0
    );
    assert_eq!(
        sum(&s, "carbon_llm_tokens_total", &[("direction", "in")]),
        f(llm, "prompt_tokens")
    );
    assert_eq!(
        sum(&s, "carbon_llm_tokens_total", &[("direction", "out")]),
        230.0
    );
    let info = s
        .iter()
        .find(|(n, _, _)| n == "carbon_kernel_info")
        .unwrap();
    assert_eq!(info.1["version"], env!("CARGO_PKG_VERSION"));
    assert!(info.1["sensor"].contains("RAPL"), "{:?}", info.1);
    assert!(info.1["method"].contains("measured"), "{:?}", info.1);

    // Shutdown removes the target.
    k.shutdown(false);
    assert!(k.wait_exit(Duration::from_secs(20)).is_some());
    assert!(!file.exists(), "the target file is removed on shutdown");
}

#[test]
fn port_in_use_is_said_and_metering_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let sd = d.path().join("sd");
    let mut k = start(
        opts(d.path())
            .env("CARBON_METRICS_ADDR", &addr)
            .env("CARBON_METRICS_SD_DIR", sd.to_string_lossy()),
    );
    ok(&k.execute("%%carbon\nprint x"));
    assert_eq!(csv_rows(&d.path().join("emissions.csv")).len(), 1);
    let log = k.log();
    assert!(
        log.contains(&format!("CARBON_METRICS_ADDR={addr}")) && log.contains("already in use"),
        "{log}"
    );
    assert!(log.contains("metering goes on"), "{log}");
    let st = k.execute("%carbon status");
    let shown = format!("{:?}", st.iopub);
    assert!(shown.contains("not served"), "{shown}");
    // No target is advertised for a kernel that serves nothing.
    assert!(!sd.exists() || std::fs::read_dir(&sd).unwrap().next().is_none());
    assert!(k.is_alive());
    let bad = start(opts(d.path()).env("CARBON_METRICS_ADDR", "localhost"));
    assert!(bad.log().contains("is not an address"), "{}", bad.log());
}

#[test]
fn unwritable_sd_dir_is_said_once_and_metrics_are_still_served() {
    let d = tempfile::tempdir().unwrap();
    // A folder below a plain file cannot be created, even by root.
    let blocker = d.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let sd = blocker.join("sd");
    // The course may come from the notebook folder's .env, like every CARBON_* setting.
    std::fs::write(d.path().join(".env"), "CARBON_COURSE=from-dotenv\n").unwrap();
    let mut k = start(
        opts(d.path())
            .env("CARBON_METRICS_ADDR", "127.0.0.1:0")
            .env("CARBON_METRICS_SD_DIR", sd.to_string_lossy())
            .env("CARBON_PROJECT", "proj-b"),
    );
    ok(&k.execute("%%carbon\nprint y"));
    ok(&k.execute("%%carbon\nprint z"));
    let log = k.log();
    assert_eq!(
        log.matches("cannot write this kernel's Prometheus target")
            .count(),
        1,
        "{log}"
    );
    let url = log
        .split("serving http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .unwrap_or_else(|| panic!("no serving line: {log}"))
        .to_string();
    let (_, body) = scrape(&url);
    let s = samples(&body);
    assert_eq!(
        sum(
            &s,
            "carbon_cells_total",
            &[("user", "proj-b"), ("course", "from-dotenv")]
        ),
        2.0,
        "{body}"
    );
    assert!(k.is_alive());
}
