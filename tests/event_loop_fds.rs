//! `kevent::Loop`'s fd handlers: each event of a socket is dispatched once, a handler
//! removed during dispatch (by itself or another) runs no more, a replaced one sends the
//! next events to the new callback; and external sources: a nested poll or a drained
//! section keeps their events (without busy polling) and dispatches them after it.

mod util;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kevent::FdHandler;
use util::event_loop::*;
use util::PATIENCE;

// ---- fd handlers ----------------------------------------------------------------------

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

// ---- nested polls and external sources -------------------------------------------------

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
