//! Settings from `.env` (in the notebook's folder or a parent), then the process environment, then
//! values set in the session (`%carbon config KEY=VALUE`). Later sources win.
//!
//! A `.env` is looked for from the notebook's folder up to the user's home or the repository root
//! (a folder with `.git`), and only in folders the user owns that no one else can write, in files
//! the user owns that no one else can write: in a shared class folder another student's `.env`
//! is never read. Settings that run code or receive keys ([`is_guarded`]) are taken from the
//! notebook's own folder's `.env` only; from a parent folder's they are refused with a warning
//! naming the file, unless the environment sets them.
//!
//! Values are kept as strings; each module parses the keys it owns (`CARBON_*` in `carbon`,
//! provider keys and model lists in `llm`). API keys are secrets: [`Settings::redact`] removes them
//! from any text before it is shown, written or logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where a value came from (shown by `%carbon status` / `%llm models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Built-in default.
    Default,
    /// A `.env` file.
    DotEnv,
    /// The process environment.
    Environment,
    /// Set in this session.
    Session,
}

/// Merged settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    values: BTreeMap<String, (String, Source)>,
    /// The `.env` file that was read, if any.
    pub dotenv_path: Option<PathBuf>,
    /// Problems met while loading (unreadable `.env`, bad lines), to show the user.
    pub warnings: Vec<String>,
}

/// Keys whose values are secrets.
pub const SECRET_KEYS: [&str; 4] = [
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
    "GROQ_API_KEY",
    "HUGGINGFACE_API_KEY",
];

/// Settings that run code (interpreters, JVM options, a shared library) or decide where keys are
/// sent (base URLs) or which files are read as data: only the notebook's own `.env` or the
/// environment may set them.
pub fn is_guarded(key: &str) -> bool {
    matches!(
        key,
        "CARBON_PYTHON" | "CARBON_JAVA_HOME" | "CARBON_JAVA_OPTS" | "CARBON_NVML_LIB"
    ) || key.ends_with("_BASE_URL")
        || (key.starts_with("LLM_") && key.ends_with("_FILE"))
}

/// Whose files a `.env` may come from and where the search up the folders stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    /// The user (effective uid).
    pub uid: u32,
    /// The user's primary group: a folder writable by it is the user's own (user-private
    /// groups, umask 002).
    pub gid: u32,
    /// The user's home: the search stops there.
    pub home: Option<PathBuf>,
}

impl Trust {
    /// The user running this process.
    pub fn current() -> Trust {
        Trust {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            home: std::env::var_os("HOME").map(PathBuf::from),
        }
    }

    /// Why `meta` (a folder or a `.env`) is not the user's alone, if it is not.
    fn distrust(&self, meta: &std::fs::Metadata) -> Option<&'static str> {
        use std::os::unix::fs::MetadataExt;
        let mode = meta.mode();
        if meta.uid() != self.uid {
            Some("owned by another user")
        } else if mode & 0o002 != 0 {
            Some("writable by every user")
        } else if mode & 0o020 != 0 && meta.gid() != self.gid {
            Some("writable by its group")
        } else {
            None
        }
    }
}

impl Settings {
    /// Loads `.env` from `dir` or its nearest parent that has one (see the module's docs for
    /// which are trusted), then the environment.
    pub fn load(dir: &Path) -> Settings {
        Settings::load_trusting(dir, &Trust::current())
    }

    /// [`Settings::load`] for the user `trust` describes (tests play other users with it).
    pub fn load_trusting(dir: &Path, trust: &Trust) -> Settings {
        let mut s = Settings::default();
        let mut cur = Some(dir);
        let mut own_folder = true;
        while let Some(d) = cur {
            let candidate = d.join(".env");
            let folder_doubt =
                std::fs::metadata(d).map_or(Some("unreadable"), |m| trust.distrust(&m));
            if let Some(why) = folder_doubt {
                // a shared folder (/tmp, a class folder): neither it nor anything above is
                // searched; said only when it holds a .env someone may have meant for us
                if candidate.is_file() {
                    s.warnings.push(format!(
                        "{}: not read: its folder is {why} (a .env is read only from folders that are yours alone)",
                        candidate.display()
                    ));
                }
                break;
            }
            if candidate.is_file() {
                if let Some(why) =
                    std::fs::metadata(&candidate).map_or(Some("unreadable"), |m| trust.distrust(&m))
                {
                    s.warnings.push(format!(
                        "{}: not read: the file is {why} (a .env is read only when it is yours alone)",
                        candidate.display()
                    ));
                    break;
                }
                match std::fs::read_to_string(&candidate) {
                    Ok(text) => {
                        let parsed = parse_dotenv(&text);
                        for (k, v) in parsed.values {
                            if !own_folder && is_guarded(&k) {
                                if std::env::var_os(&k).is_none() {
                                    s.warnings.push(format!(
                                        "{}: {k} not used: a .env in a parent folder may not set settings that run code or receive keys; set it in {} or the environment",
                                        candidate.display(),
                                        dir.join(".env").display()
                                    ));
                                }
                                continue;
                            }
                            s.values.insert(k, (v, Source::DotEnv));
                        }
                        for p in parsed.problems {
                            s.warnings.push(format!("{}: {p}", candidate.display()));
                        }
                    }
                    // The OS error names the file, never its content.
                    Err(e) => s.warnings.push(format!(
                        "{}: cannot be read ({e}); its settings are not used",
                        candidate.display()
                    )),
                }
                s.dotenv_path = Some(candidate);
                break;
            }
            if trust.home.as_deref() == Some(d) || d.join(".git").exists() {
                break;
            }
            own_folder = false;
            cur = d.parent();
        }
        for (k, v) in std::env::vars() {
            if is_ours(&k) {
                s.values.insert(k, (v, Source::Environment));
            }
        }
        s
    }

    /// An empty set (tests).
    pub fn empty() -> Settings {
        Settings::default()
    }

    /// The value of `key`, if set and non-empty.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .map(|(v, _)| v.as_str())
            .filter(|v| !v.trim().is_empty())
    }

    /// Where `key` came from.
    pub fn source(&self, key: &str) -> Option<Source> {
        self.values.get(key).map(|(_, s)| *s)
    }

    /// Sets a value for this session.
    pub fn set(&mut self, key: &str, value: &str) {
        self.values
            .insert(key.to_string(), (value.to_string(), Source::Session));
    }

    /// Removes every secret value from `text` (replaced by `***`): keys, tokens, passwords in
    /// URLs ([`crate::redact::Redactor::from_settings`]).
    pub fn redact(&self, text: &str) -> String {
        crate::redact::Redactor::from_settings(self)
            .redact(text)
            .into_owned()
    }

    /// Every setting and its value (secrets included: callers redact).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values
            .iter()
            .map(|(k, (v, _))| (k.as_str(), v.as_str()))
    }
}

/// A line of a `.env` file that could not be read. Says where and why, never what the line holds
/// (it may hold a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvProblem {
    /// 1-based line number.
    pub line: usize,
    /// Why the line was not read.
    pub reason: &'static str,
}

impl std::fmt::Display for DotenvProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: {}; the line is ignored (its content is not shown)",
            self.line, self.reason
        )
    }
}

/// What [`parse_dotenv`] read: the `(key, value)` pairs in file order, and the lines it could not
/// read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dotenv {
    /// Pairs in file order (a later line with the same key wins when they are applied).
    pub values: Vec<(String, String)>,
    /// Lines that were skipped, each with its number.
    pub problems: Vec<DotenvProblem>,
}

/// Reads `.env` text as people write it (the seed's README among them), one line at a time, so a
/// line that cannot be read is reported and skipped and never takes the rest of the file with it:
///
/// * blank lines and `#` comments are skipped; `export KEY=VALUE` is accepted;
/// * spaces around `=` and around the value are ignored; spaces inside an unquoted value are kept
///   (`GROQ_MODEL=a, b` is `a, b`), and ` #` starts a comment after it;
/// * `'single'` quotes keep their text as is; `"double"` quotes understand `\n`, `\t`, `\"` and
///   `\\`; a quote must close on its line.
///
/// Values are literal: `$NAME` is not expanded (an API key may contain `$`).
pub fn parse_dotenv(text: &str) -> Dotenv {
    let mut out = Dotenv::default();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_dotenv_line(line) {
            Ok((k, v)) => out.values.push((k, v)),
            Err(reason) => out.problems.push(DotenvProblem {
                line: i + 1,
                reason,
            }),
        }
    }
    out
}

fn parse_dotenv_line(line: &str) -> Result<(String, String), &'static str> {
    let line = line
        .strip_prefix("export")
        .filter(|r| r.starts_with(char::is_whitespace))
        .map_or(line, str::trim_start);
    let Some((key, value)) = line.split_once('=') else {
        return Err("no '=' (expected KEY=VALUE)");
    };
    let key = key.trim();
    let mut chars = key.chars();
    let name_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !name_ok {
        return Err("the name before '=' is not a variable name (letters, digits and _)");
    }
    Ok((key.to_string(), dotenv_value(value.trim())?))
}

fn dotenv_value(v: &str) -> Result<String, &'static str> {
    let Some(quote) = v.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        // Unquoted: a comment starts at a `#` that follows a space (`a#b` is a value).
        let end = v
            .char_indices()
            .find(|&(i, c)| c == '#' && v[..i].ends_with(char::is_whitespace))
            .map_or(v.len(), |(i, _)| i);
        return Ok(v[..end].trim_end().to_string());
    };
    let mut out = String::new();
    let mut chars = v.char_indices().skip(1);
    let mut close = None;
    while let Some((i, c)) = chars.next() {
        if c == quote {
            close = Some(i);
            break;
        }
        if quote == '"' && c == '\\' {
            match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, e @ ('"' | '\\'))) => out.push(e),
                Some((_, e)) => {
                    out.push('\\');
                    out.push(e);
                }
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    let Some(close) = close else {
        return Err("a quote opens but does not close on this line");
    };
    let after = v[close + 1..].trim_start();
    if !after.is_empty() && !after.starts_with('#') {
        return Err("text after the closing quote");
    }
    Ok(out)
}

fn is_ours(key: &str) -> bool {
    key.starts_with("CARBON_")
        || key.starts_with("OPENAI_")
        || key.starts_with("GEMINI_")
        || key.starts_with("GROQ_")
        || key.starts_with("HUGGINGFACE_")
        || key.starts_with("OLLAMA_")
        || key.starts_with("LLM_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_as_people_write_it() {
        let text = "\u{feff}# keys\nOPENAI_API_KEY=sk-...\n\nGROQ_MODEL=llama-3.3-70b-versatile, llama-3.1-8b-instant\nGEMINI_MODEL = gemini-1.5-flash   # the default\nexport OLLAMA_MODEL=llama3\nLLM_A='it is $HOME # kept' # note\nLLM_B=\"a\\\"b\\n\" # c\nLLM_C=a#b\nLLM_D=\nLLM_E=x$y\n";
        let d = parse_dotenv(text);
        assert_eq!(d.problems, vec![]);
        let get = |k: &str| {
            d.values
                .iter()
                .find(|(kk, _)| kk == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("OPENAI_API_KEY"), Some("sk-..."));
        assert_eq!(
            get("GROQ_MODEL"),
            Some("llama-3.3-70b-versatile, llama-3.1-8b-instant")
        );
        assert_eq!(get("GEMINI_MODEL"), Some("gemini-1.5-flash"));
        assert_eq!(get("OLLAMA_MODEL"), Some("llama3"));
        assert_eq!(get("LLM_A"), Some("it is $HOME # kept"));
        assert_eq!(get("LLM_B"), Some("a\"b\n"));
        assert_eq!(get("LLM_C"), Some("a#b"));
        assert_eq!(get("LLM_D"), Some(""));
        assert_eq!(get("LLM_E"), Some("x$y"));
    }

    #[test]
    fn a_bad_line_is_reported_by_number_without_its_value_and_the_rest_is_read() {
        let text = "OPENAI_API_KEY=\"sk-unclosed-SECRET\nsk-pasted-SECRET-alone\nGROQ API KEY=gsk-SECRET\nLLM_X='SECRET' trailing\nGROQ_MODEL=a, b\n";
        let d = parse_dotenv(text);
        assert_eq!(d.values, vec![("GROQ_MODEL".into(), "a, b".into())]);
        let lines: Vec<usize> = d.problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4]);
        for p in &d.problems {
            let t = p.to_string();
            assert!(t.starts_with(&format!("line {}: ", p.line)), "{t}");
            assert!(!t.contains("SECRET") && !t.contains("sk-"), "{t}");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), text).unwrap();
        let s = Settings::load(dir.path());
        assert_eq!(s.warnings.len(), 4);
        assert!(s.warnings[0].contains(".env: line 1: "), "{:?}", s.warnings);
        assert!(s.warnings.iter().all(|w| !w.contains("SECRET")));
    }

    #[test]
    fn dotenv_in_parent_is_found_and_secrets_redacted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".env"),
            "OPENAI_API_KEY=sk-secret-123\nOPENAI_MODEL=gpt-4o,gpt-3.5-turbo\n",
        )
        .unwrap();
        let sub = dir.path().join("notebooks");
        std::fs::create_dir(&sub).unwrap();
        let s = Settings::load(&sub);
        assert_eq!(s.get("OPENAI_MODEL"), Some("gpt-4o,gpt-3.5-turbo"));
        assert_eq!(s.source("OPENAI_MODEL"), Some(Source::DotEnv));
        assert_eq!(
            s.redact("error with key sk-secret-123 here"),
            "error with key *** here"
        );
    }

    fn me() -> Trust {
        Trust {
            home: None,
            ..Trust::current()
        }
    }

    fn mode(p: &Path, m: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    /// A shared class folder: the teacher's (here: writable by all, as a drop folder is) with
    /// another student's `.env` in it; the student's notebook one level down.
    #[test]
    fn a_shared_parent_folder_is_not_searched() {
        let root = tempfile::tempdir().unwrap();
        let class = root.path().join("class");
        let mine = class.join("alice");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(
            class.join(".env"),
            "OPENAI_BASE_URL=http://thief
OPENAI_MODEL=m
",
        )
        .unwrap();
        mode(&class, 0o777);
        let s = Settings::load_trusting(&mine, &me());
        assert_eq!(s.get("OPENAI_MODEL"), None);
        assert_eq!(s.get("OPENAI_BASE_URL"), None);
        assert!(s.dotenv_path.is_none());
        assert!(
            s.warnings[0].contains("class/.env: not read: its folder is writable by every user"),
            "{:?}",
            s.warnings
        );
        // group-writable by another group: not ours alone either
        mode(&class, 0o775);
        let other_group = Trust {
            gid: me().gid.wrapping_add(1),
            ..me()
        };
        let s = Settings::load_trusting(&mine, &other_group);
        assert!(
            s.warnings[0].contains("writable by its group"),
            "{:?}",
            s.warnings
        );
        // our own group (user-private groups) is fine
        let s = Settings::load_trusting(&mine, &me());
        assert_eq!(s.get("OPENAI_MODEL"), Some("m"));
    }

    #[test]
    fn guarded_settings_come_only_from_the_notebooks_own_folder() {
        let root = tempfile::tempdir().unwrap();
        let mine = root.path().join("nb");
        std::fs::create_dir(&mine).unwrap();
        mode(root.path(), 0o755);
        std::fs::write(
            root.path().join(".env"),
            "OPENAI_BASE_URL=http://elsewhere/v1\nCARBON_PYTHON=/tmp/evil\nLLM_MODELS_FILE=x.csv\nOPENAI_API_KEY=sk-parent-key\n",
        )
        .unwrap();
        let s = Settings::load_trusting(&mine, &me());
        assert_eq!(s.get("OPENAI_API_KEY"), Some("sk-parent-key"));
        for k in ["OPENAI_BASE_URL", "CARBON_PYTHON", "LLM_MODELS_FILE"] {
            if std::env::var_os(k).is_none() {
                assert_eq!(s.get(k), None, "{k}");
                assert!(
                    s.warnings.iter().any(|w| w.contains(k)
                        && w.contains(&format!("{}", root.path().join(".env").display()))),
                    "{k}: {:?}",
                    s.warnings
                );
            }
        }
        // the same file in the notebook's own folder is trusted
        std::fs::rename(root.path().join(".env"), mine.join(".env")).unwrap();
        let s = Settings::load_trusting(&mine, &me());
        assert_eq!(s.get("LLM_MODELS_FILE"), Some("x.csv"));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // the search stops at home (here: the notebook's folder)
        std::fs::rename(mine.join(".env"), root.path().join(".env")).unwrap();
        let home = Trust {
            home: Some(mine.clone()),
            ..me()
        };
        assert!(Settings::load_trusting(&mine, &home).dotenv_path.is_none());
        // …and at a repository root
        std::fs::create_dir(mine.join(".git")).unwrap();
        assert!(Settings::load_trusting(&mine, &me()).dotenv_path.is_none());
    }

    /// Another user's `.env` (a file we do not own, in a folder we do) is never read. Needs root
    /// to give the file away (chown); as another user the case is played with a different uid.
    #[test]
    fn another_users_file_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join(".env");
        std::fs::write(&f, "OPENAI_MODEL=theirs\n").unwrap();
        let meta = std::fs::metadata(&f).unwrap();
        let stranger = Trust {
            uid: me().uid.wrapping_add(1),
            ..me()
        };
        assert_eq!(stranger.distrust(&meta), Some("owned by another user"));
        if me().uid != 0 {
            return; // giving the file away needs root; the rule itself is checked above
        }
        std::os::unix::fs::chown(&f, Some(4242), None).unwrap();
        let t = me();
        let s = Settings::load_trusting(d.path(), &t);
        assert_eq!(s.get("OPENAI_MODEL"), None);
        assert!(
            s.warnings[0].contains("not read: the file is owned by another user"),
            "{:?}",
            s.warnings
        );
    }
}
