//! The binary's subcommands other than `run`: `install` / `uninstall` (kernelspecs), `report`
//! (the class report) and `magics` (the magics reference). Each module is the command-line edge
//! (arguments, files, what is printed) so `main.rs` stays a dispatch table.

pub mod install;
pub mod magics;
pub mod report;
