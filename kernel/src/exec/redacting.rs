//! The output edge of the one redaction layer (`carbon_magics::redact`): every stream, display,
//! update, input prompt and final outcome of a cell goes through [`Redacting`], so no secret the
//! kernel knows reaches a front-end, whatever printed it (user code, a runtime, a magic, a
//! server's echo).

use crate::runtime::{ExecOutcome, Phase, Publish, StreamName};
use carbon_magics::MimeBundle;
use carbon_magics::redact::{self, Redactor};

/// A [`Publish`] that masks secrets before passing outputs on.
pub struct Redacting<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Borrowed(&'a mut dyn Publish),
    Owned(Box<dyn Publish>),
}

impl<'a> Redacting<'a> {
    /// Wraps `out`.
    pub fn new(out: &'a mut dyn Publish) -> Self {
        Redacting {
            inner: Inner::Borrowed(out),
        }
    }

    fn out(&mut self) -> &mut dyn Publish {
        match &mut self.inner {
            Inner::Borrowed(o) => &mut **o,
            Inner::Owned(o) => &mut **o,
        }
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

/// `o` with every text masked (result, error, pager).
pub fn outcome(r: &Redactor, mut o: ExecOutcome) -> ExecOutcome {
    if r.is_empty() {
        return o;
    }
    o.result = o.result.map(|b| bundle(r, b));
    o.pager = o.pager.map(|b| bundle(r, b));
    if let Some(e) = o.error.as_mut() {
        e.ename = r.redact(&e.ename).into_owned();
        e.evalue = r.redact(&e.evalue).into_owned();
        for t in &mut e.traceback {
            *t = r.redact(t).into_owned();
        }
    }
    o
}

impl Publish for Redacting<'_> {
    fn stream(&mut self, name: StreamName, text: &str) {
        let t = redact::redact(text);
        self.out().stream(name, &t);
    }
    fn display(&mut self, b: MimeBundle, display_id: Option<&str>) {
        let b = bundle(&redact::global(), b);
        self.out().display(b, display_id);
    }
    fn update_display(&mut self, b: MimeBundle, display_id: &str) {
        let b = bundle(&redact::global(), b);
        self.out().update_display(b, display_id);
    }
    fn clear_output(&mut self, wait: bool) {
        self.out().clear_output(wait);
    }
    fn input(&mut self, prompt: &str, password: bool) -> Option<String> {
        let p = redact::redact(prompt);
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
        Box::new(Redacting {
            inner: Inner::Owned(inner),
        })
    }
}
