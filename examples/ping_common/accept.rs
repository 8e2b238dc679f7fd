//! Accepting a batch of connections. Shared by `ping_kevent.rs` and `ping_epoll.rs`.

use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::SocketFlags;

/// Accepts until `EAGAIN`, at most `max` connections, handing each to `add`; returns how
/// many it accepted. Out of fds or memory, it says so (at most once a second, tracked in
/// `last_warning`), backs off a little, and leaves the connection in the backlog for
/// later or for another worker.
pub fn accept_some(
    listener: &TcpListener,
    max: usize,
    name: &str,
    last_warning: &mut Option<Instant>,
    mut add: impl FnMut(OwnedFd) -> io::Result<()>,
) -> io::Result<usize> {
    let mut accepted = 0;
    for _ in 0..max {
        match rustix::net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
            Ok(fd) => {
                accepted += 1;
                add(fd)?;
            }
            Err(Errno::AGAIN) => break,
            Err(Errno::INTR | Errno::CONNABORTED | Errno::PROTO) => continue,
            Err(e @ (Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)) => {
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    eprintln!("{name}: accept: {e}; backing off");
                    *last_warning = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(10));
                break;
            }
            Err(e) => {
                let e = io::Error::from(e);
                return Err(io::Error::new(e.kind(), format!("accept: {e}")));
            }
        }
    }
    Ok(accepted)
}
