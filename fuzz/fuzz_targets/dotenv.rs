//! The `.env` reader: any text gives pairs and numbered problems, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let d = carbon_magics::config::parse_dotenv(text);
    let lines = text.lines().count().max(1);
    for p in &d.problems {
        assert!(p.line >= 1 && p.line <= lines + 1, "{p} of {lines}");
    }
    for (k, _) in &d.values {
        assert!(!k.is_empty());
    }
});
