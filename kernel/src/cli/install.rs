//! `carbon-kernel install` / `uninstall`: one kernelspec per row of the language table
//! (`carbon` for Python, `carbon-java`, `carbon-rust`), from the template and logos in
//! `install/kernelspec/` (embedded in the binary).
//!
//! Locations follow jupyter_core's rules (<https://docs.jupyter.org/en/latest/use/jupyter-directories.html>):
//! `--user` → `$JUPYTER_DATA_DIR`, else `$XDG_DATA_HOME/jupyter`, else `~/.local/share/jupyter`
//! (`~/Library/Jupyter` on macOS); `--sys-prefix` → `$VIRTUAL_ENV` (else `$CONDA_PREFIX`, else
//! the `sys.prefix` of `python3` on PATH) `/share/jupyter`; `--prefix DIR` → `DIR/share/jupyter`.
//! Kernelspecs go in `kernels/<name>/` below that.

use crate::runtime::Language;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

const TEMPLATE: &str = include_str!("../../../install/kernelspec/kernel.json.template");
const LOGO_SVG: &[u8] = include_bytes!("../../../install/kernelspec/logo-svg.svg");
const LOGO_32: &[u8] = include_bytes!("../../../install/kernelspec/logo-32x32.png");
const LOGO_64: &[u8] = include_bytes!("../../../install/kernelspec/logo-64x64.png");

/// Arguments of `carbon-kernel install` / `uninstall`.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The user's Jupyter data dir (default).
    #[arg(long, group = "location")]
    pub user: bool,
    /// The active Python environment (VIRTUAL_ENV, CONDA_PREFIX or python3's sys.prefix).
    #[arg(long, group = "location")]
    pub sys_prefix: bool,
    /// DIR/share/jupyter/kernels.
    #[arg(long, group = "location", value_name = "DIR")]
    pub prefix: Option<PathBuf>,
    /// Base kernelspec name (NAME, NAME-java, NAME-rust).
    #[arg(long, default_value = "carbon")]
    pub name: String,
}

impl InstallArgs {
    /// Where the arguments point.
    pub fn location(&self) -> Location {
        match (&self.prefix, self.sys_prefix) {
            (Some(p), _) => Location::Prefix(p.clone()),
            (None, true) => Location::SysPrefix,
            _ => Location::User,
        }
    }
}

/// Runs `carbon-kernel install`: the kernelspecs name `binary` as `argv[0]`; prints each folder.
pub fn run_install(
    args: &InstallArgs,
    binary: &Path,
    out: &mut dyn Write,
) -> Result<(), InstallError> {
    for d in install(&args.location(), &args.name, binary)? {
        let _ = writeln!(out, "installed kernelspec in {}", d.display());
    }
    Ok(())
}

/// Runs `carbon-kernel uninstall`; prints what was removed.
pub fn run_uninstall(args: &InstallArgs, out: &mut dyn Write) -> Result<(), InstallError> {
    let dirs = uninstall(&args.location(), &args.name)?;
    if dirs.is_empty() {
        let _ = writeln!(out, "no carbon kernelspec found");
    }
    for d in dirs {
        let _ = writeln!(out, "removed {}", d.display());
    }
    Ok(())
}

/// Where kernelspecs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The user's Jupyter data dir.
    User,
    /// The active Python environment.
    SysPrefix,
    /// `DIR/share/jupyter`.
    Prefix(PathBuf),
}

/// Install or uninstall failure.
#[derive(Debug, Error)]
pub enum InstallError {
    /// No home directory / data dir could be found.
    #[error("cannot find the Jupyter data directory: {0}")]
    NoDataDir(String),
    /// `--sys-prefix` without an environment.
    #[error(
        "--sys-prefix: no active environment (VIRTUAL_ENV/CONDA_PREFIX unset) and python3 on PATH did not answer: {0}"
    )]
    NoPrefix(String),
    /// Writing or removing files failed.
    #[error("{path}: {source}")]
    Io {
        /// file or folder
        path: PathBuf,
        /// cause
        #[source]
        source: std::io::Error,
    },
    /// The embedded template is broken (a build error, caught by tests).
    #[error("kernel.json template: {0}")]
    Template(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The Jupyter data dir of a location (`…/share/jupyter` or the user dir).
pub fn data_dir(loc: &Location) -> Result<PathBuf, InstallError> {
    match loc {
        Location::Prefix(p) => Ok(p.join("share").join("jupyter")),
        Location::SysPrefix => Ok(sys_prefix()?.join("share").join("jupyter")),
        Location::User => {
            if let Some(d) = std::env::var_os("JUPYTER_DATA_DIR").filter(|d| !d.is_empty()) {
                return Ok(PathBuf::from(d));
            }
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| InstallError::NoDataDir("HOME is not set".into()))?;
            if cfg!(target_os = "macos") {
                return Ok(home.join("Library").join("Jupyter"));
            }
            match std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
                Some(x) => Ok(PathBuf::from(x).join("jupyter")),
                None => Ok(home.join(".local").join("share").join("jupyter")),
            }
        }
    }
}

fn sys_prefix() -> Result<PathBuf, InstallError> {
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.prefix)"])
        .output()
        .map_err(|e| InstallError::NoPrefix(e.to_string()))?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || p.is_empty() {
        return Err(InstallError::NoPrefix(format!(
            "exit status {}",
            out.status
        )));
    }
    Ok(PathBuf::from(p))
}

/// The kernelspec name of a language: `carbon`, `carbon-java`, `carbon-rust` for base `carbon`
/// (the suffix comes from the language table).
pub fn spec_name(base: &str, lang: Language) -> String {
    lang.kernelspec_name(base)
}

/// Display name in front-ends' launchers (from the language table).
pub fn display_name(lang: Language) -> &'static str {
    lang.row().display_name
}

fn fill(v: &mut Value, binary: &str, lang: &str, display: &str) {
    match v {
        Value::String(s) => {
            *s = s
                .replace("@BINARY@", binary)
                .replace("@LANGUAGE@", lang)
                .replace("@DISPLAY_NAME@", display);
        }
        Value::Array(a) => a.iter_mut().for_each(|x| fill(x, binary, lang, display)),
        Value::Object(o) => o.values_mut().for_each(|x| fill(x, binary, lang, display)),
        _ => {}
    }
}

/// The `kernel.json` of one language, with `binary` as `argv[0]`.
pub fn kernel_json(binary: &Path, lang: Language) -> Result<Value, InstallError> {
    let mut v: Value = serde_json::from_str(TEMPLATE)?;
    fill(
        &mut v,
        &binary.to_string_lossy(),
        lang.name(),
        display_name(lang),
    );
    Ok(v)
}

/// Writes one kernelspec per language of the table; returns their folders.
pub fn install(loc: &Location, base: &str, binary: &Path) -> Result<Vec<PathBuf>, InstallError> {
    let kernels = data_dir(loc)?.join("kernels");
    let mut done = Vec::new();
    for lang in Language::ALL {
        let dir = kernels.join(spec_name(base, lang));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let json = serde_json::to_string_pretty(&kernel_json(binary, lang)?)?;
        for (file, bytes) in [
            ("kernel.json", json.as_bytes()),
            ("logo-svg.svg", LOGO_SVG),
            ("logo-32x32.png", LOGO_32),
            ("logo-64x64.png", LOGO_64),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, bytes).map_err(io_err(&path))?;
        }
        done.push(dir);
    }
    Ok(done)
}

/// Removes the kernelspecs (missing ones are skipped); returns the folders removed.
pub fn uninstall(loc: &Location, base: &str) -> Result<Vec<PathBuf>, InstallError> {
    let kernels = data_dir(loc)?.join("kernels");
    let mut done = Vec::new();
    for lang in Language::ALL {
        let dir = kernels.join(spec_name(base, lang));
        if dir.join("kernel.json").is_file() {
            std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
            done.push(dir);
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_json_has_required_fields() {
        let v = kernel_json(Path::new("/opt/bin/carbon-kernel"), Language::Java).unwrap();
        assert_eq!(
            v["argv"],
            serde_json::json!([
                "/opt/bin/carbon-kernel",
                "run",
                "--language",
                "java",
                "--connection-file",
                "{connection_file}"
            ])
        );
        assert_eq!(v["display_name"], "Carbon (Java)");
        assert_eq!(v["language"], "java");
        assert_eq!(v["interrupt_mode"], "message");
    }

    #[test]
    fn install_and_uninstall_in_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let loc = Location::Prefix(tmp.path().to_path_buf());
        let dirs = install(&loc, "carbon", Path::new("/x/carbon-kernel")).unwrap();
        assert_eq!(dirs.len(), Language::ALL.len());
        let k = tmp
            .path()
            .join("share/jupyter/kernels/carbon-rust/kernel.json");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(k).unwrap()).unwrap();
        assert_eq!(v["language"], "rust");
        assert!(
            tmp.path()
                .join("share/jupyter/kernels/carbon/logo-64x64.png")
                .is_file()
        );
        assert_eq!(
            uninstall(&loc, "carbon").unwrap().len(),
            Language::ALL.len()
        );
        assert!(!tmp.path().join("share/jupyter/kernels/carbon").exists());
    }
}
