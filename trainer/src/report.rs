//! The short human-readable report every run writes next to its models.

use std::fmt::Write;

use crate::RunSummary;

/// Markdown: the data used, then each model's metrics beside its baselines' and what became of it.
pub fn render(summary: &RunSummary, telemetry: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Training run {}\n", summary.version);
    let _ = writeln!(
        out,
        "- telemetry: `{telemetry}` ({} files, {} rows)",
        summary.files, summary.rows
    );
    if let Some((start, end)) = summary.data_window_us {
        let _ = writeln!(
            out,
            "- data window: {} to {} (the newest 20% validate)",
            utc(start),
            utc(end)
        );
    }
    let _ = writeln!(out, "- outcome: {:?}\n", summary.status);
    for model in &summary.models {
        let _ = writeln!(out, "## {}: {:?}\n\n{}\n", model.kind, model.status, model.reason);
        let Some(evaluation) = &model.evaluation else {
            continue;
        };
        let _ = writeln!(
            out,
            "{} training rows, {} validation rows; decisive metric `{}` (lower is better).\n",
            model.training_rows, model.validation_rows, evaluation.decisive_metric
        );
        let baselines: Vec<&String> = evaluation.baselines.keys().collect();
        let _ = write!(out, "| metric | model |");
        for name in &baselines {
            let _ = write!(out, " {name} |");
        }
        let _ = writeln!(out, "\n|---|---|{}", "---|".repeat(baselines.len()));
        for (metric, value) in &evaluation.model {
            let _ = write!(out, "| {metric} | {value:.4} |");
            for name in &baselines {
                match evaluation.baselines[*name].get(metric) {
                    Some(v) => {
                        let _ = write!(out, " {v:.4} |");
                    }
                    None => out.push_str(" |"),
                }
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

fn utc(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| us.to_string())
}
