//! `kevent::Loop`'s event notifiers, specified by QEMU's `tests/unit/test-aio.c`
//! (`/aio/event/*`, `/aio/external-client`): a notifier set before a poll is handled
//! once, cleared it is not, one set from another thread wakes the loop, and an external
//! one waits for the end of drained sections.

mod util;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::Arc;

use kevent::Loop;
use util::event_loop::*;

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
