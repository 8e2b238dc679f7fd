//! Helpers of the `kevent::Loop` tests (tests/event_loop.rs, tests/event_loop_threads.rs).

// Each test file uses a different part of it.
#![allow(dead_code)]

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent::{Clock, Loop};

/// How long a test may wait for something that should take microseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn new_loop() -> Loop {
    Loop::new().expect("a loop")
}

/// Polls until `done`, waking at least every 100 ms (a timer), failing after
/// [`PATIENCE`].
pub fn poll_until(lp: &Loop, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    let tick = lp.timer(Clock::Monotonic, |_, _| {});
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        if !tick.is_armed() {
            tick.arm_after(Duration::from_millis(100));
        }
        lp.poll(true);
    }
    tick.delete();
}

/// Lets the loop run for `d` (blocking polls until a timer fires): whatever was going to
/// be dispatched spuriously would be by then.
pub fn settle(lp: &Loop, d: Duration) {
    let t = lp.timer(Clock::Monotonic, |_, _| {});
    t.arm_after(d);
    while t.is_armed() {
        lp.poll(true);
    }
}

pub fn counter() -> Arc<AtomicU32> {
    Arc::new(AtomicU32::new(0))
}

/// A socket pair: the first end non-blocking, for a handler that reads all there is.
pub fn socket_pair() -> (Arc<UnixStream>, UnixStream) {
    let (ours, theirs) = UnixStream::pair().expect("a socket pair");
    ours.set_nonblocking(true).unwrap();
    (Arc::new(ours), theirs)
}

/// A read callback that counts its calls and the bytes it read (all there is).
pub fn reading(
    sock: &Arc<UnixStream>,
    calls: &Arc<AtomicU32>,
    bytes: &Arc<AtomicU64>,
) -> impl Fn(&Loop) + Send + Sync + 'static {
    let (sock, calls, bytes) = (sock.clone(), calls.clone(), bytes.clone());
    move |_lp| {
        calls.fetch_add(1, SeqCst);
        let mut buf = [0u8; 4096];
        loop {
            match (&*sock).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    bytes.fetch_add(n as u64, SeqCst);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}
