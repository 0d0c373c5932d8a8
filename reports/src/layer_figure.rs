//! Probe accuracy along a model's depth: for every dataset whose feature points differ only in
//! their layer (`vision.layer[K].cls` for several K, a "layer sweep"; likewise the language
//! model's `llm.image.layer[K].last` and `llm.text.layer[K].last`), top-1 per layer as a line per
//! label level, with 95% bootstrap intervals. A panel per dataset and model part (vision encoder,
//! language model): the vision panel draws the post-projection points as dashed horizontal lines
//! in the level's colour; the language-model panel puts the image and text arms side by side
//! (circles and triangles). Written as PNG and SVG.

use crate::figure::{draw_percent_mesh, register_font};
use crate::{standard_rows, ResultRow};
use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Colours by label level (superordinate, coarse, fine, then others in order of appearance).
const LEVEL_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Room right of each panel for its legend, in pixels.
const LEGEND_WIDTH: u32 = 250;

/// How a line is shown in the legend: plain, with its sweep's marker, or dashed (a
/// post-projection point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swatch {
    Line,
    Circle,
    Triangle,
    Dashed,
}

/// What comes before `[K]` in the feature points that name a layer.
const LAYERED: [&str; 3] = ["vision.layer", "llm.image.layer", "llm.text.layer"];

/// `<prefix>[K].rest` → `(prefix, K, "rest")` for the vision tower's and the language model's
/// layered feature points; `None` for others.
pub(crate) fn swept_layer(feature_point: &str) -> Option<(&'static str, i64, &str)> {
    LAYERED.into_iter().find_map(|prefix| {
        let rest = feature_point.strip_prefix(prefix)?.strip_prefix('[')?;
        let (k, rest) = rest.split_once("].")?;
        Some((prefix, k.parse().ok()?, rest))
    })
}

/// The feature points of one dataset that differ only in their layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerSweep {
    pub dataset: String,
    /// What comes before `[K]`: `vision.layer`, `llm.image.layer` or `llm.text.layer`.
    pub prefix: &'static str,
    /// What follows `[K].`, e.g. `cls`, `patch.mean` or `last`.
    pub tokens: String,
    /// Layers in the order the rows first name them.
    pub layers: Vec<i64>,
}

impl LayerSweep {
    /// The rows of this sweep (every layer and level).
    pub fn rows<'a>(&'a self, rows: &'a [ResultRow]) -> impl Iterator<Item = &'a ResultRow> {
        rows.iter().filter(move |r| {
            r.dataset == self.dataset
                && swept_layer(&r.feature_point)
                    .is_some_and(|(p, _, t)| p == self.prefix && t == self.tokens)
        })
    }

    /// The feature point of this sweep at layer `k`.
    pub fn point(&self, k: i64) -> String {
        format!("{}[{k}].{}", self.prefix, self.tokens)
    }

    /// Which part of the model the sweep runs along: `vision encoder` or `language model`.
    pub fn part(&self) -> &'static str {
        if self.prefix == "vision.layer" {
            "vision encoder"
        } else {
            "language model"
        }
    }

    /// A short name among the sweeps of one panel: `cls`, `image · last`, `text · last`.
    fn short(&self) -> String {
        match self.prefix {
            "llm.image.layer" => format!("image · {}", self.tokens),
            "llm.text.layer" => format!("text · {}", self.tokens),
            _ => self.tokens.clone(),
        }
    }
}

/// Every (dataset, tokens) with at least `min_layers` distinct layers, in order of appearance.
pub(crate) fn layer_sweeps(rows: &[ResultRow], min_layers: usize) -> Vec<LayerSweep> {
    let mut sweeps: Vec<LayerSweep> = Vec::new();
    for r in rows {
        let Some((prefix, k, tokens)) = swept_layer(&r.feature_point) else {
            continue;
        };
        match sweeps
            .iter_mut()
            .find(|s| s.dataset == r.dataset && s.prefix == prefix && s.tokens == tokens)
        {
            Some(s) if !s.layers.contains(&k) => s.layers.push(k),
            Some(_) => {}
            None => sweeps.push(LayerSweep {
                dataset: r.dataset.clone(),
                prefix,
                tokens: tokens.to_string(),
                layers: vec![k],
            }),
        }
    }
    sweeps.retain(|s| s.layers.len() >= min_layers);
    sweeps
}

/// Sorts `layers` by value when they share a sign (returns true); layers given with both signs
/// (`[4, 8, -2]`) cannot be placed without the model's depth and stay in the order written.
pub(crate) fn in_display_order(layers: &mut [i64]) -> bool {
    let by_value = layers.iter().all(|k| *k < 0) || layers.iter().all(|k| *k >= 0);
    if by_value {
        layers.sort();
    }
    by_value
}

/// Unique values in order of appearance.
pub(crate) fn unique<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Labels `chart`'s x axis by hand on `whole` (the drawing area at the backend's origin):
/// each `(x, label)` of `ticks` under the axis, and `desc` beneath them, centred on `middle`.
pub(crate) fn draw_x_ticks<DB: DrawingBackend>(
    whole: &DrawingArea<DB, Shift>,
    chart: &ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    ticks: &[(f64, String)],
    middle: f64,
    desc: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let below = Pos::new(HPos::Center, VPos::Top);
    for (x, label) in ticks {
        let (px, py) = chart.backend_coord(&(*x, 0.0));
        whole.draw(&Text::new(
            label.clone(),
            (px, py + 6),
            ("sans-serif", 13).into_font().color(&BLACK).pos(below),
        ))?;
    }
    let (px, py) = chart.backend_coord(&(middle, 0.0));
    whole.draw(&Text::new(
        desc,
        (px, py + 24),
        ("sans-serif", 14).into_font().color(&BLACK).pos(below),
    ))
}

/// Writes the figure to `png` and `svg` when some dataset has a layer sweep (at least two
/// layers of the same tokens) among the standard probes' rows (few-shot rows are left out);
/// returns whether it did.
pub fn layer_figure(rows: &[ResultRow], png: &Path, svg: &Path, title: &str) -> Result<bool> {
    register_font();
    // Few-shot rows have their own figure ([`crate::few_shot_figure`]).
    let rows = &standard_rows(rows);
    let sweeps = layer_sweeps(rows, 2);
    if sweeps.is_empty() {
        return Ok(false);
    }
    // A panel per dataset and model part, in order of appearance.
    let mut panels: Vec<(&str, &str)> = Vec::new();
    for s in &sweeps {
        if !panels.contains(&(s.dataset.as_str(), s.part())) {
            panels.push((s.dataset.as_str(), s.part()));
        }
    }
    let size = (1000, 120 + 420 * panels.len() as u32);
    draw(
        BitMapBackend::new(png, size).into_drawing_area(),
        rows,
        &sweeps,
        &panels,
        title,
    )?;
    draw(
        SVGBackend::new(svg, size).into_drawing_area(),
        rows,
        &sweeps,
        &panels,
        title,
    )?;
    Ok(true)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    rows: &[ResultRow],
    sweeps: &[LayerSweep],
    panels: &[(&str, &str)],
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the layer figure: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    // Hand-drawn labels go on the whole area, in the backend's pixel coordinates.
    let whole = root.clone();
    let root = root
        .titled(
            &format!("{title}: probe accuracy by layer"),
            ("sans-serif", 22),
        )
        .map_err(err)?;
    let levels = unique(rows.iter().map(|r| r.level.as_str()));
    let colour = |level: &str| {
        let i = levels.iter().position(|l| *l == level).unwrap_or(0);
        LEVEL_COLOURS[i % LEVEL_COLOURS.len()]
    };
    let several_parts = unique(panels.iter().map(|(_, part)| *part)).len() > 1;
    for (panel, (dataset, part)) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        let here: Vec<&LayerSweep> = sweeps
            .iter()
            .filter(|s| s.dataset == *dataset && s.part() == *part)
            .collect();
        let caption = if several_parts {
            format!("{dataset} · {part}")
        } else {
            dataset.to_string()
        };
        // Layers placed by value when they share a sign, else in the order written.
        let mut layers: Vec<i64> = Vec::new();
        for s in &here {
            for k in &s.layers {
                if !layers.contains(k) {
                    layers.push(*k);
                }
            }
        }
        let by_value = in_display_order(&mut layers);
        let x_of = |k: i64| -> f64 {
            if by_value {
                k as f64
            } else {
                layers.iter().position(|l| *l == k).unwrap_or(0) as f64
            }
        };
        let (x_lo, x_hi) = (x_of(layers[0]), x_of(*layers.last().unwrap_or(&layers[0])));
        let pad = ((x_hi - x_lo) * 0.04).max(0.5);
        let (plot_area, legend_area) =
            panel.split_horizontally(panel.dim_in_pixel().0 - LEGEND_WIDTH);
        // (label, colour, swatch) per line, drawn right of the plot.
        let mut legend: Vec<(String, RGBColor, Swatch)> = Vec::new();
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(caption, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((x_lo - pad)..(x_hi + pad), 0f64..1.05)
            .map_err(err)?;
        draw_percent_mesh(&mut chart, "probe top-1 accuracy (%)", (14, 15)).map_err(err)?;
        let markers = here.len() > 1;
        for (si, sweep) in here.iter().enumerate() {
            for level in &levels {
                let mut points: Vec<(f64, &ResultRow)> = sweep
                    .rows(rows)
                    .filter(|r| r.level == *level)
                    .filter_map(|r| swept_layer(&r.feature_point).map(|(_, k, _)| (x_of(k), r)))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let c = colour(level);
                let label = if markers {
                    format!("{level} · {}", sweep.short())
                } else {
                    level.to_string()
                };
                chart
                    .draw_series(LineSeries::new(
                        points.iter().map(|(x, r)| (*x, r.top1)),
                        c.stroke_width(2),
                    ))
                    .map_err(err)?;
                let swatch = match (markers, si % 2) {
                    (false, _) => Swatch::Line,
                    (true, 0) => Swatch::Circle,
                    (true, _) => Swatch::Triangle,
                };
                legend.push((label, c, swatch));
                chart
                    .draw_series(points.iter().map(|(x, r)| {
                        ErrorBar::new_vertical(
                            *x,
                            r.top1_ci_low,
                            r.top1,
                            r.top1_ci_high,
                            c.mix(0.7).stroke_width(1),
                            5,
                        )
                    }))
                    .map_err(err)?;
                if si % 2 == 0 {
                    chart
                        .draw_series(
                            points
                                .iter()
                                .map(|(x, r)| Circle::new((*x, r.top1), 3, c.filled())),
                        )
                        .map_err(err)?;
                } else {
                    chart
                        .draw_series(
                            points
                                .iter()
                                .map(|(x, r)| TriangleMarker::new((*x, r.top1), 5, c.filled())),
                        )
                        .map_err(err)?;
                }
            }
        }
        // Post-projection points of this dataset: a dashed line per level (vision panels).
        for r in rows.iter().filter(|r| {
            r.dataset == *dataset && r.stage == "post-projection" && *part == "vision encoder"
        }) {
            let c = colour(&r.level);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x_lo - pad, r.top1), (x_hi + pad, r.top1)],
                    6,
                    4,
                    c.stroke_width(2),
                ))
                .map_err(err)?;
            legend.push((
                format!("{} · {}", r.level, r.feature_point),
                c,
                Swatch::Dashed,
            ));
        }
        let left = Pos::new(HPos::Left, VPos::Center);
        for (i, (label, c, swatch)) in legend.iter().enumerate() {
            let y = 40 + 20 * i as i32;
            let segments = if *swatch == Swatch::Dashed {
                vec![((4, y), (10, y)), ((14, y), (20, y)), ((24, y), (30, y))]
            } else {
                vec![((4, y), (30, y))]
            };
            for (a, b) in segments {
                legend_area
                    .draw(&PathElement::new(vec![a, b], c.stroke_width(2)))
                    .map_err(err)?;
            }
            match swatch {
                Swatch::Circle => legend_area
                    .draw(&Circle::new((17, y), 4, c.filled()))
                    .map_err(err)?,
                Swatch::Triangle => legend_area
                    .draw(&TriangleMarker::new((17, y), 6, c.filled()))
                    .map_err(err)?,
                Swatch::Line | Swatch::Dashed => {}
            }
            legend_area
                .draw(&Text::new(
                    label.clone(),
                    (38, y),
                    ("sans-serif", 13).into_font().color(&BLACK).pos(left),
                ))
                .map_err(err)?;
        }
        // Layer ticks, drawn by hand at each probed layer.
        let ticks: Vec<(f64, String)> = layers.iter().map(|k| (x_of(*k), k.to_string())).collect();
        draw_x_ticks(
            &whole,
            &chart,
            &ticks,
            (x_lo + x_hi) / 2.0,
            "hidden_states index (layer)",
        )
        .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rows::result_row as row;

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
}
