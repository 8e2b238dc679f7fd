//! A hand-written SVG bar chart: per cell, events/s and consumer CPU per event by backend.

use std::fmt::Write as _;

use super::report::{CellReport, Header, Outcome};

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 130.0;
const BAR_W: f64 = 300.0;
const ROW_H: f64 = 18.0;
const GAP: f64 = 14.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the chart.
pub fn chart(h: &Header, cells: &[CellReport]) -> String {
    let mut body = String::new();
    let mut y = 20.0;
    let _ = writeln!(
        body,
        r#"<text x="10" y="{y}" font-size="15" font-weight="bold">kevent bench: events/s (higher is better) and consumer CPU per event (lower is better), medians</text>"#
    );
    y += 18.0;
    let _ = writeln!(
        body,
        r#"<text x="10" y="{y}" font-size="11">{} ({} CPUs); {}; commit {}; {}</text>"#,
        esc(&h.sys.cpu),
        h.sys.nproc,
        esc(&h.sys.kernel),
        esc(&h.sys.commit),
        esc(&h.sys.date)
    );
    y += 10.0;
    let x_ev = 10.0 + LABEL_W;
    let x_cpu = x_ev + BAR_W + 150.0;
    for c in cells {
        let rows: Vec<(&str, f64, f64)> = c
            .entries
            .iter()
            .filter_map(|e| match &e.outcome {
                Outcome::Ran {
                    summary: Some(s), ..
                } => Some((
                    e.backend.as_str(),
                    s.median.events_per_s,
                    s.median.cpu_per_event_ns,
                )),
                _ => None,
            })
            .collect();
        y += GAP + 14.0;
        let _ = writeln!(
            body,
            r#"<text x="10" y="{y}" font-size="13" font-weight="bold">{}</text>"#,
            esc(&c.cell.to_string())
        );
        if rows.is_empty() {
            y += ROW_H;
            let why = c.skipped.as_deref().unwrap_or("no results");
            let _ = writeln!(
                body,
                r#"<text x="20" y="{y}" font-size="11">skipped: {}</text>"#,
                esc(why)
            );
            continue;
        }
        y += 14.0;
        let _ = writeln!(
            body,
            r##"<text x="{x_ev}" y="{y}" font-size="11" fill="#4878d0">events/s</text><text x="{x_cpu}" y="{y}" font-size="11" fill="#c0602a">consumer CPU per event</text>"##
        );
        let max_ev = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
        let max_cpu = rows
            .iter()
            .map(|r| r.2)
            .filter(|x| x.is_finite())
            .fold(0.0, f64::max)
            .max(1.0);
        for (name, ev, cpu) in rows {
            y += 4.0;
            let w_ev = (ev / max_ev * BAR_W).max(0.5);
            let w_cpu = if cpu.is_finite() {
                (cpu / max_cpu * BAR_W).max(0.5)
            } else {
                0.0
            };
            let ty = y + ROW_H - 5.0;
            let _ = writeln!(
                body,
                "<text x=\"10\" y=\"{ty}\" font-size=\"11\">{}</text>\
                 <rect x=\"{x_ev}\" y=\"{y}\" width=\"{w_ev:.1}\" height=\"{}\" fill=\"#4878d0\"/>\
                 <text x=\"{:.1}\" y=\"{ty}\" font-size=\"10\">{}</text>\
                 <rect x=\"{x_cpu}\" y=\"{y}\" width=\"{w_cpu:.1}\" height=\"{}\" fill=\"#ee854a\"/>\
                 <text x=\"{:.1}\" y=\"{ty}\" font-size=\"10\">{}</text>",
                esc(name),
                ROW_H - 4.0,
                x_ev + w_ev + 4.0,
                if ev >= 1e6 {
                    format!("{:.2} M", ev / 1e6)
                } else {
                    format!("{:.1} k", ev / 1e3)
                },
                ROW_H - 4.0,
                x_cpu + w_cpu + 4.0,
                if cpu.is_finite() {
                    format!("{cpu:.0} ns")
                } else {
                    "-".into()
                }
            );
            y += ROW_H - 4.0;
        }
    }
    y += 20.0;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{y}\" \
         viewBox=\"0 0 {WIDTH} {y}\" font-family=\"sans-serif\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n{body}</svg>\n"
    )
}
