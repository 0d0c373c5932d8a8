//! The few-shot section of `report.md`: the protocol, the few-shot figure, a table per dataset
//! of top-1 (mean ± std over the draws) per shot count beside the standard probe's, and the pre −
//! post gap at each shot count; with several models both tables gain a model column.

use crate::few_shot_figure::{draws_text, few_shot_rows, full_data, ordered_levels, shot_counts};
use crate::markdown::{gap_rows, pct, Gap};
use crate::models::Models;
use crate::style::{series, unique};
use crate::ResultRow;
use std::fmt::Write;

/// `1-shot | 4-shot | all` and the separator line for a table with those columns after `lead`
/// (`| level | feature point`).
fn header(s: &mut String, lead: &str, shots: &[u64]) {
    let columns: Vec<String> = shots.iter().map(|k| format!("{k}-shot")).collect();
    let _ = writeln!(s, "{lead} | {} | all |", columns.join(" | "));
    let n = lead.matches('|').count();
    let _ = writeln!(s, "|{}", "---|".repeat(n + shots.len() + 1));
}

/// The section, when `rows` has few-shot rows; `figure` is the few-shot figure's file name
/// (none when empty).
pub(crate) fn few_shot_section(s: &mut String, rows: &[ResultRow], figure: &str, models: &Models) {
    let few = few_shot_rows(rows);
    if few.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Few-shot probes\n");
    let _ = writeln!(
        s,
        "A k-shot probe: k training images per class drawn at random (seeded) from the \
         training split, C chosen on a disjoint validation draw of min(k, 4) images per class \
         from the rest of the training split, never refitted on it; top-1 (%) on the whole test \
         split, mean ± std over {} draws. \"all\" is the standard probe on the whole training \
         split. The figure draws ±1 std as error bars and the standard probe as dotted lines.\n",
        draws_text(&few)
    );
    if !figure.is_empty() {
        let _ = writeln!(s, "![few-shot probes]({figure})\n");
    }
    let datasets = unique(few.iter().map(|r| r.dataset.as_str()));
    for ds in &datasets {
        let here: Vec<ResultRow> = few.iter().filter(|r| r.dataset == *ds).cloned().collect();
        let shots = shot_counts(&here);
        let _ = writeln!(s, "**{ds}**\n");
        let lead = format!("| level |{} feature point", models.column_head());
        header(s, &lead, &shots);
        for level in ordered_levels(&here) {
            for line in series(&here) {
                let at: Vec<Option<&ResultRow>> = shots
                    .iter()
                    .map(|k| {
                        here.iter()
                            .find(|r| r.level == level && line.matches(r) && r.shots == *k)
                    })
                    .collect();
                let Some(any) = at.iter().flatten().next() else {
                    continue;
                };
                let cells: Vec<String> = at
                    .iter()
                    .map(|r| {
                        r.map_or("–".into(), |r| {
                            format!("{} ± {:.1}", pct(r.top1), r.top1_std * 100.0)
                        })
                    })
                    .collect();
                let all = full_data(rows, any).map_or("–".into(), |r| pct(r.top1));
                let _ = writeln!(
                    s,
                    "| {level} |{} `{}` | {} | {all} |",
                    models.cell(&line.model),
                    line.feature_point,
                    cells.join(" | ")
                );
            }
        }
        let _ = writeln!(s);
    }
    gap_table(s, rows, &few, &datasets, models);
}

/// Best pre-projection − best post-projection top-1 per dataset, model and level at each shot
/// count (and on the whole training split), where both stages were probed.
fn gap_table(
    s: &mut String,
    rows: &[ResultRow],
    few: &[ResultRow],
    datasets: &[&str],
    models: &Models,
) {
    let shots = shot_counts(few);
    // Gaps at each shot count, then on all training images (shots 0).
    let gaps: Vec<Vec<Gap>> = shots
        .iter()
        .chain([0].iter())
        .map(|k| {
            let at_k: Vec<ResultRow> = rows.iter().filter(|r| r.shots == *k).cloned().collect();
            gap_rows(&at_k)
        })
        .collect();
    let mut lines = Vec::new();
    for ds in datasets {
        let here: Vec<ResultRow> = few.iter().filter(|r| r.dataset == *ds).cloned().collect();
        let here_models = unique(here.iter().map(|r| r.model.as_str()));
        for (level, model) in ordered_levels(&here)
            .into_iter()
            .flat_map(|l| here_models.iter().map(move |m| (l, *m)))
        {
            let cells: Vec<Option<String>> = gaps
                .iter()
                .map(|g| {
                    g.iter()
                        .find(|g| g.dataset == *ds && g.model == model && g.level == level)
                        .map(|g| format!("{:+.1}", (g.pre - g.post) * 100.0))
                })
                .collect();
            if cells[..shots.len()].iter().any(Option::is_some) {
                let cells: Vec<String> = cells
                    .into_iter()
                    .map(|c| c.unwrap_or_else(|| "–".into()))
                    .collect();
                lines.push(format!(
                    "| {ds} |{} {level} | {} |",
                    models.cell(model),
                    cells.join(" | ")
                ));
            }
        }
    }
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "### Modality gap by shots (best pre-projection − best post-projection top-1, points)\n"
    );
    header(
        s,
        &format!("| dataset |{} level", models.column_head()),
        &shots,
    );
    for line in lines {
        let _ = writeln!(s, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use crate::test_rows::result_row;
    use crate::{markdown_report, ReportContext, ResultRow};

    fn few(ds: &str, fp: &str, level: &str, shots: u64, top1: f64, std: f64) -> ResultRow {
        ResultRow {
            shots,
            draws: 3,
            top1_std: std,
            ..result_row(ds, fp, level, top1)
        }
    }

    #[test]
    fn a_table_per_dataset_with_the_standard_probe_last_and_the_gap_per_shot_count() {
        let rows = vec![
            few("d", "vision.a", "fine", 4, 0.45, 0.01),
            result_row("d", "vision.a", "fine", 0.7),
            result_row("d", "projector.p", "fine", 0.5),
            few("d", "vision.a", "fine", 1, 0.3, 0.021),
            few("d", "projector.p", "fine", 1, 0.25, 0.02),
            few("d", "vision.a", "coarse", 4, 0.6, 0.02),
            few("e", "projector.p", "fine", 2, 0.2, 0.02),
        ];
        let ctx = ReportContext {
            few_shot_figure: "few_shot.png".into(),
            ..Default::default()
        };
        let md = markdown_report(&rows, &ctx);
        for want in [
            "\n## Few-shot probes\n\nA k-shot probe: k training images per class",
            "top-1 (%) on the whole test split, mean ± std over 3 draws.",
            "\n![few-shot probes](few_shot.png)\n",
            "**d**\n\n\
             | level | feature point | 1-shot | 4-shot | all |\n\
             |---|---|---|---|---|\n\
             | coarse | `vision.a` | – | 60.0 ± 2.0 | – |\n\
             | fine | `vision.a` | 30.0 ± 2.1 | 45.0 ± 1.0 | 70.0 |\n\
             | fine | `projector.p` | 25.0 ± 2.0 | – | 50.0 |\n\n",
            "**e**\n\n\
             | level | feature point | 2-shot | all |\n\
             |---|---|---|---|\n\
             | fine | `projector.p` | 20.0 ± 2.0 | – |\n\n",
            "### Modality gap by shots (best pre-projection − best post-projection top-1, points)\n\n\
             | dataset | level | 1-shot | 2-shot | 4-shot | all |\n\
             |---|---|---|---|---|---|\n\
             | d | fine | +5.0 | – | – | +20.0 |\n",
        ] {
            assert!(md.contains(want), "{want} missing from:\n{md}");
        }
        // d's coarse and e's fine have no post-projection (or pre-projection) probe: no gap row.
        assert!(
            !md.contains("| d | coarse | ") && !md.contains("| e | fine | "),
            "{md}"
        );
        // The Results table keeps to the standard probes.
        assert!(md.contains("| d | fine | post-projection | `projector.p` | 50.0 (47.0–53.0)"));
        assert!(
            !md.contains("| d | fine | pre-projection | `vision.a` | 45.0"),
            "{md}"
        );
    }

    #[test]
    fn no_section_without_few_shot_rows_and_no_figure_unless_named() {
        let rows = vec![
            result_row("d", "vision.a", "fine", 0.7),
            result_row("d", "projector.p", "fine", 0.5),
        ];
        let md = markdown_report(&rows, &ReportContext::default());
        assert!(!md.contains("Few-shot") && !md.contains("-shot"), "{md}");
        // Few-shot rows of one stage only: the tables, but no gap table; no figure named.
        let rows = [few("d", "projector.p", "fine", 8, 0.3, 0.0)];
        let md = markdown_report(&rows, &ReportContext::default());
        assert!(
            md.contains("| fine | `projector.p` | 30.0 ± 0.0 | – |\n"),
            "{md}"
        );
        assert!(
            !md.contains("![few-shot") && !md.contains("by shots"),
            "{md}"
        );
    }
}
