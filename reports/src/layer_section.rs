//! The layer section of `report.md`: top-1 per layer for every layer sweep, a table each.

use crate::layer_figure::{in_display_order, layer_sweeps, swept_layer};
use crate::markdown::pct;
use crate::models::Models;
use crate::style::unique;
use crate::ResultRow;
use std::fmt::Write;

/// Top-1 per layer for every layer sweep (a dataset's and model's vision or language-model
/// feature points that differ only in their layer), with the model's post-projection points of
/// the dataset beneath a vision sweep; the best layer per level in bold. With several `models`
/// each table's label names its model.
pub(crate) fn layer_section(s: &mut String, rows: &[ResultRow], figure: &str, models: &Models) {
    let sweeps = layer_sweeps(rows, 2);
    if sweeps.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Probe accuracy by layer\n");
    let _ = writeln!(
        s,
        "Test top-1 (%) of the probes on each probed layer (`hidden_states` index, as \
         transformers counts them), with the post-projection feature points beneath; the best \
         layer of each level is in bold. The figure draws the post-projection points as dashed \
         lines.\n"
    );
    if !figure.is_empty() {
        let _ = writeln!(s, "![probe accuracy by layer]({figure})\n");
    }
    for sweep in &sweeps {
        let sweep_rows: Vec<&ResultRow> = sweep.rows(rows).collect();
        let levels = unique(sweep_rows.iter().map(|r| r.level.as_str()));
        let ours = |r: &ResultRow| r.dataset == sweep.dataset && r.model == sweep.model;
        let top1 = |fp: &str, level: &str| {
            rows.iter()
                .find(|r| ours(r) && r.feature_point == fp && r.level == level)
                .map(|r| r.top1)
        };
        let best = |level: &str| {
            sweep_rows
                .iter()
                .filter(|r| r.level == level)
                .map(|r| r.top1)
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let model = if models.several() {
            format!(" · {}", models.name(&sweep.model))
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "**{}{model}** · `{}[K].{}`\n",
            sweep.dataset, sweep.prefix, sweep.tokens
        );
        let _ = writeln!(s, "| layer | {} |", levels.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(levels.len()));
        let mut layers = sweep.layers.clone();
        in_display_order(&mut layers);
        let post = unique(
            rows.iter()
                .filter(|r| {
                    ours(r) && r.stage == "post-projection" && sweep.part() == "vision encoder"
                })
                .map(|r| r.feature_point.as_str()),
        );
        let lines = layers
            .iter()
            .map(|k| (k.to_string(), sweep.point(*k)))
            .chain(post.iter().map(|fp| (format!("`{fp}`"), fp.to_string())));
        for (name, fp) in lines {
            let cells: Vec<String> = levels
                .iter()
                .map(|level| match top1(&fp, level) {
                    Some(v) if swept_layer(&fp).is_some() && v == best(level) => {
                        format!("**{}**", pct(v))
                    }
                    Some(v) => pct(v),
                    None => "–".into(),
                })
                .collect();
            let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }
}
