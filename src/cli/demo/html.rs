//! The demo's HTML report: the live dashboard's views over the demo's phases, as one static page
//! (inline SVG and CSS, no scripts, no network: it opens anywhere). Per part: the results as a table,
//! p99 over time with its scale and legend, and each backend's share of the requests.

use std::fmt::Write;

use super::PhaseResult;

const COLORS: [&str; 8] = [
    "#2a6fb0", "#c8362f", "#2f8a3c", "#8a4fb0", "#c77d00", "#16879a", "#7a5c3e", "#b0407a",
];
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 28.0;

/// The dashboard's look, so the report reads like it.
const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;color:#1d232a;background:#f6f7f9;margin:0}\
main{max-width:900px;margin:0 auto;padding:1em 1.5em 3em}\
section{background:#fff;border:1px solid #d8dde2;border-radius:6px;padding:1em 1.2em;margin-bottom:1em}\
h1{font-size:1.4em}h2{font-size:1.1em;margin:0 0 .6em}h3{font-size:.95em;color:#66707a;margin:1em 0 .4em}\
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}\
th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #d8dde2;white-space:nowrap}\
th{color:#66707a;font-size:.85em}td.num,th.num{text-align:right}\
svg text{font-size:11px;fill:#66707a}.legend{display:flex;flex-wrap:wrap;gap:.3em 1em;font-size:.85em;color:#66707a}\
.legend span::before{content:'';display:inline-block;width:10px;height:10px;margin-right:4px;background:var(--c);border-radius:2px}\
p.note{color:#444}";

/// A part of the page: its phases as a table, p99 over time (of what `chart` says) and, where
/// `shares`, each backend's share of the requests.
pub struct Section<'a> {
    pub title: &'a str,
    pub phases: &'a [PhaseResult],
    pub shares: bool,
    pub chart: &'a str,
}

/// The whole page.
pub fn report(title: &str, notes: &[String], sections: &[Section<'_>]) -> String {
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><main><h1>{}</h1>",
        escape(title),
        escape(title)
    );
    html.push_str("<section><h2>What ran</h2>");
    for note in notes {
        let _ = write!(html, "<p class=\"note\">{}</p>", escape(note));
    }
    html.push_str("</section>");
    for section in sections {
        let _ = write!(
            html,
            "<section><h2>{}</h2>{}<h3>{}</h3>{}",
            escape(section.title),
            results_table(section.phases),
            escape(section.chart),
            latency_chart(section.phases)
        );
        if section.shares {
            let _ = write!(
                html,
                "<h3>Share of the requests each backend served</h3>{}",
                share_chart(section.phases)
            );
        }
        html.push_str("</section>");
    }
    html.push_str("</main></body></html>\n");
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The phases' latencies and errors, one row each; for LLM phases also time to first token and the
/// share of prompt tokens the servers found cached.
fn results_table(phases: &[PhaseResult]) -> String {
    let llm = phases.iter().any(|p| p.report.llm.is_some());
    let mut table = String::from(
        "<table><thead><tr><th>phase</th><th class=\"num\">sent</th><th class=\"num\">p50 ms</th>\
         <th class=\"num\">p90 ms</th><th class=\"num\">p99 ms</th><th class=\"num\">p99.9 ms</th>\
         <th class=\"num\">errors</th>",
    );
    if llm {
        table.push_str(
            "<th class=\"num\">TTFT p50 ms</th><th class=\"num\">TTFT p90 ms</th>\
             <th class=\"num\">TTFT p99 ms</th><th class=\"num\">prefix hit</th>",
        );
    }
    table.push_str("</tr></thead><tbody>");
    for phase in phases {
        let r = &phase.report;
        let _ = write!(
            table,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td>\
             <td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.2}%</td>",
            escape(&r.policy),
            phase.outcomes.len(),
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms,
            r.error_rate * 100.0
        );
        if let Some(l) = r.llm.filter(|_| llm) {
            let _ = write!(
                table,
                "<td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td><td class=\"num\">{:.1}</td>\
                 <td class=\"num\">{:.1}%</td>",
                l.ttft_p50_ms,
                l.ttft_p90_ms,
                l.ttft_p99_ms,
                l.prefix_hit_ratio * 100.0
            );
        }
        table.push_str("</tr>");
    }
    table.push_str("</tbody></table>");
    table
}

/// A value on a tick of the scale, without spurious decimals.
fn tick_label(value: f64, unit: &str) -> String {
    if value >= 100.0 || value == 0.0 {
        format!("{value:.0} {unit}")
    } else {
        format!("{value:.1} {unit}")
    }
}

/// Per-second p99 of each phase, as one line each, over a scale with ticks, and a legend.
fn latency_chart(phases: &[PhaseResult]) -> String {
    let series: Vec<Vec<(f64, f64)>> = phases.iter().map(PhaseResult::p99_per_second).collect();
    let max_x = series.iter().flatten().map(|p| p.0).fold(1.0, f64::max);
    let max_y = nice_ceiling(series.iter().flatten().map(|p| p.1).fold(1.0, f64::max));
    let x = |v: f64| LEFT + v / max_x * (WIDTH - LEFT - RIGHT);
    let y = |v: f64| HEIGHT - BOTTOM - v / max_y * (HEIGHT - TOP - BOTTOM);
    let mut svg =
        format!("<svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" xmlns=\"http://www.w3.org/2000/svg\">");
    for i in 0..=4 {
        let v = max_y * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#d8dde2\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            tick_label(v, "ms"),
            y = y(v)
        );
    }
    let step = nice_ceiling(max_x / 6.0).max(1.0);
    let mut t = 0.0;
    while t <= max_x + 1e-9 {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{t:.0} s</text>",
            x(t),
            HEIGHT - 8.0
        );
        t += step;
    }
    for (i, points) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), y(py)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" points=\"{}\"/>",
            COLORS[i % COLORS.len()],
            path.join(" ")
        );
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (i, phase) in phases.iter().enumerate() {
        let _ = write!(
            svg,
            "<span style=\"--c:{}\">{} (p99 {:.0} ms)</span>",
            COLORS[i % COLORS.len()],
            escape(&phase.report.policy),
            phase.report.p99_ms
        );
    }
    svg.push_str("</div>");
    svg
}

/// 1, 2 or 5 times a power of ten, at least `v`: a scale's top that reads easily.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * power)
}

/// One stacked bar per phase, one segment per backend, each labelled with its share, and a legend.
fn share_chart(phases: &[PhaseResult]) -> String {
    let bar = 24.0;
    let label_width = 170.0;
    let height = (phases.len() as f64) * (bar + 12.0) + 10.0;
    let mut svg =
        format!("<svg viewBox=\"0 0 {WIDTH} {height}\" width=\"100%\" xmlns=\"http://www.w3.org/2000/svg\">");
    let names: Vec<&String> = phases
        .first()
        .map(|p| p.report.share.keys().collect())
        .unwrap_or_default();
    for (row, phase) in phases.iter().enumerate() {
        let top = 5.0 + row as f64 * (bar + 12.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text>",
            top + 16.0,
            escape(&phase.report.policy)
        );
        let mut left = label_width;
        for (i, name) in names.iter().enumerate() {
            let share = phase.report.share.get(*name).copied().unwrap_or(0.0);
            let w = share * (WIDTH - label_width - RIGHT);
            let _ = write!(
                svg,
                "<rect x=\"{left:.1}\" y=\"{top}\" width=\"{w:.1}\" height=\"{bar}\" fill=\"{}\"><title>{}: {:.1}%</title></rect>",
                COLORS[i % COLORS.len()],
                escape(name),
                share * 100.0
            );
            if w > 34.0 {
                let _ = write!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" style=\"fill:#fff\">{:.0}%</text>",
                    left + w / 2.0,
                    top + 16.0,
                    share * 100.0
                );
            }
            left += w;
        }
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (i, name) in names.iter().enumerate() {
        let _ = write!(
            svg,
            "<span style=\"--c:{}\">{}</span>",
            COLORS[i % COLORS.len()],
            escape(name)
        );
    }
    svg.push_str("</div>");
    svg
}

#[cfg(test)]
mod tests {
    use super::nice_ceiling;

    #[test]
    fn scales_end_on_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(0.07), 0.1);
    }
}
