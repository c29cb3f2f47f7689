//! The executor thread: one `std::thread` owns the [`Executor`] (runtimes block, so they never
//! run on the async workers) and takes [`Job`]s from a channel, one at a time. The server awaits
//! each job's answer on a oneshot. [`IopubPublisher`] is the `Publish` the runtimes write to.

use super::iopub::{IoHandle, IoItem};
use super::stdin::InputAsk;
use crate::exec::{ExecConfig, Executor, Interrupts};
use crate::protocol;
use crate::runtime::{
    Completeness, Completions, ExecError, ExecOptions, ExecOutcome, Inspection, Language,
    LanguageInfo, Publish, RuntimeFactory, StreamName,
};
use carbon_magics::MimeBundle;
use jupyter_protocol::JupyterMessage;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Work for the executor thread.
pub enum Job {
    /// Run a cell.
    Execute {
        /// Cell source.
        code: String,
        /// Outputs are not published (`silent`).
        silent: bool,
        /// The cell counts and enters the history (`store_history`, false when silent).
        store_history: bool,
        /// The front-end answers `input_request`s.
        allow_stdin: bool,
        /// The execute request (parent of every output).
        parent: Arc<JupyterMessage>,
        /// The cell's execution count (of its `execute_result`s).
        count: u32,
        /// The outcome.
        done: oneshot::Sender<ExecOutcome>,
    },
    /// `is_complete_request` (in the default language).
    IsComplete(String, oneshot::Sender<Completeness>),
    /// `complete_request`: code, byte cursor.
    Complete(String, usize, oneshot::Sender<Completions>),
    /// `inspect_request`: code, byte cursor, detail level.
    Inspect(String, usize, u8, oneshot::Sender<Inspection>),
    /// Restart: every runtime is shut down (they start again lazily).
    Restart(oneshot::Sender<()>),
    /// Kernel shutdown: runtimes stopped, children killed; the thread ends.
    Shutdown(oneshot::Sender<()>),
}

/// The server's side of the executor thread.
#[derive(Clone)]
pub struct ExecHandle {
    jobs: std_mpsc::Sender<Job>,
    /// Shared with the executor: interrupts the running cell.
    pub interrupts: Arc<Interrupts>,
    /// `language_info` of the default language, once the thread has computed it.
    pub info: watch::Receiver<Option<LanguageInfo>>,
}

impl ExecHandle {
    /// Sends a job and awaits its answer; `None` if the thread is gone.
    pub async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Job) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs.send(make(tx)).ok()?;
        rx.await.ok()
    }

    /// The default language's `language_info` (waits for the thread's first answer).
    pub async fn language_info(&self) -> LanguageInfo {
        let mut rx = self.info.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or_else(fallback_info),
            Err(_) => fallback_info(),
        }
    }
}

fn fallback_info() -> LanguageInfo {
    LanguageInfo {
        name: "python".into(),
        version: String::new(),
        mimetype: String::new(),
        file_extension: String::new(),
        pygments_lexer: String::new(),
        codemirror_mode: String::new(),
        nbconvert_exporter: String::new(),
    }
}

/// Starts the executor thread.
pub fn spawn(
    language: Language,
    workdir: PathBuf,
    factory: RuntimeFactory,
    io: IoHandle,
    stdin: mpsc::Sender<InputAsk>,
) -> std::io::Result<ExecHandle> {
    let (jobs, rx) = std_mpsc::channel::<Job>();
    let (info_tx, info) = watch::channel(None);
    let (int_tx, int_rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("carbon-executor".into())
        .spawn(move || {
            let mut ex = Executor::new(ExecConfig {
                default_language: language,
                workdir,
                factory,
            });
            let _ = int_tx.send(ex.interrupts());
            // `info()` must not start the runtime (the kernel answers kernel_info at once).
            let info = ex.runtime(language).info();
            let _ = info_tx.send(Some(info));
            prestart(&mut ex);
            run(&mut ex, rx, &io, &stdin);
        })?;
    let interrupts = int_rx
        .recv()
        .map_err(|_| std::io::Error::other("the executor thread stopped while starting"))?;
    Ok(ExecHandle {
        jobs,
        interrupts,
        info,
    })
}

/// A fresh kernel's first `pass` cell used to wait for the Python worker and its IPython import
/// (issue 9: start → first result). With Python as the default language (the `carbon`
/// kernelspec) the worker is launched right after start-up (and restart) instead, while the
/// client connects. It does not delay kernel_info_reply (its `language_info` was sent just
/// before) nor the heartbeat (its own task), and `prestart` only spawns: the first job waits
/// for the worker's "ready" inside `start`, as before, so interrupt, restart and a worker that
/// dies while starting behave as with a lazy start. Java and Rust stay lazy: a JVM or evcxr
/// costs seconds of CPU that a notebook may never use.
fn prestart(ex: &mut Executor) {
    // Each runtime decides: only Python's worker starts early (Java and Rust stay lazy, their
    // start-up is heavier and metered by the first cell that needs them).
    ex.default_runtime().prestart();
}

/// Strips line-magic lines, so the runtime judges only the code it will run.
fn is_complete(ex: &mut Executor, code: &str) -> Completeness {
    if code.trim_start().starts_with("%%") {
        return Completeness::Complete;
    }
    let body: Vec<&str> = code
        .lines()
        .filter(|l| !l.trim_start().starts_with('%'))
        .collect();
    if body.iter().all(|l| l.trim().is_empty()) {
        return Completeness::Complete;
    }
    let mut body = body.join("\n");
    if code.ends_with('\n') {
        body.push('\n');
    }
    let rt = ex.default_runtime();
    if !rt.is_complete_needs_child() {
        return rt.is_complete(&body);
    }
    match rt.start() {
        Ok(()) => rt.is_complete(&body),
        Err(_) => Completeness::Unknown,
    }
}

fn run(
    ex: &mut Executor,
    rx: std_mpsc::Receiver<Job>,
    io: &IoHandle,
    stdin: &mpsc::Sender<InputAsk>,
) {
    while let Ok(job) = rx.recv() {
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| match job {
            Job::Execute {
                code,
                silent,
                store_history,
                allow_stdin,
                parent,
                count,
                done,
            } => {
                let mut out = IopubPublisher {
                    parent,
                    count,
                    io: io.clone(),
                    stdin: stdin.clone(),
                    interrupts: ex.interrupts(),
                    silent,
                    allow_stdin,
                };
                let opts = ExecOptions {
                    store_history,
                    silent,
                };
                let outcome = ex.execute_with(&code, opts, &mut out);
                let _ = done.send(outcome);
                false
            }
            Job::IsComplete(code, done) => {
                let _ = done.send(is_complete(ex, &code));
                false
            }
            Job::Complete(code, cursor, done) => {
                // Magic lines from the magic table, code from the cell's language.
                let mut c = crate::exec::complete::complete(ex, &code, cursor);
                // a completion can be a secret's value (a string variable holding a key)
                let r = carbon_magics::redact::global();
                for m in &mut c.matches {
                    if let std::borrow::Cow::Owned(x) = r.redact(m) {
                        *m = x;
                    }
                }
                let _ = done.send(c);
                false
            }
            Job::Inspect(code, cursor, detail, done) => {
                let mut i = crate::exec::complete::inspect(ex, &code, cursor, detail);
                // Shift-Tab on a variable shows its value, which may be a key
                i.data = crate::exec::redacting::bundle(&carbon_magics::redact::global(), i.data);
                let _ = done.send(i);
                false
            }
            Job::Restart(done) => {
                ex.shutdown_runtimes();
                prestart(ex);
                let _ = done.send(());
                false
            }
            Job::Shutdown(done) => {
                ex.shutdown_runtimes();
                let _ = done.send(());
                true
            }
        }));
        match res {
            Ok(true) => break,
            Ok(false) => {}
            // A panic in a runtime must not take the kernel down: the job's sender was dropped,
            // so the server answers that request with an error and keeps serving.
            Err(_) => log::error!("executor: a job panicked; the kernel keeps serving"),
        }
    }
}

/// The outcome of a cell whose job was lost (the executor thread panicked or is gone).
pub fn lost_outcome() -> ExecOutcome {
    ExecOutcome {
        error: Some(ExecError::new(
            "KernelError",
            "the cell's executor failed internally (see the kernel log); the kernel keeps running",
        )),
        ..Default::default()
    }
}

/// The `Publish` given to runtimes: outputs go to iopub as children of the execute request.
pub struct IopubPublisher {
    parent: Arc<JupyterMessage>,
    count: u32,
    io: IoHandle,
    stdin: mpsc::Sender<InputAsk>,
    interrupts: Arc<Interrupts>,
    silent: bool,
    allow_stdin: bool,
}

impl IopubPublisher {
    fn msg(&self, msg_type: &str, content: serde_json::Value) {
        if !self.silent {
            self.io
                .blocking_item(IoItem::Msg(Box::new(protocol::message(
                    msg_type,
                    content,
                    Some(&self.parent),
                ))));
        }
    }
}

impl Publish for IopubPublisher {
    fn stream(&mut self, name: StreamName, text: &str) {
        if !self.silent && !text.is_empty() {
            self.io.blocking_item(IoItem::Stream {
                parent: self.parent.clone(),
                name,
                text: text.to_string(),
            });
        }
    }

    fn display(&mut self, bundle: MimeBundle, display_id: Option<&str>) {
        self.msg("display_data", protocol::display_data(&bundle, display_id));
    }

    fn update_display(&mut self, bundle: MimeBundle, display_id: &str) {
        self.msg(
            "update_display_data",
            protocol::update_display_data(&bundle, display_id),
        );
    }

    fn clear_output(&mut self, wait: bool) {
        self.msg("clear_output", serde_json::json!({ "wait": wait }));
    }

    fn execute_result(&mut self, bundle: MimeBundle) {
        self.msg(
            "execute_result",
            protocol::execute_result(self.count, &bundle),
        );
    }

    fn error(&mut self, error: &ExecError) {
        self.msg("error", protocol::error_content(error));
    }

    fn input(&mut self, prompt: &str, password: bool) -> Option<String> {
        if !self.allow_stdin {
            return None;
        }
        // The prompt's preceding prints must be visible before the front-end asks.
        self.io.blocking_flush();
        let (tx, rx) = std_mpsc::channel();
        let ask = InputAsk {
            parent: self.parent.clone(),
            prompt: prompt.to_string(),
            password,
            answer: tx,
        };
        self.stdin.blocking_send(ask).ok()?;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(v) => return Some(v),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {
                    if self.interrupts.requested() {
                        return None;
                    }
                }
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn boxed_clone(&self) -> Box<dyn Publish> {
        Box::new(IopubPublisher {
            parent: self.parent.clone(),
            count: self.count,
            io: self.io.clone(),
            stdin: self.stdin.clone(),
            interrupts: self.interrupts.clone(),
            silent: self.silent,
            allow_stdin: self.allow_stdin,
        })
    }
}
