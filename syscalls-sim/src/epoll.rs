//! The instance's epoll fd, and every call on an epoll fd: [`add`], [`modify`] and
//! [`delete`] (`epoll_ctl`, for every source and the instance's own fds), and [`Reports`],
//! where the kernel side takes readiness from — `epoll_wait(0)` by harvesting consumers, a
//! blocking `epoll_wait` by the producer thread, and a blocking `epoll_pwait2` with a
//! nanosecond deadline by the poller (the consumer blocked on the sources, see
//! `instance/harvest.rs`, and `wake/poller.rs` in kevent-ring).
//!
//! The poller sleeps in `epoll_wait` on the kernel's epoll fd itself, with its bell in
//! that set (edge-triggered, `TOKEN_BELL`), rather than in `ppoll` on the epoll fd and
//! the bell: a source's wake-up then reaches it as it reaches an epoll consumer — with
//! the waker's synchronous-wake hint, and the reports in hand, no second `epoll_wait(0)`
//! — where a `ppoll` on an epoll fd is woken through epoll's nested `poll` path, without
//! that hint. Measured here (a paced pipe writer, 20 k writes/s): p50 write-to-read
//! 4.5–5.2 µs blocking in `epoll_wait` against 10.6–11.0 µs in `ppoll` +
//! `epoll_wait(0)`, and a fifth less CPU per event. The epoll fd's own waiters are woken
//! one at a time, so a bell edge can be taken by someone else (a harvester's
//! `epoll_wait(0)`, the producer thread): whoever takes it rings it again while the
//! poller is still blocked (`Kernel::on_token`).
//!
//! On kernels without `epoll_pwait2` (before 5.11) the poller falls back to `ppoll` on
//! the epoll fd, then `epoll_wait(0)`: the same wake-ups, the old cost.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kevent_ring::{Deadline, Ring};
use rustix::event::{epoll, PollFd, PollFlags};

/// A buffer of epoll reports and the `kevent_ctl` epochs around the wait that took them.
pub(crate) struct Reports {
    buf: Vec<epoll::Event>,
    taken: Taken,
}

/// When reports were taken, in `kevent_ctl` epochs (`Kernel::epoch`, bumped at the end of
/// every ctl): read before the wait was entered and right after it returned. A report
/// taken while a ctl ran reads that ctl's number as `returned` — unless the thread was
/// preempted between the two; `entered` then still says the wait was under way before
/// the ctl ended (see `Registration::swallow`). And the ring's `uidx` before the wait
/// was entered: an entry below it had been released — its consumer's reads done — before
/// the report was taken; any other entry may have been out meanwhile (a level kevent's
/// report from then may be of readiness its consumer has read since,
/// `Kernel::on_fd_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) entered: u64,
    pub(crate) returned: u64,
    pub(crate) released: u64,
    /// Taken by a wait that could block (the producer thread's, the poller's), not by a
    /// harvest's `epoll_wait(0)`: a source epoll reports at every wait would keep it
    /// from sleeping.
    pub(crate) blocking: bool,
}

// `take_until` hands the buffer of `rustix` events to the kernel as `epoll_event`s.
const _: () = assert!(
    std::mem::size_of::<epoll::Event>() == std::mem::size_of::<libc::epoll_event>()
        && std::mem::align_of::<epoll::Event>() == std::mem::align_of::<libc::epoll_event>()
);

/// Set once `epoll_pwait2` answered `ENOSYS` (a kernel before 5.11).
static NO_PWAIT2: AtomicBool = AtomicBool::new(false);

impl Reports {
    pub(crate) fn new() -> Reports {
        Reports {
            buf: Vec::with_capacity(1024),
            taken: Taken {
                entered: 0,
                returned: 0,
                released: 0,
                blocking: false,
            },
        }
    }

    /// `epoll_wait` on `epoll_fd` (`timeout` `None`: for ever), reading `epoch` — the
    /// kernel's ctl counter — before and right after, and `ring`'s `uidx` before
    /// ([`Taken`]).
    pub(crate) fn take(
        &mut self,
        epoll_fd: BorrowedFd<'_>,
        timeout: Option<&rustix::time::Timespec>,
        epoch: &AtomicU64,
        ring: &Ring,
    ) -> io::Result<()> {
        self.buf.clear();
        let entered = epoch.load(Ordering::Acquire);
        let released = ring.uidx();
        epoll::wait(
            epoll_fd,
            rustix::buffer::spare_capacity(&mut self.buf),
            timeout,
        )?;
        self.taken = Taken {
            entered,
            returned: epoch.load(Ordering::Acquire),
            released,
            blocking: timeout.is_none_or(|t| t.tv_sec != 0 || t.tv_nsec != 0),
        };
        Ok(())
    }

    /// As [`Reports::take`], blocking until `deadline` (`None`: for ever) with nanosecond
    /// precision: `epoll_pwait2`, or on an older kernel `ppoll` and then `epoll_wait(0)`.
    /// `EINTR` is returned, not retried: a signal ends the caller's wait.
    pub(crate) fn take_until(
        &mut self,
        epoll_fd: BorrowedFd<'_>,
        deadline: Option<Deadline>,
        epoch: &AtomicU64,
        ring: &Ring,
    ) -> io::Result<()> {
        let left = time_left(deadline);
        if !NO_PWAIT2.load(Ordering::Relaxed) {
            self.buf.clear();
            let entered = epoch.load(Ordering::Acquire);
            let released = ring.uidx();
            let ts = left.map(|t| libc::timespec {
                tv_sec: t.tv_sec as libc::time_t,
                tv_nsec: t.tv_nsec as _,
            });
            let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
            // SAFETY: the buffer has room for `capacity` events and `rustix`'s
            // `epoll::Event` is the kernel's `struct epoll_event` (the same layout as
            // `libc::epoll_event`, packed on x86-64); the kernel writes at most
            // `capacity` of them and returns how many, which become the length. The
            // timespec lives across the call; a null sigmask leaves the mask alone.
            let n = unsafe {
                libc::epoll_pwait2(
                    epoll_fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast::<libc::epoll_event>(),
                    self.buf.capacity().min(i32::MAX as usize) as i32,
                    ts_ptr,
                    std::ptr::null(),
                )
            };
            if n >= 0 {
                // SAFETY: the kernel initialised the first `n` events (see above).
                unsafe { self.buf.set_len(n as usize) };
                self.taken = Taken {
                    entered,
                    returned: epoch.load(Ordering::Acquire),
                    released,
                    blocking: true,
                };
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOSYS) {
                return Err(err);
            }
            NO_PWAIT2.store(true, Ordering::Relaxed);
        }
        let mut pfd = [PollFd::from_borrowed_fd(epoll_fd, PollFlags::IN)];
        rustix::event::poll(&mut pfd, left.as_ref())?;
        self.take(epoll_fd, Some(&kevent_ring::timespec(0)), epoch, ring)?;
        self.taken.blocking = true; // the ppoll blocked
        Ok(())
    }

    /// The ctl epochs around the wait that took the reports.
    pub(crate) fn taken(&self) -> Taken {
        self.taken
    }

    /// Whether the last wait filled the buffer (more reports may be waiting).
    pub(crate) fn filled(&self) -> bool {
        self.buf.len() == self.buf.capacity()
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
    Some(kevent_ring::timespec(left))
}

/// `epoll_ctl(EPOLL_CTL_ADD)` of `fd` with `token`: errors are the errno (`EBADF`, `EEXIST`,
/// `EPERM` for a file epoll cannot watch...).
pub(crate) fn add(epoll_fd: BorrowedFd<'_>, fd: RawFd, token: u64, events: u32) -> Result<(), i32> {
    ctl(epoll_fd, libc::EPOLL_CTL_ADD, fd, token, events)
}

/// `epoll_ctl(EPOLL_CTL_MOD)` of `fd`.
pub(crate) fn modify(
    epoll_fd: BorrowedFd<'_>,
    fd: RawFd,
    token: u64,
    events: u32,
) -> Result<(), i32> {
    ctl(epoll_fd, libc::EPOLL_CTL_MOD, fd, token, events)
}

/// `epoll_ctl(EPOLL_CTL_DEL)` of `fd`.
pub(crate) fn delete(epoll_fd: BorrowedFd<'_>, fd: RawFd) -> Result<(), i32> {
    ctl(epoll_fd, libc::EPOLL_CTL_DEL, fd, 0, 0)
}

/// The one `epoll_ctl` of this crate. `fd` is a number: a caller's fd registered by number
/// (`source/fd.rs`), or one of ours.
fn ctl(epoll_fd: BorrowedFd<'_>, op: i32, fd: RawFd, token: u64, events: u32) -> Result<(), i32> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event we own for the call; the fd number is only
    // looked up by the kernel (EBADF if it is not open), never read or written here.
    let r = unsafe { libc::epoll_ctl(epoll_fd.as_raw_fd(), op, fd, &mut ev) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL))
    }
}
