//! Output of a runtime's background threads between cells.
//!
//! ipykernel publishes a thread's output at once while the kernel is idle, under the last cell's
//! parent (checked with ipykernel 7.4: a thread started by a cell prints 1 s later, idle: under
//! that cell at 1.0 s; while another cell runs: under the running one). Each runtime does the
//! same with an [`Idle`]: while a cell runs, its reader hands every event to the cell's pump;
//! between cells, it publishes what it can through a publisher of the last cell and keeps the
//! rest (a worker's end, replies) for the next pump.

use super::Publish;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where output goes between cells: a publisher of the last cell, or nowhere (a pump reads).
#[derive(Default)]
pub(crate) struct Idle {
    /// No pump is reading: events are offered to `out`.
    active: AtomicBool,
    /// A publisher of the last cell.
    out: Mutex<Option<Box<dyn Publish>>>,
}

impl Idle {
    /// A pump starts: events go to it from now on.
    pub(crate) fn pause(&self) {
        self.active.store(false, Ordering::SeqCst);
    }

    /// The pump is done; `out` (the cell's publisher) receives what comes until the next one
    /// (`None` keeps the last cell's).
    pub(crate) fn resume(&self, out: Option<Box<dyn Publish>>) {
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if out.is_some() {
            *g = out;
        }
        self.active.store(g.is_some(), Ordering::SeqCst);
    }

    /// Takes the last cell's publisher (for a pump between cells); give it back with
    /// [`Idle::resume`].
    pub(crate) fn take(&self) -> Option<Box<dyn Publish>> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Between cells, `publish` gets `ev` with the last cell's publisher; it returns what it did
    /// not publish. While a pump reads, `ev` comes back as is.
    pub(crate) fn offer<E>(
        &self,
        ev: E,
        publish: impl FnOnce(&mut dyn Publish, E) -> Option<E>,
    ) -> Option<E> {
        if !self.active.load(Ordering::SeqCst) {
            return Some(ev);
        }
        let mut g = self.out.lock().unwrap_or_else(|e| e.into_inner());
        match g.as_mut() {
            Some(o) => publish(&mut **o, ev),
            None => Some(ev),
        }
    }
}

/// A router thread's loop: offers each event of `raw` to `idle` ([`Idle::offer`] with
/// `publish`) and passes the rest on with `forward` (false: the pump is gone, stop).
pub(crate) fn route<E>(
    raw: impl IntoIterator<Item = E>,
    idle: &Idle,
    mut publish: impl FnMut(&mut dyn Publish, E) -> Option<E>,
    mut forward: impl FnMut(E) -> bool,
) {
    for ev in raw {
        if let Some(ev) = idle.offer(ev, &mut publish)
            && !forward(ev)
        {
            return;
        }
    }
}
