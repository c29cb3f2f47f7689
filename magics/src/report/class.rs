//! The class report: many `emissions.csv` files (a class, a semester) merged into one picture.
//!
//! Files are read by column name with the `csv` crate, so both shapes load: CodeCarbon's own files
//! (its 3.x header, or the 34 columns of 3.1.0) and ours (CodeCarbon's 38 columns followed by our
//! extra ones: `kind`, `language`, `llm_model`, …). The report only adds what the files say; it never
//! re-estimates. A file that is not an emissions log, or cannot be read, is named with the reason and
//! skipped; a malformed row is named (file and line) and skipped; nothing here panics on input.
//!
//! Output: [`ClassReport::text_table`] (totals for a terminal), [`ClassReport::html`] (one
//! self-contained page: inline CSS and plotters SVG charts, no script, no external link) and
//! [`ClassReport::totals_json`] (the same totals, exact, for scripts and tests).
//!
//! A semester (hundreds of students, thousands of rows each) is the size this is built for: rows
//! are read through one reused byte record; the HTML stays a page that can be mailed (tables and
//! bar charts list the [`MAX_HTML_GROUPS`] most emitting, the over-time chart sums per hour or per
//! day, [`TimeBucket`]), while the JSON lists everything. [`Period`] limits the rows to a lab
//! session or a week (`--since`, `--until`).

use super::chart::{self, ChartError, Key, PALETTE, chart_err};
use super::esc;
use crate::carbon::record::{Column, RowKind, RowLanguage};
use crate::units::{Joules, KgCo2, fmt_co2, fmt_duration, fmt_energy, mass_axis_g, nice_ticks};
use chrono::{DateTime, NaiveDateTime, Utc};
use plotters::prelude::*;
use serde::Serialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Columns a file must have to be read as an emissions log (every CodeCarbon 2.x/3.x file has them).
const REQUIRED: [Column; 4] = [
    Column::Timestamp,
    Column::Duration,
    Column::Emissions,
    Column::EnergyConsumed,
];

/// CodeCarbon's default `project_name` (its `EmissionsTracker(project_name="codecarbon")`): it names
/// no one, so such rows are grouped by file like rows without a project name.
const DEFAULT_PROJECT: &str = "codecarbon";

/// At most this many problems are listed per file (the rest are counted), so one broken file cannot
/// flood the report.
const MAX_LISTED_PROBLEMS: usize = 5;

/// The HTML lists at most this many students, languages, models or files (table and bar chart);
/// the rest are counted on a line under the table, and all of them are in the JSON. A class of
/// hundreds stays a page that can be mailed.
pub const MAX_HTML_GROUPS: usize = 30;

/// At most this many days in the HTML's per-day table (a year of daily rows); the rest are counted.
pub const MAX_HTML_DAYS: usize = 370;

/// The over-time chart draws one line for each of at most this many students (the most emitting);
/// up to this many, every student has a line and a legend entry, as before.
pub const MAX_CHART_SERIES: usize = 12;

/// At most this many skipped files and rows are listed in the HTML; the rest are counted.
const MAX_HTML_SKIPPED: usize = 60;

/// Up to this span the over-time chart sums rows per hour; above it, per day (at most a few
/// hundred points per line either way).
pub const HOURLY_UP_TO: chrono::TimeDelta = chrono::TimeDelta::days(8);

/// Below this many buckets the over-time chart marks each one with a dot.
const MAX_DOTTED_BUCKETS: usize = 48;

/// How the over-time chart sums rows: the bucket follows the length of the period shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeBucket {
    /// One point per hour (UTC hours, or the files' local hours for timestamps without offset).
    Hour,
    /// One point per calendar day.
    Day,
}

impl TimeBucket {
    /// The bucket for rows spanning `span` (last timestamp minus first): hours up to
    /// [`HOURLY_UP_TO`], days above.
    pub fn for_span(span: chrono::TimeDelta) -> Self {
        if span <= HOURLY_UP_TO {
            TimeBucket::Hour
        } else {
            TimeBucket::Day
        }
    }

    /// Length of one bucket, seconds.
    pub fn seconds(self) -> i64 {
        match self {
            TimeBucket::Hour => 3600,
            TimeBucket::Day => 86_400,
        }
    }

    /// The word used in the report ("hour", "day").
    pub fn word(self) -> &'static str {
        match self {
            TimeBucket::Hour => "hour",
            TimeBucket::Day => "day",
        }
    }

    /// Index of the bucket holding `t` (buckets start on whole hours or at midnight).
    fn index(self, t: DateTime<Utc>) -> i64 {
        t.timestamp().div_euclid(self.seconds())
    }
}

/// A period of time the report is limited to (`--since`, `--until`): a lab session, a week.
///
/// Bounds compare with the rows' timestamps as the report reads them: UTC for timestamps written
/// with an offset, the time as written for those without one (CodeCarbon and carbon-kernel write
/// the machine's local time).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Period {
    /// First instant included (`--since`), if any.
    pub since: Option<NaiveDateTime>,
    /// First instant excluded (`--until`), if any.
    pub until: Option<NaiveDateTime>,
}

/// A `--since`/`--until` value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    /// Not a date or date-time.
    #[error(
        "not a date or date-time: \"{0}\" (use 2026-12-01, 2026-12-01T14:00 or 2026-12-01T14:00:30)"
    )]
    Unreadable(String),
    /// The period ends before it starts.
    #[error("the period is empty: --until {until} is not after --since {since}")]
    Empty {
        /// `--since`.
        since: NaiveDateTime,
        /// `--until`.
        until: NaiveDateTime,
    },
}

impl Period {
    /// The period from `since` (included) to `until` (excluded); either may be open.
    pub fn new(since: Option<&str>, until: Option<&str>) -> Result<Self, PeriodError> {
        let p = Period {
            since: since.map(Self::parse_bound).transpose()?,
            until: until.map(Self::parse_bound).transpose()?,
        };
        if let (Some(since), Some(until)) = (p.since, p.until)
            && until <= since
        {
            return Err(PeriodError::Empty { since, until });
        }
        Ok(p)
    }

    /// Reads a bound: a date (`2026-12-01`, its midnight), a date-time to the minute or second
    /// (`2026-12-01T14:00`, `2026-12-01 14:00:30`), or an RFC 3339 time with an offset (converted
    /// to UTC).
    pub fn parse_bound(s: &str) -> Result<NaiveDateTime, PeriodError> {
        let t = s.trim();
        if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            return Ok(d.and_time(chrono::NaiveTime::MIN));
        }
        for fmt in ["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"] {
            if let Ok(v) = NaiveDateTime::parse_from_str(t, fmt) {
                return Ok(v);
            }
        }
        parse_timestamp(t)
            .map(|v| v.naive_utc())
            .ok_or_else(|| PeriodError::Unreadable(s.to_string()))
    }

    /// Whether neither bound is set (every row, dated or not, is kept).
    pub fn is_all(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// Whether a row with this timestamp is in the period (rows without one are not, unless the
    /// period is [all](Period::is_all)).
    pub fn contains(&self, t: Option<DateTime<Utc>>) -> bool {
        if self.is_all() {
            return true;
        }
        let Some(t) = t.map(|t| t.naive_utc()) else {
            return false;
        };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// The period in words, for the report ("from … until …").
    pub fn describe(&self) -> String {
        let f = |t: NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
        match (self.since, self.until) {
            (None, None) => "all rows".into(),
            (Some(s), None) => format!("from {} (included)", f(s)),
            (None, Some(u)) => format!("until {} (excluded)", f(u)),
            (Some(s), Some(u)) => format!("from {} (included) until {} (excluded)", f(s), f(u)),
        }
    }
}

/// What `--since`/`--until` left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeriodFilter {
    /// The period asked for.
    pub period: Period,
    /// Dated rows before or after it.
    pub rows_outside: usize,
    /// Rows without a readable timestamp (left out whenever a period is given).
    pub undated_excluded: usize,
}

/// One valid row of one file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Index into [`ClassReport::files`].
    pub file: usize,
    /// 1-based line of the row in its file (the header is line 1).
    pub line: u64,
    /// Whom the row is charged to (see [`GroupBy`]).
    pub student: String,
    /// `project_name` as written (may be empty).
    pub project: String,
    /// End of the run, when the timestamp parses: converted to UTC when it has an offset, as
    /// written when it has none (CodeCarbon and carbon-kernel write local time without one).
    pub timestamp: Option<DateTime<Utc>>,
    /// The `kind` column: a cell, an LLM request, or a word this version does not know (counted
    /// with the runs); `None` for CodeCarbon's own rows (no such column), counted as runs.
    pub kind: Option<RowKind>,
    /// `language` column (cells): [`RowLanguage::None`] when empty or absent.
    pub language: RowLanguage,
    /// `repeat_index` column (runs of `--repeat`), when set and readable.
    pub repeat_index: Option<u32>,
    /// `llm_provider` column, if any.
    pub provider: Option<String>,
    /// `llm_model` column, if any.
    pub model: Option<String>,
    /// `duration`, seconds.
    pub duration_s: f64,
    /// `energy_consumed`, kWh.
    pub energy_kwh: f64,
    /// `emissions`, kgCO₂eq.
    pub emissions_kg: f64,
}

/// Shape of a file that was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileFormat {
    /// Written by carbon-kernel: CodeCarbon's columns then ours (`kind` present).
    CarbonKernel,
    /// Written by CodeCarbon (its columns only).
    CodeCarbon,
}

/// A file that was read (perhaps with some rows skipped).
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    /// The path as given (or found under a given folder).
    pub path: PathBuf,
    /// Short name used for students when grouping by file.
    pub label: String,
    /// Who wrote it.
    pub format: FileFormat,
    /// Valid rows read.
    pub rows: usize,
    /// Rows skipped, each with its line and reason (at most a few listed).
    pub problems: Vec<String>,
    /// Rows skipped in all (may exceed `problems.len()`).
    pub skipped_rows: usize,
}

/// A file that was not read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The path as given.
    pub path: PathBuf,
    /// One line: why it was skipped.
    pub reason: String,
}

/// How rows are charged to students.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GroupBy {
    /// `project_name`, unless two files share one (then it names a course or a default, not a
    /// student, and every row goes by its file); rows with an empty project name or CodeCarbon's
    /// default one go by their file.
    #[default]
    Auto,
    /// `project_name` (rows without one: the file).
    Project,
    /// The file: its name, or its folder's name when the file is called `emissions*.csv`.
    File,
}

/// Sum over a group of rows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Group name (student, language, model, period).
    pub key: String,
    /// Metered cells and files (`%carbon run`): a cell run N times with `--repeat` counts once,
    /// its N − 1 further runs are [`Totals::repeat_runs`].
    pub cells: usize,
    /// Runs of `--repeat` after the first of their cell.
    pub repeat_runs: usize,
    /// `%carbon exec` commands.
    pub commands: usize,
    /// Runtime start-ups (JVM and JShell, evcxr's context) that metered cells triggered.
    pub startups: usize,
    /// LLM requests.
    pub llm_requests: usize,
    /// CodeCarbon runs.
    pub runs: usize,
    /// Seconds.
    pub duration_s: f64,
    /// kWh.
    pub energy_kwh: f64,
    /// kgCO₂eq.
    pub emissions_kg: f64,
}

impl Totals {
    fn add(&mut self, r: &Row) {
        match r.kind {
            Some(RowKind::Cell) if r.language == RowLanguage::Command => self.commands += 1,
            Some(RowKind::Cell) if r.repeat_index.unwrap_or(1) > 1 => self.repeat_runs += 1,
            Some(RowKind::Cell) => self.cells += 1,
            Some(RowKind::Startup) => self.startups += 1,
            Some(RowKind::Llm) => self.llm_requests += 1,
            None | Some(RowKind::Other(_)) => self.runs += 1,
        }
        self.duration_s += r.duration_s;
        self.energy_kwh += r.energy_kwh;
        self.emissions_kg += r.emissions_kg;
    }

    fn merge(&mut self, o: &Totals) {
        self.cells += o.cells;
        self.repeat_runs += o.repeat_runs;
        self.commands += o.commands;
        self.startups += o.startups;
        self.llm_requests += o.llm_requests;
        self.runs += o.runs;
        self.duration_s += o.duration_s;
        self.energy_kwh += o.energy_kwh;
        self.emissions_kg += o.emissions_kg;
    }

    /// Rows summed.
    pub fn count(&self) -> usize {
        self.cells
            + self.repeat_runs
            + self.commands
            + self.startups
            + self.llm_requests
            + self.runs
    }
}

/// Everything the report shows, built once from the files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClassReport {
    /// Files read.
    pub files: Vec<FileInfo>,
    /// Files skipped, with reasons.
    pub skipped: Vec<Skipped>,
    /// Valid rows of every file read.
    pub rows: Vec<Row>,
    /// Whether students are the files (true) or project names (false), after `GroupBy::Auto`.
    pub students_are_files: bool,
    /// The period the rows were limited to, and what it left out.
    pub period: PeriodFilter,
}

/// Errors of the report itself (never caused by an input file: those are skipped).
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] ChartError),
    /// Totals could not be serialised.
    #[error("report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Expands folders (every `*.csv` and `*.csv.bak` below them, sorted) and drops duplicates; a path
/// that does not exist stays in the list so the loader names it.
pub fn expand_inputs(inputs: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            out.push(dir.to_path_buf());
            return;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if p.is_dir() {
                walk(&p, out);
            } else {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                // CodeCarbon >= 3.2 moves a mismatched file to `emissions.csv.bak` / `_0.bak`.
                if name.ends_with(".csv") || (name.contains(".csv") && name.ends_with(".bak")) {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            walk(p, &mut out);
        } else {
            out.push(p.clone());
        }
    }
    let mut seen = BTreeSet::new();
    out.retain(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())));
    out
}

/// The file's short name: its stem, or its folder's name when the file is a generic
/// `emissions*.csv` (each student's folder holds one `emissions.csv`).
fn file_label(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    let stem = name.split(".csv").next().unwrap_or(name);
    if stem.starts_with("emissions")
        && let Some(dir) = path
            .parent()
            .and_then(|d| d.file_name())
            .and_then(|d| d.to_str())
    {
        return dir.to_string();
    }
    stem.to_string()
}

/// Parses CodeCarbon's timestamps (`%Y-%m-%dT%H:%M:%S`, local time without offset, kept as
/// written: the writer's zone is not recorded) and RFC 3339 ones (converted to UTC).
fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Some(t) = fast_timestamp(s.as_bytes()) {
        return Some(t);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    None
}

/// The common shapes, `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM]`, read by hand: chrono's
/// format-string parser is most of the loader's time on a semester of rows. Anything else (or an
/// impossible date) returns `None` and goes to the general parser, so this only ever agrees with it.
fn fast_timestamp(b: &[u8]) -> Option<DateTime<Utc>> {
    fn digits(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    }
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(digits(&b[0..4])?).ok()?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    let (h, m, sec) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some((b'.', tail)) = rest.split_first() {
        let n = tail.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(&tail[..n])? * 10u32.pow(9 - n as u32);
        rest = &tail[n..];
    }
    let t = date.and_hms_nano_opt(h, m, sec, nanos)?;
    let offset_s = match rest {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), hh @ .., b':', m1, m2] if hh.len() == 2 => {
            let v = i64::from(digits(hh)? * 3600 + digits(&[*m1, *m2])? * 60);
            if *sign == b'+' { v } else { -v }
        }
        _ => return None,
    };
    Some((t - chrono::Duration::seconds(offset_s)).and_utc())
}

/// A field of a byte record as trimmed text; empty when absent or not UTF-8 (the whole file was
/// checked to be UTF-8 before, so the latter does not happen).
fn field(rec: &csv::ByteRecord, i: usize) -> &str {
    rec.get(i)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
        .trim()
}

/// Reads one file. `Err` is the one-line reason it is skipped.
///
/// Rows go through one reused [`csv::ByteRecord`]: numbers and timestamps are parsed from the
/// field's bytes, and only the texts a row keeps (project, model) are allocated.
fn read_file(path: &Path, index: usize) -> Result<(FileInfo, Vec<Row>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    read_bytes(path, &bytes, index)
}

/// Reads an emissions file's bytes as the class report reads a file (the fuzz target's entry):
/// the rows kept and skipped, or the one-line reason the whole file is skipped.
pub fn read_emissions_bytes(bytes: &[u8]) -> Result<(usize, usize), String> {
    read_bytes(Path::new("emissions.csv"), bytes, 0)
        .map(|(info, rows)| (rows.len(), info.skipped_rows))
}

/// [`read_file`] once the bytes are read.
fn read_bytes(path: &Path, bytes: &[u8], index: usize) -> Result<(FileInfo, Vec<Row>), String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("empty file".into());
    }
    if std::str::from_utf8(bytes).is_err() {
        return Err("not a text file (not UTF-8), not an emissions.csv".into());
    }
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| format!("unreadable CSV header: {e}"))?
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_string())
        .collect();
    let col = |c: Column| header.iter().position(|h| h == c.name());
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|c| col(**c).is_none())
        .map(|c| c.name())
        .collect();
    if !missing.is_empty() {
        // a quoted header field may hold a newline or control bytes: the reason stays one line
        // (found by the class_csv fuzz target)
        let start: String = header
            .join(",")
            .chars()
            .take(40)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        return Err(format!(
            "not an emissions.csv: no column {} (header starts \"{start}\")",
            missing.join(", ")
        ));
    }
    let [c_ts, c_dur, c_em, c_en] = REQUIRED.map(|c| col(c).unwrap_or_default());
    let c_project = col(Column::ProjectName);
    let c_kind = col(Column::Kind);
    let c_lang = col(Column::Language);
    let c_repeat = col(Column::RepeatIndex);
    // `provider`/`model`: the seed app's LLM logs.
    let by_word = |w: &str| header.iter().position(|h| h == w);
    let c_provider = col(Column::LlmProvider).or_else(|| by_word("provider"));
    let c_model = col(Column::LlmModel).or_else(|| by_word("model"));
    let format = if c_kind.is_some() {
        FileFormat::CarbonKernel
    } else {
        FileFormat::CodeCarbon
    };
    let mut info = FileInfo {
        path: path.to_path_buf(),
        label: file_label(path),
        format,
        rows: 0,
        problems: Vec::new(),
        skipped_rows: 0,
    };
    let mut rows = Vec::new();
    let problem = |info: &mut FileInfo, msg: String| {
        info.skipped_rows += 1;
        if info.problems.len() < MAX_LISTED_PROBLEMS {
            info.problems.push(msg);
        }
    };
    let mut rec = csv::ByteRecord::new();
    // A file holds a handful of language words: each is read once (reading one lower-cases a
    // copy), then found here.
    let mut languages: Vec<(String, RowLanguage)> = Vec::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                // Reading bytes from memory in flexible mode has no error that a further read
                // would get past: name it and stop.
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                problem(&mut info, format!("line {line}: {e}"));
                break;
            }
        }
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        if rec.iter().all(|f| f.iter().all(u8::is_ascii_whitespace)) {
            continue;
        }
        if rec.len() != header.len() {
            problem(
                &mut info,
                format!(
                    "line {line}: {} fields, the header has {}",
                    rec.len(),
                    header.len()
                ),
            );
            continue;
        }
        let text = |c: Option<usize>| {
            c.map(|i| field(&rec, i))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let num = |c: usize, name: &str| -> Result<f64, String> {
            let raw = field(&rec, c);
            match raw.parse::<f64>() {
                Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
                _ => Err(format!("line {line}: bad {name} value \"{raw}\"")),
            }
        };
        let parsed = (|| {
            Ok::<_, String>((
                num(c_dur, "duration")?,
                num(c_en, "energy_consumed")?,
                num(c_em, "emissions")?,
            ))
        })();
        let (duration_s, energy_kwh, emissions_kg) = match parsed {
            Ok(v) => v,
            Err(msg) => {
                problem(&mut info, msg);
                continue;
            }
        };
        let kind = c_kind
            .map(|i| field(&rec, i))
            .filter(|s| !s.is_empty())
            .map(RowKind::from);
        rows.push(Row {
            file: index,
            line,
            student: String::new(),
            project: c_project
                .map(|i| field(&rec, i).to_string())
                .unwrap_or_default(),
            timestamp: parse_timestamp(field(&rec, c_ts)),
            kind,
            language: c_lang.map_or(RowLanguage::None, |i| {
                let w = field(&rec, i);
                if let Some((_, l)) = languages.iter().find(|(k, _)| k == w) {
                    l.clone()
                } else {
                    let l = RowLanguage::from(w);
                    languages.push((w.to_string(), l.clone()));
                    l
                }
            }),
            repeat_index: c_repeat.and_then(|i| field(&rec, i).trim().parse().ok()),
            provider: text(c_provider),
            model: text(c_model),
            duration_s,
            energy_kwh,
            emissions_kg,
        });
    }
    info.rows = rows.len();
    if rows.is_empty() && info.skipped_rows > 0 {
        return Err(format!(
            "no valid row ({} malformed; first: {})",
            info.skipped_rows,
            info.problems.first().map(String::as_str).unwrap_or("?")
        ));
    }
    Ok((info, rows))
}

impl ClassReport {
    /// Reads every file (folders expanded, see [`expand_inputs`]); bad files are skipped and named.
    pub fn load(inputs: &[PathBuf], by: GroupBy) -> Self {
        Self::load_period(inputs, by, Period::default())
    }

    /// [`ClassReport::load`], keeping only the rows of `period` (rows without a timestamp are
    /// left out when a period is given; [`ClassReport::period`] counts what was left out).
    /// Students are told apart on every row of the files, so a period never changes who is who.
    pub fn load_period(inputs: &[PathBuf], by: GroupBy, period: Period) -> Self {
        let mut report = ClassReport::default();
        for dir in inputs.iter().filter(|p| p.is_dir()) {
            if expand_inputs(std::slice::from_ref(dir)).is_empty() {
                report.skipped.push(Skipped {
                    path: dir.clone(),
                    reason: "folder without any *.csv file".into(),
                });
            }
        }
        for path in expand_inputs(inputs) {
            match read_file(&path, report.files.len()) {
                Ok((info, rows)) => {
                    report.files.push(info);
                    report.rows.extend(rows);
                }
                Err(reason) => report.skipped.push(Skipped { path, reason }),
            }
        }
        report.disambiguate_labels();
        report.assign_students(by);
        report.period.period = period;
        if !period.is_all() {
            let (mut outside, mut undated) = (0, 0);
            report.rows.retain(|r| {
                let keep = period.contains(r.timestamp);
                if !keep {
                    if r.timestamp.is_some() {
                        outside += 1;
                    } else {
                        undated += 1;
                    }
                }
                keep
            });
            report.period.rows_outside = outside;
            report.period.undated_excluded = undated;
        }
        report
    }

    /// Two files with the same label from different folders (`a/x/emissions.csv`,
    /// `b/x/emissions.csv`) get their folder's path; files of one folder (`emissions.csv` and the
    /// `emissions.csv.bak` CodeCarbon moved aside) stay one student.
    fn disambiguate_labels(&mut self) {
        let owner = |f: &FileInfo| {
            let generic = f.label.as_str()
                == f.path
                    .parent()
                    .and_then(|d| d.file_name())
                    .and_then(|d| d.to_str())
                    .unwrap_or("");
            if generic {
                f.path.parent().unwrap_or(&f.path).to_path_buf()
            } else {
                f.path.with_extension("")
            }
        };
        let mut owners: BTreeMap<String, BTreeSet<PathBuf>> = BTreeMap::new();
        for f in &self.files {
            owners.entry(f.label.clone()).or_default().insert(owner(f));
        }
        for f in &mut self.files {
            if owners[&f.label].len() > 1 {
                f.label = owner(f).display().to_string();
            }
        }
    }

    fn assign_students(&mut self, by: GroupBy) {
        let named = |p: &str| !p.is_empty() && p != DEFAULT_PROJECT;
        // A project name found in several files names the course or the tool's default, not a
        // student: then files tell students apart better.
        let mut files_of: BTreeMap<&str, BTreeSet<usize>> = BTreeMap::new();
        for r in self.rows.iter().filter(|r| named(&r.project)) {
            files_of
                .entry(r.project.as_str())
                .or_default()
                .insert(r.file);
        }
        let shared = files_of.values().any(|f| f.len() > 1);
        self.students_are_files = match by {
            GroupBy::File => true,
            GroupBy::Project => false,
            GroupBy::Auto => shared,
        };
        for r in &mut self.rows {
            r.student = if !self.students_are_files && named(&r.project) {
                r.project.clone()
            } else {
                self.files[r.file].label.clone()
            };
        }
    }

    /// Sums of every row.
    pub fn total(&self) -> Totals {
        let mut t = Totals {
            key: "total".into(),
            ..Totals::default()
        };
        self.rows.iter().for_each(|r| t.add(r));
        t
    }

    /// Sums rows by `key` (rows where it is `None` are left out), most emitting first. Keys are
    /// borrowed or small values while summing and named once per group at the end, so a
    /// semester of rows costs no string per row.
    fn group<'a, K: Ord>(
        &'a self,
        key: impl Fn(&'a Row) -> Option<K>,
        name: impl Fn(K) -> String,
    ) -> Vec<Totals> {
        let mut map: BTreeMap<K, Totals> = BTreeMap::new();
        // Rows come file by file, so neighbours mostly share a key (student, day): sum a run of
        // them before looking the key up, which keeps the map out of the per-row cost.
        let mut run: Option<(K, Totals)> = None;
        for r in &self.rows {
            let Some(k) = key(r) else { continue };
            match &mut run {
                Some((rk, t)) if *rk == k => t.add(r),
                _ => {
                    if let Some((rk, t)) = run.take() {
                        map.entry(rk).or_default().merge(&t);
                    }
                    let mut t = Totals::default();
                    t.add(r);
                    run = Some((k, t));
                }
            }
        }
        if let Some((rk, t)) = run {
            map.entry(rk).or_default().merge(&t);
        }
        let mut v: Vec<Totals> = map
            .into_iter()
            .map(|(k, mut t)| {
                t.key = name(k);
                t
            })
            .collect();
        v.sort_by(|a, b| {
            b.emissions_kg
                .total_cmp(&a.emissions_kg)
                .then(a.key.cmp(&b.key))
        });
        v
    }

    /// Per student, most emitting first.
    pub fn by_student(&self) -> Vec<Totals> {
        self.group(|r| Some(r.student.as_str()), str::to_string)
    }

    /// Per language of the code that ran: metered cells by their `language`, CodeCarbon runs (which
    /// record none) under `not recorded (CodeCarbon)`. LLM requests are not code: see
    /// [`ClassReport::by_model`].
    pub fn by_language(&self) -> Vec<Totals> {
        self.group(
            |r| -> Option<Cow<'_, str>> {
                Some(match r.kind {
                    Some(RowKind::Llm) => return None,
                    _ if r.language != RowLanguage::None => {
                        let w = r.language.as_str();
                        if w.bytes().any(|b| b.is_ascii_uppercase()) {
                            Cow::Owned(w.to_ascii_lowercase())
                        } else {
                            Cow::Borrowed(w)
                        }
                    }
                    Some(RowKind::Cell | RowKind::Startup) => Cow::Borrowed("not recorded"),
                    None | Some(RowKind::Other(_)) => Cow::Borrowed("not recorded (CodeCarbon)"),
                })
            },
            Cow::into_owned,
        )
    }

    /// Per LLM model (`provider:model`), LLM requests only.
    pub fn by_model(&self) -> Vec<Totals> {
        self.group(
            |r| {
                (r.kind == Some(RowKind::Llm)).then(|| match (&r.provider, &r.model) {
                    (Some(p), Some(m)) => format!("{p}:{m}"),
                    (None, Some(m)) => m.clone(),
                    (Some(p), None) => format!("{p}:?"),
                    (None, None) => "unknown model".into(),
                })
            },
            |k| k,
        )
    }

    /// Per calendar day of the rows' timestamps, oldest first; rows without a readable
    /// timestamp are left out (counted by [`ClassReport::undated_rows`]).
    pub fn by_day(&self) -> Vec<Totals> {
        let mut v = self.group(
            |r| r.timestamp.map(|t| t.date_naive()),
            |d| d.format("%Y-%m-%d").to_string(),
        );
        v.sort_by(|a, b| a.key.cmp(&b.key));
        v
    }

    /// The over-time chart's bucket for these rows (see [`TimeBucket::for_span`]); `None` when no
    /// row has a timestamp.
    pub fn time_bucket(&self) -> Option<TimeBucket> {
        let mut stamps = self.rows.iter().filter_map(|r| r.timestamp);
        let first = stamps.next()?;
        let (lo, hi) = stamps.fold((first, first), |(lo, hi), t| (lo.min(t), hi.max(t)));
        Some(TimeBucket::for_span(hi - lo))
    }

    /// Rows whose timestamp did not parse.
    pub fn undated_rows(&self) -> usize {
        self.rows.iter().filter(|r| r.timestamp.is_none()).count()
    }

    /// The totals as JSON (exact numbers): `total`, `students`, `languages`, `models`, `days`,
    /// `period`, `files`, `skipped`. Unlike the HTML, every student, file and day is listed.
    pub fn totals_json(&self) -> Result<String, ReportError> {
        Ok(serde_json::to_string_pretty(&serde_json::json!({
            "total": self.total(),
            "students": self.by_student(),
            "languages": self.by_language(),
            "models": self.by_model(),
            "days": self.by_day(),
            "students_are_files": self.students_are_files,
            "period": self.period,
            "files": self.files,
            "skipped": self.skipped,
        }))?)
    }

    /// Plain-text tables of totals (for a terminal), then the skipped files and rows.
    pub fn text_table(&self) -> String {
        let mut out = String::new();
        let t = self.total();
        let _ = writeln!(
            out,
            "carbon-kernel class report: {} file(s) read, {} skipped; {} rows ({} cells, {} further --repeat runs, {} commands, {} runtime start-ups, {} LLM requests, {} CodeCarbon runs)",
            self.files.len(),
            self.skipped.len(),
            t.count(),
            t.cells,
            t.repeat_runs,
            t.commands,
            t.startups,
            t.llm_requests,
            t.runs
        );
        let _ = writeln!(
            out,
            "total: {} · {} · {}\n",
            fmt_co2(KgCo2(t.emissions_kg)),
            fmt_energy(Joules::from_kwh(t.energy_kwh)),
            fmt_duration(t.duration_s)
        );
        let _ = writeln!(out, "≈ {}\n", self.equivalents_text());
        if let Some(note) = self.period_note() {
            let _ = writeln!(out, "{note}\n");
        }
        let _ = writeln!(
            out,
            "columns: cells = metered cells and files (a --repeat cell once), +runs = its further runs, \
             cmds = %carbon exec commands, start = runtime start-ups, llm = LLM requests, cc = CodeCarbon runs\n"
        );
        let who = if self.students_are_files {
            "student (file)"
        } else {
            "student (project_name)"
        };
        for (title, groups) in [
            (who, self.by_student()),
            ("language", self.by_language()),
            ("LLM model", self.by_model()),
            ("day", self.by_day()),
        ] {
            if groups.is_empty() {
                continue;
            }
            out.push_str(&text_section(title, &groups, t.emissions_kg));
            out.push('\n');
        }
        if self.undated_rows() > 0 {
            let _ = writeln!(
                out,
                "{} row(s) without a readable timestamp are not in the per-day table.\n",
                self.undated_rows()
            );
        }
        for s in &self.skipped {
            let _ = writeln!(out, "skipped {}: {}", s.path.display(), s.reason);
        }
        for f in &self.files {
            for p in &f.problems {
                let _ = writeln!(out, "skipped row in {}: {p}", f.path.display());
            }
            let more = f.skipped_rows - f.problems.len();
            if more > 0 {
                let _ = writeln!(
                    out,
                    "… and {more} more skipped row(s) in {}",
                    f.path.display()
                );
            }
        }
        out
    }

    /// The class's total in everyday terms, chosen by magnitude (km by car for a semester),
    /// with the factors' sources: `22.0 km driven by an average car (120 gCO₂/km …) · …`.
    pub fn equivalents_text(&self) -> String {
        let t = self.total();
        crate::report::cell::equivalents(Joules::from_kwh(t.energy_kwh), KgCo2(t.emissions_kg))
            .iter()
            .map(|e| format!("{} {} ({})", e.amount, e.what, e.source))
            .collect::<Vec<_>>()
            .join(" · ")
    }

    /// The self-contained HTML page: inline CSS and SVG charts, no script and no external resource.
    ///
    /// Its size is bounded whatever the number of rows: tables and bar charts list at most
    /// [`MAX_HTML_GROUPS`] groups (the most emitting; the rest are counted, and listed in the
    /// JSON), and the over-time chart sums rows per hour or per day ([`TimeBucket`]).
    pub fn html(&self) -> Result<String, ReportError> {
        let t = self.total();
        let students = self.by_student();
        let mut h = String::new();
        h.push_str(concat!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
            "<title>carbon-kernel class report</title><style>",
            "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222;padding:0 1em}",
            "h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}",
            "table{border-collapse:collapse;margin:.5em 0}td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:right}",
            "td,th{white-space:nowrap}td:first-child,th:first-child{text-align:left}.cards{display:flex;gap:1em;flex-wrap:wrap}",
            ".card{background:#f4f8f4;border-radius:6px;padding:.6em 1em}.card b{display:block;font-size:1.3em}",
            ".note{color:#555;font-size:.9em}.bad{color:#a33}svg{max-width:100%;height:auto}",
            "</style></head><body>\n<h1>Class report: energy and CO₂ of code and prompts</h1>\n"
        ));
        let _ = writeln!(
            h,
            "<div class=\"cards\"><div class=\"card\"><b>{}</b>emissions</div>\
             <div class=\"card\"><b>{}</b>energy</div><div class=\"card\"><b>{}</b>run time</div>\
             <div class=\"card\"><b>{}</b>students</div><div class=\"card\"><b>{}</b>rows from {} file(s)</div></div>",
            fmt_co2(KgCo2(t.emissions_kg)),
            fmt_energy(Joules::from_kwh(t.energy_kwh)),
            fmt_duration(t.duration_s),
            students.len(),
            t.count(),
            self.files.len(),
        );
        h.push_str(
            "<p class=\"note\">Sums of what each file recorded: this report does not re-estimate. \
             Cells metered by carbon-kernel say how they were measured (RAPL, CPU-time × TDP model, NVML) \
             in their <code>method</code> column; LLM rows are estimates, except requests to a server on the student's machine that were metered (<code>method</code> starting <code>measured on this machine</code>); CodeCarbon's own runs are \
             machine-wide by default and record no language.</p>\n",
        );
        let _ = writeln!(h, "<p>That is about {}.</p>", esc(&self.equivalents_text()));
        if let Some(note) = self.period_note() {
            let _ = writeln!(h, "<p class=\"note\"><b>{}</b></p>", esc(&note));
        }
        let who = if self.students_are_files {
            "Per student (one file each)"
        } else {
            "Per student (project_name)"
        };
        let (languages, models) = (self.by_language(), self.by_model());
        let sections = [
            (who, &students, "emissions per student", "students"),
            (
                "Per language (code only: prompts are per model below)",
                &languages,
                "emissions per language",
                "languages",
            ),
            (
                "Per LLM model",
                &models,
                "emissions per LLM model",
                "models",
            ),
        ];
        for (title, groups, caption, what) in sections {
            let _ = writeln!(h, "<h2>{}</h2>", esc(title));
            if groups.is_empty() {
                h.push_str("<p class=\"note\">No rows of this kind in these files.</p>\n");
                continue;
            }
            let shown = &groups[..groups.len().min(MAX_HTML_GROUPS)];
            let caption = if shown.len() < groups.len() {
                format!("{caption}, the {} most emitting", shown.len())
            } else {
                caption.to_string()
            };
            h.push_str(&bar_chart(&caption, shown)?);
            h.push_str(&html_table(shown));
            h.push_str(&more_line(groups.len() - shown.len(), what));
        }
        h.push_str("<h2>Over time</h2>\n");
        if let Some(bucket) = self.time_bucket() {
            h.push_str(&self.time_chart(bucket, &students)?);
            let days = self.by_day();
            let shown = &days[..days.len().min(MAX_HTML_DAYS)];
            h.push_str(&html_table(shown));
            h.push_str(&more_line(days.len() - shown.len(), "days"));
        } else {
            h.push_str("<p class=\"note\">No readable timestamps.</p>\n");
        }
        if self.undated_rows() > 0 {
            let _ = writeln!(
                h,
                "<p class=\"note\">{} row(s) without a readable timestamp are not in this chart.</p>",
                self.undated_rows()
            );
        }
        h.push_str("<h2>Files</h2>\n<table><tr><th>file</th><th>written by</th><th>rows</th><th>skipped rows</th></tr>\n");
        // Files with skipped rows first: those are the ones a teacher has to look at.
        let mut files: Vec<&FileInfo> = self.files.iter().collect();
        files.sort_by_key(|f| f.skipped_rows == 0);
        for f in files.iter().take(MAX_HTML_GROUPS) {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.path.display().to_string()),
                match f.format {
                    FileFormat::CarbonKernel => "carbon-kernel",
                    FileFormat::CodeCarbon => "CodeCarbon",
                },
                f.rows,
                f.skipped_rows
            );
        }
        h.push_str("</table>\n");
        h.push_str(&more_line(
            files.len().saturating_sub(MAX_HTML_GROUPS),
            "files",
        ));
        if !self.skipped.is_empty() || self.files.iter().any(|f| f.skipped_rows > 0) {
            h.push_str("<h2 class=\"bad\">Skipped</h2>\n<ul>\n");
            let skipped_files = self.skipped.iter().map(|s| {
                format!(
                    "<li><code>{}</code>: {}</li>",
                    esc(&s.path.display().to_string()),
                    esc(&s.reason)
                )
            });
            let skipped_rows = self.files.iter().flat_map(|f| {
                f.problems.iter().map(move |p| {
                    format!(
                        "<li>row of <code>{}</code>: {}</li>",
                        esc(&f.path.display().to_string()),
                        esc(p)
                    )
                })
            });
            let mut items = skipped_files.chain(skipped_rows);
            for item in items.by_ref().take(MAX_HTML_SKIPPED) {
                h.push_str(&item);
                h.push('\n');
            }
            let rest = items.count();
            if rest > 0 {
                let _ = writeln!(
                    h,
                    "<li>… and {rest} more (every one is on the terminal and in the JSON)</li>"
                );
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</body></html>\n");
        Ok(h)
    }

    /// The over-time chart's lines: for each of the first [`MAX_CHART_SERIES`] of `students`
    /// (most emitting first), cumulative grams at the end of each `bucket` holding some of its
    /// rows, x in hours from the start of the first bucket of the class.
    fn time_series<'a>(&self, bucket: TimeBucket, students: &'a [Totals]) -> TimeSeries<'a> {
        let drawn: BTreeMap<&str, usize> = students
            .iter()
            .take(MAX_CHART_SERIES)
            .enumerate()
            .map(|(i, s)| (s.key.as_str(), i))
            .collect();
        // Per drawn student: bucket index -> grams in that bucket.
        let mut sums: Vec<BTreeMap<i64, f64>> = vec![BTreeMap::new(); drawn.len()];
        let (mut b0, mut b1) = (i64::MAX, i64::MIN);
        for r in &self.rows {
            let Some(t) = r.timestamp else { continue };
            let b = bucket.index(t);
            b0 = b0.min(b);
            b1 = b1.max(b);
            if let Some(&i) = drawn.get(r.student.as_str()) {
                *sums[i].entry(b).or_default() += r.emissions_kg * 1000.0;
            }
        }
        if b0 > b1 {
            (b0, b1) = (0, 0);
        }
        let hours_per_bucket = bucket.seconds() as f64 / 3600.0;
        let series = students
            .iter()
            .zip(sums)
            .map(|(s, per)| {
                let mut acc = 0.0;
                let pts = per
                    .into_iter()
                    .map(|(b, g)| {
                        acc += g;
                        ((b - b0 + 1) as f64 * hours_per_bucket, acc)
                    })
                    .collect();
                (s.key.as_str(), pts)
            })
            .collect();
        TimeSeries { series, b0, b1 }
    }

    /// The period line of the report ("Period: from … until …: N rows outside it left out, M
    /// without a timestamp"), or `None` when every row is kept.
    fn period_note(&self) -> Option<String> {
        let p = &self.period;
        if p.period.is_all() {
            return None;
        }
        Some(format!(
            "Period: {}. Left out: {} row(s) outside it, {} row(s) without a readable timestamp.",
            p.period.describe(),
            p.rows_outside,
            p.undated_excluded
        ))
    }

    /// Cumulative emissions per student over time, summed per `bucket` (one point per hour or
    /// day, at the bucket's end), one line for each of the [`MAX_CHART_SERIES`] most emitting
    /// students; x in hours since the first bucket starts.
    fn time_chart(&self, bucket: TimeBucket, students: &[Totals]) -> Result<String, ReportError> {
        let TimeSeries { series, b0, b1 } = self.time_series(bucket, students);
        let hours_per_bucket = bucket.seconds() as f64 / 3600.0;
        let x_of = |b: i64| (b - b0 + 1) as f64 * hours_per_bucket;
        let buckets = usize::try_from(b1 - b0 + 1).unwrap_or(usize::MAX);
        let span = x_of(b1);
        let top_g = series
            .iter()
            .filter_map(|(_, s)| s.last().map(|p| p.1))
            .fold(0.0, f64::max);
        // The axis in the unit its largest value reads best in (µg … t), round ticks.
        let (per, unit) = mass_axis_g(top_g);
        let ymax = nice_ticks(top_g / per, 5).last().copied().unwrap_or(1.0);
        let t0 = DateTime::<Utc>::from_timestamp(b0 * bucket.seconds(), 0).unwrap_or_default();
        let label_of = move |x: &f64| {
            let t = t0 + chrono::Duration::milliseconds((x * 3.6e6) as i64);
            // Up to 10 days, six ticks fall several to a day: the hour tells them apart.
            if span > 240.0 {
                t.format("%m-%d").to_string()
            } else if span > 48.0 {
                t.format("%m-%d %Hh").to_string()
            } else {
                t.format("%m-%d %H:%M").to_string()
            }
        };
        let caption = if students.len() > series.len() {
            format!(
                "cumulative emissions per {}, the {} most emitting of {} students ({unit} CO₂eq)",
                bucket.word(),
                series.len(),
                students.len()
            )
        } else {
            format!(
                "cumulative emissions per student, per {} ({unit} CO₂eq)",
                bucket.word()
            )
        };
        // The legend has a band of its own above the plot: inside, it could cover a line.
        let keys: Vec<(String, Key)> = series
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (name.to_string(), Key::Line(PALETTE[i % PALETTE.len()])))
            .collect();
        let band = 30 + chart::legend_height(&keys, 860);
        let svg = chart::svg(860, 350 + band, |root| {
            let (head, body) = root.split_vertically(band);
            head.draw(&Text::new(
                caption.clone(),
                (12, 6),
                ("sans-serif", 18).into_font(),
            ))
            .map_err(chart_err)?;
            chart::legend(&head.margin(28, 0, 0, 0), &keys)?;
            let mut c = ChartBuilder::on(&body)
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..span * 1.02, 0.0..ymax)
                .map_err(chart_err)?;
            c.configure_mesh()
                .light_line_style(WHITE.mix(0.0))
                .label_style(("sans-serif", 14))
                .x_labels(6)
                .x_label_formatter(&label_of)
                .y_label_formatter(&|v| chart::tick(*v))
                .draw()
                .map_err(chart_err)?;
            for (i, (_, pts)) in series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let pts: Vec<(f64, f64)> = pts.iter().map(|(x, y)| (*x, y / per)).collect();
                c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
                    .map_err(chart_err)?;
                if buckets <= MAX_DOTTED_BUCKETS {
                    c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                        .map_err(chart_err)?;
                }
            }
            Ok(())
        })?;
        Ok(svg)
    }
}

/// The lines of the over-time chart ([`ClassReport::time_series`]).
struct TimeSeries<'a> {
    /// (student, points (hours, cumulative g CO₂eq)), most emitting first.
    series: Vec<(&'a str, Vec<(f64, f64)>)>,
    /// First and last bucket index of the class's dated rows.
    b0: i64,
    b1: i64,
}

/// "… and K more students (see the JSON)" under a bounded table; empty when nothing was left out.
fn more_line(rest: usize, what: &str) -> String {
    if rest == 0 {
        return String::new();
    }
    format!(
        "<p class=\"note\">… and {rest} more {what} (see the JSON: <code>--json</code> lists every one)</p>\n"
    )
}

/// A horizontal bar chart of emissions (g CO₂eq) per group, as SVG.
fn bar_chart(caption: &str, groups: &[Totals]) -> Result<String, ReportError> {
    let n = groups.len();
    let height = (90 + 32 * n).min(900) as u32;
    let top_g = groups
        .iter()
        .map(|g| g.emissions_kg * 1000.0)
        .fold(0.0, f64::max);
    // The axis in the unit its largest value reads best in (µg … t), round ticks.
    let (per, unit) = mass_axis_g(top_g);
    let max = nice_ticks(top_g / per, 5).last().copied().unwrap_or(1.0);
    let labels: Vec<String> = groups
        .iter()
        .map(|g| {
            let k: String = g.key.chars().take(28).collect();
            if g.key.chars().count() > 28 {
                format!("{k}…")
            } else {
                k
            }
        })
        .collect();
    let svg = chart::svg(860, height, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(format!("{caption} ({unit} CO₂eq)"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(240)
            .build_cartesian_2d(0.0..max, (0..n as i32).into_segmented())
            .map_err(chart_err)?;
        c.configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .label_style(("sans-serif", 14))
            .y_labels(n.max(1))
            .x_labels(6)
            .x_label_formatter(&|v| chart::tick(*v))
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => labels
                    .get(n.wrapping_sub(1).wrapping_sub(*i as usize))
                    .cloned()
                    .unwrap_or_default(),
                SegmentValue::Last => String::new(),
            })
            .draw()
            .map_err(chart_err)?;
        // Full-height segments, then a white outline over each so neighbouring bars stand apart
        // (plotters' Histogram series needs a feature this workspace does not enable).
        let next = |v: SegmentValue<i32>| match v {
            SegmentValue::Exact(k) => SegmentValue::Exact(k + 1),
            other => other,
        };
        // Row 0 (the largest) is drawn at the top.
        let seg = |i: usize| SegmentValue::Exact((n - 1 - i) as i32);
        c.draw_series(groups.iter().enumerate().map(|(i, g)| {
            Rectangle::new(
                [(0.0, seg(i)), (g.emissions_kg * 1000.0 / per, next(seg(i)))],
                PALETTE[i % PALETTE.len()].filled(),
            )
        }))
        .map_err(chart_err)?;
        c.draw_series(groups.iter().enumerate().map(|(i, g)| {
            Rectangle::new(
                [(0.0, seg(i)), (g.emissions_kg * 1000.0 / per, next(seg(i)))],
                WHITE.stroke_width(5),
            )
        }))
        .map_err(chart_err)?;
        Ok(())
    })?;
    Ok(svg)
}

fn html_table(groups: &[Totals]) -> String {
    let mut h = String::from(
        "<table><tr><th></th><th>cells</th><th title=\"runs of --repeat after the first\">further runs</th>\
         <th>commands</th><th>start-ups</th><th>LLM requests</th><th>CodeCarbon runs</th>\
         <th>run time</th><th>energy</th><th>emissions</th></tr>\n",
    );
    for g in groups {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.key),
            g.cells,
            g.repeat_runs,
            g.commands,
            g.startups,
            g.llm_requests,
            g.runs,
            fmt_duration(g.duration_s),
            fmt_energy(Joules::from_kwh(g.energy_kwh)),
            fmt_co2(KgCo2(g.emissions_kg)),
        );
    }
    h.push_str("</table>\n");
    h
}

fn text_section(title: &str, groups: &[Totals], total_kg: f64) -> String {
    let w = groups
        .iter()
        .map(|g| g.key.chars().count())
        .chain([title.len()])
        .max()
        .unwrap_or(8);
    let mut out = format!(
        "{title:<w$}  {:>5}  {:>5}  {:>5}  {:>5}  {:>5}  {:>5}  {:>10}  {:>10}  {:>12}  {:>6}\n",
        "cells", "+runs", "cmds", "start", "llm", "cc", "time", "energy", "emissions", "share"
    );
    for g in groups {
        let share = if total_kg > 0.0 {
            format!("{:.1}%", 100.0 * g.emissions_kg / total_kg)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "{:<w$}  {:>5}  {:>5}  {:>5}  {:>5}  {:>5}  {:>5}  {:>10}  {:>10}  {:>12}  {:>6}",
            g.key,
            g.cells,
            g.repeat_runs,
            g.commands,
            g.startups,
            g.llm_requests,
            g.runs,
            fmt_duration(g.duration_s),
            fmt_energy(Joules::from_kwh(g.energy_kwh)),
            fmt_co2(KgCo2(g.emissions_kg)),
            share
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    fn ours_header() -> String {
        let mut h = crate::carbon::record::CODECARBON_COLUMNS.join(",");
        h.push_str(
            ",kind,language,label,method,llm_provider,llm_model,prompt_tokens,completion_tokens",
        );
        h
    }

    /// One row of our format with the given key fields; the other columns empty.
    fn ours_row(ts: &str, project: &str, dur: f64, em: f64, en: f64, tail: &str) -> String {
        let mut f = vec![String::new(); 38];
        f[0] = ts.into();
        f[1] = project.into();
        f[4] = dur.to_string();
        f[5] = em.to_string();
        f[13] = en.to_string();
        format!("{},{tail}", f.join(","))
    }

    #[test]
    fn cells_repeat_runs_commands_and_startups_are_counted_apart() {
        let d = tempfile::tempdir().unwrap();
        let header = format!("{},repeat_index", ours_header());
        let row = |tail: &str, rep: &str| {
            format!(
                "{},{rep}",
                ours_row("2026-01-05T10:00:00Z", "lab", 1.0, 1e-6, 2e-6, tail)
            )
        };
        let rows = [
            row("startup,java,start-up,,,,,", ""),
            row("cell,java,,,,,,", ""),
            row("cell,python,,,,,,", "1"),
            row("cell,python,,,,,,", "2"),
            row("cell,python,,,,,,", "3"),
            row("cell,command,echo,,,,,", ""),
        ];
        let p = write(
            d.path(),
            "emissions.csv",
            &format!("{header}\n{}\n", rows.join("\n")),
        );
        let r = ClassReport::load(&[p], GroupBy::Auto);
        let t = r.total();
        assert_eq!(
            (t.cells, t.repeat_runs, t.commands, t.startups, t.count()),
            (2, 2, 1, 1, 6)
        );
        let text = r.text_table();
        assert!(
            text.contains("2 cells, 2 further --repeat runs, 1 commands, 1 runtime start-ups"),
            "{text}"
        );
        assert!(text.contains("≈ ") && text.contains("LED"), "{text}");
    }

    #[test]
    fn reads_both_formats_and_groups() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "alice/emissions.csv",
            &format!(
                "{}\n{}\n{}\n",
                ours_header(),
                ours_row(
                    "2026-01-05T10:00:00Z",
                    "lab",
                    1.5,
                    2e-6,
                    4e-6,
                    "cell,python,,rapl,,,,"
                ),
                ours_row(
                    "2026-01-05T10:05:00Z",
                    "lab",
                    0.8,
                    3e-6,
                    5e-6,
                    "llm,,,seed,groq,llama-3.3-70b,10,20"
                ),
            ),
        );
        let cc = write(
            d.path(),
            "bob/emissions.csv",
            "timestamp,project_name,run_id,duration,emissions,energy_consumed\n\
             2025-11-17T12:51:49,codecarbon,x,1.05,1.1e-07,2.0e-06\n",
        );
        let by_file = ClassReport::load(&[a.clone(), cc.clone()], GroupBy::File);
        assert_eq!(by_file.by_student()[0].key, "alice");
        let r = ClassReport::load(&[a, cc], GroupBy::Auto);
        assert!(r.skipped.is_empty(), "{:?}", r.skipped);
        assert!(!r.students_are_files);
        let s = r.by_student();
        assert_eq!(s.len(), 2);
        // alice's rows carry a project name of their own; bob's CodeCarbon default names no one.
        assert_eq!(s[0].key, "lab");
        assert_eq!(s[1].key, "bob");
        assert!((s[0].emissions_kg - 5e-6).abs() < 1e-18);
        assert_eq!(r.files[1].format, FileFormat::CodeCarbon);
        let m = r.by_model();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].key, "groq:llama-3.3-70b");
        let langs: Vec<_> = r.by_language().into_iter().map(|t| t.key).collect();
        assert!(langs.contains(&"python".to_string()));
        assert!(langs.contains(&"not recorded (CodeCarbon)".to_string()));
        assert_eq!(r.by_day().len(), 2);
        let html = r.html().unwrap();
        assert!(html.contains("<svg"));
        assert!(!html.contains("<script"));
    }

    #[test]
    fn bad_files_and_rows_are_named_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let garbage = write(d.path(), "notes.csv", "name,grade\nalice,12\n");
        let bin = d.path().join("blob.csv");
        std::fs::write(&bin, [0u8, 159, 146, 150, 255]).unwrap();
        let empty = write(d.path(), "empty.csv", "");
        let mixed = write(
            d.path(),
            "carol.csv",
            &format!(
                "{}\n{}\n{}\nshort,row\n",
                ours_header(),
                ours_row(
                    "2026-01-05T10:00:00Z",
                    "",
                    1.0,
                    1e-6,
                    2e-6,
                    "cell,rust,,,,,,"
                ),
                ours_row(
                    "2026-01-05T10:00:00Z",
                    "",
                    1.0,
                    -1.0,
                    2e-6,
                    "cell,rust,,,,,,"
                ),
            ),
        );
        let missing = d.path().join("nope.csv");
        let r = ClassReport::load(&[garbage, bin, empty, mixed, missing], GroupBy::Auto);
        assert_eq!(r.skipped.len(), 4, "{:?}", r.skipped);
        assert!(
            r.skipped[0].reason.contains("emissions"),
            "{:?}",
            r.skipped[0]
        );
        assert_eq!(r.files.len(), 1);
        assert_eq!(r.files[0].skipped_rows, 2);
        assert_eq!(r.rows.len(), 1);
        let text = r.text_table();
        assert!(text.contains("notes.csv"), "{text}");
        assert!(text.contains("nope.csv"), "{text}");
        assert!(text.contains("bad emissions"), "{text}");
    }

    #[test]
    fn crlf_bom_and_empty_folders() {
        let d = tempfile::tempdir().unwrap();
        let text = format!(
            "\u{feff}{}\r\n{}\r\n",
            ours_header(),
            ours_row(
                "2026-01-05T10:00:00Z",
                "",
                1.0,
                1e-6,
                2e-6,
                "cell,java,,,,,,"
            )
        );
        let f = write(d.path(), "win/emissions.csv", &text);
        std::fs::create_dir(d.path().join("nothing")).unwrap();
        let r = ClassReport::load(&[f, d.path().join("nothing")], GroupBy::Auto);
        assert_eq!(r.rows.len(), 1, "{:?}", r.files);
        assert_eq!(r.rows[0].timestamp.unwrap().timestamp(), 1767607200);
        assert_eq!(r.by_student()[0].key, "win");
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].reason.contains("folder"), "{:?}", r.skipped);
    }

    #[test]
    fn same_folder_names_in_two_trees_stay_apart_and_bak_files_join() {
        let d = tempfile::tempdir().unwrap();
        let row = |p| {
            format!(
                "{}\n{}\n",
                ours_header(),
                ours_row(
                    "2026-01-05T10:00:00Z",
                    p,
                    1.0,
                    1e-6,
                    2e-6,
                    "cell,java,,,,,,"
                )
            )
        };
        write(d.path(), "g1/sam/emissions.csv", &row(""));
        write(d.path(), "g1/sam/emissions.csv.bak", &row(""));
        write(d.path(), "g2/sam/emissions.csv", &row(""));
        let r = ClassReport::load(&[d.path().to_path_buf()], GroupBy::Auto);
        assert_eq!(r.files.len(), 3, "{:?}", r.skipped);
        let s = r.by_student();
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[0].key.ends_with("g1/sam") && s[0].count() == 2, "{s:?}");
        assert!(s[1].key.ends_with("g2/sam"), "{s:?}");
    }

    /// Rows written by the kernel's own sink read back with their kind, language and model.
    #[test]
    fn reads_what_the_kernel_writes() {
        use crate::carbon::{CsvSink, EmissionRecord, Parts, Sink, intensity};
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("kim").join("emissions.csv");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let zone = intensity::zone(Some("FRA")).unwrap();
        let mut cell = EmissionRecord::base("lab1", "s1", &zone, 1.2);
        cell.kind = RowKind::Cell;
        cell.language = crate::lang::Language::Rust.into();
        cell.set_energy(
            2.0,
            &Parts {
                cpu: crate::units::Joules(90.0),
                ram: crate::units::Joules(10.0),
                gpu: crate::units::Joules(0.0),
            },
        );
        let mut llm = EmissionRecord::base("lab1", "s1", &zone, 1.0);
        llm.kind = RowKind::Llm;
        llm.llm_provider = "groq".into();
        llm.llm_model = "llama-3.3-70b-versatile".into();
        llm.duration = 0.8;
        llm.emissions = 3e-5;
        llm.cpu_energy = 5e-4;
        let mut sink = CsvSink::new(&path);
        sink.record(&cell).unwrap();
        sink.record(&llm).unwrap();
        let r = ClassReport::load(&[path], GroupBy::Auto);
        assert!(
            r.skipped.is_empty() && r.files[0].skipped_rows == 0,
            "{r:?}"
        );
        assert_eq!(r.files[0].format, FileFormat::CarbonKernel);
        assert_eq!(r.rows.len(), 2);
        assert!(r.rows.iter().all(|x| x.timestamp.is_some()));
        let t = r.total();
        assert!((t.emissions_kg - (cell.emissions + 3e-5)).abs() < 1e-15);
        assert!((t.energy_kwh - (cell.energy_consumed() + 5e-4)).abs() < 1e-15);
        assert_eq!(r.by_language()[0].key, "rust");
        assert_eq!(r.by_model()[0].key, "groq:llama-3.3-70b-versatile");
        assert_eq!(r.by_student()[0].key, "lab1");
    }

    /// A `kind` this version does not know is kept as written and counted with the runs.
    #[test]
    fn unknown_kind_is_kept_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let f = write(
            d.path(),
            "x.csv",
            &format!(
                "{}\n{}\n",
                ours_header(),
                ours_row("2026-01-05T10:00:00Z", "", 1.0, 1e-6, 2e-6, "batch,,,,,,,")
            ),
        );
        let r = ClassReport::load(&[f], GroupBy::Auto);
        assert_eq!(r.rows.len(), 1, "{:?}", r.files);
        assert_eq!(r.rows[0].kind, Some(RowKind::Other("batch".into())));
        assert_eq!(r.total().runs, 1);
    }

    #[test]
    fn distinct_project_names_are_students() {
        let d = tempfile::tempdir().unwrap();
        let f = write(
            d.path(),
            "class.csv",
            &format!(
                "{}\n{}\n{}\n",
                ours_header(),
                ours_row(
                    "2026-01-05 10:00:00",
                    "dana",
                    1.0,
                    1e-6,
                    2e-6,
                    "cell,java,,,,,,"
                ),
                ours_row("not a date", "eve", 1.0, 2e-6, 2e-6, "cell,java,,,,,,"),
            ),
        );
        let r = ClassReport::load(&[f], GroupBy::Auto);
        let keys: Vec<_> = r.by_student().into_iter().map(|t| t.key).collect();
        assert_eq!(keys, ["eve", "dana"]);
        assert_eq!(r.undated_rows(), 1);
        assert!(r.html().unwrap().contains("without a readable timestamp"));
    }

    /// `n` students in one folder each, `rows` cell rows each, an hour apart from `start`; student
    /// `i` emits `(i + 1)` µg per row so the ranking is known.
    fn class(dir: &Path, n: usize, rows: usize, start: &str) -> Vec<PathBuf> {
        let t0 = parse_timestamp(start).unwrap();
        (0..n)
            .map(|i| {
                let mut text = ours_header();
                for k in 0..rows {
                    let ts = (t0 + chrono::Duration::hours(k as i64)).format("%Y-%m-%dT%H:%M:%S");
                    text.push('\n');
                    text.push_str(&ours_row(
                        &ts.to_string(),
                        "",
                        1.0,
                        (i + 1) as f64 * 1e-9,
                        1e-6,
                        "cell,python,,,,,,",
                    ));
                }
                write(dir, &format!("st{i}x/emissions.csv"), &text)
            })
            .collect()
    }

    #[test]
    fn the_hand_parser_agrees_with_chrono() {
        let chrono_only = |s: &str| -> Option<DateTime<Utc>> {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                .map(|t| t.and_utc())
        };
        for s in [
            "2026-01-05T10:00:00",
            "2026-01-05 10:00:00",
            "2026-01-05T10:00:00.5",
            "2026-01-05T10:00:00.123456789",
            "2026-01-05T10:00:00Z",
            "2026-01-05T10:00:00.25+01:00",
            "2026-01-05T00:30:00-02:30",
            "2024-02-29T23:59:59",
        ] {
            let fast = fast_timestamp(s.as_bytes());
            assert!(fast.is_some(), "{s}");
            assert_eq!(fast, chrono_only(s), "{s}");
        }
        // Impossible or other shapes: the hand parser declines, the general one decides.
        for s in [
            "2026-02-30T10:00:00",
            "2026-01-05T25:00:00",
            "2026-01-05T10:00",
            "2026-01-05T10:00:00+0100",
            "2026-01-05T10:00:00.",
            "not a date at all, really",
        ] {
            assert_eq!(fast_timestamp(s.as_bytes()), None, "{s}");
        }
        assert_eq!(
            parse_timestamp("2026-01-05T10:00:00+0100"),
            chrono_only("2026-01-05T10:00:00+0100")
        );
    }

    #[test]
    fn the_time_bucket_follows_the_span() {
        let d = chrono::TimeDelta::days;
        assert_eq!(
            TimeBucket::for_span(chrono::TimeDelta::zero()),
            TimeBucket::Hour
        );
        assert_eq!(TimeBucket::for_span(d(8)), TimeBucket::Hour);
        assert_eq!(
            TimeBucket::for_span(d(8) + chrono::TimeDelta::seconds(1)),
            TimeBucket::Day
        );
        assert_eq!(TimeBucket::for_span(d(120)), TimeBucket::Day);

        let dir = tempfile::tempdir().unwrap();
        // 3 rows an hour apart: a lab session, hourly.
        let lab = ClassReport::load(
            &class(dir.path(), 1, 3, "2026-01-05T10:00:00"),
            GroupBy::Auto,
        );
        assert_eq!(lab.time_bucket(), Some(TimeBucket::Hour));
        // 300 hours: 12.5 days, daily.
        let term = tempfile::tempdir().unwrap();
        let long = ClassReport::load(
            &class(term.path(), 1, 300, "2026-01-05T10:00:00"),
            GroupBy::Auto,
        );
        assert_eq!(long.time_bucket(), Some(TimeBucket::Day));
        assert!(long.html().unwrap().contains("per day"));
        assert_eq!(ClassReport::default().time_bucket(), None);
    }

    #[test]
    fn the_time_chart_sums_rows_per_bucket() {
        let d = tempfile::tempdir().unwrap();
        let row = |ts: &str, em: f64| ours_row(ts, "", 1.0, em, 1e-6, "cell,python,,,,,,");
        let f = write(
            d.path(),
            "kim/emissions.csv",
            &[
                ours_header(),
                row("2026-01-05T10:05:00", 1e-3),
                row("2026-01-05T10:59:59", 2e-3),
                row("2026-01-05T12:00:00", 4e-3),
                row("not a date", 8e-3),
            ]
            .join("\n"),
        );
        let r = ClassReport::load(&[f], GroupBy::Auto);
        let students = r.by_student();
        let hourly = r.time_series(TimeBucket::Hour, &students);
        assert_eq!((hourly.b1 - hourly.b0), 2);
        // Points at the end of 10:00-11:00 and of 12:00-13:00, in hours since 10:00; grams.
        let pts = &hourly.series[0].1;
        assert_eq!(pts.len(), 2, "{pts:?}");
        assert_eq!(pts[0].0, 1.0);
        assert!((pts[0].1 - 3.0).abs() < 1e-9, "{pts:?}");
        assert_eq!(pts[1].0, 3.0);
        assert!((pts[1].1 - 7.0).abs() < 1e-9, "{pts:?}");
        let daily = r.time_series(TimeBucket::Day, &students);
        assert_eq!(daily.series[0].1, vec![(24.0, daily.series[0].1[0].1)]);
        assert!((daily.series[0].1[0].1 - 7.0).abs() < 1e-9);
    }

    #[test]
    fn html_tables_are_bounded_and_the_json_keeps_everyone() {
        let d = tempfile::tempdir().unwrap();
        let n = MAX_HTML_GROUPS + 15;
        let r = ClassReport::load(&class(d.path(), n, 2, "2026-01-05T10:00:00"), GroupBy::Auto);
        assert_eq!(r.by_student().len(), n);
        let html = r.html().unwrap();
        // The most emitting student is shown; the least emitting ones are only counted.
        assert!(html.contains(&format!("st{}x", n - 1)));
        assert!(
            !html.contains(">st0x<"),
            "the least emitting student is listed"
        );
        assert!(html.contains("… and 15 more students"), "no 'more' line");
        assert!(
            html.contains("… and 15 more files"),
            "no 'more' line for files"
        );
        let student_rows = html.matches("<tr><td>st").count();
        assert_eq!(student_rows, MAX_HTML_GROUPS, "student table rows");
        assert!(html.contains(&format!(
            "the {MAX_CHART_SERIES} most emitting of {n} students"
        )));
        let v: serde_json::Value = serde_json::from_str(&r.totals_json().unwrap()).unwrap();
        assert_eq!(v["students"].as_array().unwrap().len(), n);
        assert_eq!(v["files"].as_array().unwrap().len(), n);

        // A small class: nothing left out, no such line.
        let small = tempfile::tempdir().unwrap();
        let r = ClassReport::load(
            &class(small.path(), 3, 2, "2026-01-05T10:00:00"),
            GroupBy::Auto,
        );
        let html = r.html().unwrap();
        assert!(!html.contains("more students") && !html.contains("most emitting of"));
        for i in 0..3 {
            assert!(html.contains(&format!("<tr><td>st{i}x</td>")), "st{i}x");
        }
    }

    #[test]
    fn period_bounds_parse_and_refuse() {
        let at = |s: &str| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(
            Period::parse_bound("2026-12-01"),
            Ok(at("2026-12-01 00:00:00"))
        );
        assert_eq!(
            Period::parse_bound("2026-12-01T14:00"),
            Ok(at("2026-12-01 14:00:00"))
        );
        assert_eq!(
            Period::parse_bound(" 2026-12-01 14:00 "),
            Ok(at("2026-12-01 14:00:00"))
        );
        assert_eq!(
            Period::parse_bound("2026-12-01T14:00:30"),
            Ok(at("2026-12-01 14:00:30"))
        );
        assert_eq!(
            Period::parse_bound("2026-12-01T14:00:00+01:00"),
            Ok(at("2026-12-01 13:00:00"))
        );
        assert!(matches!(
            Period::parse_bound("last week"),
            Err(PeriodError::Unreadable(_))
        ));
        assert!(matches!(
            Period::new(Some("2026-12-02"), Some("2026-12-02")),
            Err(PeriodError::Empty { .. })
        ));
        let p = Period::new(Some("2026-12-01T14:00"), Some("2026-12-01T16:00")).unwrap();
        let t = |s: &str| Some(at(s).and_utc());
        assert!(!p.contains(t("2026-12-01 13:59:59")));
        assert!(p.contains(t("2026-12-01 14:00:00")), "--since is included");
        assert!(p.contains(t("2026-12-01 15:59:59")));
        assert!(!p.contains(t("2026-12-01 16:00:00")), "--until is excluded");
        assert!(!p.contains(None), "undated rows are out of a period");
        assert!(
            Period::default().contains(None),
            "no period keeps every row"
        );
        let open = Period::new(None, Some("2026-12-01")).unwrap();
        assert!(open.contains(t("1999-01-01 00:00:00")));
        assert!(!open.contains(t("2026-12-01 00:00:00")));
    }

    #[test]
    fn a_period_keeps_its_rows_and_counts_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let row = |ts: &str, p: &str| ours_row(ts, p, 1.0, 1e-6, 1e-6, "cell,python,,,,,,");
        let f = write(
            d.path(),
            "lab.csv",
            &[
                ours_header(),
                row("2026-12-01T13:59:59", "ann"),
                row("2026-12-01T14:00:00", "ann"),
                row("2026-12-01T15:00:00+01:00", "ben"), // 14:00 UTC: in
                row("2026-12-01T16:00:00", "ben"),
                row("", "ben"),
                row("someday", "cy"),
            ]
            .join("\n"),
        );
        let p = Period::new(Some("2026-12-01T14:00"), Some("2026-12-01T16:00")).unwrap();
        let r = ClassReport::load_period(std::slice::from_ref(&f), GroupBy::Auto, p);
        assert_eq!(r.rows.len(), 2, "{:?}", r.rows);
        assert_eq!(r.period.rows_outside, 2);
        assert_eq!(r.period.undated_excluded, 2);
        assert_eq!(r.undated_rows(), 0);
        let keys: Vec<_> = r.by_student().into_iter().map(|t| t.key).collect();
        assert_eq!(keys, ["ann", "ben"]);
        // The file still says how many valid rows it holds.
        assert_eq!(r.files[0].rows, 6);
        let note = "Left out: 2 row(s) outside it, 2 row(s) without a readable timestamp";
        assert!(r.text_table().contains(note), "{}", r.text_table());
        assert!(r.html().unwrap().contains(note));
        let v: serde_json::Value = serde_json::from_str(&r.totals_json().unwrap()).unwrap();
        assert_eq!(v["period"]["undated_excluded"], 2);
        assert_eq!(v["period"]["period"]["since"], "2026-12-01T14:00:00");
        // No period: every row, no period line.
        let all = ClassReport::load(&[f], GroupBy::Auto);
        assert_eq!(all.rows.len(), 6);
        assert!(!all.text_table().contains("Period:"));
    }

    #[test]
    fn formats_read_well() {
        assert_eq!(fmt_co2(KgCo2(1.234e-3)), "1.23 g CO₂eq");
        assert_eq!(fmt_co2(KgCo2(2e-7)), "200 µg CO₂eq");
        assert_eq!(fmt_energy(Joules::from_kwh(5e-6)), "18.0 J");
        assert_eq!(fmt_duration(90.0), "90.0 s");
    }

    /// Regression (class_csv fuzz target): a header field quoted across a newline made the
    /// skip reason two lines.
    #[test]
    fn a_skip_reason_is_one_line_whatever_the_header_holds() {
        let why = read_emissions_bytes(b",\"\0\0l\n2#026\x16tioesr&\x16\"").unwrap_err();
        assert!(why.starts_with("not an emissions.csv"), "{why}");
        assert!(!why.contains('\n') && !why.contains('\0'), "{why:?}");
    }
}
