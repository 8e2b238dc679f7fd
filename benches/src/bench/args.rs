//! Command line of `kevent bench`.

use std::path::PathBuf;

use super::consumer::ConsumerMode;
use super::pingpong::{DEFAULT_ROUND_TRIPS, QUICK_ROUND_TRIPS};
use super::streams::StreamKind;

/// Usage text of `kevent bench --help`.
pub const USAGE: &str = "\
Usage: kevent bench [OPTIONS]

Eric Dumazet's epoll_bench workload (one writer thread writes one byte to a random
stream, consumers read once per notification), run for every notification backend in
rotation, with fresh streams per run; medians over rounds are reported. Then the
ping-pong latency cell: one AF_UNIX socket pair, one consumer thread blocked in its
backend's wait, a driver doing N one-byte round trips; p50/p99/max round-trip time of
epoll-lt, kevent-lt and kevent-et.

Options:
  --quick               only the reference cells: pipes, 2000 streams, 1 and 4 consumers
                        (threads, and processes for 4), 0.5 s runs, 3 rounds, and the
                        ping-pong cell with 2000 round trips; about a minute
  --seconds SECS        measured seconds per run (default 2; quick 0.5)
  --rounds N            rounds of the rotation A B C ... (default 3)
  --warmup SECS         length of the discarded warm-up run of each backend in each cell,
                        0 = none (default 0.5; quick 0.2); the ping-pong warm-up run is a
                        tenth of --pingpong round trips (none if 0)
  --seed N              seed of the writer's xorshift stream picker (default 1)
  --paced RATE          writer writes RATE bytes/s instead of flat out, and p50/p99
                        write-to-read latency is reported
  --streams LIST        stream counts, e.g. 100,2000,9000 (default: those three)
  --kinds LIST          pipe,unix,tcp,pingpong (default: all; quick: pipe,pingpong);
                        pingpong is the latency cell, e.g. `--kinds pingpong` runs it alone
  --pingpong N          round trips per ping-pong run (default 10000; quick 2000);
                        0 = no ping-pong cell
  --consumers LIST      consumer counts, e.g. 1,2,4 (default: those three)
  --mode LIST           threads,processes (default: both; process cells are run for
                        2 or more consumers unless processes is the only mode)
  --backends LIST       backend names (default: all; see --list)
  --batch N             notifications taken per wait, for every backend (default 1024)
  --format FMT          table, csv or json (default table)
  --svg PATH            also write an SVG bar chart of the throughput cells: events/s and
                        CPU per event (consumers + helper threads), medians with min–max
                        whiskers, one scale per metric for every cell, the settings; the
                        directory is checked before anything runs
  --list                list the backends and the workloads, and exit
  -h, --help            this text

Progress and the time estimate go to stderr; the report to stdout.
";

/// Options that take a value.
const VALUE_FLAGS: [&str; 14] = [
    "--seconds",
    "--rounds",
    "--warmup",
    "--seed",
    "--paced",
    "--streams",
    "--kinds",
    "--consumers",
    "--mode",
    "--backends",
    "--batch",
    "--format",
    "--svg",
    "--pingpong",
];

/// Output format of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable tables.
    Table,
    /// One CSV row per (cell, backend).
    Csv,
    /// One JSON document.
    Json,
}

/// Parsed options.
#[derive(Debug, Clone)]
pub struct Config {
    /// `--quick` was given.
    pub quick: bool,
    /// Measured seconds per run.
    pub seconds: f64,
    /// Rounds of the rotation.
    pub rounds: usize,
    /// Warm-up seconds per backend per cell (0 = none).
    pub warmup: f64,
    /// Seed of the stream picker.
    pub seed: u64,
    /// Paced writes per second.
    pub paced: Option<f64>,
    /// Stream counts.
    pub streams: Vec<usize>,
    /// Stream kinds of the throughput cells (may be empty when only the ping-pong cell
    /// is asked for).
    pub kinds: Vec<StreamKind>,
    /// Round trips per run of the ping-pong latency cell; 0 = the cell is not run.
    pub pingpong: usize,
    /// Consumer counts.
    pub consumers: Vec<usize>,
    /// Consumer modes.
    pub modes: Vec<ConsumerMode>,
    /// Selected backend names (`None` = all).
    pub backends: Option<Vec<String>>,
    /// Notifications per wait.
    pub batch: usize,
    /// Report format.
    pub format: Format,
    /// SVG output path.
    pub svg: Option<PathBuf>,
    /// `--list` was given.
    pub list: bool,
    /// `--help` was given.
    pub help: bool,
}

impl Config {
    fn defaults(quick: bool) -> Config {
        Config {
            quick,
            seconds: if quick { 0.5 } else { 2.0 },
            rounds: 3,
            warmup: if quick { 0.2 } else { 0.5 },
            seed: 1,
            paced: None,
            streams: if quick {
                vec![2000]
            } else {
                vec![100, 2000, 9000]
            },
            kinds: if quick {
                vec![StreamKind::Pipe]
            } else {
                StreamKind::ALL.to_vec()
            },
            pingpong: if quick {
                QUICK_ROUND_TRIPS
            } else {
                DEFAULT_ROUND_TRIPS
            },
            consumers: if quick { vec![1, 4] } else { vec![1, 2, 4] },
            modes: vec![ConsumerMode::Threads, ConsumerMode::Processes],
            backends: None,
            batch: 1024,
            format: Format::Table,
            svg: None,
            list: false,
            help: false,
        }
    }
}

fn list<T>(flag: &str, v: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    let items: Result<Vec<T>, String> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| f(s).ok_or_else(|| format!("{flag}: invalid value `{s}`")))
        .collect();
    let items = items?;
    if items.is_empty() {
        return Err(format!("{flag}: empty list"));
    }
    Ok(items)
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("{flag}: `{v}` is not a valid number"))
}

fn positive_f64(flag: &str, v: &str, allow_zero: bool) -> Result<f64, String> {
    let x: f64 = number(flag, v)?;
    if !x.is_finite() || x < 0.0 || (!allow_zero && x == 0.0) || x > 3600.0 * 24.0 {
        return Err(format!("{flag}: `{v}` is out of range"));
    }
    Ok(x)
}

/// Parses the arguments after `bench`. `Err` carries a message for the user (exit code 2).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Config, String> {
    let args: Vec<String> = args.into_iter().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let mut c = Config::defaults(quick);
    // `None` until `--kinds` is given: then whether it named `pingpong`.
    let mut pingpong_kind: Option<bool> = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = match flag.as_str() {
            "--quick" | "--list" | "-h" | "--help" | "--bench" => false,
            f if VALUE_FLAGS.contains(&f) => true,
            _ => return Err(format!("unknown option `{arg}`")),
        };
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => it.next().ok_or_else(|| format!("{flag} needs a value"))?,
            }
        } else {
            if inline.is_some() {
                return Err(format!("{flag} takes no value"));
            }
            String::new()
        };
        let v = value.as_str();
        match flag.as_str() {
            "--quick" | "--bench" => {}
            "--list" => c.list = true,
            "-h" | "--help" => c.help = true,
            "--seconds" => c.seconds = positive_f64("--seconds", v, false)?,
            "--warmup" => c.warmup = positive_f64("--warmup", v, true)?,
            "--rounds" => {
                c.rounds = number("--rounds", v)?;
                if c.rounds == 0 || c.rounds > 1000 {
                    return Err("--rounds: must be 1..=1000".into());
                }
            }
            "--seed" => c.seed = number("--seed", v)?,
            "--paced" => {
                // Not positive_f64: its ceiling is a day's worth of seconds.
                let r: f64 = number("--paced", v)?;
                if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) {
                    return Err(format!(
                        "--paced: `{v}` is out of range (more than 0, at most 10000000 writes/s)"
                    ));
                }
                c.paced = Some(r);
            }
            "--streams" => {
                c.streams = list("--streams", v, |s| {
                    s.parse()
                        .ok()
                        .filter(|&n: &usize| (1..=1_000_000).contains(&n))
                })?
            }
            "--kinds" => {
                // `pingpong` is not a stream kind: it selects the latency cell.
                let kinds = list("--kinds", v, |s| match s {
                    "pingpong" => Some(None),
                    _ => StreamKind::parse(s).map(Some),
                })?;
                pingpong_kind = Some(kinds.iter().any(Option::is_none));
                c.kinds = kinds.into_iter().flatten().collect();
            }
            "--pingpong" => {
                c.pingpong = number("--pingpong", v)?;
                if c.pingpong > 10_000_000 {
                    return Err("--pingpong: at most 10000000 round trips".into());
                }
            }
            "--consumers" => {
                c.consumers = list("--consumers", v, |s| {
                    s.parse().ok().filter(|&n: &usize| (1..=256).contains(&n))
                })?
            }
            "--mode" => {
                c.modes = list("--mode", v, |s| match s {
                    "threads" => Some(ConsumerMode::Threads),
                    "processes" => Some(ConsumerMode::Processes),
                    _ => None,
                })?
            }
            "--backends" => c.backends = Some(list("--backends", v, |s| Some(s.to_string()))?),
            "--batch" => {
                c.batch = number("--batch", v)?;
                if !(1..=65536).contains(&c.batch) {
                    return Err("--batch: must be 1..=65536".into());
                }
            }
            "--format" => {
                c.format = match v {
                    "table" => Format::Table,
                    "csv" => Format::Csv,
                    "json" => Format::Json,
                    _ => return Err(format!("--format: `{v}` is not table, csv or json")),
                }
            }
            "--svg" => c.svg = Some(PathBuf::from(v)),
            _ => unreachable!("every flag in VALUE_FLAGS is handled"),
        }
    }
    if pingpong_kind == Some(false) {
        c.pingpong = 0;
    }
    if c.kinds.is_empty() && c.pingpong == 0 && !c.list && !c.help {
        return Err("--kinds pingpong with --pingpong 0: nothing to run".into());
    }
    dedup(&mut c.streams);
    dedup(&mut c.consumers);
    dedup(&mut c.kinds);
    dedup(&mut c.modes);
    Ok(c)
}

/// Checks, before anything is run, that the paths of `cfg` can be written: the `--svg`
/// file's directory exists, is a directory and is writable, and the file is not a
/// directory. `Err` names the path and what is wrong (a bad argument: exit code 2).
pub fn check_paths(cfg: &Config) -> Result<(), String> {
    let Some(path) = &cfg.svg else {
        return Ok(());
    };
    let shown = path.display();
    if path.is_dir() {
        return Err(format!("--svg {shown}: is a directory"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "--svg {shown}: {} is not a directory",
                dir.display()
            ))
        }
        Err(e) => return Err(format!("--svg {shown}: directory {}: {e}", dir.display())),
    }
    let writable = if path.exists() {
        rustix::fs::access(path, rustix::fs::Access::WRITE_OK)
    } else {
        rustix::fs::access(dir, rustix::fs::Access::WRITE_OK)
    };
    writable.map_err(|e| {
        format!(
            "--svg {shown}: cannot write there: {}",
            std::io::Error::from(e)
        )
    })
}

fn dedup<T: PartialEq + Clone>(v: &mut Vec<T>) {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v.drain(..) {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    *v = out;
}

#[cfg(test)]
mod tests {
    use super::{parse, Format};

    fn p(args: &[&str]) -> Result<super::Config, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn paced_takes_rates_up_to_ten_million_writes_per_second() {
        assert_eq!(p(&["--paced", "200000"]).unwrap().paced, Some(200_000.0));
        assert_eq!(p(&["--paced", "1e7"]).unwrap().paced, Some(1e7));
        for bad in ["0", "-5", "2e7", "nan", "x"] {
            assert!(p(&["--paced", bad]).is_err(), "--paced {bad}");
        }
    }

    #[test]
    fn quick_sets_reference_cells_and_explicit_flags_override_it() {
        let c = p(&["--quick", "--seconds", "1"]).unwrap();
        assert_eq!(c.streams, vec![2000]);
        assert_eq!(c.consumers, vec![1, 4]);
        assert_eq!(c.seconds, 1.0);
        assert_eq!(c.pingpong, 2000);
    }

    #[test]
    fn pingpong_is_a_kind_and_its_count_an_option() {
        let full = p(&[]).unwrap();
        assert_eq!(full.pingpong, 10_000);
        assert_eq!(full.kinds.len(), 3);
        let alone = p(&["--quick", "--kinds", "pingpong", "--pingpong=500"]).unwrap();
        assert!(alone.kinds.is_empty());
        assert_eq!(alone.pingpong, 500);
        let mixed = p(&["--kinds", "pipe,pingpong"]).unwrap();
        assert_eq!(mixed.kinds.len(), 1);
        assert_eq!(mixed.pingpong, 10_000);
        assert_eq!(
            p(&["--kinds", "tcp", "--pingpong", "9"]).unwrap().pingpong,
            0
        );
        assert_eq!(p(&["--pingpong", "0"]).unwrap().pingpong, 0);
        assert!(p(&["--kinds", "pingpong", "--pingpong", "0"]).is_err());
        assert!(p(&["--pingpong", "x"]).is_err());
    }

    #[test]
    fn lists_and_inline_values_parse() {
        let c = p(&[
            "--kinds=pipe,tcp",
            "--streams",
            "100,100,9000",
            "--format=json",
        ])
        .unwrap();
        assert_eq!(c.kinds.len(), 2);
        assert_eq!(c.streams, vec![100, 9000]);
        assert_eq!(c.format, Format::Json);
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(p(&["--seconds", "-1"]).is_err());
        assert!(p(&["--kinds", "fifo"]).is_err());
        assert!(p(&["--rounds"]).is_err());
        assert!(p(&["--frobnicate"]).is_err());
        assert!(p(&["--quick=1"]).is_err());
    }

    #[test]
    fn cargo_bench_flag_is_ignored() {
        assert!(p(&["--bench"]).is_ok());
    }
}
