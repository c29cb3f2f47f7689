//! Cell syntax: split a cell into its cell magic (`%%name args`, first line only), its line magics
//! (`%name args` lines) and the body that the language runtime sees.
//!
//! Rules (as IPython): a cell magic must be the first line; `%%` anywhere else is not a magic.
//! Line magics are whole lines starting with `%` (after indentation is *not* allowed, so Python's
//! `%` operator at line start inside expressions is never mistaken for a magic; IPython has the same
//! rule). A line `%name?` or `%%name?` asks for help. `?name` / `name?` help requests for the
//! language are left to the runtime.
//!
//! Only the kernel's own magics are taken out of the cell (the caller says which names are its
//! own): every other `%`/`%%` line stays in the body, where the cell's language takes it as its
//! own kernel would (IPython's `%timeit`, `%%time`, …), errors included.

use crate::error::UsageError;
use crate::registry::MagicKind;
use thiserror::Error;

/// One magic invocation: name and raw argument string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MagicCall {
    /// Magic name without `%`/`%%`.
    pub name: String,
    /// Raw arguments (rest of the line, trimmed).
    pub args: String,
    /// 0-based line number in the cell.
    pub line: usize,
    /// `name?` form: the user asked for help.
    pub help: bool,
}

impl MagicCall {
    /// Shell-like split of the arguments (quotes respected).
    pub fn argv(&self) -> Result<Vec<String>, ParseError> {
        shlex::split(&self.args).ok_or_else(|| ParseError::Quotes {
            name: self.name.clone(),
            line: self.line,
        })
    }
}

/// A parsed cell.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CellPlan {
    /// `%%name args` on the first line, if any.
    pub cell_magic: Option<MagicCall>,
    /// `%name args` lines, in order (only outside a cell magic's body).
    pub line_magics: Vec<MagicCall>,
    /// The code left for the runtime (line magics removed; lines kept as blank lines so positions
    /// in error messages still match the user's cell).
    pub body: String,
}

/// Malformed magic syntax (shown to the user as a [`UsageError`]).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    /// `%%name` not on the first line.
    #[error("line {line}: cell magic '%%{name}' must be the first line of the cell (see %lsmagic)")]
    CellMagicNotFirst {
        /// Magic name.
        name: String,
        /// 1-based line.
        line: usize,
    },
    /// Unbalanced quotes in the arguments.
    #[error("%{name}: unbalanced quotes in the arguments")]
    Quotes {
        /// Magic name.
        name: String,
        /// 0-based line.
        line: usize,
    },
}

impl From<ParseError> for UsageError {
    fn from(e: ParseError) -> Self {
        match e {
            ParseError::Quotes { name, .. } => {
                UsageError::new(format!("%{name}"), "unbalanced quotes in the arguments")
            }
            other => UsageError::general(other.to_string()),
        }
    }
}

/// The call on a line after its `%`/`%%`; `None` when the line names no magic (a bare `%`).
fn split_magic(rest: &str, line: usize) -> Option<MagicCall> {
    let rest = rest.trim_end();
    let (head, args) = match rest.find(char::is_whitespace) {
        Some(i) => (&rest[..i], rest[i..].trim()),
        None => (rest, ""),
    };
    let (name, help) = match head.strip_suffix('?') {
        Some(n) => (n, true),
        None => (head, false),
    };
    if name.is_empty() {
        return None;
    }
    Some(MagicCall {
        name: name.to_string(),
        args: args.to_string(),
        line,
        help,
    })
}

/// Splits a cell into cell magic, line magics and body. `own(call, form)` says whether the call
/// (in the form [`MagicKind::Line`] or [`MagicKind::Cell`]) is one of the kernel's magics; a line
/// naming any other magic stays in the body for the language.
///
/// When a cell magic is present, the rest of the cell is its body verbatim (a `%%llm` prompt or a
/// `%%java` cell may legitimately contain `%`), so line magics are only recognised in plain cells.
pub fn parse_cell(
    code: &str,
    own: impl Fn(&MagicCall, MagicKind) -> bool,
) -> Result<CellPlan, ParseError> {
    let own_call =
        |rest: &str, line: usize, form: MagicKind| split_magic(rest, line).filter(|c| own(c, form));
    let mut plan = CellPlan::default();
    // Leading blank lines before a cell magic are tolerated (front-ends sometimes add them).
    let first_nonblank = code.lines().position(|l| !l.trim().is_empty());
    if let Some(idx) = first_nonblank {
        let first = code.lines().nth(idx).unwrap_or_default();
        if let Some(call) = first
            .strip_prefix("%%")
            .and_then(|r| own_call(r, idx, MagicKind::Cell))
        {
            plan.cell_magic = Some(call);
            plan.body = code.split_inclusive('\n').skip(idx + 1).collect::<String>();
            return Ok(plan);
        }
        if first.starts_with("%%") {
            // The language's own cell magic (IPython's `%%time`): the whole cell is its code.
            plan.body = code.to_string();
            return Ok(plan);
        }
    }
    let mut body = String::with_capacity(code.len());
    for (i, raw) in code.split_inclusive('\n').enumerate() {
        let line = raw.trim_end_matches(['\n', '\r']);
        if let Some(call) = line
            .strip_prefix("%%")
            .and_then(|r| own_call(r, i, MagicKind::Cell))
        {
            return Err(ParseError::CellMagicNotFirst {
                name: call.name,
                line: i + 1,
            });
        }
        if let Some(call) = line
            .strip_prefix('%')
            .and_then(|r| own_call(r, i, MagicKind::Line))
        {
            plan.line_magics.push(call);
            // keep line numbering stable for runtime error messages
            if raw.ends_with('\n') {
                body.push('\n');
            }
            continue;
        }
        body.push_str(raw);
    }
    plan.body = body;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(call: &MagicCall, form: MagicKind) -> bool {
        match form {
            MagicKind::Cell => ["carbon", "llm", "java"].contains(&call.name.as_str()),
            _ => ["carbon", "lang", "llm"].contains(&call.name.as_str()),
        }
    }

    #[test]
    fn plain_cell_has_no_magics() {
        let p = parse_cell("x = 1\nprint(x)\n", own).unwrap();
        assert!(p.cell_magic.is_none());
        assert!(p.line_magics.is_empty());
        assert_eq!(p.body, "x = 1\nprint(x)\n");
    }

    #[test]
    fn cell_magic_takes_rest_verbatim() {
        let p = parse_cell(
            "%%carbon java --country FRA\nint x = 10 % 3;\n%notmagic\n",
            own,
        )
        .unwrap();
        let m = p.cell_magic.unwrap();
        assert_eq!(m.name, "carbon");
        assert_eq!(m.args, "java --country FRA");
        assert_eq!(p.body, "int x = 10 % 3;\n%notmagic\n");
    }

    #[test]
    fn line_magics_removed_but_lines_kept() {
        let p = parse_cell("%carbon on\nx = 1\n%lang java", own).unwrap();
        assert_eq!(p.line_magics.len(), 2);
        assert_eq!(p.line_magics[1].name, "lang");
        assert_eq!(p.line_magics[1].args, "java");
        assert_eq!(p.body, "\nx = 1\n");
    }

    #[test]
    fn help_suffix_and_errors() {
        let p = parse_cell("%carbon?", own).unwrap();
        assert!(p.line_magics[0].help);
        assert_eq!(
            parse_cell("x=1\n%%carbon\n", own).unwrap_err(),
            ParseError::CellMagicNotFirst {
                name: "carbon".into(),
                line: 2
            }
        );
        let p = parse_cell("%llm \"unbalanced", own).unwrap();
        assert!(p.line_magics[0].argv().is_err());
    }

    #[test]
    fn foreign_magics_stay_in_the_body() {
        let p = parse_cell("%carbon on\n%timeit f()\n%foo?\n% x\n!ls\n", own).unwrap();
        assert_eq!(p.line_magics.len(), 1);
        assert_eq!(p.body, "\n%timeit f()\n%foo?\n% x\n!ls\n");
        // a foreign cell magic: the whole cell is the language's
        let p = parse_cell("%%time\nx = 1\n%carbon on\n", own).unwrap();
        assert!(p.cell_magic.is_none() && p.line_magics.is_empty());
        assert_eq!(p.body, "%%time\nx = 1\n%carbon on\n");
        // a foreign `%%` further down is the language's business, an own one an error
        assert_eq!(
            parse_cell("x=1\n%%bash\n", own).unwrap().body,
            "x=1\n%%bash\n"
        );
        assert!(parse_cell("x=1\n%%java\n", own).is_err());
        // the line form of a cell-only magic is not ours
        assert_eq!(parse_cell("%java\n", own).unwrap().body, "%java\n");
        // our cell magic keeps a foreign one in its body
        let p = parse_cell("%%carbon\n%%time\nx\n", own).unwrap();
        assert_eq!(p.cell_magic.unwrap().name, "carbon");
        assert_eq!(p.body, "%%time\nx\n");
    }
}
