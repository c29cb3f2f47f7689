//! e2e: llm — `%llm` / `%%llm` through the real kernel binary over ZeroMQ, against loopback
//! servers (127.0.0.1) speaking each provider's wire format (`carbon_magics::testing::llm_server`),
//! fault modes included. Footprint figures are checked against values computed by hand.

use crate::harness::{Exec, Kernel, Opts};
use carbon_magics::testing::llm_server::{Reply, Server, StreamEnd, refused_url, wire};
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const OPENAI_KEY: &str = "sk-proj-E2E-SECRET-7f3a9c";
const GROQ_KEY: &str = "gsk_E2E_SECRET_51d0";
const GEMINI_KEY: &str = "AIza-E2E-SECRET-aa11";
const HF_KEY: &str = "hf_E2E_SECRET_9e9e";

/// A kernel whose LLM variables are only the given ones (the test process's own are removed).
fn kernel(dir: &Path, vars: &[(&str, String)]) -> Kernel {
    let mut o = Opts::default().test_runtime().workdir(dir);
    o = o.without_provider_env();
    for k in [
        "LLM_DEFAULT",
        "LLM_TIMEOUT_S",
        "LLM_PROFILES_FILE",
        "LLM_MODELS_FILE",
    ] {
        o = o.env_remove(k);
    }
    // fast backoff so retry tests do not sleep 0.5 s per retry (server hints are still honoured)
    o = o.env("LLM_RETRY_BASE_MS", "20");
    for (k, v) in vars {
        o = o.env(*k, v.clone());
    }
    Kernel::start(o).expect("kernel starts")
}

/// Every iopub message of the request as text (to check that no key leaks anywhere).
fn all_text(r: &Exec) -> String {
    r.iopub
        .iter()
        .map(|m| m.content.to_string())
        .collect::<Vec<_>>()
        .join("\n")
        + &r.reply.to_string()
}

fn no_secret(s: &str) {
    for k in [OPENAI_KEY, GROQ_KEY, GEMINI_KEY, HF_KEY] {
        assert!(!s.contains(k), "a key leaked: {k}");
    }
    assert!(!s.contains("SECRET"), "part of a key leaked");
}

/// The last markdown shown in the answer display of `spec` (the display itself, or its last
/// update: a fast answer is shown once, a slow one is created and then updated).
fn final_answer(r: &Exec, spec: &str) -> String {
    let display = r
        .displays()
        .into_iter()
        .find(|d| {
            d["data"]["text/markdown"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("**{spec}**")))
        })
        .unwrap_or_else(|| panic!("no answer display for {spec}: {:?}", r.types()));
    let id = &display["transient"]["display_id"];
    assert!(id.is_string(), "the answer display has an id: {display}");
    std::iter::once(display)
        .chain(
            r.updates()
                .into_iter()
                .filter(|u| &u["transient"]["display_id"] == id),
        )
        .filter_map(|u| u["data"]["text/markdown"].as_str())
        .next_back()
        .unwrap_or("")
        .to_string()
}

fn html_report(r: &Exec) -> String {
    r.displays()
        .iter()
        .filter_map(|d| d["data"]["text/html"].as_str())
        .find(|h| h.contains("How this was computed"))
        .unwrap_or_else(|| panic!("no comparison table: {:?}", r.types()))
        .to_string()
}

#[test]
fn one_model_streams_markdown_then_table_chart_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::script(vec![
        Reply::sse(wire::openai_sse(
            "gpt-4o-mini-2024-07-18",
            &["# Ti", "tle\n\nHello", " **world**"],
            9,
            500,
        ))
        .stream_end(Duration::from_millis(120), StreamEnd::Clean),
    ]);
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_MODEL", "gpt-4o-mini,gpt-4o".into()),
            ("OPENAI_BASE_URL", srv.url("/v1")),
        ],
    );
    let r = k.execute("%llm Say hello in Markdown");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    // the default model is the first of OPENAI_MODEL, and the request went to the loopback server
    let got = srv.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].json()["model"], "gpt-4o-mini");
    assert_eq!(
        got[0].json()["messages"][0]["content"],
        "Say hello in Markdown"
    );
    // streamed: at least one intermediate update before the final one
    let updates: Vec<String> = r
        .updates()
        .iter()
        .filter_map(|u| u["data"]["text/markdown"].as_str().map(String::from))
        .collect();
    assert!(
        updates.iter().any(|u| u.contains("streaming")),
        "{updates:?}"
    );
    let fin = final_answer(&r, "openai:gpt-4o-mini");
    assert!(fin.contains("# Title\n\nHello **world**"), "{fin}");
    assert!(fin.contains("9 → 500 tokens"), "{fin}");
    // chart (SVG) and the comparison table with the explanation
    assert!(r.displays().iter().any(|d| {
        d["data"]["image/svg+xml"]
            .as_str()
            .is_some_and(|s| s.contains("<svg"))
    }));
    let html = html_report(&r);
    // gpt-4o-mini has no seed hardware profile: visible warning, the seed's fallback is used
    assert!(html.contains("no hardware profile"), "{html}");
    // EcoLogits for gpt-4o-mini with 500 tokens (the worked example of llm-footprint.md §1.11):
    // E_gpu = 500 × (1.1665e-6 × e^(−0.7172) × P + 4.0529e-5)/1000 with P = 8 … 28 B; the latency
    // cap is the measured latency (< 6.87 s, the model's own L), so only the small server and
    // embodied shares depend on it. With ΔT ≤ 1 s here: E ∈ [1.2 × 2.2542e-5, 1.2 × (2.8236e-5 +
    // 6.5e-7)] → the Wh shown starts with 0.0270 (min, ΔT→0 gives 0.02705 … 0.0275 for ΔT ≤ 1 s).
    let text = r
        .displays()
        .iter()
        .filter_map(|d| d["data"]["text/plain"].as_str())
        .find(|t| t.contains("How this was computed"))
        .unwrap()
        .to_string();
    assert!(text.contains("0.027"), "{text}");
    no_secret(&all_text(&r));
    // history, in memory and on disk
    let h = k.execute("%llm history");
    assert!(h.result_text().unwrap().contains("openai:gpt-4o-mini"));
    let disk = std::fs::read_to_string(dir.path().join("data/llm_history.jsonl")).unwrap();
    let v: Value = serde_json::from_str(disk.lines().next().unwrap()).unwrap();
    assert_eq!(v["completion_tokens"], 500);
    assert_eq!(v["prompt"], "Say hello in Markdown");
    no_secret(&disk);
    // emissions.csv: the cells' file and columns, one row for this request
    let rows = csv_rows(dir.path());
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row["kind"], "llm");
    assert_eq!(row["status"], "ok");
    assert_eq!(row["llm_provider"], "openai");
    assert_eq!(row["llm_model"], "gpt-4o-mini");
    assert_eq!(row["completion_tokens"], "500");
    assert_eq!(row["country_iso_code"], "USA");
    assert_eq!(row["pue"], "1.2");
    let (lo, mid, hi) = (
        row["emissions_min_kg"].parse::<f64>().unwrap(),
        row["emissions"].parse::<f64>().unwrap(),
        row["emissions_max_kg"].parse::<f64>().unwrap(),
    );
    assert!(lo < mid && mid < hi && (mid - (lo + hi) / 2.0).abs() < 1e-15);
    assert!(row["method"].contains("seed latency x hardware"));
    no_secret(&std::fs::read_to_string(dir.path().join("emissions.csv")).unwrap());
    // A metered cell of the same kernel session shares the request's experiment_id.
    let c = k.execute("%%carbon\nprint a");
    assert_eq!(c.status(), "ok", "{:?}", c.iopub);
    let rows = csv_rows(dir.path());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["kind"], "cell");
    assert!(!rows[0]["experiment_id"].is_empty());
    assert_eq!(rows[0]["experiment_id"], rows[1]["experiment_id"]);
}

/// emissions.csv rows as header → value maps.
fn csv_rows(dir: &Path) -> Vec<std::collections::HashMap<String, String>> {
    let (head, rows) = crate::harness::csv_table(&dir.join("emissions.csv"));
    assert_eq!(
        &head[..2],
        ["timestamp", "project_name"],
        "CodeCarbon's columns first"
    );
    rows
}

/// Replies OK only once `other` has also received its request (fails if requests are serial).
fn waits_for(
    other: Arc<AtomicBool>,
    me: Arc<AtomicBool>,
    ok: Reply,
) -> impl Fn(usize, &carbon_magics::testing::llm_server::Recorded) -> Reply {
    move |_, _| {
        me.store(true, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(5);
        while !other.load(Ordering::SeqCst) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        if other.load(Ordering::SeqCst) {
            ok.clone()
        } else {
            Reply::status_json(
                500,
                wire::openai_error("requests were not concurrent", "server_error", "x"),
            )
        }
    }
}

#[test]
fn several_models_run_concurrently_and_faults_stay_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let openai = Server::start(waits_for(
        b.clone(),
        a.clone(),
        Reply::json(wire::openai("gpt-4o-2024-08-06", "from openai", 5, 20)),
    ));
    let groq = Server::start(waits_for(
        a,
        b,
        Reply::json(wire::groq(
            "llama-3.3-70b-versatile",
            "from groq",
            5,
            40,
            0.25,
        )),
    ));
    // Gemini: 429 with RetryInfo first, then a stream
    let gemini = Server::script(vec![
        Reply::status_json(429, wire::gemini_rate_limited("0.2s")),
        Reply::sse(wire::gemini_sse(
            "gemini-2.5-flash",
            &["from ", "gemini"],
            3,
            4,
            6,
        )),
    ]);
    let hf = Server::script(vec![Reply::status_json(
        401,
        wire::openai_error(
            &format!("Invalid credentials in Authorization header {HF_KEY}"),
            "auth",
            "invalid_api_key",
        ),
    )]);
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", openai.url("/v1")),
            ("GROQ_API_KEY", GROQ_KEY.into()),
            ("GROQ_BASE_URL", groq.url("/openai/v1")),
            ("GEMINI_API_KEY", GEMINI_KEY.into()),
            ("GEMINI_BASE_URL", gemini.url("/v1beta")),
            ("HUGGINGFACE_API_KEY", HF_KEY.into()),
            ("HUGGINGFACE_BASE_URL", hf.url("/v1")),
            ("OLLAMA_BASE_URL", refused_url("/v1")),
        ],
    );
    let r = k.execute(
        "%%llm --models openai:gpt-4o,groq:llama-3.3-70b-versatile,gemini:gemini-2.5-flash,hf:deepseek-ai/DeepSeek-V3.1:novita,ollama:llama3.2 --max-tokens 50\nCompare yourselves.",
    );
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    assert!(final_answer(&r, "openai:gpt-4o").contains("from openai"));
    assert!(final_answer(&r, "groq:llama-3.3-70b-versatile").contains("from groq"));
    let g = final_answer(&r, "gemini:gemini-2.5-flash");
    assert!(g.contains("from gemini") && g.contains("2 attempts"), "{g}");
    let got = gemini.received();
    assert!(
        got[1].at.duration_since(got[0].at) >= Duration::from_millis(200),
        "RetryInfo honoured"
    );
    let h = final_answer(&r, "hf:deepseek-ai/DeepSeek-V3.1:novita");
    assert!(
        h.contains("HUGGINGFACE_API_KEY") && h.contains("401"),
        "{h}"
    );
    let o = final_answer(&r, "ollama:llama3.2");
    assert!(
        o.contains("cannot connect") && o.contains("OLLAMA_BASE_URL"),
        "{o}"
    );
    // HF router got the model with its :provider suffix
    assert_eq!(
        hf.received()[0].json()["model"],
        "deepseek-ai/DeepSeek-V3.1:novita"
    );
    let rows = csv_rows(dir.path());
    let status: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r["llm_provider"].as_str(), r["status"].as_str()))
        .collect();
    assert_eq!(
        status,
        [
            ("openai", "ok"),
            ("groq", "ok"),
            ("gemini", "ok"),
            ("hf", "error"),
            ("ollama", "error")
        ]
    );
    let html = html_report(&r);
    // Groq's completion_time (0.25 s) is the latency bound of the EcoLogits method
    assert!(html.contains("completion_time 0.25 s"), "{html}");
    no_secret(&all_text(&r));
}

#[test]
fn timeouts_stalls_broken_streams_and_malformed_json_each_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Server::script(vec![
        Reply::json(wire::openai("m", "late", 1, 1)).delayed(Duration::from_secs(20)),
    ]);
    let ev = wire::openai_sse("m", &["part", "ial"], 1, 2);
    let stall = Server::script(vec![
        Reply::sse(ev[..4].to_vec())
            .stream_end(Duration::ZERO, StreamEnd::Stall(Duration::from_secs(20))),
    ]);
    let broken = Server::script(vec![
        Reply::sse(ev[..3].to_vec()).stream_end(Duration::ZERO, StreamEnd::Break),
    ]);
    let malformed = Server::script(vec![Reply::raw(200, "<html>502 Bad Gateway</html>")]);
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", slow.url("/v1")),
            ("GROQ_API_KEY", GROQ_KEY.into()),
            ("GROQ_BASE_URL", stall.url("/v1")),
            ("HUGGINGFACE_API_KEY", HF_KEY.into()),
            ("HUGGINGFACE_BASE_URL", broken.url("/v1")),
            ("LLM_LOCAL_BASE_URL", malformed.url("/v1")),
        ],
    );
    let r = k
        .execute_with_timeout(
            "%%llm --models openai:a,groq:b,hf:c,local:d --timeout 1.5\nhello",
            Duration::from_secs(15),
        )
        .expect("the timeout bounds the cell");
    assert_eq!(r.status(), "error");
    assert!(final_answer(&r, "openai:a").contains("no answer within the timeout of 1.5 s"));
    let s = final_answer(&r, "groq:b");
    assert!(s.contains("stalled") && s.contains("partial"), "{s}");
    assert!(s.contains("\n\npartial"), "partial text kept: {s}");
    assert!(final_answer(&r, "hf:c").contains("broke"));
    assert!(final_answer(&r, "local:d").contains("malformed"));
    assert_eq!(r.errors()[0]["ename"], "LlmError");
    // the kernel is fine afterwards
    let m = k.execute("%llm models");
    assert!(m.result_text().unwrap().contains("yes (OPENAI_API_KEY)"));
    no_secret(&all_text(&m));
}

#[test]
fn rate_limits_quota_and_bad_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rl = Server::script(vec![
        Reply::status_json(
            429,
            wire::openai_error("Rate limit reached", "tokens", "rate_limit_exceeded"),
        )
        .header("retry-after-ms", "250"),
        Reply::status_json(
            429,
            wire::openai_error("Rate limit reached", "tokens", "rate_limit_exceeded"),
        )
        .header("retry-after", "1"),
        Reply::json(wire::openai("m", "third time lucky", 1, 3)),
    ]);
    let quota = Server::script(vec![Reply::status_json(
        429,
        wire::openai_error(
            "You exceeded your current quota",
            "insufficient_quota",
            "insufficient_quota",
        ),
    )]);
    let gem = Server::script(vec![Reply::status_json(400, wire::gemini_bad_key())]);
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", rl.url("/v1")),
            ("GROQ_API_KEY", GROQ_KEY.into()),
            ("GROQ_BASE_URL", quota.url("/v1")),
            ("GEMINI_API_KEY", GEMINI_KEY.into()),
            ("GEMINI_BASE_URL", gem.url("/v1beta")),
        ],
    );
    let r = k.execute("%%llm --models openai:m,groq:q,gemini:g --no-stream\nhi");
    assert_eq!(r.status(), "ok");
    assert!(final_answer(&r, "openai:m").contains("3 attempts"));
    let got = rl.received();
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_millis(250));
    assert!(got[2].at.duration_since(got[1].at) >= Duration::from_millis(1000));
    assert!(final_answer(&r, "groq:q").contains("quota exhausted"));
    assert_eq!(quota.received().len(), 1, "quota errors are not retried");
    assert!(final_answer(&r, "gemini:g").contains("set a valid GEMINI_API_KEY"));
    assert_eq!(gem.received().len(), 1);
    no_secret(&all_text(&r));
    // a missing key is a message in the model's place, not a cell error
    let r = k.execute("%llm hf:some/model hello");
    assert_eq!(r.status(), "ok");
    assert!(final_answer(&r, "hf:some/model").contains("set HUGGINGFACE_API_KEY"));
}

#[test]
fn interrupt_cancels_requests_in_flight_and_kernel_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::script(vec![
        Reply::json(wire::openai("m", "never", 1, 1)).delayed(Duration::from_secs(60)),
    ]);
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", srv.url("/v1")),
        ],
    );
    let id = k
        .send_execute("%llm openai:slow-model tell me a long story")
        .unwrap();
    let t0 = Instant::now();
    while srv.received().is_empty() && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // the kernel's other channels answer while the request is in flight
    let info = k.control("kernel_info_request", serde_json::json!({}));
    assert_eq!(info["status"], "ok");
    k.interrupt();
    let r = k
        .wait_timeout(&id, Duration::from_secs(10))
        .expect("interrupt ends the cell");
    assert_eq!(r.status(), "error");
    assert_eq!(r.errors()[0]["ename"], "KeyboardInterrupt");
    assert!(final_answer(&r, "openai:slow-model").contains("interrupted"));
    let r = k.execute("%llm estimate openai:gpt-4o --tokens 10");
    assert_eq!(r.status(), "ok");
}

#[test]
fn bad_input_gives_one_line_errors_naming_accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_MODEL", "gpt-4o-mini,gpt-4o".into()),
        ],
    );
    for (code, needle) in [
        (
            "%llm mistral:large hi",
            "openai, gemini, groq, hf, ollama, local",
        ),
        ("%%llm --temperature hot\nhi", "between 0 and 2"),
        ("%%llm --frobnicate\nhi", "--frobnicate"),
        ("%%llm --models openai:gpt-4o\n   \n", "empty prompt"),
        ("%llm", "empty prompt"),
        ("%llm estimate openai:gpt-4o", "--tokens"),
    ] {
        let r = k.execute(code);
        assert_eq!(r.status(), "error", "{code}");
        let ev = r.reply["evalue"].as_str().unwrap_or_default().to_string();
        assert!(!ev.contains('\n'), "{code}: {ev}");
        assert!(ev.contains(needle), "{code}: {ev}");
        no_secret(&all_text(&r));
    }
    // no key and no model anywhere: the error says what to set
    let dir2 = tempfile::tempdir().unwrap();
    let mut k2 = kernel(dir2.path(), &[]);
    let r = k2.execute("%llm hello");
    assert!(
        r.reply["evalue"]
            .as_str()
            .unwrap()
            .contains("OPENAI_API_KEY")
    );
}

#[test]
fn estimate_and_summary_match_hand_computed_values() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::script(vec![Reply::json(wire::groq(
        "llama-3.3-70b-versatile",
        "ok",
        5,
        100,
        0.3,
    ))]);
    let mut k = kernel(
        dir.path(),
        &[
            ("GROQ_API_KEY", GROQ_KEY.into()),
            ("GROQ_MODEL", "llama-3.3-70b-versatile".into()),
            ("GROQ_BASE_URL", srv.url("/openai/v1")),
        ],
    );
    let r = k.execute("%llm estimate groq:llama-3.3-70b-versatile --tokens 100 --latency 2");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let t = r.result_text().unwrap();
    // seed: 576 × 0.185 kW = 106.56 kW; op = 2/3600 × 106.56 × 1.1 × 0.4 kg/kWh = 26.048 g;
    // hw = 2/(3600 × 35064) × 694.522 kg = 0.011004 g.
    assert!(t.contains("26.0"), "{t}");
    assert!(t.contains("0.0110"), "{t}");
    // EcoLogits, dense 70.6 B, N = 100, groq = USA (0.3844) with PUE 1.09–1.2:
    // f_E = 1.1665273e-6 × e^(−0.0112059 × 64) × 70.6 + 4.0529281e-5 = 8.07299e-5 Wh/token;
    // t_tok = 6.785088e-4 × 70.6 + 3.119310e-4 × 64 + 0.0194737 = 0.0873400 s → L = 8.734 s,
    // ΔT = min(8.734, 2) = 2 s; M = 2.4 × 70.6 = 169.4 GB → ⌈169.4/80⌉ = 3 → n = 4 GPUs;
    // E_srv = 2/3600 × 1.2 × 4/8 / 64 = 5.2083e-6; E_gpu = 100 × 8.07299e-5/1000 = 8.07299e-6;
    // E = 1.09 × (5.2083e-6 + 4 × 8.07299e-6) = 4.0875e-5 kWh … 1.2 × … = 4.5000e-5 kWh;
    // op = E × 0.3844 = 0.01571 … 0.01730 g; emb = 2 × (4/8 × 5700 + 4 × 273)/(94 608 000 × 64)
    // = 0.0013021 g.
    assert!(t.contains("0.0409–0.0450"), "{t}");
    assert!(t.contains("0.0157–0.0173"), "{t}");
    assert!(t.contains("0.00130"), "{t}");
    // two real requests, then the summary
    for _ in 0..2 {
        assert_eq!(k.execute("%llm say ok").status(), "ok");
    }
    let s = k.execute("%llm summary");
    let tables: Vec<&Value> = s.displays();
    assert!(tables.iter().any(|d| {
        d["data"]["text/plain"]
            .as_str()
            .is_some_and(|t| t.contains("calls (errors)") && t.contains("2 (0)"))
    }));
    let svgs = s
        .displays()
        .into_iter()
        .chain(s.result())
        .filter(|d| d["data"]["image/svg+xml"].is_string())
        .count();
    assert_eq!(svgs, 2, "per-model chart and per-call chart");
}

#[test]
fn prompts_arrive_byte_for_byte_and_double_dash_ends_options() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(|_, _| Reply::json(wire::openai("m", "Paris.", 7, 2)));
    let mut k = kernel(dir.path(), &[("LLM_LOCAL_BASE_URL", srv.url("/v1"))]);
    let prompts = [
        "What's the capital of France?",
        "Qu'est-ce que l'empreinte carbone d'un modèle ? Réponds « simplement ».",
        "Say \"hi\" and 'bye' # not a comment; it costs $5, or ${HOME} or $(date)",
        "日本の首都は？ 🚀 a\\nb \\\"",
    ];
    for p in prompts {
        let r = k.execute(&format!("%llm --no-stream local:m {p}"));
        assert_eq!(r.status(), "ok", "{p}: {:?}", r.errors());
    }
    // `--` ends the options: what follows is the prompt, even when it looks like an option
    let r = k.execute("%llm --no-stream --max-tokens 9 -- local:m --not-an-option -h");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let got = srv.received();
    assert_eq!(got.len(), prompts.len() + 1);
    for (rec, p) in got.iter().zip(prompts) {
        let body = rec.json();
        assert_eq!(body["model"], "m");
        assert_eq!(body["messages"][0]["content"].as_str(), Some(p));
    }
    let last = got[prompts.len()].json();
    assert_eq!(
        last["messages"][0]["content"].as_str(),
        Some("--not-an-option -h")
    );
    assert_eq!(last["max_tokens"], 9, "{last}");
}

/// Text of every stderr stream of a request.
fn stderr_of(r: &Exec) -> String {
    r.iopub
        .iter()
        .filter(|m| m.msg_type == "stream" && m.content["name"] == "stderr")
        .filter_map(|m| m.content["text"].as_str())
        .collect()
}

#[test]
fn seed_dotenv_with_spaces_a_broken_line_and_a_model_outside_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let srv =
        Server::start(|_, _| Reply::json(wire::groq("llama-3.3-70b-versatile", "ok", 3, 4, 0.1)));
    // As the seed's README writes it, with spaces after the commas and around `=`; line 6 opens
    // a quote it never closes (it holds a key: its text must never be shown).
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "# API Keys\nGROQ_API_KEY = {GROQ_KEY}\nGROQ_MODEL=llama-3.3-70b-versatile, llama-3.1-8b-instant\nGROQ_BASE_URL={}\n\nOPENAI_API_KEY=\"{OPENAI_KEY}\nGEMINI_MODEL=gemini-1.5-flash\n",
            srv.url("/v1")
        ),
    )
    .unwrap();
    let mut k = kernel(dir.path(), &[]);
    // the first report of the session says which line was skipped, and why
    let r = k.execute("%%llm --all --no-stream\nhi");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let err = stderr_of(&r);
    assert!(err.contains(".env: line 6: "), "{err}");
    no_secret(&all_text(&r));
    let models: Vec<Value> = srv
        .received()
        .iter()
        .map(|x| x.json()["model"].clone())
        .collect();
    assert_eq!(models.len(), 2, "{models:?}");
    assert!(
        models.contains(&"llama-3.3-70b-versatile".into()),
        "{models:?}"
    );
    assert!(
        models.contains(&"llama-3.1-8b-instant".into()),
        "{models:?}"
    );
    // only once: the next report does not repeat it
    let r = k.execute("%llm --no-stream groq hi");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    assert!(!stderr_of(&r).contains("line 6"), "{}", stderr_of(&r));
    // %llm models and %carbon status show it every time, with its number and never its value
    let r = k.execute("%llm models");
    assert!(stderr_of(&r).contains(".env: line 6: "), "{:?}", r.types());
    let listed = r.result_text().unwrap_or_default();
    assert!(listed.contains("llama-3.1-8b-instant"), "{listed}");
    no_secret(&all_text(&r));
    let r = k.execute("%carbon status");
    let status = r.result_text().unwrap_or_default();
    assert!(status.contains(".env: line 6: "), "{status}");
    no_secret(&all_text(&r));
    // a model outside GROQ_MODEL is sent as named, with a note (no restart needed)
    let r = k.execute("%llm --no-stream groq:qwen/qwen3-32b What's new?");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let err = stderr_of(&r);
    assert!(
        err.contains("groq:qwen/qwen3-32b is not in GROQ_MODEL")
            && err.contains("llama-3.1-8b-instant"),
        "{err}"
    );
    let last = srv.received().pop().map(|x| x.json()).unwrap_or_default();
    assert_eq!(last["model"], "qwen/qwen3-32b");
    assert_eq!(last["messages"][0]["content"], "What's new?");
}

/// When an iopub message was made (its header's date).
fn sent_at(m: &crate::harness::Msg) -> chrono::DateTime<chrono::FixedOffset> {
    let d = m.header["date"].as_str().expect("a header date");
    chrono::DateTime::parse_from_rfc3339(d).unwrap_or_else(|e| panic!("{d}: {e}"))
}

/// The answer places of `r`: for each model's display id (in the order the places appeared),
/// its messages (display then updates), with their markdown.
fn answer_places(r: &Exec) -> Vec<(String, Vec<(&crate::harness::Msg, String)>)> {
    let mut places: Vec<(String, Vec<(&crate::harness::Msg, String)>)> = Vec::new();
    for m in &r.iopub {
        let md = m.content["data"]["text/markdown"].as_str().unwrap_or("");
        let Some(id) = m.content["transient"]["display_id"].as_str() else {
            continue;
        };
        if !id.starts_with("llm-") {
            continue;
        }
        match places.iter_mut().find(|(i, _)| i == id) {
            Some((_, ms)) => ms.push((m, md.to_string())),
            None => {
                assert_eq!(m.msg_type, "display_data", "a place starts with a display");
                places.push((id.to_string(), vec![(m, md.to_string())]));
            }
        }
    }
    places
}

/// A model's place appears only once its request has run ~0.1 s (`SHOW_AFTER`), so a fast answer
/// is one message (no placeholder, no first piece, then the final); a late one gets its
/// placeholder, and the places keep the command line's order whichever model answers first. Only
/// lower bounds on time are asserted (a loaded machine may show things later, never sooner).
#[test]
fn answers_appear_once_unless_late_and_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let openai =
        Server::start(|_, _| Reply::json(wire::openai("gpt-4o-2024-08-06", "from openai", 5, 20)));
    let groq = Server::start(|_, _| {
        Reply::json(wire::groq(
            "llama-3.3-70b-versatile",
            "from groq",
            5,
            40,
            0.25,
        ))
        .delayed(Duration::from_millis(1500))
    });
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", openai.url("/v1")),
            ("GROQ_API_KEY", GROQ_KEY.into()),
            ("GROQ_BASE_URL", groq.url("/openai/v1")),
        ],
    );
    let since_busy = |r: &Exec, m: &crate::harness::Msg| {
        let busy = r
            .iopub
            .iter()
            .find(|m| m.msg_type == "status")
            .expect("a busy status");
        (sent_at(m) - sent_at(busy)).num_milliseconds()
    };

    // one fast model: its place is the final answer, unless this machine made it late
    let r = k.execute("%llm openai:gpt-4o say hi");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let places = answer_places(&r);
    assert_eq!(places.len(), 1, "{:?}", r.types());
    let msgs = &places[0].1;
    if msgs.len() > 1 {
        let waited = since_busy(&r, msgs[0].0);
        assert!(
            waited >= 100,
            "a placeholder after {waited} ms for an answer that came at once: {msgs:?}"
        );
    } else {
        assert!(msgs[0].1.contains("from openai"), "{}", msgs[0].1);
    }
    assert!(final_answer(&r, "openai:gpt-4o").contains("from openai"));

    // a fast model before a late one: places in the command line's order, none before 0.1 s
    let r = k.execute("%%llm --models openai:gpt-4o,groq:llama-3.3-70b-versatile\nhi");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let places = answer_places(&r);
    assert_eq!(places.len(), 2, "{:?}", r.types());
    assert!(
        places[0].1[0].1.starts_with("**openai:gpt-4o**"),
        "{places:?}"
    );
    assert!(
        places[1].1[0]
            .1
            .starts_with("**groq:llama-3.3-70b-versatile**"),
        "{places:?}"
    );
    assert!(
        places[1].1[0].1.contains("waiting for the answer"),
        "the late model's place shows that it waits: {}",
        places[1].1[0].1
    );
    for (_, msgs) in &places {
        let waited = since_busy(&r, msgs[0].0);
        assert!(
            waited >= 100,
            "a place shown {waited} ms after the cell began"
        );
    }
    assert!(final_answer(&r, "openai:gpt-4o").contains("from openai"));
    assert!(final_answer(&r, "groq:llama-3.3-70b-versatile").contains("from groq"));
    k.shutdown(false);
}
