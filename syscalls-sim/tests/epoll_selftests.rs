//! The core cases of the Linux epoll self-tests
//! (tools/testing/selftests/filesystems/epoll/epoll_wakeup_test.c), translated to kevent:
//! level-triggered sources are reported again while unread, edge-triggered ones once per
//! edge; one event wakes one of several waiters (the waiter tests are in `flags.rs`).

mod util;

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;

use kevent_syscalls::*;
use util::*;

/// epoll_wakeup_test "epoll1"/"epoll3": a level-triggered fd with unread data is
/// reported again after its entry is committed.
fn level_triggered_is_reported_again_after_commit(type_: u32, r: &impl AsRawFd, w: &impl AsFd) {
    let q = Q::new(64);
    q.add(&mut [fd_ev(type_, r, KEVENT_SOCKET_RECV, 0, 1)]);
    write_bytes(w, b"x");
    assert_eq!(q.get_one().user, 1);
    // get_events committed it; the data is still there.
    assert_eq!(q.get_one().user, 1);
    assert_eq!(q.get_one().user, 1);
}

/// epoll_wakeup_test "epoll2"/"epoll4": edge-triggered, reported once per write.
fn edge_triggered_is_reported_only_once(type_: u32, r: &impl AsRawFd, w: &impl AsFd) {
    let q = Q::new(64);
    q.add(&mut [fd_ev(type_, r, KEVENT_SOCKET_RECV, KEVENT_REQ_ET, 1)]);
    write_bytes(w, b"x");
    assert_eq!(q.get_one().user, 1);
    q.expect_none(QUIET);
}

#[test]
fn level_triggered_pipe_is_reported_again_after_commit_while_unread() {
    let (r, w) = pipe();
    level_triggered_is_reported_again_after_commit(KEVENT_PIPE, &r, &w);
}

#[test]
fn level_triggered_socketpair_is_reported_again_after_commit_while_unread() {
    let (r, w) = UnixStream::pair().unwrap();
    level_triggered_is_reported_again_after_commit(KEVENT_SOCKET, &r, &w);
}

#[test]
fn edge_triggered_pipe_is_reported_only_once_while_unread() {
    let (r, w) = pipe();
    edge_triggered_is_reported_only_once(KEVENT_PIPE, &r, &w);
}

#[test]
fn edge_triggered_socketpair_is_reported_only_once_while_unread() {
    let (r, w) = UnixStream::pair().unwrap();
    edge_triggered_is_reported_only_once(KEVENT_SOCKET, &r, &w);
}

#[test]
fn edge_triggered_socketpair_is_reported_again_on_a_new_write() {
    let q = Q::new(64);
    let (r, w) = UnixStream::pair().unwrap();
    q.add(&mut [fd_ev(
        KEVENT_SOCKET,
        &r,
        KEVENT_SOCKET_RECV,
        KEVENT_REQ_ET,
        1,
    )]);
    write_bytes(&w, b"x");
    assert_eq!(q.get_one().user, 1);
    q.expect_none(QUIET);
    write_bytes(&w, b"y");
    assert_eq!(q.get_one().user, 1);
    q.expect_none(QUIET);
}

#[test]
fn level_triggered_fd_has_one_entry_outstanding_until_its_commit() {
    let q = Q::new(64);
    let (r, w) = pipe();
    q.add(&mut [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, 0, 1)]);
    write_bytes(&w, b"x");
    let (claim, evs) = q.claim(8, PATIENCE);
    assert_eq!(evs.len(), 1);
    // Claimed, not committed: still readable, but no second entry (it cannot flood).
    let (more, _) = q.claim(8, QUIET);
    assert!(
        more.is_empty(),
        "a second entry before the commit: {more:?}"
    );
    q.commit_to(claim.end);
    let (again, evs) = q.claim(8, PATIENCE);
    assert_eq!(evs.len(), 1, "not reported again after the commit");
    // Read it this time: after this commit it is no longer ready, so it stays silent.
    set_nonblocking(&r);
    assert_eq!(drain(&r), 1);
    q.commit_to(again.end);
    let (last, _) = q.claim(8, QUIET);
    assert!(last.is_empty(), "reported after it was read: {last:?}");
}

/// An edge-triggered socket written once ("x"), its entry claimed (the claim returned),
/// and written again ("y") while the entry is out.
fn edge_triggered_socket_written_while_its_entry_is_claimed(
    q: &Q,
) -> (UnixStream, UnixStream, Claim) {
    let (r, w) = UnixStream::pair().unwrap();
    q.add(&mut [fd_ev(
        KEVENT_SOCKET,
        &r,
        KEVENT_SOCKET_RECV,
        KEVENT_REQ_ET,
        1,
    )]);
    write_bytes(&w, b"x");
    let (first, evs) = q.claim(8, PATIENCE);
    assert_eq!(evs.len(), 1);
    write_bytes(&w, b"y");
    (r, w, first)
}

#[test]
fn edge_triggered_fd_with_an_entry_out_is_reported_after_the_commit_if_still_unread() {
    // Unlike epoll, a new edge while the fd's entry is claimed but not committed does not
    // make a second entry (two consumers would race for the same bytes); the commit
    // re-checks the fd and reports it if data is still there.
    let q = Q::new(64);
    let (_r, _w, first) = edge_triggered_socket_written_while_its_entry_is_claimed(&q);
    q.expect_none(QUIET);
    q.commit_to(first.end);
    let (second, evs) = q.claim(8, PATIENCE);
    assert_eq!(
        evs.len(),
        1,
        "the unread edge was not reported after the commit"
    );
    q.commit_to(second.end);
    q.expect_none(QUIET);
}

#[test]
fn edge_triggered_fd_whose_new_data_was_read_before_the_commit_is_not_reported_again() {
    let q = Q::new(64);
    let (r, _w, first) = edge_triggered_socket_written_while_its_entry_is_claimed(&q);
    set_nonblocking(&r);
    assert_eq!(drain(&r), 2);
    q.commit_to(first.end);
    q.expect_none(QUIET);
}
