//! The wake-up handshake between a loop about to sleep and whoever gives it work: QEMU's
//! `notify_me` / `notified` pair (`aio_poll`, `aio_notify`, `aio_notify_accept` in
//! `util/async.c` and `util/aio-posix.c`), with a user kevent as the doorbell.
//!
//! ```text
//!  loop (before a wait with a timeout)      waker (any thread)
//!    notify_me += 1                           publish the work (list push, flag, heap)
//!    fence(SeqCst)                            if notified.swap(true) { return }
//!    if notified { timeout = 0 }              fence(SeqCst)
//!    queue.wait(timeout)                      if notify_me > 0 { queue.ready(wake kevent) }
//!    notify_me -= 1
//!    notified.swap(false)   (accept)
//!    run the work
//! ```
//!
//! The fences order each side's store before its load, so the two cannot both miss: a
//! loop that read `notified == false` and sleeps is seen by the waker's `notify_me` read.
//! Only the waker that flips `notified` looks further; a later one finds it set and
//! returns, and its work is seen because the loop's accepting swap reads its write
//! (AcqRel on both swaps). `notified` stays set until a poll accepts it, so a loop that is
//! awake when the work arrives will not sleep past it.

use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::Weak;

use super::stats::{bump, Counters};
use crate::{Error, Queue, Source};

/// The wake-up side of a loop, reachable from any thread through its handles.
pub(super) struct Waker {
    /// Polls of this loop that are about to sleep or asleep (QEMU's `notify_me`).
    notify_me: AtomicU32,
    /// Work was given since the last accept (QEMU's `notified`).
    notified: AtomicBool,
    /// The queue, weakly: a bottom-half handle must not keep a dropped loop's queue (and
    /// its producer thread) alive.
    queue: Weak<Queue>,
    /// The loop's own user kevent.
    source: Source,
}

impl Waker {
    pub(super) fn new(queue: Weak<Queue>, source: Source) -> Waker {
        Waker {
            notify_me: AtomicU32::new(0),
            notified: AtomicBool::new(false),
            queue,
            source,
        }
    }

    /// The user kevent that wakes the loop.
    pub(super) fn source(&self) -> Source {
        self.source
    }

    /// `aio_notify`: the caller has published work; make sure a poll sees it. Returns
    /// an error only if a sleeping loop could not be woken (its queue is gone).
    pub(super) fn notify(&self, counters: &Counters) -> Result<(), Error> {
        // AcqRel: Release publishes the caller's work to the poll that accepts (reads
        // this write); Acquire orders the check below after it.
        if self.notified.swap(true, Ordering::AcqRel) {
            return Ok(()); // set already: whoever set it, or the loop, takes care of it
        }
        // SeqCst fence: pairs with the one in `sleep_begin` (see the module docs).
        fence(Ordering::SeqCst);
        if self.notify_me.load(Ordering::Relaxed) == 0 {
            return Ok(()); // awake: it checks `notified` before it sleeps
        }
        bump(&counters.wakeups);
        match self.queue.upgrade() {
            Some(queue) => queue.ready(&self.source),
            None => Ok(()), // the loop is gone; nobody to wake
        }
    }

    /// A poll is about to wait with a timeout. Returns `false` if work was given since
    /// the last accept: then it must not sleep (wait with a zero timeout instead). Call
    /// [`sleep_end`](Waker::sleep_end) after the wait either way.
    pub(super) fn sleep_begin(&self) -> bool {
        self.notify_me.fetch_add(1, Ordering::Relaxed);
        // SeqCst fence: our notify_me store before our notified load (module docs).
        fence(Ordering::SeqCst);
        !self.notified.load(Ordering::Relaxed)
    }

    /// The wait of a [`sleep_begin`](Waker::sleep_begin) is over.
    pub(super) fn sleep_end(&self) {
        // Release: nothing after the wait moves before the loop stops counting as asleep
        // (a waker seeing 0 then relies on the loop's next check of `notified`).
        self.notify_me.fetch_sub(1, Ordering::Release);
    }

    /// `aio_notify_accept`: the poll is about to look at its work lists; notifications
    /// from now on are for the next poll.
    pub(super) fn accept(&self) {
        // AcqRel: reading a waker's `true` (Acquire) makes its published work visible
        // to the list reads that follow.
        self.notified.swap(false, Ordering::AcqRel);
    }

    /// Whether work was given since the last accept.
    pub(super) fn is_notified(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }
}
