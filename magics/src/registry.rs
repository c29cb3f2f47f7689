//! What a magic says about itself: [`MagicSpec`] (name, one-line summary, clap command for its
//! options and long help) and the texts generated from a list of them (`%lsmagic`, the README's
//! reference). A leaf: each magic module exports its own spec, and the kernel's table of magics
//! (`MAGICS` in `carbon_kernel::exec`) pairs each spec with its handlers. Which forms a magic has
//! (`%name`, `%%name`) follows from the handlers registered there, so a listed form always has a
//! handler.

/// Whether a magic is used as `%name` (line), `%%name` (cell) or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MagicKind {
    /// `%name args`
    Line,
    /// `%%name args` + body
    Cell,
    /// both forms
    Both,
}

impl MagicKind {
    /// `%name` / `%%name` / `%name, %%name` as the user types it.
    pub fn usage_forms(self, name: &str) -> String {
        match self {
            MagicKind::Line => format!("%{name}"),
            MagicKind::Cell => format!("%%{name}"),
            MagicKind::Both => format!("%{name}, %%{name}"),
        }
    }
}

/// What a magic says about itself: its help, options and summary.
#[derive(Clone)]
pub struct MagicSpec {
    /// Name without `%`.
    pub name: &'static str,
    /// One line for `%lsmagic` and the README table.
    pub summary: &'static str,
    /// Builds the clap command that parses the arguments and renders the long help.
    pub command: fn() -> clap::Command,
}

impl std::fmt::Debug for MagicSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MagicSpec")
            .field("name", &self.name)
            .finish()
    }
}

impl MagicSpec {
    /// The long help (`%name?`) of the magic used in the forms `kind`.
    pub fn long_help(&self, kind: MagicKind) -> String {
        let mut cmd = (self.command)()
            .name(kind.usage_forms(self.name))
            .about(self.summary)
            .disable_help_flag(false);
        cmd.render_long_help().to_string()
    }
}

/// True for the words that ask for help in every front-end (`--help`, `-h`).
fn is_help_flag(w: &str) -> bool {
    w == "--help" || w == "-h"
}

impl MagicSpec {
    /// The help that `args` ask for, if they ask for help: `--help` / `-h` first (the whole
    /// magic), `SUB --help` (one sub-command), and, for a magic whose words are all sub-commands
    /// (`%carbon`), `help` and `help SUB`. Shown as a normal output, not the pager, since
    /// nbclient, VS Code and papermill show no pager; `%name?` keeps the pager.
    ///
    /// A magic whose arguments take free text (`%llm`'s prompt) gets no `help` word, so
    /// `%llm help me …` stays a prompt.
    pub fn help_for_args(&self, kind: MagicKind, args: &str) -> Option<String> {
        let words: Vec<&str> = args.split_whitespace().collect();
        // Every magic call passes here (each `%%carbon` cell): look at the words before building
        // the clap command, which only a help request needs.
        let may_ask = match words.as_slice() {
            [first, ..] if is_help_flag(first) => true,
            [_, flag] => is_help_flag(flag) || words[0] == "help",
            ["help"] => true,
            _ => false,
        };
        if !may_ask {
            return None;
        }
        let cmd = (self.command)();
        let sub_help = |sub: &str| -> Option<String> {
            let sc = cmd.find_subcommand(sub)?.clone();
            let form = format!("%{} {sub}", self.name);
            let mut sc = sc
                .name(form.clone())
                .bin_name(form)
                .disable_help_flag(false);
            Some(sc.render_long_help().to_string())
        };
        let words_are_subcommands =
            cmd.get_subcommands().next().is_some() && cmd.get_positionals().next().is_none();
        match words.as_slice() {
            [first, ..] if is_help_flag(first) => Some(self.long_help(kind)),
            [sub, flag] if is_help_flag(flag) => sub_help(sub),
            ["help"] if words_are_subcommands => Some(self.long_help(kind)),
            ["help", sub] if words_are_subcommands => sub_help(sub),
            _ => None,
        }
    }
}

/// The `%lsmagic` listing (text/plain) of `magics` (each with the forms it has).
pub fn lsmagic_text(magics: &[(MagicKind, &MagicSpec)]) -> String {
    let width = magics
        .iter()
        .map(|(k, s)| k.usage_forms(s.name).len())
        .max()
        .unwrap_or(0);
    let mut out = String::from("Available magics (append ? for help, e.g. %carbon?):\n");
    for (k, s) in magics {
        out.push_str(&format!(
            "  {:width$}  {}\n",
            k.usage_forms(s.name),
            s.summary,
            width = width
        ));
    }
    out
}

/// Markdown table and long help of `magics` (the README's reference section is generated from
/// this).
pub fn markdown_reference(magics: &[(MagicKind, &MagicSpec)]) -> String {
    let mut out = String::from("| magic | what it does |\n| --- | --- |\n");
    for (k, s) in magics {
        // A `|` inside a cell would end it: escape it as GitHub's table syntax requires.
        out.push_str(&format!(
            "| `{}` | {} |\n",
            k.usage_forms(s.name),
            s.summary.replace('|', "\\|")
        ));
    }
    out.push('\n');
    for (k, s) in magics {
        out.push_str(&format!(
            "### `{}`\n\n```text\n{}```\n\n",
            k.usage_forms(s.name),
            s.long_help(*k).trim_end().to_string() + "\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("x").arg(clap::Arg::new("n").help("a number"))
    }

    #[test]
    fn texts_list_each_form() {
        let s = MagicSpec {
            name: "demo",
            summary: "a | demo",
            command: cmd,
        };
        let list = [(MagicKind::Both, &s)];
        assert!(lsmagic_text(&list).contains("%demo, %%demo  a | demo"));
        let md = markdown_reference(&list);
        assert!(md.contains("| `%demo, %%demo` | a \\| demo |"), "{md}");
        assert!(s.long_help(MagicKind::Cell).contains("%%demo"));
        assert!(s.long_help(MagicKind::Cell).contains("a number"));
    }

    fn with_subcommands() -> clap::Command {
        clap::Command::new("x")
            .subcommand(clap::Command::new("exec").about("run a program"))
            .subcommand(clap::Command::new("on").about("meter every cell"))
    }

    #[test]
    fn help_words_ask_for_help_and_other_words_do_not() {
        let free = MagicSpec {
            name: "demo",
            summary: "a demo",
            command: cmd,
        };
        for args in ["--help", "-h", "  --help  ", "-h extra"] {
            let h = free.help_for_args(MagicKind::Both, args);
            assert!(h.is_some_and(|h| h.contains("a number")), "{args}");
        }
        // free text: `help` is a word like any other
        assert_eq!(free.help_for_args(MagicKind::Line, "help me"), None);
        assert_eq!(free.help_for_args(MagicKind::Line, "help"), None);
        assert_eq!(free.help_for_args(MagicKind::Line, "x --help"), None);
        assert_eq!(free.help_for_args(MagicKind::Line, ""), None);
        let subs = MagicSpec {
            name: "carbon",
            summary: "meter",
            command: with_subcommands,
        };
        let whole = subs.help_for_args(MagicKind::Both, "help");
        assert!(whole.is_some_and(|h| h.contains("exec") && h.contains("on")));
        for args in ["help exec", "exec --help", "exec -h"] {
            let h = subs.help_for_args(MagicKind::Both, args);
            assert!(
                h.as_deref()
                    .is_some_and(|h| h.contains("run a program") && h.contains("%carbon exec")),
                "{args}: {h:?}"
            );
        }
        assert_eq!(subs.help_for_args(MagicKind::Both, "help nope"), None);
        assert_eq!(subs.help_for_args(MagicKind::Both, "on"), None);
    }
}
