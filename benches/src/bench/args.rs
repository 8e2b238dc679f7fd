//! Command line of `kevent bench`.

use std::path::PathBuf;

use super::consumer::ConsumerMode;
use super::pingpong::{DEFAULT_ROUND_TRIPS, QUICK_ROUND_TRIPS};
use super::streams::StreamKind;

/// The first line of `kevent bench --help`, and its line in `kevent --help`.
pub const ABOUT: &str = "the benchmark harness: every notification backend in rotation";

/// What `kevent bench --help` says above the options.
pub const LONG_ABOUT: &str = "\
Eric Dumazet's epoll_bench workload (one writer thread writes one byte to a random
stream, consumers read once per notification), run for every notification backend in
rotation, with fresh streams per run; medians over rounds are reported. Then the
ping-pong latency cell: one AF_UNIX socket pair, one consumer thread blocked in its
backend's wait, a driver doing N one-byte round trips; p50/p99/max round-trip time of
epoll-lt, kevent-lt and kevent-et.";

/// What `kevent bench --help` says below the options.
pub const AFTER_HELP: &str = "\
Progress and the time estimate go to stderr; the report to stdout, the header before
the run and each cell as it ends (a table or CSV; JSON is one document at the end). A
reader of stdout that goes away (`kevent bench | head -3`) stops the run: the consumer
processes are killed and reaped, and the exit code is 0.";

/// A list option's value: one argument, comma-separated (`--streams 100,2000`), not
/// clap's repeated values (a plain `Vec` would be).
type List<T> = Vec<T>;

/// The options of `kevent bench`, as given: `None` where the default (which `--quick`
/// changes) applies. [`Config::from_args`] checks and completes them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BenchArgs {
    #[arg(
        long,
        help = "only the reference cells: pipes, 2000 streams, 1 and 4 consumers
(threads, and processes for 4), 0.5 s runs, 3 rounds, and the
ping-pong cell with 2000 round trips; about a minute"
    )]
    quick: bool,
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        value_parser = |v: &str| positive_f64(v, false),
        help = "measured seconds per run (default 2; quick 0.5)"
    )]
    seconds: Option<f64>,
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = rounds,
        help = "rounds of the rotation A B C ... (default 3)"
    )]
    rounds: Option<usize>,
    #[arg(
        long,
        value_name = "SECS",
        allow_negative_numbers = true,
        value_parser = |v: &str| positive_f64(v, true),
        help = "length of the discarded warm-up run of each backend in each cell,
0 = none (default 0.5; quick 0.2); the ping-pong warm-up run is a
tenth of --pingpong round trips (none if 0)"
    )]
    warmup: Option<f64>,
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = number::<u64>,
        help = "seed of the writer's xorshift stream picker (default 1)"
    )]
    seed: Option<u64>,
    #[arg(
        long,
        value_name = "RATE",
        allow_negative_numbers = true,
        value_parser = paced,
        help = "writer writes RATE bytes/s instead of flat out, and p50/p99
write-to-read latency is reported"
    )]
    paced: Option<f64>,
    #[arg(
        long,
        value_name = "LIST",
        value_parser = |v: &str| list(v, |s| {
            s.parse().ok().filter(|&n: &usize| (1..=1_000_000).contains(&n))
        }),
        help = "stream counts, e.g. 100,2000,9000 (default: those three)"
    )]
    streams: Option<List<usize>>,
    #[arg(
        long,
        value_name = "LIST",
        // `pingpong` is not a stream kind: it selects the latency cell (`None` here).
        value_parser = |v: &str| list(v, |s| match s {
            "pingpong" => Some(None),
            _ => StreamKind::parse(s).map(Some),
        }),
        help = "pipe,unix,tcp,pingpong (default: all; quick: pipe,pingpong);
pingpong is the latency cell, e.g. `--kinds pingpong` runs it alone"
    )]
    kinds: Option<List<Option<StreamKind>>>,
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = pingpong,
        help = "round trips per ping-pong run (default 10000; quick 2000);
0 = no ping-pong cell"
    )]
    pingpong: Option<usize>,
    #[arg(
        long,
        value_name = "LIST",
        value_parser = |v: &str| list(v, |s| {
            s.parse().ok().filter(|&n: &usize| (1..=256).contains(&n))
        }),
        help = "consumer counts, e.g. 1,2,4 (default: those three)"
    )]
    consumers: Option<List<usize>>,
    #[arg(
        long,
        value_name = "LIST",
        value_parser = |v: &str| list(v, |s| match s {
            "threads" => Some(ConsumerMode::Threads),
            "processes" => Some(ConsumerMode::Processes),
            _ => None,
        }),
        help = "threads,processes (default: both; process cells are run for
2 or more consumers unless processes is the only mode)"
    )]
    mode: Option<List<ConsumerMode>>,
    #[arg(
        long,
        value_name = "LIST",
        value_parser = |v: &str| list(v, |s| Some(s.to_string())),
        help = "backend names (default: all; see --list)"
    )]
    backends: Option<List<String>>,
    #[arg(
        long,
        value_name = "N",
        allow_negative_numbers = true,
        value_parser = batch,
        help = "notifications taken per wait, for every backend (default 1024)"
    )]
    batch: Option<usize>,
    #[arg(
        long,
        value_name = "FMT",
        value_parser = format,
        help = "table, csv or json (default table)"
    )]
    format: Option<Format>,
    #[arg(
        long,
        value_name = "PATH",
        help = "also write an SVG bar chart of the throughput cells: events/s and
CPU per event (consumers + helper threads), medians with min–max
whiskers, one scale per metric for every cell, the settings; the
directory is checked before anything runs"
    )]
    svg: Option<PathBuf>,
    #[arg(long, help = "list the backends and the workloads, and exit")]
    list: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

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
        }
    }

    /// The settings of `args`: the defaults (of `--quick` if given) where an option is
    /// not given. `Err` for options that contradict each other (a bad command line).
    pub fn from_args(args: BenchArgs) -> Result<Config, String> {
        let mut c = Config::defaults(args.quick);
        c.list = args.list;
        let set = |slot: &mut f64, v: Option<f64>| *slot = v.unwrap_or(*slot);
        set(&mut c.seconds, args.seconds);
        set(&mut c.warmup, args.warmup);
        c.rounds = args.rounds.unwrap_or(c.rounds);
        c.seed = args.seed.unwrap_or(c.seed);
        c.paced = args.paced.or(c.paced);
        c.streams = args.streams.unwrap_or(c.streams);
        c.pingpong = args.pingpong.unwrap_or(c.pingpong);
        c.consumers = args.consumers.unwrap_or(c.consumers);
        c.modes = args.mode.unwrap_or(c.modes);
        c.backends = args.backends.or(c.backends);
        c.batch = args.batch.unwrap_or(c.batch);
        c.format = args.format.unwrap_or(c.format);
        c.svg = args.svg.or(c.svg);
        if let Some(kinds) = args.kinds {
            // Without `pingpong` among the kinds, no ping-pong cell.
            if !kinds.iter().any(Option::is_none) {
                c.pingpong = 0;
            }
            c.kinds = kinds.into_iter().flatten().collect();
        }
        if c.kinds.is_empty() && c.pingpong == 0 && !c.list {
            return Err("--kinds pingpong with --pingpong 0: nothing to run".into());
        }
        dedup(&mut c.streams);
        dedup(&mut c.consumers);
        dedup(&mut c.kinds);
        dedup(&mut c.modes);
        Ok(c)
    }
}

// The value parsers: each `Err` is shown after the option's name (`--rounds: must be
// 1..=1000`, see `cli::usage_message`).

fn list<T>(v: &str, f: impl Fn(&str) -> Option<T>) -> Result<Vec<T>, String> {
    let items: Vec<T> = v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| f(s).ok_or_else(|| format!("invalid value `{s}`")))
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err("empty list".into());
    }
    Ok(items)
}

fn number<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse()
        .map_err(|_| format!("`{v}` is not a valid number"))
}

fn positive_f64(v: &str, allow_zero: bool) -> Result<f64, String> {
    let x: f64 = number(v)?;
    if !x.is_finite() || x < 0.0 || (!allow_zero && x == 0.0) || x > 3600.0 * 24.0 {
        return Err(format!("`{v}` is out of range"));
    }
    Ok(x)
}

fn rounds(v: &str) -> Result<usize, String> {
    number(v)
        .ok()
        .filter(|n| (1..=1000).contains(n))
        .ok_or_else(|| "must be 1..=1000".into())
}

fn paced(v: &str) -> Result<f64, String> {
    // Not positive_f64: its ceiling is a day's worth of seconds.
    let r: f64 = number(v)?;
    if !(r.is_finite() && r > 0.0 && r <= 10_000_000.0) {
        return Err(format!(
            "`{v}` is out of range (more than 0, at most 10000000 writes/s)"
        ));
    }
    Ok(r)
}

fn pingpong(v: &str) -> Result<usize, String> {
    let n = number(v)?;
    if n > 10_000_000 {
        return Err("at most 10000000 round trips".into());
    }
    Ok(n)
}

fn batch(v: &str) -> Result<usize, String> {
    number(v)
        .ok()
        .filter(|n| (1..=65536).contains(n))
        .ok_or_else(|| "must be 1..=65536".into())
}

fn format(v: &str) -> Result<Format, String> {
    match v {
        "table" => Ok(Format::Table),
        "csv" => Ok(Format::Csv),
        "json" => Ok(Format::Json),
        _ => Err(format!("`{v}` is not table, csv or json")),
    }
}

/// Parses the arguments after `bench` (as `kevent bench ARGS` does). `Err` carries a
/// message for the user (exit code 2); `--help` is an `Err` too (the command line
/// shows it).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Config, String> {
    let args = std::iter::once("bench".to_string()).chain(args);
    match crate::cli::parse(args) {
        Ok(crate::cli::Parsed::Run(crate::cli::Command::Bench(a))) => Config::from_args(*a),
        Ok(other) => Err(format!("not a bench command line: {other:?}")),
        Err(e) => Err(e.message),
    }
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
