//! `struct timespec` timeouts, as in take26: relative, or an absolute `CLOCK_REALTIME`
//! time with `KEVENT_FLAGS_ABSTIME`; and the one addition, a timeout that never ends.

use std::io;

use kevent_ring::Deadline;
use kevent_syscalls::{Timeout, KEVENT_FLAGS_ABSTIME};

use crate::boundary::err;

/// `KEVENT_TIMEOUT_INFINITE_SEC` (ext): `{ -1, 0 }` waits for ever.
pub const TIMEOUT_INFINITE_SEC: i64 = -1;

/// The timeout in the Rust calls' terms (`None`: for ever; nanoseconds, relative or, with
/// `KEVENT_FLAGS_ABSTIME`, since the epoch).
///
/// # Errors
/// `EINVAL`: unknown flags, a negative time other than the infinite one, or `tv_nsec`
/// outside `0..1_000_000_000`.
pub(crate) fn from_timespec(ts: libc::timespec, flags: u32) -> io::Result<Timeout> {
    if flags & !KEVENT_FLAGS_ABSTIME != 0 {
        return Err(err(libc::EINVAL));
    }
    if ts.tv_sec == TIMEOUT_INFINITE_SEC && ts.tv_nsec == 0 {
        return Ok(None);
    }
    if ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return Err(err(libc::EINVAL));
    }
    let ns = (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64);
    Ok(Some(ns))
}

/// The deadline of a wait that starts now (what `Instance::wait` computes for itself, for
/// the waits this crate builds with `Instance::next_batch`): a zero relative timeout only
/// looks.
pub(crate) fn deadline(timeout: Timeout, flags: u32) -> Option<Deadline> {
    match timeout {
        None => None,
        Some(ns) if flags & KEVENT_FLAGS_ABSTIME != 0 => Some(Deadline::Realtime(ns)),
        Some(0) => Some(Deadline::Monotonic(0)),
        Some(ns) => Some(Deadline::Monotonic(
            kevent_ring::monotonic_now().saturating_add(ns),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(tv_sec: i64, tv_nsec: i64) -> libc::timespec {
        libc::timespec { tv_sec, tv_nsec }
    }

    fn einval(r: io::Result<Timeout>) -> bool {
        r.is_err_and(|e| e.raw_os_error() == Some(libc::EINVAL))
    }

    #[test]
    fn timespecs_become_nanoseconds_and_the_infinite_one_none() {
        assert_eq!(from_timespec(ts(1, 5), 0).unwrap(), Some(1_000_000_005));
        assert_eq!(from_timespec(ts(0, 0), 0).unwrap(), Some(0));
        assert_eq!(from_timespec(ts(-1, 0), 0).unwrap(), None);
        assert_eq!(
            from_timespec(ts(i64::MAX, 0), KEVENT_FLAGS_ABSTIME).unwrap(),
            Some(u64::MAX)
        );
    }

    #[test]
    fn bad_timespecs_and_flags_are_einval() {
        assert!(einval(from_timespec(ts(-2, 0), 0)));
        assert!(einval(from_timespec(ts(-1, 1), 0)));
        assert!(einval(from_timespec(ts(0, 1_000_000_000), 0)));
        assert!(einval(from_timespec(ts(0, -1), 0)));
        assert!(einval(from_timespec(ts(1, 0), 2)));
    }
}
