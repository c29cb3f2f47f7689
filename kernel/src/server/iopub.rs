//! The one task that owns the iopub socket (XPUB, JEP 65 `iopub_welcome`). Everything else feeds
//! it through a bounded channel, so a cell that prints faster than the socket takes it blocks
//! the executor instead of growing the kernel's memory. Consecutive stream chunks of the same
//! cell and stream are merged for up to [`MERGE_WINDOW`] so iopub is not flooded with tiny
//! messages. The socket ([`super::pubsock`]) never waits for a subscriber: one that does not
//! read loses messages at its high-water mark, as with a ZeroMQ PUB socket, and stalls nobody.

use super::pubsock::{PubSocket, Subscription};
use crate::runtime::StreamName;
use jupyter_protocol::{IoPubWelcome, JupyterMessage, StreamContent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long stream text may wait to be merged with the next chunk. The brief asks for
/// 20–50 ms; ipykernel flushes every 0.2 s (`OutStream.flush_interval`), which is visibly laggy
/// for live output.
pub const MERGE_WINDOW: Duration = Duration::from_millis(25);

/// Largest merged stream message; a larger pending text is sent at once (bounds memory).
pub const MAX_MERGED: usize = 256 * 1024;

/// Capacity of the channel into the iopub task (messages, not bytes; chunks are ≤ 64 KiB from
/// the runtimes, so at most 1 MiB is ever queued; with 64 a 10 MB print raised the kernel's
/// peak memory by 4–5 MiB, the queue full while the socket's writer caught up).
pub const QUEUE: usize = 16;

/// What the iopub task is asked to do.
pub enum IoItem {
    /// Send this message as is (boxed: a message is much larger than the other variants).
    Msg(Box<JupyterMessage>),
    /// Stream text of the cell `parent` (merged with neighbours).
    Stream {
        /// The execute request.
        parent: Arc<JupyterMessage>,
        /// stdout or stderr.
        name: StreamName,
        /// Text (may be a partial line).
        text: String,
    },
    /// Acknowledge once everything queued before it has been written to the socket.
    Flush(oneshot::Sender<()>),
}

/// A cloneable sender into the iopub task.
#[derive(Clone)]
pub struct IoHandle {
    tx: mpsc::Sender<IoItem>,
}

impl IoHandle {
    /// Queues a message (async side).
    pub async fn send(&self, msg: JupyterMessage) {
        // Fails only after the iopub task ended (shutdown): nothing to do then.
        let _ = self.tx.send(IoItem::Msg(Box::new(msg))).await;
    }

    /// Waits until everything queued so far is on the socket (async side).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(IoItem::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Queues an item from a blocking thread (the executor), waiting while the queue is full.
    pub fn blocking_item(&self, item: IoItem) {
        let _ = self.tx.blocking_send(item);
    }

    /// [`IoHandle::flush`] from a blocking thread.
    pub fn blocking_flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.blocking_send(IoItem::Flush(tx)).is_ok() {
            let _ = rx.blocking_recv();
        }
    }
}

struct Pending {
    parent: Arc<JupyterMessage>,
    name: StreamName,
    text: String,
    deadline: Instant,
}

/// The longest a flush waits for subscribers that still read to receive what was queued
/// (ZeroMQ's default linger is unbounded; a kernel must not hang its reply or its exit on one
/// slow client, and one that does not read at all is not waited for).
const FLUSH_LINGER: Duration = Duration::from_secs(2);

/// The iopub socket with what signs its messages.
pub struct IoPub {
    /// The bound socket.
    pub socket: PubSocket,
    /// HMAC-SHA256 key (`None`: an empty key, no signatures).
    pub mac: Option<ring::hmac::Key>,
    /// Session id written into every header.
    pub session: String,
}

/// Starts the iopub task; returns the handle that feeds it.
pub fn spawn(iopub: IoPub) -> IoHandle {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(run(iopub, rx));
    IoHandle { tx }
}

/// The wire frames of `msg`: identities (topic), `<IDS|MSG>`, signature, header, parent header,
/// metadata, content, buffers (the messaging spec's "The Wire Protocol").
fn frames(msg: JupyterMessage, iopub: &IoPub) -> Result<Vec<Vec<u8>>, serde_json::Error> {
    let msg = msg.with_session(&iopub.session);
    let parts = [
        serde_json::to_vec(&msg.header)?,
        match &msg.parent_header {
            Some(p) => serde_json::to_vec(p)?,
            None => b"{}".to_vec(),
        },
        serde_json::to_vec(&msg.metadata)?,
        serde_json::to_vec(&msg.content)?,
    ];
    let signature = match &iopub.mac {
        Some(key) => {
            let mut ctx = ring::hmac::Context::with_key(key);
            for p in &parts {
                ctx.update(p);
            }
            ctx.sign()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        }
        None => String::new(),
    };
    let mut out: Vec<Vec<u8>> = msg.zmq_identities.iter().map(|b| b.to_vec()).collect();
    out.push(b"<IDS|MSG>".to_vec());
    out.push(signature.into_bytes());
    out.extend(parts);
    out.extend(msg.buffers.iter().map(|b| b.to_vec()));
    Ok(out)
}

async fn write(iopub: &mut IoPub, msg: JupyterMessage) {
    match frames(msg, iopub) {
        Ok(f) => {
            iopub.socket.send(f);
            iopub.socket.backpressure().await;
        }
        Err(e) => log::warn!("iopub: cannot encode a message: {e}"),
    }
}

fn stream_message(p: Pending) -> JupyterMessage {
    let content = match p.name {
        StreamName::Stdout => StreamContent::stdout(&p.text),
        StreamName::Stderr => StreamContent::stderr(&p.text),
    };
    let mut m = content.as_child_of(&p.parent);
    m.header.username = crate::protocol::IMPLEMENTATION.to_string();
    m
}

async fn run(mut iopub: IoPub, mut rx: mpsc::Receiver<IoItem>) {
    let mut pending: Option<Pending> = None;
    loop {
        let deadline = pending.as_ref().map(|p| p.deadline);
        tokio::select! {
            item = rx.recv() => match item {
                None => {
                    if let Some(p) = pending.take() {
                        write(&mut iopub, stream_message(p)).await;
                    }
                    break;
                }
                Some(IoItem::Stream { parent, name, text }) => {
                    if let Some(p) = pending.as_mut()
                        && p.name == name
                        && p.parent.header.msg_id == parent.header.msg_id
                        && p.text.len() + text.len() <= MAX_MERGED
                    {
                        p.text.push_str(&text);
                        continue;
                    }
                    if let Some(p) = pending.take() {
                        write(&mut iopub, stream_message(p)).await;
                    }
                    let p = Pending { parent, name, text, deadline: Instant::now() + MERGE_WINDOW };
                    if p.text.len() >= MAX_MERGED {
                        write(&mut iopub, stream_message(p)).await;
                    } else {
                        pending = Some(p);
                    }
                }
                Some(IoItem::Msg(m)) => {
                    if let Some(p) = pending.take() {
                        write(&mut iopub, stream_message(p)).await;
                    }
                    write(&mut iopub, *m).await;
                }
                Some(IoItem::Flush(ack)) => {
                    if let Some(p) = pending.take() {
                        write(&mut iopub, stream_message(p)).await;
                    }
                    // on the connections, not only in their queues (see PubSocket::drained)
                    iopub.socket.drained(FLUSH_LINGER).await;
                    let _ = ack.send(());
                }
            },
            sub = iopub.socket.recv_subscription() => match sub {
                Some(Subscription::Subscribe(topic)) => {
                    let topic = String::from_utf8_lossy(&topic).into_owned();
                    log::debug!("iopub subscription {topic:?}: sending iopub_welcome");
                    let mut m: JupyterMessage = IoPubWelcome::new(topic).into();
                    m.header.username = crate::protocol::IMPLEMENTATION.to_string();
                    write(&mut iopub, m).await;
                }
                Some(Subscription::Unsubscribe(_)) => {}
                None => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                if let Some(p) = pending.take() {
                    write(&mut iopub, stream_message(p)).await;
                }
            }
        }
    }
}
