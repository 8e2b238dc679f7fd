//! Fds of the tests: pipes and sockets (a raw connection to a gate too), filling and
//! draining them, waiting for one to be readable, the fd limit, and this process's fd
//! table as `/proc/self/fd` shows it.

use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Once;
use std::time::Duration;

/// A pipe: `(read end, write end)`.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let (r, w) = std::io::pipe().expect("pipe");
    (OwnedFd::from(r), OwnedFd::from(w))
}

/// A pipe with both ends non-blocking: `(read end, write end)`.
pub fn nonblocking_pipe() -> (OwnedFd, OwnedFd) {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC)
        .expect("pipe2")
}

/// A connected pair of Unix stream sockets (blocking, close-on-exec).
pub fn socketpair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair")
}

pub fn set_nonblocking(fd: &impl AsFd) {
    let fd = fd.as_fd();
    let fl = rustix::fs::fcntl_getfl(fd).expect("F_GETFL");
    rustix::fs::fcntl_setfl(fd, fl | rustix::fs::OFlags::NONBLOCK).expect("F_SETFL");
}

pub fn write_bytes(fd: &impl AsFd, bytes: &[u8]) {
    assert_eq!(rustix::io::write(fd, bytes).expect("write"), bytes.len());
}

/// Writes into a non-blocking fd until it would block; returns how much it wrote.
pub fn fill(fd: &impl AsFd) -> usize {
    let buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match rustix::io::write(fd, &buf) {
            Ok(n) => total += n,
            Err(rustix::io::Errno::AGAIN) => return total,
            Err(e) => panic!("write: {e}"),
        }
    }
}

/// Reads a non-blocking fd until it would block; returns how much it read.
pub fn drain(fd: &impl AsFd) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match rustix::io::read(fd, &mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(rustix::io::Errno::AGAIN) => return total,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Raises `RLIMIT_NOFILE` (soft and hard) to at least `n` for the whole process. The
/// tests run as root, so the hard limit may be raised.
pub fn raise_fd_limit(n: u64) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we own.
        let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
        assert_eq!(
            r,
            0,
            "getrlimit(RLIMIT_NOFILE): {}",
            io::Error::last_os_error()
        );
        if lim.rlim_cur >= n && lim.rlim_max >= n {
            return;
        }
        let new = libc::rlimit {
            rlim_cur: lim.rlim_cur.max(n),
            rlim_max: lim.rlim_max.max(n),
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
            panic!(
                "cannot raise RLIMIT_NOFILE from {}/{} to {n} (this test needs root or \
                 CAP_SYS_RESOURCE): {}",
                lim.rlim_cur,
                lim.rlim_max,
                io::Error::last_os_error()
            );
        }
    });
}

/// Whether `fd` becomes readable (or hung up) within `timeout`.
pub fn readable_within(fd: impl AsFd, timeout: Duration) -> bool {
    let ts = rustix::time::Timespec::try_from(timeout).expect("timeout");
    let mut pfd = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    rustix::event::poll(&mut pfd, Some(&ts)).expect("poll") == 1
}

/// Waits up to `timeout` for `fd` to be readable; then reads one byte.
pub fn read_byte(fd: impl AsFd, timeout: Duration) -> Option<u8> {
    if !readable_within(&fd, timeout) {
        return None;
    }
    let mut b = [0u8; 1];
    match rustix::io::read(fd, &mut b) {
        Ok(1) => Some(b[0]),
        _ => None,
    }
}

/// A Unix `SOCK_SEQPACKET` socket (close-on-exec), what a queue's gate speaks.
pub fn seqpacket() -> OwnedFd {
    rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::SEQPACKET,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .expect("socket")
}

/// The Unix socket address of `path` (a gate served with `Instance::listen`).
pub fn path_addr(path: &Path) -> rustix::net::SocketAddrUnix {
    rustix::net::SocketAddrUnix::new(path).expect("path address")
}

/// Whether `n` is an open fd of this process.
pub fn is_open(n: RawFd) -> bool {
    // SAFETY: F_GETFD on any number only reads its flags.
    unsafe { libc::fcntl(n, libc::F_GETFD) >= 0 }
}

/// This process's open fd numbers (the directory's own fd, closed by then, left out).
pub fn my_fds() -> Vec<RawFd> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    listed.into_iter().filter(|&n| is_open(n)).collect()
}

/// Number of this process's fds that are the socket with inode `ino`.
pub fn my_fds_on_socket(ino: u64) -> usize {
    let want = format!("socket:[{ino}]");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_str() == Some(want.as_str()))
        .count()
}
