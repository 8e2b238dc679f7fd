//! Every per-peer resource is bounded (ARCHITECTURE.md §5), with a documented errno in
//! the failed entry (`BROKEN | DONE`, errno in `ret_data[1]`; the call itself succeeds):
//!
//! * fds held for one peer: `EMFILE` beyond the bound, and the owner keeps fds of its own;
//! * registrations of one peer: `ENOSPC` beyond 16,384 (the default), and the owner's
//!   memory stays small;
//! * gate connections of one process: 8 at a time, the 9th is refused
//!   (`ConnectionRefused`) while other processes still connect;
//! * one peer at its bounds leaves the others' requests unaffected;
//!
//! and the bounds' API: `PeerLimits`, `Instance::set_peer_limits` (the owner's only),
//! `Instance::MAX_GATE_CONNECTIONS_PER_PROCESS`.
//!
//! Children are forked from the test thread, run a closure and `_exit`; they report
//! through words of shared memory (`util/peer.rs`) and are killed by a guard if a test
//! fails (and by `PR_SET_PDEATHSIG` if the test process dies). Every test body is
//! bounded, so a hang fails the test instead of hanging the run, and the tests of this
//! file run one at a time (they fork, and count fds).

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::peer::{
    assert_entry_ok, await_word, child_await, describe, dup, kind_code, kind_name, owner_queue,
    pack, pipe_ev, user_kevent, CHILD_PATIENCE,
};
use util::proc::{bounded, fds_of, rss, Children, SharedWords};
use util::{pipe, raise_fd_limit, TempDir};

/// The file-descriptor limit of this test process (the tests that dup fds by the
/// thousand need it; `raise_fd_limit` sets it once per process, so always this value).
const TEST_NOFILE: u64 = 8192;
/// The owner's soft `RLIMIT_NOFILE` in the tests that try to exhaust its fd table.
const OWNER_NOFILE: u64 = 1024;
/// The default bound of registrations per peer (`PeerLimits::default().registrations`).
const DEFAULT_PEER_REGISTRATIONS: usize = 16_384;
/// Gate connections one process may hold at a time
/// (`Instance::MAX_GATE_CONNECTIONS_PER_PROCESS`).
const CONNECTIONS_PER_PROCESS: usize = 8;

/// Sets this process's soft `RLIMIT_NOFILE` (the hard limit stays).
fn set_soft_nofile(n: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return false;
        }
        lim.rlim_cur = n.min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
    }
}

/// A connect's outcome in a word: 1 connected, else 2 + [`kind_code`] of its error.
fn connect_word<T>(r: &io::Result<T>) -> u64 {
    match r {
        Ok(_) => 1,
        Err(e) => 2 + kind_code(e),
    }
}

/// The [`connect_word`] `w` says connected.
#[track_caller]
fn assert_connected(w: u64, what: &str) {
    assert_eq!(w, 1, "{what}: {}", kind_name(w.saturating_sub(2)));
}

// --- an owner in a child ----------------------------------------------------------------

/// Words of an owner child: it is ready (0); the parent asks it to check itself (1); the
/// check's result (2: 1 = it could make a new queue and open files, else `0x100 | stage`
/// in the high half and the errno in the low half).
const OWNER_READY: usize = 0;
const OWNER_CHECK: usize = 1;
const OWNER_CHECKED: usize = 2;

/// Forks the queue's owner: a child that creates the queue (with its soft
/// `RLIMIT_NOFILE` lowered to `nofile`, if given), serves its gate at `path`, and stays
/// until it is killed; asked to (word [`OWNER_CHECK`]), it checks that it can still make
/// a new queue and open files.
fn fork_owner(
    kids: &mut Children,
    board: &SharedWords,
    path: &Path,
    nofile: Option<u64>,
) -> rustix::process::Pid {
    kids.fork(|| {
        if let Some(n) = nofile {
            if !set_soft_nofile(n) {
                return 2;
            }
        }
        let Ok(q) = Instance::create(64, 0) else {
            return 3;
        };
        if q.listen(path).is_err() {
            return 4;
        }
        board.at(OWNER_READY).store(1, SeqCst);
        loop {
            if board.at(OWNER_CHECK).load(SeqCst) != 0 && board.at(OWNER_CHECKED).load(SeqCst) == 0
            {
                board.at(OWNER_CHECKED).store(owner_check(), SeqCst);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    })
}

/// In the owner: can it still make a queue and open files? 1 if so.
fn owner_check() -> u64 {
    let fail = |stage: u64, e: io::Error| {
        util::proc::child_log(&format!("the owner's check, stage {stage}: {e}"));
        (0x100 | stage) << 32 | e.raw_os_error().unwrap_or(0) as u64
    };
    let q = match Instance::create(64, 0) {
        Ok(q) => q,
        Err(e) => return fail(1, e),
    };
    let mut files = Vec::new();
    for _ in 0..32 {
        match std::fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) => return fail(2, e),
        }
    }
    if let Err(e) = std::io::pipe() {
        return fail(3, e);
    }
    q.close();
    1
}

#[track_caller]
fn assert_owner_still_works(board: &SharedWords, owner: rustix::process::Pid) {
    board.at(OWNER_CHECK).store(1, SeqCst);
    let w = await_word(
        board,
        OWNER_CHECKED,
        Duration::from_secs(5),
        "the owner checks itself",
    );
    let stage = match (w >> 32) & 0xff {
        1 => "Instance::create(64, 0)",
        2 => "opening /dev/null",
        3 => "pipe()",
        _ => "?",
    };
    let errno = (w & 0xffff_ffff) as i32;
    assert!(
        w == 1,
        "the owner can no longer work after one peer's requests: {stage} failed with {} \
         (it has {} fds open, soft limit {OWNER_NOFILE}; its error is logged above)",
        if errno == 0 {
            "an error without an errno".to_string()
        } else {
            io::Error::from_raw_os_error(errno).to_string()
        },
        fds_of(owner)
    );
}

// --- bounds per peer --------------------------------------------------------------------

/// Copies of one fd a peer adds: 1,000 in one call (split into frames of 250 by the
/// client), then 250 one call each (a frame of one fd needs one free slot in the owner's
/// fd table to arrive).
const FD_ADDS_BULK: usize = 1000;
const FD_ADDS_SINGLE: usize = 250;
const FD_ADDS: usize = FD_ADDS_BULK + FD_ADDS_SINGLE;

/// How one peer's ADDs of copies of one fd went: per copy, in order, `Ok(())` for
/// registered or `Err(errno)` for a failed entry (`None`: no answer, its call failed);
/// and the calls that failed as a whole (index of their first copy, error).
struct FdAdds {
    outcome: Vec<Option<Result<(), i32>>>,
    call_errors: Vec<(usize, io::Error)>,
}

/// Makes [`FD_ADDS`] copies of `fd` (numbers from `min_number` up) and adds them as pipe
/// kevents (cookie = index): [`FD_ADDS_BULK`] in one call, then [`FD_ADDS_SINGLE`] one
/// call each. Returns the outcomes and the copies (to keep them open).
fn add_copies(cq: &Instance, fd: &OwnedFd, min_number: RawFd) -> (FdAdds, Vec<OwnedFd>) {
    let copies: Vec<OwnedFd> = (0..FD_ADDS).map(|_| dup(fd, min_number)).collect();
    let mut adds = FdAdds {
        outcome: vec![None; FD_ADDS],
        call_errors: Vec::new(),
    };
    let mut record = |first: usize, evs: &[Ukevent], r: io::Result<usize>| match r {
        Ok(_) => {
            for e in evs {
                adds.outcome[e.user as usize] = Some(if e.ret_flags & KEVENT_RET_BROKEN != 0 {
                    Err(e.ret_data[1] as i32)
                } else {
                    Ok(())
                });
            }
        }
        Err(e) => adds.call_errors.push((first, e)),
    };
    let mut evs: Vec<Ukevent> = copies[..FD_ADDS_BULK]
        .iter()
        .enumerate()
        .map(|(i, c)| pipe_ev(c.as_raw_fd(), i as u64))
        .collect();
    let r = cq.ctl(KEVENT_CTL_ADD, &mut evs);
    record(0, &evs, r);
    for (i, c) in copies.iter().enumerate().skip(FD_ADDS_BULK) {
        let mut evs = [pipe_ev(c.as_raw_fd(), i as u64)];
        let r = cq.ctl(KEVENT_CTL_ADD, &mut evs);
        record(i, &evs, r);
    }
    (adds, copies)
}

impl FdAdds {
    fn registered(&self) -> usize {
        self.outcome
            .iter()
            .filter(|o| matches!(o, Some(Ok(()))))
            .count()
    }

    /// Every call succeeded, the first B copies were registered and every later one
    /// failed with EMFILE, for some bound 0 < B < [`FD_ADDS`]; returns B.
    #[track_caller]
    fn assert_emfile_beyond_a_bound(&self, owner_fds: usize) -> usize {
        if let Some((i, e)) = self.call_errors.first() {
            panic!(
                "the peer's ADD call from copy #{i} failed as a whole ({e}; {} calls failed \
                 so, {} copies registered): beyond the bound the entries must fail one by \
                 one with EMFILE, the call succeeding (the owner has {owner_fds} fds open, \
                 soft limit {OWNER_NOFILE})",
                self.call_errors.len(),
                self.registered()
            );
        }
        let bound = self
            .outcome
            .iter()
            .take_while(|o| matches!(o, Some(Ok(()))))
            .count();
        assert!(
            bound < FD_ADDS,
            "all {FD_ADDS} copies were registered: no fd bound"
        );
        assert!(
            bound > 0,
            "no copy was registered at all: {:?}",
            self.outcome[0]
        );
        let stray: Vec<(usize, Option<Result<(), i32>>)> = self
            .outcome
            .iter()
            .enumerate()
            .skip(bound)
            .filter(|(_, o)| **o != Some(Err(libc::EMFILE)))
            .map(|(i, o)| (i, *o))
            .take(5)
            .collect();
        assert!(
            stray.is_empty(),
            "after the first {bound} copies registered, every later one must fail with \
             EMFILE ({}), but (copy, outcome): {stray:?} ({} registered in all)",
            libc::EMFILE,
            self.registered()
        );
        bound
    }
}

/// One peer adds 1,250 fd kevents, all copies of the same pipe's read end (1,000 in one
/// call, then 250 one call each): beyond the per-peer fd bound the entries fail with
/// EMFILE (each call succeeds), and the owner — its soft `RLIMIT_NOFILE` lowered to
/// 1,024, so that exhaustion is reachable — can still make a new queue and open files.
#[test]
fn a_peer_adding_one_fd_1250_times_gets_emfile_beyond_its_bound_and_the_owner_keeps_fds() {
    bounded(Duration::from_secs(60), || {
        raise_fd_limit(TEST_NOFILE);
        let dir = TempDir::new("peers-fd-bound");
        let path = dir.0.join("gate.sock");
        let board = SharedWords::new(3);
        let mut kids = Children::default();
        let owner = fork_owner(&mut kids, &board, &path, Some(OWNER_NOFILE));
        await_word(
            &board,
            OWNER_READY,
            Duration::from_secs(10),
            "the owner starts",
        );
        let cq = Instance::connect(&path).expect("connect");
        let (r, _w) = pipe();
        let (adds, _copies) = add_copies(&cq, &r, 3);
        let owner_fds = fds_of(owner);
        eprintln!(
            "{} of {FD_ADDS} copies registered, {} calls failed; the owner has {owner_fds} fds \
             open",
            adds.registered(),
            adds.call_errors.len()
        );
        assert_owner_still_works(&board, owner);
        let bound = adds.assert_emfile_beyond_a_bound(owner_fds);
        eprintln!("the per-peer fd bound let {bound} of {FD_ADDS} copies in");
        drop(cq);
    });
}

/// One peer registers 100,000 user kevents through the gate: beyond 16,384 (the default
/// per-peer bound) the entries fail with ENOSPC, and the owner's resident memory grows
/// by less than 8 MB.
#[test]
fn a_peer_registering_100000_user_kevents_gets_enospc_beyond_16384_and_the_owner_stays_small() {
    bounded(Duration::from_secs(60), || {
        const ADDS: u64 = 100_000;
        const MAX_GROWTH: u64 = 8 << 20;
        let dir = TempDir::new("peers-reg-bound");
        let path = dir.0.join("gate.sock");
        let board = SharedWords::new(3);
        let mut kids = Children::default();
        let owner = fork_owner(&mut kids, &board, &path, None);
        await_word(
            &board,
            OWNER_READY,
            Duration::from_secs(10),
            "the owner starts",
        );
        let cq = Instance::connect(&path).expect("connect");
        // Warm the owner's paths up before the baseline.
        let mut warm = [user_kevent(ADDS + 1, 0)];
        assert_eq!(cq.ctl(KEVENT_CTL_ADD, &mut warm).unwrap(), 0);
        assert_eq!(cq.ctl(KEVENT_CTL_REMOVE, &mut warm).unwrap(), 0);
        let before = rss(Some(owner));
        let mut failed_ids = Vec::new();
        let mut other = Vec::new();
        let ids: Vec<u64> = (0..ADDS).collect();
        for chunk in ids.chunks(KEVENT_MAX_EVENTS) {
            let mut evs: Vec<Ukevent> = chunk.iter().map(|&id| user_kevent(id, id)).collect();
            let failed = cq
                .ctl(KEVENT_CTL_ADD, &mut evs)
                .expect("the call succeeds; entries fail one by one");
            for e in &evs[..failed] {
                if e.ret_flags == KEVENT_RET_BROKEN | KEVENT_RET_DONE
                    && e.ret_data[1] == libc::ENOSPC as u32
                {
                    failed_ids.push(e.id);
                } else {
                    other.push(*e);
                }
            }
        }
        let after = rss(Some(owner));
        let growth = after.saturating_sub(before);
        eprintln!(
            "{} of {ADDS} registered; the owner's RSS grew by {} kB ({} -> {} kB)",
            ADDS as usize - failed_ids.len() - other.len(),
            growth / 1024,
            before / 1024,
            after / 1024
        );
        assert!(
            other.is_empty(),
            "entries failed otherwise: {:?}",
            &other[..other.len().min(4)]
        );
        assert_eq!(
            ADDS as usize - failed_ids.len(),
            DEFAULT_PEER_REGISTRATIONS,
            "one peer's registrations are bounded by {DEFAULT_PEER_REGISTRATIONS}"
        );
        failed_ids.sort_unstable();
        assert_eq!(
            failed_ids,
            (DEFAULT_PEER_REGISTRATIONS as u64..ADDS).collect::<Vec<_>>(),
            "the entries beyond the bound fail with ENOSPC"
        );
        assert!(
            growth < MAX_GROWTH,
            "the owner's RSS grew by {} kB for one peer's registrations",
            growth / 1024
        );
        drop(cq);
    });
}

/// One process holds 8 gate connections: its 9th `Instance::connect` is refused at once
/// (`ConnectionRefused`), while another process still connects; once the first lets one
/// go it connects again.
#[test]
fn one_process_is_refused_its_ninth_gate_connection_while_another_process_connects() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-conns");
        let (q, _h, path) = owner_queue(64, &dir);
        // Words: 0 = the greedy child's first 8 (8 + 1 when all connected, else the
        // failing index + 1 with kind in 1); 1 = the 9th's outcome (1 refused with
        // ConnectionRefused, 2 accepted, 3 + kind other error); 2 = how long the 9th took
        // (µs); 3 = go on; 4 = the 9th after dropping one (1 ok, 2 + kind failed); 5 =
        // the other process's connect (1 ok, 2 + kind failed); 6 = go for the other.
        let board = SharedWords::new(7);
        let mut kids = Children::default();
        let greedy = kids.fork(|| {
            let mut held = Vec::new();
            for i in 0..CONNECTIONS_PER_PROCESS {
                match Instance::connect(&path) {
                    Ok(cq) => held.push(cq),
                    Err(e) => {
                        board.at(1).store(3 + kind_code(&e), SeqCst);
                        board.at(0).store(i as u64 + 1, SeqCst);
                        return 2;
                    }
                }
            }
            board
                .at(0)
                .store(CONNECTIONS_PER_PROCESS as u64 + 1, SeqCst);
            let t0 = Instant::now();
            let ninth = Instance::connect(&path);
            board.at(2).store(t0.elapsed().as_micros() as u64, SeqCst);
            board.at(1).store(
                match &ninth {
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => 1,
                    Ok(_) => 2,
                    Err(e) => 3 + kind_code(e),
                },
                SeqCst,
            );
            drop(ninth);
            if !child_await(&board, 3, CHILD_PATIENCE) {
                return 3;
            }
            held.pop();
            // The gate learns of the one let go by its EOF: a connect racing it may be
            // refused still.
            let end = Instant::now() + Duration::from_secs(2);
            let again = loop {
                match Instance::connect(&path) {
                    Err(e)
                        if e.kind() == io::ErrorKind::ConnectionRefused && Instant::now() < end =>
                    {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    r => break r,
                }
            };
            board.at(4).store(connect_word(&again), SeqCst);
            0
        });
        let other = kids.fork(|| {
            if !child_await(&board, 6, CHILD_PATIENCE) {
                return 2;
            }
            board
                .at(5)
                .store(connect_word(&Instance::connect(&path)), SeqCst);
            0
        });
        let first = await_word(
            &board,
            0,
            Duration::from_secs(10),
            "the first 8 connections",
        );
        assert_eq!(
            first,
            CONNECTIONS_PER_PROCESS as u64 + 1,
            "one process's connection #{} failed",
            first
        );
        let ninth = await_word(&board, 1, Duration::from_secs(10), "the 9th connection");
        let took = Duration::from_micros(board.at(2).load(SeqCst));
        assert_eq!(
            ninth,
            1,
            "one process's 9th simultaneous gate connection: expected ConnectionRefused, got \
             {} (after {took:?})",
            if ninth == 2 {
                "accepted"
            } else {
                kind_name(ninth - 3)
            }
        );
        assert!(took < Duration::from_secs(2), "refused only after {took:?}");
        board.at(6).store(1, SeqCst);
        let w = await_word(
            &board,
            5,
            Duration::from_secs(10),
            "the other process's connect",
        );
        assert_connected(w, "another process is refused");
        board.at(3).store(1, SeqCst);
        let w = await_word(
            &board,
            4,
            Duration::from_secs(10),
            "a connect after letting one go",
        );
        assert_connected(w, "after letting one go");
        kids.expect_success(greedy, Duration::from_secs(10), "the greedy process");
        kids.expect_success(other, Duration::from_secs(10), "the other process");
        q.ctl(KEVENT_CTL_READY, &mut [])
            .expect("the owner still works");
    });
}

/// One peer at both of its bounds (1,250 copies of one fd with the owner's fd table at
/// 1,024; 20,000 user kevents) leaves another peer unaffected: its connect, its fd
/// ADDs and its user ADDs all succeed.
#[test]
fn a_peer_at_its_bounds_leaves_another_peers_adds_unaffected() {
    bounded(Duration::from_secs(60), || {
        const USER_ADDS: u64 = 20_000;
        raise_fd_limit(TEST_NOFILE);
        let dir = TempDir::new("peers-others");
        let path = dir.0.join("gate.sock");
        let board = SharedWords::new(3);
        // The other peer's words: 0 go, 1 connect (1 ok, 2 + kind), 2 fd ADDs' failures
        // + 1, 3 user ADDs' failures + 1, 4 the first failure's outcome.
        let other_board = SharedWords::new(5);
        let mut kids = Children::default();
        let owner = fork_owner(&mut kids, &board, &path, Some(OWNER_NOFILE));
        await_word(
            &board,
            OWNER_READY,
            Duration::from_secs(10),
            "the owner starts",
        );
        let other = kids.fork(|| {
            let b = &other_board;
            if !child_await(b, 0, CHILD_PATIENCE) {
                return 2;
            }
            let cq = Instance::connect(&path);
            b.at(1).store(connect_word(&cq), SeqCst);
            let Ok(cq) = cq else {
                return 3;
            };
            let (pr, _pw) = pipe();
            // Numbers the first peer does not use (ids are per peer, but this test is
            // about the bounds).
            let copies: Vec<OwnedFd> = (0..10).map(|_| dup(&pr, 5000)).collect();
            let mut evs: Vec<Ukevent> = copies.iter().map(|c| pipe_ev(c.as_raw_fd(), 1)).collect();
            let r = cq.ctl(KEVENT_CTL_ADD, &mut evs);
            if let Ok(n) = r {
                if n > 0 {
                    b.at(4).store(pack(&r, &evs[0]), SeqCst);
                }
            } else {
                b.at(4).store(pack(&r, &evs[0]), SeqCst);
            }
            b.at(2).store(r.map_or(u64::MAX, |n| n as u64 + 1), SeqCst);
            let mut users: Vec<Ukevent> = (0..100).map(|i| user_kevent(1_000_000 + i, 2)).collect();
            let r = cq.ctl(KEVENT_CTL_ADD, &mut users);
            b.at(3).store(r.map_or(u64::MAX, |n| n as u64 + 1), SeqCst);
            0
        });
        // This process is the peer at its bounds.
        let cq = Instance::connect(&path).expect("connect");
        let (r, _w) = pipe();
        let (adds, _copies) = add_copies(&cq, &r, 3);
        let mut user_failures = 0;
        let ids: Vec<u64> = (0..USER_ADDS).collect();
        for chunk in ids.chunks(KEVENT_MAX_EVENTS) {
            let mut evs: Vec<Ukevent> = chunk.iter().map(|&id| user_kevent(id, 0)).collect();
            if let Ok(n) = cq.ctl(KEVENT_CTL_ADD, &mut evs) {
                user_failures += evs[..n]
                    .iter()
                    .filter(|e| e.ret_data[1] == libc::ENOSPC as u32)
                    .count();
            }
        }
        eprintln!(
            "the peer at its bounds: {} of {FD_ADDS} fds registered ({} calls failed), \
             {user_failures} user ADDs refused with ENOSPC; the owner has {} fds open",
            adds.registered(),
            adds.call_errors.len(),
            fds_of(owner)
        );
        other_board.at(0).store(1, SeqCst);
        let conn = await_word(
            &other_board,
            1,
            Duration::from_secs(15),
            "the other peer's connect",
        );
        assert_connected(
            conn,
            "another peer cannot connect while one is at its bounds",
        );
        let fds = await_word(
            &other_board,
            2,
            Duration::from_secs(15),
            "the other peer's fd ADDs",
        );
        assert_eq!(
            fds,
            1,
            "another peer's ADD of 10 fds while one is at its bounds: {}",
            describe(other_board.at(4).load(SeqCst))
        );
        let users = await_word(
            &other_board,
            3,
            Duration::from_secs(15),
            "the other peer's user ADDs",
        );
        assert_eq!(
            users, 1,
            "another peer's ADD of 100 user kevents (failures + 1)"
        );
        kids.expect_success(other, Duration::from_secs(10), "the other peer");
        // And the first peer was at its bounds indeed.
        adds.assert_emfile_beyond_a_bound(fds_of(owner));
        // Whether the bound of registrations counts the peer's fd kevents too is the
        // library's choice: either way the peer ends at it.
        let users = USER_ADDS as usize - user_failures;
        assert!(
            users == DEFAULT_PEER_REGISTRATIONS
                || users + adds.registered() == DEFAULT_PEER_REGISTRATIONS,
            "the first peer registered {users} user kevents (and {} fd kevents): not at its \
             bound of {DEFAULT_PEER_REGISTRATIONS} registrations",
            adds.registered()
        );
        assert_owner_still_works(&board, owner);
        drop(cq);
    });
}

// --- The bounds' API -----------------------------------------------------------------------
//
// `kevent_syscalls::PeerLimits` (with `Default`), `Instance::set_peer_limits` (owner only)
// and `Instance::MAX_GATE_CONNECTIONS_PER_PROCESS` (8).
mod limits_api {
    use super::*;

    #[test]
    fn the_default_peer_limits_and_the_per_process_connection_bound() {
        assert_eq!(
            PeerLimits::default().registrations,
            DEFAULT_PEER_REGISTRATIONS
        );
        assert!(PeerLimits::default().fds > 0);
        assert_eq!(
            Instance::MAX_GATE_CONNECTIONS_PER_PROCESS,
            CONNECTIONS_PER_PROCESS
        );
        const { assert!(Instance::MAX_GATE_CONNECTIONS_PER_PROCESS < Instance::MAX_GATE_CONNECTIONS) };
    }

    /// With limits of 50 registrations and 5 fds per peer: one peer's 60 user ADDs get 10
    /// ENOSPC, and after a REMOVE one more fits; another peer's 8 fd ADDs get 3 EMFILE,
    /// and after a REMOVE one more fits, while its 40 user ADDs (the first peer's ids)
    /// all succeed: each peer has bounds of its own.
    #[test]
    fn set_peer_limits_bounds_each_peers_registrations_and_fds() {
        bounded(Duration::from_secs(30), || {
            let dir = TempDir::new("peers-limits");
            let (q, _h, path) = owner_queue(64, &dir);
            q.set_peer_limits(PeerLimits {
                registrations: 50,
                fds: 5,
                ..PeerLimits::default()
            })
            .expect("set_peer_limits");
            // Words: 0 the first peer's user failures + 1, 1 its ADD after a REMOVE; 2
            // the second peer's fd failures + 1, 3 its fd ADD after a REMOVE, 4 its user
            // failures + 1.
            let board = SharedWords::new(5);
            let mut kids = Children::default();
            let first = kids.fork(|| {
                let Ok(cq) = Instance::connect(&path) else {
                    return 2;
                };
                let mut users: Vec<Ukevent> = (0..60).map(|i| user_kevent(i, i)).collect();
                let Ok(failed) = cq.ctl(KEVENT_CTL_ADD, &mut users) else {
                    return 3;
                };
                if users[..failed]
                    .iter()
                    .any(|e| e.ret_data[1] != libc::ENOSPC as u32)
                {
                    return 4;
                }
                board.at(0).store(failed as u64 + 1, SeqCst);
                let mut rm = [user_kevent(0, 0)];
                if cq.ctl(KEVENT_CTL_REMOVE, &mut rm).ok() != Some(0) {
                    return 5;
                }
                let mut one = [user_kevent(1000, 0)];
                let r = cq.ctl(KEVENT_CTL_ADD, &mut one);
                board.at(1).store(pack(&r, &one[0]), SeqCst);
                0
            });
            kids.expect_success(first, Duration::from_secs(10), "the first peer");
            let second = kids.fork(|| {
                let Ok(cq) = Instance::connect(&path) else {
                    return 2;
                };
                let (r, _w) = pipe();
                let copies: Vec<OwnedFd> = (0..9).map(|_| dup(&r, 3)).collect();
                let mut fds: Vec<Ukevent> = copies[..8]
                    .iter()
                    .map(|c| pipe_ev(c.as_raw_fd(), 0))
                    .collect();
                let Ok(failed) = cq.ctl(KEVENT_CTL_ADD, &mut fds) else {
                    return 3;
                };
                if fds[..failed]
                    .iter()
                    .any(|e| e.ret_data[1] != libc::EMFILE as u32)
                {
                    return 4;
                }
                board.at(2).store(failed as u64 + 1, SeqCst);
                // fds[failed] is a registered one (reported entries come first).
                let mut rm = [pipe_ev(fds[failed].id as RawFd, 0)];
                if cq.ctl(KEVENT_CTL_REMOVE, &mut rm).ok() != Some(0) {
                    return 5;
                }
                let mut one = [pipe_ev(copies[8].as_raw_fd(), 0)];
                let r = cq.ctl(KEVENT_CTL_ADD, &mut one);
                board.at(3).store(pack(&r, &one[0]), SeqCst);
                let mut users: Vec<Ukevent> = (0..40).map(|i| user_kevent(i, i)).collect();
                let Ok(failed) = cq.ctl(KEVENT_CTL_ADD, &mut users) else {
                    return 6;
                };
                board.at(4).store(failed as u64 + 1, SeqCst);
                0
            });
            kids.expect_success(second, Duration::from_secs(10), "the second peer");
            assert_eq!(board.at(0).load(SeqCst), 10 + 1, "the first peer: ENOSPC");
            assert_entry_ok(
                board.at(1).load(SeqCst),
                "the first peer: an ADD after a REMOVE at the bound",
            );
            assert_eq!(board.at(2).load(SeqCst), 3 + 1, "the second peer: EMFILE");
            assert_entry_ok(
                board.at(3).load(SeqCst),
                "the second peer: an fd ADD after a REMOVE at the bound",
            );
            assert_eq!(board.at(4).load(SeqCst), 1, "the second peer's user ADDs");
        });
    }

    #[test]
    fn set_peer_limits_is_for_the_owner_only() {
        bounded(Duration::from_secs(30), || {
            let dir = TempDir::new("peers-limits-owner");
            let (_q, _h, path) = owner_queue(64, &dir);
            let cq = Instance::connect(&path).expect("connect");
            let e = cq
                .set_peer_limits(PeerLimits::default())
                .expect_err("a peer sets no limits");
            assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "{e}");
        });
    }
}
