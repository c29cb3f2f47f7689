//! Settings from `.env` (in the notebook's folder or a parent), then the process environment, then
//! values set in the session (`%carbon config KEY=VALUE`). Later sources win.
//!
//! Values are kept as strings; each module parses the keys it owns (`CARBON_*` in `carbon`,
//! provider keys and model lists in `llm`). API keys are secrets: [`Settings::redact`] removes them
//! from any text before it is shown, written or logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a value came from (shown by `%carbon status` / `%llm models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Built-in default.
    Default,
    /// A `.env` file.
    DotEnv,
    /// The process environment.
    Environment,
    /// Set in this session.
    Session,
}

/// Merged settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, (String, Source)>,
    /// The `.env` file that was read, if any.
    pub dotenv_path: Option<PathBuf>,
    /// Problems met while loading (unreadable `.env`, bad lines), to show the user.
    pub warnings: Vec<String>,
}

/// Keys whose values are secrets.
pub const SECRET_KEYS: [&str; 4] = [
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GROQ_API_KEY",
    "HUGGINGFACE_API_KEY",
];

impl Settings {
    /// Loads `.env` from `dir` or its nearest parent that has one, then the environment.
    pub fn load(dir: &Path) -> Settings {
        let mut s = Settings::default();
        let mut cur = Some(dir);
        while let Some(d) = cur {
            let candidate = d.join(".env");
            if candidate.is_file() {
                match dotenvy::from_path_iter(&candidate) {
                    Ok(iter) => {
                        for item in iter {
                            match item {
                                Ok((k, v)) => {
                                    s.values.insert(k, (v, Source::DotEnv));
                                }
                                Err(e) => {
                                    s.warnings.push(format!("{}: {}", candidate.display(), e))
                                }
                            }
                        }
                    }
                    Err(e) => s.warnings.push(format!("{}: {}", candidate.display(), e)),
                }
                s.dotenv_path = Some(candidate);
                break;
            }
            cur = d.parent();
        }
        for (k, v) in std::env::vars() {
            if is_ours(&k) {
                s.values.insert(k, (v, Source::Environment));
            }
        }
        s
    }

    /// An empty set (tests).
    pub fn empty() -> Settings {
        Settings::default()
    }

    /// The value of `key`, if set and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// Where `key` came from.
    pub fn source(&self, key: &str) -> Option<Source> {
        self.values.get(key).map(|(_, s)| *s)
    }

    /// Sets a value for this session.
    pub fn set(&mut self, key: &str, value: &str) {
        self.values
            .insert(key.to_string(), (value.to_string(), Source::Session));
    }

    /// Removes every secret value from `text` (replaced by `***`).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for k in SECRET_KEYS {
            if let Some(v) = self.get(k) {
                let v = v.trim();
                if v.len() >= 4 {
                    out = out.replace(v, "***");
                }
            }
        }
        out
    }
}

fn is_ours(key: &str) -> bool {
    key.starts_with("CARBON_")
        || key.starts_with("OPENAI_")
        || key.starts_with("GEMINI_")
        || key.starts_with("GROQ_")
        || key.starts_with("HUGGINGFACE_")
        || key.starts_with("OLLAMA_")
        || key.starts_with("LLM_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_in_parent_is_found_and_secrets_redacted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "OPENAI_API_KEY=sk-secret-123\nOPENAI_MODEL=gpt-4o,gpt-3.5-turbo\n",
        )
        .unwrap();
        let sub = dir.path().join("notebooks");
        std::fs::create_dir(&sub).unwrap();
        let s = Settings::load(&sub);
        assert_eq!(s.get("OPENAI_MODEL"), Some("gpt-4o,gpt-3.5-turbo"));
        assert_eq!(s.source("OPENAI_MODEL"), Some(Source::DotEnv));
        assert_eq!(
            s.redact("error with key sk-secret-123 here"),
            "error with key *** here"
        );
    }
}
