//! Timers: `KEVENT_TIMER` (relative periodic, one-shot, or absolute monotonic) and
//! `KEVENT_POSIX_TIMER` (absolute `CLOCK_REALTIME`), each a timerfd of its own in the
//! producer's epoll set. Expirations are read from the timerfd and counted into the
//! kevent (`ret_data` = expirations since the previous entry), never dropped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::time::{self, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags};

use crate::abi::*;
use crate::epoll;

/// Creates, arms and registers the timerfd for a timer kevent. Errors are the entry's
/// errno (`EINVAL` for a zero time or unknown event bits).
pub(crate) fn register(epoll_fd: BorrowedFd<'_>, ev: &Ukevent, token: u64) -> Result<OwnedFd, i32> {
    let known = KEVENT_TIMER_FIRED | KEVENT_TIMER_ONCE | KEVENT_TIMER_ABSTIME;
    if ev.id == 0 || ev.event & KEVENT_TIMER_FIRED == 0 || ev.event & !known != 0 {
        return Err(libc::EINVAL);
    }
    let (clock, abs, periodic) = match ev.type_ {
        KEVENT_POSIX_TIMER => {
            if ev.event != KEVENT_TIMER_FIRED {
                return Err(libc::EINVAL);
            }
            (TimerfdClockId::Realtime, true, false)
        }
        _ if ev.event & KEVENT_TIMER_ABSTIME != 0 => (TimerfdClockId::Monotonic, true, false),
        _ => (
            TimerfdClockId::Monotonic,
            false,
            ev.event & KEVENT_TIMER_ONCE == 0,
        ),
    };
    let tfd = time::timerfd_create(clock, TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC)
        .map_err(|e| e.raw_os_error())?;
    let value = kevent_ring::timespec(ev.id);
    let spec = Itimerspec {
        it_interval: if periodic {
            value
        } else {
            kevent_ring::timespec(0)
        },
        it_value: value,
    };
    let flags = if abs {
        TimerfdTimerFlags::ABSTIME
    } else {
        TimerfdTimerFlags::empty()
    };
    time::timerfd_settime(&tfd, flags, &spec).map_err(|e| e.raw_os_error())?;
    epoll::add(epoll_fd, tfd.as_raw_fd(), token, libc::EPOLLIN as u32)?;
    Ok(tfd)
}

/// Starts or stops listening to a timer's expirations (they keep being counted by the
/// timerfd meanwhile; listening again reports them at once, the timerfd being level).
pub(crate) fn listen(epoll_fd: BorrowedFd<'_>, tfd: &OwnedFd, token: u64, on: bool) {
    let events = if on { libc::EPOLLIN as u32 } else { 0 };
    // Fails only if the fd left the set, which REMOVE does after dropping the kevent.
    let _ = epoll::modify(epoll_fd, tfd.as_raw_fd(), token, events);
}

/// Reads the expirations since the last read (0 if none: a spurious wake-up).
pub(crate) fn expirations(tfd: &OwnedFd) -> u64 {
    let mut buf = [0u8; 8];
    match rustix::io::read(tfd.as_fd(), &mut buf) {
        Ok(8) => u64::from_ne_bytes(buf),
        _ => 0,
    }
}
