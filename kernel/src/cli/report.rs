//! `carbon-kernel report FILE...`: the class report on the command line.
//!
//! The work is in `carbon_magics::report::class`; this module is the command-line edge (arguments, where
//! the files go, what is printed) so `main.rs` stays a dispatch table.

use carbon_magics::report::class::{ClassReport, GroupBy, Period, PeriodError, ReportError};
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `carbon-kernel report`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Merge emissions.csv files (a class, a semester) into totals and a self-contained HTML report",
    after_help = "Folders are searched for *.csv files. Files that are not emissions logs are named and skipped.\n\
The HTML stays small for a class of hundreds: it shows the most emitting students, languages and models \
and counts the rest; --json lists every one."
)]
pub struct ReportArgs {
    /// emissions.csv files (carbon-kernel's or CodeCarbon's), or folders holding them
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Where to write the HTML report
    #[arg(long, short, default_value = "report.html", value_name = "PATH")]
    pub out: PathBuf,
    /// Also write the totals as JSON (exact numbers, for scripts)
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Who a row belongs to: project_name, the file, or auto (project_name unless two files share one)
    #[arg(long, value_enum, default_value_t = By::Auto)]
    pub by: By,
    /// Only rows at or after this time (included): a date (2026-12-01, from midnight) or a
    /// date-time (2026-12-01T14:00). Times are as the files wrote them (UTC when they carry an
    /// offset). With --since or --until, rows without a timestamp are left out (and counted)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only rows before this time (excluded): --since 2026-12-01 --until 2026-12-08 is one week
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
}

/// `--by` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// project_name unless two files share one, then the file
    Auto,
    /// project_name (rows without one: the file)
    Project,
    /// the file (its folder's name for files called emissions*.csv)
    File,
}

/// Errors of the report command (input files never cause one: they are skipped and named).
#[derive(Debug, thiserror::Error)]
pub enum ReportCmdError {
    /// `--since`/`--until` is not a date or the period is empty.
    #[error("--since/--until: {0}")]
    Period(#[from] PeriodError),
    /// Building the report failed.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The HTML or JSON could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No file could be read at all.
    #[error("no emissions.csv could be read ({skipped} file(s) skipped, reasons above)")]
    NothingRead {
        /// How many were skipped.
        skipped: usize,
    },
}

/// Runs `carbon-kernel report`: prints the totals table to `out`, writes the HTML (and JSON).
/// Returns the report so callers (and tests) can look at it. Fails only when nothing was readable
/// or an output cannot be written; the HTML is written even then if anything was read.
pub fn run_report(args: &ReportArgs, out: &mut dyn Write) -> Result<ClassReport, ReportCmdError> {
    let by = match args.by {
        By::Auto => GroupBy::Auto,
        By::Project => GroupBy::Project,
        By::File => GroupBy::File,
    };
    let period = Period::new(args.since.as_deref(), args.until.as_deref())?;
    let report = ClassReport::load_period(&args.files, by, period);
    let write_err = |path: &PathBuf| {
        let path = path.clone();
        move |source| ReportCmdError::Write { path, source }
    };
    let _ = out.write_all(report.text_table().as_bytes());
    if report.files.is_empty() {
        return Err(ReportCmdError::NothingRead {
            skipped: report.skipped.len(),
        });
    }
    std::fs::write(&args.out, report.html()?).map_err(write_err(&args.out))?;
    let _ = writeln!(out, "\nHTML report: {}", args.out.display());
    if let Some(json) = &args.json {
        std::fs::write(json, report.totals_json()?).map_err(write_err(json))?;
        let _ = writeln!(out, "JSON totals: {}", json.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        report: ReportArgs,
    }

    #[test]
    fn unknown_by_value_names_accepted_ones() {
        let err = match Cli::try_parse_from(["report", "x.csv", "--by", "teacher"]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted a bad --by"),
        };
        assert!(err.contains("project") && err.contains("file"), "{err}");
    }

    #[test]
    fn bad_or_empty_period_is_refused_before_reading() {
        let d = tempfile::tempdir().unwrap();
        for (since, until) in [
            ("yesterday", "2026-12-02"),
            ("2026-12-02", "2026-12-01T23:59"),
        ] {
            let m = Cli::try_parse_from(["report", "x.csv", "--since", since, "--until", until])
                .unwrap();
            let mut args = m.report;
            args.out = d.path().join("r.html");
            let err = run_report(&args, &mut Vec::new()).unwrap_err();
            assert!(matches!(err, ReportCmdError::Period(_)), "{err}");
            assert!(!args.out.exists());
        }
    }

    #[test]
    fn nothing_readable_is_an_error_but_names_the_files() {
        let d = tempfile::tempdir().unwrap();
        let junk = d.path().join("junk.csv");
        std::fs::write(&junk, "a,b\n1,2\n").unwrap();
        let m = Cli::try_parse_from(["report".as_ref(), junk.as_os_str()]).unwrap();
        let mut args = m.report;
        args.out = d.path().join("r.html");
        let mut buf = Vec::new();
        let err = run_report(&args, &mut buf).unwrap_err();
        assert!(matches!(err, ReportCmdError::NothingRead { skipped: 1 }));
        assert!(String::from_utf8_lossy(&buf).contains("junk.csv"));
        assert!(!args.out.exists());
    }
}
