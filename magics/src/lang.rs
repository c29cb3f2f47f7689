//! The languages of the kernel: one [`LanguageRow`] per language, read by the kernel's runtime
//! factory, `install` (kernelspecs), `kernel_info`'s `language_info`, the `%%python`-style magics,
//! `%carbon run` and the tests.
//!
//! Adding a language: a variant of [`Language`], its row in [`LANGUAGES`] (same position), the
//! runtime file in the kernel (`kernel/src/runtime/<lang>.rs`) and the one `match` arm the
//! compiler then asks for in the kernel's runtime factory (and in `%carbon run`'s toolchain
//! lookup, when the row says files of it can be run).

use std::fmt;

/// A language the kernel can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    /// Python 3 in a persistent child process.
    Python,
    /// Java through JShell (JDK 17+).
    Java,
    /// Rust through evcxr.
    Rust,
}

/// How `%carbon run FILE` runs a source file of a language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileRun {
    /// `PROGRAM FILE ARGS…` in one process (an interpreter, or Java's source-file mode).
    Direct,
    /// `COMPILER FLAGS… -o BIN FILE` (metered as compile), then `BIN ARGS…` (metered as run).
    CompileThenRun {
        /// Flags before `-o`.
        flags: &'static [&'static str],
    },
}

/// A link of `kernel_info_reply`'s `help_links`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelpLink {
    /// Text shown in the front-end's Help menu.
    pub text: &'static str,
    /// Where it points.
    pub url: &'static str,
}

/// Everything the kernel knows about one language, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LanguageRow {
    /// The language.
    pub language: Language,
    /// Lower-case name: magics (`%%java`, `%lang java`), `--language`, CSV rows, kernel.json.
    pub name: &'static str,
    /// Other names accepted where a language is parsed (`py`, `rs`).
    pub aliases: &'static [&'static str],
    /// File extensions without the dot, the first one canonical (`language_info`).
    pub extensions: &'static [&'static str],
    /// Suffix of the kernelspec name after the base name (`""` → `carbon`, `"-java"` →
    /// `carbon-java`).
    pub kernelspec_suffix: &'static str,
    /// Kernelspec display name in launchers.
    pub display_name: &'static str,
    /// `language_info.mimetype`.
    pub mimetype: &'static str,
    /// `language_info.codemirror_mode`.
    pub codemirror_mode: &'static str,
    /// `language_info.pygments_lexer`.
    pub pygments_lexer: &'static str,
    /// `language_info.nbconvert_exporter`.
    pub nbconvert_exporter: &'static str,
    /// The language's entry in `help_links`.
    pub help: HelpLink,
    /// One line for `%lsmagic` and the README about the `%%name` cell magic.
    pub cell_summary: &'static str,
    /// How `%carbon run` runs a file of this language.
    pub file_run: FileRun,
}

/// One row per language, in display order and in the order of [`Language`]'s variants.
pub const LANGUAGES: [LanguageRow; 3] = [
    LanguageRow {
        language: Language::Python,
        name: "python",
        aliases: &["py", "python3"],
        extensions: &["py"],
        kernelspec_suffix: "",
        display_name: "Carbon (Python)",
        mimetype: "text/x-python",
        codemirror_mode: "ipython",
        pygments_lexer: "ipython3",
        nbconvert_exporter: "python",
        help: HelpLink {
            text: "Python",
            url: "https://docs.python.org/3/",
        },
        cell_summary: "Run this cell in the persistent Python runtime",
        file_run: FileRun::Direct,
    },
    LanguageRow {
        language: Language::Java,
        name: "java",
        aliases: &[],
        extensions: &["java"],
        kernelspec_suffix: "-java",
        display_name: "Carbon (Java)",
        mimetype: "text/x-java",
        codemirror_mode: "text/x-java",
        pygments_lexer: "java",
        nbconvert_exporter: "script",
        help: HelpLink {
            text: "Java",
            url: "https://docs.oracle.com/en/java/javase/17/jshell/",
        },
        cell_summary: "Run this cell in the persistent Java runtime (JShell, JDK 17+)",
        // Source-file mode (JEP 330, JDK 11+): compiles in memory and runs in one JVM.
        file_run: FileRun::Direct,
    },
    LanguageRow {
        language: Language::Rust,
        name: "rust",
        aliases: &["rs"],
        extensions: &["rs"],
        kernelspec_suffix: "-rust",
        display_name: "Carbon (Rust)",
        mimetype: "text/rust",
        codemirror_mode: "rust",
        pygments_lexer: "rust",
        nbconvert_exporter: "rust",
        help: HelpLink {
            text: "Rust",
            url: "https://doc.rust-lang.org/std/",
        },
        cell_summary: "Run this cell in the persistent Rust runtime (evcxr)",
        file_run: FileRun::CompileThenRun { flags: &["-O"] },
    },
];

// The rows are indexed by variant: a row out of place is a build error, not a wrong answer.
const _: () = {
    let mut i = 0;
    while i < LANGUAGES.len() {
        assert!(
            LANGUAGES[i].language as usize == i,
            "LANGUAGES must list the languages in the order of the Language enum"
        );
        i += 1;
    }
};

impl Language {
    /// All languages, in display order.
    pub const ALL: [Language; LANGUAGES.len()] = {
        let mut all = [Language::Python; LANGUAGES.len()];
        let mut i = 0;
        while i < LANGUAGES.len() {
            all[i] = LANGUAGES[i].language;
            i += 1;
        }
        all
    };

    /// This language's row.
    pub fn row(self) -> &'static LanguageRow {
        &LANGUAGES[self as usize]
    }

    /// Lower-case name as used in magics and CSV rows.
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// Parses a name or an alias (case-insensitive): `python`, `py`, `Java`, `rs`…
    pub fn parse(s: &str) -> Option<Language> {
        let s = s.to_ascii_lowercase();
        LANGUAGES
            .iter()
            .find(|r| r.name == s || r.aliases.contains(&s.as_str()))
            .map(|r| r.language)
    }

    /// The language of a file extension (without the dot, case-insensitive).
    pub fn from_extension(ext: &str) -> Option<Language> {
        let ext = ext.to_ascii_lowercase();
        LANGUAGES
            .iter()
            .find(|r| r.extensions.contains(&ext.as_str()))
            .map(|r| r.language)
    }

    /// The names, for clap's value parsers and error messages (`python`, `java`, `rust`).
    pub fn names() -> [&'static str; LANGUAGES.len()] {
        Language::ALL.map(Language::name)
    }

    /// The kernelspec name of this language for a base name: `carbon`, `carbon-java`, ….
    pub fn kernelspec_name(self, base: &str) -> String {
        format!("{base}{}", self.row().kernelspec_suffix)
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every file extension `%carbon run` accepts, as `.py, .java, .rs`.
pub fn run_extensions() -> String {
    LANGUAGES
        .iter()
        .flat_map(|r| r.extensions.iter().map(|e| format!(".{e}")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_consistent() {
        let mut names = Vec::new();
        for l in Language::ALL {
            let r = l.row();
            assert_eq!(r.language, l);
            assert_eq!(Language::parse(r.name), Some(l));
            for a in r.aliases {
                assert_eq!(Language::parse(a), Some(l), "{a}");
            }
            for e in r.extensions {
                assert_eq!(Language::from_extension(e), Some(l), "{e}");
            }
            assert!(!r.extensions.is_empty() && !r.display_name.is_empty());
            names.push(l.kernelspec_name("carbon"));
        }
        assert_eq!(names, ["carbon", "carbon-java", "carbon-rust"]);
        assert_eq!(Language::parse("PY"), Some(Language::Python));
        assert_eq!(Language::parse("cobol"), None);
        assert_eq!(run_extensions(), ".py, .java, .rs");
    }
}
