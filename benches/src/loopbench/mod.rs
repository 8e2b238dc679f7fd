//! `kevent loop-bench`: `kevent::Loop` against the event loops it answers — QEMU's
//! eventfd + epoll `AioContext`, a tokio runtime, epoll with millisecond timeouts or a
//! timerfd, and a ppoll loop — side by side in one run (issue 13, item 9).
//!
//! Three experiments, every rival in rotation in each round, medians over rounds:
//!
//! * [`bh`]: a bottom half scheduled from another thread — schedule → run latency of a
//!   sleeping loop (p50/p99), and back-to-back round trips per second;
//! * [`timers`]: lateness of one-shot timers 100 µs apart;
//! * [`iteration`]: one iteration's cost with 10 … 10,000 idle fds;
//! * [`queue_timers`]: timer kevents on a queue against timerfds in an epoll set, 1,000
//!   one-shot timers added from one thread while another waits (issue 20).

pub mod bh;
pub mod iteration;
pub mod qemu;
pub mod queue_timers;
pub mod samples;
pub mod timers;

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use crate::bench::sysinfo::SysInfo;
use crate::cli::out::{failure, output_failed, print_stdout, write_stdout, ReaderWatch};
use samples::{median, Quantiles};

/// What `kevent loop-bench --help` says above the options.
pub const LONG_ABOUT: &str = "\
kevent::Loop (QEMU's AioContext on the queue) against the loops it answers, side by
side in one run, every rival in rotation each round, medians over rounds:

  bottom halves   a callback scheduled from another thread: schedule -> run latency
                  of a sleeping loop (p50/p99), and back-to-back round trips per
                  second; against an eventfd+epoll loop with QEMU's notify_me
                  handshake and tokio's Handle::spawn (current-thread runtime)
  timers          lateness of one-shot timers 100 us apart, armed from the callback;
                  against epoll_wait with ms timeouts (rounded up, as QEMU did) and
                  epoll + a timerfd
  iteration       one iteration's cost (a self-made readable eventfd: write, wait,
                  read) with 10, 100, 1000 and 10000 idle eventfds registered;
                  against an epoll loop and a ppoll loop
  queue timers    1000 one-shot timer kevents added back to back from one thread,
                  each due 1 ms (then 50 ms) after its ADD, while another thread
                  waits on the queue: lateness (p50/p99); against timerfds in an
                  epoll set";

/// The options of `kevent loop-bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoopBenchArgs {
    #[arg(long, help = "fewer samples and shorter windows (< 30 s)")]
    quick: bool,
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = rounds,
        help = "rounds of the rotation (default 5; quick 3)"
    )]
    rounds: Option<usize>,
    #[arg(
        long,
        value_name = "LIST",
        value_parser = only,
        help = "run only these experiments: bh,timers,iteration,queue-timers"
    )]
    only: Option<u8>,
}

fn rounds(v: &str) -> Result<usize, String> {
    let n: usize = v
        .parse()
        .map_err(|_| format!("{v:?} is not a valid value"))?;
    if n == 0 || n > 1000 {
        return Err(format!("{n} is out of range (1 to 1000)"));
    }
    Ok(n)
}

/// `--only LIST` as a bit set of [`EXPERIMENTS`].
fn only(list: &str) -> Result<u8, String> {
    let mut bits = 0u8;
    for name in list.split(',') {
        let bit = EXPERIMENTS
            .iter()
            .position(|&e| e == name)
            .ok_or_else(|| format!("no experiment {name:?}"))?;
        bits |= 1 << bit;
    }
    Ok(bits)
}

/// Idle-fd counts of the iteration experiment.
pub const IDLE_FDS: [usize; 4] = [10, 100, 1_000, 10_000];
/// The timers' period.
pub const TIMER_PERIOD: Duration = Duration::from_micros(100);

/// Sizes of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Rounds of the rotation.
    pub rounds: usize,
    /// Latency samples per bottom-half run.
    pub bh_samples: usize,
    /// Seconds of back-to-back round trips per bottom-half run.
    pub bh_seconds: f64,
    /// Timers per timer run.
    pub timers: usize,
    /// Seconds per iteration-cost measurement.
    pub iteration_seconds: f64,
    /// Timers per queue-timer run.
    pub queue_timers: usize,
    /// The experiments to run (bit set of [`EXPERIMENTS`]).
    pub only: u8,
}

/// The experiments' names, in `--only`'s bit order.
pub const EXPERIMENTS: [&str; 4] = ["bh", "timers", "iteration", "queue-timers"];

impl Config {
    fn runs(&self, name: &str) -> bool {
        let bit = EXPERIMENTS
            .iter()
            .position(|&e| e == name)
            .expect("an experiment");
        self.only & (1 << bit) != 0
    }
}

impl Config {
    /// The full run.
    pub const FULL: Config = Config {
        rounds: 5,
        bh_samples: 2_000,
        bh_seconds: 0.5,
        timers: 1_000,
        iteration_seconds: 0.2,
        queue_timers: 1_000,
        only: 0b1111,
    };
    /// `--quick`.
    pub const QUICK: Config = Config {
        rounds: 3,
        bh_samples: 300,
        bh_seconds: 0.1,
        timers: 200,
        iteration_seconds: 0.05,
        queue_timers: 200,
        only: 0b1111,
    };
}

impl LoopBenchArgs {
    /// The sizes of the run asked for.
    pub fn config(&self) -> Config {
        let mut cfg = if self.quick {
            Config::QUICK
        } else {
            Config::FULL
        };
        cfg.rounds = self.rounds.unwrap_or(cfg.rounds);
        cfg.only = self.only.unwrap_or(cfg.only);
        cfg
    }
}

/// Parses the arguments after `loop-bench` (as `kevent loop-bench ARGS` does);
/// `Ok(None)` for `--help`.
pub fn parse(args: &[String]) -> Result<Option<Config>, String> {
    let line = std::iter::once("loop-bench".to_string()).chain(args.iter().cloned());
    match crate::cli::parse(line) {
        Ok(crate::cli::Parsed::Run(crate::cli::Command::LoopBench(a))) => Ok(Some(a.config())),
        Ok(_) => Ok(None),
        Err(e) => Err(e.message),
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Per bottom-half rival: the runs, one per round.
    pub bh: Vec<(bh::Rival, Vec<bh::BhRun>)>,
    /// Per timer rival: lateness quantiles per round.
    pub timers: Vec<(timers::Rival, Vec<Quantiles>)>,
    /// Per iteration rival: ns per iteration per idle count, per round.
    pub iteration: Vec<(iteration::Rival, Vec<Vec<f64>>)>,
    /// Per queue-timer rival: lateness quantiles per delay, per round.
    pub queue_timers: Vec<(queue_timers::Rival, Vec<Vec<Quantiles>>)>,
}

/// Runs every experiment; progress on stderr.
pub fn measure(cfg: &Config) -> Result<Report, String> {
    let _ = crate::bench::streams::raise_nofile_limit();
    let mut r = Report {
        bh: bh::Rival::ALL.iter().map(|&v| (v, vec![])).collect(),
        timers: timers::Rival::ALL.iter().map(|&v| (v, vec![])).collect(),
        iteration: iteration::Rival::ALL
            .iter()
            .map(|&v| (v, vec![vec![]; IDLE_FDS.len()]))
            .collect(),
        queue_timers: queue_timers::Rival::ALL
            .iter()
            .map(|&v| (v, vec![vec![]; queue_timers::DELAYS.len()]))
            .collect(),
    };
    for round in 1..=cfg.rounds {
        eprintln!("kevent loop-bench: round {round}/{}", cfg.rounds);
        for (rival, runs) in r.bh.iter_mut().filter(|_| cfg.runs("bh")) {
            runs.push(bh::run(*rival, cfg.bh_samples, cfg.bh_seconds)?);
        }
        for (rival, lat) in r.timers.iter_mut().filter(|_| cfg.runs("timers")) {
            let late = timers::run(*rival, cfg.timers, TIMER_PERIOD)?;
            lat.extend(Quantiles::of(&late));
        }
        for (i, &idle) in IDLE_FDS.iter().enumerate() {
            for (rival, costs) in r.iteration.iter_mut().filter(|_| cfg.runs("iteration")) {
                costs[i].push(iteration::run(*rival, idle, cfg.iteration_seconds)?);
            }
        }
        for (i, &delay) in queue_timers::DELAYS.iter().enumerate() {
            for (rival, lat) in r
                .queue_timers
                .iter_mut()
                .filter(|_| cfg.runs("queue-timers"))
            {
                let late = queue_timers::run(*rival, cfg.queue_timers, delay)?;
                lat[i].extend(Quantiles::of(&late));
            }
        }
    }
    Ok(r)
}

fn us(ns: f64) -> String {
    format!("{:.1}", ns / 1e3)
}

/// The report as text tables (medians over rounds; ratios to the QEMU-style rival).
pub fn render(cfg: &Config, r: &Report, sys: &SysInfo) -> String {
    render_head(cfg, sys) + &render_results(cfg, r)
}

/// The lines above the tables: machine, commit, settings (known before the run).
pub fn render_head(cfg: &Config, sys: &SysInfo) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "kevent loop-bench: kevent::Loop against QEMU-style loops and tokio"
    );
    let _ = writeln!(o, "machine:  {} ({} CPUs)", sys.cpu, sys.nproc);
    let _ = writeln!(o, "kernel:   {}", sys.kernel);
    let _ = writeln!(o, "commit:   {}    date: {}", sys.commit, sys.date);
    let _ = writeln!(
        o,
        "settings: rounds={} bh_samples={} bh_pause={}us bh_seconds={} timers={} \
         timer_period={}us iteration_seconds={} idle_fds={:?} queue_timers={}",
        cfg.rounds,
        cfg.bh_samples,
        bh::PAUSE.as_micros(),
        cfg.bh_seconds,
        cfg.timers,
        TIMER_PERIOD.as_micros(),
        cfg.iteration_seconds,
        IDLE_FDS,
        cfg.queue_timers
    );
    o
}

/// The tables of the experiments that ran.
pub fn render_results(cfg: &Config, r: &Report) -> String {
    let mut o = String::new();
    if cfg.runs("bh") {
        let bh_medians = |runs: &[bh::BhRun]| {
            let lat: Vec<Quantiles> = runs
                .iter()
                .filter_map(|r| Quantiles::of(&r.latencies))
                .collect();
            let med = |f: fn(&bh::BhRun) -> f64| median(runs.iter().map(f).collect());
            (
                Quantiles::median_of(&lat).unwrap_or_default(),
                med(|r| r.cpu_per_sample_ns),
                med(|r| r.round_trips_per_s),
                med(|r| r.cpu_per_round_trip_ns),
            )
        };
        let reference =
            r.bh.iter()
                .find(|(v, _)| *v == bh::Rival::EpollEventfd)
                .map(|(_, runs)| bh_medians(runs));
        let _ = writeln!(
            o,
            "\n== bottom half scheduled from another thread (medians over rounds) ==\n\
             latency: after a {} µs pause (the loop asleep), µs from schedule to run; CPU: the \
             loop thread's, per hand-off\n\
             {:<38} {:>7} {:>7} {:>8} {:>7} {:>9} {:>12} {:>7} {:>9}",
            bh::PAUSE.as_micros(),
            "rival",
            "p50",
            "p99",
            "max",
            "p99÷Q",
            "CPU µs",
            "round trips/s",
            "÷Q",
            "CPU µs"
        );
        for (rival, runs) in &r.bh {
            let (q, cpu, rts, cpu_rt) = bh_medians(runs);
            let (rp99, rrt) = match reference {
                Some((rq, _, rt, _)) if rq.p99 > 0.0 && rt > 0.0 => (q.p99 / rq.p99, rts / rt),
                _ => (f64::NAN, f64::NAN),
            };
            let _ = writeln!(
                o,
                "{:<38} {:>7} {:>7} {:>8} {:>7.2} {:>9} {:>12.0} {:>7.2} {:>9}",
                rival.name(),
                us(q.p50),
                us(q.p99),
                us(q.max),
                rp99,
                us(cpu),
                rts,
                rrt,
                us(cpu_rt)
            );
        }
    }
    if cfg.runs("timers") {
        let _ = writeln!(
            o,
            "\n== timer lateness, one-shot timers {} µs apart (µs late; medians over rounds) ==\n\
             {:<38} {:>8} {:>8} {:>8}",
            TIMER_PERIOD.as_micros(),
            "rival",
            "p50",
            "p99",
            "max"
        );
        for (rival, lat) in &r.timers {
            let q = Quantiles::median_of(lat).unwrap_or_default();
            let _ = writeln!(
                o,
                "{:<38} {:>8} {:>8} {:>8}",
                rival.name(),
                us(q.p50),
                us(q.p99),
                us(q.max)
            );
        }
    }
    if cfg.runs("iteration") {
        let _ = write!(
            o,
            "\n== one iteration with N idle fds (ns per iteration; medians over rounds) ==\n{:<38}",
            "rival"
        );
        for n in IDLE_FDS {
            let _ = write!(o, " {:>9}", format!("N={n}"));
        }
        let _ = writeln!(o, " {:>12}", "10000 ÷ 10");
        for (rival, costs) in &r.iteration {
            let _ = write!(o, "{:<38}", rival.name());
            let meds: Vec<f64> = costs.iter().map(|c| median(c.clone())).collect();
            for m in &meds {
                let _ = write!(o, " {:>9.0}", m);
            }
            let _ = writeln!(o, " {:>12.2}", meds[meds.len() - 1] / meds[0]);
        }
    }
    if cfg.runs("queue-timers") {
        let _ = write!(
            o,
            "\n== {} one-shot timers added back to back while another thread waits \
             (µs late; medians over rounds) ==\n{:<38}",
            cfg.queue_timers, "rival"
        );
        for d in queue_timers::DELAYS {
            let _ = write!(
                o,
                " {:>21}",
                format!("due +{} ms: p50 / p99", d.as_millis())
            );
        }
        let _ = writeln!(o);
        for (rival, lat) in &r.queue_timers {
            let _ = write!(o, "{:<38}", rival.name());
            for runs in lat {
                let q = Quantiles::median_of(runs).unwrap_or_default();
                let _ = write!(o, " {:>21}", format!("{} / {}", us(q.p50), us(q.p99)));
            }
            let _ = writeln!(o);
        }
    }
    o
}

/// `kevent loop-bench ARGS`.
pub fn run(args: LoopBenchArgs) -> ExitCode {
    let cfg = args.config();
    // The header before the run; a reader that goes meanwhile (`kevent loop-bench |
    // head -3`) stops it at once (exit code 0), not at the end.
    let watch = ReaderWatch::start("loop-bench", || {});
    if let Err(e) = write_stdout(&render_head(&cfg, &SysInfo::gather())) {
        return output_failed("loop-bench", &e);
    }
    let measured = measure(&cfg);
    if let Some(watch) = watch {
        watch.disarm();
    }
    match measured {
        Ok(report) => print_stdout("loop-bench", &render_results(&cfg, &report)),
        Err(e) => failure("loop-bench", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Option<Config>, String> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn arguments() {
        assert_eq!(p(&[]).unwrap(), Some(Config::FULL));
        assert_eq!(p(&["--quick"]).unwrap(), Some(Config::QUICK));
        assert_eq!(p(&["--rounds", "2", "--quick"]).unwrap().unwrap().rounds, 2);
        assert_eq!(p(&["--help"]).unwrap(), None);
        assert!(p(&["--rounds", "0"]).is_err());
        assert!(p(&["--frob"]).is_err());
    }
}
