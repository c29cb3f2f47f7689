//! The list of magics with their help texts. `%lsmagic`, `%name?` and the README's magics table are
//! all generated from here, so documentation cannot drift from behaviour.
//!
//! Each magic's options are a `clap::Command`: the same object parses the user's arguments (with
//! one-line errors naming the accepted values) and renders the help.

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

/// One registered magic.
#[derive(Clone)]
pub struct MagicSpec {
    /// Name without `%`.
    pub name: &'static str,
    /// Line, cell or both.
    pub kind: MagicKind,
    /// One line for `%lsmagic` and the README table.
    pub summary: &'static str,
    /// Builds the clap command that parses the arguments and renders the long help.
    pub command: fn() -> clap::Command,
}

impl std::fmt::Debug for MagicSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MagicSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish()
    }
}

impl MagicSpec {
    /// `%name` / `%%name` / `%name, %%name` as the user types it.
    pub fn usage_forms(&self) -> String {
        match self.kind {
            MagicKind::Line => format!("%{}", self.name),
            MagicKind::Cell => format!("%%{}", self.name),
            MagicKind::Both => format!("%{0}, %%{0}", self.name),
        }
    }

    /// The long help (`%name?`).
    pub fn long_help(&self) -> String {
        let mut cmd = (self.command)()
            .name(self.usage_forms())
            .about(self.summary)
            .disable_help_flag(false);
        cmd.render_long_help().to_string()
    }
}

fn lang_cmd() -> clap::Command {
    clap::Command::new("lang").no_binary_name(true).arg(
        clap::Arg::new("language")
            .value_parser(["python", "java", "rust"])
            .help("Default language of plain cells from now on; without it, show the current one"),
    )
}

fn language_cell_cmd() -> clap::Command {
    clap::Command::new("language").no_binary_name(true)
}

fn lsmagic_cmd() -> clap::Command {
    clap::Command::new("lsmagic").no_binary_name(true)
}

/// Magics owned by the kernel itself (language selection, listing).
fn core_specs() -> Vec<MagicSpec> {
    vec![
        MagicSpec {
            name: "python",
            kind: MagicKind::Cell,
            summary: "Run this cell in the persistent Python runtime",
            command: language_cell_cmd,
        },
        MagicSpec {
            name: "java",
            kind: MagicKind::Cell,
            summary: "Run this cell in the persistent Java runtime (JShell, JDK 17+)",
            command: language_cell_cmd,
        },
        MagicSpec {
            name: "rust",
            kind: MagicKind::Cell,
            summary: "Run this cell in the persistent Rust runtime (evcxr)",
            command: language_cell_cmd,
        },
        MagicSpec {
            name: "lang",
            kind: MagicKind::Line,
            summary: "Show or set the default language of plain cells (python, java, rust)",
            command: lang_cmd,
        },
        MagicSpec {
            name: "lsmagic",
            kind: MagicKind::Line,
            summary: "List every magic with a one-line summary",
            command: lsmagic_cmd,
        },
    ]
}

/// Every magic the kernel understands, in display order.
pub fn all() -> Vec<MagicSpec> {
    let mut v = core_specs();
    v.extend(crate::carbon::magic_specs());
    v.extend(crate::llm::magic_specs());
    v
}

/// Finds a magic by name (line or cell form).
pub fn find(name: &str) -> Option<MagicSpec> {
    all().into_iter().find(|m| m.name == name)
}

/// The `%lsmagic` listing (text/plain).
pub fn lsmagic_text() -> String {
    let specs = all();
    let width = specs
        .iter()
        .map(|s| s.usage_forms().len())
        .max()
        .unwrap_or(0);
    let mut out = String::from("Available magics (append ? for help, e.g. %carbon?):\n");
    for s in &specs {
        out.push_str(&format!(
            "  {:width$}  {}\n",
            s.usage_forms(),
            s.summary,
            width = width
        ));
    }
    out
}

/// Markdown table of the magics (the README's reference section is generated from this).
pub fn markdown_reference() -> String {
    let mut out = String::from("| magic | what it does |\n| --- | --- |\n");
    for s in all() {
        // A `|` inside a cell would end it: escape it as GitHub's table syntax requires.
        out.push_str(&format!(
            "| `{}` | {} |\n",
            s.usage_forms(),
            s.summary.replace('|', "\\|")
        ));
    }
    out.push('\n');
    for s in all() {
        out.push_str(&format!(
            "### `{}`\n\n```text\n{}```\n\n",
            s.usage_forms(),
            s.long_help().trim_end().to_string() + "\n"
        ));
    }
    out
}

/// Parses a magic's argument vector with its clap command, mapping errors to one line.
pub fn parse_args(spec: &MagicSpec, argv: &[String]) -> Result<clap::ArgMatches, String> {
    (spec.command)()
        .no_binary_name(true)
        .try_get_matches_from(argv)
        .map_err(|e| one_line_error(spec, &e))
}

/// Turns a clap error into one line, keeping the part that names the option and accepted values.
pub fn one_line_error(spec: &MagicSpec, e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let mut first = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_string();
    // clap prints accepted values on a separate "[possible values: …]" line; keep them.
    if let Some(pv) = rendered.lines().find(|l| l.contains("possible values"))
        && !first.contains("possible values")
    {
        first.push(' ');
        first.push_str(pv.trim());
    }
    format!(
        "UsageError: {}: {} (see {}?)",
        spec.usage_forms(),
        first,
        match spec.kind {
            MagicKind::Cell => format!("%%{}", spec.name),
            _ => format!("%{}", spec.name),
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_magic_has_help_and_unique_name() {
        let specs = all();
        let mut names: Vec<_> = specs.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), specs.len(), "duplicate magic names");
        for s in &specs {
            assert!(!s.summary.is_empty());
            assert!(s.long_help().contains(s.name), "{}", s.name);
        }
        assert!(lsmagic_text().contains("%lang"));
    }

    #[test]
    fn bad_value_is_one_line_naming_accepted_values() {
        let spec = find("lang").unwrap();
        let err = parse_args(&spec, &["cobol".into()]).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        assert!(err.contains("python"), "{err}");
        assert!(err.contains("cobol"), "{err}");
    }
}
