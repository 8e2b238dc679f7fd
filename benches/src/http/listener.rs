//! Listening sockets and `accept`, as every back-end but tokio makes them: non-blocking,
//! close-on-exec, `SO_REUSEADDR`, optionally `SO_REUSEPORT`, the largest backlog the
//! system allows; accepted sockets come non-blocking in one `accept4`.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;

use rustix::net::{self as rnet, sockopt, AddressFamily, SocketFlags, SocketType};

/// The listen backlog asked for; the kernel caps it at `net.core.somaxconn`.
pub const BACKLOG: i32 = 65535;

/// At most this many connections are accepted per listener event, so that a worker
/// does not stay in `accept` while its connections wait.
pub const ACCEPT_BATCH: usize = 64;

/// A non-blocking listening socket bound to `addr`; `reuseport` sets `SO_REUSEPORT`
/// (several sockets on one port, the kernel spreading connections between them).
pub fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rnet::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_socket_reuseaddr(&fd, true)?;
    if reuseport {
        sockopt::set_socket_reuseport(&fd, true)?;
    }
    rnet::bind(&fd, &addr)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("bind {addr}: {e}")))?;
    rnet::listen(&fd, BACKLOG)?;
    Ok(TcpListener::from(fd))
}

/// Accepts one connection, non-blocking and close-on-exec (`accept4`).
///
/// # Errors
/// `WouldBlock` when none is waiting; the others of `accept(2)`.
pub fn accept(listener: &impl AsFd) -> io::Result<TcpStream> {
    let fd = rnet::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    Ok(TcpStream::from(fd))
}

/// Whether an `accept` error is about this one connection (it went away, or the
/// process is out of fds for now) rather than the listener: the server goes on.
pub fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EPROTO
                | libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EPERM
        )
    ) || e.kind() == io::ErrorKind::Interrupted
}

/// Prints the line the benchmark script and the tests wait for:
/// `kevent-httpd: listening on ADDR`.
pub fn announce(listener: &TcpListener) -> io::Result<SocketAddr> {
    use std::io::Write;
    let addr = listener.local_addr()?;
    let mut out = io::stdout().lock();
    writeln!(out, "kevent-httpd: listening on {addr}")?;
    out.flush()?;
    Ok(addr)
}
