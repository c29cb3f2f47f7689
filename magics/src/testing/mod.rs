//! Helpers for tests only: this crate's unit tests and the kernel's unit and end-to-end tests
//! (the `testing` feature, which the kernel enables in its `[dev-dependencies]`). Nothing here
//! is compiled into the kernel binary.
//!
//! * [`fake_nvml`]: a fake `libnvidia-ml.so` whose state a test writes;
//! * [`llm_server`]: loopback HTTP servers that speak the LLM providers' wire formats;
//! * [`powercap`]: fake RAPL powercap trees;
//! * [`strip_ansi`]: coloured tracebacks as plain text, for comparisons.

pub mod fake_nvml;
pub mod llm_server;
pub mod powercap;

/// Removes ANSI escape sequences (tracebacks are coloured) so text can be compared.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn strip_ansi_removes_colour_codes() {
        assert_eq!(
            strip_ansi("\x1b[0;31mZeroDivisionError\x1b[0m: x"),
            "ZeroDivisionError: x"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
