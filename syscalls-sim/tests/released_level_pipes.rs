//! A level-triggered pipe whose entry is committed while it stays readable is reported
//! again (ARCHITECTURE.md §3, W4/W5): when the producer reuses the entry's slot before it
//! has seen the release, and when a forked child commits it while a thread of the owner
//! is the poller and the producer thread is parked.
//!
//! Every test body is bounded; the tests of this file run one at a time (one forks).

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::proc::{bounded, Children, SharedWords};
use util::{fd_ev, nonblocking_pipe, ring_report, user_ev, wait_until, write_bytes, MS};

/// What the pipe tests found at eb3992a, reproduced in one process without timing: the
/// producer fills a slot that `uidx` freed before it has processed that release (here: a
/// `READY` through `kevent_ctl`; in the pipe tests: readiness handled before the
/// doorbell); the release was then skipped and the level-triggered pipe whose entry was
/// there never reported again although it stayed readable (fixed in 9efa260: `try_push`
/// notes the releases first).
#[test]
fn a_level_triggered_pipe_is_reported_again_when_its_slot_is_reused_before_its_release_is_seen() {
    bounded(Duration::from_secs(60), a_level_triggered_pipe_is_reported_again_when_its_slot_is_reused_before_its_release_is_seen_body);
}

/// A nonblocking pipe with one byte in it, and a level-triggered `ALWAYS_QUEUE` kevent
/// for its read end with cookie `user` (queued at ADD, since it is readable).
fn readable_pipe_kevent(user: u64) -> (OwnedFd, OwnedFd, Ukevent) {
    let (r, w) = nonblocking_pipe();
    write_bytes(&w, b"x");
    let ev = fd_ev(
        KEVENT_PIPE,
        &r,
        KEVENT_PIPE_READ,
        KEVENT_REQ_ALWAYS_QUEUE,
        user,
    );
    (r, w, ev)
}

fn a_level_triggered_pipe_is_reported_again_when_its_slot_is_reused_before_its_release_is_seen_body(
) {
    // No producer thread yet: the order of events is the test's. kevent_ctl publishes.
    let q = Instance::create_paused(2, 0, Duration::from_millis(100)).expect("kevent_init");
    let (_r, _w, pipe_ev) = readable_pipe_kevent(7);
    let mut add = [pipe_ev, user_ev(1, 0), user_ev(2, 0)];
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut add).unwrap(), 0);
    assert_eq!(q.ring().kidx(), 1, "the readable pipe is queued at ADD");
    assert_eq!(q.ctl(KEVENT_CTL_READY, &mut [user_ev(1, 0)]).unwrap(), 0);
    assert_eq!(q.ring().kidx(), 2, "the ring (2 slots) is full");

    // Take and commit the pipe's entry; its byte stays in the pipe. (Ring-level calls:
    // this test is about the kernel's bookkeeping, not about how a consumer waits.)
    let me = q.consumer();
    let c = q.ring().claim(me, 1);
    assert_eq!((c.start, c.owned), (0, 1));
    assert_eq!(q.entry(0).map(|e| e.user), Some(7));
    q.commit_range(c.start..c.end);
    assert_eq!(q.ring().uidx(), 1);
    // A new event comes before the producer has looked at that release.
    assert_eq!(q.ctl(KEVENT_CTL_READY, &mut [user_ev(2, 0)]).unwrap(), 0);

    // From here on, consume everything: the pipe must come back.
    q.start().expect("start");
    let end = Instant::now() + Duration::from_secs(2);
    let mut again = false;
    while !again && Instant::now() < end {
        let c = q.ring().claim(me, 2);
        for pos in c.start..c.end {
            again |= q.entry(pos).is_some_and(|e| e.user == 7);
        }
        q.commit_range(c.start..c.end);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        again,
        "the pipe is still readable but was never reported again: {}",
        ring_report(&q)
    );
}

/// A level-triggered pipe whose entry a forked child takes and commits without reading
/// it empty must be reported again while a thread of the owner is the poller (blocked in
/// `epoll_wait` on the sources) and the producer thread is parked: somebody must
/// learn of the child's release and re-check the pipe (ARCHITECTURE.md §3, W4/W5). Found by a
/// hunt (helper session 2): the producer thread cancelled the doorbell request each time
/// it parked and parked again without servicing releases, so the child's commit rang
/// nothing, the poller slept on (the pipe's `EPOLLET` edge was long past), and
/// the still-readable pipe was never reported again.
#[test]
fn a_level_pipe_committed_by_a_child_is_reported_again_while_an_owner_thread_polls() {
    bounded(
        Duration::from_secs(30),
        a_level_pipe_committed_by_a_child_is_reported_again_while_an_owner_thread_polls_body,
    );
}

fn a_level_pipe_committed_by_a_child_is_reported_again_while_an_owner_thread_polls_body() {
    let q = Instance::create(8, 0).expect("kevent_init");
    let (_r, _w, pipe_ev) = readable_pipe_kevent(7);
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [pipe_ev]).unwrap(), 0);
    assert_eq!(q.ring().kidx(), 1, "the readable pipe is queued at ADD");

    // Words: 0 = the child holds the entry; 1 = the parent lets it commit; 2 = committed.
    let board = Arc::new(SharedWords::new(4));
    let mut kids = Children::default();
    let (qc, bc) = (q.clone(), board.clone());
    let kid = kids.fork(move || {
        let me = match qc.for_this_process() {
            Ok(me) => me,
            Err(_) => return 2,
        };
        let c = match me.wait(1, me.ring().uidx(), Some(2_000 * MS), 0) {
            Ok(c) if c.owned == 1 => c,
            _ => return 3,
        };
        if me.entry(c.start).map(|e| e.user) != Some(7) {
            return 4;
        }
        bc.at(0).store(1, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(10);
        while bc.at(1).load(Ordering::SeqCst) == 0 {
            if Instant::now() >= end {
                return 5;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Done with the entry; the byte stays in the pipe (level: report it again).
        me.commit_range(c.start..c.end);
        bc.at(2).store(1, Ordering::SeqCst);
        0
    });
    assert!(
        board.reaches(0, 1, Duration::from_secs(5)),
        "the child took the pipe's entry"
    );

    // A thread of the owner waits for events: it becomes the poller, and the producer
    // thread parks.
    let qt = q.clone();
    let waiter = std::thread::spawn(move || {
        let mut buf = [Ukevent::default(); 1];
        let n = qt.get_events(1, 1, Some(5_000 * MS), &mut buf, 0);
        (n.map_err(|e| e.to_string()), buf[0].user)
    });
    assert!(
        wait_until(Duration::from_secs(2), || q.ring().pollers() == 1
            && q.ring().producer_parked()),
        "the owner's thread polls the sources, the producer thread parks: {}",
        ring_report(&q)
    );
    std::thread::sleep(Duration::from_millis(20));
    board.at(1).store(1, Ordering::SeqCst);
    let released = Instant::now();
    kids.expect_success(kid, Duration::from_secs(10), "the child");
    let (n, user) = waiter.join().expect("waiter");
    let took = released.elapsed();
    eprintln!("reported again {took:?} after the child's commit");
    assert_eq!((n, user), (Ok(1), 7), "{}", ring_report(&q));
    // Within a wake-up's cost, not rescued by the wait's timeout (W1).
    assert!(
        took < Duration::from_secs(1),
        "the pipe stayed readable, but was reported again only {took:?} after the \
         child's commit (the waiter's timeout is 5 s): {}",
        ring_report(&q)
    );
    q.close();
}
