//! e2e: the Python runtime through the real kernel binary: persistent state, live streams, rich
//! outputs, input(), interrupt, crashes of the worker, 10 MB of output in bounded memory, the
//! first cells before IPython's import is done, the standard-library fallback without IPython,
//! and a missing interpreter.

use crate::harness::{Kernel, Opts};
use carbon_magics::testing::strip_ansi;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn kernel(opts: Opts) -> Kernel {
    match Kernel::start(opts.timeout(Duration::from_secs(60))) {
        Ok(k) => k,
        Err(e) => panic!("kernel did not start: {e}"),
    }
}

fn python_kernel() -> Kernel {
    kernel(Opts::default())
}

/// All text of an error output: ename, evalue and traceback.
fn error_text(e: &serde_json::Value) -> String {
    let tb: Vec<&str> = e["traceback"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l.as_str()).collect())
        .unwrap_or_default();
    strip_ansi(&format!("{} {} {}", e["ename"], e["evalue"], tb.join("\n")))
}

fn python3() -> PathBuf {
    carbon_kernel::runtime::child::find_program("python3").expect("python3 on PATH")
}

/// Waits (bounded) for a file the cell creates once it runs. The heartbeat round trips keep the
/// harness's client runtime turning, which is what actually sends the queued execute_request.
fn wait_for_file(k: &mut Kernel, p: &Path) {
    let end = Instant::now() + Duration::from_secs(60);
    while !p.exists() {
        assert!(Instant::now() < end, "the cell never started");
        k.heartbeat(Duration::from_millis(50));
    }
}

/// Resident memory of a process in KiB (VmHWM after resetting it when possible: the peak).
fn reset_peak(pid: u32) -> bool {
    // "5" resets the peak RSS (proc(5), /proc/pid/clear_refs, Linux >= 4.0)
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn state_persists_and_outputs_are_jupyter_messages() {
    let mut k = python_kernel();
    let r = k.execute("x = 6 * 7");
    assert_eq!(r.status(), "ok", "{:?}", r.iopub);
    let r = k.execute(
        "import os\nprint(x)\nos.write(1, b'c-level\\n')\n\
         class H:\n    def _repr_html_(self): return '<b>h</b>'\n\
         display(H())\nprint('after')\nx + 1",
    );
    assert_eq!(r.status(), "ok");
    assert_eq!(r.result_text().as_deref(), Some("43"));
    let t = r.types();
    let first_stream = t.iter().position(|t| *t == "stream").expect("stream");
    let display = t
        .iter()
        .position(|t| *t == "display_data")
        .expect("display");
    let last_stream = t.iter().rposition(|t| *t == "stream").expect("stream");
    assert!(first_stream < display && display < last_stream, "{t:?}");
    assert_eq!(r.stdout(), "42\nc-level\nafter\n");
    assert_eq!(r.displays()[0]["data"]["text/html"], "<b>h</b>");

    let r = k.execute("h = display('a', display_id=True)\nh.update('b')");
    let id = &r.displays()[0]["transient"]["display_id"];
    assert!(id.is_string(), "{:?}", r.displays());
    assert_eq!(&r.updates()[0]["transient"]["display_id"], id);

    let r = k.execute("def f():\n    return 1 / 0\nf()");
    assert_eq!(r.status(), "error");
    assert_eq!(r.reply["ename"], "ZeroDivisionError");
    let e = r.errors()[0];
    assert!(error_text(e).contains("return 1 / 0"), "{e}");
    // IPython's coloured traceback
    assert!(e["traceback"].to_string().contains("\\u001b["), "{e}");

    let r = k.execute("len?");
    let pager = &r.reply["payload"][0];
    assert_eq!(pager["source"], "page", "{}", r.reply);
    assert!(
        pager["data"]["text/plain"]
            .to_string()
            .contains("Return the number")
    );
}

/// With IPython's `ast_node_interactivity = "all"` every value of a cell is an `execute_result`
/// of the cell's count, in its place among the prints (as ipykernel publishes them); with the
/// default, one, the last. (tests/python/test_like_ipykernel.py compares with ipykernel itself.)
#[test]
fn every_value_of_a_cell_when_ipython_shows_them_all() {
    let mut k = python_kernel();
    let r = k.execute("%config InteractiveShell.ast_node_interactivity = 'all'");
    assert_eq!(r.status(), "ok", "{:?}", r.iopub);
    let r = k.execute("1\nprint('between')\n2\ny = 3\ny");
    assert_eq!(r.status(), "ok", "{:?}", r.iopub);
    let shown: Vec<(String, String)> = r
        .iopub
        .iter()
        .filter(|m| m.msg_type == "execute_result" || m.msg_type == "stream")
        .map(|m| {
            let text = if m.msg_type == "stream" {
                &m.content["text"]
            } else {
                assert_eq!(
                    m.content["execution_count"].as_u64(),
                    r.count(),
                    "{}",
                    m.content
                );
                &m.content["data"]["text/plain"]
            };
            (m.msg_type.clone(), text.as_str().unwrap_or("").to_string())
        })
        .collect();
    let want = [
        ("execute_result", "1"),
        ("stream", "between\n"),
        ("execute_result", "2"),
        ("execute_result", "3"),
    ];
    assert_eq!(
        shown,
        want.map(|(a, b)| (a.to_string(), b.to_string())),
        "{:?}",
        r.types()
    );
    k.execute("%config InteractiveShell.ast_node_interactivity = 'last_expr'");
    let r = k.execute("4\n5");
    assert_eq!(r.of_results(), ["5"], "{:?}", r.iopub);
}

/// Tracebacks are shown as IPython shows them, in their place: a failing `%run` script or a
/// nested `run_cell` in a cell that goes on (reply "ok"); a failing cell's own error once, with
/// the reply carrying it. `%load` asks the front-end to replace the cell with the file
/// (`set_next_input`), as under ipykernel.
#[test]
fn tracebacks_in_place_and_the_next_input_payload() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("bad.py"),
        "print('start')\nraise ValueError('in script')\n",
    )
    .expect("script");
    std::fs::write(dir.path().join("mod.py"), "x = 1\n").expect("module");
    let mut k = kernel(Opts::default().workdir(dir.path()));
    let r = k.execute("%run bad.py\nprint('after')");
    assert_eq!(r.status(), "ok", "{:?}", r.iopub);
    let t: Vec<&str> = r
        .types()
        .into_iter()
        .filter(|t| *t == "stream" || *t == "error")
        .collect();
    assert_eq!(t, ["stream", "error", "stream"], "{:?}", r.iopub);
    assert_eq!(r.errors()[0]["ename"], "ValueError");
    assert!(error_text(r.errors()[0]).contains("raise ValueError"));

    let r = k.execute("get_ipython().run_cell('1/0')\nprint('after')");
    assert_eq!(r.status(), "ok", "{:?}", r.iopub);
    assert_eq!(r.errors()[0]["ename"], "ZeroDivisionError");
    assert_eq!(r.stdout(), "after\n");

    let r = k.execute("print('before')\n{}['missing']");
    assert_eq!(r.status(), "error");
    assert_eq!(r.reply["ename"], "KeyError");
    assert_eq!(r.errors().len(), 1, "the error once: {:?}", r.iopub);
    assert_eq!(r.errors()[0]["traceback"], r.reply["traceback"]);

    let r = k.execute("%load mod.py");
    assert_eq!(r.status(), "ok", "{:?}", r.reply);
    let p = &r.reply["payload"][0];
    assert_eq!(p["source"], "set_next_input", "{}", r.reply);
    assert_eq!(p["text"], "# %load mod.py\nx = 1\n");
    assert_eq!(p["replace"], true);
    let r = k.execute("pass");
    assert_eq!(
        r.reply["payload"],
        json!([]),
        "a payload is for one cell only"
    );
    // %edit needs a terminal's editor: a usage error that says what to use instead
    for edit in ["%edit", "%ed mod.py"] {
        let r = k.execute(edit);
        assert_eq!(r.reply["ename"], "UsageError", "{edit}: {:?}", r.iopub);
        assert!(
            error_text(r.errors()[0]).contains("%load FILE"),
            "{edit}: {:?}",
            r.iopub
        );
    }
}

/// `store_history: false` and `silent: true` reach IPython's run_cell, as ipykernel passes them:
/// IPython's count, `In` and `_`, and the `Cell In[n]` of tracebacks follow the reply's
/// `execution_count`, magic bodies included. (The first cell may run before IPython is in: the
/// same either way.)
#[test]
fn cells_not_stored_keep_ipythons_count_with_the_kernels() {
    let mut k = python_kernel();
    assert_eq!(k.execute("a = 1").count(), Some(1));
    // not stored: shown, and `_` as under ipykernel (IPython's displayhook)
    let n = k.execute_content(json!({ "code": "5", "store_history": false }));
    assert_eq!(
        (n.count(), n.result_text().as_deref()),
        (Some(1), Some("5"))
    );
    // a magic's body runs under the request's flags too
    let s = k.execute_content(json!({ "code": "%%python\nb = 2\n7", "silent": true }));
    assert_eq!((s.status(), s.count()), ("ok", Some(1)), "{:?}", s.reply);
    let m = k.execute_content(json!({ "code": "%%carbon\nc = 3", "store_history": false }));
    assert_eq!((m.status(), m.count()), ("ok", Some(1)), "{:?}", m.reply);

    let r = k.execute("def f():\n    return 1 / 0\nf()");
    assert_eq!(r.count(), Some(2));
    let tb = error_text(r.errors()[0]);
    assert!(
        tb.contains("Cell In[2], line 3") && tb.contains("Cell In[2], line 2"),
        "{tb}"
    );
    let r = k.execute("len(In), In[2].split()[0], _, b, c");
    assert_eq!(r.count(), Some(3));
    assert_eq!(r.result_text().as_deref(), Some("(4, 'def', 5, 2, 3)"));
}

/// `%%carbon --repeat N` is one cell for IPython too: its count and `In` stay with the kernel's.
#[test]
fn a_repeated_metered_cell_counts_once_in_ipython() {
    let mut k = python_kernel();
    let r = k.execute("%%carbon --repeat 3\nn = len(In)");
    assert_eq!((r.status(), r.count()), ("ok", Some(1)), "{:?}", r.reply);
    let r = k.execute("1 / 0");
    assert_eq!(r.count(), Some(2));
    let tb = error_text(r.errors()[0]);
    assert!(tb.contains("Cell In[2], line 1"), "{tb}");
    let r = k.execute("n, len(In)");
    assert_eq!(r.result_text().as_deref(), Some("(2, 4)"));
}

/// Runs (after `prefix`, e.g. `%%python\n`) a cell whose function raises, which must be the
/// kernel's cell `n`: its traceback names `Cell In[n]` at both lines; returns the reply's stderr.
fn raises_in_cell(k: &mut Kernel, prefix: &str, n: u64) -> String {
    let r = k.execute(&format!("{prefix}def f():\n    return 1 / 0\nf()"));
    assert_eq!(r.count(), Some(n));
    let tb = error_text(r.errors()[0]);
    assert!(
        tb.contains(&format!("Cell In[{n}], line 3"))
            && tb.contains(&format!("Cell In[{n}], line 2")),
        "{tb}"
    );
    r.stderr()
}

/// Cells the kernel counts but IPython never runs (a kernel magic, an empty cell, another
/// language) count in IPython too: a later traceback's `Cell In[n]` is the cell's execution_count
/// (under ipykernel IPython runs every cell, so the two are one count).
#[test]
fn cells_of_kernel_magics_keep_ipythons_count_with_the_kernels() {
    let mut k = python_kernel();
    let s = k.execute("%carbon status");
    assert_eq!((s.status(), s.count()), ("ok", Some(1)), "{:?}", s.reply);
    assert_eq!(k.execute("  ").count(), Some(2));
    raises_in_cell(&mut k, "", 3);
    let r = k.execute("len(In), In[1], In[3].split()[0]");
    assert_eq!(r.count(), Some(4));
    assert_eq!(
        r.result_text().as_deref(),
        Some("(5, '%carbon status', 'def')")
    );
}

/// A Python runtime created after the kernel's first cells (a `%%python` cell in a Java kernel)
/// counts them first: its `Cell In[n]` and `In` follow the reply's execution_count. The Java
/// cells here are kernel magics and an empty cell, so no JVM (nor JDK) is needed.
#[test]
fn a_python_runtime_created_late_counts_the_cells_before_it() {
    let mut k = kernel(Opts::default().language("java"));
    let s = k.execute("%carbon status");
    assert_eq!((s.status(), s.count()), ("ok", Some(1)), "{:?}", s.reply);
    assert_eq!(k.execute("").count(), Some(2));
    raises_in_cell(&mut k, "%%python\n", 3);
    let r = k.execute("%%python\nlen(In), In[1], In[3].split()[0]");
    assert_eq!(r.count(), Some(4));
    assert_eq!(
        r.result_text().as_deref(),
        Some("(5, '%carbon status', 'def')")
    );
}

/// The kernel outlives its Python worker: a worker started after one died (here `os._exit`)
/// counts the kernel's cells before it, so its `Cell In[n]` and `In` follow the reply's
/// execution_count instead of starting again at 1 (under ipykernel a dead kernel is a restarted
/// one, and both counts start again).
#[test]
fn a_restarted_worker_continues_the_kernels_count() {
    let mut k = python_kernel();
    assert_eq!(k.execute("a = 1").count(), Some(1));
    assert_eq!(k.execute("%carbon status").count(), Some(2));
    let r = k.execute("import os\nos._exit(1)");
    assert_eq!((r.status(), r.count()), ("error", Some(3)), "{:?}", r.reply);
    let err = raises_in_cell(&mut k, "", 4);
    assert!(err.contains("gone"), "{err}");
    let r = k.execute("len(In), In[2], In[3].split()[0], In[4].split()[0]");
    assert_eq!(r.count(), Some(5));
    assert_eq!(
        r.result_text().as_deref(),
        Some("(6, '%carbon status', 'import', 'def')")
    );
}

#[test]
fn prints_stream_live_one_message_per_line() {
    let mut k = python_kernel();
    let r = k.execute("import time\nfor i in range(3):\n    print(i)\n    time.sleep(0.5)");
    let chunks: Vec<&str> = r
        .iopub
        .iter()
        .filter(|m| m.msg_type == "stream")
        .filter_map(|m| m.content["text"].as_str())
        .collect();
    assert_eq!(chunks, ["0\n", "1\n", "2\n"]);
}

#[test]
fn input_goes_through_the_stdin_channel() {
    let mut k = python_kernel();
    k.push_input("carbon");
    let r = k.execute("name = input('who? ')\nprint(name.upper())");
    assert_eq!(r.status(), "ok", "{:?}", r.iopub);
    assert_eq!(r.input_requests.len(), 1);
    assert_eq!(r.input_requests[0]["prompt"], "who? ");
    assert_eq!(r.stdout(), "CARBON\n");
}

#[test]
fn interrupt_stops_a_busy_loop_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kernel(Opts::default().workdir(dir.path()));
    assert_eq!(k.execute("kept = 'yes'").status(), "ok");
    let id = k
        .send_execute("open('started', 'w').close()\nwhile True: pass")
        .unwrap();
    wait_for_file(&mut k, &dir.path().join("started"));
    k.interrupt();
    let r = k.wait(&id).unwrap();
    assert_eq!(r.status(), "error");
    assert_eq!(r.reply["ename"], "KeyboardInterrupt");
    assert_eq!(k.execute("kept").result_text().as_deref(), Some("'yes'"));
}

#[test]
fn worker_crashes_are_reported_and_the_next_cell_works() {
    let mut k = python_kernel();
    for (code, says) in [
        ("import os\nos._exit(1)", "exited with status 1"),
        ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
            "SIGKILL",
        ),
    ] {
        assert_eq!(k.execute("lost = 1").status(), "ok");
        let r = k.execute(code);
        assert_eq!(r.status(), "error", "{code}");
        let e = error_text(r.errors()[0]);
        assert!(e.contains(says) && e.contains("state"), "{code}: {e}");
        assert!(k.is_alive());
        let r = k.execute("'lost' in dir()");
        assert_eq!(r.status(), "ok");
        assert_eq!(r.result_text().as_deref(), Some("False"));
        assert!(r.stderr().contains("gone"), "{}", r.stderr());
    }
}

#[test]
fn ten_megabytes_of_output_keep_the_kernel_small() {
    let mut k = python_kernel();
    let pid = k.pid();
    // warm up: worker started, buffers and allocator pools at their working size
    let r = k.execute("print('y' * 1_000_000)");
    assert_eq!(r.stdout().len(), 1_000_001);
    let peak_known = reset_peak(pid);
    let before = status_kib(pid, "VmRSS:");
    let r = k.execute("print('x' * 10_000_000)");
    assert_eq!(r.status(), "ok");
    assert_eq!(r.stdout().len(), 10_000_001);
    let streams = r.types().iter().filter(|t| **t == "stream").count();
    assert!(streams > 10, "sent in {streams} messages");
    let after = status_kib(pid, if peak_known { "VmHWM:" } else { "VmRSS:" });
    let growth = after.saturating_sub(before);
    println!(
        "kernel RSS before {before} KiB, after 10 MB of output {after} KiB (peak: {peak_known})"
    );
    assert!(
        growth < 5 * 1024,
        "kernel memory grew by {growth} KiB for 10 MB of output"
    );
}

#[test]
fn without_ipython_the_standard_library_runner_works() {
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("python-no-ipython");
    // -S: no site-packages, so IPython cannot be imported
    std::fs::write(
        &py,
        format!("#!/bin/sh\nexec '{}' -S \"$@\"\n", python3().display()),
    )
    .unwrap();
    std::fs::set_permissions(&py, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut k = kernel(Opts::default().env("CARBON_PYTHON", py.to_string_lossy()));
    let r = k.execute("import sys\n'IPython' in sys.modules");
    assert_eq!(r.result_text().as_deref(), Some("False"));
    let r = k.execute(
        "class H:\n    def _repr_html_(self): return '<i>x</i>'\nprint('p')\ndisplay(H())\n[1, 2]",
    );
    assert_eq!(r.stdout(), "p\n");
    assert_eq!(r.displays()[0]["data"]["text/html"], "<i>x</i>");
    assert_eq!(r.result_text().as_deref(), Some("[1, 2]"));
    let r = k.execute("def g():\n    raise ValueError('bad')\ng()");
    assert_eq!(r.reply["ename"], "ValueError");
    assert!(error_text(r.errors()[0]).contains("raise ValueError('bad')"));
    k.push_input("42");
    let r = k.execute("int(input('n? ')) + 1");
    assert_eq!(r.result_text().as_deref(), Some("43"));
    // allow_stdin false: the error ipykernel raises
    let r = k.execute_content(json!({"code": "input()", "allow_stdin": false}));
    assert_eq!(r.reply["ename"], "StdinNotImplementedError");
}

#[test]
fn a_missing_interpreter_is_a_clear_error_and_the_kernel_stays_up() {
    let mut k = kernel(Opts::default().env("CARBON_PYTHON", "/nonexistent/python3"));
    assert_eq!(k.kernel_info()["language_info"]["name"], "python");
    let r = k.execute("1 + 1");
    assert_eq!(r.status(), "error");
    let e = error_text(r.errors()[0]);
    assert!(
        e.contains("CARBON_PYTHON") && e.contains("/nonexistent/python3"),
        "{e}"
    );
    assert!(k.is_alive());
    assert!(k.heartbeat(Duration::from_secs(5)));
}

#[test]
fn completion_inspection_and_is_complete_use_the_worker() {
    let mut k = python_kernel();
    k.execute("import os\nmy_value = 3");
    let code = "my_va";
    let r = k.request(
        "complete_request",
        json!({"code": code, "cursor_pos": code.len()}),
    );
    assert_eq!(r["status"], "ok");
    assert!(
        r["matches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "my_value"),
        "{r}"
    );
    assert_eq!(r["cursor_start"], 0);
    let r = k.request(
        "inspect_request",
        json!({"code": "len", "cursor_pos": 3, "detail_level": 0}),
    );
    assert_eq!(r["found"], true, "{r}");
    let r = k.request("is_complete_request", json!({"code": "for i in x:"}));
    assert_eq!(r["status"], "incomplete", "{r}");
    let r = k.request("is_complete_request", json!({"code": "x = 1"}));
    assert_eq!(r["status"], "complete", "{r}");
}

#[test]
fn the_worker_dies_with_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kernel(Opts::default().workdir(dir.path()));
    // Busy, so it cannot notice EOF on its command channel: only PR_SET_PDEATHSIG can stop it.
    k.send_execute("import os\nopen('pid.tmp', 'w').write(str(os.getpid()))\nos.rename('pid.tmp', 'pid')\nwhile True: pass")
        .unwrap();
    let file = dir.path().join("pid");
    wait_for_file(&mut k, &file);
    let pid: u32 = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    assert_ne!(pid, k.pid());
    // Only the kernel, not its process group.
    k.signal(libc::SIGKILL);
    k.wait_exit(Duration::from_secs(10)).expect("kernel exits");
    let procfs = carbon_magics::carbon::procfs::ProcReader::new("/proc");
    let alive = |pid: u32| procfs.stat_line(pid, |l| l.state != 'Z').unwrap_or(false);
    let end = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(pid), "worker {pid} outlived the kernel");
}

#[test]
fn interrupting_a_pending_input_ends_the_cell() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kernel(Opts::default().workdir(dir.path()));
    assert_eq!(k.execute("kept = 1").status(), "ok");
    // no answer queued: the input_request stays open until the interrupt
    let id = k
        .send_execute("open('started', 'w').close()\ninput('never answered? ')")
        .unwrap();
    wait_for_file(&mut k, &dir.path().join("started"));
    k.interrupt();
    let r = k.wait(&id).unwrap();
    assert_eq!(r.reply["ename"], "KeyboardInterrupt", "{}", r.reply);
    assert_eq!(k.execute("kept").result_text().as_deref(), Some("1"));
}

/// A kernel whose Python holds `import IPython` back until `<dir>/gate` exists (the fixture
/// sitecustomize on PYTHONPATH), then writes `<dir>/gate.imported`. None without IPython in the
/// test's python (skipped).
fn gated_kernel(dir: &Path) -> Option<Kernel> {
    let venv = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from);
    let py = venv
        .map(|v| v.join("bin/python"))
        .filter(|p| p.exists())
        .unwrap_or_else(python3);
    let has_ipython = std::process::Command::new(&py)
        .args(["-c", "import IPython"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_ipython {
        eprintln!("skipped: no IPython in {}", py.display());
        return None;
    }
    let site = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/fixtures/python");
    let w = dir.join("gated-python");
    std::fs::write(
        &w,
        format!(
            "#!/bin/sh\nPYTHONPATH='{}' CARBON_TEST_IPYTHON_GATE='{}' exec '{}' \"$@\"\n",
            site.display(),
            dir.join("gate").display(),
            py.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(kernel(
        Opts::default()
            .workdir(dir)
            .env("CARBON_PYTHON", w.to_string_lossy()),
    ))
}

#[test]
fn the_first_cells_run_before_ipython_is_imported_and_look_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut k) = gated_kernel(dir.path()) else {
        return;
    };
    let r = k.execute("x = 1");
    assert_eq!(r.status(), "ok", "{:?}", r.iopub);
    assert!(r.result().is_none());
    let r = k.execute("def f():\n    return 1 / 0\nprint('defined')");
    assert_eq!(r.stdout(), "defined\n");
    // both ran while IPython's import was held back
    assert!(!dir.path().join("gate.imported").exists());

    // an early cell that raises: IPython formats its error once it is in
    let id = k
        .send_execute("import pathlib\npathlib.Path('started').touch()\nz = f()")
        .unwrap();
    wait_for_file(&mut k, &dir.path().join("started"));
    std::fs::write(dir.path().join("gate"), "").unwrap();
    let r = k.wait(&id).unwrap();
    assert_eq!(r.reply["ename"], "ZeroDivisionError");
    let e = r.errors()[0];
    let tb = error_text(e);
    assert!(
        tb.contains("Cell In[3], line 3") && tb.contains("Cell In[2], line 2"),
        "{tb}"
    );
    assert!(e["traceback"].to_string().contains("\\u001b["), "{e}");

    // the state survives the switch, and the value is IPython's execute_result
    let r = k.execute("x");
    assert_eq!(r.result_text().as_deref(), Some("1"));
    assert_eq!(r.result().expect("result")["execution_count"], 4);
    let r = k.execute("%who");
    assert!(r.stdout().contains("pathlib"), "{}", r.stdout());
}

#[test]
fn a_magic_in_the_first_cell_waits_for_ipython() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut k) = gated_kernel(dir.path()) else {
        return;
    };
    let id = k.send_execute("%time t = 6 * 7").unwrap();
    // the cell was sent before IPython's import could finish
    std::fs::write(dir.path().join("gate"), "").unwrap();
    let r = k.wait(&id).unwrap();
    assert_eq!(r.status(), "ok", "{:?}", r.iopub);
    assert!(r.stdout().contains("Wall time"), "{}", r.stdout());
    assert_eq!(k.execute("t").result_text().as_deref(), Some("42"));
}
