//! The owner's death is an event for an event loop in another process (ARCHITECTURE.md §5):
//! a `kevent::Loop` in a connected process, with the shared queue attached
//! ([`Loop::attach_queue`]) and asleep in `poll(true)`, wakes when the queue's owner is
//! SIGKILLed; the attachment is detached and `take_error` gives the BrokenPipe error.
//!
//! The owner is a forked child (so that it can be killed); the loop runs on a thread of
//! this process. Every wait is bounded: a loop still asleep 3 s after the kill fails the
//! test (its thread is left behind; the owner is killed by then anyway).

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kevent::{Loop, Queue};
use rustix::process::Pid;
use util::proc::{serial, Children};
use util::wait_until;

/// The bound the test asserts (the contract says 100 ms; the machine is shared).
const NOTICE: Duration = Duration::from_secs(2);
/// How long after the kill the loop may still sleep before the test calls it hung.
const GIVE_UP: Duration = Duration::from_secs(3);

/// Forks the queue's owner: it creates a queue, serves it at `path`, writes one byte to
/// say so, and sleeps until it is killed (or its parent thread ends: PR_SET_PDEATHSIG).
fn fork_owner(kids: &mut Children, path: &std::path::Path) -> Pid {
    let (mut ready_r, ready_w) = std::io::pipe().expect("pipe");
    let pid = kids.fork(|| {
        let q = Queue::new().expect("the owner's queue");
        q.listen(path).expect("listen");
        (&ready_w).write_all(b"r").expect("ready");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    drop(ready_w);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        let _ = tx.send(ready_r.read(&mut b).map(|n| n == 1).unwrap_or(false));
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)),
        Ok(true),
        "the owner did not start"
    );
    pid
}

/// The scheduler state (`R`, `S`, …) of thread `tid` of this process.
fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// What the loop's thread saw once its `poll(true)` returned with an error kept.
struct Woken {
    at: Instant,
    polls: u32,
    error: Option<kevent::Error>,
    /// `detach_queue` answered false: the loop had detached it itself.
    detached_by_the_loop: bool,
}

#[test]
fn an_attached_queue_whose_owner_is_killed_wakes_the_loop_and_is_detached_with_broken_pipe() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("kevent-owner-death-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("temp dir");
    let path = dir.join("gate.sock");
    let mut kids = Children::default();
    let owner = fork_owner(&mut kids, &path);

    let tid = Arc::new(AtomicI32::new(0));
    let (tx, rx) = mpsc::channel();
    let (t, p) = (tid.clone(), path.clone());
    std::thread::Builder::new()
        .name("loop".into())
        .spawn(move || {
            let remote = Arc::new(Queue::connect(&p).expect("connect to the owner"));
            let lp = Loop::new().expect("a loop");
            lp.attach_queue(remote.clone(), |_, _| {})
                .expect("attach the shared queue");
            t.store(rustix::thread::gettid().as_raw_nonzero().get(), SeqCst);
            let mut polls = 0;
            // Woken for anything else, it sleeps again; only the kept error ends this.
            while lp.stats().errors == 0 {
                lp.poll(true);
                polls += 1;
            }
            let detached_by_the_loop = !lp.detach_queue(&remote).unwrap_or(true);
            let _ = tx.send(Woken {
                at: Instant::now(),
                polls,
                error: lp.take_error(),
                detached_by_the_loop,
            });
        })
        .expect("spawn the loop's thread");

    assert!(
        wait_until(Duration::from_secs(10), || tid.load(SeqCst) != 0),
        "the loop did not attach the shared queue"
    );
    let tid = tid.load(SeqCst);
    assert!(
        wait_until(Duration::from_secs(3), || thread_state(tid) == Some('S')),
        "the loop never slept (state {:?})",
        thread_state(tid)
    );
    let killed = Instant::now();
    assert_eq!(kids.kill(owner).terminating_signal(), Some(libc::SIGKILL));
    let woken = rx.recv_timeout(GIVE_UP).unwrap_or_else(|_| {
        panic!(
            "the loop is still asleep in poll(true) {GIVE_UP:?} after the shared queue's \
             owner was SIGKILLed (the contract: woken within 100 ms, the queue detached \
             with a BrokenPipe error)"
        )
    });
    let took = woken.at.saturating_duration_since(killed);
    eprintln!(
        "the loop woke {took:?} after the owner's SIGKILL ({} polls): {:?}",
        woken.polls, woken.error
    );
    let _ = std::fs::remove_dir_all(&dir);
    let err = woken.error.expect("the loop keeps the error");
    assert_eq!(err.kind(), ErrorKind::BrokenPipe, "{err}");
    assert!(
        woken.detached_by_the_loop,
        "the attachment is detached by the loop"
    );
    assert!(
        took < NOTICE,
        "the loop learnt of the owner's death {took:?} after the SIGKILL"
    );
}
