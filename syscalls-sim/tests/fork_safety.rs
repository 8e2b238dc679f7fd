//! `fork` while other threads are inside `kevent_*` calls (ARCHITECTURE.md §5; issue #10,
//! item 4): no lock is copied held across the fork, so every child's first calls return.
//!
//! Children are forked from the test thread, end with `_exit`, and are killed by a guard
//! if the test fails; the test body is bounded.

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kevent_syscalls::*;
use util::proc::{bounded, child_log, Children};
use util::{user_ev, Q};

/// Item 4: 200 forks while three threads hammer the queue with `kevent_*` calls: every
/// child's first calls return (no lock is copied held across the fork).
#[test]
fn two_hundred_forks_while_three_threads_hammer_the_queue_never_hang_a_child() {
    bounded(Duration::from_secs(300), || {
        let q = Q::new(64);
        let fd = q.fd;
        q.add(&mut [user_ev(1, 0)]);
        let stop = Arc::new(AtomicBool::new(false));
        let hammers: Vec<_> = (0..3)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut buf = [Ukevent::default(); 8];
                    while !stop.load(Ordering::Relaxed) {
                        match i {
                            0 => {
                                let _ = kevent_ctl(fd, KEVENT_CTL_READY, &mut [user_ev(1, 0)]);
                            }
                            1 => {
                                let _ = kevent_get_events(fd, 0, 8, Some(0), &mut buf, 0);
                            }
                            _ => {
                                let _ = kevent_ctl(fd, KEVENT_CTL_READY, &mut []);
                                let _ = kevent_get_events(fd, 0, 8, Some(0), &mut buf, 0);
                            }
                        }
                    }
                })
            })
            .collect();
        let mut kids = Children::default();
        let mut hung = 0;
        let mut failed = Vec::new();
        for _ in 0..200 {
            let pid = kids.fork(|| {
                let mut buf = [Ukevent::default(); 8];
                if let Err(e) = kevent_get_events(fd, 0, 8, Some(0), &mut buf, 0) {
                    child_log(&format!("kevent_get_events: {e}"));
                    return 2;
                }
                if let Err(e) = kevent_ctl(fd, KEVENT_CTL_READY, &mut []) {
                    child_log(&format!("kevent_ctl: {e}"));
                    return 3;
                }
                0
            });
            match kids.exit_code(pid, Duration::from_secs(10)) {
                Some(0) => {}
                Some(code) => failed.push(code),
                None => hung += 1,
            }
            if hung > 0 {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in hammers {
            h.join().expect("hammer");
        }
        assert_eq!(hung, 0, "a forked child hung in its first kevent_* call");
        assert!(failed.is_empty(), "children failed: {failed:?}");
    });
}
