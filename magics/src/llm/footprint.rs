//! The two footprint methods of METHODOLOGY.md §3 for one LLM request, and their data tables.
//!
//! * latency × hardware (the seed's method): the whole assumed deployment is charged for the
//!   measured latency; constants in `data/llm_seed_method.json`, profiles in
//!   `data/llm_hardware_profiles.csv`;
//! * tokens × parameters (EcoLogits 0.11 class): energy from output tokens and active parameters,
//!   GPU count from total parameters, server and embodied shares divided by the batch size; the
//!   model table in `data/llm_models.json`. Ranges come from unknown parameter counts and PUE ranges.
//!
//! Every table can be extended or overridden by the user (files named in Settings).

use crate::config::Settings;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The built-in hardware profiles (the seed's), CSV with `#` comments.
pub const DEFAULT_PROFILES_CSV: &str = include_str!("../../data/llm_hardware_profiles.csv");
/// The built-in constants of the seed's method.
pub const DEFAULT_SEED_JSON: &str = include_str!("../../data/llm_seed_method.json");
/// The built-in EcoLogits-class model table.
pub const DEFAULT_MODELS_JSON: &str = include_str!("../../data/llm_models.json");

/// Settings key naming a CSV of extra/overriding hardware profiles.
pub const PROFILES_FILE_KEY: &str = "LLM_PROFILES_FILE";
/// Settings key naming a JSON replacing the seed method's constants.
pub const SEED_FILE_KEY: &str = "LLM_SEED_FILE";
/// Settings key naming a JSON of extra/overriding models (`{"models": [...], "aliases": {...}}`).
pub const MODELS_FILE_KEY: &str = "LLM_MODELS_FILE";

/// A value known exactly (`min == max`) or as an interval.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Range {
    /// Known exactly.
    Exact(f64),
    /// An interval.
    Span {
        /// lower bound
        min: f64,
        /// upper bound
        max: f64,
    },
}

impl Range {
    /// An exact value.
    pub fn exact(v: f64) -> Self {
        Range::Exact(v)
    }
    /// Lower bound.
    pub fn min(&self) -> f64 {
        match *self {
            Range::Exact(v) => v,
            Range::Span { min, .. } => min,
        }
    }
    /// Upper bound.
    pub fn max(&self) -> f64 {
        match *self {
            Range::Exact(v) => v,
            Range::Span { max, .. } => max,
        }
    }
    /// Midpoint (EcoLogits' `RangeValue.mean`).
    pub fn mid(&self) -> f64 {
        (self.min() + self.max()) / 2.0
    }
    /// True when min and max differ.
    pub fn is_range(&self) -> bool {
        self.min() != self.max()
    }
    /// From two bounds.
    pub fn span(min: f64, max: f64) -> Self {
        if min == max {
            Range::Exact(min)
        } else {
            Range::Span { min, max }
        }
    }
    /// Element-wise sum.
    pub fn add(&self, o: &Range) -> Range {
        Range::span(self.min() + o.min(), self.max() + o.max())
    }
}

/// A problem with a data file (built-in or the user's).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {detail}")]
pub struct TableError {
    /// Which file.
    pub file: String,
    /// What was wrong.
    pub detail: String,
}

/// One hardware profile of the seed's method.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct HardwareProfile {
    /// Model id the profile applies to (`*` = fallback).
    pub model: String,
    /// Number of devices charged.
    pub device_count: f64,
    /// Power per device (kW).
    pub device_power_kw: f64,
    /// Chip, for display.
    pub chip: String,
    /// Key of the seed's intensity table (`us`, `fr`, `cn`, `default`).
    pub country: String,
    /// Where the numbers come from.
    pub source: String,
}

/// Constants of the seed's method.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SeedConstants {
    /// Datacenter PUE.
    pub pue: f64,
    /// kgCO₂eq/kWh per country key.
    pub carbon_intensity_kg_per_kwh: BTreeMap<String, f64>,
    /// kgCO₂eq per component of the one "server" amortised.
    pub fabrication_kg: BTreeMap<String, f64>,
    /// Hardware lifetime (h).
    pub lifetime_hours: f64,
}

impl SeedConstants {
    /// Sum of the fabrication footprints (kgCO₂eq).
    pub fn fabrication_total_kg(&self) -> f64 {
        self.fabrication_kg.values().sum()
    }
}

/// Architecture of a model (parameters in billions).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Architecture {
    /// All parameters active.
    Dense {
        /// parameter count
        parameters: Range,
    },
    /// Mixture of experts.
    Moe {
        /// total and active counts
        parameters: MoeParams,
    },
}

/// Parameters of a mixture-of-experts model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct MoeParams {
    /// Total (sets the GPU count).
    pub total: Range,
    /// Active per token (sets the energy per token).
    pub active: Range,
}

impl Architecture {
    /// (active, total) parameters.
    pub fn active_total(&self) -> (Range, Range) {
        match self {
            Architecture::Dense { parameters } => (*parameters, *parameters),
            Architecture::Moe { parameters } => (parameters.active, parameters.total),
        }
    }
}

/// Deployment statistics of a model (EcoLogits `deployment`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize)]
pub struct Deployment {
    /// Output tokens per second.
    pub tps: Option<f64>,
    /// Time to first token (s).
    pub ttft: Option<f64>,
}

/// One model of the tokens × parameters table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelEntry {
    /// Provider key (`openai`, `gemini`, `groq`, `hf`, …).
    pub provider: String,
    /// Model id.
    pub name: String,
    /// Parameters.
    pub architecture: Architecture,
    /// tps / ttft when known.
    #[serde(default)]
    pub deployment: Deployment,
    /// Sources of the figures.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// Datacenter assumptions for a provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ProviderDc {
    /// Electricity zone (ISO 3166 alpha-3 or `WOR`).
    pub zone: String,
    /// PUE (range for some providers).
    pub pue: Range,
    /// Where it comes from.
    pub source: String,
}

/// EcoLogits constants (see the JSON for sources).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[allow(missing_docs)]
pub struct EcoConstants {
    pub gpu_energy_alpha: f64,
    pub gpu_energy_beta: f64,
    pub gpu_energy_gamma: f64,
    pub latency_alpha: f64,
    pub latency_beta: f64,
    pub latency_gamma: f64,
    pub batch_size: f64,
    pub quantization_bits: f64,
    pub gpu_memory_gb: f64,
    pub server_power_kw: f64,
    pub server_gpus: f64,
    pub server_embodied_kg: f64,
    pub gpu_embodied_kg: f64,
    pub lifetime_s: f64,
}

#[derive(Debug, Deserialize)]
struct ModelsFile {
    constants: Option<EcoConstants>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderDc>,
    #[serde(default)]
    electricity_mixes_kg_per_kwh: BTreeMap<String, serde_json::Value>,
    fallback: Option<Fallback>,
    #[serde(default)]
    aliases: BTreeMap<String, String>,
    #[serde(default)]
    models: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
struct Fallback {
    architecture: Architecture,
}

/// All tables both methods need.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Seed profiles (the `*` row is the fallback).
    pub profiles: Vec<HardwareProfile>,
    /// Seed constants.
    pub seed: SeedConstants,
    /// EcoLogits constants.
    pub eco: EcoConstants,
    /// Datacenter per provider key.
    pub providers: BTreeMap<String, ProviderDc>,
    /// Grid intensity per zone (kgCO₂eq/kWh).
    pub mixes: BTreeMap<String, f64>,
    /// Model table.
    pub models: Vec<ModelEntry>,
    /// Alias → model name.
    pub aliases: BTreeMap<String, String>,
    /// Architecture used for an unknown model without a size in its name.
    pub fallback: Architecture,
    /// Which user files were merged in (for the explanation).
    pub user_files: Vec<String>,
}

fn parse_profiles(text: &str, file: &str) -> Result<Vec<HardwareProfile>, TableError> {
    let mut rd = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let mut out = Vec::new();
    for row in rd.deserialize::<HardwareProfile>() {
        let p = row.map_err(|e| TableError {
            file: file.into(),
            detail: e.to_string(),
        })?;
        if !(p.device_count > 0.0 && p.device_power_kw >= 0.0) {
            return Err(TableError {
                file: file.into(),
                detail: format!("{}: device_count must be > 0 and power >= 0", p.model),
            });
        }
        out.push(p);
    }
    Ok(out)
}

fn parse_models(text: &str, file: &str) -> Result<ModelsFile, TableError> {
    serde_json::from_str(text).map_err(|e| TableError {
        file: file.into(),
        detail: e.to_string(),
    })
}

impl Tables {
    /// The built-in tables.
    pub fn builtin() -> Tables {
        // The built-in files are tested (`builtin_tables_parse`), so these cannot fail.
        let profiles = parse_profiles(DEFAULT_PROFILES_CSV, "llm_hardware_profiles.csv")
            .expect("built-in profiles");
        let seed: SeedConstants =
            serde_json::from_str(DEFAULT_SEED_JSON).expect("built-in seed constants");
        let m = parse_models(DEFAULT_MODELS_JSON, "llm_models.json").expect("built-in models");
        // EcoLogits' repository, mixes, datacenters and constants are generated from its wheel
        // (data/ecologits_models.json); llm_models.json keeps only our own assumptions (Groq,
        // local servers, the fallback), which come first and win on equal names.
        let repo = super::models::repository();
        let mut mixes = repo.mixes.clone();
        mixes.extend(
            m.electricity_mixes_kg_per_kwh
                .iter()
                .filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f))),
        );
        let mut providers = repo.datacenters();
        providers.extend(m.providers);
        let mut models = m.models;
        models.extend(repo.entries());
        Tables {
            profiles,
            seed,
            eco: m.constants.unwrap_or_else(|| repo.constants.clone()),
            providers,
            mixes,
            models,
            aliases: m.aliases,
            fallback: m.fallback.expect("built-in fallback").architecture,
            user_files: Vec::new(),
        }
    }

    /// The built-in tables with the user's files (named in `settings`) merged over them.
    /// Files are read relative to `workdir`. Errors name the file and leave the built-ins in place.
    pub fn load(settings: &Settings, workdir: &Path) -> (Tables, Vec<String>) {
        let mut t = Tables::builtin();
        let mut warnings = Vec::new();
        let read = |key: &str| -> Option<(String, Result<String, String>)> {
            let name = settings.get(key)?;
            let path = workdir.join(name);
            Some((
                path.display().to_string(),
                std::fs::read_to_string(&path).map_err(|e| e.to_string()),
            ))
        };
        if let Some((file, text)) = read(PROFILES_FILE_KEY) {
            match text.map_err(|e| TableError {
                file: file.clone(),
                detail: e,
            }) {
                Ok(text) => match parse_profiles(&text, &file) {
                    Ok(rows) => {
                        for r in rows {
                            t.profiles.retain(|p| p.model != r.model);
                            t.profiles.insert(0, r);
                        }
                        t.user_files.push(file);
                    }
                    Err(e) => warnings.push(format!("{e} (built-in profiles used)")),
                },
                Err(e) => warnings.push(format!("{e} (built-in profiles used)")),
            }
        }
        if let Some((file, text)) = read(SEED_FILE_KEY) {
            match text
                .and_then(|s| serde_json::from_str::<SeedConstants>(&s).map_err(|e| e.to_string()))
            {
                Ok(seed) => {
                    t.seed = seed;
                    t.user_files.push(file);
                }
                Err(e) => warnings.push(format!("{file}: {e} (built-in seed constants used)")),
            }
        }
        if let Some((file, text)) = read(MODELS_FILE_KEY) {
            match text.map_err(|e| TableError {
                file: file.clone(),
                detail: e,
            }) {
                Ok(text) => match parse_models(&text, &file) {
                    Ok(m) => {
                        for e in m.models {
                            t.models
                                .retain(|x| !(x.name == e.name && x.provider == e.provider));
                            t.models.insert(0, e);
                        }
                        t.aliases.extend(m.aliases);
                        t.providers.extend(m.providers);
                        for (k, v) in m.electricity_mixes_kg_per_kwh {
                            if let Some(f) = v.as_f64() {
                                t.mixes.insert(k, f);
                            }
                        }
                        if let Some(c) = m.constants {
                            t.eco = c;
                        }
                        if let Some(f) = m.fallback {
                            t.fallback = f.architecture;
                        }
                        t.user_files.push(file);
                    }
                    Err(e) => warnings.push(format!("{e} (built-in models used)")),
                },
                Err(e) => warnings.push(format!("{e} (built-in models used)")),
            }
        }
        (t, warnings)
    }

    /// The seed profile of `model`: exact id, then case-insensitive, then without a `:provider`
    /// suffix. `None` = the fallback applies.
    pub fn profile(&self, model: &str) -> Option<&HardwareProfile> {
        let base = strip_suffix(model);
        self.profiles
            .iter()
            .filter(|p| p.model != "*")
            .find(|p| p.model == model)
            .or_else(|| {
                self.profiles
                    .iter()
                    .filter(|p| p.model != "*")
                    .find(|p| p.model.eq_ignore_ascii_case(model))
            })
            .or_else(|| {
                self.profiles
                    .iter()
                    .filter(|p| p.model != "*")
                    .find(|p| strip_suffix(&p.model).eq_ignore_ascii_case(base))
            })
    }

    /// The seed's fallback profile (`*` row).
    pub fn fallback_profile(&self) -> HardwareProfile {
        self.profiles
            .iter()
            .find(|p| p.model == "*")
            .cloned()
            .unwrap_or(HardwareProfile {
                model: "*".into(),
                device_count: 1.0,
                device_power_kw: 0.5,
                chip: "H100 (default)".into(),
                country: "default".into(),
                source: "seed compute_LLM_footprint.py fallback".into(),
            })
    }

    /// The model entry for `model` at `provider` by the name rules of [`super::models`]
    /// (as typed, case, prefixes and suffixes, aliases, dates); `None` when none applies.
    pub fn model(&self, provider: &str, model: &str) -> Option<&ModelEntry> {
        let r = super::models::resolve(self, provider, model)?;
        self.models
            .iter()
            .find(|m| m.provider == r.entry.provider && m.name == r.entry.name)
    }
}

/// `org/model:provider` → `org/model` (HF router suffix, Ollama tags are kept as they name sizes).
fn strip_suffix(model: &str) -> &str {
    match model.rsplit_once(':') {
        Some((base, _)) if base.contains('/') => base,
        _ => model,
    }
}

/// A parameter count read from a model name, in billions: `70b`, `8B`, `7.24b`, `8x7b` (8 experts
/// of 7B), and millions `135M` (SmolLM2-135M → 0.135). The last size written in billions wins
/// (`Qwen3-30B-A3B`'s `A3B`, an active count, is not a size: a letter before it); a size in
/// millions counts only when there is none in billions (`Qwen2.5-7B-Instruct-1M` names its
/// context, 1M tokens, after its 7B).
pub fn params_from_name(model: &str) -> Option<f64> {
    let lower = model.to_ascii_lowercase();
    let bytes = lower.as_bytes();
    let mut billions = None;
    let mut millions = None;
    for (i, &c) in bytes.iter().enumerate() {
        let scale = match c {
            b'b' => 1.0,
            b'm' => 1e-3,
            _ => continue,
        };
        // the unit must end a token
        if i + 1 < bytes.len() && bytes[i + 1].is_ascii_alphanumeric() {
            continue;
        }
        let mut j = i;
        while j > 0 && (bytes[j - 1].is_ascii_digit() || bytes[j - 1] == b'.') {
            j -= 1;
        }
        if j == i {
            continue;
        }
        let Ok(n) = lower[j..i].parse::<f64>() else {
            continue;
        };
        // `8x7b` = 8 experts of 7B
        let mut v = n;
        if j >= 2 && bytes[j - 1] == b'x' {
            let mut k = j - 1;
            while k > 0 && bytes[k - 1].is_ascii_digit() {
                k -= 1;
            }
            if let Ok(e) = lower[k..j - 1].parse::<f64>() {
                v = e * n;
            }
        }
        if j > 0 && bytes[j - 1].is_ascii_alphabetic() && bytes[j - 1] != b'x' {
            continue;
        }
        if v > 0.0 {
            if scale == 1.0 {
                billions = Some(v);
            } else {
                millions = Some(v * scale);
            }
        }
    }
    billions.or(millions)
}

/// The seed method's result.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedEstimate {
    /// The profile used.
    pub profile: HardwareProfile,
    /// False when the fallback profile was used.
    pub matched: bool,
    /// Latency charged (s).
    pub latency_s: f64,
    /// PUE.
    pub pue: f64,
    /// Grid intensity used (kgCO₂eq/kWh).
    pub intensity: f64,
    /// Fabrication footprint of the server (kgCO₂eq).
    pub fabrication_kg: f64,
    /// Lifetime (h).
    pub lifetime_hours: f64,
    /// Energy (kWh).
    pub energy_kwh: f64,
    /// Operational emissions (kgCO₂eq).
    pub op_kg: f64,
    /// Embodied emissions (kgCO₂eq).
    pub emb_kg: f64,
}

impl SeedEstimate {
    /// op + emb.
    pub fn total_kg(&self) -> f64 {
        self.op_kg + self.emb_kg
    }
}

/// Latency × hardware: `E = t/3600 × n × P × PUE`, `CO₂_op = E × CI`,
/// `CO₂_hw = t/(3600 × lifetime_h) × C_fab` (seed `compute_carbon`).
pub fn seed_estimate(t: &Tables, model: &str, latency_s: f64) -> SeedEstimate {
    let (profile, matched) = match t.profile(model) {
        Some(p) => (p.clone(), true),
        None => (t.fallback_profile(), false),
    };
    let intensity = t
        .seed
        .carbon_intensity_kg_per_kwh
        .get(&profile.country)
        .or_else(|| t.seed.carbon_intensity_kg_per_kwh.get("default"))
        .copied()
        .unwrap_or(0.4);
    let energy_kwh =
        latency_s / 3600.0 * profile.device_count * profile.device_power_kw * t.seed.pue;
    let fabrication_kg = t.seed.fabrication_total_kg();
    SeedEstimate {
        matched,
        latency_s,
        pue: t.seed.pue,
        intensity,
        fabrication_kg,
        lifetime_hours: t.seed.lifetime_hours,
        energy_kwh,
        op_kg: energy_kwh * intensity,
        emb_kg: latency_s / (3600.0 * t.seed.lifetime_hours) * fabrication_kg,
        profile,
    }
}

/// How the model of an EcoLogits-class estimate was found.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelMatch {
    /// In the table under this name.
    Table(String),
    /// Not in the table; size read from the name.
    FromName(f64),
    /// Not in the table; the generic fallback range.
    Fallback,
}

/// The tokens × parameters result (every quantity a range).
#[derive(Debug, Clone, PartialEq)]
pub struct EcoEstimate {
    /// How the model was found.
    pub matched: ModelMatch,
    /// Active parameters (billions).
    pub active: Range,
    /// Total parameters (billions).
    pub total: Range,
    /// Output tokens.
    pub tokens: u64,
    /// Latency bound given (s).
    pub latency_bound_s: Option<f64>,
    /// tps / ttft used.
    pub deployment: Deployment,
    /// GPU energy per token (Wh), min/max.
    pub energy_per_token_wh: Range,
    /// Generation time charged ΔT (s).
    pub gen_time_s: Range,
    /// GPUs (min run, max run).
    pub gpus: (u32, u32),
    /// PUE.
    pub pue: Range,
    /// Zone and its intensity (kgCO₂eq/kWh).
    pub zone: String,
    /// Intensity of the zone.
    pub intensity: f64,
    /// Request energy (kWh).
    pub energy_kwh: Range,
    /// Usage emissions (kgCO₂eq).
    pub op_kg: Range,
    /// Embodied emissions (kgCO₂eq).
    pub emb_kg: Range,
    /// Warnings to show (unknown model, zone).
    pub warnings: Vec<String>,
    /// Which model was used and why (see [`super::models`]).
    pub resolution: String,
    /// The zone, its intensity and where both come from.
    pub zone_source: String,
}

impl EcoEstimate {
    /// usage + embodied.
    pub fn total_kg(&self) -> Range {
        self.op_kg.add(&self.emb_kg)
    }
}

struct Run {
    e_tok_wh: f64,
    dt: f64,
    n: u32,
    energy: f64,
    op: f64,
    emb: f64,
}

/// GPUs needed for `total_b` billion parameters: `2^ceil(log2(ceil(M/80)))`, `M = 1.2·P·Q/8` GB.
pub fn gpus_required(c: &EcoConstants, total_b: f64) -> u32 {
    let mem = 1.2 * total_b * c.quantization_bits / 8.0;
    let k = (mem / c.gpu_memory_gb).ceil().max(1.0);
    2f64.powf(k.log2().ceil()) as u32
}

// One evaluation of the DAG with EcoLogits' own inputs, kept as plain arguments so the code reads
// like the formulas.
#[allow(clippy::too_many_arguments)]
fn eco_run(
    c: &EcoConstants,
    active: f64,
    total: f64,
    tokens: f64,
    dep: Deployment,
    bound: Option<f64>,
    pue: f64,
    mix: f64,
) -> Run {
    let b = c.batch_size;
    // (1) Wh per token, (2) kWh on one GPU
    let e_tok_wh = c.gpu_energy_alpha * (c.gpu_energy_beta * b).exp() * active + c.gpu_energy_gamma;
    let e_gpu = tokens * e_tok_wh / 1000.0;
    // (3) generation time, capped by the measured latency
    let t_tok = match dep.tps {
        Some(tps) if tps > 0.0 => 1.0 / tps,
        _ => c.latency_alpha * active + c.latency_beta * b + c.latency_gamma,
    };
    let l = dep.ttft.unwrap_or(0.0) + tokens * t_tok;
    let dt = match bound {
        Some(r) => l.min(r),
        None => l,
    };
    // (4)(5) GPUs
    let n = gpus_required(c, total);
    let nf = n as f64;
    // (6) server without GPUs, (7) IT, (8) request
    let e_srv = dt / 3600.0 * c.server_power_kw * (nf / c.server_gpus) / b;
    let energy = pue * (e_srv + nf * e_gpu);
    // (11)(12) embodied
    let i_srv = nf / c.server_gpus * c.server_embodied_kg + nf * c.gpu_embodied_kg;
    let emb = dt * i_srv / (c.lifetime_s * b);
    Run {
        e_tok_wh,
        dt,
        n,
        energy,
        op: energy * mix,
        emb,
    }
}

/// Tokens × parameters (EcoLogits 0.11 `compute_llm_impacts`), run for the (min active, min total)
/// and (max active, max total) ends with the PUE range, as EcoLogits does; the provider's zone.
pub fn eco_estimate(
    t: &Tables,
    provider: &str,
    model: &str,
    output_tokens: u64,
    latency_bound_s: Option<f64>,
) -> EcoEstimate {
    eco_estimate_in(t, provider, model, output_tokens, latency_bound_s, None)
}

/// [`eco_estimate`] in the zone the user chose (`None`: the provider's datacenter zone).
pub fn eco_estimate_in(
    t: &Tables,
    provider: &str,
    model: &str,
    output_tokens: u64,
    latency_bound_s: Option<f64>,
    zone: Option<&super::zone::ZoneChoice>,
) -> EcoEstimate {
    let pick = super::models::pick(t, provider, model);
    let mut warnings = pick.warnings;
    let (arch, dep, matched) = (pick.architecture, pick.deployment, pick.matched);
    let dc = t
        .providers
        .get(&pick.datacenter)
        .cloned()
        .unwrap_or(ProviderDc {
            zone: "WOR".into(),
            pue: Range::exact(1.0),
            source: "no datacenter data: world mix, PUE 1.0".into(),
        });
    let (zone, intensity, zone_source, zw) = super::zone::apply(t, &dc, zone);
    warnings.extend(zw);
    let (active, total) = arch.active_total();
    let n = output_tokens as f64;
    let lo = eco_run(
        &t.eco,
        active.min(),
        total.min(),
        n,
        dep,
        latency_bound_s,
        dc.pue.min(),
        intensity,
    );
    let hi = eco_run(
        &t.eco,
        active.max(),
        total.max(),
        n,
        dep,
        latency_bound_s,
        dc.pue.max(),
        intensity,
    );
    EcoEstimate {
        matched,
        active,
        total,
        tokens: output_tokens,
        latency_bound_s,
        deployment: dep,
        energy_per_token_wh: Range::span(lo.e_tok_wh, hi.e_tok_wh),
        gen_time_s: Range::span(lo.dt.min(hi.dt), lo.dt.max(hi.dt)),
        gpus: (lo.n, hi.n),
        pue: dc.pue,
        zone,
        intensity,
        energy_kwh: Range::span(lo.energy, hi.energy),
        op_kg: Range::span(lo.op, hi.op),
        emb_kg: Range::span(lo.emb.min(hi.emb), lo.emb.max(hi.emb)),
        warnings,
        resolution: pick.resolution,
        zone_source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        ((a - b) / b).abs() < rel
    }

    #[test]
    fn builtin_tables_parse() {
        let t = Tables::builtin();
        assert!(t.profiles.iter().any(|p| p.model == "*"));
        assert!(t.model("openai", "gpt-4o-mini").is_some());
        // 1.47 + 102.4 + 576.0 + 14.652 = 694.522 kg (seed TOTAL_HARDWARE_CO2)
        assert!(close(t.seed.fabrication_total_kg(), 694.522, 1e-12));
    }

    #[test]
    fn seed_method_groq_by_hand() {
        let t = Tables::builtin();
        // llama-3.3-70b-versatile, t = 2 s: 576 × 0.185 kW = 106.56 kW;
        // E = 2/3600 × 106.56 × 1.1 = 0.065120 kWh; op = E × 0.4 = 0.026048 kg;
        // hw = 2 / (3600 × 35064) × 694.522 = 1.10042e-5 kg.
        let e = seed_estimate(&t, "llama-3.3-70b-versatile", 2.0);
        assert!(e.matched);
        assert!(close(e.energy_kwh, 0.06512, 1e-4), "{}", e.energy_kwh);
        assert!(close(e.op_kg, 0.026048, 1e-4), "{}", e.op_kg);
        assert!(close(e.emb_kg, 1.10042e-5, 1e-4), "{}", e.emb_kg);
    }

    #[test]
    fn seed_method_fallback_reproduces_seed_sample() {
        let t = Tables::builtin();
        // seed data/session_data.json @9880d20: gpt-3.5-turbo, tdev 4.149341106414795 s, carbon
        // 0.27640059705175346 g, computed with the fallback profile of the time (1 × 0.5 kW, 0.4).
        // Ours: E = 4.14934/3600 × 0.5 × 1.1 = 6.33927e-4 kWh; op = 2.53571e-4 kg;
        // hw = 4.14934/(3600 × 35064) × 694.522 = 2.28301e-5 kg; total 0.276401 g.
        let e = seed_estimate(&t, "some-unknown-model", 4.149341106414795);
        assert!(!e.matched);
        assert!(close(e.total_kg() * 1000.0, 0.27640059705175346, 1e-9));
    }

    #[test]
    fn seed_profile_lookup_strips_hf_suffix_only_as_last_resort() {
        let t = Tables::builtin();
        assert_eq!(
            t.profile("mistralai/Mistral-7B-Instruct-v0.2:other")
                .unwrap()
                .country,
            "fr"
        );
        assert!(t.profile("gpt-4o").is_none());
    }

    #[test]
    fn ecologits_worked_example_gpt4o_mini() {
        // llm-footprint.md §1.11: gpt-4o-mini, 500 tokens, latency 5 s, USA, PUE 1.2, tps 79, ttft
        // 0.54: L = 0.54 + 500/79 = 6.87 s → ΔT = 5 s; M = 2.4 × 8 = 19.2 GB / 2.4 × 28 = 67.2 GB →
        // n = 1; E_gpu = 500 × (1.1665e-6 × e^(−0.7172) × P + 4.0529e-5)/1000 = 2.2542e-5 /
        // 2.8236e-5 kWh; E_srv = 5/3600 × 1.2 × 1/8 / 64 = 3.2552e-6; E = 1.2 × (E_srv + E_gpu) =
        // 3.0957e-5 – 3.7790e-5 kWh; usage ×0.3844 = 1.1900e-5 – 1.4526e-5 kg;
        // embodied = 5 × (5700/8 + 273)/(94 608 000 × 64) = 8.138e-7 kg.
        let t = Tables::builtin();
        let e = eco_estimate(&t, "openai", "gpt-4o-mini-2024-07-18", 500, Some(5.0));
        // EcoLogits registers the dated name itself (tps 63 instead of 79: ΔT is still 5 s)
        assert_eq!(
            e.matched,
            ModelMatch::Table("gpt-4o-mini-2024-07-18".into())
        );
        assert_eq!(e.gpus, (1, 1));
        assert!(
            close(e.energy_kwh.min(), 3.0957e-5, 1e-4),
            "{:?}",
            e.energy_kwh
        );
        assert!(
            close(e.energy_kwh.max(), 3.7790e-5, 1e-4),
            "{:?}",
            e.energy_kwh
        );
        assert!(close(e.op_kg.min(), 1.1900e-5, 1e-3));
        assert!(close(e.op_kg.max(), 1.4526e-5, 1e-3));
        assert!(close(e.emb_kg.min(), 8.138e-7, 1e-3));
        assert!(close(e.total_kg().max(), 1.5340e-5, 1e-3));
    }

    #[test]
    fn ecologits_regression_branch_and_gpu_count() {
        // mistralai/Mistral-7B-Instruct-v0.2 (7.24B, no tps), hf (PUE 1.09–1.14, USA), 100 tokens,
        // no latency bound. f_E = 1.1665273e-6 × e^(−0.0112059 × 64) × 7.24 + 4.0529281e-5
        //   = 1.1665273e-6 × 0.4881207 × 7.24 + 4.0529281e-5 = 4.1225e-6 + 4.0529e-5 = 4.46518e-5 Wh
        // E_gpu = 100 × 4.46518e-5 / 1000 = 4.46518e-6 kWh
        // t_tok = 6.785088e-4 × 7.24 + 3.119310e-4 × 64 + 0.0194737 = 0.0049124 + 0.0199636 + 0.0194737
        //   = 0.0443497 s → ΔT = 4.43497 s; M = 2.4 × 7.24 = 17.4 GB → n = 1
        // E_srv = 4.43497/3600 × 1.2 × 1/8 / 64 = 2.88735e-6 kWh
        // E = PUE × (2.88735e-6 + 4.46518e-6) = 1.09 × 7.35253e-6 = 8.01426e-6 (min), × 1.14 = 8.38188e-6 (max)
        let t = Tables::builtin();
        let e = eco_estimate(
            &t,
            "hf",
            "mistralai/Mistral-7B-Instruct-v0.2:featherless-ai",
            100,
            None,
        );
        assert!(close(e.energy_per_token_wh.min(), 4.46518e-5, 1e-4));
        assert!(
            close(e.gen_time_s.min(), 4.43497, 1e-4),
            "{:?}",
            e.gen_time_s
        );
        assert!(
            close(e.energy_kwh.min(), 8.01426e-6, 1e-4),
            "{:?}",
            e.energy_kwh
        );
        assert!(
            close(e.energy_kwh.max(), 8.38188e-6, 1e-4),
            "{:?}",
            e.energy_kwh
        );
        // gpt-4 (1760B total): M = 4224 GB → 52.8 → 53 → 2^6 = 64 GPUs
        assert_eq!(gpus_required(&t.eco, 1760.0), 64);
        assert_eq!(gpus_required(&t.eco, 70.0), 4); // 168 GB → 3 → 4
    }

    #[test]
    fn unknown_model_warns_and_uses_name_or_fallback() {
        let t = Tables::builtin();
        let e = eco_estimate(&t, "ollama", "qwen2.5:14b", 10, None);
        assert_eq!(e.matched, ModelMatch::FromName(14.0));
        assert!(e.warnings[0].contains("not in the model table"));
        let e = eco_estimate(&t, "openai", "mystery", 10, None);
        assert_eq!(e.matched, ModelMatch::Fallback);
        assert!(e.energy_kwh.is_range());
        assert_eq!(params_from_name("mixtral-8x7b-instruct"), Some(56.0));
        assert_eq!(params_from_name("llama-3.3-70b-versatile"), Some(70.0));
        assert_eq!(params_from_name("gpt-4o"), None);
        // sizes in millions, decimals, experts (SmolLM2's and Mixtral's names as published)
        assert_eq!(params_from_name("SmolLM2-135M-Instruct"), Some(0.135));
        assert_eq!(
            params_from_name("HuggingFaceTB/SmolLM2-360M-Instruct"),
            Some(0.36)
        );
        assert_eq!(params_from_name("smollm2:135m"), Some(0.135));
        assert_eq!(params_from_name("HuggingFaceTB/SmolLM2-1.7B"), Some(1.7));
        assert_eq!(params_from_name("Mixtral-8x7B-Instruct"), Some(56.0));
        assert_eq!(params_from_name("mixtral-8x22b"), Some(176.0));
        // a context length in millions after the size in billions is not the size
        assert_eq!(params_from_name("Qwen2.5-7B-Instruct-1M"), Some(7.0));
        assert_eq!(params_from_name("Qwen3-30B-A3B"), Some(30.0));
        // 'm' inside a word is no unit
        assert_eq!(params_from_name("gpt-4o-mini"), None);
        assert_eq!(params_from_name("llama3.2"), None);
    }

    #[test]
    fn user_files_override_and_bad_files_warn() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("p.csv"),
            "model,device_count,device_power_kw,chip,country,source\ngpt-4o,2,1.0,X,fr,mine\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("m.json"), "{not json").unwrap();
        let mut s = Settings::empty();
        s.set(PROFILES_FILE_KEY, "p.csv");
        s.set(MODELS_FILE_KEY, "m.json");
        let (t, w) = Tables::load(&s, dir.path());
        assert_eq!(t.profile("gpt-4o").unwrap().device_count, 2.0);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("m.json"));
        assert!(t.model("openai", "gpt-4o").is_some());
    }
}
