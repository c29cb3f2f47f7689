//! Test harness: the real `carbon-kernel` binary over real ZeroMQ, as a front-end sees it.
//!
//! ```ignore
//! use crate::harness::{Kernel, Opts};
//! let dir = tempfile::tempdir()?;
//! let mut k = Kernel::start(Opts::default().env("CARBON_X", "1").workdir(dir.path()))?;
//! let r = k.execute("print(1)");                 // waits for reply + idle (panics on timeout)
//! assert_eq!(r.stdout(), "1\n");
//! assert_eq!(r.status(), "ok");                  // execute_reply content: r.reply
//! ```
//!
//! * [`Kernel::start`] writes a connection file (tcp 127.0.0.1, free ports, random key) in a
//!   temp dir, spawns the binary (`run --language L --connection-file F`) in `workdir` with the
//!   given env, in its own process group, stderr to a log file ([`Kernel::log`]), connects
//!   shell/stdin (same identity), control, heartbeat and iopub (waits for `iopub_welcome`), and
//!   sends `kernel_info_request`; [`Kernel::startup`] is spawn → `kernel_info_reply`.
//! * `Opts::default().test_runtime()` uses the kernel's scripted runtime (no Python needed; see
//!   `kernel/src/runtime/test_runtime.rs`); `.language("java")` picks the default language;
//!   `.timeout(d)` the default wait (60 s).
//! * [`Exec`]: `reply` (execute_reply content), `iopub` (every iopub message of the request, in
//!   order, until `idle`), helpers `stdout() stderr() displays() updates() errors() result()
//!   result_text() types() status() count()`, and `input_requests`.
//! * Other calls: `execute_with_timeout`, `execute_content(json!({...}))` (silent, store_history,
//!   stop_on_error…), `send_execute` + `wait` (to interrupt while a cell runs), `interrupt()`,
//!   `kernel_info()`, `request(type, content)` (shell) / `control(type, content)` → reply
//!   content, `call(Chan, type, content)` → [`Exec`] with busy/idle, `push_input("answer")`
//!   (answers `input_request`s in order; with none queued the request stays unanswered),
//!   `input_request(id)` (returns once a running cell asks for input: it is blocked until then),
//!   `send_raw(frames)` / `raw_recv(t)` on a separate shell DEALER for forged messages,
//!   `sign(frames)`, `heartbeat(t)`, `is_alive()`, `shutdown(restart)`, `wait_exit(t)`,
//!   `signal(sig)`, `pid()`. Drop kills the kernel's process group.
//!
//! Every message from the kernel is checked against the key: a wrong signature fails the test.

#![allow(dead_code)] // each test module uses a different part of the harness

use jupyter_protocol::{ConnectionInfo, JupyterMessage, JupyterMessageContent, Transport};
use jupyter_zmq_client as zc;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use zeromq::{Socket, SocketRecv, SocketSend};

/// Errors of the harness (boxed: tests just `?` them).
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;
/// Result of the harness.
pub(crate) type Result<T> = std::result::Result<T, Error>;

/// Path of the kernel binary under test.
pub(crate) fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_carbon-kernel"))
}

/// How to start a kernel.
#[derive(Clone, Debug)]
pub(crate) struct Opts {
    env: Vec<(String, Option<String>)>,
    workdir: Option<PathBuf>,
    language: String,
    test_runtime: bool,
    timeout: Duration,
    log_level: String,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            env: Vec::new(),
            workdir: None,
            language: "python".into(),
            test_runtime: false,
            timeout: Duration::from_secs(60),
            log_level: "info".into(),
        }
    }
}

impl Opts {
    /// Sets an environment variable of the kernel process.
    pub(crate) fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), Some(v.into())));
        self
    }
    /// Removes an environment variable from the kernel process.
    pub(crate) fn env_remove(mut self, k: impl Into<String>) -> Self {
        self.env.push((k.into(), None));
        self
    }
    /// Removes every provider's variables (`<P>_API_KEY`, `<P>_MODEL`, `<P>_BASE_URL`, from the
    /// provider table) so the test process's own never reach the kernel.
    pub(crate) fn without_provider_env(mut self) -> Self {
        for p in carbon_magics::llm::providers::ProviderKind::ALL {
            for k in [p.key_var(), p.model_var(), p.base_url_var()] {
                self = self.env_remove(k);
            }
        }
        self
    }
    /// The kernel's working directory (the notebook's folder). Default: a fresh temp dir.
    pub(crate) fn workdir(mut self, p: impl AsRef<Path>) -> Self {
        self.workdir = Some(p.as_ref().to_path_buf());
        self
    }
    /// Default language (`python`, `java`, `rust`).
    pub(crate) fn language(mut self, l: impl Into<String>) -> Self {
        self.language = l.into();
        self
    }
    /// Use the scripted test runtime (CARBON_TEST_RUNTIME=1).
    pub(crate) fn test_runtime(mut self) -> Self {
        self.test_runtime = true;
        self
    }
    /// Default timeout of every wait.
    pub(crate) fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }
    /// CARBON_LOG of the kernel (default `info`).
    pub(crate) fn log_level(mut self, l: impl Into<String>) -> Self {
        self.log_level = l.into();
        self
    }
}

/// A socket of the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Chan {
    /// shell
    Shell,
    /// control
    Control,
    /// stdin
    Stdin,
    /// iopub
    IoPub,
}

/// One message received from the kernel, as JSON (exactly what was on the wire).
#[derive(Clone, Debug)]
pub(crate) struct Msg {
    /// Which socket.
    pub chan: Chan,
    /// header.msg_type
    pub msg_type: String,
    /// header
    pub header: Value,
    /// parent_header
    pub parent: Value,
    /// metadata
    pub metadata: Value,
    /// content
    pub content: Value,
}

impl Msg {
    /// parent_header.msg_id
    pub(crate) fn parent_id(&self) -> Option<&str> {
        self.parent.get("msg_id").and_then(Value::as_str)
    }
}

/// What one request produced.
#[derive(Clone, Debug)]
pub(crate) struct Exec {
    /// msg_id of the request.
    pub msg_id: String,
    /// Reply content (Null if none was awaited).
    pub reply: Value,
    /// Reply message type.
    pub reply_type: String,
    /// Every iopub message whose parent is the request, in order, up to and including idle.
    pub iopub: Vec<Msg>,
    /// `input_request` contents received for it.
    pub input_requests: Vec<Value>,
    /// Request sent → idle.
    pub elapsed: Duration,
}

impl Exec {
    fn stream(&self, name: &str) -> String {
        self.iopub
            .iter()
            .filter(|m| m.msg_type == "stream" && m.content["name"] == name)
            .filter_map(|m| m.content["text"].as_str())
            .collect()
    }
    /// All stdout text.
    pub(crate) fn stdout(&self) -> String {
        self.stream("stdout")
    }
    /// All stderr text.
    pub(crate) fn stderr(&self) -> String {
        self.stream("stderr")
    }
    fn of_type(&self, t: &str) -> Vec<&Value> {
        self.iopub
            .iter()
            .filter(|m| m.msg_type == t)
            .map(|m| &m.content)
            .collect()
    }
    /// `display_data` contents.
    pub(crate) fn displays(&self) -> Vec<&Value> {
        self.of_type("display_data")
    }
    /// `update_display_data` contents.
    pub(crate) fn updates(&self) -> Vec<&Value> {
        self.of_type("update_display_data")
    }
    /// `error` contents.
    pub(crate) fn errors(&self) -> Vec<&Value> {
        self.of_type("error")
    }
    /// The `execute_result` content, if any.
    pub(crate) fn result(&self) -> Option<&Value> {
        self.of_type("execute_result").into_iter().next()
    }
    /// text/plain of every `execute_result`, in order.
    pub(crate) fn of_results(&self) -> Vec<&str> {
        self.of_type("execute_result")
            .into_iter()
            .filter_map(|r| r["data"]["text/plain"].as_str())
            .collect()
    }
    /// text/plain of the `execute_result`.
    pub(crate) fn result_text(&self) -> Option<String> {
        self.result()
            .and_then(|r| r["data"]["text/plain"].as_str())
            .map(str::to_string)
    }
    /// iopub message types in order.
    pub(crate) fn types(&self) -> Vec<&str> {
        self.iopub.iter().map(|m| m.msg_type.as_str()).collect()
    }
    /// Reply status ("ok", "error", …).
    pub(crate) fn status(&self) -> &str {
        self.reply["status"].as_str().unwrap_or("")
    }
    /// Reply execution_count.
    pub(crate) fn count(&self) -> Option<u64> {
        self.reply["execution_count"].as_u64()
    }
}

type Frames = Vec<Vec<u8>>;

struct Io {
    key: String,
    session: String,
    shell: zc::Connection<zeromq::DealerSendHalf>,
    control: zc::Connection<zeromq::DealerSendHalf>,
    stdin: zc::Connection<zeromq::DealerSendHalf>,
    rx: mpsc::UnboundedReceiver<(Chan, Frames)>,
    backlog: Vec<Msg>,
    inputs: VecDeque<String>,
    raw: Option<zeromq::DealerSocket>,
}

const DELIM: &[u8] = b"<IDS|MSG>";

/// HMAC-SHA256 of the four signed frames (header, parent_header, metadata, content), lower-case
/// hex, as the wire format wants it. An empty key gives an empty signature (signing off). The
/// harness checks every message the kernel sends with it, independently of the kernel's own
/// signing (done by `jupyter-zmq-client`).
pub(crate) fn sign(key: &[u8], frames: &[&[u8]]) -> String {
    if key.is_empty() {
        return String::new();
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    for f in frames {
        ctx.update(f);
    }
    ctx.sign()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn signature_matches_known_vector() {
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?", split in frames.
    let sig = sign(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
    assert_eq!(
        sig,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(sign(b"", &[b"x"]), "");
}

fn decode(chan: Chan, frames: &Frames, key: &str) -> Result<Msg> {
    let d = frames
        .iter()
        .position(|f| f.as_slice() == DELIM)
        .ok_or("kernel sent a message without <IDS|MSG>")?;
    if frames.len() < d + 6 {
        return Err(format!("kernel sent a truncated message ({} frames)", frames.len()).into());
    }
    let sig = String::from_utf8_lossy(&frames[d + 1]).to_string();
    let parts: Vec<&[u8]> = frames[d + 2..d + 6].iter().map(Vec::as_slice).collect();
    let want = sign(key.as_bytes(), &parts);
    if sig != want {
        return Err(format!("kernel message on {chan:?} has a wrong HMAC signature").into());
    }
    let j = |i: usize| -> Result<Value> { Ok(serde_json::from_slice(&frames[d + 2 + i])?) };
    let header = j(0)?;
    Ok(Msg {
        chan,
        msg_type: header["msg_type"].as_str().unwrap_or("").to_string(),
        header,
        parent: j(1)?,
        metadata: j(2)?,
        content: j(3)?,
    })
}

fn spawn_reader<S: SocketRecv + Send + 'static>(
    mut s: S,
    chan: Chan,
    tx: mpsc::UnboundedSender<(Chan, Frames)>,
) {
    tokio::spawn(async move {
        while let Ok(m) = s.recv().await {
            let frames: Frames = m.into_vec().into_iter().map(|b| b.to_vec()).collect();
            if tx.send((chan, frames)).is_err() {
                break;
            }
        }
    });
}

fn request(msg_type: &str, content: Value) -> Result<JupyterMessage> {
    let c = JupyterMessageContent::from_type_and_content(msg_type, content)?;
    Ok(JupyterMessage::new(c, None))
}

impl Io {
    async fn send(&mut self, chan: Chan, msg: JupyterMessage) -> Result<()> {
        match chan {
            Chan::Shell => self.shell.send(msg).await?,
            Chan::Control => self.control.send(msg).await?,
            Chan::Stdin => self.stdin.send(msg).await?,
            Chan::IoPub => return Err("cannot send on iopub".into()),
        }
        Ok(())
    }

    async fn next(&mut self, deadline: Instant) -> Result<Option<Msg>> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.rx.recv()).await {
            Err(_) => Ok(None),
            Ok(None) => Err("kernel connection closed".into()),
            Ok(Some((chan, frames))) => Ok(Some(decode(chan, &frames, &self.key)?)),
        }
    }

    /// Reads until the kernel asks request `id` for input, and returns that `input_request`'s
    /// content. Every message read (the input request too) stays for the request's own wait,
    /// which answers it with the next queued input.
    async fn input_request(&mut self, id: &str, timeout: Duration) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        let asks = |m: &Msg| matches!(m.chan, Chan::Stdin) && m.parent_id() == Some(id);
        if let Some(m) = self.backlog.iter().find(|m| asks(m)) {
            return Ok(m.content.clone());
        }
        loop {
            let Some(m) = self.next(deadline).await? else {
                return Err(
                    format!("timeout after {timeout:?} waiting for an input_request").into(),
                );
            };
            let content = asks(&m).then(|| m.content.clone());
            self.backlog.push(m);
            if let Some(c) = content {
                return Ok(c);
            }
        }
    }

    /// Collects the reply (if `want_reply`) and iopub messages of `id` until idle.
    async fn wait(&mut self, id: &str, want_reply: bool, timeout: Duration) -> Result<Exec> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut ex = Exec {
            msg_id: id.to_string(),
            reply: Value::Null,
            reply_type: String::new(),
            iopub: vec![],
            input_requests: vec![],
            elapsed: Duration::ZERO,
        };
        let (mut got_reply, mut idle) = (!want_reply, false);
        let mut pending: VecDeque<Msg> = std::mem::take(&mut self.backlog).into();
        loop {
            if got_reply && idle {
                ex.elapsed = start.elapsed();
                // Messages of other requests stay for their own waits.
                self.backlog.extend(pending);
                return Ok(ex);
            }
            let m = match pending.pop_front() {
                Some(m) => m,
                None => match self.next(deadline).await? {
                    Some(m) => m,
                    None => {
                        return Err(format!(
                            "timeout after {timeout:?} waiting for {} of request {id} (got: {:?})",
                            if got_reply { "idle" } else { "the reply" },
                            ex.iopub.iter().map(|m| &m.msg_type).collect::<Vec<_>>()
                        )
                        .into());
                    }
                },
            };
            if m.parent_id() != Some(id) {
                self.backlog.push(m);
                continue;
            }
            match m.chan {
                Chan::IoPub => {
                    idle = m.msg_type == "status" && m.content["execution_state"] == "idle";
                    ex.iopub.push(m);
                }
                Chan::Shell | Chan::Control => {
                    got_reply = true;
                    ex.reply = m.content;
                    ex.reply_type = m.msg_type;
                }
                Chan::Stdin => {
                    ex.input_requests.push(m.content.clone());
                    if let Some(answer) = self.inputs.pop_front() {
                        let mut r =
                            request("input_reply", json!({ "value": answer, "status": "ok" }))?;
                        r.parent_header = serde_json::from_value(m.header.clone()).ok();
                        self.send(Chan::Stdin, r).await?;
                    }
                }
            }
        }
    }
}

/// A running kernel process and a connected client.
pub(crate) struct Kernel {
    rt: tokio::runtime::Runtime,
    io: Io,
    child: Child,
    dir: tempfile::TempDir,
    own_workdir: Option<tempfile::TempDir>,
    /// The connection info written for the kernel.
    pub info: ConnectionInfo,
    /// Connection file path.
    pub connection_file: PathBuf,
    /// The kernel's working directory.
    pub workdir: PathBuf,
    /// Spawn → first `kernel_info_reply` (what a front-end waits for).
    pub startup: Duration,
    opts: Opts,
}

static START_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn random_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Kernel {
    /// Starts a kernel and waits until it answers `kernel_info_request`.
    pub(crate) fn start(opts: Opts) -> Result<Kernel> {
        let mut last = None;
        // A port picked free can be taken before the kernel binds it: retry with new ports.
        for _ in 0..3 {
            match Self::try_start(opts.clone()) {
                Ok(k) => return Ok(k),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| "kernel did not start".into()))
    }

    fn try_start(opts: Opts) -> Result<Kernel> {
        // A worker thread keeps socket I/O going while the test thread sleeps (a current-thread
        // runtime would leave a sent request unflushed until the next call).
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let dir = tempfile::tempdir()?;
        let (own_workdir, workdir) = match &opts.workdir {
            Some(w) => (None, w.clone()),
            None => {
                let t = tempfile::tempdir()?;
                let p = t.path().to_path_buf();
                (Some(t), p)
            }
        };
        // Kernels of parallel tests must not pick each other's ports between the peek and the
        // bind: one start at a time, until the kernel has bound (iopub welcome received).
        let start_lock = START_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (ports, listeners) = rt.block_on(zc::peek_ports_with_listeners(ip, 5))?;
        let info = ConnectionInfo {
            ip: ip.to_string(),
            transport: Transport::TCP,
            shell_port: ports[0],
            iopub_port: ports[1],
            stdin_port: ports[2],
            control_port: ports[3],
            hb_port: ports[4],
            key: random_key(),
            signature_scheme: "hmac-sha256".into(),
            kernel_name: Some("carbon".into()),
        };
        let connection_file = dir.path().join("kernel-test.json");
        std::fs::write(&connection_file, serde_json::to_vec_pretty(&info)?)?;
        let log = std::fs::File::create(dir.path().join("kernel.log"))?;
        let mut cmd = Command::new(binary());
        cmd.args(["run", "--language", &opts.language, "--connection-file"])
            .arg(&connection_file)
            .current_dir(&workdir)
            .env("CARBON_LOG", &opts.log_level)
            .env_remove("JPY_PARENT_PID")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if opts.test_runtime {
            cmd.env("CARBON_TEST_RUNTIME", "1");
        }
        for (k, v) in &opts.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let t0 = Instant::now();
        let mut child = cmd.spawn()?;
        drop(listeners);
        let io = match rt.block_on(Self::connect(&info, opts.timeout)) {
            Ok(io) => io,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log =
                    std::fs::read_to_string(dir.path().join("kernel.log")).unwrap_or_default();
                return Err(
                    format!("cannot connect to the kernel: {e}; kernel log:\n{log}").into(),
                );
            }
        };
        drop(start_lock);
        let mut k = Kernel {
            io,
            rt,
            child,
            dir,
            own_workdir,
            info,
            connection_file,
            workdir,
            startup: Duration::ZERO,
            opts,
        };
        let r = k.call_timeout(
            Chan::Shell,
            "kernel_info_request",
            json!({}),
            k.opts.timeout,
        );
        match r {
            Ok(_) => {
                k.startup = t0.elapsed();
                Ok(k)
            }
            Err(e) => Err(format!("{e}; kernel log:\n{}", k.log()).into()),
        }
    }

    async fn connect(info: &ConnectionInfo, timeout: Duration) -> Result<Io> {
        let session = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        // The kernel binds iopub last; until then a connect can be refused or reset: retry.
        let deadline = Instant::now() + timeout;
        let mut iopub = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, zc::create_client_iopub_connection(info, "", &session))
                .await
            {
                Err(_) => return Err("timeout connecting to iopub".into()),
                Ok(Ok(c)) => break c,
                Ok(Err(e)) if Instant::now() < deadline => {
                    eprintln!("harness: iopub connect failed ({e}), retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        };
        // JEP 65: the kernel answers the subscription with iopub_welcome.
        zc::wait_for_iopub_welcome(&mut iopub, Duration::from_secs(5)).await?;
        let identity = zc::peer_identity_for_session(&session)?;
        let shell =
            zc::create_client_shell_connection_with_identity(info, &session, identity.clone())
                .await?;
        let stdin =
            zc::create_client_stdin_connection_with_identity(info, &session, identity).await?;
        let control = zc::create_client_control_connection(info, &session).await?;
        let (shell_tx, shell_rx) = shell.split();
        let (stdin_tx, stdin_rx) = stdin.split();
        let (control_tx, control_rx) = control.split();
        spawn_reader(iopub.socket, Chan::IoPub, tx.clone());
        spawn_reader(shell_rx.socket, Chan::Shell, tx.clone());
        spawn_reader(stdin_rx.socket, Chan::Stdin, tx.clone());
        spawn_reader(control_rx.socket, Chan::Control, tx);
        Ok(Io {
            key: info.key.clone(),
            session,
            shell: shell_tx,
            control: control_tx,
            stdin: stdin_tx,
            rx,
            backlog: vec![],
            inputs: VecDeque::new(),
            raw: None,
        })
    }

    /// The kernel's stderr/stdout so far.
    pub(crate) fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join("kernel.log")) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The kernel process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The HMAC key (to forge or sign raw frames).
    pub(crate) fn key(&self) -> &str {
        &self.info.key
    }

    /// Default timeout of waits.
    pub(crate) fn timeout(&self) -> Duration {
        self.opts.timeout
    }

    /// Sends a request; returns its msg_id.
    pub(crate) fn send(&mut self, chan: Chan, msg_type: &str, content: Value) -> Result<String> {
        let m = request(msg_type, content)?;
        let id = m.header.msg_id.clone();
        self.rt.block_on(self.io.send(chan, m))?;
        Ok(id)
    }

    /// Sends an execute_request (allow_stdin true, store_history true, stop_on_error true).
    pub(crate) fn send_execute(&mut self, code: &str) -> Result<String> {
        self.send(Chan::Shell, "execute_request", execute_content(code))
    }

    /// Waits for the reply and idle of a request sent with [`Kernel::send`].
    pub(crate) fn wait(&mut self, id: &str) -> Result<Exec> {
        let t = self.opts.timeout;
        self.wait_timeout(id, t)
    }

    /// [`Kernel::wait`] with a timeout.
    pub(crate) fn wait_timeout(&mut self, id: &str, t: Duration) -> Result<Exec> {
        self.rt
            .block_on(self.io.wait(id, true, t))
            .map_err(|e| format!("{e}\n--- kernel log (tail) ---\n{}", self.log_tail(40)).into())
    }

    /// The last `n` lines of the kernel log.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Sends a request and waits for its reply and idle.
    pub(crate) fn call_timeout(
        &mut self,
        chan: Chan,
        msg_type: &str,
        content: Value,
        t: Duration,
    ) -> Result<Exec> {
        let id = self.send(chan, msg_type, content)?;
        self.wait_timeout(&id, t)
    }

    /// [`Kernel::call_timeout`] with the default timeout; panics with the kernel log on failure.
    pub(crate) fn call(&mut self, chan: Chan, msg_type: &str, content: Value) -> Exec {
        let t = self.opts.timeout;
        match self.call_timeout(chan, msg_type, content, t) {
            Ok(e) => e,
            Err(e) => panic!("{msg_type}: {e}"),
        }
    }

    /// Runs a cell; panics (with the kernel log) if no reply + idle within the timeout.
    pub(crate) fn execute(&mut self, code: &str) -> Exec {
        self.call(Chan::Shell, "execute_request", execute_content(code))
    }

    /// Runs a cell with a timeout.
    pub(crate) fn execute_with_timeout(&mut self, code: &str, t: Duration) -> Result<Exec> {
        self.call_timeout(Chan::Shell, "execute_request", execute_content(code), t)
    }

    /// Runs an execute_request with this content (merged over the defaults of
    /// [`execute_content`]).
    pub(crate) fn execute_content(&mut self, content: Value) -> Exec {
        let mut c = execute_content("");
        if let (Some(base), Some(extra)) = (c.as_object_mut(), content.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        self.call(Chan::Shell, "execute_request", c)
    }

    /// A shell request → reply content.
    pub(crate) fn request(&mut self, msg_type: &str, content: Value) -> Value {
        self.call(Chan::Shell, msg_type, content).reply
    }

    /// A control request → reply content.
    pub(crate) fn control(&mut self, msg_type: &str, content: Value) -> Value {
        self.call(Chan::Control, msg_type, content).reply
    }

    /// `kernel_info_request` on shell → reply content.
    pub(crate) fn kernel_info(&mut self) -> Value {
        self.request("kernel_info_request", json!({}))
    }

    /// `interrupt_request` on control → reply content.
    pub(crate) fn interrupt(&mut self) -> Value {
        self.control("interrupt_request", json!({}))
    }

    /// Waits (up to the kernel's timeout) until request `id` asks for input: its cell is then
    /// blocked until [`Kernel::push_input`] and [`Kernel::wait`] answer it. Returns the
    /// `input_request` content.
    pub(crate) fn input_request(&mut self, id: &str) -> Result<Value> {
        let t = self.opts.timeout;
        self.rt.block_on(self.io.input_request(id, t))
    }

    /// Queues an answer for the next `input_request`.
    pub(crate) fn push_input(&mut self, answer: impl Into<String>) {
        self.io.inputs.push_back(answer.into());
    }

    /// `shutdown_request` on control → reply content.
    pub(crate) fn shutdown(&mut self, restart: bool) -> Value {
        self.control("shutdown_request", json!({ "restart": restart }))
    }

    /// Waits for the process to exit.
    pub(crate) fn wait_exit(&mut self, t: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + t;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The process is still running.
    pub(crate) fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// One heartbeat round trip within `t`.
    pub(crate) fn heartbeat(&mut self, t: Duration) -> bool {
        let info = self.info.clone();
        self.rt.block_on(async move {
            tokio::time::timeout(t, async {
                let mut hb = zc::create_client_heartbeat_connection(&info).await?;
                hb.single_heartbeat().await
            })
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false)
        })
    }

    /// Sends a signal to the kernel process.
    pub(crate) fn signal(&self, sig: i32) {
        carbon_kernel::runtime::child::signal_pid(self.child.id(), sig);
    }

    /// HMAC of frames with the kernel's key.
    pub(crate) fn sign(&self, frames: &[&[u8]]) -> String {
        sign(self.info.key.as_bytes(), frames)
    }

    /// Signed frames `[<IDS|MSG>, sig, header, parent, metadata, content]` of a request, for
    /// [`Kernel::send_raw`]; returns (frames, msg_id).
    pub(crate) fn signed_frames(&self, msg_type: &str, content: Value) -> (Frames, String) {
        let id = uuid::Uuid::new_v4().to_string();
        let header = json!({
            "msg_id": id, "username": "test", "session": self.io.session,
            "date": "2026-01-01T00:00:00Z", "msg_type": msg_type, "version": "5.3",
        });
        let parts: Vec<Vec<u8>> = [header, json!({}), json!({}), content]
            .iter()
            .map(|v| serde_json::to_vec(v).unwrap_or_default())
            .collect();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let mut frames = vec![DELIM.to_vec(), self.sign(&refs).into_bytes()];
        frames.extend(parts);
        (frames, id)
    }

    /// Sends raw frames on a separate shell DEALER socket (no signing, no checks).
    pub(crate) fn send_raw(&mut self, frames: Frames) -> Result<()> {
        let url = format!("tcp://{}:{}", self.info.ip, self.info.shell_port);
        let io = &mut self.io;
        self.rt.block_on(async {
            if io.raw.is_none() {
                let mut s = zeromq::DealerSocket::new();
                s.connect(&url).await?;
                io.raw = Some(s);
            }
            let mut frames = frames.into_iter();
            let mut msg = zeromq::ZmqMessage::from(frames.next().unwrap_or_default());
            for f in frames {
                msg.push_back(f.into());
            }
            if let Some(s) = io.raw.as_mut() {
                s.send(msg).await?;
            }
            Ok::<(), Error>(())
        })
    }

    /// The next message on the raw socket, if one arrives within `t`.
    pub(crate) fn raw_recv(&mut self, t: Duration) -> Option<Frames> {
        let io = &mut self.io;
        self.rt.block_on(async {
            let s = io.raw.as_mut()?;
            match tokio::time::timeout(t, s.recv()).await {
                Ok(Ok(m)) => Some(m.into_vec().into_iter().map(|b| b.to_vec()).collect()),
                _ => None,
            }
        })
    }

    /// Every message not claimed by a wait so far, plus those arriving within `t` (e.g. to check
    /// that a forged request produced nothing).
    pub(crate) fn unclaimed(&mut self, t: Duration) -> Result<Vec<Msg>> {
        let io = &mut self.io;
        self.rt.block_on(async {
            let deadline = Instant::now() + t;
            let mut out = std::mem::take(&mut io.backlog);
            while let Some(m) = io.next(deadline).await? {
                out.push(m);
            }
            Ok(out)
        })
    }

    /// Decodes raw frames from the kernel (checks the signature).
    pub(crate) fn decode_raw(&self, frames: &Frames) -> Result<Msg> {
        decode(Chan::Shell, frames, &self.info.key)
    }
}

/// Default execute_request content.
pub(crate) fn execute_content(code: &str) -> Value {
    json!({
        "code": code,
        "silent": false,
        "store_history": true,
        "user_expressions": {},
        "allow_stdin": true,
        "stop_on_error": true,
    })
}

impl Drop for Kernel {
    fn drop(&mut self) {
        // The kernel leads its process group: take its runtimes down with it.
        carbon_kernel::runtime::child::signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CSV file (`emissions.csv`) as its header and one map per row, column name → text.
pub(crate) fn csv_table(
    path: &Path,
) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
    let mut rd = csv::Reader::from_path(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let head: Vec<String> = rd.headers().unwrap().iter().map(String::from).collect();
    let rows = rd
        .records()
        .map(|r| {
            head.iter()
                .cloned()
                .zip(r.unwrap().iter().map(String::from))
                .collect()
        })
        .collect();
    (head, rows)
}

/// The rows of a CSV file ([`csv_table`] without its header).
pub(crate) fn csv_rows(path: &Path) -> Vec<std::collections::HashMap<String, String>> {
    csv_table(path).1
}

/// The last row of `dir/emissions.csv`.
pub(crate) fn csv_last_row(dir: &Path) -> std::collections::HashMap<String, String> {
    csv_rows(&dir.join("emissions.csv"))
        .pop()
        .expect("a row in emissions.csv")
}
