//! Timing and shutdown: timers are never early, closing a queue releases every thread
//! waiting on it (calls.rs `kevent_close`), and nothing the owner's threads did keeps it
//! from closing.

mod util;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::proc::bounded;
use util::*;

#[test]
fn a_one_millisecond_timer_is_never_reported_early() {
    let q = Q::new(64);
    for round in 0..50u64 {
        let t = ev(
            KEVENT_TIMER,
            MS,
            KEVENT_TIMER_FIRED | KEVENT_TIMER_ONCE,
            0,
            round,
        );
        let start = Instant::now();
        q.add(&mut [t]);
        let got = q.get_one();
        let took = start.elapsed();
        assert_eq!(got.user, round);
        assert!(
            took >= Duration::from_millis(1),
            "round {round}: after {took:?}"
        );
        q.ctl_ok(KEVENT_CTL_REMOVE, &mut [t]);
    }
}

#[test]
fn closing_the_queue_releases_threads_waiting_in_kevent_wait_and_get_events() {
    let q = Q::new(64);
    let fd = q.fd;
    let (tx, rx) = mpsc::channel();
    let waiters: Vec<_> = (0..4)
        .map(|i| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let r = if i % 2 == 0 {
                    let u = instance(fd).unwrap().ring().uidx();
                    kevent_wait(fd, 1, u, Some(10 * SEC), 0).map(|_| ())
                } else {
                    let mut buf = [Ukevent::default(); 4];
                    kevent_get_events(fd, 1, 4, Some(10 * SEC), &mut buf, 0).map(|_| ())
                };
                tx.send((i, r, start.elapsed())).unwrap();
            })
        })
        .collect();
    assert!(
        wait_until(PATIENCE, || q.sleepers() == 4),
        "the waiters never slept"
    );
    std::thread::sleep(Duration::from_millis(20));
    q.close().unwrap();
    for _ in 0..4 {
        let (i, r, took) = rx
            .recv_timeout(Duration::from_secs(2))
            .expect("a waiter still hangs after kevent_close");
        let e = r.expect_err("a waiter returned Ok from a closed queue");
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "waiter {i}: {e}");
        assert!(took < Duration::from_secs(5), "waiter {i} took {took:?}");
    }
    for w in waiters {
        w.join().unwrap();
    }
}

#[test]
fn a_queue_closed_while_events_are_pending_can_be_closed_without_hanging() {
    let q = Q::new(2);
    let mut users: Vec<Ukevent> = (0..8).map(|i| user_ev(i, 0)).collect();
    q.add(&mut users);
    q.ctl_ok(KEVENT_CTL_READY, &mut users);
    let (claim, _) = q.claim(1, PATIENCE);
    assert!(!claim.is_empty());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(q.close()).unwrap());
    rx.recv_timeout(PATIENCE)
        .expect("kevent_close hung")
        .unwrap();
}

#[test]
fn queues_created_and_closed_back_to_back_never_collide_on_their_gate() {
    // A closed queue's handle fd number is reused at once; its gate socket must not be
    // named after it (bind failed with EADDRINUSE while the old gate thread held it).
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                for _ in 0..50 {
                    let q = Instance::create(8, 0).expect("kevent_init");
                    q.close();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("no queue failed to be created");
    }
}

/// A thread of the owning process that took entries with `kevent_wait` must not keep the
/// queue from closing (seen as a hang at the end of a test: `Instance::close` joining a
/// producer thread that never wakes).
#[test]
fn a_queue_closes_after_a_thread_of_its_owner_took_entries() {
    bounded(Duration::from_secs(10), || {
        let q = Instance::create(8, 0).expect("kevent_init");
        assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut [user_ev(1, 0)]).unwrap(), 0);
        for timeout in [Some(0), Some(1_000 * MS)] {
            assert_eq!(q.ctl(KEVENT_CTL_READY, &mut [user_ev(1, 0)]).unwrap(), 0);
            let claim = q.wait(1, q.ring().uidx(), timeout, 0).expect("wait");
            assert_eq!(claim.owned, 1);
            q.commit_range(claim.start..claim.end);
        }
        // Let the producer thread settle, then close from this very thread (the one that
        // took the entries); the test's bound turns a hang into a failure.
        std::thread::sleep(Duration::from_millis(50));
        q.close();
    });
}
