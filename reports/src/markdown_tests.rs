use super::*;
use crate::test_rows::result_row;

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
    assert_eq!(gap_rows(&rows), vec![("d".into(), "fine".into(), 0.7, 0.4)]);
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
