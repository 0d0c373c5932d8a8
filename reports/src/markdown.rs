//! `report.md`: what was measured, the figure, the table, the pre − post gap per level (and, with
//! per-class accuracies, the classes the projection loses: [`crate::class_section`]), and how to
//! reproduce it. Rows of several models list their ids in place of the context's model, and
//! every table gains a model column (or its label the model's short name). Every section but the
//! few-shot one ([`crate::few_shot_table`]) reads only the standard probes' rows; zero-shot
//! answers have a section of their own ([`crate::zero_shot_section`]), and a report of them
//! without probe rows leaves the probe tables out.

use crate::class_section::class_section;
use crate::few_shot_table::few_shot_section;
use crate::layer_section::layer_section;
use crate::models::Models;
use crate::similarity_section::{arm_gap_section, similarity_section};
use crate::style::unique;
use crate::zero_shot_section::{zero_shot_provenance, zero_shot_section};
use crate::{standard_rows, ClassRow, ResultRow, SimilarityRow, ZeroShotRow};
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
    /// Zero-shot answers scored with Finer's exact match (a section when not empty).
    pub zero_shot: Vec<ZeroShotRow>,
    /// File name of the zero-shot figure next to the report (none when empty).
    pub zero_shot_figure: String,
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
    // Zero-shot answers alone (no probe rows): no probe tables, nothing pointing at them.
    let probes = !all.is_empty() || ctx.zero_shot.is_empty();
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", ctx.title);
    for n in &ctx.notes {
        let _ = writeln!(s, "> **Note.** {n}\n");
    }
    // Rows of several models (results, similarity, per-class or zero-shot) name theirs in every
    // table.
    let models = Models::new(
        all.iter()
            .map(|r| r.model.as_str())
            .chain(ctx.classes.iter().map(|c| c.model.as_str()))
            .chain(
                ctx.similarity
                    .iter()
                    .flat_map(|r| [r.model_a.as_str(), r.model_b.as_str()]),
            )
            .chain(ctx.zero_shot.iter().map(|r| r.model.as_str())),
    );
    // A blank line after it, unless a section (starting with one) follows.
    let blank = if probes { "\n" } else { "" };
    if models.several() {
        let ids: Vec<String> = models.ids().iter().map(|m| format!("`{m}`")).collect();
        let _ = writeln!(s, "Models: {}{blank}", ids.join(", "));
    } else {
        let _ = writeln!(s, "Model: `{}`{blank}", ctx.model);
    }
    if probes {
        probe_results(&mut s, rows, &ctx.figure, &models);
    }
    class_section(&mut s, rows, &ctx.classes, &ctx.class_figure, &models);
    layer_section(&mut s, rows, &ctx.layer_figure, &models);
    few_shot_section(&mut s, all, &ctx.few_shot_figure, &models);
    image_text_section(&mut s, rows, &ctx.text_figure, &models);
    arm_gap_section(&mut s, rows, &ctx.similarity, &models);
    zero_shot_section(&mut s, &ctx.zero_shot, &ctx.zero_shot_figure, &models);
    similarity_section(&mut s, &ctx.similarity, &ctx.similarity_figure, &models);
    let _ = writeln!(s, "\n## Provenance\n");
    if probes {
        let _ = writeln!(s, "Each row of `results.csv` carries the key of the cache entry its features came from; `gapprobe cache info <key>` prints everything that produced them.\n");
    }
    zero_shot_provenance(&mut s, &ctx.zero_shot);
    if !ctx.command.is_empty() {
        let _ = writeln!(s, "Reproduce with:\n\n```sh\n{}\n```", ctx.command);
    }
    s
}

/// The probes' protocol, the modality-gap figure, the results table and the modality-gap table.
fn probe_results(s: &mut String, rows: &[ResultRow], figure: &str, models: &Models) {
    let (head, rule) = (models.column_head(), models.column_rule());
    let _ = writeln!(
        s,
        "Linear probes (multinomial logistic regression, L2, C chosen on a validation split carved from train) on features \
         read before the projection layer (the vision encoder) and after it (what the language model receives). \
         Bars: test top-1 with 95% bootstrap intervals; dashed line: chance.\n"
    );
    if !figure.is_empty() {
        let _ = writeln!(s, "![modality gap]({figure})\n");
    }
    let _ = writeln!(s, "## Results\n");
    let _ = writeln!(s, "| dataset |{head} level | stage | feature point | top-1 (95% CI) | top-5 | mean per-class | macro-F1 | C | n train / test |");
    let _ = writeln!(s, "|---|{rule}---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} |{} {} | {} | `{}` | {} ({}–{}) | {} | {} | {} | {} | {} / {} |",
            r.dataset,
            models.cell(&r.model),
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
        let _ = writeln!(s, "| dataset |{head} level | pre | post | gap |");
        let _ = writeln!(s, "|---|{rule}---|---|---|---|");
        for g in gaps {
            let _ = writeln!(
                s,
                "| {} |{} {} | {} | {} | {:+.1} |",
                g.dataset,
                models.cell(&g.model),
                g.level,
                pct(g.pre),
                pct(g.post),
                (g.pre - g.post) * 100.0
            );
        }
    }
}

/// The language model's two arms side by side: per dataset, model and level, the best
/// `llm.image.*` and the best `llm.text.*` top-1, and text − image (positive: the attribute text
/// carries more linearly decodable label information into the LLM than the image does).
fn image_text_section(s: &mut String, rows: &[ResultRow], figure: &str, models: &Models) {
    let pairs = arm_pairs(rows);
    if pairs.is_empty() {
        return;
    }
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
    let (head, rule) = (models.column_head(), models.column_rule());
    let _ = writeln!(
        s,
        "| dataset |{head} level | image (feature point) | text (feature point) | text − image |"
    );
    let _ = writeln!(s, "|---|{rule}---|---|---|---|");
    for (img, txt) in pairs {
        let _ = writeln!(
            s,
            "| {} |{} {} | {} (`{}`) | {} (`{}`) | {:+.1} |",
            img.dataset,
            models.cell(&img.model),
            img.level,
            pct(img.top1),
            img.feature_point,
            pct(txt.top1),
            txt.feature_point,
            (txt.top1 - img.top1) * 100.0
        );
    }
}

/// The best `llm.image.*` and the best `llm.text.*` row by top-1 of every (dataset, model, level)
/// that has both arms, in order of appearance (but the models of a dataset and level together).
pub(crate) fn arm_pairs(rows: &[ResultRow]) -> Vec<(&ResultRow, &ResultRow)> {
    let groups = unique(
        rows.iter()
            .filter(|r| r.stage == "llm-image" || r.stage == "llm-text")
            .map(|r| (r.dataset.as_str(), r.model.as_str(), r.level.as_str())),
    );
    let best = |(ds, model, level): (&str, &str, &str), stage: &str| {
        rows.iter()
            .filter(|r| r.dataset == ds && r.model == model && r.level == level && r.stage == stage)
            .max_by(|a, b| a.top1.total_cmp(&b.top1))
    };
    let mut pairs: Vec<(&ResultRow, &ResultRow)> = groups
        .into_iter()
        .filter_map(|g| Some((best(g, "llm-image")?, best(g, "llm-text")?)))
        .collect();
    side_by_side(rows, &mut pairs);
    pairs
}

/// Puts pairs of one (dataset, level) together, by model (see [`Models::side_by_side`]).
fn side_by_side(rows: &[ResultRow], pairs: &mut [(&ResultRow, &ResultRow)]) {
    Models::of(rows).side_by_side(pairs, |(r, _)| {
        ((r.dataset.as_str(), r.level.as_str()), r.model.as_str())
    });
}

/// The best pre-projection and the best post-projection row by top-1 (the first of equals; a NaN
/// only where nothing else is) of every (dataset, model, level) that has both, in order of
/// appearance (but the models of a dataset and level together): the pair the modality-gap table
/// compares. A model's probes are never paired with
/// another's.
pub(crate) fn best_pairs(rows: &[ResultRow]) -> Vec<(&ResultRow, &ResultRow)> {
    let mut seen: Vec<(&str, &str, &str)> = Vec::new();
    let mut out = Vec::new();
    for r in rows {
        let group = (r.dataset.as_str(), r.model.as_str(), r.level.as_str());
        if seen.contains(&group) {
            continue;
        }
        seen.push(group);
        // A number beats a smaller one and a NaN; equals keep the first.
        let beats =
            |x: &ResultRow, m: &ResultRow| x.top1 > m.top1 || (m.top1.is_nan() && !x.top1.is_nan());
        let best = |stage: &str| {
            rows.iter()
                .filter(|x| {
                    x.dataset == r.dataset
                        && x.model == r.model
                        && x.level == r.level
                        && x.stage == stage
                })
                .fold(None, |m: Option<&ResultRow>, x| match m {
                    Some(m) if !beats(x, m) => Some(m),
                    _ => Some(x),
                })
        };
        if let (Some(pre), Some(post)) = (best("pre-projection"), best("post-projection")) {
            out.push((pre, post));
        }
    }
    side_by_side(rows, &mut out);
    out
}

/// One line of the modality-gap table: a (dataset, model, level)'s best pre- and
/// post-projection top-1.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gap {
    pub dataset: String,
    pub model: String,
    pub level: String,
    pub pre: f64,
    pub post: f64,
}

/// The [`Gap`] of every (dataset, model, level) that has both stages, as [`best_pairs`].
pub(crate) fn gap_rows(rows: &[ResultRow]) -> Vec<Gap> {
    best_pairs(rows)
        .into_iter()
        .map(|(pre, post)| Gap {
            dataset: pre.dataset.clone(),
            model: pre.model.clone(),
            level: pre.level.clone(),
            pre: pre.top1,
            post: post.top1,
        })
        .collect()
}

#[cfg(test)]
#[path = "markdown_tests.rs"]
mod tests;
