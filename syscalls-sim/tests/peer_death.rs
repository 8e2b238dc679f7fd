//! A peer's fds go with it (ARCHITECTURE.md §5): what the owner holds for a peer — the
//! duplicate of a socket it registered, its own gate connection registered in the queue
//! — is closed when the peer dies (death, not only EOF: its registered gate connection
//! must not keep it alive), whether it exits or is killed; and its timers never fire.
//!
//! Children are forked from the test thread, run a closure and `_exit`; they report
//! through words of shared memory (`util/peer.rs`) and are killed by a guard if a test
//! fails (and by `PR_SET_PDEATHSIG` if the test process dies). Every test body is
//! bounded, so a hang fails the test instead of hanging the run, and the tests of this
//! file run one at a time (they fork, and count fds).

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use util::peer::{
    assert_entry_ok, await_word, child_await, dup, kind_code, kind_name, owner_queue, pack,
    CHILD_PATIENCE, PEER_COOKIE,
};
use util::proc::{bounded, Children, SharedWords};
use util::{ev, fd_ev, my_fds, my_fds_on_socket, socketpair, wait_until, write_bytes, TempDir};

/// Whether fd `n` is a `SOCK_SEQPACKET` socket (a gate connection).
fn is_seqpacket(n: RawFd) -> bool {
    // SAFETY: `n` is an open fd of this process (the caller found it in /proc/self/fd);
    // the borrow ends with the call.
    let fd = unsafe { BorrowedFd::borrow_raw(n) };
    rustix::net::sockopt::socket_type(fd) == Ok(rustix::net::SocketType::SEQPACKET)
}

/// How long after now `b` sees its peer hang up (all copies of the other end closed):
/// `None` if it does not within `limit`.
fn hangup_within(b: &OwnedFd, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    loop {
        let left = limit.checked_sub(t0.elapsed())?;
        let ts = Timespec::try_from(left.min(Duration::from_millis(10))).expect("timespec");
        let mut pfd = [PollFd::new(b, PollFlags::IN | PollFlags::RDHUP)];
        if poll(&mut pfd, Some(&ts)).unwrap_or(0) == 1 {
            let re = pfd[0].revents();
            if re.intersects(PollFlags::HUP | PollFlags::RDHUP) {
                return Some(t0.elapsed());
            }
            let mut buf = [0u8; 16];
            if let Ok((0, _)) = rustix::net::recv(b, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
                return Some(t0.elapsed());
            }
        }
    }
}

/// How the peer of [`the_owners_copy_of_a_peers_socket_goes_with_the_peer`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A forked child (attached through the inherited handle) that `_exit`s.
    Exits,
    /// A connected process (`Instance::connect`) killed with SIGKILL.
    Killed,
}

/// Longest a peer's socket may stay open in the owner after the peer is gone.
const HANGUP_WITHIN: Duration = Duration::from_secs(1);

/// A peer registers its end `a` of a socketpair and goes (`how`); once every other
/// copy of `a` is closed, `b` must see the hang-up: the owner's duplicate of `a` went
/// with the peer.
fn the_owners_copy_of_a_peers_socket_goes_with_the_peer(how: End) {
    let dir = TempDir::new("peers-socket");
    let (_q, h, path) = owner_queue(64, &dir);
    let (a, b) = socketpair();
    let ino = rustix::fs::fstat(&a).expect("fstat").st_ino;
    // Words: 0 the peer's ADD; 1 the peer may exit.
    let board = SharedWords::new(2);
    let mut kids = Children::default();
    let (h0, an, bn) = (h.0, a.as_raw_fd(), b.as_raw_fd());
    let peer = kids.fork(|| {
        // SAFETY: closes this child's inherited copy of `b`, which it never uses.
        unsafe { libc::close(bn) };
        let mut evs = [fd_ev(
            KEVENT_SOCKET,
            &an,
            KEVENT_SOCKET_RECV,
            0,
            PEER_COOKIE,
        )];
        let r = match how {
            End::Exits => kevent_ctl(h0, KEVENT_CTL_ADD, &mut evs),
            End::Killed => match Instance::connect(&path) {
                Ok(cq) => {
                    let r = cq.ctl(KEVENT_CTL_ADD, &mut evs);
                    std::mem::forget(cq); // dies holding it
                    r
                }
                Err(e) => Err(e),
            },
        };
        board.at(0).store(pack(&r, &evs[0]), SeqCst);
        child_await(&board, 1, CHILD_PATIENCE);
        0
    });
    let added = await_word(&board, 0, Duration::from_secs(10), "the peer's ADD");
    assert_entry_ok(added, "the peer's ADD of its socket");
    eprintln!(
        "{how:?}: {} copies of the peer's socket in this process (ours and the owner's)",
        my_fds_on_socket(ino)
    );
    drop(a);
    // Something for the peer's kevent to report while it goes.
    write_bytes(&b, b"x");
    match how {
        End::Exits => {
            board.at(1).store(1, SeqCst);
            kids.expect_success(peer, Duration::from_secs(10), "the peer");
        }
        End::Killed => {
            let st = kids.kill(peer);
            assert_eq!(st.terminating_signal(), Some(libc::SIGKILL));
        }
    }
    let took = hangup_within(&b, HANGUP_WITHIN);
    eprintln!("{how:?}: hang-up seen {took:?} after the peer was gone");
    assert!(
        took.is_some(),
        "the peer is gone ({how:?}) but its socket never hung up within {HANGUP_WITHIN:?}: \
         the owner still holds {} copies of it",
        my_fds_on_socket(ino)
    );
    assert_eq!(my_fds_on_socket(ino), 0, "the owner's copy is closed");
}

#[test]
fn the_owners_duplicate_of_a_peers_socket_is_closed_when_the_peer_exits() {
    bounded(Duration::from_secs(30), || {
        the_owners_copy_of_a_peers_socket_goes_with_the_peer(End::Exits)
    });
}

#[test]
fn the_owners_duplicate_of_a_peers_socket_is_closed_when_the_peer_is_killed() {
    bounded(Duration::from_secs(30), || {
        the_owners_copy_of_a_peers_socket_goes_with_the_peer(End::Killed)
    });
}

/// 130 peers one after the other each register their own gate connection (found among
/// their fds as the new `SOCK_SEQPACKET` socket after `Instance::connect`; registered
/// through another fd of it, numbered 300 + i, so that the peers' ids differ) and exit:
/// each connection is freed with its peer, so the gate (at most
/// [`Instance::MAX_GATE_CONNECTIONS`] = 128 at a time) keeps serving — every peer connects,
/// and a fresh `Instance::connect` succeeds at the end.
#[test]
fn peers_that_register_their_own_gate_connection_and_exit_free_it() {
    bounded(Duration::from_secs(60), || {
        const PEERS: usize = 130;
        const { assert!(PEERS > Instance::MAX_GATE_CONNECTIONS) };
        let dir = TempDir::new("peers-own-conn");
        let path = dir.0.join("gate.sock");
        // A short reap interval: the records of dead peers are freed before 64 pile up.
        let q = Instance::create_with(1024, 0, Duration::from_millis(10)).expect("create");
        q.listen(&path).expect("listen");
        let mut kids = Children::default();
        for i in 0..PEERS {
            // Words: 0 = stage reached (1 connected, 2 found its socket, 3 added), 1 =
            // the connect error's errno / kind, 2 = the ADD's outcome.
            let board = SharedWords::new(3);
            let peer = kids.fork(|| {
                let before = my_fds();
                let end = Instant::now() + Duration::from_secs(2);
                let cq = loop {
                    match Instance::connect(&path) {
                        Ok(cq) => break cq,
                        // Refused (the gate is full) or the consumer table is full: the
                        // dead peers' resources may not be freed yet.
                        Err(e)
                            if Instant::now() < end
                                && matches!(
                                    e.kind(),
                                    io::ErrorKind::ConnectionRefused | io::ErrorKind::WouldBlock
                                ) =>
                        {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => {
                            board.at(1).store(kind_code(&e) + 1, SeqCst);
                            return 2;
                        }
                    }
                };
                board.at(0).store(1, SeqCst);
                let conn: Vec<RawFd> = my_fds()
                    .into_iter()
                    .filter(|n| !before.contains(n) && is_seqpacket(*n))
                    .collect();
                let [conn] = conn[..] else {
                    return 3;
                };
                board.at(0).store(2, SeqCst);
                // Registered under a number of its own (another fd of the same socket),
                // so that the peers' ids differ: this test is about the connection, not
                // about ids (every peer's connection has the same number otherwise).
                // SAFETY: `conn` is this process's open gate connection (found above);
                // the borrow ends with the call.
                let conn = dup(&unsafe { BorrowedFd::borrow_raw(conn) }, 300 + i as RawFd);
                let mut evs = [ev(
                    KEVENT_SOCKET,
                    conn.as_raw_fd() as u64,
                    KEVENT_SOCKET_RECV,
                    0,
                    i as u64,
                )];
                let r = cq.ctl(KEVENT_CTL_ADD, &mut evs);
                board.at(2).store(pack(&r, &evs[0]), SeqCst);
                board.at(0).store(3, SeqCst);
                0
            });
            let code = kids.exit_code(peer, Duration::from_secs(10));
            let stage = board.at(0).load(SeqCst);
            assert!(
                stage >= 1,
                "peer {i} of {PEERS} could not connect (exit code {code:?}, {} — \
                 ConnectionRefused is the gate's 'maximum of {} connections'): the {i} \
                 peers before it are gone, but their connections are still held",
                kind_name(board.at(1).load(SeqCst).saturating_sub(1)),
                Instance::MAX_GATE_CONNECTIONS,
            );
            assert_eq!(stage, 3, "peer {i}: stage {stage}, exit code {code:?}");
            assert_eq!(code, Some(0), "peer {i}");
            assert_entry_ok(
                board.at(2).load(SeqCst),
                &format!("peer {i}'s ADD of its own gate connection"),
            );
        }
        let t0 = Instant::now();
        let mut last = None;
        let connected = wait_until(Duration::from_secs(3), || match Instance::connect(&path) {
            Ok(_) => true,
            Err(e) => {
                last = Some(e);
                false
            }
        });
        assert!(
            connected,
            "a fresh connect after {PEERS} dead peers is refused for {:?}: {last:?}",
            t0.elapsed()
        );
        q.close();
    });
}

/// A killed peer's timers go with it: 500 timers it added, due 300 ms later, never fire
/// for anyone (the owner's heap keeps their entries only as stale ones, dropped), and
/// the owner's table is empty again.
#[test]
fn a_killed_peers_timers_never_fire() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-timers");
        let (q, h, path) = owner_queue(64, &dir);
        let board = SharedWords::new(1);
        let mut kids = Children::default();
        let peer = kids.fork(|| {
            let Ok(cq) = Instance::connect(&path) else {
                return 2;
            };
            let at = kevent_ring::monotonic_now() + 300_000_000;
            let mut timers: Vec<Ukevent> = (0..500u64)
                .map(|i| {
                    ev(
                        KEVENT_TIMER,
                        at + i,
                        KEVENT_TIMER_FIRED | KEVENT_TIMER_ABSTIME,
                        0,
                        PEER_COOKIE,
                    )
                })
                .collect();
            let r = cq.ctl(KEVENT_CTL_ADD, &mut timers);
            board.at(0).store(pack(&r, &timers[0]), SeqCst);
            std::mem::forget(cq); // dies holding it
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        let added = await_word(&board, 0, Duration::from_secs(10), "the peer's ADD");
        assert_entry_ok(added, "the peer's ADD of 500 timers");
        let registered = || q.ring().stats().registered.load(SeqCst);
        assert_eq!(registered(), 500, "the peer's timers are registered");
        let st = kids.kill(peer);
        assert_eq!(st.terminating_signal(), Some(libc::SIGKILL));
        assert!(
            wait_until(Duration::from_secs(2), || registered() == 0),
            "{} of the dead peer's timers still registered",
            registered()
        );
        // Past their deadline: nothing for anyone.
        let mut buf = [Ukevent::default(); 64];
        let n = kevent_get_events(h.0, 1, 64, Some(600_000_000), &mut buf, 0)
            .expect("kevent_get_events");
        assert_eq!(n, 0, "a dead peer's timers fired: {:?}", &buf[..n]);
    });
}
