//! `kevent::Loop` driven by several threads, an IoThread, and adaptive polling (the rest
//! of its specification is in tests/event_loop_*.rs).

mod util;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kevent::{Clock, FdHandler, IoThread, PollParams};
use util::event_loop::*;
use util::PATIENCE;

// ---- threads ----

#[test]
fn several_threads_polling_one_loop_dispatch_each_event_once() {
    const SOCKETS: usize = 8;
    const BYTES: u64 = 200;
    let lp = Arc::new(new_loop());
    lp.set_max_events(4);
    let total = Arc::new(AtomicU64::new(0));
    let overlaps = counter();
    let mut peers = Vec::new();
    for _ in 0..SOCKETS {
        let (sock, peer) = shared_socket_pair();
        let busy = Arc::new(AtomicBool::new(false));
        let (me, total, overlaps) = (sock.clone(), total.clone(), overlaps.clone());
        lp.set_fd_handler(
            &*sock,
            FdHandler::new().read(move |lp| {
                if busy.swap(true, SeqCst) {
                    overlaps.fetch_add(1, SeqCst); // two threads in one handler
                }
                let mut buf = [0u8; 64];
                loop {
                    match (&*me).read(&mut buf) {
                        Ok(n) if n > 0 => {
                            total.fetch_add(n as u64, SeqCst);
                        }
                        Ok(_) => break,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => panic!("read: {e}"),
                    }
                }
                busy.store(false, SeqCst);
                if total.load(SeqCst) == SOCKETS as u64 * BYTES {
                    lp.notify(); // wake a sleeping sibling: it is over
                }
            }),
        )
        .unwrap();
        peers.push((sock, peer));
    }
    let pollers: Vec<_> = (0..2)
        .map(|_| {
            let (lp, total) = (lp.clone(), total.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + PATIENCE * 3;
                let mut polls = 0u64;
                while total.load(SeqCst) < SOCKETS as u64 * BYTES {
                    assert!(Instant::now() < deadline, "stuck");
                    lp.poll(true);
                    polls += 1;
                }
                lp.notify(); // pass the end on to the other poller
                polls
            })
        })
        .collect();
    for _ in 0..BYTES {
        for (_, peer) in peers.iter_mut() {
            peer.write_all(b"z").unwrap();
        }
    }
    let polls: Vec<u64> = pollers.into_iter().map(|p| p.join().unwrap()).collect();
    assert_eq!(total.load(SeqCst), SOCKETS as u64 * BYTES);
    assert_eq!(
        overlaps.load(SeqCst),
        0,
        "a handler ran in two threads at once"
    );
    assert!(polls.iter().sum::<u64>() > 0);
    for (sock, _) in &peers {
        lp.remove_fd_handler(&**sock).unwrap();
    }
}

#[test]
fn an_iothread_runs_its_handlers_timers_and_bottom_halves_in_its_own_thread() {
    let io = IoThread::spawn("test-io").unwrap();
    let lp = io.get().clone();
    let names = Arc::new(Mutex::new(Vec::new()));
    let name = |names: &Arc<Mutex<Vec<String>>>, what: &str| {
        let current = std::thread::current();
        names
            .lock()
            .unwrap()
            .push(format!("{what}@{}", current.name().unwrap_or("?")));
    };
    let (sock, mut peer) = shared_socket_pair();
    let (n1, n2, n3) = (names.clone(), names.clone(), names.clone());
    let me = sock.clone();
    lp.set_fd_handler(
        &*sock,
        FdHandler::new().read(move |_| {
            let _ = (&*me).read(&mut [0u8; 16]);
            name(&n1, "fd");
        }),
    )
    .unwrap();
    let t = lp.timer(Clock::Monotonic, move |_, _| name(&n2, "timer"));
    t.arm_after(Duration::from_millis(5));
    lp.schedule_oneshot(move |_| name(&n3, "bh"));
    peer.write_all(b"x").unwrap();
    let deadline = Instant::now() + PATIENCE;
    while names.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "{:?}", names.lock().unwrap());
        std::thread::sleep(Duration::from_millis(1));
    }
    lp.remove_fd_handler(&*sock).unwrap();
    drop(lp);
    io.stop().unwrap();
    let mut names = names.lock().unwrap().clone();
    names.sort();
    assert_eq!(names, ["bh@test-io", "fd@test-io", "timer@test-io"]);
}

// ---- adaptive polling ----

#[test]
fn adaptive_polling_is_off_by_default() {
    let lp = new_loop();
    assert_eq!(lp.poll_params(), PollParams::default());
    settle(&lp, Duration::from_millis(5));
    let s = lp.stats();
    assert_eq!((s.poll_ns, s.busy_poll_hits, s.busy_poll_misses), (0, 0, 0));
}

#[test]
fn the_polling_time_grows_while_work_comes_soon_and_shrinks_after_a_long_block() {
    let lp = new_loop();
    lp.set_poll_params(PollParams {
        max_ns: 200_000_000,
        grow: 2,
        shrink: 0,
    });
    let bh = lp.bh(|_, _| {});
    bh.schedule();
    assert!(lp.poll(true)); // blocked for microseconds: polling starts
    assert_eq!(lp.poll_ns(), Duration::from_micros(4));
    for _ in 0..10 {
        settle(&lp, Duration::from_millis(2)); // work (a timer) 2 ms away: grow
    }
    assert!(
        lp.poll_ns() >= Duration::from_millis(2),
        "{:?}",
        lp.poll_ns()
    );
    assert!(lp.stats().busy_poll_misses > 0);
    settle(&lp, Duration::from_millis(300)); // longer than max: stop polling
    assert_eq!(lp.poll_ns(), Duration::ZERO);
    bh.delete();
}

#[test]
fn a_busy_polling_loop_takes_a_bh_from_another_thread_without_a_wakeup() {
    let lp = Arc::new(new_loop());
    lp.set_poll_params(PollParams {
        max_ns: 2_000_000_000,
        grow: 1000,
        shrink: 0,
    });
    let bh = lp.bh(|_, _| {});
    bh.schedule();
    lp.poll(true); // 4 us
    settle(&lp, Duration::from_millis(10)); // 4 ms
    settle(&lp, Duration::from_millis(50)); // 2 s (the maximum)
    assert_eq!(lp.poll_ns(), Duration::from_secs(2));

    let (remote, n) = counting_bh(&lp);
    let before = lp.stats();
    let r = remote.clone();
    let scheduler = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        r.schedule();
    });
    assert!(lp.poll(true));
    scheduler.join().unwrap();
    let after = lp.stats();
    assert_eq!(n.load(SeqCst), 1);
    assert_eq!(after.busy_poll_hits - before.busy_poll_hits, 1);
    assert_eq!(
        after.wakeups, before.wakeups,
        "no wake-up: the loop was polling"
    );
    assert_eq!(after.sleeps, before.sleeps, "it never slept");
    remote.delete();
    bh.delete();
}
