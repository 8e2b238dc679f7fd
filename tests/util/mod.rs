//! Shared helpers of the `kevent` crate's integration tests (each test file says
//! `mod util;`): a queue, a socket pair and bounded waits here; the event loop's helpers in
//! [`event_loop`]; forked children, words shared with them and bounded test bodies in
//! [`proc`].
//!
//! The tests of `kevent-syscalls` have helpers of their own in `syscalls-sim/tests/util/`
//! (another crate: a test here cannot `mod` them).

// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use kevent::Queue;

pub mod event_loop;
pub mod proc;

/// How long a test may wait for something that should take microseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A queue of 64 slots.
pub fn queue() -> Queue {
    Queue::builder().capacity(64).build().expect("a queue")
}

/// A pipe, its read end added level-triggered to `q` with token `token`.
pub fn level_pipe(q: &Queue, token: u64) -> (std::io::PipeReader, std::io::PipeWriter) {
    let (r, w) = std::io::pipe().expect("a pipe");
    q.add(
        &kevent::Source::pipe(&r, kevent::Interest::READABLE),
        kevent::Token(token),
        kevent::Trigger::Level,
    )
    .expect("ADD of a pipe");
    (r, w)
}

/// A connected socket pair: the first end non-blocking (for a reader that takes all there
/// is), the second blocking (the test's side).
pub fn socket_pair() -> (UnixStream, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    ours.set_nonblocking(true).expect("O_NONBLOCK");
    (ours, theirs)
}

/// Polls `cond` every millisecond until it holds or `limit` passes; whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while !cond() {
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}
