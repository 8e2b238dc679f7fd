//! [`NotifyMe`]: the sleep/notify handshake of an event loop that keeps its work outside
//! the ring — QEMU's `notify_me` / `notified` pair (`aio_poll`, `aio_notify`,
//! `aio_notify_accept`). `kevent::Loop` uses it for bottom halves, notifiers and timers;
//! it lives here, beside the ring's own handshakes, so that the loom models check it as
//! compiled (`ring/tests/loom_loop.rs`, section k).
//!
//! ```text
//!  loop (before a wait with a timeout)      waker (any thread)
//!    notify_me += 1                           publish the work (list push, flag, heap)
//!    fence(SeqCst)                            if notified.swap(true) { return }
//!    if notified { timeout = 0 }              fence(SeqCst)
//!    wait(timeout)                            if notify_me > 0 { wake the loop }
//!    notify_me -= 1
//!    notified.swap(false)   (accept)
//!    run the work
//! ```
//!
//! The fences order each side's store before its load, so the two cannot both miss: a
//! loop that read `notified == false` and sleeps is seen by the waker's `notify_me`
//! read. Only the waker that flips `notified` looks further; a later one finds it set and
//! returns, and its work is seen because the loop's accepting swap reads its write
//! (AcqRel on both swaps). `notified` stays set until a poll accepts it, so a loop that
//! is awake when the work arrives will not sleep past it. The wake-up itself must be
//! *remembered* until the loop waits (a kevent made ready, an eventfd write; not a bare
//! futex wake), since it may come between the loop's check and its wait.

use crate::sync::{fence, AtomicBool, AtomicU32, Ordering};

/// The handshake between a loop about to sleep and whoever gives it work (module docs).
#[derive(Debug)]
pub struct NotifyMe {
    /// Polls of the loop that are about to sleep or asleep (QEMU's `notify_me`).
    notify_me: AtomicU32,
    /// Work was given since the last accept (QEMU's `notified`).
    notified: AtomicBool,
}

impl Default for NotifyMe {
    fn default() -> NotifyMe {
        NotifyMe::new()
    }
}

impl NotifyMe {
    /// A handshake with nobody asleep and nothing notified.
    pub fn new() -> NotifyMe {
        NotifyMe {
            notify_me: AtomicU32::new(0),
            notified: AtomicBool::new(false),
        }
    }

    /// `aio_notify`, called after publishing work: whether the caller must wake the loop
    /// (true for at most one caller per accept, and only if a poll sleeps or is about to).
    pub fn notify(&self) -> bool {
        // AcqRel: Release publishes the caller's work to the poll that accepts (reads
        // this write); Acquire orders the check below after it.
        if self.notified.swap(true, Ordering::AcqRel) {
            return false; // set already: whoever set it, or the loop, takes care of it
        }
        // SeqCst fence: pairs with the one in `sleep_begin` (module docs).
        fence(Ordering::SeqCst);
        self.notify_me.load(Ordering::Relaxed) != 0
    }

    /// A poll is about to wait with a timeout. Returns `false` if work was given since
    /// the last accept: then it must not sleep (wait with a zero timeout instead). Call
    /// [`sleep_end`](NotifyMe::sleep_end) after the wait either way.
    pub fn sleep_begin(&self) -> bool {
        self.notify_me.fetch_add(1, Ordering::Relaxed);
        // SeqCst fence: our notify_me store before our notified load (module docs).
        fence(Ordering::SeqCst);
        !self.notified.load(Ordering::Relaxed)
    }

    /// The wait of a [`sleep_begin`](NotifyMe::sleep_begin) is over.
    pub fn sleep_end(&self) {
        // Release: nothing after the wait moves before the loop stops counting as asleep
        // (a waker seeing 0 then relies on the loop's next check of `notified`).
        self.notify_me.fetch_sub(1, Ordering::Release);
    }

    /// `aio_notify_accept`: the poll is about to look at its work; notifications from
    /// now on are for the next poll.
    pub fn accept(&self) {
        // AcqRel: reading a waker's `true` (Acquire) makes its published work visible to
        // the reads that follow.
        self.notified.swap(false, Ordering::AcqRel);
    }

    /// Whether work was given since the last accept.
    pub fn is_notified(&self) -> bool {
        self.notified.load(Ordering::Acquire)
    }
}
