//! The latency cell: ping-pong over one `AF_UNIX` stream socket pair.
//!
//! The throughput cells measure how many events a backend moves; this one measures how
//! long one wake-up takes. One socket pair (end A, end B), one consumer thread, and the
//! harness thread as the driver, which does `N` round trips:
//!
//! 1. the driver takes a `CLOCK_MONOTONIC` stamp and writes one byte to A;
//! 2. the consumer, blocked in the backend's wait with no timeout, is woken for B, does
//!    one nonblocking read of up to [`READ_BUF`] bytes on B and writes what it read back
//!    on B;
//! 3. the driver's blocking read on A returns the reply; the round-trip time is recorded.
//!
//! There is only ever one byte in flight, so every round trip is one full wake-up of the
//! consumer through the backend under test. The backends are:
//!
//! | name | what the consumer blocks in |
//! |---|---|
//! | `epoll-lt` | `epoll_wait(-1)` on an epoll fd watching B with `EPOLLIN` |
//! | `kevent-lt` | our queue's `next_batch` with no deadline, B registered as a level-triggered `KEVENT_SOCKET` `RECV` kevent; the consumer is in the owning process, as in the throughput cells ([`super::kevent_queue`]) |
//! | `kevent-et` | the same with `KEVENT_REQ_ET` |
//!
//! Nothing is worked around: the consumer never wakes up on a timeout of its own, so a
//! late wake-up shows up as a slow round trip. The driver's read has a safety timeout of
//! [`REPLY_TIMEOUT`] (`SO_RCVTIMEO`) after which the run fails.
//!
//! Each run uses a fresh socket pair and a fresh epoll fd or queue. The backends run in
//! rotation (A B C, A B C, ...) for `--rounds` rounds after a discarded warm-up run of
//! each (a tenth of the round trips, if `--warmup` is not 0); the report shows the medians
//! over rounds of each run's exact p50, p99 and maximum.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use kevent_syscalls::Instance;
use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventFlags};
use rustix::io::Errno;
use rustix::net::{sockopt, AddressFamily, SendFlags, Shutdown, SocketFlags, SocketType};

use super::consumer::READ_BUF;
use super::metrics::{median, monotonic_ns};
use super::streams::StreamKind;

/// Round trips per run in a full run (`--pingpong` overrides).
pub const DEFAULT_ROUND_TRIPS: usize = 10_000;
/// Round trips per run with `--quick`.
pub const QUICK_ROUND_TRIPS: usize = 2_000;
/// The backend ratios are taken against.
pub const REFERENCE: &str = "epoll-lt";
/// The driver gives up on a reply after this long (the run fails).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Round trips at least this long are counted as slow in the report.
pub const SLOW_NS: u64 = 1_000_000;
/// Most notifications taken per wait (only one can be pending; the same for everybody).
const BATCH: usize = 64;
/// Longest time the consumer may take to set up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest time the consumer may take to leave once the driver is done.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A backend of the ping-pong cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingBackend {
    /// Level-triggered epoll, `epoll_wait(-1)`.
    EpollLt,
    /// Our queue, level-triggered kevent.
    KeventLt,
    /// Our queue, `KEVENT_REQ_ET`.
    KeventEt,
}

impl PingBackend {
    /// Every backend, in rotation and report order.
    pub const ALL: [PingBackend; 3] = [
        PingBackend::EpollLt,
        PingBackend::KeventLt,
        PingBackend::KeventEt,
    ];

    /// The name in reports and in `--backends` (the throughput backends' names).
    pub fn name(self) -> &'static str {
        match self {
            PingBackend::EpollLt => "epoll-lt",
            PingBackend::KeventLt => "kevent-lt",
            PingBackend::KeventEt => "kevent-et",
        }
    }

    /// One line saying what the consumer does.
    pub fn describe(self) -> String {
        match self {
            PingBackend::EpollLt => {
                "one epoll fd, EPOLLIN (level-triggered) on end B; consumer blocks in \
                 epoll_wait(-1)"
                    .to_string()
            }
            PingBackend::KeventLt | PingBackend::KeventEt => format!(
                "kevent queue, {} KEVENT_SOCKET RECV kevent on end B; consumer thread of the \
                 owning process blocks in next_batch with no deadline; spin {} µs",
                if self == PingBackend::KeventEt {
                    "KEVENT_REQ_ET"
                } else {
                    "level-triggered"
                },
                super::kevent_queue::spin().as_micros()
            ),
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct PingRun {
    /// Round-trip times in nanoseconds, in order.
    pub samples: Vec<u64>,
    /// Waits of the consumer that returned (one per wake-up).
    pub waits: u64,
    /// Reads of the consumer that found nothing (woken without data).
    pub empty_reads: u64,
}

/// Exact order statistics of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingStats {
    /// Median round trip, ns.
    pub p50_ns: f64,
    /// 99th percentile, ns.
    pub p99_ns: f64,
    /// Longest round trip, ns.
    pub max_ns: f64,
    /// Round trips of at least [`SLOW_NS`].
    pub slow: usize,
}

/// The nearest-rank quantile `q` (0..=1) of sorted `v`.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

impl PingRun {
    /// Its p50, p99, maximum and slow count; `None` without samples.
    pub fn stats(&self) -> Option<PingStats> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v = self.samples.clone();
        v.sort_unstable();
        Some(PingStats {
            p50_ns: quantile(&v, 0.50) as f64,
            p99_ns: quantile(&v, 0.99) as f64,
            max_ns: *v.last().expect("not empty") as f64,
            slow: v.iter().filter(|&&x| x >= SLOW_NS).count(),
        })
    }
}

/// One backend's figures over the rounds of a report.
#[derive(Debug, Clone, Default)]
pub struct PingSummary {
    /// Successful rounds.
    pub rounds: usize,
    /// Round trips measured, all rounds.
    pub round_trips: usize,
    /// Median over rounds of each run's p50, ns.
    pub p50_ns: f64,
    /// Median over rounds of each run's p99, ns.
    pub p99_ns: f64,
    /// Median over rounds of each run's maximum, ns.
    pub max_ns: f64,
    /// Longest round trip of any round, ns.
    pub worst_ns: f64,
    /// Round trips of at least [`SLOW_NS`], all rounds.
    pub slow: usize,
    /// Consumer wake-ups per round trip (median over rounds).
    pub waits_per_rt: f64,
    /// Empty reads, all rounds.
    pub empty_reads: u64,
}

impl PingSummary {
    /// Reduces the successful runs of one backend; `None` when there are none.
    pub fn of(runs: &[PingRun]) -> Option<PingSummary> {
        let stats: Vec<PingStats> = runs.iter().filter_map(PingRun::stats).collect();
        if stats.is_empty() {
            return None;
        }
        let med = |f: fn(&PingStats) -> f64| median(stats.iter().map(f).collect());
        Some(PingSummary {
            rounds: stats.len(),
            round_trips: runs.iter().map(|r| r.samples.len()).sum(),
            p50_ns: med(|s| s.p50_ns),
            p99_ns: med(|s| s.p99_ns),
            max_ns: med(|s| s.max_ns),
            worst_ns: stats.iter().map(|s| s.max_ns).fold(0.0, f64::max),
            slow: stats.iter().map(|s| s.slow).sum(),
            waits_per_rt: median(
                runs.iter()
                    .filter(|r| !r.samples.is_empty())
                    .map(|r| r.waits as f64 / r.samples.len() as f64)
                    .collect(),
            ),
            empty_reads: runs.iter().map(|r| r.empty_reads).sum(),
        })
    }
}

/// One backend's line in the ping-pong report.
#[derive(Debug, Clone)]
pub struct PingEntry {
    /// Backend name.
    pub backend: String,
    /// What its consumer does.
    pub description: String,
    /// Medians over the successful rounds; `None` when every round failed.
    pub summary: Option<PingSummary>,
    /// One message per failed run (warm-up included).
    pub failures: Vec<String>,
}

/// The ping-pong cell's results.
#[derive(Debug, Clone)]
pub struct PingReport {
    /// Round trips per measured run.
    pub round_trips: usize,
    /// Measured rounds.
    pub rounds: usize,
    /// Round trips of the discarded warm-up run of each backend (0 = none).
    pub warmup: usize,
    /// Set when the whole cell was skipped (no ping-pong backend selected).
    pub skipped: Option<String>,
    /// One entry per backend run, in rotation order.
    pub entries: Vec<PingEntry>,
}

impl PingReport {
    /// The summary of the [`REFERENCE`] backend, if it ran.
    pub fn reference(&self) -> Option<&PingSummary> {
        self.entries
            .iter()
            .find(|e| e.backend == REFERENCE)
            .and_then(|e| e.summary.as_ref())
    }
}

/// The consumer's notification mechanism for one run.
enum Waiter {
    /// An epoll fd watching B.
    Epoll(OwnedFd),
    /// A started queue watching B.
    Kevent(Arc<Instance>),
}

impl Waiter {
    fn new(backend: PingBackend, b: &OwnedFd) -> io::Result<Waiter> {
        let fds = std::slice::from_ref(b);
        Ok(match backend {
            PingBackend::EpollLt => {
                Waiter::Epoll(super::epoll::epoll_with(fds, 0..1, EventFlags::IN)?)
            }
            PingBackend::KeventLt | PingBackend::KeventEt => {
                let edge = backend == PingBackend::KeventEt;
                let q = super::kevent_queue::paused_queue_for(StreamKind::Unix, fds, edge)?;
                q.start()?;
                Waiter::Kevent(q)
            }
        })
    }

    /// Makes a consumer blocked for good return (the queue's waiters see `Closed`).
    fn stop(&self) {
        if let Waiter::Kevent(q) = self {
            q.close();
        }
    }
}

/// What the consumer saw in one read.
enum Reply {
    /// Read bytes and wrote them back.
    Echoed,
    /// Nothing to read.
    Empty,
    /// End of file: the driver is done.
    Eof,
}

/// One nonblocking read of up to [`READ_BUF`] bytes on B, and the same bytes written back.
fn reply(b: BorrowedFd<'_>) -> io::Result<Reply> {
    let mut buf = [0u8; READ_BUF];
    let n = loop {
        match rustix::io::read(b, &mut buf) {
            Ok(0) => return Ok(Reply::Eof),
            Ok(n) => break n,
            Err(Errno::AGAIN) => return Ok(Reply::Empty),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut sent = 0;
    while sent < n {
        match rustix::net::send(b, &buf[sent..n], SendFlags::NOSIGNAL) {
            Ok(k) => sent += k,
            Err(Errno::INTR) => {}
            // The driver has at most one byte in flight: B's send buffer cannot be full.
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Reply::Echoed)
}

/// The consumer's counts.
#[derive(Default)]
struct ConsumerCounts {
    waits: u64,
    empty_reads: u64,
}

impl ConsumerCounts {
    /// Handles one notification for B; `true` at end of file.
    fn on_event(&mut self, b: BorrowedFd<'_>) -> io::Result<bool> {
        match reply(b)? {
            Reply::Echoed => Ok(false),
            Reply::Empty => {
                self.empty_reads += 1;
                Ok(false)
            }
            Reply::Eof => Ok(true),
        }
    }
}

/// The consumer thread's loop: wait (no timeout), reply, until end of file on B or the
/// queue is closed.
fn consume(waiter: &Waiter, b: BorrowedFd<'_>, ready: &AtomicBool) -> io::Result<ConsumerCounts> {
    let mut c = ConsumerCounts::default();
    match waiter {
        Waiter::Epoll(ep) => {
            let mut events = Vec::with_capacity(BATCH);
            ready.store(true, Ordering::Release);
            loop {
                events.clear();
                match epoll::wait(ep, spare_capacity(&mut events), None) {
                    Ok(_) => {}
                    Err(Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
                c.waits += 1;
                let mut eof = false;
                for _ in events.iter() {
                    eof |= c.on_event(b)?;
                }
                if eof {
                    return Ok(c);
                }
            }
        }
        Waiter::Kevent(queue) => {
            let ring = queue.ring().clone();
            let me = queue.consumer();
            // No deadline: the consumer sleeps until the queue wakes it, nothing else.
            let spec = kevent_ring::WaitSpec {
                deadline: None,
                spin: super::kevent_queue::spin(),
                return_on_wake: false,
                ..Default::default()
            };
            ready.store(true, Ordering::Release);
            loop {
                let (claim, outcome) = queue.next_batch(BATCH as u64, &spec)?;
                c.waits += 1;
                let mut eof = false;
                for pos in claim.start..claim.end {
                    if ring.take(me, pos).is_some() {
                        eof |= c.on_event(b)?;
                    }
                }
                if !claim.is_empty() {
                    queue.commit_range(claim.start..claim.end);
                }
                match outcome {
                    // Closed by the driver once it is done (or given up).
                    kevent_ring::WaitOutcome::Closed => return Ok(c),
                    kevent_ring::WaitOutcome::Broken => {
                        return Err(io::Error::other("kevent ring broken during the run"))
                    }
                    _ if eof => return Ok(c),
                    _ => {}
                }
            }
        }
    }
}

/// The driver: `n` round trips on A. `Err` names the round trip that failed.
fn drive(a: &OwnedFd, n: usize) -> Result<Vec<u64>, String> {
    let mut samples = Vec::with_capacity(n);
    let mut buf = [0u8; 1];
    for i in 0..n {
        let t0 = monotonic_ns();
        loop {
            match rustix::net::send(a, b"p", SendFlags::NOSIGNAL) {
                Ok(_) => break,
                Err(Errno::INTR) => {}
                Err(e) => return Err(format!("round trip {}: write: {e}", i + 1)),
            }
        }
        loop {
            match rustix::io::read(a, &mut buf) {
                Ok(1) => break,
                Ok(_) => return Err(format!("round trip {}: consumer hung up", i + 1)),
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    return Err(format!(
                        "round trip {}: no reply within {} s",
                        i + 1,
                        REPLY_TIMEOUT.as_secs()
                    ))
                }
                Err(e) => return Err(format!("round trip {}: read: {e}", i + 1)),
            }
        }
        samples.push(monotonic_ns().saturating_sub(t0));
    }
    Ok(samples)
}

/// State shared by the driver and the consumer thread of one run.
struct Shared {
    waiter: Waiter,
    /// End B, the consumer's.
    b: OwnedFd,
    /// The consumer is about to wait for the first time.
    ready: AtomicBool,
    /// The consumer has returned.
    done: AtomicBool,
}

/// Runs `round_trips` round trips through `backend` with a fresh socket pair. `Err` says
/// what failed.
pub fn run_once(backend: PingBackend, round_trips: usize) -> Result<PingRun, String> {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| format!("socketpair: {e}"))?;
    // A: blocking reads with a safety timeout; B: nonblocking, as event loops use it.
    sockopt::set_socket_timeout(&a, sockopt::Timeout::Recv, Some(REPLY_TIMEOUT))
        .map_err(|e| format!("SO_RCVTIMEO: {e}"))?;
    rustix::io::ioctl_fionbio(&b, true).map_err(|e| format!("FIONBIO: {e}"))?;
    let shared = Arc::new(Shared {
        waiter: Waiter::new(backend, &b).map_err(|e| format!("setup: {e}"))?,
        b,
        ready: AtomicBool::new(false),
        done: AtomicBool::new(false),
    });
    let consumer = {
        let sh = shared.clone();
        thread::Builder::new()
            .name("pingpong-consumer".into())
            .spawn(move || {
                let r = consume(&sh.waiter, sh.b.as_fd(), &sh.ready);
                sh.done.store(true, Ordering::Release);
                r
            })
            .map_err(|e| format!("spawning the consumer: {e}"))?
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    while !shared.ready.load(Ordering::Acquire)
        && !shared.done.load(Ordering::Acquire)
        && Instant::now() < deadline
    {
        thread::yield_now();
    }
    let driven = if shared.ready.load(Ordering::Acquire) && !shared.done.load(Ordering::Acquire) {
        drive(&a, round_trips)
    } else {
        Err("the consumer did not get ready".to_string())
    };
    // End of file on B ends the consumer; closing the queue ends a kevent consumer even if
    // that notification never comes.
    let _ = rustix::net::shutdown(&a, Shutdown::Write);
    shared.waiter.stop();
    let deadline = Instant::now() + JOIN_TIMEOUT;
    while !shared.done.load(Ordering::Acquire) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    if !shared.done.load(Ordering::Acquire) {
        // Left behind rather than joined: joining would hang the harness.
        return Err(format!(
            "consumer still blocked {} s after the end (thread left behind){}",
            JOIN_TIMEOUT.as_secs(),
            driven.err().map_or(String::new(), |e| format!("; {e}"))
        ));
    }
    let counts = consumer
        .join()
        .map_err(|_| "consumer thread panicked".to_string())?
        .map_err(|e| format!("consumer: {e}"));
    match (driven, counts) {
        (Ok(samples), Ok(counts)) => Ok(PingRun {
            samples,
            waits: counts.waits,
            empty_reads: counts.empty_reads,
        }),
        (Err(d), Err(c)) => Err(format!("{d}; {c}")),
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => Err(e),
    }
}

/// Runs the cell: `backends` in rotation, a warm-up run of each with `warmup` round
/// trips (0 = none), then `rounds` rounds of `round_trips`. Progress goes to stderr.
pub fn run_all(
    backends: &[PingBackend],
    round_trips: usize,
    rounds: usize,
    warmup: usize,
) -> PingReport {
    progressln!(
        "[ping-pong] unix socketpair, 1 consumer thread, {round_trips} round trips per run, \
         {rounds} rounds{}",
        if warmup > 0 {
            format!(", warm-up {warmup}")
        } else {
            String::new()
        }
    );
    let mut runs: Vec<Vec<PingRun>> = vec![Vec::new(); backends.len()];
    let mut failures: Vec<Vec<String>> = vec![Vec::new(); backends.len()];
    let warm = usize::from(warmup > 0);
    for round in 0..rounds + warm {
        let is_warmup = round < warm;
        if is_warmup {
            progress!("  warm-up:");
        } else {
            progress!("  round {}/{rounds}:", round + 1 - warm);
        }
        let n = if is_warmup { warmup } else { round_trips };
        for (i, &b) in backends.iter().enumerate() {
            match run_once(b, n) {
                Ok(r) => {
                    if let Some(s) = r.stats() {
                        progress!(
                            " {} p99 {:.1}µs max {:.1}µs",
                            b.name(),
                            s.p99_ns / 1e3,
                            s.max_ns / 1e3
                        );
                    }
                    if !is_warmup {
                        runs[i].push(r);
                    }
                }
                Err(e) => {
                    progress!(" {} FAILED", b.name());
                    let what = if is_warmup { "warm-up" } else { "round" };
                    failures[i].push(format!("{what} {}: {e}", round + 1 - warm));
                }
            }
        }
        progressln!();
    }
    let entries = backends
        .iter()
        .enumerate()
        .map(|(i, &b)| PingEntry {
            backend: b.name().to_string(),
            description: b.describe(),
            summary: PingSummary::of(&runs[i]),
            failures: std::mem::take(&mut failures[i]),
        })
        .collect();
    PingReport {
        round_trips,
        rounds,
        warmup,
        skipped: None,
        entries,
    }
}

#[cfg(test)]
mod tests {
    use super::{quantile, run_once, PingBackend, PingRun, PingSummary};

    /// Every backend completes every round trip of a short run, none absurdly slow. No
    /// timing beyond that generous bound: the machine is shared and noisy.
    #[test]
    fn every_backend_completes_200_round_trips() {
        for b in PingBackend::ALL {
            let r = run_once(b, 200).unwrap_or_else(|e| panic!("{}: {e}", b.name()));
            assert_eq!(r.samples.len(), 200, "{}", b.name());
            let s = r.stats().unwrap();
            assert!(s.max_ns < 1e9, "{}: max {} ns", b.name(), s.max_ns);
        }
    }

    #[test]
    fn quantiles_are_nearest_rank_and_summaries_take_medians() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[7], 0.99), 7);
        let run = |k: u64| PingRun {
            samples: (1..=100).map(|x| x * k).collect(),
            waits: 100,
            empty_reads: 0,
        };
        let s = PingSummary::of(&[run(1), run(3), run(2_000_000)]).unwrap();
        assert_eq!(s.rounds, 3);
        assert_eq!(s.round_trips, 300);
        assert_eq!(s.p99_ns, 297.0);
        assert_eq!(s.worst_ns, 200_000_000.0);
        assert_eq!(s.slow, 100);
        assert!(PingSummary::of(&[]).is_none());
    }
}
