//! e2e: Rust cells (evcxr) through the real kernel binary: `%%rust` cells in a Python kernel and a
//! `--language rust` kernel. Each evcxr eval compiles (0.3–3 s, and ~4 s to start evcxr), so one
//! kernel runs several checks.

use crate::harness::{Kernel, Opts};
use carbon_magics::testing::strip_ansi;
use serde_json::Value;
use std::time::Duration;

fn kernel(opts: Opts) -> Kernel {
    // evcxr's first start compiles; on a loaded 2-core machine that takes well over a minute.
    match Kernel::start(opts.timeout(Duration::from_secs(300))) {
        Ok(k) => k,
        Err(e) => panic!("kernel did not start: {e}"),
    }
}

fn error_of(r: &crate::harness::Exec) -> Value {
    assert_eq!(r.status(), "error", "{:?}", r.iopub);
    let errors = r.errors();
    assert_eq!(errors.len(), 1, "{:?}", r.iopub);
    errors[0].clone()
}

fn traceback(e: &Value) -> String {
    let lines: Vec<&str> = e["traceback"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    strip_ansi(&lines.join("\n"))
}

/// Seconds between two iopub messages, from their header dates (RFC 3339).
fn seconds_between(a: &Value, b: &Value) -> f64 {
    let t = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v["date"].as_str().unwrap_or(""))
            .map(|d| d.timestamp_micros() as f64 / 1e6)
            .unwrap_or(f64::NAN)
    };
    t(b) - t(a)
}

#[test]
fn rust_cells_keep_state_stream_and_recover() {
    let mut k = kernel(Opts::default());

    // state across cells: let, fn, struct, use
    let r = k.execute(
        "%%rust\nuse std::collections::BTreeMap;\nlet x = 40 + 2;\n\
         fn double(v: i32) -> i32 { v * 2 }\n#[derive(Debug)]\nstruct P { a: i32 }\nx",
    );
    assert_eq!(r.status(), "ok", "{:?}\n{}", r.iopub, k.log());
    assert_eq!(r.result_text().as_deref(), Some("42"));
    let r = k.execute(
        "%%rust\nlet m: BTreeMap<i32, i32> = BTreeMap::new();\n\
         println!(\"{:?} {}\", P { a: double(x) }, m.len());\nx + 1",
    );
    assert_eq!(r.stdout(), "P { a: 84 } 0\n");
    assert_eq!(r.result_text().as_deref(), Some("43"));

    // live output: the first line is published while the cell still runs
    let r = k.execute(
        "%%rust\nprintln!(\"first\");\nstd::thread::sleep(std::time::Duration::from_millis(1500));\n\
         println!(\"second\");",
    );
    let streams: Vec<_> = r.iopub.iter().filter(|m| m.msg_type == "stream").collect();
    assert_eq!(streams.len(), 2, "{:?}", r.iopub);
    let gap = seconds_between(&streams[0].header, &streams[1].header);
    assert!(gap >= 1.0, "lines were not streamed live (gap {gap} s)");

    // compile error with its span: message, position, code line, carets
    let r = k.execute("%%rust\nlet y = 1;\nlet z: i32 = \"no\";");
    let e = error_of(&r);
    assert_eq!(e["ename"], "CompilationError");
    let tb = traceback(&e);
    assert!(tb.contains("mismatched types"), "{tb}");
    assert!(tb.contains("cell:2:14"), "{tb}");
    assert!(
        tb.contains("let z: i32 = \"no\";") && tb.contains("^^^^"),
        "{tb}"
    );

    // panic → error "panic"; earlier variables survive
    let r = k.execute("%%rust\npanic!(\"boom {}\", 7)");
    let e = error_of(&r);
    assert_eq!(
        (e["ename"].as_str(), e["evalue"].as_str()),
        (Some("panic"), Some("boom 7"))
    );
    assert_eq!(k.execute("%%rust\nx").result_text().as_deref(), Some("42"));

    // evcxr mime output (EVCXR_BEGIN_CONTENT) → display_data
    let r = k.execute(
        "%%rust\nprintln!(\"EVCXR_BEGIN_CONTENT text/html\\n<b>carbon</b>\\nEVCXR_END_CONTENT\");",
    );
    let html: Vec<_> = r
        .displays()
        .iter()
        .filter_map(|d| d["data"]["text/html"].as_str().map(str::to_string))
        .collect();
    assert_eq!(html, ["<b>carbon</b>"], "{:?}", r.iopub);

    // interrupt of an endless loop: the kernel stays up, fns remain
    let id = k.send_execute("%%rust\nloop {}").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    k.interrupt();
    let r = k.wait(&id).unwrap();
    let e = error_of(&r);
    assert_eq!(e["ename"], "Interrupted", "{e}");
    let evalue = e["evalue"].as_str().unwrap_or("");
    assert!(
        evalue.contains("variables are lost") || evalue.contains("while compiling"),
        "{evalue}"
    );
    assert_eq!(
        k.execute("%%rust\ndouble(3)").result_text().as_deref(),
        Some("6")
    );

    // a crash of evcxr's child: clear error, restarted, state said lost, next cell works
    assert_eq!(k.execute("%%rust\nlet kept = 5;").status(), "ok");
    let r = k.execute("%%rust\nstd::process::abort();");
    let e = error_of(&r);
    assert_eq!(e["ename"], "RuntimeDied");
    let evalue = e["evalue"].as_str().unwrap_or("");
    assert!(
        evalue.contains("SIGABRT") && evalue.contains("variables are lost"),
        "{evalue}"
    );
    let r = k.execute("%%rust\nkept");
    assert_eq!(r.status(), "error", "kept must be gone after the crash");
    assert_eq!(
        k.execute("%%rust\n1 + double(1)").result_text().as_deref(),
        Some("3")
    );

    // the other languages were never affected
    assert_eq!(k.execute("print('py ok')").stdout(), "py ok\n");
}

#[test]
fn rust_kernel_is_lazy_and_reports_rust() {
    // cargo's registry behind a closed loopback port: `:dep` must say the registry is unreachable
    let mut k = kernel(
        Opts::default()
            .language("rust")
            .env("CARGO_HTTP_PROXY", "http://127.0.0.1:9")
            .env("CARGO_NET_RETRY", "0"),
    );
    let info = k.kernel_info();
    let li = &info["language_info"];
    assert_eq!(li["name"], "rust");
    assert_eq!(li["file_extension"], ".rs");
    assert_eq!(li["mimetype"], "text/rust");
    assert_eq!(li["pygments_lexer"], "rust");
    // kernel start never waits for evcxr: no child process yet
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children", pid = k.pid()))
            .unwrap_or_default();
    assert!(
        children.trim().is_empty(),
        "evcxr started early: {children}"
    );
    let r = k.execute("let s = String::from(\"rust\");\ns.len()");
    assert_eq!(
        r.result_text().as_deref(),
        Some("4"),
        "{:?}\n{}",
        r.iopub,
        k.log()
    );
    let r = k.execute(":dep carbon_nonexistent_crate_zz = \"0.1\"");
    let e = error_of(&r);
    let tb = traceback(&e);
    assert!(
        tb.contains("unreachable") && tb.contains("carbon_nonexistent_crate_zz"),
        "{tb}"
    );
    let r = k.execute("%%python\nprint(6 * 7)");
    assert_eq!(r.stdout(), "42\n");
}

#[test]
fn missing_rust_toolchain_is_a_clear_error_and_python_still_works() {
    let dir = tempfile::tempdir().unwrap();
    // a PATH with Python but without cargo/rustc
    let mut k = kernel(
        Opts::default()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path().display().to_string()),
    );
    let r = k.execute("%%rust\n1 + 1");
    let e = error_of(&r);
    assert_eq!(e["ename"], "RuntimeUnavailable", "{e}");
    let evalue = e["evalue"].as_str().unwrap_or("");
    assert!(
        evalue.contains("cargo") && evalue.contains("rustup"),
        "{evalue}"
    );
    assert_eq!(k.execute("print(1 + 1)").stdout(), "2\n", "{}", k.log());
}
