//! e2e: Java cells through the real kernel binary and a real JShell (JDK 17+ on the machine):
//! `%%java` cells in the Python kernel, the `carbon-java` kernel (`--language java`), state across
//! cells, values, compile errors and exceptions, rich output, completion, interrupt, System.exit,
//! and a missing JDK. Tests that need a JDK say so and pass vacuously where there is none (the
//! unit tests of `runtime::java` cover the same without a kernel).

use crate::harness::{Kernel, Opts};
use serde_json::json;
use std::time::{Duration, Instant};

/// A JDK is on this machine (the same lookup the runtime does, minus settings).
fn have_jdk() -> bool {
    let found = carbon_kernel::runtime::java::find_jdk(
        std::env::var("CARBON_JAVA_HOME").ok().as_deref(),
        std::env::var_os("JAVA_HOME"),
        std::env::var_os("PATH"),
    );
    if let Err(e) = &found {
        eprintln!("skipped: {e}");
    }
    found.is_ok()
}

fn start(opts: Opts) -> Kernel {
    let opts = opts.timeout(Duration::from_secs(90));
    match Kernel::start(opts) {
        Ok(k) => k,
        Err(e) => panic!("kernel did not start: {e}"),
    }
}

fn traceback(r: &crate::harness::Exec) -> String {
    r.errors()
        .iter()
        .flat_map(|e| e["traceback"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l.as_str().map(str::to_string))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn java_cells_in_the_python_kernel_keep_state_and_report_errors() {
    if !have_jdk() {
        return;
    }
    let mut k = start(Opts::default());

    let r = k.execute("%%java\nint x = 40 + 2;\nSystem.out.println(\"x is \" + x);");
    assert_eq!(r.status(), "ok", "{:?}", r.reply);
    assert_eq!(r.stdout(), "x is 42\n");
    assert!(r.result().is_none(), "a declaration shows no value");

    let r = k.execute(
        "%%java\nclass Sieve {\n  static int count(int n) {\n    boolean[] c = new boolean[n + 1];\n    int k = 0;\n    for (int i = 2; i <= n; i++) { if (!c[i]) { k++; for (int j = 2 * i; j <= n; j += i) c[j] = true; } }\n    return k;\n  }\n}\nint twice(int n) { return 2 * n; }",
    );
    assert_eq!(r.status(), "ok", "{:?}", r.reply);
    let r = k.execute("%%java\ntwice(Sieve.count(100)) + x");
    assert_eq!(r.result_text().as_deref(), Some("92"));

    // a compile error, positioned in the user's cell
    let r = k.execute("%%java\nint y = 1;\nString s = y + ;\n");
    assert_eq!(r.status(), "error");
    assert_eq!(r.reply["ename"], "CompilationError");
    let evalue = r.reply["evalue"].as_str().unwrap_or_default();
    assert!(evalue.starts_with("line 2, column "), "{evalue}");
    assert!(
        traceback(&r).contains("String s = y + ;"),
        "{}",
        traceback(&r)
    );

    // an exception, with its stack trace in terms of the cells
    let r = k.execute("%%java\nint[] a = new int[2];\n\na[5]");
    assert_eq!(r.status(), "error");
    assert_eq!(r.reply["ename"], "java.lang.ArrayIndexOutOfBoundsException");
    assert!(
        traceback(&r).contains("at <cell> (line 3)"),
        "{}",
        traceback(&r)
    );

    // rich output from Java
    let r = k.execute("%%java\ndisplay(\"text/html\", \"<b>\" + x + \"</b>\")");
    assert_eq!(r.status(), "ok");
    assert_eq!(r.displays()[0]["data"]["text/html"], "<b>42</b>");

    // the state survived the errors
    let r = k.execute("%%java\nx");
    assert_eq!(r.result_text().as_deref(), Some("42"));
}

#[test]
fn the_carbon_java_kernel_completes_interrupts_and_survives_system_exit() {
    if !have_jdk() {
        return;
    }
    let mut k = start(Opts::default().language("java"));
    let info = k.kernel_info();
    let li = &info["language_info"];
    assert_eq!(li["name"], "java");
    assert_eq!(li["mimetype"], "text/x-java");
    assert_eq!(li["file_extension"], ".java");
    assert_eq!(li["pygments_lexer"], "java");

    let r = k.execute("String who = \"carbon\";\nwho.toUpperCase()");
    assert_eq!(r.result_text().as_deref(), Some("\"CARBON\""));

    // completion and completeness from JShell's source analysis
    let code = "who.toUpperCase().subs";
    let c = k.request(
        "complete_request",
        json!({"code": code, "cursor_pos": code.len()}),
    );
    let matches: Vec<&str> = c["matches"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m.as_str()).collect())
        .unwrap_or_default();
    assert!(matches.contains(&"substring("), "{c}");
    assert_eq!(c["cursor_start"], code.len() - "subs".len());
    let ic = k.request("is_complete_request", json!({"code": "void f() {"}));
    assert_eq!(ic["status"], "incomplete");
    let ic = k.request("is_complete_request", json!({"code": "int z = 3;"}));
    assert_eq!(ic["status"], "complete");
    let insp = k.request(
        "inspect_request",
        json!({"code": "Math.abs", "cursor_pos": 8, "detail_level": 0}),
    );
    assert_eq!(insp["found"], true, "{insp}");

    // interrupt an endless loop: the cell ends with an error, the JVM and its state stay
    let id = k
        .send_execute("System.out.println(\"spinning\");\nwhile (true) {}")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    k.interrupt();
    let r = k.wait(&id).unwrap();
    println!("interrupt → idle: {:?}", t0.elapsed());
    assert_eq!(r.status(), "error");
    assert_eq!(r.stdout(), "spinning\n");
    let r = k.execute("who");
    assert_eq!(r.result_text().as_deref(), Some("\"carbon\""));

    // System.exit: a clear error, the kernel stays up, the next cell gets a fresh JShell
    let r = k.execute("System.out.println(\"leaving\");\nSystem.exit(3);");
    assert_eq!(r.status(), "error");
    assert_eq!(r.stdout(), "leaving\n");
    let evalue = r.reply["evalue"].as_str().unwrap_or_default();
    assert!(
        evalue.contains("status 3") && evalue.contains("state"),
        "{evalue}"
    );
    assert!(k.is_alive());
    let r = k.execute("6 * 7");
    assert_eq!(r.result_text().as_deref(), Some("42"));
    let r = k.execute("who");
    assert_eq!(r.status(), "error", "state is gone after the restart");
}

#[test]
fn a_missing_jdk_is_a_clear_error_and_python_keeps_working() {
    let empty = tempfile::tempdir().unwrap();
    let mut k = start(
        Opts::default()
            .env("CARBON_JAVA_HOME", empty.path().to_str().unwrap())
            .env_remove("JAVA_HOME"),
    );
    let r = k.execute("%%java\nint x = 1;");
    assert_eq!(r.status(), "error");
    let evalue = r.reply["evalue"].as_str().unwrap_or_default();
    assert!(
        evalue.contains("CARBON_JAVA_HOME") && evalue.contains("JDK 17"),
        "{evalue}"
    );
    let r = k.execute("print(6 * 7)");
    assert_eq!(r.status(), "ok", "{:?}", r.reply);
    assert_eq!(r.stdout(), "42\n");
    // and again: the error is the same, not a crash
    let r = k.execute("%%java\n1");
    assert_eq!(r.status(), "error");
    assert!(k.is_alive());

    // no JDK on PATH either: the same kind of message
    let mut k = start(
        Opts::default()
            .language("java")
            .env("PATH", empty.path().to_str().unwrap())
            .env_remove("JAVA_HOME")
            .env_remove("CARBON_JAVA_HOME"),
    );
    let r = k.execute("1 + 1");
    assert_eq!(r.status(), "error");
    let evalue = r.reply["evalue"].as_str().unwrap_or_default();
    assert!(
        evalue.contains("PATH") && evalue.contains("JDK 17"),
        "{evalue}"
    );
}
