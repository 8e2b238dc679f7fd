//! The end of an entry's life, as the kernel learns of it: its *completion* (a consumer
//! committed it) and its *release* (`uidx` passed it, so its slot may be reused).
//!
//! What follows an entry's end — a level-triggered fd re-checked, an edge merged while
//! it was out re-checked, arrivals counted meanwhile published — happens at the first
//! of the two the kernel hears of. The ring releases in order, so waiting for the
//! release let one stopped consumer, holding the oldest entry, keep every kevent
//! committed after it from being reported again, to every consumer (issue 20: the HTTP
//! server's stalled worker). Completions are out of order:
//!
//! * a consumer of the owning process lists the positions it committed in the kernel's
//!   [`Completions`] inbox; whoever next holds the kernel lock handles them (the
//!   committer itself, if the lock is free), and a consumer about to sleep does so first
//!   (W4: a quiet moment leaves nothing unhandled);
//! * a consumer of another process cannot reach the inbox: it rings the doorbell when
//!   the producer asked (as for releases, `ring/src/wake/doorbell.rs`), and the kernel then
//!   looks at the state of every outstanding entry it watches ([`Kernel::scan_completions`]).
//!
//! A completion is believed only if the slot says so: DONE by a consumer (not taken back
//! by the kernel) with the claim stamp of its position. Its release later finds the
//! kevent no longer pending there and does nothing more.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use kevent_ring::{SlotState, Status, RECLAIMED};

use super::tables::Published;
use super::{Kernel, Pending};

/// Positions consumers of the owning process committed, for the kernel to handle at
/// its next turn.
#[derive(Debug, Default)]
pub(crate) struct Completions {
    ranges: Mutex<Vec<Range<u64>>>,
    /// Whether any range waits (read without the inbox's lock).
    pending: AtomicBool,
    /// Whether the kernel watches any outstanding entry (a level kevent, merged news):
    /// without that, committers need not list anything.
    pub(crate) wanted: AtomicBool,
}

impl Completions {
    /// Lists `range` (positions this consumer committed), if the kernel wants them.
    pub(crate) fn push(&self, range: Range<u64>) {
        if range.is_empty() || !self.wanted.load(Ordering::Relaxed) {
            return;
        }
        self.ranges
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(range);
        self.pending.store(true, Ordering::Release);
    }

    /// Whether ranges wait.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }
}

impl Kernel {
    /// Handles the completions listed in the inbox (see the module docs). The inbox's
    /// lock is held meanwhile (committers wait a moment; its memory is kept for reuse).
    pub(crate) fn drain_completions(&mut self) {
        if !self.completions.is_pending() {
            return;
        }
        let completions = self.completions.clone();
        let mut ranges = completions.ranges.lock().unwrap_or_else(|e| e.into_inner());
        completions.pending.store(false, Ordering::Relaxed);
        for range in ranges.drain(..) {
            for pos in range {
                self.note_completion(pos);
            }
        }
    }

    /// Looks at every outstanding entry the kernel watches and handles those a consumer
    /// has completed: after a doorbell, which a consumer of another process rings
    /// without saying which entries it committed. O(outstanding entries).
    pub(crate) fn scan_completions(&mut self) {
        if self.watch == 0 {
            return;
        }
        let done: Vec<u64> = self
            .side
            .positions()
            .filter(|&pos| {
                self.ring()
                    .slot_state(pos)
                    .is_some_and(|st| st.status == Status::Done)
            })
            .collect();
        for pos in done {
            self.note_completion(pos);
        }
    }

    /// The entry at `pos`, still outstanding, was completed by a consumer: if the slot
    /// says so, its kevent's entry is over (module docs).
    pub(super) fn note_completion(&mut self, pos: u64) {
        let Some(&rec) = self.side.get(pos) else {
            return; // released already
        };
        let cap = self.ring().capacity();
        let done_by_consumer = self.ring().slot_state(pos).is_some_and(|st| {
            st.status == Status::Done
                && st.owner != 0
                && st.owner != RECLAIMED
                && st == SlotState::new(pos / cap, st.owner, Status::Done)
        });
        if done_by_consumer && self.ring().was_claimed(pos) {
            self.end_entry(pos, rec, true);
        }
    }

    /// Marks the kevents whose entries were released below `upto` idle, and queues what
    /// must follow (a level re-check, or a new entry for arrivals merged meanwhile)
    /// without publishing. Called by `service`, and by `try_push` before it reuses a slot:
    /// the slot's side-table record (and claim stamp) must be read before it is
    /// overwritten.
    pub(super) fn note_releases(&mut self, upto: u64) {
        while self.released < upto {
            let pos = self.released;
            self.released += 1;
            let Some(rec) = self.side.release(pos) else {
                continue;
            };
            let claimed = self.ring().was_claimed(pos);
            self.end_entry(pos, rec, claimed);
        }
    }

    /// The entry `rec` published at `pos` is over — completed (`claimed`) or released
    /// without a claim. If it is still its kevent's pending entry, the kevent is idle
    /// again and what must follow is queued.
    fn end_entry(&mut self, pos: u64, rec: Published, claimed: bool) {
        let idx = rec.idx();
        let Some(reg) = self.regs.get_mut(idx).and_then(Option::as_mut) else {
            return;
        };
        if reg.gen != rec.gen || reg.pending != Pending::InRing(pos) {
            return; // handled at its completion, or a newer entry is out
        }
        reg.pending = Pending::Idle;
        let reg = if std::mem::take(&mut reg.paused) {
            // A timer held back while its entry was out (`timers.rs`): armed again, it
            // fires at once if its deadline passed meanwhile, counting every period.
            self.resume_timer(idx);
            let Some(reg) = self.regs.get_mut(idx).and_then(Option::as_mut) else {
                return;
            };
            reg
        } else {
            reg
        };
        let (is_fd, recheck, news, disabled, watched) = (
            reg.is_fd(),
            reg.rechecked_at_end(),
            reg.has_news(),
            reg.disabled,
            reg.watched,
        );
        if watched {
            self.unwatch(idx);
        }
        if !claimed {
            // Released without a claim: a stray write turned the READY entry into DONE
            // (no step of the protocol does). Deliver it again, flagged, rather than lose
            // it silently (ARCHITECTURE.md §3, "Untrusted memory").
            if let Some(reg) = self.regs.get_mut(idx).and_then(Option::as_mut) {
                reg.redeliver = Some(Box::new(rec.entry));
            }
            let stats = self.producer.ring().stats();
            stats.unclaimed.fetch_add(1, Ordering::Relaxed);
            stats.redelivered.fetch_add(1, Ordering::Relaxed);
            self.republish.push(idx);
            return;
        }
        if disabled {
            return;
        }
        if is_fd && (recheck || news) {
            // Level: still ready? Edge with an edge merged meanwhile: still unread? (A
            // level kevent epoll re-checks itself, `Arm::Level`, needs neither.)
            self.recheck.push(idx);
        } else if news {
            self.republish.push(idx);
        }
    }
}
