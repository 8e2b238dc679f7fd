//! The report: a text table per cell, or CSV, or JSON (serde).

use std::fmt::Write as _;

use serde::Serialize;

use super::metrics::Summary;
use super::pingpong::{self, PingReport};
use super::settings::{JsonSettings, Setting};
use super::sysinfo::SysInfo;
use super::workload::Cell;

/// The backend every ratio is taken against: the original benchmark's set-up.
pub const REFERENCE: &str = "epoll-et";

/// Everything printed above the results.
#[derive(Debug, Clone)]
pub struct Header {
    /// Machine, kernel, commit.
    pub sys: SysInfo,
    /// Every setting.
    pub settings: Vec<Setting>,
    /// Every selected backend, as `(name, description)`.
    pub backends: Vec<(String, String)>,
}

/// What happened to one backend in one cell.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The backend ran; `summary` is `None` when every round failed.
    Ran {
        /// Medians over the successful rounds.
        summary: Option<Summary>,
        /// One message per failed run.
        failures: Vec<String>,
    },
    /// The backend was not run in this cell, and why.
    Skipped(String),
}

/// One backend's line in a cell.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Backend name.
    pub backend: String,
    /// Its outcome.
    pub outcome: Outcome,
}

impl Entry {
    fn summary(&self) -> Option<&Summary> {
        match &self.outcome {
            Outcome::Ran { summary, .. } => summary.as_ref(),
            Outcome::Skipped(_) => None,
        }
    }
}

/// The results of one cell.
#[derive(Debug, Clone)]
pub struct CellReport {
    /// The cell.
    pub cell: Cell,
    /// Set when the whole cell was skipped (e.g. not enough file descriptors).
    pub skipped: Option<String>,
    /// One entry per selected backend, in rotation order.
    pub entries: Vec<Entry>,
}

impl CellReport {
    fn reference(&self) -> Option<&Summary> {
        self.entries
            .iter()
            .find(|e| e.backend == REFERENCE)
            .and_then(Entry::summary)
    }
}

/// True when a run was limited by the writer, not the consumers: nearly every write was
/// consumed as its own event and the writer thread was (almost) always on CPU.
pub fn writer_bound(s: &Summary) -> bool {
    let m = &s.median;
    m.writer_cpu >= 0.9 && m.events_per_s >= 0.9 * m.writes_per_s
}

/// `1.92 M`, `12.3 k`, `512`.
fn si(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else if x >= 10.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn ratio(x: f64, reference: Option<f64>) -> Option<f64> {
    reference.filter(|r| *r > 0.0 && !r.is_nan()).map(|r| x / r)
}

fn fmt_opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.filter(|v| !v.is_nan()).map_or_else(|| "-".into(), f)
}

fn ns(x: f64) -> String {
    if x >= 10_000_000.0 {
        format!("{:.1} ms", x / 1e6)
    } else if x >= 10_000.0 {
        format!("{:.1} µs", x / 1e3)
    } else {
        format!("{x:.0} ns")
    }
}

/// Renders the header, one table per cell, and the ping-pong cell if it ran.
pub fn table(h: &Header, cells: &[CellReport], ping: Option<&PingReport>) -> String {
    let mut o = table_head(h, !cells.is_empty());
    for c in cells {
        o.push_str(&table_cell(h, c));
    }
    if let Some(p) = ping {
        o.push_str(&table_ping(p));
    }
    o
}

/// The text above the tables: machine, settings and, if there are `throughput` cells,
/// their backends and columns (known before the run, so written before it).
pub fn table_head(h: &Header, throughput: bool) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "kevent bench: {}",
        if throughput {
            "epoll_bench workload, every backend in rotation"
        } else {
            "ping-pong latency cell"
        }
    );
    let _ = writeln!(o, "machine:  {} ({} CPUs)", h.sys.cpu, h.sys.nproc);
    let _ = writeln!(o, "kernel:   {}", h.sys.kernel);
    let _ = writeln!(o, "commit:   {}    date: {}", h.sys.commit, h.sys.date);
    let settings: Vec<String> = h
        .settings
        .iter()
        .map(|s| format!("{}={s}", s.name))
        .collect();
    let _ = writeln!(o, "settings: {}", settings.join(" "));
    if !throughput {
        // Only the ping-pong cell: it describes its own backends and columns.
        return o;
    }
    let _ = writeln!(o, "backends:");
    for (name, d) in &h.backends {
        let _ = writeln!(o, "  {name:<15} {d}");
    }
    let _ = writeln!(
        o,
        "columns: medians over rounds; ×ET = ratio to {REFERENCE} in the same cell \
         (events: higher is better, CPU: lower is better); CPU/ev, csw/ev, wake/ev are the \
         consumers' (plus helper threads'), from getrusage; wake/ev = voluntary context \
         switches per event; empty = reads that found nothing; spread = (max-min)/median of ev/s"
    );
    o
}

/// The table of one throughput cell.
pub fn table_cell(h: &Header, c: &CellReport) -> String {
    let mut o = String::new();
    let paced = h.settings.iter().any(|s| s.name == "paced" && s.is_on());
    let _ = writeln!(o, "\n== {} ==", c.cell);
    if let Some(why) = &c.skipped {
        let _ = writeln!(o, "skipped: {why}");
        return o;
    }
    let reference = c.reference();
    let mut head = format!(
        "{:<15} {:>9} {:>6} {:>9} {:>6} {:>8} {:>6} {:>7} {:>7} {:>6} {:>7} {:>6}",
        "backend",
        "ev/s",
        "×ET",
        "writes/s",
        "wrCPU",
        "CPU/ev",
        "×ET",
        "csw/ev",
        "wake/ev",
        "empty",
        "ev/wait",
        "spread"
    );
    if paced {
        let _ = write!(head, " {:>9} {:>9}", "p50", "p99");
    }
    head.push_str("  notes");
    let _ = writeln!(o, "{head}");
    let mut any_writer_bound = false;
    let mut footnotes = Vec::new();
    for e in &c.entries {
        let (s, failures) = match &e.outcome {
            Outcome::Skipped(why) => {
                footnotes.push(format!("{} skipped: {why}", e.backend));
                continue;
            }
            Outcome::Ran { summary, failures } => (summary, failures),
        };
        for f in failures {
            footnotes.push(format!("{} failed: {f}", e.backend));
        }
        let Some(s) = s else {
            let _ = writeln!(o, "{:<15} all rounds failed", e.backend);
            continue;
        };
        let m = &s.median;
        let mut notes = Vec::new();
        if writer_bound(s) {
            any_writer_bound = true;
            notes.push("W".to_string());
        }
        if s.lost_total > 0 {
            notes.push(format!("lost {}", s.lost_total));
        }
        if m.rearms_per_s > 0.0 {
            notes.push(format!("rearm {}/s", si(m.rearms_per_s)));
        }
        if !failures.is_empty() {
            notes.push(format!("{} run(s) failed", failures.len()));
        }
        let spread = if m.events_per_s > 0.0 {
            (s.events_max - s.events_min) / m.events_per_s
        } else {
            f64::NAN
        };
        let mut line = format!(
            "{:<15} {:>9} {:>6} {:>9} {:>6} {:>8} {:>6} {:>7.3} {:>7.3} {:>6} {:>7} {:>6}",
            e.backend,
            si(m.events_per_s),
            fmt_opt(
                ratio(m.events_per_s, reference.map(|r| r.median.events_per_s)),
                |x| format!("{x:.2}")
            ),
            si(m.writes_per_s),
            format!("{:.0}%", m.writer_cpu * 100.0),
            fmt_opt(Some(m.cpu_per_event_ns), ns),
            fmt_opt(
                ratio(
                    m.cpu_per_event_ns,
                    reference.map(|r| r.median.cpu_per_event_ns)
                ),
                |x| format!("{x:.2}")
            ),
            m.csw_per_event,
            m.wakeups_per_event,
            fmt_opt(Some(m.empty_share), |x| format!("{:.1}%", x * 100.0)),
            fmt_opt(Some(m.events_per_wait), si),
            fmt_opt(Some(spread), |x| format!("{:.0}%", x * 100.0)),
        );
        if paced {
            let _ = write!(
                line,
                " {:>9} {:>9}",
                fmt_opt(m.p50_ns, ns),
                fmt_opt(m.p99_ns, ns)
            );
        }
        if !notes.is_empty() {
            let _ = write!(line, "  {}", notes.join(", "));
        }
        let _ = writeln!(o, "{line}");
    }
    if any_writer_bound {
        let _ = writeln!(
            o,
            "W: writer-bound (events/s ≥ 90% of writes/s, writer ≥ 90% CPU): events/s \
             cannot separate these backends; compare CPU/ev and csw/ev."
        );
    }
    for f in footnotes {
        let _ = writeln!(o, "{f}");
    }
    o
}

/// Nanoseconds as microseconds with one decimal.
fn us(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else {
        format!("{:.1}", x / 1e3)
    }
}

/// The ping-pong cell's table.
pub fn table_ping(p: &PingReport) -> String {
    let mut o = String::new();
    ping_table(&mut o, p);
    o
}

fn ping_table(o: &mut String, p: &PingReport) {
    let _ = writeln!(
        o,
        "\n== ping-pong: unix socketpair, 1 consumer (thread), {} round trips per run, {} \
         rounds ==",
        p.round_trips, p.rounds
    );
    if let Some(why) = &p.skipped {
        let _ = writeln!(o, "skipped: {why}");
        return;
    }
    let _ = writeln!(
        o,
        "columns: round-trip time (write on A → consumer woken for B, reads, writes back → \
         driver's blocking read on A returns) in µs; p50, p99, max: medians over rounds of each \
         run's exact value; ×epoll = p99 / {}'s p99 (lower is better); worst = longest round trip \
         of any round; ≥1ms = round trips of 1 ms or more, all rounds; wake/rt = consumer \
         wake-ups per round trip (the final end-of-file wake-up included)",
        pingpong::REFERENCE
    );
    let _ = writeln!(
        o,
        "{:<15} {:>9} {:>9} {:>9} {:>7} {:>9} {:>6} {:>7}  notes",
        "backend", "p50 µs", "p99 µs", "max µs", "×epoll", "worst µs", "≥1ms", "wake/rt"
    );
    let reference = p.reference().map(|r| r.p99_ns);
    let mut footnotes = Vec::new();
    for e in &p.entries {
        for f in &e.failures {
            footnotes.push(format!("{} failed: {f}", e.backend));
        }
        let Some(s) = &e.summary else {
            let _ = writeln!(o, "{:<15} all rounds failed", e.backend);
            continue;
        };
        let mut notes = Vec::new();
        if s.empty_reads > 0 {
            notes.push(format!("{} empty reads", s.empty_reads));
        }
        if !e.failures.is_empty() {
            notes.push(format!("{} run(s) failed", e.failures.len()));
        }
        let _ = writeln!(
            o,
            "{:<15} {:>9} {:>9} {:>9} {:>7} {:>9} {:>6} {:>7.2}{}",
            e.backend,
            us(s.p50_ns),
            us(s.p99_ns),
            us(s.max_ns),
            fmt_opt(ratio(s.p99_ns, reference), |x| format!("{x:.2}")),
            us(s.worst_ns),
            s.slow,
            s.waits_per_rt,
            if notes.is_empty() {
                String::new()
            } else {
                format!("  {}", notes.join(", "))
            }
        );
    }
    for e in &p.entries {
        let _ = writeln!(o, "  {:<13} {}", e.backend, e.description);
    }
    for f in footnotes {
        let _ = writeln!(o, "{f}");
    }
}

/// CSV columns, in order.
const CSV_COLUMNS: &str = "kind,streams,consumers,mode,backend,status,rounds,events_per_s,\
events_vs_et,writes_per_s,writer_cpu,cpu_ns_per_event,cpu_vs_et,csw_per_event,\
wakeups_per_event,empty_share,events_per_wait,lost_total,rearms_per_s,p50_ns,p99_ns,\
events_min,events_max,writer_bound,note";

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(x: f64) -> String {
    if x.is_nan() || x.is_infinite() {
        String::new()
    } else {
        format!("{x:.6}")
    }
}

/// Renders `# key: value` header lines, then one row per (cell, backend), then one row
/// per ping-pong backend: kind `pingpong`, one stream, one consumer, `p50_ns` and
/// `p99_ns` filled, and `max_ns`, `worst_ns`, `p99_vs_epoll` and `slow` in the note.
pub fn csv(h: &Header, cells: &[CellReport], ping: Option<&PingReport>) -> String {
    let mut o = csv_head(h);
    for c in cells {
        o.push_str(&csv_cell(c));
    }
    if let Some(p) = ping {
        ping_csv(&mut o, p);
    }
    o
}

/// The `# key: value` lines and the column names (written before the run).
pub fn csv_head(h: &Header) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# machine: {} ({} CPUs)", h.sys.cpu, h.sys.nproc);
    let _ = writeln!(o, "# kernel: {}", h.sys.kernel);
    let _ = writeln!(o, "# commit: {}", h.sys.commit);
    let _ = writeln!(o, "# date: {}", h.sys.date);
    for s in &h.settings {
        let _ = writeln!(o, "# {}: {s}", s.name);
    }
    let _ = writeln!(o, "{CSV_COLUMNS}");
    o
}

/// The rows of one throughput cell.
pub fn csv_cell(c: &CellReport) -> String {
    let mut o = String::new();
    let reference = c.reference();
    let prefix = format!(
        "{},{},{},{}",
        c.cell.kind,
        c.cell.streams,
        c.cell.consumers,
        c.cell.mode.name()
    );
    if let Some(why) = &c.skipped {
        let _ = writeln!(
            o,
            "{prefix},,skipped,0{},{}",
            ",".repeat(17),
            csv_field(why)
        );
        return o;
    }
    for e in &c.entries {
        let (status, note, s) = match &e.outcome {
            Outcome::Skipped(why) => ("skipped", why.clone(), None),
            Outcome::Ran { summary, failures } => (
                if summary.is_some() { "ok" } else { "failed" },
                failures.join("; "),
                summary.as_ref(),
            ),
        };
        let Some(s) = s else {
            let _ = writeln!(
                o,
                "{prefix},{},{status},0{},{}",
                csv_field(&e.backend),
                ",".repeat(17),
                csv_field(&note)
            );
            continue;
        };
        let m = &s.median;
        let fields = [
            num(m.events_per_s),
            ratio(m.events_per_s, reference.map(|r| r.median.events_per_s))
                .map_or(String::new(), num),
            num(m.writes_per_s),
            num(m.writer_cpu),
            num(m.cpu_per_event_ns),
            ratio(
                m.cpu_per_event_ns,
                reference.map(|r| r.median.cpu_per_event_ns),
            )
            .map_or(String::new(), num),
            num(m.csw_per_event),
            num(m.wakeups_per_event),
            num(m.empty_share),
            num(m.events_per_wait),
            s.lost_total.to_string(),
            num(m.rearms_per_s),
            m.p50_ns.map_or(String::new(), num),
            m.p99_ns.map_or(String::new(), num),
            num(s.events_min),
            num(s.events_max),
            writer_bound(s).to_string(),
        ];
        let _ = writeln!(
            o,
            "{prefix},{},{status},{},{},{}",
            csv_field(&e.backend),
            s.rounds,
            fields.join(","),
            csv_field(&note)
        );
    }
    o
}

/// The ping-pong rows.
pub fn csv_ping(p: &PingReport) -> String {
    let mut o = String::new();
    ping_csv(&mut o, p);
    o
}

/// The ping-pong rows of the CSV.
fn ping_csv(o: &mut String, p: &PingReport) {
    let prefix = "pingpong,1,1,threads";
    if let Some(why) = &p.skipped {
        let _ = writeln!(
            o,
            "{prefix},,skipped,0{},{}",
            ",".repeat(17),
            csv_field(why)
        );
        return;
    }
    let reference = p.reference().map(|r| r.p99_ns);
    for e in &p.entries {
        let failures = e.failures.join("; ");
        let Some(s) = &e.summary else {
            let _ = writeln!(
                o,
                "{prefix},{},failed,0{},{}",
                csv_field(&e.backend),
                ",".repeat(17),
                csv_field(&failures)
            );
            continue;
        };
        let mut note = format!(
            "max_ns={};worst_ns={};p99_vs_epoll={};slow={};round_trips={}",
            num(s.max_ns),
            num(s.worst_ns),
            ratio(s.p99_ns, reference).map_or(String::new(), num),
            s.slow,
            s.round_trips
        );
        if !failures.is_empty() {
            let _ = write!(note, ";{failures}");
        }
        // 12 throughput fields, p50_ns, p99_ns, 3 more throughput fields.
        let _ = writeln!(
            o,
            "{prefix},{},ok,{}{},{},{}{},{}",
            csv_field(&e.backend),
            s.rounds,
            ",".repeat(12),
            num(s.p50_ns),
            num(s.p99_ns),
            ",".repeat(3),
            csv_field(&note)
        );
    }
}

/// Renders one JSON document: `{"header": {...}, "cells": [...], "pingpong": {...}}`
/// (`"pingpong": null` when the cell was not run; its latencies are in µs). The
/// header's `settings` are typed: numbers are numbers, lists are arrays, a unit is the
/// key's suffix (`"read_buf_bytes": 64`, `"wait_timeout_ms": 50`), and a feature that
/// is off is `null` (`"paced_writes_per_s": null`). A number that is not one (no event
/// in any round) is `null` too.
pub fn json(h: &Header, cells: &[CellReport], ping: Option<&PingReport>) -> String {
    let doc = JsonReport {
        header: JsonHeader {
            cpu: &h.sys.cpu,
            nproc: h.sys.nproc,
            kernel: &h.sys.kernel,
            commit: &h.sys.commit,
            date: &h.sys.date,
            reference: REFERENCE,
            settings: JsonSettings(&h.settings),
            backends: JsonBackends(&h.backends),
        },
        cells: cells.iter().map(JsonCell::of).collect(),
        pingpong: ping.map(JsonPing::of),
    };
    // The document, its header and its lists one item per line; each cell, setting,
    // result on one.
    let mut o = super::json::to_string(&doc, 2);
    o.push('\n');
    o
}

/// The document of [`json`].
#[derive(Serialize)]
struct JsonReport<'a> {
    header: JsonHeader<'a>,
    cells: Vec<JsonCell<'a>>,
    pingpong: Option<JsonPing<'a>>,
}

#[derive(Serialize)]
struct JsonHeader<'a> {
    cpu: &'a str,
    nproc: usize,
    kernel: &'a str,
    commit: &'a str,
    date: &'a str,
    reference: &'static str,
    settings: JsonSettings<'a>,
    backends: JsonBackends<'a>,
}

/// The backends as one object: name → description, in rotation order.
struct JsonBackends<'a>(&'a [(String, String)]);

impl Serialize for JsonBackends<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(name, d)| (name, d)))
    }
}

#[derive(Serialize)]
struct JsonCell<'a> {
    kind: &'static str,
    streams: usize,
    consumers: usize,
    mode: &'static str,
    skipped: Option<&'a str>,
    results: Vec<JsonEntry<'a>>,
}

impl<'a> JsonCell<'a> {
    fn of(c: &'a CellReport) -> JsonCell<'a> {
        let reference = c.reference();
        JsonCell {
            kind: c.cell.kind.name(),
            streams: c.cell.streams,
            consumers: c.cell.consumers,
            mode: c.cell.mode.name(),
            skipped: c.skipped.as_deref(),
            results: c
                .entries
                .iter()
                .map(|e| JsonEntry::of(e, reference))
                .collect(),
        }
    }
}

/// One backend in one cell: `reason` if it was skipped, else `failures` and, if a round
/// succeeded, the medians.
#[derive(Serialize)]
struct JsonEntry<'a> {
    backend: &'a str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<&'a [String]>,
    #[serde(flatten)]
    summary: Option<JsonSummary>,
}

impl<'a> JsonEntry<'a> {
    fn of(e: &'a Entry, reference: Option<&Summary>) -> JsonEntry<'a> {
        let (status, reason, failures, summary) = match &e.outcome {
            Outcome::Skipped(why) => ("skipped", Some(why.as_str()), None, None),
            Outcome::Ran { summary, failures } => (
                if summary.is_some() { "ok" } else { "failed" },
                None,
                Some(failures.as_slice()),
                summary.as_ref().map(|s| JsonSummary::of(s, reference)),
            ),
        };
        JsonEntry {
            backend: &e.backend,
            status,
            reason,
            failures,
            summary,
        }
    }
}

#[derive(Serialize)]
struct JsonSummary {
    rounds: usize,
    events_per_s: f64,
    events_vs_et: Option<f64>,
    writes_per_s: f64,
    writer_cpu: f64,
    cpu_ns_per_event: f64,
    cpu_vs_et: Option<f64>,
    csw_per_event: f64,
    wakeups_per_event: f64,
    empty_share: f64,
    events_per_wait: f64,
    lost_total: u64,
    rearms_per_s: f64,
    p50_ns: Option<f64>,
    p99_ns: Option<f64>,
    events_min: f64,
    events_max: f64,
    cpu_ns_per_event_min: f64,
    cpu_ns_per_event_max: f64,
    writer_bound: bool,
}

impl JsonSummary {
    fn of(s: &Summary, reference: Option<&Summary>) -> JsonSummary {
        let m = &s.median;
        JsonSummary {
            rounds: s.rounds,
            events_per_s: m.events_per_s,
            events_vs_et: ratio(m.events_per_s, reference.map(|r| r.median.events_per_s)),
            writes_per_s: m.writes_per_s,
            writer_cpu: m.writer_cpu,
            cpu_ns_per_event: m.cpu_per_event_ns,
            cpu_vs_et: ratio(
                m.cpu_per_event_ns,
                reference.map(|r| r.median.cpu_per_event_ns),
            ),
            csw_per_event: m.csw_per_event,
            wakeups_per_event: m.wakeups_per_event,
            empty_share: m.empty_share,
            events_per_wait: m.events_per_wait,
            lost_total: s.lost_total,
            rearms_per_s: m.rearms_per_s,
            p50_ns: m.p50_ns,
            p99_ns: m.p99_ns,
            events_min: s.events_min,
            events_max: s.events_max,
            cpu_ns_per_event_min: s.cpu_min,
            cpu_ns_per_event_max: s.cpu_max,
            writer_bound: writer_bound(s),
        }
    }
}

/// The ping-pong cell of the JSON document.
#[derive(Serialize)]
struct JsonPing<'a> {
    socket: &'static str,
    consumers: usize,
    round_trips: usize,
    rounds: usize,
    warmup_round_trips: usize,
    reference: &'static str,
    skipped: Option<&'a str>,
    results: Vec<JsonPingEntry<'a>>,
}

impl<'a> JsonPing<'a> {
    fn of(p: &'a PingReport) -> JsonPing<'a> {
        let reference = p.reference().map(|r| r.p99_ns);
        JsonPing {
            socket: "unix",
            consumers: 1,
            round_trips: p.round_trips,
            rounds: p.rounds,
            warmup_round_trips: p.warmup,
            reference: pingpong::REFERENCE,
            skipped: p.skipped.as_deref(),
            results: p
                .entries
                .iter()
                .map(|e| JsonPingEntry {
                    backend: &e.backend,
                    description: &e.description,
                    status: if e.summary.is_some() { "ok" } else { "failed" },
                    failures: &e.failures,
                    summary: e.summary.as_ref().map(|s| JsonPingSummary {
                        rounds: s.rounds,
                        round_trips_total: s.round_trips,
                        p50_us: s.p50_ns / 1e3,
                        p99_us: s.p99_ns / 1e3,
                        max_us: s.max_ns / 1e3,
                        worst_us: s.worst_ns / 1e3,
                        p99_vs_epoll: ratio(s.p99_ns, reference),
                        slow_round_trips: s.slow,
                        wakeups_per_round_trip: s.waits_per_rt,
                        empty_reads: s.empty_reads,
                    }),
                })
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct JsonPingEntry<'a> {
    backend: &'a str,
    description: &'a str,
    status: &'static str,
    failures: &'a [String],
    #[serde(flatten)]
    summary: Option<JsonPingSummary>,
}

#[derive(Serialize)]
struct JsonPingSummary {
    rounds: usize,
    round_trips_total: usize,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
    worst_us: f64,
    p99_vs_epoll: Option<f64>,
    slow_round_trips: usize,
    wakeups_per_round_trip: f64,
    empty_reads: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::consumer::ConsumerMode;
    use crate::bench::metrics::Derived;
    use crate::bench::pingpong::{PingEntry, PingSummary};
    use crate::bench::settings::Value;
    use crate::bench::streams::StreamKind;
    use crate::bench::sysinfo::SysInfo;

    fn summary(events_per_s: f64) -> Summary {
        Summary {
            rounds: 2,
            median: Derived {
                events_per_s,
                cpu_per_event_ns: 500.0,
                ..Derived::default()
            },
            events_min: events_per_s,
            events_max: events_per_s,
            cpu_min: f64::NAN,
            cpu_max: f64::NAN,
            lost_total: 3,
            seconds_total: 1.0,
        }
    }

    /// A report with every kind of entry: ran, failed, skipped; a skipped cell; a
    /// ping-pong cell with a failed backend.
    fn report() -> (Header, Vec<CellReport>, PingReport) {
        let header = Header {
            sys: SysInfo {
                cpu: "cpu \"x\"".into(),
                nproc: 2,
                kernel: "Linux".into(),
                commit: "abc1234".into(),
                date: "2026-12-07 00:00:00 UTC".into(),
            },
            settings: vec![
                Setting::new("seconds", Value::Float(0.5)),
                Setting::with_unit("paced", Value::Off, " writes/s", "writes_per_s"),
                Setting::new("streams", Value::Ints(vec![100, 2000])),
            ],
            backends: vec![("epoll-et".into(), "edge".into())],
        };
        let cell = |skipped: Option<&str>, entries| CellReport {
            cell: Cell {
                kind: StreamKind::Pipe,
                streams: 100,
                consumers: 1,
                mode: ConsumerMode::Threads,
            },
            skipped: skipped.map(String::from),
            entries,
        };
        let ran = |backend: &str, summary, failures: Vec<String>| Entry {
            backend: backend.into(),
            outcome: Outcome::Ran { summary, failures },
        };
        let cells = vec![
            cell(
                None,
                vec![
                    ran(REFERENCE, Some(summary(2e6)), vec![]),
                    ran("kevent-et", Some(summary(3e6)), vec!["round 1: x".into()]),
                    ran(
                        "uring",
                        None,
                        vec!["round 1: y".into(), "round 2: z".into()],
                    ),
                    Entry {
                        backend: "busy".into(),
                        outcome: Outcome::Skipped("not here".into()),
                    },
                ],
            ),
            cell(Some("not enough fds"), vec![]),
        ];
        let ping_summary = PingSummary {
            rounds: 3,
            round_trips: 300,
            p50_ns: 5_000.0,
            p99_ns: 9_000.0,
            max_ns: 20_000.0,
            worst_ns: 25_000.0,
            slow: 0,
            waits_per_rt: 1.0,
            empty_reads: 0,
        };
        let ping = PingReport {
            round_trips: 100,
            rounds: 3,
            warmup: 10,
            skipped: None,
            entries: vec![
                PingEntry {
                    backend: pingpong::REFERENCE.into(),
                    description: "epoll".into(),
                    summary: Some(ping_summary),
                    failures: vec![],
                },
                PingEntry {
                    backend: "kevent-lt".into(),
                    description: "kevent".into(),
                    summary: None,
                    failures: vec!["round 1: timed out".into()],
                },
            ],
        };
        (header, cells, ping)
    }

    fn keys(v: &serde_json::Value) -> Vec<&str> {
        v.as_object().unwrap().keys().map(String::as_str).collect()
    }

    #[test]
    fn the_json_document_has_its_keys_and_types() {
        let (header, cells, ping) = report();
        let text = json(&header, &cells, Some(&ping));
        let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let mut top = keys(&doc);
        top.sort_unstable();
        assert_eq!(top, ["cells", "header", "pingpong"]);
        let h = &doc["header"];
        assert_eq!(h["cpu"], "cpu \"x\"");
        assert_eq!(h["nproc"], 2);
        assert_eq!(h["reference"], REFERENCE);
        assert_eq!(h["settings"]["seconds"], 0.5);
        assert!(h["settings"]["paced_writes_per_s"].is_null());
        assert_eq!(h["settings"]["streams"], serde_json::json!([100, 2000]));
        assert_eq!(h["backends"]["epoll-et"], "edge");

        let results = doc["cells"][0]["results"].as_array().unwrap();
        assert!(doc["cells"][0]["skipped"].is_null());
        assert_eq!(doc["cells"][0]["kind"], "pipe");
        assert_eq!(doc["cells"][0]["streams"], 100);
        let ok = &results[1];
        assert_eq!(keys(ok).len(), 23, "{:?}", keys(ok));
        // In the order they always had (serde_json's `Value` sorts them).
        assert!(
            text.contains(
                r#"{"backend": "kevent-et", "status": "ok", "failures": ["round 1: x"], "rounds": 2, "events_per_s": 3000000.0, "events_vs_et": 1.5, "#
            ),
            "{text}"
        );
        assert_eq!(ok["status"], "ok");
        assert_eq!(ok["rounds"], 2);
        assert_eq!(ok["events_per_s"], 3e6);
        assert_eq!(ok["events_vs_et"], 1.5);
        assert_eq!(ok["lost_total"], 3);
        assert_eq!(ok["writer_bound"], false);
        assert_eq!(ok["failures"], serde_json::json!(["round 1: x"]));
        // Not a number (no round had an event), not paced: null.
        assert!(ok["cpu_ns_per_event_min"].is_null());
        assert!(ok["p50_ns"].is_null());
        assert_eq!(keys(&results[2]), ["backend", "failures", "status"]);
        assert_eq!(results[2]["status"], "failed");
        assert_eq!(keys(&results[3]), ["backend", "reason", "status"]);
        assert_eq!(results[3]["reason"], "not here");
        assert_eq!(doc["cells"][1]["skipped"], "not enough fds");
        assert_eq!(doc["cells"][1]["results"], serde_json::json!([]));

        let p = &doc["pingpong"];
        assert_eq!(p["socket"], "unix");
        assert_eq!(p["warmup_round_trips"], 10);
        assert!(p["skipped"].is_null());
        assert_eq!(p["results"][0]["p99_us"], 9.0);
        assert_eq!(p["results"][0]["p99_vs_epoll"], 1.0);
        assert_eq!(p["results"][0]["round_trips_total"], 300);
        assert_eq!(p["results"][1]["status"], "failed");
        assert!(p["results"][1].get("p50_us").is_none());

        // The layout: the settings on one line, each cell on one.
        assert!(
            text.contains(r#""settings": {"seconds": 0.5, "paced_writes_per_s": null, "streams": [100, 2000]}"#),
            "{text}"
        );
        assert!(text
            .lines()
            .any(|l| l.trim_start().starts_with(r#"{"kind": "pipe""#)));
        assert!(text.ends_with("}\n"));
        let without: serde_json::Value =
            serde_json::from_str(&json(&header, &cells, None)).unwrap();
        assert!(without["pingpong"].is_null());
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(1_920_000.0), "1.92 M");
        assert_eq!(si(12_345.0), "12.3 k");
        assert_eq!(si(512.0), "512");
    }
}
