//! The one user-facing error of a magic: a usage error (bad option, bad value, unknown magic).
//!
//! Every magic's argument parsing returns [`UsageError`]; the kernel shows it as Jupyter's
//! `error` output with `ename` `UsageError` and `evalue` [`UsageError::evalue`]. clap errors are
//! flattened to one line in one place ([`clap_message`]) so every magic words them alike.

use thiserror::Error;

/// A magic was used wrongly. Displays as `UsageError: %name: message` (the text users see).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("UsageError: {}", self.evalue())]
pub struct UsageError {
    /// The form the user typed, e.g. `%%carbon`, `%carbon config`, `%llm estimate`; empty when
    /// the error is not about one magic's arguments (an unknown magic, a malformed magic line):
    /// the message then carries the whole text.
    pub magic: String,
    /// What was wrong, on one line, with the accepted values where there is a short list.
    pub message: String,
}

impl UsageError {
    /// A usage error of `magic` (the form typed, `%name` or `%%name` …).
    pub fn new(magic: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            magic: magic.into(),
            message: message.into(),
        }
    }

    /// An error that names no single magic (its message says everything).
    pub fn general(message: impl Into<String>) -> Self {
        Self::new(String::new(), message)
    }

    /// A clap error of `magic`, flattened to one line, pointing at the help of `help_form`
    /// (`%carbon` → `(see %carbon?)`).
    pub fn from_clap(magic: impl Into<String>, help_form: &str, e: &clap::Error) -> Self {
        Self::new(magic, format!("{} (see {help_form}?)", clap_message(e)))
    }

    /// The `evalue` of the error output: `%name: message` (or the message alone).
    pub fn evalue(&self) -> String {
        if self.magic.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.magic, self.message)
        }
    }

    /// The same error with its message rewritten (e.g. secrets redacted).
    pub fn map_message(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.message = f(&self.message);
        self
    }
}

/// A clap error on one line: the first line without `error: `, followed by what clap lists on
/// the next lines (accepted values, missing arguments), without the usage, tips and
/// "For more information" lines that make sense only on a terminal.
pub fn clap_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let msg = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect::<Vec<_>>()
        .join(" ");
    match msg.strip_prefix("error: ") {
        Some(m) => m.to_string(),
        None if msg.is_empty() => "invalid arguments".to_string(),
        None => msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, Command};

    fn cmd() -> Command {
        Command::new("x")
            .no_binary_name(true)
            .arg(Arg::new("lang").value_parser(["python", "java"]))
            .arg(Arg::new("file").long("file").required(true))
    }

    #[test]
    fn display_is_the_visible_text() {
        let e = UsageError::new("%carbon run", "no such file: x.py");
        assert_eq!(e.to_string(), "UsageError: %carbon run: no such file: x.py");
        assert_eq!(e.evalue(), "%carbon run: no such file: x.py");
        let g = UsageError::general("Line magic function `%x` not found (see %lsmagic)");
        assert_eq!(
            g.evalue(),
            "Line magic function `%x` not found (see %lsmagic)"
        );
    }

    #[test]
    fn clap_errors_are_one_line_with_values_and_missing_arguments() {
        let e = cmd().try_get_matches_from(["cobol"]).unwrap_err();
        let u = UsageError::from_clap("%lang", "%lang", &e);
        assert!(!u.message.contains('\n'), "{u}");
        assert!(
            u.message.contains("cobol") && u.message.contains("python, java"),
            "{u}"
        );
        assert!(u.message.ends_with("(see %lang?)"), "{u}");
        let e = cmd().try_get_matches_from(["python"]).unwrap_err();
        let m = clap_message(&e);
        assert!(m.contains("--file"), "{m}");
        assert!(!m.contains("Usage"), "{m}");
    }
}
