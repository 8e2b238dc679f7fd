//! A kevent's entry ends when it is committed, not when the ring releases it in order
//! (`kernel/release.rs`): a consumer that holds the oldest entry (stopped, or doing long
//! work) does not keep the kevents committed after it from being reported again.
//! Before, a level-triggered pipe committed behind a held entry was re-checked only when
//! the held entry was released — after its lease (2 s by default), or never.

mod util;

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::proc::{bounded, Children};
use util::*;

/// How soon the committed kevent must come again: far below the lease, far above a
/// wake-up's cost.
const SOON: Duration = Duration::from_millis(500);

/// A queue with a long lease (the held entry is never taken back during the test), and
/// two readable level-triggered pipes: `held` published first, then `other`.
fn queue_with_two_readable_pipes() -> (Arc<Instance>, [(OwnedFd, OwnedFd); 2]) {
    let q = Instance::create(64, 0).expect("create");
    q.set_lease(Duration::from_secs(60)).expect("lease");
    let pipes = [pipe(), pipe()];
    for (i, (r, w)) in pipes.iter().enumerate() {
        let mut ev = [fd_ev(KEVENT_PIPE, r, KEVENT_PIPE_READ, 0, i as u64)];
        assert_eq!(q.ctl(KEVENT_CTL_ADD, &mut ev).expect("add"), 0);
        write_bytes(w, b"x");
        // One at a time, so that `held` is published first.
        assert!(
            wait_until(PATIENCE, || q.ring().kidx() == i as u64 + 1),
            "pipe {i} was not published"
        );
    }
    (q, pipes)
}

/// Claims one entry for `q`'s consumer; its `user`.
fn claim_one(q: &Instance) -> (Claim, u64) {
    let spec = q.wait_spec(None, Some(deadline_after(PATIENCE)));
    let (claim, _) = q.next_batch(1, &spec).expect("next_batch");
    assert_eq!(claim.owned, 1, "no entry within {PATIENCE:?}");
    let ev = q.entry(claim.start).expect("our entry");
    (claim, ev.user)
}

#[test]
fn a_level_kevent_committed_behind_a_held_entry_is_reported_again_at_once() {
    bounded(Duration::from_secs(30), || {
        let (q, _pipes) = queue_with_two_readable_pipes();
        // The first consumer holds the oldest entry (pipe 0) and does not commit.
        let holder = q.clone();
        let (held, user) = claim_one(&holder);
        assert_eq!(user, 0);
        // Another thread takes pipe 1, leaves its byte unread and commits, three times:
        // each time it is reported again, though `uidx` cannot pass the held entry.
        for round in 0..3 {
            let t0 = Instant::now();
            let (claim, user) = claim_one(&q);
            assert_eq!(user, 1, "round {round}");
            let waited = t0.elapsed();
            assert!(
                round == 0 || waited < SOON,
                "round {round}: the committed pipe came back only after {waited:?}"
            );
            assert_eq!(q.commit_range(claim.start..claim.end), 1);
        }
        assert_eq!(
            q.ring().uidx(),
            held.start,
            "the held entry still holds uidx"
        );
        assert_eq!(
            q.ring()
                .stats()
                .redelivered
                .load(std::sync::atomic::Ordering::Relaxed),
            0,
            "nothing was taken back from the holder"
        );
        // The holder commits at last: its pipe, still readable, comes again too (after
        // pipe 1's entry of the last round, which is out already).
        assert_eq!(holder.commit_range(held.start..held.end), 1);
        let mut users = Vec::new();
        while !users.contains(&0) {
            let (claim, user) = claim_one(&q);
            users.push(user);
            q.commit_range(claim.start..claim.end);
            assert!(users.len() <= 3, "pipe 0 did not come again: {users:?}");
        }
    });
}

#[test]
fn a_level_kevent_committed_by_another_process_behind_a_held_entry_is_reported_again() {
    bounded(Duration::from_secs(30), || {
        let (q, pipes) = queue_with_two_readable_pipes();
        let (_held, user) = claim_one(&q);
        assert_eq!(user, 0);
        let fd = pipes[1].0.as_raw_fd();
        // A forked child takes pipe 1's entry, leaves the byte unread and commits; the
        // owner then gets pipe 1 again while its own claim still holds `uidx`.
        let h = register(q.clone());
        let mut kids = Children::default();
        let child = kids.fork(move || {
            let mut buf = [Ukevent::default(); 1];
            match kevent_get_events(h, 1, 1, Some(nanos(PATIENCE)), &mut buf, 0) {
                Ok(1) if buf[0].id == fd as u64 => 0,
                r => {
                    util::proc::child_log(&format!("get_events: {r:?} {:?}", buf[0]));
                    1
                }
            }
        });
        kids.expect_success(child, Duration::from_secs(10), "the committing child");
        let t0 = Instant::now();
        let (claim, user) = claim_one(&q);
        assert_eq!(user, 1);
        assert!(
            t0.elapsed() < SOON,
            "the pipe a child committed came back only after {:?}",
            t0.elapsed()
        );
        q.commit_range(claim.start..claim.end);
    });
}
