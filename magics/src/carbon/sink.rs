//! Where records go: `emissions.csv` ([`CsvSink`]) or memory ([`MemorySink`], tests and session
//! summaries).
//!
//! CSV writes are whole lines appended under an exclusive file lock (`File::lock`, flock(2) on
//! Linux), so several kernels can share one file without interleaving. A file whose header is not
//! ours (CodeCarbon's own, an older version of ours, anything else) is never rewritten or mixed
//! with our rows: its data stays as it is, our rows go to a sibling file, and the caller gets a
//! notice to show the user.

use super::record::{EmissionRecord, csv_line, header};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;

/// A record could not be written.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The file cannot be opened, locked or written.
    #[error(
        "cannot write {path}: {source} (set another file with %carbon config CARBON_OUTPUT=PATH)"
    )]
    Io {
        /// the file
        path: PathBuf,
        /// cause
        #[source]
        source: std::io::Error,
    },
}

/// Where a record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The file (or `memory`).
    pub path: PathBuf,
    /// Something the user must be told (rows diverted to another file), once.
    pub notice: Option<String>,
}

/// A destination for records.
pub trait Sink: Send {
    /// Appends one record.
    fn record(&mut self, r: &EmissionRecord) -> Result<Written, SinkError>;
}

/// Appends to a CSV file with CodeCarbon's columns first.
#[derive(Debug, Clone)]
pub struct CsvSink {
    requested: PathBuf,
    actual: PathBuf,
}

/// `emissions.csv` → `emissions.carbon-kernel.csv`, then `…-2.csv`, `…-3.csv`.
fn sibling(path: &Path, n: u32) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "emissions".into());
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "csv".into());
    let name = if n <= 1 {
        format!("{stem}.carbon-kernel.{ext}")
    } else {
        format!("{stem}.carbon-kernel-{n}.{ext}")
    };
    path.with_file_name(name)
}

enum HeaderState {
    Empty,
    Ours { needs_newline: bool },
    Foreign(String),
}

fn header_line() -> String {
    csv_line(&header())
}

fn inspect(f: &mut File) -> std::io::Result<HeaderState> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(HeaderState::Empty);
    }
    f.seek(SeekFrom::Start(0))?;
    let mut first = String::new();
    BufReader::new(&mut *f)
        .take(1 << 16)
        .read_line(&mut first)?;
    let first = first.trim_start_matches('\u{feff}');
    if first.trim_end_matches(['\r', '\n']) != header_line().trim_end() {
        let cols = first.split(',').count();
        return Ok(HeaderState::Foreign(format!(
            "{} column(s), starting '{}'",
            cols,
            first.chars().take(40).collect::<String>().trim_end()
        )));
    }
    // A line cut short by a crash elsewhere must not swallow our row.
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    f.read_exact(&mut last)?;
    Ok(HeaderState::Ours {
        needs_newline: last[0] != b'\n',
    })
}

impl CsvSink {
    /// A sink appending to `path` (created with its header on first write).
    pub fn new(path: impl Into<PathBuf>) -> CsvSink {
        let p = path.into();
        CsvSink {
            requested: p.clone(),
            actual: p,
        }
    }

    /// The file asked for.
    pub fn requested(&self) -> &Path {
        &self.requested
    }

    /// The file rows go to now (differs from the requested one after a diversion).
    pub fn path(&self) -> &Path {
        &self.actual
    }

    /// Appends several rows at once (one write under one lock).
    pub fn record_all(&mut self, rows: &[EmissionRecord]) -> Result<Written, SinkError> {
        let mut body = String::new();
        for r in rows {
            body.push_str(&csv_line(&r.fields()));
        }
        let mut notice: Option<String> = None;
        let mut n = 1;
        loop {
            let path = self.actual.clone();
            let io = |source| SinkError::Io {
                path: path.clone(),
                source,
            };
            let mut f = OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .open(&path)
                .map_err(io)?;
            f.lock().map_err(io)?;
            match inspect(&mut f).map_err(io)? {
                HeaderState::Foreign(what) => {
                    drop(f); // unlocks
                    let next = sibling(&self.requested, n);
                    n += 1;
                    if n > 50 {
                        return Err(io(std::io::Error::other(
                            "every alternative file name has a foreign header",
                        )));
                    }
                    if notice.is_none() {
                        notice = Some(format!(
                            "{} has another header ({what}): it was left untouched and this row went to {} instead",
                            path.display(),
                            next.display()
                        ));
                    }
                    self.actual = next;
                    continue;
                }
                HeaderState::Empty => {
                    let mut all = header_line();
                    all.push_str(&body);
                    f.write_all(all.as_bytes()).map_err(io)?;
                }
                HeaderState::Ours { needs_newline } => {
                    let mut all = String::new();
                    if needs_newline {
                        all.push('\n');
                    }
                    all.push_str(&body);
                    f.write_all(all.as_bytes()).map_err(io)?;
                }
            }
            f.flush().map_err(io)?;
            return Ok(Written {
                path: self.actual.clone(),
                notice,
            });
        }
    }
}

impl Sink for CsvSink {
    fn record(&mut self, r: &EmissionRecord) -> Result<Written, SinkError> {
        self.record_all(std::slice::from_ref(r))
    }
}

/// Keeps records in memory (clones share the list).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    /// Records, oldest first.
    pub rows: Arc<Mutex<Vec<EmissionRecord>>>,
}

impl MemorySink {
    /// A copy of the records.
    pub fn snapshot(&self) -> Vec<EmissionRecord> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Sink for MemorySink {
    fn record(&mut self, r: &EmissionRecord) -> Result<Written, SinkError> {
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r.clone());
        Ok(Written {
            path: PathBuf::from("memory"),
            notice: None,
        })
    }
}

/// A CSV file read back for `%carbon csv`: header and rows as strings.
#[derive(Debug, Clone, Default)]
pub struct CsvView {
    /// Column names.
    pub header: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<String>>,
}

/// Reads a CSV file (any header).
pub fn read_csv(path: &Path) -> Result<CsvView, String> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .from_path(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let header = rdr
        .headers()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        match rec {
            Ok(r) => rows.push(r.iter().map(str::to_string).collect()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(CsvView { header, rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carbon::intensity;
    use crate::carbon::meter::Parts;
    use crate::carbon::record::CODECARBON_COLUMNS;
    use crate::units::Joules;

    fn rec(label: &str) -> EmissionRecord {
        let z = intensity::zone(Some("FRA")).unwrap();
        let mut r = EmissionRecord::base("test", "session", &z, 1.0);
        r.kind = crate::carbon::record::RowKind::Cell;
        r.status = crate::carbon::record::RowStatus::Ok;
        r.label = label.into();
        r.set_energy(
            1.0,
            &Parts {
                cpu: Joules(1.0),
                ..Default::default()
            },
        );
        r
    }

    #[test]
    fn creates_with_header_then_appends() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("emissions.csv");
        let mut s = CsvSink::new(&p);
        let w = s.record(&rec("a, with comma")).unwrap();
        assert_eq!(w.path, p);
        assert!(w.notice.is_none());
        s.record(&rec("b")).unwrap();
        let v = read_csv(&p).unwrap();
        assert_eq!(v.header[..38], CODECARBON_COLUMNS.map(String::from));
        assert_eq!(v.rows.len(), 2);
        let label = v.header.iter().position(|h| h == "label").unwrap();
        assert_eq!(v.rows[0][label], "a, with comma");
    }

    #[test]
    fn foreign_header_is_kept_and_rows_diverted() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("emissions.csv");
        let theirs = format!(
            "{}\n2026-01-01T00:00:00,codecarbon,x\n",
            CODECARBON_COLUMNS.join(",")
        );
        std::fs::write(&p, &theirs).unwrap();
        let mut s = CsvSink::new(&p);
        let w = s.record(&rec("a")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            theirs,
            "their file changed"
        );
        assert_eq!(w.path, d.path().join("emissions.carbon-kernel.csv"));
        let n = w.notice.unwrap();
        assert!(
            n.contains("left untouched") && n.contains("carbon-kernel"),
            "{n}"
        );
        // later rows go straight to the new file, without a new notice
        let w2 = s.record(&rec("b")).unwrap();
        assert!(w2.notice.is_none());
        assert_eq!(read_csv(&w2.path).unwrap().rows.len(), 2);
    }

    #[test]
    fn truncated_last_line_does_not_swallow_a_row() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("e.csv");
        let mut s = CsvSink::new(&p);
        s.record(&rec("a")).unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"2026-01-01T00:00:00,cut").unwrap();
        s.record(&rec("b")).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.ends_with('\n'));
        assert!(text.lines().last().unwrap().contains(",b,"));
    }

    #[test]
    fn unwritable_path_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("no-such-dir").join("emissions.csv");
        let e = CsvSink::new(&p).record(&rec("a")).unwrap_err().to_string();
        assert!(
            e.contains("cannot write") && e.contains("no-such-dir"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    /// Child side of the concurrency test: appends rows when asked to by the parent test.
    #[test]
    fn append_worker() {
        let (Ok(path), Ok(tag)) = (
            std::env::var("CARBON_SINK_WORKER_FILE"),
            std::env::var("CARBON_SINK_WORKER_TAG"),
        ) else {
            return;
        };
        let mut s = CsvSink::new(path);
        for i in 0..50 {
            // a long label makes torn writes visible if locking or whole-line writes broke
            let mut r = rec(&format!("{tag}-{i}-{}", "x".repeat(3000)));
            r.prompt_tokens = Some(i);
            s.record(&r).unwrap();
        }
    }

    #[test]
    fn concurrent_processes_leave_every_row_intact() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("emissions.csv");
        let exe = std::env::current_exe().unwrap();
        let kids: Vec<_> = (0..4)
            .map(|k| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "carbon::sink::tests::append_worker",
                        "--test-threads=1",
                    ])
                    .env("CARBON_SINK_WORKER_FILE", &p)
                    .env("CARBON_SINK_WORKER_TAG", format!("w{k}"))
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut k in kids {
            assert!(k.wait().unwrap().success());
        }
        let v = read_csv(&p).unwrap();
        assert_eq!(v.rows.len(), 200);
        let label = v.header.iter().position(|h| h == "label").unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for r in &v.rows {
            assert_eq!(r.len(), v.header.len());
            assert!(r[label].ends_with(&"x".repeat(3000)));
            seen.insert(r[label].split('-').take(2).collect::<Vec<_>>().join("-"));
        }
        assert_eq!(seen.len(), 200, "rows lost or duplicated");
        // exactly one header
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("timestamp,project_name").count(), 1);
    }
}
