//! The one redaction layer: every secret value the kernel knows — API keys, tokens, passwords,
//! the password in a base URL's user-info — replaced by `***` in every text that leaves the
//! kernel (outputs and replies, `emissions.csv` rows, history lines, log lines), even when a
//! server echoes a key back inside an answer.
//!
//! The secrets come from the [`Settings`]; the kernel keeps the process-wide [`global`] redactor
//! current ([`Redactor::install`]) each time its settings may have changed, and the output edges
//! read it.

use crate::config::{SECRET_KEYS, Settings};
use serde_json::Value;
use std::borrow::Cow;
use std::sync::{Arc, OnceLock, RwLock};

/// Shorter values are not redacted: they would blank ordinary words (a key is far longer).
const MIN_SECRET_LEN: usize = 4;

/// What replaces a secret.
pub const MASK: &str = "***";

/// Secret values, longest first (a key containing another is masked whole).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// True for a setting whose value is a secret: the provider keys, and any `*_API_KEY`,
/// `*_TOKEN`, `*_PASSWORD`, `*_SECRET`.
pub fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.contains(&key)
        || ["_API_KEY", "_TOKEN", "_PASSWORD", "_SECRET"]
            .iter()
            .any(|s| key.ends_with(s))
}

impl Redactor {
    /// The secrets of `s`: secret settings, and the user-info password of every URL setting.
    pub fn from_settings(s: &Settings) -> Redactor {
        let mut secrets = Vec::new();
        for (k, v) in s.iter() {
            let v = v.trim();
            if is_secret_key(k) {
                secrets.push(v.to_string());
            }
            if let Ok(u) = reqwest::Url::parse(v)
                && let Some(p) = u.password()
            {
                // as written in the URL (percent-encoded) and as sent
                secrets.push(p.to_string());
                if let Ok(d) = percent_decode(p) {
                    secrets.push(d);
                }
            }
        }
        Redactor::new(secrets)
    }

    /// A redactor of `secrets` (too short ones are dropped).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .collect();
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Redactor { secrets }
    }

    /// `text` with every secret masked (borrowed when there was none).
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), MASK));
            }
        }
        out
    }

    /// Masks every string inside `v` (keys of objects included).
    pub fn redact_json(&self, v: &mut Value) {
        if self.secrets.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.redact_json(x)),
            Value::Object(o) => {
                let old = std::mem::take(o);
                for (k, mut x) in old {
                    self.redact_json(&mut x);
                    o.insert(self.redact(&k).into_owned(), x);
                }
            }
            _ => {}
        }
    }

    /// True when there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Makes this the process-wide redactor the output edges use.
    pub fn install(self) {
        *global_slot().write().unwrap_or_else(|e| e.into_inner()) = Arc::new(self);
    }
}

fn global_slot() -> &'static RwLock<Arc<Redactor>> {
    static G: OnceLock<RwLock<Arc<Redactor>>> = OnceLock::new();
    G.get_or_init(RwLock::default)
}

/// The process-wide redactor (empty until the kernel installs one).
pub fn global() -> Arc<Redactor> {
    global_slot()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// `text` with every secret the kernel knows masked.
pub fn redact(text: &str) -> Cow<'_, str> {
    // the guard of the global lock must not outlive this call: clone the Arc
    let r = global();
    match r.redact(text) {
        Cow::Borrowed(_) => Cow::Borrowed(text),
        Cow::Owned(s) => Cow::Owned(s),
    }
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_tokens_and_url_passwords_are_masked_everywhere() {
        let mut s = Settings::empty();
        s.set("OPENAI_API_KEY", "sk-abc-123456");
        s.set("CARBON_METRICS_TOKEN", "tok-998877");
        s.set(
            "LLM_LOCAL_BASE_URL",
            "http://bob:p%40ss-w0rd@10.0.0.1:8000/v1",
        );
        s.set("OPENAI_MODEL", "gpt-4o");
        s.set("GROQ_API_KEY", "ab"); // too short to mask
        let r = Redactor::from_settings(&s);
        let t =
            "key sk-abc-123456, token tok-998877, url pw p%40ss-w0rd or p@ss-w0rd, model gpt-4o ab";
        assert_eq!(
            r.redact(t),
            "key ***, token ***, url pw *** or ***, model gpt-4o ab"
        );
        assert!(matches!(r.redact("nothing here"), Cow::Borrowed(_)));
        let mut v =
            json!({"data": {"text/plain": ["x sk-abc-123456"], "sk-abc-123456": 1}, "n": 3});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            json!({"data": {"text/plain": ["x ***"], "***": 1}, "n": 3})
        );
        // a key that contains another is masked whole
        let r = Redactor::new(["abcd".to_string(), "abcdefgh".to_string()]);
        assert_eq!(r.redact("abcdefgh abcd"), "*** ***");
    }

    #[test]
    fn the_global_redactor_is_what_was_installed_last() {
        Redactor::new(["glob-secret-1".to_string()]).install();
        assert_eq!(redact("a glob-secret-1 b"), "a *** b");
        assert!(!global().is_empty());
    }
}
