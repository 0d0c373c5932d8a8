//! The per-class section of `report.md`: for each dataset, model and level, how many classes the
//! model's best post-projection probe labels worse than its best pre-projection probe, and the
//! classes with the largest drops.

use crate::class_figure::{change, class_panels, fate, Fate, SAME};
use crate::markdown::pct;
use crate::models::Models;
use crate::{ClassRow, ResultRow};
use std::fmt::Write;

/// The most classes a drop table lists.
const TOP: usize = 10;

/// The section, when some (dataset, model, level) of `rows` (standard probes) has class rows in
/// `classes` for both its best pre- and best post-projection probe; `figure` is the class
/// figure's file name (none when empty); with several `models` each summary names its model.
pub(crate) fn class_section(
    s: &mut String,
    rows: &[ResultRow],
    classes: &[ClassRow],
    figure: &str,
    models: &Models,
) {
    let panels = class_panels(rows, classes);
    if panels.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Classes the projection loses\n");
    let _ = writeln!(
        s,
        "Each class's test accuracy (%) under the best pre-projection probe (before) and the \
         best post-projection probe (after) of each dataset and level, the pair the modality-gap \
         table compares; change = after − before in points, and the tables list the (at most \
         {TOP}) classes with the largest drops. `per_class.csv` has every class of every probe.\n"
    );
    if !figure.is_empty() {
        let _ = writeln!(s, "![classes the projection loses]({figure})\n");
    }
    for panel in &panels {
        let (pre, post) = (&panel.pre, &panel.post);
        let (lost, gained, same) = panel.counts();
        let n = panel.classes.len();
        let losses = if lost == 0 {
            format!("none of the {n} classes loses accuracy")
        } else {
            format!("{lost} of {n} classes lose accuracy")
        };
        let _ = writeln!(
            s,
            "**{} · {}{}** (`{}` → `{}`): {losses}, {gained} gain, {same} unchanged; mean \
             per-class change {:+.1} points.\n",
            pre.dataset,
            models.prefix(&pre.model),
            pre.level,
            pre.feature_point,
            post.feature_point,
            panel.mean_change() * 100.0
        );
        let mut drops: Vec<(&ClassRow, &ClassRow)> = panel
            .classes
            .iter()
            .copied()
            .filter(|p| fate(*p) == Fate::Lost)
            .collect();
        if drops.is_empty() {
            continue;
        }
        // Largest drop first; equal drops (to `SAME`, so floating-point noise does not count)
        // in class order.
        drops.sort_by_key(|p| (change(*p) / SAME).round() as i64);
        let _ = writeln!(s, "| class | n test | before | after | change |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for (before, after) in drops.into_iter().take(TOP) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:+.1} |",
                before.class.replace('|', "\\|"),
                before.n_test,
                pct(before.accuracy),
                pct(after.accuracy),
                change((before, after)) * 100.0
            );
        }
        let _ = writeln!(s);
    }
}

#[cfg(test)]
#[path = "class_section_tests.rs"]
mod tests;
