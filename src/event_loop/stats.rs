//! [`LoopStats`]: what a loop did, counted — what a benchmark or a test reads to see
//! whether the loop slept, was woken, or polled its way to the work.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a [`Loop`](crate::Loop), from [`Loop::stats`](crate::Loop::stats).
///
/// Each counter only grows (except [`poll_ns`](LoopStats::poll_ns), the current adaptive
/// polling time); take two snapshots and subtract to measure an interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopStats {
    /// Calls of [`Loop::poll`](crate::Loop::poll) (nested ones included).
    pub polls: u64,
    /// Polls that announced themselves asleep (`notify_me`) and waited on the queue with
    /// a non-zero timeout.
    pub sleeps: u64,
    /// Wake-ups sent: a waker found the loop asleep and woke it (the queue's explicit
    /// wake-up: the only system call a bottom half, notifier or timer costs).
    pub wakeups: u64,
    /// Bottom-half callbacks run (one-shots included).
    pub bh_runs: u64,
    /// Event-notifier handlers run.
    pub notifier_runs: u64,
    /// Fd handler callbacks run (read and write counted apart).
    pub fd_callbacks: u64,
    /// Timer callbacks run.
    pub timers_fired: u64,
    /// Events of external sources kept for later (nested poll or drained section).
    pub kept: u64,
    /// Busy-polling rounds that found work before their time was up.
    pub busy_poll_hits: u64,
    /// Busy-polling rounds that found nothing and went on to wait.
    pub busy_poll_misses: u64,
    /// Errors of the queue met while polling or waking (see
    /// [`Loop::take_error`](crate::Loop::take_error)).
    pub errors: u64,
    /// The current adaptive polling time in nanoseconds (0: not polling).
    pub poll_ns: u64,
}

/// The live counters behind [`LoopStats`] (Relaxed: they order nothing).
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) polls: AtomicU64,
    pub(super) sleeps: AtomicU64,
    pub(super) wakeups: AtomicU64,
    pub(super) bh_runs: AtomicU64,
    pub(super) notifier_runs: AtomicU64,
    pub(super) fd_callbacks: AtomicU64,
    pub(super) timers_fired: AtomicU64,
    pub(super) kept: AtomicU64,
    pub(super) busy_poll_hits: AtomicU64,
    pub(super) busy_poll_misses: AtomicU64,
    pub(super) errors: AtomicU64,
}

/// Adds one to a counter.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(super) fn snapshot(&self, poll_ns: u64) -> LoopStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LoopStats {
            polls: get(&self.polls),
            sleeps: get(&self.sleeps),
            wakeups: get(&self.wakeups),
            bh_runs: get(&self.bh_runs),
            notifier_runs: get(&self.notifier_runs),
            fd_callbacks: get(&self.fd_callbacks),
            timers_fired: get(&self.timers_fired),
            kept: get(&self.kept),
            busy_poll_hits: get(&self.busy_poll_hits),
            busy_poll_misses: get(&self.busy_poll_misses),
            errors: get(&self.errors),
            poll_ns,
        }
    }
}
