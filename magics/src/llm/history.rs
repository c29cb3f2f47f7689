//! The session's LLM requests (`%llm history`, `%llm summary`), kept on disk under `data/` as the
//! seed kept `data/session_data.json` — but appended per session instead of wiped, and written
//! as JSON Lines appended one request at a time.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One request as remembered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// End of the request (RFC 3339, UTC).
    pub timestamp: String,
    /// Kernel session.
    pub session: String,
    /// Provider key.
    pub provider: String,
    /// Model as requested.
    pub model: String,
    /// The prompt.
    pub prompt: String,
    /// The answer (possibly partial), or empty.
    pub answer: String,
    /// The error, if the request failed.
    pub error: Option<String>,
    /// Measured latency (s).
    pub latency_s: f64,
    /// Prompt tokens.
    pub prompt_tokens: Option<u64>,
    /// Output tokens.
    pub completion_tokens: Option<u64>,
    /// Seed method total (gCO₂eq).
    pub seed_g: f64,
    /// EcoLogits-class total, min (gCO₂eq).
    pub eco_g_min: f64,
    /// EcoLogits-class total, max (gCO₂eq).
    pub eco_g_max: f64,
    /// Seed energy (kWh).
    pub seed_kwh: f64,
    /// EcoLogits energy min (kWh).
    pub eco_kwh_min: f64,
    /// EcoLogits energy max (kWh).
    pub eco_kwh_max: f64,
    /// Measured on this machine (a local server's process tree metered for the request), total
    /// gCO₂eq; `None` when the request was not metered (absent from older lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_g: Option<f64>,
    /// Measured energy (kWh, PUE included); `None` when not metered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_kwh: Option<f64>,
}

impl HistoryEntry {
    /// Whether the request succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The history file and this session's entries.
#[derive(Debug)]
pub struct History {
    path: PathBuf,
    /// This session's entries, oldest first.
    pub entries: Vec<HistoryEntry>,
    /// Session id.
    pub session: String,
}

impl History {
    /// The history of a new session whose file is `workdir/data/llm_history.jsonl`.
    pub fn new(workdir: &Path, session: String) -> Self {
        History {
            path: workdir.join("data").join("llm_history.jsonl"),
            entries: Vec::new(),
            session,
        }
    }

    /// Where entries are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds entries and appends them to the file, one JSON object per line (JSON Lines): one
    /// `write` in append mode per request, so the cost does not grow with the history and
    /// several kernels sharing a folder do not overwrite each other.
    pub fn push(&mut self, new: Vec<HistoryEntry>) -> Result<(), std::io::Error> {
        self.entries.extend(new.iter().cloned());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = String::new();
        for e in &new {
            let line = serde_json::to_string(e).map_err(std::io::Error::other)?;
            // an answer may echo a key back: the file never holds one
            text.push_str(&crate::redact::redact(&line));
            text.push('\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        std::io::Write::write_all(&mut f, text.as_bytes())
    }

    /// Every entry in the file (all sessions); lines that are not entries are skipped.
    pub fn read_all(&self) -> Vec<HistoryEntry> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Empties the history: this session's entries and the file (every session's). Returns how
    /// many requests the file held. A missing file is an empty history.
    pub fn clear(&mut self) -> Result<usize, std::io::Error> {
        let n = self.read_all().len();
        self.entries.clear();
        match std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&self.path)
        {
            Ok(_) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(model: &str) -> HistoryEntry {
        HistoryEntry {
            timestamp: "2026-01-01T00:00:00Z".into(),
            session: "s".into(),
            provider: "openai".into(),
            model: model.into(),
            prompt: "p".into(),
            answer: "a".into(),
            error: None,
            latency_s: 1.0,
            prompt_tokens: Some(1),
            completion_tokens: Some(2),
            seed_g: 0.1,
            eco_g_min: 0.01,
            eco_g_max: 0.02,
            seed_kwh: 0.0,
            eco_kwh_min: 0.0,
            eco_kwh_max: 0.0,
            measured_g: None,
            measured_kwh: None,
        }
    }

    #[test]
    fn appends_json_lines_and_skips_foreign_lines() {
        let d = tempfile::tempdir().unwrap();
        let mut h = History::new(d.path(), "s".into());
        h.push(vec![entry("a")]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(h.path())
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"not json\n"))
            .unwrap();
        h.push(vec![entry("b"), entry("c")]).unwrap();
        let all = h.read_all();
        assert_eq!(
            all.iter().map(|e| e.model.as_str()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(h.entries.len(), 3);
        // a new session (kernel restart) reads the earlier ones
        let mut again = History::new(d.path(), "t".into());
        assert_eq!(again.read_all().len(), 3);
        assert!(again.entries.is_empty());
        assert_eq!(again.clear().unwrap(), 3);
        assert!(again.read_all().is_empty());
        assert_eq!(h.clear().unwrap(), 0);
        assert!(h.entries.is_empty());
        assert_eq!(h.clear().unwrap(), 0);
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(History::new(fresh.path(), "u".into()).clear().unwrap(), 0);
    }

    #[test]
    fn the_measured_figure_is_kept_and_older_lines_still_read() {
        let d = tempfile::tempdir().unwrap();
        let mut h = History::new(d.path(), "s".into());
        let mut m = entry("local");
        m.measured_g = Some(0.0123);
        m.measured_kwh = Some(4.5e-5);
        h.push(vec![entry("cloud"), m]).unwrap();
        let text = std::fs::read_to_string(h.path()).unwrap();
        // a request not metered writes no measured field, as before
        let first = text.lines().next().unwrap();
        assert!(!first.contains("measured"), "{first}");
        // a line of an older kernel (no measured fields) reads as not measured
        let old = first.replace("\"model\":\"cloud\"", "\"model\":\"old\"");
        std::fs::OpenOptions::new()
            .append(true)
            .open(h.path())
            .and_then(|mut f| std::io::Write::write_all(&mut f, format!("{old}\n").as_bytes()))
            .unwrap();
        let all = h.read_all();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].measured_g, Some(0.0123));
        assert_eq!(all[1].measured_kwh, Some(4.5e-5));
        assert_eq!((all[2].model.as_str(), all[2].measured_g), ("old", None));
    }
}
