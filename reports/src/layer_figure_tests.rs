use super::*;
use crate::models::short_name;
use crate::test_rows::{of_model, result_row as row};

#[test]
fn finds_sweeps_per_dataset_and_tokens() {
    let rows = vec![
        row("a", "vision.layer[1].cls", "fine", 0.2),
        row("a", "vision.layer[2].cls", "fine", 0.3),
        row("a", "vision.layer[2].cls", "coarse", 0.5),
        row("a", "vision.layer[-2].patch.mean", "fine", 0.3),
        row("a", "projector.mean", "fine", 0.25),
        row("b", "vision.layer[-1].cls", "fine", 0.3),
    ];
    assert_eq!(
        swept_layer("vision.layer[-2].patch.mean"),
        Some(("vision.layer", -2, "patch.mean"))
    );
    assert_eq!(swept_layer("projector.mean"), None);
    let sweeps = layer_sweeps(&rows, 2);
    assert_eq!(
        sweeps,
        vec![LayerSweep {
            dataset: "a".into(),
            model: "m".into(),
            prefix: "vision.layer",
            tokens: "cls".into(),
            layers: vec![1, 2]
        }]
    );
    assert_eq!(sweeps[0].rows(&rows).count(), 3);
    assert_eq!(layer_sweeps(&rows, 1).len(), 3);
}

#[test]
fn language_model_sweeps_get_their_own_panel_with_both_arms() {
    let mut rows = vec![row("a", "projector.mean", "fine", 0.4)];
    for (k, v) in [(1, 0.2), (2, 0.5), (3, 0.45)] {
        rows.push(row("a", &format!("vision.layer[{k}].cls"), "fine", v));
    }
    for (k, v) in [(0, 0.1), (8, 0.3), (16, 0.35)] {
        rows.push(row("a", &format!("llm.image.layer[{k}].last"), "fine", v));
        rows.push(row(
            "a",
            &format!("llm.text.layer[{k}].last"),
            "fine",
            v + 0.4,
        ));
    }
    assert_eq!(
        swept_layer("llm.text.layer[-1].last"),
        Some(("llm.text.layer", -1, "last"))
    );
    let sweeps = layer_sweeps(&rows, 2);
    let names: Vec<(&str, &str)> = sweeps.iter().map(|s| (s.prefix, s.part())).collect();
    assert_eq!(
        names,
        [
            ("vision.layer", "vision encoder"),
            ("llm.image.layer", "language model"),
            ("llm.text.layer", "language model")
        ]
    );
    assert_eq!(sweeps[2].point(8), "llm.text.layer[8].last");
    assert_eq!(sweeps[2].rows(&rows).count(), 3);
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("p.png"), dir.path().join("p.svg"));
    assert!(layer_figure(&rows, &png, &svg, "t").unwrap());
    let bytes = std::fs::read(&png).unwrap();
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(
        be(20),
        120 + 2 * 420,
        "two panels: vision encoder, language model"
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for needle in [
        "a · vision encoder",
        "a · language model",
        "fine · image · last",
        "fine · text · last",
        "16",
    ] {
        assert!(lines.contains(&needle), "{needle} missing from the SVG");
    }
    // The projector's dashed line belongs to the vision panel only.
    assert_eq!(
        lines
            .iter()
            .filter(|l| **l == "fine · projector.mean")
            .count(),
        1
    );
}

#[test]
fn layers_of_one_sign_sort_and_mixed_signs_keep_their_order() {
    let mut same = vec![8, 4, 12];
    assert!(in_display_order(&mut same));
    assert_eq!(same, [4, 8, 12]);
    let mut negative = vec![-1, -3, -2];
    assert!(in_display_order(&mut negative));
    assert_eq!(negative, [-3, -2, -1]);
    let mut mixed = vec![4, 8, -2];
    assert!(!in_display_order(&mut mixed));
    assert_eq!(mixed, [4, 8, -2]);
    // Drawn in that order, one tick each.
    let rows: Vec<ResultRow> = [(4, 0.3), (8, 0.5), (-2, 0.6)]
        .iter()
        .map(|(k, v)| row("a", &format!("vision.layer[{k}].cls"), "fine", *v))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("m.png"), dir.path().join("m.svg"));
    assert!(layer_figure(&rows, &png, &svg, "t").unwrap());
    let text = std::fs::read_to_string(&svg).unwrap();
    let ticks: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| ["4", "8", "-2"].contains(l))
        .collect();
    assert_eq!(ticks, ["4", "8", "-2"]);
}

#[test]
fn draws_a_panel_per_dataset_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("l.png"), dir.path().join("l.svg"));
    let single = vec![
        row("a", "vision.layer[-2].cls", "fine", 0.2),
        row("a", "projector.mean", "fine", 0.1),
    ];
    assert!(!layer_figure(&single, &png, &svg, "t").unwrap());
    assert!(!png.exists() && !svg.exists());

    let mut rows = Vec::new();
    for ds in ["birds", "dogs"] {
        for (k, v) in [(4, 0.31), (8, 0.52), (12, 0.643)] {
            rows.push(row(ds, &format!("vision.layer[{k}].cls"), "fine", v));
            rows.push(row(
                ds,
                &format!("vision.layer[{k}].cls"),
                "coarse",
                v + 0.2,
            ));
        }
        rows.push(row(ds, "projector.mean", "fine", 0.4));
    }
    assert!(layer_figure(&rows, &png, &svg, "t").unwrap());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (1000, 120 + 2 * 420));
    let text = std::fs::read_to_string(&svg).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for needle in [
        "birds",
        "dogs",
        "fine · projector.mean",
        "12",
        "hidden_states index (layer)",
    ] {
        assert!(lines.contains(&needle), "{needle} missing from the SVG");
    }
}

#[test]
fn two_models_sweep_and_draw_apart() {
    // Both models probe the same layers and the projector; A peaks at 8, B at 4.
    let mut rows = Vec::new();
    for (model, peak) in [("org/a-7b", 8), ("/local/b-7b", 4)] {
        for k in [4, 8, 12] {
            let v = if k == peak { 0.7 } else { 0.3 };
            rows.push(of_model(
                row("d", &format!("vision.layer[{k}].cls"), "fine", v),
                model,
            ));
        }
        rows.push(of_model(row("d", "projector.mean", "fine", 0.5), model));
    }
    let sweeps = layer_sweeps(&rows, 2);
    let names: Vec<(&str, &[i64])> = sweeps
        .iter()
        .map(|s| (s.model.as_str(), s.layers.as_slice()))
        .collect();
    assert_eq!(
        names,
        [
            ("org/a-7b", &[4, 8, 12][..]),
            ("/local/b-7b", &[4, 8, 12][..])
        ]
    );
    // Each sweep's rows are its own model's: three layers, one level.
    for s in &sweeps {
        let mine: Vec<&ResultRow> = s.rows(&rows).collect();
        assert_eq!(mine.len(), 3);
        assert!(mine.iter().all(|r| r.model == s.model));
    }
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("l.png"), dir.path().join("l.svg"));
    assert!(layer_figure(&rows, &png, &svg, "t").unwrap());
    let bytes = std::fs::read(&png).unwrap();
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(be(20), 120 + 2 * 420, "a panel per model");
    let text = std::fs::read_to_string(&svg).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(lines.contains(&"d · a-7b") && lines.contains(&"d · b-7b"));
    // Each panel has its own model's projector line, not the other's as well.
    let dashed = lines.iter().filter(|l| **l == "fine · projector.mean");
    assert_eq!(dashed.count(), 2);
    // With language-model sweeps too (run by run: all of A, then all of B), the models' panels
    // of a dataset and part come together.
    let mut runs = Vec::new();
    for model in ["org/a-7b", "/local/b-7b"] {
        runs.extend(rows.iter().filter(|r| r.model == model).cloned());
        for k in [0, 8] {
            let fp = format!("llm.text.layer[{k}].last");
            runs.push(of_model(row("d", &fp, "fine", 0.6), model));
        }
    }
    let sweeps = layer_sweeps(&runs, 2);
    let order: Vec<(&str, &str)> = sweeps
        .iter()
        .map(|s| (s.prefix, short_name(&s.model)))
        .collect();
    assert_eq!(
        order,
        [
            ("vision.layer", "a-7b"),
            ("vision.layer", "b-7b"),
            ("llm.text.layer", "a-7b"),
            ("llm.text.layer", "b-7b")
        ]
    );
    assert!(layer_figure(&runs, &png, &svg, "t").unwrap());
    let text = std::fs::read_to_string(&svg).unwrap();
    let captions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("d · "))
        .collect();
    assert_eq!(
        captions,
        [
            "d · a-7b · vision encoder",
            "d · b-7b · vision encoder",
            "d · a-7b · language model",
            "d · b-7b · language model"
        ]
    );
}
