//! A scripted runtime for tests of the server and exec layers (no child process), selected with
//! `CARBON_TEST_RUNTIME=1`. Each line of a cell is one directive; other lines are echoed to
//! stdout, so protocol tests do not depend on Python being installed.
//!
//! | line | effect |
//! | --- | --- |
//! | `print TEXT` / `eprint TEXT` | `TEXT\n` on stdout / stderr |
//! | `result TEXT` | the cell's value (`execute_result`, text/plain) |
//! | `html TEXT` | `display_data` with text/html and text/plain |
//! | `display ID TEXT` / `update ID TEXT` | display with a display id / update it |
//! | `clear` | `clear_output(wait=false)` |
//! | `error ENAME EVALUE…` | the cell fails with that error (later lines do not run) |
//! | `sleep SECS` | sleeps; an interrupt ends it with `KeyboardInterrupt` |
//! | `input PROMPT` / `password PROMPT` | asks the front-end, prints `got: ANSWER` |
//! | `spam BYTES` | prints BYTES bytes of `x` (lines of 100) in 64 KiB chunks |
//! | `page TEXT` | a pager payload |
//! | `crash` | the runtime "dies" (`RuntimeError::Died`) |
//! | `pid` | prints the kernel's pid |
//!
//! `is_complete`: a cell ending with `\` is incomplete (indent 4 spaces), one containing
//! `@invalid` is invalid. `complete` offers the directive names; `inspect` documents them.

use super::{
    Completeness, Completions, ExecError, ExecOutcome, Inspection, InterruptHandle, Language,
    LanguageInfo, Publish, Runtime, RuntimeError, StreamName,
};
use carbon_magics::MimeBundle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Directive names, for completion and inspection.
const DIRECTIVES: [&str; 15] = [
    "print", "eprint", "result", "html", "display", "update", "clear", "error", "sleep", "input",
    "password", "spam", "page", "crash", "pid",
];

/// The scripted runtime.
pub struct TestRuntime {
    language: Language,
    interrupted: Arc<AtomicBool>,
    started: bool,
    cells: u64,
}

impl TestRuntime {
    /// A scripted runtime that reports itself as `language`.
    pub fn new(language: Language) -> Self {
        Self {
            language,
            interrupted: Arc::new(AtomicBool::new(false)),
            started: false,
            cells: 0,
        }
    }

    /// A factory building scripted runtimes for every language.
    pub fn factory() -> crate::runtime::RuntimeFactory {
        Box::new(|lang, _settings| -> Box<dyn Runtime> { Box::new(TestRuntime::new(lang)) })
    }

    fn sleep(&self, secs: f64) -> Result<(), ExecError> {
        let end = Instant::now() + Duration::from_secs_f64(secs.clamp(0.0, 3600.0));
        while Instant::now() < end {
            if self.interrupted.swap(false, Ordering::SeqCst) {
                return Err(ExecError::new("KeyboardInterrupt", "interrupted"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

fn word_at(code: &str, cursor: usize) -> (usize, &str) {
    let cursor = cursor.min(code.len());
    let start = code[..cursor]
        .rfind(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .map(|i| i + 1)
        .unwrap_or(0);
    (start, &code[start..cursor])
}

impl Runtime for TestRuntime {
    fn language(&self) -> Language {
        self.language
    }

    fn info(&self) -> LanguageInfo {
        // The table's MIME type and extension; the lexer fields stay the bare name so tests can
        // tell a test runtime's reply from a real one's.
        let real = LanguageInfo::of(self.language, "0.0-test");
        LanguageInfo {
            name: real.name,
            version: real.version,
            mimetype: real.mimetype,
            file_extension: real.file_extension,
            pygments_lexer: self.language.name().into(),
            codemirror_mode: self.language.name().into(),
            nbconvert_exporter: self.language.name().into(),
        }
    }

    fn start(&mut self) -> Result<(), RuntimeError> {
        self.started = true;
        Ok(())
    }

    fn execute(&mut self, code: &str, out: &mut dyn Publish) -> Result<ExecOutcome, RuntimeError> {
        self.interrupted.store(false, Ordering::SeqCst);
        self.cells += 1;
        let mut outcome = ExecOutcome::default();
        for line in code.lines() {
            let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
            match cmd {
                "print" => out.stream(StreamName::Stdout, &format!("{arg}\n")),
                "eprint" => out.stream(StreamName::Stderr, &format!("{arg}\n")),
                "result" => outcome.result = Some(MimeBundle::plain(arg)),
                "html" => out.display(
                    MimeBundle::plain(arg).with("text/html", format!("<b>{arg}</b>")),
                    None,
                ),
                "display" | "update" => {
                    let (id, text) = arg.split_once(' ').unwrap_or((arg, ""));
                    if cmd == "display" {
                        out.display(MimeBundle::plain(text), Some(id));
                    } else {
                        out.update_display(MimeBundle::plain(text), id);
                    }
                }
                "clear" => out.clear_output(false),
                "error" => {
                    let (ename, evalue) = arg.split_once(' ').unwrap_or((arg, ""));
                    outcome.error = Some(ExecError::new(ename, evalue));
                    return Ok(outcome);
                }
                "sleep" => {
                    if let Err(e) = self.sleep(arg.trim().parse().unwrap_or(1.0)) {
                        outcome.error = Some(e);
                        return Ok(outcome);
                    }
                }
                "input" | "password" => match out.input(arg, cmd == "password") {
                    Some(answer) => out.stream(StreamName::Stdout, &format!("got: {answer}\n")),
                    None => {
                        outcome.error = Some(ExecError::new(
                            "StdinNotImplementedError",
                            "input was not answered (stdin not allowed, or interrupted)",
                        ));
                        return Ok(outcome);
                    }
                },
                "spam" => {
                    let mut left: usize = arg.trim().parse().unwrap_or(0);
                    let line = format!("{}\n", "x".repeat(99));
                    let chunk = line.repeat(64 * 1024 / line.len());
                    while left > 0 {
                        let n = left.min(chunk.len());
                        out.stream(StreamName::Stdout, &chunk[..n]);
                        left -= n;
                    }
                }
                "page" => outcome.pager = Some(MimeBundle::plain(arg)),
                "crash" => {
                    return Err(RuntimeError::Died {
                        language: "test",
                        how: "scripted crash".into(),
                    });
                }
                "pid" => out.stream(StreamName::Stdout, &format!("{}\n", std::process::id())),
                _ => out.stream(StreamName::Stdout, &format!("{line}\n")),
            }
        }
        Ok(outcome)
    }

    fn is_complete(&mut self, code: &str) -> Completeness {
        if code.contains("@invalid") {
            Completeness::Invalid
        } else if code.trim_end().ends_with('\\') {
            Completeness::Incomplete("    ".into())
        } else {
            Completeness::Complete
        }
    }

    fn complete(&mut self, code: &str, cursor: usize) -> Completions {
        let (start, word) = word_at(code, cursor);
        Completions {
            matches: DIRECTIVES
                .iter()
                .filter(|d| d.starts_with(word))
                .map(|d| d.to_string())
                .collect(),
            cursor_start: start,
            cursor_end: cursor.min(code.len()),
        }
    }

    fn inspect(&mut self, code: &str, cursor: usize, _detail: u8) -> Inspection {
        let cursor = cursor.min(code.len());
        let end = code[cursor..]
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .map(|i| cursor + i)
            .unwrap_or(code.len());
        let (_, word) = word_at(code, end);
        if DIRECTIVES.contains(&word) {
            Inspection {
                found: true,
                data: MimeBundle::plain(format!("{word}: a test-runtime directive")),
            }
        } else {
            Inspection::default()
        }
    }

    fn interrupt_handle(&self) -> InterruptHandle {
        let flag = self.interrupted.clone();
        Arc::new(move || flag.store(true, Ordering::SeqCst))
    }

    fn shutdown(&mut self) {
        self.started = false;
    }

    fn pids(&self) -> Vec<u32> {
        vec![std::process::id()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Collected, Collector};

    #[test]
    fn directives_publish() {
        let mut rt = TestRuntime::new(Language::Python);
        let mut c = Collector::default();
        c.inputs.lock().unwrap().push_back("yes".into());
        let o = rt
            .execute("print a\neprint b\nhello\ninput ?\nresult 42", &mut c)
            .unwrap();
        assert_eq!(c.text(StreamName::Stdout), "a\nhello\ngot: yes\n");
        assert_eq!(c.text(StreamName::Stderr), "b\n");
        assert_eq!(o.result, Some(MimeBundle::plain("42")));
        let o = rt
            .execute("error ValueError bad thing\nprint no", &mut c)
            .unwrap();
        assert_eq!(o.error.unwrap().evalue, "bad thing");
        assert!(!c.text(StreamName::Stdout).contains("no"));
        rt.execute("display d1 one\nupdate d1 two", &mut c).unwrap();
        assert!(matches!(c.items().last(), Some(Collected::Update(_, id)) if id == "d1"));
    }

    #[test]
    fn sleep_is_interruptible() {
        let mut rt = TestRuntime::new(Language::Python);
        let h = rt.interrupt_handle();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            h();
        });
        // uninterrupted, the sleep ends without an error: the error says the interrupt ended it
        let o = rt.execute("sleep 30", &mut Collector::default()).unwrap();
        t.join().unwrap();
        assert_eq!(o.error.unwrap().ename, "KeyboardInterrupt");
        // the interrupt was consumed by that cell: the next one runs to its end
        let o = rt.execute("sleep 0.01", &mut Collector::default()).unwrap();
        assert!(o.error.is_none(), "{o:?}");
    }

    #[test]
    fn completion_and_completeness() {
        let mut rt = TestRuntime::new(Language::Python);
        let c = rt.complete("x = pri", 7);
        assert_eq!(c.matches, vec!["print".to_string()]);
        assert_eq!((c.cursor_start, c.cursor_end), (4, 7));
        assert_eq!(
            rt.is_complete("a \\"),
            Completeness::Incomplete("    ".into())
        );
        assert_eq!(rt.is_complete("@invalid"), Completeness::Invalid);
        assert!(rt.inspect("sleep 1", 2, 0).found);
    }
}
