//! A registration watches the caller's fd itself, as epoll does: it costs no fd of its
//! own, closing the fd ends it (the peer sees the close), and a number closed and reused
//! without REMOVE does not poison the next ADD.

mod util;

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;

use kevent_syscalls::*;
use util::proc::serial;
use util::*;

/// Edge-triggered: one event per write, however long the bytes stay unread.
fn socket_ev(s: &UnixStream, user: u64) -> Ukevent {
    fd_ev(KEVENT_SOCKET, s, KEVENT_SOCKET_RECV, KEVENT_REQ_ET, user)
}

#[test]
fn a_registration_costs_no_fd_of_its_own() {
    let _one = serial(); // the tests here count this process's fds: one at a time
    let q = Q::new(256);
    let pairs: Vec<(UnixStream, UnixStream)> =
        (0..100).map(|_| UnixStream::pair().unwrap()).collect();
    let before = my_fds().len();
    let mut evs: Vec<Ukevent> = pairs
        .iter()
        .enumerate()
        .map(|(i, (a, _))| socket_ev(a, i as u64))
        .collect();
    assert_eq!(q.add(&mut evs), 0);
    assert_eq!(my_fds().len(), before, "100 registrations opened fds");
    // And they work: the 3rd and the 100th.
    write_bytes(&pairs[2].1, b"x");
    write_bytes(&pairs[99].1, b"y");
    let mut users: Vec<u64> = q.collect(QUIET).iter().map(|e| e.user).collect();
    users.sort_unstable();
    assert_eq!(users, [2, 99]);
}

#[test]
fn closing_a_registered_socket_closes_the_connection() {
    let _one = serial(); // the tests here count this process's fds: one at a time
    let q = Q::new(64);
    let (a, mut b) = UnixStream::pair().unwrap();
    assert_eq!(q.add(&mut [socket_ev(&a, 1)]), 0);
    drop(a); // without REMOVE
    b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(b.read(&mut buf).unwrap(), 0, "the peer sees end-of-file");
}

#[test]
fn a_number_closed_and_reused_without_remove_can_be_added_again() {
    let _one = serial(); // the tests here count this process's fds: one at a time
    let q = Q::new(64);
    let (a, _a_peer) = UnixStream::pair().unwrap();
    let n = a.as_raw_fd();
    assert_eq!(q.add(&mut [socket_ev(&a, 1)]), 0);
    // Another socket gets the same number (dup2: the next socket would get the lowest
    // free number, which other tests' threads may take first).
    let (c0, c_peer) = UnixStream::pair().unwrap();
    drop(a);
    // SAFETY: `n` is free (we just closed it) and `c0` is open; dup2 makes `n` a second
    // fd of c0's socket, which the UnixStream below then owns alone.
    let c = unsafe {
        assert_eq!(libc::dup2(c0.as_raw_fd(), n), n);
        UnixStream::from_raw_fd(n)
    };
    drop(c0);
    c.set_nonblocking(true).unwrap();
    let mut e = [socket_ev(&c, 2)];
    assert_eq!(q.add(&mut e), 0, "ADD of the reused number: {:?}", e[0]);
    for round in 1..=3u8 {
        write_bytes(&c_peer, &[round]);
        let got = q.get_one();
        assert_eq!((got.user, got.id), (2, n as u64), "event {round}");
        drain(&c);
    }
    // A registered number that still names its file is EEXIST, as before.
    assert_eq!(q.add(&mut e), 1);
    assert_broken(&e[0], libc::EEXIST);
}

#[test]
fn one_fd_registered_under_two_kevent_types_reports_to_both() {
    let _one = serial(); // the tests here count this process's fds: one at a time
    let q = Q::new(64);
    let (a, b) = UnixStream::pair().unwrap();
    let mut evs = [
        socket_ev(&a, 1),
        fd_ev(KEVENT_POLL, &a, KEVENT_POLL_POLLIN, KEVENT_REQ_ET, 2),
    ];
    assert_eq!(q.add(&mut evs), 0, "{evs:?}");
    write_bytes(&b, b"x");
    let mut users: Vec<u64> = q.collect(QUIET).iter().map(|e| e.user).collect();
    users.sort_unstable();
    assert_eq!(users, [1, 2]);
}
