//! Order statistics of latency samples, and medians over rounds.

/// p50, p99 and maximum of one run, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
}

impl Quantiles {
    /// Of `samples` (ns); `None` if there are none.
    pub fn of(samples: &[u64]) -> Option<Quantiles> {
        if samples.is_empty() {
            return None;
        }
        let mut v = samples.to_vec();
        v.sort_unstable();
        let at = |q: f64| {
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1] as f64
        };
        Some(Quantiles {
            p50: at(0.50),
            p99: at(0.99),
            max: *v.last().expect("not empty") as f64,
        })
    }

    /// The median, field by field, of several runs' quantiles.
    pub fn median_of(runs: &[Quantiles]) -> Option<Quantiles> {
        if runs.is_empty() {
            return None;
        }
        let med = |f: fn(&Quantiles) -> f64| median(runs.iter().map(f).collect());
        Some(Quantiles {
            p50: med(|q| q.p50),
            p99: med(|q| q.p99),
            max: med(|q| q.max),
        })
    }
}

/// The median of `v` (the mean of the middle two for an even count); 0 if empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock of every stamp here and of
/// `kevent::Clock::Monotonic`).
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        let q = Quantiles::of(&v).unwrap();
        assert_eq!((q.p50, q.p99, q.max), (50.0, 99.0, 100.0));
        assert_eq!(Quantiles::of(&[]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
