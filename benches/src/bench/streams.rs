//! The streams of the workload: pipes, `AF_UNIX` socket pairs or loopback TCP
//! connections, created fresh for every run (never reused between backends).

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::net::{sockopt, AddressFamily, SocketFlags, SocketType};
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// What one stream is made of (`epoll_bench`'s three kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// `pipe2(O_NONBLOCK)`.
    Pipe,
    /// `socketpair(AF_UNIX, SOCK_STREAM)`.
    Unix,
    /// A TCP connection over 127.0.0.1 (`TCP_NODELAY` on both ends, so 1-byte writes are
    /// not coalesced by Nagle's algorithm).
    Tcp,
}

impl StreamKind {
    /// Every kind, in report order.
    pub const ALL: [StreamKind; 3] = [StreamKind::Pipe, StreamKind::Unix, StreamKind::Tcp];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Pipe => "pipe",
            StreamKind::Unix => "unix",
            StreamKind::Tcp => "tcp",
        }
    }

    /// Parses a command-line name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }
}

impl fmt::Display for StreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of `n` nonblocking streams: `read[i]` receives what is written to `write[i]`.
pub struct Streams {
    /// The kind of every stream.
    pub kind: StreamKind,
    /// Read ends, handed to the backend.
    pub read: Vec<OwnedFd>,
    /// Write ends, used by the writer thread only.
    pub write: Vec<OwnedFd>,
}

/// How long the creation of one loopback TCP connection may take before we give up.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

impl Streams {
    /// Creates `n` fresh streams of `kind` (all ends nonblocking and close-on-exec).
    pub fn create(kind: StreamKind, n: usize) -> io::Result<Self> {
        let mut read = Vec::with_capacity(n);
        let mut write = Vec::with_capacity(n);
        let listener = match kind {
            StreamKind::Tcp => Some(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?),
            _ => None,
        };
        if let Some(l) = &listener {
            l.set_nonblocking(true)?;
        }
        for _ in 0..n {
            let (r, w) = match (kind, &listener) {
                (StreamKind::Pipe, _) => pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?,
                (StreamKind::Unix, _) => rustix::net::socketpair(
                    AddressFamily::UNIX,
                    SocketType::STREAM,
                    SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                    None,
                )?,
                (StreamKind::Tcp, Some(l)) => tcp_pair(l)?,
                (StreamKind::Tcp, None) => unreachable!("a TCP listener exists for TCP streams"),
            };
            read.push(r);
            write.push(w);
        }
        Ok(Self { kind, read, write })
    }

    /// Number of streams.
    pub fn len(&self) -> usize {
        self.read.len()
    }

    /// True when there are no streams.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty()
    }
}

/// One loopback connection: `(accepted end = read, connecting end = write)`.
fn tcp_pair(listener: &TcpListener) -> io::Result<(OwnedFd, OwnedFd)> {
    let addr: SocketAddr = listener.local_addr()?;
    let client = TcpStream::connect_timeout(&addr, TCP_CONNECT_TIMEOUT)?;
    let deadline = Instant::now() + TCP_CONNECT_TIMEOUT;
    // The handshake is complete once connect returns, so accept normally succeeds at once;
    // the bounded retry only covers a slow softirq on a loaded machine.
    let server = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(e) => return Err(e),
        }
    };
    for s in [&client, &server] {
        s.set_nodelay(true)?;
        s.set_nonblocking(true)?;
        // Close with RST instead of entering TIME_WAIT: thousands of connections per run,
        // many runs, would otherwise exhaust the loopback's ephemeral ports.
        sockopt::set_socket_linger(s, Some(Duration::ZERO))?;
    }
    Ok((OwnedFd::from(server), OwnedFd::from(client)))
}

/// File descriptors a run needs besides its streams (epoll and io_uring fds, the
/// listener, the shared mappings' slack, stdio).
pub const FD_SLACK: u64 = 64;

/// The descriptor limit after [`raise_nofile_limit`]: `(soft, hard)`; `None` = unlimited.
pub fn nofile_limit() -> (Option<u64>, Option<u64>) {
    let l = getrlimit(Resource::Nofile);
    (l.current, l.maximum)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the resulting soft limit.
pub fn raise_nofile_limit() -> io::Result<Option<u64>> {
    let l = getrlimit(Resource::Nofile);
    if l.current != l.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: l.maximum,
                maximum: l.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

/// `Err(reason)` when `n` streams cannot fit under the descriptor limit.
pub fn check_fd_budget(n: usize) -> Result<(), String> {
    let need = 2 * n as u64 + FD_SLACK;
    match nofile_limit() {
        (Some(soft), hard) if soft < need => Err(format!(
            "needs {need} file descriptors but RLIMIT_NOFILE is {soft} (hard {})",
            hard.map_or("unlimited".to_string(), |h| h.to_string())
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{StreamKind, Streams};

    #[test]
    fn every_kind_delivers_a_written_byte_to_its_read_end() {
        for kind in StreamKind::ALL {
            let s = Streams::create(kind, 3).unwrap();
            assert_eq!(s.len(), 3);
            rustix::io::write(&s.write[1], b"x").unwrap();
            let mut buf = [0u8; 8];
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let n = loop {
                match rustix::io::read(&s.read[1], &mut buf) {
                    Ok(n) => break n,
                    Err(rustix::io::Errno::AGAIN) if std::time::Instant::now() < deadline => {}
                    Err(e) => panic!("{kind}: {e}"),
                }
            };
            assert_eq!(n, 1, "{kind}");
            assert_eq!(
                rustix::io::read(&s.read[0], &mut buf),
                Err(rustix::io::Errno::AGAIN)
            );
        }
    }
}
