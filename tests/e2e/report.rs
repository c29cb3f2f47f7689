//! e2e: `carbon-kernel report` on a class of emissions.csv files laid out in a temp dir (our format,
//! CodeCarbon 3.x's and 3.1.0's, a foreign CSV, a binary file, a missing path), run as the real
//! binary; and the README's magics reference checked against `carbon-kernel magics --markdown`.

use carbon_kernel::cli::magics::{
    MAGICS_BEGIN, MAGICS_END, expected_magics_section, magics_section,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_carbon-kernel");

/// CodeCarbon 3.x's columns (METHODOLOGY §2), written out here rather than imported so that a
/// change on the reader's side cannot make this fixture agree with it by construction.
const CC38: &str = "timestamp,project_name,run_id,experiment_id,duration,emissions,emissions_rate,\
cpu_power,gpu_power,ram_power,cpu_energy,gpu_energy,ram_energy,energy_consumed,water_consumed,\
country_name,country_iso_code,region,cloud_provider,cloud_region,os,python_version,codecarbon_version,\
cpu_count,cpu_model,gpu_count,gpu_model,longitude,latitude,ram_total_size,tracking_mode,\
cpu_utilization_percent,gpu_utilization_percent,ram_utilization_percent,ram_used_gb,on_cloud,pue,wue";

/// CodeCarbon 3.1.0's 34 columns (the seed's committed file).
const CC34: &str = "timestamp,project_name,run_id,experiment_id,duration,emissions,emissions_rate,\
cpu_power,gpu_power,ram_power,cpu_energy,gpu_energy,ram_energy,energy_consumed,water_consumed,\
country_name,country_iso_code,region,cloud_provider,cloud_region,os,python_version,codecarbon_version,\
cpu_count,cpu_model,gpu_count,gpu_model,longitude,latitude,ram_total_size,tracking_mode,on_cloud,pue,wue";

const OURS: &str =
    "kind,language,label,method,llm_provider,llm_model,prompt_tokens,completion_tokens";

/// One fixture row, the oracle for every total.
struct Fx {
    student: &'static str,
    ts: &'static str,
    kind: &'static str,
    language: &'static str,
    model: &'static str, // provider:model for llm rows
    duration: f64,
    energy: f64,
    emissions: f64,
}

fn fixture() -> Vec<Fx> {
    let f = |student, ts, kind, language, model, duration, energy, emissions| Fx {
        student,
        ts,
        kind,
        language,
        model,
        duration,
        energy,
        emissions,
    };
    vec![
        f(
            "alice",
            "2026-03-02T09:00:01Z",
            "cell",
            "python",
            "",
            2.5,
            3.1e-5,
            1.47e-5,
        ),
        f(
            "alice",
            "2026-03-02T09:03:10Z",
            "cell",
            "rust",
            "",
            4.25,
            6.2e-5,
            2.9e-5,
        ),
        f(
            "alice",
            "2026-03-03T10:00:00Z",
            "llm",
            "",
            "groq:llama-3.3-70b-versatile",
            0.9,
            2.2e-4,
            8.8e-5,
        ),
        f(
            "bob",
            "2026-03-02T09:10:00+01:00",
            "cell",
            "java",
            "",
            1.75,
            1.9e-5,
            9.0e-6,
        ),
        f(
            "bob",
            "2026-03-02T09:11:00+01:00",
            "cell",
            "python",
            "",
            0.5,
            4.0e-6,
            1.9e-6,
        ),
        f(
            "bob",
            "2026-03-04T14:00:00Z",
            "llm",
            "",
            "openai:gpt-4",
            2.0,
            7.5e-4,
            3.0e-4,
        ),
        f(
            "bob",
            "2026-03-04T14:01:00Z",
            "llm",
            "",
            "groq:llama-3.3-70b-versatile",
            0.7,
            1.1e-4,
            4.4e-5,
        ),
        // CodeCarbon's own timestamps: no offset.
        f(
            "carol",
            "2026-03-02T11:00:00",
            "",
            "",
            "",
            10.0,
            1.2e-4,
            5.7e-5,
        ),
        f(
            "carol",
            "2026-03-05T11:00:00",
            "",
            "",
            "",
            3.0,
            3.0e-5,
            1.4e-5,
        ),
        f(
            "dave",
            "2025-11-17T12:51:49",
            "",
            "",
            "",
            1.0587332029972458,
            2.042364662917729e-06,
            1.1445207334524663e-07,
        ),
    ]
}

/// 38 CodeCarbon fields for a row (the ones the report reads set, plausible values elsewhere).
fn cc_fields(r: &Fx, project: &str) -> Vec<String> {
    let mut v: Vec<String> = CC38.split(',').map(|_| String::new()).collect();
    let set = |v: &mut Vec<String>, col: &str, val: String| {
        let i = CC38.split(',').position(|c| c == col).unwrap();
        v[i] = val;
    };
    set(&mut v, "timestamp", r.ts.into());
    set(&mut v, "project_name", project.into());
    set(&mut v, "run_id", format!("run-{}", r.student));
    set(&mut v, "duration", r.duration.to_string());
    set(&mut v, "emissions", r.emissions.to_string());
    set(&mut v, "energy_consumed", r.energy.to_string());
    set(&mut v, "cpu_energy", r.energy.to_string());
    set(&mut v, "country_name", "France".into());
    set(&mut v, "country_iso_code", "FRA".into());
    set(
        &mut v,
        "cpu_model",
        "\"Intel(R) Core(TM) i7, 8 cores\"".into(),
    ); // a quoted comma
    set(&mut v, "pue", "1.0".into());
    v
}

fn lay_out_class(dir: &Path) -> Vec<PathBuf> {
    let rows = fixture();
    let mut files = Vec::new();
    for student in ["alice", "bob"] {
        let mut text = format!("{CC38},{OURS}\n");
        for r in rows.iter().filter(|r| r.student == student) {
            let (provider, model) = r.model.split_once(':').unwrap_or(("", ""));
            let (pt, ct) = if r.kind == "llm" {
                ("12", "250")
            } else {
                ("", "")
            };
            text.push_str(&format!(
                "{},{},{},cell label,rapl,{provider},{model},{pt},{ct}\n",
                cc_fields(r, "carbon-kernel").join(","),
                r.kind,
                r.language
            ));
        }
        let p = dir.join(student).join("emissions.csv");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    // carol: CodeCarbon 3.x only, default project name.
    let mut text = format!("{CC38}\n");
    for r in rows.iter().filter(|r| r.student == "carol") {
        text.push_str(&cc_fields(r, "codecarbon").join(","));
        text.push('\n');
    }
    let carol = dir.join("carol").join("emissions.csv");
    std::fs::create_dir_all(carol.parent().unwrap()).unwrap();
    std::fs::write(&carol, text).unwrap();
    files.push(carol);
    // dave: CodeCarbon 3.1.0's 34 columns, the seed's sample row.
    let dave = dir.join("dave.csv");
    std::fs::write(
        &dave,
        format!(
            "{CC34}\n2025-11-17T12:51:49,test_streamlit,e4629368-95c8-47f8-93dd-af22083c1e29,5b0fa12a-3dd7-45bb-9766-cc326314d9f1,\
1.0587332029972458,1.1445207334524663e-07,1.0810284689403885e-07,3.2022898016,0.0,10.0,4.957505101762142e-07,0.0,\
1.546614152741515e-06,2.042364662917729e-06,0.0,France,FRA,grand est,,,Linux-5.15.167.4-microsoft-standard-WSL2-x86_64-with-glibc2.39,\
3.12.3,3.1.0,8,Intel(R) Core(TM) Ultra 7 256V,,,6.1862,48.6822,7.531269073486328,machine,N,1.0,0.0\n"
        ),
    )
    .unwrap();
    files.push(dave);
    // Foreign and broken inputs: each must be named and skipped.
    let grades = dir.join("grades.csv");
    std::fs::write(&grades, "name,grade\nalice,15\nbob,12\n").unwrap();
    files.push(grades);
    let blob = dir.join("photo.csv");
    std::fs::write(&blob, [0x89u8, b'P', b'N', b'G', 0, 0xff, 0xfe, 0x00]).unwrap();
    files.push(blob);
    files.push(dir.join("missing").join("emissions.csv"));
    files
}

fn run(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("carbon-kernel runs")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-30)
}

/// group key → (emissions, energy, duration, rows) from the JSON totals.
fn groups(v: &Value, name: &str) -> BTreeMap<String, (f64, f64, f64, u64)> {
    v[name]
        .as_array()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
        .iter()
        .map(|g| {
            let n = g["cells"].as_u64().unwrap()
                + g["llm_requests"].as_u64().unwrap()
                + g["runs"].as_u64().unwrap();
            (
                g["key"].as_str().unwrap().to_string(),
                (
                    g["emissions_kg"].as_f64().unwrap(),
                    g["energy_kwh"].as_f64().unwrap(),
                    g["duration_s"].as_f64().unwrap(),
                    n,
                ),
            )
        })
        .collect()
}

fn expect(key: impl Fn(&Fx) -> Option<String>) -> BTreeMap<String, (f64, f64, f64, u64)> {
    let mut m: BTreeMap<String, (f64, f64, f64, u64)> = BTreeMap::new();
    for r in fixture() {
        if let Some(k) = key(&r) {
            let e = m.entry(k).or_default();
            e.0 += r.emissions;
            e.1 += r.energy;
            e.2 += r.duration;
            e.3 += 1;
        }
    }
    m
}

fn assert_groups(
    got: &BTreeMap<String, (f64, f64, f64, u64)>,
    want: &BTreeMap<String, (f64, f64, f64, u64)>,
    what: &str,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what} keys"
    );
    for (k, w) in want {
        let g = got[k];
        assert!(
            close(g.0, w.0) && close(g.1, w.1) && close(g.2, w.2) && g.3 == w.3,
            "{what} {k}: got {g:?}, want {w:?}"
        );
    }
}

#[test]
fn class_report_totals_html_and_skipped_files() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = lay_out_class(dir.path());
    let html = dir.path().join("out").join("class.html");
    std::fs::create_dir_all(html.parent().unwrap()).unwrap();
    let json = dir.path().join("out").join("totals.json");
    let mut args: Vec<&std::ffi::OsStr> = vec!["report".as_ref()];
    args.extend(inputs.iter().map(|p| p.as_os_str()));
    args.extend([
        "--out".as_ref(),
        html.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
    ]);
    let out = run(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "report failed: {stdout}\n{stderr}");

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    // Ours say project_name=carbon-kernel in every file: that names no student, so files do.
    assert_eq!(v["students_are_files"], Value::Bool(true));
    assert_groups(
        &groups(&v, "students"),
        &expect(|r| Some(r.student.into())),
        "students",
    );
    assert_groups(
        &groups(&v, "languages"),
        &expect(|r| {
            // LLM requests are not code: they are per model only.
            match r.kind {
                "llm" => None,
                "" => Some("not recorded (CodeCarbon)".into()),
                _ => Some(r.language.into()),
            }
        }),
        "languages",
    );
    assert_groups(
        &groups(&v, "models"),
        &expect(|r| (r.kind == "llm").then(|| r.model.into())),
        "models",
    );
    let total = &v["total"];
    let want: f64 = fixture().iter().map(|r| r.emissions).sum();
    assert!(
        close(total["emissions_kg"].as_f64().unwrap(), want),
        "total {total}"
    );
    // Per day in UTC: bob's 09:10+01:00 rows fall on 2026-03-02 08:10Z.
    let days = groups(&v, "days");
    assert_eq!(
        days.keys().cloned().collect::<Vec<_>>(),
        [
            "2025-11-17",
            "2026-03-02",
            "2026-03-03",
            "2026-03-04",
            "2026-03-05"
        ]
    );
    assert_eq!(days["2026-03-02"].3, 5);

    // The table on stdout: every student, the total in grams, each bad input named with a reason.
    for s in [
        "alice",
        "bob",
        "carol",
        "dave",
        "groq:llama-3.3-70b-versatile",
        "openai:gpt-4",
    ] {
        assert!(stdout.contains(s), "{s} missing from:\n{stdout}");
    }
    assert!(
        stdout.contains(&carbon_magics::units::fmt_co2(carbon_magics::units::KgCo2(
            want
        ))),
        "{stdout}"
    );
    for (name, why) in [
        ("grades.csv", "not an emissions.csv"),
        ("photo.csv", "not a text file"),
        ("missing", "cannot read"),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("skipped") && l.contains(name))
            .unwrap_or_else(|| panic!("{name} not named as skipped:\n{stdout}"));
        assert!(line.contains(why), "{line}");
    }

    // The HTML: self-contained (no script, no external resource), charts as inline SVG.
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.matches("<svg").count() >= 4, "expected 4 charts");
    for forbidden in ["<script", "<link", " src=", "<img", "url("] {
        assert!(
            !page.contains(forbidden),
            "HTML not self-contained: {forbidden}"
        );
    }
    for s in ["alice", "carol", "grades.csv", "photo.csv", "openai:gpt-4"] {
        assert!(page.contains(s), "{s} missing from the HTML");
    }
}

#[test]
fn report_with_only_bad_files_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let grades = dir.path().join("grades.csv");
    std::fs::write(&grades, "name,grade\nalice,15\n").unwrap();
    let html = dir.path().join("r.html");
    let out = run(&[
        "report".as_ref(),
        grades.as_os_str(),
        "--out".as_ref(),
        html.as_os_str(),
    ]);
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("grades.csv") && all.contains("no emissions.csv could be read"),
        "{all}"
    );
    assert!(!html.exists());
}

#[test]
fn readme_magics_reference_matches_the_registry() {
    let out = run(&["magics".as_ref(), "--markdown".as_ref()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated = String::from_utf8(out.stdout).unwrap();
    assert_eq!(generated, carbon_kernel::exec::markdown_reference());
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("README.md at the workspace root");
    let section = magics_section(&readme)
        .unwrap_or_else(|| panic!("README.md has no {MAGICS_BEGIN} … {MAGICS_END} section"));
    assert!(
        section == expected_magics_section(),
        "README.md's magics reference is out of date with the registry; regenerate it with\n  \
         cargo run -p carbon-kernel -- magics --update README.md"
    );
}

/// A semester: `students` folders of `rows` cell rows each, one row every 97 minutes from
/// 2026-09-07 (so about 33 days for 500 rows), emissions known per row. Returns each student's
/// (name, emissions, rows).
fn lay_out_semester(dir: &Path, students: usize, rows: usize) -> Vec<(String, f64, u64)> {
    let start = chrono::NaiveDate::from_ymd_opt(2026, 9, 7)
        .unwrap()
        .and_hms_opt(8, 0, 0)
        .unwrap();
    (0..students)
        .map(|s| {
            let name = format!("s{s:03}");
            let mut text = format!("{CC38},{OURS}\n");
            let mut total = 0.0;
            for k in 0..rows {
                let ts = start + chrono::Duration::minutes(97 * k as i64 + s as i64);
                let emissions = (1 + (s * 7 + k) % 13) as f64 * 1e-7;
                total += emissions;
                let r = Fx {
                    student: "",
                    ts: "",
                    kind: "cell",
                    language: "python",
                    model: "",
                    duration: 0.5,
                    energy: emissions * 20.0,
                    emissions,
                };
                let mut f = cc_fields(&r, "carbon-kernel");
                f[0] = ts.format("%Y-%m-%dT%H:%M:%S").to_string();
                text.push_str(&format!("{},cell,python,cell {k},rapl,,,,\n", f.join(",")));
            }
            let p = dir.join(&name).join("emissions.csv");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            (name, total, rows as u64)
        })
        .collect()
}

/// Hundreds of students (here 120 × 500 rows): the HTML stays small (drawing every row, as the
/// report did, made it several MB), lists the 30 most emitting and counts the others; the JSON
/// keeps every student with exact totals; --since/--until keep a period and say what they left out.
#[test]
fn semester_report_stays_small_and_the_json_keeps_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("class");
    let want = lay_out_semester(&data, 120, 500);
    let html = dir.path().join("class.html");
    let json = dir.path().join("totals.json");
    let out = run(&[
        "report".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        html.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.len() < 600_000,
        "HTML is {} bytes for 60,000 rows",
        page.len()
    );
    assert!(page.contains("… and 90 more students"), "no 'more' line");
    assert!(
        page.contains("per day"),
        "a month of rows is charted per day"
    );
    assert_eq!(page.matches("<svg").count(), 3, "students, languages, time");

    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let got = groups(&v, "students");
    assert_eq!(got.len(), want.len(), "every student is in the JSON");
    for (name, emissions, rows) in &want {
        let g = got[name];
        assert!(
            (g.0 - emissions).abs() <= 1e-9 * emissions && g.3 == *rows,
            "{name}: got {g:?}, want {emissions} over {rows} rows"
        );
    }
    assert_eq!(v["files"].as_array().unwrap().len(), 120);

    // One lab session: 2026-09-10 from 10:00 (included) to 12:00 (excluded). Student s rows are
    // at 08:00 + 97 k + s minutes; count them here the same way.
    let since = chrono::NaiveDate::from_ymd_opt(2026, 9, 10)
        .unwrap()
        .and_hms_opt(10, 0, 0)
        .unwrap();
    let until = since + chrono::Duration::hours(2);
    let start = since - chrono::Duration::days(3) - chrono::Duration::hours(2);
    let in_period: u64 = (0..120i64)
        .flat_map(|s| (0..500i64).map(move |k| start + chrono::Duration::minutes(97 * k + s)))
        .filter(|t| *t >= since && *t < until)
        .count() as u64;
    assert!(in_period > 0);
    let out = run(&[
        "report".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        html.as_os_str(),
        "--json".as_ref(),
        json.as_os_str(),
        "--since".as_ref(),
        "2026-09-10T10:00".as_ref(),
        "--until".as_ref(),
        "2026-09-10T12:00".as_ref(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let t = &v["total"];
    assert_eq!(t["cells"].as_u64().unwrap(), in_period, "{t}");
    assert_eq!(
        v["period"]["rows_outside"].as_u64().unwrap(),
        120 * 500 - in_period
    );
    assert!(
        stdout.contains(&format!(
            "Left out: {} row(s) outside it, 0 row(s) without a readable timestamp",
            120 * 500 - in_period
        )),
        "{stdout}"
    );
    assert!(std::fs::read_to_string(&html).unwrap().contains("per hour"));
}
