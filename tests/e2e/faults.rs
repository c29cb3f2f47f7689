//! Faults (issue 13): what a class of strangers can do to a kernel — processes left behind,
//! stalled subscribers, lost interrupts, replayed or odd protocol messages. One test per item;
//! each is bounded in time and ends whatever it starts. Where ipykernel is the reference, the
//! test says what ipykernel does.

use crate::harness::{Chan, Kernel, Opts, execute_content};
use serde_json::json;
use std::time::{Duration, Instant};

fn test_kernel() -> Kernel {
    Kernel::start(Opts::default().test_runtime()).expect("kernel starts")
}

/// Item 7: the protocol as jupyter_client's `Session` holds it.
///
/// * A replayed signed message is refused and logged. ipykernel: `Session.deserialize` raises
///   "Duplicate Signature" (its `digest_history`), the request is logged as invalid and not run.
/// * `comm_open` for an unknown target gets an immediate `comm_close` on iopub. ipykernel: the
///   comm manager logs "No such comm target registered" and closes the comm.
/// * The heartbeat survives thousands of clients that leave in the middle of a ping (before:
///   about one kernel in four stopped answering for good; ipykernel's ROUTER echo does not).
#[test]
fn item7_replays_unknown_comms_and_heartbeat_dropouts() {
    let mut k = test_kernel();
    // 1. replay: the same signed frames twice (through a second client socket)
    let (frames, id) = k.signed_frames("execute_request", execute_content("print once"));
    k.send_raw(frames.clone()).unwrap();
    let reply = k
        .raw_recv(Duration::from_secs(10))
        .expect("the first copy is answered");
    assert_eq!(k.decode_raw(&reply).unwrap().parent_id(), Some(id.as_str()));
    k.send_raw(frames).unwrap();
    assert!(
        k.raw_recv(Duration::from_millis(500)).is_none(),
        "a replayed request was answered"
    );
    let ran = k
        .unclaimed(Duration::from_millis(200))
        .unwrap()
        .into_iter()
        .filter(|m| m.msg_type == "stream" && m.content["text"] == "once\n")
        .count();
    assert_eq!(ran, 1, "the replayed cell ran again");
    assert!(k.log().contains("replayed message"), "{}", k.log_tail(20));

    // 2. comm_open for a target nobody registered
    let comm_id = uuid::Uuid::new_v4().to_string();
    let open = k
        .send(
            Chan::Shell,
            "comm_open",
            json!({ "comm_id": comm_id, "target_name": "no.such.target", "data": {} }),
        )
        .unwrap();
    let msgs = k.unclaimed(Duration::from_secs(3)).unwrap();
    let close = msgs
        .iter()
        .find(|m| m.msg_type == "comm_close")
        .unwrap_or_else(|| panic!("no comm_close: {msgs:?}"));
    assert_eq!(close.content["comm_id"], comm_id.as_str());
    assert_eq!(close.parent_id(), Some(open.as_str()));

    // 3. heartbeat clients that leave mid-ping: half speak ZeroMQ and vanish after the ping,
    // half send a partial greeting and close
    let url = format!("tcp://{}:{}", k.info.ip, k.info.hb_port);
    let addr = format!("{}:{}", k.info.ip, k.info.hb_port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for round in 0..4 {
        rt.block_on(async {
            use zeromq::{Socket, SocketSend};
            for i in 0..300 {
                if i % 2 == 0 {
                    let mut s = zeromq::ReqSocket::new();
                    if s.connect(&url).await.is_ok() {
                        let _ = s.send(zeromq::ZmqMessage::from("ping")).await;
                    }
                    drop(s);
                } else if let Ok(mut t) = std::net::TcpStream::connect(&addr) {
                    use std::io::Write;
                    let _ = t.write_all(b"\xff\0\0\0\0\0\0\0\x01\x7f\x03");
                }
            }
        });
        assert!(
            k.heartbeat(Duration::from_secs(5)),
            "heartbeat dead after {} drop-outs",
            (round + 1) * 300
        );
    }
    // no socket left in CLOSE-WAIT on the heartbeat port
    let t0 = Instant::now();
    loop {
        let ss = std::process::Command::new("ss").arg("-tan").output();
        let Ok(ss) = ss else { break };
        let port = format!(":{}", k.info.hb_port);
        let waiting = String::from_utf8_lossy(&ss.stdout)
            .lines()
            .filter(|l| l.contains("CLOSE-WAIT") && l.contains(&port))
            .count();
        if waiting == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{waiting} heartbeat sockets stay in CLOSE-WAIT"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(k.execute("print still").stdout(), "still\n");
}

/// The rows of `emissions.csv` as (status, repeat index) and the whole header/row maps.
fn csv_rows(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    // no file yet: no rows
    if !path.exists() {
        return Vec::new();
    }
    crate::harness::csv_rows(path)
}

/// Item 6: an interrupt during `%%carbon --repeat N` stops the series, the interrupted run is
/// recorded as `interrupted` and the finished ones are kept; a crash is `runtime-error` in
/// every language (Python, Java, Rust; a language whose runtime is not installed is skipped).
#[test]
fn item6_interrupted_series_and_crashes_read_the_same() {
    let d = tempfile::tempdir().unwrap();
    let mut k = Kernel::start(
        Opts::default()
            .workdir(d.path())
            .env("CARBON_NVML_LIB", "none")
            .env("CARBON_CPU_TDP", "100")
            .timeout(Duration::from_secs(300)),
    )
    .unwrap();
    let csv = d.path().join("emissions.csv");
    let py = k.execute("print('py', 1 + 1)");
    if py.stdout() != "py 2\n" {
        eprintln!("SKIP: Python runtime not usable: {:?}", py.errors());
        return;
    }
    let id = k
        .send_execute("%%carbon --repeat 8\nimport time\ntime.sleep(0.6)\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1600));
    k.interrupt();
    let r = k.wait(&id).unwrap();
    assert_eq!(r.status(), "error", "{:?}", r.iopub);
    let rows = csv_rows(&csv);
    let statuses: Vec<&str> = rows.iter().map(|r| r["status"].as_str()).collect();
    assert!(
        (1..8).contains(&statuses.len()),
        "the series did not stop: {statuses:?}"
    );
    let (last, done) = statuses.split_last().unwrap();
    assert!(done.iter().all(|s| *s == "ok"), "{statuses:?}");
    assert!(
        *last == "interrupted" || (*last == "ok" && r.errors()[0]["ename"] == "KeyboardInterrupt"),
        "{statuses:?}"
    );
    // the kernel goes on
    assert_eq!(k.execute("print('after')").stdout(), "after\n");

    // crashes: one word in every language
    let crashes = [
        (
            "python",
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
        ),
        ("java", "Runtime.getRuntime().halt(3);\n"),
        ("rust", "std::process::abort();\n"),
    ];
    for (lang, body) in crashes {
        let before = csv_rows(&csv).len();
        let r = k
            .execute_with_timeout(
                &format!("%%carbon {lang}\n{body}"),
                Duration::from_secs(300),
            )
            .unwrap();
        let after = csv_rows(&csv);
        if after.len() == before {
            let e = r.errors().first().map(|e| e["ename"].to_string());
            eprintln!("SKIP {lang}: no row ({e:?})");
            continue;
        }
        assert_eq!(r.status(), "error", "{lang}: {:?}", r.iopub);
        assert_eq!(
            after.last().unwrap()["status"],
            "runtime-error",
            "{lang}: {:?}",
            r.errors()
        );
    }
}

/// Live (non-zombie) processes whose command line contains `marker`.
fn running_with(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .map(|i| stat[i + 1..].trim_start().starts_with('Z'))
            .unwrap_or(true);
        if cmd.contains(marker) && !zombie {
            out.push(format!("{pid}: {cmd}"));
        }
    }
    out
}

/// Waits up to 10 s for every process with `marker` in its command line to end; returns the
/// survivors.
fn survivors(marker: &str) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = running_with(marker);
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ends (SIGKILL) what a failed test left behind, so a failure does not leak sleeps.
fn cleanup(marker: &str) {
    for l in running_with(marker) {
        if let Some(pid) = l.split(':').next().and_then(|p| p.parse::<u32>().ok()) {
            carbon_kernel::runtime::child::signal_pid(pid, libc::SIGKILL);
        }
    }
}

fn python_kernel() -> Option<Kernel> {
    let mut k = Kernel::start(
        Opts::default()
            .env("CARBON_NVML_LIB", "none")
            .env("CARBON_CPU_TDP", "100")
            .timeout(Duration::from_secs(120)),
    )
    .unwrap();
    let e = k.execute("print('py', 1 + 1)");
    if e.stdout() != "py 2\n" {
        eprintln!("SKIP: Python runtime not usable: {:?}", e.errors());
        return None;
    }
    Some(k)
}

/// Item 1 (and issue 10.6's third point): nothing a cell starts outlives its `--timeout`, its
/// interrupt, `%carbon exec`, or the kernel's shutdown (idle and mid-cell), whether started
/// directly, through a shell with `&`, or `setsid` away from every group. ipykernel: an
/// interrupt is SIGINT to the kernel's process group (jupyter_client's `signal_kernel`), which
/// reaches direct children in that group but not a shell's `setsid` job, and a shutdown leaves
/// a subprocess's children running; carbon-kernel ends them all.
#[test]
fn item1_nothing_outlives_its_cell_or_its_kernel() {
    let tag = format!("4711.{}", std::process::id());
    let marker = |n: u32| format!("{tag}{n:02}");
    let result = std::panic::catch_unwind(|| {
        let Some(mut k) = python_kernel() else { return };
        // a: --timeout ends a shell, its background job and a setsid'd one
        let code = format!(
            "%%carbon --timeout 1 --no-csv\nimport subprocess, os, time\n\
             subprocess.Popen('sleep {a} & setsid sleep {b} & sleep {c}', shell=True)\n\
             time.sleep(60)\n",
            a = marker(1),
            b = marker(2),
            c = marker(3)
        );
        let r = k
            .execute_with_timeout(&code, Duration::from_secs(60))
            .unwrap();
        assert_eq!(r.status(), "error", "{:?}", r.iopub);
        for n in 1..=3 {
            let left = survivors(&marker(n));
            assert!(left.is_empty(), "after --timeout: {left:?}");
        }
        // b: an interrupt ends a subprocess and an orphan of a shell that already exited
        let code = format!(
            "import subprocess, os, time\nos.system('sleep {d} &')\n\
             p = subprocess.Popen(['sleep', '{e}'])\ntime.sleep(60)\n",
            d = marker(4),
            e = marker(5)
        );
        let id = k.send_execute(&code).unwrap();
        let t0 = Instant::now();
        while running_with(&marker(5)).is_empty() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        k.interrupt();
        let r = k.wait(&id).unwrap();
        assert_eq!(r.status(), "error");
        for n in 4..=5 {
            let left = survivors(&marker(n));
            assert!(left.is_empty(), "after the interrupt: {left:?}");
        }
        // c: %carbon exec returns when its command exits though a background job holds its
        // output, and the job does not outlive it
        let r = k
            .execute_with_timeout(
                &format!(
                    "%carbon exec sh -c 'sleep {f} & echo started'",
                    f = marker(6)
                ),
                Duration::from_secs(30),
            )
            .unwrap();
        assert!(r.stdout().contains("started"), "{:?}", r.iopub);
        assert!(survivors(&marker(6)).is_empty());
        // c': an interrupt always ends `%carbon exec`, even a command that ignores SIGINT and
        // SIGTERM (killed after the escalation delay), and what it started
        let id = k
            .send_execute(&format!(
                "%carbon exec sh -c 'trap \"\" INT TERM; sleep {m} & sleep {n}'",
                m = marker(12),
                n = marker(13)
            ))
            .unwrap();
        let t0 = Instant::now();
        while running_with(&marker(13)).is_empty() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        k.interrupt();
        let r = k.wait_timeout(&id, Duration::from_secs(30)).unwrap();
        assert_eq!(r.status(), "error", "{:?}", r.iopub);
        for n in 12..=13 {
            let left = survivors(&marker(n));
            assert!(left.is_empty(), "after interrupting %carbon exec: {left:?}");
        }
        // d: shutdown of an idle kernel ends a background process of an earlier cell, and one
        // mid-cell ends the cell's
        let r = k.execute(&format!(
            "import subprocess\nbg = subprocess.Popen(['sleep', '{g}'])",
            g = marker(7)
        ));
        assert_eq!(r.status(), "ok", "{:?}", r.iopub);
        assert_eq!(
            running_with(&marker(7)).len(),
            1,
            "the background sleep runs: {:?} {:?} {:?}",
            r.elapsed,
            r.iopub,
            r.reply
        );
        let id = k
            .send_execute(&format!(
                "import subprocess\nsubprocess.run('sleep {h} & wait', shell=True)",
                h = marker(8)
            ))
            .unwrap();
        let t0 = Instant::now();
        while running_with(&marker(8)).is_empty() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = id;
        k.shutdown(false);
        assert!(
            k.wait_exit(Duration::from_secs(20)).is_some(),
            "kernel exits"
        );
        for n in 7..=8 {
            let left = survivors(&marker(n));
            assert!(left.is_empty(), "after shutdown: {left:?}");
        }
        // d': a restart (shutdown_request with restart) ends them the same way
        let Some(mut k) = python_kernel() else { return };
        k.execute(&format!(
            "import subprocess\nbg = subprocess.Popen(['sleep', '{r}'])",
            r = marker(14)
        ));
        assert_eq!(
            running_with(&marker(14)).len(),
            1,
            "the background sleep runs"
        );
        k.shutdown(true);
        assert!(
            k.wait_exit(Duration::from_secs(20)).is_some(),
            "kernel exits"
        );
        let left = survivors(&marker(14));
        assert!(left.is_empty(), "after a restart: {left:?}");
        // e: kill -9 of the kernel: its guard ends a subprocess, a shell's job and a setsid'd
        // orphan (the guard looks at the tree every second: give it two looks)
        let Some(mut k) = python_kernel() else { return };
        let r = k.execute(&format!(
            "import subprocess, os\nbg = subprocess.Popen(['sleep', '{i}'])\n\
             os.system('sleep {j} & setsid sleep {l} &')",
            i = marker(9),
            j = marker(10),
            l = marker(11)
        ));
        assert_eq!(r.status(), "ok", "{:?}", r.iopub);
        std::thread::sleep(Duration::from_millis(2500));
        for n in 9..=11 {
            assert_eq!(running_with(&marker(n)).len(), 1, "sleep {n} runs");
        }
        k.signal(libc::SIGKILL);
        assert!(k.wait_exit(Duration::from_secs(10)).is_some());
        for n in 9..=11 {
            let left = survivors(&marker(n));
            assert!(left.is_empty(), "after kill -9 of the kernel: {left:?}");
        }
    });
    for n in 1..=14 {
        cleanup(&marker(n));
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// The processes of an interrupted cell are ended by a sweep of the runtimes' descendants: it
/// ran on after the cell's reply, and killed what the next cell started meanwhile (a subprocess
/// launched right after an interrupt died at once). Now the interrupted cell's reply waits for
/// the sweep; the next cell's subprocess lives.
#[test]
fn a_subprocess_started_right_after_an_interrupt_lives() {
    let tag = format!("4712.{}", std::process::id());
    let marker = |n: u32| format!("{tag}{n:02}");
    let result = std::panic::catch_unwind(|| {
        let Some(mut k) = python_kernel() else { return };
        for round in 0..3 {
            let (old, new) = (marker(2 * round), marker(2 * round + 1));
            let id = k
                .send_execute(&format!(
                    "import subprocess, time\nold = subprocess.Popen(['sleep', '{old}'])\ntime.sleep(60)"
                ))
                .unwrap();
            let t0 = Instant::now();
            while running_with(&old).is_empty() && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(20));
            }
            k.interrupt();
            let r = k.wait(&id).unwrap();
            assert_eq!(r.status(), "error", "{:?}", r.iopub);
            assert!(
                running_with(&old).is_empty(),
                "the interrupted cell's subprocess ended"
            );
            let r = k.execute(&format!(
                "new = subprocess.Popen(['sleep', '{new}'])\nprint(new.poll())"
            ));
            assert_eq!(r.stdout(), "None\n", "{:?}", r.iopub);
            // long enough for a sweep still running to find it (one pass scans /proc)
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                running_with(&new).len(),
                1,
                "round {round}: the next cell's subprocess was killed"
            );
            k.execute("new.kill(); new.wait()");
        }
        k.shutdown(false);
    });
    for n in 0..6 {
        cleanup(&marker(n));
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Runs `code` (a cell that prints `early` and starts a thread that prints `late 0`..`late 299`
/// about 1 s later), then, the kernel idle and nothing else sent, waits (bounded) for the late
/// lines: all of them, in order, each under that cell. Then `next` (a cell printing `next`) gets
/// only its own output. `false`: the language is not usable here (skipped).
fn late_lines_reach_their_cell(k: &mut Kernel, lang: &str, code: &str, next: &str) -> bool {
    let r = k.execute(code);
    if !r.errors().is_empty() {
        eprintln!("SKIP {lang}: {:?}", r.errors());
        return false;
    }
    assert_eq!(r.stdout(), "early\n", "{lang}");
    let cell = r.msg_id.clone();
    let t0 = Instant::now();
    let mut text = String::new();
    while !text.contains("late 299\n") && t0.elapsed() < Duration::from_secs(20) {
        for m in k.unclaimed(Duration::from_millis(200)).unwrap() {
            if m.msg_type == "stream" {
                assert_eq!(m.parent_id(), Some(cell.as_str()), "{lang}: {m:?}");
                text.push_str(m.content["text"].as_str().unwrap_or(""));
            }
        }
    }
    let want: String = (0..300).map(|i| format!("late {i}\n")).collect();
    assert_eq!(text, want, "{lang}: late output lost or misplaced");
    let r = k.execute(next);
    assert_eq!(r.stdout(), "next\n", "{lang}");
    true
}

/// Item 2: output of a thread that prints after its cell ended reaches the front-end while the
/// kernel is idle, under the cell that started it, with nothing dropped. ipykernel 7.4 does the
/// same (its thread's `late` arrives 1.0 s after the cell, parent = that cell; while another
/// cell runs, it goes under the running cell).
#[test]
fn item2_late_thread_output_goes_to_its_cell_at_once() {
    let Some(mut k) = python_kernel() else { return };
    let code = "import threading, time\n\
                def f():\n    time.sleep(1.0)\n    for i in range(300):\n        print('late', i, flush=True)\n\
                threading.Thread(target=f).start()\nprint('early')";
    late_lines_reach_their_cell(&mut k, "python", code, "print('next')");
}

/// Item 2 in Java and Rust: a `Thread` / `std::thread::spawn` that prints after its cell ended
/// is published at once under that cell, as in Python (before: with the next cell of the same
/// language, under that cell; Rust's evcxr reads its child's stdout only while a cell runs). A
/// language whose runtime is not installed is skipped.
#[test]
fn item2_java_and_rust_late_thread_output_goes_to_its_cell_at_once() {
    let mut k = Kernel::start(
        Opts::default()
            .env("CARBON_NVML_LIB", "none")
            .timeout(Duration::from_secs(300)),
    )
    .unwrap();
    late_lines_reach_their_cell(
        &mut k,
        "java",
        "%%java\nnew Thread(() -> { try { Thread.sleep(1000); } catch (InterruptedException e) {}\n\
         for (int i = 0; i < 300; i++) System.out.println(\"late \" + i); }).start();\n\
         System.out.println(\"early\");\n",
        "%%java\nSystem.out.println(\"next\");\n",
    );
    late_lines_reach_their_cell(
        &mut k,
        "rust",
        "%%rust\nstd::thread::spawn(|| { std::thread::sleep(std::time::Duration::from_secs(1));\n\
         for i in 0..300 { println!(\"late {i}\"); } });\n\
         println!(\"early\");\n",
        "%%rust\nprintln!(\"next\");\n",
    );
}

/// Item 3: a subscriber that connects to iopub and never reads does not stall the kernel: a
/// 20 MB print still gets its reply, and a client that reads gets all of it. A ZeroMQ PUB
/// socket (ipykernel's iopub) drops a slow subscriber's messages at its high-water mark the
/// same way.
#[test]
fn item3_a_stalled_subscriber_stalls_nobody() {
    use std::io::{Read, Write};
    let mut k = test_kernel();
    // a raw ZMTP 3.0 SUB: greeting, READY, subscribe to everything, then never read
    let mut s = std::net::TcpStream::connect((k.info.ip.as_str(), k.info.iopub_port)).unwrap();
    let mut greeting = [0u8; 64];
    greeting[0] = 0xff;
    greeting[8] = 1;
    greeting[9] = 0x7f;
    greeting[10] = 3;
    greeting[12..16].copy_from_slice(b"NULL");
    s.write_all(&greeting).unwrap();
    let mut theirs = [0u8; 64];
    s.read_exact(&mut theirs).unwrap();
    assert_eq!((theirs[0], theirs[9], theirs[10]), (0xff, 0x7f, 3));
    let mut ready = vec![5u8];
    ready.extend_from_slice(b"READY\x0bSocket-Type\0\0\0\x03SUB");
    s.write_all(&[0x04, ready.len() as u8]).unwrap();
    s.write_all(&ready).unwrap();
    s.write_all(&[0x00, 1, 1]).unwrap(); // subscribe to ""
    s.flush().unwrap();
    // give the subscription time to land, then fill its buffers
    std::thread::sleep(Duration::from_millis(300));
    let bytes = 20_000_000;
    let r = k
        .execute_with_timeout(&format!("spam {bytes}"), Duration::from_secs(120))
        .unwrap();
    assert_eq!(r.status(), "ok");
    assert_eq!(r.stdout().len(), bytes, "the reading client lost output");
    // and the kernel keeps serving
    assert_eq!(k.execute("print after").stdout(), "after\n");
    drop(s);
}

/// Item 1 in Java and Rust: a `ProcessBuilder` and a `std::process::Command` child (a shell and
/// its background job) end with the cell's interrupt. A language whose runtime is not
/// installed is skipped.
#[test]
fn item1_java_and_rust_children_end_with_the_interrupt() {
    let tag = format!("4712.{}", std::process::id());
    let marker = |n: u32| format!("{tag}{n:02}");
    let result = std::panic::catch_unwind(|| {
        let mut k = Kernel::start(
            Opts::default()
                .env("CARBON_NVML_LIB", "none")
                .timeout(Duration::from_secs(300)),
        )
        .unwrap();
        let cells = [
            (
                "java",
                format!(
                    "%%java\nnew ProcessBuilder(\"sh\", \"-c\", \"sleep {a} & sleep {b}\").start();\n\
                     Thread.sleep(120000);\n",
                    a = marker(1),
                    b = marker(2)
                ),
                [1, 2],
            ),
            (
                "rust",
                format!(
                    "%%rust\nstd::process::Command::new(\"sh\").args([\"-c\", \"sleep {a} & sleep {b}\"]).spawn().unwrap();\n\
                     std::thread::sleep(std::time::Duration::from_secs(120));\n",
                    a = marker(3),
                    b = marker(4)
                ),
                [3, 4],
            ),
        ];
        for (lang, code, ns) in cells {
            let id = k.send_execute(&code).unwrap();
            let t0 = Instant::now();
            let mut started = false;
            while t0.elapsed() < Duration::from_secs(240) {
                if ns.iter().all(|n| !running_with(&marker(*n)).is_empty()) {
                    started = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !started {
                k.interrupt();
                let r = k.wait(&id).unwrap();
                eprintln!("SKIP {lang}: the children never ran: {:?}", r.errors());
                continue;
            }
            k.interrupt();
            let r = k.wait(&id).unwrap();
            assert_eq!(r.status(), "error", "{lang}");
            for n in ns {
                let left = survivors(&marker(n));
                assert!(left.is_empty(), "{lang}: after the interrupt: {left:?}");
            }
        }
    });
    for n in 1..=4 {
        cleanup(&marker(n));
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Item 1, the `kill -9` window: a process that leaves every group the guard knows (a double
/// fork, then `setsid`) just before a `kill -9` of the kernel, after the guard's last look at
/// the tree (it looks every second), used to run on. Where a cgroup hierarchy is writable the
/// kernel runs in a cgroup of its own, which no fork or `setsid` leaves: the guard kills every
/// member and removes the cgroup. Skipped, with the reason, where no hierarchy is writable (the
/// kernel then tracks by process groups, as `%carbon status` says). ipykernel: a `kill -9` of
/// the kernel leaves every process it started running.
#[test]
fn item1_a_process_that_left_its_group_just_before_kill_9_is_ended() {
    let Some(kind) = carbon_kernel::runtime::child::cgroup::available() else {
        eprintln!(
            "SKIP: no writable cgroup hierarchy here (not root, no delegated subtree): the kernel \
             tracks by process groups, and a process that leaves its group within a second \
             before a kill -9 can escape"
        );
        return;
    };
    let marker = format!("4713.{}01", std::process::id());
    let cgroup_dir = std::sync::Mutex::new(None::<std::path::PathBuf>);
    let result = std::panic::catch_unwind(|| {
        let Some(mut k) = python_kernel() else { return };
        let pid = k.pid();
        let name = format!("carbon-kernel-{pid}");
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(own.contains(&name), "the kernel is in its cgroup: {own}");
        let st = k.execute("%carbon status");
        let status = format!("{}{}", st.stdout(), st.result_text().unwrap_or_default());
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with("processes"))
            .unwrap_or_default();
        assert!(line.contains(kind.name()), "{status}");
        let dir = line
            .split_whitespace()
            .find(|w| w.ends_with(&name))
            .map(std::path::PathBuf::from)
            .expect("the status names the cgroup");
        assert!(dir.is_dir(), "{}", dir.display());
        *cgroup_dir.lock().unwrap() = Some(dir.clone());
        // the escapee: a grandchild of the Python worker that makes its own session, then
        // becomes `sleep MARKER`; the cell ends once it has
        let code = format!(
            "import os\n\
             r, w = os.pipe()\n\
             if os.fork() == 0:\n    os.close(r)\n    if os.fork() == 0:\n        os.setsid()\n\
             \x20       os.write(w, b'%d' % os.getpid())\n        os.execvp('sleep', ['sleep', '{marker}'])\n\
             \x20   os._exit(0)\n\
             os.close(w)\nos.wait()\nprint('escapee', os.read(r, 32).decode())\n"
        );
        let r = k.execute(&code);
        assert_eq!(r.status(), "ok", "{:?}", r.iopub);
        let escapee: u32 = r
            .stdout()
            .trim()
            .strip_prefix("escapee ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{:?}", r.iopub));
        let t0 = Instant::now();
        while running_with(&marker).is_empty() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // it left the worker's group: it leads its own
        let stat = std::fs::read_to_string(format!("/proc/{escapee}/stat")).unwrap_or_default();
        let pgid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(2))
            .unwrap_or_default();
        assert_eq!(pgid, escapee.to_string(), "{stat}");
        assert_eq!(running_with(&marker).len(), 1, "the escapee runs");
        k.signal(libc::SIGKILL);
        assert!(k.wait_exit(Duration::from_secs(10)).is_some());
        let left = survivors(&marker);
        assert!(left.is_empty(), "after kill -9 of the kernel: {left:?}");
        let t0 = Instant::now();
        while dir.exists() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!dir.exists(), "the guard removed {}", dir.display());
    });
    cleanup(&marker);
    if let Some(dir) = cgroup_dir.lock().unwrap_or_else(|e| e.into_inner()).take()
        && dir.exists()
    {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for p in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            carbon_kernel::runtime::child::signal_pid(p, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::fs::remove_dir(&dir);
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
