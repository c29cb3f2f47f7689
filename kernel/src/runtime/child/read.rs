//! Reader threads for a child's pipes.

use super::{Utf8Carry, sys};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Starts a thread that reads `r` in chunks of at most `chunk` bytes and hands each to `f`; at
/// end of file or on a read error `f` gets an empty slice and the thread ends. `f` returns false
/// to stop early.
pub fn read_chunks<R, F>(name: &str, r: R, chunk: usize, f: F) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(&[u8]) -> bool + Send + 'static,
{
    spawn_reader(name, r, chunk, f, None)
}

/// [`read_chunks`] of a pipe, with a [`PipeWatch`] that tells whether the bytes written into
/// the pipe up to some moment have been handed to `f`.
pub fn read_chunks_watched<R, F>(
    name: &str,
    r: R,
    chunk: usize,
    f: F,
) -> io::Result<(JoinHandle<()>, Arc<PipeWatch>)>
where
    R: Read + AsFd + Send + 'static,
    F: FnMut(&[u8]) -> bool + Send + 'static,
{
    let watch = Arc::new(PipeWatch {
        taking: AtomicU64::new(0),
        taken: AtomicU64::new(0),
        handed: AtomicU64::new(0),
        ended: AtomicBool::new(false),
        fd: Mutex::new(Some(r.as_fd().try_clone_to_owned()?)),
    });
    let h = spawn_reader(name, r, chunk, f, Some(watch.clone()))?;
    Ok((h, watch))
}

fn spawn_reader<R, F>(
    name: &str,
    mut r: R,
    chunk: usize,
    mut f: F,
    watch: Option<Arc<PipeWatch>>,
) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(&[u8]) -> bool + Send + 'static,
{
    // the reader's own copy of the pipe to wait on (the watch's closes when the reader ends)
    let watched = match watch {
        Some(w) => {
            let fd =
                w.fd.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(OwnedFd::try_clone);
            match fd {
                Some(fd) => Some((w, fd?)),
                None => None,
            }
        }
        None => None,
    };
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut buf = vec![0u8; chunk];
            loop {
                // Waits for bytes before taking them (a watch must see a read begin while the
                // bytes are still in the pipe).
                if let Some((w, fd)) = &watched {
                    if sys::wait_readable(fd.as_fd()).is_err() {
                        break;
                    }
                    w.taking.fetch_add(1, SeqCst);
                }
                let got = r.read(&mut buf);
                let n = match &got {
                    Ok(n) => *n,
                    Err(_) => 0,
                };
                if let Some((w, _)) = &watched {
                    w.taken.fetch_add(n as u64, SeqCst);
                    w.taking.fetch_add(1, SeqCst);
                }
                let go = match got {
                    Ok(0) => break,
                    Ok(n) => f(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                    Err(_) => break,
                };
                if let Some((w, _)) = &watched {
                    w.handed.fetch_add(n as u64, SeqCst);
                }
                if !go {
                    if let Some((w, _)) = &watched {
                        w.end();
                    }
                    return;
                }
            }
            f(&[]);
            if let Some((w, _)) = &watched {
                w.end();
            }
        })
}

/// What a [`read_chunks_watched`] reader has done with its pipe. The child writes its output
/// there and its messages elsewhere; a message that must come after the output written before
/// it (a cell's end) can then wait until the reader has handed that output on
/// ([`PipeWatch::mark`], [`PipeWatch::reached`]), instead of the child marking its place in the
/// output with a token the reader must wake for (issue 9: two thread wake-ups of every Python
/// cell).
pub struct PipeWatch {
    /// Odd while the reader takes a chunk: from just before its read until `taken` counts it.
    taking: AtomicU64,
    /// Bytes the reader has taken from the pipe.
    taken: AtomicU64,
    /// Bytes the reader has handed to its callback (all of `taken` once the callback returned).
    handed: AtomicU64,
    /// The reader has ended: nothing more will be handed on.
    ended: AtomicBool,
    /// A copy of the pipe's read end (for FIONREAD), closed when the reader ends: it must not
    /// keep the pipe open for a child that writes into it.
    fd: Mutex<Option<OwnedFd>>,
}

impl PipeWatch {
    /// A mark at or past every byte written into the pipe before this call: what the reader
    /// has taken plus what waits in the pipe, read while no read is under way (one that is
    /// takes a few microseconds: the reader waits for bytes before it reads).
    pub fn mark(&self) -> u64 {
        loop {
            if self.ended.load(SeqCst) {
                return 0;
            }
            let before = self.taking.load(SeqCst);
            if before.is_multiple_of(2) {
                let taken = self.taken.load(SeqCst);
                let unread = {
                    let fd = self.fd.lock().unwrap_or_else(|e| e.into_inner());
                    match fd.as_ref() {
                        Some(fd) => sys::unread_bytes(fd.as_fd()).unwrap_or(0),
                        None => 0,
                    }
                };
                if self.taking.load(SeqCst) == before {
                    return taken + unread as u64;
                }
            }
            std::thread::yield_now();
        }
    }

    /// Whether the reader has handed on every byte before `mark` (or has ended). However fast
    /// a child keeps writing, this comes once the bytes up to the mark are through: the mark
    /// does not move with what is written after it.
    pub fn reached(&self, mark: u64) -> bool {
        self.handed.load(SeqCst) >= mark || self.ended.load(SeqCst)
    }

    fn end(&self) {
        self.ended.store(true, SeqCst);
        self.fd.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// [`read_chunks`] as text: `f` gets each chunk's complete characters (a character cut by a
/// read waits for the rest, see [`Utf8Carry`]; never an empty string), then `None` at the end.
pub fn read_text<R, F>(name: &str, r: R, chunk: usize, mut f: F) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(Option<&str>) -> bool + Send + 'static,
{
    let mut carry = Utf8Carry::default();
    read_chunks(name, r, chunk, move |bytes| {
        let text = if bytes.is_empty() {
            carry.finish()
        } else {
            carry.push(bytes)
        };
        if !text.is_empty() && !f(Some(&text)) {
            return false;
        }
        if bytes.is_empty() {
            f(None);
        }
        true
    })
}

/// Starts a thread that reads `r` line by line (without the newline, invalid UTF-8 replaced) and
/// hands each to `f`; at end of file or on error `f` gets `None`. `f` returns false to stop.
pub fn read_lines<R, F>(name: &str, r: R, mut f: F) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    F: FnMut(Option<String>) -> bool + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if !f(Some(String::from_utf8_lossy(&line).into_owned())) {
                            return;
                        }
                    }
                }
            }
            f(None);
        })
}

/// Wakes a thread that waits on a pipe of its own when other threads have handed it something
/// through a channel (an `eventfd(2)` polled beside the pipe). Rung only while someone waits, so
/// a busy reader costs no system call per event.
#[derive(Debug)]
pub struct Doorbell {
    fd: OwnedFd,
    waiting: AtomicBool,
}

impl Doorbell {
    /// A new doorbell (one eventfd).
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            fd: sys::eventfd()?,
            waiting: AtomicBool::new(false),
        })
    }

    /// Rings if someone waits. Call it after handing the event over (the waiter looks at its
    /// channel once more after saying it waits: between the two, one of them sees the other).
    pub fn ring(&self) {
        if self.waiting.load(SeqCst) {
            sys::eventfd_add(self.fd.as_fd());
        }
    }

    /// Waits until rung, `pipe` (if given) is readable, or `timeout` passed; true if `pipe` is
    /// readable. `ready` looks at the caller's channel after the wait is announced: when it
    /// says true, nothing is awaited.
    pub fn wait(
        &self,
        pipe: Option<BorrowedFd<'_>>,
        timeout: std::time::Duration,
        ready: impl FnOnce() -> bool,
    ) -> io::Result<bool> {
        self.waiting.store(true, SeqCst);
        if ready() {
            self.waiting.store(false, SeqCst);
            return Ok(false);
        }
        let r = sys::poll_two(pipe, self.fd.as_fd(), timeout);
        self.waiting.store(false, SeqCst);
        let (readable, rung) = r?;
        if rung {
            sys::eventfd_clear(self.fd.as_fd());
        }
        Ok(readable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::mpsc;

    #[test]
    fn a_doorbell_wakes_its_waiter_and_says_when_the_pipe_is_readable() {
        let bell = Arc::new(Doorbell::new().unwrap());
        let (r, mut w) = std::io::pipe().unwrap();
        let long = std::time::Duration::from_secs(60);
        // a ring with nobody waiting is not kept: the next wait sleeps its whole timeout
        bell.ring();
        let t0 = std::time::Instant::now();
        let short = std::time::Duration::from_millis(30);
        assert!(!bell.wait(Some(r.as_fd()), short, || false).unwrap());
        assert!(t0.elapsed() >= short);
        // `ready` true: no wait at all
        assert!(!bell.wait(Some(r.as_fd()), long, || true).unwrap());
        // a ring from another thread while it waits ends the wait (the pipe not readable)
        let t0 = std::time::Instant::now();
        let ringer = {
            let bell = bell.clone();
            std::thread::spawn(move || {
                while !bell.waiting.load(SeqCst) {
                    std::thread::yield_now();
                }
                bell.ring();
            })
        };
        assert!(!bell.wait(Some(r.as_fd()), long, || false).unwrap());
        ringer.join().unwrap();
        // bytes in the pipe: readable
        std::io::Write::write_all(&mut w, b"x").unwrap();
        assert!(bell.wait(Some(r.as_fd()), long, || false).unwrap());
        // two 60 s waits that ended early: only a missing wake-up reaches this bound
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
    }

    #[test]
    fn chunks_end_with_an_empty_slice() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (tx, rx) = mpsc::channel();
        read_chunks("t", r, 4, move |b| tx.send(b.to_vec()).is_ok()).unwrap();
        w.write_all(b"abcdef").unwrap();
        drop(w);
        let mut all = Vec::new();
        loop {
            let c = rx.recv().unwrap();
            if c.is_empty() {
                break;
            }
            assert!(c.len() <= 4);
            all.extend(c);
        }
        assert_eq!(all, b"abcdef");
    }

    #[test]
    fn a_watch_says_when_the_bytes_before_a_mark_were_handed_on() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (go, wait) = mpsc::channel::<()>();
        let (tx, rx) = mpsc::channel();
        // each chunk waits for a go before it is handed on
        let (h, watch) = read_chunks_watched("t", r, 4, move |b| {
            let _ = wait.recv();
            tx.send(b.to_vec()).is_ok()
        })
        .unwrap();
        assert_eq!(watch.mark(), 0, "nothing written yet");
        assert!(watch.reached(0));
        w.write_all(b"abcdef").unwrap();
        // in the pipe, or taken and held by the reader: six bytes to hand on
        let mark = watch.mark();
        assert_eq!(mark, 6);
        assert!(!watch.reached(mark));
        go.send(()).unwrap();
        assert_eq!(rx.recv().unwrap(), b"abcd");
        assert!(!watch.reached(mark), "\"ef\" is not handed on");
        // bytes written after the mark do not move it (the reader may take them with "ef")
        w.write_all(b"gh").unwrap();
        go.send(()).unwrap();
        let second = rx.recv().unwrap();
        assert!(second == b"ef" || second == b"efgh", "{second:?}");
        // the reader counts the chunk right after its callback returns
        let t0 = std::time::Instant::now();
        while !watch.reached(mark) {
            assert!(t0.elapsed().as_secs() < 10, "never reached");
            std::thread::yield_now();
        }
        assert!(watch.mark() >= 8, "\"gh\" is in the pipe or taken");
        drop(w);
        if second == b"ef" {
            go.send(()).unwrap();
            assert_eq!(rx.recv().unwrap(), b"gh");
        }
        go.send(()).unwrap();
        assert!(rx.recv().unwrap().is_empty(), "end of file");
        h.join().unwrap();
        assert!(
            watch.reached(u64::MAX),
            "an ended reader hands on nothing more"
        );
    }

    #[test]
    fn text_reads_keep_characters_whole_across_reads() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (tx, rx) = mpsc::channel();
        // 2-byte reads cut "€" (3 bytes) and "é" (2 bytes, at an odd offset) in the middle
        let h = read_text("t", r, 2, move |t| tx.send(t.map(str::to_string)).is_ok()).unwrap();
        w.write_all("a€é".as_bytes()).unwrap();
        drop(w);
        h.join().unwrap();
        let got: Vec<Option<String>> = rx.iter().collect();
        assert_eq!(got.last(), Some(&None));
        let text: String = got.iter().flatten().map(String::as_str).collect();
        assert_eq!(text, "a€é");
        assert!(got.iter().flatten().all(|t| !t.is_empty()), "{got:?}");
    }
}
