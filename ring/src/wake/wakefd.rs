//! [`WakeFd`]: the one way this library rings and resets a wake-up fd — the poller's bell,
//! the producer's doorbell, the notify fds of event loops (ARCHITECTURE.md §3 and §5).
//!
//! Two kinds, by who can reach the fd:
//!
//! * **Private to one process** (the bell, the owner's own notify fd): an eventfd.
//!   Cheapest (one `write` of 8 bytes); only the process that made it, and children it
//!   forks without `exec`, ever hold it.
//! * **Shared with other processes** (the doorbell every attached process receives, the
//!   notify channel of a consumer in another process): one end of an `AF_UNIX` stream
//!   socket pair. A peer of the same uid can change the file status flags of any open
//!   file description it shares with us (clear `O_NONBLOCK`), fill any counter or buffer
//!   behind it, and — for a pipe — hold the pipe's lock indefinitely (a `splice` from an
//!   idle socket into it). Through a socket we ring with `send(MSG_DONTWAIT)` and reset
//!   with `recv(MSG_DONTWAIT)`: per call, whatever the description's flags, and neither
//!   takes a lock the other end can hold. A full buffer loses no wake-up: the reading
//!   end is readable then anyway. An eventfd cannot be written that way (`pwritev2`
//!   with `RWF_NOWAIT` answers `EOPNOTSUPP` for it), which is why shared ones are
//!   sockets.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::event::{eventfd, EventfdFlags};
use rustix::io::Errno;
use rustix::net::{self, AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// A wake-up fd: rung by writers, reset by its reader, readable in between (see the
/// module docs for the two kinds).
#[derive(Debug)]
pub struct WakeFd {
    fd: OwnedFd,
    socket: bool,
}

/// What [`WakeFd::reset`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset {
    /// It had been rung since the last reset.
    pub was_set: bool,
    /// The other end of a socket is closed (by every process that held it): it will
    /// never be rung again, and stays readable.
    pub hung_up: bool,
}

impl WakeFd {
    /// An eventfd, private to this process (close-on-exec, non-blocking).
    pub fn private() -> io::Result<WakeFd> {
        Ok(WakeFd {
            fd: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?,
            socket: false,
        })
    }

    /// A channel to share: `(reader, writer)`, the two ends of a stream socket pair
    /// (close-on-exec, non-blocking). Hand the end the other process needs over, keep
    /// the other.
    pub fn pair() -> io::Result<(WakeFd, WakeFd)> {
        let (a, b) = net::socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        Ok((
            WakeFd {
                fd: a,
                socket: true,
            },
            WakeFd {
                fd: b,
                socket: true,
            },
        ))
    }

    /// Takes an fd made by [`WakeFd::private`] or [`WakeFd::pair`] (inherited, or received
    /// from another process): an eventfd or a Unix stream socket; anything else is
    /// `EINVAL` — this library rings nothing else.
    pub fn from_fd(fd: OwnedFd) -> io::Result<WakeFd> {
        let socket = match kind_of(fd.as_fd()) {
            Some(Kind::EventFd) => false,
            Some(Kind::UnixStream) => true,
            None => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        Ok(WakeFd { fd, socket })
    }

    /// Whether it is the shared kind (a socket).
    pub fn is_socket(&self) -> bool {
        self.socket
    }

    /// Another handle to the same fd (for the other end's process, or another owner).
    pub fn try_clone(&self) -> io::Result<WakeFd> {
        Ok(WakeFd {
            fd: self.fd.try_clone()?,
            socket: self.socket,
        })
    }

    /// Makes the reading end readable. Never blocks. `Err` only when the other end of a
    /// socket is gone (`EPIPE`, `ECONNRESET`): nobody will read it again.
    pub fn ring(&self) -> io::Result<()> {
        ring_fd(self.fd.as_fd(), self.socket)
    }

    /// Reads what was rung, so that the fd is not readable until the next ring. Never
    /// blocks.
    pub fn reset(&self) -> Reset {
        reset_fd(self.fd.as_fd(), self.socket)
    }
}

impl AsFd for WakeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}

impl From<WakeFd> for OwnedFd {
    fn from(w: WakeFd) -> OwnedFd {
        w.fd
    }
}

fn ring_fd(fd: BorrowedFd<'_>, socket: bool) -> io::Result<()> {
    if socket {
        match net::send(fd, &[1], SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            // Full: the reader has unread wake-ups already.
            Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        }
    } else {
        // An eventfd write of 1 fails only if the counter would overflow (it is readable
        // then anyway); the fd is non-blocking and private (module docs).
        let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        Ok(())
    }
}

fn reset_fd(fd: BorrowedFd<'_>, socket: bool) -> Reset {
    let mut out = Reset {
        was_set: false,
        hung_up: false,
    };
    if socket {
        // One read takes what a burst of rings left; a ringer faster than that (a peer
        // writing in a loop) leaves the fd readable, and the next look takes more —
        // a reset is bounded work, never a loop another process can keep going.
        let mut buf = [0u8; 1024];
        match net::recv(fd, &mut buf, RecvFlags::DONTWAIT) {
            Ok((0, _)) => out.hung_up = true,
            Ok(_) => out.was_set = true,
            Err(_) => {}
        }
        return out;
    }
    let mut buf = [0u8; 8];
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // RWF_NOWAIT: never blocks, even if a fork-inherited copy cleared O_NONBLOCK.
    // SAFETY: one iovec describing `buf`, which lives across the call; offset -1 reads
    // at the current position (an eventfd has none to move).
    let n = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, -1, libc::RWF_NOWAIT) };
    out.was_set = if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EOPNOTSUPP) {
        matches!(rustix::io::read(fd, &mut buf), Ok(8))
    } else {
        n == 8
    };
    out
}

enum Kind {
    EventFd,
    UnixStream,
}

/// What kind of wake-up fd `fd` is, if it is one.
fn kind_of(fd: BorrowedFd<'_>) -> Option<Kind> {
    if let Ok(st) = rustix::fs::fstat(fd) {
        if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket {
            let stream = net::sockopt::socket_type(fd).ok()? == SocketType::STREAM;
            let unix = net::sockopt::socket_domain(fd).ok()? == AddressFamily::UNIX;
            return (stream && unix).then_some(Kind::UnixStream);
        }
    }
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    (link.as_os_str() == "anon_inode:[eventfd]").then_some(Kind::EventFd)
}
