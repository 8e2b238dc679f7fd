//! Memory under churn stays flat (ARCHITECTURE.md §4: the kernel's queues cost memory in
//! proportion to what they hold — registrations, entries outstanding — never to how many
//! kevents came and went).
//!
//! Each test repeats one short `kevent_ctl` cycle: first [`WARMUP`] times (so that every
//! table reaches its working size), then [`cycles`] times more, and compares the process's
//! resident set (`VmRSS`) before and after the second run: it must not move by more than
//! [`SLACK_KB`] either way. A leak of one 16-byte record per cycle — a `(index, gen)` pair
//! left in a list nobody drains — shows as ~6 MB here.
//!
//! The tests of this file run one at a time ([`bounded`] takes the serial lock): the
//! resident set is the process's, and another test's allocations would blur it.
//!
//! `KEVENT_CHURN_CYCLES=4000000 cargo test --release -p kevent-syscalls --test churn --
//! --nocapture` runs the four million cycles (the README's figures); the default
//! keeps CI short.

mod util;

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::proc::{bounded, rss};
use util::{fd_ev, pipe, ring_report, user_ev, write_bytes};

/// Cycles run before the first measurement.
const WARMUP: u64 = 50_000;
/// Cycles run between the two measurements, unless `KEVENT_CHURN_CYCLES` says otherwise.
const CYCLES: u64 = 400_000;

/// Cycles run between the two measurements: `KEVENT_CHURN_CYCLES`, or [`CYCLES`].
fn cycles() -> u64 {
    match std::env::var("KEVENT_CHURN_CYCLES") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("KEVENT_CHURN_CYCLES={v:?} is not a number of cycles")),
        Err(_) => CYCLES,
    }
}

/// How long a test may take: two minutes per [`CYCLES`] cycles.
fn time_limit() -> Duration {
    Duration::from_secs(120 * cycles().div_ceil(CYCLES))
}

/// How far the resident set may move over the measured cycles, in kB, whatever their
/// number.
const SLACK_KB: i64 = 2 * 1024;

/// The process's resident set size in kB (`VmRSS` in `/proc/self/status`), after freed
/// memory went back to the system: memory another test freed (and left resident) must
/// not hide a leak that reuses it.
fn rss_kb() -> i64 {
    // SAFETY: malloc_trim only gives free heap memory back to the system.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    (rss(None) / 1024) as i64
}

/// Runs `cycle` [`WARMUP`] times, then [`cycles`] times between two looks at the resident
/// set, and asserts it stayed within [`SLACK_KB`]. `report` adds the queue's own view.
fn stays_flat(what: &str, mut cycle: impl FnMut(u64), report: impl Fn() -> String) {
    for i in 0..WARMUP {
        cycle(i);
    }
    let cycles = cycles();
    let before = rss_kb();
    let t = Instant::now();
    for i in WARMUP..WARMUP + cycles {
        cycle(i);
    }
    let elapsed = t.elapsed();
    let after = rss_kb();
    let grew = after - before;
    println!(
        "{what}: {cycles} cycles in {elapsed:.2?} ({:.0} cycles/s); VmRSS {before} kB -> \
         {after} kB ({grew:+} kB, {:+.1} MB per million cycles); {}",
        cycles as f64 / elapsed.as_secs_f64(),
        grew as f64 / 1024.0 * 1_000_000.0 / cycles as f64,
        report()
    );
    assert!(
        grew.abs() < SLACK_KB,
        "{what}: the resident set moved by {grew:+} kB over {cycles} cycles (from {before} kB \
         to {after} kB; allowed ±{SLACK_KB} kB): memory grows with churn; {}",
        report()
    );
}

/// A level-triggered pipe that is readable, added and removed again and again: every ADD
/// returns it ready at once (`KEVENT_RET_DONE`), nobody ever waits on the queue.
#[test]
fn adding_and_removing_a_readable_level_pipe_again_and_again_keeps_memory_flat() {
    bounded(time_limit(), || {
        let q = Instance::create(64, 0).expect("kevent_init");
        let (r, w): (OwnedFd, OwnedFd) = pipe();
        write_bytes(&w, b"x");
        let ev = fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, 0, 7);
        let cycle = |i: u64| {
            let mut add = [ev];
            assert_eq!(
                q.ctl(KEVENT_CTL_ADD, &mut add).expect("ADD"),
                1,
                "cycle {i}"
            );
            assert_eq!(
                add[0].ret_flags, KEVENT_RET_DONE,
                "cycle {i}: ADD of a readable pipe returns it ready: {:?}",
                add[0]
            );
            assert_eq!(
                q.ctl(KEVENT_CTL_REMOVE, &mut [ev]).expect("REMOVE"),
                0,
                "cycle {i}"
            );
        };
        stays_flat("ADD/REMOVE of a readable level pipe", cycle, || {
            ring_report(&q)
        });
        q.close();
    });
}

/// One cycle of the user kevent tests: ADD, READY and REMOVE of `ev`, each succeeding.
fn add_ready_remove(q: &Instance, ev: Ukevent, cycle: u64) {
    assert_eq!(
        q.ctl(KEVENT_CTL_ADD, &mut [ev]).expect("ADD"),
        0,
        "cycle {cycle}"
    );
    assert_eq!(
        q.ctl(KEVENT_CTL_READY, &mut [ev]).expect("READY"),
        0,
        "cycle {cycle}"
    );
    assert_eq!(
        q.ctl(KEVENT_CTL_REMOVE, &mut [ev]).expect("REMOVE"),
        0,
        "cycle {cycle}"
    );
}

/// The ring is full (64 user kevents made ready, one more waiting in the backlog, nobody
/// consumes); another user kevent is added, made ready — its entry goes to the backlog —
/// and removed, again and again.
#[test]
fn add_ready_remove_of_a_user_kevent_with_the_ring_full_keeps_memory_flat() {
    bounded(time_limit(), || {
        const CAP: u64 = 64;
        let q: Arc<Instance> = Instance::create(CAP as u32, 0).expect("kevent_init");
        let mut fill: Vec<Ukevent> = (1..=CAP + 1).map(|id| user_ev(id, 0)).collect();
        assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut fill).expect("ADD"), 0);
        assert_eq!(q.ctl(KEVENT_CTL_READY, &mut fill).expect("READY"), 0);
        assert_eq!(q.ring().kidx(), CAP, "the ring is full");
        let backlog = || {
            q.ring()
                .stats()
                .backlog_len
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        assert_eq!(backlog(), 1, "one more waits in the backlog");
        let ev = user_ev(1_000, 0);
        let cycle = |i: u64| add_ready_remove(&q, ev, i);
        stays_flat(
            "ADD/READY/REMOVE of a user kevent, ring full",
            cycle,
            || ring_report(&q),
        );
        assert_eq!(backlog(), 1, "only the filler waits in the backlog");
        q.close();
    });
}

/// The control: the same cycle on a queue whose ring was not filled first.
#[test]
fn add_ready_remove_of_a_user_kevent_keeps_memory_flat() {
    bounded(time_limit(), || {
        let q = Instance::create(64, 0).expect("kevent_init");
        let ev = user_ev(1, 0);
        let cycle = |i: u64| add_ready_remove(&q, ev, i);
        stays_flat("ADD/READY/REMOVE of a user kevent", cycle, || {
            ring_report(&q)
        });
        q.close();
    });
}

/// A timer due in an hour, added and removed again and again: each REMOVE leaves a stale
/// entry in the clock's deadline heap (`source/timer.rs`), which must be dropped, not
/// kept. (The id changes every cycle, as a program's deadlines would.)
#[test]
fn adding_and_removing_a_far_timer_again_and_again_keeps_memory_flat() {
    bounded(time_limit(), || {
        let q = Instance::create(64, 0).expect("kevent_init");
        // One timer stays armed beside the churn.
        let kept = util::ev(KEVENT_TIMER, 7_200_000_000_000, KEVENT_TIMER_FIRED, 0, 0);
        assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [kept]).expect("ADD"), 0);
        let cycle = |i: u64| {
            let t = util::ev(
                KEVENT_TIMER,
                3_600_000_000_000 + i,
                KEVENT_TIMER_FIRED | KEVENT_TIMER_ONCE,
                0,
                1,
            );
            assert_eq!(
                q.ctl(KEVENT_CTL_ADD, &mut [t]).expect("ADD"),
                0,
                "cycle {i}"
            );
            assert_eq!(
                q.ctl(KEVENT_CTL_REMOVE, &mut [t]).expect("REMOVE"),
                0,
                "cycle {i}"
            );
        };
        stays_flat("ADD/REMOVE of a timer due in an hour", cycle, || {
            ring_report(&q)
        });
        q.close();
    });
}
