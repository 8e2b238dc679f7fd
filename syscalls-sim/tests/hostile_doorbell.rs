//! No call of the queue's owner blocks on the doorbell a peer can reach (ARCHITECTURE.md
//! §5, "Trust boundaries"): adds, commits and the close go on while a peer keeps the
//! doorbell (and every other fd it got) blocking and full, or blocking and drained, and
//! after it is killed; and when a peer only left it blocking, the owner's own reads of it
//! do not block.
//!
//! The peer (`util/hostile_peer.rs`) is a same-uid process that attached with
//! `Instance::connect` and attacks every fd attaching gave it; the owner's calls each run
//! bounded by [`CALL_LIMIT`], so a call that blocks fails the test at once with its name.
//! Every blocking call has a timeout, every test body is bounded, and the tests of this
//! file run one at a time (they fork).

mod util;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::hostile_peer::{
    board, close, owner_queue, ready_1, start_peer, Attack, Clock, Plan, CALL_LIMIT, ROUNDS,
};
use util::proc::{bounded, Children, SharedWords};
use util::{fd_ev, pipe, user_ev, wait_until, write_bytes, MS};

/// The owner's consumer thread: `kevent_get_events` with 100 ms timeouts in a loop (it
/// sleeps on the ring's futex: the queue's consumers do not harvest), each call's end
/// stamped, until told to stop.
struct OwnerConsumer {
    stop: Arc<AtomicBool>,
    /// Milliseconds since `start` at the last return.
    beat: Arc<AtomicU64>,
    start: Instant,
}

impl OwnerConsumer {
    fn start(q: &Arc<Instance>) -> OwnerConsumer {
        let me = OwnerConsumer {
            stop: Arc::new(AtomicBool::new(false)),
            beat: Arc::new(AtomicU64::new(0)),
            start: Instant::now(),
        };
        let (q, stop, beat, start) = (q.clone(), me.stop.clone(), me.beat.clone(), me.start);
        std::thread::spawn(move || {
            let mut buf = [Ukevent::default(); 64];
            while !stop.load(Ordering::SeqCst) {
                if q.get_events(1, 64, Some(100 * MS), &mut buf, 0).is_err() {
                    return;
                }
                beat.store(start.elapsed().as_millis() as u64, Ordering::SeqCst);
            }
        });
        me
    }

    /// Fails the test if the consumer's current call has run past its timeout plus
    /// [`CALL_LIMIT`].
    #[track_caller]
    fn check(&self, when: &str) {
        let since = self.start.elapsed().as_millis() as u64 - self.beat.load(Ordering::SeqCst);
        assert!(
            since < (CALL_LIMIT + Duration::from_millis(100)).as_millis() as u64,
            "{when}: the owner's consumer thread has been in kevent_get_events (100 ms \
             timeout) for {since} ms: it blocks on an fd the peer can reach"
        );
    }
}

impl Drop for OwnerConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The owner's doorbell rounds: ADD of a readable level pipe (returned ready at once,
/// `DONE`: the consumer asleep must be woken to re-check it), REMOVE, READY of a user
/// kevent and a zero-timeout `kevent_get_events` (a commit), each bounded.
fn doorbell_round(clock: &mut Clock, q: &Arc<Instance>, r: &std::os::fd::OwnedFd, round: u64) {
    let ev = fd_ev(KEVENT_PIPE, r, KEVENT_PIPE_READ, 0, 7);
    let q1 = q.clone();
    let added = clock.call(
        &format!("kevent_ctl(ADD) of a readable pipe #{round}"),
        move || {
            let mut add = [ev];
            q1.ctl(KEVENT_CTL_ADD, &mut add).map(|n| (n, add[0]))
        },
    );
    let (n, back) = added.expect("ADD");
    assert_eq!(
        (n, back.ret_flags),
        (1, KEVENT_RET_DONE),
        "round {round}: {back:?}"
    );
    let q2 = q.clone();
    let removed = clock.call(&format!("kevent_ctl(REMOVE) #{round}"), move || {
        q2.ctl(KEVENT_CTL_REMOVE, &mut [ev])
    });
    assert_eq!(removed.expect("REMOVE"), 0, "round {round}");
    ready_1(clock, q, round);
    let q3 = q.clone();
    let got = clock.call(
        &format!("kevent_get_events(timeout 0) #{round}"),
        move || {
            let mut buf = [Ukevent::default(); 64];
            q3.get_events(0, 64, Some(0), &mut buf, 0)
        },
    );
    got.expect("get_events");
}

/// A peer makes the doorbell (and every other fd it got) blocking, and keeps it full or
/// keeps it drained, while a consumer of the peer and one of the owner sleep on the ring
/// (the owner's consumers do not harvest, so they sleep on the futex too). The owner adds
/// readable pipes (each ADD returns it at once, and the consumers asleep must be woken to
/// re-check it), removes them, publishes and commits — 100 rounds, each call bounded —
/// then the same after the peer is killed (`kill_first`: killed before the first round);
/// then closes.
fn the_owner_keeps_working_with_a_hostile_doorbell(attack: Attack, kill_first: bool) {
    let (q, _dir, gate) = owner_queue("doorbell");
    q.set_harvest(false);
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [user_ev(1, 0)]).expect("ADD"), 0);
    let (r, w) = pipe();
    write_bytes(&w, b"x");
    let board = Arc::new(SharedWords::new(board::WORDS));
    let mut kids = Children::default();
    let plan = Plan {
        attack,
        notify: false,
        sleeper: !kill_first,
        event_loop: false,
    };
    let peer = start_peer(&mut kids, &gate, &board, plan);
    if kill_first {
        kids.kill(peer);
    }
    let consumer = OwnerConsumer::start(&q);
    let sleepers = if kill_first { 1 } else { 2 };
    assert!(
        wait_until(Duration::from_secs(5), || q.ring().sleepers() >= sleepers),
        "the consumers do not sleep on the ring: {}",
        util::ring_report(&q)
    );
    let mut clock = Clock::default();
    // The owner alone against the flags the peer left takes more rounds to meet its own
    // race (two readers of one readiness of the doorbell: ~1 round in 400 here).
    let rounds = if kill_first { 10 * ROUNDS } else { ROUNDS };
    for round in 0..rounds {
        doorbell_round(&mut clock, &q, &r, round);
        consumer.check(&format!("round {round}"));
    }
    if !kill_first {
        kids.kill(peer);
    }
    for round in rounds..2 * rounds {
        doorbell_round(&mut clock, &q, &r, round);
        consumer.check(&format!("round {round}, the peer killed"));
    }
    drop(consumer); // it ends with its current call (100 ms at most), or at the close
    close(&mut clock, &q);
    clock.report(&format!("doorbell {attack:?}"));
    drop(w);
}

#[test]
fn adds_commits_and_close_never_block_on_a_doorbell_a_peer_keeps_blocking_and_full() {
    bounded(Duration::from_secs(120), || {
        the_owner_keeps_working_with_a_hostile_doorbell(Attack::BlockingAndFull, false)
    });
}

#[test]
fn adds_commits_and_close_never_block_on_a_doorbell_a_peer_keeps_blocking_and_drained() {
    bounded(Duration::from_secs(120), || {
        the_owner_keeps_working_with_a_hostile_doorbell(Attack::BlockingAndDrained, false)
    });
}

/// The peer only clears `O_NONBLOCK` on the doorbell (and its other fds), and is gone
/// before the owner's first call: the owner's own reads of the doorbell (the producer
/// thread's, and a `kevent_ctl`'s harvest of the same readiness) must not block.
#[test]
fn adds_commits_and_close_never_block_on_a_doorbell_a_peer_left_blocking() {
    bounded(Duration::from_secs(120), || {
        the_owner_keeps_working_with_a_hostile_doorbell(Attack::Blocking, true)
    });
}
