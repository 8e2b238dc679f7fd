//! External sources: what a nested poll or a drained section leaves alone, and keeps for
//! after (QEMU's `is_external`, `aio_disable_external`, `aio_enable_external`).
//!
//! In QEMU a *drained section* (`bdrv_drained_begin`/`end`) stops new guest requests —
//! handlers registered as external — from being dispatched while a block device is
//! quiesced; the same holds here inside a nested [`Loop::poll`].
//!
//! **Keeping, not losing.** An event of an external handler taken while external sources
//! are blocked is remembered here (one per handler: a second one merges into it) and the
//! handler's kevent is removed from the queue until it is dispatched. Why both: the event
//! may be edge-triggered news that the ring will not repeat, and a level-triggered fd
//! that stays readable would otherwise be reported again after every commit and keep a
//! blocking poll spinning. When the last nested poll or drained section ends, the next
//! poll dispatches the kept events in the order they were kept, and then registers the
//! kevents again — a still-ready fd is queued at once by that registration, so data the
//! handler left unread is reported as usual. A kept notifier stays set and is run then.
//!
//! Keeping and muting happen under the kept list's lock, and taking the list for dispatch
//! too, so an unmute cannot overtake the mute of an event kept after it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::context::Loop;
use super::lock;
use super::notifier::NotifierInner;
use super::stats::bump;
use crate::{Event, Token};

/// An event kept for after.
pub(super) enum Kept {
    /// An fd handler's event: its readiness, merged over the events kept.
    Fd {
        token: Token,
        readable: bool,
        writable: bool,
    },
    /// A notifier (its flag is the state).
    Notifier(Arc<NotifierInner>),
}

/// The loop's external-source state.
#[derive(Default)]
pub(super) struct External {
    /// Open drained sections plus threads in a nested poll.
    blocked: AtomicU32,
    kept: Mutex<Vec<Kept>>,
    /// `kept` is not empty (read without the lock by every poll).
    has_kept: AtomicBool,
}

impl External {
    /// Whether external sources must not be dispatched now.
    pub(super) fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Acquire) > 0
    }

    /// Whether kept events are waiting and may be dispatched now.
    pub(super) fn has_runnable(&self) -> bool {
        !self.is_blocked() && self.has_kept.load(Ordering::Acquire)
    }

    pub(super) fn block(&self) {
        self.blocked.fetch_add(1, Ordering::AcqRel);
    }

    /// Returns whether that made external sources runnable with kept events waiting.
    pub(super) fn unblock(&self) -> bool {
        let dec = |b: u32| b.checked_sub(1);
        match self
            .blocked
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, dec)
        {
            Ok(before) => before == 1 && self.has_kept.load(Ordering::Acquire),
            Err(_) => {
                debug_assert!(false, "drained_end without drained_begin");
                false
            }
        }
    }

    /// Takes the kept events, oldest first.
    fn take(&self) -> Vec<Kept> {
        let mut kept = lock(&self.kept);
        self.has_kept.store(false, Ordering::Release);
        std::mem::take(&mut *kept)
    }

    /// Forgets everything kept (the loop is dropped).
    pub(super) fn clear(&self) {
        drop(self.take());
    }
}

impl Loop {
    /// Keeps `ev` of the external handler it names, and takes its kevent off the queue.
    pub(super) fn keep_fd(&self, ev: &Event) {
        bump(&self.shared.counters.kept);
        let token = ev.token();
        let mut kept = lock(&self.external.kept);
        let merged = kept.iter_mut().any(|k| match k {
            Kept::Fd {
                token: t,
                readable,
                writable,
            } if *t == token => {
                *readable |= ev.is_readable();
                *writable |= ev.is_writable();
                true
            }
            _ => false,
        });
        if !merged {
            kept.push(Kept::Fd {
                token,
                readable: ev.is_readable(),
                writable: ev.is_writable(),
            });
        }
        self.external.has_kept.store(true, Ordering::Release);
        if let Err(e) = self.handlers.mute(&self.queue, token) {
            self.shared.record(e);
        }
    }

    /// Keeps a set notifier of an external source.
    pub(super) fn keep_notifier(&self, n: &Arc<NotifierInner>) {
        bump(&self.shared.counters.kept);
        let mut kept = lock(&self.external.kept);
        if !n.kept.swap(true, Ordering::AcqRel) {
            kept.push(Kept::Notifier(n.clone()));
        }
        self.external.has_kept.store(true, Ordering::Release);
    }

    /// Dispatches the kept events if external sources may run now. Returns whether a
    /// callback ran.
    pub(super) fn run_kept(&self) -> bool {
        if !self.external.has_runnable() {
            return false;
        }
        let mut progress = false;
        for kept in self.external.take() {
            match kept {
                Kept::Fd {
                    token,
                    readable,
                    writable,
                } => {
                    progress |= self.dispatch_fd(token, readable, writable);
                    if let Err(e) = self.handlers.unmute(&self.queue, token) {
                        self.shared.record(e);
                    }
                }
                Kept::Notifier(n) => {
                    n.kept.store(false, Ordering::Release);
                    progress |= self.run_notifier(&n);
                }
            }
        }
        progress
    }

    /// `aio_disable_external` (`bdrv_drained_begin`): from now until the matching
    /// [`drained_end`](Loop::drained_end), handlers and notifiers marked external are not
    /// dispatched; their events are kept, and dispatched after. Sections nest, and may be
    /// opened from any thread.
    #[doc(alias = "aio_disable_external")]
    pub fn drained_begin(&self) {
        self.external.block();
    }

    /// `aio_enable_external` (`bdrv_drained_end`): closes a section opened by
    /// [`drained_begin`](Loop::drained_begin). When the last one closes, the loop is
    /// notified and its next poll dispatches the kept events.
    ///
    /// A call without a matching `drained_begin` is a bug: a debug build panics, a
    /// release build ignores it.
    #[doc(alias = "aio_enable_external")]
    pub fn drained_end(&self) {
        if self.external.unblock() {
            self.shared.notify();
        }
    }

    /// A drained section that ends when the guard is dropped.
    pub fn drained(&self) -> Drained<'_> {
        self.drained_begin();
        Drained { lp: self }
    }

    /// Whether external sources are dispatched now: no drained section is open and no
    /// thread is in a nested poll of this loop.
    pub fn is_external_enabled(&self) -> bool {
        !self.external.is_blocked()
    }
}

/// A drained section of a [`Loop`] (see [`Loop::drained_begin`]), from [`Loop::drained`];
/// it ends when this guard is dropped.
#[must_use = "the drained section ends when the guard is dropped"]
#[derive(Debug)]
pub struct Drained<'a> {
    lp: &'a Loop,
}

impl Drop for Drained<'_> {
    fn drop(&mut self) {
        self.lp.drained_end();
    }
}
