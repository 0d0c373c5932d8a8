use super::*;
use crate::test_rows::result_row;

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
