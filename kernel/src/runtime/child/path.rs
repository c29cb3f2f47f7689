//! Finding programs, with the `which` crate (the lookup a shell does).

use std::ffi::OsStr;
use std::path::PathBuf;

/// Finds `name` like a shell: a name with a slash is that file (relative to the current
/// folder), any other name is looked up in each `PATH` entry. `None` unless the result is an
/// executable file.
pub fn find_program(name: impl AsRef<OsStr>) -> Option<PathBuf> {
    which::which(name).ok()
}

/// [`find_program`] with `path` (a `PATH`-style list) instead of the process's `PATH`.
pub fn find_program_in(name: impl AsRef<OsStr>, path: &OsStr) -> Option<PathBuf> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    which::which_in(name, Some(path), cwd).ok()
}
