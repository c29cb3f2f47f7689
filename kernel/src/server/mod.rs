//! The five sockets and every protocol invariant, in one place (xeus' habit):
//!
//! * heartbeat (a ROUTER echo on a thread of its own), control task, shell reader + shell
//!   dispatcher tasks, stdin task, and ONE iopub task fed by a bounded channel ([`iopub`]);
//! * `status: busy` first and `status: idle` last, with the request as parent, around every
//!   request on shell and control; `execute_input`, then outputs, then the reply, then idle;
//! * execution count (incremented for `store_history`; `silent` publishes nothing and counts
//!   nothing; both flags go on to the runtime, so that IPython's own count and history follow);
//!   `stop_on_error` aborts execute requests queued behind a failed cell;
//! * HMAC-SHA256 verified on every incoming message (by `jupyter-zmq-client`); a message with a
//!   missing or wrong signature, or malformed, is dropped with a log line and the kernel keeps
//!   serving. The key is never logged.
//!
//! User code runs on the executor thread ([`executor`]); interrupts reach it through the shared
//! [`crate::exec::Interrupts`] from the control task, SIGINT, or a restart.

pub mod executor;
pub mod input_history;
pub mod iopub;
pub mod pubsock;
pub mod stdin;

use crate::protocol::{self, ConnectionError, ConnectionInfo};
use crate::runtime::{Completeness, Language, RuntimeFactory};
use executor::{ExecHandle, Job};
use input_history::InputHistory;
use iopub::IoHandle;
use jupyter_protocol::{JupyterMessage, JupyterMessageContent, Status};
use jupyter_zmq_client::{
    KernelControlConnection, RouterRecvConnection, RouterSendConnection,
    RuntimeError as ZmqClientError,
};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, watch};

/// How long the process stays after its last message before it exits (see [`serve`]).
/// zeromq 0.7's `send` on shell/control returns once the message is in the peer's queue
/// (`backend.rs`, `send_to_peer_queue`); a task of its own writes it to the connection later, and
/// a process that exits first drops it (exiting at once lost a `shutdown_reply` now and then
/// under load, in CI and on the 2-core machine). Nothing tells when that task is done, so the
/// kernel waits long enough for a starved task to be scheduled at load ~15 on 2 cores (a
/// scheduling delay, not a transfer: the reply is a few hundred bytes). ipykernel's sockets
/// linger up to 1 s (kernelapp.py).
const EXIT_LINGER: Duration = Duration::from_millis(400);

/// How long a shutdown waits for the runtimes to stop before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Everything the server needs.
pub struct ServerConfig {
    /// Parsed connection file.
    pub connection: ConnectionInfo,
    /// Default language (kernelspec `--language`).
    pub language: Language,
    /// Working folder (the notebook's).
    pub workdir: PathBuf,
    /// Builds the language runtimes.
    pub factory: RuntimeFactory,
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// The connection file cannot be read.
    #[error("cannot read connection file {path}: {source}")]
    ReadConnection {
        /// file
        path: PathBuf,
        /// cause
        #[source]
        source: std::io::Error,
    },
    /// The connection file is invalid.
    #[error("{path}: {source}")]
    Connection {
        /// file
        path: PathBuf,
        /// cause
        #[source]
        source: ConnectionError,
    },
    /// A socket could not be bound.
    #[error("cannot bind the {socket} socket on {url}: {detail}")]
    Bind {
        /// which socket
        socket: &'static str,
        /// endpoint
        url: String,
        /// cause
        detail: String,
    },
    /// The executor thread could not start.
    #[error("cannot start the executor thread: {0}")]
    Executor(#[source] std::io::Error),
    /// The heartbeat thread could not start.
    #[error("cannot start the heartbeat thread: {0}")]
    Heartbeat(#[source] std::io::Error),
}

/// Reads and checks a connection file.
pub fn load_connection_file(path: &Path) -> Result<ConnectionInfo, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|source| ServerError::ReadConnection {
        path: path.to_path_buf(),
        source,
    })?;
    protocol::parse_connection(&text).map_err(|source| ServerError::Connection {
        path: path.to_path_buf(),
        source,
    })
}

/// Why the kernel stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// `shutdown_request` without restart.
    Shutdown,
    /// The parent process (JPY_PARENT_PID) died.
    ParentDied,
    /// SIGTERM.
    Terminated,
}

struct State {
    count: u32,
    history: InputHistory,
}

struct Kernel {
    io: IoHandle,
    exec: ExecHandle,
    state: Mutex<State>,
    exit: watch::Sender<Option<Exit>>,
}

impl Kernel {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn status(&self, parent: &JupyterMessage, busy: bool) {
        let status = if busy { Status::busy() } else { Status::idle() };
        let mut m = status.as_child_of(parent);
        m.header.username = protocol::IMPLEMENTATION.to_string();
        self.io.send(m).await;
    }

    async fn iopub(&self, msg_type: &str, content: Value, parent: &JupyterMessage) {
        self.io
            .send(protocol::message(msg_type, content, Some(parent)))
            .await;
    }

    async fn kernel_info(&self) -> Value {
        protocol::kernel_info_reply(&self.exec.language_info().await)
    }

    /// Shutdown (from control, or the deprecated shell route): interrupt the running cell, then
    /// stop every runtime (children killed) within [`SHUTDOWN_GRACE`]. With `restart` the
    /// runtimes are reset and the count and history cleared first, so the kernel is in a clean
    /// state even if the front-end keeps talking to this process.
    async fn shutdown(&self, restart: bool) {
        self.exec.interrupts.interrupt();
        if restart {
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.exec.call(Job::Restart)).await;
            let mut st = self.state();
            st.count = 0;
            st.history.clear();
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.exec.call(Job::Shutdown)).await;
        // whatever the cells started, the runtimes' background processes and orphans included
        let _ = tokio::task::spawn_blocking(crate::runtime::child::end_all_processes).await;
    }
}

fn bind_err(socket: &'static str, url: String) -> impl FnOnce(ZmqClientError) -> ServerError {
    move |e| ServerError::Bind {
        socket,
        url,
        detail: e.to_string(),
    }
}

/// Logs a message that was dropped (bad signature, malformed, …); never its content or the key.
fn log_dropped(socket: &str, e: &protocol::DecodeError) {
    let why = match e {
        protocol::DecodeError::Wire(ZmqClientError::VerifyError(_)) => {
            "wrong HMAC signature".to_string()
        }
        protocol::DecodeError::Wire(ZmqClientError::MissingHmac) => {
            "missing HMAC signature".to_string()
        }
        protocol::DecodeError::Wire(ZmqClientError::DecodeError(_)) => {
            "signature is not hex".to_string()
        }
        other => other.to_string(),
    };
    log::warn!("{socket}: dropped an incoming message: {why}");
}

/// Runs the kernel until shutdown. Binds every socket first (iopub last: a client that can
/// subscribe to iopub finds the other sockets bound).
pub async fn serve(cfg: ServerConfig) -> Result<Exit, ServerError> {
    let ci = cfg.connection;
    if ci.key.is_empty() {
        log::warn!("connection file has an empty key: messages are neither signed nor verified");
    }
    let session = uuid::Uuid::new_v4().to_string();
    spawn_heartbeat(ci.hb_url()).await?;
    let shell = jupyter_zmq_client::create_kernel_shell_connection(&ci, &session)
        .await
        .map_err(bind_err("shell", ci.shell_url()))?;
    let control = jupyter_zmq_client::create_kernel_control_connection(&ci, &session)
        .await
        .map_err(bind_err("control", ci.control_url()))?;
    let stdin = jupyter_zmq_client::create_kernel_stdin_connection(&ci, &session)
        .await
        .map_err(bind_err("stdin", ci.stdin_url()))?;
    let iopub = iopub::IoPub {
        socket: pubsock::PubSocket::bind(&ci.iopub_url())
            .await
            .map_err(|e| ServerError::Bind {
                socket: "iopub",
                url: ci.iopub_url(),
                detail: e.to_string(),
            })?,
        mac: (!ci.key.is_empty())
            .then(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, ci.key.as_bytes())),
        session: session.clone(),
    };

    let io = iopub::spawn(iopub);
    let mut starting: JupyterMessage = Status::starting().into();
    starting.header.username = protocol::IMPLEMENTATION.to_string();
    io.send(starting).await;
    let stdin_tx = stdin::spawn(stdin);
    let exec = executor::spawn(cfg.language, cfg.workdir, cfg.factory, io.clone(), stdin_tx)
        .map_err(ServerError::Executor)?;

    let (exit_tx, mut exit_rx) = watch::channel(None);
    let kernel = Arc::new(Kernel {
        io,
        exec,
        state: Mutex::new(State {
            count: 0,
            history: InputHistory::default(),
        }),
        exit: exit_tx,
    });

    tokio::spawn(control_loop(kernel.clone(), control));
    let (shell_send, shell_recv) = shell.split();
    let (shell_tx, shell_rx) = mpsc::unbounded_channel();
    tokio::spawn(shell_reader(shell_recv, shell_tx));
    tokio::spawn(shell_loop(kernel.clone(), shell_send, shell_rx));
    tokio::spawn(watch_signals(kernel.clone()));
    if let Some(pid) = parent_pid() {
        tokio::spawn(watch_parent(kernel.clone(), pid));
    }

    let exit = loop {
        if let Some(e) = *exit_rx.borrow_and_update() {
            break e;
        }
        if exit_rx.changed().await.is_err() {
            break Exit::Shutdown;
        }
    };
    if exit != Exit::Shutdown {
        kernel.shutdown(false).await;
    }
    kernel.io.flush().await;
    // iopub is flushed (our own socket knows when its queues are on the connections), but the
    // control/shell replies may still wait in zeromq's per-peer queue: see EXIT_LINGER.
    tokio::time::sleep(EXIT_LINGER).await;
    Ok(exit)
}

/// Binds the heartbeat and answers it on a thread of its own, with a one-thread runtime: a pong
/// never waits for the sockets' thread, however busy a cell's output keeps it (signing and
/// sending messages), as ipykernel answers pings from a thread of its own. Returns once bound.
async fn spawn_heartbeat(url: String) -> Result<(), ServerError> {
    let (bound_tx, bound) = tokio::sync::oneshot::channel::<Result<(), ServerError>>();
    std::thread::Builder::new()
        .name("carbon-heartbeat".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = bound_tx.send(Err(ServerError::Heartbeat(e)));
                    return;
                }
            };
            rt.block_on(async move {
                let mut hb = <zeromq::RouterSocket as zeromq::Socket>::new();
                match zeromq::Socket::bind(&mut hb, &url).await {
                    Ok(_) => {
                        let _ = bound_tx.send(Ok(()));
                        heartbeat(hb).await;
                    }
                    Err(e) => {
                        let _ = bound_tx.send(Err(bind_err("heartbeat", url)(e.into())));
                    }
                }
            });
        })
        .map_err(ServerError::Heartbeat)?;
    bound.await.unwrap_or_else(|_| {
        Err(ServerError::Heartbeat(std::io::Error::other(
            "the heartbeat thread ended before binding",
        )))
    })
}

/// The heartbeat: every message comes back as it came, to the peer that sent it (ipykernel's
/// `Heartbeat` is `zmq.device(QUEUE, ROUTER, ROUTER)` on one socket, the same echo). A ROUTER
/// keeps no per-peer state between receive and send, so a client that leaves in the middle of a
/// ping costs one failed send; `jupyter-zmq-client`'s REP heartbeat could stay stuck for good on
/// such a peer (about one kernel in four after 3000 such clients, its sockets in CLOSE-WAIT).
async fn heartbeat(mut hb: zeromq::RouterSocket) {
    use zeromq::{SocketRecv, SocketSend};
    loop {
        match hb.recv().await {
            // [peer identity, (REQ's empty delimiter), payload…] goes back as is
            Ok(m) => {
                if let Err(e) = hb.send(m).await {
                    log::debug!("heartbeat: the peer left before its pong: {e}");
                }
            }
            Err(e) => {
                log::debug!("heartbeat: {e}");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

fn parent_pid() -> Option<i32> {
    let pid: i32 = std::env::var("JPY_PARENT_PID").ok()?.trim().parse().ok()?;
    (pid > 1).then_some(pid)
}

/// ipykernel's ParentPoller: exit when the process that started us is gone.
async fn watch_parent(k: Arc<Kernel>, pid: i32) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !crate::runtime::child::process_exists(pid.unsigned_abs()) {
            log::warn!("parent process {pid} died: shutting down");
            let _ = k.exit.send(Some(Exit::ParentDied));
            return;
        }
    }
}

/// SIGINT interrupts the running cell (jupyter console, `interrupt_mode: signal` clients);
/// SIGTERM shuts the kernel down cleanly (runtimes stopped).
async fn watch_signals(k: Arc<Kernel>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        log::warn!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = int.recv() => {
                log::info!("SIGINT: interrupting the running cell");
                k.exec.interrupts.interrupt();
            }
            _ = term.recv() => {
                let _ = k.exit.send(Some(Exit::Terminated));
                return;
            }
        }
    }
}

async fn control_loop(k: Arc<Kernel>, mut control: KernelControlConnection) {
    loop {
        let msg = match read_message(&mut control).await {
            Ok(m) => m,
            Err(e) => {
                log_dropped("control", &e);
                continue;
            }
        };
        let msg_type = msg.header.msg_type.clone();
        k.status(&msg, true).await;
        let mut exit = false;
        let reply: Option<(String, Value)> = match &msg.content {
            JupyterMessageContent::KernelInfoRequest(_) => {
                Some(("kernel_info_reply".into(), k.kernel_info().await))
            }
            JupyterMessageContent::InterruptRequest(_) => {
                k.exec.interrupts.interrupt();
                Some(("interrupt_reply".into(), json!({ "status": "ok" })))
            }
            JupyterMessageContent::ShutdownRequest(r) => {
                k.shutdown(r.restart).await;
                // The process ends in both cases: jupyter_client restarts a kernel by waiting
                // for it to exit and starting a new process (a kernel that stayed up would be
                // killed after `shutdown_wait_time`); `restart` only informs us.
                exit = true;
                Some((
                    "shutdown_reply".into(),
                    json!({ "status": "ok", "restart": r.restart }),
                ))
            }
            _ if msg_type.ends_with("_request") => {
                log::info!("control: {msg_type} is not supported; replying with an error");
                Some(protocol::unsupported_reply(&msg_type))
            }
            _ => {
                log::info!("control: ignoring {msg_type}");
                None
            }
        };
        if let Some((t, c)) = reply
            && let Err(e) = control.send(protocol::message(&t, c, Some(&msg))).await
        {
            log::warn!("control: cannot send {t}: {e}");
        }
        k.status(&msg, false).await;
        if exit {
            k.io.flush().await;
            let _ = k.exit.send(Some(Exit::Shutdown));
        }
    }
}

/// The signatures seen on every socket of this kernel (one kernel per process).
static DIGESTS: std::sync::LazyLock<protocol::DigestHistory> =
    std::sync::LazyLock::new(protocol::DigestHistory::default);

/// Reads one message: transport errors, bad signatures, malformed frames and replays of a
/// message already received are reported as [`protocol::DecodeError`] so the caller logs and
/// drops them (see `protocol::decode`, [`protocol::DigestHistory`]).
async fn read_message<S: zeromq::SocketRecv>(
    conn: &mut jupyter_zmq_client::Connection<S>,
) -> Result<JupyterMessage, protocol::DecodeError> {
    let multipart = conn
        .socket
        .recv()
        .await
        .map_err(|e| protocol::DecodeError::Wire(e.into()))?;
    let signature = protocol::signature_of(&multipart);
    let msg = protocol::decode(multipart, &conn.mac)?;
    // Only a verified signature is recorded: a forged one must not poison the history.
    if conn.mac.is_some()
        && let Some(sig) = signature
    {
        DIGESTS.check(&sig)?;
    }
    Ok(msg)
}

async fn shell_reader(mut recv: RouterRecvConnection, tx: mpsc::UnboundedSender<JupyterMessage>) {
    loop {
        match read_message(&mut recv).await {
            Ok(m) => {
                if tx.send(m).is_err() {
                    return;
                }
            }
            Err(e) => log_dropped("shell", &e),
        }
    }
}

/// Shell requests in arrival order. A failed cell with `stop_on_error` aborts the execute
/// requests already queued behind it (ipykernel's `_abort_queues`).
async fn shell_loop(
    k: Arc<Kernel>,
    mut send: RouterSendConnection,
    mut rx: mpsc::UnboundedReceiver<JupyterMessage>,
) {
    let mut queue = ShellQueue {
        rx: &mut rx,
        pending: VecDeque::new(),
    };
    loop {
        let (msg, abort) = match queue.pending.pop_front() {
            Some(x) => x,
            None => match queue.rx.recv().await {
                Some(m) => (m, false),
                None => return,
            },
        };
        handle_shell(&k, &mut send, &msg, abort, &mut queue).await;
    }
}

/// The shell requests received but not handled yet.
struct ShellQueue<'a> {
    rx: &'a mut mpsc::UnboundedReceiver<JupyterMessage>,
    pending: VecDeque<(JupyterMessage, bool)>,
}

impl ShellQueue<'_> {
    /// Marks every execute request received so far as aborted. Called before the failed cell's
    /// reply is sent, so only requests the client sent before it saw the failure are aborted.
    fn abort_queued_executes(&mut self) {
        while let Ok(m) = self.rx.try_recv() {
            self.pending.push_back((m, false));
        }
        for (m, abort) in self.pending.iter_mut() {
            if matches!(m.content, JupyterMessageContent::ExecuteRequest(_)) {
                *abort = true;
            }
        }
    }
}

async fn reply(send: &mut RouterSendConnection, parent: &JupyterMessage, t: &str, c: Value) {
    if let Err(e) = send.send(protocol::message(t, c, Some(parent))).await {
        log::warn!("shell: cannot send {t}: {e}");
    }
}

/// Handles one shell request between busy and idle.
async fn handle_shell(
    k: &Kernel,
    send: &mut RouterSendConnection,
    msg: &JupyterMessage,
    abort: bool,
    queue: &mut ShellQueue<'_>,
) {
    let msg_type = msg.header.msg_type.clone();
    k.status(msg, true).await;
    match &msg.content {
        JupyterMessageContent::ExecuteRequest(_) if abort => {
            let count = k.state().count;
            reply(
                send,
                msg,
                "execute_reply",
                protocol::aborted_execute_reply(count),
            )
            .await;
        }
        JupyterMessageContent::ExecuteRequest(req) => {
            let silent = req.silent;
            let store = req.store_history && !silent;
            let count = {
                let mut st = k.state();
                if store {
                    st.count += 1;
                }
                st.count
            };
            if !silent {
                k.iopub(
                    "execute_input",
                    json!({ "code": req.code, "execution_count": count }),
                    msg,
                )
                .await;
            }
            let parent = Arc::new(msg.clone());
            let code = req.code.clone();
            let allow_stdin = req.allow_stdin;
            let outcome = k
                .exec
                .call(|done| Job::Execute {
                    code,
                    silent,
                    store_history: store,
                    allow_stdin,
                    parent,
                    count,
                    done,
                })
                .await
                .unwrap_or_else(executor::lost_outcome);
            if !silent {
                if let Some(r) = &outcome.result {
                    k.iopub("execute_result", protocol::execute_result(count, r), msg)
                        .await;
                }
                if let Some(e) = outcome.error.as_ref().filter(|e| !e.shown) {
                    k.iopub("error", protocol::error_content(e), msg).await;
                }
            }
            if store {
                let out = outcome
                    .result
                    .as_ref()
                    .and_then(|r| r.text("text/plain"))
                    .unwrap_or("")
                    .to_string();
                k.state().history.push(count, &req.code, &out);
            }
            // Outputs before the reply: the iopub task has written everything queued so far.
            k.io.flush().await;
            let content = protocol::execute_reply(
                count,
                outcome.error.as_ref(),
                outcome.pager.as_ref(),
                outcome.next_input.as_ref(),
            );
            if outcome.error.is_some() && req.stop_on_error {
                queue.abort_queued_executes();
            }
            reply(send, msg, "execute_reply", content).await;
        }
        JupyterMessageContent::KernelInfoRequest(_) => {
            let c = k.kernel_info().await;
            reply(send, msg, "kernel_info_reply", c).await;
        }
        JupyterMessageContent::IsCompleteRequest(r) => {
            let c = k
                .exec
                .call(|done| Job::IsComplete(r.code.clone(), done))
                .await
                .unwrap_or(Completeness::Unknown);
            let content = match c {
                Completeness::Complete => json!({ "status": "complete" }),
                Completeness::Incomplete(indent) => {
                    json!({ "status": "incomplete", "indent": indent })
                }
                Completeness::Invalid => json!({ "status": "invalid" }),
                Completeness::Unknown => json!({ "status": "unknown" }),
            };
            reply(send, msg, "is_complete_reply", content).await;
        }
        JupyterMessageContent::CompleteRequest(r) => {
            let byte = protocol::cursor_to_byte(&r.code, r.cursor_pos);
            let c = k
                .exec
                .call(|done| Job::Complete(r.code.clone(), byte, done))
                .await
                .unwrap_or_default();
            let (start, end) = if c.matches.is_empty() {
                (byte, byte)
            } else {
                (c.cursor_start, c.cursor_end)
            };
            let content = json!({
                "status": "ok",
                "matches": c.matches,
                "cursor_start": protocol::byte_to_cursor(&r.code, start),
                "cursor_end": protocol::byte_to_cursor(&r.code, end),
                "metadata": {},
            });
            reply(send, msg, "complete_reply", content).await;
        }
        JupyterMessageContent::InspectRequest(r) => {
            let byte = protocol::cursor_to_byte(&r.code, r.cursor_pos);
            let detail = r.detail_level.unwrap_or(0).min(255) as u8;
            let i = k
                .exec
                .call(|done| Job::Inspect(r.code.clone(), byte, detail, done))
                .await
                .unwrap_or_default();
            let data = if i.found {
                protocol::bundle_data(&i.data)
            } else {
                json!({})
            };
            let content = json!({ "status": "ok", "found": i.found, "data": data, "metadata": {} });
            reply(send, msg, "inspect_reply", content).await;
        }
        JupyterMessageContent::HistoryRequest(r) => {
            let content = k.state().history.reply(r);
            reply(send, msg, "history_reply", content).await;
        }
        JupyterMessageContent::CommInfoRequest(_) => {
            let content = json!({ "status": "ok", "comms": {} });
            reply(send, msg, "comm_info_reply", content).await;
        }
        JupyterMessageContent::ShutdownRequest(r) => {
            // Deprecated on shell since 5.4, still answered.
            k.shutdown(r.restart).await;
            let content = json!({ "status": "ok", "restart": r.restart });
            reply(send, msg, "shutdown_reply", content).await;
            {
                k.status(msg, false).await;
                k.io.flush().await;
                let _ = k.exit.send(Some(Exit::Shutdown));
                return;
            }
        }
        JupyterMessageContent::InterruptRequest(_) => {
            k.exec.interrupts.interrupt();
            reply(send, msg, "interrupt_reply", json!({ "status": "ok" })).await;
        }
        JupyterMessageContent::CommOpen(open) => {
            // No comm targets are registered: close it at once, as the messaging spec asks
            // ("If the target_name key is not found on the receiving side, then it should
            // immediately reply with a comm_close message") and ipykernel's CommManager does.
            log::info!(
                "shell: comm_open for unknown target {:?}: closing it",
                open.target_name
            );
            k.iopub(
                "comm_close",
                json!({ "comm_id": open.comm_id.0, "data": {} }),
                msg,
            )
            .await;
        }
        JupyterMessageContent::CommMsg(_) | JupyterMessageContent::CommClose(_) => {
            log::debug!("shell: no comm targets; ignoring {msg_type}");
        }
        _ if msg_type.ends_with("_request") => {
            log::info!("shell: {msg_type} is not supported; replying with an error");
            let (t, c) = protocol::unsupported_reply(&msg_type);
            reply(send, msg, &t, c).await;
        }
        _ => log::info!("shell: ignoring {msg_type}"),
    }
    k.status(msg, false).await;
}
