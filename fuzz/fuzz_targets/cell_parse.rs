//! The magic/cell parser: any cell text parses or gives a usage error; every magic's arguments
//! split or give one.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|code: &str| {
    if let Ok(plan) = carbon_magics::parse::parse_cell(code) {
        for call in plan.cell_magic.iter().chain(&plan.line_magics) {
            let _ = call.argv();
        }
        // line magics are blanked, never removed: the body keeps the cell's line count
        assert!(plan.body.lines().count() <= code.lines().count() + 1);
    }
});
