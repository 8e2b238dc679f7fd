//! Consumers that commit while the producer fills the slots they free: each event is
//! delivered exactly once and none is "redelivered". The producer must account for a
//! slot's release (read its claim stamp) before it reuses the slot; a consumer moving
//! `uidx` between the two made it take a claimed entry for an unclaimed one and deliver
//! it a second time (found by `adapters.rs`' multi-thread tokio test, ~4 % of its runs).

mod util;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use kevent::{Queue, Source, Token, Trigger};
use util::PATIENCE;

/// Runs `consumers` threads claiming `max` at a time from a ring of `capacity` slots
/// while this thread makes `n` user events ready once each; asserts each was delivered
/// once and the producer redelivered nothing.
fn each_once(capacity: usize, consumers: usize, max: usize, n: u64) {
    let q = Queue::builder()
        .capacity(capacity)
        .build()
        .expect("a queue");
    for id in 0..n {
        q.add(&Source::user(id), Token(id), Trigger::Edge).unwrap();
    }
    let seen: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
    let taken = AtomicU32::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..consumers {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let batch = q.wait(max, Some(Duration::from_millis(20))).unwrap();
                    for ev in &batch {
                        seen[ev.token().0 as usize].fetch_add(1, Ordering::Relaxed);
                        taken.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        for id in 0..n {
            q.ready(&Source::user(id)).unwrap();
        }
        let all = util::wait_until(PATIENCE, || u64::from(taken.load(Ordering::Relaxed)) >= n);
        // Time for a second delivery to show.
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        assert!(all, "{} of {n} delivered", taken.load(Ordering::Relaxed));
    });
    let twice: Vec<usize> = (0..n as usize)
        .filter(|&i| seen[i].load(Ordering::Relaxed) != 1)
        .collect();
    let stats = q.stats();
    assert!(
        twice.is_empty(),
        "not delivered exactly once: {:?} (counts {:?}); {stats:?}",
        &twice[..twice.len().min(8)],
        twice
            .iter()
            .take(8)
            .map(|&i| seen[i].load(Ordering::Relaxed))
            .collect::<Vec<_>>()
    );
    assert_eq!((stats.redelivered, stats.lost), (0, 0), "{stats:?}");
}

#[test]
fn three_threads_committing_into_a_16_slot_ring_get_each_of_100_000_events_once() {
    each_once(16, 3, 4, 100_000);
}

#[test]
fn four_threads_committing_into_a_64_slot_ring_get_each_of_100_000_events_once() {
    each_once(64, 4, 16, 100_000);
}
