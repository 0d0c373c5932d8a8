use super::*;
use crate::test_rows::{of_model, result_row};

fn few(ds: &str, fp: &str, level: &str, shots: u64, top1: f64) -> ResultRow {
    ResultRow {
        shots,
        draws: 3,
        top1_std: 0.02,
        ..result_row(ds, fp, level, top1)
    }
}

#[test]
fn nothing_without_few_shot_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("f.png"), dir.path().join("f.svg"));
    let rows = [result_row("d", "projector.mean", "fine", 0.4)];
    assert!(!few_shot_figure(&rows, &png, &svg, "t").unwrap());
    assert!(!png.exists() && !svg.exists());
}

#[test]
fn a_panel_per_dataset_and_level_with_shot_ticks_and_the_full_data_line() {
    let mut rows = vec![result_row("birds", "vision.layer[-2].cls", "fine", 0.7)];
    for (ds, level) in [("birds", "fine"), ("birds", "coarse"), ("dogs", "fine")] {
        for (k, v) in [(1, 0.2), (4, 0.35), (16, 0.5)] {
            rows.push(few(ds, "vision.layer[-2].cls", level, k, v));
            rows.push(few(ds, "projector.mean", level, k, v - 0.1));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("f.png"), dir.path().join("f.svg"));
    assert!(few_shot_figure(&rows, &png, &svg, "Few-shot probes").unwrap());
    let bytes = std::fs::read(&png).unwrap();
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    // Two datasets × (coarse, fine); five legend entries in two columns.
    assert_eq!((be(16), be(20)), (1000, 50 + 2 * 330 + 14 + 3 * 22));
    let text = std::fs::read_to_string(&svg).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let at = |needle: &str| lines.iter().position(|l| *l == needle);
    for needle in [
        "Few-shot probes",
        "pre-projection: vision.layer[-2].cls",
        "post-projection: projector.mean",
        "bars: ±1 std over 3 draws",
        "dashed: chance",
        "training images per class",
        "16",
    ] {
        assert!(at(needle).is_some(), "{needle} missing from the SVG");
    }
    // Coarse before fine; no panel where a dataset has no rows of a level.
    assert!(at("birds · coarse") < at("birds · fine") && at("dogs · fine").is_some());
    assert!(at("dogs · coarse").is_none());
    let once = lines
        .iter()
        .filter(|l| **l == "dotted: all training images");
    assert_eq!(once.count(), 1);
    // Pre-projection in the warm family, post-projection in teal, as in the gap figure.
    let colours: Vec<RGBColor> = series_colours(&rows).iter().map(|s| s.1).collect();
    assert_eq!(colours, [RGBColor(224, 130, 20), RGBColor(1, 102, 94)]);
    assert!(text.contains("#E08214") && text.contains("#01665E"));
}

#[test]
fn levels_in_label_order_and_draws_as_a_range() {
    let rows = [
        few("d", "projector.mean", "fine", 8, 0.4),
        few("d", "projector.mean", "species", 8, 0.4),
        few("d", "projector.mean", "superordinate", 2, 0.4),
        ResultRow {
            draws: 5,
            ..few("d", "projector.mean", "coarse", 1, 0.4)
        },
    ];
    let levels = ordered_levels(&rows);
    assert_eq!(levels, ["superordinate", "coarse", "fine", "species"]);
    assert_eq!(shot_counts(&rows), [1, 2, 8]);
    assert_eq!(draws_text(&rows), "3–5");
    assert_eq!(draws_text(&rows[..2]), "3");
}

#[test]
fn two_models_get_their_own_lines_and_standard_probes() {
    let mut rows = Vec::new();
    for (model, full) in [("org/a", 0.8), ("org/b", 0.6)] {
        rows.push(of_model(
            result_row("d", "projector.mean", "fine", full),
            model,
        ));
        for (k, v) in [(1, 0.2), (4, 0.4)] {
            rows.push(of_model(few("d", "projector.mean", "fine", k, v), model));
            rows.push(of_model(few("d", "vision.cls", "fine", k, v), model));
        }
    }
    let few_rows = few_shot_rows(&rows);
    let series = series_colours(&few_rows);
    let keys: Vec<(&str, &str)> = series
        .iter()
        .map(|(s, _)| (s.model.as_str(), s.feature_point.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("org/a", "vision.cls"),
            ("org/a", "projector.mean"),
            ("org/b", "vision.cls"),
            ("org/b", "projector.mean")
        ]
    );
    // The dotted line of each model's few-shot probes is that model's standard probe.
    for r in &few_rows {
        let full = full_data(&rows, r);
        let want = (r.feature_point == "projector.mean").then_some(&r.model);
        assert_eq!(full.map(|f| &f.model), want);
    }
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("f.png"), dir.path().join("f.svg"));
    assert!(few_shot_figure(&rows, &png, &svg, "t").unwrap());
    let text = std::fs::read_to_string(&svg).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "a · pre-projection: vision.cls",
        "a · post-projection: projector.mean",
        "b · pre-projection: vision.cls",
        "b · post-projection: projector.mean",
    ] {
        assert!(lines.contains(&want), "{want} missing from the legend");
    }
}
