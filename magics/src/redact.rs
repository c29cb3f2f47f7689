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

    /// Where the part of `text` that may be the start of a secret begins: the longest tail of
    /// `text` (at most the longest secret's length - 1 bytes) that is a proper prefix of some
    /// secret; `text.len()` when there is none. A secret occurring whole in `text` is never
    /// split by the cut (the cut moves past it), so `text[..cut]` can be masked on its own.
    ///
    /// A stream sent in pieces ([`Carry`]) and a display refreshed as its text grows both show
    /// only `text[..cut]`, so a key split across two writes is never shown half then half.
    pub fn hold_from(&self, text: &str) -> usize {
        let Some(longest) = self.secrets.first().map(String::len) else {
            return text.len();
        };
        let mut cut = self.prefix_tail(text, text.len().saturating_sub(longest - 1));
        loop {
            // a whole secret crossing the cut (secrets that overlap one another) goes out whole
            let from = floor_char_boundary(text, cut.saturating_sub(longest - 1));
            let past = self
                .secrets
                .iter()
                .flat_map(|s| {
                    text[from..]
                        .match_indices(s.as_str())
                        .map(move |(i, m)| (from + i, from + i + m.len()))
                })
                .filter(|&(start, end)| start < cut && end > cut)
                .map(|(_, end)| end)
                .max();
            match past {
                Some(end) => cut = self.prefix_tail(text, end),
                None => return cut,
            }
        }
    }

    /// The first char boundary `i >= from` where `text[i..]` is non-empty and a proper prefix of
    /// a secret; `text.len()` when none.
    fn prefix_tail(&self, text: &str, from: usize) -> usize {
        (from..text.len())
            .filter(|&i| text.is_char_boundary(i))
            .find(|&i| {
                let tail = &text.as_bytes()[i..];
                self.secrets
                    .iter()
                    .any(|s| s.len() > tail.len() && s.as_bytes().starts_with(tail))
            })
            .unwrap_or(text.len())
    }

    /// Makes this the process-wide redactor the output edges use.
    pub fn install(self) {
        *global_slot().write().unwrap_or_else(|e| e.into_inner()) = Arc::new(self);
    }
}

/// The largest char boundary of `text` at or below `i`.
fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One output stream's redaction across its pieces. Each piece is masked with the text held
/// from the piece before, and the tail that may be the start of a secret
/// ([`Redactor::hold_from`]) is held back for the next one: a key printed in two writes is
/// masked as if printed in one. The holder flushes what is held when the stream ends or has
/// been quiet for a while (the held bytes are then only a part of a secret, which is shown).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Carry {
    held: String,
}

impl Carry {
    /// `text`, after what was held, masked up to the tail that may start a secret (kept).
    pub fn push<'t>(&mut self, r: &Redactor, text: &'t str) -> Cow<'t, str> {
        if self.held.is_empty() {
            // the common case (nothing held): no copy unless something is masked or held
            let cut = r.hold_from(text);
            self.held = text[cut..].to_string();
            return r.redact(&text[..cut]);
        }
        let mut all = std::mem::take(&mut self.held);
        all.push_str(text);
        let cut = r.hold_from(&all);
        self.held = all[cut..].to_string();
        all.truncate(cut);
        match r.redact(&all) {
            Cow::Borrowed(_) => Cow::Owned(all),
            Cow::Owned(s) => Cow::Owned(s),
        }
    }

    /// What is held, masked (nothing is held after).
    pub fn flush(&mut self, r: &Redactor) -> String {
        let t = std::mem::take(&mut self.held);
        r.redact(&t).into_owned()
    }

    /// Bytes held back.
    pub fn held(&self) -> usize {
        self.held.len()
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
    fn a_stream_holds_only_a_tail_that_may_start_a_secret() {
        let key = "sk-SPLIT-0123456789";
        let r = Redactor::new([key.to_string(), "other-secret".to_string()]);
        // no tail of these is the start of a secret: nothing held
        assert_eq!(r.hold_from("plain text\n"), 11);
        assert_eq!(r.hold_from(""), 0);
        // the longest tail that starts a secret
        assert_eq!(r.hold_from("x = sk-SP"), 4);
        assert_eq!(r.hold_from("x = s"), 4);
        assert_eq!(r.hold_from("x = oth"), 4);
        // a whole secret at the end is not held (it is masked now)
        assert_eq!(r.hold_from(key), key.len());
        // never more than the longest secret's length - 1 bytes
        let long_tail = format!("{}{}", "a".repeat(100), &key[..key.len() - 1]);
        assert_eq!(r.hold_from(&long_tail), 100);
        // multi-byte text before a tail
        assert_eq!(r.hold_from("é€sk-"), "é€".len());
        // an empty redactor holds nothing
        assert_eq!(Redactor::default().hold_from("sk-SP"), 5);
    }

    #[test]
    fn a_key_split_across_pieces_is_masked_whole() {
        let key = "sk-SPLIT-0123456789";
        let r = Redactor::new([key.to_string()]);
        for split in 1..key.len() {
            let mut c = Carry::default();
            let mut shown = c.push(&r, &format!("key: {}", &key[..split])).into_owned();
            assert_eq!(shown, "key: ", "split at {split}");
            assert_eq!(c.held(), split);
            shown.push_str(&c.push(&r, &format!("{} end\n", &key[split..])));
            shown.push_str(&c.flush(&r));
            assert_eq!(shown, "key: *** end\n", "split at {split}");
        }
        // byte by byte
        let mut c = Carry::default();
        let text = format!("a {key} b {key}");
        let mut shown: String = text
            .chars()
            .map(|ch| c.push(&r, &ch.to_string()).into_owned())
            .collect();
        shown.push_str(&c.flush(&r));
        assert_eq!(shown, "a *** b ***");
        // a tail that turned out not to be a secret is shown unchanged
        let mut c = Carry::default();
        let mut shown = c.push(&r, "see sk-").into_owned();
        shown.push_str(&c.push(&r, "learn"));
        shown.push_str(&c.flush(&r));
        assert_eq!(shown, "see sk-learn");
        // flushed early (the stream went quiet), only a part of the key was held
        let mut c = Carry::default();
        assert_eq!(c.push(&r, "sk-SP"), "");
        assert_eq!(c.flush(&r), "sk-SP");
        assert_eq!(c.held(), 0);
    }

    #[test]
    fn overlapping_secrets_are_never_shown_whole() {
        // "abcdef" ends with the start of "defxyz": the whole one crossing the cut goes out
        let r = Redactor::new(["abcdef".to_string(), "defxyz".to_string()]);
        let text = "1 abcdefxyz 2";
        for split in 0..=text.len() {
            let mut c = Carry::default();
            let mut shown = c.push(&r, &text[..split]).into_owned();
            shown.push_str(&c.push(&r, &text[split..]));
            shown.push_str(&c.flush(&r));
            assert!(
                !shown.contains("abcdef") && !shown.contains("defxyz"),
                "split at {split}: {shown}"
            );
        }
    }

    #[test]
    fn the_global_redactor_is_what_was_installed_last() {
        Redactor::new(["glob-secret-1".to_string()]).install();
        assert_eq!(redact("a glob-secret-1 b"), "a *** b");
        assert!(!global().is_empty());
    }
}
