//! Loom models of every race in the ring protocol (ARCHITECTURE.md §3 and §7).
//!
//! Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test -p kevent-ring --release --test loom --test loom_sleep \
//!         --test loom_loop --test loom_lock
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
//! Sections a–h are here. The other places a consumer sleeps (`poller.rs`: the poller
//! blocked on its sources and bell, the parked producer thread; the owner's death) are
//! modelled in `loom_sleep.rs` (i, j), an event loop's sleep in `loom_loop.rs` (k, l),
//! the kernel's lock in `loom_lock.rs` (m, n).

#![cfg(loom)]

mod loom_util;

use kevent_ring::{ConsumerId, PushError, Ring, SlotState, Status, WaitOutcome, WaitSpec};
use loom::thread;
use loom_util::*;

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
        publish(&mut producer, N);
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
        publish(&mut producer, 2);
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
        publish(&mut producer, 2);
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
        publish(&mut producer, 2);
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
// h. the claim stamp: a release without a claim is seen, a real claim always is
// ---------------------------------------------------------------------------------------
//
// A consumer stamps the slot it claims with the position (Relaxed), then completes it
// (Release) and advances `uidx`; the producer reads the stamp once it has acquired a
// `uidx` past the entry (`Ring::was_claimed`, checked at release by the kernel). The
// chain of Release/Acquire must make the stamp visible: a real claim is never taken for
// a stray DONE (which the kernel would deliver again). And an entry a stray write turned
// into DONE — never claimed — is seen as such.

#[test]
fn the_producer_sees_the_claim_stamp_of_every_entry_released_by_a_consumer() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 2);
        publish(&mut producer, 2);
        let consumers: Vec<_> = ids
            .into_iter()
            .map(|me| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let claim = ring.claim(me, 1);
                    ring.complete_range(me, claim.start..claim.end);
                })
            })
            .collect();
        // The producer watches releases as they come, as the kernel does.
        let mut seen = 0;
        while seen < 2 {
            let released = producer.released(seen).expect("sound ring");
            for pos in released.clone() {
                assert!(
                    ring.was_claimed(pos),
                    "a claimed entry {pos} looked unclaimed"
                );
            }
            seen = released.end;
            thread::yield_now();
        }
        for c in consumers {
            c.join().expect("consumer panicked");
        }
    });
}

#[test]
fn an_entry_released_without_a_claim_is_seen_unclaimed() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let me = ids[0];
        publish(&mut producer, 2);
        // A stray write flips entry 1 from READY to DONE in the name of the consumer,
        // while the consumer takes entry 0.
        let ring2 = ring.clone();
        let stray = thread::spawn(move || {
            let (ready, done) = (
                SlotState::new(0, 0, Status::Ready).encode(),
                SlotState::new(0, me.0, Status::Done).encode(),
            );
            ring2.model_write_state(1, ready, done);
        });
        let claim = ring.claim(me, 1);
        ring.complete_range(me, claim.start..claim.end);
        stray.join().expect("stray writer");
        ring.advance();
        let released = producer.released(0).expect("sound ring");
        if released.contains(&0) {
            assert!(ring.was_claimed(0));
        }
        if released.contains(&1) {
            assert!(!ring.was_claimed(1), "entry 1 was never claimed");
        }
    });
}

/// The kernel's accounting before it reuses a slot (`syscalls-sim/src/kernel/mod.rs`,
/// `try_push`), step for step: learn the releases (`released`), read the claim stamp of
/// each entry up to the one whose slot is next, and push only if that one was among
/// them. Returns whether it pushed; `accounted` is the kernel's `released`.
fn push_after_accounting(
    ring: &Ring,
    producer: &mut kevent_ring::Producer,
    accounted: &mut u64,
    ev: &kevent_ring::Ukevent,
) -> bool {
    let (next, cap) = (producer.position(), ring.capacity());
    if next >= cap && *accounted <= next - cap {
        let released = producer.released(*accounted).expect("sound ring");
        let upto = released.end.min(next + 1 - cap);
        for pos in *accounted..upto {
            assert!(
                ring.was_claimed(pos),
                "a claimed entry {pos} looked unclaimed"
            );
        }
        *accounted = (*accounted).max(upto);
    }
    if next >= cap && *accounted <= next - cap {
        return false; // full to us, however far uidx moved since we looked
    }
    producer.push(ev, false).is_ok()
}

/// A consumer commits (and moves `uidx`) while the producer refills the slots it frees,
/// as the kernel does: every entry's claim stamp is read before its slot is reused, so
/// a claimed entry is never taken for an unclaimed one (and delivered twice). Without
/// the second check in `push_after_accounting`, `push` (which reads `uidx` again when
/// it sees the ring full) overwrites a stamp nobody read, and this model fails: the bug
/// `tests/consumers_racing_the_producer.rs` found through the public API. (Without the
/// producer's `yield_now` loom ran this model in a single execution; with it, both
/// outcomes are explored.)
#[test]
fn the_producer_reads_every_claim_stamp_before_it_reuses_the_slot() {
    model(|| {
        let (ring, mut producer, ids) = ring_with(2, 1);
        let me = ids[0];
        publish(&mut producer, 2);
        let ring2 = ring.clone();
        let consumer = thread::spawn(move || {
            let claim = ring2.claim(me, 2);
            ring2.complete_range(me, claim.start..claim.end);
        });
        let mut accounted = 0;
        // Refill the slot of entry 0 as soon as the ring lets us (two tries; the yield
        // lets loom run the consumer between the producer's steps).
        let mut pushed = false;
        for _ in 0..2 {
            thread::yield_now();
            if push_after_accounting(&ring, &mut producer, &mut accounted, &event(2)) {
                pushed = true;
                break;
            }
        }
        consumer.join().expect("consumer panicked");
        ring.advance();
        let released = producer.released(accounted).expect("sound ring");
        for pos in accounted..released.end {
            if pushed && pos + ring.capacity() < producer.position() {
                // Its slot was refilled: its stamp must have been read before.
                panic!("entry {pos}'s slot was reused before its release was accounted");
            }
            assert!(
                ring.was_claimed(pos),
                "a claimed entry {pos} looked unclaimed"
            );
        }
    });
}
