//! The argument checks of the five calls and the claim/commit protocol's errors
//! (calls.rs; ARCHITECTURE.md §3 "Commit", §6).

mod util;

use std::time::Duration;

use kevent_syscalls::*;
use util::*;

#[test]
fn kevent_init_rejects_a_ring_of_one_unknown_flags_and_a_huge_ring() {
    assert_errno(kevent_init(1, 0), libc::EINVAL);
    assert_errno(kevent_init(8, 1), libc::EINVAL);
    assert_errno(kevent_init((1 << 24) + 1, 0), libc::EINVAL);
}

#[test]
fn kevent_init_rounds_the_ring_up_and_zero_means_the_default_ring() {
    let q = Q::new(5);
    assert_eq!(q.queue().ring().capacity(), 8);
    let q0 = Q::new(0);
    assert_eq!(q0.queue().ring().capacity(), u64::from(KEVENT_DEFAULT_RING));
}

/// Every call on `fd` fails with `EBADF`.
fn assert_every_call_is_ebadf(fd: i32) {
    let mut buf = [Ukevent::default(); 4];
    assert_errno(
        kevent_ctl(fd, KEVENT_CTL_ADD, &mut [user_ev(1, 0)]),
        libc::EBADF,
    );
    assert_errno(kevent_ctl(fd, KEVENT_CTL_READY, &mut []), libc::EBADF);
    assert_errno(
        kevent_get_events(fd, 1, 4, Some(10 * MS), &mut buf, 0),
        libc::EBADF,
    );
    assert_errno(kevent_wait(fd, 1, 0, Some(10 * MS), 0), libc::EBADF);
    assert_errno(kevent_commit(fd, 0, 0), libc::EBADF);
    assert_errno(kevent_close(fd), libc::EBADF);
}

#[test]
fn every_call_on_a_closed_handle_is_ebadf() {
    let fd = kevent_init(8, 0).unwrap();
    // Holding the queue keeps its handle number from being reused by a queue that a
    // test running in parallel creates.
    let keep = instance(fd).unwrap();
    kevent_close(fd).unwrap();
    assert_every_call_is_ebadf(fd);
    drop(keep);
}

#[test]
fn every_call_on_a_handle_that_was_never_a_queue_is_ebadf() {
    let (r, _w) = pipe();
    assert_every_call_is_ebadf(std::os::fd::AsRawFd::as_raw_fd(&r));
    assert_every_call_is_ebadf(-1);
    assert_every_call_is_ebadf(1_000_000);
}

#[test]
fn kevent_wait_for_more_entries_than_the_ring_holds_or_none_is_einval() {
    let q = Q::new(8);
    let u = q.queue().ring().uidx();
    assert_errno(kevent_wait(q.fd, 9, u, Some(0), 0), libc::EINVAL);
    assert_errno(kevent_wait(q.fd, 0, u, Some(0), 0), libc::EINVAL);
    assert_errno(kevent_wait(q.fd, 1, u, Some(0), 2), libc::EINVAL);
    let c = kevent_wait(q.fd, 8, u, Some(0), 0).unwrap();
    assert!(c.is_empty());
}

#[test]
fn kevent_get_events_rejects_bad_bounds_and_unknown_flags() {
    let q = Q::new(8);
    let mut buf = [Ukevent::default(); 4];
    assert_errno(
        kevent_get_events(q.fd, 0, 0, Some(0), &mut buf, 0),
        libc::EINVAL,
    );
    assert_errno(
        kevent_get_events(q.fd, 1, 5, Some(0), &mut buf, 0),
        libc::EINVAL,
    );
    assert_errno(
        kevent_get_events(q.fd, 3, 2, Some(0), &mut buf, 0),
        libc::EINVAL,
    );
    assert_errno(
        kevent_get_events(q.fd, 1, 4, Some(0), &mut buf, 2),
        libc::EINVAL,
    );
    assert_eq!(
        kevent_get_events(q.fd, 1, 4, Some(0), &mut buf, 0).unwrap(),
        0
    );
}

#[test]
fn kevent_wait_with_an_absolute_timeout_returns_at_that_wall_clock_time() {
    let q = Q::new(8);
    let deadline = kevent_ring::realtime_now() + 100 * MS;
    let start = std::time::Instant::now();
    let c = kevent_wait(
        q.fd,
        1,
        q.queue().ring().uidx(),
        Some(deadline),
        KEVENT_FLAGS_ABSTIME,
    )
    .unwrap();
    assert!(c.is_empty());
    assert!(kevent_ring::realtime_now() >= deadline);
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// Publishes one entry for each of `users` (user events), claims them all and commits
/// them: one lap of a ring with as many slots.
fn publish_claim_commit(q: &Q, users: &mut [Ukevent]) {
    q.ctl_ok(KEVENT_CTL_READY, users);
    let (claim, evs) = q.claim(users.len() as u32, PATIENCE);
    assert_eq!(evs.len(), users.len(), "claimed {claim:?}");
    assert_eq!(q.commit_to(claim.end), users.len() as u64);
}

#[test]
fn a_commit_from_before_the_last_wrap_is_eoverflow() {
    let q = Q::new(4);
    let mut users = [user_ev(1, 0), user_ev(2, 0), user_ev(3, 0), user_ev(4, 0)];
    q.add(&mut users);
    for _ in 0..3 {
        publish_claim_commit(&q, &mut users);
    }
    let ring = q.queue().ring().clone();
    assert_eq!(ring.uidx(), 12);
    assert_eq!(ring.kevent_view(ring.uidx()), (0, 3));
    // A thread that slept across the wraps commits with the `over` it saw.
    assert_errno(kevent_commit(q.fd, 0, 2), libc::EOVERFLOW);
    assert_errno(kevent_commit(q.fd, 3, 2), libc::EOVERFLOW);
    assert_errno(kevent_commit(q.fd, 2, 0), libc::EOVERFLOW);
    // The take29 hole: `over` one behind with a smaller index must not pass for a wrap.
    publish_claim_commit(&q, &mut users[..2]);
    assert_eq!(ring.kevent_view(ring.uidx()), (2, 3));
    assert_errno(kevent_commit(q.fd, 1, 2), libc::EOVERFLOW);
    assert_eq!(ring.uidx(), 14);
}

#[test]
fn a_commit_beyond_what_was_published_is_einval() {
    let q = Q::new(4);
    assert_errno(kevent_commit(q.fd, 1, 0), libc::EINVAL);
    assert_errno(kevent_commit(q.fd, 0, 1), libc::EINVAL);
    // An index that is not below the capacity names no position at all.
    assert_errno(kevent_commit(q.fd, 4, 0), libc::EINVAL);
    let mut users = [user_ev(1, 0)];
    q.add(&mut users);
    q.ctl_ok(KEVENT_CTL_READY, &mut users);
    assert_errno(kevent_commit(q.fd, 2, 0), libc::EINVAL);
    assert_eq!(
        kevent_commit(q.fd, 1, 0).unwrap(),
        0,
        "published, not claimed"
    );
}

#[test]
fn a_repeated_commit_returns_zero() {
    let q = Q::new(8);
    let mut users = [user_ev(1, 0), user_ev(2, 0)];
    q.add(&mut users);
    q.ctl_ok(KEVENT_CTL_READY, &mut users);
    let (claim, evs) = q.claim(8, PATIENCE);
    assert_eq!(evs.len(), 2);
    let (idx, over) = q.queue().ring().kevent_view(claim.end);
    assert_eq!(kevent_commit(q.fd, idx, over).unwrap(), 2);
    assert_eq!(kevent_commit(q.fd, idx, over).unwrap(), 0);
    assert_eq!(kevent_commit(q.fd, idx, over).unwrap(), 0);
    assert_eq!(q.queue().ring().uidx(), claim.end);
}

#[test]
fn a_commit_covers_only_the_entries_below_its_position() {
    let q = Q::new(8);
    let mut users = [user_ev(1, 0), user_ev(2, 0), user_ev(3, 0)];
    q.add(&mut users);
    q.ctl_ok(KEVENT_CTL_READY, &mut users);
    let (claim, evs) = q.claim(8, PATIENCE);
    assert_eq!(evs.len(), 3);
    assert_eq!(q.commit_to(claim.start + 1), 1);
    assert_eq!(q.queue().ring().uidx(), claim.start + 1);
    assert_eq!(q.commit_to(claim.end), 2);
    assert_eq!(q.queue().ring().uidx(), claim.end);
}

#[test]
fn kevent_wait_with_a_stale_user_index_returns_at_once() {
    let q = Q::new(8);
    let u = q.queue().ring().uidx();
    let start = std::time::Instant::now();
    let c = kevent_wait(q.fd, 1, u + 1, Some(5 * SEC), 0).unwrap();
    assert!(c.is_empty());
    assert!(start.elapsed() < Duration::from_secs(2));
}
