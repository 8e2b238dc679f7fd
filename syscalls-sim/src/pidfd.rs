//! Pidfds: fds that become readable when a process ends, however it ends — how the gate
//! learns that a connected peer died (even if a copy of its socket lives on), and how a
//! consumer in another process learns, in an event loop, that the owner died.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `SO_PEERPIDFD` (Linux 6.5): a pidfd of the process that connected a Unix socket.
const SO_PEERPIDFD: libc::c_int = 77;

/// A pidfd of the process at the other end of the connected Unix socket `sock`, whose
/// `SO_PEERCRED` pid is `pid`: `SO_PEERPIDFD` (race-free: the kernel took it at connect
/// time), else `pidfd_open(pid)` while the connection is not hung up (the process was
/// alive then, so the pid was still its own). `None` if neither works (the gate then
/// learns of the peer's end from the connection alone).
pub(crate) fn of_peer(sock: BorrowedFd<'_>, pid: u32) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes (one int) into `fd`, on our stack.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r == 0 && fd >= 0 {
        // SAFETY: the kernel made this fd for us; nobody else owns it.
        return Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let pidfd = open(pid)?;
    let mut pfd = [rustix::event::PollFd::new(
        &sock,
        rustix::event::PollFlags::RDHUP,
    )];
    let zero = kevent_ring::timespec(0);
    match rustix::event::poll(&mut pfd, Some(&zero)) {
        Ok(0) => Some(pidfd),
        _ => None,
    }
}

/// `pidfd_open(pid, 0)` (Linux 5.3), close-on-exec.
pub(crate) fn open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd the kernel made for us (pidfds are close-on-exec).
    Some(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Whether the process of `pidfd` has ended (the pidfd is readable), without waiting.
pub(crate) fn exited(pidfd: BorrowedFd<'_>) -> bool {
    let mut pfd = [rustix::event::PollFd::from_borrowed_fd(
        pidfd,
        rustix::event::PollFlags::IN,
    )];
    matches!(
        rustix::event::poll(&mut pfd, Some(&kevent_ring::timespec(0))),
        Ok(1)
    )
}
