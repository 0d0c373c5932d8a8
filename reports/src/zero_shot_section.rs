//! The zero-shot section of `report.md`: the protocol, the zero-shot figure, a table per dataset
//! of exact match (with its 95% interval) and token F1 per label level and arm, text − image
//! where both arms were asked, and the prompts as asked; with several models the tables gain a
//! model column.

use crate::markdown::pct;
use crate::models::Models;
use crate::style::unique;
use crate::zero_shot_figure::{zero_shot_arms, zero_shot_levels};
use crate::ZeroShotRow;
use std::fmt::Write;

/// The section, when there are `rows`; `figure` is the zero-shot figure's file name (none when
/// empty).
pub(crate) fn zero_shot_section(
    s: &mut String,
    rows: &[ZeroShotRow],
    figure: &str,
    models: &Models,
) {
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Zero-shot answers\n");
    let _ = writeln!(
        s,
        "The language model answers the prompt below once per test image and label level, \
         greedily ({}), with the photo through the projector (`image`) or, as in the Finer \
         paper's text-only probe, the image's attributes written out in its place (`text`). An \
         answer counts under Finer's exact match (EM) when the normalised label (at the \
         superordinate level any of the superordinate, coarse or fine labels, at the coarse \
         level the coarse or the fine one) is within the first 20 words of the normalised \
         answer. EM (%) with 95% bootstrap intervals; F1: mean token F1 (%); text − image in \
         points; n: questions asked (per arm, in the columns' order, where the arms differ).\n",
        budget(rows)
    );
    if !figure.is_empty() {
        let _ = writeln!(s, "![zero-shot exact match by label level]({figure})\n");
    }
    for ds in unique(rows.iter().map(|r| r.dataset.as_str())) {
        let here: Vec<ZeroShotRow> = rows.iter().filter(|r| r.dataset == ds).cloned().collect();
        let _ = writeln!(s, "**{ds}**\n");
        table(s, &here, models);
        let _ = writeln!(s);
    }
    prompts(s, rows, models);
}

/// Provenance of the answers: the fingerprints of the weights and tokenizers they came from, a
/// paragraph (nothing without `rows`).
pub(crate) fn zero_shot_provenance(s: &mut String, rows: &[ZeroShotRow]) {
    if rows.is_empty() {
        return;
    }
    let keys: Vec<String> = unique(rows.iter().map(|r| r.model_key.as_str()))
        .iter()
        .map(|k| format!("`{k}`"))
        .collect();
    let _ = writeln!(
        s,
        "Each row of `zero_shot.csv` carries `model_key`, the fingerprint of the weights and \
         tokenizer its answers came from: {}.\n",
        keys.join(", ")
    );
}

/// `at most 32 new tokens`, or `at most 16–32 new tokens` when the rows differ.
fn budget(rows: &[ZeroShotRow]) -> String {
    let lo = rows.iter().map(|r| r.max_new_tokens).min().unwrap_or(0);
    let hi = rows.iter().map(|r| r.max_new_tokens).max().unwrap_or(0);
    if lo == hi {
        format!("at most {lo} new tokens")
    } else {
        format!("at most {lo}–{hi} new tokens")
    }
}

/// One dataset's table: a line per level and model, EM per arm, text − image when both arms
/// are there, F1 per arm, n.
fn table(s: &mut String, rows: &[ZeroShotRow], models: &Models) {
    let arms = zero_shot_arms(rows);
    let gap = arms.contains(&"image") && arms.contains(&"text");
    let mut head: Vec<String> = arms.iter().map(|a| format!("{a} EM (95% CI)")).collect();
    if gap {
        head.push("text − image".into());
    }
    head.extend(arms.iter().map(|a| format!("{a} F1")));
    head.push("n".into());
    let _ = writeln!(
        s,
        "| level |{} {} |",
        models.column_head(),
        head.join(" | ")
    );
    let _ = writeln!(
        s,
        "|---|{}{}",
        models.column_rule(),
        "---|".repeat(head.len())
    );
    let mut ids = unique(rows.iter().map(|r| r.model.as_str()));
    ids.sort_by_key(|m| models.rank(m));
    for level in zero_shot_levels(rows) {
        for model in &ids {
            let at: Vec<Option<&ZeroShotRow>> = arms
                .iter()
                .map(|a| {
                    rows.iter()
                        .find(|r| r.model == *model && r.level == level && r.arm == *a)
                })
                .collect();
            if at.iter().all(Option::is_none) {
                continue;
            }
            let dash = || "–".to_string();
            let mut cells: Vec<String> = at
                .iter()
                .map(|r| {
                    r.map_or_else(dash, |r| {
                        let (em, lo, hi) = (r.exact_match, r.em_ci_low, r.em_ci_high);
                        format!("{} ({}–{})", pct(em), pct(lo), pct(hi))
                    })
                })
                .collect();
            if gap {
                let arm = |name: &str| at[arms.iter().position(|a| *a == name).unwrap_or(0)];
                cells.push(match (arm("image"), arm("text")) {
                    (Some(i), Some(t)) => {
                        format!("{:+.1}", (t.exact_match - i.exact_match) * 100.0)
                    }
                    _ => dash(),
                });
            }
            cells.extend(at.iter().map(|r| r.map_or_else(dash, |r| pct(r.f1))));
            // One n when the arms asked as many questions, else each arm's.
            let mut ns: Vec<String> = at.iter().flatten().map(|r| r.n.to_string()).collect();
            if unique(ns.iter()).len() == 1 {
                ns.truncate(1);
            }
            cells.push(ns.join(" / "));
            let _ = writeln!(
                s,
                "| {level} |{} {} |",
                models.cell(model),
                cells.join(" | ")
            );
        }
    }
}

/// The prompts as asked, each in a fenced block (one longer than any run of backticks in it);
/// with several, each says which datasets, arms and levels asked it.
fn prompts(s: &mut String, rows: &[ZeroShotRow], models: &Models) {
    let prompts = unique(rows.iter().map(|r| r.prompt.as_str()));
    if prompts.len() == 1 {
        let _ = writeln!(s, "Prompt:\n");
        fenced(s, prompts[0]);
        return;
    }
    let _ = writeln!(s, "Prompts:");
    for prompt in prompts {
        let asked: Vec<&ZeroShotRow> = rows.iter().filter(|r| r.prompt == prompt).collect();
        let groups = unique(
            asked
                .iter()
                .map(|r| (r.model.as_str(), r.dataset.as_str(), r.arm.as_str())),
        );
        let uses: Vec<String> = groups
            .into_iter()
            .map(|(model, ds, arm)| {
                let these: Vec<ZeroShotRow> = asked
                    .iter()
                    .filter(|r| r.model == model && r.dataset == ds && r.arm == arm)
                    .map(|r| (*r).clone())
                    .collect();
                let levels = zero_shot_levels(&these).join(", ");
                format!("{}{ds} · {arm} ({levels})", models.prefix(model))
            })
            .collect();
        let _ = writeln!(s, "\n{}:\n", uses.join("; "));
        fenced(s, prompt);
    }
}

/// `text` in a fenced block.
fn fenced(s: &mut String, text: &str) {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest.max(2) + 1);
    let _ = writeln!(s, "{fence}text\n{text}\n{fence}");
}

#[cfg(test)]
#[path = "zero_shot_section_tests.rs"]
mod tests;
