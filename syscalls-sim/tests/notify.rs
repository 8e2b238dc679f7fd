//! The queue's notify fd: readable while entries may be waiting, for other event loops.

mod util;

use std::os::fd::BorrowedFd;
use std::time::Duration;

use kevent_syscalls::*;
use util::*;

fn readable(fd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let mut pfd = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    rustix::event::poll(&mut pfd, Some(&ts)).expect("poll") == 1
}

#[test]
fn the_notify_fd_is_readable_exactly_while_entries_wait() {
    let q = Q::new(64);
    let queue = q.queue();
    let fd = queue.notify_fd().expect("owner may arm it");
    assert!(!readable(fd, Duration::ZERO), "nothing published yet");
    let (r, w) = pipe();
    q.add(&mut [fd_ev(KEVENT_PIPE, &r, KEVENT_PIPE_READ, KEVENT_REQ_ET, 1)]);
    write_bytes(&w, b"x");
    assert!(
        readable(fd, Duration::from_secs(2)),
        "a published entry must make the fd readable"
    );
    let mut buf = [Ukevent::default(); 8];
    assert_eq!(q.queue().get_events(0, 8, Some(0), &mut buf, 0).unwrap(), 1);
    assert_eq!(buf[0].user, 1);
    // Finding the ring empty resets it.
    assert_eq!(q.queue().get_events(0, 8, Some(0), &mut buf, 0).unwrap(), 0);
    assert!(
        !readable(fd, Duration::ZERO),
        "drained ring, fd still readable"
    );
    // And it works again for the next event.
    write_bytes(&w, b"y");
    assert!(readable(fd, Duration::from_secs(2)));
}
