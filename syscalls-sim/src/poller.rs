//! Where the kernel side takes readiness from: the one `epoll_wait` on the queue's epoll
//! fd ([`Reports`], used by the producer thread and by harvesting consumers), and the
//! `ppoll` a consumer blocked on the sources (the poller, see `queue/harvest.rs` and
//! `poller.rs` in kevent-ring) sleeps in ([`wait_readable`]).
//!
//! The poller uses `ppoll` on the epoll fd and its bell rather than `epoll_wait`: `poll`
//! waiters are woken together (an epoll fd's own waiters are woken one at a time, so a
//! poller in `epoll_wait` could lose a wake-up to the producer thread waiting on the same
//! epoll), the bell needs no place in the epoll set, and the timeout has nanosecond
//! precision. The reports themselves are then taken with `epoll_wait(0)`.

use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use kevent_ring::Deadline;
use rustix::event::{epoll, PollFd, PollFlags};

/// A buffer of epoll reports and the `kevent_ctl` epoch they were taken in.
pub(crate) struct Reports {
    buf: Vec<epoll::Event>,
    epoch: u64,
}

impl Reports {
    pub(crate) fn new() -> Reports {
        Reports {
            buf: Vec::with_capacity(1024),
            epoch: 0,
        }
    }

    /// `epoll_wait` on `epoll_fd` (`timeout` `None`: for ever), then reads `epoch` — the
    /// kernel's ctl counter — right away: a report taken while a ctl ran reads that
    /// ctl's number (see `Registration::swallow`).
    pub(crate) fn take(
        &mut self,
        epoll_fd: BorrowedFd<'_>,
        timeout: Option<&rustix::time::Timespec>,
        epoch: &AtomicU64,
    ) -> io::Result<()> {
        self.buf.clear();
        epoll::wait(
            epoll_fd,
            rustix::buffer::spare_capacity(&mut self.buf),
            timeout,
        )?;
        self.epoch = epoch.load(Ordering::Acquire);
        Ok(())
    }

    /// The ctl epoch the reports were taken in.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The reports as `(token, epoll flags)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u32)> + '_ {
        // epoll_event is packed: copy the fields out instead of borrowing them.
        self.buf
            .iter()
            .map(|ev| (ev.data.u64(), { ev.flags }.bits()))
    }
}

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
