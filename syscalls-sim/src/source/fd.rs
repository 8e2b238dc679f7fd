//! Sockets, pipes/FIFOs and generic poll masks: readiness through the producer's epoll.
//!
//! Every fd source is registered `EPOLLET` in the producer's epoll whatever its kevent
//! trigger mode: a level-triggered epoll reports a ready fd at *every* `epoll_wait`, also
//! while its entry is out, and would keep a second harvester, the producer thread or the
//! poller spinning until the commit. A level-triggered kevent is re-checked instead, with
//! one batched `poll(2)`, when its entry ends (`kernel/mod.rs`, `kernel/release.rs`) — so
//! it never has more than one entry outstanding.
//!
//! That re-check is a system call per commit, which a lone consumer — an event loop above
//! all, one event per iteration — pays on top of epoll's own level-triggered loop. So at
//! a re-check while the producer thread is parked (consumers harvest for themselves) a
//! level kevent moves to epoll's level-triggered mode
//! ([`Arm::Level`](crate::registration::Arm), one `EPOLL_CTL_MOD`, which re-checks it as
//! the `poll(2)` would): from then on epoll reports it again at the next `epoll_wait`
//! while it is ready, and the end of its entry costs nothing. A report of it taken while
//! its entry is out — by another consumer's harvest, by the producer thread, or because
//! the ring is full — means a second waiter: it is merged as before, and the fd goes back
//! to `EPOLLET` (one more `EPOLL_CTL_MOD`), held there for 128 re-checks, then 256, …
//! up to 65,536 ([`level_hold`](crate::registration::level_hold)) before it may move
//! again: a shared kevent pays a few calls over its first tens of thousands of events
//! and then almost none, a lone consumer disturbed once comes back soon. (A harvest's
//! `epoll_wait(0)` cannot spin: one that meets such a re-report — its own second batch
//! meeting the first batch's entries — drops it.) A report taken
//! by a wait entered while its entry was out, and looked at after the entry ended, may
//! be of readiness the consumer has read since (a level-triggered epoll hands its
//! re-report to every waiter it wakes): it is believed only if `poll(2)` agrees
//! (`Kernel::on_fd_token`).
//!
//! The caller's fd itself is registered, by number — no duplicate, so a registration
//! costs no fd and closing the last fd of a file ends it, as with epoll. REMOVE before
//! close is the contract; a number closed and reused without it is recognised by the
//! file's identity (device, inode) and the stale registration is dropped.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::abi::*;
use crate::epoll;

/// Every fd source enters the epoll set edge-triggered (see the module docs).
const EPOLLET: u32 = libc::EPOLLET as u32;

/// The `poll(2)` bits a `KEVENT_POLL` kevent may ask for.
const POLL_ASKABLE: u32 =
    KEVENT_POLL_POLLIN | KEVENT_POLL_POLLPRI | KEVENT_POLL_POLLOUT | KEVENT_POLL_POLLRDHUP;
const POLL_ALWAYS: u32 = KEVENT_POLL_POLLERR | KEVENT_POLL_POLLHUP;

/// Validates the event mask of an fd kevent; returns the `poll(2)` interest.
pub(crate) fn interest(type_: u32, event: u32) -> Result<u32, i32> {
    match type_ {
        KEVENT_SOCKET | KEVENT_PIPE => {
            // A pipe has no connections to accept: READ and WRITE only.
            let known = if type_ == KEVENT_PIPE {
                KEVENT_PIPE_READ | KEVENT_PIPE_WRITE
            } else {
                KEVENT_SOCKET_RECV | KEVENT_SOCKET_ACCEPT | KEVENT_SOCKET_SEND
            };
            if event == 0 || event & !known != 0 {
                return Err(libc::EINVAL);
            }
            let mut p = 0;
            if event & (KEVENT_SOCKET_RECV | KEVENT_SOCKET_ACCEPT) != 0 {
                p |= KEVENT_POLL_POLLIN | KEVENT_POLL_POLLRDHUP;
            }
            if event & KEVENT_SOCKET_SEND != 0 {
                p |= KEVENT_POLL_POLLOUT;
            }
            Ok(p)
        }
        KEVENT_POLL => {
            if event & POLL_ASKABLE == 0 || event & !(POLL_ASKABLE | POLL_ALWAYS) != 0 {
                return Err(libc::EINVAL);
            }
            Ok(event & POLL_ASKABLE)
        }
        _ => Err(libc::ENOSYS),
    }
}

/// Translates `poll(2)` revents into the kevent event bits the kevent asked for (errors
/// and hang-ups make a reader or writer ready, so that it learns of them by reading).
pub(crate) fn report(type_: u32, event: u32, revents: u32) -> u32 {
    match type_ {
        KEVENT_POLL => revents & (event | POLL_ALWAYS),
        _ => {
            let mut out = 0;
            let readable = KEVENT_POLL_POLLIN
                | KEVENT_POLL_POLLRDHUP
                | KEVENT_POLL_POLLHUP
                | KEVENT_POLL_POLLERR;
            let writable = KEVENT_POLL_POLLOUT | KEVENT_POLL_POLLHUP | KEVENT_POLL_POLLERR;
            if revents & readable != 0 {
                out |= event & (KEVENT_SOCKET_RECV | KEVENT_SOCKET_ACCEPT);
            }
            if revents & writable != 0 {
                out |= event & KEVENT_SOCKET_SEND;
            }
            out
        }
    }
}

/// The identity of an open file: device and inode, from `fstat`.
pub(crate) type FileId = (u64, u64);

/// The identity of the file `raw` refers to now (`None`: not an open fd).
pub(crate) fn identity(raw: RawFd) -> Option<FileId> {
    if raw < 0 {
        return None;
    }
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a `stat` into the buffer we own, or fails (EBADF) without
    // touching it; the fd number is only looked up, never used to read or write.
    let r = unsafe { libc::fstat(raw, st.as_mut_ptr()) };
    if r != 0 {
        return None;
    }
    // SAFETY: fstat succeeded, so it initialised the whole struct.
    let st = unsafe { st.assume_init() };
    Some((st.st_dev, st.st_ino))
}

/// The fd behind an fd kevent.
#[derive(Debug)]
pub(crate) enum Watched {
    /// The caller's own fd, by number: a registration costs no fd of its own. The file's
    /// identity at ADD recognises a number that was closed and reused for another file
    /// without REMOVE (as epoll does, we watch the file, not the number: closing the
    /// last fd of a file ends its registration in epoll).
    Yours { raw: RawFd, file: FileId },
    /// A duplicate we own: an fd received from another process through the gate, or a
    /// second registration of one fd under another kevent type (epoll takes a file and
    /// fd number pair once).
    Ours(OwnedFd),
}

impl Watched {
    /// The fd number to hand to epoll and poll.
    pub(crate) fn raw(&self) -> RawFd {
        match self {
            Watched::Yours { raw, .. } => *raw,
            Watched::Ours(fd) => fd.as_raw_fd(),
        }
    }

    /// Whether the number still names the file registered.
    pub(crate) fn is_current(&self) -> bool {
        match self {
            Watched::Yours { raw, file } => identity(*raw) == Some(*file),
            Watched::Ours(_) => true,
        }
    }
}

/// Adds the caller's fd `raw` to `epoll`, edge-triggered, with `token`. Errors are the
/// entry's errno (`EBADF` for a bad fd, `EPERM` for a file epoll cannot watch).
pub(crate) fn register(
    epoll_fd: BorrowedFd<'_>,
    raw: RawFd,
    interest: u32,
    token: u64,
) -> Result<Watched, i32> {
    let file = identity(raw).ok_or(libc::EBADF)?;
    match epoll::add(epoll_fd, raw, token, interest | EPOLLET) {
        Ok(()) => Ok(Watched::Yours { raw, file }),
        // The same fd is registered under another kevent type: watch a duplicate.
        Err(libc::EEXIST) => register_dup(epoll_fd, raw, interest, token),
        Err(e) => Err(e),
    }
}

/// Duplicates `raw` (close-on-exec) and adds the duplicate to `epoll`.
pub(crate) fn register_dup(
    epoll_fd: BorrowedFd<'_>,
    raw: RawFd,
    interest: u32,
    token: u64,
) -> Result<Watched, i32> {
    if raw < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: F_DUPFD_CLOEXEC only looks the number up (EBADF if it is not open) and
    // returns a new fd that we own from here on.
    let dup = unsafe { libc::fcntl(raw, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EBADF));
    }
    // SAFETY: `dup` is a new fd nobody else owns.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    epoll::add(epoll_fd, dup.as_raw_fd(), token, interest | EPOLLET)?;
    Ok(Watched::Ours(dup))
}

/// Changes the interest of a registered fd.
pub(crate) fn modify(
    epoll_fd: BorrowedFd<'_>,
    w: &Watched,
    interest: u32,
    token: u64,
) -> Result<(), i32> {
    if !w.is_current() {
        return Err(libc::EBADF); // closed (or reused) without REMOVE
    }
    epoll::modify(epoll_fd, w.raw(), token, interest | EPOLLET)
}

/// Sets how a registered fd sits in `epoll`: level-triggered (`level`) or `EPOLLET`, with
/// the same interest and token. Like any `EPOLL_CTL_MOD`, it looks at the fd: one ready
/// now is reported by the next `epoll_wait` (which it wakes).
pub(crate) fn arm(
    epoll_fd: BorrowedFd<'_>,
    w: &Watched,
    interest: u32,
    token: u64,
    level: bool,
) -> Result<(), i32> {
    if !w.is_current() {
        return Err(libc::EBADF);
    }
    let mode = if level { 0 } else { EPOLLET };
    epoll::modify(epoll_fd, w.raw(), token, interest | mode)
}

/// Takes a registered fd out of `epoll` (nothing to do if its number no longer names
/// the registered file: epoll dropped it when the file closed).
pub(crate) fn delete(epoll_fd: BorrowedFd<'_>, w: &Watched) {
    if w.is_current() {
        let _ = epoll::delete(epoll_fd, w.raw());
    }
}

/// Current readiness of each `(fd, interest)` in one `poll(2)` call (the batched
/// level-triggered re-check). Returns the revents in the same order; a closed fd answers
/// `POLLNVAL`, which reports nothing.
pub(crate) fn poll_now(fds: &[(RawFd, u32)]) -> io::Result<Vec<u32>> {
    let mut pfds: Vec<libc::pollfd> = fds.iter().map(|&(fd, i)| pollfd(fd, i)).collect();
    poll_in_place(&mut pfds)?;
    Ok(pfds.iter().map(revents).collect())
}

/// A `pollfd` asking `fd` for `interest`.
pub(crate) fn pollfd(fd: RawFd, interest: u32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: interest as i16,
        revents: 0,
    }
}

/// The revents `poll(2)` wrote into `p`, as the kevent bits' type.
pub(crate) fn revents(p: &libc::pollfd) -> u32 {
    u32::from(p.revents as u16)
}

/// `poll(2)` with a zero timeout over `pfds`, which it fills in (retried on `EINTR`).
pub(crate) fn poll_in_place(pfds: &mut [libc::pollfd]) -> io::Result<()> {
    loop {
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfds we own; poll only
        // looks the fd numbers up.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 0) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}
