//! Every event source (signals are in `signals.rs`): sockets, pipes, poll masks, timers,
//! user events and inode events (source/*.rs, ARCHITECTURE.md §4, "Sources").

mod util;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kevent_ring::{monotonic_now, realtime_now};
use kevent_syscalls::*;
use util::proc::thread_cpu;
use util::*;

// --- sockets and pipes ---------------------------------------------------------------

#[test]
fn socket_recv_reports_a_readable_socketpair() {
    let q = Q::new(64);
    let (r, w) = UnixStream::pair().unwrap();
    assert_eq!(
        q.add(&mut [fd_ev(KEVENT_SOCKET, &r, KEVENT_SOCKET_RECV, 0, 1)]),
        0
    );
    q.expect_none(QUIET);
    write_bytes(&w, b"x");
    let got = q.get_one();
    assert_eq!(
        (got.user, got.type_, got.event),
        (1, KEVENT_SOCKET, KEVENT_SOCKET_RECV)
    );
    assert_eq!(got.id, r.as_raw_fd() as u64);
}

#[test]
fn socket_send_reports_a_socket_that_became_writable() {
    let q = Q::new(64);
    let (r, w) = UnixStream::pair().unwrap();
    set_nonblocking(&w);
    set_nonblocking(&r);
    assert!(fill(&w) > 0);
    assert_eq!(
        q.add(&mut [fd_ev(KEVENT_SOCKET, &w, KEVENT_SOCKET_SEND, 0, 1)]),
        0,
        "a full socket is not writable"
    );
    q.expect_none(QUIET);
    drain(&r);
    let got = q.get_one();
    assert_eq!((got.user, got.event), (1, KEVENT_SOCKET_SEND));
}

#[test]
fn socket_accept_reports_a_connection_on_a_tcp_listener() {
    let q = Q::new(64);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        q.add(&mut [fd_ev(KEVENT_SOCKET, &listener, KEVENT_SOCKET_ACCEPT, 0, 1)]),
        0
    );
    q.expect_none(QUIET);
    let _client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let got = q.get_one();
    assert_eq!((got.user, got.event), (1, KEVENT_SOCKET_ACCEPT));
    listener.accept().unwrap();
}

#[test]
fn pipe_read_reports_a_pipe_with_data() {
    let q = Q::new(64);
    let (r, w) = pipe();
    q.add(&mut [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, 0, 1)]);
    q.expect_none(QUIET);
    write_bytes(&w, b"x");
    let got = q.get_one();
    assert_eq!(
        (got.user, got.type_, got.event),
        (1, KEVENT_PIPE, KEVENT_PIPE_READ)
    );
}

#[test]
fn pipe_read_reports_the_writer_closing() {
    let q = Q::new(64);
    let (r, w) = pipe();
    q.add(&mut [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, KEVENT_REQ_ET, 1)]);
    drop(w);
    let got = q.get_one();
    assert_eq!((got.user, got.event), (1, KEVENT_PIPE_READ));
}

#[test]
fn pipe_write_reports_a_pipe_that_became_writable() {
    let q = Q::new(64);
    let (r, w) = pipe();
    set_nonblocking(&w);
    set_nonblocking(&r);
    assert!(fill(&w) > 0);
    assert_eq!(
        q.add(&mut [fd_ev(KEVENT_PIPE, &w, KEVENT_PIPE_WRITE, 0, 1)]),
        0,
        "a full pipe is not writable"
    );
    q.expect_none(QUIET);
    drain(&r);
    let got = q.get_one();
    assert_eq!((got.user, got.event), (1, KEVENT_PIPE_WRITE));
}

#[test]
fn poll_pollin_reports_a_readable_fd() {
    let q = Q::new(64);
    let (r, w) = pipe();
    q.add(&mut [fd_ev(KEVENT_POLL, &r, KEVENT_POLL_POLLIN, 0, 1)]);
    q.expect_none(QUIET);
    write_bytes(&w, b"x");
    let got = q.get_one();
    assert_eq!((got.user, got.type_), (1, KEVENT_POLL));
    assert_eq!(
        got.event & KEVENT_POLL_POLLIN,
        KEVENT_POLL_POLLIN,
        "{got:?}"
    );
    assert_eq!(got.event & KEVENT_POLL_POLLOUT, 0, "{got:?}");
}

#[test]
fn poll_pollout_reports_a_writable_fd() {
    let q = Q::new(64);
    let (r, w) = UnixStream::pair().unwrap();
    set_nonblocking(&w);
    set_nonblocking(&r);
    fill(&w);
    q.add(&mut [fd_ev(KEVENT_POLL, &w, KEVENT_POLL_POLLOUT, 0, 1)]);
    q.expect_none(QUIET);
    drain(&r);
    let got = q.get_one();
    assert_eq!(got.user, 1);
    assert_eq!(
        got.event & KEVENT_POLL_POLLOUT,
        KEVENT_POLL_POLLOUT,
        "{got:?}"
    );
    assert_eq!(got.event & KEVENT_POLL_POLLIN, 0, "{got:?}");
}

#[test]
fn poll_with_no_askable_bit_is_einval() {
    let q = Q::new(64);
    let (r, _w) = pipe();
    let mut evs = [
        fd_ev(KEVENT_POLL, &r, 0, 0, 1),
        fd_ev(KEVENT_POLL, &r, KEVENT_POLL_POLLHUP, 0, 2),
    ];
    assert_eq!(q.add(&mut evs), 2);
    assert_broken(&evs[0], libc::EINVAL);
    assert_broken(&evs[1], libc::EINVAL);
}

// --- timers ---------------------------------------------------------------------------

#[test]
fn periodic_timer_counts_its_expirations_in_ret_data() {
    let q = Q::new(64);
    let start = Instant::now();
    q.add(&mut [ev(KEVENT_TIMER, 10 * MS, KEVENT_TIMER_FIRED, 0, 1)]);
    std::thread::sleep(Duration::from_millis(150));
    // The first expiration was published at 10 ms; the ones after it were merged and
    // come in the next entry.
    let first = q.get_one();
    assert_eq!((first.user, first.event), (1, KEVENT_TIMER_FIRED));
    let second = q.get_one();
    let counted = u64::from(first.ret_data[0]) + u64::from(second.ret_data[0]);
    let elapsed = start.elapsed().as_millis() as u64;
    assert!(second.ret_data[0] >= 5, "merged expirations: {second:?}");
    assert!(
        counted <= elapsed / 10,
        "{counted} expirations of a 10 ms timer in {elapsed} ms"
    );
    assert_eq!(first.ret_data[1], 0, "high half of the count");
    // And it keeps firing.
    assert_eq!(q.get_one().user, 1);
}

#[test]
fn a_nanosecond_timer_does_not_keep_the_producer_busy_while_its_event_waits() {
    let q = Q::new(64);
    q.add(&mut [ev(KEVENT_TIMER, 1, KEVENT_TIMER_FIRED, 0, 1)]);
    std::thread::sleep(Duration::from_millis(20)); // the producer thread records its tid
    let tid = q.queue().producer_tid().expect("producer runs");
    // Nobody takes the event for 500 ms.
    std::thread::sleep(Duration::from_millis(50));
    let before = thread_cpu(tid);
    std::thread::sleep(Duration::from_millis(500));
    let spent = thread_cpu(tid) - before;
    assert!(
        spent < Duration::from_millis(100),
        "the producer spent {spent:?} of CPU in 500 ms on a pending timer"
    );
    // The expirations meanwhile were counted, not lost: the next event carries them.
    let first = q.get_one();
    let second = q.get_one();
    assert_eq!((first.user, second.user), (1, 1));
    assert!(
        second.ret_data[0] > 1000 || second.ret_data[1] > 0,
        "{second:?}"
    );
}

#[test]
fn one_shot_timer_fires_once() {
    let q = Q::new(64);
    let start = Instant::now();
    q.add(&mut [ev(
        KEVENT_TIMER,
        20 * MS,
        KEVENT_TIMER_FIRED | KEVENT_TIMER_ONCE,
        0,
        1,
    )]);
    let got = q.get_one();
    assert!(start.elapsed() >= Duration::from_millis(20));
    assert_eq!(
        (got.user, got.event, got.ret_data[0]),
        (1, KEVENT_TIMER_FIRED, 1)
    );
    q.expect_none(Duration::from_millis(100));
}

#[test]
fn absolute_timer_fires_once_at_its_monotonic_time() {
    let q = Q::new(64);
    let at = monotonic_now() + 30 * MS;
    q.add(&mut [ev(
        KEVENT_TIMER,
        at,
        KEVENT_TIMER_FIRED | KEVENT_TIMER_ABSTIME,
        0,
        1,
    )]);
    let got = q.get_one();
    assert!(monotonic_now() >= at, "fired early");
    assert_eq!((got.user, got.ret_data[0]), (1, 1));
    q.expect_none(Duration::from_millis(100));
}

#[test]
fn absolute_timer_in_the_past_fires_at_once() {
    let q = Q::new(64);
    let start = Instant::now();
    q.add(&mut [ev(
        KEVENT_TIMER,
        1,
        KEVENT_TIMER_FIRED | KEVENT_TIMER_ABSTIME,
        0,
        1,
    )]);
    assert_eq!(q.get_one().user, 1);
    assert!(start.elapsed() < Duration::from_secs(1));
}

#[test]
fn posix_timer_fires_at_its_realtime_time() {
    let q = Q::new(64);
    let at = realtime_now() + 30 * MS;
    q.add(&mut [ev(KEVENT_POSIX_TIMER, at, KEVENT_TIMER_FIRED, 0, 1)]);
    let got = q.get_one();
    assert!(realtime_now() >= at, "fired early");
    assert_eq!(
        (got.user, got.type_, got.event),
        (1, KEVENT_POSIX_TIMER, KEVENT_TIMER_FIRED)
    );
    q.expect_none(Duration::from_millis(100));
}

#[test]
fn timers_with_a_zero_time_or_unknown_bits_are_einval() {
    let q = Q::new(64);
    let mut evs = [
        ev(KEVENT_TIMER, 0, KEVENT_TIMER_FIRED, 0, 1),
        ev(KEVENT_TIMER, MS, 0x8000, 0, 2),
        ev(KEVENT_TIMER, MS, KEVENT_TIMER_ONCE, 0, 3),
        ev(
            KEVENT_POSIX_TIMER,
            MS,
            KEVENT_TIMER_FIRED | KEVENT_TIMER_ONCE,
            0,
            4,
        ),
    ];
    assert_eq!(q.add(&mut evs), 4);
    for e in &evs {
        assert_broken(e, libc::EINVAL);
    }
}

#[test]
fn removed_timer_stops_firing() {
    let q = Q::new(64);
    let t = ev(KEVENT_TIMER, 10 * MS, KEVENT_TIMER_FIRED, 0, 1);
    q.add(&mut [t]);
    assert_eq!(q.get_one().user, 1);
    q.ctl_ok(KEVENT_CTL_REMOVE, &mut [t]);
    // Not even an entry published just before the REMOVE and not yet claimed.
    q.expect_none(Duration::from_millis(100));
}

// --- user events ------------------------------------------------------------------------

#[test]
fn user_event_is_made_ready_by_kevent_ctl_ready_from_another_thread() {
    let q = Q::new(64);
    q.add(&mut [ev(KEVENT_USER, 77, KEVENT_USER_READY, 0, 0xfeed)]);
    q.expect_none(Duration::from_millis(50));
    let fd = q.fd;
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let mut e = [ev(KEVENT_USER, 77, 0, 0, 0)];
        kevent_ctl(fd, KEVENT_CTL_READY, &mut e).unwrap()
    });
    let got = q.get_one();
    assert_eq!(
        (got.id, got.user, got.event, got.ret_data[0]),
        (77, 0xfeed, KEVENT_USER_READY, 1)
    );
    assert_eq!(t.join().unwrap(), 0);
}

#[test]
fn kevent_get_events_waits_for_min_events() {
    let q = Q::new(64);
    q.add(&mut [user_ev(1, 0), user_ev(2, 0)]);
    let fd = q.fd;
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut buf = [Ukevent::default(); 8];
        let n = kevent_get_events(fd, 2, 8, Some(3 * SEC), &mut buf, 0);
        tx.send(n.map(|n| buf[..n].iter().map(|e| e.user).collect::<Vec<_>>()))
            .unwrap();
    });
    q.ctl_ok(KEVENT_CTL_READY, &mut [user_ev(1, 0)]);
    std::thread::sleep(Duration::from_millis(100));
    q.ctl_ok(KEVENT_CTL_READY, &mut [user_ev(2, 0)]);
    let got = rx.recv_timeout(PATIENCE).expect("get_events hung").unwrap();
    assert_eq!(got, [1, 2]);
    t.join().unwrap();
}

// --- inode events -------------------------------------------------------------------------

#[test]
fn inode_reports_an_entry_created_in_and_removed_from_a_directory() {
    let q = Q::new(64);
    let dir = TempDir::new("inode");
    let d = std::fs::File::open(&dir.0).unwrap();
    assert_eq!(
        q.add(&mut [fd_ev(
            KEVENT_INODE,
            &d,
            KEVENT_INODE_CREATE | KEVENT_INODE_REMOVE,
            0,
            1
        )]),
        0
    );
    q.expect_none(Duration::from_millis(50));
    let file = dir.0.join("a");
    std::fs::write(&file, b"x").unwrap();
    let got = q.get_one();
    assert_eq!(
        (got.user, got.type_, got.event),
        (1, KEVENT_INODE, KEVENT_INODE_CREATE)
    );
    std::fs::remove_file(&file).unwrap();
    let got = q.get_one();
    assert_eq!((got.user, got.event), (1, KEVENT_INODE_REMOVE));
    q.expect_none(Duration::from_millis(50));
}

#[test]
fn inode_reports_only_the_events_asked_for() {
    let q = Q::new(64);
    let dir = TempDir::new("inode-remove-only");
    let d = std::fs::File::open(&dir.0).unwrap();
    q.add(&mut [fd_ev(KEVENT_INODE, &d, KEVENT_INODE_REMOVE, 0, 1)]);
    let file = dir.0.join("b");
    std::fs::write(&file, b"x").unwrap();
    q.expect_none(Duration::from_millis(100));
    std::fs::remove_file(&file).unwrap();
    assert_eq!(q.get_one().event, KEVENT_INODE_REMOVE);
}

#[test]
fn two_kevents_on_one_directory_each_get_their_events_and_removing_one_keeps_the_other() {
    let q = Q::new(64);
    let dir = TempDir::new("inode-two");
    let d1 = std::fs::File::open(&dir.0).unwrap();
    let d2 = std::fs::File::open(&dir.0).unwrap();
    let create = fd_ev(KEVENT_INODE, &d1, KEVENT_INODE_CREATE, 0, 1);
    let remove = fd_ev(KEVENT_INODE, &d2, KEVENT_INODE_REMOVE, 0, 2);
    assert_eq!(q.add(&mut [create, remove]), 0);
    let file = dir.0.join("c");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(q.get_one().user, 1);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(q.get_one().user, 2);
    q.ctl_ok(KEVENT_CTL_REMOVE, &mut [create]);
    std::fs::write(&file, b"x").unwrap();
    std::fs::remove_file(&file).unwrap();
    let got = q.get_one();
    assert_eq!((got.user, got.event), (2, KEVENT_INODE_REMOVE));
    q.expect_none(Duration::from_millis(100));
}
