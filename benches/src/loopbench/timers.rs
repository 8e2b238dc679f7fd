//! Timer lateness: `count` one-shot timers in a row, each due `period` after the previous
//! one fired (armed from its callback), on an otherwise idle loop thread. Lateness =
//! when the callback ran − the deadline (never negative: a timer that fires early is an
//! error).
//!
//! | rival | how the loop waits for the deadline |
//! |---|---|
//! | `kevent::Loop` | its timer heap; the nearest deadline is the queue wait's ns timeout |
//! | epoll, ms timeout | `epoll_wait` with the time left rounded up to whole ms (QEMU before timerfd) |
//! | epoll + timerfd | one `timerfd` (absolute ns deadline) in the epoll set, `epoll_wait(-1)` |
//!
//! Every rival runs with the measuring thread's timer slack at 1 ns
//! (`PR_SET_TIMERSLACK`), as QEMU sets it for its own threads: the default 50 µs slack
//! would let the kernel end any timed sleep (`epoll_wait`, `ppoll`, futex) up to 50 µs
//! late. A timerfd's expiry has no slack either way.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kevent::{Clock, Loop};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

use super::qemu::EpollLoop;
use super::samples::now_ns;

/// The rivals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rival {
    /// `kevent::Loop` timers.
    Kevent,
    /// epoll with millisecond timeouts.
    EpollMs,
    /// epoll with a timerfd.
    EpollTimerfd,
}

impl Rival {
    /// Every rival, in rotation order.
    pub const ALL: [Rival; 3] = [Rival::Kevent, Rival::EpollMs, Rival::EpollTimerfd];

    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Rival::Kevent => "kevent::Loop timer",
            Rival::EpollMs => "epoll_wait ms timeout",
            Rival::EpollTimerfd => "epoll + timerfd",
        }
    }
}

fn early(late_by: i128) -> Result<u64, String> {
    u64::try_from(late_by).map_err(|_| format!("a timer fired {} ns early", -late_by))
}

/// Sets the calling thread's timer slack to 1 ns.
pub fn precise_timers() -> Result<(), String> {
    // SAFETY: PR_SET_TIMERSLACK only changes a property of the calling thread.
    if unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) } != 0 {
        return Err(format!(
            "prctl(PR_SET_TIMERSLACK): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Lateness of `count` timers `period` apart, ns.
pub fn run(rival: Rival, count: usize, period: Duration) -> Result<Vec<u64>, String> {
    precise_timers()?;
    let period = period.as_nanos() as u64;
    let mut out = Vec::with_capacity(count);
    match rival {
        Rival::Kevent => {
            let lp = Loop::new().map_err(|e| e.to_string())?;
            let due = Arc::new(AtomicU64::new(0));
            let lates = Arc::new(Mutex::new(Vec::with_capacity(count)));
            let (d, l) = (due.clone(), lates.clone());
            let timer = lp.timer(Clock::Monotonic, move |_, t| {
                let now = now_ns();
                let deadline = d.load(Ordering::Relaxed);
                l.lock().unwrap().push(now as i128 - deadline as i128);
                let next = now + period;
                d.store(next, Ordering::Relaxed);
                t.arm_at_ns(next);
            });
            let first = now_ns() + period;
            due.store(first, Ordering::Relaxed);
            timer.arm_at_ns(first);
            while lates.lock().unwrap().len() < count {
                lp.try_poll(true).map_err(|e| e.to_string())?;
            }
            timer.delete();
            for &late in lates.lock().unwrap().iter().take(count) {
                out.push(early(late)?);
            }
        }
        Rival::EpollMs => {
            let lp = EpollLoop::new().map_err(|e| e.to_string())?;
            let mut events = Vec::with_capacity(8);
            let mut deadline = now_ns() + period;
            while out.len() < count {
                let now = now_ns();
                if now >= deadline {
                    out.push(now - deadline);
                    deadline = now + period;
                    continue;
                }
                let left = Duration::from_nanos(deadline - now);
                lp.poll(true, Some(left), &mut events, |_| {})
                    .map_err(|e| e.to_string())?;
            }
        }
        Rival::EpollTimerfd => {
            let lp = EpollLoop::new().map_err(|e| e.to_string())?;
            let tfd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
            )
            .map_err(|e| e.to_string())?;
            lp.add_fd(tfd.as_fd(), 1).map_err(|e| e.to_string())?;
            let arm = |at: u64| {
                let spec = Itimerspec {
                    it_interval: Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    it_value: Timespec {
                        tv_sec: (at / 1_000_000_000) as i64,
                        tv_nsec: (at % 1_000_000_000) as i64,
                    },
                };
                timerfd_settime(&tfd, TimerfdTimerFlags::ABSTIME, &spec).map(drop)
            };
            let mut events = Vec::with_capacity(8);
            let mut deadline = now_ns() + period;
            arm(deadline).map_err(|e| e.to_string())?;
            while out.len() < count {
                let mut fired = false;
                lp.poll(true, None, &mut events, |_| fired = true)
                    .map_err(|e| e.to_string())?;
                if fired {
                    let now = now_ns();
                    let mut buf = [0u8; 8];
                    let _ = rustix::io::read(&tfd, &mut buf);
                    out.push(early(now as i128 - deadline as i128)?);
                    deadline = now + period;
                    arm(deadline).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    Ok(out)
}
