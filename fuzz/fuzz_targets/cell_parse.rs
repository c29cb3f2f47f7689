//! The magic/cell parser: any cell text parses or gives a usage error; every magic's arguments
//! split or give one.
#![no_main]
use carbon_magics::parse::MagicCall;
use carbon_magics::registry::MagicKind;
use libfuzzer_sys::fuzz_target;

/// The kernel's own magics (`kernel::exec::MAGICS`, which lives in the binary crate): the names
/// decide which lines leave the cell, so a few real ones exercise both paths.
fn own(call: &MagicCall, _form: MagicKind) -> bool {
    call.help
        || matches!(
            call.name.as_str(),
            "carbon" | "llm" | "lang" | "lsmagic" | "python"
        )
}

fuzz_target!(|code: &str| {
    if let Ok(plan) = carbon_magics::parse::parse_cell(code, own) {
        for call in plan.cell_magic.iter().chain(&plan.line_magics) {
            let _ = call.argv();
        }
        // line magics are blanked, never removed: the body keeps the cell's line count
        assert!(plan.body.lines().count() <= code.lines().count() + 1);
    }
});
