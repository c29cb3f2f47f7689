//! Tab completion of a magic's arguments from its clap command: the sub-commands, options and
//! possible values the magic's own parser accepts, so the completion list and the parser never
//! disagree (`%%carbon --` offers `--country`, `--repeat`, …, never a Python builtin).

use clap::Command;

/// The candidates for the word being typed at the end of `before` (the magic's argument text up
/// to the cursor), each a whole replacement of that word. The word starts after the last
/// whitespace of `before` (see [`word_start`]).
pub fn complete_args(cmd: &Command, before: &str) -> Vec<String> {
    let start = word_start(before);
    let (done, word) = before.split_at(start);
    // Words already typed, quotes resolved; half-typed quotes: no completion.
    let Some(typed) = shlex::split(done) else {
        return vec![];
    };
    // Descend into the sub-command the typed words name (`%carbon exec --…`).
    let mut cmd = cmd;
    let mut in_sub = false;
    for w in &typed {
        if let Some(sc) = cmd.find_subcommand(w) {
            cmd = sc;
            in_sub = true;
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if s.starts_with(word) && !out.contains(&s) {
            out.push(s);
        }
    };
    // The value of the option just typed (`--scope p` → process).
    let value_of = typed
        .last()
        .and_then(|w| w.strip_prefix("--"))
        .and_then(|prev| cmd.get_arguments().find(|a| a.get_long() == Some(prev)))
        .filter(|a| a.get_action().takes_values());
    if let Some(arg) = value_of {
        for v in arg.get_possible_values() {
            push(v.get_name().to_string());
        }
        return out;
    }
    if word.starts_with('-') {
        for a in cmd.get_arguments() {
            if let Some(long) = a.get_long() {
                push(format!("--{long}"));
            }
        }
        push("--help".to_string());
        return out;
    }
    if !in_sub {
        for sc in cmd.get_subcommands() {
            push(sc.get_name().to_string());
        }
    }
    for a in cmd.get_positionals() {
        for v in a.get_possible_values() {
            push(v.get_name().to_string());
        }
    }
    out
}

/// Byte offset in `before` where the word being typed starts (after the last whitespace).
pub fn word_start(before: &str) -> usize {
    before
        .rfind(char::is_whitespace)
        .map(|i| i + before[i..].chars().next().map_or(1, char::len_utf8))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cmd() -> Command {
        Command::new("x")
            .no_binary_name(true)
            .arg(Arg::new("language").value_parser(["python", "java", "rust"]))
            .arg(
                Arg::new("scope")
                    .long("scope")
                    .value_parser(["process", "machine"]),
            )
            .arg(Arg::new("no-csv").long("no-csv").action(ArgAction::SetTrue))
    }

    fn subs() -> Command {
        Command::new("x")
            .no_binary_name(true)
            .subcommand(Command::new("on"))
            .subcommand(Command::new("off"))
            .subcommand(
                Command::new("exec").arg(Arg::new("timeout").long("timeout").value_name("S")),
            )
    }

    #[test]
    fn options_values_and_subcommands() {
        assert_eq!(
            complete_args(&cmd(), "--"),
            ["--scope", "--no-csv", "--help"]
        );
        assert_eq!(complete_args(&cmd(), "java --no"), ["--no-csv"]);
        assert_eq!(complete_args(&cmd(), "--scope m"), ["machine"]);
        assert_eq!(complete_args(&cmd(), "ja"), ["java"]);
        assert_eq!(complete_args(&subs(), "o"), ["on", "off"]);
        assert_eq!(complete_args(&subs(), "exec --t"), ["--timeout"]);
        assert!(complete_args(&subs(), "exec ").is_empty());
        assert_eq!(word_start("exec --t"), 5);
        assert_eq!(word_start("--t"), 0);
    }
}
