//! [`Source`]: what a kevent watches, and [`Kind`], the kevent type.
//!
//! A kevent is identified by its type and its id (`ukevent.type`, `ukevent.id`): the fd
//! number of a socket or pipe, the period of a timer, the signal number. A `Source`
//! carries exactly that identity plus the event mask, so the same value registers a
//! kevent ([`add`](crate::Queue::add)) and names it later ([`remove`](crate::Queue::remove),
//! [`modify`](crate::Queue::modify), [`ready`](crate::Queue::ready)).

use std::fmt;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kevent_syscalls as sys;

use crate::{InodeEvents, Interest, PollMask};

/// The type of a kevent (`ukevent.type`, `KEVENT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `KEVENT_SOCKET`: a socket.
    Socket,
    /// `KEVENT_INODE`: entries created in or removed from a directory.
    Inode,
    /// `KEVENT_TIMER`: a relative (periodic or one-shot) or absolute monotonic timer.
    Timer,
    /// `KEVENT_POLL`: a `poll(2)` mask on any pollable fd.
    Poll,
    /// `KEVENT_PIPE`: a pipe or FIFO.
    Pipe,
    /// `KEVENT_SIGNAL`: a signal.
    Signal,
    /// `KEVENT_POSIX_TIMER`: an absolute `CLOCK_REALTIME` timer.
    PosixTimer,
    /// `KEVENT_USER`: a user event, made ready by [`Queue::ready`](crate::Queue::ready).
    User,
    /// A type this library has no name for (`KEVENT_AIO`, `KEVENT_NAIO`, a newer one).
    Other(u32),
}

impl Kind {
    /// The `KEVENT_*` type number.
    pub fn to_raw(self) -> u32 {
        match self {
            Kind::Socket => sys::KEVENT_SOCKET,
            Kind::Inode => sys::KEVENT_INODE,
            Kind::Timer => sys::KEVENT_TIMER,
            Kind::Poll => sys::KEVENT_POLL,
            Kind::Pipe => sys::KEVENT_PIPE,
            Kind::Signal => sys::KEVENT_SIGNAL,
            Kind::PosixTimer => sys::KEVENT_POSIX_TIMER,
            Kind::User => sys::KEVENT_USER,
            Kind::Other(n) => n,
        }
    }

    /// The kind of a `KEVENT_*` type number.
    pub fn from_raw(type_: u32) -> Kind {
        match type_ {
            sys::KEVENT_SOCKET => Kind::Socket,
            sys::KEVENT_INODE => Kind::Inode,
            sys::KEVENT_TIMER => Kind::Timer,
            sys::KEVENT_POLL => Kind::Poll,
            sys::KEVENT_PIPE => Kind::Pipe,
            sys::KEVENT_SIGNAL => Kind::Signal,
            sys::KEVENT_POSIX_TIMER => Kind::PosixTimer,
            sys::KEVENT_USER => Kind::User,
            n => Kind::Other(n),
        }
    }

    /// Whether the id of this kind is a file descriptor number.
    pub fn has_fd(self) -> bool {
        matches!(self, Kind::Socket | Kind::Pipe | Kind::Poll | Kind::Inode)
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// What a kevent watches: its type, its id and its event mask.
///
/// Fd sources borrow the fd only to read its number: the queue watches that fd itself, as
/// epoll does — a registration costs no fd of its own, and closing the last fd of a file
/// (dropping your `TcpStream`) closes it for good: the peer sees the close, and no more
/// events come. [`remove`](crate::Queue::remove) it before you close it, as with epoll; a
/// number closed without REMOVE and reused for another file is recognised at the next
/// ADD (by the file's device and inode) and the stale registration dropped, so it never
/// answers `EEXIST`.
///
/// ```
/// # use kevent::{Interest, Kind, Source};
/// # use std::time::Duration;
/// let (r, _w) = std::io::pipe()?;
/// let pipe = Source::pipe(&r, Interest::READABLE);
/// assert_eq!(pipe.kind(), Kind::Pipe);
/// let tick = Source::timer(Duration::from_millis(10));
/// assert_eq!(tick.to_string(), "timer every 10ms");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    kind: Kind,
    id: u64,
    event: u32,
}

impl Source {
    fn fd(kind: Kind, fd: RawFd, event: u32) -> Source {
        Source {
            kind,
            id: u64::from(fd as u32),
            event,
        }
    }

    /// `KEVENT_SOCKET`: readiness of a socket (`ACCEPT` for a listening one).
    pub fn socket(fd: &impl AsFd, interest: Interest) -> Source {
        Source::fd(Kind::Socket, fd.as_fd().as_raw_fd(), interest.bits())
    }

    /// `KEVENT_PIPE`: readiness of a pipe or FIFO end.
    pub fn pipe(fd: &impl AsFd, interest: Interest) -> Source {
        Source::fd(Kind::Pipe, fd.as_fd().as_raw_fd(), interest.bits())
    }

    /// `KEVENT_POLL`: a `poll(2)` mask on any pollable fd (eventfd, tty, socket…).
    pub fn poll(fd: &impl AsFd, mask: PollMask) -> Source {
        Source::fd(Kind::Poll, fd.as_fd().as_raw_fd(), mask.bits())
    }

    /// `KEVENT_TIMER`: fires every `period` (nanosecond precision); each event counts the
    /// expirations since the previous one ([`Event::count`](crate::Event::count)).
    ///
    /// As in kevent, a timer is identified by its period: a second timer with the same
    /// period in the same queue is `EEXIST`.
    pub fn timer(period: Duration) -> Source {
        Source {
            kind: Kind::Timer,
            id: nanos(period),
            event: sys::KEVENT_TIMER_FIRED,
        }
    }

    /// `KEVENT_TIMER` with `KEVENT_TIMER_ONCE`: fires once, `delay` after ADD.
    pub fn timer_once(delay: Duration) -> Source {
        Source {
            kind: Kind::Timer,
            id: nanos(delay),
            event: sys::KEVENT_TIMER_FIRED | sys::KEVENT_TIMER_ONCE,
        }
    }

    /// `KEVENT_TIMER` with `KEVENT_TIMER_ABSTIME`: fires once at `deadline`
    /// (`CLOCK_MONOTONIC`, which is what `Instant` measures on Linux; the conversion reads
    /// both clocks once, so it is exact to a few hundred nanoseconds). A deadline in the
    /// past fires at once.
    ///
    /// A timer is named by its time (see the type's docs): a periodic timer and an
    /// absolute one whose times are the same number of nanoseconds are the same kevent,
    /// and the second ADD is `EEXIST` — as are two that saturate at `u64::MAX` ns
    /// (`Duration::MAX`, a deadline centuries away).
    pub fn timer_at(deadline: Instant) -> Source {
        let ahead = deadline.saturating_duration_since(Instant::now());
        Source {
            kind: Kind::Timer,
            id: kevent_ring::monotonic_now()
                .saturating_add(nanos(ahead))
                .max(1),
            event: sys::KEVENT_TIMER_FIRED | sys::KEVENT_TIMER_ABSTIME,
        }
    }

    /// `KEVENT_POSIX_TIMER`: fires once at wall-clock time `at` (`CLOCK_REALTIME`; follows
    /// clock changes). A time before 1970 is `EINVAL` at ADD.
    pub fn posix_timer(at: SystemTime) -> Source {
        Source {
            kind: Kind::PosixTimer,
            id: at.duration_since(UNIX_EPOCH).map(nanos).unwrap_or(0),
            event: sys::KEVENT_TIMER_FIRED,
        }
    }

    /// `KEVENT_SIGNAL`: signal `signo` arrived; the event counts the arrivals. The signal
    /// is *also* delivered the usual way (the queue counts it and then calls the handler
    /// installed before, if any; a default action is replaced by counting while the
    /// kevent is registered). When the last signal kevent on `signo` goes (remove, or
    /// its queue is dropped) the previous disposition comes back.
    ///
    /// SIGKILL and SIGSTOP cannot be caught, and the fault signals SIGSEGV, SIGBUS,
    /// SIGILL and SIGFPE must keep crashing the faulting thread: all six are `EINVAL` at
    /// ADD. A process that [`connect`](crate::Queue::connect)ed gets `EPERM` unless the
    /// owner built the queue with
    /// [`Builder::remote_signals`](crate::Builder::remote_signals).
    pub fn signal(signo: i32) -> Source {
        Source {
            kind: Kind::Signal,
            id: u64::from(signo as u32),
            event: sys::KEVENT_SIGNAL_DELIVERY,
        }
    }

    /// `KEVENT_SIGNAL` with `KEVENT_SIGNAL_NOMASK`: signal `signo` is delivered *only*
    /// through the queue: the queue's handler counts it and does not pass it on to the
    /// handler installed before. Otherwise as [`Source::signal`].
    pub fn signal_nomask(signo: i32) -> Source {
        Source {
            id: u64::from(signo as u32) | sys::KEVENT_SIGNAL_NOMASK,
            ..Source::signal(signo)
        }
    }

    /// `KEVENT_USER`: an event with no source of its own, made ready by
    /// [`Queue::ready`](crate::Queue::ready) from any thread. `id` names it.
    pub fn user(id: u64) -> Source {
        Source {
            kind: Kind::User,
            id,
            event: sys::KEVENT_USER_READY,
        }
    }

    /// `KEVENT_INODE`: entries created in or removed from the directory open at `dir`.
    pub fn inode(dir: &impl AsFd, events: InodeEvents) -> Source {
        Source::fd(Kind::Inode, dir.as_fd().as_raw_fd(), events.bits())
    }

    /// Any kevent, from its C fields (`type`, `id`, `event`): the escape hatch for what
    /// the constructors above do not spell.
    pub fn from_raw(kind: Kind, id: u64, event: u32) -> Source {
        Source { kind, id, event }
    }

    /// The kevent type.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The kevent id (`ukevent.id.raw_u64`).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The event mask (`ukevent.event`).
    pub fn events(&self) -> u32 {
        self.event
    }

    /// The `ukevent` for a control call.
    pub(crate) fn ukevent(&self, user: u64, req_flags: u32) -> sys::Ukevent {
        sys::Ukevent {
            id: self.id,
            type_: self.kind.to_raw(),
            event: self.event,
            req_flags,
            user,
            ..Default::default()
        }
    }
}

impl fmt::Display for Source {
    /// How errors name the kevent: "fd 7 (pipe)", "timer every 1s", "signal 10",
    /// "user event 3".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let low = self.id as u32;
        match self.kind {
            Kind::Socket => write!(f, "fd {} (socket)", low as i32),
            Kind::Pipe => write!(f, "fd {} (pipe)", low as i32),
            Kind::Poll => write!(f, "fd {} (poll)", low as i32),
            Kind::Inode => write!(f, "directory fd {} (inode)", low as i32),
            Kind::Timer if self.event & sys::KEVENT_TIMER_ABSTIME != 0 => {
                write!(f, "timer at monotonic {}ns", self.id)
            }
            Kind::Timer if self.event & sys::KEVENT_TIMER_ONCE != 0 => {
                write!(f, "timer once after {:?}", Duration::from_nanos(self.id))
            }
            Kind::Timer => write!(f, "timer every {:?}", Duration::from_nanos(self.id)),
            Kind::PosixTimer => write!(f, "posix timer at {}ns since the epoch", self.id),
            Kind::Signal => {
                let signo = self.id & !sys::KEVENT_SIGNAL_NOMASK;
                if self.id & sys::KEVENT_SIGNAL_NOMASK != 0 {
                    write!(f, "signal {signo} (nomask)")
                } else {
                    write!(f, "signal {signo}")
                }
            }
            Kind::User => write!(f, "user event {}", self.id),
            Kind::Other(t) => write!(f, "kevent type {t} id {}", self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_c_numbers() {
        for t in 0..12 {
            assert_eq!(Kind::from_raw(t).to_raw(), t);
        }
        assert_eq!(Kind::from_raw(sys::KEVENT_AIO), Kind::Other(5));
    }

    #[test]
    fn a_nomask_signal_is_a_different_kevent_id() {
        let a = Source::signal(libc::SIGUSR1);
        let b = Source::signal_nomask(libc::SIGUSR1);
        assert_ne!(a.id(), b.id());
        assert_eq!(b.id() & !sys::KEVENT_SIGNAL_NOMASK, libc::SIGUSR1 as u64);
        assert_eq!(b.to_string(), format!("signal {} (nomask)", libc::SIGUSR1));
    }

    #[test]
    fn an_absolute_timer_in_the_past_still_has_a_valid_id() {
        let s = Source::timer_at(Instant::now() - Duration::from_secs(1));
        assert!(s.id() > 0);
    }
}
