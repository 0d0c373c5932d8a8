use super::*;
use crate::models::short_name;
use crate::style::stage_colour;
use crate::test_rows::{of_model, result_row};

#[test]
fn writes_png_and_svg_with_text() {
    let rows = vec![
        result_row("demo", "vision.layer[-2].patch.mean", "fine", 0.6),
        result_row("demo", "projector.mean", "fine", 0.4),
        result_row("demo", "vision.layer[-2].patch.mean", "coarse", 0.9),
        result_row("demo", "projector.mean", "coarse", 0.8),
    ];
    let dir = std::env::temp_dir().join(format!("gapprobe-fig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (png, svg) = (dir.join("f.png"), dir.join("f.svg"));
    modality_gap_figure(&rows, &png, &svg, &FigureOptions::default()).unwrap();
    let img = image_dims(&png);
    assert_eq!(img, (1000, 560));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("projector.mean") && text.contains("fine") && text.contains("60.0"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn llm_arms_get_their_own_figure_and_leave_the_gap_figure() {
    let mut rows = vec![
        result_row("demo", "vision.layer[-2].patch.mean", "fine", 0.6),
        result_row("demo", "projector.mean", "fine", 0.4),
        result_row("demo", "llm.image.layer[-1].last", "fine", 0.3),
    ];
    let dir = std::env::temp_dir().join(format!("gapprobe-fig-llm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (png, svg) = (dir.join("t.png"), dir.join("t.svg"));
    // One arm only: no figure, nothing written.
    assert!(!image_vs_text_figure(&rows, &png, &svg, "T").unwrap());
    assert!(!png.exists() && !svg.exists());
    rows.push(result_row("demo", "llm.text.layer[-1].last", "fine", 0.85));
    assert!(image_vs_text_figure(&rows, &png, &svg, "Caption T").unwrap());
    assert_eq!(image_dims(&png), (1000, 560));
    let text = std::fs::read_to_string(&svg).unwrap();
    for want in [
        "LLM, image in prompt: llm.image.layer[-1].last",
        "LLM, attribute text in prompt: llm.text.layer[-1].last",
        "85.0",
        "30.0",
        "Caption T",
    ] {
        assert!(text.contains(want), "{want} missing from the SVG");
    }
    assert!(!text.contains("projector.mean"), "only the LLM's arms");
    // The modality-gap figure keeps to the vision encoder and the projector.
    let (gpng, gsvg) = (dir.join("g.png"), dir.join("g.svg"));
    modality_gap_figure(&rows, &gpng, &gsvg, &FigureOptions::default()).unwrap();
    let text = std::fs::read_to_string(&gsvg).unwrap();
    assert!(
        text.contains("projector.mean") && !text.contains("llm."),
        "gap figure"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn an_arm_swept_over_layers_is_drawn_as_its_best_layer() {
    let mut rows = Vec::new();
    for (k, v) in [(0, 0.1), (8, 0.3), (16, 0.2)] {
        rows.push(result_row(
            "d",
            &format!("llm.image.layer[{k}].last"),
            "fine",
            v,
        ));
        rows.push(result_row(
            "d",
            &format!("llm.text.layer[{k}].last"),
            "fine",
            v + 0.5,
        ));
    }
    let (kept, labels) = best_of_sweeps(&rows);
    let points: Vec<&str> = kept.iter().map(|r| r.feature_point.as_str()).collect();
    assert_eq!(
        points,
        ["llm.image.layer[8].last", "llm.text.layer[8].last"]
    );
    assert_eq!(
        labels[1],
        (
            "m".to_string(),
            "llm.text.layer[8].last".to_string(),
            " (best of 3 layers)".to_string()
        )
    );
}

#[test]
fn a_layer_sweep_is_drawn_as_its_best_layer() {
    let mut rows = vec![result_row("demo", "projector.mean", "fine", 0.4)];
    for (k, v) in [(1, 0.2), (2, 0.55), (3, 0.5)] {
        rows.push(result_row(
            "demo",
            &format!("vision.layer[{k}].cls"),
            "fine",
            v,
        ));
        rows.push(result_row(
            "demo",
            &format!("vision.layer[{k}].cls"),
            "coarse",
            v,
        ));
    }
    rows.push(result_row(
        "demo",
        "vision.layer[1].patch.mean",
        "fine",
        0.1,
    ));
    rows.push(result_row(
        "demo",
        "vision.layer[2].patch.mean",
        "fine",
        0.3,
    ));
    let (kept, labels) = best_of_sweeps(&rows);
    let points: Vec<&str> = kept.iter().map(|r| r.feature_point.as_str()).collect();
    assert_eq!(
        points,
        [
            "projector.mean",
            "vision.layer[2].cls",
            "vision.layer[2].cls",
            "vision.layer[1].patch.mean",
            "vision.layer[2].patch.mean"
        ]
    );
    assert_eq!(
        labels,
        [(
            "m".to_string(),
            "vision.layer[2].cls".to_string(),
            " (best of 3 layers)".to_string()
        )]
    );
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("f.png"), dir.path().join("f.svg"));
    modality_gap_figure(&rows, &png, &svg, &FigureOptions::default()).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.contains("pre-projection: vision.layer[2].cls (best of 3 layers)"),
        "legend"
    );
    assert!(
        !text.contains("vision.layer[3].cls"),
        "a dropped layer is drawn"
    );
}

fn image_dims(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    (be(16), be(20))
}

/// Two models probed at the same feature points: model A's vision sweep peaks at layer 8, B's
/// at layer 4; both have the projector and both LLM arms.
fn two_models() -> Vec<ResultRow> {
    let mut rows = Vec::new();
    for (model, peak) in [("llava-hf/llava-1.5-7b-hf", 8), ("/x/y/model", 4)] {
        for k in [4, 8, 12] {
            let v = if k == peak { 0.7 } else { 0.4 };
            rows.push(of_model(
                result_row("d", &format!("vision.layer[{k}].cls"), "fine", v),
                model,
            ));
        }
        for fp in [
            "projector.mean",
            "llm.image.layer[-1].last",
            "llm.text.layer[-1].last",
        ] {
            rows.push(of_model(result_row("d", fp, "fine", 0.5), model));
        }
    }
    rows
}

#[test]
fn two_models_get_a_series_and_a_legend_entry_each() {
    let rows = two_models();
    let gap: Vec<ResultRow> = rows
        .iter()
        .filter(|r| !LLM_STAGES.contains(&r.stage.as_str()))
        .cloned()
        .collect();
    // Each model's sweep is drawn as its own best layer.
    let (kept, labels) = best_of_sweeps(&gap);
    let points: Vec<(&str, &str)> = kept
        .iter()
        .map(|r| (short_name(&r.model), r.feature_point.as_str()))
        .collect();
    assert_eq!(
        points,
        [
            ("llava-1.5-7b-hf", "vision.layer[8].cls"),
            ("llava-1.5-7b-hf", "projector.mean"),
            ("model", "vision.layer[4].cls"),
            ("model", "projector.mean")
        ]
    );
    assert_eq!(labels.len(), 2);
    assert_eq!(
        (labels[1].0.as_str(), labels[1].1.as_str()),
        ("/x/y/model", "vision.layer[4].cls")
    );
    // A series per model, stage and feature point: by model, then stage; distinct shades of
    // each stage's hue family.
    let series = series_colours(&kept);
    let keys: Vec<(&str, &str)> = series
        .iter()
        .map(|(s, _)| (short_name(&s.model), s.stage.as_str()))
        .collect();
    assert_eq!(
        keys,
        [
            ("llava-1.5-7b-hf", "pre-projection"),
            ("llava-1.5-7b-hf", "post-projection"),
            ("model", "pre-projection"),
            ("model", "post-projection")
        ]
    );
    let colours: Vec<RGBColor> = series.iter().map(|s| s.1).collect();
    assert_eq!(colours[0], stage_colour("pre-projection"));
    assert_eq!(colours[1], stage_colour("post-projection"));
    assert!(colours[2] != colours[0] && colours[3] != colours[1]);
    // Every series' rows are its own model's.
    for (s, _) in &series {
        assert_eq!(kept.iter().filter(|r| s.matches(r)).count(), 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("g.png"), dir.path().join("g.svg"));
    modality_gap_figure(&rows, &png, &svg, &FigureOptions::default()).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for want in [
        "llava-1.5-7b-hf · pre-projection: vision.layer[8].cls (best of 3 layers)",
        "llava-1.5-7b-hf · post-projection: projector.mean",
        "model · pre-projection: vision.layer[4].cls (best of 3 layers)",
        "model · post-projection: projector.mean",
    ] {
        assert!(lines.contains(&want), "{want} missing from the legend");
    }
    // The image-vs-text figure likewise.
    let (png, svg) = (dir.path().join("t.png"), dir.path().join("t.svg"));
    assert!(image_vs_text_figure(&rows, &png, &svg, "t").unwrap());
    let text = std::fs::read_to_string(&svg).unwrap();
    for want in [
        "llava-1.5-7b-hf · LLM, image in prompt: llm.image.layer[-1].last",
        "model · LLM, image in prompt: llm.image.layer[-1].last",
        "model · LLM, attribute text in prompt: llm.text.layer[-1].last",
    ] {
        assert!(text.contains(want), "{want} missing from the SVG");
    }
}

#[test]
fn the_image_vs_text_figure_needs_both_arms_of_one_model() {
    let rows = [
        of_model(
            result_row("d", "llm.image.layer[-1].last", "fine", 0.3),
            "a",
        ),
        of_model(result_row("d", "llm.text.layer[-1].last", "fine", 0.8), "b"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("t.png"), dir.path().join("t.svg"));
    assert!(!image_vs_text_figure(&rows, &png, &svg, "t").unwrap());
}
