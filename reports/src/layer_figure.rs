//! Probe accuracy along a model's depth: for every dataset whose feature points differ only in
//! their layer (`vision.layer[K].cls` for several K, a "layer sweep"; likewise the language
//! model's `llm.image.layer[K].last` and `llm.text.layer[K].last`), top-1 per layer as a line per
//! label level, with 95% bootstrap intervals. A panel per dataset, model (named in the caption
//! when the rows hold several) and model part (vision encoder, language model): the vision panel
//! draws the model's post-projection points as dashed horizontal lines in the level's colour; the
//! language-model panel puts the image and text arms side by side (circles and triangles).
//! Written as PNG and SVG.

use crate::models::Models;
use crate::style::{draw_percent_mesh, draw_x_ticks, register_font, unique, LEVEL_COLOURS};
use crate::{standard_rows, ResultRow};
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

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

/// The feature points of one dataset and model that differ only in their layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerSweep {
    pub dataset: String,
    pub model: String,
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
                && r.model == self.model
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

/// Every (dataset, model, layered prefix, tokens) with at least `min_layers` distinct layers, in
/// order of appearance, but the models' sweeps of the same points together.
pub(crate) fn layer_sweeps(rows: &[ResultRow], min_layers: usize) -> Vec<LayerSweep> {
    let mut sweeps: Vec<LayerSweep> = Vec::new();
    for r in rows {
        let Some((prefix, k, tokens)) = swept_layer(&r.feature_point) else {
            continue;
        };
        match sweeps.iter_mut().find(|s| {
            s.dataset == r.dataset && s.model == r.model && s.prefix == prefix && s.tokens == tokens
        }) {
            Some(s) if !s.layers.contains(&k) => s.layers.push(k),
            Some(_) => {}
            None => sweeps.push(LayerSweep {
                dataset: r.dataset.clone(),
                model: r.model.clone(),
                prefix,
                tokens: tokens.to_string(),
                layers: vec![k],
            }),
        }
    }
    sweeps.retain(|s| s.layers.len() >= min_layers);
    // The models' sweeps of the same points side by side.
    Models::of(rows).side_by_side(&mut sweeps, |s| {
        (
            (s.dataset.clone(), s.prefix, s.tokens.clone()),
            s.model.as_str(),
        )
    });
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

/// One panel: a dataset, a model and a part of it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Panel<'a> {
    dataset: &'a str,
    model: &'a str,
    part: &'static str,
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
    // A panel per dataset, model and model part, in order of appearance.
    let panels = unique(sweeps.iter().map(|s| Panel {
        dataset: &s.dataset,
        model: &s.model,
        part: s.part(),
    }));
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
    panels: &[Panel],
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
    let several_parts = unique(panels.iter().map(|p| p.part)).len() > 1;
    let models = Models::of(rows);
    for (panel, p) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        let &Panel {
            dataset,
            model,
            part,
        } = p;
        let here: Vec<&LayerSweep> = sweeps
            .iter()
            .filter(|s| s.dataset == dataset && s.model == model && s.part() == part)
            .collect();
        let mut caption = dataset.to_string();
        if models.several() {
            caption = format!("{caption} · {}", models.name(model));
        }
        if several_parts {
            caption = format!("{caption} · {part}");
        }
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
        // Post-projection points of this dataset and model: a dashed line per level (vision
        // panels).
        for r in rows.iter().filter(|r| {
            r.dataset == dataset
                && r.model == model
                && r.stage == "post-projection"
                && part == "vision encoder"
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
#[path = "layer_figure_tests.rs"]
mod tests;
