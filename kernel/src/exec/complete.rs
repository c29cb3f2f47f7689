//! `complete_request` and `inspect_request` for a whole cell: the kernel's own magic lines are
//! answered from the magic table (names, and options from each magic's clap parser), the code
//! from the runtime of the cell's language: the language of `%%java`/`%%rust`/`%%python` or of
//! `%%carbon LANG`, else the default language (`%lang`). Offsets are mapped past the magic line,
//! so the runtime sees only its code.

use super::{Executor, MAGICS, find_magic, is_own_magic};
use crate::runtime::{Completions, Inspection, Language};
use carbon_magics::MimeBundle;
use carbon_magics::complete::{complete_args, word_start};
use carbon_magics::parse::MagicCall;
use carbon_magics::registry::MagicKind;

/// Where the code of a cell is, and which runtime takes it.
struct Target {
    /// The runtime; `None` for a cell whose body is no code (`%%llm`'s prompt).
    language: Option<Language>,
    /// Byte offset of the body in the cell (after the cell magic's line).
    body: usize,
}

/// The line around `cursor`: (start, end) byte offsets, the end without its newline.
fn line_at(code: &str, cursor: usize) -> (usize, usize) {
    let start = code[..cursor].rfind('\n').map_or(0, |i| i + 1);
    let end = code[cursor..].find('\n').map_or(code.len(), |i| cursor + i);
    (start, end)
}

/// The kernel's own magic on the line `line` (text from its start), in the form it is used.
fn own_magic_on(line: &str, first: bool) -> Option<(MagicCall, MagicKind)> {
    let (rest, form) = match line.strip_prefix("%%") {
        Some(r) if first => (r, MagicKind::Cell),
        Some(_) => return None,
        None => (line.strip_prefix('%')?, MagicKind::Line),
    };
    let rest = rest.trim_end();
    let (name, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let call = MagicCall {
        name: name.trim_end_matches('?').to_string(),
        args: args.trim().to_string(),
        line: 0,
        help: name.ends_with('?'),
    };
    is_own_magic(&call, form).then_some((call, form))
}

/// Offset of the first non-blank line (where a cell magic may stand).
fn first_line_start(code: &str) -> usize {
    let mut at = 0;
    for l in code.split_inclusive('\n') {
        if !l.trim().is_empty() {
            return at;
        }
        at += l.len();
    }
    at
}

fn target(ex: &Executor, code: &str) -> Target {
    let first = first_line_start(code);
    let (_, end) = line_at(code, first);
    let plain = Target {
        language: Some(ex.default_language),
        body: 0,
    };
    let Some((call, MagicKind::Cell)) = own_magic_on(&code[first..end], true) else {
        return plain;
    };
    let body = (end + 1).min(code.len());
    let language = match Language::parse(&call.name) {
        Some(l) => Some(l),
        // `%%carbon [LANG] [options]`: the cell is in LANG, else in the default language.
        // Its parser decides (`--label java` names no language); half-typed options: the
        // first word.
        None if call.name == "carbon" => Some(
            match carbon_magics::carbon::magic::parse_cell_args(&call.args) {
                Ok(a) => a.language.as_deref().and_then(Language::parse),
                Err(_) => call
                    .args
                    .split_whitespace()
                    .next()
                    .and_then(Language::parse),
            }
            .unwrap_or(ex.default_language),
        ),
        None => None,
    };
    Target { language, body }
}

/// `code` with the kernel's own magic lines blanked (same length, so offsets hold): the
/// runtime would read `%carbon on` as code.
fn without_own_magics(code: &str) -> String {
    code.split_inclusive('\n')
        .map(|l| {
            if own_magic_on(l.trim_end_matches(['\n', '\r']), false).is_some() {
                l.chars()
                    .map(|c| if c == '\n' { '\n' } else { ' ' })
                    .collect()
            } else {
                l.to_string()
            }
        })
        .collect()
}

/// The magics (with their `%`/`%%`) whose name starts with the name in `typed` (`%car`,
/// `%%car`). As in IPython, `%car` also offers the cell form `%%carbon` (on a cell's first
/// line), `%%car` only cell forms.
fn magic_names(typed: &str, may_be_cell: bool) -> Vec<String> {
    let cell_only = typed.starts_with("%%");
    let name = typed.trim_start_matches('%');
    let mut out = Vec::new();
    for m in MAGICS.iter().filter(|m| m.spec.name.starts_with(name)) {
        let kind = m.kind();
        if kind != MagicKind::Cell && !cell_only {
            out.push(format!("%{}", m.spec.name));
        }
        if kind != MagicKind::Line && may_be_cell {
            out.push(format!("%%{}", m.spec.name));
        }
    }
    out
}

fn none(cursor: usize) -> Completions {
    Completions {
        matches: vec![],
        cursor_start: cursor,
        cursor_end: cursor,
    }
}

/// Completions of the runtime of `lang` for `code` (the runtime's part of the cell, starting at
/// byte `shift` of the cell), mapped back to the cell's offsets.
fn runtime_completions(
    ex: &mut Executor,
    lang: Language,
    code: &str,
    cursor: usize,
    shift: usize,
) -> Completions {
    let rt = ex.runtime(lang);
    let mut c = match rt.start() {
        Ok(()) => rt.complete(code, cursor),
        Err(_) => none(cursor),
    };
    c.cursor_start += shift;
    c.cursor_end += shift;
    c
}

/// `complete_request` for the cell `code` with the cursor at byte `cursor`.
pub fn complete(ex: &mut Executor, code: &str, cursor: usize) -> Completions {
    let cursor = cursor.min(code.len());
    if !code.is_char_boundary(cursor) {
        return none(cursor);
    }
    let t = target(ex, code);
    let (ls, le) = line_at(code, cursor);
    let before = &code[ls..cursor];
    let line = &code[ls..le];
    let first_line = ls == first_line_start(code);
    if line.starts_with('%') && (first_line || t.body == 0) {
        // A magic line: its name, or its arguments.
        let name_typed = !before.contains(char::is_whitespace);
        if name_typed {
            let mut matches = magic_names(before, first_line);
            // IPython's own magics in Python cells (`%ti` → `%timeit`), when they replace the
            // same text.
            if t.language == Some(Language::Python) && t.body == 0 {
                let theirs = runtime_completions(ex, Language::Python, code, cursor, 0);
                if theirs.cursor_start == ls && theirs.cursor_end == cursor {
                    for m in theirs.matches {
                        if !matches.contains(&m) {
                            matches.push(m);
                        }
                    }
                }
            }
            return Completions {
                matches,
                cursor_start: ls,
                cursor_end: cursor,
            };
        }
        if let Some((call, form)) = own_magic_on(line, first_line) {
            let args_at = before.find(char::is_whitespace).unwrap_or(before.len());
            let args_before = before[args_at..].trim_start();
            let Some(m) = find_magic(&call.name) else {
                return none(cursor);
            };
            let matches = complete_args(&m.command(form), args_before);
            return Completions {
                matches,
                cursor_start: cursor - (args_before.len() - word_start(args_before)),
                cursor_end: cursor,
            };
        }
        // Another language's magic (IPython's `%timeit …`): the language completes it.
    }
    let Some(lang) = t.language else {
        return none(cursor);
    };
    if cursor < t.body {
        return none(cursor);
    }
    let body = if t.body == 0 {
        without_own_magics(code)
    } else {
        code[t.body..].to_string()
    };
    runtime_completions(ex, lang, &body, cursor - t.body, t.body)
}

/// `inspect_request` for the cell `code` with the cursor at byte `cursor`: the help of the
/// kernel's magic under the cursor, else the runtime's documentation of the code.
pub fn inspect(ex: &mut Executor, code: &str, cursor: usize, detail: u8) -> Inspection {
    let cursor = cursor.min(code.len());
    if !code.is_char_boundary(cursor) {
        return Inspection::default();
    }
    let t = target(ex, code);
    let (ls, le) = line_at(code, cursor);
    let first_line = ls == first_line_start(code);
    let magic_line = (first_line || t.body == 0)
        .then(|| own_magic_on(&code[ls..le], first_line))
        .flatten();
    if let Some((call, _)) = magic_line {
        return match find_magic(&call.name) {
            Some(m) => Inspection {
                found: true,
                data: MimeBundle::plain(m.long_help()),
            },
            None => Inspection::default(),
        };
    }
    let Some(lang) = t.language else {
        return Inspection::default();
    };
    if cursor < t.body {
        return Inspection::default();
    }
    let body = if t.body == 0 {
        without_own_magics(code)
    } else {
        code[t.body..].to_string()
    };
    let rt = ex.runtime(lang);
    match rt.start() {
        Ok(()) => rt.inspect(&body, cursor - t.body, detail),
        Err(_) => Inspection::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_magic_lines_and_names() {
        assert!(own_magic_on("%carbon on", false).is_some());
        assert!(own_magic_on("%%carbon --repeat 2", true).is_some());
        assert!(own_magic_on("%%carbon", false).is_none());
        assert!(own_magic_on("%timeit x", false).is_none());
        assert_eq!(magic_names("%car", true), ["%carbon", "%%carbon"]);
        assert_eq!(magic_names("%%j", true), ["%%java"]);
        assert_eq!(magic_names("%l", false), ["%lang", "%lsmagic", "%llm"]);
        assert_eq!(magic_names("%%l", true), ["%%llm"]);
        let blanked = without_own_magics("%carbon on\nx = 1\n%timeit x\n");
        assert_eq!(blanked, "          \nx = 1\n%timeit x\n");
        assert_eq!(line_at("ab\ncd\nef", 4), (3, 5));
        assert_eq!(first_line_start("\n  \n%%java\n"), 4);
    }
}
