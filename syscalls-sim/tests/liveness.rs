//! No single consumer stalls the queue (ARCHITECTURE.md §5): liveness is per process (a helper
//! a consumer forked cannot keep its entries hostage), a live consumer that holds a claim
//! past its lease has it delivered to others, a detach frees its record at once, and a
//! stalled ring costs the reaper nothing per tick.

mod util;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::*;

/// Not a test: the entry point of the worker program this file runs (`util::worker`).
#[test]
fn kevent_worker_entry() {
    util::worker::entry()
}

fn user_ready(q: &Instance, ids: std::ops::Range<u64>) {
    let mut evs: Vec<Ukevent> = ids.clone().map(|i| user_ev(i, 0)).collect();
    assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut evs).unwrap(), 0);
    let mut evs: Vec<Ukevent> = ids.map(|i| user_ev(i, 0)).collect();
    assert_eq!(q.ctl(KEVENT_CTL_READY, &mut evs).unwrap(), 0);
}

/// Takes entries with `get_events` until `n` arrived or `limit` passed; returns them.
fn take(q: &Instance, n: usize, limit: Duration) -> Vec<Ukevent> {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < end {
        let mut buf = [Ukevent::default(); 16];
        if let Ok(k) = q.get_events(1, 16, Some(20_000_000), &mut buf, 0) {
            got.extend_from_slice(&buf[..k]);
        }
    }
    got
}

#[test]
fn a_dead_consumers_entries_come_back_although_a_helper_it_forked_lives_on() {
    let dir = TempDir::new("liveness");
    let path = dir.0.join("q.sock");
    let q = Instance::create_with(64, 0, Duration::from_millis(20)).unwrap();
    q.listen(&path).unwrap();
    user_ready(&q, 1..4);
    let mut worker = util::worker::command(&["hold", path.to_str().unwrap(), "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the kevent worker");
    let mut lines = BufReader::new(worker.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let line = util::worker::protocol_line(&mut lines, "held ").unwrap_or_default();
    let helper: i32 = line
        .trim()
        .strip_prefix("held 3 helper=")
        .unwrap_or_else(|| panic!("worker said {line:?}"))
        .parse()
        .unwrap();
    worker.kill().unwrap();
    worker.wait().unwrap();
    let killed = Instant::now();
    let got = take(&q, 3, Duration::from_secs(3));
    let took = killed.elapsed();
    // SAFETY: the helper is our grandchild, sleeping; a signal to its pid is harmless.
    unsafe { libc::kill(helper, libc::SIGKILL) };
    assert_eq!(got.len(), 3, "entries back: {got:?}");
    assert!(got
        .iter()
        .all(|e| e.ret_flags & KEVENT_RET_REDELIVERED != 0));
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} with a 20 ms reap interval (the helper still holds the lock)"
    );
}

#[test]
fn a_live_consumer_that_holds_a_claim_past_its_lease_does_not_stall_the_ring() {
    let q = Instance::create_with(4, 0, Duration::from_millis(20)).unwrap();
    q.set_lease(Duration::from_millis(200)).unwrap();
    user_ready(&q, 1..2);
    // A consumer claims the first entry and never commits it (stuck, or stopped).
    let stuck = q.wait(1, q.ring().uidx(), Some(1_000_000_000), 0).unwrap();
    assert_eq!(stuck.owned, 1);
    // More events than the ring holds: they need the stuck slot back.
    user_ready(&q, 10..20);
    let start = Instant::now();
    let got = take(&q, 11, Duration::from_secs(5));
    let took = start.elapsed();
    let mut users: Vec<u64> = got.iter().map(|e| e.user).collect();
    users.sort_unstable();
    assert_eq!(
        users,
        [1, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19],
        "every event, the held one redelivered"
    );
    let redelivered: Vec<u64> = got
        .iter()
        .filter(|e| e.ret_flags & KEVENT_RET_REDELIVERED != 0)
        .map(|e| e.user)
        .collect();
    assert_eq!(redelivered, [1]);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        q.ring()
            .header()
            .stats
            .expired
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The stuck consumer's late commit is a no-op.
    assert_eq!(q.commit_range(stuck.start..stuck.end), 0);
    assert_eq!(
        q.ring()
            .header()
            .stats
            .lost
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

/// The ring releases in order, and a level-triggered kevent is reported again only once
/// its entry is released: a live consumer stuck on the oldest entry would hold back every
/// kevent committed after it — with room in the ring and no backlog. Its lease ends that.
#[test]
fn a_consumer_stuck_on_the_oldest_entry_does_not_hold_back_later_kevents_past_its_lease() {
    let q = Instance::create_with(64, 0, Duration::from_millis(20)).unwrap();
    q.set_lease(Duration::from_millis(200)).unwrap();
    user_ready(&q, 1..3);
    // Another consumer (a record of its own) claims the oldest entry and keeps it.
    let doorbell = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let other = Instance::attach(q.ring().memfd().unwrap(), doorbell).unwrap();
    let stuck = other
        .wait(1, other.ring().uidx(), Some(1_000_000_000), 0)
        .unwrap();
    assert_eq!(stuck.owned, 1);
    let second = take(&q, 1, Duration::from_secs(2));
    assert_eq!(second.iter().map(|e| e.user).collect::<Vec<_>>(), [2]);
    // Event 2 fires again: its entry is committed but not released (behind the stuck
    // one), so the arrival waits for that release.
    assert_eq!(q.ctl(KEVENT_CTL_READY, &mut [user_ev(2, 0)]).unwrap(), 0);
    let start = Instant::now();
    let got = take(&q, 2, Duration::from_secs(5));
    let took = start.elapsed();
    let mut users: Vec<u64> = got.iter().map(|e| e.user).collect();
    users.sort_unstable();
    assert_eq!(
        users,
        [1, 2],
        "the held event (redelivered) and event 2 again: {got:?}"
    );
    assert!(got
        .iter()
        .any(|e| e.user == 1 && e.ret_flags & KEVENT_RET_REDELIVERED != 0));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        q.ring()
            .stats()
            .expired
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[test]
fn attaching_and_detaching_quickly_never_fills_the_consumer_table() {
    let q = Instance::create(64, 0).unwrap();
    let memfd = q.ring().memfd().unwrap();
    for i in 0..2000 {
        let doorbell = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        let c = Instance::attach(memfd, doorbell).unwrap_or_else(|e| panic!("attach {i}: {e}"));
        c.close();
    }
}
