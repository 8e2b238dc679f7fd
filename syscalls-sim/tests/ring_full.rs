//! A full ring loses nothing: ready kevents wait in the producer's backlog (FIFO, ahead
//! of newer ones) and move into the ring as commits free room (kernel.rs "Backlog",
//! ARCHITECTURE.md §4, "Coalescing").

mod util;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use kevent_syscalls::*;
use util::proc::serial;
use util::*;

/// A FIFO opened read-write: one fd that is both ends of a pipe.
fn fifo(dir: &TempDir, i: usize) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.0.join(format!("f{i}"));
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .expect("open fifo");
    std::fs::remove_file(&path).unwrap();
    f
}

/// Claims and commits until each of the `n` pipes (cookie = index) was delivered or
/// `limit` passed, running `handle(i)` for each entry before its commit; then asserts
/// that each was delivered exactly once.
fn assert_each_delivered_once(q: &Q, n: usize, limit: Duration, mut handle: impl FnMut(usize)) {
    let mut seen = vec![0u32; n];
    let mut delivered = 0;
    let deadline = Instant::now() + limit;
    while delivered < n && Instant::now() < deadline {
        let (claim, got) = q.claim(64, Duration::from_millis(500));
        for e in &got {
            let i = e.user as usize;
            seen[i] += 1;
            if seen[i] == 1 {
                delivered += 1;
            }
            handle(i);
        }
        if !claim.is_empty() {
            q.commit_to(claim.end);
        }
    }
    // Anything delivered twice would show up now.
    q.expect_none(QUIET);
    let missing = seen.iter().filter(|&&n| n == 0).count();
    let twice: Vec<usize> = (0..n).filter(|&i| seen[i] > 1).collect();
    assert_eq!(
        missing,
        0,
        "{missing} pipes never delivered; {:?}",
        q.stats()
    );
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
}

#[test]
fn ten_thousand_ready_pipes_on_a_64_slot_ring_are_each_delivered_exactly_once() {
    const N: usize = 10_000;
    const BATCH: usize = 1_000;
    // Each pipe is a FIFO opened read-write (one fd for both ends), registered
    // edge-triggered and written once; nothing else ever happens to it. A registration
    // costs no fd of its own, so N fds are open at once, which fits a hard RLIMIT_NOFILE
    // of 20,000 (a pipe pair per registration would need 20,000 and more). The batch
    // number goes into `id.raw[1]` (the fd is `id.raw[0]`), as a test of ids that are
    // more than an fd number.
    // Fd-hungry: one at a time, so that the tests never hold their thousands of fds at
    // once (the hard RLIMIT_NOFILE may be 20,000, and not raised without CAP_SYS_RESOURCE).
    let _fds = serial();
    raise_fd_limit((N + 2 * BATCH + 1_024) as u64);
    let q = Q::new(64);
    let dir = TempDir::new("ring-full");
    let mut open = Vec::with_capacity(N);
    for start in (0..N).step_by(BATCH) {
        let fifos: Vec<std::fs::File> = (start..start + BATCH).map(|i| fifo(&dir, i)).collect();
        let mut evs: Vec<Ukevent> = fifos
            .iter()
            .zip(start..)
            .map(|(f, i)| {
                let id = f.as_raw_fd() as u64 | ((start / BATCH) as u64) << 32;
                ev(KEVENT_PIPE, id, KEVENT_PIPE_READ, KEVENT_REQ_ET, i as u64)
            })
            .collect();
        assert_eq!(q.add(&mut evs), 0, "nothing is ready yet: {:?}", evs[0]);
        for f in &fifos {
            write_bytes(f, b"x");
        }
        open.extend(fifos); // closing an fd ends its registration, as with epoll
    }
    assert_eq!(q.stats().registered, N as u64);
    assert_each_delivered_once(&q, N, Duration::from_secs(30), |_| {});
    let s = q.stats();
    assert_eq!(s.lost, 0, "{s:?}");
    assert!(s.backlogged > 0, "the ring never filled: {s:?}");
    assert_eq!(s.backlog_len, 0, "{s:?}");
    q.close().unwrap();
}

#[test]
fn three_thousand_level_triggered_pipes_read_before_commit_are_each_delivered_once() {
    // The level-triggered sibling: a pipe pair per kevent (3 fds with the duplicate).
    const N: usize = 3_000;
    // Fd-hungry: one at a time, so that the tests never hold their thousands of fds at
    // once (the hard RLIMIT_NOFILE may be 20,000, and not raised without CAP_SYS_RESOURCE).
    let _fds = serial();
    raise_fd_limit((3 * N + 1_024) as u64);
    let q = Q::new(64);
    let pipes: Vec<(OwnedFd, OwnedFd)> = (0..N).map(|_| pipe()).collect();
    let mut evs: Vec<Ukevent> = pipes
        .iter()
        .enumerate()
        .map(|(i, (r, _))| fd_ev(KEVENT_PIPE, r, KEVENT_PIPE_READ, 0, i as u64))
        .collect();
    assert_eq!(q.add(&mut evs), 0);
    for (r, w) in &pipes {
        set_nonblocking(r);
        write_bytes(w, b"x");
    }
    assert_each_delivered_once(&q, N, Duration::from_secs(20), |i| {
        // Handled before the commit, so the level re-check finds it idle.
        drain(&pipes[i].0);
    });
    let s = q.stats();
    assert_eq!(s.lost, 0, "{s:?}");
    assert!(s.backlogged > 0, "the ring never filled: {s:?}");
    q.close().unwrap();
}

#[test]
fn the_backlog_drains_in_fifo_order_ahead_of_newer_events() {
    let q = Q::new(4);
    let mut users: Vec<Ukevent> = (0..13).map(|i| user_ev(i, 0)).collect();
    q.add(&mut users);
    q.ctl_ok(KEVENT_CTL_READY, &mut users[..12]);
    assert_eq!(q.stats().backlog_len, 8);
    let mut order = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while order.len() < 13 && Instant::now() < deadline {
        let (claim, evs) = q.claim(1, PATIENCE);
        order.extend(evs.iter().map(|e| e.user));
        if order.len() == 1 {
            // Newer than everything in the backlog: delivered after all of it.
            q.ctl_ok(KEVENT_CTL_READY, &mut users[12..]);
        }
        if !claim.is_empty() {
            q.commit_to(claim.end);
        }
    }
    assert_eq!(order, (0..13).collect::<Vec<u64>>());
    let s = q.stats();
    assert_eq!((s.lost, s.backlog_len), (0, 0), "{s:?}");
}

#[test]
fn a_backlog_made_by_kevent_ctl_drains_at_the_next_commit() {
    let q = Q::new(2);
    let mut slow = Vec::new();
    for round in 0..10u64 {
        // Fresh kevents each round, so that only the backlog is measured.
        let mut users: Vec<Ukevent> = (0..3).map(|i| user_ev(round * 3 + i, 0)).collect();
        q.add(&mut users);
        // Let the producer go to sleep in epoll_wait first.
        std::thread::sleep(Duration::from_millis(2));
        q.ctl_ok(KEVENT_CTL_READY, &mut users);
        assert_eq!(q.stats().backlog_len, 1);
        let (claim, evs) = q.claim(2, PATIENCE);
        assert_eq!(evs.len(), 2);
        q.commit_to(claim.end);
        let start = Instant::now();
        let (claim, evs) = q.claim(2, PATIENCE);
        let took = start.elapsed();
        assert_eq!(evs.len(), 1, "round {round}");
        q.commit_to(claim.end);
        if took >= Duration::from_millis(15) {
            slow.push(took);
        }
    }
    // Woken by the doorbell this takes well under a millisecond.
    assert!(slow.len() <= 1, "the backlog waited for a timer: {slow:?}");
}

#[test]
fn a_kevent_is_delivered_again_after_its_slot_was_reused_before_the_producer_saw_the_commit() {
    let q = Q::new(2);
    let (a, b, c) = (user_ev(1, 0), user_ev(2, 0), user_ev(3, 0));
    q.add(&mut [a, b, c]);
    for round in 0..5 {
        // a and b fill the ring; both are committed (nobody tells the producer).
        q.ctl_ok(KEVENT_CTL_READY, &mut [a, b]);
        let (claim, evs) = q.claim(2, PATIENCE);
        assert_eq!(evs.len(), 2, "round {round}");
        q.commit_to(claim.end);
        // c's entry goes into a's old slot.
        q.ctl_ok(KEVENT_CTL_READY, &mut [c]);
        let (claim, evs) = q.claim(2, PATIENCE);
        assert_eq!(evs.iter().map(|e| e.user).collect::<Vec<_>>(), [3]);
        q.commit_to(claim.end);
        // a was delivered and committed: ready again, it must be delivered again.
        q.ctl_ok(KEVENT_CTL_READY, &mut [a]);
        let (claim, evs) = q.claim(2, Duration::from_millis(500));
        assert_eq!(
            evs.iter().map(|e| e.user).collect::<Vec<_>>(),
            [1],
            "round {round}: {:?}",
            q.stats()
        );
        q.commit_to(claim.end);
    }
}

#[test]
fn a_level_triggered_fd_is_reported_again_when_another_entry_reuses_its_slot_first() {
    let q = Q::new(2);
    let (lr, lw) = pipe();
    let (er, ew) = std::os::unix::net::UnixStream::pair().unwrap();
    q.add(&mut [
        fd_ev(KEVENT_PIPE, &lr, KEVENT_PIPE_READ, 0, 1),
        fd_ev(KEVENT_SOCKET, &er, KEVENT_SOCKET_RECV, KEVENT_REQ_ET, 2),
        user_ev(3, 0),
    ]);
    for round in 0..20 {
        // The level pipe stays readable all along. Its entry and a user event fill the
        // ring; both are committed, and at once a new edge of the socket is published:
        // the producer may handle that edge before it looks at the commit.
        write_bytes(&lw, b"x");
        let (claim, evs) = q.claim(1, PATIENCE);
        assert_eq!(
            evs.iter().map(|e| e.user).collect::<Vec<_>>(),
            [1],
            "round {round}"
        );
        q.ctl_ok(KEVENT_CTL_READY, &mut [user_ev(3, 0)]);
        let (claim2, evs) = q.claim(1, PATIENCE);
        assert_eq!(evs.len(), 1, "round {round}");
        q.commit_to(claim.end.max(claim2.end));
        write_bytes(&ew, b"y");
        let mut users = Vec::new();
        let end = Instant::now() + Duration::from_millis(300);
        while Instant::now() < end && !users.contains(&1) {
            let (c, evs) = q.claim(2, Duration::from_millis(50));
            users.extend(evs.iter().map(|e| e.user));
            if !c.is_empty() {
                q.commit_to(c.end);
            }
        }
        assert!(
            users.contains(&1),
            "round {round}: the readable pipe was never reported again: {users:?} {:?}",
            q.stats()
        );
        // Leave the pipe readable only by the byte of the next round.
        set_nonblocking(&lr);
        drain(&lr);
        set_nonblocking(&er);
        drain(&er);
        // Let any re-check of the drained pipe pass (committing it: a level-triggered
        // kevent is only reported again after its entry is committed).
        loop {
            let (c, _) = q.claim(2, Duration::from_millis(20));
            if c.is_empty() {
                break;
            }
            q.commit_to(c.end);
        }
    }
}

#[test]
fn a_hang_up_that_waits_in_the_backlog_keeps_its_status_flags() {
    // The `poll(2)` status of an fd event (`ret_data[1]`: POLLHUP here, the writer gone)
    // travels with its entry through the backlog. It was lost for the kevent at the
    // backlog's head whenever a push found the ring full (the entry was built, its
    // status taken, and the push refused). Eight hung-up pipes on a ring of two: each
    // delivered once, each with POLLHUP.
    const N: usize = 8;
    let q = Q::new(2);
    let mut keep = Vec::new();
    let mut evs: Vec<Ukevent> = (0..N)
        .map(|i| {
            let (r, w) = nonblocking_pipe();
            rustix::io::write(&w, b"x").unwrap();
            drop(w);
            let flags = KEVENT_REQ_ET | KEVENT_REQ_ALWAYS_QUEUE;
            let ev = fd_ev(KEVENT_PIPE, &r, KEVENT_SOCKET_RECV, flags, i as u64);
            keep.push(r);
            ev
        })
        .collect();
    q.ctl_ok(KEVENT_CTL_ADD, &mut evs);
    let mut seen = vec![0u32; N];
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.contains(&0) && Instant::now() < deadline {
        let (claim, got) = q.claim(1, Duration::from_millis(500));
        for e in &got {
            seen[e.user as usize] += 1;
            assert_ne!(
                e.ret_data[1] & KEVENT_POLL_POLLHUP,
                0,
                "kevent {} came without its hang-up: {e:?}",
                e.user
            );
        }
        if !claim.is_empty() {
            q.commit_to(claim.end);
        }
    }
    q.expect_none(QUIET);
    assert_eq!(seen, vec![1; N], "deliveries per kevent");
    drop(keep);
}
