//! The owner's death is an event for an event loop in another process (ARCHITECTURE.md §5):
//! a `kevent::Loop` in a connected process, with the shared queue attached
//! ([`Loop::attach_queue`]) and asleep in `poll(true)`, wakes when the queue's owner is
//! SIGKILLed; the attachment is detached and `take_error` gives the BrokenPipe error.
//!
//! The owner is this test binary executed anew (so that it can be killed; see
//! [`Owner`] for why not a fork); the loop runs on a thread of this process. Every wait is bounded: a loop still asleep 3 s after the kill fails the
//! test (its thread is left behind; the owner is killed by then anyway).

#![deny(clippy::undocumented_unsafe_blocks)]

mod util;

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicI32, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use kevent::{Loop, Queue};
use rustix::process::Pid;
use util::proc::serial;
use util::wait_until;

/// The bound the test asserts (the contract says 100 ms; the machine is shared).
const NOTICE: Duration = Duration::from_secs(2);
/// How long after the kill the loop may still sleep before the test calls it hung.
const GIVE_UP: Duration = Duration::from_secs(3);

/// The queue's owner: this test binary executed anew (never a `fork` of this process,
/// whose threads may hold a lock at the fork that the child's new threads need — the
/// standard library's thread registry did: the owner's producer thread hung at its
/// start), killed when dropped.
struct Owner(std::process::Child);

impl Drop for Owner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The environment variable that makes the executed copy the owner (the path to serve).
const OWNER_ENV: &str = "KEVENT_TEST_OWNER";
/// What the owner prints once it serves the queue.
const READY: &str = "kevent-test-owner-ready";

/// The owner's entry point. In a normal run it returns at once; in the copy
/// [`start_owner`] executes ([`OWNER_ENV`] set, only this test selected) it creates a
/// queue, serves it at that path, prints [`READY`] and sleeps until it is killed.
#[test]
fn owner_entry() {
    let Some(path) = std::env::var_os(OWNER_ENV) else {
        return;
    };
    let q = Queue::new().expect("the owner's queue");
    q.listen(&path).expect("listen");
    let mut out = std::io::stdout();
    writeln!(out, "{READY}")
        .and_then(|()| out.flush())
        .expect("ready");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Starts the owner serving `path` and waits until it says it is ready.
fn start_owner(path: &std::path::Path) -> Owner {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["owner_entry", "--exact", "--nocapture", "--test-threads=1"])
        .env(OWNER_ENV, path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped());
    // SAFETY: runs in the forked child before `exec`; prctl(PR_SET_PDEATHSIG) is
    // async-signal-safe and only sets a property of that process (killed if this thread
    // ends first).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run the owner");
    let stdout = child.stdout.take().expect("its stdout");
    let owner = Owner(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout))
            .map_while(Result::ok)
            // The harness may have begun the line (`test owner_entry ... `).
            .any(|l| l.ends_with(READY));
        let _ = tx.send(ready);
    });
    let pid = Pid::from_raw(owner.0.id() as i32).expect("a pid");
    let started = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        started,
        Ok(true),
        "the owner did not start; its threads: {}",
        threads_of(pid)
    );
    owner
}

/// The scheduler state (`R`, `S`, …) of thread `tid` of this process.
fn thread_state(tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Each thread of process `pid`: its name, state and system call, for a failure message —
/// with the binary's load base, so that a lock a thread waits on can be named (`nm` the
/// binary at the futex address minus the base: that is how the fork hang was found).
fn threads_of(pid: Pid) -> String {
    let dir = format!("/proc/{}/task", pid.as_raw_nonzero());
    let Ok(tasks) = std::fs::read_dir(&dir) else {
        return format!("({dir} unreadable)");
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let p = t.path();
        let read = |f: &str| {
            std::fs::read_to_string(p.join(f))
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let stat = read("stat");
        let state = stat
            .rsplit_once(')')
            .map_or("?", |(_, r)| r.trim_start().get(..1).unwrap_or("?"));
        out.push(format!("{} {} [{}]", read("comm"), state, read("syscall")));
    }
    let maps =
        std::fs::read_to_string(format!("/proc/{}/maps", pid.as_raw_nonzero())).unwrap_or_default();
    let base = maps
        .lines()
        .next()
        .and_then(|l| l.split('-').next())
        .unwrap_or("?");
    format!("{}; load base {base}", out.join("; "))
}

/// Where thread `tid` of this process sleeps: its wait channel and the system call it is
/// in (number and arguments, `/proc/.../syscall`), for a failure message.
fn where_asleep(tid: i32) -> String {
    let read = |f: &str| {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/{f}"))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|e| format!("({e})"))
    };
    format!("wchan {}, syscall {}", read("wchan"), read("syscall"))
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
    owner_killed_under_a_loop(false);
}

/// A hostile peer zeroed the owner word, so the kernel cannot mark it when the owner
/// dies (it marks only a word that names the dying thread): the loop still learns of the
/// death, from the owner's pidfd in its notify fd — and does not spin on that pidfd,
/// readable for good, with every wait finding nothing (it did: the loop thread ran flat
/// out, `polls` climbing, while the test waited).
#[test]
fn a_loop_learns_of_the_owners_death_from_its_pidfd_when_a_peer_zeroed_the_owner_word() {
    owner_killed_under_a_loop(true);
}

/// Kills the owner of a queue a loop of this process has attached and sleeps on; with
/// `scribble`, the loop's thread first zeroes the ring's owner word, as a peer may.
fn owner_killed_under_a_loop(scribble: bool) {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("kevent-owner-death-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).expect("temp dir");
    let path = dir.join("gate.sock");
    let mut owner = start_owner(&path);

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
            if scribble {
                remote.ring().header().wake.owner.store(0, SeqCst);
            }
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
    owner.0.kill().expect("SIGKILL the owner");
    let status = owner.0.wait().expect("reap the owner");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let asleep_at = where_asleep(tid);
    let woken = rx.recv_timeout(GIVE_UP).unwrap_or_else(|_| {
        panic!(
            "the loop has not ended with an error {GIVE_UP:?} after the shared queue's owner \
             was SIGKILLed (the contract: woken within 100 ms, the queue detached with a \
             BrokenPipe error); its thread at the kill: {asleep_at}; now: {} (\"running\": \
             on a CPU, not asleep)",
            where_asleep(tid)
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
