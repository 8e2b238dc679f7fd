//! Helpers of the tests that fork: children that run a closure and `_exit`, a guard that
//! kills what a test leaves running, words shared with children, bounded test bodies, a
//! process's memory, fds and a thread's CPU time, and a fixed-seed random source.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, WaitOptions, WaitStatus};

use super::shm::Shared;

/// The tests of a file that forks run one at a time: a child forked while another test's
/// threads hold locks (the allocator's excepted) could inherit them held.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a test body alone (see [`serial`]) on a thread of its own, and fails the test if
/// the body is not done within `limit`: a call that hangs fails the test instead of
/// hanging the run (the stuck thread is left behind; its children die with the process).
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
    // SAFETY: fork() in a process with other threads (producer, gate, harness): the child
    // runs only the test's code and the library's, which take no lock another thread may
    // have held at the fork except malloc's (glibc makes those safe across fork) and the
    // library's own (released by its atfork handlers; some tests check exactly that), and
    // it never returns into the harness: it ends with `_exit`. One lock escapes that: the
    // standard library's registry of threads, locked by every thread as it starts and
    // ends. A child that starts threads (`Instance::create`) hangs at the first if a
    // parent thread was starting or ending at the fork — rare (the kevent crate's
    // `owner_death_loop.rs` saw it about once in 3,000 runs under load): a child that
    // makes a queue is better run with `Children::exec_entry` (`owner_death.rs`'s owner
    // is); the owners of `gate_bounds.rs` and `peer_bounds.rs`, which take orders through
    // shared words, are still forked and keep that rare risk.
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

    /// The exit code of `pid` within `timeout`; `None` if it was still running (it is
    /// killed then).
    pub fn exit_code(&mut self, pid: Pid, timeout: Duration) -> Option<i32> {
        match self.wait(pid, timeout) {
            Some(st) => Some(st.exit_status().unwrap_or(-1)),
            None => {
                let _ = rustix::process::kill_process(pid, Signal::KILL);
                let _ = self.wait(pid, Duration::from_secs(10));
                None
            }
        }
    }

    /// Waits for `pid` and asserts it exited with status 0.
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
    /// Runs this test binary anew as a child — its test `entry` alone, with the
    /// environment variable `env.0` set to `env.1` — and waits until the child prints a
    /// line ending in `ready` (fails the test if it has not within 10 s). Unlike
    /// [`fork_child`], the child may start threads (a queue's owner does): it inherits no
    /// lock a thread of this process held. It dies with this thread
    /// (`PR_SET_PDEATHSIG`) and is killed by the guard like a forked child.
    pub fn exec_entry(&mut self, entry: &str, env: (&str, &std::ffi::OsStr), ready: &str) -> Pid {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().expect("the test binary");
        let mut cmd = std::process::Command::new(exe);
        cmd.args([entry, "--exact", "--nocapture", "--test-threads=1"])
            .env(env.0, env.1)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped());
        // SAFETY: runs in the forked child before `exec`; prctl(PR_SET_PDEATHSIG) is
        // async-signal-safe and only sets a property of that process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // Reaped by `wait`/`kill`/the guard, through its pid (dropping `child` neither
        // waits nor kills), as a forked child is.
        #[allow(clippy::zombie_processes)]
        let mut child = cmd.spawn().expect("run the test binary anew");
        let pid = Pid::from_raw(child.id() as i32).expect("a pid");
        self.0.push(pid);
        let stdout = child.stdout.take().expect("its stdout");
        let (tx, rx) = mpsc::channel();
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            let seen = std::io::BufRead::lines(std::io::BufReader::new(stdout))
                .map_while(Result::ok)
                // The harness may have begun the line (`test owner_entry ... `).
                .any(|l| l.ends_with(&ready));
            let _ = tx.send(seen);
        });
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(10)),
            Ok(true),
            "{entry}, executed anew, did not say it was ready"
        );
        pid
    }

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
pub struct SharedWords(Shared);

impl SharedWords {
    pub fn new(len: usize) -> SharedWords {
        SharedWords(Shared::map(len * 8, None))
    }

    pub fn at(&self, i: usize) -> &AtomicU64 {
        self.0.word(i)
    }

    /// Whether word `i` is `value` within `limit` (looked at every millisecond).
    pub fn reaches(&self, i: usize, value: u64, limit: Duration) -> bool {
        super::wait_until(limit, || self.at(i).load(Ordering::SeqCst) == value)
    }
}

/// `VmRSS` of process `pid` (`None`: this process), in bytes.
pub fn rss(pid: Option<Pid>) -> u64 {
    let status = match pid {
        Some(pid) => format!("/proc/{}/status", pid.as_raw_nonzero()),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(&status).unwrap_or_else(|e| panic!("{status}: {e}"));
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a VmRSS line in /proc/<pid>/status");
    kb * 1024
}

/// Number of open fds of process `pid` (0 if it is gone).
pub fn fds_of(pid: Pid) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", pid.as_raw_nonzero()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A fixed-seed xorshift64: reproducible "random" choices (print the seed on failure).
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let w = self.next().to_le_bytes();
            chunk.copy_from_slice(&w[..chunk.len()]);
        }
    }
}

/// Runs `f` on a helper thread; `None` if it has not returned within `limit`.
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// CPU time (user + system) the thread `tid` of this process has used.
pub fn thread_cpu(tid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15: the 12th and 13th after the state.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}
