//! `kevent::Loop` in several processes: pre-forked workers, each with a loop of its own,
//! drive one shared queue's handlers ([`Loop::attach_queue`]); every event is dispatched
//! by exactly one of them.

mod util;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kevent::{FdHandler, Loop, PollMask, Queue, Source, Token, Trigger};
use util::event_loop::run_until;
use util::proc::{serial, Children, SharedWords};
use util::PATIENCE;

const WORKERS: usize = 3; // the parent and two children

#[test]
fn pre_forked_loops_dispatch_every_shared_user_event_arrival_exactly_once() {
    let _serial = serial();
    const SOURCES: usize = 64;
    const FIRES: u64 = 50;
    // Words: [done, per-source arrival counts.., per-worker events.., overlaps]
    let mem = Arc::new(SharedWords::new(1 + SOURCES + WORKERS + 1));
    let (done, count, by_worker, overlaps) = (
        0,
        |s: usize| 1 + s,
        |w: usize| 1 + SOURCES + w,
        1 + SOURCES + WORKERS,
    );
    let shared = Arc::new(Queue::new().unwrap());
    for s in 0..SOURCES {
        shared
            .add(&Source::user(s as u64), Token(s as u64), Trigger::Edge)
            .unwrap();
    }
    let busy: Vec<AtomicU64> = (0..SOURCES).map(|_| AtomicU64::new(0)).collect();
    let busy = Arc::new(busy);
    // One worker: a loop of its own with the shared queue attached.
    let worker = move |w: usize, q: Arc<Queue>, mem: Arc<SharedWords>| -> bool {
        let lp = Loop::new().unwrap();
        lp.set_max_events(2);
        let m = mem.clone();
        let busy = busy.clone();
        lp.attach_queue(q, move |_lp, ev| {
            let s = ev.token().0 as usize;
            // Within a process two dispatches of one source would overlap here; across
            // processes the shared counts below catch a double dispatch.
            if busy[s].swap(1, SeqCst) == 1 {
                m.at(overlaps).fetch_add(1, SeqCst);
            }
            m.at(count(s)).fetch_add(ev.count(), SeqCst);
            m.at(by_worker(w)).fetch_add(1, SeqCst);
            std::thread::sleep(Duration::from_micros(100)); // spread the work
            busy[s].store(0, SeqCst);
        })
        .unwrap();
        let finished = run_until(&lp, || mem.at(done).load(SeqCst) == 1);
        assert!(lp.take_error().is_none());
        finished
    };
    let mut kids = Children::default();
    let children: Vec<_> = (1..WORKERS)
        .map(|w| {
            let (shared, mem, worker) = (shared.clone(), mem.clone(), worker.clone());
            kids.fork(move || {
                let q = Arc::new(shared.for_this_process().unwrap());
                i32::from(!worker(w, q, mem))
            })
        })
        .collect();
    let firer = {
        let (shared, mem) = (shared.clone(), mem.clone());
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50)); // the children attach
            for _ in 0..FIRES {
                for s in 0..SOURCES {
                    shared.ready(&Source::user(s as u64)).unwrap();
                }
            }
            let deadline = Instant::now() + PATIENCE;
            let all = || (0..SOURCES).all(|s| mem.at(count(s)).load(SeqCst) >= FIRES);
            while !all() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(100)); // a double dispatch shows
            mem.at(done).store(1, SeqCst);
        })
    };
    assert!(
        worker(0, shared.clone(), mem.clone()),
        "the parent's loop timed out"
    );
    firer.join().unwrap();
    for pid in children {
        kids.expect_success(pid, PATIENCE, "a child worker");
    }
    let counts: Vec<u64> = (0..SOURCES)
        .map(|s| mem.at(count(s)).load(SeqCst))
        .collect();
    assert!(
        counts.iter().all(|&c| c == FIRES),
        "every source's {FIRES} arrivals dispatched exactly once: {counts:?}"
    );
    assert_eq!(
        mem.at(overlaps).load(SeqCst),
        0,
        "a source dispatched twice at once"
    );
    let per: Vec<u64> = (0..WORKERS)
        .map(|w| mem.at(by_worker(w)).load(SeqCst))
        .collect();
    assert!(
        per.iter().filter(|&&n| n > 0).count() >= 2,
        "the work was shared between processes: {per:?}"
    );
}

#[test]
fn pre_forked_workers_accept_from_one_listener_each_connection_once_and_serve_it() {
    let _serial = serial();
    const CLIENTS: usize = 60;
    let mem = Arc::new(SharedWords::new(2 + WORKERS));
    let (done, accepted, by_worker) = (0, 1, |w: usize| 2 + w);
    let listener = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Queue::new().unwrap());
    let src = Source::poll(&*listener, PollMask::IN);
    shared.add(&src, Token(7), Trigger::Level).unwrap();

    // A worker: accepts what it claims of the shared listener and serves each connection
    // on its own loop (an fd belongs to the process that accepted it).
    let worker = move |w: usize, q: Arc<Queue>, mem: Arc<SharedWords>, l: Arc<TcpListener>| {
        let lp = Loop::new().unwrap();
        let m = mem.clone();
        lp.attach_queue(q, move |lp, ev| {
            assert_eq!(ev.token(), Token(7));
            loop {
                let conn = match l.accept() {
                    Ok((c, _)) => Arc::new(c),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                    Err(e) => panic!("accept: {e}"),
                };
                m.at(accepted).fetch_add(1, SeqCst);
                m.at(by_worker(w)).fetch_add(1, SeqCst);
                conn.set_nonblocking(true).unwrap();
                let c = conn.clone();
                let served = FdHandler::new().read(move |lp| {
                    let mut buf = [0u8; 64];
                    match (&*c).read(&mut buf) {
                        Ok(0) => {
                            lp.remove_fd_handler(&*c).unwrap();
                        }
                        Ok(n) => (&*c).write_all(&buf[..n]).unwrap(),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                        Err(e) => panic!("read: {e}"),
                    }
                });
                lp.set_fd_handler(&*conn, served).unwrap();
            }
        })
        .unwrap();
        run_until(&lp, || mem.at(done).load(SeqCst) == 1) && lp.take_error().is_none()
    };
    let mut kids = Children::default();
    let children: Vec<_> = (1..WORKERS)
        .map(|w| {
            let (shared, mem, l) = (shared.clone(), mem.clone(), listener.clone());
            kids.fork(move || {
                let q = Arc::new(shared.for_this_process().unwrap());
                i32::from(!worker(w, q, mem, l))
            })
        })
        .collect();
    let clients = {
        let mem = mem.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50)); // the children attach
            let mut conns = Vec::new();
            for i in 0..CLIENTS {
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_read_timeout(Some(PATIENCE)).unwrap();
                let msg = format!("hello {i:03}");
                c.write_all(msg.as_bytes()).unwrap();
                conns.push((c, msg));
            }
            for (c, msg) in &mut conns {
                let mut back = vec![0u8; msg.len()];
                c.read_exact(&mut back).unwrap();
                assert_eq!(back, msg.as_bytes(), "echoed by whoever accepted it");
            }
            drop(conns);
            std::thread::sleep(Duration::from_millis(100)); // a second accept shows
            mem.at(done).store(1, SeqCst);
        })
    };
    let parent = worker(0, shared.clone(), mem.clone(), listener.clone());
    clients.join().unwrap();
    for pid in children {
        kids.expect_success(pid, PATIENCE, "a child worker");
    }
    assert!(parent, "the parent's loop timed out or kept an error");
    assert_eq!(
        mem.at(accepted).load(SeqCst),
        CLIENTS as u64,
        "each connection accepted once"
    );
    let per: Vec<u64> = (0..WORKERS)
        .map(|w| mem.at(by_worker(w)).load(SeqCst))
        .collect();
    assert!(per.iter().sum::<u64>() == CLIENTS as u64, "{per:?}");
}

#[test]
fn attaching_a_queue_twice_or_the_loops_own_queue_is_refused() {
    let lp = Loop::new().unwrap();
    let q = Arc::new(Queue::new().unwrap());
    lp.attach_queue(q.clone(), |_, _| {}).unwrap();
    let again = lp.attach_queue(q.clone(), |_, _| {}).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(libc::EEXIST));
    // The loop's own queue, as a second handle of it, is refused too.
    let own = lp.queue().for_this_process().unwrap();
    let err = lp.attach_queue(Arc::new(own), |_, _| {}).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    assert!(lp.detach_queue(&q).unwrap());
    assert!(!lp.detach_queue(&q).unwrap());
}

#[test]
fn an_attached_queue_that_closes_is_detached_and_its_error_kept() {
    let lp = Loop::new().unwrap();
    let q = Arc::new(Queue::new().unwrap());
    q.add(&Source::user(1), Token(1), Trigger::Edge).unwrap();
    let got = Arc::new(AtomicU64::new(0));
    let g = got.clone();
    lp.attach_queue(q.clone(), move |_, ev| {
        g.fetch_add(ev.count(), SeqCst);
    })
    .unwrap();
    q.ready(&Source::user(1)).unwrap();
    assert!(run_until(&lp, || got.load(SeqCst) == 1));
    // A connected handle whose owner closes: every later call answers EPIPE.
    let path = std::env::temp_dir().join(format!("kevent-attach-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let owner = Queue::new().unwrap();
    owner.listen(&path).unwrap();
    let remote = Arc::new(Queue::connect(&path).unwrap());
    lp.attach_queue(remote.clone(), |_, _| {}).unwrap();
    drop(owner);
    assert!(run_until(&lp, || lp.stats().errors > 0));
    assert!(!lp.detach_queue(&remote).unwrap(), "detached by the loop");
    let err = lp.take_error().expect("the close is kept");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
}

#[test]
fn detaching_inside_the_queues_own_callback_finishes_the_claimed_batch_and_takes_no_more() {
    let lp = Loop::new().unwrap();
    lp.set_max_events(10);
    let q = Arc::new(Queue::new().unwrap());
    for s in 0..20u64 {
        q.add(&Source::user(s), Token(s), Trigger::Edge).unwrap();
        q.ready(&Source::user(s)).unwrap();
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sn, qq) = (seen.clone(), q.clone());
    lp.attach_queue(q.clone(), move |lp, ev| {
        let mut seen = sn.lock().unwrap();
        seen.push(ev.token().0);
        if seen.len() == 3 {
            assert!(lp.detach_queue(&qq).unwrap(), "attached");
            assert!(!lp.detach_queue(&qq).unwrap(), "detached already");
        }
    })
    .unwrap();
    assert!(run_until(&lp, || seen.lock().unwrap().len() >= 3));
    for _ in 0..5 {
        lp.poll(false);
    }
    // The batch of 10 it had claimed is dispatched whole (nobody else can have those
    // events); the other 10 stay in the queue for whoever takes them next.
    assert_eq!(seen.lock().unwrap().len(), 10, "{:?}", seen.lock().unwrap());
    let rest = q.wait(64, Some(Duration::ZERO)).unwrap();
    assert_eq!(rest.len(), 10, "the rest is still in the queue");
}

#[test]
fn an_fd_handler_of_yours_on_a_queues_fd_is_not_an_attachment() {
    let lp = Loop::new().unwrap();
    let q = Arc::new(Queue::new().unwrap());
    lp.set_fd_handler(&*q, FdHandler::new().read(|_| {}))
        .unwrap();
    let err = lp.attach_queue(q.clone(), |_, _| {}).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    assert!(!lp.detach_queue(&q).unwrap(), "never attached");
    assert!(
        lp.remove_fd_handler(&*q).unwrap(),
        "your handler is still there"
    );
}

#[test]
fn a_worker_killed_inside_a_batch_loses_nothing_its_batch_is_redelivered_flagged() {
    let _serial = serial();
    const EVENTS: u64 = 8;
    let mem = Arc::new(SharedWords::new(EVENTS as usize));
    let shared = Arc::new(
        Queue::builder()
            .reap_interval(Duration::from_millis(20))
            .build()
            .unwrap(),
    );
    for s in 0..EVENTS {
        shared
            .add(&Source::user(s), Token(s), Trigger::Edge)
            .unwrap();
        shared.ready(&Source::user(s)).unwrap();
    }
    let (q, m) = (shared.clone(), mem.clone());
    let mut kids = Children::default();
    let child = kids.fork(move || {
        let lp = Loop::new().unwrap();
        lp.set_max_events(4);
        let mine = Arc::new(q.for_this_process().unwrap());
        let ran = Arc::new(AtomicU64::new(0));
        lp.attach_queue(mine, move |_, ev| {
            m.at(ev.token().0 as usize).fetch_add(1, SeqCst);
            if ran.fetch_add(1, SeqCst) == 1 {
                // SAFETY: kills this (child) process, in the middle of its batch.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
        })
        .unwrap();
        run_until(&lp, || false);
        0
    });
    assert_eq!(
        kids.wait(child, PATIENCE)
            .and_then(|status| status.terminating_signal()),
        Some(libc::SIGKILL),
        "the child died in its callback"
    );
    let before: Vec<u64> = (0..EVENTS as usize)
        .map(|s| mem.at(s).load(SeqCst))
        .collect();
    assert_eq!(
        before.iter().sum::<u64>(),
        2,
        "it ran two callbacks: {before:?}"
    );
    let lp = Loop::new().unwrap();
    let redelivered = Arc::new(AtomicU64::new(0));
    let (m, r) = (mem.clone(), redelivered.clone());
    lp.attach_queue(shared.clone(), move |_, ev| {
        m.at(ev.token().0 as usize).fetch_add(1, SeqCst);
        if ev.is_redelivered() {
            r.fetch_add(1, SeqCst);
        }
    })
    .unwrap();
    let batch_of_the_dead: Vec<usize> = (0..EVENTS as usize).filter(|&s| before[s] > 0).collect();
    assert!(run_until(&lp, || (0..EVENTS as usize)
        .all(|s| mem.at(s).load(SeqCst) >= 1)
        && redelivered.load(SeqCst) >= 4));
    let after: Vec<u64> = (0..EVENTS as usize)
        .map(|s| mem.at(s).load(SeqCst))
        .collect();
    // Nothing lost; the dead worker's batch of 4 came again, flagged — the two events
    // whose callbacks had run included (at-least-once across a crash).
    assert!(after.iter().all(|&n| n >= 1), "{after:?}");
    assert_eq!(redelivered.load(SeqCst), 4, "{after:?}");
    for s in batch_of_the_dead {
        assert_eq!(after[s], 2, "ran in the dead worker and again: {after:?}");
    }
    assert_eq!(after.iter().sum::<u64>(), EVENTS + 2, "{after:?}");
}
