//! Loom models of every race in the ring protocol (DESIGN.md §3 and §7).
//!
//! Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p kevent-ring --release --test loom
//! ```
//!
//! Each model runs on a heap-backed ring (`Ring::heap`), whose atomics come from loom
//! through the crate's `sync` shim; under loom the futex is a mutex and condition
//! variable (`futex.rs`), so a lost wake-up shows up as a loom deadlock. Every model
//! asserts the invariant it is named after: they are written so that breaking the
//! protocol (dropping the lap from the state word, advancing `uidx` over a claimed slot,
//! skipping the waiter/waker fence, ...) makes them fail.
//!
//! Threads share the ring through `std::sync::Arc` (it holds no loom state of its own)
//! and are started with `loom::thread::spawn`. Set-up done before the first spawn runs
//! on one thread and adds nothing to the state space.
//!
//! `a_claim_and_completion_racing_the_prefix_commit_are_both_released` is the minimal
//! trace of a bug these models found in `Ring::advance` (a stale `cidx` load left a
//! completed entry below `kidx` with `uidx` stuck in front of it), fixed by the SeqCst
//! re-check on `advance`'s give-up path.
//!
//! Section h models the other places a consumer sleeps (`poller.rs`): the poller blocked
//! on its sources and bell, and the parked producer thread. Two of them
//! (`wakeup_all_delivers_its_entry_to_one_of_the_woken`,
//! `a_wait_takes_the_entries_published_before_the_close`) found a real hole: `Ring::check`
//! read `kidx` before `kicks`/`closed`, so a wait could return `Woken` or `Closed` past an
//! entry published before the kick or the close; `check` now reads those first.

#![cfg(loom)]

use std::sync::Arc;

use kevent_ring::{
    ConsumerId, Producer, PushError, Ring, SlotState, Status, Ukevent, WaitOutcome, WaitSpec,
};
use loom::sync::{Condvar, Mutex};
use loom::thread;

/// Runs `f` under loom with at most two preemptions per execution (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): every bug we know of in this kind of protocol
/// needs at most two, and the bound keeps the whole file well under a minute.
fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    // Consumers that find nothing to claim yield and retry; with a producer preempted
    // in between, one execution can take a few thousand steps.
    builder.max_branches = builder.max_branches.max(20_000);
    builder.check(f);
}

fn event(id: u64) -> Ukevent {
    Ukevent {
        id,
        user: id ^ 0xfeed,
        ..Default::default()
    }
}

/// A heap ring of `capacity` slots with its producer and `consumers` registered ids.
fn ring_with(capacity: u32, consumers: usize) -> (Arc<Ring>, Producer, Vec<ConsumerId>) {
    let ring = Arc::new(Ring::heap(capacity).expect("valid capacity"));
    let producer = Producer::new(ring.clone()).expect("a fresh ring is sound");
    let ids = (0..consumers)
        .map(|_| ring.register_consumer().expect("a free consumer record"))
        .collect();
    (ring, producer, ids)
}

/// Pushes `ev`, retrying (and yielding to the consumers) while the ring is full.
fn push_when_room(producer: &mut Producer, ev: &Ukevent) -> u64 {
    loop {
        match producer.push(ev, false) {
            Ok(pos) => return pos,
            Err(PushError::Full) => thread::yield_now(),
            Err(PushError::Broken(b)) => panic!("ring marked broken: {b}"),
        }
    }
}

/// Takes every entry `me` owns in `start..end`, checks its content matches its id, and
/// returns the ids.
fn take_all(ring: &Ring, me: ConsumerId, start: u64, end: u64) -> Vec<u64> {
    (start..end)
        .filter_map(|pos| ring.take(me, pos))
        .map(|ev| {
            assert_eq!(ev.user, ev.id ^ 0xfeed, "entry {} is torn", ev.id);
            ev.id
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// a. claim vs claim
// ---------------------------------------------------------------------------------------

/// Two consumers race to claim three published entries, in batches of up to two, and
/// commit what they got: every entry is delivered to exactly one of them, with its
/// content, and once both are done `uidx` has moved over all three.
#[test]
fn each_entry_is_delivered_exactly_once_to_two_claimers() {
    const N: u64 = 3;
    model(|| {
        let (ring, mut producer, ids) = ring_with(4, 2);
        for id in 0..N {
            producer.push(&event(id), false).unwrap();
        }
        producer.flush();
        let consumers: Vec<_> = ids
            .into_iter()
            .map(|me| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut seen = Vec::new();
                    loop {
                        let claim = ring.claim(me, 2);
                        if claim.is_empty() {
                            // Nothing left unclaimed (everything was published up front).
                            assert_eq!(claim.start, N);
                            return seen;
                        }
                        assert_eq!(claim.owned, claim.len(), "no reaper: every slot is ours");
                        let got = take_all(&ring, me, claim.start, claim.end);
                        assert_eq!(got, (claim.start..claim.end).collect::<Vec<_>>());
                        seen.extend(got);
                        assert_eq!(ring.complete_range(me, claim.start..claim.end), claim.owned);
                        assert_uidx_passes_no_claimed_slot(&ring);
                    }
                })
            })
            .collect();
        let mut count = [0u32; N as usize];
        for c in consumers {
            for id in c.join().expect("consumer panicked") {
                count[id as usize] += 1;
            }
        }
        assert_eq!(count, [1; N as usize], "each id delivered exactly once");
        assert_eq!((ring.kidx(), ring.cidx()), (N, N));
        assert_eq!(ring.uidx(), N, "every completed entry is released");
    });
}

/// Two consumers each make one claim while the producer publishes two entries in two
/// flushes: a claim never takes an unpublished entry nor one the other consumer owns.
/// What they leave is claimed afterwards; each entry is owned exactly once.
/// (Commits happen after the race, so this model checks claiming alone.)
#[test]
fn a_claim_racing_a_publish_takes_only_published_entries_once() {
    const N: u64 = 2;
    model(|| {
        let (ring, mut producer, ids) = ring_with(4, 3);
        let consumers: Vec<_> = ids[..2]
            .iter()
            .map(|&me| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let claim = ring.claim(me, 2);
                    assert!(claim.end <= N);
                    assert_eq!(claim.owned, claim.len(), "no reaper: every slot is ours");
                    let got = take_all(&ring, me, claim.start, claim.end);
                    assert_eq!(got, (claim.start..claim.end).collect::<Vec<_>>());
                    (me, claim)
                })
            })
            .collect();
        for id in 0..N {
            producer.push(&event(id), false).unwrap();
            producer.flush();
        }
        let late = ids[2];
        let rest = ring.claim(late, 4);
        let mut count = [0u32; N as usize];
        let mut claims: Vec<_> = consumers
            .into_iter()
            .map(|c| c.join().expect("consumer panicked"))
            .collect();
        claims.push((late, rest));
        for (me, claim) in claims {
            for id in take_all(&ring, me, claim.start, claim.end) {
                count[id as usize] += 1;
            }
            ring.complete_range(me, claim.start..claim.end);
        }
        assert_eq!(count, [1; N as usize], "each id owned exactly once");
        assert_eq!(ring.uidx(), N);
    });
}

// ---------------------------------------------------------------------------------------
// b. publish vs claim across a wrap
// ---------------------------------------------------------------------------------------

/// At capacity 2 the producer publishes four entries (two laps), waiting for room with
/// `room()` and by retrying `push` on `Full`, while one consumer claims and commits:
/// every entry arrives once, in order, with its content.
#[test]
fn entries_survive_a_wrap_in_order_while_publish_races_commit() {
    const N: u64 = 4;
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let me = ids[0];
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let mut next = 0;
                while next < N {
                    let claim = ring.claim(me, 2);
                    if claim.is_empty() {
                        thread::yield_now();
                        continue;
                    }
                    for id in take_all(&ring, me, claim.start, claim.end) {
                        assert_eq!(id, next, "delivered out of order or duplicated");
                        next += 1;
                    }
                    assert_eq!(next, claim.end, "a claimed entry was not ours");
                    ring.complete_range(me, claim.start..claim.end);
                }
            })
        };
        for id in 0..N {
            if id % 2 == 0 {
                // Wait for room explicitly: once room() says so, push must succeed.
                while producer.room().expect("sound ring") == 0 {
                    thread::yield_now();
                }
                assert_eq!(producer.push(&event(id), false), Ok(id));
            } else {
                assert_eq!(push_when_room(&mut producer, &event(id)), id);
            }
            producer.flush();
        }
        consumer.join().expect("consumer panicked");
        assert_eq!(ring.uidx(), N);
        assert_eq!(
            ring.header()
                .stats
                .posted
                .load(std::sync::atomic::Ordering::Relaxed),
            N
        );
    });
}

// ---------------------------------------------------------------------------------------
// c. out-of-order completion
// ---------------------------------------------------------------------------------------

/// Checks, from outside, that `uidx` never passes a slot that is still claimed: every
/// position below an observed `uidx` is no longer CLAIMED for its lap.
fn assert_uidx_passes_no_claimed_slot(ring: &Ring) {
    let u = ring.uidx();
    for pos in u.saturating_sub(ring.capacity())..u {
        let s = ring.slot_state(pos).expect("valid state word");
        let lap = pos / ring.capacity();
        assert!(
            !(s.lap == lap && s.status == Status::Claimed),
            "uidx {u} passed position {pos}, still {s:?}"
        );
    }
}

/// Two consumers each claim one of two entries and complete them in the opposite order
/// (position 1 first). `uidx` stays at 0 while position 0 is claimed, and ends at 2.
#[test]
fn uidx_moves_over_out_of_order_completions_only_once_the_prefix_is_done() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(4, 2);
        for id in 0..2 {
            producer.push(&event(id), false).unwrap();
        }
        producer.flush();
        let consumers: Vec<_> = ids
            .into_iter()
            .map(|me| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let claim = ring.claim(me, 1);
                    assert_eq!((claim.len(), claim.owned), (1, 1));
                    let pos = claim.start;
                    assert_eq!(take_all(&ring, me, pos, pos + 1), [pos]);
                    if pos == 0 {
                        // Hold position 0 until position 1 is completed.
                        while matches!(
                            ring.slot_state(1).map(|s| s.status),
                            Some(Status::Ready | Status::Claimed)
                        ) {
                            thread::yield_now();
                        }
                        assert_eq!(ring.uidx(), 0, "uidx passed a claimed slot");
                        assert_eq!(ring.advance(), 0, "advance passed a claimed slot");
                    }
                    assert_eq!(ring.complete_range(me, pos..pos + 1), 1);
                    if pos == 1 {
                        assert_uidx_passes_no_claimed_slot(&ring);
                    }
                })
            })
            .collect();
        assert_uidx_passes_no_claimed_slot(&ring);
        for c in consumers {
            c.join().expect("consumer panicked");
        }
        assert_eq!(ring.uidx(), 2);
        for pos in 0..2 {
            assert_eq!(
                ring.slot_state(pos),
                Some(SlotState::new(1, 0, Status::Empty)),
                "slot {pos} is reset for its next lap"
            );
        }
    });
}

/// Consumer A holds position 0 while consumer B claims position 1 and completes it; then
/// A completes position 0. Whoever finishes last must carry `uidx` over both positions,
/// so once both are done `uidx` is 2.
///
/// Failed before `advance` re-checked after a SeqCst fence (found by loom). Trace:
/// B claims 1 (`cidx` 1 → 2, Relaxed), completes 1, `advance` reads `uidx` 0, finds slot
/// 0 CLAIMED and stops. A completes 0, `advance` resets slot 0, moves `uidx` to 1, then
/// loads `cidx` and may still read 1 (nothing orders B's Relaxed reservation before A's
/// load), stops at `u >= cidx`. Slot 1 stays DONE below `kidx` with nobody left to
/// release it: a store-buffer race between "complete, then read uidx" and "move uidx,
/// then read cidx / the next slot", which only SeqCst fences on both sides close.
#[test]
fn a_claim_and_completion_racing_the_prefix_commit_are_both_released() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(4, 2);
        for id in 0..2 {
            producer.push(&event(id), false).unwrap();
        }
        producer.flush();
        let (a, b) = (ids[0], ids[1]);
        assert_eq!(ring.claim(a, 1).start, 0);
        let other = {
            let ring = ring.clone();
            thread::spawn(move || {
                let claim = ring.claim(b, 1);
                assert_eq!((claim.start, claim.owned), (1, 1));
                ring.complete_range(b, 1..2)
            })
        };
        assert_eq!(ring.complete_range(a, 0..1), 1);
        assert_eq!(other.join().expect("consumer panicked"), 1);
        assert_eq!(
            ring.uidx(),
            2,
            "uidx stranded: slot states {:?} {:?}",
            ring.slot_state(0),
            ring.slot_state(1)
        );
    });
}

// ---------------------------------------------------------------------------------------
// d. publish into a full ring vs commit
// ---------------------------------------------------------------------------------------

/// A full ring of capacity 2: the producer's next push fails with `Full` until the
/// consumer's commit of position 0 frees its slot, then succeeds. The consumer reads
/// each entry after claiming it; no entry is overwritten while it is held.
#[test]
fn push_into_a_full_ring_fails_until_a_commit_frees_the_slot() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let me = ids[0];
        for id in 0..2 {
            producer.push(&event(id), false).unwrap();
        }
        producer.flush();
        let consumer = {
            let ring = ring.clone();
            thread::spawn(move || {
                let claim = ring.claim(me, 1);
                assert_eq!((claim.start, claim.owned), (0, 1));
                let first = ring.take(me, 0).expect("we own position 0");
                thread::yield_now();
                // Read again right before committing: still the same entry.
                assert_eq!(ring.take(me, 0), Some(first));
                assert_eq!(first, event(0));
                ring.complete_range(me, 0..1);

                // Position 1, then the entry the producer pushed into the freed slot.
                let mut next = 1;
                while next < 3 {
                    let claim = ring.claim(me, 2);
                    for id in take_all(&ring, me, claim.start, claim.end) {
                        assert_eq!(id, next);
                        next += 1;
                    }
                    if claim.is_empty() {
                        thread::yield_now();
                    } else {
                        ring.complete_range(me, claim.start..claim.end);
                    }
                }
            })
        };
        loop {
            let committed_before = ring.uidx();
            match producer.push(&event(2), false) {
                Err(PushError::Full) => {
                    // Full is only allowed while position 0 is not yet released.
                    assert_eq!(committed_before, 0);
                    thread::yield_now();
                }
                Ok(pos) => {
                    assert_eq!(pos, 2);
                    assert!(ring.uidx() >= 1, "pushed into a slot nobody released");
                    break;
                }
                Err(PushError::Broken(b)) => panic!("ring marked broken: {b}"),
            }
        }
        producer.flush();
        consumer.join().expect("consumer panicked");
        assert_eq!(ring.uidx(), 3);
    });
}

// ---------------------------------------------------------------------------------------
// e. waiter vs waker
// ---------------------------------------------------------------------------------------

/// A consumer waits with no deadline while the producer publishes one entry: the waiter
/// returns `Ready` (a lost wake-up would be a loom deadlock) and claims it.
#[test]
fn a_waiter_is_woken_by_a_concurrent_publish() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let me = ids[0];
        let waiter = {
            let ring = ring.clone();
            thread::spawn(move || {
                let outcome = ring.wait(&WaitSpec::default()).expect("wait");
                assert_eq!(outcome, WaitOutcome::Ready);
                let claim = ring.claim(me, 4);
                assert_eq!(claim.owned, 1);
                assert_eq!(take_all(&ring, me, claim.start, claim.end), [7]);
            })
        };
        producer.push(&event(7), false).unwrap();
        producer.flush();
        waiter.join().expect("waiter panicked");
        assert_eq!(ring.sleepers(), 0);
    });
}

/// Two waiters, two entries published by two separate flushes of one entry each (one
/// wake-up each, no `WAKEUP_ALL`): each waiter ends up with one entry. A woken consumer
/// that leaves an entry behind must pass the wake-up on, or the other one sleeps forever
/// (a loom deadlock).
#[test]
fn two_waiters_each_get_an_entry_from_two_single_wakeups() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 2);
        let waiters: Vec<_> = ids
            .into_iter()
            .map(|me| {
                let ring = ring.clone();
                thread::spawn(move || loop {
                    match ring.wait(&WaitSpec::default()).expect("wait") {
                        WaitOutcome::Ready => {}
                        other => panic!("unexpected {other:?}"),
                    }
                    let claim = ring.claim(me, 1);
                    if claim.owned == 1 {
                        return take_all(&ring, me, claim.start, claim.end)[0];
                    }
                })
            })
            .collect();
        for id in 0..2 {
            producer.push(&event(id), false).unwrap();
            producer.flush();
        }
        let mut got: Vec<u64> = waiters
            .into_iter()
            .map(|w| w.join().expect("waiter panicked"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
    });
}

/// Both consumers are asleep (the producer waits for `sleepers() == 2`) when one entry
/// with `WAKEUP_ALL` is published: both wake, one gets the entry, the other reports the
/// wake-up. Without the wake-all, one of them would sleep forever (a loom deadlock).
#[test]
fn wakeup_all_wakes_every_sleeper_for_one_entry() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 2);
        let waiters: Vec<_> = ids
            .into_iter()
            .map(|me| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let spec = WaitSpec {
                        return_on_wake: true,
                        kicks: 0,
                        sleeper: None,
                        ..WaitSpec::default()
                    };
                    let outcome = ring.wait(&spec).expect("wait");
                    assert!(
                        matches!(outcome, WaitOutcome::Ready | WaitOutcome::Woken),
                        "unexpected {outcome:?}"
                    );
                    ring.claim(me, 1).owned
                })
            })
            .collect();
        while ring.sleepers() < 2 {
            thread::yield_now();
        }
        producer.push(&event(0), true).unwrap();
        producer.flush();
        let owned: u64 = waiters
            .into_iter()
            .map(|w| w.join().expect("waiter panicked"))
            .sum();
        assert_eq!(owned, 1);
        assert_eq!(ring.cidx(), 1);
    });
}

// ---------------------------------------------------------------------------------------
// f. a stale commit after a wrap
// ---------------------------------------------------------------------------------------

/// Consumer A claims position 0; a late, duplicated commit of position 0 (by A's id, from
/// another thread) races with A's own commit, the wrap, and A's claim of position 2 in
/// the same slot. Position 0 is completed exactly once, and the stale commit never
/// completes the new lap's entry: position 2 stays CLAIMED(A) until A completes it.
#[test]
fn a_stale_commit_from_the_previous_lap_does_not_complete_the_new_lap() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let a = ids[0];
        producer.push(&event(0), false).unwrap();
        producer.flush();
        assert_eq!(ring.claim(a, 1).owned, 1);

        let late = {
            let ring = ring.clone();
            thread::spawn(move || {
                let by_complete = u64::from(ring.complete(a, 0));
                // The kevent commit of "everything below position 1".
                let by_commit = ring.commit_below(a, 1);
                by_complete + by_commit
            })
        };

        // A's own commit, then the wrap: position 2 lands in position 0's slot.
        let own = ring.complete_range(a, 0..1);
        for id in 1..3 {
            push_when_room(&mut producer, &event(id));
            producer.flush();
        }
        let mut claimed = 1;
        while claimed < 3 {
            let claim = ring.claim(a, 2);
            assert_eq!(claim.owned, claim.len());
            claimed = claim.end;
            if claim.is_empty() {
                thread::yield_now();
            }
        }
        // Release position 1 only, so uidx may reach position 2 but not pass it.
        assert!(ring.complete(a, 1));
        ring.advance();

        let stale = late.join().expect("late committer panicked");
        assert_eq!(own + stale, 1, "position 0 completed exactly once");
        assert_eq!(
            ring.slot_state(2),
            Some(SlotState::new(1, a.0, Status::Claimed)),
            "the stale commit completed the new lap's entry"
        );
        assert_eq!(ring.take(a, 2), Some(event(2)));
        assert_eq!(ring.advance(), 2, "uidx stops at the claimed position 2");
        // A stale commit after the fact is refused too.
        assert!(!ring.complete(a, 0));
        assert_eq!(ring.commit_below(a, 1), 0);
        assert_eq!(ring.uidx(), 2);
        assert!(ring.complete(a, 2));
        assert_eq!(ring.advance(), 3);
    });
}

// ---------------------------------------------------------------------------------------
// g. reclaim vs late commit
// ---------------------------------------------------------------------------------------

/// The reaper reclaims position 0 from its owner while the owner completes it: exactly
/// one of them succeeds, and either way the slot is released once.
#[test]
fn reclaim_and_a_late_commit_of_the_same_entry_exactly_one_wins() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let owner = ids[0];
        producer.push(&event(0), false).unwrap();
        producer.flush();
        assert_eq!(ring.claim(owner, 1).owned, 1);
        let reaper = {
            let ring = ring.clone();
            thread::spawn(move || {
                let took = ring.reclaim(owner, 0);
                ring.advance();
                took
            })
        };
        let committed = ring.complete_range(owner, 0..1) == 1;
        let reclaimed = reaper.join().expect("reaper panicked");
        assert!(
            committed ^ reclaimed,
            "committed {committed}, reclaimed {reclaimed}"
        );
        assert_eq!(ring.advance(), 1);
        assert_eq!(
            ring.slot_state(0),
            Some(SlotState::new(1, 0, Status::Empty))
        );
    });
}

/// The reaper reclaims an orphaned READY slot (owner 0) while a slow claimer, whose
/// reservation already covers it, takes ownership: exactly one of them gets it.
#[test]
fn reclaim_of_an_orphan_and_a_slow_claim_exactly_one_wins() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let me = ids[0];
        producer.push(&event(0), false).unwrap();
        producer.flush();
        let reaper = {
            let ring = ring.clone();
            thread::spawn(move || {
                // The reaper only looks below cidx: wait for the reservation.
                while ring.cidx() == 0 {
                    thread::yield_now();
                }
                ring.reclaim(ConsumerId(0), 0)
            })
        };
        let claim = ring.claim(me, 1);
        assert_eq!(claim.len(), 1);
        let took = ring.take(me, 0);
        let reclaimed = reaper.join().expect("reaper panicked");
        assert!((claim.owned == 1) ^ reclaimed);
        assert_eq!(took.is_some(), claim.owned == 1);
        if claim.owned == 1 {
            assert!(ring.complete(me, 0));
        } else {
            assert!(
                !ring.complete(me, 0),
                "a reclaimed slot is not the claimer's"
            );
        }
        assert_eq!(ring.advance(), 1);
    });
}

// ---------------------------------------------------------------------------------------
// h. the poller, the bell and the parked producer (DESIGN.md §3 W1/W3, `poller.rs`)
// ---------------------------------------------------------------------------------------
//
// A poller blocks in `ppoll` on the queue's sources (the kernel's epoll fd) and on its
// bell (an eventfd): a second wait primitive beside the ring's futex. Under loom it is an
// eventfd-like counter (`Eventfd`): a ring adds one and wakes the blocked thread, a wait
// returns once the counter is non-zero and resets it. The ring reaches it through the
// bell hook (`Ring::set_bell_hook`); a source becoming ready is a ring of the same
// counter by another thread. A lost wake-up shows as a loom deadlock, a needless or
// missing one as a failed assertion.

/// An eventfd: what the poller blocks on (its sources and its bell), or what a model's
/// main thread waits for.
struct Eventfd {
    state: Mutex<EventfdState>,
    cond: Condvar,
}

#[derive(Default)]
struct EventfdState {
    /// The eventfd's counter (readable while non-zero).
    pending: u64,
    /// Writes so far (never reset).
    rings: u64,
}

impl Eventfd {
    fn new() -> Arc<Eventfd> {
        Arc::new(Eventfd {
            state: Mutex::new(EventfdState::default()),
            cond: Condvar::new(),
        })
    }

    /// `write(fd, 1)`.
    fn ring(&self) {
        let mut s = self.state.lock().expect("loom mutex");
        s.pending += 1;
        s.rings += 1;
        self.cond.notify_all();
    }

    /// `poll` until readable, then `read` (resets the counter).
    fn wait(&self) {
        let mut s = self.state.lock().expect("loom mutex");
        while s.pending == 0 {
            s = self.cond.wait(s).expect("loom condvar");
        }
        s.pending = 0;
    }

    /// How many times it was written to.
    fn rings(&self) -> u64 {
        self.state.lock().expect("loom mutex").rings
    }
}

/// A heap ring as [`ring_with`], whose bell rings the returned eventfd (the poller's).
fn ring_with_bell(
    capacity: u32,
    consumers: usize,
) -> (Arc<Ring>, Producer, Vec<ConsumerId>, Arc<Eventfd>) {
    let (ring, producer, ids) = ring_with(capacity, consumers);
    let bell = Eventfd::new();
    let hook = bell.clone();
    ring.set_bell_hook(move || hook.ring());
    (ring, producer, ids, bell)
}

/// What a consumer's wait ended with: the id of the entry it claimed, or the outcome
/// that ended it without one.
type Got = Result<u64, WaitOutcome>;

/// Claims one entry for `me`, if there is one.
fn claim_one(ring: &Ring, me: ConsumerId) -> Option<u64> {
    let claim = ring.claim(me, 1);
    assert_eq!(claim.owned, claim.len(), "no reaper: every slot is ours");
    (claim.owned == 1).then(|| take_all(ring, me, claim.start, claim.end)[0])
}

/// The poller, as `Queue::next_batch` runs it in the owning process: claim; the wait's
/// outcome if it is over; else announce itself (`poller_enter`), block on its sources
/// and its bell, `poller_leave`, and look again. It returns without an entry only with
/// the outcome that ended the wait (W2).
fn poll_next(ring: &Ring, me: ConsumerId, spec: &WaitSpec, bell: &Eventfd) -> Got {
    loop {
        if let Some(id) = claim_one(ring, me) {
            return Ok(id);
        }
        match ring.wait_over(spec) {
            Some(WaitOutcome::Ready) => continue,
            Some(outcome) => return Err(outcome),
            None => {}
        }
        match ring.poller_enter(spec) {
            Some(WaitOutcome::Ready) => continue,
            Some(outcome) => return Err(outcome),
            None => {
                bell.wait();
                ring.poller_leave();
            }
        }
    }
}

/// A futex sleeper, as `Queue::next_batch` runs one: claim, else `Ring::wait`.
fn sleep_next(ring: &Ring, me: ConsumerId, spec: &WaitSpec) -> Got {
    loop {
        if let Some(id) = claim_one(ring, me) {
            return Ok(id);
        }
        match ring.wait(spec).expect("wait") {
            WaitOutcome::Ready => continue,
            outcome => return Err(outcome),
        }
    }
}

/// A wait that returns `Woken` on an explicit wake-up since `ring.kicks()` now.
fn wake_spec(ring: &Ring) -> WaitSpec {
    WaitSpec {
        return_on_wake: true,
        kicks: ring.kicks(),
        ..WaitSpec::default()
    }
}

/// The poller, blocked on its sources, races a publish by the producer thread: the
/// publish finds it counted in `pollers` and rings the bell, or its re-check after the
/// fence finds the entry. Either way it claims the entry (a lost wake-up is a deadlock).
#[test]
fn a_poller_blocked_on_its_sources_is_woken_by_a_publish() {
    model(|| {
        let (ring, mut producer, ids, bell) = ring_with_bell(2, 1);
        let me = ids[0];
        let poller = {
            let ring = ring.clone();
            thread::spawn(move || poll_next(&ring, me, &WaitSpec::default(), &bell))
        };
        producer.push(&event(7), false).unwrap();
        producer.flush();
        assert_eq!(poller.join().expect("poller panicked"), Ok(7));
        assert_eq!(ring.cidx(), 1, "exactly one entry claimed, by the poller");
        assert_eq!(ring.pollers(), 0);
    });
}

/// The poller races an explicit wake-up (`Ring::kick(1)`, kevent's `READY` with no
/// events) with nothing in the ring: it returns `Woken`.
#[test]
fn a_poller_returns_woken_on_an_explicit_wake() {
    model(|| {
        let (ring, _producer, ids, bell) = ring_with_bell(2, 1);
        let me = ids[0];
        let spec = wake_spec(&ring);
        let poller = {
            let ring = ring.clone();
            thread::spawn(move || poll_next(&ring, me, &spec, &bell))
        };
        ring.kick(1);
        assert_eq!(
            poller.join().expect("poller panicked"),
            Err(WaitOutcome::Woken)
        );
        assert_eq!(ring.pollers(), 0);
    });
}

/// One entry with `WAKEUP_ALL` while the poller and a futex sleeper wait beside it (both
/// asked for `Woken`): both return — the futex wake reaches the sleeper (or its re-check
/// sees the news), the bell the poller — each with the entry or with `Woken`, and the
/// entry is delivered at most once. (That it is delivered at all is what
/// [`wakeup_all_delivers_its_entry_to_one_of_the_woken`] adds; it fails as of this
/// writing, see there.)
#[test]
fn wakeup_all_reaches_the_poller_and_a_futex_sleeper() {
    model(|| {
        let (got, left) = wakeup_all_beside_the_poller();
        for g in got {
            assert!(
                matches!(g, Ok(3) | Err(WaitOutcome::Woken)),
                "unexpected {g:?}"
            );
        }
        let claimed = got.iter().filter(|g| **g == Ok(3)).count() as u64;
        assert_eq!(
            claimed + left,
            1,
            "delivered once or still in the ring: {got:?}"
        );
    });
}

/// As [`wakeup_all_reaches_the_poller_and_a_futex_sleeper`], and one of the two takes
/// the entry: a `WAKEUP_ALL` entry is not left in the ring with every sleeper gone.
///
/// Failed (loom, 2 preemptions) while `Ring::check` read `kidx` (`has_claimable`)
/// *before* `kicks`. Trace: the poller's `wait_over` and the
/// sleeper's `check` each read `kidx` = 0 and are preempted; the producer publishes the
/// entry and `kick`s (`kicks` 0 → 1, after the `kidx` store); both then read `kicks` = 1
/// and return `Woken` — nobody claims the entry that caused the kick. The same order
/// lets a wait return `Closed` with entries published before the close still in the ring
/// ([`a_wait_takes_the_entries_published_before_the_close`]). Reading `kicks` (and
/// `closed`) first, Acquire, then `has_claimable`, closes it: a waiter that sees the
/// kick sees the entry published before it, so `Woken` means another consumer had
/// claimed it (checked by loom with that change to `check`).
#[test]
fn wakeup_all_delivers_its_entry_to_one_of_the_woken() {
    model(|| {
        let (got, left) = wakeup_all_beside_the_poller();
        assert_eq!(left, 0, "the WAKEUP_ALL entry was left to nobody: {got:?}");
        assert_eq!(got.iter().filter(|g| **g == Ok(3)).count(), 1, "{got:?}");
    });
}

/// The poller and a futex sleeper (both asking for `Woken`) wait while the producer
/// publishes one entry with `WAKEUP_ALL`. Returns what each got and how many entries were
/// left unclaimed.
fn wakeup_all_beside_the_poller() -> ([Got; 2], u64) {
    let (ring, mut producer, ids, bell) = ring_with_bell(2, 2);
    // Taken before either thread starts, as `next_batch` takes it before looking.
    let spec = wake_spec(&ring);
    let poller = {
        let (ring, me) = (ring.clone(), ids[0]);
        thread::spawn(move || poll_next(&ring, me, &spec, &bell))
    };
    let sleeper = {
        let (ring, me) = (ring.clone(), ids[1]);
        thread::spawn(move || sleep_next(&ring, me, &spec))
    };
    producer.push(&event(3), true).unwrap();
    producer.flush();
    let got = [
        poller.join().expect("poller panicked"),
        sleeper.join().expect("sleeper panicked"),
    ];
    assert_eq!((ring.pollers(), ring.sleepers()), (0, 0));
    (got, ring.kidx() - ring.cidx())
}

/// A futex sleeper waits while the producer publishes one entry and then closes the
/// ring: the sleeper takes the entry (it was published before the close), and a wait
/// after that returns `Closed`.
///
/// Failed, before `check` read `closed` first, for the reason given at
/// [`wakeup_all_delivers_its_entry_to_one_of_the_woken`]: `check` reads `kidx` = 0, the
/// producer publishes and closes, `check` reads `closed` = 1 and the wait returns `Closed`
/// with the entry unclaimed — a consumer that stops at `Closed` never sees it.
#[test]
fn a_wait_takes_the_entries_published_before_the_close() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let me = ids[0];
        let sleeper = {
            let ring = ring.clone();
            thread::spawn(move || {
                let first = sleep_next(&ring, me, &WaitSpec::default());
                (first, sleep_next(&ring, me, &WaitSpec::default()))
            })
        };
        producer.push(&event(8), false).unwrap();
        producer.flush();
        ring.close();
        assert_eq!(
            sleeper.join().expect("sleeper panicked"),
            (Ok(8), Err(WaitOutcome::Closed))
        );
    });
}

/// The poller races the ring's close: it returns `Closed`.
#[test]
fn a_poller_returns_closed_when_the_ring_closes() {
    model(|| {
        let (ring, _producer, ids, bell) = ring_with_bell(2, 1);
        let me = ids[0];
        let poller = {
            let ring = ring.clone();
            thread::spawn(move || poll_next(&ring, me, &WaitSpec::default(), &bell))
        };
        ring.close();
        assert_eq!(
            poller.join().expect("poller panicked"),
            Err(WaitOutcome::Closed)
        );
        assert_eq!(ring.pollers(), 0);
    });
}

/// Wake-one (W3) with the poller and a futex sleeper waiting: one entry without
/// `WAKEUP_ALL` wakes at most one of them, and one of them takes it (W1) before the
/// close that ends the model releases the other.
///
/// The publish is `flush()` split in two so that its wake-up count is visible:
/// `flush_reserving(1)` of one entry publishes it and wakes nobody (`wake(0)`: the fence
/// alone), then `wake(1)` is what `flush()` would have called. `Ring::wake` counts the
/// sleepers the futex reached plus one for a bell; it must be at most one. A sleeper
/// counted in `waiters` but not yet in the futex is not reached by the futex wake (it sees
/// `seq` move and does not sleep), so the bell rings too then: allowed, and the count is
/// still one. What is not allowed is ringing the bell when the futex already reached the
/// sleeper: two context switches for one entry. (Whoever is woken for the entry the other
/// took sleeps on: it returns only at the close, with `Closed`, never `Woken` — W2.)
#[test]
fn one_entry_wakes_the_poller_or_a_futex_sleeper_not_both() {
    model(|| {
        let (ring, mut producer, ids, bell) = ring_with_bell(2, 2);
        // Each consumer writes it when it got an entry.
        let got_one = Eventfd::new();
        // Both would return `Woken` on an explicit wake-up: none happens, so neither may
        // (W2 — in particular not the one woken for the entry the other took).
        let spec = wake_spec(&ring);
        let poller = {
            let (ring, me, got_one) = (ring.clone(), ids[0], got_one.clone());
            let bell = bell.clone();
            thread::spawn(move || {
                let got = poll_next(&ring, me, &spec, &bell);
                if got.is_ok() {
                    got_one.ring();
                }
                got
            })
        };
        let sleeper = {
            let (ring, me, got_one) = (ring.clone(), ids[1], got_one.clone());
            thread::spawn(move || {
                let got = sleep_next(&ring, me, &spec);
                if got.is_ok() {
                    got_one.ring();
                }
                got
            })
        };
        producer.push(&event(4), false).unwrap();
        assert_eq!(producer.flush_reserving(1), 1);
        let woken = ring.wake(1);
        // Nobody else rings the bell or calls FUTEX_WAKE before the close below: a claim
        // passes the wake-up on only when it leaves entries behind.
        let rung = bell.rings();
        let futex_wakes = ring
            .header()
            .stats
            .wake_calls
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            woken <= 1,
            "one entry woke {woken} sleepers (bell rung {rung})"
        );
        assert!(
            rung <= woken as u64,
            "a bell ring is counted in the wake-up"
        );
        assert!(futex_wakes <= 1);
        // W1: one of them takes the entry without help.
        got_one.wait();
        ring.close();
        let got = [
            poller.join().expect("poller panicked"),
            sleeper.join().expect("sleeper panicked"),
        ];
        let claimed = got.iter().filter(|g| **g == Ok(4)).count();
        assert_eq!(claimed, 1, "{got:?}");
        assert!(got.contains(&Err(WaitOutcome::Closed)), "{got:?}");
        assert_eq!(ring.cidx(), 1);
    });
}

/// The producer thread tries to park (no poller) while a consumer goes to sleep on the
/// futex: either the producer sees the sleeper and does not park, or the sleeper sees
/// the producer parked and unparks it. Then the producer publishes and the sleeper gets
/// the entry. Both sleeping (a parked producer, nobody watching the sources for the
/// sleeper) is a loom deadlock.
#[test]
fn a_parking_producer_and_a_futex_sleeper_never_both_sleep() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let me = ids[0];
        let sleeper = {
            let ring = ring.clone();
            thread::spawn(move || sleep_next(&ring, me, &WaitSpec::default()))
        };
        // The producer thread.
        if let Some(v) = ring.park_begin() {
            ring.park_wait(v);
        }
        ring.unparked();
        producer.push(&event(5), false).unwrap();
        producer.flush();
        assert_eq!(sleeper.join().expect("sleeper panicked"), Ok(5));
        assert!(!ring.producer_parked());
    });
}

/// The three-way handshake: a poller watches the sources (so the producer may park and a
/// futex sleeper need not unpark it) and then leaves — its `ppoll` timed out. Whichever
/// of the three comes last in the fences' order acts: the sleeper or the leaving poller
/// unparks the producer, or the producer does not park. The producer then publishes and
/// the sleeper gets the entry (a producer left parked is a loom deadlock).
#[test]
fn a_leaving_poller_hands_the_sources_back_to_a_parked_producer() {
    model(|| {
        let (ring, mut producer, ids, _bell) = ring_with_bell(2, 2);
        let poller = {
            let ring = ring.clone();
            let spec = WaitSpec::default();
            thread::spawn(move || {
                if ring.poller_enter(&spec).is_none() {
                    // Blocked on the sources and the bell until its deadline: nothing
                    // to model in between.
                    ring.poller_leave();
                }
            })
        };
        let sleeper = {
            let (ring, me) = (ring.clone(), ids[1]);
            thread::spawn(move || sleep_next(&ring, me, &WaitSpec::default()))
        };
        // The producer thread.
        if let Some(v) = ring.park_begin() {
            ring.park_wait(v);
        }
        ring.unparked();
        producer.push(&event(6), false).unwrap();
        producer.flush();
        poller.join().expect("poller panicked");
        assert_eq!(sleeper.join().expect("sleeper panicked"), Ok(6));
        assert!(!ring.producer_parked());
        assert_eq!(ring.pollers(), 0);
    });
}

/// The harvesting poller: woken by its sources (another thread writes the same eventfd
/// the bell does), it does the producer's work itself — publishes two entries with
/// `flush_reserving(1)`, waking one sleeper fewer for the one it claims — and claims one.
/// A futex sleeper beside it gets the other from that flush's wake-up alone: the poller
/// is slow to claim its own (it waits until the sleeper has its entry), so the baton its
/// claim would pass on cannot stand in for a wake-up the flush failed to make.
#[test]
fn a_harvesting_poller_publishes_for_a_futex_sleeper_beside_it() {
    model(|| {
        let (ring, mut producer, ids, bell) = ring_with_bell(4, 2);
        let source_ready = Arc::new(loom::sync::atomic::AtomicBool::new(false));
        let sleeper_got = Eventfd::new();
        let poller = {
            let (ring, me, bell) = (ring.clone(), ids[0], bell.clone());
            let (source_ready, sleeper_got) = (source_ready.clone(), sleeper_got.clone());
            thread::spawn(move || {
                let spec = WaitSpec::default();
                loop {
                    if let Some(id) = claim_one(&ring, me) {
                        return id;
                    }
                    match ring.wait_over(&spec) {
                        Some(WaitOutcome::Ready) => continue,
                        Some(outcome) => panic!("unexpected {outcome:?}"),
                        None => {}
                    }
                    if ring.poller_enter(&spec).is_none() {
                        bell.wait();
                        ring.poller_leave();
                    }
                    // Harvest what the sources have (under the kernel lock, in real use).
                    if source_ready.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        for id in 0..2 {
                            producer.push(&event(id), false).unwrap();
                        }
                        assert_eq!(producer.flush_reserving(1), 2);
                        sleeper_got.wait();
                    }
                }
            })
        };
        let sleeper = {
            let (ring, me) = (ring.clone(), ids[1]);
            thread::spawn(move || {
                let got = sleep_next(&ring, me, &WaitSpec::default());
                sleeper_got.ring();
                got
            })
        };
        // A source becomes ready.
        source_ready.store(true, std::sync::atomic::Ordering::Relaxed);
        bell.ring();
        let mut got = vec![
            poller.join().expect("poller panicked"),
            sleeper.join().expect("sleeper panicked").expect("an entry"),
        ];
        got.sort_unstable();
        assert_eq!(got, [0, 1]);
    });
}
