//! The owner's death is an event for every consumer of another process (ARCHITECTURE.md §5):
//! SIGKILL the process that created the queue while consumers in other processes wait,
//! and within 100 ms each returns an error with errno `EPIPE` (`ErrorKind::BrokenPipe`),
//! whatever it sleeps in — `kevent_wait` / `Instance::wait` without a timeout, or with one
//! (an error, not an empty claim), `kevent_get_events`, or an event loop of its own
//! asleep on the queue's notify fd (which becomes readable; the next zero-timeout wait
//! answers `EPIPE`).
//!
//! The owner is this test binary executed anew (so that it can be killed; not a fork,
//! see [`Owner`]): it creates the queue, serves its gate on a temporary path, says so on
//! its stdout and sleeps until it is killed. The consumers are this test process (`Instance::connect`, a thread of it
//! sleeping) or more forked children. The tests assert a generous bound (2 s) and print
//! the measured latency; a consumer still asleep 3 s after the kill fails the test
//! (the sleeping thread is left behind; forked children are killed by a guard).

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::fmt::Debug;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kevent_ring::monotonic_now;
use kevent_syscalls::*;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::Pid;
use util::proc::{bounded, Children, SharedWords};
use util::{user_ev, wait_until, TempDir};

/// The bound the tests assert (the contract says 100 ms; the machine is shared).
const NOTICE: Duration = Duration::from_secs(2);
/// How long after the kill a consumer may still sleep before the test calls it hung.
const GIVE_UP: Duration = Duration::from_secs(3);
/// The timeout of the timed waits: long enough that only the owner's death can end them
/// within [`NOTICE`].
const TIMED_WAIT: Duration = Duration::from_secs(5);
/// The timeout of a `poll` on the notify fd (every blocking call has one).
const POLL_TIMEOUT: Duration = Duration::from_secs(10);

// --- the owner -----------------------------------------------------------------------

/// The queue's owner, serving the gate at `path`: this test binary executed anew
/// ([`owner_entry`]), not a fork of this process — a forked child's new threads could
/// hang on a lock a thread of this one held at the fork (`util/proc.rs`, `fork_child`).
struct Owner {
    pid: Pid,
    path: PathBuf,
    _dir: TempDir,
}

/// The environment variable that makes the executed copy the owner (the path to serve).
const OWNER_ENV: &str = "KEVENT_TEST_OWNER";
/// What the owner prints once it serves the queue.
const READY: &str = "kevent-test-owner-ready";

/// The owner's entry point. In a normal run it returns at once; in the copy
/// [`start_owner`] executes ([`OWNER_ENV`] set, only this test selected) it creates a
/// queue with a user kevent (id 1), serves its gate at that path, prints [`READY`] and
/// sleeps until it is killed.
#[test]
fn owner_entry() {
    let Some(path) = std::env::var_os(OWNER_ENV) else {
        return;
    };
    let q = Instance::create(64, 0).expect("the owner's queue");
    q.ctl(KEVENT_CTL_ADD, &mut [user_ev(1, 0)])
        .expect("the owner's kevent");
    q.listen(std::path::Path::new(&path)).expect("listen");
    println!("{READY}");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Starts the owner serving a fresh path and waits until it says it is ready.
fn start_owner(kids: &mut Children) -> Owner {
    let dir = TempDir::new("owner-death");
    let path = dir.0.join("gate.sock");
    let pid = kids.exec_entry("owner_entry", (OWNER_ENV, path.as_os_str()), READY);
    Owner {
        pid,
        path,
        _dir: dir,
    }
}

/// The scheduler state of a task (`R`, `S`, …) from its `/proc/…/stat`.
fn task_state(stat_path: &str) -> Option<char> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // "pid (comm) S ...": the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits until thread `tid` of this process sleeps (state `S`).
#[track_caller]
fn await_thread_asleep(tid: i32, what: &str) {
    let path = format!("/proc/self/task/{tid}/stat");
    assert!(
        wait_until(Duration::from_secs(3), || task_state(&path) == Some('S')),
        "{what}: the sleeping thread never slept (state {:?})",
        task_state(&path)
    );
}

/// Waits until process `pid` sleeps (state `S`).
#[track_caller]
fn await_process_asleep(pid: Pid, what: &str) {
    let path = format!("/proc/{}/stat", pid.as_raw_nonzero());
    assert!(
        wait_until(Duration::from_secs(3), || task_state(&path) == Some('S')),
        "{what}: never slept (state {:?})",
        task_state(&path)
    );
}

/// Starts an owner, connects to it from this process, runs `prepare` (on this thread:
/// whatever talks to the owner before the sleep), lets `sleep` block on a thread of this
/// process (until the kernel shows the thread asleep), SIGKILLs the owner, and returns
/// what `sleep` returned and how long after the kill — failing the test if it is still
/// asleep `give_up` after the kill.
fn kill_the_owner_under<P: Send + 'static, T: Debug + Send + 'static>(
    what: &str,
    give_up: Duration,
    prepare: impl FnOnce(&Arc<Instance>) -> P,
    sleep: impl FnOnce(Arc<Instance>, P) -> io::Result<T> + Send + 'static,
) -> (io::Result<T>, Duration, Arc<Instance>) {
    let mut kids = Children::default();
    let owner = start_owner(&mut kids);
    let cq = Instance::connect(&owner.path).expect("connect to the owner");
    let prepared = prepare(&cq);
    let tid = Arc::new(AtomicI32::new(0));
    let (tx, rx) = mpsc::channel();
    let (c, t) = (cq.clone(), tid.clone());
    std::thread::Builder::new()
        .name("sleeper".into())
        .spawn(move || {
            t.store(rustix::thread::gettid().as_raw_nonzero().get(), SeqCst);
            let r = sleep(c, prepared);
            let _ = tx.send((r, Instant::now()));
        })
        .expect("spawn the sleeper");
    assert!(wait_until(Duration::from_secs(3), || tid.load(SeqCst) != 0));
    await_thread_asleep(tid.load(SeqCst), what);
    let killed = Instant::now();
    let status = kids.kill(owner.pid);
    assert_eq!(status.terminating_signal(), Some(libc::SIGKILL));
    match rx.recv_timeout(give_up) {
        Ok((r, at)) => (r, at.saturating_duration_since(killed), cq),
        Err(_) => panic!(
            "{what}: still asleep {give_up:?} after the owner was SIGKILLed (the contract: an \
             EPIPE error within 100 ms)"
        ),
    }
}

/// `r` is the EPIPE error (`BrokenPipe`, errno `EPIPE`), returned within [`NOTICE`].
#[track_caller]
fn assert_epipe<T: Debug>(what: &str, r: &io::Result<T>, latency: Duration) {
    eprintln!("{what}: {r:?}, {latency:?} after the owner's SIGKILL");
    match r {
        Ok(v) => panic!(
            "{what}: returned Ok({v:?}) {latency:?} after the owner's SIGKILL; expected an \
             EPIPE error"
        ),
        Err(e) => {
            assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{what}: {e}");
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EPIPE),
                "{what}: a BrokenPipe error without the errno EPIPE: {e:?}"
            );
        }
    }
    assert!(
        latency < NOTICE,
        "{what}: the EPIPE error came {latency:?} after the owner's SIGKILL (the contract: \
         within 100 ms)"
    );
}

// --- consumers of this process ------------------------------------------------------------

#[test]
fn kevent_wait_without_a_timeout_returns_epipe_when_the_owner_is_killed() {
    bounded(Duration::from_secs(20), || {
        let what = "kevent_wait(h, 1, uidx, None, 0)";
        let (r, took, cq) = kill_the_owner_under(
            what,
            GIVE_UP,
            |cq| register(cq.clone()),
            |cq, h| {
                let r = kevent_wait(h, 1, cq.ring().uidx(), None, 0);
                let _ = kevent_close(h);
                r
            },
        );
        assert_epipe(what, &r, took);
        drop(cq);
    });
}

#[test]
fn queue_wait_without_a_timeout_returns_epipe_when_the_owner_is_killed() {
    bounded(Duration::from_secs(20), || {
        let what = "Instance::wait(1, uidx, None, 0)";
        let (r, took, _cq) = kill_the_owner_under(
            what,
            GIVE_UP,
            |_| (),
            |cq, ()| cq.wait(1, cq.ring().uidx(), None, 0),
        );
        assert_epipe(what, &r, took);
    });
}

#[test]
fn kevent_get_events_without_a_timeout_returns_epipe_when_the_owner_is_killed() {
    bounded(Duration::from_secs(20), || {
        let what = "kevent_get_events(h, 1, 8, None, buf, 0)";
        let (r, took, _cq) = kill_the_owner_under(
            what,
            GIVE_UP,
            |cq| register(cq.clone()),
            |_, h| {
                let mut buf = [Ukevent::default(); 8];
                let r = kevent_get_events(h, 1, 8, None, &mut buf, 0);
                let _ = kevent_close(h);
                r
            },
        );
        assert_epipe(what, &r, took);
    });
}

/// A wait with a timeout (5 s) returns the EPIPE error as soon as the owner is dead —
/// neither an empty claim at the timeout nor an empty claim at once.
#[test]
fn a_timed_wait_returns_epipe_not_an_empty_claim_when_the_owner_is_killed() {
    bounded(Duration::from_secs(30), || {
        let what = "Instance::wait(1, uidx, Some(5 s), 0)";
        let (r, took, _cq) = kill_the_owner_under(
            what,
            TIMED_WAIT + GIVE_UP,
            |_| (),
            |cq, ()| cq.wait(1, cq.ring().uidx(), Some(TIMED_WAIT.as_nanos() as u64), 0),
        );
        assert_epipe(what, &r, took);
    });
}

/// An event loop of a connected consumer, asleep in `poll` on the queue's notify fd: the
/// fd becomes readable when the owner dies, and the next wait with a zero timeout
/// answers EPIPE.
#[test]
fn a_connected_consumers_notify_fd_wakes_its_loop_and_the_next_wait_is_epipe_when_the_owner_is_killed(
) {
    bounded(Duration::from_secs(30), || {
        let what = "poll(notify_fd, POLLIN)";
        // Armed before the sleep: arming talks to the owner.
        let arm = |cq: &Arc<Instance>| cq.notify_fd().expect("notify_fd").as_raw_fd();
        let (r, took, cq) = kill_the_owner_under(what, GIVE_UP, arm, |_cq, nfd: RawFd| {
            // SAFETY: the notify fd is the queue's handle, which `_cq` (a parameter, alive
            // until the closure returns) keeps open.
            let fd = unsafe { BorrowedFd::borrow_raw(nfd) };
            let ts = Timespec::try_from(POLL_TIMEOUT).expect("timespec");
            let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
            let n = poll(&mut pfd, Some(&ts))?;
            Ok((n, pfd[0].revents()))
        });
        eprintln!("{what}: {r:?}, {took:?} after the owner's SIGKILL");
        let (n, revents) = r.expect("poll");
        assert!(
            n == 1 && revents.contains(PollFlags::IN),
            "{what}: the notify fd is not readable: {revents:?}"
        );
        assert!(
            took < NOTICE,
            "{what}: readable only {took:?} after the SIGKILL"
        );
        let next = cq.wait(1, cq.ring().uidx(), Some(0), 0);
        assert_epipe("the next Instance::wait(.., Some(0), 0)", &next, took);
    });
}

// --- consumers in other processes ---------------------------------------------------------

/// How a consumer process sleeps.
#[derive(Debug, Clone, Copy)]
enum Sleep {
    /// `Instance::wait(.., None, 0)` (the ring's futex).
    Wait,
    /// `kevent_get_events(h, 1, 8, None, ..)`.
    GetEvents,
    /// `Instance::wait(.., Some(5 s), 0)`.
    TimedWait,
    /// `poll` on its notify fd, then `Instance::wait(.., Some(0), 0)`.
    NotifyFd,
}

/// What a consumer process's call returned, as a word.
const EPIPE_ERROR: u64 = 1;
const BROKEN_PIPE_WITHOUT_ERRNO: u64 = 2;
const RETURNED_OK: u64 = 3;
const OTHER_ERROR: u64 = 4;
const NOT_READABLE: u64 = 5;

fn code<T>(r: &io::Result<T>) -> u64 {
    match r {
        Ok(_) => RETURNED_OK,
        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => EPIPE_ERROR,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => BROKEN_PIPE_WITHOUT_ERRNO,
        Err(e) => OTHER_ERROR | u64::from(e.raw_os_error().unwrap_or(0) as u32) << 8,
    }
}

fn code_name(c: u64) -> String {
    match c & 0xff {
        0 => "still asleep".into(),
        EPIPE_ERROR => "the EPIPE error".into(),
        BROKEN_PIPE_WITHOUT_ERRNO => "a BrokenPipe error without the errno EPIPE".into(),
        RETURNED_OK => "Ok (no error)".into(),
        OTHER_ERROR => format!("another error (errno {})", c >> 8),
        NOT_READABLE => "the notify fd's poll timed out".into(),
        _ => format!("code {c}"),
    }
}

/// In a consumer process: connects, says it is about to sleep (word `base`), sleeps as
/// `how` says, and reports what the call returned (word `base + 1`) and when (word
/// `base + 2`, `CLOCK_MONOTONIC` ns).
fn consumer(path: &std::path::Path, how: Sleep, board: &SharedWords, base: usize) -> i32 {
    let Ok(cq) = Instance::connect(path) else {
        return 2;
    };
    let c = match how {
        Sleep::Wait => {
            board.at(base).store(1, SeqCst);
            code(&cq.wait(1, cq.ring().uidx(), None, 0))
        }
        Sleep::TimedWait => {
            board.at(base).store(1, SeqCst);
            code(&cq.wait(1, cq.ring().uidx(), Some(TIMED_WAIT.as_nanos() as u64), 0))
        }
        Sleep::GetEvents => {
            let h = register(cq.clone());
            let mut buf = [Ukevent::default(); 8];
            board.at(base).store(1, SeqCst);
            code(&kevent_get_events(h, 1, 8, None, &mut buf, 0))
        }
        Sleep::NotifyFd => {
            let Ok(nfd) = cq.notify_fd() else {
                return 3;
            };
            let ts = Timespec::try_from(POLL_TIMEOUT).expect("timespec");
            let mut pfd = [PollFd::new(&nfd, PollFlags::IN)];
            board.at(base).store(1, SeqCst);
            match poll(&mut pfd, Some(&ts)) {
                Ok(1) => code(&cq.wait(1, cq.ring().uidx(), Some(0), 0)),
                _ => NOT_READABLE,
            }
        }
    };
    board.at(base + 2).store(monotonic_now(), SeqCst);
    board.at(base + 1).store(c, SeqCst);
    0
}

/// Four consumer processes, each asleep in a different way; the owner is SIGKILLed:
/// every one of them returns the EPIPE error within the bound.
#[test]
fn every_consumer_process_learns_of_the_owners_death_whatever_it_sleeps_in() {
    bounded(Duration::from_secs(30), || {
        let ways = [
            Sleep::Wait,
            Sleep::GetEvents,
            Sleep::TimedWait,
            Sleep::NotifyFd,
        ];
        let mut kids = Children::default();
        let owner = start_owner(&mut kids);
        let board = SharedWords::new(3 * ways.len());
        let mut pids = Vec::new();
        for (i, &how) in ways.iter().enumerate() {
            let (path, board) = (&owner.path, &board);
            pids.push(kids.fork(move || consumer(path, how, board, 3 * i)));
        }
        for (i, (&how, &pid)) in ways.iter().zip(&pids).enumerate() {
            let what = format!("the consumer process in {how:?}");
            assert!(
                board.reaches(3 * i, 1, Duration::from_secs(10)),
                "{what}: did not connect"
            );
            await_process_asleep(pid, &what);
        }
        let killed = monotonic_now();
        kids.kill(owner.pid);
        let all = wait_until(GIVE_UP, || {
            (0..ways.len()).all(|i| board.at(3 * i + 1).load(SeqCst) != 0)
        });
        let mut report = Vec::new();
        let mut ok = all;
        for (i, how) in ways.iter().enumerate() {
            let c = board.at(3 * i + 1).load(SeqCst);
            let at = board.at(3 * i + 2).load(SeqCst);
            let latency = (c != 0).then(|| Duration::from_nanos(at.saturating_sub(killed)));
            ok &= c == EPIPE_ERROR && latency.is_some_and(|l| l < NOTICE);
            report.push(format!("{how:?}: {} after {latency:?}", code_name(c)));
        }
        eprintln!("after the owner's SIGKILL: {report:#?}");
        assert!(
            ok,
            "every consumer process must return the EPIPE error within {NOTICE:?} of the \
             owner's SIGKILL (waited {GIVE_UP:?}): {report:#?}"
        );
        for (pid, how) in pids.into_iter().zip(ways) {
            kids.expect_success(pid, Duration::from_secs(5), &format!("{how:?}"));
        }
    });
}

// --- an owner killed as soon as it made the queue -----------------------------------------

/// The owner's death can only reach consumers once its producer thread holds the owner
/// word: a queue whose creator returned before that, and whose process was killed at
/// once, left consumers of other processes asleep for good (an event loop on the notify
/// fd spun instead: the owner's pidfd readable, the wait finding no death). So `create`
/// returns only once the word is held, naming the producer thread. Checked right after
/// `create`, 200 times (the thread just spawned has often not run yet).
#[test]
fn create_returns_only_once_the_producer_thread_holds_the_owner_word() {
    const TID_MASK: u32 = 0x3fff_ffff;
    for i in 0..200 {
        let q = Instance::create(64, 0).expect("a queue");
        let word = q.ring().header().wake.owner.load(SeqCst);
        assert_eq!(
            (word & TID_MASK) as i32,
            q.producer_tid().unwrap_or(0),
            "queue {i}: the owner word is {word:#x} as create returns (0: nobody holds it, \
             so the owner's death would reach no consumer of another process)"
        );
        assert_ne!(word & TID_MASK, 0, "queue {i}: nobody holds the owner word");
    }
}
