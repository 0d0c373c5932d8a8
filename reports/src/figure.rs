//! The modality-gap figure: grouped bars of probe top-1 per dataset × label level, one bar per
//! feature point (pre-projection in warm colours, post-projection in teal), with 95% bootstrap
//! intervals and a dashed chance line per group. Rows of several models draw a series per model,
//! stage and feature point, each legend label led by its model's short name. A layer sweep of
//! three or more layers (`vision.layer[K].cls` for several K, of one model) is drawn as its best
//! layer, labelled so; the whole sweep is in the layer figure ([`crate::layer_figure`]). Written
//! as PNG and SVG.

use crate::layer_figure::swept_layer;
use crate::models::Models;
use crate::style::{
    draw_legend, draw_percent_mesh, legend_height, register_font, series_colours, unique,
    LLM_STAGES,
};
use crate::{standard_rows, ResultRow};
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Figure size and title.
#[derive(Debug, Clone)]
pub struct FigureOptions {
    pub title: String,
    pub width: u32,
    pub height: u32,
}

impl Default for FigureOptions {
    fn default() -> Self {
        FigureOptions {
            title: "Linear-probe accuracy before vs after projection".into(),
            width: 1000,
            height: 560,
        }
    }
}

/// Writes the figure to `png` and `svg`, from the standard probes' rows (few-shot rows are left
/// out); an error when there are none.
pub fn modality_gap_figure(
    rows: &[ResultRow],
    png: &Path,
    svg: &Path,
    opts: &FigureOptions,
) -> Result<()> {
    register_font();
    // Few-shot rows have their own figure ([`crate::few_shot_figure`]).
    let rows = &standard_rows(rows);
    if rows.is_empty() {
        return Err(anyhow!("no results to plot"));
    }
    // The language model's points have their own figure ([`image_vs_text_figure`]).
    let gap: Vec<ResultRow> = rows
        .iter()
        .filter(|r| !LLM_STAGES.contains(&r.stage.as_str()))
        .cloned()
        .collect();
    let rows = if gap.is_empty() { rows } else { &gap };
    let (rows, labels) = best_of_sweeps(rows);
    let size = (opts.width, opts.height);
    draw(
        BitMapBackend::new(png, size).into_drawing_area(),
        &rows,
        &labels,
        opts,
    )?;
    draw(
        SVGBackend::new(svg, size).into_drawing_area(),
        &rows,
        &labels,
        opts,
    )?;
    Ok(())
}

/// The image-vs-text figure: probe top-1 on the language model's hidden states with the image's
/// projector tokens in the prompt against the same prompt with the image's attribute text (the
/// Finer paper's image-only vs text-only comparison, as probes), bars as in the modality-gap
/// figure (a series per model, stage and feature point), `title` as its caption. Returns false
/// (and writes nothing) unless the standard probes' rows (few-shot rows are left out) have both
/// arms of some model.
pub fn image_vs_text_figure(
    rows: &[ResultRow],
    png: &Path,
    svg: &Path,
    title: &str,
) -> Result<bool> {
    let arms: Vec<ResultRow> = standard_rows(rows)
        .into_iter()
        .filter(|r| LLM_STAGES.contains(&r.stage.as_str()))
        .collect();
    let both_arms = |model: &str| {
        LLM_STAGES
            .iter()
            .all(|s| arms.iter().any(|r| r.model == model && r.stage == *s))
    };
    if !arms.iter().any(|r| both_arms(&r.model)) {
        return Ok(false);
    }
    let opts = FigureOptions {
        title: title.to_string(),
        ..Default::default()
    };
    register_font();
    // A layer sweep of an arm is drawn as its best layer (the layer figure has them all).
    let (arms, labels) = best_of_sweeps(&arms);
    let size = (opts.width, opts.height);
    draw(
        BitMapBackend::new(png, size).into_drawing_area(),
        &arms,
        &labels,
        &opts,
    )?;
    draw(
        SVGBackend::new(svg, size).into_drawing_area(),
        &arms,
        &labels,
        &opts,
    )?;
    Ok(true)
}

/// A legend suffix for one model's feature point (its best layer of a sweep): (model, feature
/// point, suffix).
type Suffix = (String, String, String);

/// A sweep's (model, layered prefix, tokens) and its layers.
type Family<'a> = ((&'a str, &'a str, &'a str), Vec<i64>);

/// The rows drawn as bars: of one model's feature points that differ only in their layer (the
/// vision tower's, or one arm of the language model's), when there are three or more layers,
/// only the layer with the highest mean top-1 over all that model's rows of it stays; also
/// returns a legend suffix for each such kept (model, feature point).
fn best_of_sweeps(rows: &[ResultRow]) -> (Vec<ResultRow>, Vec<Suffix>) {
    let mut families: Vec<Family> = Vec::new();
    for r in rows {
        let Some((prefix, k, tokens)) = swept_layer(&r.feature_point) else {
            continue;
        };
        let family = (r.model.as_str(), prefix, tokens);
        match families.iter_mut().find(|(f, _)| *f == family) {
            Some((_, layers)) if !layers.contains(&k) => layers.push(k),
            Some(_) => {}
            None => families.push((family, vec![k])),
        }
    }
    let mut dropped: Vec<(&str, String)> = Vec::new();
    let mut labels = Vec::new();
    for ((model, prefix, tokens), layers) in families.iter().filter(|(_, l)| l.len() >= 3) {
        let point = |k: i64| format!("{prefix}[{k}].{tokens}");
        let mean_top1 = |k: i64| {
            let fp = point(k);
            let v: Vec<f64> = rows
                .iter()
                .filter(|r| r.model == *model && r.feature_point == fp)
                .map(|r| r.top1)
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        let best = layers
            .iter()
            .copied()
            .max_by(|a, b| mean_top1(*a).total_cmp(&mean_top1(*b)))
            .unwrap_or(layers[0]);
        for k in layers.iter().filter(|k| **k != best) {
            dropped.push((model, point(*k)));
        }
        labels.push((
            model.to_string(),
            point(best),
            format!(" (best of {} layers)", layers.len()),
        ));
    }
    let kept = rows
        .iter()
        .filter(|r| {
            !dropped
                .iter()
                .any(|(m, fp)| *m == r.model && *fp == r.feature_point)
        })
        .cloned()
        .collect();
    (kept, labels)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    rows: &[ResultRow],
    labels: &[Suffix],
    opts: &FigureOptions,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the figure: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    // Series: per model, pre-projection feature points first, then post-projection, then the
    // LLM's; each series' legend label names its model when there are several.
    let series = series_colours(rows);
    let models = Models::of(rows);
    // The legend goes under the plot, where it cannot hide a bar: one or two columns.
    let legend_cols = series.len().clamp(1, 2);
    let legend_h = legend_height(series.len(), legend_cols);
    let (root, legend_area) = root.split_vertically(opts.height.saturating_sub(legend_h));
    let mut legend: Vec<(RGBColor, String)> = Vec::new();
    let groups: Vec<(String, String)> =
        unique(rows.iter().map(|r| (r.dataset.clone(), r.level.clone())));
    let multi_dataset = unique(rows.iter().map(|r| r.dataset.clone())).len() > 1;

    let mut chart = ChartBuilder::on(&root)
        .caption(&opts.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(if multi_dataset { 56 } else { 36 })
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(groups.len() as f64 - 0.5), 0f64..1.05)
        .map_err(err)?;
    draw_percent_mesh(&mut chart, "probe top-1 accuracy (%)", (15, 16)).map_err(err)?;

    let k = series.len() as f64;
    let width = 0.8 / k;
    for (si, (line, color)) in series.iter().enumerate() {
        let color = *color;
        let bars: Vec<(f64, &ResultRow)> = rows
            .iter()
            .filter(|r| line.matches(r))
            .filter_map(|r| {
                groups
                    .iter()
                    .position(|g| g.0 == r.dataset && g.1 == r.level)
                    .map(|g| (g as f64, r))
            })
            .collect();
        let x0 = |g: f64| g - 0.4 + si as f64 * width;
        chart
            .draw_series(bars.iter().map(|(g, r)| {
                Rectangle::new(
                    [(x0(*g), 0.0), (x0(*g) + width * 0.92, r.top1)],
                    color.filled(),
                )
            }))
            .map_err(err)?;
        let suffix = labels
            .iter()
            .find(|(m, p, _)| *m == line.model && *p == line.feature_point)
            .map_or("", |(_, _, suffix)| suffix.as_str());
        legend.push((color, line.label(&models, suffix)));
        chart
            .draw_series(bars.iter().map(|(g, r)| {
                let xm = x0(*g) + width * 0.46;
                ErrorBar::new_vertical(
                    xm,
                    r.top1_ci_low,
                    r.top1,
                    r.top1_ci_high,
                    BLACK.stroke_width(1),
                    6,
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(bars.iter().map(|(g, r)| {
                let xm = x0(*g) + width * 0.46;
                let y = r.top1_ci_high.max(r.top1) + 0.012;
                Text::new(
                    format!("{:.1}", r.top1 * 100.0),
                    (xm, y),
                    ("sans-serif", 12)
                        .into_font()
                        .color(&BLACK)
                        .pos(Pos::new(HPos::Center, VPos::Bottom)),
                )
            }))
            .map_err(err)?;
    }
    // Chance level per group.
    for (g, (ds, level)) in groups.iter().enumerate() {
        if let Some(r) = rows.iter().find(|r| &r.dataset == ds && &r.level == level) {
            let chance = 1.0 / r.n_classes.max(1) as f64;
            let g = g as f64;
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(g - 0.45, chance), (g + 0.45, chance)],
                    4,
                    3,
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(err)?;
        }
    }
    let labels: Vec<String> = legend.iter().map(|(_, label)| label.clone()).collect();
    draw_legend(&legend_area, &labels, legend_cols, 14, |i, x, y| {
        legend_area.draw(&Rectangle::new(
            [(x, y - 6), (x + 14, y + 6)],
            legend[i].0.filled(),
        ))
    })
    .map_err(err)?;
    // Group labels under the axis (drawn by hand so they sit exactly under each group).
    let center = Pos::new(HPos::Center, VPos::Top);
    for (g, (ds, level)) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64, 0.0));
        let style = ("sans-serif", 15).into_font().color(&BLACK).pos(center);
        root.draw(&Text::new(level.clone(), (px, py + 8), style.clone()))
            .map_err(err)?;
        if multi_dataset {
            root.draw(&Text::new(ds.clone(), (px, py + 28), style))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
#[path = "figure_tests.rs"]
mod tests;
