//! Which providers exist, their variables (the seed's names), model lists and base URLs.

use crate::config::Settings;
use std::fmt;

/// A provider the `%llm` magics can talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    /// OpenAI chat completions.
    OpenAi,
    /// Google Gemini generateContent.
    Gemini,
    /// Groq (OpenAI-compatible, timing fields in `usage`).
    Groq,
    /// Hugging Face Inference Providers router (OpenAI-compatible, `model:provider`).
    HuggingFace,
    /// Ollama's OpenAI-compatible endpoint.
    Ollama,
    /// Any other OpenAI-compatible server (vLLM, llama.cpp, LM Studio) by base URL.
    Local,
}

/// Wire format of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `POST {base}/chat/completions`.
    OpenAiChat,
    /// `POST {base}/models/{model}:generateContent`.
    Gemini,
}

/// Everything the kernel knows about one provider, in one place: adding a provider is one
/// variant and one row (plus a wire module if it speaks neither of the two [`Wire`] formats);
/// `.env` variables, `%llm models`, parsing of `provider:model`, requests and reports read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderRow {
    /// The provider.
    pub kind: ProviderKind,
    /// The key used in `PROVIDER:MODEL` (the seed's provider keys, plus `ollama` and `local`).
    pub key: &'static str,
    /// Other accepted spellings of the key.
    pub aliases: &'static [&'static str],
    /// Prefix of its variables (`OPENAI` → `OPENAI_API_KEY`, `OPENAI_MODEL`, `OPENAI_BASE_URL`).
    pub var_prefix: &'static str,
    /// Display name.
    pub label: &'static str,
    /// Default base URL (llm-footprint.md §3).
    pub default_base_url: &'static str,
    /// Whether a request needs a key (local servers ignore it).
    pub needs_key: bool,
    /// The wire format.
    pub wire: Wire,
    /// The JSON field capping the answer's length in OpenAI-style requests: OpenAI deprecated
    /// `max_tokens` (reasoning models reject it) and Groq accepts the new name; other
    /// OpenAI-compatible servers know only `max_tokens`.
    pub max_tokens_field: &'static str,
}

/// One row per provider, in display and default-selection order, and in the order of
/// [`ProviderKind`]'s variants (checked at compile time below).
pub const PROVIDERS: [ProviderRow; 6] = [
    ProviderRow {
        kind: ProviderKind::OpenAi,
        key: "openai",
        aliases: &[],
        var_prefix: "OPENAI",
        label: "OpenAI",
        default_base_url: "https://api.openai.com/v1",
        needs_key: true,
        wire: Wire::OpenAiChat,
        max_tokens_field: "max_completion_tokens",
    },
    ProviderRow {
        kind: ProviderKind::Gemini,
        key: "gemini",
        aliases: &[],
        var_prefix: "GEMINI",
        label: "Gemini",
        default_base_url: "https://generativelanguage.googleapis.com/v1beta",
        needs_key: true,
        wire: Wire::Gemini,
        max_tokens_field: "max_tokens",
    },
    ProviderRow {
        kind: ProviderKind::Groq,
        key: "groq",
        aliases: &[],
        var_prefix: "GROQ",
        label: "Groq",
        default_base_url: "https://api.groq.com/openai/v1",
        needs_key: true,
        wire: Wire::OpenAiChat,
        max_tokens_field: "max_completion_tokens",
    },
    ProviderRow {
        kind: ProviderKind::HuggingFace,
        key: "hf",
        aliases: &["huggingface"],
        var_prefix: "HUGGINGFACE",
        label: "Hugging Face",
        default_base_url: "https://router.huggingface.co/v1",
        needs_key: true,
        wire: Wire::OpenAiChat,
        max_tokens_field: "max_tokens",
    },
    ProviderRow {
        kind: ProviderKind::Ollama,
        key: "ollama",
        aliases: &[],
        var_prefix: "OLLAMA",
        label: "Ollama",
        default_base_url: "http://localhost:11434/v1",
        needs_key: false,
        wire: Wire::OpenAiChat,
        max_tokens_field: "max_tokens",
    },
    ProviderRow {
        kind: ProviderKind::Local,
        key: "local",
        aliases: &[],
        var_prefix: "LLM_LOCAL",
        label: "OpenAI-compatible server",
        default_base_url: "http://localhost:8000/v1",
        needs_key: false,
        wire: Wire::OpenAiChat,
        max_tokens_field: "max_tokens",
    },
];

// Row i describes variant i, so `row()` can index the table.
const _: () = {
    let mut i = 0;
    while i < PROVIDERS.len() {
        assert!(
            PROVIDERS[i].kind as usize == i,
            "PROVIDERS is out of ProviderKind's order"
        );
        i += 1;
    }
};

impl ProviderKind {
    /// Every provider, in display and default-selection order (the table's order).
    pub const ALL: [ProviderKind; PROVIDERS.len()] = {
        let mut all = [ProviderKind::OpenAi; PROVIDERS.len()];
        let mut i = 0;
        while i < PROVIDERS.len() {
            all[i] = PROVIDERS[i].kind;
            i += 1;
        }
        all
    };

    /// This provider's row of [`PROVIDERS`].
    pub fn row(self) -> &'static ProviderRow {
        &PROVIDERS[self as usize]
    }

    /// The key used in `PROVIDER:MODEL`.
    pub fn key(self) -> &'static str {
        self.row().key
    }

    /// Parses a provider key or one of its aliases (case-insensitive).
    pub fn parse(s: &str) -> Option<ProviderKind> {
        let s = s.to_ascii_lowercase();
        PROVIDERS
            .iter()
            .find(|r| r.key == s || r.aliases.contains(&s.as_str()))
            .map(|r| r.kind)
    }

    /// The accepted keys, for error messages.
    pub fn accepted() -> String {
        Self::ALL.map(|p| p.key()).join(", ")
    }

    /// Prefix of this provider's variables (`OPENAI` → `OPENAI_API_KEY`, `OPENAI_MODEL`, …).
    pub fn var_prefix(self) -> &'static str {
        self.row().var_prefix
    }

    /// Variable holding the API key (the seed's names).
    pub fn key_var(self) -> String {
        format!("{}_API_KEY", self.var_prefix())
    }

    /// Variable holding the comma-separated model list.
    pub fn model_var(self) -> String {
        format!("{}_MODEL", self.var_prefix())
    }

    /// Variable overriding the base URL.
    pub fn base_url_var(self) -> String {
        format!("{}_BASE_URL", self.var_prefix())
    }

    /// Default base URL.
    pub fn default_base_url(self) -> &'static str {
        self.row().default_base_url
    }

    /// Whether a request needs a key (local servers ignore it).
    pub fn needs_key(self) -> bool {
        self.row().needs_key
    }

    /// The wire format.
    pub fn wire(self) -> Wire {
        self.row().wire
    }

    /// Display name.
    pub fn label(self) -> &'static str {
        self.row().label
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// `provider:model`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Provider.
    pub provider: ProviderKind,
    /// Model id as sent (HF `:provider` suffixes and Ollama tags kept).
    pub model: String,
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider.key(), self.model)
    }
}

/// The configuration of one provider, read from Settings.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Which provider.
    pub kind: ProviderKind,
    /// The key (never shown).
    pub api_key: Option<String>,
    /// Models, first = default. Entries trimmed, empty ones dropped (seed weakness W17).
    pub models: Vec<String>,
    /// Base URL without trailing `/`.
    pub base_url: String,
    /// True when the base URL came from `*_BASE_URL`.
    pub base_url_overridden: bool,
}

impl ProviderConfig {
    /// Whether requests can be sent (key present, or not needed).
    pub fn usable(&self) -> bool {
        self.api_key.is_some() || !self.kind.needs_key()
    }

    /// Whether this provider is configured at all (key or models or base URL set).
    pub fn configured(&self) -> bool {
        self.api_key.is_some() || !self.models.is_empty() || self.base_url_overridden
    }
}

/// All providers' configurations.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// One per provider, in [`ProviderKind::ALL`] order.
    pub providers: Vec<ProviderConfig>,
    /// `LLM_DEFAULT` (`provider:model`), if set.
    pub default: Option<String>,
}

/// Settings key choosing the default model (`provider:model`).
pub const DEFAULT_KEY: &str = "LLM_DEFAULT";

impl LlmConfig {
    /// Reads every provider's variables.
    pub fn from_settings(s: &Settings) -> LlmConfig {
        let providers = ProviderKind::ALL
            .into_iter()
            .map(|kind| {
                let models = s
                    .get(&kind.model_var())
                    .map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                let (base_url, overridden) = match s.get(&kind.base_url_var()) {
                    Some(u) => (u.trim().trim_end_matches('/').to_string(), true),
                    None => (kind.default_base_url().to_string(), false),
                };
                ProviderConfig {
                    kind,
                    api_key: s.get(&kind.key_var()).map(|k| k.trim().to_string()),
                    models,
                    base_url,
                    base_url_overridden: overridden,
                }
            })
            .collect();
        LlmConfig {
            providers,
            default: s.get(DEFAULT_KEY).map(String::from),
        }
    }

    /// The configuration of `kind`.
    pub fn get(&self, kind: ProviderKind) -> &ProviderConfig {
        self.providers
            .iter()
            .find(|p| p.kind == kind)
            .expect("every provider has a config")
    }

    /// Parses `provider:model` (or `provider` alone = its first model) and checks it against the
    /// configured lists. Errors are one line naming the accepted values.
    pub fn resolve(&self, spec: &str) -> Result<ModelSpec, String> {
        let (p, m) = match spec.split_once(':') {
            Some((p, m)) => (p, m.trim()),
            None => (spec, ""),
        };
        let kind = parse_provider(p)?;
        let cfg = self.get(kind);
        if m.is_empty() {
            return match cfg.models.first() {
                Some(first) => Ok(ModelSpec {
                    provider: kind,
                    model: first.clone(),
                }),
                None => Err(format!(
                    "no model given for {} and {} is empty (e.g. {}:MODEL, or set {})",
                    kind.key(),
                    kind.model_var(),
                    kind.key(),
                    kind.model_var()
                )),
            };
        }
        // A model outside the list is sent as named (with a note, [`LlmConfig::list_note`]):
        // trying one more model must not need a `.env` edit and a kernel restart.
        Ok(ModelSpec {
            provider: kind,
            model: m.to_string(),
        })
    }

    /// The note shown when `spec` is not in its provider's `<P>_MODEL` list (it is still sent):
    /// says so and lists the configured models. `None` when it is listed or there is no list.
    pub fn list_note(&self, spec: &ModelSpec) -> Option<String> {
        let cfg = self.get(spec.provider);
        if cfg.models.is_empty() || cfg.models.contains(&spec.model) {
            return None;
        }
        Some(format!(
            "note: {spec} is not in {} ({}); it is sent as named (add it there to include it in --all)",
            spec.provider.model_var(),
            cfg.models.join(", ")
        ))
    }

    /// Parses `provider:model` without checking the configured lists (offline estimates).
    pub fn resolve_any(&self, spec: &str) -> Result<ModelSpec, String> {
        match spec.split_once(':') {
            Some((p, m)) if !m.trim().is_empty() => {
                let kind = parse_provider(p)?;
                Ok(ModelSpec {
                    provider: kind,
                    model: m.trim().to_string(),
                })
            }
            _ => self.resolve(spec),
        }
    }

    /// The default model: `LLM_DEFAULT`, else the first model of the first provider that can be
    /// used (key present or local) and has a model list.
    pub fn default_model(&self) -> Result<ModelSpec, String> {
        if let Some(d) = &self.default {
            return self.resolve(d).map_err(|e| format!("{DEFAULT_KEY}: {e}"));
        }
        self.providers
            .iter()
            .find(|p| p.usable() && !p.models.is_empty() && (p.kind.needs_key() || p.base_url_overridden))
            .map(|p| ModelSpec {
                provider: p.kind,
                model: p.models[0].clone(),
            })
            .ok_or_else(|| {
                "no default model: set a key and a model list (e.g. OPENAI_API_KEY and OPENAI_MODEL) in .env, or name one: %llm PROVIDER:MODEL PROMPT (providers: ".to_string()
                    + &ProviderKind::accepted()
                    + ")"
            })
    }

    /// Every configured model of every usable provider (`--all`).
    pub fn all_models(&self) -> Vec<ModelSpec> {
        self.providers
            .iter()
            .filter(|p| p.usable() && (p.kind.needs_key() || p.base_url_overridden))
            .flat_map(|p| {
                p.models.iter().map(move |m| ModelSpec {
                    provider: p.kind,
                    model: m.clone(),
                })
            })
            .collect()
    }

    /// Every secret value (keys), for redaction beyond [`Settings::redact`].
    pub fn secrets(&self) -> Vec<String> {
        self.providers
            .iter()
            .filter_map(|p| p.api_key.clone())
            .filter(|k| k.len() >= 4)
            .collect()
    }

    /// Removes every key from `text`.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for k in self.secrets() {
            out = out.replace(&k, "***");
        }
        out
    }
}

/// A provider name, or a one-line error naming the accepted ones.
fn parse_provider(p: &str) -> Result<ProviderKind, String> {
    ProviderKind::parse(p.trim()).ok_or_else(|| {
        format!(
            "unknown provider '{}' (accepted: {})",
            p.trim(),
            ProviderKind::accepted()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> LlmConfig {
        let mut s = Settings::empty();
        for (k, v) in pairs {
            s.set(k, v);
        }
        LlmConfig::from_settings(&s)
    }

    #[test]
    fn model_lists_are_trimmed_and_first_is_default() {
        let c = cfg(&[
            ("GROQ_API_KEY", "gsk_x"),
            (
                "GROQ_MODEL",
                " llama-3.3-70b-versatile , llama-3.1-8b-instant,,",
            ),
        ]);
        assert_eq!(c.get(ProviderKind::Groq).models.len(), 2);
        assert_eq!(
            c.default_model().unwrap().to_string(),
            "groq:llama-3.3-70b-versatile"
        );
        assert_eq!(c.resolve("groq").unwrap().model, "llama-3.3-70b-versatile");
    }

    #[test]
    fn hf_suffix_is_part_of_the_model() {
        let c = cfg(&[("HUGGINGFACE_MODEL", "deepseek-ai/DeepSeek-V3.1:novita")]);
        let m = c.resolve("hf:deepseek-ai/DeepSeek-V3.1:novita").unwrap();
        assert_eq!(m.provider, ProviderKind::HuggingFace);
        assert_eq!(m.model, "deepseek-ai/DeepSeek-V3.1:novita");
    }

    #[test]
    fn errors_name_accepted_values() {
        let c = cfg(&[("OPENAI_MODEL", "gpt-4o-mini,gpt-4o")]);
        let e = c.resolve("foo:bar").unwrap_err();
        assert!(e.contains("openai, gemini, groq, hf, ollama, local"), "{e}");
        // a model outside the list is allowed, with a note naming the list
        let m = c.resolve("openai:gpt-9").unwrap();
        assert_eq!(m.model, "gpt-9");
        let note = c.list_note(&m).unwrap_or_default();
        assert!(
            note.contains("not in OPENAI_MODEL") && note.contains("gpt-4o-mini, gpt-4o"),
            "{note}"
        );
        assert_eq!(c.list_note(&c.resolve("openai:gpt-4o").unwrap()), None);
        assert_eq!(cfg(&[]).list_note(&m), None);
        assert!(
            cfg(&[])
                .default_model()
                .unwrap_err()
                .contains("OPENAI_API_KEY")
        );
    }

    #[test]
    fn base_url_override_and_redaction() {
        let c = cfg(&[
            ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/"),
            ("OPENAI_API_KEY", "sk-abcdef"),
        ]);
        assert_eq!(
            c.get(ProviderKind::OpenAi).base_url,
            "http://127.0.0.1:9/v1"
        );
        assert_eq!(c.redact("bad key sk-abcdef!"), "bad key ***!");
    }
}
