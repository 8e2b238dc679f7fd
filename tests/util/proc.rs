//! Helpers of the tests that fork or must not hang: bounded test bodies run one at a
//! time, children that run a closure and `_exit`, a guard that kills what a test leaves
//! running, and words shared with children.
//!
//! (`syscalls-sim/tests/util/proc.rs` has the same for the tests of `kevent-syscalls`.)

use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

/// The tests of a file that forks (or measures latency) run one at a time: a child forked
/// while another test's threads hold locks (the allocator's excepted) could inherit them
/// held.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a test body alone (see [`serial`]) on a thread of its own, and fails the test if
/// the body is not done within `limit`: a lost wake-up fails the test instead of hanging
/// the run (the stuck thread is left behind; its children die with the process).
pub fn bounded(limit: Duration, body: impl FnOnce() + Send + 'static) {
    let _serial = serial();
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            let _ = tx.send(std::panic::catch_unwind(AssertUnwindSafe(body)));
        })
        .expect("spawn the test body");
    match rx.recv_timeout(limit) {
        Ok(Ok(())) => thread.join().expect("test body"),
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("hung: the test body is still running after {limit:?}"),
    }
}

/// Writes `msg` to fd 2 without taking std's stderr lock (another thread of the parent
/// may have held it at the fork).
pub fn child_log(msg: &str) {
    let line = format!("child {}: {msg}\n", std::process::id());
    // SAFETY: write(2) from a valid buffer of the given length.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}

/// Forks a child that runs `f` and `_exit`s with its result (101 if it panicked, 98 if
/// the parent died before the child could ask to die with it).
pub fn fork_child(f: impl FnOnce() -> i32) -> Pid {
    let parent = rustix::process::getpid();
    // SAFETY: fork() in a process with threads (the queue's producer and gate, the test
    // harness): the child runs only the test's code and the library's, which take no lock
    // another thread may have held at the fork except malloc's (glibc makes those safe
    // across fork) and the library's own (released by its atfork handlers), and it never
    // returns into the harness: it ends with `_exit`. It must not start threads (no
    // `Queue::new`): the standard library's registry of threads is locked by every
    // thread as it starts and ends, so a parent thread doing either at the fork leaves
    // the child's first new thread hung at its start (`owner_death_loop.rs`' owner hung
    // so, about once in 3,000 runs under load; a child that needs threads is the test
    // binary executed anew).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a property of this process.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = if rustix::process::getppid() != Some(parent) {
            98
        } else {
            match std::panic::catch_unwind(AssertUnwindSafe(f)) {
                Ok(code) => code,
                Err(payload) => {
                    let msg = payload
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    child_log(&format!("panicked: {msg}"));
                    101
                }
            }
        };
        // SAFETY: ends the child at once, without running the parent's destructors or
        // atexit handlers (the harness's state belongs to the parent).
        unsafe { libc::_exit(code) }
    }
    Pid::from_raw(pid).expect("a positive pid")
}

/// A test's child processes; those still running when the guard drops are killed.
#[derive(Default)]
pub struct Children(Vec<Pid>);

impl Children {
    pub fn fork(&mut self, f: impl FnOnce() -> i32) -> Pid {
        let pid = fork_child(f);
        self.0.push(pid);
        pid
    }

    /// Waits up to `timeout` for `pid` to end: its status, or `None` if it still runs.
    pub fn wait(&mut self, pid: Pid, timeout: Duration) -> Option<WaitStatus> {
        let end = Instant::now() + timeout;
        loop {
            match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG) {
                Ok(Some((_, status))) => {
                    self.0.retain(|&p| p != pid);
                    return Some(status);
                }
                Ok(None) => {}
                Err(e) => panic!("waitpid({pid:?}): {e}"),
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits for `pid` and asserts it exited with status 0.
    #[track_caller]
    pub fn expect_success(&mut self, pid: Pid, timeout: Duration, what: &str) {
        match self.wait(pid, timeout) {
            Some(st) => assert_eq!(
                st.exit_status(),
                Some(0),
                "{what} (pid {pid:?}) ended with {st:?}"
            ),
            None => panic!("{what} (pid {pid:?}) is stuck: still running after {timeout:?}"),
        }
    }

    /// SIGKILLs `pid` and reaps it.
    pub fn kill(&mut self, pid: Pid) -> WaitStatus {
        rustix::process::kill_process(pid, Signal::KILL).expect("kill");
        self.wait(pid, Duration::from_secs(10))
            .expect("a SIGKILLed process ends")
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for pid in self.0.drain(..) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
        }
    }
}

/// `len` 64-bit words in an anonymous `MAP_SHARED` mapping: written by forked children,
/// read by the parent (and the other way round).
pub struct SharedWords {
    ptr: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the words are only ever accessed atomically (see `at`), from any thread.
unsafe impl Send for SharedWords {}
// SAFETY: as above.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    pub fn new(len: usize) -> SharedWords {
        // SAFETY: a new anonymous mapping (no fd, no address hint): it affects no memory
        // we already use; the result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(
            p,
            libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        SharedWords {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null"),
            len,
        }
    }

    pub fn at(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "shared word {i} out of {}", self.len);
        // SAFETY: the mapping holds `len` page-aligned, zero-filled 8-byte words that live
        // as long as `self`; every bit pattern is a valid AtomicU64, and all access is
        // atomic, so children writing the same page concurrently cause no data race.
        unsafe { &*self.ptr.as_ptr().add(i) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`; no reference into it outlives
        // `self` (they all borrow it).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len * 8) };
    }
}
