//! The workload of Eric Dumazet's `epoll_bench`: one writer thread writes ONE byte into a
//! random stream (`xorshift % n`), yielding the CPU every `n` writes; consumers do one
//! nonblocking read per notification.
//!
//! In paced mode (`--paced RATE`) the writer instead writes at a fixed rate, storing a
//! `CLOCK_MONOTONIC` stamp for the stream just before each write, so consumers can measure
//! write-to-read latency (the age of the newest byte when it is read).

use std::fmt;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::{clock_nanosleep_absolute, ClockId};

use super::consumer::{wait_for_go, ConsumerMode, PHASE_GO};
use super::metrics::{monotonic_ns, thread_cpu_ns, WriterReport};
use super::streams::StreamKind;
use super::xorshift::XorShift64;

/// One cell of the benchmark matrix: the same for every backend compared in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// Stream kind.
    pub kind: StreamKind,
    /// Number of streams.
    pub streams: usize,
    /// Number of consumers.
    pub consumers: usize,
    /// Consumers as threads or processes.
    pub mode: ConsumerMode,
}

impl fmt::Display for Cell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {} streams, {} consumer{} ({})",
            self.kind,
            self.streams,
            self.consumers,
            if self.consumers == 1 { "" } else { "s" },
            self.mode.name()
        )
    }
}

/// How the writer writes.
#[derive(Debug, Clone, Copy)]
pub struct WriterPlan {
    /// Seed of the stream picker (the same for every run: every backend sees the same
    /// sequence of streams).
    pub seed: u64,
    /// Writes per second in paced mode; `None` = as fast as possible, yielding every `n`.
    pub paced: Option<f64>,
}

/// Paced mode gives up catching up after falling this far behind (no long bursts).
const PACED_MAX_LAG: Duration = Duration::from_millis(5);

/// The writer thread's body: waits for the window to open, writes until it closes, and
/// reports its counts and CPU time.
pub fn run_writer(
    fds: &[OwnedFd],
    phase: &AtomicU32,
    stamps: &[AtomicU64],
    plan: &WriterPlan,
    gate_timeout: Duration,
) -> WriterReport {
    let mut rep = WriterReport::default();
    if fds.is_empty() || !wait_for_go(phase, gate_timeout) {
        return rep;
    }
    let n = fds.len();
    let mut rng = XorShift64::new(plan.seed);
    let cpu0 = thread_cpu_ns();
    match plan.paced {
        None => {
            let mut since_yield = 0;
            // Relaxed: the phase is only a stop flag here.
            while phase.load(Ordering::Relaxed) == PHASE_GO {
                write_one(&fds[rng.below(n)], &mut rep);
                since_yield += 1;
                if since_yield == n {
                    since_yield = 0;
                    rustix::thread::sched_yield();
                }
            }
        }
        Some(rate) => {
            set_fine_timer_slack();
            let interval = (1e9 / rate).max(1.0) as u64;
            let mut next = monotonic_ns();
            while phase.load(Ordering::Relaxed) == PHASE_GO {
                let i = rng.below(n);
                // Release: a consumer that reads this byte and then loads the stamp with
                // Acquire sees this stamp or a later one.
                stamps[i].store(monotonic_ns(), Ordering::Release);
                write_one(&fds[i], &mut rep);
                next += interval;
                let now = monotonic_ns();
                if next > now {
                    let ts = rustix::thread::Timespec {
                        tv_sec: (next / 1_000_000_000) as i64,
                        tv_nsec: (next % 1_000_000_000) as i64,
                    };
                    let _ = clock_nanosleep_absolute(ClockId::Monotonic, &ts);
                } else if now - next > PACED_MAX_LAG.as_nanos() as u64 {
                    // Far behind (preempted): restart the schedule instead of bursting.
                    next = now;
                }
            }
        }
    }
    rep.cpu_ns = thread_cpu_ns().saturating_sub(cpu0);
    rep
}

#[inline]
fn write_one(fd: &OwnedFd, rep: &mut WriterReport) {
    let r = loop {
        match rustix::io::write(fd, &[1u8]) {
            Err(Errno::INTR) => continue,
            r => break r,
        }
    };
    match r {
        Ok(_) => rep.writes += 1,
        Err(Errno::AGAIN) => rep.full += 1,
        Err(_) => rep.errors += 1,
    }
}

/// Asks for 1 µs timer slack on this thread (default 50 µs) so that paced sleeps end close
/// to their deadline.
fn set_fine_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}
