//! Adaptive polling: before it sleeps, a blocking poll busy-polls for up to `poll_ns`, and
//! `poll_ns` follows how long polls actually block (QEMU's `poll-max-ns`, `poll-grow`,
//! `poll-shrink`; `try_poll_mode`, `run_poll_handlers` and `adjust_polling_time` in
//! `util/aio-posix.c`).
//!
//! **What is polled.** While busy-polling the loop is awake as far as wakers know (it has
//! not announced a sleep), so a bottom half, notifier or timer given to it costs the giver
//! no system call; the loop sees it through `notified`. Each round also looks at the ring
//! (a published entry: one load, no system call) and calls the handlers' poll callbacks
//! ([`FdHandler::poll`](crate::FdHandler::poll)). Readiness of fds without a poll callback
//! is found by the wait that follows, as in QEMU's poll mode. Timers need no check: the
//! busy poll never runs past the nearest deadline.
//!
//! **Measured, not assumed.** After each blocking poll the time it took to get work —
//! from its start until its wait returned, busy-polling included — is compared with
//! `poll_ns`: at most `poll_ns` is the sweet spot; more than `max_ns` means polling is a
//! waste here (shrink: divide by `shrink`, or stop); in between, polling a little longer
//! would have caught it (grow: start at 4 µs, multiply by `grow`, at most `max_ns`).
//! [`LoopStats`](crate::LoopStats) counts the busy polls that found work and those that
//! did not.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::context::Loop;
use super::poll::Work;
use super::stats::bump;

/// Where polling starts when it first grows (QEMU's 4 µs).
const START_NS: u64 = 4_000;

/// Adaptive polling parameters of a loop ([`Loop::set_poll_params`]), as QEMU's IOThread
/// properties `poll-max-ns`, `poll-grow`, `poll-shrink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollParams {
    /// The longest a blocking poll busy-polls before it sleeps, in nanoseconds; 0 (the
    /// default) disables polling.
    pub max_ns: u64,
    /// The factor the polling time grows by (0: 2).
    pub grow: u64,
    /// The divisor the polling time shrinks by (0: back to no polling at once).
    pub shrink: u64,
}

/// The loop's polling parameters and current polling time (Relaxed: a stale value used
/// once is harmless, as QEMU notes too).
#[derive(Debug, Default)]
pub(super) struct Adaptive {
    max_ns: AtomicU64,
    grow: AtomicU64,
    shrink: AtomicU64,
    poll_ns: AtomicU64,
}

/// The polling time after a poll that blocked `block_ns` (`adjust_polling_time`).
pub(super) fn next_poll_ns(poll_ns: u64, block_ns: u64, p: PollParams) -> u64 {
    if p.max_ns == 0 {
        0
    } else if block_ns <= poll_ns {
        poll_ns // the sweet spot
    } else if block_ns > p.max_ns {
        match p.shrink {
            0 => 0,
            s => poll_ns / s,
        }
    } else if poll_ns < p.max_ns {
        let grown = match poll_ns {
            0 => START_NS,
            n => n.saturating_mul(if p.grow == 0 { 2 } else { p.grow }),
        };
        grown.min(p.max_ns)
    } else {
        poll_ns
    }
}

impl Adaptive {
    pub(super) fn params(&self) -> PollParams {
        PollParams {
            max_ns: self.max_ns.load(Ordering::Relaxed),
            grow: self.grow.load(Ordering::Relaxed),
            shrink: self.shrink.load(Ordering::Relaxed),
        }
    }

    pub(super) fn poll_ns(&self) -> u64 {
        self.poll_ns.load(Ordering::Relaxed)
    }

    pub(super) fn enabled(&self) -> bool {
        self.max_ns.load(Ordering::Relaxed) > 0
    }

    /// Adjusts the polling time after a blocking poll that blocked `block`.
    pub(super) fn adjust(&self, block: Duration) {
        let block_ns = block.as_nanos().min(u128::from(u64::MAX)) as u64;
        let next = next_poll_ns(self.poll_ns(), block_ns, self.params());
        self.poll_ns.store(next, Ordering::Relaxed);
    }
}

/// What a busy poll found.
pub(super) struct Busy {
    /// Work was found (the wait must not sleep).
    pub(super) found: bool,
    /// How long it polled.
    pub(super) elapsed: Duration,
}

impl Loop {
    /// `aio_context_set_poll_params`: sets the adaptive polling parameters; the polling
    /// time starts again from 0. `max_ns == 0` turns polling off (the default).
    ///
    /// ```
    /// # use kevent::{Loop, PollParams};
    /// let lp = Loop::new()?;
    /// lp.set_poll_params(PollParams { max_ns: 32_000, grow: 2, shrink: 2 });
    /// assert_eq!(lp.poll_params().max_ns, 32_000);
    /// # Ok::<(), kevent::Error>(())
    /// ```
    #[doc(alias = "aio_context_set_poll_params")]
    pub fn set_poll_params(&self, params: PollParams) {
        let a = &self.adaptive;
        a.max_ns.store(params.max_ns, Ordering::Relaxed);
        a.grow.store(params.grow, Ordering::Relaxed);
        a.shrink.store(params.shrink, Ordering::Relaxed);
        a.poll_ns.store(0, Ordering::Relaxed);
        self.notify();
    }

    /// The adaptive polling parameters.
    pub fn poll_params(&self) -> PollParams {
        self.adaptive.params()
    }

    /// How long a blocking poll busy-polls now before it sleeps, as adapted so far.
    pub fn poll_ns(&self) -> Duration {
        Duration::from_nanos(self.adaptive.poll_ns())
    }

    /// `run_poll_handlers`: busy-polls for up to `limit`; handlers whose poll callback
    /// found work are pushed onto `work` for dispatch.
    pub(super) fn busy_poll(&self, limit: Duration, work: &mut Vec<Work>) -> Busy {
        let pollers = self.handlers.pollers();
        let ring = self.queue.ring();
        let start = Instant::now();
        let mut found = false;
        loop {
            for entry in pollers.iter() {
                if entry.removed.load(Ordering::Acquire) {
                    continue;
                }
                if entry.handler.poll.as_ref().is_some_and(|poll| poll(self)) {
                    work.push(Work::PollReady(entry.clone()));
                    found = true;
                }
            }
            found |= self.shared.waker.is_notified() || ring.has_claimable();
            if found || start.elapsed() >= limit {
                break;
            }
            std::hint::spin_loop();
        }
        let counter = if found {
            &self.shared.counters.busy_poll_hits
        } else {
            &self.shared.counters.busy_poll_misses
        };
        bump(counter);
        Busy {
            found,
            elapsed: start.elapsed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PollParams = PollParams {
        max_ns: 100_000,
        grow: 2,
        shrink: 4,
    };

    #[test]
    fn polling_starts_at_4us_and_doubles_while_work_comes_within_max() {
        let mut ns = 0;
        let mut seen = vec![];
        for _ in 0..7 {
            ns = next_poll_ns(ns, 50_000, P);
            seen.push(ns);
        }
        assert_eq!(seen, [4_000, 8_000, 16_000, 32_000, 64_000, 64_000, 64_000]);
    }

    #[test]
    fn polling_grows_no_further_than_max() {
        let ns = next_poll_ns(64_000, 90_000, P);
        assert_eq!(ns, 100_000);
        assert_eq!(next_poll_ns(ns, 99_000, P), 100_000);
    }

    #[test]
    fn a_block_longer_than_max_shrinks_polling_or_stops_it() {
        assert_eq!(next_poll_ns(64_000, 1_000_000, P), 16_000);
        let stop = PollParams { shrink: 0, ..P };
        assert_eq!(next_poll_ns(64_000, 1_000_000, stop), 0);
    }

    #[test]
    fn polling_is_off_by_default() {
        assert_eq!(next_poll_ns(0, 10, PollParams::default()), 0);
        assert_eq!(
            next_poll_ns(0, 10, PollParams { grow: 0, ..P }),
            START_NS,
            "grow 0 means 2, and growth starts at 4 us"
        );
    }
}
