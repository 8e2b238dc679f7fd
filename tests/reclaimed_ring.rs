//! Entries that REMOVE takes back (DONE(RECLAIMED)) must not keep their slots: a ring
//! whose every slot holds such an entry is full, and nothing else can be published
//! until `uidx` moves past them. Found by a stress run under CPU hogs (a loop iterating
//! on an eventfd while another thread adds and removes an always-ready fd): the loop
//! thread asleep in the poller's `ppoll` for ever while its eventfd was readable (its
//! entry waited in the backlog behind 1,024 reclaimed slots).

use std::time::Duration;

use kevent::{PollMask, Queue, Source, Token, Trigger};
use rustix::event::{eventfd, EventfdFlags};

fn efd() -> std::os::fd::OwnedFd {
    eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK).unwrap()
}

#[test]
fn a_ring_full_of_reclaimed_entries_still_delivers_new_events() {
    const CAP: usize = 64;
    let q = Queue::builder().capacity(CAP).build().unwrap();
    // An fd that is always ready: each ADD queues an entry (ALWAYS_QUEUE), each REMOVE
    // takes it back unclaimed. CAP rounds with no consumer in between fill the ring.
    let noisy = efd();
    rustix::io::write(&noisy, &1u64.to_ne_bytes()).unwrap();
    let noisy_src = Source::poll(&noisy, PollMask::IN);
    for _ in 0..CAP {
        q.add(&noisy_src, Token(7), Trigger::Level).unwrap();
        q.remove(&noisy_src).unwrap();
    }
    let active = efd();
    q.add(
        &Source::poll(&active, PollMask::IN),
        Token(1),
        Trigger::Level,
    )
    .unwrap();
    rustix::io::write(&active, &1u64.to_ne_bytes()).unwrap();
    let batch = q.wait(8, Some(Duration::from_secs(2))).unwrap();
    let tokens: Vec<Token> = batch.iter().map(|e| e.token()).collect();
    assert_eq!(
        tokens,
        vec![Token(1)],
        "the readable eventfd's event (kidx {} cidx {} uidx {})",
        q.ring().kidx(),
        q.ring().cidx(),
        q.ring().uidx()
    );
}

/// The same with an event loop, as the hunt found it: a blocking poll would sleep for
/// ever (here: a 2 s watchdog says so).
#[test]
fn a_loop_whose_ring_filled_with_reclaimed_entries_still_runs_its_handler() {
    let lp = kevent::Loop::with_queue(std::sync::Arc::new(
        Queue::builder().capacity(64).build().unwrap(),
    ))
    .unwrap();
    let noisy = efd();
    rustix::io::write(&noisy, &1u64.to_ne_bytes()).unwrap();
    let noisy_src = Source::poll(&noisy, PollMask::IN);
    for _ in 0..64 {
        lp.queue()
            .add(&noisy_src, Token(u64::MAX - 7), Trigger::Level)
            .unwrap();
        lp.queue().remove(&noisy_src).unwrap();
    }
    let active = std::sync::Arc::new(efd());
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (a, r) = (active.clone(), ran.clone());
    lp.set_fd_handler(
        &*active,
        kevent::FdHandler::new().read(move |_| {
            let mut buf = [0u8; 8];
            let _ = rustix::io::read(&*a, &mut buf);
            r.store(true, std::sync::atomic::Ordering::Relaxed);
        }),
    )
    .unwrap();
    rustix::io::write(&*active, &1u64.to_ne_bytes()).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let watchdog = std::thread::spawn(move || {
        let start = std::time::Instant::now();
        while !d.load(std::sync::atomic::Ordering::Relaxed) {
            if start.elapsed() > Duration::from_secs(2) {
                eprintln!("the loop slept 2 s with its eventfd readable: lost wake-up");
                std::process::abort();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    while !ran.load(std::sync::atomic::Ordering::Relaxed) {
        lp.poll(true);
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watchdog.join().unwrap();
}
