//! Targeted corruptions of the shared pages (ARCHITECTURE.md §3 "Untrusted memory"): one word
//! written wrong at a time — a garbage or wrong-lap state at `uidx`, a claim in the name
//! of a consumer that does not exist, a READY slot flipped to DONE — each detected
//! (the ring marked broken) or healed (the entry delivered again), never lost silently
//! nor stalling the ring. The random scribbling is in `fuzz_shared.rs`; like it, this
//! file runs in a debug build too (`.ci/run`), where an overflow would panic.

mod util;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_ring::layout::{HEADER_SIZE, SLOT_SIZE};
use kevent_ring::{SlotState, Status};
use kevent_syscalls::*;
use util::proc::{bounded, within};
use util::shm::{Shared, OFF_CIDX, OFF_KIDX};
use util::{ready, user_ev, MS};

/// A queue of 8 slots with user events 1..=8, and the ring mapped for scribbling.
fn small_queue() -> (Arc<Instance>, Shared) {
    let q = Instance::create_with(8, 0, Duration::from_millis(100)).expect("kevent_init");
    let mut evs: Vec<Ukevent> = (1..=8).map(|id| user_ev(id, 0)).collect();
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut evs).unwrap(), 0);
    let ring = Shared::ring_of(&q);
    (q, ring)
}

/// Claims the entry at the user index (slot 0), overwrites its state word with
/// `state(me)` (`me`: the claiming consumer's id), takes and commits everything after it
/// (`uidx` cannot pass slot 0), and asserts that the watchdog marks the ring broken
/// within a second; `what` names the state word.
fn the_ring_stalled_at_the_user_index_is_marked_broken(state: impl FnOnce(u16) -> u64, what: &str) {
    let (q, ring) = small_queue();
    let me = q.consumer();
    ready(&q, 1);
    let c = q.ring().claim(me, 1);
    assert_eq!((c.start, c.owned), (0, 1));
    ring.u64_at(HEADER_SIZE)
        .store(state(me.0), Ordering::SeqCst);
    assert_eq!(q.ring().complete_range(me, c.start..c.end), 0);
    // Everything after it is taken and committed, but uidx cannot pass slot 0.
    for id in 2..=8 {
        ready(&q, id);
    }
    let c = q.ring().claim(me, 8);
    q.ring().complete_range(me, c.start..c.end);
    assert_eq!(q.ring().uidx(), 0);
    let end = Instant::now() + Duration::from_secs(1);
    while q.ring().broken().is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        q.ring().broken().is_some(),
        "the ring is stalled at uidx {} by {what} (slot state {:?}), backlog {}, and not \
         marked broken",
        q.ring().uidx(),
        q.ring().slot_state(0),
        q.ring().header().stats.backlog_len.load(Ordering::SeqCst)
    );
}

/// A slot whose state word was overwritten with garbage while it sat at the user index
/// (claimed, not yet committed) blocks `uidx` for good: nothing is published after the
/// ring fills. The watchdog must call that corruption what it is.
#[test]
fn a_garbage_state_word_at_the_user_index_marks_the_ring_broken_instead_of_stalling_it() {
    bounded(Duration::from_secs(30), || {
        // A status byte no state has.
        the_ring_stalled_at_the_user_index_is_marked_broken(
            |_| 0xdead_beef_0000_00ff,
            "a garbage state word",
        );
    });
}

/// The same with a state word that decodes — a valid status and owner — but names
/// another lap: it can never be completed or reset either.
#[test]
fn a_state_word_of_the_wrong_lap_at_the_user_index_marks_the_ring_broken() {
    bounded(Duration::from_secs(30), || {
        the_ring_stalled_at_the_user_index_is_marked_broken(
            |me| SlotState::new(7, me, Status::Claimed).encode(),
            "a state word of lap 7",
        );
    });
}

/// A READY slot flipped to DONE by a stray write (a one-bit difference in the status
/// byte): the entry vanished without anyone claiming it. It must be delivered again — not
/// released silently with `lost` still 0 — and the ring must go on.
#[test]
fn a_ready_slot_flipped_to_done_is_delivered_again_not_lost_silently() {
    bounded(Duration::from_secs(30), || {
        let (q, ring) = small_queue();
        let me = q.consumer();
        ready(&q, 1);
        ready(&q, 2);
        assert_eq!(q.ring().kidx(), 2);
        let flipped = SlotState::new(0, 0, Status::Done).encode();
        let was = ring.u64_at(HEADER_SIZE).swap(flipped, Ordering::SeqCst);
        assert_eq!(was, SlotState::new(0, 0, Status::Ready).encode());
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(2);
        while got.len() < 2 && q.ring().broken().is_none() && Instant::now() < end {
            let c = q.ring().claim(me, 8);
            got.extend((c.start..c.end).filter_map(|pos| q.entry(pos)));
            q.ring().complete_range(me, c.start..c.end);
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut users: Vec<u64> = got.iter().map(|e| e.user).collect();
        users.sort_unstable();
        assert_eq!(
            users,
            [1, 2],
            "entries delivered {got:?}; slot 0 {:?}, uidx {}, broken {:?}",
            q.ring().slot_state(0),
            q.ring().uidx(),
            q.ring().broken()
        );
        let again = got.iter().find(|e| e.user == 1).unwrap();
        assert_ne!(again.ret_flags & KEVENT_RET_REDELIVERED, 0, "{again:?}");
        assert_eq!(q.ring().header().stats.lost.load(Ordering::SeqCst), 0);
        // The ring goes on: every later event arrives once.
        for id in 3..=8 {
            ready(&q, id);
        }
        let mut later = 0;
        let end = Instant::now() + Duration::from_secs(2);
        while later < 6 && Instant::now() < end {
            let c = q.ring().claim(me, 8);
            later += (c.start..c.end)
                .filter(|&pos| q.entry(pos).is_some())
                .count();
            q.ring().complete_range(me, c.start..c.end);
        }
        assert_eq!(later, 6);
        assert_eq!(q.ring().uidx(), q.ring().kidx());
        q.close();
    });
}

/// A slot CLAIMED in the name of a consumer that does not exist (no such record: a
/// scribbled owner field) is never reclaimed: the reaper only looks at the owners in its
/// table. It must be delivered again, as a dead consumer's would be (or the ring marked
/// broken).
#[test]
fn a_slot_claimed_by_a_consumer_that_does_not_exist_is_delivered_again() {
    bounded(Duration::from_secs(30), || {
        for owner in [40u16, 500] {
            let (q, ring) = small_queue();
            ready(&q, 1);
            assert_eq!(q.ring().kidx(), 1);
            let claimed = SlotState::new(0, owner, Status::Claimed).encode();
            let was = ring.u64_at(HEADER_SIZE).swap(claimed, Ordering::SeqCst);
            assert_eq!(was, SlotState::new(0, 0, Status::Ready).encode());
            ring.u64_at(OFF_CIDX).store(1, Ordering::SeqCst); // as its claim did
            let end = Instant::now() + Duration::from_secs(1);
            let mut again = None;
            while again.is_none() && q.ring().broken().is_none() && Instant::now() < end {
                let c = q.ring().claim(q.consumer(), 8);
                again = (c.start..c.end).find_map(|pos| q.entry(pos));
                q.ring().complete_range(q.consumer(), c.start..c.end);
                std::thread::sleep(Duration::from_millis(5));
            }
            assert!(
                again.is_some_and(|e| e.user == 1 && e.ret_flags & KEVENT_RET_REDELIVERED != 0)
                    || q.ring().broken().is_some(),
                "owner {owner}: entry neither delivered again nor the ring marked broken; \
                 slot 0 {:?}, uidx {}",
                q.ring().slot_state(0),
                q.ring().uidx()
            );
            q.close();
        }
    });
}

/// `kevent_ctl` and a blocking `kevent_wait` answer `InvalidData` once the ring is
/// broken; a non-blocking `kevent_wait` and `kevent_get_events` must too, instead of
/// handing out entries of a ring known to be corrupt.
#[test]
fn get_events_on_a_broken_ring_returns_an_error_not_entries() {
    bounded(Duration::from_secs(10), || {
        let (q, _ring) = small_queue();
        ready(&q, 1);
        q.ring().mark_broken(kevent_ring::Broken::ClaimIndex);
        let e = q
            .wait(1, q.ring().uidx(), Some(100 * MS), 0)
            .expect_err("wait");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let got = q.wait(1, q.ring().uidx(), Some(0), 0);
        assert_eq!(
            got.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::InvalidData),
            "a non-blocking wait on a broken ring"
        );
        let mut buf = [Ukevent::default(); 4];
        let got = q.get_events(1, 4, Some(100 * MS), &mut buf, 0);
        assert_eq!(
            got.map_err(|e| e.kind()),
            Err(std::io::ErrorKind::InvalidData),
            "get_events on a broken ring"
        );
    });
}

/// A scribbled `kidx` far ahead of everything makes every claim "succeed" with nothing
/// owned. `kevent_get_events` must still end by its timeout (or with an error once the
/// producer marks the ring broken) instead of claiming forever.
#[test]
fn get_events_returns_by_its_timeout_when_kidx_is_scribbled() {
    bounded(Duration::from_secs(10), || {
        let (q, ring) = small_queue();
        ring.u64_at(OFF_KIDX).store(1 << 40, Ordering::SeqCst);
        let q2 = q.clone();
        let t = Instant::now();
        let r = within(Duration::from_secs(2), move || {
            let mut buf = [Ukevent::default(); 4];
            q2.get_events(1, 4, Some(100 * MS), &mut buf, 0)
                .map_err(|e| e.kind())
        });
        assert!(
            r.is_some(),
            "get_events with a 100 ms timeout still runs after 2 s (cidx {})",
            q.ring().cidx()
        );
        assert!(matches!(
            r,
            Some(Ok(0)) | Some(Err(std::io::ErrorKind::InvalidData))
        ));
        assert!(t.elapsed() < Duration::from_secs(1));
    });
}

#[test]
fn the_scribbler_maps_the_same_pages_as_the_queue() {
    bounded(Duration::from_secs(10), || {
        let (q, ring) = small_queue();
        assert_eq!(
            ring.len,
            HEADER_SIZE + 8 * SLOT_SIZE,
            "the whole ring is mapped"
        );
        ready(&q, 1);
        assert_eq!(ring.u64_at(OFF_KIDX).load(Ordering::SeqCst), 1);
        assert_eq!(
            ring.u64_at(HEADER_SIZE).load(Ordering::SeqCst),
            SlotState::new(0, 0, Status::Ready).encode()
        );
    });
}

/// Not a corruption: a consumer preempted inside `Ring::advance`, between resetting the
/// slot at `uidx` for its next lap (EMPTY, lap + 1) and moving `uidx` past it. Under load
/// that lasts longer than two looks of the reaper (half a reap interval apart); the
/// watchdog must not take it for a state word of another lap and break the ring. Found
/// by a stress run of a `kevent::Loop` under CPU hogs: `try_poll` failed with EIO ("the ring is
/// broken") after ~5 M iterations, the ring's slot at `uidx` EMPTY of the next lap.
#[test]
fn a_consumer_preempted_between_resetting_the_slot_at_uidx_and_moving_uidx_does_not_break_the_ring()
{
    bounded(Duration::from_secs(30), || {
        let (q, ring) = small_queue();
        let me = q.consumer();
        ready(&q, 1);
        ready(&q, 2);
        let c = q.ring().claim(me, 1);
        assert_eq!((c.start, c.owned), (0, 1));
        assert!(q.ring().complete(me, 0));
        // What `release_one` does first; the uidx CAS that follows is "preempted".
        let reset = SlotState::new(1, 0, Status::Empty).encode();
        let was = ring.u64_at(HEADER_SIZE).swap(reset, Ordering::SeqCst);
        assert_eq!(was, SlotState::new(0, me.0, Status::Done).encode());
        // Several looks of the reaper (every 50 ms).
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(q.ring().broken(), None, "uidx {}", q.ring().uidx());
        // The consumer resumes (or the reaper helped): the ring goes on.
        q.ring().advance();
        assert_eq!(q.ring().uidx(), 1);
        let c = q.ring().claim(me, 8);
        assert_eq!((c.start, c.owned), (1, 1));
        q.ring().complete_range(me, c.start..c.end);
        assert_eq!(q.ring().uidx(), 2);
        q.close();
    });
}
