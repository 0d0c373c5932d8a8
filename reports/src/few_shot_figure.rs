//! The few-shot figure: probe top-1 against training images per class (log2 axis, a tick at each
//! shot count probed), a panel per dataset × label level (a row per dataset in order of
//! appearance; columns superordinate, coarse, fine). A line per feature point (of each model,
//! legend labels led by its short name when there are several) in the modality-gap figure's
//! colours (warm before the projection, teal after it) at the mean over the draws, with ±1 std
//! error bars; the standard probe on all training images as a dotted line in the feature point's
//! colour; chance dashed grey. The legend sits under the panels. Written as PNG and SVG.

use crate::models::Models;
use crate::style::{
    draw_legend, draw_percent_mesh, draw_whisker, draw_x_ticks, legend_height, level_rank,
    register_font, series_colours, unique, Series,
};
use crate::ResultRow;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One panel's size in pixels, and the title's height above the panels.
const PANEL: (u32, u32) = (420, 330);
const TITLE_HEIGHT: u32 = 50;
const GREY: RGBColor = RGBColor(128, 128, 128);
/// Legend keys' width in pixels.
const KEY_WIDTH: i32 = 24;

/// The few-shot rows (`shots > 0`).
pub(crate) fn few_shot_rows(rows: &[ResultRow]) -> Vec<ResultRow> {
    rows.iter().filter(|r| r.is_few_shot()).cloned().collect()
}

/// The rows' label levels: superordinate, coarse, fine, then others in order of appearance.
pub(crate) fn ordered_levels(rows: &[ResultRow]) -> Vec<&str> {
    let mut levels = unique(rows.iter().map(|r| r.level.as_str()));
    levels.sort_by_key(|l| level_rank(l));
    levels
}

/// The rows' shot counts, ascending.
pub(crate) fn shot_counts(rows: &[ResultRow]) -> Vec<u64> {
    let mut shots: Vec<u64> = rows.iter().map(|r| r.shots).collect();
    shots.sort_unstable();
    shots.dedup();
    shots
}

/// How many draws the rows average: `5`, or `3–5` when they differ.
pub(crate) fn draws_text(rows: &[ResultRow]) -> String {
    let lo = rows.iter().map(|r| r.draws).min().unwrap_or(0);
    let hi = rows.iter().map(|r| r.draws).max().unwrap_or(0);
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}–{hi}")
    }
}

/// The standard probe (all training images) of `r`'s dataset, model, stage, feature point and
/// level.
pub(crate) fn full_data<'a>(rows: &'a [ResultRow], r: &ResultRow) -> Option<&'a ResultRow> {
    rows.iter().find(|s| {
        !s.is_few_shot()
            && s.dataset == r.dataset
            && s.model == r.model
            && s.stage == r.stage
            && s.feature_point == r.feature_point
            && s.level == r.level
    })
}

/// A legend entry's key.
#[derive(Debug, Clone, Copy)]
enum Key {
    Series(RGBColor),
    FullData,
    Spread,
    Chance,
}

/// What the figure draws.
struct Figure<'a> {
    /// All rows (the standard probes give the dotted lines).
    rows: &'a [ResultRow],
    few: &'a [ResultRow],
    series: Vec<(Series, RGBColor)>,
    legend: Vec<(Key, String)>,
    datasets: Vec<&'a str>,
    levels: Vec<&'a str>,
    title: &'a str,
}

/// Writes the figure to `png` and `svg` when `rows` has few-shot rows, `title` as its caption;
/// returns whether it did (nothing is written otherwise).
pub fn few_shot_figure(rows: &[ResultRow], png: &Path, svg: &Path, title: &str) -> Result<bool> {
    let few = few_shot_rows(rows);
    if few.is_empty() {
        return Ok(false);
    }
    register_font();
    let series = series_colours(&few);
    let models = Models::of(&few);
    let mut legend: Vec<(Key, String)> = series
        .iter()
        .map(|(line, c)| (Key::Series(*c), line.label(&models, "")))
        .collect();
    if few.iter().any(|r| full_data(rows, r).is_some()) {
        legend.push((Key::FullData, "dotted: all training images".into()));
    }
    legend.push((
        Key::Spread,
        format!("bars: ±1 std over {} draws", draws_text(&few)),
    ));
    legend.push((Key::Chance, "dashed: chance".into()));
    let fig = Figure {
        rows,
        few: &few,
        series,
        legend,
        datasets: unique(few.iter().map(|r| r.dataset.as_str())),
        levels: ordered_levels(&few),
        title,
    };
    let size = (
        1000.max(PANEL.0 * fig.levels.len() as u32),
        TITLE_HEIGHT + PANEL.1 * fig.datasets.len() as u32 + legend_height(fig.legend.len(), 2),
    );
    draw(BitMapBackend::new(png, size).into_drawing_area(), &fig)?;
    draw(SVGBackend::new(svg, size).into_drawing_area(), &fig)?;
    Ok(true)
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, f: &Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err =
        |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the few-shot figure: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let body = root.titled(f.title, ("sans-serif", 22)).map_err(err)?;
    let legend_h = legend_height(f.legend.len(), 2);
    let (grid, legend_area) = body.split_vertically(body.dim_in_pixel().1.saturating_sub(legend_h));
    // One x axis for every panel: log2 of the shot counts, a tick at each.
    let shots = shot_counts(f.few);
    let log2 = |k: u64| (k as f64).log2();
    let (lo, hi) = (log2(shots[0]), log2(shots[shots.len() - 1]));
    let pad = ((hi - lo) * 0.08).max(0.5);
    let (x0, x1) = (lo - pad, hi + pad);
    // A horizontal line across a panel: chance (dashed) or the standard probe (dotted).
    let across = |y: f64, dash: u32, style: ShapeStyle| {
        DashedLineSeries::new(vec![(x0, y), (x1, y)], dash, 4, style)
    };
    let ticks: Vec<(f64, String)> = shots.iter().map(|k| (log2(*k), k.to_string())).collect();
    // Feature points side by side at each shot count, so their error bars do not overlap.
    let dodge =
        |si: usize| (si as f64 - (f.series.len() as f64 - 1.0) / 2.0) * 0.02 * (hi - lo).max(2.0);
    let cells = grid.split_evenly((f.datasets.len(), f.levels.len()));
    for (i, cell) in cells.iter().enumerate() {
        let (ds, level) = (f.datasets[i / f.levels.len()], f.levels[i % f.levels.len()]);
        let here: Vec<&ResultRow> = f
            .few
            .iter()
            .filter(|r| r.dataset == ds && r.level == level)
            .collect();
        let Some(first) = here.first() else {
            continue;
        };
        let mut chart = ChartBuilder::on(cell)
            .caption(format!("{ds} · {level}"), ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, 0f64..1.05)
            .map_err(err)?;
        draw_percent_mesh(&mut chart, "top-1 (%)", (14, 15)).map_err(err)?;
        let chance = 1.0 / first.n_classes.max(1) as f64;
        chart
            .draw_series(across(chance, 6, GREY.stroke_width(1)))
            .map_err(err)?;
        for (si, (line, c)) in f.series.iter().enumerate() {
            let mut points: Vec<(f64, &ResultRow)> = here
                .iter()
                .filter(|r| line.matches(r))
                .map(|r| (log2(r.shots) + dodge(si), *r))
                .collect();
            let Some((_, any)) = points.first() else {
                continue;
            };
            if let Some(full) = full_data(f.rows, any) {
                chart
                    .draw_series(across(full.top1, 2, c.stroke_width(2)))
                    .map_err(err)?;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let line = points.iter().map(|(x, r)| (*x, r.top1));
            chart
                .draw_series(LineSeries::new(line, c.stroke_width(2)))
                .map_err(err)?;
            chart
                .draw_series(points.iter().map(|(x, r)| {
                    let (y, sd) = (r.top1, r.top1_std);
                    ErrorBar::new_vertical(*x, y - sd, y, y + sd, c.stroke_width(1), 6)
                }))
                .map_err(err)?;
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|(x, r)| Circle::new((*x, r.top1), 3, c.filled())),
                )
                .map_err(err)?;
        }
        draw_x_ticks(
            &root,
            &chart,
            &ticks,
            (lo + hi) / 2.0,
            "training images per class",
        )
        .map_err(err)?;
    }
    let labels: Vec<String> = f.legend.iter().map(|(_, l)| l.clone()).collect();
    draw_legend(&legend_area, &labels, 2, KEY_WIDTH, |i, x, y| {
        draw_key(&legend_area, f.legend[i].0, x, y)
    })
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A legend key, `KEY_WIDTH` wide from `x`, centred on `y`.
fn draw_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    key: Key,
    x: i32,
    y: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let dashes = |dash: i32, gap: i32, style: ShapeStyle| {
        (x..x + KEY_WIDTH)
            .step_by((dash + gap) as usize)
            .try_for_each(|a| {
                let b = (a + dash).min(x + KEY_WIDTH);
                area.draw(&PathElement::new(vec![(a, y), (b, y)], style))
            })
    };
    match key {
        Key::Series(c) => {
            area.draw(&PathElement::new(
                vec![(x, y), (x + KEY_WIDTH, y)],
                c.stroke_width(2),
            ))?;
            area.draw(&Circle::new((x + KEY_WIDTH / 2, y), 3, c.filled()))
        }
        Key::FullData => dashes(2, 4, BLACK.mix(0.7).stroke_width(2)),
        Key::Spread => draw_whisker(area, x + KEY_WIDTH / 2, y),
        Key::Chance => dashes(6, 4, GREY.stroke_width(1)),
    }
}

#[cfg(test)]
#[path = "few_shot_figure_tests.rs"]
mod tests;
