//! The poller — a consumer of the owning process blocked in `epoll_wait` on the queue's
//! sources, its bell in the same epoll set — is reached by every waker, even when
//! another thread takes the bell's edge from the epoll fd first (`poller.rs`).

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kevent_ring::{Deadline, WaitOutcome, WaitSpec};
use kevent_syscalls::*;
use util::*;

fn spec(deadline: Deadline) -> WaitSpec {
    WaitSpec {
        old_uidx: None,
        deadline: Some(deadline),
        spin: Duration::ZERO,
        return_on_wake: true,
        kicks: 0, // next_batch reads the count itself
        sleeper: None,
    }
}

/// An explicit wake-up rings the poller's bell; a second thread harvesting without pause
/// (zero-timeout waits: `epoll_wait(0)` on the same epoll fd) often takes that edge
/// before the woken poller does. The taker must ring again, or the poller sleeps on
/// until its deadline: every one of 300 kicks must end the poller's wait, well before
/// its 3 s deadline.
#[test]
fn a_kick_reaches_the_poller_while_another_thread_harvests_the_same_epoll_fd() {
    let q = Instance::create(64, 0).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let harvester = {
        let (q, stop) = (q.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (claim, _) = q.next_batch(1, &spec(Deadline::Monotonic(0))).unwrap();
                assert_eq!(claim.owned, 0, "nothing was published");
                rounds += 1;
            }
            rounds
        })
    };
    let (tx, rx) = mpsc::channel();
    let poller = {
        let q = q.clone();
        std::thread::spawn(move || {
            for _ in 0..300 {
                let start = Instant::now();
                let (claim, outcome) = q
                    .next_batch(1, &spec(deadline_after(Duration::from_secs(3))))
                    .unwrap();
                assert_eq!(claim.owned, 0);
                tx.send((outcome, start.elapsed())).unwrap();
            }
        })
    };
    for round in 0..300 {
        // `sleeping` counts the poller from just before its announcement: a kick from
        // then on either is seen by its last look or rings its bell.
        assert!(
            wait_until(Duration::from_secs(2), || q.sleeping() >= 1),
            "round {round}: the poller never blocked"
        );
        assert_eq!(q.ctl(KEVENT_CTL_READY, &mut []).unwrap(), 0);
        let (outcome, took) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(
            (outcome, took < Duration::from_secs(1)),
            (WaitOutcome::Woken, true),
            "round {round}: the kick did not end the poller's wait ({took:?})"
        );
    }
    poller.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let rounds = harvester.join().unwrap();
    assert!(rounds > 300, "the harvester ran {rounds} rounds");
    q.close();
}

/// A poller's deadline is kept with sub-millisecond precision (`epoll_pwait2`): a
/// 2.5 ms wait with nothing ready never returns early, and returns before 3.5 ms more
/// often than not (a millisecond-rounded `epoll_wait` would make it 3 ms or more).
#[test]
fn a_pollers_deadline_is_neither_early_nor_rounded_up_to_milliseconds() {
    let q = Instance::create(64, 0).unwrap();
    let mut tooks = Vec::new();
    for _ in 0..21 {
        let start = Instant::now();
        let (claim, outcome) = q
            .next_batch(1, &spec(deadline_after(Duration::from_micros(2500))))
            .unwrap();
        let took = start.elapsed();
        assert_eq!((claim.owned, outcome), (0, WaitOutcome::TimedOut));
        assert!(took >= Duration::from_micros(2500), "early: {took:?}");
        tooks.push(took);
    }
    tooks.sort();
    assert!(
        tooks[10] < Duration::from_micros(3000),
        "median {:?} (all: {tooks:?})",
        tooks[10]
    );
    q.close();
}
