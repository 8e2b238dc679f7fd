//! A hand-written SVG bar chart of the throughput cells: per cell and backend, events/s
//! and CPU per event, as medians over rounds (bars) with the lowest and highest round
//! (whiskers). Each metric has one scale, shared by every cell, so that bars compare
//! across cells as well as within one; the chart says so, and lists the settings.

use std::fmt::Write as _;

use super::report::{CellReport, Header, Outcome};

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 130.0;
const BAR_W: f64 = 300.0;
const ROW_H: f64 = 18.0;
const GAP: f64 = 14.0;
/// Characters per line of the settings text.
const SETTINGS_LINE: usize = 150;

/// What the CPU figure counts (the harness's `RunResult::usage`).
pub const CPU_MEANS: &str = "CPU per event = CPU time of the consumers plus the backend's \
                             helper threads (kevent: its producer thread), divided by the events; \
                             the writer thread is not counted";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `1.92 M`, `512.0 k`.
fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else {
        format!("{:.1} k", x / 1e3)
    }
}

/// One backend's figures in one cell.
struct Row<'a> {
    name: &'a str,
    ev: f64,
    ev_min: f64,
    ev_max: f64,
    cpu: f64,
    cpu_min: f64,
    cpu_max: f64,
}

fn rows(c: &CellReport) -> Vec<Row<'_>> {
    c.entries
        .iter()
        .filter_map(|e| match &e.outcome {
            Outcome::Ran {
                summary: Some(s), ..
            } => Some(Row {
                name: e.backend.as_str(),
                ev: s.median.events_per_s,
                ev_min: s.events_min,
                ev_max: s.events_max,
                cpu: s.median.cpu_per_event_ns,
                cpu_min: s.cpu_min,
                cpu_max: s.cpu_max,
            }),
            _ => None,
        })
        .collect()
}

/// The largest finite value of `f` over every row of every cell, at least 1.
fn scale(cells: &[CellReport], f: impl Fn(&Row<'_>) -> [f64; 2]) -> f64 {
    cells
        .iter()
        .flat_map(|c| rows(c).iter().flat_map(&f).collect::<Vec<_>>())
        .filter(|x| x.is_finite())
        .fold(0.0, f64::max)
        .max(1.0)
}

/// `text` cut into lines of at most `width` characters at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let last = lines.last_mut().expect("never empty");
        if !last.is_empty() && last.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// A bar from `x` of width `w` at row `y`, its whisker from `x_lo` to `x_hi`, and the
/// `label` right of both.
fn bar(
    body: &mut String,
    x: f64,
    y: f64,
    w: f64,
    lo_hi: Option<(f64, f64)>,
    fill: &str,
    label: &str,
) {
    let h = ROW_H - 4.0;
    let _ = write!(
        body,
        "<rect x=\"{x}\" y=\"{y}\" width=\"{w:.1}\" height=\"{h}\" fill=\"{fill}\"/>"
    );
    let mut end = x + w;
    if let Some((lo, hi)) = lo_hi {
        let (x_lo, x_hi) = (x + lo, x + hi);
        let (mid, top, bottom) = (y + h / 2.0, y + 3.0, y + h - 3.0);
        let _ = write!(
            body,
            "<g class=\"whisker\" stroke=\"#222\" stroke-width=\"1.2\">\
             <line x1=\"{x_lo:.1}\" y1=\"{mid}\" x2=\"{x_hi:.1}\" y2=\"{mid}\"/>\
             <line x1=\"{x_lo:.1}\" y1=\"{top}\" x2=\"{x_lo:.1}\" y2=\"{bottom}\"/>\
             <line x1=\"{x_hi:.1}\" y1=\"{top}\" x2=\"{x_hi:.1}\" y2=\"{bottom}\"/></g>"
        );
        end = end.max(x_hi);
    }
    let _ = write!(
        body,
        "<text x=\"{:.1}\" y=\"{}\" font-size=\"10\">{}</text>",
        end + 4.0,
        y + ROW_H - 5.0,
        esc(label)
    );
}

/// Renders the chart.
pub fn chart(h: &Header, cells: &[CellReport]) -> String {
    let mut body = String::new();
    let mut y = 20.0;
    let text = |body: &mut String, y: f64, size: u32, bold: bool, s: &str| {
        let _ = writeln!(
            body,
            "<text x=\"10\" y=\"{y}\" font-size=\"{size}\"{}>{}</text>",
            if bold { " font-weight=\"bold\"" } else { "" },
            esc(s)
        );
    };
    text(
        &mut body,
        y,
        15,
        true,
        "kevent bench: events/s (higher is better) and CPU per event (lower is better)",
    );
    y += 17.0;
    text(
        &mut body,
        y,
        11,
        false,
        "bars: medians over rounds; whiskers: lowest to highest round (min–max)",
    );
    y += 15.0;
    text(
        &mut body,
        y,
        11,
        false,
        &format!(
            "{} ({} CPUs); {}; commit {}; {}",
            h.sys.cpu, h.sys.nproc, h.sys.kernel, h.sys.commit, h.sys.date
        ),
    );
    let settings: Vec<String> = h
        .settings
        .iter()
        .map(|s| format!("{}={s}", s.name))
        .collect();
    for line in wrap(&format!("settings: {}", settings.join(" ")), SETTINGS_LINE) {
        y += 14.0;
        text(&mut body, y, 11, false, &line);
    }
    let max_ev = scale(cells, |r| [r.ev, r.ev_max]);
    let max_cpu = scale(cells, |r| [r.cpu, r.cpu_max]);
    y += 14.0;
    text(
        &mut body,
        y,
        11,
        false,
        &format!(
            "scale: one per metric, shared by every cell: a full-width bar is {} events/s, \
             or {max_cpu:.0} ns of CPU per event",
            rate(max_ev)
        ),
    );
    for line in wrap(CPU_MEANS, SETTINGS_LINE) {
        y += 14.0;
        text(&mut body, y, 11, false, &line);
    }
    let x_ev = 10.0 + LABEL_W;
    let x_cpu = x_ev + BAR_W + 150.0;
    for c in cells {
        let rows = rows(c);
        y += GAP + 14.0;
        text(&mut body, y, 13, true, &c.cell.to_string());
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
            r##"<text x="{x_ev}" y="{y}" font-size="11" fill="#4878d0">events/s</text><text x="{x_cpu}" y="{y}" font-size="11" fill="#c0602a">CPU per event (consumers + helper threads)</text>"##
        );
        let width = |v: f64, max: f64| if v.is_finite() { v / max * BAR_W } else { 0.0 };
        for r in rows {
            y += 4.0;
            let _ = write!(
                body,
                "<text x=\"10\" y=\"{}\" font-size=\"11\">{}</text>",
                y + ROW_H - 5.0,
                esc(r.name)
            );
            let ev_spread = (r.ev_min.is_finite() && r.ev_max.is_finite())
                .then(|| (width(r.ev_min, max_ev), width(r.ev_max, max_ev)));
            bar(
                &mut body,
                x_ev,
                y,
                width(r.ev, max_ev).max(0.5),
                ev_spread,
                "#4878d0",
                &rate(r.ev),
            );
            let cpu_spread = (r.cpu_min.is_finite() && r.cpu_max.is_finite())
                .then(|| (width(r.cpu_min, max_cpu), width(r.cpu_max, max_cpu)));
            let cpu_label = if r.cpu.is_finite() {
                format!("{:.0} ns", r.cpu)
            } else {
                "-".into()
            };
            bar(
                &mut body,
                x_cpu,
                y,
                if r.cpu.is_finite() {
                    width(r.cpu, max_cpu).max(0.5)
                } else {
                    0.0
                },
                cpu_spread,
                "#ee854a",
                &cpu_label,
            );
            body.push('\n');
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

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn wrap_cuts_at_spaces_within_the_width() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("aaaaaa b", 3), vec!["aaaaaa", "b"]);
        assert_eq!(wrap("", 3), vec![""]);
    }
}
