//! The wire side of incoming messages: HMAC check, replay refusal and JSON decoding of one
//! multipart message. Kept free of the rest of the crate (only external crates) so that the
//! fuzz target `fuzz/fuzz_targets/protocol_decode.rs` compiles this very file without building
//! the kernel and its evcxr dependency tree (which made the instrumented build take ~50 min).

use jupyter_protocol::{JupyterMessage, JupyterMessageContent};
use serde_json::{Value, json};
use thiserror::Error;

/// Why an incoming message was dropped.
#[derive(Debug, Error)]
pub enum DecodeError {
    /// Framing or signature failure (reported by jupyter-zmq-client).
    #[error("{0}")]
    Wire(#[from] jupyter_zmq_client::RuntimeError),
    /// A frame is not the JSON it must be.
    #[error("malformed {frame}: {source}")]
    Json {
        /// which frame
        frame: &'static str,
        /// parse error
        #[source]
        source: serde_json::Error,
    },
    /// The content does not fit its message type.
    #[error("content of {msg_type}: {detail}")]
    Content {
        /// header.msg_type
        msg_type: String,
        /// what was wrong
        detail: String,
    },
    /// A correctly signed message whose signature was seen before: a replay.
    #[error("replayed message (its signature was already used)")]
    Replayed,
}

/// How many signatures [`DigestHistory`] remembers: jupyter_client's
/// `Session.digest_history_size` default (2**16).
pub const DIGEST_HISTORY: usize = 1 << 16;

/// The signatures of the signed messages received so far, so a replayed message (the same bytes,
/// hence the same signature) is refused, as jupyter_client's `Session.digest_history` does. One
/// per kernel, shared by every socket. Bounded: past [`DIGEST_HISTORY`] entries the oldest are
/// forgotten (jupyter_client culls a random 10 %; oldest-first keeps the recent window exact).
#[derive(Debug, Default)]
pub struct DigestHistory {
    inner: std::sync::Mutex<DigestInner>,
}

#[derive(Debug, Default)]
struct DigestInner {
    seen: std::collections::HashSet<Vec<u8>>,
    order: std::collections::VecDeque<Vec<u8>>,
}

impl DigestHistory {
    /// Records the signature of a message that `decode` accepted; `Err(Replayed)` if it was
    /// already seen. Unsigned messages (empty key: no authentication) are not tracked.
    pub fn check(&self, signature: &[u8]) -> Result<(), DecodeError> {
        if signature.is_empty() {
            return Ok(());
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.seen.contains(signature) {
            return Err(DecodeError::Replayed);
        }
        if g.order.len() >= DIGEST_HISTORY
            && let Some(old) = g.order.pop_front()
        {
            g.seen.remove(&old);
        }
        g.seen.insert(signature.to_vec());
        g.order.push_back(signature.to_vec());
        Ok(())
    }
}

/// The signature frame of a multipart message (the frame after `<IDS|MSG>`), if any.
pub fn signature_of(multipart: &zeromq::ZmqMessage) -> Option<Vec<u8>> {
    let at = multipart.iter().position(|f| &f[..] == b"<IDS|MSG>")?;
    multipart.get(at + 1).map(|f| f.to_vec())
}

/// Fills in fields that the spec marks optional but `jupyter-protocol`'s types require, so
/// well-formed requests from real clients are not dropped. jupyter_client's
/// `history(hist_access_type="search", pattern=…)` omits `n` and `unique` (ipykernel defaults them
/// to None and False), and `raw`/`output` default to True/False as in ipykernel.
fn patch_optional_fields(msg_type: &str, content: &mut Value) {
    if msg_type != "history_request" {
        return;
    }
    if let Some(obj) = content.as_object_mut() {
        for (k, v) in [
            ("output", json!(false)),
            ("raw", json!(true)),
            ("unique", json!(false)),
            ("n", json!(0)),
        ] {
            match obj.get(k) {
                None | Some(Value::Null) => {
                    obj.insert(k.to_string(), v);
                }
                Some(_) => {}
            }
        }
    }
}

/// Verifies (HMAC, constant time) and decodes one multipart message from a kernel socket.
pub fn decode(
    multipart: zeromq::ZmqMessage,
    mac: &Option<ring::hmac::Key>,
) -> Result<JupyterMessage, DecodeError> {
    let raw = jupyter_zmq_client::RawMessage::from_multipart(multipart, mac)?;
    let parse = |frame: &'static str, bytes: &[u8]| -> Result<Value, DecodeError> {
        serde_json::from_slice(bytes).map_err(|source| DecodeError::Json { frame, source })
    };
    let header_v = parse("header", &raw.jparts[0])?;
    let header: jupyter_protocol::Header =
        serde_json::from_value(header_v).map_err(|source| DecodeError::Json {
            frame: "header",
            source,
        })?;
    let mut content = parse("content", &raw.jparts[3])?;
    patch_optional_fields(&header.msg_type, &mut content);
    let content =
        JupyterMessageContent::from_type_and_content(&header.msg_type, content).map_err(|e| {
            DecodeError::Content {
                msg_type: header.msg_type.clone(),
                detail: e.to_string(),
            }
        })?;
    // An empty parent header is `{}`, which is not a Header: None, as the spec intends.
    let parent_header = serde_json::from_slice(&raw.jparts[1]).ok();
    let metadata = parse("metadata", &raw.jparts[2])?;
    Ok(JupyterMessage {
        zmq_identities: raw.zmq_identities,
        header,
        parent_header,
        metadata,
        content,
        buffers: raw.jparts.get(4..).map(<[_]>::to_vec).unwrap_or_default(),
        channel: None,
    })
}
