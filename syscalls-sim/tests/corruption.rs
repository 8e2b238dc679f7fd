//! Corruption of the shared pages is detected or healed, never silent (ARCHITECTURE.md §3
//! "Untrusted memory": any word another process can write is validated before use;
//! corruption marks the ring broken and returns an error — never undefined behaviour,
//! never a lost event, never a hang).
//!
//! * A READY slot flipped to DONE by a stray write, in the name of a live consumer, of
//!   the kernel's own take-back marker (`RECLAIMED`, 0xffff) or of a consumer with no
//!   record: the entry vanished without anyone claiming it. It must be delivered again
//!   (flagged `KEVENT_RET_REDELIVERED`) within a reap tick or two, or the ring marked
//!   broken (then waits answer an error). (The ownerless DONE is in `fuzz_targeted.rs`.)
//! * The sleeper count (`waiters`) overwritten with 0 while a consumer of another process
//!   sleeps: the next entry must still reach it within a couple of reap intervals, not at
//!   its own timeout.
//! * A memfd with a valid identity block and random contents everywhere else, attached
//!   with [`Instance::attach`]: a wait with a 100 ms timeout returns (empty, or an error)
//!   within a second.
//!
//! Every blocking call has a timeout and every test body is bounded; the tests of this
//! file run one at a time (they fork, and their timings should not compete).

mod util;

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_ring::layout::{ring_bytes, HEADER_SIZE};
use kevent_ring::{SlotState, Status, RECLAIMED};
use kevent_syscalls::*;
use rustix::event::{eventfd, EventfdFlags};
use util::proc::{bounded, within, Children, SharedWords, XorShift};
use util::shm::{Shared, OFF_CIDX, OFF_KIDX, OFF_UIDX};
use util::{nanos, ready, ring_report, user_ev, wait_until, MS};

/// The reap interval of every queue here (the default): the reaper looks every 50 ms.
const REAP: Duration = Duration::from_millis(100);

/// Header offset of the wake line: `seq` (u32) at +0, `waiters` (u32) at +4.
const OFF_WAKE: usize = 512;

// --- a READY slot flipped to DONE ------------------------------------------------------

/// Who a stray write names as the owner of the DONE it leaves.
#[derive(Debug, Clone, Copy)]
enum Stray {
    /// The queue's own consumer (live, in this process).
    Owner,
    /// Another live consumer, attached in this process, that never claimed anything.
    OtherLive,
    /// The kernel's take-back marker.
    Reclaimed,
    /// An id whose record is free.
    FreeRecord,
    /// An id beyond the consumer table.
    NoSuchRecord,
}

/// A queue of 8 slots (reap interval [`REAP`]) with user kevents 1..=8 and entries 1 and
/// 2 published; slot 0 (entry 1, READY) is flipped to DONE in the name of `stray`. Then
/// the queue's consumer takes what comes for up to a second: entry 1 must come again,
/// flagged `REDELIVERED` — or the ring must be marked broken and waits answer an error.
/// Either way the ring goes on (or says it cannot).
fn a_ready_slot_flipped_to_done(stray: Stray) {
    let q = Instance::create_with(8, 0, REAP).expect("kevent_init");
    let mut evs: Vec<Ukevent> = (1..=8).map(|id| user_ev(id, 0)).collect();
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut evs).expect("ADD"), 0);
    let ring = Shared::ring_of(&q);
    let memfd = q.ring().memfd().expect("memfd");
    let doorbell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd");
    let other = Instance::attach(memfd, doorbell).expect("a second consumer attaches");
    let owner = match stray {
        Stray::Owner => q.consumer().0,
        Stray::OtherLive => other.consumer().0,
        Stray::Reclaimed => RECLAIMED,
        Stray::FreeRecord => 40,
        Stray::NoSuchRecord => 500,
    };
    ready(&q, 1);
    ready(&q, 2);
    assert_eq!(q.ring().kidx(), 2);
    let flipped = SlotState::new(0, owner, Status::Done).encode();
    let was = ring.u64_at(HEADER_SIZE).swap(flipped, Ordering::SeqCst);
    assert_eq!(
        was,
        SlotState::new(0, 0, Status::Ready).encode(),
        "slot 0 held entry 1, READY"
    );
    let t = Instant::now();
    let mut got: Vec<(Ukevent, Duration)> = Vec::new();
    let mut buf = [Ukevent::default(); 8];
    while !got.iter().any(|(e, _)| e.user == 1)
        && q.ring().broken().is_none()
        && t.elapsed() < Duration::from_secs(1)
    {
        match q.get_events(1, 8, Some(20 * MS), &mut buf, 0) {
            Ok(n) => got.extend(buf[..n].iter().map(|&e| (e, t.elapsed()))),
            Err(e) => {
                assert!(q.ring().broken().is_some(), "get_events: {e}");
                break;
            }
        }
    }
    let stats = q.ring().stats();
    if let Some(why) = q.ring().broken() {
        // Detected: every wait says so.
        println!(
            "{stray:?} (owner {owner:#x}): the ring is marked broken ({why}) after {:?}",
            t.elapsed()
        );
        let e = q
            .wait(1, q.ring().uidx(), Some(100 * MS), 0)
            .expect_err("a wait on a broken ring");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        let e = q
            .get_events(1, 8, Some(100 * MS), &mut buf, 0)
            .expect_err("get_events on a broken ring");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
        return;
    }
    let again = got.iter().find(|(e, _)| e.user == 1);
    assert!(
        again.is_some(),
        "{stray:?}: slot 0 (entry 1, READY) flipped to DONE with owner {owner:#x}: entry 1 was \
         neither delivered again nor the ring marked broken within 1 s (lost silently); \
         delivered {:?}; slot 0 now {:?}; lost {} redelivered {}; {}",
        got.iter()
            .map(|(e, at)| (e.user, e.ret_flags, *at))
            .collect::<Vec<_>>(),
        q.ring().slot_state(0),
        stats.lost.load(Ordering::SeqCst),
        stats.redelivered.load(Ordering::SeqCst),
        ring_report(&q)
    );
    let (again, at) = *again.unwrap();
    println!("{stray:?} (owner {owner:#x}): entry 1 delivered again after {at:?}");
    assert_ne!(
        again.ret_flags & KEVENT_RET_REDELIVERED,
        0,
        "{stray:?}: entry 1 came again unflagged: {again:?}"
    );
    // Entry 2 once, entry 1 once more: nothing else.
    let mut users: Vec<u64> = got.iter().map(|(e, _)| e.user).collect();
    users.sort_unstable();
    assert_eq!(users, [1, 2], "{stray:?}: delivered {got:?}");
    assert_eq!(stats.lost.load(Ordering::SeqCst), 0);
    // The ring goes on: each later event arrives exactly once.
    for id in 3..=8 {
        ready(&q, id);
    }
    let mut later = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    while later.len() < 6 && Instant::now() < end {
        let n = q
            .get_events(1, 8, Some(50 * MS), &mut buf, 0)
            .expect("get_events");
        later.extend(buf[..n].iter().map(|e| e.user));
    }
    later.sort_unstable();
    assert_eq!(later, [3, 4, 5, 6, 7, 8], "{stray:?}: {}", ring_report(&q));
    assert_eq!(q.ring().uidx(), q.ring().kidx(), "{}", ring_report(&q));
    drop(other);
    q.close();
}

#[test]
fn a_ready_slot_flipped_to_done_in_the_name_of_the_queues_own_live_consumer_is_not_lost() {
    bounded(Duration::from_secs(30), || {
        a_ready_slot_flipped_to_done(Stray::Owner)
    });
}

#[test]
fn a_ready_slot_flipped_to_done_in_the_name_of_another_live_consumer_is_not_lost() {
    bounded(Duration::from_secs(30), || {
        a_ready_slot_flipped_to_done(Stray::OtherLive)
    });
}

#[test]
fn a_ready_slot_flipped_to_done_as_taken_back_by_the_kernel_is_not_lost() {
    bounded(Duration::from_secs(30), || {
        a_ready_slot_flipped_to_done(Stray::Reclaimed)
    });
}

#[test]
fn a_ready_slot_flipped_to_done_in_the_name_of_a_free_consumer_record_is_not_lost() {
    bounded(Duration::from_secs(30), || {
        a_ready_slot_flipped_to_done(Stray::FreeRecord)
    });
}

#[test]
fn a_ready_slot_flipped_to_done_in_the_name_of_a_consumer_beyond_the_table_is_not_lost() {
    bounded(Duration::from_secs(30), || {
        a_ready_slot_flipped_to_done(Stray::NoSuchRecord)
    });
}

// --- the sleeper count overwritten ------------------------------------------------------

/// How the consumer in the other process sleeps.
#[derive(Debug, Clone, Copy)]
enum Sleep {
    GetEvents,
    Wait,
}

/// A consumer in a forked child sleeps with a 10 s timeout; the ring's `waiters` is then
/// overwritten with 0 and one entry published. The child must have it within a second
/// (about two reap intervals: the reaper sees the consumer table count a sleeper that
/// `waiters` does not) — not at its own timeout.
fn a_sleeper_uncounted_in_waiters_still_gets_the_next_entry(how: Sleep) {
    const TIMEOUT: Duration = Duration::from_secs(10);
    let q = Instance::create_with(64, 0, REAP).expect("kevent_init");
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [user_ev(1, 0)]).expect("ADD"), 0);
    let h = register(q.clone());
    let ring = Shared::ring_of(&q);
    // [phase (1 waiting, 2 returned), entries, µs asleep, error]
    let board = Arc::new(SharedWords::new(4));
    let mut kids = Children::default();
    let b = board.clone();
    let child = kids.fork(move || {
        let Ok(cq) = instance(h) else { return 2 };
        b.at(0).store(1, Ordering::SeqCst);
        let t = Instant::now();
        let got = match how {
            Sleep::GetEvents => {
                let mut buf = [Ukevent::default(); 8];
                cq.get_events(1, 8, Some(nanos(TIMEOUT)), &mut buf, 0)
                    .map(|n| n as u64)
            }
            Sleep::Wait => kevent_wait(h, 1, cq.ring().uidx(), Some(nanos(TIMEOUT)), 0).map(|c| {
                let n = (c.start..c.end).filter(|&p| cq.entry(p).is_some()).count();
                cq.commit_range(c.start..c.end);
                n as u64
            }),
        };
        b.at(2)
            .store(t.elapsed().as_micros() as u64, Ordering::SeqCst);
        match got {
            Ok(n) => b.at(1).store(n, Ordering::SeqCst),
            Err(e) => b
                .at(3)
                .store(e.raw_os_error().unwrap_or(-1) as u64, Ordering::SeqCst),
        }
        b.at(0).store(2, Ordering::SeqCst);
        0
    });
    assert!(
        wait_until(Duration::from_secs(5), || board
            .at(0)
            .load(Ordering::SeqCst)
            == 1
            && q.ring().sleepers() == 1),
        "the child does not sleep on the ring: {}",
        ring_report(&q)
    );
    // Let it reach FUTEX_WAIT, then take its count out of `waiters` (the high half of the
    // 8 bytes at the wake line; `seq`, the low half, is left alone).
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        board.at(0).load(Ordering::SeqCst),
        1,
        "the child returned early"
    );
    ring.u64_at(OFF_WAKE)
        .fetch_and(0xffff_ffff, Ordering::SeqCst);
    assert_eq!(q.ring().sleepers(), 0);
    let t = Instant::now();
    ready(&q, 1);
    let returned = wait_until(TIMEOUT + Duration::from_secs(2), || {
        board.at(0).load(Ordering::SeqCst) == 2
    });
    let took = t.elapsed();
    assert!(returned, "the child never returned: {}", ring_report(&q));
    kids.expect_success(child, Duration::from_secs(5), "the sleeping consumer");
    assert_eq!(
        board.at(3).load(Ordering::SeqCst),
        0,
        "the child's call failed"
    );
    assert_eq!(
        board.at(1).load(Ordering::SeqCst),
        1,
        "the child took one entry"
    );
    println!("{how:?}: the uncounted sleeper had its entry {took:?} after the publish");
    assert!(
        took < Duration::from_secs(1),
        "{how:?}: a consumer of another process, asleep while `waiters` was overwritten \
         with 0, had the entry only {took:?} after it was published (it slept {} ms in all; \
         its timeout is {TIMEOUT:?}): neither the publish nor the reaper woke it",
        board.at(2).load(Ordering::SeqCst) / 1000
    );
    kevent_close(h).expect("close");
}

#[test]
fn a_consumer_of_another_process_asleep_in_get_events_while_waiters_is_zeroed_gets_the_next_entry()
{
    bounded(Duration::from_secs(30), || {
        a_sleeper_uncounted_in_waiters_still_gets_the_next_entry(Sleep::GetEvents)
    });
}

#[test]
fn a_consumer_of_another_process_asleep_in_kevent_wait_while_waiters_is_zeroed_gets_the_next_entry()
{
    bounded(Duration::from_secs(30), || {
        a_sleeper_uncounted_in_waiters_still_gets_the_next_entry(Sleep::Wait)
    });
}

// --- a ring of random contents ----------------------------------------------------------

/// Fixed seeds for the random rings (printed with every failure).
const SEEDS: [u64; 16] = [
    0x5eed_0001,
    0x5eed_0002,
    0x5eed_0003,
    0x5eed_0004,
    0x5eed_0005,
    0x5eed_0006,
    0x5eed_0007,
    0x5eed_0008,
    0x5eed_0009,
    0x5eed_000a,
    0x5eed_000b,
    0x5eed_000c,
    0x5eed_000d,
    0x5eed_000e,
    0x5eed_000f,
    0x5eed_0010,
];

/// Slots in the random rings.
const RANDOM_CAP: u32 = 64;

/// A sealed memfd holding a ring of [`RANDOM_CAP`] slots: `identity` (the first 128 bytes
/// of a real ring's header: magic, version, sizes, capacity) and random words from
/// `seed` everywhere else — but one record of the consumer table is free, so that a
/// consumer can register.
fn random_ring(identity: &[u64; 16], seed: u64) -> std::os::fd::OwnedFd {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "kevent-random",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .expect("memfd_create");
    let len = ring_bytes(RANDOM_CAP);
    rustix::fs::ftruncate(&fd, len as u64).expect("ftruncate");
    {
        let map = Shared::map(len, Some(fd.as_fd()));
        let mut rng = XorShift(seed);
        for i in 0..len / 8 {
            map.word(i).store(rng.next(), Ordering::Relaxed);
        }
        for (i, &w) in identity.iter().enumerate() {
            map.word(i).store(w, Ordering::Relaxed);
        }
        // The record's state word is the low half of its first 8 bytes (0 = free).
        let record = 1024 + 32 * rng.below(64) as usize;
        map.u64_at(record).fetch_and(!0xffff_ffff, Ordering::SeqCst);
    }
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
        .expect("seal");
    fd
}

/// The identity block of a real ring of [`RANDOM_CAP`] slots.
fn real_identity() -> [u64; 16] {
    let real = Instance::create(RANDOM_CAP, 0).expect("kevent_init");
    let ring = Shared::ring_of(&real);
    let id = std::array::from_fn(|i| ring.word(i).load(Ordering::SeqCst));
    real.close();
    id
}

/// How the consumer waits on the random ring.
#[derive(Debug, Clone, Copy)]
enum Look {
    Wait,
    GetEvents,
}

/// For every seed: attach to a random ring and wait on it with a 100 ms timeout; the call
/// must return — with nothing, or an error — within a second.
fn a_wait_on_a_ring_of_random_contents_returns(look: Look) {
    let identity = real_identity();
    let mut stuck = Vec::new();
    let mut slowest = Duration::ZERO;
    for seed in SEEDS {
        let memfd = random_ring(&identity, seed);
        let doorbell = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).expect("eventfd");
        let q = match Instance::attach(memfd.as_fd(), doorbell) {
            Ok(q) => q,
            Err(e) => {
                println!("seed {seed:#x}: refused at attach: {e}");
                continue;
            }
        };
        let r = q.ring();
        let (k, c, u) = (r.kidx(), r.cidx(), r.uidx());
        let q2 = q.clone();
        let t = Instant::now();
        let outcome = within(Duration::from_secs(1), move || match look {
            Look::Wait => q2
                .wait(1, q2.ring().uidx(), Some(100 * MS), 0)
                .map(|c| c.owned)
                .map_err(|e| e.to_string()),
            Look::GetEvents => {
                let mut buf = [Ukevent::default(); 8];
                q2.get_events(1, 8, Some(100 * MS), &mut buf, 0)
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string())
            }
        });
        let took = t.elapsed();
        match outcome {
            None => {
                println!(
                    "seed {seed:#x}: {look:?} with a 100 ms timeout still runs after 1 s \
                     (kidx {k:#x} cidx {c:#x} uidx {u:#x} at attach, cidx {:#x} now)",
                    q.ring().cidx()
                );
                stuck.push(seed);
                // Let the stuck call end (it claims until it finds the ring broken), so
                // that it does not burn a core for the rest of the run.
                q.ring().mark_broken(kevent_ring::Broken::Unknown);
            }
            Some(result) => {
                slowest = slowest.max(took);
                println!("seed {seed:#x}: {look:?} returned {result:?} after {took:?}");
                assert!(
                    matches!(result, Ok(0) | Err(_)),
                    "seed {seed:#x}: {look:?} on a random ring handed out {result:?} entries"
                );
            }
        }
    }
    println!("{look:?}: slowest return {slowest:?}");
    assert!(
        stuck.is_empty(),
        "{look:?} with a 100 ms timeout on a ring of random contents did not return within \
         1 s for seeds {:x?} (of {})",
        stuck,
        SEEDS.len()
    );
}

#[test]
fn a_wait_with_a_timeout_on_a_ring_of_random_contents_returns_by_it() {
    bounded(Duration::from_secs(60), || {
        a_wait_on_a_ring_of_random_contents_returns(Look::Wait)
    });
}

#[test]
fn get_events_with_a_timeout_on_a_ring_of_random_contents_returns_by_it() {
    bounded(Duration::from_secs(60), || {
        a_wait_on_a_ring_of_random_contents_returns(Look::GetEvents)
    });
}

/// The positions the random rings start from are read through the same offsets as the
/// queue's (a sanity check of the scribbler, not a defect).
#[test]
fn the_random_ring_keeps_the_identity_and_scrambles_the_positions() {
    bounded(Duration::from_secs(10), || {
        let identity = real_identity();
        let memfd = random_ring(&identity, SEEDS[0]);
        let map = Shared::map(ring_bytes(RANDOM_CAP), Some(memfd.as_fd()));
        for (i, &w) in identity.iter().enumerate() {
            assert_eq!(map.word(i).load(Ordering::SeqCst), w);
        }
        let pos = [OFF_KIDX, OFF_CIDX, OFF_UIDX].map(|o| map.u64_at(o).load(Ordering::SeqCst));
        assert!(pos.iter().all(|&p| p != 0), "{pos:x?}");
    });
}
