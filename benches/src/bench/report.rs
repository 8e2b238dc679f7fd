//! The report: a text table per cell, or CSV, or JSON (hand-written, no serde).

use std::fmt::Write as _;

use super::json::{jn, js};
use super::metrics::Summary;
use super::pingpong::{self, PingReport};
use super::settings::Setting;
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
/// is off is `null` (`"paced_writes_per_s": null`).
pub fn json(h: &Header, cells: &[CellReport], ping: Option<&PingReport>) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "{{\n  \"header\": {{\n    \"cpu\": {},\n    \"nproc\": {},\n    \"kernel\": {},\n    \
         \"commit\": {},\n    \"date\": {},\n    \"reference\": {},\n    \"settings\": {{",
        js(&h.sys.cpu),
        h.sys.nproc,
        js(&h.sys.kernel),
        js(&h.sys.commit),
        js(&h.sys.date),
        js(REFERENCE)
    );
    let settings: Vec<String> = h
        .settings
        .iter()
        .map(|s| format!("{}: {}", js(&s.json_key()), s.json_value()))
        .collect();
    let _ = write!(o, "{}}},\n    \"backends\": {{", settings.join(", "));
    let backends: Vec<String> = h
        .backends
        .iter()
        .map(|(k, v)| format!("\n      {}: {}", js(k), js(v)))
        .collect();
    let _ = write!(o, "{}\n    }}\n  }},\n  \"cells\": [", backends.join(","));
    for (ci, c) in cells.iter().enumerate() {
        let _ = write!(
            o,
            "{}\n    {{\"kind\": {}, \"streams\": {}, \"consumers\": {}, \"mode\": {}, \
             \"skipped\": {}, \"results\": [",
            if ci == 0 { "" } else { "," },
            js(c.cell.kind.name()),
            c.cell.streams,
            c.cell.consumers,
            js(c.cell.mode.name()),
            c.skipped.as_deref().map_or("null".into(), js)
        );
        let reference = c.reference();
        for (ei, e) in c.entries.iter().enumerate() {
            let sep = if ei == 0 { "" } else { "," };
            let _ = write!(o, "{sep}\n      {{\"backend\": {}, ", js(&e.backend));
            match &e.outcome {
                Outcome::Skipped(why) => {
                    let _ = write!(o, "\"status\": \"skipped\", \"reason\": {}}}", js(why));
                }
                Outcome::Ran { summary, failures } => {
                    let f: Vec<String> = failures.iter().map(|x| js(x)).collect();
                    let status = if summary.is_some() { "ok" } else { "failed" };
                    let _ = write!(
                        o,
                        "\"status\": \"{status}\", \"failures\": [{}]",
                        f.join(", ")
                    );
                    if let Some(s) = summary {
                        let m = &s.median;
                        let opt = |x: Option<f64>| x.map_or("null".into(), jn);
                        let _ = write!(
                            o,
                            ", \"rounds\": {}, \"events_per_s\": {}, \"events_vs_et\": {}, \
                             \"writes_per_s\": {}, \"writer_cpu\": {}, \"cpu_ns_per_event\": {}, \
                             \"cpu_vs_et\": {}, \"csw_per_event\": {}, \"wakeups_per_event\": {}, \
                             \"empty_share\": {}, \"events_per_wait\": {}, \"lost_total\": {}, \
                             \"rearms_per_s\": {}, \"p50_ns\": {}, \"p99_ns\": {}, \
                             \"events_min\": {}, \"events_max\": {}, \"cpu_ns_per_event_min\": {}, \
                             \"cpu_ns_per_event_max\": {}, \"writer_bound\": {}",
                            s.rounds,
                            jn(m.events_per_s),
                            opt(ratio(
                                m.events_per_s,
                                reference.map(|r| r.median.events_per_s)
                            )),
                            jn(m.writes_per_s),
                            jn(m.writer_cpu),
                            jn(m.cpu_per_event_ns),
                            opt(ratio(
                                m.cpu_per_event_ns,
                                reference.map(|r| r.median.cpu_per_event_ns)
                            )),
                            jn(m.csw_per_event),
                            jn(m.wakeups_per_event),
                            jn(m.empty_share),
                            jn(m.events_per_wait),
                            s.lost_total,
                            jn(m.rearms_per_s),
                            opt(m.p50_ns),
                            opt(m.p99_ns),
                            jn(s.events_min),
                            jn(s.events_max),
                            jn(s.cpu_min),
                            jn(s.cpu_max),
                            writer_bound(s)
                        );
                    }
                    o.push('}');
                }
            }
        }
        let _ = write!(o, "\n    ]}}");
    }
    let _ = write!(o, "\n  ],\n  \"pingpong\": ");
    match ping {
        None => o.push_str("null"),
        Some(p) => ping_json(&mut o, p),
    }
    let _ = writeln!(o, "\n}}");
    o
}

/// The ping-pong object of the JSON document.
fn ping_json(o: &mut String, p: &PingReport) {
    let _ = write!(
        o,
        "{{\"socket\": \"unix\", \"consumers\": 1, \"round_trips\": {}, \"rounds\": {}, \
         \"warmup_round_trips\": {}, \"reference\": {}, \"skipped\": {}, \"results\": [",
        p.round_trips,
        p.rounds,
        p.warmup,
        js(pingpong::REFERENCE),
        p.skipped.as_deref().map_or("null".into(), js)
    );
    let reference = p.reference().map(|r| r.p99_ns);
    for (i, e) in p.entries.iter().enumerate() {
        let f: Vec<String> = e.failures.iter().map(|x| js(x)).collect();
        let _ = write!(
            o,
            "{}\n    {{\"backend\": {}, \"description\": {}, \"status\": \"{}\", \
             \"failures\": [{}]",
            if i == 0 { "" } else { "," },
            js(&e.backend),
            js(&e.description),
            if e.summary.is_some() { "ok" } else { "failed" },
            f.join(", ")
        );
        if let Some(s) = &e.summary {
            let _ = write!(
                o,
                ", \"rounds\": {}, \"round_trips_total\": {}, \"p50_us\": {}, \
                 \"p99_us\": {}, \"max_us\": {}, \"worst_us\": {}, \"p99_vs_epoll\": {}, \
                 \"slow_round_trips\": {}, \"wakeups_per_round_trip\": {}, \
                 \"empty_reads\": {}",
                s.rounds,
                s.round_trips,
                jn(s.p50_ns / 1e3),
                jn(s.p99_ns / 1e3),
                jn(s.max_ns / 1e3),
                jn(s.worst_ns / 1e3),
                ratio(s.p99_ns, reference).map_or("null".into(), jn),
                s.slow,
                jn(s.waits_per_rt),
                s.empty_reads
            );
        }
        o.push('}');
    }
    o.push_str("\n  ]}");
}

#[cfg(test)]
mod tests {
    use super::{jn, js, si};

    #[test]
    fn json_strings_are_escaped_and_non_finite_numbers_are_null() {
        assert_eq!(js("a\"b\\c\n"), "\"a\\\"b\\\\c\\n\"");
        assert_eq!(jn(f64::NAN), "null");
        assert_eq!(jn(1.5), "1.5");
    }

    #[test]
    fn si_prefixes() {
        assert_eq!(si(1_920_000.0), "1.92 M");
        assert_eq!(si(12_345.0), "12.3 k");
        assert_eq!(si(512.0), "512");
    }
}
