//! Where records go: `emissions.csv` ([`CsvSink`]) or memory ([`MemorySink`], tests and session
//! summaries).
//!
//! CSV writes are whole lines appended under an exclusive file lock (`File::lock`, flock(2) on
//! Linux), so several kernels can share one file without interleaving. A file whose header is not
//! ours (CodeCarbon's own, an older version of ours, anything else) is never rewritten or mixed
//! with our rows: its data stays as it is, our rows go to a sibling file, and the caller gets a
//! notice to show the user.
//!
//! A lock held by another process (a script of the user's, a stuck kernel) never hangs a cell:
//! the sink waits at most [`DEFAULT_LOCK_WAIT`] (less when the caller's stop check, the kernel's
//! interrupt, fires), then writes the rows to `emissions.pending.csv` beside the file (or, when
//! that is locked too, keeps them in memory) and says so; the next row written to the file takes
//! the waiting ones with it, so nothing is lost.

use super::record::{EmissionRecord, csv_line, header};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How long a write waits for the lock of `emissions.csv` before diverting its rows. Kernels hold
/// the lock for one append (milliseconds), so a lock held this long belongs to something else;
/// 3 s is short enough that the cell's end does not look hung.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(3);

/// How long the side file's lock is waited for (it is only ever held for one append).
const PENDING_LOCK_WAIT: Duration = Duration::from_millis(500);

/// How often a held lock is tried again.
const LOCK_POLL: Duration = Duration::from_millis(20);

/// Asked while waiting for a lock: true ends the wait (the kernel's interrupt).
#[derive(Clone)]
pub struct StopCheck(pub Arc<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for StopCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopCheck")
    }
}

/// How a bounded lock wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Locked {
    Yes,
    TimedOut,
    Stopped,
}

/// Takes `f`'s exclusive lock, trying again every [`LOCK_POLL`] for at most `wait`, ending
/// early when `stop` says so.
fn lock_bounded(f: &File, wait: Duration, stop: Option<&StopCheck>) -> std::io::Result<Locked> {
    let end = Instant::now() + wait;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(Locked::Yes),
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        if stop.is_some_and(|s| (s.0)()) {
            return Ok(Locked::Stopped);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(Locked::TimedOut);
        }
        std::thread::sleep(LOCK_POLL.min(end - now));
    }
}

/// `emissions.csv` → `emissions.pending.csv`: rows waiting for the file's lock.
pub fn pending_path(path: &Path) -> PathBuf {
    let (stem, ext) = stem_and_ext(path);
    path.with_file_name(format!("{stem}.pending.{ext}"))
}

/// A CSV file's stem and extension, for the names of its side files.
fn stem_and_ext(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "emissions".into());
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "csv".into());
    (stem, ext)
}

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
#[derive(Debug)]
pub struct CsvSink {
    requested: PathBuf,
    actual: PathBuf,
    lock_wait: Duration,
    stop: Option<StopCheck>,
    /// CSV lines that found both the file and its side file locked (written with the next row).
    queued: String,
}

/// `emissions.csv` → `emissions.carbon-kernel.csv`, then `…-2.csv`, `…-3.csv`.
fn sibling(path: &Path, n: u32) -> PathBuf {
    let (stem, ext) = stem_and_ext(path);
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
            lock_wait: DEFAULT_LOCK_WAIT,
            stop: None,
            queued: String::new(),
        }
    }

    /// The same sink waiting at most `wait` for a lock held elsewhere.
    pub fn with_lock_wait(mut self, wait: Duration) -> CsvSink {
        self.lock_wait = wait;
        self
    }

    /// The same sink ending a lock wait as soon as `stop` says so.
    pub fn with_stop(mut self, stop: Option<StopCheck>) -> CsvSink {
        self.stop = stop;
        self
    }

    /// Rows kept in memory because every file was locked (written with the next row).
    pub fn queued_rows(&self) -> usize {
        self.queued.lines().count()
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
        // rows kept in memory by an earlier write go first (older)
        let old = std::mem::take(&mut self.queued);
        let mut body = old.clone();
        for r in rows {
            // a label or model name may hold a key (a server echoing it): the file never does
            body.push_str(&crate::redact::redact(&csv_line(&r.fields())));
        }
        self.write_body(&body).inspect_err(|_| {
            // this write failed and says so; what was queued before stays queued
            self.queued.insert_str(0, &old);
        })
    }

    fn write_body(&mut self, body: &str) -> Result<Written, SinkError> {
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
            match lock_bounded(&f, self.lock_wait, self.stop.as_ref()).map_err(io)? {
                Locked::Yes => {}
                how => {
                    drop(f);
                    return self.divert(body, &path, how, notice);
                }
            }
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
                state => {
                    let mut all = match state {
                        HeaderState::Ours {
                            needs_newline: true,
                        } => "\n".to_string(),
                        HeaderState::Ours { .. } => String::new(),
                        _ => header_line(),
                    };
                    // rows that waited in the side file go in first, under this lock
                    let pending = take_pending(&pending_path(&self.requested));
                    if let Some((lines, n)) = &pending {
                        all.push_str(lines);
                        if notice.is_none() {
                            notice = Some(format!(
                                "{n} row(s) that waited in {} were added to {}",
                                pending_path(&self.requested).display(),
                                path.display()
                            ));
                        }
                    }
                    all.push_str(body);
                    if let Err(e) = f.write_all(all.as_bytes()) {
                        if let Some((lines, _)) = pending {
                            // they were taken from the side file: keep them
                            self.queued.insert_str(0, &lines);
                        }
                        return Err(io(e));
                    }
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

impl CsvSink {
    /// The file's lock is held elsewhere (or the wait was interrupted): the rows go to the side
    /// file, else stay in memory; the notice says where.
    fn divert(
        &mut self,
        body: &str,
        path: &Path,
        how: Locked,
        earlier: Option<String>,
    ) -> Result<Written, SinkError> {
        let why = match how {
            Locked::Stopped => "the wait for its lock was interrupted".to_string(),
            _ => format!(
                "another process holds its lock (waited {:.1} s)",
                self.lock_wait.as_secs_f64()
            ),
        };
        let n = body.lines().count();
        let side = pending_path(&self.requested);
        let notice = match append_pending(&side, body, self.stop.as_ref()) {
            Ok(true) => {
                // the memory queue is part of `body`: it is in the side file now
                format!(
                    "{} was not written: {why}; {n} row(s) went to {} and will be added to it with the next row",
                    path.display(),
                    side.display()
                )
            }
            _ => {
                self.queued = body.to_string();
                format!(
                    "{} was not written: {why}, and {} is locked too; {n} row(s) are kept in memory and written with the next row",
                    path.display(),
                    side.display()
                )
            }
        };
        let notice = match earlier {
            Some(e) => format!("{e}; {notice}"),
            None => notice,
        };
        Ok(Written {
            path: side,
            notice: Some(notice),
        })
    }
}

/// Appends `body` to the side file (header first when it is new); false when its lock could not
/// be had in time.
fn append_pending(side: &Path, body: &str, stop: Option<&StopCheck>) -> std::io::Result<bool> {
    // a file being merged is removed under its lock: a handle on a removed file is opened again
    for _ in 0..3 {
        let mut f = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(side)?;
        if lock_bounded(&f, PENDING_LOCK_WAIT, stop)? != Locked::Yes {
            return Ok(false);
        }
        if f.metadata()?.nlink() == 0 {
            continue;
        }
        let mut all = match inspect(&mut f)? {
            HeaderState::Empty => header_line(),
            HeaderState::Ours { needs_newline } => {
                if needs_newline {
                    "\n".into()
                } else {
                    String::new()
                }
            }
            HeaderState::Foreign(_) => return Ok(false),
        };
        all.push_str(body);
        f.write_all(all.as_bytes())?;
        f.flush()?;
        return Ok(true);
    }
    Ok(false)
}

/// The rows waiting in the side file, and how many, removing the file (under its lock, which is
/// never waited for here: a busy side file is merged next time). None when there are none.
fn take_pending(side: &Path) -> Option<(String, usize)> {
    let mut f = OpenOptions::new().read(true).write(true).open(side).ok()?;
    f.try_lock().ok()?;
    if f.metadata().ok()?.nlink() == 0 {
        return None; // merged and removed by another kernel meanwhile
    }
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    let head = header_line();
    let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut rows = match body.strip_prefix(head.as_str()) {
        Some(r) => r.to_string(),
        None if body.is_empty() => String::new(),
        None => return None, // not ours: left for the user
    };
    if !rows.is_empty() && !rows.ends_with('\n') {
        rows.push('\n');
    }
    // emptied, then removed, both under its lock: a handle opened before sees nothing to merge
    f.set_len(0).ok()?;
    std::fs::remove_file(side).ok()?;
    let n = rows.lines().filter(|l| !l.trim().is_empty()).count();
    (n > 0).then_some((rows, n))
}

impl Drop for CsvSink {
    /// Rows still in memory (every file was locked) go to the side file, else to the log: they
    /// are never dropped silently.
    fn drop(&mut self) {
        if self.queued.is_empty() {
            return;
        }
        let side = pending_path(&self.requested);
        if !matches!(append_pending(&side, &self.queued, None), Ok(true)) {
            eprintln!(
                "carbon-kernel: {} emissions row(s) could not be written ({} and {} locked):\n{}",
                self.queued_rows(),
                self.requested.display(),
                side.display(),
                self.queued
            );
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

    /// A lock held elsewhere (flock locks of two open files conflict even in one process):
    /// the write waits a bounded time, the rows wait beside the file, the next write merges
    /// them, nothing is lost or doubled.
    #[test]
    fn a_held_lock_diverts_rows_then_they_are_merged() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("emissions.csv");
        let mut s = CsvSink::new(&p).with_lock_wait(Duration::from_millis(100));
        s.record(&rec("first")).unwrap();
        let holder = File::open(&p).unwrap();
        holder.lock().unwrap();
        let w = s.record(&rec("while-locked")).unwrap();
        let side = pending_path(&p);
        assert_eq!(w.path, side);
        let n = w.notice.unwrap();
        assert!(
            n.contains("holds its lock") && n.contains("emissions.pending.csv"),
            "{n}"
        );
        assert_eq!(read_csv(&side).unwrap().rows.len(), 1);
        assert_eq!(read_csv(&p).unwrap().rows.len(), 1);
        drop(holder);
        let w = s.record(&rec("after")).unwrap();
        assert!(w.notice.unwrap().contains("1 row(s) that waited"));
        assert!(!side.exists(), "the side file is merged and removed");
        let v = read_csv(&p).unwrap();
        let label = v.header.iter().position(|h| h == "label").unwrap();
        let labels: Vec<&str> = v.rows.iter().map(|r| r[label].as_str()).collect();
        assert_eq!(labels, ["first", "while-locked", "after"]);
    }

    #[test]
    fn both_files_locked_keeps_rows_in_memory_and_a_stop_ends_the_wait() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("emissions.csv");
        let side = pending_path(&p);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = stop.clone();
        let mut s = CsvSink::new(&p)
            .with_lock_wait(Duration::from_secs(600))
            .with_stop(Some(StopCheck(Arc::new(move || {
                s2.load(std::sync::atomic::Ordering::SeqCst)
            }))));
        let h1 = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        h1.lock().unwrap();
        let h2 = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&side)
            .unwrap();
        h2.lock().unwrap();
        let s3 = stop.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            s3.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        // without the stop this would wait 600 s
        let w = s.record(&rec("held")).unwrap();
        t.join().unwrap();
        assert!(w.notice.unwrap().contains("interrupted"));
        assert_eq!(s.queued_rows(), 1);
        drop((h1, h2));
        stop.store(false, std::sync::atomic::Ordering::SeqCst);
        s.record(&rec("next")).unwrap();
        assert_eq!(s.queued_rows(), 0);
        let v = read_csv(&p).unwrap();
        assert_eq!(v.rows.len(), 2);
        // a queue left at the end goes to the side file
        let h1 = File::open(&p).unwrap();
        h1.lock().unwrap();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        s.record(&rec("last")).unwrap();
        assert_eq!(read_csv(&side).unwrap().rows.len(), 1);
        drop(s);
        assert_eq!(read_csv(&side).unwrap().rows.len(), 1, "nothing doubled");
    }
}
