//! e2e: each language's own magics and commands pass through the kernel (issue 10, items 1–2):
//! IPython's `%timeit`, `%%time`, `%matplotlib inline`, `%pip`, `%load_ext`, `%%bash`, `%who`,
//! `%run`, `!cmd`, `?obj` in Python cells (inside `%%carbon` and under `%carbon on` too), evcxr's
//! `:dep` / `:vars`, JShell's `/vars` / `/imports` / `/methods`; `%lsmagic` lists the kernel's
//! magics then the language's; completion and inspection of magics and of mixed cells.

use crate::harness::{Exec, Kernel, Opts};
use carbon_magics::testing::strip_ansi;
use serde_json::{Value, json};
use std::time::Duration;

fn kernel(opts: Opts) -> Kernel {
    match Kernel::start(opts) {
        Ok(k) => k,
        Err(e) => panic!("kernel did not start: {e}"),
    }
}

/// The kernel's Python has IPython (the test venv); without it these tests pass vacuously.
fn have_ipython(k: &mut Kernel) -> bool {
    let r = k.execute("import importlib.util as _u\nbool(_u.find_spec('IPython'))");
    let yes = r.result_text().as_deref() == Some("True");
    if !yes {
        eprintln!("skipped: no IPython in the kernel's Python");
    }
    yes
}

fn ok(k: &Kernel, r: &Exec) {
    assert_eq!(r.status(), "ok", "{:?}\n{}", r.iopub, k.log_tail(40));
}

fn error_text(r: &Exec) -> String {
    r.errors()
        .iter()
        .map(|e| {
            let tb: Vec<&str> = e["traceback"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            strip_ansi(&format!("{} {} {}", e["ename"], e["evalue"], tb.join("\n")))
        })
        .collect()
}

/// `complete_request` at the end of `code`: (matches, cursor_start, cursor_end).
fn complete(k: &mut Kernel, code: &str) -> (Vec<String>, u64, u64) {
    complete_at(k, code, code.chars().count())
}

fn complete_at(k: &mut Kernel, code: &str, cursor: usize) -> (Vec<String>, u64, u64) {
    let c = k.request(
        "complete_request",
        json!({"code": code, "cursor_pos": cursor}),
    );
    assert_eq!(c["status"], "ok", "{c}");
    let matches = c["matches"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (
        matches,
        c["cursor_start"].as_u64().unwrap_or(u64::MAX),
        c["cursor_end"].as_u64().unwrap_or(u64::MAX),
    )
}

fn has(matches: &[String], m: &str) -> bool {
    matches.iter().any(|x| x == m)
}

/// A Python cell that writes a minimal pure-Python wheel (`tinypkg`, with its RECORD hashes)
/// into `dir`: pip installs it with `--no-index --find-links`, without network.
fn wheel_cell(dir: &str) -> String {
    format!(
        r#"import base64, hashlib, os, zipfile
files = {{
    "tinypkg/__init__.py": "VALUE = 'from a local wheel'\n",
    "tinypkg-0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinypkg\nVersion: 0.1\n",
    "tinypkg-0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: carbon-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}}
record = []
with zipfile.ZipFile(os.path.join({dir:?}, "tinypkg-0.1-py3-none-any.whl"), "w") as z:
    for name, text in files.items():
        data = text.encode()
        z.writestr(name, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append("%s,sha256=%s,%d" % (name, digest, len(data)))
    record.append("tinypkg-0.1.dist-info/RECORD,,")
    z.writestr("tinypkg-0.1.dist-info/RECORD", "\n".join(record) + "\n")
"#
    )
}

#[test]
fn ipython_magics_pass_through_python_cells() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kernel(
        Opts::default()
            .workdir(dir.path())
            .timeout(Duration::from_secs(120)),
    );
    if !have_ipython(&mut k) {
        return;
    }

    let r = k.execute("%timeit -n 3 -r 2 sum(range(100))");
    ok(&k, &r);
    assert!(r.stdout().contains("per loop"), "{}", r.stdout());

    let r = k.execute("%%time\ntotal = sum(range(1000))");
    ok(&k, &r);
    assert!(r.stdout().contains("Wall time"), "{}", r.stdout());

    // %matplotlib inline: a real matplotlib figure arrives as a PNG display
    let r = k.execute(
        "%matplotlib inline\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t');",
    );
    ok(&k, &r);
    let pngs: Vec<&str> = r
        .displays()
        .iter()
        .filter_map(|d| d["data"]["image/png"].as_str())
        .collect();
    assert_eq!(pngs.len(), 1, "{:?}", r.iopub);
    // base64 of a PNG's signature (\x89PNG)
    assert!(pngs[0].starts_with("iVBORw0KGgo"), "{}", &pngs[0][..20]);

    let r = k.execute("!echo hello-from-the-shell");
    ok(&k, &r);
    assert_eq!(r.stdout().trim(), "hello-from-the-shell");

    let r = k.execute("%%bash\necho from-bash $((6 * 7))");
    ok(&k, &r);
    assert_eq!(r.stdout().trim(), "from-bash 42");

    // ?obj: IPython's help in the pager payload
    let r = k.execute("?len");
    ok(&k, &r);
    let payload = r.reply["payload"].to_string();
    assert!(
        payload.contains("Return the number of items"),
        "{}",
        r.reply
    );

    let r = k.execute("zz_marker = 1\n%who");
    ok(&k, &r);
    assert!(r.stdout().contains("zz_marker"), "{}", r.stdout());

    // %run and %load_ext of files in the notebook's folder
    std::fs::write(
        dir.path().join("script.py"),
        "ran_value = 6 * 7\nprint('script ran')\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("tinyext.py"),
        "def load_ipython_extension(ip):\n    ip.user_ns['ext_loaded'] = 'yes'\n",
    )
    .unwrap();
    let r = k.execute("%run script.py\nran_value");
    ok(&k, &r);
    assert_eq!(r.stdout(), "script ran\n");
    assert_eq!(r.result_text().as_deref(), Some("42"));
    let r = k.execute("import sys\nsys.path.insert(0, '.')\n%load_ext tinyext\next_loaded");
    ok(&k, &r);
    assert_eq!(r.result_text().as_deref(), Some("'yes'"));

    // %pip install of a local wheel into a target folder (the shared venv stays as it is)
    let wheels = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let r = k.execute(&wheel_cell(wheels.path().to_str().unwrap()));
    ok(&k, &r);
    let r = k.execute_with_timeout(
        &format!(
            "%pip install --no-index --find-links {} --target {} tinypkg",
            wheels.path().display(),
            target.path().display()
        ),
        Duration::from_secs(180),
    );
    let r = r.unwrap();
    ok(&k, &r);
    assert!(
        r.stdout().contains("Successfully installed tinypkg"),
        "{}\n{}",
        r.stdout(),
        r.stderr()
    );
    let r = k.execute(&format!(
        "sys.path.insert(0, {:?})\nimport tinypkg\ntinypkg.VALUE",
        target.path().display().to_string()
    ));
    assert_eq!(r.result_text().as_deref(), Some("'from a local wheel'"));

    // a magic neither side knows: IPython's own error
    let r = k.execute("%nosuchmagic 1");
    assert_eq!(r.status(), "error");
    let e = r.errors();
    assert_eq!(e.len(), 1, "{:?}", r.iopub);
    assert_eq!(e[0]["ename"], "UsageError");
    assert!(
        error_text(&r).contains("Line magic function `%nosuchmagic` not found"),
        "{}",
        error_text(&r)
    );
    // the kernel's own magics still are the kernel's
    let r = k.execute("%lang");
    assert_eq!(r.result_text().as_deref(), Some("default language: python"));

    // %lsmagic: carbon's magics, then IPython's
    let r = k.execute("%lsmagic");
    ok(&k, &r);
    let ls = r.result_text().unwrap_or_default();
    let (ours, theirs) = (ls.find("%%carbon"), ls.find("%timeit"));
    assert!(ours.is_some() && theirs.is_some() && ours < theirs, "{ls}");
    assert!(ls.contains("IPython"), "{ls}");
}

#[test]
fn ipython_magics_are_metered_in_carbon_cells() {
    let mut k = kernel(Opts::default().timeout(Duration::from_secs(120)));
    if !have_ipython(&mut k) {
        return;
    }
    // %%time inside %%carbon: IPython times it, carbon meters it
    let r = k.execute("%%carbon --no-csv\n%%time\nx = sum(range(100000))");
    ok(&k, &r);
    assert!(r.stdout().contains("Wall time"), "{}", r.stdout());
    let report = |r: &Exec| {
        r.displays().iter().chain(r.updates().iter()).any(|d| {
            d["data"]["text/plain"]
                .as_str()
                .unwrap_or("")
                .contains("CO₂")
        })
    };
    assert!(report(&r), "no carbon report: {:?}", r.iopub);

    // under %carbon on, a line magic of IPython's runs metered
    let r = k.execute("%carbon on");
    ok(&k, &r);
    let r = k.execute("%timeit -n 2 -r 1 sum(range(1000))");
    ok(&k, &r);
    assert!(r.stdout().contains("per loop"), "{}", r.stdout());
    assert!(report(&r), "no carbon report: {:?}", r.iopub);
    let r = k.execute("%carbon off");
    ok(&k, &r);
}

#[test]
fn magics_complete_from_the_table_and_their_parsers() {
    let mut k = kernel(Opts::default().timeout(Duration::from_secs(120)));
    if !have_ipython(&mut k) {
        return;
    }
    let (m, start, end) = complete(&mut k, "%car");
    assert!(has(&m, "%carbon") && has(&m, "%%carbon"), "{m:?}");
    assert_eq!((start, end), (0, 4));
    // IPython's magics come after carbon's in Python cells
    let (m, _, _) = complete(&mut k, "%time");
    assert!(has(&m, "%timeit"), "{m:?}");

    // options of %%carbon from its parser, not Python names
    let (m, start, _) = complete(&mut k, "%%carbon --");
    for opt in ["--country", "--repeat", "--timeout", "--no-csv", "--help"] {
        assert!(has(&m, opt), "{opt} missing: {m:?}");
    }
    assert!(m.iter().all(|x| x.starts_with("--")), "{m:?}");
    assert_eq!(start, "%%carbon ".len() as u64);
    let (m, _, _) = complete(&mut k, "%%carbon --scope m");
    assert_eq!(m, ["machine"]);
    let (m, _, _) = complete(&mut k, "%carbon ex");
    assert_eq!(m, ["exec"]);

    // the code of a %%carbon cell completes in Python, positions in the whole cell
    k.execute("my_long_name = 1");
    let code = "%%carbon --no-csv\nprint(my_long_na";
    let (m, start, end) = complete(&mut k, code);
    assert!(has(&m, "my_long_name"), "{m:?}");
    assert_eq!(start, (code.len() - "my_long_na".len()) as u64);
    assert_eq!(end, code.len() as u64);
    // a plain cell with a line magic of ours
    let code = "%carbon status\nmy_long_na";
    let (m, _, _) = complete(&mut k, code);
    assert!(has(&m, "my_long_name"), "{m:?}");

    // Shift-Tab on a magic of ours: its help
    let insp = k.request(
        "inspect_request",
        json!({"code": "%carbon on", "cursor_pos": 3, "detail_level": 0}),
    );
    assert_eq!(insp["found"], true, "{insp}");
    assert!(
        insp["data"]["text/plain"]
            .as_str()
            .unwrap_or("")
            .contains("exec"),
        "{insp}"
    );
}

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

#[test]
fn jshell_commands_completion_and_inspection_in_java_cells() {
    if !have_jdk() {
        return;
    }
    let mut k = kernel(Opts::default().timeout(Duration::from_secs(90)));
    let r = k.execute(
        "%%java\nimport java.time.*;\nint x = 5;\nint twice(int n) { return 2 * n; }\n\
         class Foo {}\n/vars\n/methods\n/imports\n/types",
    );
    ok(&k, &r);
    let out = r.stdout();
    for want in [
        "|    int x = 5\n",
        "|    int twice(int)\n",
        "|    import java.time.*\n",
        "|    class Foo\n",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }
    // /list shows the user's snippets, not the kernel's start-up ones
    let r = k.execute("%%java\n/list");
    ok(&k, &r);
    assert!(r.stdout().contains("int x = 5;"), "{}", r.stdout());
    assert!(!r.stdout().contains("display("), "{}", r.stdout());
    let r = k.execute("%%java\n/nosuchcommand");
    assert_eq!(r.status(), "error");
    assert!(
        error_text(&r).contains("Invalid command: /nosuchcommand"),
        "{}",
        error_text(&r)
    );

    // completion and inspection inside a %%java cell, offsets past the %%java line
    let code = "%%java\nint y = Math.ab";
    let (m, start, end) = complete(&mut k, code);
    assert!(has(&m, "abs("), "{m:?}");
    assert_eq!(start, (code.len() - 2) as u64);
    assert_eq!(end, code.len() as u64);
    let (m, _, _) = complete(&mut k, "%%carbon java\nMath.ab");
    assert!(has(&m, "abs("), "{m:?}");
    let insp = k.request(
        "inspect_request",
        json!({"code": "%%java\nMath.abs", "cursor_pos": 15, "detail_level": 0}),
    );
    assert_eq!(insp["found"], true, "{insp}");
    assert!(
        insp["data"]["text/plain"]
            .as_str()
            .unwrap_or("")
            .contains("abs("),
        "{insp}"
    );

    // plain cells after %lang java: JShell completes, %lsmagic lists the JShell commands
    let r = k.execute("%lang java");
    ok(&k, &r);
    let (m, _, _) = complete(&mut k, "Math.ab");
    assert!(has(&m, "abs("), "{m:?}");
    // a magic neither side knows: JShell's own error (it is not Java), not the kernel's
    let r = k.execute("%nosuchmagic");
    assert_eq!(r.status(), "error");
    assert!(!error_text(&r).contains("%lsmagic"), "{}", error_text(&r));
    // a /command line is complete by itself (a console runs it on Enter)
    let ic = k.request("is_complete_request", json!({"code": "/vars"}));
    assert_eq!(ic["status"], "complete", "{ic}");
    let ic = k.request("is_complete_request", json!({"code": "/vars\nvoid f() {"}));
    assert_eq!(ic["status"], "incomplete", "{ic}");
    let r = k.execute("%lsmagic");
    ok(&k, &r);
    let ls = r.result_text().unwrap_or_default();
    let (ours, theirs) = (ls.find("%%carbon"), ls.find("/vars"));
    assert!(ours.is_some() && theirs.is_some() && ours < theirs, "{ls}");
    assert!(ls.contains("/imports") && ls.contains("/methods"), "{ls}");
}

#[test]
fn evcxr_commands_and_completion_in_rust_cells() {
    // evcxr's first start compiles; on a loaded 2-core machine that takes well over a minute.
    let mut k = kernel(Opts::default().timeout(Duration::from_secs(300)));
    let krate = tempfile::tempdir().unwrap();
    std::fs::create_dir(krate.path().join("src")).unwrap();
    std::fs::write(
        krate.path().join("Cargo.toml"),
        "[package]\nname = \"tinycrate\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(
        krate.path().join("src/lib.rs"),
        "pub fn answer() -> i32 { 42 }\n",
    )
    .unwrap();
    let r = k.execute(&format!(
        "%%rust\n:dep tinycrate = {{ path = {:?} }}\ntinycrate::answer()",
        krate.path().display().to_string()
    ));
    if r.errors()
        .iter()
        .any(|e| e["ename"] == "RuntimeUnavailable")
    {
        eprintln!("skipped: {}", error_text(&r));
        return;
    }
    ok(&k, &r);
    assert_eq!(r.result_text().as_deref(), Some("42"));

    let r = k.execute("%%rust\nlet counter_value: u64 = 7;");
    ok(&k, &r);
    let r = k.execute("%%rust\n:vars");
    ok(&k, &r);
    let vars = format!("{:?}", r.iopub);
    assert!(
        vars.contains("counter_value") && vars.contains("u64"),
        "{vars}"
    );

    // a command evcxr does not know: evcxr's error
    let r = k.execute("%%rust\n:nosuchcommand");
    assert_eq!(r.status(), "error");
    assert!(
        error_text(&r).contains(":nosuchcommand"),
        "{}",
        error_text(&r)
    );

    // completion in a %%rust cell and after %lang rust, offsets past the magic line
    let code = "%%rust\nlet my_local_thing = 1;\nmy_local_t";
    let (m, start, _) = complete(&mut k, code);
    assert!(has(&m, "my_local_thing"), "{m:?}");
    assert_eq!(start, (code.len() - "my_local_t".len()) as u64);
    let r = k.execute("%lang rust");
    ok(&k, &r);
    let code = "let my_local_thing = 1;\nmy_local_t";
    let (m, start, _) = complete(&mut k, code);
    assert!(has(&m, "my_local_thing"), "{m:?}");
    assert_eq!(start, (code.len() - "my_local_t".len()) as u64);

    // %lsmagic: carbon's magics, then evcxr's commands
    let r = k.execute("%lsmagic");
    ok(&k, &r);
    let ls = r.result_text().unwrap_or_default();
    let (ours, theirs) = (ls.find("%%carbon"), ls.find(":dep"));
    assert!(ours.is_some() && theirs.is_some() && ours < theirs, "{ls}");
    assert!(ls.contains(":vars"), "{ls}");
}

#[test]
fn without_ipython_a_foreign_magic_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("python-no-ipython");
    let python3 = carbon_kernel::runtime::child::find_program("python3").expect("python3 on PATH");
    // -S: no site-packages, so IPython cannot be imported
    std::fs::write(
        &py,
        format!("#!/bin/sh\nexec '{}' -S \"$@\"\n", python3.display()),
    )
    .unwrap();
    std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut k = kernel(Opts::default().env("CARBON_PYTHON", py.to_string_lossy()));
    for cell in ["%timeit 1 + 1", "x = 1\n!echo hi", "len?"] {
        let r = k.execute(cell);
        assert_eq!(r.status(), "error", "{cell}");
        let e = error_text(&r);
        assert!(
            e.contains("UsageError")
                && e.contains("needs IPython")
                && e.contains("pip install ipython"),
            "{cell}: {e}"
        );
    }
    // plain Python still runs, and %lsmagic says why there is no IPython list
    let r = k.execute("6 * 7");
    assert_eq!(r.result_text().as_deref(), Some("42"));
    let ls = k.execute("%lsmagic").result_text().unwrap_or_default();
    assert!(ls.contains("%%carbon") && ls.contains("no IPython"), "{ls}");
}
