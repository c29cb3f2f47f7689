//! The kernel's own magics: `%lang`, `%lsmagic` and one `%%name` cell magic per language (from
//! the language table).

use crate::error::UsageError;
use crate::lang::Language;
use crate::registry::MagicSpec;
use std::sync::LazyLock;

fn lang_cmd() -> clap::Command {
    clap::Command::new("lang").no_binary_name(true).arg(
        clap::Arg::new("language")
            .value_parser(Language::names())
            .help("Default language of plain cells from now on; without it, show the current one"),
    )
}

fn language_cell_cmd() -> clap::Command {
    clap::Command::new("language").no_binary_name(true)
}

fn lsmagic_cmd() -> clap::Command {
    clap::Command::new("lsmagic").no_binary_name(true)
}

/// `%%python`, `%%java`, `%%rust`: run the cell in that language's runtime.
pub fn language_cell_spec(lang: Language) -> MagicSpec {
    MagicSpec {
        name: lang.name(),
        summary: lang.row().cell_summary,
        command: language_cell_cmd,
    }
}

/// `%lang`'s summary names the table's languages (built once: a spec's texts are `'static`).
static LANG_SUMMARY: LazyLock<String> = LazyLock::new(|| {
    format!(
        "Show or set the default language of plain cells ({})",
        Language::names().join(", ")
    )
});

/// `%lang [LANGUAGE]`.
pub fn lang_spec() -> MagicSpec {
    MagicSpec {
        name: "lang",
        summary: LANG_SUMMARY.as_str(),
        command: lang_cmd,
    }
}

/// `%lsmagic`.
pub fn lsmagic_spec() -> MagicSpec {
    MagicSpec {
        name: "lsmagic",
        summary: "List the kernel's magics with a one-line summary, then the language's own (IPython's magics, evcxr's :commands, JShell's /commands)",
        command: lsmagic_cmd,
    }
}

/// Parses `%lang ARGS`: the new default language, or `None` to show the current one.
pub fn parse_lang_args(args: &str) -> Result<Option<Language>, UsageError> {
    let argv = shlex::split(args)
        .ok_or_else(|| UsageError::new("%lang", "unbalanced quotes in the arguments"))?;
    let m = lang_cmd()
        .try_get_matches_from(&argv)
        .map_err(|e| UsageError::from_clap("%lang", "%lang", &e))?;
    // the value parser only accepts the table's names
    Ok(m.get_one::<String>("language")
        .and_then(|l| Language::parse(l)))
}

/// Checks `%%python ARGS`: a language cell takes no arguments.
pub fn check_language_cell_args(lang: Language, args: &str) -> Result<(), UsageError> {
    if args.trim().is_empty() {
        return Ok(());
    }
    // Kept word for word from before the table (no colon after the magic's name).
    Err(UsageError::general(format!(
        "%%{0} takes no arguments (got '{1}'); use %%carbon {0} … to meter",
        lang.name(),
        args
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lang_args() {
        assert_eq!(parse_lang_args("java").unwrap(), Some(Language::Java));
        assert_eq!(parse_lang_args("").unwrap(), None);
        let e = parse_lang_args("cobol").unwrap_err();
        assert_eq!(e.magic, "%lang");
        assert!(!e.message.contains('\n'), "{e}");
        assert!(
            e.message.contains("python") && e.message.contains("cobol"),
            "{e}"
        );
        assert!(check_language_cell_args(Language::Rust, "x").is_err());
        assert!(check_language_cell_args(Language::Rust, " ").is_ok());
        assert!(
            language_cell_spec(Language::Java)
                .summary
                .contains("JShell")
        );
    }
}
