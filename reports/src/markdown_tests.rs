use super::*;
use crate::test_rows::{class_row, of_model, result_row};

#[test]
fn layer_sweeps_get_a_table_with_the_best_layer_in_bold() {
    let mut rows = Vec::new();
    for (k, v) in [(3, 0.5), (1, 0.2), (2, 0.55)] {
        rows.push(result_row(
            "d",
            &format!("vision.layer[{k}].cls"),
            "coarse",
            v + 0.1,
        ));
        rows.push(result_row(
            "d",
            &format!("vision.layer[{k}].cls"),
            "fine",
            v,
        ));
    }
    rows.push(result_row("d", "projector.mean", "fine", 0.4));
    let ctx = ReportContext {
        layer_figure: "layers.png".into(),
        ..Default::default()
    };
    let md = markdown_report(&rows, &ctx);
    for line in [
        "## Probe accuracy by layer",
        "![probe accuracy by layer](layers.png)",
        "**d** · `vision.layer[K].cls`",
        "| layer | coarse | fine |\n|---|---|---|\n| 1 | 30.0 | 20.0 |\n| 2 | **65.0** | **55.0** |\n| 3 | 60.0 | 50.0 |\n| `projector.mean` | – | 40.0 |",
    ] {
        assert!(md.contains(line), "{line} missing from:\n{md}");
    }
    // One layer per tokens: no section.
    let md = markdown_report(&rows[..2], &ctx);
    assert!(!md.contains("by layer"), "{md}");
}

#[test]
fn image_and_text_arms_get_a_table_with_the_best_of_each() {
    let rows = vec![
        result_row("d", "projector.mean", "fine", 0.4),
        result_row("d", "llm.image.layer[-1].last", "fine", 0.35),
        result_row("d", "llm.image.layer[8].last", "fine", 0.45),
        result_row("d", "llm.text.layer[-1].last", "fine", 0.8),
        result_row("d", "llm.image.layer[-1].last", "coarse", 0.9),
    ];
    let md = markdown_report(
        &rows,
        &ReportContext {
            text_figure: "image_vs_text.png".into(),
            ..Default::default()
        },
    );
    for line in [
        "## Image vs text in the language model",
        "![image vs text](image_vs_text.png)",
        "| d | fine | 45.0 (`llm.image.layer[8].last`) | 80.0 (`llm.text.layer[-1].last`) | +35.0 |",
    ] {
        assert!(md.contains(line), "{line} missing from:\n{md}");
    }
    // Coarse has only the image arm: no row for it.
    assert!(!md.contains("| d | coarse | 90.0"), "{md}");
    // Without the text arm: no section.
    let md = markdown_report(&rows[..3], &ReportContext::default());
    assert!(!md.contains("Image vs text"), "{md}");
}

#[test]
fn language_model_sweeps_get_a_table_without_the_projector() {
    let mut rows = vec![result_row("d", "projector.mean", "fine", 0.4)];
    for (k, v) in [(0, 0.1), (8, 0.6), (16, 0.5)] {
        rows.push(result_row(
            "d",
            &format!("llm.text.layer[{k}].last"),
            "fine",
            v,
        ));
    }
    let md = markdown_report(&rows, &ReportContext::default());
    assert!(
        md.contains("**d** · `llm.text.layer[K].last`\n\n| layer | fine |\n|---|---|\n| 0 | 10.0 |\n| 8 | **60.0** |\n| 16 | 50.0 |\n\n"),
        "{md}"
    );
}

#[test]
fn gap_uses_best_of_each_stage() {
    let rows = vec![
        result_row("d", "vision.a", "fine", 0.5),
        result_row("d", "vision.b", "fine", 0.7),
        result_row("d", "projector.p", "fine", 0.4),
    ];
    assert_eq!(
        gap_rows(&rows),
        vec![Gap {
            dataset: "d".into(),
            model: "m".into(),
            level: "fine".into(),
            pre: 0.7,
            post: 0.4
        }]
    );
    let md = markdown_report(
        &rows,
        &ReportContext {
            title: "T".into(),
            notes: vec!["random".into()],
            ..Default::default()
        },
    );
    assert!(md.contains("| d | fine | 70.0 | 40.0 | +30.0 |"), "{md}");
    assert!(md.contains("> **Note.** random"));
    assert!(!md.contains("Representation similarity"));
    let sim = SimilarityRow {
        dataset: "d".into(),
        model_a: "m".into(),
        feature_point_a: "a".into(),
        stage_a: "pre-projection".into(),
        model_b: "m".into(),
        feature_point_b: "p".into(),
        stage_b: "post-projection".into(),
        split: "test".into(),
        n: 480,
        linear_cka: 0.98826,
        debiased_cka: 0.9882,
        mutual_knn: 0.8858,
        k: 10,
        centroid_gap: None,
        cache_key_a: "ka".into(),
        cache_key_b: "kp".into(),
    };
    let md = markdown_report(
        &rows,
        &ReportContext {
            similarity: vec![sim],
            ..Default::default()
        },
    );
    assert!(
        md.contains("| d | test | `a` | `p` | 0.988 | 0.988 | 0.886 | 10 | – | 480 |"),
        "{md}"
    );
    assert!(!md.contains("Modality gap between the arms"), "{md}");
}

#[test]
fn arms_at_the_same_point_get_their_centroid_gap() {
    let sim = |a: &str, b: &str, gap: Option<f64>| {
        let stage = |p: &str| {
            if p.starts_with("llm.image") {
                "llm-image"
            } else if p.starts_with("llm.text") {
                "llm-text"
            } else {
                "pre-projection"
            }
        };
        SimilarityRow {
            dataset: "d".into(),
            model_a: "m".into(),
            feature_point_a: a.into(),
            stage_a: stage(a).into(),
            model_b: "m".into(),
            feature_point_b: b.into(),
            stage_b: stage(b).into(),
            split: "test".into(),
            n: 100,
            linear_cka: 0.5,
            debiased_cka: 0.4,
            mutual_knn: 0.25,
            k: 10,
            centroid_gap: gap,
            cache_key_a: "ka".into(),
            cache_key_b: "kb".into(),
        }
    };
    let rows = vec![
        // The same point of both arms, in either order: a row each.
        sim(
            "llm.image.layer[-1].last",
            "llm.text.layer[-1].last",
            Some(0.8125),
        ),
        sim(
            "llm.text.layer[2].mean",
            "llm.image.layer[2].mean",
            Some(0.25),
        ),
        // Different layers or reads, or not both arms: not in the table.
        sim(
            "llm.image.layer[-1].last",
            "llm.text.layer[2].mean",
            Some(0.5),
        ),
        sim(
            "vision.layer[-2].patch.mean",
            "llm.image.layer[-1].last",
            None,
        ),
        sim("vision.layer[-2].cls", "vision.layer[-1].cls", Some(0.1)),
    ];
    let ctx = ReportContext {
        similarity: rows,
        ..Default::default()
    };
    // A subsection of the image-vs-text section: none without the arms' probes.
    assert!(!markdown_report(&[], &ctx).contains("### Modality gap between the arms"));
    let probes = [
        result_row("d", "llm.image.layer[-1].last", "fine", 0.2),
        result_row("d", "llm.text.layer[-1].last", "fine", 0.9),
    ];
    let md = markdown_report(&probes, &ctx);
    let section = md
        .split("### Modality gap between the arms")
        .nth(1)
        .and_then(|rest| rest.split("## Representation similarity").next())
        .expect("section present");
    let table: Vec<&str> = section.lines().filter(|l| l.starts_with("| d ")).collect();
    assert_eq!(
        table,
        vec![
            "| d | test | `llm.{image,text}.layer[-1].last` | 0.812 | 0.500 | 0.250 | 100 |",
            "| d | test | `llm.{image,text}.layer[2].mean` | 0.250 | 0.500 | 0.250 | 100 |",
        ],
        "{md}"
    );
    // The full similarity table shows the gap where widths matched and a dash elsewhere.
    assert!(
        md.contains("| 10 | 0.100 | 100 |") && md.contains("| 10 | – | 100 |"),
        "{md}"
    );
}

/// A similarity row of `d` between `a` of `model_a` and `b` of `model_b`.
fn sim(model_a: &str, a: &str, model_b: &str, b: &str, cka: f64) -> SimilarityRow {
    let stage = |p: &str| result_row("d", p, "fine", 0.0).stage;
    SimilarityRow {
        dataset: "d".into(),
        model_a: model_a.into(),
        feature_point_a: a.into(),
        stage_a: stage(a),
        model_b: model_b.into(),
        feature_point_b: b.into(),
        stage_b: stage(b),
        split: "test".into(),
        n: 100,
        linear_cka: cka,
        debiased_cka: cka,
        mutual_knn: cka,
        k: 10,
        centroid_gap: a.starts_with("llm.image").then_some(0.5),
        cache_key_a: "ka".into(),
        cache_key_b: "kb".into(),
    }
}

#[test]
fn two_models_get_a_models_line_and_a_model_column_or_label_everywhere() {
    // The same feature points for both; A's best pre-projection probe is the best of all and
    // B's post-projection probe is, so pairing across models would give 70 − 50.
    let (a, b) = ("org/a", "/local/b");
    let mut rows = Vec::new();
    for (model, vision, post) in [(a, 0.7, 0.4), (b, 0.6, 0.5)] {
        let mut add = |fp: &str, v: f64| rows.push(of_model(result_row("d", fp, "fine", v), model));
        for k in [1, 2, 3] {
            add(
                &format!("vision.layer[{k}].cls"),
                vision - 0.1 * (3 - k) as f64,
            );
        }
        add("projector.p", post);
        add("llm.image.layer[-1].last", post - 0.1);
        add("llm.text.layer[-1].last", post + 0.3);
    }
    let few: Vec<ResultRow> = rows
        .iter()
        .filter(|r| r.feature_point == "projector.p" || r.feature_point == "vision.layer[3].cls")
        .map(|r| ResultRow {
            shots: 4,
            draws: 3,
            top1: r.top1 - 0.2,
            ..r.clone()
        })
        .collect();
    let classes: Vec<ClassRow> = rows
        .iter()
        .flat_map(|r| {
            [
                class_row(r, 0, "x", 10, r.top1),
                class_row(r, 1, "y", 10, r.top1),
            ]
        })
        .collect();
    let ctx = ReportContext {
        model: a.into(),
        classes,
        similarity: vec![
            sim(a, "vision.layer[3].cls", a, "projector.p", 0.9),
            sim(
                b,
                "llm.image.layer[-1].last",
                b,
                "llm.text.layer[-1].last",
                0.7,
            ),
            sim(a, "projector.p", b, "projector.p", 0.25),
        ],
        ..Default::default()
    };
    let md = markdown_report(&[rows, few].concat(), &ctx);
    for want in [
        "\nModels: `org/a`, `/local/b`\n",
        "| dataset | model | level | stage | feature point | top-1 (95% CI) |",
        "| d | b | fine | post-projection | `projector.p` | 50.0 (47.0–53.0) |",
        // Each model's own best pre and post.
        "| dataset | model | level | pre | post | gap |\n|---|---|---|---|---|---|\n\
         | d | a | fine | 70.0 | 40.0 | +30.0 |\n| d | b | fine | 60.0 | 50.0 | +10.0 |\n",
        "**d · a · fine** (`vision.layer[3].cls` → `projector.p`): 2 of 2 classes lose",
        "**d · b · fine** (`vision.layer[3].cls` → `projector.p`): 2 of 2 classes lose",
        "**d · a** · `vision.layer[K].cls`\n\n| layer | fine |\n|---|---|\n| 1 | 50.0 |\n\
         | 2 | 60.0 |\n| 3 | **70.0** |\n| `projector.p` | 40.0 |\n",
        "**d · b** · `vision.layer[K].cls`\n\n| layer | fine |\n|---|---|\n| 1 | 40.0 |\n\
         | 2 | 50.0 |\n| 3 | **60.0** |\n| `projector.p` | 50.0 |\n",
        "| level | model | feature point | 4-shot | all |\n|---|---|---|---|---|\n\
         | fine | a | `vision.layer[3].cls` | 50.0 ± 0.0 | 70.0 |\n\
         | fine | a | `projector.p` | 20.0 ± 0.0 | 40.0 |\n\
         | fine | b | `vision.layer[3].cls` | 40.0 ± 0.0 | 60.0 |\n\
         | fine | b | `projector.p` | 30.0 ± 0.0 | 50.0 |\n",
        "| dataset | model | level | 4-shot | all |\n|---|---|---|---|---|\n\
         | d | a | fine | +30.0 | +30.0 |\n| d | b | fine | +10.0 | +10.0 |\n",
        "| dataset | model | level | image (feature point) | text (feature point) | text − image |",
        "| d | a | fine | 30.0 (`llm.image.layer[-1].last`) | 70.0 (`llm.text.layer[-1].last`) | +40.0 |",
        "| d | b | fine | 40.0 (`llm.image.layer[-1].last`) | 80.0 (`llm.text.layer[-1].last`) | +40.0 |",
        "| d | b | test | `llm.{image,text}.layer[-1].last` | 0.500 | 0.700 | 0.700 | 100 |",
        "| dataset | split | model a | a | model b | b | linear CKA |",
        "| d | test | a | `projector.p` | b | `projector.p` | 0.250 | 0.250 |",
    ] {
        assert!(md.contains(want), "{want}\nmissing from:\n{md}");
    }
    assert!(!md.contains("Model: `"), "{md}");
    // Concatenated runs (all of A, then all of B): the gap rows of a dataset and level together.
    let run = |model: &str, shift: f64| -> Vec<ResultRow> {
        ["coarse", "fine"]
            .iter()
            .flat_map(|level| {
                [("vision.a", 0.7), ("projector.p", 0.5)]
                    .map(|(fp, v)| of_model(result_row("d", fp, level, v - shift), model))
            })
            .collect()
    };
    let gaps: Vec<(String, String, f64)> = gap_rows(&[run(a, 0.0), run(b, 0.1)].concat())
        .into_iter()
        .map(|g| (g.level, g.model, g.pre))
        .collect();
    assert_eq!(
        gaps,
        [
            ("coarse".into(), a.into(), 0.7),
            ("coarse".into(), b.into(), 0.6),
            ("fine".into(), a.into(), 0.7),
            ("fine".into(), b.into(), 0.6)
        ]
    );
    // One model: the context's, and no model column anywhere.
    let one: Vec<ResultRow> = markdown_rows_of(a);
    let md = markdown_report(
        &one,
        &ReportContext {
            model: "given".into(),
            ..Default::default()
        },
    );
    assert!(
        md.contains("\nModel: `given`\n") && !md.contains("Models:"),
        "{md}"
    );
    assert!(
        md.contains("| dataset | level | pre | post | gap |\n|---|---|---|---|---|\n| d | fine |")
    );
}

/// Both stages of `d` for `model`.
fn markdown_rows_of(model: &str) -> Vec<ResultRow> {
    ["vision.a", "projector.p"]
        .iter()
        .map(|fp| of_model(result_row("d", fp, "fine", 0.5), model))
        .collect()
}
