//! The class report's reader of emissions CSV files (CodeCarbon's and ours): any bytes give rows
//! or a one-line reason to skip the file.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    if let Err(why) = carbon_magics::report::class::read_emissions_bytes(bytes) {
        assert!(!why.contains('\n'), "{why:?}");
    }
});
