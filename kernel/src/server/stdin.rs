//! The stdin socket: `input_request` to the front-end that sent the execute request (same ZeroMQ
//! identity as its shell socket), `input_reply` back to the waiting runtime.

use jupyter_protocol::{InputRequest, JupyterMessage, JupyterMessageContent};
use jupyter_zmq_client::KernelStdinConnection;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use tokio::sync::mpsc;

/// One question for the front-end.
pub struct InputAsk {
    /// The execute request (routing identity and parent header).
    pub parent: Arc<JupyterMessage>,
    /// Prompt text.
    pub prompt: String,
    /// Hide the typed text.
    pub password: bool,
    /// Where the answer goes (the runtime blocks on it).
    pub answer: std_mpsc::Sender<String>,
}

/// Starts the stdin task.
pub fn spawn(conn: KernelStdinConnection) -> mpsc::Sender<InputAsk> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(run(conn, rx));
    tx
}

async fn run(mut conn: KernelStdinConnection, mut rx: mpsc::Receiver<InputAsk>) {
    // The runtime waiting for an answer (an interrupted one has dropped its receiver).
    let mut waiting: Option<(String, std_mpsc::Sender<String>)> = None;
    loop {
        tokio::select! {
            ask = rx.recv() => {
                let Some(ask) = ask else { break };
                let mut m = InputRequest { prompt: ask.prompt, password: ask.password }
                    .as_child_of(&ask.parent);
                m.header.username = crate::protocol::IMPLEMENTATION.to_string();
                let id = m.header.msg_id.clone();
                if let Err(e) = conn.send(m).await {
                    log::warn!("stdin: cannot send input_request: {e}");
                    continue; // dropping `ask.answer` tells the runtime there is no answer
                }
                waiting = Some((id, ask.answer));
            }
            msg = conn.read() => match msg {
                Ok(m) => match m.content {
                    JupyterMessageContent::InputReply(r) => {
                        let matches = match (&waiting, &m.parent_header) {
                            (Some((id, _)), Some(p)) => &p.msg_id == id,
                            // Front-ends that omit the parent still answer the pending question.
                            (Some(_), None) => true,
                            (None, _) => false,
                        };
                        if matches {
                            if let Some((_, tx)) = waiting.take() {
                                let _ = tx.send(r.value);
                            }
                        } else {
                            log::warn!("stdin: input_reply for no pending input_request, ignored");
                        }
                    }
                    _ => log::warn!("stdin: ignoring {} (only input_reply is expected)", m.header.msg_type),
                },
                Err(e) => log::warn!("stdin: dropped a message: {e}"),
            },
        }
    }
}
