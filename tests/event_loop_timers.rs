//! `kevent::Loop`'s timers, specified by QEMU's `tests/unit/test-aio.c`
//! (`/aio/timer/schedule`): timers fire in deadline order and never early, the earliest
//! is the wait's timeout, a re-armed timer fires at its new deadline and a cancelled one
//! never, on either clock; arming an earlier timer from another thread wakes the loop.

mod util;

use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kevent::Clock;
use util::event_loop::*;
use util::PATIENCE;

#[test]
fn timers_fire_in_deadline_order_and_never_early() {
    let lp = new_loop();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let base = Clock::Monotonic.now_ns();
    let timers: Vec<_> = [30u64, 10, 20, 10]
        .iter()
        .enumerate()
        .map(|(i, ms)| {
            let f = fired.clone();
            let t = lp.timer(Clock::Monotonic, move |_, t| {
                let now = Clock::Monotonic.now_ns();
                f.lock().unwrap().push((i, now, t.is_armed()));
            });
            t.arm_at_ns(base + ms * 1_000_000);
            (t, base + ms * 1_000_000)
        })
        .collect();
    poll_until(&lp, "every timer", || fired.lock().unwrap().len() == 4);
    let fired = fired.lock().unwrap();
    let order: Vec<_> = fired.iter().map(|f| f.0).collect();
    assert_eq!(
        order,
        [1, 3, 2, 0],
        "by deadline, equal ones in arming order"
    );
    for &(i, at, armed) in fired.iter() {
        assert!(
            at >= timers[i].1,
            "timer {i} fired {} ns early",
            timers[i].1 - at
        );
        assert!(!armed, "a firing timer is no longer armed");
    }
}

#[test]
fn a_timer_is_the_wait_timeout_and_fires_once() {
    let lp = new_loop();
    let n = counter();
    let c = n.clone();
    let t = lp.timer(Clock::Monotonic, move |_, _| {
        c.fetch_add(1, SeqCst);
    });
    assert_eq!(lp.compute_timeout(), None);
    t.arm_after(Duration::from_millis(40));
    let timeout = lp.compute_timeout().unwrap();
    assert!(
        timeout > Duration::ZERO && timeout <= Duration::from_millis(40),
        "{timeout:?}"
    );
    assert!(!lp.poll(false));
    let deadline = t.deadline_ns().unwrap();
    while n.load(SeqCst) == 0 {
        lp.poll(true); // only the timer can end these waits
    }
    assert!(Clock::Monotonic.now_ns() >= deadline);
    assert!(!t.is_armed());
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 1);
    assert_eq!(lp.compute_timeout(), None);
}

#[test]
fn a_rearmed_timer_fires_at_its_new_deadline_and_a_cancelled_one_never() {
    let lp = new_loop();
    let (a, b) = (counter(), counter());
    let (ca, cb) = (a.clone(), b.clone());
    let moved = lp.timer(Clock::Monotonic, move |_, _| {
        ca.fetch_add(1, SeqCst);
    });
    let cancelled = lp.timer(Clock::Monotonic, move |_, _| {
        cb.fetch_add(1, SeqCst);
    });
    moved.arm_after(Duration::from_millis(5));
    let later = Clock::Monotonic.now_ns() + 40_000_000;
    moved.arm_at_ns(later);
    assert_eq!(moved.deadline_ns(), Some(later));
    cancelled.arm_after(Duration::from_millis(5));
    cancelled.cancel();
    assert!(!cancelled.is_armed());
    poll_until(&lp, "the moved timer", || a.load(SeqCst) == 1);
    assert!(Clock::Monotonic.now_ns() >= later);
    settle(&lp, Duration::from_millis(20));
    assert_eq!((a.load(SeqCst), b.load(SeqCst)), (1, 0));
}

#[test]
fn a_periodic_timer_rearming_itself_fires_each_period() {
    let lp = new_loop();
    let ticks = Arc::new(Mutex::new(Vec::new()));
    let t2 = ticks.clone();
    let t = lp.timer(Clock::Monotonic, move |_, t| {
        let mut ticks = t2.lock().unwrap();
        ticks.push(Clock::Monotonic.now_ns());
        if ticks.len() < 5 {
            t.arm_after(Duration::from_millis(5));
        }
    });
    let start = Clock::Monotonic.now_ns();
    t.arm_after(Duration::from_millis(5));
    poll_until(&lp, "five ticks", || ticks.lock().unwrap().len() == 5);
    let ticks = ticks.lock().unwrap();
    let mut prev = start;
    for &tick in ticks.iter() {
        assert!(tick >= prev + 5_000_000, "a period shorter than 5 ms");
        prev = tick;
    }
}

#[test]
fn a_realtime_timer_fires_at_its_wall_clock_deadline() {
    let lp = new_loop();
    let at = Arc::new(AtomicU64::new(0));
    let a = at.clone();
    let t = lp.timer(Clock::Realtime, move |_, _| {
        a.store(Clock::Realtime.now_ns(), SeqCst);
    });
    let deadline = Clock::Realtime.now_ns() + 20_000_000;
    t.arm_at_ns(deadline);
    assert!(lp.compute_timeout().unwrap() <= Duration::from_millis(20));
    poll_until(&lp, "the realtime timer", || at.load(SeqCst) != 0);
    assert!(at.load(SeqCst) >= deadline);
    assert_eq!(t.clock(), Clock::Realtime);
}

#[test]
fn arming_an_earlier_timer_from_another_thread_wakes_the_sleeping_loop() {
    let lp = Arc::new(new_loop());
    let far = lp.timer(Clock::Monotonic, |_, _| {});
    far.arm_after(PATIENCE); // the loop sleeps until this, unless woken
    let n = counter();
    let c = n.clone();
    let near = lp.timer(Clock::Monotonic, move |_, _| {
        c.fetch_add(1, SeqCst);
    });
    let sleeps = lp.stats().sleeps;
    let (l, remote) = (lp.clone(), near.clone());
    let armer = std::thread::spawn(move || {
        while l.stats().sleeps == sleeps {
            std::thread::yield_now();
        }
        remote.arm_after(Duration::from_millis(10));
    });
    let start = Instant::now();
    while n.load(SeqCst) == 0 {
        lp.poll(true);
    }
    armer.join().unwrap();
    assert!(
        start.elapsed() < PATIENCE / 2,
        "the loop slept past the new deadline"
    );
    assert!(lp.stats().wakeups >= 1);
    far.delete();
}
