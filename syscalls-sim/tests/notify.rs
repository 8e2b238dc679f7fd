//! The queue's notify fd: readable while entries may be waiting, for other event loops.

mod util;

use std::time::Duration;

use kevent_syscalls::*;
use util::*;

#[test]
fn the_notify_fd_is_readable_exactly_while_entries_wait() {
    let q = Q::new(64);
    let queue = q.queue();
    let fd = queue.notify_fd().expect("owner may arm it");
    assert!(
        !readable_within(fd, Duration::ZERO),
        "nothing published yet"
    );
    let (r, w) = pipe();
    q.add(&mut [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, KEVENT_REQ_ET, 1)]);
    write_bytes(&w, b"x");
    assert!(
        readable_within(fd, Duration::from_secs(2)),
        "a published entry must make the fd readable"
    );
    let mut buf = [Ukevent::default(); 8];
    assert_eq!(q.queue().get_events(0, 8, Some(0), &mut buf, 0).unwrap(), 1);
    assert_eq!(buf[0].user, 1);
    // Finding the ring empty resets it.
    assert_eq!(q.queue().get_events(0, 8, Some(0), &mut buf, 0).unwrap(), 0);
    assert!(
        !readable_within(fd, Duration::ZERO),
        "drained ring, fd still readable"
    );
    // And it works again for the next event.
    write_bytes(&w, b"y");
    assert!(readable_within(fd, Duration::from_secs(2)));
}

/// A zero-timeout wait that finds the ring empty resets the notify fd — but entries
/// published between its empty claim and that reset had their notification eaten by it.
/// If the wait then claims fewer than were published (`max`), the rest wait in the ring
/// while the fd says nothing: an event loop that takes one batch per readiness (as
/// `Loop::attach_queue` does) sleeps in `epoll_wait` with entries waiting (W1/W5). Found
/// by a hunt (helper session 2); the wait now makes the fd readable again when it reset
/// it and leaves entries behind. The race window is short: many rounds, each firing two
/// entries in one publish while the waiter spins on zero-timeout waits.
#[test]
fn the_notify_fd_stays_readable_when_a_wait_that_reset_it_leaves_entries_behind() {
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    use std::time::Instant;
    use util::proc::XorShift;

    const ROUNDS: u64 = 3_000;
    let q = Q::new(64);
    let queue = q.queue();
    let fd = queue.notify_fd().expect("owner may arm it");
    q.add(&mut [user_ev(1, 0), user_ev(2, 0)]);
    // round: the firer fires once per round (one READY of both: one publish, 2 entries).
    let round = Arc::new(AtomicU64::new(0));
    let fired = Arc::new(AtomicU64::new(0));
    let firer = {
        let (queue, round, fired) = (queue.clone(), round.clone(), fired.clone());
        std::thread::spawn(move || {
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            let mut done = 0;
            loop {
                let r = round.load(SeqCst);
                if r == u64::MAX {
                    return;
                }
                if r == done {
                    std::hint::spin_loop();
                    continue;
                }
                // A varying delay spreads the publish over the waiter's loop.
                for _ in 0..rng.below(2_000) {
                    std::hint::spin_loop();
                }
                queue
                    .ctl(KEVENT_CTL_READY, &mut [user_ev(1, 0), user_ev(2, 0)])
                    .expect("READY");
                done = r;
                fired.store(r, SeqCst);
            }
        })
    };
    let mut buf = [Ukevent::default(); 8];
    let mut stranded = 0;
    for r in 1..=ROUNDS {
        round.store(r, SeqCst);
        // One entry at a time with zero-timeout waits, as a loop woken by the fd does.
        let end = Instant::now() + Duration::from_secs(2);
        let got = loop {
            let n = queue
                .get_events(0, 1, Some(0), &mut buf, 0)
                .expect("get_events");
            if n > 0 {
                break n;
            }
            assert!(Instant::now() < end, "round {r}: nothing arrived");
        };
        assert_eq!(got, 1);
        while fired.load(SeqCst) != r {
            std::hint::spin_loop();
        }
        // The other entry waits: the fd must say so.
        if queue.ring().has_claimable() && !readable_within(fd, Duration::ZERO) {
            stranded += 1;
        }
        // Take the rest; the ring is empty again, and so is the fd.
        while queue
            .get_events(0, 8, Some(0), &mut buf, 0)
            .expect("get_events")
            > 0
        {}
    }
    round.store(u64::MAX, SeqCst);
    firer.join().expect("firer");
    assert_eq!(
        stranded, 0,
        "{stranded} of {ROUNDS} rounds left an entry in the ring with the notify fd reset"
    );
}
