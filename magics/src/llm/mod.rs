//! `%llm`: providers, the model tables and per-request footprints.
//!
//! * [`providers`]: provider keys, the seed's variables (`OPENAI_API_KEY`, `OPENAI_MODEL`, …),
//!   base-URL overrides, `provider:model` resolution;
//! * [`client`]: the [`client::Provider`] trait, HTTP for both wire formats, SSE, retries, faults;
//! * [`footprint`]: both methods of METHODOLOGY.md §3 and their data tables;
//! * [`history`]: the session's requests, kept under `data/`.
//! * [`local`]: the measured energy of a request to a server on this machine.
//! * [`session`]: [`session::LlmSession`], a kernel session's `%llm` state, both footprints of an
//!   answer, history entries and rows.
//!
//! This module parses the magics' arguments ([`parse_line`], [`parse_cell`]); the kernel runs them.

use crate::error::UsageError;
use crate::registry::MagicSpec;
use clap::{Arg, ArgAction, Command};
use providers::{LlmConfig, ModelSpec, ProviderKind};
use std::time::Duration;

pub mod client;
#[cfg(test)]
mod fault_tests;
pub mod footprint;
pub mod history;
pub mod local;
pub mod models;
pub mod providers;
pub mod row;
pub mod run;
pub mod session;
#[cfg(test)]
mod wire_tests;
pub mod zone;

/// Settings key of the default per-request timeout (s).
pub const TIMEOUT_KEY: &str = "LLM_TIMEOUT_S";
/// Default per-request timeout (s) when neither `--timeout` nor `LLM_TIMEOUT_S` is set: between
/// the Groq SDK's 60 s and the OpenAI SDK's 600 s defaults (llm-footprint.md §3.1).
pub const DEFAULT_TIMEOUT_S: f64 = 120.0;

fn ask_args(cmd: Command) -> Command {
    cmd.arg(
        Arg::new("models")
            .long("models")
            .short('m')
            .value_name("P:M,P:M")
            .help("Models to ask, comma-separated PROVIDER:MODEL (default: the default model)"),
    )
    .arg(
        Arg::new("all")
            .long("all")
            .action(ArgAction::SetTrue)
            .conflicts_with("models")
            .help("Ask every configured model of every provider with a key"),
    )
    .arg(
        Arg::new("system")
            .long("system")
            .short('s')
            .value_name("TEXT")
            .help("System prompt"),
    )
    .arg(
        Arg::new("max-tokens")
            .long("max-tokens")
            .value_name("N")
            .value_parser(clap::value_parser!(u32).range(1..))
            .help("Limit on output tokens"),
    )
    .arg(
        Arg::new("temperature")
            .long("temperature")
            .short('t')
            .value_name("T")
            .value_parser(parse_temperature)
            .help("Sampling temperature (0 to 2)"),
    )
    .arg(
        Arg::new("timeout")
            .long("timeout")
            .value_name("S")
            .value_parser(parse_positive)
            .help("Per-request timeout in seconds (default LLM_TIMEOUT_S or 120)"),
    )
    .arg(zone_arg())
    .arg(
        Arg::new("no-stream")
            .long("no-stream")
            .action(ArgAction::SetTrue)
            .help("Ask for the whole answer at once instead of a stream"),
    )
}

/// `--zone ISO3|WOR` (EcoLogits' `electricity_mix_zone`), checked against its electricity mixes.
fn zone_arg() -> Arg {
    Arg::new("zone")
        .long("zone")
        .value_name("ISO3|WOR")
        .value_parser(zone::parse_zone)
        .help("Electricity zone of the tokens × parameters estimate (default LLM_ZONE, else the provider's datacenter zone)")
}

fn parse_temperature(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=2.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a number between 0 and 2")),
    }
}

fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// The prompt form: options, then `[PROVIDER:MODEL] PROMPT...` (line) or model specs (cell).
fn ask_cmd() -> Command {
    ask_args(Command::new("llm").no_binary_name(true)).arg(
        Arg::new("words")
            .num_args(0..)
            .trailing_var_arg(true)
            .value_name("[PROVIDER:MODEL] PROMPT")
            .help("%llm: an optional PROVIDER:MODEL then the prompt; %%llm: optional PROVIDER:MODEL names (the cell body is the prompt)"),
    )
}

fn models_cmd() -> Command {
    Command::new("models").no_binary_name(true).about(
        "Configured providers and models, and whether each provider has a key (never the key)",
    )
}

fn estimate_cmd() -> Command {
    Command::new("estimate")
        .no_binary_name(true)
        .about("Footprint of a hypothetical request, offline (both methods)")
        .arg(
            Arg::new("model")
                .required(true)
                .value_name("PROVIDER:MODEL"),
        )
        .arg(
            Arg::new("tokens")
                .long("tokens")
                .short('n')
                .required(true)
                .value_name("N")
                .value_parser(clap::value_parser!(u64))
                .help("Output tokens"),
        )
        .arg(
            Arg::new("latency")
                .long("latency")
                .value_name("S")
                .value_parser(parse_positive)
                .help("Request latency in seconds (default: the model's own generation time)"),
        )
        .arg(zone_arg())
}

fn history_cmd() -> Command {
    Command::new("history")
        .no_binary_name(true)
        .about("This notebook's prompts and results, across kernel restarts (kept in data/llm_history.jsonl; this session's are marked)")
        .arg(
            Arg::new("clear")
                .long("clear")
                .action(ArgAction::SetTrue)
                .help("Empty data/llm_history.jsonl (every session's requests; emissions.csv keeps its rows)"),
        )
}

fn summary_cmd() -> Command {
    Command::new("summary").no_binary_name(true).about(
        "Session totals and charts: mean emissions and latency per model, emissions per call",
    )
}

/// The full command (help text of `%llm?`).
fn help_cmd() -> Command {
    ask_cmd()
        .about("Ask LLMs and compare their answers, latency, tokens and footprint (two methods)")
        .subcommand(models_cmd())
        .subcommand(estimate_cmd())
        .subcommand(history_cmd())
        .subcommand(summary_cmd())
        .after_long_help(
            "Forms:\n  %llm PROVIDER:MODEL PROMPT...   one model\n  %llm PROMPT...                  the default model (LLM_DEFAULT, else the first model of the first provider with a key)\n  %%llm [--models P:M,P:M | --all] [--system TEXT] [--max-tokens N] [--temperature T] [--timeout S] [--zone ISO3|WOR]\n                                  the cell body is the prompt; models run concurrently\n  %llm models | estimate P:M --tokens N [--latency S] [--zone ISO3|WOR] | history [--clear] | summary\n\nProviders: openai, gemini, groq, hf (Hugging Face router, MODEL may end in :provider), ollama, local (any OpenAI-compatible server).\nModels: EcoLogits 0.11.3's whole repository; dated names, models/ and provider/ prefixes, :provider suffixes and case are understood; an unknown name uses the size in its name (70b, 1.7B, 8x7b, 135M), else the nearest registered name (EcoLogits' LiteLLM rule; for a Hugging Face org/name, the nearest of its own family, else the generic fallback). The report says which model was used and why.\nVariables (.env or environment): <P>_API_KEY, <P>_MODEL (comma-separated, first = default; a model outside it is sent with a note), <P>_BASE_URL with P = OPENAI, GEMINI, GROQ, HUGGINGFACE, OLLAMA, LLM_LOCAL; LLM_TIMEOUT_S, LLM_ZONE, LLM_MAX_RETRIES, LLM_PROFILES_FILE, LLM_MODELS_FILE, LLM_SEED_FILE.\nOptions come before the prompt and -- ends them (%llm -- --not-an-option); the prompt is sent exactly as typed, quotes, apostrophes, # and $ included.\nTo send a prompt that starts with models/history/summary/estimate, write %llm -- PROMPT; one that starts with 'word:word', use %%llm.",
        )
}

/// The spec of `%llm` / `%%llm` (help, options, summary).
pub fn magic_spec() -> MagicSpec {
    MagicSpec {
        name: "llm",
        summary: "Ask LLMs (OpenAI, Gemini, Groq, Hugging Face, Ollama, any OpenAI-compatible server); compare answers, latency, tokens, energy and CO2 by two methods",
        command: help_cmd,
    }
}

/// A request to one or several models.
#[derive(Debug, Clone, PartialEq)]
pub struct AskArgs {
    /// Models, resolved.
    pub models: Vec<ModelSpec>,
    /// The prompt.
    pub prompt: String,
    /// System prompt.
    pub system: Option<String>,
    /// Output token limit.
    pub max_tokens: Option<u32>,
    /// Temperature.
    pub temperature: Option<f64>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Ask for streams.
    pub stream: bool,
    /// `--zone` (checked, upper case).
    pub zone: Option<String>,
    /// The answer's size cap in bytes (`LLM_MAX_ANSWER_BYTES`; the kernel sets it from the
    /// settings).
    pub max_answer_bytes: usize,
}

/// What a `%llm` / `%%llm` invocation asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmCommand {
    /// Send a prompt.
    Ask(AskArgs),
    /// `%llm models`.
    Models,
    /// `%llm estimate`.
    Estimate {
        /// model
        model: ModelSpec,
        /// output tokens
        tokens: u64,
        /// latency (s)
        latency: Option<f64>,
        /// `--zone` (checked, upper case)
        zone: Option<String>,
    },
    /// `%llm history`.
    History {
        /// empty the history file
        clear: bool,
    },
    /// `%llm summary`.
    Summary,
}

/// The form typed: `%llm` or `%%llm`.
fn form(cell: bool) -> &'static str {
    if cell { "%%llm" } else { "%llm" }
}

fn usage(cell: bool, message: impl Into<String>) -> UsageError {
    UsageError::new(form(cell), message)
}

/// True when `w` has the shape `provider:model` (not a URL, not `word:` at the end of a phrase).
fn looks_like_spec(w: &str) -> bool {
    match w.split_once(':') {
        Some((p, m)) => {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                && (ProviderKind::parse(p).is_some() || (!m.is_empty() && !m.starts_with('/')))
        }
        None => false,
    }
}

fn timeout_of(m: &clap::ArgMatches, settings_timeout: Option<f64>) -> Duration {
    let s = m
        .get_one::<f64>("timeout")
        .copied()
        .or(settings_timeout)
        .unwrap_or(DEFAULT_TIMEOUT_S);
    Duration::from_secs_f64(s)
}

fn resolve_list(list: &str, cfg: &LlmConfig, cell: bool) -> Result<Vec<ModelSpec>, UsageError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.push(cfg.resolve(item).map_err(|e| usage(cell, e))?);
    }
    if out.is_empty() {
        return Err(usage(
            cell,
            format!(
                "--models needs at least one PROVIDER:MODEL (providers: {})",
                ProviderKind::accepted()
            ),
        ));
    }
    Ok(out)
}

/// `%llm models | estimate … | history … | summary`, decided on the first words as typed (a
/// prompt such as `history of Rome's ports` is never shell-split).
fn sub(args: &str, cell: bool, cfg: &LlmConfig) -> Option<Result<LlmCommand, UsageError>> {
    let mut words = args.split_whitespace();
    let first = words.next()?;
    let is_sub = match first {
        "estimate" => true,
        "models" | "history" | "summary" => words.next().is_none_or(|w| w.starts_with('-')),
        _ => false,
    };
    if !is_sub {
        return None;
    }
    let argv = match shlex::split(args) {
        Some(v) => v,
        None => return Some(Err(usage(cell, "unbalanced quotes in the arguments"))),
    };
    let rest = &argv[1..];
    if cell {
        return Some(Err(usage(
            true,
            format!("'{first}' is a %llm line command; use %llm {first}"),
        )));
    }
    let cmd = match first {
        "models" => models_cmd(),
        "estimate" => estimate_cmd(),
        "history" => history_cmd(),
        _ => summary_cmd(),
    };
    let m = match cmd.try_get_matches_from(rest) {
        Ok(m) => m,
        Err(e) => {
            return Some(Err(UsageError::from_clap(
                format!("%llm {first}"),
                "%llm",
                &e,
            )));
        }
    };
    Some(Ok(match first {
        "models" => LlmCommand::Models,
        "history" => LlmCommand::History {
            clear: m.get_flag("clear"),
        },
        "summary" => LlmCommand::Summary,
        _ => {
            let spec = m.get_one::<String>("model").cloned().unwrap_or_default();
            let model = match cfg.resolve_any(&spec) {
                Ok(s) => s,
                Err(e) => return Some(Err(UsageError::new("%llm estimate", e))),
            };
            LlmCommand::Estimate {
                model,
                tokens: m.get_one::<u64>("tokens").copied().unwrap_or(0),
                latency: m.get_one::<f64>("latency").copied(),
                zone: m.get_one::<String>("zone").cloned(),
            }
        }
    }))
}

/// The end (byte index) of the shell word at the start of `s`: quotes and backslashes as a
/// shell reads them, so a quoted option value (`--system 'be terse'`) is one word.
fn shell_word_end(s: &str) -> usize {
    let (mut in_s, mut in_d, mut escaped) = (false, false, false);
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if !in_s => escaped = true,
            '\'' if !in_d => in_s = !in_s,
            '"' if !in_s => in_d = !in_d,
            c if c.is_whitespace() && !in_s && !in_d => return i,
            _ => {}
        }
    }
    s.len()
}

/// Whether the option word `w` (`--name`, `-x`) takes the next word as its value.
fn takes_value(cmd: &Command, w: &str) -> bool {
    let arg = match w.strip_prefix("--") {
        Some(long) if !long.contains('=') => {
            cmd.get_arguments().find(|a| a.get_long() == Some(long))
        }
        Some(_) => None,
        None => {
            let mut cs = w.chars().skip(1);
            match (cs.next(), cs.next()) {
                (Some(c), None) => cmd.get_arguments().find(|a| a.get_short() == Some(c)),
                // `-m…`: the value is attached
                _ => None,
            }
        }
    };
    arg.is_some_and(|a| a.get_action().takes_values())
}

/// The options of a `%llm` line and the text after them, which is returned exactly as typed.
///
/// Options are read (as shell words, so their values may be quoted) up to the first word that is
/// not an option, or up to `--`; the rest of the line is not split at all: a prompt is text, and
/// its apostrophes, quotes, `#` and `$` are the user's (an apostrophe is not an open quote).
fn split_options(args: &str) -> Result<(Vec<String>, &str), UsageError> {
    let cmd = ask_cmd();
    let mut opts = Vec::new();
    let mut rest = args.trim_start();
    let mut value_next = false;
    while !rest.is_empty() {
        let end = shell_word_end(rest);
        let raw = &rest[..end];
        if !value_next {
            if raw == "--" {
                rest = rest[end..].trim_start();
                break;
            }
            if !raw.starts_with('-') || raw == "-" {
                break;
            }
        }
        let word = shlex::split(raw)
            .filter(|w| w.len() <= 1)
            .ok_or_else(|| usage(false, "unbalanced quotes in the arguments"))?
            .pop()
            .unwrap_or_default();
        value_next = !value_next && takes_value(&cmd, &word);
        opts.push(word);
        rest = rest[end..].trim_start();
    }
    Ok((opts, rest))
}

/// Parses `%llm ARGS`: options, an optional `PROVIDER:MODEL`, then the prompt as typed.
pub fn parse_line(
    args: &str,
    cfg: &LlmConfig,
    settings_timeout: Option<f64>,
) -> Result<LlmCommand, UsageError> {
    if args.trim().is_empty() {
        return Err(usage(
            false,
            "empty prompt: %llm [PROVIDER:MODEL] PROMPT..., or %llm models | estimate | history | summary",
        ));
    }
    if let Some(r) = sub(args, false, cfg) {
        return r;
    }
    let (opts, mut prompt) = split_options(args)?;
    let m = ask_cmd()
        .try_get_matches_from(&opts)
        .map_err(|e| UsageError::from_clap(form(false), form(false), &e))?;
    let mut models = match (m.get_one::<String>("models"), m.get_flag("all")) {
        (Some(l), _) => resolve_list(l, cfg, false)?,
        (None, true) => all_or_err(cfg, false)?,
        _ => Vec::new(),
    };
    let first = &prompt[..prompt.find(char::is_whitespace).unwrap_or(prompt.len())];
    if looks_like_spec(first) {
        let spec = cfg.resolve(first).map_err(|e| {
            usage(
                false,
                format!("{e} (to send a prompt starting with '{first}', use %%llm)"),
            )
        })?;
        models.push(spec);
        prompt = prompt[first.len()..].trim_start();
    }
    if prompt.trim().is_empty() {
        return Err(usage(
            false,
            "empty prompt: %llm [PROVIDER:MODEL] PROMPT...",
        ));
    }
    if models.is_empty() {
        models.push(cfg.default_model().map_err(|e| usage(false, e))?);
    }
    Ok(LlmCommand::Ask(ask_from(
        &m,
        models,
        prompt.to_string(),
        settings_timeout,
    )))
}

fn all_or_err(cfg: &LlmConfig, cell: bool) -> Result<Vec<ModelSpec>, UsageError> {
    let v = cfg.all_models();
    if v.is_empty() {
        return Err(usage(
            cell,
            format!(
                "--all: no provider has both a key and a model list (set e.g. OPENAI_API_KEY and OPENAI_MODEL; providers: {})",
                ProviderKind::accepted()
            ),
        ));
    }
    Ok(v)
}

fn ask_from(
    m: &clap::ArgMatches,
    models: Vec<ModelSpec>,
    prompt: String,
    settings_timeout: Option<f64>,
) -> AskArgs {
    let mut uniq: Vec<ModelSpec> = Vec::new();
    for s in models {
        if !uniq.contains(&s) {
            uniq.push(s);
        }
    }
    AskArgs {
        models: uniq,
        prompt,
        system: m.get_one::<String>("system").cloned(),
        max_tokens: m.get_one::<u32>("max-tokens").copied(),
        temperature: m.get_one::<f64>("temperature").copied(),
        timeout: timeout_of(m, settings_timeout),
        stream: !m.get_flag("no-stream"),
        zone: m.get_one::<String>("zone").cloned(),
        max_answer_bytes: client::DEFAULT_MAX_ANSWER_BYTES,
    }
}

/// Parses `%%llm ARGS` with the cell body as the prompt.
pub fn parse_cell(
    args: &str,
    body: &str,
    cfg: &LlmConfig,
    settings_timeout: Option<f64>,
) -> Result<LlmCommand, UsageError> {
    if let Some(r) = sub(args, true, cfg) {
        return r;
    }
    let argv =
        shlex::split(args).ok_or_else(|| usage(true, "unbalanced quotes in the arguments"))?;
    let m = ask_cmd()
        .try_get_matches_from(&argv)
        .map_err(|e| UsageError::from_clap(form(true), form(true), &e))?;
    let mut models = match (m.get_one::<String>("models"), m.get_flag("all")) {
        (Some(l), _) => resolve_list(l, cfg, true)?,
        (None, true) => all_or_err(cfg, true)?,
        _ => Vec::new(),
    };
    for w in m.get_many::<String>("words").into_iter().flatten() {
        models.extend(resolve_list(w, cfg, true)?);
    }
    if body.trim().is_empty() {
        return Err(usage(
            true,
            "empty prompt: the cell body (the lines after %%llm) is the prompt",
        ));
    }
    if models.is_empty() {
        models.push(cfg.default_model().map_err(|e| usage(true, e))?);
    }
    Ok(LlmCommand::Ask(ask_from(
        &m,
        models,
        body.trim_end().to_string(),
        settings_timeout,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn cfg() -> LlmConfig {
        let mut s = Settings::empty();
        s.set("OPENAI_API_KEY", "sk-test");
        s.set("OPENAI_MODEL", "gpt-4o-mini,gpt-4o");
        s.set("GROQ_API_KEY", "gsk-test");
        s.set("GROQ_MODEL", "llama-3.3-70b-versatile");
        LlmConfig::from_settings(&s)
    }

    #[test]
    fn line_forms() {
        let c = cfg();
        let LlmCommand::Ask(a) = parse_line("openai:gpt-4o Say \"hi\"  there", &c, None).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.models[0].model, "gpt-4o");
        assert_eq!(a.prompt, "Say \"hi\"  there");
        let LlmCommand::Ask(a) = parse_line("What is 2+2? Note: be brief", &c, Some(5.0)).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.models[0].to_string(), "openai:gpt-4o-mini");
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert!(matches!(
            parse_line("models", &c, None),
            Ok(LlmCommand::Models)
        ));
        assert!(matches!(
            parse_line("history of rome", &c, None),
            Ok(LlmCommand::Ask(_))
        ));
        assert!(matches!(
            parse_line(
                "estimate groq:llama-3.3-70b-versatile --tokens 100",
                &c,
                None
            ),
            Ok(LlmCommand::Estimate { tokens: 100, .. })
        ));
    }

    fn ask(args: &str) -> AskArgs {
        match parse_line(args, &cfg(), None) {
            Ok(LlmCommand::Ask(a)) => a,
            other => panic!("{args}: {other:?}"),
        }
    }

    #[test]
    fn prompts_are_text_sent_as_typed() {
        for prompt in [
            "What's the capital of France?",
            "Qu'est-ce que l'énergie ? Réponds en français, s'il te plaît",
            "Say \"hi\" and 'bye' # not a comment, costs $5 or ${HOME}",
            "日本の首都は？ 🚀 \\n stays",
            "history of Rome's ports",
            "models can't be trusted",
        ] {
            let a = ask(prompt);
            assert_eq!(a.prompt, prompt);
            assert_eq!(a.models[0].to_string(), "openai:gpt-4o-mini");
            let a = ask(&format!("groq:llama-3.3-70b-versatile {prompt}"));
            assert_eq!(a.prompt, prompt);
            assert_eq!(a.models[0].to_string(), "groq:llama-3.3-70b-versatile");
        }
        // options first (their values may be quoted), then the prompt verbatim
        let a = ask("--system 'be terse' -t 0.5 --max-tokens=7 openai:gpt-4o It's  \"quoted\"");
        assert_eq!(a.system.as_deref(), Some("be terse"));
        assert_eq!(a.temperature, Some(0.5));
        assert_eq!(a.max_tokens, Some(7));
        assert_eq!(a.models[0].model, "gpt-4o");
        assert_eq!(a.prompt, "It's  \"quoted\"");
        // an option word after the prompt has started is prompt text
        assert_eq!(ask("hi --max-tokens 3").prompt, "hi --max-tokens 3");
        assert_eq!(ask("hi --max-tokens 3").max_tokens, None);
    }

    #[test]
    fn double_dash_ends_options() {
        let a = ask("-- --not-an-option");
        assert_eq!(a.prompt, "--not-an-option");
        let a = ask("--max-tokens 5 -- -h is a flag?");
        assert_eq!(
            (a.max_tokens, a.prompt.as_str()),
            (Some(5), "-h is a flag?")
        );
        // after `--`, a first word that names a sub-command is prompt text
        assert_eq!(ask("-- models are wrong").prompt, "models are wrong");
        let e = parse_line("--", &cfg(), None).unwrap_err().to_string();
        assert!(e.contains("empty prompt"), "{e}");
        let e = parse_line("--system 'open", &cfg(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unbalanced quotes"), "{e}");
    }

    #[test]
    fn bad_input_is_one_line_naming_accepted_values() {
        let c = cfg();
        for (args, needle) in [
            ("foo:bar hello", "openai, gemini, groq, hf, ollama, local"),
            ("", "empty prompt"),
            ("openai:gpt-4o", "empty prompt"),
            ("--temperature 9 hi", "between 0 and 2"),
            ("--bogus hi", "--bogus"),
            ("estimate openai:gpt-4o", "--tokens"),
            ("history --nope", "--nope"),
        ] {
            let e = parse_line(args, &c, None).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{args}: {e}");
            assert!(e.contains(needle), "{args}: {e}");
        }
        // a model outside <P>_MODEL is allowed (the kernel shows a note)
        let LlmCommand::Ask(a) = parse_line("openai:gpt-9 hi", &c, None).unwrap() else {
            panic!()
        };
        assert_eq!(a.models[0].model, "gpt-9");
        let LlmCommand::Ask(a) = parse_cell("--models groq:x", "hi", &c, None).unwrap() else {
            panic!()
        };
        assert_eq!(a.models[0].model, "x");
        let e = parse_cell("--max-tokens 0", "hi", &c, None)
            .unwrap_err()
            .to_string();
        assert!(!e.contains('\n') && e.contains("max-tokens"), "{e}");
        let e = parse_cell("", "  \n", &c, None).unwrap_err().to_string();
        assert!(e.contains("empty prompt"), "{e}");
    }

    #[test]
    fn cell_form_models_and_all() {
        let c = cfg();
        let LlmCommand::Ask(a) = parse_cell(
            "--models openai:gpt-4o,groq:llama-3.3-70b-versatile --system 'be terse' --max-tokens 20 --temperature 0.2 --timeout 3",
            "Explain RAPL.\n",
            &c,
            None,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(a.models.len(), 2);
        assert_eq!(a.system.as_deref(), Some("be terse"));
        assert_eq!(a.max_tokens, Some(20));
        assert_eq!(a.prompt, "Explain RAPL.");
        let LlmCommand::Ask(a) = parse_cell("--all", "x", &c, None).unwrap() else {
            panic!()
        };
        assert_eq!(a.models.len(), 3);
    }

    #[test]
    fn help_mentions_subcommands() {
        let h = magic_spec().long_help(crate::registry::MagicKind::Both);
        for w in ["models", "estimate", "history", "summary", "--max-tokens"] {
            assert!(h.contains(w), "{w}");
        }
    }
}
