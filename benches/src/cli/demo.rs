//! `kevent demo`: a writer thread fills N pipes at random; workers — processes attached
//! through the queue's socket, or threads — take the readiness events from one queue and
//! drain the pipes; every second a line of per-worker counts, at the end an exact account
//! (bytes written == bytes read).
//!
//! Worker processes are this same executable run as `kevent demo --worker SOCKET PID`:
//! they [`Queue::connect`] to the socket and open the pipes they are told about through
//! `/proc/PID/fd/N` (the event's id is the creator's fd number). They report their
//! cumulative counts on stdout, one line each 50 ms, and stop when their stdin closes.

use std::collections::hash_map::{Entry, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};

use kevent::{Interest, Queue, Source, Token, Trigger};

/// What `kevent demo --help` says above the options.
pub const LONG_ABOUT: &str = "\
Registers N pipes in one queue, writes to them at random from a writer thread for S
seconds while workers wait on the queue and drain the pipes they are told about, prints
per-worker event counts every second, then checks that every byte written was read.

Workers are processes (this executable, run as `kevent demo --worker SOCKET PID`) that
attach to the queue through its Unix socket; with --threads, threads of this process.";

/// The options of `kevent demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    #[arg(
        long,
        value_name = "N",
        default_value_t = 64,
        hide_default_value = true,
        allow_negative_numbers = true,
        value_parser = |v: &str| in_range(v, 1..=4096),
        help = "pipes to register (default 64, 1..=4096)"
    )]
    pipes: usize,
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        hide_default_value = true,
        allow_negative_numbers = true,
        value_parser = |v: &str| in_range(v, 1..=64),
        help = "workers (default 4, 1..=64)"
    )]
    workers: usize,
    #[arg(
        long,
        value_name = "S",
        default_value_t = 3.0,
        hide_default_value = true,
        allow_negative_numbers = true,
        value_parser = seconds,
        help = "how long the writer runs (default 3, at most 3600)"
    )]
    seconds: f64,
    #[arg(long, help = "worker threads instead of worker processes")]
    threads: bool,
    #[arg(long, help = "register edge-triggered (default: level-triggered)")]
    edge: bool,
    /// A worker process of a demo: `--worker SOCKET PID`, alone.
    #[arg(
        long,
        hide = true,
        exclusive = true,
        num_args = 2,
        value_names = ["SOCKET", "PID"]
    )]
    worker: Option<Vec<String>>,
}

fn in_range(v: &str, range: std::ops::RangeInclusive<usize>) -> Result<usize, String> {
    let n: usize = v
        .parse()
        .map_err(|_| format!("{v:?} is not a valid value"))?;
    if !range.contains(&n) {
        return Err(format!("{n} is not in {range:?}"));
    }
    Ok(n)
}

fn seconds(v: &str) -> Result<f64, String> {
    let s: f64 = v
        .parse()
        .map_err(|_| format!("{v:?} is not a valid value"))?;
    if !(s.is_finite() && s > 0.0 && s <= 3600.0) {
        return Err(format!("{s} is not in (0, 3600]"));
    }
    Ok(s)
}

#[derive(Debug)]
struct Options {
    pipes: usize,
    workers: usize,
    seconds: f64,
    edge: bool,
    threads: bool,
}

enum Parsed {
    Demo(Options),
    Worker { socket: PathBuf, owner: u32 },
}

impl DemoArgs {
    fn parsed(self) -> Result<Parsed, String> {
        if let Some(w) = self.worker {
            let owner = w[1]
                .parse()
                .map_err(|_| format!("--worker PID: {:?} is not a valid value", w[1]))?;
            return Ok(Parsed::Worker {
                socket: PathBuf::from(&w[0]),
                owner,
            });
        }
        Ok(Parsed::Demo(Options {
            pipes: self.pipes,
            workers: self.workers,
            seconds: self.seconds,
            edge: self.edge,
            threads: self.threads,
        }))
    }
}

/// Runs `kevent demo` with `args`.
pub fn run(args: DemoArgs) -> ExitCode {
    let result = match args.parsed() {
        Ok(Parsed::Demo(o)) => match stop_on_signal() {
            Ok(()) => demo(&o),
            Err(e) => Err(format!("installing signal handlers: {e}").into()),
        },
        Ok(Parsed::Worker { socket, owner }) => {
            worker_process(&socket, owner).map(|()| Ended::Done { ok: true })
        }
        Err(msg) => return super::out::usage_error("demo", &msg),
    };
    match result {
        Ok(Ended::Done { ok: true }) => ExitCode::SUCCESS,
        Ok(Ended::Done { ok: false }) => ExitCode::from(super::EXIT_FAILURE),
        Ok(Ended::Signal(sig)) => {
            let _ = writeln!(
                std::io::stderr(),
                "{}",
                super::out::error_line(
                    "demo",
                    &format!("stopped by signal {sig}; workers stopped, socket removed")
                )
            );
            ExitCode::from(128u8.saturating_add(sig as u8))
        }
        Ok(Ended::StdoutClosed(e)) => super::out::output_failed("demo", &e),
        Err(e) => super::out::failure("demo", &e.to_string()),
    }
}

/// How a demo ended.
enum Ended {
    /// It ran its course; `ok`: every byte accounted for.
    Done {
        /// The accounting matched and no worker failed.
        ok: bool,
    },
    /// SIGINT or SIGTERM (the number) stopped it early; it cleaned up.
    Signal(i32),
    /// Its stdout was closed (or failed): it stopped early and cleaned up.
    StdoutClosed(std::io::Error),
}

/// The first SIGINT or SIGTERM received by a demo (0: none yet).
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

/// The handler of SIGINT and SIGTERM in a demo: the first one is noted (the demo polls
/// it and stops cleanly: writer, workers, socket); a second one ends the process at once.
/// Only async-signal-safe work: an atomic swap, `signal`, `raise`.
extern "C" fn note_stop_signal(sig: libc::c_int) {
    if STOP_SIGNAL.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: `signal` and `raise` are async-signal-safe; `sig` is delivered with its
        // default action (terminate) when this handler returns.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Makes SIGINT and SIGTERM stop the demo cleanly (see [`note_stop_signal`]); a signal
/// ignored when the demo starts (a background job's SIGINT) stays ignored.
fn stop_on_signal() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed `sigaction` is a valid out-buffer; a null new action only
        // reads the current one.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        if unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if old.sa_sigaction == libc::SIG_IGN {
            continue;
        }
        // SAFETY: a zeroed `sigaction` is valid; the handler is a plain one (no
        // SA_SIGINFO) making only async-signal-safe calls, with an empty extra mask.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = note_stop_signal as extern "C" fn(libc::c_int) as usize;
        act.sa_flags = libc::SA_RESTART;
        // SAFETY: `act.sa_mask` is a valid sigset_t; `act` is a valid action and a null
        // old-action pointer is allowed.
        let rc = unsafe {
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal that asked the demo to stop, if one did.
fn stop_signal() -> Option<i32> {
    Some(STOP_SIGNAL.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

/// The demo's stdout: lines are written and flushed one by one; after the first failure
/// (a reader that went away: `kevent demo | head -1`) nothing more is written and the
/// demo stops early.
#[derive(Default)]
struct Lines {
    failed: Option<std::io::Error>,
}

impl Lines {
    fn line(&mut self, text: impl std::fmt::Display) {
        if self.failed.is_none() {
            if let Err(e) = super::out::write_stdout(&format!("{text}\n")) {
                self.failed = Some(e);
            }
        }
    }

    fn ok(&self) -> bool {
        self.failed.is_none()
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One worker's counters, as the main thread sees them.
#[derive(Default)]
struct Counts {
    events: AtomicU64,
    bytes: AtomicU64,
}

/// A small xorshift generator: the demo needs spread, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads a nonblocking `file` until it would block; returns the bytes read.
fn drain(mut file: &File, buf: &mut [u8]) -> std::io::Result<u64> {
    let mut total = 0;
    loop {
        match file.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A consumer loop: waits, lets `handle` drain the pipe an event names (it returns the
/// bytes read), counts, commits (by dropping the batch), until `stop`.
fn consume(
    queue: &Queue,
    stop: &AtomicBool,
    counts: &Counts,
    mut handle: impl FnMut(&kevent::Event, &mut [u8]) -> std::io::Result<u64>,
) -> Result<(), BoxError> {
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Acquire) {
        // With a timeout, so that the stop flag is seen (a wake-up that finds nobody
        // asleep is not remembered).
        let batch = queue.wait(64, Some(Duration::from_millis(100)))?;
        for ev in &batch {
            let n = handle(&ev, &mut buf)?;
            counts.events.fetch_add(1, Ordering::Relaxed);
            counts.bytes.fetch_add(n, Ordering::Relaxed);
        }
        // The batch commits here: a level-triggered pipe refilled meanwhile is reported
        // again.
    }
    Ok(())
}

/// The `--worker` side: attach, consume, report on stdout until stdin closes.
fn worker_process(socket: &std::path::Path, owner: u32) -> Result<(), BoxError> {
    let queue = Queue::connect(socket)?;
    let stop = AtomicBool::new(false);
    let counts = Counts::default();
    let mut files: HashMap<u64, File> = HashMap::new();
    std::thread::scope(|s| -> Result<(), BoxError> {
        s.spawn(|| {
            // Our stdin is the demo's pipe to us: EOF means stop.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            stop.store(true, Ordering::Release);
        });
        let reporter = s.spawn(|| -> std::io::Result<()> {
            let mut out = std::io::stdout().lock();
            loop {
                let last = stop.load(Ordering::Acquire);
                writeln!(
                    out,
                    "{} {}",
                    counts.events.load(Ordering::Relaxed),
                    counts.bytes.load(Ordering::Relaxed)
                )?;
                out.flush()?;
                if last {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let consumed = consume(&queue, &stop, &counts, |ev, buf| {
            let file = match files.entry(ev.id()) {
                Entry::Occupied(e) => e.into_mut(),
                // The event's id is the creator's fd number of the read end.
                Entry::Vacant(v) => v.insert(
                    std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(format!("/proc/{owner}/fd/{}", ev.id()))?,
                ),
            };
            drain(file, buf)
        });
        stop.store(true, Ordering::Release);
        reporter.join().map_err(|_| "the reporter panicked")??;
        consumed
    })?;
    Ok(())
}

/// The worker processes and their report readers.
struct Processes {
    children: Vec<Child>,
    socket: PathBuf,
}

impl Processes {
    fn spawn(queue: &Queue, n: usize) -> Result<Processes, BoxError> {
        let socket = std::env::temp_dir().join(format!("kevent-demo-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        queue.listen(&socket)?;
        let exe = std::env::current_exe()?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let child = Command::new(&exe)
                .arg("demo")
                .arg("--worker")
                .arg(&socket)
                .arg(std::process::id().to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("starting worker {}: {e}", exe.display()))?;
            children.push(child);
        }
        Ok(Processes { children, socket })
    }
}

fn demo(o: &Options) -> Result<Ended, BoxError> {
    let queue = Queue::builder()
        .capacity(o.pipes.next_power_of_two().max(64))
        .build()?;
    let mut readers = Vec::with_capacity(o.pipes);
    let mut writers = Vec::with_capacity(o.pipes);
    let trigger = if o.edge {
        Trigger::Edge
    } else {
        Trigger::Level
    };
    for i in 0..o.pipes {
        let (r, w) = pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let r = File::from(r);
        queue.add(
            &Source::pipe(&r, Interest::READABLE),
            Token(i as u64),
            trigger,
        )?;
        readers.push(r);
        writers.push(w);
    }
    let pid = std::process::id();
    let mut out = Lines::default();
    let mut procs = if o.threads {
        None
    } else {
        Some(Processes::spawn(&queue, o.workers)?)
    };
    out.line(format_args!(
        "kevent demo: {} pipes ({}-triggered) -> 1 queue ({} entries, pid {pid}, handle fd {}) \
         -> {} worker {}, writer for {:.1}s",
        o.pipes,
        if o.edge { "edge" } else { "level" },
        queue.capacity(),
        queue.as_raw_fd(),
        o.workers,
        if o.threads { "threads" } else { "processes" },
        o.seconds
    ));
    match &procs {
        Some(p) => out.line(format_args!(
            "workers are processes {:?}, attached through {}",
            p.children.iter().map(Child::id).collect::<Vec<_>>(),
            p.socket.display()
        )),
        None => out.line("workers are threads of this process (--threads)"),
    }
    out.line(format_args!(
        "watch the ring with: kevent stat {pid} --watch"
    ));

    let counts: Vec<Counts> = (0..o.workers).map(|_| Counts::default()).collect();
    let written = AtomicU64::new(0);
    let writing = AtomicBool::new(true);
    let stop = AtomicBool::new(false);
    let run_for = Duration::from_secs_f64(o.seconds);
    let started = Instant::now();
    let mut drained_after = Duration::ZERO;
    let mut early = None;

    std::thread::scope(|s| -> Result<(), BoxError> {
        let mut workers = Vec::new();
        match procs.as_mut() {
            None => {
                for c in &counts {
                    let (queue, readers, stop) = (&queue, &readers, &stop);
                    workers.push(s.spawn(move || {
                        consume(queue, stop, c, |ev, buf| {
                            drain(&readers[ev.token().0 as usize], buf)
                        })
                    }));
                }
            }
            Some(p) => {
                for (c, child) in counts.iter().zip(&mut p.children) {
                    let out = child.stdout.take().expect("piped stdout");
                    workers.push(s.spawn(move || -> Result<(), BoxError> {
                        for line in BufReader::new(out).lines() {
                            let line = line?;
                            let mut it = line.split(' ').map(str::parse::<u64>);
                            if let (Some(Ok(e)), Some(Ok(b))) = (it.next(), it.next()) {
                                c.events.store(e, Ordering::Relaxed);
                                c.bytes.store(b, Ordering::Relaxed);
                            }
                        }
                        Ok(())
                    }));
                }
            }
        }
        let writer = {
            let (writers, written, writing) = (&writers, &written, &writing);
            s.spawn(move || -> std::io::Result<()> {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
                let chunk = [b'k'; 256];
                while writing.load(Ordering::Relaxed) {
                    let r = rng.next();
                    let w = &writers[(r % writers.len() as u64) as usize];
                    let len = 1 + (r >> 32) as usize % chunk.len();
                    match rustix::io::write(w, &chunk[..len]) {
                        Ok(n) => {
                            written.fetch_add(n as u64, Ordering::Relaxed);
                        }
                        // That pipe is full: its reader is behind; try another.
                        Err(Errno::AGAIN) | Err(Errno::INTR) => std::thread::yield_now(),
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(())
            })
        };

        let total_read = || {
            counts
                .iter()
                .map(|c| c.bytes.load(Ordering::Relaxed))
                .sum::<u64>()
        };
        let mut header = String::from("   t   events/s");
        for i in 0..o.workers {
            header.push_str(&format!(" {:>9}", format!("worker{i}")));
        }
        header.push_str("      bytes read");
        out.line(header);
        let mut last: Vec<u64> = vec![0; o.workers];
        let deadline = started + run_for;
        for second in 1.. {
            let tick = (started + Duration::from_secs(second)).min(deadline);
            // In steps, so that a signal or a closed stdout stops the demo promptly.
            while stop_signal().is_none() && Instant::now() < tick {
                let left = tick.saturating_duration_since(Instant::now());
                std::thread::sleep(left.min(Duration::from_millis(20)));
            }
            if tick == deadline || stop_signal().is_some() || !out.ok() {
                break;
            }
            if let Some(p) = procs.as_mut() {
                for child in &mut p.children {
                    if let Some(status) = child.try_wait()? {
                        early = Some(format!(
                            "worker process {} ended early with {status} (is this \
                             executable's main calling kevent_bench::cli::main?)",
                            child.id()
                        ));
                    }
                }
                if early.is_some() {
                    break;
                }
            }
            let now: Vec<u64> = counts
                .iter()
                .map(|c| c.events.load(Ordering::Relaxed))
                .collect();
            let delta: Vec<u64> = now.iter().zip(&last).map(|(n, l)| n - l).collect();
            let mut line = format!("{:>3}s {:>10}", second, delta.iter().sum::<u64>());
            for d in &delta {
                line.push_str(&format!(" {d:>9}"));
            }
            line.push_str(&format!(" {:>15}", total_read()));
            out.line(line);
            last = now;
            if !out.ok() {
                break;
            }
        }
        writing.store(false, Ordering::Relaxed);
        writer.join().map_err(|_| "the writer panicked")??;
        let stopped = Instant::now();
        let target = written.load(Ordering::Relaxed);
        // Every byte written sits in a pipe whose event is pending or being handled: the
        // workers get to all of it. Give them up to 10 s (unless the demo is cut short).
        while early.is_none()
            && stop_signal().is_none()
            && out.ok()
            && total_read() < target
            && stopped.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        drained_after = stopped.elapsed();
        stop.store(true, Ordering::Release);
        if let Some(p) = procs.as_mut() {
            for child in &mut p.children {
                drop(child.stdin.take()); // EOF: the worker stops and reports once more
            }
        }
        for w in workers {
            w.join().map_err(|_| "a worker panicked")??;
        }
        Ok(())
    })?;
    let mut failed_workers = 0;
    if let Some(p) = procs.as_mut() {
        for child in &mut p.children {
            let status = child.wait()?;
            // A Ctrl-C reaches the workers too (same process group): not their failure.
            if !status.success() && stop_signal().is_none() {
                eprintln!("worker process {} ended with {status}", child.id());
                failed_workers += 1;
            }
        }
    }
    if let Some(why) = early {
        return Err(why.into());
    }
    // Cut short: the writer and the workers are stopped and waited for; the socket goes
    // with the queue when this returns.
    if let Some(sig) = stop_signal() {
        return Ok(Ended::Signal(sig));
    }
    if let Some(e) = out.failed.take() {
        return Ok(Ended::StdoutClosed(e));
    }

    let written = written.load(Ordering::Relaxed);
    let read: u64 = counts.iter().map(|c| c.bytes.load(Ordering::Relaxed)).sum();
    let events: u64 = counts
        .iter()
        .map(|c| c.events.load(Ordering::Relaxed))
        .sum();
    let stats = queue.stats();
    let elapsed = started.elapsed().as_secs_f64();
    out.line("");
    out.line(format_args!(
        "writer stopped after {:.1}s; workers drained the rest in {:.1} ms",
        o.seconds,
        drained_after.as_secs_f64() * 1e3
    ));
    out.line(format_args!(
        "events: {events} handled ({:.0}/s); ring: posted {}, coalesced {}, backlogged {}, \
         redelivered {}, lost {}, futex wakes {}",
        events as f64 / elapsed,
        stats.posted,
        stats.coalesced,
        stats.backlogged,
        stats.redelivered,
        stats.lost,
        stats.wake_calls
    ));
    let ok = written == read && stats.lost == 0 && failed_workers == 0;
    out.line(format_args!(
        "accounting: written {written} bytes, read {read} bytes: {}",
        if written != read {
            "MISMATCH"
        } else if stats.lost != 0 {
            "equal, but the ring reports lost events"
        } else if failed_workers != 0 {
            "equal, but worker processes failed"
        } else {
            "equal, nothing lost"
        }
    ));
    match out.failed {
        Some(e) => Ok(Ended::StdoutClosed(e)),
        None => Ok(Ended::Done { ok }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    /// `kevent demo ARGS` as the command line parses it.
    fn parse(args: &[String]) -> Result<Parsed, String> {
        let line = std::iter::once("demo".to_string()).chain(args.iter().cloned());
        match crate::cli::parse(line) {
            Ok(crate::cli::Parsed::Run(crate::cli::Command::Demo(a))) => a.parsed(),
            Ok(other) => Err(format!("not a demo: {other:?}")),
            Err(e) => Err(e.message),
        }
    }

    #[test]
    fn options_are_checked() {
        let Ok(Parsed::Demo(o)) = parse(&args(&[
            "--pipes",
            "8",
            "--workers",
            "2",
            "--seconds",
            "0.5",
            "--threads",
        ])) else {
            panic!("not parsed as a demo")
        };
        assert_eq!(
            (o.pipes, o.workers, o.seconds, o.edge, o.threads),
            (8, 2, 0.5, false, true)
        );
        assert!(parse(&args(&["--pipes", "0"])).is_err());
        assert!(parse(&args(&["--workers"]))
            .err()
            .unwrap()
            .contains("needs a value"));
        assert!(parse(&args(&["--seconds", "x"])).is_err());
        assert!(parse(&args(&["extra"])).is_err());
        assert!(matches!(
            parse(&args(&["--worker", "/tmp/s", "12"])),
            Ok(Parsed::Worker { owner: 12, .. })
        ));
        assert!(parse(&args(&["--worker", "/tmp/s"])).is_err());
        assert!(parse(&args(&["--worker", "/tmp/s", "12", "--edge"])).is_err());
        assert!(parse(&args(&["--worker", "/tmp/s", "x"])).is_err());
    }

    #[test]
    fn a_short_threaded_demo_accounts_for_every_byte() {
        for edge in [false, true] {
            let o = Options {
                pipes: 8,
                workers: 2,
                seconds: 0.3,
                edge,
                threads: true,
            };
            assert!(
                matches!(demo(&o).unwrap(), Ended::Done { ok: true }),
                "edge: {edge}"
            );
        }
    }
}
