//! `kevent::Loop`, specified by QEMU's `tests/unit/test-aio.c` (bottom halves, event
//! notifiers, external clients, timers) and by what an event loop on a shared queue must
//! add: handlers removed during dispatch, nested polls, wake-ups only of a sleeping loop,
//! several threads on one loop, adaptive polling. Time bounds are generous: these tests
//! must pass on a loaded two-core machine.

mod util;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kevent::{Clock, FdHandler, Loop};

use util::event_loop::*;
use util::PATIENCE;

// ---- bottom halves (test-aio: /aio/bh/*) ----

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

// ---- event notifiers (test-aio: /aio/event/*, /aio/external-client) ----

/// test-aio's `event_ready_cb`: clear (it must have been set), count.
fn notifier_counting(lp: &Loop, external: bool) -> (kevent::EventNotifier, Arc<AtomicU32>) {
    let n = counter();
    let c = n.clone();
    let handler = move |_: &Loop, e: &kevent::EventNotifier| {
        assert!(e.test_and_clear(), "the handler runs only while set");
        c.fetch_add(1, SeqCst);
    };
    let e = match external {
        true => lp.external_event_notifier(handler),
        false => lp.event_notifier(handler),
    };
    (e, n)
}

#[test]
fn a_notifier_set_before_the_poll_is_seen_and_handled_once() {
    let lp = new_loop();
    let (e, n) = notifier_counting(&lp, false);
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 0);
    e.set();
    e.set();
    assert!(lp.poll(false));
    assert_eq!(n.load(SeqCst), 1);
    assert!(!lp.poll(false));
    e.set();
    assert!(lp.poll(true));
    assert_eq!(n.load(SeqCst), 2);
    e.remove();
    e.set();
    assert!(!lp.poll(false), "a removed notifier's handler does not run");
    assert_eq!(n.load(SeqCst), 2);
    assert!(e.is_set());
}

#[test]
fn a_notifier_cleared_before_the_poll_is_not_handled() {
    let lp = new_loop();
    let (e, n) = notifier_counting(&lp, false);
    e.set();
    assert!(e.test_and_clear());
    assert!(!lp.poll(false));
    assert_eq!(n.load(SeqCst), 0);
    e.remove();
}

#[test]
fn a_notifier_that_sets_itself_again_runs_once_per_poll() {
    let lp = new_loop();
    let active = Arc::new(AtomicU32::new(10));
    let a = active.clone();
    let e = lp.event_notifier(move |_, e| {
        assert!(e.test_and_clear());
        if a.fetch_sub(1, SeqCst) - 1 > 0 {
            e.set();
        }
    });
    e.set();
    assert!(lp.poll(false));
    assert_eq!(active.load(SeqCst), 9);
    assert!(lp.poll(false));
    assert_eq!(active.load(SeqCst), 8);
    poll_until(&lp, "the notifier to go quiet", || active.load(SeqCst) == 0);
    assert!(!lp.poll(false));
    e.remove();
}

#[test]
fn a_notifier_set_from_another_thread_wakes_the_loop() {
    let lp = Arc::new(new_loop());
    let (e, n) = notifier_counting(&lp, false);
    let sleeps = lp.stats().sleeps;
    let (l, remote) = (lp.clone(), e.clone());
    let setter = std::thread::spawn(move || {
        while l.stats().sleeps == sleeps {
            std::thread::yield_now();
        }
        remote.set();
    });
    poll_until(&lp, "the notifier's handler", || n.load(SeqCst) == 1);
    setter.join().unwrap();
    assert_eq!(lp.stats().wakeups, 1);
    e.remove();
}

#[test]
fn an_external_notifier_waits_for_the_end_of_drained_sections() {
    let lp = new_loop();
    for depth in 1..3 {
        let (e, n) = notifier_counting(&lp, true);
        e.set();
        for _ in 0..depth {
            lp.drained_begin();
        }
        assert!(!lp.is_external_enabled());
        for _ in 0..depth {
            assert!(!lp.poll(false));
            assert!(e.test_and_clear(), "kept, still set");
            e.set();
            lp.drained_end();
        }
        assert!(lp.is_external_enabled());
        assert!(lp.poll(false));
        assert_eq!(n.load(SeqCst), 1);
        assert!(!lp.poll(false));
        e.remove();
    }
}

// ---- fd handlers ----

#[test]
fn a_handler_sees_its_first_second_and_third_event_exactly_once_each() {
    let lp = new_loop();
    let (sock, mut peer) = shared_socket_pair();
    let (calls, bytes) = (counter(), Arc::new(AtomicU64::new(0)));
    lp.set_fd_handler(
        &*sock,
        FdHandler::new().read(reading(&sock, &calls, &bytes)),
    )
    .unwrap();
    for i in 1..=3 {
        peer.write_all(b"x").unwrap();
        poll_until(&lp, "the event", || calls.load(SeqCst) == i);
        settle(&lp, Duration::from_millis(30));
        assert_eq!(calls.load(SeqCst), i, "event {i}: one callback, no more");
        assert_eq!(bytes.load(SeqCst), u64::from(i));
    }
    assert_eq!(lp.stats().fd_callbacks, 3);
    assert!(lp.remove_fd_handler(&*sock).unwrap());
}

#[test]
fn an_fd_ready_when_its_handler_is_set_is_dispatched_at_the_next_poll() {
    let lp = new_loop();
    let (sock, mut peer) = shared_socket_pair();
    peer.write_all(b"early").unwrap();
    let (calls, bytes) = (counter(), Arc::new(AtomicU64::new(0)));
    lp.set_fd_handler(
        &*sock,
        FdHandler::new().read(reading(&sock, &calls, &bytes)),
    )
    .unwrap();
    poll_until(&lp, "the early data", || bytes.load(SeqCst) == 5);
    assert_eq!(calls.load(SeqCst), 1);
    lp.remove_fd_handler(&*sock).unwrap();
}

#[test]
fn a_handler_can_remove_itself_during_dispatch() {
    let lp = new_loop();
    let (sock, mut peer) = shared_socket_pair();
    let (calls, bytes) = (counter(), Arc::new(AtomicU64::new(0)));
    let read = reading(&sock, &calls, &bytes);
    let me = sock.clone();
    lp.set_fd_handler(
        &*sock,
        FdHandler::new().read(move |lp| {
            read(lp);
            assert!(lp.remove_fd_handler(&*me).unwrap(), "it was registered");
        }),
    )
    .unwrap();
    peer.write_all(b"1").unwrap();
    poll_until(&lp, "the first event", || calls.load(SeqCst) == 1);
    peer.write_all(b"2").unwrap();
    settle(&lp, Duration::from_millis(50));
    assert_eq!(calls.load(SeqCst), 1, "removed: no second callback");
    assert!(!lp.remove_fd_handler(&*sock).unwrap());
}

#[test]
fn a_handler_removing_another_ready_one_keeps_it_from_running() {
    let lp = new_loop();
    let (a, mut pa) = shared_socket_pair();
    let (b, mut pb) = shared_socket_pair();
    let calls = counter();
    for (me, other) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
        let (c, me2) = (calls.clone(), me.clone());
        lp.set_fd_handler(
            &*me,
            FdHandler::new().read(move |lp| {
                c.fetch_add(1, SeqCst);
                let _ = (&*me2).read(&mut [0u8; 16]);
                lp.remove_fd_handler(&*other).unwrap();
                lp.remove_fd_handler(&*me2).unwrap();
            }),
        )
        .unwrap();
    }
    pa.write_all(b"a").unwrap();
    pb.write_all(b"b").unwrap();
    poll_until(&lp, "a callback", || calls.load(SeqCst) >= 1);
    settle(&lp, Duration::from_millis(50));
    assert_eq!(
        calls.load(SeqCst),
        1,
        "the other one was removed before its turn"
    );
}

#[test]
fn the_read_callback_removing_its_handler_cancels_the_write_callback() {
    let lp = new_loop();
    let (sock, mut peer) = shared_socket_pair();
    let (reads, writes) = (counter(), counter());
    let (r, w, me) = (reads.clone(), writes.clone(), sock.clone());
    peer.write_all(b"x").unwrap(); // readable and writable at once: one event, both bits
    lp.set_fd_handler(
        &*sock,
        FdHandler::new()
            .read(move |lp| {
                r.fetch_add(1, SeqCst);
                lp.remove_fd_handler(&*me).unwrap();
            })
            .write(move |_| {
                w.fetch_add(1, SeqCst);
            }),
    )
    .unwrap();
    poll_until(&lp, "the read callback", || reads.load(SeqCst) == 1);
    settle(&lp, Duration::from_millis(30));
    assert_eq!(writes.load(SeqCst), 0);
}

#[test]
fn a_write_handler_runs_while_writable_and_stops_when_it_is_replaced() {
    let lp = new_loop();
    let (sock, _peer) = shared_socket_pair();
    let (writes, reads, bytes) = (counter(), counter(), Arc::new(AtomicU64::new(0)));
    let w = writes.clone();
    let read = reading(&sock, &reads, &bytes);
    lp.set_fd_handler(
        &*sock,
        FdHandler::new().write(move |_| {
            w.fetch_add(1, SeqCst); // level-triggered: again after every poll
        }),
    )
    .unwrap();
    poll_until(&lp, "a write callback", || writes.load(SeqCst) >= 1);
    // Only readability now: the kevent's mask changes.
    lp.set_fd_handler(&*sock, FdHandler::new().read(read))
        .unwrap();
    settle(&lp, Duration::from_millis(20));
    let after = writes.load(SeqCst);
    settle(&lp, Duration::from_millis(50));
    assert_eq!(writes.load(SeqCst), after, "no write interest any more");
    assert_eq!(reads.load(SeqCst), 0);
    lp.remove_fd_handler(&*sock).unwrap();
}

#[test]
fn replacing_a_handler_sends_the_next_events_to_the_new_callback() {
    let lp = new_loop();
    let (sock, mut peer) = shared_socket_pair();
    let (old, new, bytes) = (counter(), counter(), Arc::new(AtomicU64::new(0)));
    lp.set_fd_handler(&*sock, FdHandler::new().read(reading(&sock, &old, &bytes)))
        .unwrap();
    peer.write_all(b"1").unwrap();
    poll_until(&lp, "the old callback", || old.load(SeqCst) == 1);
    lp.set_fd_handler(&*sock, FdHandler::new().read(reading(&sock, &new, &bytes)))
        .unwrap();
    peer.write_all(b"2").unwrap();
    poll_until(&lp, "the new callback", || new.load(SeqCst) == 1);
    assert_eq!(old.load(SeqCst), 1);
    assert_eq!(bytes.load(SeqCst), 2);
    lp.remove_fd_handler(&*sock).unwrap();
}

// ---- timers (test-aio: /aio/timer/schedule) ----

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

// ---- nested polls and external sources ----

#[test]
fn a_nested_poll_keeps_external_events_and_they_are_dispatched_after_it() {
    let lp = new_loop();
    let (ext, mut pext) = shared_socket_pair();
    let (int, mut pint) = shared_socket_pair();
    let (ext_calls, int_calls, bytes) = (counter(), counter(), Arc::new(AtomicU64::new(0)));
    lp.set_fd_handler(
        &*ext,
        FdHandler::new()
            .external(true)
            .read(reading(&ext, &ext_calls, &bytes)),
    )
    .unwrap();
    // The internal source's callback notes whether external sources were enabled.
    let enabled_inside = Arc::new(Mutex::new(Vec::new()));
    let (read_int, notes) = (reading(&int, &int_calls, &bytes), enabled_inside.clone());
    lp.set_fd_handler(
        &*int,
        FdHandler::new().read(move |lp| {
            notes.lock().unwrap().push(lp.is_external_enabled());
            read_int(lp);
        }),
    )
    .unwrap();
    pext.write_all(b"guest").unwrap();
    pint.write_all(b"completion").unwrap();

    let inside = Arc::new(Mutex::new(None));
    let (e, i, seen) = (ext_calls.clone(), int_calls.clone(), inside.clone());
    let bh = lp.bh(move |lp, _| {
        let mut nested = 0;
        // Wait, nested, for the internal source — and until the external one was seen.
        while i.load(SeqCst) == 0 || lp.stats().kept == 0 {
            lp.poll(true);
            nested += 1;
        }
        *seen.lock().unwrap() = Some((e.load(SeqCst), i.load(SeqCst), nested));
    });
    bh.schedule();
    assert!(lp.poll(true));
    let (ext_inside, int_inside, nested) = inside.lock().unwrap().take().unwrap();
    assert_eq!(
        (ext_inside, int_inside),
        (0, 1),
        "inside: only the internal source"
    );
    assert_eq!(
        *enabled_inside.lock().unwrap(),
        [false],
        "external sources are blocked in a nested poll"
    );
    assert!(
        nested <= 10,
        "{nested} nested polls: a kept fd must not keep them busy"
    );
    assert_eq!(
        ext_calls.load(SeqCst),
        1,
        "the kept event is dispatched after the nested poll"
    );
    assert!(lp.is_external_enabled());
    settle(&lp, Duration::from_millis(30));
    assert_eq!((ext_calls.load(SeqCst), int_calls.load(SeqCst)), (1, 1));
    assert_eq!(bytes.load(SeqCst), 15);
    // Registered again: new data is dispatched as usual.
    pext.write_all(b"more").unwrap();
    poll_until(&lp, "the external source again", || {
        ext_calls.load(SeqCst) == 2
    });
    bh.delete();
}

#[test]
fn a_nested_poll_dispatches_what_the_outer_poll_claimed() {
    let lp = new_loop();
    let (a, mut pa) = shared_socket_pair();
    let (b, mut pb) = shared_socket_pair();
    let (b_calls, bytes) = (counter(), Arc::new(AtomicU64::new(0)));
    let nested_done = Arc::new(AtomicBool::new(false));
    lp.set_fd_handler(&*b, FdHandler::new().read(reading(&b, &b_calls, &bytes)))
        .unwrap();
    let (bc, done, a2) = (b_calls.clone(), nested_done.clone(), a.clone());
    lp.set_fd_handler(
        &*a,
        FdHandler::new().read(move |lp| {
            let _ = (&*a2).read(&mut [0u8; 16]);
            // Waits for b, whose event may sit in this very batch, claimed and not yet
            // dispatched: the nested poll must dispatch it rather than wait for it.
            let deadline = Instant::now() + PATIENCE;
            while bc.load(SeqCst) == 0 {
                assert!(Instant::now() < deadline, "b never dispatched");
                lp.poll(true);
            }
            done.store(true, SeqCst);
        }),
    )
    .unwrap();
    pa.write_all(b"a").unwrap();
    pb.write_all(b"b").unwrap();
    poll_until(&lp, "a's handler", || nested_done.load(SeqCst));
    settle(&lp, Duration::from_millis(30));
    assert_eq!(
        b_calls.load(SeqCst),
        1,
        "b dispatched once, by the nested poll"
    );
}

#[test]
fn a_drained_section_keeps_external_fd_events_without_busy_polling() {
    let lp = new_loop();
    let (sock, mut peer) = shared_socket_pair();
    let (calls, bytes) = (counter(), Arc::new(AtomicU64::new(0)));
    lp.set_fd_handler(
        &*sock,
        FdHandler::new()
            .external(true)
            .read(reading(&sock, &calls, &bytes)),
    )
    .unwrap();
    peer.write_all(b"x").unwrap();
    {
        let _drained = lp.drained();
        let polls = lp.stats().polls;
        settle(&lp, Duration::from_millis(100));
        assert_eq!(calls.load(SeqCst), 0);
        assert!(lp.stats().kept >= 1, "the event was taken and kept");
        let spent = lp.stats().polls - polls;
        assert!(
            spent < 20,
            "{spent} polls in 100 ms: the kept fd kept the loop busy"
        );
    }
    assert!(
        lp.poll(true),
        "the drained section's end dispatches the kept event"
    );
    assert_eq!(calls.load(SeqCst), 1);
    settle(&lp, Duration::from_millis(30));
    assert_eq!(calls.load(SeqCst), 1);
    peer.write_all(b"y").unwrap();
    poll_until(&lp, "the next event", || calls.load(SeqCst) == 2);
    assert_eq!(bytes.load(SeqCst), 2);
    lp.remove_fd_handler(&*sock).unwrap();
}
