//! The wake-up handshake between a loop about to sleep and whoever gives it work: QEMU's
//! `notify_me` / `notified` pair (`aio_poll`, `aio_notify`, `aio_notify_accept` in
//! `util/async.c` and `util/aio-posix.c`), with the queue's explicit wake-up as the
//! doorbell.
//!
//! The handshake itself is [`kevent_ring::NotifyMe`] (its docs draw it; the loom models
//! in `ring/tests/loom_loop.rs` check it): a loop that is awake costs a waker one atomic
//! swap and a fence, no system call. The wake-up of a sleeping loop is the queue's
//! explicit wake-up (`kevent_syscalls::Instance::wake_one`: a counter moved, one sleeper
//! woken — no kernel lock, no entry in the ring to publish, claim and commit, as QEMU's
//! is one eventfd write). It is not remembered for a wait that begins later, so a poll
//! reads the count *before* it announces its sleep and waits for a change of it
//! (`Queue::wait_since`): a waker that saw the announcement moved the count after that
//! read, and the wait returns at once. The loop is its queue's only consumer, so the one
//! sleeper woken is a thread polling this loop.

use std::sync::Weak;

use kevent_ring::NotifyMe;

use super::stats::{bump, Counters};
use crate::{Error, Queue};

/// The wake-up side of a loop, reachable from any thread through its handles.
pub(super) struct Waker {
    /// `notify_me` / `notified`.
    handshake: NotifyMe,
    /// The queue, weakly: a bottom-half handle must not keep a dropped loop's queue (and
    /// its producer thread) alive.
    queue: Weak<Queue>,
}

impl Waker {
    pub(super) fn new(queue: Weak<Queue>) -> Waker {
        Waker {
            handshake: NotifyMe::new(),
            queue,
        }
    }

    /// `aio_notify`: the caller has published work; make sure a poll sees it. Returns
    /// an error only if a sleeping loop could not be woken (its queue is gone).
    pub(super) fn notify(&self, counters: &Counters) -> Result<(), Error> {
        if !self.handshake.notify() {
            return Ok(()); // awake, or another waker takes care of it
        }
        bump(&counters.wakeups);
        match self.queue.upgrade() {
            Some(queue) => queue.wake_one(),
            None => Ok(()), // the loop is gone; nobody to wake
        }
    }

    /// A poll is about to wait with a timeout. Returns `false` if work was given since
    /// the last accept: then it must not sleep (wait with a zero timeout instead). Call
    /// [`sleep_end`](Waker::sleep_end) after the wait either way.
    pub(super) fn sleep_begin(&self) -> bool {
        self.handshake.sleep_begin()
    }

    /// The wait of a [`sleep_begin`](Waker::sleep_begin) is over.
    pub(super) fn sleep_end(&self) {
        self.handshake.sleep_end();
    }

    /// `aio_notify_accept`: the poll is about to look at its work lists; notifications
    /// from now on are for the next poll.
    pub(super) fn accept(&self) {
        self.handshake.accept();
    }

    /// Whether work was given since the last accept.
    pub(super) fn is_notified(&self) -> bool {
        self.handshake.is_notified()
    }
}
