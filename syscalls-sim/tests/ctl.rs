//! `kevent_ctl`: what ADD, REMOVE, MODIFY and READY write back for each entry, and
//! how a bad command or a bad entry is answered (calls.rs, KEVENT.md "Calls").

mod util;

use kevent_syscalls::*;
use util::*;

#[test]
fn add_returns_an_fd_ready_at_once_done_at_the_front_and_does_not_queue_it() {
    let q = Q::new(64);
    let (idle_r, _idle_w) = pipe();
    let (ready_r, ready_w) = pipe();
    write_bytes(&ready_w, b"x");
    let mut evs = [
        fd_ev(KEVENT_PIPE, &idle_r, KEVENT_PIPE_READ, 0, 1),
        fd_ev(KEVENT_PIPE, &ready_r, KEVENT_PIPE_READ, 0, 2),
    ];
    assert_eq!(q.add(&mut evs), 1);
    assert_eq!((evs[0].user, evs[0].ret_flags), (2, KEVENT_RET_DONE));
    assert_eq!((evs[1].user, evs[1].ret_flags), (1, 0));
    // Returned by ADD, so not queued as well once the caller has read it: it would
    // see it twice.
    let mut buf = [0u8; 8];
    assert_eq!(rustix::io::read(&ready_r, &mut buf).unwrap(), 1);
    q.expect_none(QUIET);
    // Left ready, a level kevent ADD returned is queued at the next quiet moment (W4,
    // "ADD's DONE return included"): once.
    let (left_r, left_w) = pipe();
    write_bytes(&left_w, b"y");
    let mut evs = [fd_ev(KEVENT_PIPE, &left_r, KEVENT_PIPE_READ, 0, 3)];
    assert_eq!(q.add(&mut evs), 1);
    let (claim, got) = q.claim(8, PATIENCE);
    assert_eq!(got.iter().map(|e| e.user).collect::<Vec<_>>(), [3]);
    assert_eq!(rustix::io::read(&left_r, &mut buf).unwrap(), 1);
    q.commit_to(claim.end);
    q.expect_none(QUIET);
}

#[test]
fn add_with_always_queue_queues_an_fd_ready_at_once_instead_of_returning_it() {
    let q = Q::new(64);
    let (r, w) = pipe();
    write_bytes(&w, b"x");
    let mut evs = [fd_ev(
        KEVENT_PIPE,
        &r,
        KEVENT_PIPE_READ,
        KEVENT_REQ_ALWAYS_QUEUE,
        7,
    )];
    assert_eq!(q.add(&mut evs), 0);
    assert_eq!(evs[0].ret_flags, 0);
    let got = q.get_one();
    assert_eq!((got.user, got.event), (7, KEVENT_PIPE_READ));
}

#[test]
fn add_reports_each_failed_entry_broken_and_done_with_its_errno_at_the_front() {
    let q = Q::new(64);
    let (r, _w) = pipe();
    let good = fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, 0, 1);
    let mut evs = [
        good,
        Ukevent { user: 2, ..good },          // duplicate (type, id)
        ev(42, 0, 1, 0, 3),                   // unknown type
        ev(KEVENT_MAX, 0, 1, 0, 4),           // first type past the end
        ev(KEVENT_AIO, 0, 1, 0, 5),           // not provided
        ev(KEVENT_NAIO, 0, 1, 0, 6),          // not provided
        fd_ev(KEVENT_SOCKET, &r, 0x80, 0, 7), // bad event mask
        ev(KEVENT_PIPE, 1_000_000, KEVENT_PIPE_READ, 0, 8), // not an open fd
        ev(KEVENT_PIPE, u64::from(u32::MAX), 1, 0, 9), // fd -1
        fd_ev(KEVENT_SOCKET, &r, KEVENT_SOCKET_RECV, 0x80, 10), // unknown request flag
    ];
    assert_eq!(q.add(&mut evs), 9);
    let want = [
        (2, libc::EEXIST),
        (3, libc::ENOSYS),
        (4, libc::ENOSYS),
        (5, libc::ENOSYS),
        (6, libc::ENOSYS),
        (7, libc::EINVAL),
        (8, libc::EBADF),
        (9, libc::EBADF),
        (10, libc::EINVAL),
    ];
    for (ev, (user, errno)) in evs.iter().zip(want) {
        assert_eq!(ev.user, user, "failed entries keep their order: {evs:?}");
        assert_broken(ev, errno);
    }
    assert_eq!((evs[9].user, evs[9].ret_flags), (1, 0));
    assert_eq!(
        q.stats().registered,
        1,
        "a failed entry must not be registered"
    );
}

#[test]
fn add_of_a_file_epoll_cannot_watch_is_eperm() {
    let q = Q::new(64);
    let dir = TempDir::new("eperm");
    let f = std::fs::File::create(dir.0.join("regular")).unwrap();
    let mut evs = [fd_ev(KEVENT_POLL, &f, KEVENT_POLL_POLLIN, 0, 1)];
    assert_eq!(q.add(&mut evs), 1);
    assert_broken(&evs[0], libc::EPERM);
}

#[test]
fn add_of_an_existing_kevent_fails_with_eexist_and_leaves_the_first_one_working() {
    let q = Q::new(64);
    let (r, w) = pipe();
    let mut first = [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, 0, 1)];
    assert_eq!(q.add(&mut first), 0);
    let mut again = [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, 0, 2)];
    assert_eq!(q.add(&mut again), 1);
    assert_broken(&again[0], libc::EEXIST);
    write_bytes(&w, b"x");
    assert_eq!(q.get_one().user, 1);
}

#[test]
fn the_type_is_part_of_the_lookup_key() {
    let q = Q::new(64);
    let (r, w) = pipe();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&r) as u64;
    let mut evs = [
        ev(KEVENT_PIPE, fd, KEVENT_PIPE_READ, 0, 1),
        ev(KEVENT_USER, fd, KEVENT_USER_READY, 0, 2),
    ];
    assert_eq!(q.add(&mut evs), 0);
    q.ctl_ok(KEVENT_CTL_READY, &mut [ev(KEVENT_USER, fd, 0, 0, 0)]);
    assert_eq!(q.get_one().user, 2);
    write_bytes(&w, b"x");
    assert_eq!(q.get_one().user, 1);
}

#[test]
fn remove_modify_and_ready_of_an_unknown_kevent_are_broken_with_enoent() {
    let q = Q::new(64);
    q.add(&mut [user_ev(1, 0)]);
    for cmd in [KEVENT_CTL_MODIFY, KEVENT_CTL_READY, KEVENT_CTL_REMOVE] {
        let mut evs = [user_ev(99, 0), user_ev(1, 0), ev(KEVENT_PIPE, 1, 1, 0, 0)];
        assert_eq!(kevent_ctl(q.fd, cmd, &mut evs).unwrap(), 2, "cmd {cmd}");
        assert_broken(&evs[0], libc::ENOENT);
        assert_eq!(evs[1].ret_flags, KEVENT_RET_DONE, "cmd {cmd}: known kevent");
        assert_broken(&evs[2], libc::ENOENT);
    }
    // REMOVE (the last command) took it away: now it is unknown too.
    let mut evs = [user_ev(1, 0)];
    assert_eq!(kevent_ctl(q.fd, KEVENT_CTL_READY, &mut evs).unwrap(), 1);
    assert_broken(&evs[0], libc::ENOENT);
    assert_eq!(q.stats().registered, 0);
}

#[test]
fn a_removed_kevent_is_never_delivered_from_the_ring_or_the_backlog() {
    let q = Q::new(2);
    q.add(&mut [user_ev(1, 0), user_ev(2, 0), user_ev(3, 0), user_ev(4, 0)]);
    // 1 and 2 fill the ring, 3 and 4 wait in the backlog.
    q.ctl_ok(
        KEVENT_CTL_READY,
        &mut [user_ev(1, 0), user_ev(2, 0), user_ev(3, 0), user_ev(4, 0)],
    );
    assert!(q.stats().backlogged >= 2, "{:?}", q.stats());
    // 2 is in the ring, unclaimed; 3 is in the backlog.
    q.ctl_ok(KEVENT_CTL_REMOVE, &mut [user_ev(2, 0), user_ev(3, 0)]);
    let users: Vec<u64> = q.collect(QUIET).iter().map(|e| e.user).collect();
    assert_eq!(users, [1, 4]);
}

#[test]
fn remove_stops_delivery_of_an_fd() {
    let q = Q::new(64);
    let (r, w) = pipe();
    q.add(&mut [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, 0, 1)]);
    q.ctl_ok(
        KEVENT_CTL_REMOVE,
        &mut [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, 0, 0)],
    );
    write_bytes(&w, b"x");
    q.expect_none(QUIET);
}

#[test]
fn modify_changes_the_event_mask_and_the_cookie() {
    let q = Q::new(64);
    let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
    set_nonblocking(&w);
    fill(&w);
    // Registered for RECV: the full sender is not what it waits for.
    q.add(&mut [fd_ev(KEVENT_SOCKET, &w, KEVENT_SOCKET_RECV, 0, 1)]);
    q.ctl_ok(
        KEVENT_CTL_MODIFY,
        &mut [fd_ev(KEVENT_SOCKET, &w, KEVENT_SOCKET_SEND, 0, 2)],
    );
    q.expect_none(QUIET);
    set_nonblocking(&r);
    drain(&r);
    let got = q.get_one();
    assert_eq!((got.user, got.event), (2, KEVENT_SOCKET_SEND));
}

#[test]
fn unknown_command_is_einval() {
    let q = Q::new(8);
    assert_errno(kevent_ctl(q.fd, 4, &mut []), libc::EINVAL);
    assert_errno(
        kevent_ctl(q.fd, u32::MAX, &mut [user_ev(1, 0)]),
        libc::EINVAL,
    );
}

#[test]
fn more_than_kevent_max_events_entries_is_einval() {
    let q = Q::new(8);
    let mut evs = vec![Ukevent::default(); KEVENT_MAX_EVENTS + 1];
    assert_errno(kevent_ctl(q.fd, KEVENT_CTL_ADD, &mut evs), libc::EINVAL);
}

/// ADDs of readable pipes, edge-triggered, one ctl each, while two threads keep both CPUs
/// busy, so that the producer thread — blocked in `epoll_wait`, woken by each ADD's
/// `epoll_ctl` — is often preempted between taking the ADD's report and looking at the
/// ctl epoch. ADD returns each pipe ready (`DONE`), or, with `ALWAYS_QUEUE`, queues it
/// once; nobody reads the pipes. Returns the events delivered by the queue besides.
fn readable_pipes_added_under_load(req_flags: u32) -> Vec<Ukevent> {
    const PIPES: u64 = 1_500;
    raise_fd_limit(4 * PIPES + 256);
    let q = Q::new(4_096);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut pipes = Vec::new();
    for user in 0..PIPES {
        let (r, w) = pipe();
        write_bytes(&w, b"x");
        let mut add = [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, req_flags, user)];
        let front = q.add(&mut add);
        let returned = req_flags & KEVENT_REQ_ALWAYS_QUEUE == 0;
        assert_eq!(front, usize::from(returned), "pipe {user}: {add:?}");
        if returned {
            assert_eq!(add[0].ret_flags, KEVENT_RET_DONE, "pipe {user}: {add:?}");
        }
        pipes.push((r, w));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    q.collect(QUIET)
}

#[test]
fn an_edge_triggered_pipe_add_returned_ready_is_not_also_delivered_however_the_producer_is_scheduled(
) {
    let got = readable_pipes_added_under_load(KEVENT_REQ_ET);
    assert!(
        got.is_empty(),
        "{} of 1,500 pipes ADD returned ready were delivered again (first: {:?})",
        got.len(),
        &got[..got.len().min(4)]
    );
}

#[test]
fn an_edge_triggered_pipe_added_with_always_queue_is_delivered_exactly_once() {
    let got = readable_pipes_added_under_load(KEVENT_REQ_ET | KEVENT_REQ_ALWAYS_QUEUE);
    let mut seen = vec![0u32; 1_500];
    for e in &got {
        seen[e.user as usize] += 1;
    }
    let twice = seen.iter().filter(|&&n| n > 1).count();
    let never = seen.iter().filter(|&&n| n == 0).count();
    assert!(
        twice == 0 && never == 0,
        "of 1,500 pipes queued once each: {twice} delivered twice, {never} never"
    );
}
