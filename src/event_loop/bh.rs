//! [`Bh`]: bottom halves — callbacks scheduled from any thread to run in the loop's next
//! iteration (QEMU's `QEMUBH`, `util/async.c`).
//!
//! The flag word and its transitions are QEMU's: scheduling is a `fetch_or` of
//! `PENDING | SCHEDULED` (plus `IDLE`); the scheduler that finds `PENDING` clear pushes
//! the bottom half onto the loop's lock-free list (see the module docs of
//! `event_loop`), so it is queued at most once however often it is scheduled; the loop
//! clears `PENDING | SCHEDULED | IDLE` with one `fetch_and` just before it would run it,
//! and runs it only if `SCHEDULED` was set and `DELETED` was not.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use super::context::{Loop, Shared};
use super::lock;
use super::poll::Work;
use super::stats::bump;

/// Queued on the loop's list, waiting to be taken.
const PENDING: u8 = 1 << 0;
/// Run the callback when taken.
const SCHEDULED: u8 = 1 << 1;
/// Never run again.
const DELETED: u8 = 1 << 2;
/// Made by [`Loop::schedule_oneshot`]: runs once, then goes.
const ONESHOT: u8 = 1 << 3;
/// Scheduled with [`Bh::schedule_idle`]: not progress, and no zero timeout.
const IDLE: u8 = 1 << 4;

/// The callback of a bottom half made by [`Loop::bh`].
pub(super) type BhFn = Arc<dyn Fn(&Loop, &Bh) + Send + Sync>;

/// A bottom half's callback.
pub(super) enum BhCallback {
    /// A bottom half of [`Loop::bh`]: runs each time it is scheduled.
    Many(BhFn),
    /// A one-shot of [`Loop::schedule_oneshot`].
    Once(Box<dyn FnOnce(&Loop) + Send>),
}

pub(super) struct BhInner {
    flags: AtomicU8,
    /// Taken out by [`Bh::delete`] (which drops the closure, and what it captured, at
    /// once) and by the run of a one-shot.
    callback: Mutex<Option<BhCallback>>,
    shared: Arc<Shared>,
}

/// A bottom half: a callback the loop runs at its next iteration once scheduled, from
/// any thread, without a lock or (unless the loop sleeps) a system call.
///
/// Made by [`Loop::bh`]. Scheduling it twice before it runs runs it once; a bottom half
/// that schedules itself from its callback runs again at the next iteration. A `Bh` is a
/// cheap handle (`Clone`, `Send`, `Sync`); the callback lives until [`delete`](Bh::delete)
/// or until every handle and the loop's list let go of it. Its callback gets the loop
/// and the bottom half itself, so it need not capture a handle to reschedule (a captured
/// handle is a reference cycle that only `delete` breaks).
///
/// ```
/// # use kevent::Loop;
/// # use std::sync::Arc;
/// # use std::sync::atomic::{AtomicU32, Ordering};
/// let lp = Loop::new()?;
/// let runs = Arc::new(AtomicU32::new(0));
/// let r = runs.clone();
/// let bh = lp.bh(move |_lp, _bh| {
///     r.fetch_add(1, Ordering::Relaxed);
/// });
/// bh.schedule();
/// bh.schedule(); // still pending: runs once
/// assert!(lp.poll(true));
/// assert_eq!(runs.load(Ordering::Relaxed), 1);
/// assert!(!lp.poll(false));
/// bh.delete();
/// # Ok::<(), kevent::Error>(())
/// ```
#[derive(Clone)]
pub struct Bh {
    inner: Arc<BhInner>,
}

impl Bh {
    pub(super) fn new(shared: &Arc<Shared>, callback: BhCallback) -> Bh {
        Bh {
            inner: Arc::new(BhInner {
                flags: AtomicU8::new(0),
                callback: Mutex::new(Some(callback)),
                shared: shared.clone(),
            }),
        }
    }

    /// Schedules a one-shot (see [`Loop::schedule_oneshot`]).
    pub(super) fn oneshot(shared: &Arc<Shared>, f: Box<dyn FnOnce(&Loop) + Send>) {
        let bh = Bh::new(shared, BhCallback::Once(f));
        bh.inner.enqueue(SCHEDULED | ONESHOT);
    }

    /// `qemu_bh_schedule`: runs the callback at the loop's next iteration (once, however
    /// often it is scheduled before that). Callable from any thread; wakes the loop only
    /// if it sleeps.
    #[doc(alias = "qemu_bh_schedule")]
    pub fn schedule(&self) {
        self.inner.enqueue(SCHEDULED);
    }

    /// `qemu_bh_schedule_idle`: as [`schedule`](Bh::schedule), but its run does not count
    /// as progress of [`Loop::poll`] — for work that may wait: while only idle bottom
    /// halves are queued, [`Loop::compute_timeout`] is at most 10 ms instead of zero.
    #[doc(alias = "qemu_bh_schedule_idle")]
    pub fn schedule_idle(&self) {
        self.inner.enqueue(SCHEDULED | IDLE);
    }

    /// `qemu_bh_cancel`: unschedules it if it has not run yet (it stays usable).
    #[doc(alias = "qemu_bh_cancel")]
    pub fn cancel(&self) {
        // Relaxed: nothing is published by cancelling; the loop's fetch_and sees it or
        // runs the callback, both allowed for a cancel racing with the run.
        self.inner.flags.fetch_and(!SCHEDULED, Ordering::Relaxed);
    }

    /// `qemu_bh_delete`: never runs again, and its callback is dropped now (or, if it is
    /// running — deleting itself — as soon as it returns). Safe from any thread and from
    /// any callback; scheduling a deleted bottom half does nothing.
    #[doc(alias = "qemu_bh_delete")]
    pub fn delete(&self) {
        self.inner.flags.fetch_or(DELETED, Ordering::AcqRel);
        let callback = lock(&self.inner.callback).take();
        drop(callback); // outside the lock: the closure's captures may drop other handles
    }

    /// Whether it is scheduled and has not run yet.
    pub fn is_scheduled(&self) -> bool {
        let flags = self.inner.flags.load(Ordering::Relaxed);
        flags & (SCHEDULED | DELETED) == SCHEDULED
    }

    /// Whether it was deleted.
    pub fn is_deleted(&self) -> bool {
        self.inner.flags.load(Ordering::Relaxed) & DELETED != 0
    }
}

impl BhInner {
    /// `aio_bh_enqueue`: sets `new` (and `PENDING`); the caller that set `PENDING` queues
    /// it; then notifies the loop.
    fn enqueue(self: &Arc<Self>, new: u8) {
        // AcqRel: pairs with the fetch_and of `take_flags`: a scheduler that sees PENDING
        // set knows the loop has not taken the flags yet and will read this write.
        let old = self.flags.fetch_or(PENDING | new, Ordering::AcqRel);
        if old & DELETED != 0 {
            return;
        }
        if new & IDLE != 0 && old & IDLE == 0 {
            self.shared.idle_bhs.fetch_add(1, Ordering::Relaxed);
        }
        if old & PENDING == 0 && !self.shared.push(Work::Bh(self.clone())) {
            return; // the loop is gone
        }
        self.shared.notify();
    }

    /// `aio_bh_dequeue` and `aio_bh_call`: takes the flags and runs the callback if it was
    /// scheduled and not deleted. Returns whether that counts as progress.
    pub(super) fn run(self: &Arc<Self>, lp: &Loop) -> bool {
        // AcqRel: see `enqueue`; Acquire also makes the scheduler's writes before
        // `schedule()` visible to the callback when it did not push (PENDING was set).
        let flags = self
            .flags
            .fetch_and(!(PENDING | SCHEDULED | IDLE), Ordering::AcqRel);
        if flags & IDLE != 0 {
            self.shared.idle_bhs.fetch_sub(1, Ordering::Relaxed);
        }
        if flags & (SCHEDULED | DELETED) != SCHEDULED {
            return false;
        }
        let mut guard = lock(&self.callback);
        let callback = match guard.as_ref() {
            Some(BhCallback::Many(f)) => Some(BhCallback::Many(f.clone())),
            Some(BhCallback::Once(_)) => guard.take(),
            None => None,
        };
        drop(guard); // never held while the callback runs: it may delete itself
        match callback {
            Some(BhCallback::Many(f)) => f(
                lp,
                &Bh {
                    inner: self.clone(),
                },
            ),
            Some(BhCallback::Once(f)) => f(lp),
            None => return false,
        }
        bump(&self.shared.counters.bh_runs);
        flags & IDLE == 0
    }
}

impl fmt::Debug for Bh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = self.inner.flags.load(Ordering::Relaxed);
        f.debug_struct("Bh")
            .field("scheduled", &(flags & SCHEDULED != 0))
            .field("pending", &(flags & PENDING != 0))
            .field("idle", &(flags & IDLE != 0))
            .field("deleted", &(flags & DELETED != 0))
            .field("oneshot", &(flags & ONESHOT != 0))
            .finish()
    }
}
