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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::thread::futex;

use super::metrics::{monotonic_ns, Counters, Histogram, Usage, HIST_BUCKETS};
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
pub(super) const SLOT_SETUP: u32 = 0;
/// Slot state: set up, waiting for the window to open.
pub(super) const SLOT_READY: u32 = 1;
/// Slot state: finished, figures published.
pub(super) const SLOT_DONE: u32 = 2;
/// Slot state: failed; `errno` and `stage` say why.
pub(super) const SLOT_FAILED: u32 = 3;

/// One consumer's published results, in shared memory. Written by the consumer once, at
/// the end (Relaxed stores followed by a Release store of `state`), read by the harness
/// after the consumer was joined or reaped (Acquire load of `state`).
#[repr(C)]
pub struct Slot {
    pub(super) state: AtomicU32,
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
    pub(super) fn fail(&self, stage: u32, err: &io::Error) {
        self.errno
            .store(err.raw_os_error().unwrap_or(0) as u32, Ordering::Relaxed);
        self.stage.store(stage, Ordering::Relaxed);
        self.state.store(SLOT_FAILED, Ordering::Release);
    }

    pub(super) fn publish(&self, c: &Counters, u: &Usage, h: &Histogram) {
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
    pub(super) slots: SharedArray<Slot>,
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
    pub(super) index: usize,
    pub(super) consumers: usize,
    pub(super) fds: &'a [OwnedFd],
    pub(super) phase: &'a AtomicU32,
    pub(super) stamps: Option<&'a [AtomicU64]>,
    pub(super) batch: usize,
    pub(super) wait_timeout: Duration,
    pub(super) counters: Counters,
    pub(super) latency: Histogram,
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
