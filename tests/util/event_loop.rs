//! Helpers of the `kevent::Loop` tests (tests/event_loop*.rs): polling until something
//! happened, letting a loop run for a while, counting callbacks, a socket a handler reads.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent::{Bh, Clock, Loop};

use super::PATIENCE;

pub fn new_loop() -> Loop {
    Loop::new().expect("a loop")
}

/// Polls `lp` until `done`, waking at least every 100 ms (a timer: `done` may change in
/// another process, which wakes nobody); false if it does not hold within [`PATIENCE`].
pub fn run_until(lp: &Loop, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    let tick = lp.timer(Clock::Monotonic, |_, _| {});
    let mut held = true;
    while !done() {
        if Instant::now() >= deadline {
            held = false;
            break;
        }
        if !tick.is_armed() {
            tick.arm_after(Duration::from_millis(100));
        }
        lp.poll(true);
    }
    tick.delete();
    held
}

/// [`run_until`], failing the test (waiting for `what`) if `done` does not hold in time.
#[track_caller]
pub fn poll_until(lp: &Loop, what: &str, done: impl FnMut() -> bool) {
    assert!(run_until(lp, done), "timed out waiting for {what}");
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

/// A bottom half of `lp` that counts its runs (test-aio's `bh_test_cb`).
pub fn counting_bh(lp: &Loop) -> (Bh, Arc<AtomicU32>) {
    let n = counter();
    let c = n.clone();
    let bh = lp.bh(move |_, _| {
        c.fetch_add(1, SeqCst);
    });
    (bh, n)
}

/// [`super::socket_pair`] with the non-blocking end shared, for a handler that reads it.
pub fn shared_socket_pair() -> (Arc<UnixStream>, UnixStream) {
    let (ours, theirs) = super::socket_pair();
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
