//! Timers: `KEVENT_TIMER` (relative periodic, one-shot, or absolute monotonic) and
//! `KEVENT_POSIX_TIMER` (absolute `CLOCK_REALTIME`).
//!
//! No fd per timer. Each clock has one deadline heap and one timerfd in the producer's
//! epoll set, armed (absolute, nanoseconds, no slack) at the nearest deadline — as the
//! kernel keeps its hrtimers in one tree per clock under one clock event device. An ADD is
//! a heap push, plus a `timerfd_settime` only when it brings the nearest deadline forward;
//! an expiry is one read of the timerfd for every timer then due. A periodic timer's
//! expirations are counted from the clock (`ret_data` = expirations since the previous
//! entry), never dropped.
//!
//! The heap deletes lazily: an entry is `(due, registration, generation)`, acted on only
//! if that registration still is armed for that deadline (`kernel/timers.rs`,
//! `is_armed`).
//! Entries of removed timers are dropped when they reach the top, or all at once when
//! they outnumber the armed timers (ADD/REMOVE churn must not grow the heap).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::time::{self, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags};

use crate::abi::*;
use crate::epoll;

/// The clock a timer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Clock {
    Monotonic,
    Realtime,
}

impl Clock {
    /// Nanoseconds on this clock now.
    pub(crate) fn now(self) -> u64 {
        match self {
            Clock::Monotonic => kevent_ring::monotonic_now(),
            Clock::Realtime => kevent_ring::realtime_now(),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A timer kevent's schedule, from its `Ukevent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Schedule {
    pub(crate) clock: Clock,
    /// The first deadline, ns on `clock`.
    pub(crate) due: u64,
    /// The period, ns (0: fires once).
    pub(crate) period: u64,
}

/// Reads a timer kevent's schedule; relative times start now. `EINVAL` for a zero time
/// or unknown event bits.
pub(crate) fn schedule_of(ev: &Ukevent) -> Result<Schedule, i32> {
    let known = KEVENT_TIMER_FIRED | KEVENT_TIMER_ONCE | KEVENT_TIMER_ABSTIME;
    if ev.id == 0 || ev.event & KEVENT_TIMER_FIRED == 0 || ev.event & !known != 0 {
        return Err(libc::EINVAL);
    }
    Ok(match ev.type_ {
        KEVENT_POSIX_TIMER => {
            if ev.event != KEVENT_TIMER_FIRED {
                return Err(libc::EINVAL);
            }
            Schedule {
                clock: Clock::Realtime,
                due: ev.id,
                period: 0,
            }
        }
        _ if ev.event & KEVENT_TIMER_ABSTIME != 0 => Schedule {
            clock: Clock::Monotonic,
            due: ev.id,
            period: 0,
        },
        _ => Schedule {
            clock: Clock::Monotonic,
            due: Clock::Monotonic.now().saturating_add(ev.id),
            period: if ev.event & KEVENT_TIMER_ONCE == 0 {
                ev.id
            } else {
                0
            },
        },
    })
}

/// How many times a timer due at `due` with `period` expired by `now` (≥ 1: it is due),
/// and its next deadline (`None`: it fires once).
pub(crate) fn expirations(due: u64, period: u64, now: u64) -> (u64, Option<u64>) {
    if period == 0 {
        return (1, None);
    }
    let n = 1 + now.saturating_sub(due) / period;
    (n, Some(due.saturating_add(n.saturating_mul(period))))
}

/// One heap entry: (deadline, registration index, generation).
type Entry = Reverse<(u64, usize, u32)>;

/// The queue's timers: a heap and a timerfd per clock.
#[derive(Debug)]
pub(crate) struct Timers {
    clocks: [PerClock; 2],
    /// Each clock's epoll token (indexed as `clocks`), given to its timerfd.
    tokens: [u64; 2],
}

#[derive(Debug, Default)]
struct PerClock {
    /// Created with the clock's first timer, in the epoll set as the clock's token.
    tfd: Option<OwnedFd>,
    heap: BinaryHeap<Entry>,
    /// The deadline the timerfd is armed for (`None`: disarmed).
    armed_at: Option<u64>,
    /// Heap entries of armed timers (the rest are stale).
    live: usize,
}

impl Timers {
    /// No timers yet; a clock's timerfd, made with its first timer, joins the epoll set
    /// as `tokens[clock]` (monotonic, realtime).
    pub(crate) fn new(tokens: [u64; 2]) -> Timers {
        Timers {
            clocks: Default::default(),
            tokens,
        }
    }

    /// Schedules registration `idx` (generation `gen`) at `due` on `clock`. Making the
    /// clock's timerfd (its first timer) is the only step that can fail (`EMFILE`,
    /// `ENOMEM`).
    pub(crate) fn schedule(
        &mut self,
        epoll_fd: BorrowedFd<'_>,
        clock: Clock,
        due: u64,
        idx: usize,
        gen: u32,
    ) -> Result<(), i32> {
        let token = self.tokens[clock.index()];
        let c = &mut self.clocks[clock.index()];
        if c.tfd.is_none() {
            let id = match clock {
                Clock::Monotonic => TimerfdClockId::Monotonic,
                Clock::Realtime => TimerfdClockId::Realtime,
            };
            let tfd = time::timerfd_create(id, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)
                .map_err(|e| e.raw_os_error())?;
            // Level-triggered: readable until a harvest reads it, whoever takes the report.
            epoll::add(epoll_fd, tfd.as_raw_fd(), token, libc::EPOLLIN as u32)?;
            c.tfd = Some(tfd);
        }
        if c.armed_at.is_none_or(|at| due < at) {
            c.arm(Some(due));
        }
        c.heap.push(Reverse((due, idx, gen)));
        c.live += 1;
        Ok(())
    }

    /// Pops every entry due by `now` on `clock` into `out` — those `armed` says are still
    /// armed for that deadline (they are armed no more); stale ones are dropped.
    pub(crate) fn take_due(
        &mut self,
        clock: Clock,
        now: u64,
        armed: impl Fn(usize, u32, u64) -> bool,
        out: &mut Vec<(usize, u32, u64)>,
    ) {
        let c = &mut self.clocks[clock.index()];
        if let Some(tfd) = &c.tfd {
            // Resets the level report; the count is the clock's business.
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(tfd, &mut buf);
        }
        while let Some(&Reverse((due, idx, gen))) = c.heap.peek() {
            if due > now {
                break;
            }
            c.heap.pop();
            if armed(idx, gen, due) {
                c.live -= 1;
                out.push((idx, gen, due));
            }
        }
    }

    /// An armed timer of `clock` was removed: its heap entry is stale now. Once stale
    /// entries outnumber the armed ones, they are all dropped (`armed` tells them apart):
    /// the heap stays within twice the armed timers (plus 64), whatever the churn.
    pub(crate) fn forget(&mut self, clock: Clock, armed: impl Fn(usize, u32, u64) -> bool) {
        let c = &mut self.clocks[clock.index()];
        c.live -= 1;
        if c.heap.len() > 64 && c.heap.len() > 2 * c.live {
            c.heap
                .retain(|&Reverse((due, idx, gen))| armed(idx, gen, due));
        }
    }

    /// Arms `clock`'s timerfd at its nearest armed deadline (disarms it if there is none),
    /// dropping stale entries from the top.
    pub(crate) fn rearm(&mut self, clock: Clock, armed: impl Fn(usize, u32, u64) -> bool) {
        let c = &mut self.clocks[clock.index()];
        while let Some(&Reverse((due, idx, gen))) = c.heap.peek() {
            if armed(idx, gen, due) {
                break;
            }
            c.heap.pop();
        }
        let next = c.heap.peek().map(|&Reverse((due, _, _))| due);
        if next != c.armed_at {
            c.arm(next);
        }
    }

    /// Heap entries of `clock`, stale ones included (for tests of the bound).
    #[cfg(test)]
    fn heap_len(&self, clock: Clock) -> usize {
        self.clocks[clock.index()].heap.len()
    }
}

impl PerClock {
    /// Sets the timerfd to fire at `at` (absolute; at once if it has passed), or disarms
    /// it (`None`). Cannot fail: the fd is a timerfd, the flags are known, and the value
    /// a valid timespec (nanoseconds below 10⁹; the kernel clamps far deadlines).
    fn arm(&mut self, at: Option<u64>) {
        let Some(tfd) = &self.tfd else {
            return;
        };
        // An absolute it_value of 0 would disarm: 1 ns is as good as any past time.
        let value = at.map_or(kevent_ring::timespec(0), |t| {
            kevent_ring::timespec(t.max(1))
        });
        let spec = Itimerspec {
            it_interval: kevent_ring::timespec(0),
            it_value: value,
        };
        let set = time::timerfd_settime(tfd, TimerfdTimerFlags::ABSTIME, &spec);
        debug_assert!(set.is_ok(), "timerfd_settime: {set:?}");
        self.armed_at = at;
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_periodic_timer_counts_every_period_passed() {
        assert_eq!(expirations(100, 0, 500), (1, None));
        assert_eq!(expirations(100, 10, 100), (1, Some(110)));
        assert_eq!(expirations(100, 10, 109), (1, Some(110)));
        assert_eq!(expirations(100, 10, 110), (2, Some(120)));
        assert_eq!(expirations(100, 10, 1_000), (91, Some(1_010)));
    }

    #[test]
    fn removed_timers_do_not_grow_the_heap() {
        let epoll = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC)
            .expect("epoll");
        let mut timers = Timers::new([7, 8]);
        let far = Clock::Monotonic.now() + 3_600_000_000_000;
        // One timer stays armed; 100,000 others are added and removed at once.
        timers
            .schedule(epoll.as_fd(), Clock::Monotonic, far, 0, 1)
            .expect("schedule");
        let kept = |idx: usize, gen: u32, _due: u64| (idx, gen) == (0, 1);
        for i in 1..100_000u32 {
            timers
                .schedule(epoll.as_fd(), Clock::Monotonic, far + u64::from(i), 1, i)
                .expect("schedule");
            timers.forget(Clock::Monotonic, kept);
        }
        assert!(
            timers.heap_len(Clock::Monotonic) <= 66,
            "{} heap entries for 1 armed timer",
            timers.heap_len(Clock::Monotonic)
        );
        let mut due = Vec::new();
        timers.take_due(Clock::Monotonic, far, kept, &mut due);
        assert_eq!(due, vec![(0, 1, far)]);
    }
}
