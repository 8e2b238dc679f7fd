//! `kevent stat`: a live view of a queue's ring, read from another process.
//!
//! A ring is a memfd, so any process with the same uid (or root) can map it: we find the
//! memfds of the target process in `/proc/<pid>/fd` (their links read
//! `/memfd:kevent… (deleted)`), open them through those links and attach read-side with
//! [`Ring::attach`], which validates the header first. The view only loads: it takes no
//! consumer record and never writes to the ring.
//!
//! Given a socket path instead, we attach through the queue's control socket
//! ([`kevent_syscalls::Instance::connect`]): that works across users' namespaces where
//! `/proc` does not, but makes this process a consumer of the ring (it claims nothing;
//! its record shows in the table and is freed when it exits).

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal as _};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kevent_ring::{RecordState, Ring, Status};

use kevent::Stats;

/// What `kevent stat --help` says above the options.
pub const LONG_ABOUT: &str = "\
Shows the rings of kevent queues: capacity; the positions kidx (published), cidx
(claimed) and uidx (released) with their kevent (index, over) views; the producer's
backlog; sleeping waiters; the consumer table; the counters; broken/closed flags.";

/// The options of `kevent stat`, as given (`StatArgs::options` makes sense of them).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct StatArgs {
    #[arg(
        value_name = "pid|socket-path",
        help = "a process that created or attached a queue (same user, or root),
or a queue's control socket (Queue::listen): this process then
shows in the consumer table as an idle consumer"
    )]
    target: Option<String>,
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        allow_negative_numbers = true,
        help = "refresh every SECS seconds (default 1) until Ctrl-C"
    )]
    watch: Option<Option<String>>,
    #[arg(long, help = "one JSON object (per refresh with --watch)")]
    json: bool,
    /// The interval was given as `--watch=SECS`, so it is one (not the target).
    #[arg(skip)]
    pub(crate) watch_inline: bool,
}

/// The memfd link prefix of a ring (`Ring::create("kevent", …)` names it).
const MEMFD_PREFIX: &str = "/memfd:kevent";

/// The rings found in one process.
#[derive(Debug, Default)]
pub struct Scan {
    /// Each ring, with the `/proc/<pid>/fd/<n>` path (or socket path) it was opened
    /// through.
    pub rings: Vec<(PathBuf, Arc<Ring>)>,
    /// `kevent` memfds that could not be attached, and why (another ABI version, a
    /// broken ring, no permission).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Finds the rings of process `pid`: every fd whose link starts with `/memfd:kevent`,
/// opened read-write through `/proc/<pid>/fd/<n>` and attached. Each ring is listed
/// once, however many fds of the process refer to it.
///
/// # Errors
/// The process does not exist, or its fds cannot be listed (another user's process).
pub fn rings_of_pid(pid: u32) -> io::Result<Scan> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let entries = std::fs::read_dir(&dir).map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound => format!("no process {pid}"),
            io::ErrorKind::PermissionDenied => format!(
                "cannot list the fds of process {pid} ({}): permission denied — it belongs \
                 to another user; run as that user or as root",
                dir.display()
            ),
            _ => format!("cannot list {}: {e}", dir.display()),
        };
        io::Error::new(e.kind(), why)
    })?;
    let mut paths: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n: u64 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .to_str()?
                .starts_with(MEMFD_PREFIX)
                .then(|| (n, e.path()))
        })
        .collect();
    paths.sort();
    let mut scan = Scan::default();
    let mut seen = Vec::new();
    for (_, path) in paths {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                scan.skipped.push((path, format!("cannot open: {e}")));
                continue;
            }
        };
        let id = match file.metadata() {
            Ok(m) => (m.dev(), m.ino()),
            Err(e) => {
                scan.skipped.push((path, format!("cannot stat: {e}")));
                continue;
            }
        };
        if seen.contains(&id) {
            continue;
        }
        seen.push(id);
        match Ring::attach(file.as_fd()) {
            Ok(ring) => scan.rings.push((path, Arc::new(ring))),
            Err(e) => scan.skipped.push((path, e.to_string())),
        }
    }
    Ok(scan)
}

/// One position and its kevent view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    /// The free-running 64-bit position.
    pub pos: u64,
    /// Position modulo capacity (`ring_kidx` / `ring_uidx` of the original).
    pub index: u32,
    /// Position divided by capacity (the wrap counter).
    pub over: u32,
}

/// One record of the consumer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerStat {
    /// Consumer id (the owner field of the slots it claims).
    pub id: u16,
    /// Its process.
    pub pid: u32,
    /// Active, or departed (waiting for the reaper).
    pub state: RecordState,
    /// Entries it claimed in its lifetime.
    pub claimed: u64,
    /// Entries it completed in its lifetime.
    pub completed: u64,
}

/// A snapshot of one ring. Every word is read on its own, so the snapshot of a busy ring
/// is not one instant (`kidx` is read last, so that `uidx <= cidx <= kidx` holds).
#[derive(Debug, Clone)]
pub struct RingStat {
    /// Where the ring was opened (`/proc/<pid>/fd/<n>`).
    pub location: String,
    /// Process that created the ring (its producer).
    pub producer_pid: u32,
    /// Number of slots.
    pub capacity: u64,
    /// `kidx`: next position the producer publishes.
    pub kidx: Position,
    /// `cidx`: next position to claim.
    pub cidx: Position,
    /// `uidx`: every position below is released.
    pub uidx: Position,
    /// Ready kevents waiting in the producer's backlog (ring full).
    pub backlog: u64,
    /// Consumers asleep (or about to sleep) on the futex.
    pub sleepers: u32,
    /// Records in use in the consumer table.
    pub consumers: Vec<ConsumerStat>,
    /// The producer's counters.
    pub stats: Stats,
    /// Why the ring is marked broken, if it is.
    pub broken: Option<String>,
    /// Whether the producer has stopped.
    pub closed: bool,
    /// Of the entries between `uidx` and `cidx`: claimed and not yet completed.
    pub claimed_now: u64,
    /// Of the entries between `uidx` and `cidx`: completed, waiting for an older entry
    /// to be released first.
    pub done_waiting: u64,
    /// The consumer holding the oldest unreleased entry (the one at `uidx`), if it is
    /// claimed: the consumer everyone else waits for when the ring is full.
    pub holding_uidx: Option<u16>,
}

impl RingStat {
    /// Reads `ring`; `location` says where it came from.
    pub fn read(ring: &Ring, location: &str) -> RingStat {
        let view = |pos: u64| {
            let (index, over) = ring.kevent_view(pos);
            Position { pos, index, over }
        };
        let h = ring.header();
        let consumers = ring
            .consumers()
            .filter(|(_, state, _)| *state != RecordState::Free)
            .map(|(id, state, pid)| {
                let rec = &h.consumers[usize::from(id.0) - 1];
                ConsumerStat {
                    id: id.0,
                    pid,
                    state,
                    claimed: rec.claimed.load(Ordering::Relaxed),
                    completed: rec.completed.load(Ordering::Relaxed),
                }
            })
            .collect();
        let stats = Stats::of(ring);
        // Read in release order, so that the snapshot keeps uidx <= cidx <= kidx.
        let uidx = view(ring.uidx());
        let cidx = view(ring.cidx());
        let kidx = view(ring.kidx());
        // Look at the slots between uidx and cidx (at most the capacity).
        let (mut claimed_now, mut done_waiting, mut holding_uidx) = (0, 0, None);
        let end = cidx.pos.min(uidx.pos.saturating_add(ring.capacity()));
        for pos in uidx.pos..end {
            match ring.slot_state(pos).map(|st| (st.status, st.owner)) {
                Some((Status::Claimed, owner)) => {
                    claimed_now += 1;
                    if pos == uidx.pos {
                        holding_uidx = Some(owner);
                    }
                }
                Some((Status::Done, _)) => done_waiting += 1,
                _ => {}
            }
        }
        RingStat {
            location: location.to_string(),
            producer_pid: h.identity.producer_pid.load(Ordering::Relaxed),
            capacity: ring.capacity(),
            kidx,
            cidx,
            uidx,
            backlog: stats.backlog_len,
            sleepers: ring.sleepers(),
            claimed_now,
            done_waiting,
            holding_uidx,
            consumers,
            stats,
            broken: ring.broken().map(|b| b.to_string()),
            closed: ring.is_closed(),
        }
    }

    /// Entries published and not yet claimed.
    pub fn unclaimed(&self) -> u64 {
        self.kidx.pos.saturating_sub(self.cidx.pos)
    }

    /// Entries claimed and not yet released (being processed, or done and waiting for
    /// an older entry to be released first).
    pub fn in_flight(&self) -> u64 {
        self.cidx.pos.saturating_sub(self.uidx.pos)
    }

    /// The snapshot as one JSON object, on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.json()).expect("a snapshot serializes")
    }

    /// What [`RingStat::to_json`] writes.
    fn json(&self) -> RingJson<'_> {
        let s = &self.stats;
        RingJson {
            location: &self.location,
            producer_pid: self.producer_pid,
            capacity: self.capacity,
            kidx: self.kidx,
            cidx: self.cidx,
            uidx: self.uidx,
            unclaimed: self.unclaimed(),
            in_flight: self.in_flight(),
            claimed_now: self.claimed_now,
            done_waiting: self.done_waiting,
            holding_uidx: self.holding_uidx,
            backlog: self.backlog,
            sleepers: self.sleepers,
            consumers: self
                .consumers
                .iter()
                .map(|c| ConsumerJson {
                    id: c.id,
                    pid: c.pid,
                    state: state_name(c.state),
                    claimed: c.claimed,
                    completed: c.completed,
                })
                .collect(),
            counters: CountersJson {
                posted: s.posted,
                coalesced: s.coalesced,
                backlogged: s.backlogged,
                redelivered: s.redelivered,
                lost: s.lost,
                registered: s.registered,
                wake_calls: s.wake_calls,
                expired: s.expired,
            },
            broken: self.broken.as_deref(),
            closed: self.closed,
        }
    }
}

/// One ring in `kevent stat --json`.
#[derive(serde::Serialize)]
struct RingJson<'a> {
    location: &'a str,
    producer_pid: u32,
    capacity: u64,
    kidx: Position,
    cidx: Position,
    uidx: Position,
    unclaimed: u64,
    in_flight: u64,
    claimed_now: u64,
    done_waiting: u64,
    holding_uidx: Option<u16>,
    backlog: u64,
    sleepers: u32,
    consumers: Vec<ConsumerJson>,
    counters: CountersJson,
    broken: Option<&'a str>,
    closed: bool,
}

#[derive(serde::Serialize)]
struct ConsumerJson {
    id: u16,
    pid: u32,
    state: &'static str,
    claimed: u64,
    completed: u64,
}

/// The producer's counters ([`Stats`] without the backlog, shown on its own).
#[derive(serde::Serialize)]
struct CountersJson {
    posted: u64,
    coalesced: u64,
    backlogged: u64,
    redelivered: u64,
    lost: u64,
    registered: u64,
    wake_calls: u64,
    expired: u64,
}

/// What `kevent stat --json` writes per refresh: the target, its rings, and the kevent
/// memfds that could not be attached.
#[derive(serde::Serialize)]
struct ScanJson<'a> {
    target: &'a str,
    rings: Vec<RingJson<'a>>,
    skipped: Vec<SkippedJson>,
}

#[derive(serde::Serialize)]
struct SkippedJson {
    location: String,
    error: String,
}

fn state_name(s: RecordState) -> &'static str {
    match s {
        RecordState::Free => "free",
        RecordState::Active => "active",
        RecordState::Departed => "departed",
    }
}

impl fmt::Display for RingStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match (&self.broken, self.closed) {
            (Some(why), _) => format!("BROKEN: {why}"),
            (None, true) => "closed (producer stopped)".to_string(),
            (None, false) => "open".to_string(),
        };
        let p =
            |name: &str, p: Position| format!("{name} {} ({}, over {})", p.pos, p.index, p.over);
        writeln!(
            f,
            "ring {}  producer pid {}  capacity {}  {}",
            self.location, self.producer_pid, self.capacity, state
        )?;
        writeln!(
            f,
            "  positions  {}   {}   {}",
            p("kidx", self.kidx),
            p("cidx", self.cidx),
            p("uidx", self.uidx)
        )?;
        writeln!(
            f,
            "  entries    {} unclaimed   {} claimed   {} done, waiting for an older release   \
             backlog {}   sleepers {}",
            self.unclaimed(),
            self.claimed_now,
            self.done_waiting,
            self.backlog,
            self.sleepers
        )?;
        if let Some(id) = self.holding_uidx {
            writeln!(
                f,
                "  oldest     the entry at uidx is held by consumer {id} (past its lease while \
                 the ring is full, it is delivered to another: see `expired`)"
            )?;
        }
        let s = &self.stats;
        writeln!(
            f,
            "  counters   posted {}  coalesced {}  backlogged {}  redelivered {}  expired {}  \
             lost {}  registered {}  wake_calls {}",
            s.posted,
            s.coalesced,
            s.backlogged,
            s.redelivered,
            s.expired,
            s.lost,
            s.registered,
            s.wake_calls
        )?;
        if self.consumers.is_empty() {
            return writeln!(f, "  consumers  none");
        }
        writeln!(
            f,
            "  consumers  {:>3} {:>8} {:<9} {:>12} {:>12}",
            "id", "pid", "state", "claimed", "completed"
        )?;
        for c in &self.consumers {
            writeln!(
                f,
                "             {:>3} {:>8} {:<9} {:>12} {:>12}",
                c.id,
                c.pid,
                state_name(c.state),
                c.claimed,
                c.completed
            )?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Options {
    target: String,
    watch: Option<Duration>,
    json: bool,
}

impl StatArgs {
    /// The options: the target, the interval of `--watch` (default 1 s), `--json`.
    ///
    /// The interval is optional: `--watch 2 123` watches process 123 every 2 s, while
    /// `--watch 123` alone watches process 123 every second (the only argument after
    /// `--watch` is the target, as it always was).
    fn options(self) -> Result<Options, String> {
        let every = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("--watch: {v:?} is not a number of seconds"))
                .and_then(seconds)
        };
        let (target, watch) = match (self.target, self.watch) {
            (target, None) => (target, None),
            (target, Some(None)) => (target, Some(Duration::from_secs(1))),
            (Some(target), Some(Some(v))) => (Some(target), Some(every(&v)?)),
            (None, Some(Some(v))) if self.watch_inline => (None, Some(every(&v)?)),
            (None, Some(Some(v))) => (Some(v), Some(Duration::from_secs(1))),
        };
        let target = target.ok_or("missing <pid|socket-path>")?;
        Ok(Options {
            target,
            watch,
            json: self.json,
        })
    }
}

fn seconds(secs: f64) -> Result<Duration, String> {
    if secs.is_finite() && secs > 0.0 && secs <= 86_400.0 {
        Ok(Duration::from_secs_f64(secs))
    } else {
        Err(format!(
            "--watch: {secs} is not an interval in seconds (0 < SECS <= 86400)"
        ))
    }
}

/// Runs `kevent stat` with `args`.
pub fn run(args: StatArgs) -> ExitCode {
    let opts = match args.options() {
        Ok(o) => o,
        Err(msg) => return super::out::usage_error("stat", &msg),
    };
    // A pid, or the path of a queue's control socket.
    let (label, scan, _attachment) = match opts.target.parse::<u32>() {
        Ok(pid) => match rings_of_pid(pid) {
            Ok(scan) => (pid.to_string(), scan, None),
            Err(e) => return super::out::failure("stat", &e.to_string()),
        },
        Err(_) => {
            let path = PathBuf::from(&opts.target);
            match kevent_syscalls::Instance::connect(&path) {
                Ok(q) => {
                    let scan = Scan {
                        rings: vec![(path, q.ring().clone())],
                        skipped: Vec::new(),
                    };
                    let label = format!(
                        "{} (attached as consumer {}, pid {})",
                        opts.target,
                        q.consumer().0,
                        std::process::id()
                    );
                    (label, scan, Some(q))
                }
                Err(e) => {
                    return super::out::failure(
                        "stat",
                        &format!("attaching through {}: {e}", path.display()),
                    )
                }
            }
        }
    };
    if scan.rings.is_empty() {
        let mut msg =
            format!("process {label} has no kevent ring (no fd links to {MEMFD_PREFIX}…)");
        for (path, why) in &scan.skipped {
            let _ = write!(msg, "\n  {}: {why}", path.display());
        }
        return super::out::failure("stat", &msg);
    }
    let shown = match opts.watch {
        None => {
            let head = if opts.json {
                String::new()
            } else {
                format!("kevent stat {label}\n")
            };
            super::out::write_stdout(&head)
                .and_then(|()| print_once(&label, &scan, opts.json, None).map(|_| ()))
        }
        Some(every) => {
            let screen = std::io::stdout().is_terminal();
            watch(&label, &scan, opts.json, every, screen)
        }
    };
    match shown {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::out::output_failed("stat", &e),
    }
}

/// Prints one snapshot of every ring of `scan` (with per-second rates against `rates`,
/// the counters of the previous snapshot and its age); returns the counters.
fn print_once(
    label: &str,
    scan: &Scan,
    json: bool,
    rates: Option<(&[Stats], Duration)>,
) -> io::Result<Vec<Stats>> {
    let stats: Vec<RingStat> = scan
        .rings
        .iter()
        .map(|(path, ring)| RingStat::read(ring, &path.display().to_string()))
        .collect();
    let mut out = String::new();
    if json {
        let doc = ScanJson {
            target: label,
            rings: stats.iter().map(RingStat::json).collect(),
            skipped: scan
                .skipped
                .iter()
                .map(|(p, why)| SkippedJson {
                    location: p.display().to_string(),
                    error: why.clone(),
                })
                .collect(),
        };
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string(&doc).expect("a snapshot serializes")
        );
    } else {
        for (i, s) in stats.iter().enumerate() {
            let _ = write!(out, "{s}");
            if let Some((before, dt)) = rates {
                if let Some(b) = before.get(i) {
                    let per_s = |now: u64, then: u64| {
                        now.saturating_sub(then) as f64 / dt.as_secs_f64().max(1e-9)
                    };
                    let _ = writeln!(
                        out,
                        "  rates      posted {:.0}/s  coalesced {:.0}/s  wake_calls {:.0}/s",
                        per_s(s.stats.posted, b.posted),
                        per_s(s.stats.coalesced, b.coalesced),
                        per_s(s.stats.wake_calls, b.wake_calls)
                    );
                }
            }
        }
        for (path, why) in &scan.skipped {
            let _ = writeln!(out, "skipped {}: {why}", path.display());
        }
    }
    super::out::write_stdout(&out)?;
    Ok(stats.iter().map(|s| s.stats).collect())
}

/// Refreshes every `every` until stdout is closed (or the process is killed). On a
/// terminal (`screen`) each refresh redraws the screen; elsewhere (a pipe, a file) the
/// refreshes follow one another, each text one under a header line, and no escape code
/// is written.
fn watch(label: &str, scan: &Scan, json: bool, every: Duration, screen: bool) -> io::Result<()> {
    let pid: Option<u32> = label.parse().ok();
    let mut before: Option<(Vec<Stats>, Instant)> = None;
    loop {
        if !json {
            let gone = pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
            let gone = if gone { " (process has exited)" } else { "" };
            let head = if screen {
                // Clear the screen and home the cursor.
                format!(
                    "\x1b[H\x1b[2Jkevent stat {label}{gone} — every {:.1}s, Ctrl-C to quit\n\n",
                    every.as_secs_f64()
                )
            } else {
                format!(
                    "{}kevent stat {label}{gone} — every {:.1}s\n",
                    if before.is_some() { "\n" } else { "" },
                    every.as_secs_f64()
                )
            };
            super::out::write_stdout(&head)?;
        }
        let now = Instant::now();
        let rates = before
            .as_ref()
            .map(|(s, t)| (s.as_slice(), now.duration_since(*t)));
        let stats = print_once(label, scan, json, rates)?;
        before = Some((stats, now));
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    /// `kevent stat ARGS` as the command line parses it.
    fn parse(args: &[String]) -> Result<Option<Options>, String> {
        let line = std::iter::once("stat".to_string()).chain(args.iter().cloned());
        match crate::cli::parse(line) {
            Ok(crate::cli::Parsed::Run(crate::cli::Command::Stat(a))) => a.options().map(Some),
            Ok(_) => Ok(None),
            Err(e) => Err(e.message),
        }
    }

    #[test]
    fn watch_takes_an_optional_interval() {
        let o = parse(&args(&["--watch", "2", "123"])).unwrap().unwrap();
        assert_eq!(
            (o.target.as_str(), o.watch),
            ("123", Some(Duration::from_secs(2)))
        );
        let o = parse(&args(&["123", "--watch"])).unwrap().unwrap();
        assert_eq!(o.watch, Some(Duration::from_secs(1)));
        let o = parse(&args(&["--watch", "123"])).unwrap().unwrap();
        assert_eq!(
            (o.target.as_str(), o.watch),
            ("123", Some(Duration::from_secs(1)))
        );
        let o = parse(&args(&["123", "--watch", "0.5", "--json"]))
            .unwrap()
            .unwrap();
        assert_eq!((o.watch, o.json), (Some(Duration::from_millis(500)), true));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        assert!(parse(&args(&[])).unwrap_err().contains("missing"));
        assert!(parse(&args(&["1", "2"]))
            .unwrap_err()
            .contains("unexpected"));
        assert!(parse(&args(&["--frob", "1"]))
            .unwrap_err()
            .contains("--frob"));
        assert!(parse(&args(&["--watch=-1", "1"])).is_err());
        assert!(parse(&args(&["--watch", "-1", "1"])).is_err());
        assert!(parse(&args(&["1", "--watch", "x"]))
            .unwrap_err()
            .contains("not a number"));
        // An interval given as one is not taken for the target.
        assert!(parse(&args(&["--watch=5"]))
            .unwrap_err()
            .contains("missing"));
        assert!(parse(&args(&["--help"])).unwrap().is_none());
    }

    #[test]
    fn json_is_one_line_with_every_key_and_escaped_strings() {
        let q = kevent::Queue::builder().capacity(64).build().unwrap();
        let mut s = RingStat::read(q.ring(), "a\"b\\c\n\u{1}");
        s.broken = Some("why".into());
        let json = s.to_json();
        assert!(!json.contains('\n'), "{json}");
        assert!(
            json.starts_with(r#"{"location":"a\"b\\c\n\u0001","producer_pid":"#),
            "{json}"
        );
        assert!(
            json.contains(r#","capacity":64,"kidx":{"pos":0,"index":0,"over":0},"#),
            "{json}"
        );
        assert!(
            json.contains(r#","holding_uidx":null,"backlog":0,"#),
            "{json}"
        );
        assert!(
            json.ends_with(r#","broken":"why","closed":false}"#),
            "{json}"
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v.as_object().unwrap().len(), 17);
        assert_eq!(v["counters"].as_object().unwrap().len(), 8);
        assert!(v["consumers"][0]["state"].is_string(), "{json}");
    }
}
