//! e2e: faults from outside the kernel (issue 13 items 4, 5, 8): endless LLM streams, a locked
//! `emissions.csv`, servers that redirect keys elsewhere or echo them back, other people's `.env`
//! files. Each test bounds its own waits and stops what it starts.

use crate::harness::{Exec, Kernel, Opts, csv_rows};
use carbon_magics::testing::llm_server::{Reply, Server, StreamEnd, wire};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const OPENAI_KEY: &str = "sk-proj-IOFAULT-SECRET-4242";
const GEMINI_KEY: &str = "AIza-IOFAULT-SECRET-9191";

fn kernel(dir: &Path, vars: &[(&str, String)]) -> Kernel {
    let mut o = Opts::default()
        .test_runtime()
        .workdir(dir)
        .without_provider_env();
    for k in [
        "LLM_DEFAULT",
        "LLM_TIMEOUT_S",
        "LLM_MAX_ANSWER_BYTES",
        "LLM_PROFILES_FILE",
        "LLM_MODELS_FILE",
    ] {
        o = o.env_remove(k);
    }
    o = o.env("LLM_RETRY_BASE_MS", "20");
    for (k, v) in vars {
        o = o.env(*k, v.clone());
    }
    Kernel::start(o).expect("kernel starts")
}

/// Bytes of every iopub message of the request (their content, as sent).
fn iopub_bytes(r: &Exec) -> usize {
    r.iopub.iter().map(|m| m.content.to_string().len()).sum()
}

fn all_text(r: &Exec) -> String {
    r.iopub
        .iter()
        .map(|m| m.content.to_string())
        .chain([r.reply.to_string()])
        .collect::<Vec<_>>()
        .join("\n")
}

fn piece(text: &str) -> String {
    format!(
        "data: {}\n\n",
        json!({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

/// Item 4: a server that never ends its stream. Before the cap the cell never ended and the
/// display re-sent the whole growing answer 20 times a second (500 MB of iopub for 3 MB of
/// answer); now the answer stops at `LLM_MAX_ANSWER_BYTES`, the user is told, the row says
/// `truncated`, and iopub carries a small multiple of the answer.
#[test]
fn an_endless_stream_is_capped_reported_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let cap = 400_000usize;
    let srv = Server::script(vec![
        Reply::sse(vec![piece(&"0123456789abcdef".repeat(16))])
            .stream_end(Duration::ZERO, StreamEnd::Endless),
    ]);
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", srv.url("/v1")),
            ("LLM_MAX_ANSWER_BYTES", cap.to_string()),
        ],
    );
    let id = k.send_execute("%llm openai:endless go on forever").unwrap();
    let r = k
        .wait_timeout(&id, Duration::from_secs(60))
        .expect("the capped stream ends the cell");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let err = r.stderr();
    assert!(
        err.contains(&format!("cut at {cap} bytes")) && err.contains("LLM_MAX_ANSWER_BYTES"),
        "{err}"
    );
    let bytes = iopub_bytes(&r);
    eprintln!("endless stream: {bytes} iopub bytes for a {cap}-byte answer");
    // the final display holds the answer twice (markdown and plain text); the streaming
    // refreshes add at most a few times that
    assert!(
        bytes < 12 * cap,
        "iopub carried {bytes} bytes for a {cap}-byte answer"
    );
    // the answer's place (created at the first refresh, or by the final answer when the cap is
    // reached before the first refresh is due) ends with the final answer
    let last = r
        .displays()
        .into_iter()
        .chain(r.updates())
        .filter(|d| {
            d["transient"]["display_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("llm-"))
        })
        .filter_map(|d| d["data"]["text/markdown"].as_str())
        .next_back()
        .unwrap_or("");
    assert!(last.contains("answer cap"), "status line names the cap");
    assert!(last.len() >= cap && last.len() < cap + 1000);
    let rows = csv_rows(&dir.path().join("emissions.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "truncated");
    k.shutdown(false);
}

/// Item 8a: a provider URL answering 307 to another origin (here another loopback port that
/// records what it gets) never receives the key, custom header (`x-goog-api-key`) included.
#[test]
fn a_redirect_to_another_origin_is_refused_and_the_key_stays() {
    let dir = tempfile::tempdir().unwrap();
    let thief = Server::script(vec![Reply::json(json!({"stolen": true}))]);
    let to = thief.url("/steal");
    let srv = Server::start(move |_, _| Reply::status_json(307, json!({})).header("Location", &to));
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", srv.url("/v1")),
            ("GEMINI_API_KEY", GEMINI_KEY.into()),
            ("GEMINI_BASE_URL", srv.url("/v1beta")),
        ],
    );
    let r = k.execute("%%llm --models openai:m,gemini:gemini-2.5-flash --no-stream\nhello");
    assert_eq!(r.status(), "error");
    let text = all_text(&r);
    assert!(text.contains("refused to follow a redirect"), "{text}");
    assert!(text.contains("another origin"), "{text}");
    assert!(
        thief.received().is_empty(),
        "the other origin was contacted"
    );
    assert_eq!(srv.received().len(), 2, "each provider asked once: {text}");
    assert!(!text.contains(OPENAI_KEY) && !text.contains(GEMINI_KEY));
    k.shutdown(false);
}

/// A process holding `flock(LOCK_EX)` on a file until its stdin closes.
struct LockHolder(std::process::Child);

impl LockHolder {
    fn hold(path: &Path) -> LockHolder {
        use std::io::BufRead;
        let mut c = std::process::Command::new("python3")
            .args([
                "-c",
                "import fcntl, sys\nf = open(sys.argv[1], 'a')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()",
            ])
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        LockHolder(c)
    }
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Item 5: another process holds the lock of `emissions.csv` (a student's script with
/// `fcntl.flock`). Before, the cell hung as long as the lock was held. Now the row waits
/// `CARBON_LOCK_WAIT_S` at most, an interrupt ends the wait at once, the rows go to
/// `emissions.pending.csv` (the cell says so), and the next row written takes them along.
#[test]
fn a_locked_emissions_file_never_hangs_a_cell_and_loses_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("emissions.csv");
    let side = dir.path().join("emissions.pending.csv");
    let mut k = Kernel::start(
        Opts::default()
            .test_runtime()
            .workdir(dir.path())
            .env("CARBON_NVML_LIB", "none")
            .env("CARBON_LOCK_WAIT_S", "1")
            .timeout(Duration::from_secs(60)),
    )
    .expect("kernel starts");
    let holder = LockHolder::hold(&csv);
    let r = k.execute("%%carbon\nprint while locked\n");
    assert_eq!(r.status(), "ok");
    let shown = all_text(&r);
    assert!(shown.contains("holds its lock"), "{shown}");
    assert!(shown.contains("emissions.pending.csv"), "{shown}");
    assert_eq!(csv_rows(&side).len(), 1);
    drop(holder);
    let r = k.execute("%%carbon\nprint after\n");
    assert_eq!(r.status(), "ok");
    assert!(all_text(&r).contains("1 row(s) that waited"));
    assert!(!side.exists());
    assert_eq!(csv_rows(&csv).len(), 2);
    k.shutdown(false);

    // a long wait, ended by an interrupt
    let mut k = Kernel::start(
        Opts::default()
            .test_runtime()
            .workdir(dir.path())
            .env("CARBON_NVML_LIB", "none")
            .env("CARBON_LOCK_WAIT_S", "600")
            .timeout(Duration::from_secs(60)),
    )
    .expect("kernel starts");
    let holder = LockHolder::hold(&csv);
    let id = k
        .send_execute("%%carbon\nprint interrupted wait\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    k.interrupt();
    let r = k
        .wait_timeout(&id, Duration::from_secs(30))
        .expect("the interrupt ends the lock wait");
    let shown = all_text(&r);
    assert!(
        shown.contains("the wait for its lock was interrupted"),
        "{shown}"
    );
    assert_eq!(csv_rows(&side).len(), 1);
    drop(holder);
    k.shutdown(false);
    drop(k);
    // the next kernel's first row merges what waited
    let mut k = Kernel::start(
        Opts::default()
            .test_runtime()
            .workdir(dir.path())
            .env("CARBON_NVML_LIB", "none"),
    )
    .expect("kernel starts");
    assert_eq!(k.execute("%%carbon\nprint merged\n").status(), "ok");
    assert_eq!(csv_rows(&csv).len(), 4, "every row is in emissions.csv");
    assert!(!side.exists());
    k.shutdown(false);
}

/// Item 8c: a shared class folder holding another student's `.env` (a base URL pointing at their
/// server, a model list). As root the folder and the file are given to another uid (chown); as
/// another user the folder is made writable by all, as a drop folder is. Either way the
/// student's kernel, one folder down, never reads it. A `.env` of the student's own in a parent
/// folder may set models and keys but not a base URL, unless the environment does.
#[test]
fn another_students_dotenv_in_a_shared_class_folder_is_never_read() {
    let root = tempfile::tempdir().unwrap();
    let class = root.path().join("class");
    let mine = class.join("alice");
    std::fs::create_dir_all(&mine).unwrap();
    let thief = Server::script(vec![Reply::json(json!({"stolen": true}))]);
    let legit = Server::script(vec![Reply::json(json!({"choices": [{"index": 0,
        "message": {"role": "assistant", "content": "hi from the real server"}, "finish_reason": "stop"}]}))]);
    let env_file = class.join(".env");
    std::fs::write(
        &env_file,
        format!(
            "OPENAI_BASE_URL={}\nOPENAI_MODEL=theirs\n",
            thief.url("/v1")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let given_away = std::os::unix::fs::chown(&env_file, Some(4242), Some(4242)).is_ok()
        && std::os::unix::fs::chown(&class, Some(4242), Some(4242)).is_ok();
    if !given_away {
        std::fs::set_permissions(&class, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let mut k = kernel(&mine, &[("OPENAI_API_KEY", OPENAI_KEY.into())]);
    let r = k.execute("%llm models");
    let err = r.stderr();
    assert!(
        err.contains(&format!("{}: not read", env_file.display())),
        "{err}"
    );
    let shown = all_text(&r);
    assert!(
        !shown.contains(&thief.url("")),
        "the other student's URL is used"
    );
    k.shutdown(false);

    // the student's own parent folder: models are read, the base URL is refused by name
    let root2 = tempfile::tempdir().unwrap();
    let nb = root2.path().join("nb");
    std::fs::create_dir(&nb).unwrap();
    std::fs::set_permissions(root2.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let parent_env = root2.path().join(".env");
    std::fs::write(
        &parent_env,
        format!("OPENAI_BASE_URL={}\nOPENAI_MODEL=mine\n", thief.url("/v1")),
    )
    .unwrap();
    let mut k = kernel(&nb, &[("OPENAI_API_KEY", OPENAI_KEY.into())]);
    let r = k.execute("%llm models");
    let err = r.stderr();
    assert!(
        err.contains(&format!(
            "{}: OPENAI_BASE_URL not used",
            parent_env.display()
        )),
        "{err}"
    );
    assert!(all_text(&r).contains("mine"), "the model list is read");
    k.shutdown(false);
    // …unless the environment sets it: then the environment's URL is used, silently
    let mut k = kernel(
        &nb,
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", legit.url("/v1")),
        ],
    );
    let r = k.execute("%llm openai:mine hello --no-stream");
    assert_eq!(r.status(), "ok", "{}", all_text(&r));
    assert!(!r.stderr().contains("OPENAI_BASE_URL not used"));
    assert_eq!(legit.received().len(), 1);
    assert!(thief.received().is_empty(), "the thief got a request");
    k.shutdown(false);
}

/// Every file under `dir` (recursively) as text.
fn files_text(dir: &Path) -> String {
    let mut out = String::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = std::fs::read_to_string(&p) {
                out.push_str(&format!("== {}\n{t}\n", p.display()));
            }
        }
    }
    out
}

/// Item 8b: a server that echoes the key back — in the answer, in the model name it reports
/// (which goes into the row), in an error message — and a local server URL with a password in its
/// user-info. No output, reply, CSV row, history line or log line shows either secret.
#[test]
fn secrets_echoed_back_are_redacted_from_every_output_file_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let echo = Server::start(|n, req| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        if n == 1 {
            return Reply::status_json(
                400,
                json!({"error": {"message": format!("bad request for {auth}"), "type": "x"}}),
            );
        }
        Reply::json(json!({
            "model": auth.clone(),
            "choices": [{"index": 0, "message": {"role": "assistant",
                "content": format!("I saw {auth} in your request")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 5}
        }))
    });
    let password = "Pw-IOFAULT-SECRET-77";
    let local_url = echo
        .url("/v1")
        .replace("http://", &format!("http://student:{password}@"));
    let mut k = Kernel::start(
        Opts::default()
            .test_runtime()
            .workdir(dir.path())
            .without_provider_env()
            .log_level("debug")
            .env("CARBON_NVML_LIB", "none")
            .env("OPENAI_API_KEY", OPENAI_KEY)
            .env("OPENAI_BASE_URL", echo.url("/v1"))
            .env("LLM_LOCAL_BASE_URL", local_url.clone()),
    )
    .expect("kernel starts");
    let mut seen = String::new();
    for cell in [
        "%llm openai:echo say it back --no-stream",
        "%llm openai:echo fail --no-stream",
        &format!("%%carbon --label {OPENAI_KEY}\nprint the key is {OPENAI_KEY} and {password}\n"),
        &format!("print {local_url}\n"),
        "%llm history",
        "%carbon csv",
    ] {
        let mut r = k.execute(cell);
        // execute_input re-broadcasts the code as the user typed it (as ipykernel does): the
        // cells here type the secrets themselves on purpose
        r.iopub.retain(|m| m.msg_type != "execute_input");
        seen.push_str(&all_text(&r));
    }
    assert!(
        seen.contains("I saw Bearer ***"),
        "the answer is shown, masked"
    );
    assert!(seen.contains("the key is ***"), "{seen}");
    let log = k.log();
    drop(k);
    let files = files_text(dir.path());
    assert!(files.contains("emissions.csv"), "rows were written");
    for (what, text) in [
        ("iopub and replies", &seen),
        ("files", &files),
        ("log", &log),
    ] {
        if let Some(i) = text.find(OPENAI_KEY) {
            panic!(
                "the key leaked into the {what}: …{}…",
                &text[i.saturating_sub(200)..(i + 50).min(text.len())]
            );
        }
        assert!(
            !text.contains(password),
            "the password leaked into the {what}"
        );
        assert!(
            !text.contains("IOFAULT-SECRET"),
            "part of a secret leaked into the {what}"
        );
    }
}

#[test]
fn inspection_and_completion_of_a_variable_holding_a_key_show_it_masked() {
    // ipykernel shows a variable's value on Shift-Tab; here a key the kernel knows is masked
    // there too (the cell itself typed the key on purpose).
    let dir = tempfile::tempdir().unwrap();
    let mut k = kernel_knowing_a_key(dir.path());
    let r = k.execute(&format!(
        "held = '{OPENAI_KEY}'\nheld_items = ['{OPENAI_KEY}']\n"
    ));
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    let code = "held";
    let i = k.request(
        "inspect_request",
        json!({"code": code, "cursor_pos": code.len(), "detail_level": 0}),
    );
    assert_eq!(i["status"], "ok", "{i}");
    let shown = i["data"].to_string();
    assert!(shown.contains("***"), "the value is shown, masked: {shown}");
    assert!(!shown.contains(OPENAI_KEY), "{shown}");
    let code = "held_items[0].";
    let c = k.request(
        "complete_request",
        json!({"code": code, "cursor_pos": code.len()}),
    );
    assert!(!c.to_string().contains(OPENAI_KEY), "{c}");
}

/// Every iopub message of `r` but the `execute_input` echo of the code (which holds what the
/// user typed), and the reply, as one text.
fn shown_text(r: &Exec) -> String {
    r.iopub
        .iter()
        .filter(|m| m.msg_type != "execute_input")
        .map(|m| m.content.to_string())
        .chain([r.reply.to_string()])
        .collect::<Vec<_>>()
        .join("\n")
}

/// Item 8b, a key printed in pieces: user code that writes a key in two flushed writes (on
/// stdout and on stderr), 50 ms apart so they reach the kernel as two pieces. Each piece used to
/// be masked alone, so neither was masked and the front-end joined them into the key. Now the
/// tail of a piece that may start a secret waits (at most 200 ms) for the next one: the key is
/// masked whole, and neither its first part nor the whole key is in any message. (ipykernel
/// masks nothing.)
#[test]
fn a_key_printed_in_two_writes_is_masked_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = kernel_knowing_a_key(dir.path());
    let (a, b) = OPENAI_KEY.split_at(10);
    let r = k.execute(&format!(
        "import sys, time\n\
         print('key: {a}', end=''); sys.stdout.flush(); time.sleep(0.05); print('{b} end')\n\
         sys.stderr.write('err: {a}'); sys.stderr.flush(); time.sleep(0.05)\n\
         sys.stderr.write('{b}\\n'); sys.stderr.flush()\n"
    ));
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    // the streams as a front-end joins them
    assert_eq!(r.stdout(), "key: *** end\n");
    assert!(r.stderr().contains("err: ***\n"), "{}", r.stderr());
    let seen = shown_text(&r);
    assert!(!seen.contains(OPENAI_KEY), "{seen}");
    assert!(!seen.contains(a), "the key's first part was shown: {seen}");
    assert!(
        r.iopub.iter().filter(|m| m.msg_type == "stream").count() >= 1,
        "{:?}",
        r.iopub
    );
}

/// Item 8b, a key a server echoes across two SSE events of a streamed `%llm` answer, 300 ms
/// apart (several display refreshes between them). A streamed answer's display re-sends the
/// whole text so far, which the output edge masks: the key is never whole in any message; and a
/// refresh never shows a tail that may start a key, so its first part is never shown either.
#[test]
fn a_key_echoed_across_two_sse_events_is_masked_whole() {
    let dir = tempfile::tempdir().unwrap();
    let split = 12;
    let echo = Server::start(move |_, req| {
        let auth = req.header("authorization").unwrap_or("").to_string();
        let key = auth.trim_start_matches("Bearer ").to_string();
        let (a, b) = key.split_at(split.min(key.len()));
        Reply::sse(wire::openai_sse(
            "echo",
            &["I saw ", a, &format!("{b} back")],
            4,
            5,
        ))
        .stream_end(Duration::from_millis(300), StreamEnd::Clean)
    });
    let mut k = kernel(
        dir.path(),
        &[
            ("OPENAI_API_KEY", OPENAI_KEY.into()),
            ("OPENAI_BASE_URL", echo.url("/v1")),
        ],
    );
    let r = k.execute("%llm openai:echo say my key back");
    assert_eq!(r.status(), "ok", "{:?}", r.errors());
    assert_eq!(echo.received().len(), 1, "one streamed request");
    let updates = r.updates();
    assert!(
        updates.len() >= 3,
        "the answer was streamed in several refreshes: {updates:?}"
    );
    let last = updates
        .last()
        .and_then(|u| u["data"]["text/plain"].as_str())
        .unwrap_or("");
    assert!(last.contains("I saw *** back"), "{last}");
    let seen = shown_text(&r);
    assert!(!seen.contains(OPENAI_KEY), "{seen}");
    assert!(
        !seen.contains(&OPENAI_KEY[..split]),
        "a refresh showed the key's first part: {seen}"
    );
    k.shutdown(false);
}

/// A kernel in `dir` whose only provider key is [`OPENAI_KEY`] (a secret it must mask).
fn kernel_knowing_a_key(dir: &std::path::Path) -> Kernel {
    Kernel::start(
        Opts::default()
            .workdir(dir)
            .without_provider_env()
            .env("OPENAI_API_KEY", OPENAI_KEY),
    )
    .expect("kernel starts")
}
