//! The futex the waiters sleep on: shared (no `FUTEX_PRIVATE_FLAG`), so a waker in one
//! process wakes a sleeper in another that maps the same memfd page.
//!
//! Under loom the futex is modelled by a mutex and condition variable with the same
//! atomicity guarantee as the kernel's: the "value still equals `expected`" check and
//! going to sleep happen under one lock that the waker also takes, so a wake between the
//! check and the sleep cannot be lost.

use std::io;

use crate::sync::AtomicU32;

/// An absolute deadline for a futex wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// `CLOCK_MONOTONIC` time, in nanoseconds.
    Monotonic(u64),
    /// `CLOCK_REALTIME` time, in nanoseconds (kevent's `KEVENT_FLAGS_ABSTIME` with a
    /// wall-clock deadline).
    Realtime(u64),
}

/// What a futex wait ended with.
// The loom model has no timeouts or signals.
#[cfg_attr(loom, allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FutexWake {
    /// Woken, or the word had already changed, or spurious: re-check.
    Woken,
    /// The deadline passed.
    TimedOut,
    /// A signal interrupted the sleep.
    Interrupted,
}

#[cfg(not(loom))]
mod imp {
    use super::*;
    use rustix::thread::futex;

    fn timespec(ns: u64) -> rustix::time::Timespec {
        rustix::time::Timespec {
            tv_sec: (ns / 1_000_000_000) as i64,
            tv_nsec: (ns % 1_000_000_000) as i64,
        }
    }

    /// Sleeps while `*word == expected`, until woken or `deadline`.
    pub(crate) fn wait(
        word: &AtomicU32,
        expected: u32,
        deadline: Option<Deadline>,
    ) -> io::Result<FutexWake> {
        // FUTEX_WAIT_BITSET takes an absolute timeout (CLOCK_MONOTONIC, or
        // CLOCK_REALTIME with FUTEX_CLOCK_REALTIME), so a wait that wakes spuriously and
        // sleeps again never stretches the caller's deadline.
        let (flags, ts) = match deadline {
            None => (futex::Flags::empty(), None),
            Some(Deadline::Monotonic(ns)) => (futex::Flags::empty(), Some(timespec(ns))),
            Some(Deadline::Realtime(ns)) => (futex::Flags::CLOCK_REALTIME, Some(timespec(ns))),
        };
        let any = std::num::NonZeroU32::new(u32::MAX).expect("non-zero");
        match futex::wait_bitset(word, flags, expected, ts.as_ref(), any) {
            Ok(()) => Ok(FutexWake::Woken),
            Err(rustix::io::Errno::AGAIN) => Ok(FutexWake::Woken),
            Err(rustix::io::Errno::TIMEDOUT) => Ok(FutexWake::TimedOut),
            Err(rustix::io::Errno::INTR) => Ok(FutexWake::Interrupted),
            Err(e) => Err(e.into()),
        }
    }

    /// Wakes up to `n` sleepers on `word`; returns how many woke.
    pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
        let n = n.min(i32::MAX as u32);
        // A FUTEX_WAKE on a valid mapped word cannot fail in a way we could act on.
        futex::wake(word, futex::Flags::empty(), n).unwrap_or(0)
    }
}

#[cfg(loom)]
mod imp {
    use super::*;
    use crate::sync::Ordering;
    use loom::sync::{Condvar, Mutex};

    /// The loom model of a futex: the kernel's hash-bucket lock and wait queue (with
    /// the number of threads in it, so that a wake reports how many it woke, as
    /// `FUTEX_WAKE` does).
    pub(crate) struct Parking {
        lock: Mutex<u32>,
        cond: Condvar,
    }

    impl Parking {
        pub(crate) fn new() -> Self {
            Parking {
                lock: Mutex::new(0),
                cond: Condvar::new(),
            }
        }

        pub(crate) fn wait(&self, word: &AtomicU32, expected: u32) -> io::Result<FutexWake> {
            let mut sleeping = self.lock.lock().expect("loom mutex");
            if word.load(Ordering::SeqCst) != expected {
                return Ok(FutexWake::Woken);
            }
            *sleeping += 1;
            // The waker takes us out of the count, as FUTEX_WAKE dequeues its wakees.
            drop(self.cond.wait(sleeping).expect("loom condvar"));
            Ok(FutexWake::Woken)
        }

        pub(crate) fn wake(&self, n: u32) -> usize {
            let mut sleeping = self.lock.lock().expect("loom mutex");
            let woken = (*sleeping).min(n);
            *sleeping -= woken;
            if n > 1 {
                self.cond.notify_all();
            } else {
                self.cond.notify_one();
            }
            woken as usize
        }
    }
}

#[cfg(loom)]
pub(crate) use imp::Parking;
#[cfg(not(loom))]
pub(crate) use imp::{wait, wake};
