//! [`Event`]: one delivered kevent, and [`Readiness`], what it reports.

use std::os::fd::RawFd;

use kevent_syscalls as sys;

use crate::{InodeEvents, Interest, Kind, PollMask, Token};

/// One event taken from the ring (or returned by ADD): a copy of the 40-byte `ukevent`,
/// read with accessors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Event {
    raw: sys::Ukevent,
}

/// What an [`Event`] reports, typed by the kind of its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Readiness {
    /// A socket or pipe: which of its interests are ready.
    Io(Interest),
    /// A [`Source::poll`](crate::Source::poll) kevent: the `poll(2)` bits that are set.
    Poll(PollMask),
    /// A timer expired ([`Event::count`] says how many times).
    Timer,
    /// A signal arrived ([`Event::count`] says how many times).
    Signal,
    /// Entries were created or removed in a watched directory.
    Inode(InodeEvents),
    /// A user event was made ready; the bits given to READY (or `KEVENT_USER_READY`).
    User(u32),
    /// A kind this library has no name for: the raw event bits.
    Other(u32),
}

impl Event {
    /// The event as the kernel wrote it.
    #[inline]
    pub fn from_raw(raw: sys::Ukevent) -> Event {
        Event { raw }
    }

    /// The cookie given at [`add`](crate::Queue::add) (or the last
    /// [`modify`](crate::Queue::modify)).
    pub fn token(&self) -> Token {
        Token(self.raw.user)
    }

    /// The kind of source.
    pub fn kind(&self) -> Kind {
        Kind::from_raw(self.raw.type_)
    }

    /// The kevent id: the fd number, the timer period, the signal number, the user id.
    pub fn id(&self) -> u64 {
        self.raw.id
    }

    /// The fd number of an fd source (socket, pipe, poll, inode), `None` otherwise: the
    /// number in the process that added the kevent (a consumer in another process has
    /// its own fd table; map the [`token`](Event::token) to your own fd instead).
    pub fn fd(&self) -> Option<RawFd> {
        self.kind().has_fd().then_some(self.raw.id as u32 as RawFd)
    }

    /// What the event reports, typed by its kind.
    pub fn readiness(&self) -> Readiness {
        let bits = self.raw.event;
        match self.kind() {
            Kind::Socket | Kind::Pipe => Readiness::Io(Interest::from_bits_retain(bits)),
            Kind::Poll => Readiness::Poll(PollMask::from_bits_retain(bits)),
            Kind::Timer | Kind::PosixTimer => Readiness::Timer,
            Kind::Signal => Readiness::Signal,
            Kind::Inode => Readiness::Inode(InodeEvents::from_bits_retain(bits)),
            Kind::User => Readiness::User(bits),
            Kind::Other(_) => Readiness::Other(bits),
        }
    }

    /// Whether a socket, pipe or poll source is readable (or at EOF, or in error: the
    /// next read says which). `false` for other kinds.
    pub fn is_readable(&self) -> bool {
        match self.readiness() {
            Readiness::Io(i) => i.intersects(Interest::READABLE | Interest::ACCEPT),
            Readiness::Poll(p) => p.intersects(PollMask::IN | PollMask::HUP | PollMask::ERR),
            _ => false,
        }
    }

    /// Whether a socket, pipe or poll source is writable (or in error). `false` for other
    /// kinds.
    pub fn is_writable(&self) -> bool {
        match self.readiness() {
            Readiness::Io(i) => i.contains(Interest::WRITABLE),
            Readiness::Poll(p) => p.intersects(PollMask::OUT | PollMask::ERR),
            _ => false,
        }
    }

    /// The count the kernel put in `ret_data` (as one 64-bit number): timer expirations,
    /// signal arrivals, inode events or user READY calls since the previous event of this
    /// kevent was published (arrivals while an event is outstanding go into the next
    /// one). 0 for fd readiness, which is a state, not a count.
    pub fn count(&self) -> u64 {
        if self.kind().has_fd() && self.kind() != Kind::Inode {
            return 0;
        }
        u64::from(self.raw.ret_data[0]) | u64::from(self.raw.ret_data[1]) << 32
    }

    /// The `poll(2)` status flags an fd event carries (`ret_data[1]`; 0 for other kinds).
    fn status(&self) -> PollMask {
        match self.kind() {
            Kind::Socket | Kind::Pipe | Kind::Poll => {
                PollMask::from_bits_retain(self.raw.ret_data[1])
            }
            _ => PollMask::empty(),
        }
    }

    /// Whether the read side of a socket or pipe is closed: the peer shut down writing or
    /// went away (`POLLRDHUP` or `POLLHUP`). A read returns what is left, then 0.
    ///
    /// End of file is a state, not an edge: a **level-triggered** kevent at EOF stays
    /// ready and is reported again after every commit until it is
    /// [`remove`](crate::Queue::remove)d — a loop that drains with zero-timeout waits
    /// until an empty batch would never see one. Remove it when the read returns 0
    /// (before dropping the socket: its fd number may be reused), as below.
    ///
    /// ```
    /// # use kevent::{Interest, Queue, Source, Token, Trigger};
    /// # use std::io::Read;
    /// # use std::time::Duration;
    /// let queue = Queue::builder().capacity(8).build()?;
    /// let (mut ours, theirs) = std::os::unix::net::UnixStream::pair()?;
    /// queue.add(&Source::socket(&ours, Interest::READABLE), Token(1), Trigger::Edge)?;
    /// drop(theirs); // the peer goes away
    /// let batch = queue.wait(8, Some(Duration::from_secs(5)))?;
    /// let ev = batch.iter().next().expect("an event");
    /// assert!(ev.is_readable() && ev.is_read_closed());
    /// assert_eq!(ours.read(&mut [0; 8])?, 0); // end of file: remove, then drop it
    /// queue.remove(&Source::socket(&ours, Interest::READABLE))?;
    /// # Ok::<(), kevent::Error>(())
    /// ```
    pub fn is_read_closed(&self) -> bool {
        self.status().intersects(PollMask::RDHUP | PollMask::HUP)
    }

    /// Whether the write side is closed (`POLLHUP`, or `POLLERR`): writing fails.
    pub fn is_write_closed(&self) -> bool {
        self.status().intersects(PollMask::HUP | PollMask::ERR)
    }

    /// Whether the fd is in error (`POLLERR`): the next read or write (or
    /// `SO_ERROR`) says which.
    pub fn is_error(&self) -> bool {
        self.status().contains(PollMask::ERR)
    }

    /// Whether priority (out-of-band) data is waiting (`POLLPRI`; ask for it with a
    /// [`Source::poll`](crate::Source::poll) mask including [`PollMask::PRI`]).
    pub fn is_priority(&self) -> bool {
        self.status().contains(PollMask::PRI)
    }

    /// `KEVENT_RET_REDELIVERED`: this event was delivered before, to a consumer that died
    /// before committing it, or that held it past its lease while the ring was needed
    /// ([`Builder::lease`](crate::Builder::lease)) — at-least-once delivery. Make its
    /// handling idempotent.
    pub fn is_redelivered(&self) -> bool {
        self.raw.ret_flags & sys::KEVENT_RET_REDELIVERED != 0
    }

    /// The raw `ukevent`.
    pub fn as_raw(&self) -> &sys::Ukevent {
        &self.raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_event_counts_expirations_in_64_bits() {
        let ev = Event::from_raw(sys::Ukevent {
            type_: sys::KEVENT_TIMER,
            event: sys::KEVENT_TIMER_FIRED,
            ret_data: [3, 1],
            user: 9,
            ..Default::default()
        });
        assert_eq!(ev.count(), (1 << 32) + 3);
        assert_eq!(ev.readiness(), Readiness::Timer);
        assert_eq!(ev.token(), Token(9));
        assert!(!ev.is_readable());
        assert_eq!(ev.fd(), None);
    }

    #[test]
    fn a_redelivered_pipe_event_says_so() {
        let ev = Event::from_raw(sys::Ukevent {
            id: 5,
            type_: sys::KEVENT_PIPE,
            event: sys::KEVENT_PIPE_READ,
            ret_flags: sys::KEVENT_RET_REDELIVERED,
            ..Default::default()
        });
        assert!(ev.is_redelivered());
        assert!(ev.is_readable());
        assert!(!ev.is_writable());
        assert_eq!(ev.fd(), Some(5));
    }
}
