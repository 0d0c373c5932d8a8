use super::*;
use crate::test_rows::{class_row, of_model, result_row};

/// Both stages' probes of `ds` at `level`, with classes whose (before, after) accuracies are
/// `pairs`.
fn probes(ds: &str, level: &str, pairs: &[(f64, f64)]) -> (Vec<ResultRow>, Vec<ClassRow>) {
    let pre = result_row(ds, "vision.layer[-2].patch.mean", level, 0.7);
    let post = result_row(ds, "projector.mean", level, 0.5);
    let mut classes = Vec::new();
    for (i, (b, a)) in pairs.iter().enumerate() {
        classes.push(class_row(&pre, i as u64, &format!("c{i}"), 10, *b));
        classes.push(class_row(&post, i as u64, &format!("c{i}"), 10, *a));
    }
    (vec![pre, post], classes)
}

#[test]
fn nothing_without_class_rows_of_both_stages() {
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("c.png"), dir.path().join("c.svg"));
    let (rows, classes) = probes("d", "fine", &[(0.5, 0.4), (0.6, 0.7)]);
    assert!(!class_figure(&rows, &[], &png, &svg, "t").unwrap());
    let pre_only: Vec<ClassRow> = classes
        .iter()
        .filter(|c| c.stage == "pre-projection")
        .cloned()
        .collect();
    assert!(!class_figure(&rows, &pre_only, &png, &svg, "t").unwrap());
    // One stage probed: nothing to compare, whatever the class rows.
    assert!(!class_figure(&rows[..1], &classes, &png, &svg, "t").unwrap());
    assert!(!png.exists() && !svg.exists());
}

#[test]
fn a_scatter_per_dataset_and_level_in_png_and_svg() {
    let (mut rows, mut classes) = probes(
        "birds",
        "fine",
        &[(0.5, 0.4), (0.9, 0.2), (0.6, 0.7), (1.0, 1.0)],
    );
    for (ds, level) in [("birds", "coarse"), ("dogs", "fine")] {
        let (r, c) = probes(ds, level, &[(0.8, 0.6), (0.3, 0.9)]);
        rows.extend(r);
        classes.extend(c);
    }
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("c.png"), dir.path().join("c.svg"));
    assert!(class_figure(&rows, &classes, &png, &svg, "Classes the projection loses").unwrap());
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    // Two datasets × (coarse, fine) square panels; the legend on one line.
    assert_eq!((be(16), be(20)), (880, 50 + 2 * 440 + 36));
    let text = std::fs::read_to_string(&svg).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let at = |needle: &str| lines.iter().position(|l| *l == needle);
    for needle in [
        "Classes the projection loses",
        "before projection: vision.layer[-2].patch.mean (%)",
        "after: projector.mean (%)",
        "lost in the projection",
        "gained or unchanged",
        "dashed: y = x",
        "1 gained, 1 unchanged",
        "2 lost",
        "1 gained, 0 unchanged",
        "1 lost",
        "100",
    ] {
        assert!(at(needle).is_some(), "{needle} missing from the SVG");
    }
    // Coarse before fine; no panel where a dataset has no probes of a level.
    assert!(at("birds · coarse") < at("birds · fine") && at("dogs · fine").is_some());
    assert!(at("dogs · coarse").is_none());
    // Losses in the pre-projection warm colour, the rest in the post-projection teal.
    assert!(text.contains("#E08214") && text.contains("#01665E"));
}

#[test]
fn pairs_the_best_probes_classes_by_index_and_ignores_the_rest() {
    let pre = result_row("d", "vision.b", "fine", 0.7);
    let other = result_row("d", "vision.a", "fine", 0.5);
    let post = result_row("d", "projector.p", "fine", 0.4);
    // A few-shot probe of the other point that would be the best if it counted.
    let few = ResultRow {
        shots: 4,
        ..result_row("d", "vision.a", "fine", 0.9)
    };
    let rows = vec![few, other.clone(), pre.clone(), post.clone()];
    let elsewhere = ClassRow {
        cache_key: "another entry".into(),
        ..class_row(&pre, 4, "c4", 10, 0.5)
    };
    let classes = vec![
        class_row(&post, 2, "c2", 10, 0.9),
        class_row(&pre, 0, "c0", 10, 0.8),
        class_row(&pre, 2, "c2", 10, 0.4),
        class_row(&pre, 1, "c1", 10, 0.6),
        class_row(&post, 0, "c0", 10, 0.5),
        class_row(&post, 1, "c1", 10, 0.6),
        // The other point's classes (also the few-shot probe's point).
        class_row(&other, 0, "c0", 10, 0.1),
        class_row(&other, 1, "c1", 10, 0.1),
        // A class only one stage has, one without test images, one from another cache entry.
        class_row(&pre, 3, "c3", 10, 0.5),
        class_row(&post, 5, "c5", 10, 0.5),
        class_row(&pre, 6, "c6", 0, 0.0),
        class_row(&post, 6, "c6", 0, 0.0),
        elsewhere,
        class_row(&post, 4, "c4", 10, 0.5),
    ];
    let panels = class_panels(&rows, &classes);
    assert_eq!(panels.len(), 1);
    let p = &panels[0];
    assert_eq!(
        (p.pre.feature_point.as_str(), p.post.feature_point.as_str()),
        ("vision.b", "projector.p")
    );
    let pairs: Vec<(u64, f64, f64)> = p
        .classes
        .iter()
        .map(|(b, a)| (b.class_index, b.accuracy, a.accuracy))
        .collect();
    assert_eq!(pairs, [(0, 0.8, 0.5), (1, 0.6, 0.6), (2, 0.4, 0.9)]);
    assert_eq!(p.counts(), (1, 1, 1));
    assert!((p.mean_change() - 0.2 / 3.0).abs() < 1e-12);
    // The few-shot probe's point has class rows, but the figure never pairs it.
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("c.png"), dir.path().join("c.svg"));
    assert!(class_figure(&rows, &classes, &png, &svg, "t").unwrap());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("before projection: vision.b (%)") && !text.contains("vision.a"));
}

#[test]
fn long_feature_points_lose_their_middle() {
    assert_eq!(shorten("projector.mean", 30), "projector.mean");
    let long = "vision.layer[-2].patch.attention_pool.mean";
    let short = shorten(long, 30);
    assert_eq!(short, "vision.layer[-…ntion_pool.mean");
    assert_eq!(short.chars().count(), 30);
}

#[test]
fn never_pairs_one_models_pre_with_anothers_post() {
    // A has the best pre-projection probe of all, B the best post-projection one; C has only a
    // pre-projection probe. Across models the best pair would be A's pre with B's post.
    let a_pre = of_model(result_row("d", "vision.cls", "fine", 0.9), "org/a");
    let a_post = of_model(result_row("d", "projector.mean", "fine", 0.3), "org/a");
    let b_pre = of_model(result_row("d", "vision.cls", "fine", 0.5), "org/b");
    let b_post = of_model(result_row("d", "projector.mean", "fine", 0.8), "org/b");
    let c_pre = of_model(result_row("d", "vision.cls", "fine", 0.95), "org/c");
    let rows = vec![
        a_pre.clone(),
        a_post.clone(),
        b_pre.clone(),
        b_post.clone(),
        c_pre.clone(),
    ];
    let mut classes = Vec::new();
    for (i, (r, acc)) in [
        (&a_pre, 0.9),
        (&a_post, 0.2),
        (&b_pre, 0.4),
        (&b_post, 0.7),
        (&c_pre, 1.0),
    ]
    .into_iter()
    .enumerate()
    {
        // Two classes per probe, the second a little better.
        classes.push(class_row(r, 0, "c0", 10, acc));
        classes.push(class_row(r, 1, "c1", 10, acc + 0.05 * (i % 2) as f64));
    }
    let panels = class_panels(&rows, &classes);
    let pairs: Vec<(&str, &str, &str)> = panels
        .iter()
        .map(|p| {
            (
                p.pre.model.as_str(),
                p.post.model.as_str(),
                p.pre.feature_point.as_str(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("org/a", "org/a", "vision.cls"),
            ("org/b", "org/b", "vision.cls")
        ]
    );
    for p in &panels {
        assert!(p
            .classes
            .iter()
            .all(|(b, a)| b.model == p.pre.model && a.model == p.pre.model));
    }
    assert_eq!(panels[0].counts(), (2, 0, 0));
    assert_eq!(panels[1].counts(), (0, 2, 0));
    let dir = tempfile::tempdir().unwrap();
    let (png, svg) = (dir.path().join("c.png"), dir.path().join("c.svg"));
    assert!(class_figure(&rows, &classes, &png, &svg, "t").unwrap());
    let bytes = std::fs::read(&png).unwrap();
    let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
    assert_eq!(be(20), 50 + 2 * 440 + 36, "a row of panels per model");
    let text = std::fs::read_to_string(&svg).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(lines.contains(&"d · a · fine") && lines.contains(&"d · b · fine"));
    assert!(!lines.contains(&"d · c · fine") && !lines.contains(&"d · fine"));
}
