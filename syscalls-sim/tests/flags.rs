//! The request flags (ONESHOT, LAST_CHECK, WAKEUP_ALL; ET and ALWAYS_QUEUE are in
//! `epoll_selftests.rs` and `ctl.rs`) and coalescing (kernel.rs, ARCHITECTURE.md §4).

mod util;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::*;

#[test]
fn oneshot_delivers_once_then_stays_silent_until_modify_reenables_it() {
    let q = Q::new(64);
    let (r, w) = pipe();
    let mut evs = [fd_ev(
        KEVENT_PIPE,
        &r,
        KEVENT_PIPE_READ,
        KEVENT_REQ_ONESHOT,
        1,
    )];
    q.add(&mut evs);
    write_bytes(&w, b"x");
    assert_eq!(q.get_one().user, 1);
    // Still unread (a level kevent would be reported again) and more data arrives.
    write_bytes(&w, b"y");
    q.expect_none(QUIET);
    assert_eq!(q.stats().registered, 1, "a fired ONESHOT stays registered");
    // MODIFY re-enables it (with a new cookie); the pipe is ready, so it is reported.
    q.ctl_ok(
        KEVENT_CTL_MODIFY,
        &mut [fd_ev(
            KEVENT_PIPE,
            &r,
            KEVENT_PIPE_READ,
            KEVENT_REQ_ONESHOT,
            2,
        )],
    );
    assert_eq!(q.get_one().user, 2);
    q.expect_none(QUIET);
}

#[test]
fn oneshot_reenabled_while_idle_reports_the_next_readiness() {
    let q = Q::new(64);
    let (r, w) = pipe();
    set_nonblocking(&r);
    let e = fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, KEVENT_REQ_ONESHOT, 1);
    q.add(&mut [e]);
    write_bytes(&w, b"x");
    assert_eq!(q.get_one().user, 1);
    drain(&r);
    q.ctl_ok(KEVENT_CTL_MODIFY, &mut [e]);
    q.expect_none(QUIET);
    write_bytes(&w, b"y");
    assert_eq!(q.get_one().user, 1);
    write_bytes(&w, b"z");
    q.expect_none(QUIET);
}

#[test]
fn oneshot_user_event_is_delivered_once_for_two_readies() {
    let q = Q::new(64);
    q.add(&mut [user_ev(1, KEVENT_REQ_ONESHOT)]);
    q.ctl_ok(KEVENT_CTL_READY, &mut [user_ev(1, 0)]);
    assert_eq!(q.get_one().user, 1);
    q.ctl_ok(KEVENT_CTL_READY, &mut [user_ev(1, 0)]);
    q.expect_none(QUIET);
    q.ctl_ok(KEVENT_CTL_MODIFY, &mut [user_ev(1, KEVENT_REQ_ONESHOT)]);
    q.ctl_ok(KEVENT_CTL_READY, &mut [user_ev(1, 0)]);
    assert_eq!(q.get_one().user, 1);
}

/// Four pipes on a ring of two, all ready: two entries in the ring, two backlogged.
/// The data of one backlogged pipe is read before the ring gets room. Returns the users
/// delivered after that and the drained pipe's user.
fn drain_a_backlogged_pipe_before_commit(req_flags: u32) -> (Vec<u64>, u64) {
    let q = Q::new(2);
    let pipes: Vec<(OwnedFd, OwnedFd)> = (0..4).map(|_| pipe()).collect();
    let mut evs: Vec<Ukevent> = pipes
        .iter()
        .enumerate()
        .map(|(i, (r, _))| fd_ev(KEVENT_PIPE, r, KEVENT_PIPE_READ, req_flags, i as u64))
        .collect();
    assert_eq!(q.add(&mut evs), 0);
    for (r, w) in &pipes {
        set_nonblocking(r);
        write_bytes(w, b"x");
    }
    assert!(
        wait_until(PATIENCE, || q.stats().backlogged >= 2),
        "the ring of 2 never filled: {:?}",
        q.stats()
    );
    let (claim, first) = q.claim(2, PATIENCE);
    assert_eq!(first.len(), 2);
    let in_ring: Vec<u64> = first.iter().map(|e| e.user).collect();
    let backlogged: Vec<u64> = (0..4).filter(|u| !in_ring.contains(u)).collect();
    // The delivered ones are handled; the first backlogged one stops being ready.
    for u in in_ring.iter().chain(&backlogged[..1]) {
        drain(&pipes[*u as usize].0);
    }
    q.commit_to(claim.end);
    let mut later = Vec::new();
    let end = Instant::now() + QUIET;
    while Instant::now() < end {
        let (claim, evs) = q.claim(2, Duration::from_millis(50));
        for e in &evs {
            later.push(e.user);
            drain(&pipes[e.user as usize].0);
        }
        if !claim.is_empty() {
            q.commit_to(claim.end);
        }
    }
    (later, backlogged[0])
}

#[test]
fn last_check_drops_a_backlogged_entry_whose_fd_is_no_longer_ready() {
    let (later, drained) = drain_a_backlogged_pipe_before_commit(KEVENT_REQ_LAST_CHECK);
    assert_eq!(later.len(), 1, "only the still-ready pipe: {later:?}");
    assert_ne!(later[0], drained);
}

#[test]
fn without_last_check_a_backlogged_entry_is_delivered_even_if_no_longer_ready() {
    // The control experiment: this is what LAST_CHECK changes.
    let (later, drained) = drain_a_backlogged_pipe_before_commit(0);
    assert_eq!(later.len(), 2, "{later:?}");
    assert!(later.contains(&drained));
}

#[test]
fn two_writes_before_a_claim_make_one_entry() {
    let q = Q::new(64);
    let (r, w) = UnixStream::pair().unwrap();
    q.add(&mut [fd_ev(KEVENT_SOCKET, &r, KEVENT_SOCKET_RECV, 0, 1)]);
    let ring = q.queue().ring().clone();
    write_bytes(&w, b"a");
    assert!(wait_until(PATIENCE, || ring.kidx() == 1), "first entry");
    write_bytes(&w, b"b");
    assert!(
        wait_until(PATIENCE, || q.stats().coalesced > 0),
        "the second write was never merged: {:?}",
        q.stats()
    );
    let (claim, evs) = q.claim(64, PATIENCE);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!((evs[0].user, evs[0].event), (1, KEVENT_SOCKET_RECV));
    assert_eq!(ring.kidx(), 1, "one entry published for two writes");
    q.commit_to(claim.end);
}

#[test]
fn readies_before_a_claim_are_merged_and_counted_in_one_entry() {
    let q = Q::new(64);
    q.add(&mut [user_ev(1, 0)]);
    // The producer is asleep in epoll_wait when kevent_ctl merges the arrivals.
    std::thread::sleep(Duration::from_millis(50));
    for _ in 0..3 {
        q.ctl_ok(KEVENT_CTL_READY, &mut [user_ev(1, 0)]);
    }
    let got = q.get(PATIENCE);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].ret_data[0], 1,
        "the published entry counts its arrival"
    );
    // The two merged arrivals come in the next entry, after the commit.
    let next = q.get_one();
    assert_eq!(next.ret_data[0], 2);
    assert_eq!(q.stats().coalesced, 2);
    q.expect_none(QUIET);
}

/// Two threads wait (`kevent_wait`, 1 s timeout) on one queue; one user event with
/// `req_flags` is made ready. Returns how many waiters returned early (with an entry or
/// well before their timeout).
fn waiters_woken_by_one_event(req_flags: u32) -> usize {
    let q = Q::new(64);
    q.add(&mut [user_ev(1, req_flags)]);
    let (tx, rx) = mpsc::channel();
    let fd = q.fd;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let u = instance(fd).unwrap().ring().uidx();
                let r = kevent_wait(fd, 1, u, Some(SEC), 0);
                let at = Instant::now();
                if let Ok(c) = &r {
                    if c.owned > 0 {
                        let (idx, over) = instance(fd).unwrap().ring().kevent_view(c.end);
                        let _ = kevent_commit(fd, idx, over);
                    }
                }
                tx.send((r.map(|c| c.owned), at)).unwrap();
            })
        })
        .collect();
    assert!(
        wait_until(PATIENCE, || q.sleepers() == 2),
        "waiters never slept"
    );
    // Past the re-check, into FUTEX_WAIT.
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    q.ctl_ok(KEVENT_CTL_READY, &mut [user_ev(1, 0)]);
    let mut early = 0;
    let mut owned = 0;
    for _ in 0..2 {
        let (r, at) = rx.recv_timeout(PATIENCE).expect("a waiter hung");
        let n = r.expect("kevent_wait");
        owned += n;
        if n > 0 || at.duration_since(t0) < Duration::from_millis(500) {
            early += 1;
        }
    }
    assert_eq!(owned, 1, "exactly one waiter gets the entry");
    for t in threads {
        t.join().unwrap();
    }
    early
}

#[test]
fn one_event_wakes_exactly_one_of_two_waiters_by_default() {
    assert_eq!(waiters_woken_by_one_event(0), 1);
}

#[test]
fn wakeup_all_wakes_both_waiters() {
    assert_eq!(waiters_woken_by_one_event(KEVENT_REQ_WAKEUP_ALL), 2);
}

#[test]
fn ready_with_no_entries_wakes_a_waiter_with_an_empty_claim() {
    let q = Q::new(64);
    let fd = q.fd;
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let u = instance(fd).unwrap().ring().uidx();
        let start = Instant::now();
        let r = kevent_wait(fd, 1, u, Some(5 * SEC), 0);
        tx.send((r, start.elapsed())).unwrap();
    });
    assert!(
        wait_until(PATIENCE, || q.sleepers() == 1),
        "waiter never slept"
    );
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(kevent_ctl(q.fd, KEVENT_CTL_READY, &mut []).unwrap(), 0);
    let (r, took) = rx.recv_timeout(PATIENCE).expect("the waiter was not woken");
    assert!(r.unwrap().is_empty());
    assert!(took < Duration::from_secs(2), "woke only at its timeout");
    t.join().unwrap();
}

#[test]
fn pipes_ready_together_are_each_delivered_once_in_a_small_ring() {
    // A smaller sibling of ring_full.rs: level-triggered, read before commit.
    let q = Q::new(2);
    let pipes: Vec<(OwnedFd, OwnedFd)> = (0..16).map(|_| pipe()).collect();
    let mut evs: Vec<Ukevent> = pipes
        .iter()
        .enumerate()
        .map(|(i, (r, _))| fd_ev(KEVENT_PIPE, r, KEVENT_PIPE_READ, 0, i as u64))
        .collect();
    q.add(&mut evs);
    for (r, w) in &pipes {
        set_nonblocking(r);
        write_bytes(w, b"x");
    }
    let mut seen: HashMap<u64, u32> = HashMap::new();
    let end = Instant::now() + PATIENCE;
    while Instant::now() < end && seen.len() < pipes.len() {
        let (claim, got) = q.claim(2, Duration::from_millis(100));
        for e in &got {
            *seen.entry(e.user).or_default() += 1;
            drain(&pipes[e.user as usize].0);
        }
        if !claim.is_empty() {
            q.commit_to(claim.end);
        }
    }
    q.expect_none(QUIET);
    assert_eq!(seen.len(), 16, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
}
