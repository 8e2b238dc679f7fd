//! The futex the waiters sleep on: shared (no `FUTEX_PRIVATE_FLAG`), so a waker in one
//! process wakes a sleeper in another that maps the same memfd page.
//!
//! Under loom the futex is modelled by a mutex and condition variable with the same
//! atomicity guarantee as the kernel's: the "value still equals `expected`" check and
//! going to sleep happen under one lock that the waker also takes, so a wake between the
//! check and the sleep cannot be lost.

use std::io;

use crate::sync::AtomicU32;

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

    use crate::wake::time::{timespec, Deadline};

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

    /// Set once `futex_waitv` answered `ENOSYS` (a kernel before 5.16).
    static NO_WAITV: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

    /// How long a sleeper that cannot use `futex_waitv` sleeps at most before it looks at
    /// the owner word again (old kernels only).
    const OWNER_POLL_NS: u64 = 50_000_000;

    /// The kernel's `struct futex_waitv`.
    #[repr(C)]
    struct FutexWaitv {
        val: u64,
        uaddr: u64,
        flags: u32,
        reserved: u32,
    }

    /// `FUTEX2_SIZE_U32`: a 32-bit futex, shared (no `FUTEX2_PRIVATE`).
    const FUTEX2_SIZE_U32: u32 = 0x02;

    /// Sleeps while `*word == expected` and `*owner == owner_expected`, until woken on
    /// either or `deadline` (`futex_waitv(2)`, see `owner.rs`). On a kernel without
    /// `futex_waitv` it sleeps on `word` alone, in slices of 50 ms, so that the caller
    /// looks at the owner word at least that often.
    pub(crate) fn wait2(
        word: &AtomicU32,
        expected: u32,
        owner: &AtomicU32,
        owner_expected: u32,
        deadline: Option<Deadline>,
    ) -> io::Result<FutexWake> {
        if NO_WAITV.load(std::sync::atomic::Ordering::Relaxed) {
            return wait_sliced(word, expected, deadline);
        }
        let waiters = [
            FutexWaitv {
                val: u64::from(expected),
                uaddr: word as *const AtomicU32 as u64,
                flags: FUTEX2_SIZE_U32,
                reserved: 0,
            },
            FutexWaitv {
                val: u64::from(owner_expected),
                uaddr: owner as *const AtomicU32 as u64,
                flags: FUTEX2_SIZE_U32,
                reserved: 0,
            },
        ];
        let (clock, ts) = match deadline {
            None => (libc::CLOCK_MONOTONIC, None),
            Some(Deadline::Monotonic(ns)) => (libc::CLOCK_MONOTONIC, Some(libc_timespec(ns))),
            Some(Deadline::Realtime(ns)) => (libc::CLOCK_REALTIME, Some(libc_timespec(ns))),
        };
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `waiters` is an array of two `struct futex_waitv` on our stack, each
        // naming a 32-bit word that lives as long as the caller's borrow; the timeout,
        // when given, is an absolute timespec on our stack; the kernel only reads them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex_waitv,
                waiters.as_ptr(),
                2u32,
                0u32,
                ts_ptr,
                clock,
            )
        };
        if r >= 0 {
            return Ok(FutexWake::Woken);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => Ok(FutexWake::Woken),
            Some(libc::ETIMEDOUT) => Ok(FutexWake::TimedOut),
            Some(libc::EINTR) => Ok(FutexWake::Interrupted),
            Some(libc::ENOSYS) => {
                NO_WAITV.store(true, std::sync::atomic::Ordering::Relaxed);
                wait_sliced(word, expected, deadline)
            }
            _ => Err(e),
        }
    }

    /// [`wait`] for at most [`OWNER_POLL_NS`] (or until `deadline`, if sooner): a timeout
    /// of the slice is a wake-up to re-check, not the caller's timeout.
    fn wait_sliced(
        word: &AtomicU32,
        expected: u32,
        deadline: Option<Deadline>,
    ) -> io::Result<FutexWake> {
        let slice = crate::wake::time::monotonic_now().saturating_add(OWNER_POLL_NS);
        let sooner = match deadline {
            Some(Deadline::Monotonic(at)) if at <= slice => return wait(word, expected, deadline),
            Some(Deadline::Realtime(at))
                if at <= crate::wake::time::realtime_now().saturating_add(OWNER_POLL_NS) =>
            {
                return wait(word, expected, deadline)
            }
            _ => Some(Deadline::Monotonic(slice)),
        };
        match wait(word, expected, sooner)? {
            FutexWake::TimedOut => Ok(FutexWake::Woken),
            other => Ok(other),
        }
    }

    fn libc_timespec(ns: u64) -> libc::timespec {
        let t = timespec(ns);
        libc::timespec {
            tv_sec: t.tv_sec as libc::time_t,
            tv_nsec: t.tv_nsec as libc::c_long,
        }
    }

    /// Sleeps while `*word == expected` on a word of this process's own memory
    /// (`FUTEX_PRIVATE_FLAG`: cheaper, never shared), until woken.
    pub(crate) fn wait_private(word: &AtomicU32, expected: u32) -> io::Result<FutexWake> {
        let any = std::num::NonZeroU32::new(u32::MAX).expect("non-zero");
        match futex::wait_bitset(word, futex::Flags::PRIVATE, expected, None, any) {
            Ok(()) | Err(rustix::io::Errno::AGAIN) => Ok(FutexWake::Woken),
            Err(rustix::io::Errno::INTR) => Ok(FutexWake::Interrupted),
            Err(e) => Err(e.into()),
        }
    }

    /// Wakes up to `n` sleepers of a private word (see [`wait_private`]).
    pub(crate) fn wake_private(word: &AtomicU32, n: u32) {
        let _ = futex::wake(word, futex::Flags::PRIVATE, n.min(i32::MAX as u32));
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

        /// The model of `futex_waitv` on two words: both values are checked under the
        /// one lock a wake of either takes (the models wake both words through this
        /// parking).
        pub(crate) fn wait2(
            &self,
            word: &AtomicU32,
            expected: u32,
            owner: &AtomicU32,
            owner_expected: u32,
        ) -> io::Result<FutexWake> {
            let mut sleeping = self.lock.lock().expect("loom mutex");
            if word.load(Ordering::SeqCst) != expected
                || owner.load(Ordering::SeqCst) != owner_expected
            {
                return Ok(FutexWake::Woken);
            }
            *sleeping += 1;
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
pub(crate) use imp::{wait, wait2, wait_private, wake, wake_private};
