//! What a run measures, and how rounds are reduced to medians.
//!
//! Counts come from three places: the consumers' own counters (events, empty reads,
//! waits, ...), the kernel's accounting of each consumer (`getrusage`: CPU time and
//! context switches, taken *inside* the consumer thread or process so that nothing else is
//! included), and the writer thread (`CLOCK_THREAD_CPUTIME_ID`).

use std::ops::Add;

use rustix::time::{clock_gettime, ClockId};

/// Monotonic time in nanoseconds (`clock_gettime(CLOCK_MONOTONIC)`), the clock of the
/// write-to-read latency stamps.
#[inline]
pub fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::ThreadCPUTime);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Whose resource usage to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOf {
    /// The calling thread (`RUSAGE_THREAD`): consumers running as threads.
    Thread,
    /// The calling process (`RUSAGE_SELF`): consumers running as forked processes.
    Process,
}

/// CPU time and context switches, from `getrusage(2)`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// User + system CPU time, nanoseconds.
    pub cpu_ns: u64,
    /// Voluntary context switches (the task slept; each sleep ends in a wake-up).
    pub vol_csw: u64,
    /// Involuntary context switches (the task was preempted).
    pub invol_csw: u64,
}

impl Usage {
    /// Reads the current usage of `who`.
    pub fn now(who: UsageOf) -> Usage {
        let which = match who {
            UsageOf::Thread => libc::RUSAGE_THREAD,
            UsageOf::Process => libc::RUSAGE_SELF,
        };
        // SAFETY: `rusage` is plain old data, valid when zeroed.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `ru` is a valid, writable `struct rusage`; `which` is a valid selector.
        let rc = unsafe { libc::getrusage(which, &mut ru) };
        if rc != 0 {
            return Usage::default();
        }
        let tv_ns = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000_000 + tv.tv_usec as u64 * 1000;
        Usage {
            cpu_ns: tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime),
            vol_csw: ru.ru_nvcsw as u64,
            invol_csw: ru.ru_nivcsw as u64,
        }
    }

    /// `self - earlier`, saturating.
    pub fn since(self, earlier: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            vol_csw: self.vol_csw.saturating_sub(earlier.vol_csw),
            invol_csw: self.invol_csw.saturating_sub(earlier.invol_csw),
        }
    }
}

impl Add for Usage {
    type Output = Usage;

    /// Component-wise sum.
    fn add(self, o: Usage) -> Usage {
        Usage {
            cpu_ns: self.cpu_ns + o.cpu_ns,
            vol_csw: self.vol_csw + o.vol_csw,
            invol_csw: self.invol_csw + o.invol_csw,
        }
    }
}

/// What one consumer counts while it runs (kept in plain locals, published at the end).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Reads that returned at least one byte: the benchmark's "events".
    pub events: u64,
    /// Reads that found nothing (`EAGAIN`).
    pub empty_reads: u64,
    /// Reads that failed otherwise, or hit end-of-file.
    pub read_errors: u64,
    /// Waits for notification (`epoll_wait`, `io_uring_enter`, sweeps of the busy loop).
    pub waits: u64,
    /// Notifications the backend knows it lost (io_uring CQ overflow drops).
    pub lost: u64,
    /// Re-arms done by the backend beyond its normal operation (multishot polls that ended).
    pub rearms: u64,
}

impl Add for Counters {
    type Output = Counters;

    /// Component-wise sum.
    fn add(self, o: Counters) -> Counters {
        Counters {
            events: self.events + o.events,
            empty_reads: self.empty_reads + o.empty_reads,
            read_errors: self.read_errors + o.read_errors,
            waits: self.waits + o.waits,
            lost: self.lost + o.lost,
            rearms: self.rearms + o.rearms,
        }
    }
}

/// Sub-buckets per power of two in [`Histogram`] (16: at most 6.25 % relative error).
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;
/// Largest power of two tracked; larger values land in the last bucket (2^40 ns ≈ 18 min).
const MAX_MSB: u32 = 40;
/// Number of buckets of [`Histogram`].
pub const HIST_BUCKETS: usize = (MAX_MSB - SUB_BITS + 2) as usize * SUB;

/// A log-linear latency histogram in nanoseconds (HdrHistogram's idea, fixed size, no
/// allocation on record).
#[derive(Clone)]
pub struct Histogram {
    buckets: Box<[u64; HIST_BUCKETS]>,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .finish()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: Box::new([0; HIST_BUCKETS]),
            count: 0,
        }
    }

    fn bucket_of(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let msb = (63 - v.leading_zeros()).min(MAX_MSB);
        let v = v.min((1u64 << (MAX_MSB + 1)) - 1);
        let sub = ((v >> (msb - SUB_BITS)) as usize) & (SUB - 1);
        (msb - SUB_BITS + 1) as usize * SUB + sub
    }

    /// The middle of bucket `i`'s value range.
    fn bucket_mid(i: usize) -> u64 {
        if i < SUB {
            return i as u64;
        }
        let msb = (i / SUB) as u32 + SUB_BITS - 1;
        let sub = (i % SUB) as u64;
        let width = 1u64 << (msb - SUB_BITS);
        (1u64 << msb) + sub * width + width / 2
    }

    /// Records one value.
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.buckets[Self::bucket_of(ns)] += 1;
        self.count += 1;
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Raw bucket counts (for publishing through shared memory).
    pub fn buckets(&self) -> &[u64; HIST_BUCKETS] {
        &self.buckets
    }

    /// Adds `n` values to bucket `i` (for rebuilding from shared memory).
    pub fn add_bucket(&mut self, i: usize, n: u64) {
        self.buckets[i] += n;
        self.count += n;
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
    }

    /// The value at quantile `q` (0..=1), `None` if empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Self::bucket_mid(i));
            }
        }
        None
    }
}

/// What the writer thread did during one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriterReport {
    /// Successful one-byte writes.
    pub writes: u64,
    /// Writes refused with `EAGAIN` (stream full: its consumer fell far behind).
    pub full: u64,
    /// Writes that failed otherwise.
    pub errors: u64,
    /// The writer thread's CPU time over the measured window.
    pub cpu_ns: u64,
}

/// Raw totals of one (backend, cell) run.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Measured window (writer started to stop flag), seconds.
    pub seconds: f64,
    /// The writer's counts.
    pub writer: WriterReport,
    /// Consumer counters summed over consumers.
    pub counters: Counters,
    /// Consumer usage summed over consumers, plus the backend's helper threads, if any.
    pub usage: Usage,
    /// The part of `usage` spent in backend helper threads (e.g. a producer thread).
    pub helper: Usage,
    /// Write-to-read latency (paced mode only).
    pub latency: Histogram,
}

/// Per-run figures derived from a [`RunResult`]; the report shows their medians.
#[derive(Debug, Clone, Copy, Default)]
pub struct Derived {
    /// Successful reads per second.
    pub events_per_s: f64,
    /// Writer writes per second.
    pub writes_per_s: f64,
    /// Writer CPU time / window (1.0 = one core fully busy).
    pub writer_cpu: f64,
    /// Consumer (+ helper) CPU nanoseconds per event.
    pub cpu_per_event_ns: f64,
    /// Consumer (+ helper) context switches per event.
    pub csw_per_event: f64,
    /// Consumer (+ helper) voluntary context switches per event: each sleep ends in a wake-up.
    pub wakeups_per_event: f64,
    /// Empty reads / all reads.
    pub empty_share: f64,
    /// Events per wait call.
    pub events_per_wait: f64,
    /// Notifications lost (io_uring CQ overflow) per second.
    pub lost_per_s: f64,
    /// Re-arms of ended multishot polls per second.
    pub rearms_per_s: f64,
    /// Median write-to-read latency, ns (paced mode).
    pub p50_ns: Option<f64>,
    /// 99th percentile write-to-read latency, ns (paced mode).
    pub p99_ns: Option<f64>,
}

impl RunResult {
    /// The derived figures of this run.
    pub fn derived(&self) -> Derived {
        let s = self.seconds.max(1e-9);
        let ev = self.counters.events as f64;
        let per_ev = |x: u64| if ev > 0.0 { x as f64 / ev } else { f64::NAN };
        let reads = self.counters.events + self.counters.empty_reads;
        Derived {
            events_per_s: ev / s,
            writes_per_s: self.writer.writes as f64 / s,
            writer_cpu: self.writer.cpu_ns as f64 / 1e9 / s,
            cpu_per_event_ns: per_ev(self.usage.cpu_ns),
            csw_per_event: per_ev(self.usage.vol_csw + self.usage.invol_csw),
            wakeups_per_event: per_ev(self.usage.vol_csw),
            empty_share: if reads > 0 {
                self.counters.empty_reads as f64 / reads as f64
            } else {
                f64::NAN
            },
            events_per_wait: if self.counters.waits > 0 {
                ev / self.counters.waits as f64
            } else {
                f64::NAN
            },
            lost_per_s: self.counters.lost as f64 / s,
            rearms_per_s: self.counters.rearms as f64 / s,
            p50_ns: self.latency.quantile(0.50).map(|v| v as f64),
            p99_ns: self.latency.quantile(0.99).map(|v| v as f64),
        }
    }
}

/// The median of `v` (mean of the middle two for an even count); NaN when empty. NaNs are
/// ignored.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Medians over the successful rounds of one (cell, backend).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Successful rounds.
    pub rounds: usize,
    /// Medians of each derived figure.
    pub median: Derived,
    /// Lowest events/s over rounds.
    pub events_min: f64,
    /// Highest events/s over rounds.
    pub events_max: f64,
    /// Lowest CPU ns per event over rounds (NaN if no round had an event).
    pub cpu_min: f64,
    /// Highest CPU ns per event over rounds (NaN if no round had an event).
    pub cpu_max: f64,
    /// Total events lost to overflow over all rounds.
    pub lost_total: u64,
    /// Total measured seconds.
    pub seconds_total: f64,
}

impl Summary {
    /// Reduces the rounds of one (cell, backend); `None` when no round succeeded.
    pub fn of(runs: &[RunResult]) -> Option<Summary> {
        if runs.is_empty() {
            return None;
        }
        let d: Vec<Derived> = runs.iter().map(RunResult::derived).collect();
        let med = |f: fn(&Derived) -> f64| median(d.iter().map(f).collect());
        let med_opt = |f: fn(&Derived) -> Option<f64>| {
            let v: Vec<f64> = d.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| median(v))
        };
        let ev: Vec<f64> = d.iter().map(|x| x.events_per_s).collect();
        let cpu: Vec<f64> = d
            .iter()
            .map(|x| x.cpu_per_event_ns)
            .filter(|x| x.is_finite())
            .collect();
        let (cpu_min, cpu_max) = if cpu.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            (
                cpu.iter().copied().fold(f64::INFINITY, f64::min),
                cpu.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            )
        };
        Some(Summary {
            rounds: runs.len(),
            median: Derived {
                events_per_s: med(|x| x.events_per_s),
                writes_per_s: med(|x| x.writes_per_s),
                writer_cpu: med(|x| x.writer_cpu),
                cpu_per_event_ns: med(|x| x.cpu_per_event_ns),
                csw_per_event: med(|x| x.csw_per_event),
                wakeups_per_event: med(|x| x.wakeups_per_event),
                empty_share: med(|x| x.empty_share),
                events_per_wait: med(|x| x.events_per_wait),
                lost_per_s: med(|x| x.lost_per_s),
                rearms_per_s: med(|x| x.rearms_per_s),
                p50_ns: med_opt(|x| x.p50_ns),
                p99_ns: med_opt(|x| x.p99_ns),
            },
            events_min: ev.iter().copied().fold(f64::INFINITY, f64::min),
            events_max: ev.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            cpu_min,
            cpu_max,
            lost_total: runs.iter().map(|r| r.counters.lost).sum(),
            seconds_total: runs.iter().map(|r| r.seconds).sum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{median, Histogram, HIST_BUCKETS};

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn histogram_quantiles_are_within_bucket_precision() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 5_000_000.0 - 1.0).abs() < 0.07, "{p50}");
        assert!((p99 / 9_900_000.0 - 1.0).abs() < 0.07, "{p99}");
    }

    #[test]
    fn histogram_buckets_cover_every_value() {
        for v in [0, 1, 15, 16, 17, 1 << 20, u64::MAX] {
            assert!(Histogram::bucket_of(v) < HIST_BUCKETS, "{v}");
        }
        let mut last = 0;
        for v in (0..1_000_000u64).step_by(97) {
            let b = Histogram::bucket_of(v);
            assert!(b >= last);
            last = b;
        }
    }
}
