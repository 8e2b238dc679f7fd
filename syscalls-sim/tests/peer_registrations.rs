//! Processes are peers (ARCHITECTURE.md §5): each process attached to a queue — through the
//! gate with `Instance::connect`, or a forked child calling `kevent_ctl` on the inherited
//! handle — has registrations of its own. The id of an fd kevent is the caller's fd
//! number *in the caller's process*, so two processes may use the same number; a peer's
//! MODIFY/REMOVE/READY reach only its own kevents, the owner's only the owner's, ids a
//! peer registered first do not keep the owner from registering its own, and an inode
//! kevent a peer adds through the gate watches the peer's directory.
//!
//! Children are forked from the test thread, run a closure and `_exit`; they report
//! through words of shared memory (`util/peer.rs`) and are killed by a guard if a test
//! fails (and by `PR_SET_PDEATHSIG` if the test process dies). Every test body is
//! bounded, so a hang fails the test instead of hanging the run, and the tests of this
//! file run one at a time (they fork, and count fds).

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use rustix::process::Pid;
use util::peer::{
    assert_entry_failed, assert_entry_ok, await_word, child_await, describe, owner_queue, pack,
    pipe_ev, report_ctl, user_kevent, Handle, CHILD_PATIENCE, OWNER_COOKIE, PEER_COOKIE,
};
use util::proc::{bounded, child_log, Children, SharedWords};
use util::{
    assert_broken, drain, is_open, nanos, pipe, read_byte, set_nonblocking, wait_until,
    write_bytes, TempDir, PATIENCE, QUIET,
};

/// In a child: makes `target` another number of `fd` (`dup2`).
fn dup_onto(fd: RawFd, target: RawFd) -> bool {
    // SAFETY: dup2 on numbers of this (forked, single-threaded) process: `target` is
    // either free or a copy of the parent's fd that this child gives up on purpose.
    unsafe { libc::dup2(fd, target) == target }
}

/// Claims events until `n` arrived (or [`PATIENCE`] passed), calls `drain` while it
/// still holds them (a level-triggered kevent is reported again after its commit if its
/// source is still ready), commits, then watches [`QUIET`] for anything more (claimed,
/// drained and committed too). Returns (what arrived first, what came after).
fn take_round(q: &Instance, n: usize, drain: &dyn Fn()) -> (Vec<Ukevent>, Vec<Ukevent>) {
    let mut got = Vec::new();
    let mut claims = Vec::new();
    let end = Instant::now() + PATIENCE;
    while got.len() < n {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            break;
        };
        let c = q
            .wait(16, q.ring().uidx(), Some(nanos(left)), 0)
            .expect("kevent_wait");
        got.extend((c.start..c.end).filter_map(|p| q.entry(p)));
        claims.push(c);
    }
    drain();
    for c in claims {
        q.commit_range(c.start..c.end);
    }
    let mut extra = Vec::new();
    let end = Instant::now() + QUIET;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let c = q
            .wait(16, q.ring().uidx(), Some(nanos(left)), 0)
            .expect("kevent_wait");
        extra.extend((c.start..c.end).filter_map(|p| q.entry(p)));
        drain();
        q.commit_range(c.start..c.end);
    }
    (got, extra)
}

/// The cookies of `evs`, sorted.
fn cookies(evs: &[Ukevent]) -> Vec<u64> {
    let mut c: Vec<u64> = evs.iter().map(|e| e.user).collect();
    c.sort_unstable();
    c
}

/// The owner's pipe: a non-blocking pipe whose read end — fd number N of this process —
/// the owner registers through its handle `h` (cookie [`OWNER_COOKIE`]).
fn owners_pipe(h: &Handle) -> (OwnedFd, OwnedFd) {
    let (r, w) = pipe();
    set_nonblocking(&r);
    let mut ev = [pipe_ev(r.as_raw_fd(), OWNER_COOKIE)];
    assert_eq!(kevent_ctl(h.0, KEVENT_CTL_ADD, &mut ev).unwrap(), 0);
    (r, w)
}

/// Forks a peer that makes fd number `n` (its inherited copy of the owner's read end) the
/// read end `theirs` of a pipe of its own and registers it through the inherited handle
/// `h` (cookie [`PEER_COOKIE`]); it reports the ADD in word 0 and stays until word 1.
fn fork_peer_registering_its_own_fd_at(
    kids: &mut Children,
    board: &SharedWords,
    h: RawFd,
    theirs: RawFd,
    n: RawFd,
) -> Pid {
    kids.fork(|| {
        // N is the inherited copy of the owner's read end: give it up, make N ours.
        if !dup_onto(theirs, n) {
            return 2;
        }
        report_ctl(board, 0, h, KEVENT_CTL_ADD, pipe_ev(n, PEER_COOKIE));
        child_await(board, 1, CHILD_PATIENCE);
        0
    })
}

/// The owner registers the read end of a pipe at fd number N; a forked child (a peer)
/// makes its own pipe's read end number N too and registers it. Both registrations
/// exist; each write delivers exactly one event with the right cookie, round after round.
#[test]
fn two_processes_register_the_same_fd_number_and_each_gets_its_own_events() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-same-number");
        let (q, h, _path) = owner_queue(64, &dir);
        let (r1, w1) = owners_pipe(&h); // its read end is N
        let (r2, w2) = pipe(); // the peer's: the child makes it N in its own table
        set_nonblocking(&r2);
        let n = r1.as_raw_fd();
        // Words: 0 the peer's ADD, 1 the parent is done.
        let board = SharedWords::new(2);
        let mut kids = Children::default();
        let peer = fork_peer_registering_its_own_fd_at(&mut kids, &board, h.0, r2.as_raw_fd(), n);
        let added = await_word(&board, 0, Duration::from_secs(10), "the peer's ADD");
        assert_entry_ok(
            added,
            &format!("the peer's ADD of its own pipe at fd {n}, a number the owner registered too"),
        );
        let drain_both = || {
            drain(&r1);
            drain(&r2);
        };
        for round in 1..=3 {
            write_bytes(&w1, b"o");
            write_bytes(&w2, b"p");
            let (got, extra) = take_round(&q, 2, &drain_both);
            assert_eq!(
                cookies(&got),
                vec![OWNER_COOKIE, PEER_COOKIE],
                "round {round}: one event for each pipe: {got:?}"
            );
            assert!(
                got.iter().all(|e| e.id == n as u64),
                "round {round}: both carry the id {n}: {got:?}"
            );
            assert!(extra.is_empty(), "round {round}: more events: {extra:?}");
        }
        // Only the peer's pipe: only the peer's event.
        write_bytes(&w2, b"p");
        let (got, extra) = take_round(&q, 1, &drain_both);
        assert_eq!(cookies(&got), vec![PEER_COOKIE], "{got:?}");
        assert!(extra.is_empty(), "{extra:?}");
        board.at(1).store(1, SeqCst);
        kids.expect_success(peer, Duration::from_secs(10), "the peer");
    });
}

/// The owner's REMOVE of its fd N leaves the peer's kevent of the same number: the
/// peer's pipe still delivers, the owner's no longer does.
#[test]
fn the_owners_remove_leaves_a_peers_kevent_of_the_same_number() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-owner-remove");
        let (q, h, _path) = owner_queue(64, &dir);
        let (r1, w1) = owners_pipe(&h);
        let (r2, w2) = pipe();
        set_nonblocking(&r2);
        let n = r1.as_raw_fd();
        let board = SharedWords::new(2);
        let mut kids = Children::default();
        let peer = fork_peer_registering_its_own_fd_at(&mut kids, &board, h.0, r2.as_raw_fd(), n);
        let added = await_word(&board, 0, Duration::from_secs(10), "the peer's ADD");
        assert_entry_ok(added, &format!("the peer's ADD of its own fd {n}"));
        let mut rm = [pipe_ev(n, 0)];
        assert_eq!(kevent_ctl(h.0, KEVENT_CTL_REMOVE, &mut rm).unwrap(), 0);
        let drain_both = || {
            drain(&r1);
            drain(&r2);
        };
        for round in 1..=2 {
            write_bytes(&w1, b"o");
            write_bytes(&w2, b"p");
            let (got, extra) = take_round(&q, 1, &drain_both);
            assert_eq!(
                cookies(&got),
                vec![PEER_COOKIE],
                "round {round}: after the owner's REMOVE only the peer's pipe delivers"
            );
            assert!(extra.is_empty(), "round {round}: more events: {extra:?}");
        }
        // The owner's second REMOVE finds nothing of its own.
        let mut rm = [pipe_ev(n, 0)];
        assert_eq!(kevent_ctl(h.0, KEVENT_CTL_REMOVE, &mut rm).unwrap(), 1);
        assert_broken(&rm[0], libc::ENOENT);
        board.at(1).store(1, SeqCst);
        kids.expect_success(peer, Duration::from_secs(10), "the peer");
    });
}

/// A peer's REMOVE of fd number N, which only the owner registered, fails with ENOENT
/// and leaves the owner's kevent; the peer's REMOVE of a kevent of its own at N works,
/// and a second one finds nothing (ENOENT). The owner's kevent delivers throughout.
#[test]
fn a_peers_remove_reaches_only_its_own_kevent_not_the_owners_of_the_same_number() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-remove");
        let (q, h, _path) = owner_queue(64, &dir);
        let (r1, w1) = owners_pipe(&h);
        let (r2, _w2) = pipe();
        let n = r1.as_raw_fd();
        // Words: 0 REMOVE of a number it never registered; 1 ADD of its own; 2 REMOVE of
        // its own; 3 the second REMOVE; 4 the parent is done.
        let board = SharedWords::new(5);
        let mut kids = Children::default();
        let (h0, m) = (h.0, r2.as_raw_fd());
        let peer = kids.fork(|| {
            // N is still the inherited copy of the owner's pipe: the peer registered
            // nothing there.
            report_ctl(&board, 0, h0, KEVENT_CTL_REMOVE, pipe_ev(n, 0));
            if !dup_onto(m, n) {
                return 2;
            }
            report_ctl(&board, 1, h0, KEVENT_CTL_ADD, pipe_ev(n, PEER_COOKIE));
            for w in 2..=3 {
                report_ctl(&board, w, h0, KEVENT_CTL_REMOVE, pipe_ev(n, 0));
            }
            child_await(&board, 4, CHILD_PATIENCE);
            0
        });
        await_word(&board, 3, Duration::from_secs(10), "the peer's requests");
        for round in 1..=3 {
            write_bytes(&w1, b"o");
            let (got, extra) = take_round(&q, 1, &|| {
                drain(&r1);
            });
            assert_eq!(
                cookies(&got),
                vec![OWNER_COOKIE],
                "round {round}: the owner's kevent at fd {n} must still deliver after a \
                 peer's REMOVE of its own number {n} (peer's first REMOVE: {}; its ADD: {}; \
                 its REMOVE: {})",
                describe(board.at(0).load(SeqCst)),
                describe(board.at(1).load(SeqCst)),
                describe(board.at(2).load(SeqCst)),
            );
            assert!(extra.is_empty(), "round {round}: more events: {extra:?}");
        }
        let w = |i: usize| board.at(i).load(SeqCst);
        assert_entry_failed(
            w(0),
            libc::ENOENT,
            "the peer's REMOVE of a number only the owner registered",
        );
        assert_entry_ok(w(1), "the peer's ADD of its own pipe at the same number");
        assert_entry_ok(w(2), "the peer's REMOVE of its own kevent");
        assert_entry_failed(w(3), libc::ENOENT, "the peer's second REMOVE");
        board.at(4).store(1, SeqCst);
        kids.expect_success(peer, Duration::from_secs(10), "the peer");
    });
}

/// A peer's MODIFY of fd number N, which only the owner registered, fails with ENOENT;
/// the owner's kevent keeps its cookie.
#[test]
fn a_peers_modify_of_a_number_only_the_owner_registered_fails_enoent_and_changes_nothing() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-modify");
        let (q, h, _path) = owner_queue(64, &dir);
        let (r1, w1) = owners_pipe(&h);
        let n = r1.as_raw_fd();
        let board = SharedWords::new(2);
        let mut kids = Children::default();
        let h0 = h.0;
        let peer = kids.fork(|| {
            report_ctl(&board, 0, h0, KEVENT_CTL_MODIFY, pipe_ev(n, PEER_COOKIE));
            child_await(&board, 1, CHILD_PATIENCE);
            0
        });
        let modified = await_word(&board, 0, Duration::from_secs(10), "the peer's MODIFY");
        write_bytes(&w1, b"o");
        let (got, extra) = take_round(&q, 1, &|| {
            drain(&r1);
        });
        assert_eq!(
            cookies(&got),
            vec![OWNER_COOKIE],
            "the owner's kevent keeps its cookie after a peer's MODIFY of the same number \
             (the peer's MODIFY: {})",
            describe(modified)
        );
        assert!(extra.is_empty(), "{extra:?}");
        assert_entry_failed(
            modified,
            libc::ENOENT,
            "the peer's MODIFY of a number only the owner registered",
        );
        board.at(1).store(1, SeqCst);
        kids.expect_success(peer, Duration::from_secs(10), "the peer");
    });
}

/// Pipe kevents a squatting peer registers (at the owner's pipe's number and free ones).
const SQUATTED_FDS: usize = 16;

/// A connected peer registers user kevents 0..=200, and pipe kevents at the owner's
/// pipe's number N and the first free numbers it can make its own, before the owner
/// registers anything; the owner then registers its pipe at N and a user kevent with id
/// 17: both succeed and deliver exactly once each.
#[test]
fn ids_a_peer_registered_first_do_not_keep_the_owner_from_registering_its_own() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-squat");
        let (q, h, path) = owner_queue(256, &dir);
        let (r1, w1) = pipe();
        set_nonblocking(&r1);
        let n = r1.as_raw_fd();
        assert!(n <= 200, "the owner's pipe is at fd {n}, above 200");
        // Words: 0 = the peer's user ADDs (their failures + 1); 1 = its pipe ADDs
        // (failures + 1); 2 = how many pipe kevents; 3 = the parent is done.
        let board = SharedWords::new(4);
        let mut kids = Children::default();
        let peer = kids.fork(|| {
            let Ok(cq) = Instance::connect(&path) else {
                return 2;
            };
            let mut users: Vec<Ukevent> =
                (0..=200).map(|id| user_kevent(id, PEER_COOKIE)).collect();
            let Ok(failed) = cq.ctl(KEVENT_CTL_ADD, &mut users) else {
                return 3;
            };
            board.at(0).store(failed as u64 + 1, SeqCst);
            let (pr, _pw) = pipe();
            // N — the inherited copy of the owner's pipe: give it up, make N ours — and
            // the first free numbers (a few: fds held for a peer are bounded).
            if !dup_onto(pr.as_raw_fd(), n) {
                return 4;
            }
            let mut ns = vec![n];
            for k in 3..=200 {
                if ns.len() == SQUATTED_FDS {
                    break;
                }
                if !is_open(k) {
                    if !dup_onto(pr.as_raw_fd(), k) {
                        return 5;
                    }
                    ns.push(k);
                }
            }
            let mut pipes: Vec<Ukevent> = ns.iter().map(|&k| pipe_ev(k, PEER_COOKIE)).collect();
            let Ok(failed) = cq.ctl(KEVENT_CTL_ADD, &mut pipes) else {
                return 6;
            };
            board.at(2).store(ns.len() as u64, SeqCst);
            board.at(1).store(failed as u64 + 1, SeqCst);
            child_await(&board, 3, CHILD_PATIENCE);
            0
        });
        let users_failed =
            await_word(&board, 0, Duration::from_secs(10), "the peer's user ADDs") - 1;
        let pipes_failed =
            await_word(&board, 1, Duration::from_secs(10), "the peer's pipe ADDs") - 1;
        assert_eq!(users_failed, 0, "the peer's user kevents 0..=200");
        assert_eq!(pipes_failed, 0, "the peer's pipe kevents");
        assert_eq!(
            board.at(2).load(SeqCst),
            SQUATTED_FDS as u64,
            "pipe kevents of the peer"
        );

        let mut mine = [pipe_ev(n, OWNER_COOKIE)];
        let failed = kevent_ctl(h.0, KEVENT_CTL_ADD, &mut mine).unwrap();
        assert_eq!(
            failed,
            0,
            "the owner's ADD of its own pipe at fd {n} (a number a peer registered first): \
             {mine:?}, errno {}",
            io::Error::from_raw_os_error(mine[0].ret_data[1] as i32)
        );
        let mut mine = [user_kevent(17, OWNER_COOKIE + 1)];
        let failed = kevent_ctl(h.0, KEVENT_CTL_ADD, &mut mine).unwrap();
        assert_eq!(
            failed, 0,
            "the owner's ADD of user kevent 17 (an id a peer registered first): {mine:?}"
        );
        write_bytes(&w1, b"o");
        let (got, extra) = take_round(&q, 1, &|| {
            drain(&r1);
        });
        assert_eq!(cookies(&got), vec![OWNER_COOKIE], "the owner's pipe");
        assert!(extra.is_empty(), "{extra:?}");
        for round in 1..=2 {
            let mut rd = [user_kevent(17, 0)];
            assert_eq!(kevent_ctl(h.0, KEVENT_CTL_READY, &mut rd).unwrap(), 0);
            let (got, extra) = take_round(&q, 1, &|| {});
            assert_eq!(
                cookies(&got),
                vec![OWNER_COOKIE + 1],
                "round {round}: the owner's user kevent 17, once"
            );
            assert!(extra.is_empty(), "round {round}: {extra:?}");
        }
        board.at(3).store(1, SeqCst);
        kids.expect_success(peer, Duration::from_secs(10), "the peer");
    });
}

/// A connected peer's READY of a user kevent only the owner registered fails with ENOENT
/// (`BROKEN | DONE`, errno in `ret_data[1]`) and delivers nothing.
#[test]
fn a_peers_ready_on_a_user_id_only_the_owner_registered_fails_enoent_and_delivers_nothing() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-ready");
        let (q, h, path) = owner_queue(64, &dir);
        assert_eq!(
            kevent_ctl(h.0, KEVENT_CTL_ADD, &mut [user_kevent(7, OWNER_COOKIE)]).unwrap(),
            0
        );
        // Words: 0 the READY's outcome, 1 its return value + 1, 2 the parent is done.
        let board = SharedWords::new(3);
        let mut kids = Children::default();
        let peer = kids.fork(|| {
            let Ok(cq) = Instance::connect(&path) else {
                return 2;
            };
            let mut evs = [user_kevent(7, PEER_COOKIE)];
            let r = cq.ctl(KEVENT_CTL_READY, &mut evs);
            board
                .at(1)
                .store(r.as_ref().map_or(0, |&n| n as u64 + 1), SeqCst);
            board.at(0).store(pack(&r, &evs[0]), SeqCst);
            child_await(&board, 2, CHILD_PATIENCE);
            0
        });
        let ready = await_word(&board, 0, Duration::from_secs(10), "the peer's READY");
        let (got, extra) = take_round(&q, 0, &|| {});
        assert!(
            got.is_empty() && extra.is_empty(),
            "a peer's READY of the owner's user kevent delivered {:?} (the READY: {})",
            [got, extra].concat(),
            describe(ready)
        );
        assert_entry_failed(
            ready,
            libc::ENOENT,
            "the peer's READY of a user id only the owner registered",
        );
        assert_eq!(
            board.at(1).load(SeqCst),
            2,
            "READY returns 1: one entry failed"
        );
        // The owner's own READY still works.
        assert_eq!(
            kevent_ctl(h.0, KEVENT_CTL_READY, &mut [user_kevent(7, 0)]).unwrap(),
            0
        );
        let (got, extra) = take_round(&q, 1, &|| {});
        assert_eq!(cookies(&got), vec![OWNER_COOKIE]);
        assert!(extra.is_empty(), "{extra:?}");
        board.at(2).store(1, SeqCst);
        kids.expect_success(peer, Duration::from_secs(10), "the peer");
    });
}

// --- KEVENT_INODE through the gate -----------------------------------------------------

/// An inode kevent added by another process watches *its* directory — the fd that
/// travelled with `SCM_RIGHTS` — not whatever the owner has under that number (issue
/// #10, item 7).
#[test]
fn an_inode_kevent_added_through_the_gate_watches_the_peers_directory() {
    bounded(Duration::from_secs(60), || {
        let dir = TempDir::new("trust-inode");
        let path = dir.0.join("gate.sock");
        let theirs = TempDir::new("trust-inode-theirs");
        let ours = TempDir::new("trust-inode-ours");
        let q = Instance::create(64, 0).expect("create");
        q.listen(&path).expect("listen");
        // The owner has its own directory under the number the peer will use.
        let our_dir = std::fs::File::open(&ours.0).expect("open our dir");
        let number = rustix::io::fcntl_dupfd_cloexec(&our_dir, 900).expect("dupfd");
        let n = number.as_raw_fd();
        // The peer's kevents live as long as the peer (`peer_death.rs`): it stays until `done`
        // closes.
        let (added_r, added_w) = pipe();
        let (done_r, done_w) = pipe();
        let mut kids = Children::default();
        let peer = kids.fork(|| {
            // SAFETY: closes this process's copy of the parent's end, so that the parent
            // closing its own is seen here as end of file; the child `_exit`s without
            // dropping its `OwnedFd` (no second close).
            unsafe { libc::close(done_w.as_raw_fd()) };
            let cq = match Instance::connect(&path) {
                Ok(cq) => cq,
                Err(e) => {
                    child_log(&format!("connect: {e}"));
                    return 2;
                }
            };
            let their_dir = std::fs::File::open(&theirs.0).expect("open their dir");
            // SAFETY: dup2 onto a number this process owns (its copy of the parent's
            // `number`, replaced and never used as that again).
            if unsafe { libc::dup2(their_dir.as_raw_fd(), n) } != n {
                return 3;
            }
            let mut ev = [util::ev(
                KEVENT_INODE,
                n as u64,
                KEVENT_INODE_CREATE,
                0,
                PEER_COOKIE,
            )];
            match cq.ctl(KEVENT_CTL_ADD, &mut ev) {
                Ok(0) => {
                    write_bytes(&added_w, &[1]);
                    // Until the test is done (end of file on `done`).
                    let _ = read_byte(done_r.as_fd(), Duration::from_secs(30));
                    0
                }
                r => {
                    child_log(&format!("ADD of the inode kevent: {r:?}, {:?}", ev[0]));
                    4
                }
            }
        });
        drop(done_r);
        assert_eq!(
            read_byte(added_r.as_fd(), Duration::from_secs(10)),
            Some(1),
            "the peer's ADD of KEVENT_INODE through the gate failed"
        );
        let mut buf = [Ukevent::default(); 8];
        // A file in the owner's directory under that number: not watched.
        std::fs::write(ours.0.join("x"), b"x").unwrap();
        let got = q
            .get_events(1, 8, Some(300_000_000), &mut buf, 0)
            .expect("get_events");
        assert_eq!(
            got,
            0,
            "the owner's own directory is watched: {:?}",
            &buf[..got]
        );
        // A file in the peer's directory: reported.
        std::fs::write(theirs.0.join("y"), b"y").unwrap();
        let got = q
            .get_events(1, 8, Some(3_000_000_000), &mut buf, 0)
            .expect("get_events");
        assert_eq!(
            got, 1,
            "no event for a file created in the peer's directory"
        );
        assert_eq!(
            (buf[0].type_, buf[0].id, buf[0].event, buf[0].user),
            (KEVENT_INODE, n as u64, KEVENT_INODE_CREATE, PEER_COOKIE)
        );
        // The peer leaves: its kevent goes with it.
        drop(done_w);
        assert_eq!(kids.exit_code(peer, Duration::from_secs(10)), Some(0));
        assert!(
            wait_until(Duration::from_secs(3), || q
                .ring()
                .stats()
                .registered
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0),
            "the peer's kevent outlived it"
        );
        std::fs::write(theirs.0.join("z"), b"z").unwrap();
        let got = q
            .get_events(1, 8, Some(300_000_000), &mut buf, 0)
            .expect("get_events");
        assert_eq!(
            got,
            0,
            "a gone peer's directory is still watched: {:?}",
            &buf[..got]
        );
        drop(number);
    });
}
