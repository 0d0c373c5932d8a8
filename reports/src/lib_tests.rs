use crate::test_rows::result_row as row;
use crate::*;
use std::path::Path;

/// A few-shot copy of `r` at `shots` with another score.
fn at(r: &ResultRow, shots: u64) -> ResultRow {
    ResultRow {
        shots,
        draws: 5,
        top1_std: 0.03,
        top1: r.top1 * 0.5 + 0.01 * shots as f64,
        ..r.clone()
    }
}

/// What every figure but the few-shot one writes (its PNG and SVG bytes, and whether it drew).
fn figures(rows: &[ResultRow], dir: &Path) -> Vec<(bool, Vec<u8>, Vec<u8>)> {
    let files = |name: &str| {
        (
            dir.join(format!("{name}.png")),
            dir.join(format!("{name}.svg")),
        )
    };
    let read = |p: &Path| std::fs::read(p).unwrap_or_default();
    let mut out = Vec::new();
    let (png, svg) = files("gap");
    let drew = modality_gap_figure(rows, &png, &svg, &FigureOptions::default()).is_ok();
    out.push((drew, read(&png), read(&svg)));
    let (png, svg) = files("text");
    let drew = image_vs_text_figure(rows, &png, &svg, "t").unwrap();
    out.push((drew, read(&png), read(&svg)));
    let (png, svg) = files("layers");
    let drew = layer_figure(rows, &png, &svg, "t").unwrap();
    out.push((drew, read(&png), read(&svg)));
    out
}

#[test]
fn few_shot_rows_change_no_other_figure_or_table() {
    // Standard rows for every section: a layer sweep, the projector, both LLM arms.
    let mut standard = vec![row("d", "projector.mean", "fine", 0.4)];
    for (k, v) in [(1, 0.2), (2, 0.55), (3, 0.5)] {
        standard.push(row("d", &format!("vision.layer[{k}].cls"), "fine", v));
        standard.push(row("d", &format!("llm.image.layer[{k}].last"), "fine", v));
        standard.push(row(
            "d",
            &format!("llm.text.layer[{k}].last"),
            "fine",
            v + 0.3,
        ));
    }
    // Few-shot copies at two shot counts, plus points, layers, levels and a dataset only
    // few-shot rows have; some before the standard rows, so they would lead any order.
    let mut extra = vec![
        row("d", "vision.layer[4].cls", "fine", 0.9),
        row("d", "projector.cls", "coarse", 0.9),
        row("other", "llm.text.layer[1].last", "fine", 0.9),
    ];
    extra.extend(standard.iter().cloned());
    let few: Vec<ResultRow> = extra.iter().flat_map(|r| [at(r, 1), at(r, 8)]).collect();
    let (head, tail) = few.split_at(few.len() / 2);
    let mixed: Vec<ResultRow> = [head, &standard, tail].concat();

    let ctx = ReportContext {
        figure: "modality_gap.png".into(),
        layer_figure: "layers.png".into(),
        text_figure: "image_vs_text.png".into(),
        few_shot_figure: "few_shot.png".into(),
        ..Default::default()
    };
    let plain = markdown_report(&standard, &ctx);
    let md = markdown_report(&mixed, &ctx);
    assert!(!plain.contains("Few-shot"), "{plain}");
    // Only the new section differs, and it sits between the layer and image-vs-text ones.
    let (before, rest) = md
        .split_once("\n## Few-shot probes\n")
        .expect("the section");
    let after = &rest[rest.find("\n## ").expect("a section after it")..];
    assert!(before.contains("## Probe accuracy by layer"), "{md}");
    assert!(after.starts_with("\n## Image vs text"), "{md}");
    assert_eq!(format!("{before}{after}"), plain);

    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let drawn = figures(&standard, a.path());
    assert!(drawn
        .iter()
        .all(|(drew, png, svg)| *drew && !png.is_empty() && !svg.is_empty()));
    assert!(drawn == figures(&mixed, b.path()), "a figure changed");

    // Sweeps and arms that only few-shot rows have draw no figure and no section.
    let standard = vec![
        row("d", "vision.a", "fine", 0.6),
        row("d", "projector.mean", "fine", 0.4),
    ];
    let mixed = [&standard[..], &few].concat();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let drawn = figures(&mixed, a.path());
    assert!(drawn == figures(&standard, b.path()), "a figure changed");
    assert_eq!(
        drawn.iter().map(|d| d.0).collect::<Vec<_>>(),
        [true, false, false]
    );
    let md = markdown_report(&mixed, &ReportContext::default());
    assert!(
        !md.contains("by layer") && !md.contains("Image vs text"),
        "{md}"
    );
    // With only few-shot rows there is no modality-gap figure to draw, as with no rows.
    assert!(modality_gap_figure(
        &few,
        &a.path().join("g.png"),
        &a.path().join("g.svg"),
        &FigureOptions::default()
    )
    .is_err());
}
