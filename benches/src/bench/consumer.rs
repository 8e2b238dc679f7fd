//! Consumers: the threads or forked processes that wait for notifications and read.
//!
//! A backend never spawns its own consumers: the harness does, in the mode the cell asks
//! for, and hands each one a [`ConsumerCtx`]. The context owns the one piece of work every
//! backend must do identically — [`ConsumerCtx::read_event`], *one* nonblocking read of up
//! to [`READ_BUF`] bytes per notification, as in `epoll_bench` — and the counters.
//!
//! # Threads or processes
//!
//! Both modes share one transport: a [`RunShared`] block in `MAP_SHARED | MAP_ANONYMOUS`
//! memory holding the run phase (a futex word), one [`Slot`] per consumer (its counters,
//! `getrusage` figures and latency histogram, published when it finishes) and the writer's
//! per-stream timestamps. A thread measures itself with `RUSAGE_THREAD`, a process with
//! `RUSAGE_SELF`, both from inside the consumer.
//!
//! Processes are forked (no `exec`) while the harness is single-threaded: the writer thread
//! and any backend helper thread are started only after every child exists (see
//! [`crate::bench::backend::BackendRun::start`]), so a child never inherits a lock held by
//! another thread. A child only runs the backend's consumer loop (plain syscalls and its own
//! allocations) and leaves with `_exit`, without running the parent's destructors or
//! flushing its stdio buffers.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use super::backend::BackendRun;
use super::metrics::{monotonic_ns, Counters, Histogram, Usage, UsageOf, HIST_BUCKETS};
use super::shm::{SharedArray, Zeroable};

/// Bytes asked for by the one read done per event. Several pending bytes of one stream are
/// drained by that single read (the event count is the number of successful reads).
pub const READ_BUF: usize = 64;

/// How consumers are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerMode {
    /// Consumers are threads of the harness process.
    Threads,
    /// Consumers are forked processes (pre-forked server style).
    Processes,
}

impl ConsumerMode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ConsumerMode::Threads => "threads",
            ConsumerMode::Processes => "processes",
        }
    }
}

/// Run phase stored in the shared futex word: consumers are being set up.
pub const PHASE_SETUP: u32 = 0;
/// Run phase: measurement window open, the writer writes.
pub const PHASE_GO: u32 = 1;
/// Run phase: stop (end of the window, or abort).
pub const PHASE_STOP: u32 = 2;

/// Slot state: the consumer is still setting up.
const SLOT_SETUP: u32 = 0;
/// Slot state: set up, waiting for the window to open.
const SLOT_READY: u32 = 1;
/// Slot state: finished, figures published.
const SLOT_DONE: u32 = 2;
/// Slot state: failed; `errno` and `stage` say why.
const SLOT_FAILED: u32 = 3;

/// One consumer's published results, in shared memory. Written by the consumer once, at
/// the end (Relaxed stores followed by a Release store of `state`), read by the harness
/// after the consumer was joined or reaped (Acquire load of `state`).
#[repr(C)]
pub struct Slot {
    state: AtomicU32,
    /// Raw errno of the failure, if any.
    errno: AtomicU32,
    /// 1 = per-consumer setup failed, 2 = the loop failed, 3 = panic.
    stage: AtomicU32,
    counters: [AtomicU64; 6],
    usage: [AtomicU64; 3],
    hist: [AtomicU64; HIST_BUCKETS],
}

// SAFETY: `Slot` is made only of atomic integers, valid when zero, with no pointers.
unsafe impl Zeroable for Slot {}

impl Slot {
    fn fail(&self, stage: u32, err: &io::Error) {
        self.errno
            .store(err.raw_os_error().unwrap_or(0) as u32, Ordering::Relaxed);
        self.stage.store(stage, Ordering::Relaxed);
        self.state.store(SLOT_FAILED, Ordering::Release);
    }

    fn publish(&self, c: &Counters, u: &Usage, h: &Histogram) {
        let cs = [
            c.events,
            c.empty_reads,
            c.read_errors,
            c.waits,
            c.lost,
            c.rearms,
        ];
        for (a, v) in self.counters.iter().zip(cs) {
            a.store(v, Ordering::Relaxed);
        }
        for (a, v) in self.usage.iter().zip([u.cpu_ns, u.vol_csw, u.invol_csw]) {
            a.store(v, Ordering::Relaxed);
        }
        for (a, &v) in self.hist.iter().zip(h.buckets().iter()) {
            if v != 0 {
                a.store(v, Ordering::Relaxed);
            }
        }
    }

    /// The consumer's figures, or a description of its failure.
    fn collect(&self, index: usize) -> Result<(Counters, Usage, Histogram), String> {
        // Acquire pairs with the consumer's Release store of `state`, made after its figures.
        match self.state.load(Ordering::Acquire) {
            SLOT_DONE => {}
            SLOT_FAILED => {
                let stage = match self.stage.load(Ordering::Relaxed) {
                    1 => "setup",
                    2 => "loop",
                    _ => "panicked",
                };
                let errno = self.errno.load(Ordering::Relaxed) as i32;
                return Err(format!(
                    "consumer {index} failed in {stage}: {}",
                    io::Error::from_raw_os_error(errno)
                ));
            }
            _ => return Err(format!("consumer {index} did not finish")),
        }
        let c = |i: usize| self.counters[i].load(Ordering::Relaxed);
        let u = |i: usize| self.usage[i].load(Ordering::Relaxed);
        let mut h = Histogram::new();
        for (i, a) in self.hist.iter().enumerate() {
            let n = a.load(Ordering::Relaxed);
            if n != 0 {
                h.add_bucket(i, n);
            }
        }
        Ok((
            Counters {
                events: c(0),
                empty_reads: c(1),
                read_errors: c(2),
                waits: c(3),
                lost: c(4),
                rearms: c(5),
            },
            Usage {
                cpu_ns: u(0),
                vol_csw: u(1),
                invol_csw: u(2),
            },
            h,
        ))
    }
}

/// The memory one run shares between harness, writer and consumers.
pub struct RunShared {
    phase: SharedArray<AtomicU32>,
    slots: SharedArray<Slot>,
    /// Per-stream `CLOCK_MONOTONIC` ns of the latest write (paced mode).
    pub stamps: SharedArray<AtomicU64>,
}

impl RunShared {
    /// Fresh shared memory for `consumers` consumers and `streams` streams.
    pub fn new(consumers: usize, streams: usize) -> io::Result<Self> {
        Ok(Self {
            phase: SharedArray::new(1)?,
            slots: SharedArray::new(consumers)?,
            stamps: SharedArray::new(streams)?,
        })
    }

    /// The run's phase word ([`PHASE_SETUP`], [`PHASE_GO`], [`PHASE_STOP`]).
    pub fn phase(&self) -> &AtomicU32 {
        &self.phase[0]
    }

    /// Sets the phase and wakes everyone waiting on it (shared futex: works across fork).
    pub fn set_phase(&self, p: u32) {
        // Release: consumers that see GO/STOP also see everything the harness did before.
        self.phase().store(p, Ordering::Release);
        let _ = futex::wake(self.phase(), futex::Flags::empty(), i32::MAX as u32);
    }

    /// Waits (bounded) until every consumer is set up. `Err` names the first failure.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for (i, s) in self.slots.iter().enumerate() {
                match s.state.load(Ordering::Acquire) {
                    SLOT_READY => {}
                    SLOT_SETUP => all = false,
                    _ => return s.collect(i).map(|_| ()),
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("consumers not ready after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Sums the published figures of every consumer.
    pub fn collect(&self) -> Result<(Counters, Usage, Histogram), String> {
        let mut total = (Counters::default(), Usage::default(), Histogram::new());
        for (i, s) in self.slots.iter().enumerate() {
            let (c, u, h) = s.collect(i)?;
            total.0 = total.0 + c;
            total.1 = total.1 + u;
            total.2.merge(&h);
        }
        Ok(total)
    }
}

/// Waits (bounded by `timeout`) for the window to open; false if the run stopped instead.
pub fn wait_for_go(phase: &AtomicU32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match phase.load(Ordering::Acquire) {
            PHASE_GO => return true,
            PHASE_STOP => return false,
            _ => {}
        }
        if Instant::now() > deadline {
            return false;
        }
        let tick = futex::Timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        // Spurious returns, EAGAIN (phase already changed) and timeouts just loop.
        let _ = futex::wait(phase, futex::Flags::empty(), PHASE_SETUP, Some(&tick));
    }
}

/// What one [`ConsumerCtx::read_event`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// At least one byte was read: one event.
    Data,
    /// Nothing to read (`EAGAIN`): the notification was stale or taken by another consumer.
    Empty,
    /// End of file or an error other than `EAGAIN`.
    Failed,
}

/// What a consumer loop gets: its identity, the streams, the stop signal, and the
/// harness-owned read-and-count operation.
pub struct ConsumerCtx<'a> {
    index: usize,
    consumers: usize,
    fds: &'a [OwnedFd],
    phase: &'a AtomicU32,
    stamps: Option<&'a [AtomicU64]>,
    batch: usize,
    wait_timeout: Duration,
    counters: Counters,
    latency: Histogram,
}

impl<'a> ConsumerCtx<'a> {
    /// This consumer's index, `0..consumers()`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of consumers in the run.
    pub fn consumers(&self) -> usize {
        self.consumers
    }

    /// Number of streams in the run.
    pub fn streams(&self) -> usize {
        self.fds.len()
    }

    /// Read end of stream `i`.
    pub fn fd(&self, i: usize) -> BorrowedFd<'a> {
        self.fds[i].as_fd()
    }

    /// Streams owned by this consumer when a backend partitions them (`i % consumers ==
    /// index`); every consumer then serves a disjoint share.
    pub fn owned_streams(&self) -> impl Iterator<Item = usize> {
        (self.index..self.fds.len()).step_by(self.consumers)
    }

    /// Most notifications to take per wait (the same for every backend).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Longest a single blocking wait may last, so that the stop signal is seen in time.
    pub fn wait_timeout(&self) -> Duration {
        self.wait_timeout
    }

    /// True once the run is over: the loop must return promptly.
    #[inline]
    pub fn should_stop(&self) -> bool {
        // Relaxed: only a flag; nothing is published with it.
        self.phase.load(Ordering::Relaxed) != PHASE_GO
    }

    /// The one read per event: reads up to [`READ_BUF`] bytes from stream `i` (nonblocking)
    /// and counts the outcome; in paced mode also records the write-to-read latency.
    #[inline]
    pub fn read_event(&mut self, i: usize) -> ReadOutcome {
        let mut buf = [0u8; READ_BUF];
        loop {
            match rustix::io::read(&self.fds[i], &mut buf) {
                Ok(0) => {
                    self.counters.read_errors += 1;
                    return ReadOutcome::Failed;
                }
                Ok(_) => {
                    self.counters.events += 1;
                    if let Some(stamps) = self.stamps {
                        // Acquire pairs with the writer's Release store made before its write.
                        let t = stamps[i].load(Ordering::Acquire);
                        if t != 0 {
                            self.latency.record(monotonic_ns().saturating_sub(t));
                        }
                    }
                    return ReadOutcome::Data;
                }
                Err(Errno::AGAIN) => {
                    self.counters.empty_reads += 1;
                    return ReadOutcome::Empty;
                }
                Err(Errno::INTR) => continue,
                Err(_) => {
                    self.counters.read_errors += 1;
                    return ReadOutcome::Failed;
                }
            }
        }
    }

    /// Counts one wait for notification (one `epoll_wait`, one `io_uring_enter`, one sweep).
    #[inline]
    pub fn count_wait(&mut self) {
        self.counters.waits += 1;
    }

    /// Counts `n` notifications the backend knows were lost (e.g. CQ overflow drops).
    pub fn count_lost(&mut self, n: u64) {
        self.counters.lost += n;
    }

    /// Counts one re-arm beyond normal operation (e.g. a multishot poll that ended).
    #[inline]
    pub fn count_rearm(&mut self) {
        self.counters.rearms += 1;
    }
}

/// What every consumer shares: the run's memory and settings.
pub struct ConsumerSetup<'a> {
    /// The backend's per-run state.
    pub run: &'a dyn BackendRun,
    /// The run's shared memory.
    pub shared: &'a RunShared,
    /// Read ends of the streams.
    pub fds: &'a [OwnedFd],
    /// Number of consumers.
    pub consumers: usize,
    /// Notifications per wait.
    pub batch: usize,
    /// Longest single wait.
    pub wait_timeout: Duration,
    /// Whether to measure write-to-read latency.
    pub paced: bool,
    /// Longest wait for the window to open.
    pub gate_timeout: Duration,
}

/// The body of consumer `index`, thread or process: per-consumer setup, ready, wait for
/// the window, run the loop, publish. Never panics (a panic is caught and published).
pub fn consumer_body(setup: &ConsumerSetup<'_>, index: usize, who: UsageOf) {
    let slot = &setup.shared.slots[index];
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut lp = match setup.run.consumer(index) {
            Ok(lp) => lp,
            Err(e) => return slot.fail(1, &e),
        };
        slot.state.store(SLOT_READY, Ordering::Release);
        if !wait_for_go(setup.shared.phase(), setup.gate_timeout) {
            slot.publish(&Counters::default(), &Usage::default(), &Histogram::new());
            slot.state.store(SLOT_DONE, Ordering::Release);
            return;
        }
        let mut ctx = ConsumerCtx {
            index,
            consumers: setup.consumers,
            fds: setup.fds,
            phase: setup.shared.phase(),
            stamps: setup.paced.then_some(&setup.shared.stamps[..]),
            batch: setup.batch,
            wait_timeout: setup.wait_timeout,
            counters: Counters::default(),
            latency: Histogram::new(),
        };
        let before = Usage::now(who);
        let res = lp.run(&mut ctx);
        let used = Usage::now(who).since(before);
        drop(lp);
        slot.publish(&ctx.counters, &used, &ctx.latency);
        match res {
            Ok(()) => slot.state.store(SLOT_DONE, Ordering::Release),
            Err(e) => slot.fail(2, &e),
        }
    }));
    if result.is_err() {
        slot.fail(3, &io::Error::other("panic"));
    }
}

/// Most consumer processes alive at once (`--consumers` is at most 256).
const MAX_LIVE: usize = 256;

/// The pids of the consumer processes alive now (0 = a free entry), for the handler of
/// [`reap_consumers_on_signal`]: filled by [`fork_consumers`], emptied by [`reap`].
static LIVE: [AtomicI32; MAX_LIVE] = [const { AtomicI32::new(0) }; MAX_LIVE];

/// Signals whose handler [`reap_consumers_on_signal`] installed (a forked child restores
/// their default action).
static HANDLED: [AtomicBool; 2] = [const { AtomicBool::new(false) }; 2];

/// The signals that end a harness run: Ctrl-C and `kill`.
const CLEANUP_SIGNALS: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

fn register_live(pid: libc::pid_t) -> bool {
    LIVE.iter().any(|slot| {
        slot.compare_exchange(0, pid, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// Takes `pid` off the live list; false if the signal handler took it first (it then
/// kills and reaps it).
fn unregister_live(pid: libc::pid_t) -> bool {
    LIVE.iter().any(|slot| {
        slot.compare_exchange(pid, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    })
}

/// The handler of SIGINT and SIGTERM: kills and reaps every live consumer process, then
/// ends the process by the same signal (its default action).
///
/// Only async-signal-safe work: lock-free atomics, `kill`, `waitpid`, `signal`, `raise`.
extern "C" fn kill_consumers_and_die(sig: libc::c_int) {
    for slot in &LIVE {
        let pid = slot.swap(0, Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: `pid` is a child of ours not yet reaped (`reap` takes a pid off the
            // list before it reaps it), so the number cannot have been reused; `kill`
            // and `waitpid` are async-signal-safe, and a null status pointer is allowed.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
    // SAFETY: `signal` and `raise` are async-signal-safe. `sig` is blocked while this
    // handler runs: it is delivered, with its default action (terminate), on return.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// Makes SIGINT and SIGTERM kill and reap the consumer processes of the run in progress
/// before the process ends (by that signal, so the shell sees the usual status). A
/// signal ignored when this is called (e.g. SIGINT of a background job) stays ignored.
/// Consumer processes inherit neither handler, and die with the harness even when it
/// is killed by SIGKILL (see [`fork_consumers`]).
///
/// For the `kevent bench` command: a program using the harness as a library keeps its
/// own signal dispositions unless it calls this.
pub fn reap_consumers_on_signal() -> io::Result<()> {
    for (i, &sig) in CLEANUP_SIGNALS.iter().enumerate() {
        // SAFETY: `sigaction` with a null new action only reads the current one into
        // `old`, a valid out-pointer to a zeroed (valid) `sigaction`.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if old.sa_sigaction == libc::SIG_IGN {
            continue;
        }
        // SAFETY: a zeroed `sigaction` is valid; we set a plain handler (no SA_SIGINFO)
        // that only makes async-signal-safe calls, with an empty extra mask.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = kill_consumers_and_die as extern "C" fn(libc::c_int) as usize;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: `act.sa_mask` is a valid sigset_t to initialise; `act` is a valid
        // action and a null old-action pointer is allowed.
        let rc = unsafe {
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        HANDLED[i].store(true, Ordering::SeqCst);
    }
    Ok(())
}

/// In a freshly forked consumer: the default action back for the signals the harness
/// handles (the parent's handler and its list of pids are not the child's), and death
/// with the parent: SIGKILL when the harness ends, however it ends.
fn child_signal_setup(parent: libc::pid_t) {
    for (i, &sig) in CLEANUP_SIGNALS.iter().enumerate() {
        if HANDLED[i].load(Ordering::SeqCst) {
            // SAFETY: setting the default action of a signal is always sound.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; `getppid` and `_exit` are always
    // sound. If the parent died before the prctl, the child was already re-parented and
    // leaves at once, as the death signal would have made it.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
    }
}

/// Forks one child process per consumer; each runs [`consumer_body`] and `_exit`s.
///
/// Must be called while the harness is single-threaded (see the module docs). Each child
/// gets SIGKILL when the thread that forked it ends (`PR_SET_PDEATHSIG`): call this from
/// the thread that lives as long as the run (the harness calls it from the main thread),
/// and no consumer outlives a harness that was killed. The children are on the list that
/// [`reap_consumers_on_signal`]'s handler kills and reaps until [`reap`] reaps them.
pub fn fork_consumers(setup: &ConsumerSetup<'_>) -> io::Result<Vec<libc::pid_t>> {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: `getpid` is always sound.
    let parent = unsafe { libc::getpid() };
    let mut pids = Vec::with_capacity(setup.consumers);
    for index in 0..setup.consumers {
        // SAFETY: the harness is single-threaded here (writer and helper threads start
        // later), so the child inherits no lock held by another thread; it runs only the
        // consumer body and leaves with `_exit`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let err = io::Error::last_os_error();
            setup.shared.set_phase(PHASE_STOP);
            let _ = reap(&pids, Duration::from_secs(5));
            return Err(err);
        }
        if pid == 0 {
            child_signal_setup(parent);
            consumer_body(setup, index, UsageOf::Process);
            // SAFETY: `_exit` ends the child without running the parent's atexit handlers
            // or destructors; always sound to call.
            unsafe { libc::_exit(0) };
        }
        pids.push(pid);
        // With more than MAX_LIVE at once, a child off the list is still reaped by
        // `reap` and dies with the harness; only the signal handler does not know it.
        let _ = register_live(pid);
    }
    Ok(pids)
}

/// Waits for the children (bounded by `timeout`, then `SIGKILL`); `Err` if any did not exit
/// cleanly.
pub fn reap(pids: &[libc::pid_t], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut problems = Vec::new();
    for &pid in pids {
        let mut status = 0;
        loop {
            if exited(pid) {
                // Off the handler's list before it is reaped, so that the handler never
                // signals a pid that may have been reused. If the handler took it first,
                // it reaps it, and the process is ending anyway.
                unregister_live(pid);
                // SAFETY: `pid` is our own child, exited; `status` is a valid out-pointer.
                let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
                if rc == pid && !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                    problems.push(format!("consumer process {pid} ended with status {status}"));
                }
                break;
            }
            if Instant::now() > deadline {
                unregister_live(pid);
                // SAFETY: signalling and reaping our own child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                problems.push(format!("consumer process {pid} killed after {timeout:?}"));
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// True once child `pid` has exited (or cannot be waited for: not our child, or already
/// reaped), without reaping it.
fn exited(pid: libc::pid_t) -> bool {
    // SAFETY: a zeroed `siginfo_t` is a valid out-buffer; `waitid` with WNOWAIT only
    // looks at our child `pid`, leaving it waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc != 0 || info.si_pid() != 0
    }
}
