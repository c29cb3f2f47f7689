//! Jupyter messages as the kernel sends them and the connection file. No I/O: `server` owns the
//! sockets; `jupyter-zmq-client` signs and verifies (HMAC-SHA256).
//!
//! Incoming requests are parsed into the typed `jupyter-protocol` structs by
//! `jupyter-zmq-client` (which also verifies the signature). Outgoing content is built here as
//! JSON so every field has the type the spec gives it: the crate's `Default` values serialize
//! some optional fields as `null` (`user_expressions`, `transient`), which validators such as
//! jupyter-kernel-test reject (see `shared/reference/jupyter-kernel.md` §1.5).
//!
//! Spec: <https://jupyter-client.readthedocs.io/en/latest/messaging.html>.

use crate::runtime::{ExecError, Language, LanguageInfo, NextInput};
use carbon_magics::MimeBundle;
use jupyter_protocol::{JupyterMessage, JupyterMessageContent, UnknownMessage};
use serde_json::{Map, Value, json};
use thiserror::Error;

mod wire;
pub use wire::{DIGEST_HISTORY, DecodeError, DigestHistory, decode, signature_of};

pub use jupyter_protocol::{ConnectionInfo, Transport};

/// Messaging protocol version we implement (`kernel_info_reply.protocol_version`; also the header
/// version `jupyter-protocol` writes on every message).
pub const PROTOCOL_VERSION: &str = "5.3";

/// The only signature scheme we accept (spec: "signature_scheme: hmac-sha256" is the default
/// and the one every front-end uses; `jupyter-zmq-client` always verifies with SHA-256).
pub const SIGNATURE_SCHEME: &str = "hmac-sha256";

/// The kernel's implementation name in `kernel_info_reply`.
pub const IMPLEMENTATION: &str = "carbon-kernel";

/// What is wrong with a connection file.
#[derive(Debug, Error)]
pub enum ConnectionError {
    /// Not JSON, or a field is missing or of the wrong type.
    #[error("malformed connection file: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A signature scheme other than hmac-sha256.
    #[error(
        "unsupported signature_scheme '{0}' in connection file (carbon-kernel only supports {SIGNATURE_SCHEME})"
    )]
    Scheme(String),
    /// A port of 0 on tcp (the client must choose the ports).
    #[error("connection file has port 0 for {0} (a tcp port must be chosen by the client)")]
    ZeroPort(&'static str),
}

/// Parses and checks the text of a connection file (the key is never part of an error).
pub fn parse_connection(text: &str) -> Result<ConnectionInfo, ConnectionError> {
    let info: ConnectionInfo = serde_json::from_str(text).map_err(ConnectionError::Malformed)?;
    // An absent scheme with an empty key means "no signing" in jupyter_client; any other value
    // than ours would make every message fail verification, so refuse it up front.
    let ours = info.signature_scheme.eq_ignore_ascii_case(SIGNATURE_SCHEME);
    let unsigned = info.signature_scheme.is_empty() && info.key.is_empty();
    if !(ours || unsigned) {
        return Err(ConnectionError::Scheme(info.signature_scheme));
    }
    if info.transport == Transport::TCP {
        for (name, port) in [
            ("shell_port", info.shell_port),
            ("iopub_port", info.iopub_port),
            ("stdin_port", info.stdin_port),
            ("control_port", info.control_port),
            ("hb_port", info.hb_port),
        ] {
            if port == 0 {
                return Err(ConnectionError::ZeroPort(name));
            }
        }
    }
    Ok(info)
}

/// A message of type `msg_type` with JSON `content`, child of `parent` when given (routing
/// identities and parent header copied from it).
pub fn message(msg_type: &str, content: Value, parent: Option<&JupyterMessage>) -> JupyterMessage {
    let content = JupyterMessageContent::UnknownMessage(UnknownMessage {
        msg_type: msg_type.to_string(),
        content: match content {
            Value::Object(_) => content,
            _ => json!({}),
        },
    });
    let mut msg = JupyterMessage::new(content, parent);
    msg.header.username = IMPLEMENTATION.to_string();
    msg
}

/// The `data` object of a bundle. `text/plain` is always present (spec: "should always be
/// included").
pub fn bundle_data(b: &MimeBundle) -> Value {
    let mut data: Map<String, Value> = b.data.clone().into_iter().collect();
    if !data.contains_key("text/plain") {
        data.insert("text/plain".into(), Value::String(String::new()));
    }
    Value::Object(data)
}

fn bundle_metadata(b: &MimeBundle) -> Value {
    Value::Object(b.metadata.clone().into_iter().collect())
}

/// `display_data` content
/// (<https://jupyter-client.readthedocs.io/en/latest/messaging.html#display-data>).
pub fn display_data(b: &MimeBundle, display_id: Option<&str>) -> Value {
    let transient = match display_id {
        Some(id) => json!({ "display_id": id }),
        None => json!({}),
    };
    json!({ "data": bundle_data(b), "metadata": bundle_metadata(b), "transient": transient })
}

/// `update_display_data` content.
pub fn update_display_data(b: &MimeBundle, display_id: &str) -> Value {
    json!({
        "data": bundle_data(b),
        "metadata": bundle_metadata(b),
        "transient": { "display_id": display_id },
    })
}

/// `execute_result` content.
pub fn execute_result(count: u32, b: &MimeBundle) -> Value {
    json!({
        "execution_count": count,
        "data": bundle_data(b),
        "metadata": bundle_metadata(b),
    })
}

/// `error` content (iopub) and the error fields of a reply.
pub fn error_content(e: &ExecError) -> Value {
    json!({ "ename": e.ename, "evalue": e.evalue, "traceback": e.traceback })
}

/// `execute_reply` content. `user_expressions` is always an (empty) object.
pub fn execute_reply(
    count: u32,
    error: Option<&ExecError>,
    pager: Option<&MimeBundle>,
    next_input: Option<&NextInput>,
) -> Value {
    let mut c = json!({
        "status": "ok",
        "execution_count": count,
        "user_expressions": {},
        "payload": [],
    });
    if let Some(e) = error {
        c["status"] = json!("error");
        c["ename"] = json!(e.ename);
        c["evalue"] = json!(e.evalue);
        c["traceback"] = json!(e.traceback);
    }
    if let Some(p) = pager {
        // IPython's pager payload (the spec calls payloads deprecated, front-ends still show them).
        c["payload"] = json!([{ "source": "page", "data": bundle_data(p), "start": 0 }]);
    }
    if let Some(n) = next_input
        && let Some(payload) = c["payload"].as_array_mut()
    {
        // as ipykernel's ZMQInteractiveShell.set_next_input writes it
        payload.push(json!({ "source": "set_next_input", "text": n.text, "replace": n.replace }));
    }
    c
}

/// The reply to an execute request that was not run because an earlier cell failed and the
/// client asked for `stop_on_error`. The spec deprecates status "abort" since 5.1 and ipykernel's
/// "aborted" is not in jupyter-kernel-test's schema, so this is an error reply that says why.
pub fn aborted_execute_reply(count: u32) -> Value {
    execute_reply(
        count,
        Some(&ExecError {
            ename: "ExecutionAborted".into(),
            evalue: "not run: an earlier cell failed and stop_on_error was set".into(),
            traceback: vec![
                "ExecutionAborted: not run: an earlier cell failed and stop_on_error was set"
                    .into(),
            ],
            shown: false,
        }),
        None,
        None,
    )
}

/// The `language_info` object, with the usual values filled in where a runtime left one empty
/// (jupyter-kernel-test requires a file extension starting with `.`).
pub fn language_info(info: &LanguageInfo) -> Value {
    let d = match Language::parse(&info.name) {
        Some(lang) => LanguageInfo::of(lang, ""),
        None => LanguageInfo {
            name: String::new(),
            version: String::new(),
            mimetype: "text/plain".into(),
            file_extension: ".txt".into(),
            pygments_lexer: "text".into(),
            codemirror_mode: "text".into(),
            nbconvert_exporter: "script".into(),
        },
    };
    let pick = |v: &str, d: &str| {
        if v.is_empty() {
            d.to_string()
        } else {
            v.to_string()
        }
    };
    let codemirror = pick(&info.codemirror_mode, &d.codemirror_mode);
    // IPython's front-end mode is versioned ({name: ipython, version: 3}), as ipykernel sends it.
    let codemirror = if codemirror == "ipython" {
        json!({ "name": "ipython", "version": 3 })
    } else {
        json!(codemirror)
    };
    json!({
        "name": info.name,
        "version": info.version,
        "mimetype": pick(&info.mimetype, &d.mimetype),
        "file_extension": pick(&info.file_extension, &d.file_extension),
        "pygments_lexer": pick(&info.pygments_lexer, &d.pygments_lexer),
        "codemirror_mode": codemirror,
        "nbconvert_exporter": pick(&info.nbconvert_exporter, &d.nbconvert_exporter),
    })
}

/// `kernel_info_reply` content.
pub fn kernel_info_reply(info: &LanguageInfo) -> Value {
    let lang = if info.name.is_empty() {
        "python"
    } else {
        &info.name
    };
    json!({
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": IMPLEMENTATION,
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": language_info(info),
        "banner": format!(
            "carbon-kernel {} — {lang} by default; {cells} per cell; \
             %%carbon meters a cell's energy and CO₂, %llm asks a language model (%lsmagic)",
            env!("CARGO_PKG_VERSION"),
            cells = Language::ALL.map(|l| format!("%%{}", l.name())).join(", "),
        ),
        "help_links": help_links(lang),
        "debugger": false,
    })
}

fn help_links(lang: &str) -> Value {
    let mut links = vec![json!({
        "text": "Jupyter messaging",
        "url": "https://jupyter-client.readthedocs.io/en/latest/messaging.html",
    })];
    let help = Language::parse(lang).unwrap_or(Language::Python).row().help;
    links.push(json!({ "text": help.text, "url": help.url }));
    links.push(json!({
        "text": "CodeCarbon methodology",
        "url": "https://mlco2.github.io/codecarbon/methodology.html",
    }));
    Value::Array(links)
}

/// A reply with `status: error` for requests we do not implement (so a waiting client is not
/// left hanging); `msg_type` is the request's type.
pub fn unsupported_reply(msg_type: &str) -> (String, Value) {
    let reply_type = match msg_type.strip_suffix("_request") {
        Some(base) => format!("{base}_reply"),
        None => format!("{msg_type}_reply"),
    };
    let content = json!({
        "status": "error",
        "ename": "UnsupportedMessage",
        "evalue": format!("carbon-kernel does not handle {msg_type}"),
        "traceback": [],
    });
    (reply_type, content)
}

/// Converts a cursor position in Unicode code points (protocol ≥ 5.2) to a byte offset in
/// `code` (clamped to the end).
pub fn cursor_to_byte(code: &str, cursor: usize) -> usize {
    code.char_indices()
        .nth(cursor)
        .map(|(i, _)| i)
        .unwrap_or(code.len())
}

/// Converts a byte offset in `code` to a position in Unicode code points.
pub fn byte_to_cursor(code: &str, byte: usize) -> usize {
    let byte = byte.min(code.len());
    code.char_indices().take_while(|(i, _)| *i < byte).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(scheme: &str, key: &str) -> String {
        json!({
            "ip": "127.0.0.1", "transport": "tcp", "shell_port": 1, "iopub_port": 2,
            "stdin_port": 3, "control_port": 4, "hb_port": 5, "key": key,
            "signature_scheme": scheme,
        })
        .to_string()
    }

    #[test]
    fn connection_file_checks() {
        assert!(parse_connection(&conn("hmac-sha256", "k")).is_ok());
        let e = parse_connection(&conn("hmac-md5", "secret-key")).unwrap_err();
        assert!(matches!(e, ConnectionError::Scheme(_)));
        assert!(!e.to_string().contains("secret-key"));
        assert!(matches!(
            parse_connection("{not json"),
            Err(ConnectionError::Malformed(_))
        ));
        assert!(matches!(
            parse_connection(r#"{"ip": "127.0.0.1"}"#),
            Err(ConnectionError::Malformed(_))
        ));
        let zero = conn("hmac-sha256", "k").replace("\"hb_port\":5", "\"hb_port\":0");
        assert!(matches!(
            parse_connection(&zero),
            Err(ConnectionError::ZeroPort("hb_port"))
        ));
    }

    #[test]
    fn no_nulls_in_replies() {
        let r = execute_reply(3, None, None, None);
        assert_eq!(r["user_expressions"], json!({}));
        let d = display_data(&MimeBundle::plain("x"), None);
        assert_eq!(d["transient"], json!({}));
        let e = execute_result(1, &MimeBundle::new().with("text/html", "<b>"));
        assert_eq!(e["data"]["text/plain"], json!(""));
        let a = aborted_execute_reply(2);
        assert_eq!(a["status"], "error");
        assert_eq!(a["ename"], "ExecutionAborted");
    }

    #[test]
    fn cursor_conversions_round_trip() {
        let code = "é = 'ü'; é";
        for c in 0..=code.chars().count() {
            assert_eq!(byte_to_cursor(code, cursor_to_byte(code, c)), c);
        }
        assert_eq!(cursor_to_byte(code, 1), 2);
        assert_eq!(cursor_to_byte(code, 999), code.len());
    }

    #[test]
    fn message_has_type_and_parent() {
        let parent = message("execute_request", json!({"code": "1"}), None);
        let m = message(
            "stream",
            json!({"name": "stdout", "text": "a"}),
            Some(&parent),
        );
        assert_eq!(m.header.msg_type, "stream");
        assert_eq!(
            m.parent_header.as_ref().map(|h| h.msg_id.as_str()),
            Some(parent.header.msg_id.as_str())
        );
        let v = serde_json::to_value(&m.content).unwrap();
        assert_eq!(v, json!({"name": "stdout", "text": "a"}));
    }

    #[test]
    fn kernel_info_fields() {
        let info = LanguageInfo {
            name: "python".into(),
            version: "3.11".into(),
            mimetype: String::new(),
            file_extension: String::new(),
            pygments_lexer: String::new(),
            codemirror_mode: String::new(),
            nbconvert_exporter: String::new(),
        };
        let r = kernel_info_reply(&info);
        assert_eq!(r["implementation"], IMPLEMENTATION);
        assert_eq!(r["language_info"]["file_extension"], ".py");
        assert_eq!(r["language_info"]["codemirror_mode"]["name"], "ipython");
        assert_eq!(r["protocol_version"], PROTOCOL_VERSION);
    }
}
