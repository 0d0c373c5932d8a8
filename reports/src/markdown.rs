//! `report.md`: what was measured, the figure, the table, the pre − post gap per level (and, with
//! per-class accuracies, the classes the projection loses: [`crate::class_section`]), and how to
//! reproduce it. Every section but the few-shot one ([`crate::few_shot_table`]) reads only the
//! standard probes' rows.

use crate::class_section::class_section;
use crate::few_shot_table::few_shot_section;
use crate::layer_figure::{in_display_order, layer_sweeps, swept_layer};
use crate::style::unique;
use crate::{standard_rows, ClassRow, ResultRow, SimilarityRow};
use std::fmt::Write;

/// Free-form facts the report states alongside the numbers.
#[derive(Debug, Clone, Default)]
pub struct ReportContext {
    pub title: String,
    /// Model id or path the features came from.
    pub model: String,
    /// Caveats shown prominently (e.g. "random weights demonstrate the pipeline, not a model").
    pub notes: Vec<String>,
    /// File name of the figure next to the report.
    pub figure: String,
    /// Command that reproduces the report.
    pub command: String,
    /// Representation similarity between feature points (a section when not empty).
    pub similarity: Vec<SimilarityRow>,
    /// File name of the similarity figure next to the report (none when empty).
    pub similarity_figure: String,
    /// File name of the probe-accuracy-by-layer figure next to the report (none when empty).
    pub layer_figure: String,
    /// File name of the image-vs-text figure next to the report (none when empty).
    pub text_figure: String,
    /// File name of the few-shot figure next to the report (none when empty).
    pub few_shot_figure: String,
    /// File name of the per-class figure next to the report (none when empty).
    pub class_figure: String,
    /// Each class's test accuracy under each standard probe (`per_class.csv`): the per-class
    /// section compares the modality-gap table's pairs class by class.
    pub classes: Vec<ClassRow>,
}

/// A regularisation constant in 3 significant digits.
fn fmt_c(c: f64) -> String {
    if (1e-2..1e4).contains(&c) {
        format!("{}", (c * 1e3).round() / 1e3)
    } else {
        format!("{c:.2e}")
    }
}

pub(crate) fn pct(v: f64) -> String {
    format!("{:.1}", v * 100.0)
}

/// Renders the report as markdown.
pub fn markdown_report(rows: &[ResultRow], ctx: &ReportContext) -> String {
    let all = rows;
    let rows = &standard_rows(all);
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", ctx.title);
    for n in &ctx.notes {
        let _ = writeln!(s, "> **Note.** {n}\n");
    }
    let _ = writeln!(s, "Model: `{}`\n", ctx.model);
    let _ = writeln!(
        s,
        "Linear probes (multinomial logistic regression, L2, C chosen on a validation split carved from train) on features \
         read before the projection layer (the vision encoder) and after it (what the language model receives). \
         Bars: test top-1 with 95% bootstrap intervals; dashed line: chance.\n"
    );
    if !ctx.figure.is_empty() {
        let _ = writeln!(s, "![modality gap]({})\n", ctx.figure);
    }
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(s, "| dataset | level | stage | feature point | top-1 (95% CI) | top-5 | mean per-class | macro-F1 | C | n train / test |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | `{}` | {} ({}–{}) | {} | {} | {} | {} | {} / {} |",
            r.dataset,
            r.level,
            r.stage,
            r.feature_point,
            pct(r.top1),
            pct(r.top1_ci_low),
            pct(r.top1_ci_high),
            pct(r.top5),
            pct(r.mean_per_class),
            pct(r.macro_f1),
            fmt_c(r.chosen_c),
            r.n_train,
            r.n_test
        );
    }
    let gaps = gap_rows(rows);
    if !gaps.is_empty() {
        let _ = writeln!(
            s,
            "\n## Modality gap (best pre-projection − best post-projection top-1, points)\n"
        );
        let _ = writeln!(s, "| dataset | level | pre | post | gap |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for (ds, level, pre, post) in gaps {
            let _ = writeln!(
                s,
                "| {ds} | {level} | {} | {} | {:+.1} |",
                pct(pre),
                pct(post),
                (pre - post) * 100.0
            );
        }
    }
    class_section(&mut s, rows, &ctx.classes, &ctx.class_figure);
    layer_section(&mut s, rows, &ctx.layer_figure);
    few_shot_section(&mut s, all, &ctx.few_shot_figure);
    image_text_section(&mut s, rows, &ctx.text_figure, &ctx.similarity);
    similarity_section(&mut s, &ctx.similarity, &ctx.similarity_figure);
    let _ = writeln!(s, "\n## Provenance\n");
    let _ = writeln!(s, "Each row of `results.csv` carries the key of the cache entry its features came from; `gapprobe cache info <key>` prints everything that produced them.\n");
    if !ctx.command.is_empty() {
        let _ = writeln!(s, "Reproduce with:\n\n```sh\n{}\n```", ctx.command);
    }
    s
}

/// Top-1 per layer for every layer sweep (a dataset's vision or language-model feature points
/// that differ only in their layer), with the dataset's post-projection points beneath a vision
/// sweep; the best layer per level in bold.
fn layer_section(s: &mut String, rows: &[ResultRow], figure: &str) {
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
        let top1 = |fp: &str, level: &str| {
            rows.iter()
                .find(|r| r.dataset == sweep.dataset && r.feature_point == fp && r.level == level)
                .map(|r| r.top1)
        };
        let best = |level: &str| {
            sweep_rows
                .iter()
                .filter(|r| r.level == level)
                .map(|r| r.top1)
                .fold(f64::NEG_INFINITY, f64::max)
        };
        let _ = writeln!(
            s,
            "**{}** · `{}[K].{}`\n",
            sweep.dataset, sweep.prefix, sweep.tokens
        );
        let _ = writeln!(s, "| layer | {} |", levels.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(levels.len()));
        let mut layers = sweep.layers.clone();
        in_display_order(&mut layers);
        let post = unique(
            rows.iter()
                .filter(|r| {
                    r.dataset == sweep.dataset
                        && r.stage == "post-projection"
                        && sweep.part() == "vision encoder"
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

/// The representation-similarity table, if there are rows.
fn similarity_section(s: &mut String, rows: &[SimilarityRow], figure: &str) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Representation similarity\n");
    let _ = writeln!(
        s,
        "How alike the features of two feature points are on the same images, whatever their \
         widths: linear CKA (Kornblith et al. 2019) and its debiased form (1 = the same geometry up \
         to rotation and scale), and mutual k-NN alignment (Huh et al. 2024: the fraction of each \
         image's k nearest neighbours, by cosine similarity, that both feature points share). \
         For two feature points of the same width the centroid gap of Liang et al. 2022 (the \
         distance between the means of their unit-normalised features, 0 to 2) is given too; it \
         compares positions only where both live in one space. `similarity.csv` has the rows.\n"
    );
    if !figure.is_empty() {
        let _ = writeln!(s, "![representation similarity]({figure})\n");
    }
    let _ = writeln!(
        s,
        "| dataset | split | a | b | linear CKA | debiased CKA | mutual k-NN | k | centroid gap | n |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | `{}` | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            r.dataset,
            r.split,
            r.feature_point_a,
            r.feature_point_b,
            r.linear_cka,
            r.debiased_cka,
            r.mutual_knn,
            r.k,
            r.centroid_gap.map_or("–".into(), |g| format!("{g:.3}")),
            r.n
        );
    }
}

/// The language model's image and text arms compared at the same layer and read: Liang et al.'s
/// centroid gap between the two clouds of hidden states, with their CKA and mutual k-NN.
fn arm_gap_section(s: &mut String, rows: &[SimilarityRow]) {
    let matched: Vec<(&SimilarityRow, &str, &str)> = rows
        .iter()
        .filter_map(|r| {
            let gap = r.centroid_gap.is_some();
            match (r.stage_a.as_str(), r.stage_b.as_str()) {
                ("llm-image", "llm-text") if gap => {
                    Some((r, r.feature_point_a.as_str(), r.feature_point_b.as_str()))
                }
                ("llm-text", "llm-image") if gap => {
                    Some((r, r.feature_point_b.as_str(), r.feature_point_a.as_str()))
                }
                _ => None,
            }
        })
        .filter(|(_, image, text)| {
            image.strip_prefix("llm.image.") == text.strip_prefix("llm.text.")
        })
        .collect();
    if matched.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n### Modality gap between the arms\n");
    let _ = writeln!(
        s,
        "The two arms' hidden states at the same layer and read live in one space: the centroid \
         gap (Liang et al. 2022, ‖mean of unit image states − mean of unit text states‖; 0 = one \
         centre, up to 2) says how far apart the language model keeps what it reads from the \
         image and what it reads from the text; linear CKA and mutual k-NN say how alike their \
         geometry is.\n"
    );
    let _ = writeln!(
        s,
        "| dataset | split | point | centroid gap | linear CKA | mutual k-NN | n |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for (r, image, _) in matched {
        let point = image.replacen("llm.image.", "llm.{image,text}.", 1);
        let _ = writeln!(
            s,
            "| {} | {} | `{point}` | {:.3} | {:.3} | {:.3} | {} |",
            r.dataset,
            r.split,
            r.centroid_gap.unwrap_or(f64::NAN),
            r.linear_cka,
            r.mutual_knn,
            r.n
        );
    }
}

/// The language model's two arms side by side: per dataset and level, the best `llm.image.*`
/// and the best `llm.text.*` top-1, and text − image (positive: the attribute text carries more
/// linearly decodable label information into the LLM than the image does). Then the arms'
/// centroid gaps from `similarity`, if it compared them.
fn image_text_section(
    s: &mut String,
    rows: &[ResultRow],
    figure: &str,
    similarity: &[SimilarityRow],
) {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r.stage == "llm-image" || r.stage == "llm-text")
    {
        if !groups.contains(&(r.dataset.as_str(), r.level.as_str())) {
            groups.push((r.dataset.as_str(), r.level.as_str()));
        }
    }
    let best = |ds: &str, level: &str, stage: &str| {
        rows.iter()
            .filter(|r| r.dataset == ds && r.level == level && r.stage == stage)
            .max_by(|a, b| a.top1.total_cmp(&b.top1))
    };
    let pairs: Vec<(&ResultRow, &ResultRow)> = groups
        .iter()
        .filter_map(|(ds, level)| {
            Some((best(ds, level, "llm-image")?, best(ds, level, "llm-text")?))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Image vs text in the language model\n");
    let _ = writeln!(
        s,
        "Probes on the language model's hidden state for the same prompt with the image's projector tokens \
         (`llm.image.*`) or the image's attribute text (`llm.text.*`) where `<image>` stands: the Finer paper's \
         image-only vs text-only comparison, as linear probes. Best feature point of each arm.\n"
    );
    if !figure.is_empty() {
        let _ = writeln!(s, "![image vs text]({figure})\n");
    }
    let _ = writeln!(
        s,
        "| dataset | level | image (feature point) | text (feature point) | text − image |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|");
    for (img, txt) in pairs {
        let _ = writeln!(
            s,
            "| {} | {} | {} (`{}`) | {} (`{}`) | {:+.1} |",
            img.dataset,
            img.level,
            pct(img.top1),
            img.feature_point,
            pct(txt.top1),
            txt.feature_point,
            (txt.top1 - img.top1) * 100.0
        );
    }
    arm_gap_section(s, similarity);
}

/// The best pre-projection and the best post-projection row by top-1 (the first of equals; a NaN
/// only where nothing else is) of every (dataset, level) that has both, in order of appearance:
/// the pair the modality-gap table compares.
pub(crate) fn best_pairs(rows: &[ResultRow]) -> Vec<(&ResultRow, &ResultRow)> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    let mut out = Vec::new();
    for r in rows {
        if seen.contains(&(r.dataset.as_str(), r.level.as_str())) {
            continue;
        }
        seen.push((r.dataset.as_str(), r.level.as_str()));
        // A number beats a smaller one and a NaN; equals keep the first.
        let beats =
            |x: &ResultRow, m: &ResultRow| x.top1 > m.top1 || (m.top1.is_nan() && !x.top1.is_nan());
        let best = |stage: &str| {
            rows.iter()
                .filter(|x| x.dataset == r.dataset && x.level == r.level && x.stage == stage)
                .fold(None, |m: Option<&ResultRow>, x| match m {
                    Some(m) if !beats(x, m) => Some(m),
                    _ => Some(x),
                })
        };
        if let (Some(pre), Some(post)) = (best("pre-projection"), best("post-projection")) {
            out.push((pre, post));
        }
    }
    out
}

/// (dataset, level, best pre top-1, best post top-1) for every group that has both stages.
pub(crate) fn gap_rows(rows: &[ResultRow]) -> Vec<(String, String, f64, f64)> {
    best_pairs(rows)
        .into_iter()
        .map(|(pre, post)| (pre.dataset.clone(), pre.level.clone(), pre.top1, post.top1))
        .collect()
}

#[cfg(test)]
#[path = "markdown_tests.rs"]
mod tests;
