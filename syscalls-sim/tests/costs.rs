//! Costs bounded by what a queue holds, not by its capacity or its history (ARCHITECTURE.md §5):
//! REMOVE of a backlogged kevent is O(1); a huge ring costs no private memory per slot.
//! Generous bounds: these catch an O(n^2) or an O(capacity), not a slow machine.

mod util;

use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::proc::{rss, serial};
use util::*;

#[test]
fn removing_many_backlogged_kevents_takes_time_linear_in_their_number() {
    const N: u64 = 100_000;
    let _one = serial(); // one test measures the process's memory: one at a time
    let q = Instance::create(2, 0).unwrap();
    let mut evs: Vec<Ukevent> = (0..N).map(|i| user_ev(i, 0)).collect();
    for chunk in evs.chunks_mut(KEVENT_MAX_EVENTS) {
        assert_eq!(q.ctl(KEVENT_CTL_ADD, chunk).unwrap(), 0);
    }
    let mut evs: Vec<Ukevent> = (0..N).map(|i| user_ev(i, 0)).collect();
    for chunk in evs.chunks_mut(KEVENT_MAX_EVENTS) {
        assert_eq!(q.ctl(KEVENT_CTL_READY, chunk).unwrap(), 0);
    }
    let backlog = q
        .ring()
        .header()
        .stats
        .backlog_len
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(backlog, N - 2, "all but two wait in the backlog");
    let start = Instant::now();
    let mut evs: Vec<Ukevent> = (0..N).map(|i| user_ev(i, 0)).collect();
    for chunk in evs.chunks_mut(KEVENT_MAX_EVENTS) {
        assert_eq!(q.ctl(KEVENT_CTL_REMOVE, chunk).unwrap(), 0);
    }
    let took = start.elapsed();
    // O(backlog) per REMOVE took 6.4 s here; O(1) takes a few tens of milliseconds.
    assert!(
        took < Duration::from_secs(2),
        "REMOVE of {N} backlogged kevents took {took:?}"
    );
    let stats = q.ring().header();
    assert_eq!(
        stats
            .stats
            .backlog_len
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn a_ring_of_the_largest_capacity_costs_no_private_memory_per_slot() {
    let _one = serial(); // one test measures the process's memory: one at a time
    let before = rss(None);
    let q = Instance::create(kevent_ring::layout::MAX_CAPACITY, 0).unwrap();
    let mut e = [user_ev(1, 0)];
    q.ctl(KEVENT_CTL_ADD, &mut e).unwrap();
    q.ctl(KEVENT_CTL_READY, &mut e).unwrap();
    let got = q.get_events(1, 1, Some(1_000_000_000), &mut e, 0).unwrap();
    assert_eq!(got, 1);
    let grew = rss(None).saturating_sub(before);
    // The slots are shared memory touched only where used; a private table per slot
    // was 1 GiB for 2^24 slots.
    assert!(
        grew < 64 << 20,
        "a 2^24 ring grew RSS by {} MiB",
        grew >> 20
    );
}
