//! EcoLogits' model repository (generated from the `ecologits` wheel, see
//! `data/gen_ecologits_models.py`) and how a model name as users type it finds its entry.
//!
//! Resolution, in this order (the first that finds a model wins):
//!
//! 1. the name as typed, then without case: the request's provider first, then any provider;
//! 2. the same after dropping what wraps a registered name: a Hugging Face router suffix
//!    (`org/name:provider`), the Gemini API's `models/` prefix, a LiteLLM-style provider prefix
//!    (`openai/gpt-4o`, `anthropic/claude-…`), and aliases (EcoLogits' and ours);
//! 3. dated and versioned names: `-YYYY-MM-DD`, `-YYYYMMDD`, `@YYYYMMDD`, `-MM-YYYY`, `-NNNN`
//!    and `-latest` compared without the suffix on both sides (`gpt-4o-2099-01-01` → `gpt-4o`,
//!    `claude-opus-4-6-20260101` → `claude-opus-4-6`, `codestral-2501` → `codestral-latest`);
//! 4. ([`pick`] only) a parameter count written in the name (`qwen2.5:14b`): for a model that
//!    EcoLogits does not know, its own size is a better guide than the nearest name;
//! 5. ([`pick`] only) the nearest registered model by EcoLogits' LiteLLM rule
//!    (`ecologits/tracers/litellm_tracer.py`, `litellm_match_model`): rapidfuzz
//!    `process.extractOne(name, ["provider/name", …], scorer=fuzz.token_sort_ratio,
//!    score_cutoff=51)` over every model then every alias in repository order, the first of equal
//!    scores kept. That is how EcoLogits maps `gemini-1.5-flash` to `google_genai/gemini-2.5-flash`
//!    (score 66.7). The scorer and cut-off are read from the wheel by the generator;
//! 6. ([`pick`] only) the generic fallback of `data/llm_models.json`.
//!
//! The datacenter (PUE, default zone) is the request's provider's; a local gateway (`local`,
//! `ollama`) given a LiteLLM-style provider prefix (`local:anthropic/claude-sonnet-4-5`) forwards
//! to that provider, so that provider's datacenter applies.

use super::footprint::{
    Architecture, Deployment, EcoConstants, EcoEstimate, ModelEntry, ModelMatch, ProviderDc, Range,
    SeedEstimate, Tables, params_from_name,
};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The generated repository (`data/ecologits_models.json`).
pub const ECOLOGITS_JSON: &str = include_str!("../../data/ecologits_models.json");

#[derive(Deserialize)]
struct RepoFile {
    generator: String,
    ecologits_version: String,
    constants: EcoConstants,
    providers: BTreeMap<String, ProviderDc>,
    nearest: NearestRule,
    electricity_mixes: MixesFile,
    aliases: Vec<AliasRecord>,
    models: Vec<ModelRecord>,
}

#[derive(Deserialize)]
struct NearestRule {
    scorer: String,
    score_cutoff: f64,
    source: String,
}

#[derive(Deserialize)]
struct MixesFile {
    source: String,
    kg_per_kwh: BTreeMap<String, f64>,
}

#[derive(Deserialize)]
struct AliasRecord {
    provider: String,
    name: String,
    alias: String,
}

#[derive(Deserialize)]
struct ModelRecord {
    provider: String,
    name: String,
    architecture: Architecture,
    #[serde(default)]
    deployment: Deployment,
    #[serde(default)]
    warnings: Vec<String>,
    #[serde(default)]
    sources: Vec<String>,
}

/// One model of EcoLogits' repository (an alias is a copy under its own name).
#[derive(Debug, Clone, PartialEq)]
pub struct EcoModel {
    /// EcoLogits provider (`openai`, `google_genai`, `huggingface_hub`, `anthropic`, …).
    pub provider: String,
    /// Registered name.
    pub name: String,
    /// Parameters.
    pub architecture: Architecture,
    /// tps / ttft.
    pub deployment: Deployment,
    /// EcoLogits' warning codes (`model-arch-not-released`, `model-arch-multimodal`).
    pub warnings: Vec<String>,
    /// EcoLogits' sources.
    pub sources: Vec<String>,
    /// For an alias: the model it copies.
    pub alias_of: Option<String>,
}

/// The repository, as generated.
#[derive(Debug, Clone)]
pub struct Repository {
    /// EcoLogits version the data comes from.
    pub version: String,
    /// The script that generated the file.
    pub generator: String,
    /// Constants of the formulas.
    pub constants: EcoConstants,
    /// Datacenter per EcoLogits provider.
    pub providers: BTreeMap<String, ProviderDc>,
    /// GWP of each zone's electricity (kgCO₂eq/kWh).
    pub mixes: BTreeMap<String, f64>,
    /// Where the mixes come from.
    pub mix_source: String,
    /// Models then aliases, in repository order (the order of EcoLogits' `list_models()`).
    pub models: Vec<EcoModel>,
    /// Scorer of the nearest-name rule (`token_sort_ratio`).
    pub scorer: String,
    /// Its cut-off (51).
    pub score_cutoff: f64,
    /// Where the rule comes from.
    pub nearest_source: String,
}

/// The repository (parsed once; the file is tested by `repository_parses`).
pub fn repository() -> &'static Repository {
    static REPO: OnceLock<Repository> = OnceLock::new();
    REPO.get_or_init(|| {
        let f: RepoFile =
            serde_json::from_str(ECOLOGITS_JSON).expect("built-in ecologits_models.json");
        let mut models: Vec<EcoModel> = f
            .models
            .into_iter()
            .map(|m| EcoModel {
                provider: m.provider,
                name: m.name,
                architecture: m.architecture,
                deployment: m.deployment,
                warnings: m.warnings,
                sources: m.sources,
                alias_of: None,
            })
            .collect();
        for a in f.aliases {
            if let Some(target) = models
                .iter()
                .find(|m| m.provider == a.provider && m.name == a.alias)
                .cloned()
            {
                models.push(EcoModel {
                    name: a.name,
                    alias_of: Some(a.alias),
                    ..target
                });
            }
        }
        Repository {
            version: f.ecologits_version,
            generator: f.generator,
            constants: f.constants,
            providers: f.providers,
            mixes: f.electricity_mixes.kg_per_kwh,
            mix_source: f.electricity_mixes.source,
            models,
            scorer: f.nearest.scorer,
            score_cutoff: f.nearest.score_cutoff,
            nearest_source: f.nearest.source,
        }
    })
}

/// The kernel's provider key of an EcoLogits provider (`google_genai` → `gemini`,
/// `huggingface_hub` → `hf`; the others keep their name).
pub fn kernel_key(eco_provider: &str) -> &str {
    match eco_provider {
        "google_genai" => "gemini",
        "huggingface_hub" => "hf",
        p => p,
    }
}

/// The EcoLogits provider of a kernel provider key (or of a provider named in a prefix).
pub fn eco_provider(key: &str) -> Option<&'static str> {
    Some(match key {
        "openai" => "openai",
        "gemini" => "google_genai",
        "hf" => "huggingface_hub",
        "anthropic" => "anthropic",
        "mistralai" => "mistralai",
        "cohere" => "cohere",
        _ => return None,
    })
}

impl Repository {
    /// The models as rows of the kernel's model table (provider = kernel key).
    pub fn entries(&self) -> Vec<ModelEntry> {
        self.models
            .iter()
            .map(|m| {
                let mut sources = vec![match &m.alias_of {
                    Some(a) => format!(
                        "EcoLogits {} models.json (alias of {}/{a})",
                        self.version, m.provider
                    ),
                    None => format!("EcoLogits {} models.json", self.version),
                }];
                sources.extend(m.sources.iter().cloned());
                ModelEntry {
                    provider: kernel_key(&m.provider).to_string(),
                    name: m.name.clone(),
                    architecture: m.architecture.clone(),
                    deployment: m.deployment,
                    sources,
                }
            })
            .collect()
    }

    /// Datacenters keyed by the kernel's provider keys.
    pub fn datacenters(&self) -> BTreeMap<String, ProviderDc> {
        self.providers
            .iter()
            .map(|(k, v)| (kernel_key(k).to_string(), v.clone()))
            .collect()
    }

    fn model(&self, kernel_provider: &str, name: &str) -> Option<&EcoModel> {
        self.models
            .iter()
            .find(|m| kernel_key(&m.provider) == kernel_provider && m.name == name)
    }
}

/// Prefixes that LiteLLM-style names carry, and the provider key they route to (None: strip only).
const PREFIXES: [(&str, Option<&str>); 17] = [
    ("models/", None),
    ("openai/", Some("openai")),
    ("azure/", Some("openai")),
    ("gemini/", Some("gemini")),
    ("google/", Some("gemini")),
    ("vertex_ai/", Some("gemini")),
    ("google_genai/", Some("gemini")),
    ("anthropic/", Some("anthropic")),
    ("mistral/", Some("mistralai")),
    ("mistralai/", Some("mistralai")),
    ("cohere/", Some("cohere")),
    ("cohere_chat/", Some("cohere")),
    ("huggingface/", Some("hf")),
    ("huggingface_hub/", Some("hf")),
    ("groq/", Some("groq")),
    ("ollama/", None),
    ("ollama_chat/", None),
];

/// Providers whose requests go to a server that may forward them (a prefix then names where).
fn is_gateway(provider: &str) -> bool {
    matches!(provider, "local" | "ollama")
}

/// How a name found its model.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The entry used.
    pub entry: ModelEntry,
    /// What was done to the name (empty: found as typed).
    pub steps: Vec<String>,
    /// Nearest-name score when rule 5 found it.
    pub score: Option<f64>,
    /// Provider key whose datacenter applies when a prefix routes a gateway's request.
    pub routed: Option<String>,
}

/// One spelling of the name to look up, with what produced it.
#[derive(Debug, Clone)]
struct Form {
    name: String,
    steps: Vec<String>,
    routed: Option<String>,
}

/// The spellings of `typed` to try, most literal first.
fn forms(t: &Tables, typed: &str) -> Vec<Form> {
    let mut out = vec![Form {
        name: typed.to_string(),
        steps: vec![],
        routed: None,
    }];
    // HF router `org/name:provider` (an Ollama tag `llama3.1:8b` has no '/', and names a size)
    if let Some((base, sfx)) = typed.rsplit_once(':')
        && base.contains('/')
    {
        out.push(Form {
            name: base.to_string(),
            steps: vec![format!("the router suffix ':{sfx}' dropped")],
            routed: None,
        });
    }
    let mut more = Vec::new();
    for f in &out {
        let lower = f.name.to_ascii_lowercase();
        for (p, route) in PREFIXES {
            if lower.starts_with(p) && f.name.len() > p.len() {
                let mut steps = f.steps.clone();
                steps.push(format!("the prefix '{}' dropped", &f.name[..p.len()]));
                more.push(Form {
                    name: f.name[p.len()..].to_string(),
                    steps,
                    routed: route.map(String::from),
                });
            }
        }
    }
    out.extend(more);
    let mut aliased = Vec::new();
    for f in &out {
        let hit = t
            .aliases
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&f.name));
        if let Some((k, v)) = hit {
            let mut steps = f.steps.clone();
            steps.push(format!("'{k}' is an alias of '{v}' (data/llm_models.json)"));
            aliased.push(Form {
                name: v.clone(),
                steps,
                routed: f.routed.clone(),
            });
        }
    }
    out.extend(aliased);
    out
}

/// A dated or versioned name without its suffix (`None`: it has none).
pub fn undated(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    let n = b.len();
    // -YYYY-MM-DD
    if n > 11
        && b[n - 11] == b'-'
        && b[n - 6] == b'-'
        && b[n - 3] == b'-'
        && digits(&b[n - 10..n - 6])
        && digits(&b[n - 5..n - 3])
        && digits(&b[n - 2..])
    {
        return Some(&name[..n - 11]);
    }
    // -MM-YYYY (Cohere)
    if n > 8
        && b[n - 8] == b'-'
        && b[n - 5] == b'-'
        && digits(&b[n - 7..n - 5])
        && digits(&b[n - 4..])
    {
        return Some(&name[..n - 8]);
    }
    // -YYYYMMDD or @YYYYMMDD (Anthropic, Vertex)
    if n > 9 && (b[n - 9] == b'-' || b[n - 9] == b'@') && digits(&b[n - 8..]) {
        return Some(&name[..n - 9]);
    }
    // -NNNN (OpenAI's -0613, Mistral's -2512)
    if n > 5 && b[n - 5] == b'-' && digits(&b[n - 4..]) {
        return Some(&name[..n - 5]);
    }
    if name.len() > 7 && name.to_ascii_lowercase().ends_with("-latest") {
        return Some(&name[..n - 7]);
    }
    None
}

/// Entries in search order: the routed provider's, the request provider's, then every other.
fn scoped<'a>(t: &'a Tables, provider: &str, routed: Option<&str>) -> Vec<&'a ModelEntry> {
    let mut v: Vec<&ModelEntry> = Vec::with_capacity(t.models.len());
    if let Some(r) = routed {
        v.extend(t.models.iter().filter(|m| m.provider == r));
    }
    v.extend(
        t.models
            .iter()
            .filter(|m| m.provider == provider && Some(m.provider.as_str()) != routed),
    );
    v.extend(
        t.models
            .iter()
            .filter(|m| m.provider != provider && Some(m.provider.as_str()) != routed),
    );
    v
}

fn found(provider: &str, f: &Form, m: &ModelEntry, extra: Option<String>) -> Resolved {
    let mut steps = f.steps.clone();
    if let Some(e) = extra {
        steps.push(e);
    }
    if m.provider != provider && f.routed.as_deref() != Some(m.provider.as_str()) {
        steps.push(format!("registered under provider '{}'", m.provider));
    }
    Resolved {
        entry: m.clone(),
        steps,
        score: None,
        // Only a gateway forwards: a prefix on a provider's own API names the model, not a route.
        routed: f
            .routed
            .clone()
            .filter(|r| is_gateway(provider) && *r == m.provider),
    }
}

/// Rules 1–3: the model `typed` names at `provider`, `None` when no rule finds one.
pub fn resolve(t: &Tables, provider: &str, typed: &str) -> Option<Resolved> {
    let fs = forms(t, typed);
    // exact spelling, then case
    for (exact, note) in [(true, None), (false, Some("case ignored"))] {
        for f in &fs {
            let hit = scoped(t, provider, f.routed.as_deref())
                .into_iter()
                .find(|m| {
                    if exact {
                        m.name == f.name
                    } else {
                        m.name.eq_ignore_ascii_case(&f.name)
                    }
                });
            if let Some(m) = hit {
                return Some(found(provider, f, m, note.map(String::from)));
            }
        }
    }
    // dated / versioned: both sides without their suffix, or the `-latest` form
    for f in &fs {
        let base = undated(&f.name).unwrap_or(&f.name);
        let hit = scoped(t, provider, f.routed.as_deref())
            .into_iter()
            .find(|m| {
                let mb = undated(&m.name).unwrap_or(&m.name);
                (base.len() < f.name.len() || mb.len() < m.name.len())
                    && mb.eq_ignore_ascii_case(base)
            });
        if let Some(m) = hit {
            let why = format!(
                "'{}' and '{}' are the same model without their date/version suffix",
                f.name, m.name
            );
            return Some(found(provider, f, m, Some(why)));
        }
    }
    None
}

/// rapidfuzz `fuzz.token_sort_ratio` (no processor, as EcoLogits calls it): the tokens split on
/// whitespace, sorted and joined by one space, then `fuzz.ratio` = the normalized Indel
/// similarity × 100 (`1 − (|a|+|b|−2·LCS)/(|a|+|b|)`).
pub fn token_sort_ratio(a: &str, b: &str) -> f64 {
    fn sorted(s: &str) -> Vec<char> {
        let mut w: Vec<&str> = s.split_whitespace().collect();
        w.sort_unstable();
        w.join(" ").chars().collect()
    }
    let (a, b) = (sorted(a), sorted(b));
    let lensum = a.len() + b.len();
    if lensum == 0 {
        return 100.0;
    }
    // LCS by dynamic programming over one row
    let mut row = vec![0usize; b.len() + 1];
    for ca in &a {
        let mut diag = 0;
        for (j, cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if ca == cb { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    let lcs = row[b.len()];
    let dist = lensum - 2 * lcs;
    (1.0 - dist as f64 / lensum as f64) * 100.0
}

/// Rule 5: EcoLogits' `litellm_match_model` — the best-scoring `provider/name` of the
/// repository at or above the cut-off, the first of equal scores. Returns the model and score.
pub fn nearest(query: &str) -> Option<(&'static EcoModel, f64)> {
    nearest_where(query, |_| true)
}

/// [`nearest`] among the models `keep` accepts.
fn nearest_where(
    query: &str,
    keep: impl Fn(&EcoModel) -> bool,
) -> Option<(&'static EcoModel, f64)> {
    let repo = repository();
    let mut best: Option<(&EcoModel, f64)> = None;
    for m in repo.models.iter().filter(|m| keep(m)) {
        let s = token_sort_ratio(query, &format!("{}/{}", m.provider, m.name));
        if s >= repo.score_cutoff && best.is_none_or(|(_, b)| s > b) {
            best = Some((m, s));
        }
    }
    best
}

/// The family of a Hugging Face `org/name`: the first word of the name, lower case, without its
/// version digits (`HuggingFaceTB/SmolLM2-Instruct` → `smollm`, `Qwen/Qwen2.5-Coder` → `qwen`);
/// `None` for a name without `/` or a word shorter than 3 letters (too vague to tell).
pub fn family(name: &str) -> Option<String> {
    let (_, model) = name.rsplit_once('/')?;
    let word = model
        .split(['-', '_', '.', ':', ' '])
        .next()?
        .to_ascii_lowercase();
    let word = word.trim_end_matches(|c: char| c.is_ascii_digit());
    (word.len() >= 3).then(|| word.to_string())
}

/// Whether a registered model belongs to `family` (its name contains the word).
fn of_family(m: &EcoModel, family: &str) -> bool {
    m.name.to_ascii_lowercase().contains(family)
}

/// What [`pick`] chose for an estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    /// Parameters used.
    pub architecture: Architecture,
    /// tps / ttft used.
    pub deployment: Deployment,
    /// How (for the report's existing wording).
    pub matched: ModelMatch,
    /// Which model was used and why, one sentence for the report.
    pub resolution: String,
    /// Caveats shown as warnings.
    pub warnings: Vec<String>,
    /// Provider key whose datacenter applies.
    pub datacenter: String,
}

fn eco_warning_text(code: &str) -> &str {
    match code {
        "model-arch-not-released" => "its architecture has not been released",
        "model-arch-multimodal" => "it is multimodal",
        c => c,
    }
}

fn caveats(provider: &str, name: &str) -> String {
    match repository().model(provider, name) {
        Some(m) if !m.warnings.is_empty() => format!(
            " EcoLogits warns: {} (expect lower precision).",
            m.warnings
                .iter()
                .map(|w| eco_warning_text(w))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        _ => String::new(),
    }
}

fn source_of(e: &ModelEntry) -> String {
    e.sources
        .first()
        .cloned()
        .unwrap_or_else(|| "the model table".into())
}

/// Rules 1–6 for an estimate of `model` at `provider`.
pub fn pick(t: &Tables, provider: &str, model: &str) -> Pick {
    let repo = repository();
    if let Some(r) = resolve(t, provider, model) {
        let e = &r.entry;
        let how = if r.steps.is_empty() {
            "found as typed".to_string()
        } else {
            r.steps.join("; ")
        };
        let resolution = format!(
            "Model: '{model}' → {}/{} ({how}; {}).{}",
            e.provider,
            e.name,
            source_of(e),
            caveats(&e.provider, &e.name)
        );
        return Pick {
            architecture: e.architecture.clone(),
            deployment: e.deployment,
            matched: ModelMatch::Table(e.name.clone()),
            resolution,
            warnings: vec![],
            datacenter: r.routed.unwrap_or_else(|| provider.to_string()),
        };
    }
    // The query of the nearest-name rule: the name without its wrapping (suffix, prefix).
    let query = forms(t, model)
        .into_iter()
        .rev()
        .find(|f| !f.steps.iter().any(|s| s.contains("alias")))
        .map(|f| f.name)
        .unwrap_or_else(|| model.to_string());
    if let Some(p) = params_from_name(model) {
        return Pick {
            architecture: Architecture::Dense {
                parameters: Range::exact(p),
            },
            deployment: Deployment::default(),
            matched: ModelMatch::FromName(p),
            resolution: format!(
                "Model: '{model}' is not in EcoLogits {}'s repository: a dense model of {p}B parameters, read from its name (a size in the name is preferred to the nearest name).",
                repo.version
            ),
            warnings: vec![format!(
                "'{model}' is not in the model table: assuming a dense model of {p}B parameters (read from its name)"
            )],
            datacenter: provider.to_string(),
        };
    }
    // An `org/name` is a Hugging Face model: the nearest name of another family says nothing of
    // its size (`HuggingFaceTB/SmolLM2-Instruct` would score CodeLlama-13b), so the nearest of its
    // own family is used, and without one the generic fallback, said to be an assumption.
    let fam = family(&query);
    let mut other_family = None;
    let near = match (&fam, nearest(&query)) {
        (Some(f), Some((m, score))) if !of_family(m, f) => {
            other_family = Some(format!(
                "the nearest registered name, {}/{} ({score:.1}), is of another family than '{f}'",
                m.provider, m.name
            ));
            nearest_where(&query, |m| of_family(m, f))
        }
        (_, n) => n,
    };
    if let Some((m, score)) = near {
        let key = kernel_key(&m.provider);
        // The user's own table rows for that name win, as everywhere else.
        let entry = t
            .models
            .iter()
            .find(|e| e.provider == key && e.name == m.name);
        let (architecture, deployment) = match entry {
            Some(e) => (e.architecture.clone(), e.deployment),
            None => (m.architecture.clone(), m.deployment),
        };
        let why = match (&other_family, &fam) {
            (Some(o), Some(f)) => format!(
                "'{query}' is not in EcoLogits {}'s repository and {o}: the nearest registered model of the '{f}' family, {}/{}, was used ({} {score:.1} ≥ {}, EcoLogits' LiteLLM rule among that family's models)",
                repo.version, m.provider, m.name, repo.scorer, repo.score_cutoff
            ),
            _ => format!(
                "'{query}' is not in EcoLogits {}'s repository: the nearest registered model {}/{} was used ({} {score:.1} ≥ {}: EcoLogits' LiteLLM rule, {})",
                repo.version,
                m.provider,
                m.name,
                repo.scorer,
                repo.score_cutoff,
                repo.nearest_source
            ),
        };
        return Pick {
            architecture,
            deployment,
            matched: ModelMatch::Table(m.name.clone()),
            resolution: format!("Model: {why}.{}", caveats(key, &m.name)),
            warnings: vec![why],
            datacenter: provider.to_string(),
        };
    }
    let (a, _) = t.fallback.active_total();
    let resolution = match (&other_family, &fam) {
        (Some(o), Some(f)) => format!(
            "Model: '{model}' is not in EcoLogits {}'s repository, has no size in its name, {o} and no registered model of the '{f}' family scores ≥ {}: the generic fallback, an assumption ({}–{}B parameters).",
            repo.version,
            repo.score_cutoff,
            a.min(),
            a.max()
        ),
        _ => format!(
            "Model: '{model}' is not in EcoLogits {}'s repository, has no size in its name and no registered name scores ≥ {}: the generic fallback.",
            repo.version, repo.score_cutoff
        ),
    };
    Pick {
        architecture: t.fallback.clone(),
        deployment: Deployment::default(),
        matched: ModelMatch::Fallback,
        resolution,
        warnings: vec![format!(
            "'{model}' is not in the model table: assuming a dense model of {}–{}B parameters (add it with LLM_MODELS_FILE)",
            a.min(),
            a.max()
        )],
        datacenter: provider.to_string(),
    }
}

/// Mime type of the machine-readable figures of `%llm estimate` (a vendor type: front-ends show
/// the HTML table and ignore it; tests and scripts read exact numbers from it).
pub const ESTIMATE_MIME: &str = "application/vnd.carbon-kernel.llm-estimate+json";

fn range_json(r: &Range) -> serde_json::Value {
    serde_json::json!({"min": r.min(), "max": r.max()})
}

/// The figures of one estimate, unrounded (kWh, kgCO₂eq), for [`ESTIMATE_MIME`].
pub fn estimate_json(
    spec: &str,
    eco: Option<&EcoEstimate>,
    seed: Option<&SeedEstimate>,
) -> serde_json::Value {
    let eco = eco.map(|e| {
        serde_json::json!({
            "model_used": match &e.matched {
                ModelMatch::Table(n) => serde_json::Value::from(n.clone()),
                _ => serde_json::Value::Null,
            },
            "resolution": e.resolution,
            "zone": e.zone,
            "intensity_kg_per_kwh": e.intensity,
            "zone_source": e.zone_source,
            "pue": range_json(&e.pue),
            "active_params_b": range_json(&e.active),
            "total_params_b": range_json(&e.total),
            "tokens": e.tokens,
            "latency_bound_s": e.latency_bound_s,
            "energy_kwh": range_json(&e.energy_kwh),
            "usage_kg": range_json(&e.op_kg),
            "embodied_kg": range_json(&e.emb_kg),
            "warnings": e.warnings,
        })
    });
    let seed = seed.map(|s| {
        serde_json::json!({
            "energy_kwh": s.energy_kwh,
            "usage_kg": s.op_kg,
            "embodied_kg": s.emb_kg,
            "latency_s": s.latency_s,
        })
    });
    serde_json::json!({"model": spec, "ecologits": eco, "seed": seed})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Tables {
        Tables::builtin()
    }

    fn res(provider: &str, name: &str) -> Option<(String, String, Vec<String>)> {
        resolve(&t(), provider, name).map(|r| (r.entry.provider, r.entry.name, r.steps))
    }

    #[test]
    fn repository_parses_every_model_and_zone() {
        let r = repository();
        assert_eq!(r.version, "0.11.3");
        assert_eq!(r.generator, "magics/data/gen_ecologits_models.py");
        // 342 models + 9 aliases (llm-footprint.md §1.6), 215 zones (§1.5)
        assert_eq!(r.models.len(), 351);
        assert_eq!(r.mixes.len(), 215);
        for p in [
            "openai",
            "google_genai",
            "huggingface_hub",
            "anthropic",
            "mistralai",
            "cohere",
        ] {
            assert!(r.models.iter().any(|m| m.provider == p), "{p}");
            assert!(r.providers.contains_key(p), "{p}");
        }
        assert_eq!(r.mixes["USA"], 0.3844);
        assert_eq!(r.mixes["WOR"], 0.45829);
        assert_eq!(r.score_cutoff, 51.0);
        assert_eq!(r.scorer, "token_sort_ratio");
        assert_eq!(r.providers["mistralai"].zone, "SWE");
    }

    #[test]
    fn exact_and_case() {
        let (p, n, s) = res("openai", "gpt-4o-2024-08-06").unwrap();
        assert_eq!((p.as_str(), n.as_str()), ("openai", "gpt-4o-2024-08-06"));
        assert!(s.is_empty());
        let (_, n, s) = res("openai", "GPT-4o-Mini").unwrap();
        assert_eq!(n, "gpt-4o-mini");
        assert_eq!(s, vec!["case ignored".to_string()]);
    }

    #[test]
    fn dated_names_without_their_suffix() {
        // not registered under this date: the undated model
        assert_eq!(res("openai", "gpt-4o-2099-01-01").unwrap().1, "gpt-4o");
        // Anthropic's -YYYYMMDD and Vertex's @YYYYMMDD
        assert_eq!(
            res("local", "anthropic/claude-opus-4-6-20260101")
                .unwrap()
                .1,
            "claude-opus-4-6"
        );
        assert_eq!(
            res("local", "claude-sonnet-4-5@20250929").unwrap().1,
            "claude-sonnet-4-5-20250929"
        );
        // Mistral's -YYMM → -latest
        assert_eq!(res("local", "codestral-2501").unwrap().1, "codestral-2508");
        // undated name, only dated entries (Cohere's -MM-YYYY)
        assert_eq!(
            res("local", "command-r-plus").unwrap().1,
            "command-r-plus-08-2024"
        );
        assert_eq!(undated("gpt-4-0613"), Some("gpt-4"));
        assert_eq!(undated("mixtral-8x7b-32768"), None);
    }

    #[test]
    fn prefixes_suffixes_and_routing() {
        let (p, n, s) = res("gemini", "models/gemini-2.5-flash").unwrap();
        assert_eq!((p.as_str(), n.as_str()), ("gemini", "gemini-2.5-flash"));
        assert!(s[0].contains("'models/'"), "{s:?}");
        assert_eq!(res("openai", "openai/gpt-4o").unwrap().1, "gpt-4o");
        // HF org/name as typed, with a router suffix
        let (p, n, s) = res("hf", "meta-llama/Meta-Llama-3.1-8B-Instruct:cerebras").unwrap();
        assert_eq!(
            (p.as_str(), n.as_str()),
            ("hf", "meta-llama/Meta-Llama-3.1-8B-Instruct")
        );
        assert!(s[0].contains(":cerebras"), "{s:?}");
        // an HF org that is also a provider name stays the HF model
        assert_eq!(res("hf", "openai/gpt-oss-120b").unwrap().0, "hf");
        assert_eq!(
            res("hf", "mistralai/Mistral-7B-Instruct-v0.2").unwrap().0,
            "hf"
        );
        // a gateway + provider prefix routes to that provider's datacenter; a provider's own API does not
        let r = resolve(&t(), "local", "anthropic/claude-sonnet-4-5").unwrap();
        assert_eq!(r.routed.as_deref(), Some("anthropic"));
        let r = resolve(&t(), "openai", "openai/gpt-4o").unwrap();
        assert_eq!(r.routed, None);
        // an Ollama tag is not a router suffix
        assert!(res("ollama", "llama3.1:8b").is_none());
    }

    #[test]
    fn groq_keeps_our_assumption() {
        let (p, n, _) = res("groq", "llama-3.3-70b-versatile").unwrap();
        assert_eq!(
            (p.as_str(), n.as_str()),
            ("groq", "llama-3.3-70b-versatile")
        );
        let pk = pick(&t(), "groq", "llama-3.3-70b-versatile");
        assert_eq!(pk.datacenter, "groq");
        assert!(pk.resolution.contains("ours"), "{}", pk.resolution);
    }

    #[test]
    fn nearest_follows_ecologits_litellm_rule() {
        // rapidfuzz 3.14: extractOne("gemini-1.5-flash", choices, token_sort_ratio, 51)
        // → ('google_genai/gemini-2.5-flash', 66.66666666666667)
        let (m, s) = nearest("gemini-1.5-flash").unwrap();
        assert_eq!(
            (m.provider.as_str(), m.name.as_str()),
            ("google_genai", "gemini-2.5-flash")
        );
        assert!((s - 66.66666666666667).abs() < 1e-9, "{s}");
        let (m, _) = nearest("gemini-1.5-pro").unwrap();
        assert_eq!(m.name, "gemini-2.5-pro");
        assert!(nearest("mystery").is_none());
        assert!((token_sort_ratio("b a", "a b") - 100.0).abs() < 1e-12);
        let pk = pick(&t(), "gemini", "gemini-1.5-flash");
        assert_eq!(pk.matched, ModelMatch::Table("gemini-2.5-flash".into()));
        assert!(
            pk.resolution
                .contains("nearest registered model google_genai/gemini-2.5-flash")
        );
        assert!(pk.warnings[0].contains("66.7 ≥ 51"), "{:?}", pk.warnings);
        let pk = pick(&t(), "gemini", "models/gemini-1.5-flash");
        assert!(
            pk.resolution.contains("'gemini-1.5-flash' is not"),
            "{}",
            pk.resolution
        );
    }

    #[test]
    fn size_in_name_before_nearest_and_fallback_last() {
        // rapidfuzz would map it to mistralai/glm-5-2 (51.4): its own size is the better guide
        let pk = pick(&t(), "local", "mixtral-8x7b-32768");
        assert_eq!(pk.matched, ModelMatch::FromName(56.0));
        let pk = pick(&t(), "openai", "mystery");
        assert_eq!(pk.matched, ModelMatch::Fallback);
        assert!(pk.resolution.contains("fallback"));
    }

    #[test]
    fn a_longer_registered_name_does_not_shadow_the_exact_one() {
        // gpt-4o-mini is a prefix of many names; gpt-4o of more: exact wins over undated/nearest
        assert_eq!(res("openai", "gpt-4o").unwrap().1, "gpt-4o");
        assert_eq!(res("openai", "gpt-4o-mini").unwrap().1, "gpt-4o-mini");
        // an alias resolves to its own (copied) entry, found as typed
        let (_, n, s) = res("openai", "gpt-35-turbo").unwrap();
        assert_eq!(n, "gpt-35-turbo");
        assert!(s.is_empty());
    }

    #[test]
    fn hugging_face_sizes_in_millions_and_families() {
        // SmolLM2's sizes are written in millions: read from the name, said to be an assumption
        for (typed, p) in [
            ("HuggingFaceTB/SmolLM2-135M-Instruct", 0.135),
            ("HuggingFaceTB/SmolLM2-360M-Instruct:hf-inference", 0.36),
            ("HuggingFaceTB/SmolLM2-1.7B-Instruct", 1.7),
        ] {
            let pk = pick(&t(), "hf", typed);
            assert_eq!(
                pk.matched,
                ModelMatch::FromName(p),
                "{typed}: {}",
                pk.resolution
            );
            assert!(
                pk.resolution
                    .contains(&format!("a dense model of {p}B parameters")),
                "{}",
                pk.resolution
            );
            assert!(!pk.resolution.contains("CodeLlama"), "{}", pk.resolution);
        }
        assert_eq!(
            family("HuggingFaceTB/SmolLM2-Instruct").as_deref(),
            Some("smollm")
        );
        assert_eq!(
            family("Qwen/Qwen2.5-Coder-Instruct").as_deref(),
            Some("qwen")
        );
        assert_eq!(family("gemini-2.5-flash"), None);
        // no size, no model of its family: not another family's nearest name, the fallback,
        // said to be an assumption
        let pk = pick(&t(), "hf", "HuggingFaceTB/SmolLM2-Instruct");
        assert_eq!(pk.matched, ModelMatch::Fallback, "{}", pk.resolution);
        assert!(
            pk.resolution.contains("is of another family than 'smollm'"),
            "{}",
            pk.resolution
        );
        assert!(pk.resolution.contains("an assumption"), "{}", pk.resolution);
        // no size; the nearest name (dbrx-instruct, 64.6) is another family: the nearest of the
        // 'dolly' family instead, and the report says why
        let pk = pick(&t(), "hf", "databricks/dolly-instruct");
        assert_eq!(
            pk.matched,
            ModelMatch::Table("databricks/dolly-v1-6b".into()),
            "{}",
            pk.resolution
        );
        assert!(
            pk.resolution
                .contains("databricks/dbrx-instruct (64.6), is of another family than 'dolly'"),
            "{}",
            pk.resolution
        );
        // the nearest name already of its family: EcoLogits' rule unchanged
        let pk = pick(&t(), "hf", "meta-llama/Llama-Guard-3-Vision");
        assert_eq!(
            pk.matched,
            ModelMatch::Table("meta-llama/Llama-Guard-3-8B".into())
        );
    }
}
