//! Deadlines and the kernel's `timespec`s: one place that turns nanoseconds into what a
//! system call takes.

/// An absolute deadline for a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// `CLOCK_MONOTONIC` time, in nanoseconds.
    Monotonic(u64),
    /// `CLOCK_REALTIME` time, in nanoseconds (kevent's `KEVENT_FLAGS_ABSTIME` with a
    /// wall-clock deadline).
    Realtime(u64),
}

/// `ns` nanoseconds as a `timespec` (a relative timeout, or an absolute time).
#[cfg(not(loom))]
pub fn timespec(ns: u64) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: (ns / 1_000_000_000) as i64,
        tv_nsec: (ns % 1_000_000_000) as i64,
    }
}

/// Whether `deadline` lies in the past (under loom, where there is no time: never).
#[cfg(not(loom))]
pub fn deadline_passed(deadline: Option<Deadline>) -> bool {
    match deadline {
        None => false,
        Some(Deadline::Monotonic(at)) => monotonic_now() >= at,
        Some(Deadline::Realtime(at)) => realtime_now() >= at,
    }
}

/// Whether `deadline` lies in the past (under loom, where there is no time: never).
#[cfg(loom)]
pub fn deadline_passed(_deadline: Option<Deadline>) -> bool {
    false
}

/// The current time on `CLOCK_MONOTONIC`, in nanoseconds.
#[cfg(not(loom))]
pub fn monotonic_now() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The current time on `CLOCK_REALTIME`, in nanoseconds.
#[cfg(not(loom))]
pub fn realtime_now() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
