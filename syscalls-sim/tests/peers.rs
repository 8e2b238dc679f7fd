//! Processes are peers (ARCHITECTURE.md §5): each process attached to a queue — through the
//! gate with `Instance::connect`, or a forked child calling `kevent_ctl` on the inherited
//! handle — has registrations of its own. The id of an fd kevent is the caller's fd
//! number *in the caller's process*, so two processes may use the same number; a peer's
//! MODIFY/REMOVE/READY reach only its own kevents, the owner's only the owner's. A
//! peer's kevents and the fds held for it go when it dies (death, not only EOF: its own
//! gate connection registered in the queue must not keep it alive), and every per-peer
//! resource is bounded with a documented errno in the failed entry (`BROKEN | DONE`,
//! errno in `ret_data[1]`; the call itself succeeds):
//!
//! * fds held for one peer: `EMFILE` beyond the bound, and the owner keeps fds of its own;
//! * registrations of one peer: `ENOSPC` beyond 16,384 (the default), and the owner's
//!   memory stays small;
//! * gate connections of one process: 8 at a time, the 9th is refused
//!   (`ConnectionRefused`) while other processes still connect;
//! * one peer at its bounds leaves the others' requests unaffected.
//!
//! Children are forked from the test thread, run a closure and `_exit`; they report
//! through words of shared memory and are killed by a guard if a test fails (and by
//! `PR_SET_PDEATHSIG` if the test process dies). Every test body is bounded, so a hang
//! fails the test instead of hanging the run, and the tests of this file run one at a
//! time (they fork, and count fds).
//!
//! The tests that need API that does not exist yet (`PeerLimits`,
//! `Instance::set_peer_limits`, `Instance::MAX_GATE_CONNECTIONS_PER_PROCESS`) are in the
//! `future_api` module at the end, compiled out with `#[cfg(any())]` until it exists.

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use util::proc::{bounded, Children, SharedWords};
use util::{
    drain, ev, fd_ev, nanos, pipe, raise_fd_limit, set_nonblocking, wait_until, write_bytes,
    TempDir, PATIENCE, QUIET,
};

/// The cookie of the owner's kevents.
const OWNER_COOKIE: u64 = 0x0a0a;
/// The cookie of a peer's kevents.
const PEER_COOKIE: u64 = 0x0b0b;
/// How long a child waits for the parent's next word before it gives up.
const CHILD_PATIENCE: Duration = Duration::from_secs(30);
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

// --- helpers ---------------------------------------------------------------------------

/// A queue handle registered for the `kevent_*` calls, closed when the test ends.
struct Handle(RawFd);

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = kevent_close(self.0);
    }
}

/// The owner's queue, reachable through a `kevent_*` handle (which a forked child
/// inherits), serving its gate on a path as well.
fn owner_queue(num: u32, dir: &TempDir) -> (std::sync::Arc<Instance>, Handle, PathBuf) {
    let q = Instance::create(num, 0).expect("kevent_init");
    let path = dir.0.join("gate.sock");
    q.listen(&path).expect("listen");
    let h = Handle(register(q.clone()));
    (q, h, path)
}

/// In a child: waits until word `i` is nonzero; false if it is not within `limit`.
fn child_await(board: &SharedWords, i: usize, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while board.at(i).load(SeqCst) == 0 {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

/// In the parent: the value of word `i` once it is nonzero; fails the test (saying
/// `what` did not happen) if it is not within `limit`.
#[track_caller]
fn await_word(board: &SharedWords, i: usize, limit: Duration, what: &str) -> u64 {
    assert!(
        wait_until(limit, || board.at(i).load(SeqCst) != 0),
        "{what}: not within {limit:?}"
    );
    board.at(i).load(SeqCst)
}

// The outcome of one `kevent_ctl` entry, as a child reports it in one word.
const SET: u64 = 1 << 63;
const CALL_FAILED: u64 = 1 << 62;

/// Packs the outcome of `kevent_ctl` for entry `ev` (the call's result `r`).
fn pack(r: &io::Result<usize>, ev: &Ukevent) -> u64 {
    match r {
        Ok(_) => SET | (u64::from(ev.ret_flags) << 32) | u64::from(ev.ret_data[1]),
        Err(e) => SET | CALL_FAILED | u64::from(e.raw_os_error().unwrap_or(-1) as u32),
    }
}

/// A packed outcome in words.
fn describe(w: u64) -> String {
    if w & SET == 0 {
        return "nothing reported".into();
    }
    let errno = (w & 0xffff_ffff) as i32;
    if w & CALL_FAILED != 0 {
        return format!(
            "the call itself failed: {}",
            io::Error::from_raw_os_error(errno)
        );
    }
    let flags = ((w >> 32) & 0x3fff_ffff) as u32;
    if flags & KEVENT_RET_BROKEN != 0 {
        format!(
            "the entry failed (ret_flags {flags:#x}): errno {errno}, {}",
            io::Error::from_raw_os_error(errno)
        )
    } else {
        format!("the entry succeeded (ret_flags {flags:#x})")
    }
}

/// The entry succeeded (registered, or done).
#[track_caller]
fn assert_entry_ok(w: u64, what: &str) {
    let ok = w & SET != 0 && w & CALL_FAILED == 0 && (w >> 32) as u32 & KEVENT_RET_BROKEN == 0;
    assert!(ok, "{what}: {}", describe(w));
}

/// The entry failed with `errno` (`BROKEN | DONE`, errno in `ret_data[1]`), the call
/// itself succeeded.
#[track_caller]
fn assert_entry_failed(w: u64, errno: i32, what: &str) {
    let want = SET | (u64::from(KEVENT_RET_BROKEN | KEVENT_RET_DONE) << 32) | errno as u64;
    assert!(
        w == want,
        "{what}: expected the entry to fail with errno {errno} ({}), but {}",
        io::Error::from_raw_os_error(errno),
        describe(w)
    );
}

/// In a child: makes `target` another number of `fd` (`dup2`).
fn dup_onto(fd: RawFd, target: RawFd) -> bool {
    // SAFETY: dup2 on numbers of this (forked, single-threaded) process: `target` is
    // either free or a copy of the parent's fd that this child gives up on purpose.
    unsafe { libc::dup2(fd, target) == target }
}

/// Whether `n` is an open fd of this process.
fn is_open(n: RawFd) -> bool {
    // SAFETY: F_GETFD on any number only reads its flags.
    unsafe { libc::fcntl(n, libc::F_GETFD) >= 0 }
}

/// A new number of `fd`, the lowest free from `min` up, close-on-exec.
fn dup(fd: &impl AsFd, min: RawFd) -> OwnedFd {
    rustix::io::fcntl_dupfd_cloexec(fd, min).expect("F_DUPFD_CLOEXEC")
}

/// A pipe kevent on fd number `n` (read, level-triggered).
fn pipe_ev(n: RawFd, user: u64) -> Ukevent {
    ev(KEVENT_PIPE, n as u64, KEVENT_PIPE_READ, 0, user)
}

/// A user kevent with id `id` and cookie `user`.
fn user_kevent(id: u64, user: u64) -> Ukevent {
    ev(KEVENT_USER, id, KEVENT_USER_READY, 0, user)
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

/// Number of this process's fds that are the socket with inode `ino`.
fn my_fds_on_socket(ino: u64) -> usize {
    let want = format!("socket:[{ino}]");
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_str() == Some(want.as_str()))
        .count()
}

/// This process's open fd numbers (the directory's own fd, closed by then, left out).
fn my_fds() -> Vec<RawFd> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    listed.into_iter().filter(|&n| is_open(n)).collect()
}

/// A small code for the kind of a connect error, for a word (see [`kind_name`]).
fn kind_code(e: &io::Error) -> u64 {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => 1,
        io::ErrorKind::WouldBlock => 2,
        io::ErrorKind::TimedOut => 3,
        io::ErrorKind::PermissionDenied => 4,
        io::ErrorKind::BrokenPipe => 5,
        io::ErrorKind::NotFound => 6,
        _ => 7,
    }
}

fn kind_name(code: u64) -> &'static str {
    match code {
        1 => "ConnectionRefused",
        2 => "WouldBlock",
        3 => "TimedOut",
        4 => "PermissionDenied",
        5 => "BrokenPipe",
        6 => "NotFound",
        7 => "another error",
        _ => "nothing",
    }
}

/// Whether fd `n` is a `SOCK_SEQPACKET` socket (a gate connection).
fn is_seqpacket(n: RawFd) -> bool {
    // SAFETY: `n` is an open fd of this process (the caller found it in /proc/self/fd);
    // the borrow ends with the call.
    let fd = unsafe { BorrowedFd::borrow_raw(n) };
    rustix::net::sockopt::socket_type(fd) == Ok(rustix::net::SocketType::SEQPACKET)
}

fn socketpair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair")
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

/// `VmRSS` of process `pid`, in bytes.
fn rss_of(pid: rustix::process::Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.as_raw_nonzero()))
        .expect("/proc/<pid>/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kb * 1024
}

/// Number of open fds of process `pid`.
fn fds_of(pid: rustix::process::Pid) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", pid.as_raw_nonzero()))
        .map(|d| d.count())
        .unwrap_or(0)
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

// --- 1. registrations are per process -----------------------------------------------------

/// The owner registers the read end of a pipe at fd number N; a forked child (a peer)
/// makes its own pipe's read end number N too and registers it. Both registrations
/// exist; each write delivers exactly one event with the right cookie, round after round.
#[test]
fn two_processes_register_the_same_fd_number_and_each_gets_its_own_events() {
    bounded(Duration::from_secs(30), || {
        let dir = TempDir::new("peers-same-number");
        let (q, h, _path) = owner_queue(64, &dir);
        let (r1, w1) = pipe(); // the owner's: its read end is N
        let (r2, w2) = pipe(); // the peer's: the child makes it N in its own table
        set_nonblocking(&r1);
        set_nonblocking(&r2);
        let n = r1.as_raw_fd();
        assert_eq!(
            kevent_ctl(h.0, KEVENT_CTL_ADD, &mut [pipe_ev(n, OWNER_COOKIE)]).unwrap(),
            0
        );
        // Words: 0 the peer's ADD, 1 the parent is done.
        let board = SharedWords::new(2);
        let mut kids = Children::default();
        let (h0, m) = (h.0, r2.as_raw_fd());
        let peer = kids.fork(|| {
            // N is the inherited copy of the owner's read end: give it up, make N ours.
            if !dup_onto(m, n) {
                return 2;
            }
            let mut evs = [pipe_ev(n, PEER_COOKIE)];
            let r = kevent_ctl(h0, KEVENT_CTL_ADD, &mut evs);
            board.at(0).store(pack(&r, &evs[0]), SeqCst);
            child_await(&board, 1, CHILD_PATIENCE);
            0
        });
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
        let (r1, w1) = pipe();
        let (r2, w2) = pipe();
        set_nonblocking(&r1);
        set_nonblocking(&r2);
        let n = r1.as_raw_fd();
        assert_eq!(
            kevent_ctl(h.0, KEVENT_CTL_ADD, &mut [pipe_ev(n, OWNER_COOKIE)]).unwrap(),
            0
        );
        let board = SharedWords::new(2);
        let mut kids = Children::default();
        let (h0, m) = (h.0, r2.as_raw_fd());
        let peer = kids.fork(|| {
            if !dup_onto(m, n) {
                return 2;
            }
            let mut evs = [pipe_ev(n, PEER_COOKIE)];
            let r = kevent_ctl(h0, KEVENT_CTL_ADD, &mut evs);
            board.at(0).store(pack(&r, &evs[0]), SeqCst);
            child_await(&board, 1, CHILD_PATIENCE);
            0
        });
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
        util::assert_broken(&rm[0], libc::ENOENT);
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
        let (r1, w1) = pipe();
        let (r2, _w2) = pipe();
        set_nonblocking(&r1);
        let n = r1.as_raw_fd();
        assert_eq!(
            kevent_ctl(h.0, KEVENT_CTL_ADD, &mut [pipe_ev(n, OWNER_COOKIE)]).unwrap(),
            0
        );
        // Words: 0 REMOVE of a number it never registered; 1 ADD of its own; 2 REMOVE of
        // its own; 3 the second REMOVE; 4 the parent is done.
        let board = SharedWords::new(5);
        let mut kids = Children::default();
        let (h0, m) = (h.0, r2.as_raw_fd());
        let peer = kids.fork(|| {
            // N is still the inherited copy of the owner's pipe: the peer registered
            // nothing there.
            let mut evs = [pipe_ev(n, 0)];
            let r = kevent_ctl(h0, KEVENT_CTL_REMOVE, &mut evs);
            board.at(0).store(pack(&r, &evs[0]), SeqCst);
            if !dup_onto(m, n) {
                return 2;
            }
            let mut evs = [pipe_ev(n, PEER_COOKIE)];
            let r = kevent_ctl(h0, KEVENT_CTL_ADD, &mut evs);
            board.at(1).store(pack(&r, &evs[0]), SeqCst);
            for w in 2..=3 {
                let mut evs = [pipe_ev(n, 0)];
                let r = kevent_ctl(h0, KEVENT_CTL_REMOVE, &mut evs);
                board.at(w).store(pack(&r, &evs[0]), SeqCst);
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
        let (r1, w1) = pipe();
        set_nonblocking(&r1);
        let n = r1.as_raw_fd();
        assert_eq!(
            kevent_ctl(h.0, KEVENT_CTL_ADD, &mut [pipe_ev(n, OWNER_COOKIE)]).unwrap(),
            0
        );
        let board = SharedWords::new(2);
        let mut kids = Children::default();
        let h0 = h.0;
        let peer = kids.fork(|| {
            let mut evs = [pipe_ev(n, PEER_COOKIE)];
            let r = kevent_ctl(h0, KEVENT_CTL_MODIFY, &mut evs);
            board.at(0).store(pack(&r, &evs[0]), SeqCst);
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

// --- a peer's fds go with it ---------------------------------------------------------------

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

// --- 3. bounds per peer ------------------------------------------------------------------

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
        let before = rss_of(owner);
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
        let after = rss_of(owner);
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
            board.at(4).store(
                match again {
                    Ok(_) => 1,
                    Err(e) => 2 + kind_code(&e),
                },
                SeqCst,
            );
            0
        });
        let other = kids.fork(|| {
            if !child_await(&board, 6, CHILD_PATIENCE) {
                return 2;
            }
            board.at(5).store(
                match Instance::connect(&path) {
                    Ok(_) => 1,
                    Err(e) => 2 + kind_code(&e),
                },
                SeqCst,
            );
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
        assert_eq!(
            w,
            1,
            "another process is refused: {}",
            kind_name(w.saturating_sub(2))
        );
        board.at(3).store(1, SeqCst);
        let w = await_word(
            &board,
            4,
            Duration::from_secs(10),
            "a connect after letting one go",
        );
        assert_eq!(
            w,
            1,
            "after letting one go: {}",
            kind_name(w.saturating_sub(2))
        );
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
            let cq = match Instance::connect(&path) {
                Ok(cq) => cq,
                Err(e) => {
                    b.at(1).store(2 + kind_code(&e), SeqCst);
                    return 3;
                }
            };
            b.at(1).store(1, SeqCst);
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
        assert_eq!(
            conn,
            1,
            "another peer cannot connect while one is at its bounds: {}",
            kind_name(conn.saturating_sub(2))
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
