use super::*;

fn row(a: &str, b: &str, cka: f64, knn: f64) -> SimilarityRow {
    SimilarityRow {
        dataset: "cub".into(),
        model_a: "m".into(),
        feature_point_a: a.into(),
        stage_a: "pre-projection".into(),
        model_b: "m".into(),
        feature_point_b: b.into(),
        stage_b: "post-projection".into(),
        split: "test".into(),
        n: 100,
        linear_cka: cka,
        debiased_cka: cka,
        mutual_knn: knn,
        k: 10,
        centroid_gap: None,
        cache_key_a: "a".into(),
        cache_key_b: "b".into(),
    }
}

#[test]
fn matrices_are_symmetric_with_a_unit_diagonal() {
    let rows = [
        row("v", "p", 0.8, 0.3),
        row("v", "c", 0.9, 0.5),
        row("p", "c", 0.7, 0.2),
    ];
    let ms = matrices(&rows);
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[0].points, ["v", "p", "c"]);
    assert_eq!(ms[0].values[1][0], Some(0.8));
    assert_eq!(ms[0].values[0][1], Some(0.8));
    assert_eq!(ms[0].values[2][2], Some(1.0));
    assert_eq!(ms[1].measure, "mutual k-NN@10");
    assert_eq!(ms[1].values[2][1], Some(0.2));
}

#[test]
fn viridis_ends_and_middle() {
    assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
    assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
    assert_eq!(viridis(0.5), RGBColor(33, 145, 140));
    assert_eq!(viridis(2.0), viridis(1.0));
}

#[test]
fn writes_png_and_svg_with_values() {
    let dir = std::env::temp_dir().join(format!("gapprobe-simfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (png, svg) = (dir.join("s.png"), dir.join("s.svg"));
    similarity_figure(
        &[row("vision.layer[-2].cls", "projector.mean", 0.8123, 0.3)],
        &png,
        &svg,
    )
    .unwrap();
    let bytes = std::fs::read(&png).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(&bytes[1..4], b"PNG");
    assert!(
        text.contains("0.81") && text.contains("mutual k-NN@10"),
        "{text}"
    );
    assert!(text.contains("1 vision.layer[-2].cls") && text.contains("2 projector.mean"));
}

#[test]
fn a_layer_sweep_widens_the_figure_and_drops_the_cell_values() {
    let points: Vec<String> = (0..25)
        .map(|k| format!("vision.layer[{k}].cls"))
        .chain(["projector.mean".to_string()])
        .collect();
    let mut rows = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            rows.push(row(a, b, 0.4567, 0.25));
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("s.png"), dir.path().join("s.svg"));
    similarity_figure(&rows, &png, &svg).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(
        (be(16), be(20)),
        (2 * (215 + 50 + 30 + 16 * 26), 110 + 16 * 26)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("26 projector.mean"), "row labels");
    assert!(!text.contains("0.46"), "cell values at 16 px");
}

#[test]
fn a_panel_per_dataset_and_model_without_pairs_across_models() {
    let of = |m_a: &str, m_b: &str, r: SimilarityRow| SimilarityRow {
        model_a: m_a.into(),
        model_b: m_b.into(),
        ..r
    };
    let rows = [
        of("org/a", "org/a", row("v", "p", 0.8, 0.3)),
        of("org/b", "org/b", row("v", "p", 0.6, 0.2)),
        // Across the models: the report's table only.
        of("org/a", "org/b", row("v", "v", 0.1, 0.1)),
        of("org/b", "org/b", row("v", "c", 0.5, 0.4)),
    ];
    let ms = matrices(&rows);
    let panels: Vec<(&str, &str, &[String])> = ms
        .iter()
        .map(|m| (m.model.as_str(), m.measure.as_str(), m.points.as_slice()))
        .collect();
    let (two, three) = (
        ["v".to_string(), "p".to_string()],
        ["v".to_string(), "p".to_string(), "c".to_string()],
    );
    assert_eq!(
        panels,
        [
            ("org/a", "linear CKA", &two[..]),
            ("org/a", "mutual k-NN@10", &two[..]),
            ("org/b", "linear CKA", &three[..]),
            ("org/b", "mutual k-NN@10", &three[..])
        ]
    );
    // Each model's own value; the cross-model pair's 0.1 is in neither.
    assert_eq!(ms[0].values[0][1], Some(0.8));
    assert_eq!(ms[2].values[0][1], Some(0.6));
    assert_eq!(ms[2].values[0][2], Some(0.5));
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("s.png"), dir.path().join("s.svg"));
    similarity_figure(&rows, &png, &svg).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(be(20), 2 * 370, "a row of matrices per model");
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("cub · a — linear CKA") && text.contains("cub · b — mutual k-NN@10"));
    assert!(!text.contains("0.10"), "a cross-model value drawn");
    // Only pairs across models: a figure that says so, not an error.
    similarity_figure(&rows[2..3], &png, &svg).unwrap();
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("Only pairs across two models"), "{text}");
    assert!(similarity_figure(&[], &png, &svg).is_err());
}
