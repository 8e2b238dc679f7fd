//! Sockets, pipes/FIFOs and generic poll masks: readiness through the producer's epoll.
//!
//! Every fd source is registered `EPOLLET` in the producer's epoll whatever its kevent
//! trigger mode: the producer only needs the edges. Level-triggered kevents are re-checked
//! with one batched `poll(2)` after their entry is committed (see `kernel.rs`), so a level
//! source never keeps the producer's `epoll_wait` spinning and never has more than one
//! entry outstanding.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::epoll;

use crate::abi::*;

/// The `poll(2)` bits a `KEVENT_POLL` kevent may ask for.
const POLL_ASKABLE: u32 =
    KEVENT_POLL_POLLIN | KEVENT_POLL_POLLPRI | KEVENT_POLL_POLLOUT | KEVENT_POLL_POLLRDHUP;
const POLL_ALWAYS: u32 = KEVENT_POLL_POLLERR | KEVENT_POLL_POLLHUP;

/// Validates the event mask of an fd kevent; returns the `poll(2)` interest.
pub(crate) fn interest(type_: u32, event: u32) -> Result<u32, i32> {
    match type_ {
        KEVENT_SOCKET | KEVENT_PIPE => {
            let known = KEVENT_SOCKET_RECV | KEVENT_SOCKET_ACCEPT | KEVENT_SOCKET_SEND;
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

/// Duplicates the caller's fd (close-on-exec) and adds it to `epoll`, edge-triggered,
/// with `token`. Errors are the errno for the entry (`EBADF` for a bad fd, `EPERM` for a
/// file epoll cannot watch).
pub(crate) fn register(
    epoll_fd: BorrowedFd<'_>,
    fd: i32,
    interest: u32,
    token: u64,
) -> Result<OwnedFd, i32> {
    if fd < 0 {
        return Err(libc::EBADF);
    }
    // SAFETY: we only borrow the caller's fd for the duration of the dup; if it is not
    // open, fcntl fails with EBADF and nothing else happens.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let dup = rustix::io::fcntl_dupfd_cloexec(borrowed, 0).map_err(|e| e.raw_os_error())?;
    let flags = epoll::EventFlags::from_bits_retain(interest) | epoll::EventFlags::ET;
    epoll::add(epoll_fd, &dup, epoll::EventData::new_u64(token), flags)
        .map_err(|e| e.raw_os_error())?;
    Ok(dup)
}

/// Changes the interest of a registered duplicate.
pub(crate) fn modify(
    epoll_fd: BorrowedFd<'_>,
    dup: &OwnedFd,
    interest: u32,
    token: u64,
) -> io::Result<()> {
    let flags = epoll::EventFlags::from_bits_retain(interest) | epoll::EventFlags::ET;
    epoll::modify(epoll_fd, dup, epoll::EventData::new_u64(token), flags)?;
    Ok(())
}

/// Current readiness of each `(fd, interest)` in one `poll(2)` call (the batched
/// level-triggered re-check). Returns the revents in the same order.
pub(crate) fn poll_now(fds: &[(BorrowedFd<'_>, u32)]) -> io::Result<Vec<u32>> {
    let mut pfds: Vec<rustix::event::PollFd<'_>> = fds
        .iter()
        .map(|(fd, interest)| {
            rustix::event::PollFd::from_borrowed_fd(
                fd.as_fd(),
                rustix::event::PollFlags::from_bits_retain(*interest as u16),
            )
        })
        .collect();
    let zero = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut pfds, Some(&zero)) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(pfds.iter().map(|p| u32::from(p.revents().bits())).collect())
}
