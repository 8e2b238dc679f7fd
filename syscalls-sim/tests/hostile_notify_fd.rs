//! No call of the queue's owner blocks on the notify fd a peer armed, and a peer is told
//! of every new entry on it (ARCHITECTURE.md §5, "Trust boundaries"): the owner's READY
//! and `kevent_get_events` go on while a peer keeps its notify fd blocking and full, and
//! after the peer is killed; the owner's close returns with such a peer at it; a peer
//! that filled its notify fd (a full counter) still wakes for every entry.
//!
//! The peer (`util/hostile_peer.rs`) is a same-uid process that attached with
//! `Instance::connect` and attacks every fd attaching gave it; the owner's calls each run
//! bounded by [`CALL_LIMIT`], so a call that blocks fails the test at once with its name.
//! Every blocking call has a timeout, every test body is bounded, and the tests of this
//! file run one at a time (they fork).

mod util;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use kevent_syscalls::*;
use util::hostile_peer::{
    board, close, owner_queue, ready_1, start_peer, Attack, Clock, Plan, CALL_LIMIT, ROUNDS,
};
use util::proc::{bounded, Children, SharedWords};
use util::{user_ev, wait_until, MS};

/// One round of the owner's work on user kevent 1: READY, then take it back with
/// `kevent_get_events` — exactly one entry, the one made ready.
fn ready_and_take(clock: &mut Clock, q: &Arc<Instance>, round: u64) {
    ready_1(clock, q, round);
    let q1 = q.clone();
    let got = clock.call(&format!("kevent_get_events #{round}"), move || {
        let mut buf = [Ukevent::default(); 8];
        q1.get_events(1, 8, Some(500 * MS), &mut buf, 0)
            .map(|n| buf[..n].to_vec())
    });
    let got = got.expect("get_events");
    assert_eq!(got.len(), 1, "round {round}: {got:?}");
    assert_eq!(got[0].user, 1, "round {round}: {got:?}");
}

/// A peer arms its notify fd, makes it blocking and full (and every other fd it got),
/// and keeps it so: the owner's READY and `kevent_get_events` of a user kevent go on —
/// 100 rounds, each call bounded — and go on after the peer is killed; then the owner's
/// close returns.
#[test]
fn the_owner_keeps_working_when_a_peer_makes_its_notify_fd_blocking_and_full() {
    bounded(Duration::from_secs(120), || {
        let (q, _dir, gate) = owner_queue("notify-full");
        assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [user_ev(1, 0)]).expect("ADD"), 0);
        let board = Arc::new(SharedWords::new(board::WORDS));
        let mut kids = Children::default();
        let plan = Plan {
            attack: Attack::BlockingAndFull,
            notify: true,
            sleeper: false,
            event_loop: false,
        };
        let peer = start_peer(&mut kids, &gate, &board, plan);
        let mut clock = Clock::default();
        for round in 0..ROUNDS {
            ready_and_take(&mut clock, &q, round);
        }
        kids.kill(peer);
        for round in ROUNDS..2 * ROUNDS {
            ready_and_take(&mut clock, &q, round);
        }
        close(&mut clock, &q);
        clock.report("notify fd blocking and full");
    });
}

/// The same peer, alive and at it, with a consumer asleep on the ring: the owner's close
/// returns (and wakes that consumer, which is the peer's business).
#[test]
fn the_owner_closes_its_queue_while_a_peer_keeps_its_fds_blocking_and_full() {
    bounded(Duration::from_secs(60), || {
        let (q, _dir, gate) = owner_queue("close-full");
        let board = Arc::new(SharedWords::new(board::WORDS));
        let mut kids = Children::default();
        let plan = Plan {
            attack: Attack::BlockingAndFull,
            notify: true,
            sleeper: true,
            event_loop: false,
        };
        let _peer = start_peer(&mut kids, &gate, &board, plan);
        assert!(
            wait_until(Duration::from_secs(5), || q.ring().sleepers() >= 1),
            "the peer's consumer does not sleep on the ring: {}",
            util::ring_report(&q)
        );
        let mut clock = Clock::default();
        close(&mut clock, &q);
        clock.report("close with a hostile peer");
    });
}

/// A full counter loses no wake-up: a peer whose notify fd (and every other fd it got)
/// was filled — `O_NONBLOCK` left alone — and that sleeps in an event loop on its notify
/// fd is still told of every new entry: 50 entries, one at a time, every fifth published
/// right after the peer filled its fds again; each reaches it within a second.
#[test]
fn a_peer_that_filled_its_notify_fd_is_still_told_of_every_new_entry() {
    bounded(Duration::from_secs(120), || {
        const EVENTS: u64 = 50;
        let (q, _dir, gate) = owner_queue("notify-wakeups");
        assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [user_ev(1, 0)]).expect("ADD"), 0);
        let board = Arc::new(SharedWords::new(board::WORDS));
        let mut kids = Children::default();
        let plan = Plan {
            attack: Attack::Full,
            notify: true,
            sleeper: false,
            event_loop: true,
        };
        let peer = start_peer(&mut kids, &gate, &board, plan);
        let mut clock = Clock::default();
        let w = |i| board.at(i).load(Ordering::SeqCst);
        for k in 1..=EVENTS {
            if k % 5 == 1 {
                board.at(board::REFILL_ASKED).store(k, Ordering::SeqCst);
                assert!(
                    wait_until(Duration::from_secs(5), || w(board::REFILL_DONE) == k),
                    "the peer did not fill its fds again"
                );
            }
            ready_1(&mut clock, &q, k);
            board.at(board::PUBLISHED).store(k, Ordering::SeqCst);
            assert!(
                wait_until(CALL_LIMIT, || w(board::TAKEN) == k),
                "entry {k} (published {}) did not reach the peer's event loop on its \
                 notify fd within {CALL_LIMIT:?}: it took {} entries after {} wake-ups; \
                 {}",
                if k % 5 == 1 {
                    "onto a full notify fd"
                } else {
                    "after it had drained the fd"
                },
                w(board::TAKEN),
                w(board::WAKEUPS),
                util::ring_report(&q)
            );
        }
        board.at(board::STOP).store(1, Ordering::SeqCst);
        kids.expect_success(peer, Duration::from_secs(10), "the peer's event loop");
        assert_eq!(w(board::TAKEN), EVENTS);
        println!(
            "{} wake-ups for {EVENTS} entries; the notify fd was an eventfd at its maximum \
             after {} of {} refills",
            w(board::WAKEUPS),
            w(board::NOTIFY_FULL),
            EVENTS.div_ceil(5)
        );
        close(&mut clock, &q);
        clock.report("notify fd full");
    });
}
