//! The output edge of the one redaction layer (`carbon_magics::redact`): every stream, display,
//! update, input prompt and final outcome of a cell goes through [`Redacting`], so no secret the
//! kernel knows reaches a front-end, whatever printed it (user code, a runtime, a magic, a
//! server's echo).
//!
//! A stream arrives in pieces (each write a program flushes), and a key printed in two writes
//! (`print(k[:10], end=''); sys.stdout.flush(); print(k[10:])`) would be masked in neither.
//! Each stream (stdout, stderr) of a [`Redacting`] therefore keeps a [`Carry`]: the tail of a
//! piece that may be the start of a secret (at most the longest secret's length - 1 bytes, and
//! only when it is such a start) waits for the next piece. What is held is sent before any other
//! output of the cell, when the cell ends ([`Redacting::finish`], before the reply and the idle
//! status), and at the latest [`HOLD_BOUND`] after it was held, by a thread started the first
//! time something is held.

use crate::runtime::{ExecError, ExecOutcome, Phase, Publish, StreamName};
use carbon_magics::MimeBundle;
use carbon_magics::redact::{self, Carry, Redactor};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the tail of a stream that may start a secret waits for the rest when nothing
/// follows. ipykernel sends what a cell prints at most every 0.2 s (`OutStream.flush_interval
/// = 0.2`, ipykernel/iostream.py), so front-ends already see a kernel's streams this late
/// without anyone noticing; a few held bytes wait no longer than that. The wait it must cover
/// is far shorter: two writes of one `print` (microseconds apart), or two SSE events of a
/// streamed answer that echoes a key (tens of milliseconds between tokens).
pub const HOLD_BOUND: Duration = Duration::from_millis(200);

const STREAMS: [StreamName; 2] = [StreamName::Stdout, StreamName::Stderr];

fn slot(name: StreamName) -> usize {
    match name {
        StreamName::Stdout => 0,
        StreamName::Stderr => 1,
    }
}

/// What each stream holds back, shared with the thread that flushes it after [`HOLD_BOUND`].
#[derive(Default)]
struct Held {
    state: Mutex<HeldState>,
    wake: Condvar,
}

#[derive(Default)]
struct HeldState {
    carry: [Carry; 2],
    /// When the oldest byte each stream holds was held.
    since: [Option<Instant>; 2],
    /// The flusher thread is to end.
    done: bool,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HeldState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`Publish`] that masks secrets before passing outputs on.
pub struct Redacting<'a> {
    inner: Inner<'a>,
    /// The redactor to use; `None`: the kernel's current one ([`redact::global`]).
    redactor: Option<Arc<Redactor>>,
    held: Arc<Held>,
    flusher: Option<JoinHandle<()>>,
}

enum Inner<'a> {
    Borrowed(&'a mut dyn Publish),
    Owned(Box<dyn Publish>),
}

impl<'a> Redacting<'a> {
    /// Wraps `out`.
    pub fn new(out: &'a mut dyn Publish) -> Self {
        Self::wrap(Inner::Borrowed(out), None)
    }

    fn wrap(inner: Inner<'a>, redactor: Option<Arc<Redactor>>) -> Self {
        Redacting {
            inner,
            redactor,
            held: Arc::default(),
            flusher: None,
        }
    }

    fn out(&mut self) -> &mut dyn Publish {
        match &mut self.inner {
            Inner::Borrowed(o) => &mut **o,
            Inner::Owned(o) => &mut **o,
        }
    }

    fn redactor(&self) -> Arc<Redactor> {
        self.redactor.clone().unwrap_or_else(redact::global)
    }

    /// Sends what the streams hold (before another output, so the order stays as printed).
    fn flush_streams(&mut self) {
        let r = self.redactor();
        let held = Arc::clone(&self.held);
        let mut st = held.lock();
        for (i, name) in STREAMS.into_iter().enumerate() {
            st.since[i] = None;
            let t = st.carry[i].flush(&r);
            if !t.is_empty() {
                self.out().stream(name, &t);
            }
        }
    }

    /// The stream (cell) ends: sends what is held and stops the flusher. Call it before the
    /// reply and the idle status; dropping does it too.
    pub fn finish(&mut self) {
        self.flush_streams();
        self.held.lock().done = true;
        self.held.wake.notify_all();
        if let Some(h) = self.flusher.take() {
            let _ = h.join();
        }
        // a later piece (this publisher outlives a cell only as a clone) starts a new flusher
        self.held.lock().done = false;
    }

    fn start_flusher(&mut self) {
        if self.flusher.is_some() {
            return;
        }
        let (held, out, r) = (
            Arc::clone(&self.held),
            self.out().boxed_clone(),
            self.redactor.clone(),
        );
        match std::thread::Builder::new()
            .name("carbon-redact-flush".into())
            .spawn(move || flusher(&held, out, r))
        {
            Ok(h) => self.flusher = Some(h),
            // without the thread a held tail waits for the next piece or the cell's end
            Err(e) => log::warn!("cannot start the stream flusher: {e}"),
        }
    }
}

/// Sends a stream's held tail once it has waited [`HOLD_BOUND`], until told to end.
fn flusher(held: &Held, mut out: Box<dyn Publish>, redactor: Option<Arc<Redactor>>) {
    let mut st = held.lock();
    loop {
        if st.done {
            return;
        }
        let now = Instant::now();
        match st.since.iter().flatten().map(|t| *t + HOLD_BOUND).min() {
            None => st = held.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            Some(due) if due > now => {
                st = held
                    .wake
                    .wait_timeout(st, due - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Some(_) => {
                let r = redactor.clone().unwrap_or_else(redact::global);
                for (i, name) in STREAMS.into_iter().enumerate() {
                    if st.since[i].is_some_and(|t| t + HOLD_BOUND <= now) {
                        st.since[i] = None;
                        let t = st.carry[i].flush(&r);
                        if !t.is_empty() {
                            // under the lock: the cell's own pieces cannot overtake this one
                            out.stream(name, &t);
                        }
                    }
                }
            }
        }
    }
}

impl Drop for Redacting<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `b` with every string inside masked.
pub fn bundle(r: &Redactor, mut b: MimeBundle) -> MimeBundle {
    if !r.is_empty() {
        b.data.values_mut().for_each(|v| r.redact_json(v));
        b.metadata.values_mut().for_each(|v| r.redact_json(v));
    }
    b
}

/// `e` with every known secret replaced.
fn redact_error(r: &Redactor, e: &mut ExecError) {
    e.ename = r.redact(&e.ename).into_owned();
    e.evalue = r.redact(&e.evalue).into_owned();
    for t in &mut e.traceback {
        *t = r.redact(t).into_owned();
    }
}

/// `o` with every text masked (result, error, pager, next input).
pub fn outcome(r: &Redactor, mut o: ExecOutcome) -> ExecOutcome {
    if r.is_empty() {
        return o;
    }
    o.result = o.result.map(|b| bundle(r, b));
    o.pager = o.pager.map(|b| bundle(r, b));
    if let Some(e) = o.error.as_mut() {
        redact_error(r, e);
    }
    if let Some(n) = o.next_input.as_mut() {
        n.text = r.redact(&n.text).into_owned();
    }
    o
}

impl Publish for Redacting<'_> {
    fn stream(&mut self, name: StreamName, text: &str) {
        let r = self.redactor();
        let held = Arc::clone(&self.held);
        let mut st = held.lock();
        let i = slot(name);
        let shown = st.carry[i].push(&r, text);
        let now_held = st.carry[i].held();
        if now_held == 0 {
            st.since[i] = None;
        } else if text.len() >= now_held || st.since[i].is_none() {
            // what is held now is all new (everything held before went out with this piece):
            // the bound counts from now; else from when its oldest byte was held
            st.since[i] = Some(Instant::now());
        }
        if !shown.is_empty() {
            self.out().stream(name, &shown);
        }
        drop(st);
        if now_held > 0 {
            self.start_flusher();
            held.wake.notify_all();
        }
    }
    fn display(&mut self, b: MimeBundle, display_id: Option<&str>) {
        self.flush_streams();
        let b = bundle(&self.redactor(), b);
        self.out().display(b, display_id);
    }
    fn update_display(&mut self, b: MimeBundle, display_id: &str) {
        self.flush_streams();
        let b = bundle(&self.redactor(), b);
        self.out().update_display(b, display_id);
    }
    fn clear_output(&mut self, wait: bool) {
        self.flush_streams();
        self.out().clear_output(wait);
    }
    fn error(&mut self, e: &ExecError) {
        self.flush_streams();
        let r = self.redactor();
        let mut e = e.clone();
        redact_error(&r, &mut e);
        self.out().error(&e);
    }
    fn execute_result(&mut self, b: MimeBundle) {
        self.flush_streams();
        let b = bundle(&self.redactor(), b);
        self.out().execute_result(b);
    }
    fn input(&mut self, prompt: &str, password: bool) -> Option<String> {
        self.flush_streams();
        let p = self.redactor().redact(prompt).into_owned();
        self.out().input(&p, password)
    }
    fn phase(&mut self, phase: Phase) {
        self.out().phase(phase);
    }
    fn boxed_clone(&self) -> Box<dyn Publish> {
        let inner = match &self.inner {
            Inner::Borrowed(o) => o.boxed_clone(),
            Inner::Owned(o) => o.boxed_clone(),
        };
        Box::new(Redacting::wrap(Inner::Owned(inner), self.redactor.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Collected, Collector};

    const KEY: &str = "sk-REDACTING-UNIT-0123456789";

    fn redacting(c: &mut Collector) -> Redacting<'_> {
        let mut r = Redacting::new(c);
        r.redactor = Some(Arc::new(Redactor::new([KEY.to_string()])));
        r
    }

    #[test]
    fn a_key_printed_in_two_writes_is_masked() {
        let mut c = Collector::default();
        let log = c.clone();
        {
            let mut r = redacting(&mut c);
            r.stream(StreamName::Stdout, &KEY[..10]);
            r.stream(StreamName::Stderr, "err ");
            r.stream(StreamName::Stdout, &format!("{}\n", &KEY[10..]));
            r.finish();
        }
        assert_eq!(log.text(StreamName::Stdout), "***\n");
        assert_eq!(log.text(StreamName::Stderr), "err ");
    }

    #[test]
    fn a_held_tail_goes_before_other_outputs_and_at_the_end() {
        let mut c = Collector::default();
        let log = c.clone();
        {
            let mut r = redacting(&mut c);
            r.stream(StreamName::Stdout, "a sk-");
            r.display(MimeBundle::plain(format!("shown {KEY}")), None);
            r.stream(StreamName::Stdout, "b sk-RE");
        } // dropped: finished
        let items = log.items();
        assert!(
            matches!(&items[..], [Collected::Stream(_, a), Collected::Stream(_, h), Collected::Display(b, _), Collected::Stream(_, c), Collected::Stream(_, d)]
                if a == "a " && h == "sk-" && c == "b " && d == "sk-RE"
                    && b.data["text/plain"] == "shown ***"),
            "{items:?}"
        );
    }

    #[test]
    fn a_held_tail_is_sent_when_nothing_follows() {
        let mut c = Collector::default();
        let log = c.clone();
        let mut r = redacting(&mut c);
        r.stream(StreamName::Stdout, "progress sk-RED");
        assert_eq!(log.text(StreamName::Stdout), "progress ");
        // the flusher sends it after HOLD_BOUND (bounded wait, no timing asserted)
        let end = Instant::now() + Duration::from_secs(20);
        while log.text(StreamName::Stdout) != "progress sk-RED" && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(log.text(StreamName::Stdout), "progress sk-RED");
        // and the stream goes on as before
        r.stream(StreamName::Stdout, "ACTING\n");
        r.finish();
        assert_eq!(log.text(StreamName::Stdout), "progress sk-REDACTING\n");
    }

    #[test]
    fn clones_hold_their_own_streams() {
        let mut c = Collector::default();
        let log = c.clone();
        let r = redacting(&mut c);
        let mut late = r.boxed_clone();
        drop(r);
        late.stream(StreamName::Stdout, &KEY[..5]);
        late.stream(StreamName::Stdout, &KEY[5..]);
        drop(late);
        assert_eq!(log.text(StreamName::Stdout), "***");
    }
}
