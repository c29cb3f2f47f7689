//! The `%carbon` / `%%carbon` magics: their clap commands (help texts, `%lsmagic`, README), the
//! parsed forms, and the `CARBON_*` settings.

use super::gpu::NvmlChoice;
use super::intensity;
use super::meter::MeterConfig;
use super::sensor::Scope;
use crate::config::Settings;
use crate::error::{UsageError, clap_message};
use crate::lang::Language;
use crate::registry::MagicSpec;
use clap::{Arg, ArgAction, Command};
use std::path::{Path, PathBuf};

/// Settings keys (`.env`, environment, `%carbon config`).
pub mod keys {
    /// Country of the electricity: alpha-3, alpha-2 or English name (default: world average).
    pub const COUNTRY: &str = "CARBON_COUNTRY";
    /// Power usage effectiveness (default 1.0).
    pub const PUE: &str = "CARBON_PUE";
    /// `process` (default) or `machine`.
    pub const SCOPE: &str = "CARBON_SCOPE";
    /// CPU TDP override, W.
    pub const CPU_TDP: &str = "CARBON_CPU_TDP";
    /// CSV file (default `emissions.csv` in the notebook's folder).
    pub const OUTPUT: &str = "CARBON_OUTPUT";
    /// `project_name` column (default: the notebook folder's name).
    pub const PROJECT: &str = "CARBON_PROJECT";
    /// Powercap root (tests; default `/sys/class/powercap`).
    pub const POWERCAP_ROOT: &str = "CARBON_POWERCAP_ROOT";
    /// `/proc` root (tests; default `/proc`).
    pub const PROC_ROOT: &str = "CARBON_PROC_ROOT";
    /// NVML library path, or `none` (default: the system's).
    pub const NVML_LIB: &str = "CARBON_NVML_LIB";
    /// Seconds before the live display appears (default 1).
    pub const LIVE_AFTER: &str = "CARBON_LIVE_AFTER_S";
}

/// `%carbon config` short names → settings keys.
pub const CONFIG_KEYS: [(&str, &str); 10] = [
    ("country", keys::COUNTRY),
    ("pue", keys::PUE),
    ("scope", keys::SCOPE),
    ("tdp", keys::CPU_TDP),
    ("output", keys::OUTPUT),
    ("project", keys::PROJECT),
    ("powercap_root", keys::POWERCAP_ROOT),
    ("proc_root", keys::PROC_ROOT),
    ("nvml_lib", keys::NVML_LIB),
    ("live_after", keys::LIVE_AFTER),
];

fn accepted_keys() -> String {
    CONFIG_KEYS
        .iter()
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Validates a value of a settings key; returns the normalised value.
pub fn validate(key: &str, value: &str) -> Result<String, String> {
    let v = value.trim();
    match key {
        keys::COUNTRY => {
            if v.is_empty() || v.eq_ignore_ascii_case("world") {
                return Ok(String::new());
            }
            intensity::zone(Some(v)).map(|z| z.iso3)
        }
        keys::PUE => parse_pue(v).map(|x| x.to_string()),
        keys::SCOPE => Scope::parse(v)
            .map(|s| s.name().to_string())
            .ok_or_else(|| format!("invalid scope '{v}' [possible values: process, machine]")),
        keys::CPU_TDP => {
            if v.is_empty() || v.eq_ignore_ascii_case("auto") {
                return Ok(String::new());
            }
            match v.trim_end_matches(['W', 'w']).trim().parse::<f64>() {
                Ok(w) if w > 0.0 && w < 10_000.0 => Ok(w.to_string()),
                _ => Err(format!(
                    "invalid TDP '{v}': a power in watts between 0 and 10000 (or 'auto')"
                )),
            }
        }
        keys::LIVE_AFTER => match v.parse::<f64>() {
            Ok(s) if s >= 0.0 && s.is_finite() => Ok(s.to_string()),
            _ => Err(format!("invalid live_after '{v}': seconds ≥ 0")),
        },
        _ => Ok(v.to_string()),
    }
}

fn parse_pue(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (1.0..=5.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid PUE '{s}': a number from 1.0 (no overhead) to 5.0"
        )),
    }
}

fn parse_country(s: &str) -> Result<String, String> {
    intensity::zone(Some(s)).map(|z| z.iso3)
}

fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// The `%%carbon` command.
pub fn cell_cmd() -> Command {
    Command::new("carbon")
        .no_binary_name(true)
        .about("Run the cell and meter its energy and CO₂; one row per run in emissions.csv")
        .arg(
            Arg::new("language")
                .value_parser(Language::names())
                .help("Language of the cell (default: the kernel's default language)"),
        )
        .arg(
            Arg::new("country")
                .long("country")
                .value_name("COUNTRY")
                .value_parser(parse_country)
                .help("Country of the electricity: ISO 3166-1 alpha-3, alpha-2 or English name (FRA, fr, France); default CARBON_COUNTRY, else the world average 475 gCO₂eq/kWh; %carbon intensity lists them"),
        )
        .arg(
            Arg::new("pue")
                .long("pue")
                .value_name("X")
                .value_parser(parse_pue)
                .allow_negative_numbers(true)
                .help("Power usage effectiveness, 1.0–5.0 (default CARBON_PUE, else 1.0)"),
        )
        .arg(
            Arg::new("scope")
                .long("scope")
                .value_parser(["process", "machine"])
                .help("process: the runtime's process tree (default); machine: everything on the machine"),
        )
        .arg(
            Arg::new("label")
                .long("label")
                .value_name("TEXT")
                .help("A label for the row (CSV column 'label')"),
        )
        .arg(
            Arg::new("repeat")
                .long("repeat")
                .value_name("N")
                .value_parser(clap::value_parser!(u32).range(1..=1000))
                .help("Run the cell N times; report mean and spread (one CSV row per run)"),
        )
        .arg(
            Arg::new("timeout")
                .long("timeout")
                .value_name("S")
                .value_parser(parse_secs)
                .allow_negative_numbers(true)
                .help("Interrupt a run that takes longer than S seconds (still metered and recorded)"),
        )
        .arg(
            Arg::new("no-csv")
                .long("no-csv")
                .action(ArgAction::SetTrue)
                .help("Do not append to emissions.csv"),
        )
}

fn line_cmd() -> Command {
    let cell_help = cell_cmd().name("%%carbon").render_long_help().to_string();
    Command::new("carbon")
        .no_binary_name(true)
        .subcommand(Command::new("on").about("Meter every cell from now on (no %%carbon needed)"))
        .subcommand(Command::new("off").about("Stop metering every cell"))
        .subcommand(Command::new("status").about("Sensors, zone, PUE, scope, output file, session totals"))
        .subcommand(
            Command::new("config")
                .about("Set settings for this session: KEY=VALUE ... (country, pue, scope, tdp, output, project; also CARBON_* names)")
                .arg(Arg::new("pairs").value_name("KEY=VALUE").num_args(0..)),
        )
        .subcommand(
            Command::new("run")
                .about("Run a .py, .java or .rs file metered, output streamed live")
                .arg(Arg::new("file").required(true).value_name("FILE"))
                .arg(
                    Arg::new("timeout")
                        .long("timeout")
                        .value_name("S")
                        .value_parser(parse_secs)
                        .help("Stop it after S seconds"),
                )
                .arg(
                    Arg::new("args")
                        .num_args(0..)
                        .trailing_var_arg(true)
                        .allow_hyphen_values(true)
                        .value_name("ARGS"),
                ),
        )
        .subcommand(
            Command::new("exec")
                .about("Run any program metered (its whole process tree), output streamed live")
                .after_help(
                    "No shell runs the command: `&&`, `|`, `>`, `*` and `$VAR` reach the program \
                     as they are written. To run a shell line, use --shell: \
                     %carbon exec --shell 'make && ./a.out > out.txt' (it runs `sh -c LINE`). \
                     A program that cannot start (not found, not executable) is an error row.",
                )
                .arg(
                    Arg::new("shell")
                        .long("shell")
                        .action(ArgAction::SetTrue)
                        .help("Run COMMAND as one line of `sh -c` (for &&, pipes, redirections, globs, $VARS)"),
                )
                .arg(
                    Arg::new("timeout")
                        .long("timeout")
                        .value_name("S")
                        .value_parser(parse_secs)
                        .help("Stop it after S seconds"),
                )
                .arg(
                    Arg::new("command")
                        .required(true)
                        .num_args(1..)
                        .trailing_var_arg(true)
                        .allow_hyphen_values(true)
                        .value_name("COMMAND"),
                ),
        )
        .subcommand(Command::new("summary").about("Totals and a chart of every metered cell of this session, by language"))
        .subcommand(Command::new("intensity").about("Carbon intensity of electricity of every known country (table, world map), the configured zone marked"))
        .subcommand(
            Command::new("csv")
                .about("Where emissions.csv is, how many rows, the last rows")
                .arg(
                    Arg::new("rows")
                        .long("rows")
                        .value_name("N")
                        .value_parser(clap::value_parser!(usize))
                        .help("How many of the last rows to show (default 5)"),
                ),
        )
        .after_long_help(format!(
            "Cell form:\n{cell_help}\nSettings (.env, environment, or %carbon config): CARBON_COUNTRY, CARBON_PUE, CARBON_SCOPE, CARBON_CPU_TDP, CARBON_OUTPUT, CARBON_PROJECT; for tests and special set-ups CARBON_POWERCAP_ROOT, CARBON_PROC_ROOT, CARBON_NVML_LIB (path or 'none'), CARBON_LIVE_AFTER_S.\nMethod and sources: emissions = energy × PUE × carbon intensity; see 'how this was computed' under each report."
        ))
}

/// The spec of `%carbon` / `%%carbon` (help, options, summary).
pub fn magic_spec() -> MagicSpec {
    MagicSpec {
        name: "carbon",
        summary: "Meter a cell's energy (CPU, RAM, GPU) and CO₂, record it in emissions.csv, report it inline; %carbon on|off|status|config|run|exec|summary|csv|intensity",
        command: line_cmd,
    }
}

/// Options of `%%carbon`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellArgs {
    /// `python` / `java` / `rust`.
    pub language: Option<String>,
    /// ISO3.
    pub country: Option<String>,
    /// PUE.
    pub pue: Option<f64>,
    /// Scope.
    pub scope: Option<Scope>,
    /// Label.
    pub label: Option<String>,
    /// Runs.
    pub repeat: u32,
    /// Seconds.
    pub timeout: Option<f64>,
    /// Skip the CSV.
    pub no_csv: bool,
}

/// `%carbon …`.
#[derive(Debug, Clone, PartialEq)]
pub enum LineCommand {
    /// Meter every cell.
    On,
    /// Stop.
    Off,
    /// Show state.
    Status,
    /// Set (key, validated value) pairs; empty: show the settings.
    Config(Vec<(String, String)>),
    /// Run a file.
    Run {
        /// the file
        file: PathBuf,
        /// its arguments
        args: Vec<String>,
        /// seconds
        timeout: Option<f64>,
    },
    /// Run a program.
    Exec {
        /// program and arguments
        argv: Vec<String>,
        /// seconds
        timeout: Option<f64>,
    },
    /// Session chart.
    Summary,
    /// `%carbon intensity`: the intensity table and the world map.
    Intensity,
    /// CSV view.
    Csv {
        /// last rows to show
        rows: usize,
    },
}

/// Parses `%%carbon ARGS`.
pub fn parse_cell_args(args: &str) -> Result<CellArgs, UsageError> {
    let argv = shlex::split(args)
        .ok_or_else(|| UsageError::new("%%carbon", "unbalanced quotes in the arguments"))?;
    let m = cell_cmd()
        .try_get_matches_from(&argv)
        .map_err(|e| UsageError::from_clap("%%carbon", "%%carbon", &e))?;
    Ok(CellArgs {
        language: m.get_one::<String>("language").cloned(),
        country: m.get_one::<String>("country").cloned(),
        pue: m.get_one::<f64>("pue").copied(),
        scope: m.get_one::<String>("scope").and_then(|s| Scope::parse(s)),
        label: m.get_one::<String>("label").cloned(),
        repeat: m.get_one::<u32>("repeat").copied().unwrap_or(1),
        timeout: m.get_one::<f64>("timeout").copied(),
        no_csv: m.get_flag("no-csv"),
    })
}

/// Parses `%carbon ARGS` (no subcommand: status).
pub fn parse_line_args(args: &str) -> Result<LineCommand, UsageError> {
    let argv = shlex::split(args)
        .ok_or_else(|| UsageError::new("%carbon", "unbalanced quotes in the arguments"))?;
    if argv.is_empty() {
        return Ok(LineCommand::Status);
    }
    let m = line_cmd().try_get_matches_from(&argv).map_err(|e| {
        let mut msg = clap_message(&e);
        if msg.contains("unrecognized subcommand") && !msg.contains("on, off") {
            msg.push_str(
                " [possible values: on, off, status, config, run, exec, summary, csv, intensity]",
            );
        }
        UsageError::new("%carbon", format!("{msg} (see %carbon?)"))
    })?;
    let Some((name, sub)) = m.subcommand() else {
        return Ok(LineCommand::Status);
    };
    Ok(match name {
        "on" => LineCommand::On,
        "off" => LineCommand::Off,
        "status" => LineCommand::Status,
        "summary" => LineCommand::Summary,
        "intensity" => LineCommand::Intensity,
        "csv" => LineCommand::Csv {
            rows: sub.get_one::<usize>("rows").copied().unwrap_or(5),
        },
        "config" => {
            let mut out = Vec::new();
            for p in sub.get_many::<String>("pairs").into_iter().flatten() {
                let Some((k, v)) = p.split_once('=') else {
                    return Err(UsageError::new(
                        "%carbon config",
                        format!("'{p}' is not KEY=VALUE (keys: {})", accepted_keys()),
                    ));
                };
                let key = resolve_key(k.trim()).ok_or_else(|| {
                    UsageError::new(
                        "%carbon config",
                        format!(
                            "unknown key '{}' [possible values: {}]",
                            k.trim(),
                            accepted_keys()
                        ),
                    )
                })?;
                let v = validate(key, v).map_err(|e| UsageError::new("%carbon config", e))?;
                out.push((key.to_string(), v));
            }
            LineCommand::Config(out)
        }
        "run" => LineCommand::Run {
            file: PathBuf::from(sub.get_one::<String>("file").cloned().unwrap_or_default()),
            args: sub
                .get_many::<String>("args")
                .map(|a| a.cloned().collect())
                .unwrap_or_default(),
            timeout: sub.get_one::<f64>("timeout").copied(),
        },
        _ => {
            let words: Vec<String> = sub
                .get_many::<String>("command")
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            let argv = if sub.get_flag("shell") {
                vec!["sh".into(), "-c".into(), words.join(" ")]
            } else {
                words
            };
            LineCommand::Exec {
                argv,
                timeout: sub.get_one::<f64>("timeout").copied(),
            }
        }
    })
}

/// `country` or `CARBON_COUNTRY` → `CARBON_COUNTRY`.
pub fn resolve_key(k: &str) -> Option<&'static str> {
    CONFIG_KEYS.iter().find_map(|(short, full)| {
        (k.eq_ignore_ascii_case(short) || k.eq_ignore_ascii_case(full)).then_some(*full)
    })
}

/// The carbon settings of a session, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonConfig {
    /// ISO3, None for the world average.
    pub country: Option<String>,
    /// PUE.
    pub pue: f64,
    /// Where rows go.
    pub output: PathBuf,
    /// project_name.
    pub project: String,
    /// Seconds before the live display.
    pub live_after_s: f64,
    /// The meter's part.
    pub meter: MeterConfig,
}

impl CarbonConfig {
    /// Resolves settings; bad values fall back to defaults with a warning each.
    pub fn from_settings(s: &Settings, workdir: &Path) -> (CarbonConfig, Vec<String>) {
        let mut warnings = Vec::new();
        let mut get = |key: &str| -> Option<String> {
            let raw = s.get(key)?;
            match validate(key, raw) {
                Ok(v) if v.is_empty() => None,
                Ok(v) => Some(v),
                Err(e) => {
                    warnings.push(format!("{key}: {e}; using the default"));
                    None
                }
            }
        };
        let country = get(keys::COUNTRY);
        let pue = get(keys::PUE).and_then(|v| v.parse().ok()).unwrap_or(1.0);
        let scope = get(keys::SCOPE)
            .and_then(|v| Scope::parse(&v))
            .unwrap_or_default();
        let tdp_w = get(keys::CPU_TDP).and_then(|v| v.parse().ok());
        let live_after_s = get(keys::LIVE_AFTER)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        let abs = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { workdir.join(p) }
        };
        let output = abs(get(keys::OUTPUT).unwrap_or_else(|| "emissions.csv".into()));
        let project = get(keys::PROJECT).unwrap_or_else(|| {
            workdir
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| "carbon-kernel".into())
        });
        let d = MeterConfig::default();
        let meter = MeterConfig {
            scope,
            tdp_w,
            powercap_root: get(keys::POWERCAP_ROOT).map(abs).unwrap_or(d.powercap_root),
            proc_root: get(keys::PROC_ROOT).map(abs).unwrap_or(d.proc_root),
            nvml: match get(keys::NVML_LIB) {
                None => NvmlChoice::System,
                Some(v) if v.eq_ignore_ascii_case("none") => NvmlChoice::Disabled,
                Some(v) => NvmlChoice::Path(v),
            },
        };
        (
            CarbonConfig {
                country,
                pue,
                output,
                project,
                live_after_s,
                meter,
            },
            warnings,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_args_parse_and_bad_values_are_one_line() {
        let a = parse_cell_args("java --country fra --pue 1.2 --scope machine --label 'my run' --repeat 3 --timeout 2.5 --no-csv").unwrap();
        assert_eq!(a.language.as_deref(), Some("java"));
        assert_eq!(a.country.as_deref(), Some("FRA"));
        assert_eq!(a.pue, Some(1.2));
        assert_eq!(a.scope, Some(Scope::Machine));
        assert_eq!(a.label.as_deref(), Some("my run"));
        assert_eq!((a.repeat, a.timeout, a.no_csv), (3, Some(2.5), true));
        assert_eq!(parse_cell_args("").unwrap().repeat, 1);
        for (args, needles) in [
            ("--pue -1", vec!["--pue", "1.0"]),
            ("--pue 0.5", vec!["--pue", "5.0"]),
            ("--country XXX", vec!["XXX", "FRA"]),
            ("--scope galaxy", vec!["galaxy", "process", "machine"]),
            ("cobol", vec!["cobol", "python", "java", "rust"]),
            ("--bogus", vec!["--bogus"]),
            ("--repeat 0", vec!["--repeat"]),
            ("--timeout -3", vec!["--timeout"]),
        ] {
            let e = parse_cell_args(args).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{args}: {e}");
            assert!(e.starts_with("UsageError: %%carbon"), "{args}: {e}");
            for n in needles {
                assert!(e.contains(n), "{args}: {e} lacks {n}");
            }
        }
    }

    #[test]
    fn line_args_parse_and_bad_values_are_one_line() {
        assert_eq!(parse_line_args("").unwrap(), LineCommand::Status);
        assert_eq!(parse_line_args("on").unwrap(), LineCommand::On);
        assert_eq!(
            parse_line_args("config country=deu pue=1.4 CARBON_SCOPE=machine tdp=65W").unwrap(),
            LineCommand::Config(vec![
                (keys::COUNTRY.into(), "DEU".into()),
                (keys::PUE.into(), "1.4".into()),
                (keys::SCOPE.into(), "machine".into()),
                (keys::CPU_TDP.into(), "65".into()),
            ])
        );
        assert_eq!(
            parse_line_args("exec sh -c 'echo hi' --x").unwrap(),
            LineCommand::Exec {
                argv: vec!["sh".into(), "-c".into(), "echo hi".into(), "--x".into()],
                timeout: None
            }
        );
        assert_eq!(
            parse_line_args("exec --shell 'echo a && echo b' 'c'").unwrap(),
            LineCommand::Exec {
                argv: vec!["sh".into(), "-c".into(), "echo a && echo b c".into()],
                timeout: None
            }
        );
        assert!(matches!(
            parse_line_args("run --timeout 3 script.py a -b").unwrap(),
            LineCommand::Run { timeout: Some(3.0), ref args, .. } if args == &["a", "-b"]
        ));
        for (args, needles) in [
            ("fly", vec!["fly", "on, off"]),
            ("config color=red", vec!["color", "country", "pue"]),
            ("config pue=-1", vec!["PUE", "1.0"]),
            ("config country=ZZZ", vec!["ZZZ"]),
            ("config scope=x", vec!["process, machine"]),
            ("config nonsense", vec!["KEY=VALUE"]),
            ("exec", vec!["COMMAND"]),
        ] {
            let e = parse_line_args(args).unwrap_err().to_string();
            assert!(!e.contains('\n'), "{args}: {e}");
            for n in needles {
                assert!(e.contains(n), "{args}: {e} lacks {n}");
            }
        }
    }

    #[test]
    fn settings_resolve_with_warnings() {
        let mut s = Settings::empty();
        s.set(keys::COUNTRY, "fra");
        s.set(keys::PUE, "banana");
        s.set(keys::OUTPUT, "out/e.csv");
        let (c, w) = CarbonConfig::from_settings(&s, Path::new("/tmp/nb"));
        assert_eq!(c.country.as_deref(), Some("FRA"));
        assert_eq!(c.pue, 1.0);
        assert_eq!(c.output, PathBuf::from("/tmp/nb/out/e.csv"));
        assert_eq!(c.project, "nb");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("CARBON_PUE"));
    }

    #[test]
    fn help_lists_everything() {
        let h = magic_spec().long_help(crate::registry::MagicKind::Both);
        for w in [
            "on",
            "off",
            "status",
            "config",
            "run",
            "exec",
            "summary",
            "csv",
            "intensity",
            "--country",
            "--repeat",
            "--no-csv",
            "CARBON_CPU_TDP",
        ] {
            assert!(h.contains(w), "{w}");
        }
    }
}
