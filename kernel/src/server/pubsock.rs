//! The iopub socket: a ZeroMQ XPUB speaking ZMTP 3.0 (NULL security) on its own, so that one
//! subscriber that stops reading cannot stall the kernel.
//!
//! Why not the `zeromq` crate's `XPubSocket`: its `send` writes to each subscriber in turn and
//! awaits each write, so a client that connects to iopub and never reads blocks every send once
//! its TCP buffers are full, and with it the shell (issue 13.3). libzmq's PUB/XPUB instead gives
//! each subscriber a queue bounded by a high-water mark and drops that subscriber's messages
//! when it is full (zmq_socket(3), `ZMQ_SNDHWM`: "ZMQ_PUB … messages are dropped"). This module
//! does the same: [`PubSocket::send`] never waits; each subscriber has a writer task and a queue
//! of at most [`HWM_MESSAGES`] messages and [`HWM_BYTES`] bytes.
//!
//! Wire format (ZMTP 3.0, <https://rfc.zeromq.org/spec/23/>): a 64-byte greeting each way, a
//! READY command each way (`Socket-Type`: ours `XPUB`, theirs `SUB`/`XSUB`), then frames: a
//! flags byte (bit 0 MORE, bit 1 LONG, bit 2 COMMAND), a size (1 byte, or 8 bytes big-endian
//! when LONG), the body. A subscriber sends its subscriptions as one-frame messages starting
//! with 1 (subscribe) or 0 (unsubscribe), then the topic (ZMTP 3.1 peers may send SUBSCRIBE
//! and CANCEL commands instead; both are understood).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Messages queued for one subscriber before its messages are dropped: libzmq's default
/// `ZMQ_SNDHWM` (1000, zmq_setsockopt(3)).
pub const HWM_MESSAGES: usize = 1000;

/// Bytes queued for one subscriber before its messages are dropped: libzmq counts messages
/// only; a byte bound keeps a stalled subscriber of a cell that prints 50 MB from holding them
/// all (16 MiB: 64 full-size merged stream messages of 256 KiB; a local client that reads
/// keeps its queue far below).
pub const HWM_BYTES: usize = 16 * 1024 * 1024;

/// A subscriber with more than this queued holds the sender back ([`PubSocket::backpressure`])
/// while it keeps reading (64 KiB: one stream chunk of a runtime): a cell that prints faster
/// than a front-end reads waits for it, as it did when TCP buffers were full, instead of
/// queueing its whole output in the kernel.
pub const SOFT_BYTES: usize = 64 * 1024;

/// A subscriber whose queue has not moved for this long is stalled: nobody waits for it any
/// more, and its messages are dropped at the high-water mark.
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest topic or command body we accept from a subscriber (subscriptions are short).
const MAX_INCOMING: u64 = 64 * 1024;

/// One message: its frames.
type Frames = Arc<Vec<Vec<u8>>>;

/// A subscription change seen on the socket (for JEP 65's `iopub_welcome`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// A subscriber subscribed to this topic prefix.
    Subscribe(Vec<u8>),
    /// A subscriber dropped this topic prefix.
    Unsubscribe(Vec<u8>),
}

struct Peer {
    topics: Vec<Vec<u8>>,
    tx: mpsc::Sender<Frames>,
    queued_bytes: Arc<AtomicUsize>,
    /// When its writer last finished writing a message.
    progress: Arc<Mutex<std::time::Instant>>,
    dropped: u64,
}

#[derive(Default)]
struct Peers {
    map: Mutex<HashMap<u64, Peer>>,
    next: AtomicU64,
    /// Signalled each time a writer has written a message (wakes [`PubSocket::backpressure`]).
    written: tokio::sync::Notify,
}

impl Peers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Peer>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The bound XPUB socket.
pub struct PubSocket {
    peers: Arc<Peers>,
    subs: mpsc::UnboundedReceiver<Subscription>,
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

impl PubSocket {
    /// Binds `url` (`tcp://host:port` or `ipc://path`) and starts accepting subscribers.
    pub async fn bind(url: &str) -> io::Result<Self> {
        let peers = Arc::new(Peers::default());
        let (sub_tx, subs) = mpsc::unbounded_channel();
        if let Some(addr) = url.strip_prefix("tcp://") {
            let l = tokio::net::TcpListener::bind(addr).await?;
            let (peers, sub_tx) = (peers.clone(), sub_tx.clone());
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            let _ = s.set_nodelay(true);
                            tokio::spawn(serve_peer(Box::new(s), peers.clone(), sub_tx.clone()));
                        }
                        Err(e) => {
                            log::debug!("iopub: accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
            });
        } else if let Some(path) = url.strip_prefix("ipc://") {
            let l = tokio::net::UnixListener::bind(path)?;
            let (peers, sub_tx) = (peers.clone(), sub_tx.clone());
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((s, _)) => {
                            tokio::spawn(serve_peer(Box::new(s), peers.clone(), sub_tx.clone()));
                        }
                        Err(e) => {
                            log::debug!("iopub: accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                        }
                    }
                }
            });
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("unsupported endpoint {url}"),
            ));
        }
        Ok(Self { peers, subs })
    }

    /// Queues `frames` for every subscriber whose topics match the first frame. Never waits: a
    /// subscriber whose queue is at its high-water mark misses this message.
    pub fn send(&self, frames: Vec<Vec<u8>>) {
        let size: usize = frames.iter().map(Vec::len).sum();
        let msg: Frames = Arc::new(frames);
        let Some(first) = msg.first() else { return };
        let mut peers = self.peers.lock();
        for (id, p) in peers.iter_mut() {
            if !p.topics.iter().any(|t| first.starts_with(t)) {
                continue;
            }
            let queued = p.queued_bytes.load(Ordering::SeqCst);
            let fits = queued + size <= HWM_BYTES || queued == 0;
            if fits && p.tx.try_send(msg.clone()).is_ok() {
                p.queued_bytes.fetch_add(size, Ordering::SeqCst);
            } else {
                if p.dropped == 0 {
                    log::warn!(
                        "iopub: subscriber {id} does not read; dropping its messages (high-water mark)"
                    );
                }
                p.dropped += 1;
            }
        }
    }

    /// Waits while a subscriber that still reads has more than [`SOFT_BYTES`] queued (one that
    /// has not moved for [`STALLED_AFTER`] is not waited for).
    pub async fn backpressure(&self) {
        loop {
            let written = self.peers.written.notified();
            tokio::pin!(written);
            // registered before the check: a write that lands in between still wakes us
            written.as_mut().enable();
            let busy = self.peers.lock().values().any(|p| {
                p.queued_bytes.load(Ordering::SeqCst) > SOFT_BYTES
                    && p.progress
                        .lock()
                        .map(|t| t.elapsed() < STALLED_AFTER)
                        .unwrap_or(false)
            });
            if !busy {
                return;
            }
            // a stalled subscriber writes nothing: look again when it would count as stalled
            let _ = tokio::time::timeout(STALLED_AFTER, written).await;
        }
    }

    /// Waits until every subscriber that still reads has had all its queued messages written
    /// to its connection, at most `max` (ZeroMQ's linger). [`PubSocket::send`] only queues, so
    /// without this an `execute_reply` could overtake the cell's outputs, and a kernel exiting
    /// right after its last `status: idle` could exit before writing it.
    pub async fn drained(&self, max: std::time::Duration) {
        let end = tokio::time::Instant::now() + max;
        loop {
            let written = self.peers.written.notified();
            tokio::pin!(written);
            // registered before the check: a write that lands in between still wakes us
            written.as_mut().enable();
            let pending = self.peers.lock().values().any(|p| {
                p.queued_bytes.load(Ordering::SeqCst) > 0
                    && p.progress
                        .lock()
                        .map(|t| t.elapsed() < STALLED_AFTER)
                        .unwrap_or(false)
            });
            if !pending {
                return;
            }
            // a subscriber that stops writing counts as stalled after STALLED_AFTER: look again
            let wait = end.min(tokio::time::Instant::now() + STALLED_AFTER);
            if tokio::time::timeout_at(wait, written).await.is_err()
                && tokio::time::Instant::now() >= end
            {
                return;
            }
        }
    }

    /// The next subscription change (`None` once the socket is gone).
    pub async fn recv_subscription(&mut self) -> Option<Subscription> {
        self.subs.recv().await
    }
}

/// The 64-byte ZMTP 3.0 greeting with the NULL mechanism, as client-side (`as-server` 0: with
/// NULL the role does not matter).
fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xff;
    g[8] = 1;
    g[9] = 0x7f;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// The READY command body with our socket type.
fn ready() -> Vec<u8> {
    let mut b = Vec::new();
    b.push(5);
    b.extend_from_slice(b"READY");
    let (name, value) = (b"Socket-Type", b"XPUB");
    b.push(name.len() as u8);
    b.extend_from_slice(name);
    b.extend_from_slice(&(value.len() as u32).to_be_bytes());
    b.extend_from_slice(value);
    b
}

fn frame_header(flags: u8, len: usize) -> Vec<u8> {
    if len > 255 {
        let mut h = vec![flags | 0x02];
        h.extend_from_slice(&(len as u64).to_be_bytes());
        h
    } else {
        vec![flags, len as u8]
    }
}

/// Reads one frame: (flags, body).
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> io::Result<(u8, Vec<u8>)> {
    let flags = r.read_u8().await?;
    let len = if flags & 0x02 != 0 {
        r.read_u64().await?
    } else {
        u64::from(r.read_u8().await?)
    };
    if len > MAX_INCOMING {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok((flags, body))
}

/// A subscription from a message frame (`\x01topic` / `\x00topic`) or a ZMTP 3.1 command.
fn subscription(flags: u8, body: &[u8]) -> Option<Subscription> {
    if flags & 0x04 != 0 {
        let (&n, rest) = body.split_first()?;
        let name = rest.get(..n as usize)?;
        let data = rest.get(n as usize..)?.to_vec();
        return match name {
            b"SUBSCRIBE" => Some(Subscription::Subscribe(data)),
            b"CANCEL" => Some(Subscription::Unsubscribe(data)),
            _ => None,
        };
    }
    match body.split_first()? {
        (1, t) => Some(Subscription::Subscribe(t.to_vec())),
        (0, t) => Some(Subscription::Unsubscribe(t.to_vec())),
        _ => None,
    }
}

async fn serve_peer(
    stream: Box<dyn Stream>,
    peers: Arc<Peers>,
    subs: mpsc::UnboundedSender<Subscription>,
) {
    let (mut r, w) = tokio::io::split(stream);
    let mut w = BufWriter::new(w);
    let id = peers.next.fetch_add(1, Ordering::SeqCst);
    let handshake = async {
        w.write_all(&greeting()).await?;
        w.flush().await?;
        let mut theirs = [0u8; 64];
        r.read_exact(&mut theirs).await?;
        if theirs[0] != 0xff || theirs[9] != 0x7f || theirs[10] < 3 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "not ZMTP 3"));
        }
        let body = ready();
        w.write_all(&frame_header(0x04, body.len())).await?;
        w.write_all(&body).await?;
        w.flush().await?;
        let (flags, body) = read_frame(&mut r).await?;
        if flags & 0x04 == 0 || !body.starts_with(b"\x05READY") {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "no READY"));
        }
        Ok::<(), io::Error>(())
    };
    let handshake = tokio::time::timeout(std::time::Duration::from_secs(10), handshake).await;
    if !matches!(handshake, Ok(Ok(()))) {
        log::debug!("iopub: a peer failed the ZMTP handshake");
        return;
    }
    let (tx, mut rx) = mpsc::channel::<Frames>(HWM_MESSAGES);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Mutex::new(std::time::Instant::now()));
    peers.lock().insert(
        id,
        Peer {
            topics: Vec::new(),
            tx,
            queued_bytes: queued_bytes.clone(),
            progress: progress.clone(),
            dropped: 0,
        },
    );
    let writer_peers = peers.clone();
    let writer = async move {
        let written = &writer_peers.written;
        while let Some(msg) = rx.recv().await {
            let size: usize = msg.iter().map(Vec::len).sum();
            for (i, f) in msg.iter().enumerate() {
                let more = if i + 1 < msg.len() { 0x01 } else { 0 };
                w.write_all(&frame_header(more, f.len())).await?;
                w.write_all(f).await?;
            }
            if rx.is_empty() {
                w.flush().await?;
            }
            queued_bytes.fetch_sub(size, Ordering::SeqCst);
            if let Ok(mut t) = progress.lock() {
                *t = std::time::Instant::now();
            }
            written.notify_waiters();
        }
        Ok::<(), io::Error>(())
    };
    let reader = {
        let peers = peers.clone();
        async move {
            let mut multipart = false;
            loop {
                let (flags, body) = read_frame(&mut r).await?;
                let part_of_longer = multipart;
                multipart = flags & 0x01 != 0 && flags & 0x04 == 0;
                if part_of_longer || multipart {
                    continue;
                }
                if let Some(s) = subscription(flags, &body) {
                    if let Some(p) = peers.lock().get_mut(&id) {
                        match &s {
                            Subscription::Subscribe(t) => p.topics.push(t.clone()),
                            Subscription::Unsubscribe(t) => {
                                if let Some(i) = p.topics.iter().position(|x| x == t) {
                                    p.topics.remove(i);
                                }
                            }
                        }
                    }
                    let _ = subs.send(s);
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), io::Error>(())
        }
    };
    let ended = tokio::select! {
        r = writer => r,
        r = reader => r,
    };
    if let Err(e) = ended {
        log::debug!("iopub: subscriber {id} left: {e}");
    }
    peers.lock().remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_commands_are_encoded_as_zmtp_says() {
        assert_eq!(frame_header(0x01, 3), vec![1, 3]);
        let long = frame_header(0, 300);
        assert_eq!(long[0], 0x02);
        assert_eq!(u64::from_be_bytes(long[1..9].try_into().unwrap()), 300);
        let g = greeting();
        assert_eq!(
            (g[0], g[9], g[10], &g[12..16]),
            (0xff, 0x7f, 3, &b"NULL"[..])
        );
        assert!(ready().starts_with(b"\x05READY\x0bSocket-Type\0\0\0\x04XPUB"));
        assert_eq!(
            subscription(0, b"\x01abc"),
            Some(Subscription::Subscribe(b"abc".to_vec()))
        );
        assert_eq!(
            subscription(0x04, b"\x06CANCELx"),
            Some(Subscription::Unsubscribe(b"x".to_vec()))
        );
        assert_eq!(subscription(0, b"\x07"), None);
    }
}
