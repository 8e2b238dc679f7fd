//! The benchmark harness behind `kevent bench` (and `cargo bench`).
//!
//! It reproduces Eric Dumazet's `epoll_bench`, the benchmark the kevent author published
//! (see `KEVENT.md`): N streams, one writer thread writing one byte to a random stream and
//! yielding every N writes, consumers doing one nonblocking read per notification. Every
//! notification backend ([`backends`]) runs in the same process and the same
//! invocation, cell by cell (stream kind × stream count × consumers × threads/processes).
//!
//! # Fairness rules
//!
//! A benchmark that handicaps a rival is a defect. Every backend gets, in every cell:
//!
//! 1. **the same streams**: same kind and count, created fresh for every run (never reused
//!    from another backend's run), all nonblocking;
//! 2. **the same writes**: the writer's xorshift picker starts from the same seed in every
//!    run, so every backend sees the same sequence of streams;
//! 3. **the same reads**: the harness does the read ([`consumer::ConsumerCtx::read_event`]):
//!    one read of up to 64 bytes per notification, counted identically;
//! 4. **the same batch**: at most `--batch` (default 1024) notifications per wait —
//!    `maxevents` for epoll, CQEs per `io_uring_enter` for io_uring, the same for kevent;
//! 5. **the same consumers**: same number, same mode (threads or forked processes), and no
//!    CPU pinning for anybody;
//! 6. **the same clock and accounting**: CPU time and context switches come from
//!    `getrusage` inside each consumer, plus the backend's helper threads (a producer
//!    thread's work is counted, not hidden);
//! 7. **rotation, not blocks**: A B C … repeated for `--rounds` rounds after a discarded
//!    warm-up run of each backend, so that drift of a noisy machine hits every backend
//!    alike; medians over rounds are reported.
//!
//! # Layout
//!
//! `args` (command line) → `mod.rs` (plan and rotation) → `runner` (one run) →
//! `workload` (writer) + `consumer` (threads or processes) + a backend (`epoll`, `uring`,
//! `busy`; `backend` says how to add one) → `metrics` → `report` / `svg`.
//!
//! After the throughput cells, `pingpong` runs the latency cell (one socket pair, one
//! consumer, round trips; its own loop per backend, see that module) unless `--kinds`
//! leaves it out.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

/// Progress on stderr (`eprint!` without the panic): a stderr that cannot be written,
/// e.g. a pipe whose reader went (`kevent bench 2>&1 | head -1`), does not stop the run.
macro_rules! progress {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

/// `progress!` with a newline.
macro_rules! progressln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod args;
pub mod backend;
pub mod busy;
pub mod consumer;
pub mod epoll;
pub mod json;
pub mod kevent_queue;
pub mod metrics;
pub mod pingpong;
pub mod report;
pub mod runner;
pub mod settings;
pub mod shm;
pub mod spawn;
pub mod streams;
pub mod svg;
pub mod sysinfo;
pub mod uring;
pub mod workload;
pub mod xorshift;

use std::process::ExitCode;

use args::{BenchArgs, Config, Format};
use backend::Backend;
use consumer::ConsumerMode;
use metrics::{RunResult, Summary};
use pingpong::{PingBackend, PingReport};
use report::{CellReport, Entry, Header, Outcome};
use runner::{run_once, RunParams};
use streams::{check_fd_budget, raise_nofile_limit, StreamKind};
use sysinfo::SysInfo;
use workload::{Cell, WriterPlan};

/// The registry: every backend compiled in, in report order. The first cell's order is
/// also the rotation order of every round. It lives here, at the harness's root, so that
/// `backend.rs` (the plug-in traits) names no backend and no backend module is in a
/// circle with it.
pub fn backends() -> Vec<Box<dyn Backend>> {
    let mut list: Vec<Box<dyn Backend>> = Vec::new();
    list.extend(epoll::backends());
    list.extend(uring::backends());
    list.extend(kevent_queue::backends());
    list.push(Box::new(busy::BusySweep));
    list
}

/// Runs `kevent bench` with the arguments that follow `bench` (as `cargo bench` does);
/// returns the exit code (2 for bad arguments).
pub fn main<I: IntoIterator<Item = String>>(args: I) -> ExitCode {
    crate::cli::run(std::iter::once("bench".to_string()).chain(args).collect())
}

/// Runs `kevent bench` with the options `args`; returns the exit code (2 for bad
/// arguments).
pub fn run(args: BenchArgs) -> ExitCode {
    let cfg = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => return crate::cli::out::usage_error("bench", &e),
    };
    if let Err(e) = args::check_paths(&cfg) {
        return crate::cli::out::usage_error("bench", &e);
    }
    let all = backends();
    if cfg.list {
        return crate::cli::out::print_stdout("bench", &list(&all));
    }
    let selected: Vec<&dyn Backend> = match &cfg.backends {
        None => all.iter().map(|b| &**b).collect(),
        Some(names) => {
            if let Some(bad) = names.iter().find(|n| !all.iter().any(|b| b.name() == *n)) {
                let known: Vec<&str> = all.iter().map(|b| b.name()).collect();
                return crate::cli::out::usage_error(
                    "bench",
                    &format!(
                        "--backends: unknown backend `{bad}` (known: {})",
                        known.join(", ")
                    ),
                );
            }
            // Registry order, whatever the order given: it is the rotation order.
            all.iter()
                .filter(|b| names.iter().any(|n| n == b.name()))
                .map(|b| &**b)
                .collect()
        }
    };
    // Installed only here, in the command: a library user of `run_once` keeps its own
    // signal dispositions.
    if let Err(e) = spawn::reap_consumers_on_signal() {
        return crate::cli::out::failure("bench", &format!("installing signal handlers: {e}"));
    }
    let nofile = raise_nofile_limit();
    let sys = SysInfo::gather();
    let throughput = !cells(&cfg).is_empty();
    let header = Header {
        sys,
        settings: settings::of(&cfg, &selected, &nofile),
        backends: if throughput {
            selected
                .iter()
                .map(|b| (b.name().to_string(), b.describe()))
                .collect()
        } else {
            // Only the ping-pong cell: its report section describes its backends.
            Vec::new()
        },
    };

    // The header now, each cell as it ends: a reader that wants the first lines
    // (`kevent bench | head -3`) has them at once, and when it goes, the watch stops the
    // run (consumer processes killed and reaped, exit code 0) instead of letting it run
    // on for minutes until its next write.
    let mut out = Stdout {
        watch: crate::cli::out::ReaderWatch::start("bench", spawn::stop_consumers),
        failed: None,
    };
    match cfg.format {
        Format::Table => out.write(&report::table_head(&header, throughput)),
        Format::Csv => out.write(&report::csv_head(&header)),
        Format::Json => {}
    }
    let reports = run_all(&cfg, &selected, &mut |cell| match cfg.format {
        Format::Table => out.write(&report::table_cell(&header, cell)),
        Format::Csv => out.write(&report::csv_cell(cell)),
        Format::Json => {}
    });
    let ping = (cfg.pingpong > 0).then(|| run_pingpong(&cfg, &selected));
    let ping = ping.as_ref();

    // The rest of the report, then the chart: from here on a reader that goes (having
    // read what it wanted) does not cost the chart.
    if let Some(watch) = out.watch.take() {
        watch.disarm();
    }
    out.write(&match cfg.format {
        Format::Table => ping.map(report::table_ping).unwrap_or_default(),
        Format::Csv => ping.map(report::csv_ping).unwrap_or_default(),
        Format::Json => report::json(&header, &reports, ping),
    });
    if let Some(path) = &cfg.svg {
        if let Err(e) = std::fs::write(path, svg::chart(&header, &reports)) {
            return crate::cli::out::failure("bench", &format!("writing {}: {e}", path.display()));
        }
        progressln!("kevent bench: wrote {}", path.display());
    }
    if let Some(e) = out.failed {
        return crate::cli::out::output_failed("bench", &e);
    }
    let ping_entries = ping.iter().flat_map(|p| &p.entries);
    let ran_any = reports.iter().flat_map(|c| &c.entries).any(|e| {
        matches!(
            e.outcome,
            Outcome::Ran {
                summary: Some(_),
                ..
            }
        )
    }) || ping_entries.clone().any(|e| e.summary.is_some());
    let planned_any = reports
        .iter()
        .flat_map(|c| &c.entries)
        .any(|e| matches!(e.outcome, Outcome::Ran { .. }))
        || ping_entries.clone().next().is_some();
    if planned_any && !ran_any {
        return crate::cli::out::failure("bench", "every run failed");
    }
    ExitCode::SUCCESS
}

/// The report's way to stdout during a run.
struct Stdout {
    /// Ends the process when the reader goes (`None` once the final output is written,
    /// or where stdout is not a pipe or a socket).
    watch: Option<crate::cli::out::ReaderWatch>,
    /// The first failed write; nothing more is written after it.
    failed: Option<std::io::Error>,
}

impl Stdout {
    fn write(&mut self, text: &str) {
        if self.failed.is_some() || text.is_empty() {
            return;
        }
        if let Err(e) = crate::cli::out::write_stdout(text) {
            match &self.watch {
                // The watch's own way out, in case the write saw it first.
                Some(watch) if crate::cli::out::is_broken_pipe(&e) => watch.reader_gone(),
                _ => self.failed = Some(e),
            }
        }
    }
}

/// The text of `kevent bench --list`: the backends and the workloads.
fn list(all: &[Box<dyn Backend>]) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    for b in all {
        let _ = writeln!(o, "{:<15} {}", b.name(), b.describe());
    }
    let _ = writeln!(o, "\nworkloads (--kinds):");
    let _ = writeln!(
        o,
        "  {:<13} throughput cells: epoll_bench over pipes, AF_UNIX socket pairs, \
         loopback TCP; every backend above",
        "pipe,unix,tcp"
    );
    let _ = writeln!(
        o,
        "  {:<13} latency cell: one AF_UNIX socket pair, one consumer thread, N one-byte \
         round trips (--pingpong N); p50/p99/max per backend:",
        "pingpong"
    );
    for b in PingBackend::ALL {
        let _ = writeln!(o, "    {:<13} {}", b.name(), b.describe());
    }
    o
}

/// The cells of the matrix, in report order. Process cells are made for two or more
/// consumers (one consumer process measures the same as one thread) unless processes is
/// the only mode asked for.
pub fn cells(cfg: &Config) -> Vec<Cell> {
    let only_processes = cfg.modes == [ConsumerMode::Processes];
    let mut out = Vec::new();
    for &kind in &cfg.kinds {
        for &streams in &cfg.streams {
            for &consumers in &cfg.consumers {
                for &mode in &cfg.modes {
                    if mode == ConsumerMode::Processes && consumers < 2 && !only_processes {
                        continue;
                    }
                    out.push(Cell {
                        kind,
                        streams,
                        consumers,
                        mode,
                    });
                }
            }
        }
    }
    out
}

/// Rough seconds a run costs beyond its measured window (streams, fork, stop latency).
fn overhead_s(cell: &Cell) -> f64 {
    let per_stream = if cell.kind == StreamKind::Tcp {
        40e-6
    } else {
        4e-6
    };
    0.08 + cell.streams as f64 * per_stream
}

/// What will be run in one cell: `Err` if the whole cell is skipped, else every backend
/// with `Err(reason)` if it is skipped.
type CellPlan<'b> = (
    Cell,
    Result<Vec<(&'b dyn Backend, Result<(), String>)>, String>,
);

/// Plans, estimates, and runs every cell; progress and the estimate go to stderr, and
/// each cell's report to `done` as the cell ends.
fn run_all(
    cfg: &Config,
    selected: &[&dyn Backend],
    done: &mut dyn FnMut(&CellReport),
) -> Vec<CellReport> {
    let plan: Vec<CellPlan<'_>> = cells(cfg)
        .into_iter()
        .map(|cell| {
            let backends = check_fd_budget(cell.streams)
                .map(|()| selected.iter().map(|&b| (b, b.check(&cell))).collect());
            (cell, backends)
        })
        .collect();
    if plan.is_empty() {
        return Vec::new();
    }
    let mut runs = 0usize;
    let mut estimate = 0.0;
    for (cell, backends) in &plan {
        if let Ok(bs) = backends {
            let n = bs.iter().filter(|(_, ok)| ok.is_ok()).count();
            let warm = if cfg.warmup > 0.0 { 1 } else { 0 };
            runs += n * (cfg.rounds + warm);
            estimate += n as f64
                * ((cfg.seconds + overhead_s(cell)) * cfg.rounds as f64
                    + warm as f64 * (cfg.warmup + overhead_s(cell)));
        }
    }
    progressln!(
        "kevent bench: {} cells, {runs} runs ({} s each, {} rounds, warm-up {} s), estimated {:.0} s{}",
        plan.len(),
        cfg.seconds,
        cfg.rounds,
        cfg.warmup,
        estimate,
        if cfg.pingpong > 0 {
            format!(", then the ping-pong cell ({} round trips per run)", cfg.pingpong)
        } else {
            String::new()
        }
    );
    let params = |seconds| RunParams {
        seconds,
        batch: cfg.batch,
        writer: WriterPlan {
            seed: cfg.seed,
            paced: cfg.paced,
        },
    };
    let started = std::time::Instant::now();
    let mut reports = Vec::new();
    for (ci, (cell, backends)) in plan.into_iter().enumerate() {
        let backends = match backends {
            Ok(b) => b,
            Err(why) => {
                progressln!("[cell {}] {cell}: skipped: {why}", ci + 1);
                let report = CellReport {
                    cell,
                    skipped: Some(why),
                    entries: Vec::new(),
                };
                done(&report);
                reports.push(report);
                continue;
            }
        };
        progressln!("[cell {}] {cell}", ci + 1);
        for (b, ok) in &backends {
            if let Err(why) = ok {
                progressln!("  skip {}: {why}", b.name());
            }
        }
        let active: Vec<&dyn Backend> = backends
            .iter()
            .filter(|(_, ok)| ok.is_ok())
            .map(|(b, _)| *b)
            .collect();
        let mut results: Vec<Vec<RunResult>> = vec![Vec::new(); active.len()];
        let mut failures: Vec<Vec<String>> = vec![Vec::new(); active.len()];
        let warm = usize::from(cfg.warmup > 0.0);
        for round in 0..cfg.rounds + warm {
            let is_warmup = round < warm;
            if is_warmup {
                progress!("  warm-up:");
            } else {
                progress!("  round {}/{}:", round + 1 - warm, cfg.rounds);
            }
            let seconds = if is_warmup { cfg.warmup } else { cfg.seconds };
            for (i, b) in active.iter().enumerate() {
                match run_once(*b, &cell, &params(seconds)) {
                    Ok(r) => {
                        progress!(" {} {:.2}M", b.name(), r.derived().events_per_s / 1e6);
                        if !is_warmup {
                            results[i].push(r);
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
        let mut entries = Vec::new();
        let mut k = 0;
        for (b, ok) in backends {
            let outcome = match ok {
                Err(why) => Outcome::Skipped(why),
                Ok(()) => {
                    let o = Outcome::Ran {
                        summary: Summary::of(&results[k]),
                        failures: std::mem::take(&mut failures[k]),
                    };
                    k += 1;
                    o
                }
            };
            entries.push(Entry {
                backend: b.name().to_string(),
                outcome,
            });
        }
        let report = CellReport {
            cell,
            skipped: None,
            entries,
        };
        done(&report);
        reports.push(report);
    }
    progressln!(
        "kevent bench: done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    reports
}

/// Runs the ping-pong latency cell for the selected ping-pong backends (all of them
/// unless `--backends` leaves some out). The warm-up run of each backend has a tenth of
/// the round trips (none with `--warmup 0`).
fn run_pingpong(cfg: &Config, selected: &[&dyn Backend]) -> PingReport {
    let backends: Vec<PingBackend> = PingBackend::ALL
        .into_iter()
        .filter(|b| selected.iter().any(|s| s.name() == b.name()))
        .collect();
    let warmup = if cfg.warmup > 0.0 {
        (cfg.pingpong / 10).max(1)
    } else {
        0
    };
    if backends.is_empty() {
        let names: Vec<&str> = PingBackend::ALL.iter().map(|b| b.name()).collect();
        let why = format!("none of its backends ({}) selected", names.join(", "));
        progressln!("[ping-pong] skipped: {why}");
        return PingReport {
            round_trips: cfg.pingpong,
            rounds: cfg.rounds,
            warmup,
            skipped: Some(why),
            entries: Vec::new(),
        };
    }
    let started = std::time::Instant::now();
    let r = pingpong::run_all(&backends, cfg.pingpong, cfg.rounds, warmup);
    progressln!(
        "kevent bench: ping-pong done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    r
}
