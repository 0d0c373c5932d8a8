//! The similarity parts of `report.md`: the representation-similarity table, and the modality
//! gap between the language model's two arms (a subsection of the image-vs-text section).

use crate::markdown::arm_pairs;
use crate::models::Models;
use crate::{ResultRow, SimilarityRow};
use std::fmt::Write;

/// The representation-similarity table, if there are rows; with several `models` each side of
/// a pair gets a model column (pairs across models are only in this table).
pub(crate) fn similarity_section(
    s: &mut String,
    rows: &[SimilarityRow],
    figure: &str,
    models: &Models,
) {
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
    let (a, b, rule) = if models.several() {
        (" model a | a", " model b | b", "---|---|")
    } else {
        (" a", " b", "")
    };
    let _ = writeln!(
        s,
        "| dataset | split |{a} |{b} | linear CKA | debiased CKA | mutual k-NN | k | centroid gap | n |"
    );
    let _ = writeln!(s, "|---|---|---|---|{rule}---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} |{} `{}` |{} `{}` | {:.3} | {:.3} | {:.3} | {} | {} | {} |",
            r.dataset,
            r.split,
            models.cell(&r.model_a),
            r.feature_point_a,
            models.cell(&r.model_b),
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

/// The language model's image and text arms compared at the same layer and read (of one model):
/// Liang et al.'s centroid gap between the two clouds of hidden states, with their CKA and mutual
/// k-NN; nothing unless `probes` have both arms of some dataset, model and level (it follows
/// their table).
pub(crate) fn arm_gap_section(
    s: &mut String,
    probes: &[ResultRow],
    rows: &[SimilarityRow],
    models: &Models,
) {
    if arm_pairs(probes).is_empty() {
        return;
    }
    let matched: Vec<(&SimilarityRow, &str, &str)> = rows
        .iter()
        .filter(|r| r.model_a == r.model_b)
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
        "| dataset |{} split | point | centroid gap | linear CKA | mutual k-NN | n |",
        models.column_head()
    );
    let _ = writeln!(s, "|---|{}---|---|---|---|---|---|", models.column_rule());
    for (r, image, _) in matched {
        let point = image.replacen("llm.image.", "llm.{image,text}.", 1);
        let _ = writeln!(
            s,
            "| {} |{} {} | `{point}` | {:.3} | {:.3} | {:.3} | {} |",
            r.dataset,
            models.cell(&r.model_a),
            r.split,
            r.centroid_gap.unwrap_or(f64::NAN),
            r.linear_cka,
            r.mutual_knn,
            r.n
        );
    }
}
