//! Blocking on fds until a deadline: what the poller (a consumer of the owning process
//! blocked on the queue's sources and its bell, see `Queue::poll_sources` and `poller.rs`
//! in kevent-ring) sleeps in.
//!
//! `ppoll` rather than `epoll_wait` on the kernel's epoll fd: `poll` waiters are woken
//! together (an epoll fd's own waiters are woken one at a time, so a poller in
//! `epoll_wait` could lose a wake-up to the producer thread waiting on the same epoll),
//! the bell needs no place in the epoll set, and the timeout has nanosecond precision.
//! The events themselves are then taken with `epoll_wait(0)` under the kernel lock.

use std::io;
use std::os::fd::BorrowedFd;

use kevent_ring::Deadline;
use rustix::event::{PollFd, PollFlags};

/// The time left until `deadline`, as a relative timespec (`None`: no deadline).
fn time_left(deadline: Option<Deadline>) -> Option<rustix::time::Timespec> {
    let left = match deadline? {
        Deadline::Monotonic(at) => at.saturating_sub(kevent_ring::monotonic_now()),
        Deadline::Realtime(at) => at.saturating_sub(kevent_ring::realtime_now()),
    };
    Some(rustix::time::Timespec {
        tv_sec: (left / 1_000_000_000) as i64,
        tv_nsec: (left % 1_000_000_000) as i64,
    })
}

/// Sleeps until one of `fds` is readable or `deadline` passes; returns which are
/// readable (none: the deadline passed). `EINTR` is returned, not retried: a signal ends
/// the caller's wait.
pub(crate) fn wait_readable<const N: usize>(
    fds: [BorrowedFd<'_>; N],
    deadline: Option<Deadline>,
) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| PollFd::from_borrowed_fd(fd, PollFlags::IN));
    rustix::event::poll(&mut pfds, time_left(deadline).as_ref())?;
    Ok(pfds.map(|p| !p.revents().is_empty()))
}
