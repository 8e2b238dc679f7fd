//! `kevent::Loop`'s bottom halves, specified by QEMU's `tests/unit/test-aio.c`
//! (`/aio/bh/*`): a scheduled bottom half runs once at the next poll, cancelled or deleted
//! it does not, it may reschedule or delete itself (or another one), an idle one is not
//! progress, and one scheduled from another thread wakes the sleeping loop. The rest of
//! the loop's specification: tests/event_loop_*.rs.

mod util;

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kevent::{Clock, Loop};
use util::event_loop::*;
use util::PATIENCE;

#[test]
fn a_scheduled_bh_runs_at_the_next_poll_and_only_then() {
    let lp = new_loop();
    let (bh, n) = counting_bh(&lp);
    assert!(!lp.poll(false), "nothing to do yet");
    bh.schedule();
    assert_eq!(n.load(SeqCst), 0);
    assert_eq!(lp.compute_timeout(), Some(Duration::ZERO));
    assert!(lp.poll(true));
    assert_eq!(n.load(SeqCst), 1);
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 1);
    assert_eq!(lp.stats().wakeups, 0, "the loop was awake: no wake-up sent");
    bh.delete();
}

#[test]
fn a_bh_scheduled_twice_before_it_runs_runs_once() {
    let lp = new_loop();
    let (bh, n) = counting_bh(&lp);
    bh.schedule();
    bh.schedule();
    assert!(bh.is_scheduled());
    assert!(lp.poll(false));
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 1);
    assert!(!bh.is_scheduled());
}

#[test]
fn a_bh_that_reschedules_itself_runs_once_per_poll() {
    let lp = new_loop();
    let n = counter();
    let c = n.clone();
    let bh = lp.bh(move |_, bh| {
        if c.fetch_add(1, SeqCst) + 1 < 10 {
            bh.schedule();
        }
    });
    bh.schedule();
    assert!(lp.poll(false));
    assert_eq!(n.load(SeqCst), 1);
    assert!(lp.poll(true));
    assert_eq!(n.load(SeqCst), 2);
    while n.load(SeqCst) < 10 {
        assert!(lp.poll(true));
    }
    assert_eq!(n.load(SeqCst), 10);
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 10);
    bh.delete();
}

#[test]
fn a_cancelled_bh_does_not_run() {
    let lp = new_loop();
    let (bh, n) = counting_bh(&lp);
    bh.schedule();
    bh.cancel();
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 0);
    bh.schedule(); // a cancelled bottom half can be scheduled again
    assert!(lp.poll(false));
    assert_eq!(n.load(SeqCst), 1);
    bh.delete();
}

#[test]
fn a_bh_deleted_before_the_poll_does_not_run_and_cannot_be_scheduled() {
    let lp = new_loop();
    let (bh, n) = counting_bh(&lp);
    bh.schedule();
    bh.delete();
    assert!(!lp.poll(false));
    bh.schedule();
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 0);
    assert!(bh.is_deleted());
}

/// test-aio's `bh_delete_cb`: run `max` times, then delete itself.
fn deleting_after(lp: &Loop, max: u32) -> (kevent::Bh, Arc<AtomicU32>) {
    let n = counter();
    let c = n.clone();
    let bh = lp.bh(move |_, bh| {
        if c.fetch_add(1, SeqCst) + 1 < max {
            bh.schedule();
        } else {
            bh.delete();
        }
    });
    (bh, n)
}

#[test]
fn a_bh_can_delete_itself_from_its_callback() {
    let lp = new_loop();
    let (bh, n) = deleting_after(&lp, 1);
    bh.schedule();
    poll_until(&lp, "the bottom half", || n.load(SeqCst) == 1);
    assert!(bh.is_deleted());
    bh.schedule();
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 1);
}

#[test]
fn bhs_deleting_themselves_after_different_counts_each_run_their_count() {
    let lp = new_loop();
    let bhs: Vec<_> = [1, 3, 2, 4]
        .map(|max| (deleting_after(&lp, max), max))
        .into();
    for ((bh, _), _) in &bhs {
        bh.schedule();
    }
    assert!(lp.poll(false));
    for ((bh, n), max) in &bhs {
        assert_eq!(n.load(SeqCst), 1);
        assert_eq!(bh.is_deleted(), *max == 1);
    }
    poll_until(&lp, "every bottom half", || {
        bhs.iter().all(|((_, n), max)| n.load(SeqCst) == *max)
    });
    assert!(!lp.poll(false));
    for ((bh, n), max) in &bhs {
        assert_eq!(n.load(SeqCst), *max);
        assert!(bh.is_deleted());
    }
}

#[test]
fn a_bh_deleting_another_scheduled_one_keeps_it_from_running() {
    let lp = new_loop();
    let (victim, victim_runs) = counting_bh(&lp);
    let target = victim.clone();
    let killer = lp.bh(move |_, _| target.delete());
    killer.schedule();
    victim.schedule(); // queued after the killer, in the same iteration
    assert!(lp.poll(false));
    assert!(!lp.poll(false));
    assert_eq!(victim_runs.load(SeqCst), 0);
    killer.delete();
}

#[test]
fn an_idle_bh_runs_without_counting_as_progress() {
    let lp = new_loop();
    let (bh, n) = counting_bh(&lp);
    bh.schedule_idle();
    let timeout = lp.compute_timeout().expect("a bounded timeout");
    assert!(timeout <= Duration::from_millis(10));
    assert!(!lp.poll(false), "an idle bottom half is not progress");
    assert_eq!(n.load(SeqCst), 1);
    assert_eq!(lp.compute_timeout(), None, "nothing left");
    bh.delete();
}

#[test]
fn a_bh_scheduled_from_another_thread_wakes_the_sleeping_loop_and_runs_once() {
    let lp = Arc::new(new_loop());
    let (bh, n) = counting_bh(&lp);
    // A watchdog timer: if the wake-up were lost, the poll would end here, late.
    let watchdog = lp.timer(Clock::Monotonic, |_, _| {});
    watchdog.arm_after(PATIENCE);
    let sleeps = lp.stats().sleeps;
    let (l, remote) = (lp.clone(), bh.clone());
    let scheduler = std::thread::spawn(move || {
        while l.stats().sleeps == sleeps {
            std::thread::yield_now(); // until the loop has announced its sleep
        }
        remote.schedule();
    });
    let start = Instant::now();
    while n.load(SeqCst) == 0 {
        lp.poll(true);
    }
    let took = start.elapsed();
    scheduler.join().unwrap();
    assert!(
        took < PATIENCE / 2,
        "woken late ({took:?}): by the watchdog?"
    );
    assert!(watchdog.is_armed());
    assert_eq!(lp.stats().wakeups, 1, "{:?}", lp.stats());
    settle(&lp, Duration::from_millis(20));
    assert_eq!(n.load(SeqCst), 1);
    bh.delete();
    watchdog.delete();
}

#[test]
fn oneshots_scheduled_from_many_threads_each_run_exactly_once() {
    const THREADS: usize = 4;
    const EACH: usize = 2_000;
    let lp = Arc::new(new_loop());
    let ran = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(vec![0u8; THREADS * EACH]));
    let schedulers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (lp, ran, seen) = (lp.clone(), ran.clone(), seen.clone());
            std::thread::spawn(move || {
                for i in 0..EACH {
                    let (ran, seen) = (ran.clone(), seen.clone());
                    lp.schedule_oneshot(move |_| {
                        seen.lock().unwrap()[t * EACH + i] += 1;
                        ran.fetch_add(1, SeqCst);
                    });
                }
            })
        })
        .collect();
    poll_until(&lp, "every one-shot", || ran.load(SeqCst) == THREADS * EACH);
    for s in schedulers {
        s.join().unwrap();
    }
    assert!(!lp.poll(false));
    assert_eq!(ran.load(SeqCst), THREADS * EACH);
    assert!(seen.lock().unwrap().iter().all(|&n| n == 1));
}
