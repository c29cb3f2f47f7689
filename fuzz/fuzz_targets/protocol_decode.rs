//! Message decoding with valid signatures: the frames come from the input (split at 0xFF 0x00),
//! are signed with the session key as a front-end would sign them, then verified and decoded.
//! Anything may fail to decode; nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

// The kernel's own decoding code, compiled here (see fuzz/Cargo.toml for why not as a crate).
#[path = "../../kernel/src/protocol/wire.rs"]
#[allow(dead_code)]
mod wire;
use std::sync::OnceLock;

fn key() -> &'static ring::hmac::Key {
    static K: OnceLock<ring::hmac::Key> = OnceLock::new();
    K.get_or_init(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"fuzz-session-key"))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fuzz_target!(|input: &[u8]| {
    let mut parts: Vec<&[u8]> = input.split(|b| *b == 0xFF).collect();
    // identities before the delimiter: at most two, as a ROUTER gives them
    let ids = parts
        .first()
        .map_or(0, |p| p.first().map_or(0, |b| usize::from(b % 3)));
    if let Some(p) = parts.first_mut()
        && !p.is_empty()
    {
        *p = &p[1..];
    }
    let ids = ids.min(parts.len());
    let (id_frames, json) = parts.split_at(ids);
    let mut ctx = ring::hmac::Context::with_key(key());
    for p in json.iter().take(4) {
        ctx.update(p);
    }
    let sig = hex(ctx.sign().as_ref());
    let mut frames: Vec<bytes::Bytes> = id_frames
        .iter()
        .map(|f| bytes::Bytes::copy_from_slice(f))
        .collect();
    frames.push(bytes::Bytes::from_static(b"<IDS|MSG>"));
    frames.push(bytes::Bytes::from(sig));
    frames.extend(json.iter().map(|f| bytes::Bytes::copy_from_slice(f)));
    let Ok(msg) = zeromq::ZmqMessage::try_from(frames) else {
        return;
    };
    let _ = wire::decode(msg, &Some(key().clone()));
});
