//! This session's input history, kept in memory, for `history_request`
//! (<https://jupyter-client.readthedocs.io/en/latest/messaging.html#history>).

use jupyter_protocol::HistoryRequest;
use serde_json::{Value, json};

/// Session number reported in entries (we keep no history across kernel processes, so there is
/// one session; requests may name it 0, "the current session", as IPython allows).
pub const SESSION: u32 = 1;

#[derive(Debug, Clone)]
struct Cell {
    line: u32,
    input: String,
    output: String,
}

/// The stored cells, for `history_request` (not the LLM request history of
/// `carbon_magics::llm::history`).
#[derive(Debug, Default)]
pub struct InputHistory {
    cells: Vec<Cell>,
}

/// IPython's `GLOB` (sqlite): `*` any run, `?` one character, over the whole input.
fn glob(pattern: &[char], text: &[char]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

impl InputHistory {
    /// Records a stored cell (`store_history`), with the text/plain of its result if any.
    pub fn push(&mut self, line: u32, input: &str, output: &str) {
        self.cells.push(Cell {
            line,
            input: input.to_string(),
            output: output.to_string(),
        });
    }

    /// Forgets everything (kernel restart).
    pub fn clear(&mut self) {
        self.cells.clear();
    }

    /// The `history_reply` content for a request.
    pub fn reply(&self, req: &HistoryRequest) -> Value {
        let (cells, output): (Vec<&Cell>, bool) = match req {
            HistoryRequest::Tail { n, output, .. } => {
                let n = usize::try_from(*n).unwrap_or(0);
                let skip = self.cells.len().saturating_sub(n);
                (self.cells.iter().skip(skip).collect(), *output)
            }
            HistoryRequest::Range {
                session,
                start,
                stop,
                output,
                ..
            } => {
                let ours = matches!(session, None | Some(0)) || *session == Some(SESSION as i32);
                let cells = if ours {
                    self.cells
                        .iter()
                        .filter(|c| {
                            let l = c.line as i64;
                            l >= i64::from(*start) && (*stop <= 0 || l < i64::from(*stop))
                        })
                        .collect()
                } else {
                    vec![]
                };
                (cells, *output)
            }
            HistoryRequest::Search {
                pattern,
                unique,
                output,
                n,
                ..
            } => {
                let pat: Vec<char> = if pattern.is_empty() {
                    vec!['*']
                } else {
                    pattern.chars().collect()
                };
                let mut hits: Vec<&Cell> = self
                    .cells
                    .iter()
                    .filter(|c| glob(&pat, &c.input.chars().collect::<Vec<_>>()))
                    .collect();
                if *unique {
                    // Keep the most recent occurrence of each input, in order.
                    let mut seen = std::collections::HashSet::new();
                    let mut keep: Vec<&Cell> = hits
                        .iter()
                        .rev()
                        .filter(|c| seen.insert(c.input.as_str()))
                        .copied()
                        .collect();
                    keep.reverse();
                    hits = keep;
                }
                if *n > 0 {
                    let skip = hits.len().saturating_sub(*n as usize);
                    hits = hits.into_iter().skip(skip).collect();
                }
                (hits, *output)
            }
        };
        let history: Vec<Value> = cells
            .iter()
            .map(|c| {
                if output {
                    json!([SESSION, c.line, [c.input, c.output]])
                } else {
                    json!([SESSION, c.line, c.input])
                }
            })
            .collect();
        json!({ "status": "ok", "history": history })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h() -> InputHistory {
        let mut h = InputHistory::default();
        h.push(1, "a = 1", "");
        h.push(2, "print(a)", "");
        h.push(3, "a = 1", "");
        h.push(4, "a + 1", "2");
        h
    }

    #[test]
    fn tail_range_search() {
        let h = h();
        let r = h.reply(&HistoryRequest::Tail {
            n: 2,
            output: false,
            raw: true,
        });
        assert_eq!(r["history"], json!([[1, 3, "a = 1"], [1, 4, "a + 1"]]));
        let r = h.reply(&HistoryRequest::Range {
            session: Some(0),
            start: 2,
            stop: 4,
            output: true,
            raw: true,
        });
        assert_eq!(
            r["history"],
            json!([[1, 2, ["print(a)", ""]], [1, 3, ["a = 1", ""]]])
        );
        let r = h.reply(&HistoryRequest::Search {
            pattern: "a*".into(),
            unique: true,
            output: false,
            raw: true,
            n: 10,
        });
        assert_eq!(r["history"], json!([[1, 3, "a = 1"], [1, 4, "a + 1"]]));
        let r = h.reply(&HistoryRequest::Search {
            pattern: "print(?)".into(),
            unique: false,
            output: false,
            raw: true,
            n: 0,
        });
        assert_eq!(r["history"], json!([[1, 2, "print(a)"]]));
    }

    #[test]
    fn glob_matches_whole_text() {
        let g = |p: &str, t: &str| {
            glob(
                &p.chars().collect::<Vec<_>>(),
                &t.chars().collect::<Vec<_>>(),
            )
        };
        assert!(g("*", ""));
        assert!(g("a*c", "abbbc"));
        assert!(!g("a*c", "abbbd"));
        assert!(g("?b*", "ab"));
        assert!(!g("b", "ab"));
    }
}
