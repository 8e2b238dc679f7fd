//! The stalled worker of the tail-latency run: one worker stops for `pause` every
//! `period` (issue 12, item 5: 200 ms every second).
//!
//! One thread of a process cannot be stopped with `SIGSTOP` (it stops the whole
//! process), so a threaded server stalls its worker from inside: worker 0 sleeps for
//! `pause` right after a wait returned events, holding what it took (a kevent worker
//! that commits before serving, edge-triggered, has committed them by then: see
//! [`kevent_worker::run`](super::kevent_worker::run)).
//! `benches/http/run.sh` stops an nginx worker process with `SIGSTOP`/`SIGCONT` instead.

use std::time::{Duration, Instant};

/// A stall schedule: `pause` every `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// How long the worker stops.
    pub pause: Duration,
    /// How often (from the start of one stop to the start of the next).
    pub period: Duration,
}

impl Stall {
    /// Parses `PAUSE_MS/PERIOD_MS`, e.g. `200/1000`.
    pub fn parse(s: &str) -> Result<Stall, String> {
        let (p, q) = s
            .split_once('/')
            .ok_or_else(|| format!("--stall {s}: expected PAUSE_MS/PERIOD_MS, e.g. 200/1000"))?;
        let ms = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| format!("--stall {s}: {v}: {e}"))
        };
        let (pause, period) = (ms(p)?, ms(q)?);
        if pause >= period {
            return Err(format!(
                "--stall {s}: the pause must be shorter than the period"
            ));
        }
        Ok(Stall { pause, period })
    }
}

/// A worker's clock for its stalls; a worker without a schedule never stalls.
#[derive(Debug)]
pub struct StallClock {
    stall: Option<Stall>,
    next: Instant,
}

impl StallClock {
    /// The clock of a worker that follows `stall` (first stop one period from now).
    pub fn new(stall: Option<Stall>) -> StallClock {
        let period = stall.map_or(Duration::ZERO, |s| s.period);
        StallClock {
            stall,
            next: Instant::now() + period,
        }
    }

    /// Stops the thread for the pause if one is due.
    pub fn check(&mut self) {
        let Some(stall) = self.stall else { return };
        let now = Instant::now();
        if now >= self.next {
            std::thread::sleep(stall.pause);
            self.next = now + stall.period;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pause_over_period() {
        let s = Stall::parse("200/1000").unwrap();
        assert_eq!(s.pause, Duration::from_millis(200));
        assert_eq!(s.period, Duration::from_secs(1));
        assert!(Stall::parse("200").is_err());
        assert!(Stall::parse("1000/200").is_err());
    }
}
