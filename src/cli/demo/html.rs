//! The demo's HTML report: latency over time per policy and each backend's share, as inline SVG
//! (no scripts, no network: it opens anywhere).

use std::fmt::Write;

use super::PhaseResult;

const COLORS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 300.0;
const MARGIN: f64 = 50.0;

/// A part of the page: a results table, then its phases' p99 over time and, where `shares`, each
/// backend's share.
pub struct Section<'a> {
    pub title: &'a str,
    pub table: &'a str,
    pub phases: &'a [PhaseResult],
    pub shares: bool,
}

/// The whole page.
pub fn report(title: &str, notes: &[String], sections: &[Section<'_>]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:820px;margin:2em auto;color:#222}}\
         pre{{background:#f6f6f6;padding:1em;overflow-x:auto}}</style></head><body><h1>{title}</h1>"
    );
    for note in notes {
        let _ = write!(html, "<p>{}</p>", escape(note));
    }
    for section in sections {
        let _ = write!(
            html,
            "<h2>{}</h2><pre>{}</pre><h3>p99 latency over time (1-second windows)</h3>{}",
            escape(section.title),
            escape(section.table),
            latency_chart(section.phases)
        );
        if section.shares {
            let _ = write!(
                html,
                "<h3>Share of requests per backend</h3>{}",
                share_chart(section.phases)
            );
        }
    }
    html.push_str("</body></html>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Per-second p99 of each phase, as one line each.
fn latency_chart(phases: &[PhaseResult]) -> String {
    let series: Vec<Vec<(f64, f64)>> = phases.iter().map(|p| p.p99_per_second()).collect();
    let max_x = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let max_y = series.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let x = |v: f64| MARGIN + v / max_x * (WIDTH - 2.0 * MARGIN);
    let y = |v: f64| HEIGHT - MARGIN - v / max_y * (HEIGHT - 2.0 * MARGIN);
    let mut svg = format!("<svg width=\"{WIDTH}\" height=\"{HEIGHT}\" xmlns=\"http://www.w3.org/2000/svg\">");
    let _ = write!(
        svg,
        "<line x1=\"{MARGIN}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#888\"/>",
        HEIGHT - MARGIN,
        WIDTH - MARGIN
    );
    let _ = write!(
        svg,
        "<line x1=\"{MARGIN}\" y1=\"{MARGIN}\" x2=\"{MARGIN}\" y2=\"{}\" stroke=\"#888\"/>",
        HEIGHT - MARGIN
    );
    let _ = write!(
        svg,
        "<text x=\"{MARGIN}\" y=\"{}\" font-size=\"12\">0 s</text>",
        HEIGHT - MARGIN + 16.0
    );
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\">{max_x:.0} s</text>",
        WIDTH - MARGIN - 20.0,
        HEIGHT - MARGIN + 16.0
    );
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"{}\" font-size=\"12\">{max_y:.0} ms</text>",
        MARGIN + 4.0
    );
    for (i, (phase, points)) in phases.iter().zip(&series).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        // Legend in a row under the axis, clear of the lines.
        let lx = MARGIN + 150.0 * i as f64;
        let ly = HEIGHT - 10.0;
        let _ = write!(
            svg,
            "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{color}\"/>",
            ly - 10.0
        );
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{ly}\" font-size=\"12\">{}</text>",
            lx + 16.0,
            phase.report.policy
        );
    }
    svg.push_str("</svg>");
    svg
}

/// One stacked bar per phase, one segment per backend.
fn share_chart(phases: &[PhaseResult]) -> String {
    let bar = 24.0;
    let height = (phases.len() as f64) * (bar + 12.0) + 40.0;
    let mut svg = format!("<svg width=\"{WIDTH}\" height=\"{height}\" xmlns=\"http://www.w3.org/2000/svg\">");
    let names: Vec<&String> = phases
        .first()
        .map(|p| p.report.share.keys().collect())
        .unwrap_or_default();
    for (row, phase) in phases.iter().enumerate() {
        let top = 10.0 + row as f64 * (bar + 12.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>",
            top + 16.0,
            phase.report.policy
        );
        let mut left = 170.0;
        for (i, name) in names.iter().enumerate() {
            let share = phase.report.share.get(*name).copied().unwrap_or(0.0);
            let w = share * (WIDTH - 190.0);
            let _ = write!(svg, "<rect x=\"{left:.1}\" y=\"{top}\" width=\"{w:.1}\" height=\"{bar}\" fill=\"{}\"><title>{name}: {:.0}%</title></rect>", COLORS[i % COLORS.len()], share * 100.0);
            left += w;
        }
    }
    let legend_y = height - 12.0;
    for (i, name) in names.iter().enumerate() {
        let lx = 170.0 + 130.0 * i as f64;
        let _ = write!(
            svg,
            "<rect x=\"{lx}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>",
            legend_y - 10.0,
            COLORS[i % COLORS.len()]
        );
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{legend_y}\" font-size=\"12\">{name}</text>",
            lx + 16.0
        );
    }
    svg.push_str("</svg>");
    svg
}
