//! The zero-shot figure, the Finer paper's performance cliff: exact match (%) of the language
//! model's greedy answers against the label level (superordinate, coarse, fine; only the levels
//! the rows have). A line with markers per model, dataset and arm: a colour per dataset, the
//! image arm solid and the text arm dashed, a marker shape per model (legend labels led by its
//! short name when there are several); 95% bootstrap intervals as error bars, the lines side by
//! side at each level so the bars do not overlap. The legend sits under the plot. Written as PNG
//! and SVG.

use crate::models::Models;
use crate::style::{
    draw_legend, draw_percent_mesh, draw_whisker, draw_x_ticks, legend_height, level_rank,
    register_font, unique, LEVEL_COLOURS,
};
use crate::ZeroShotRow;
use anyhow::{anyhow, Result};
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;
use std::path::Path;

/// The figure's width, and the plot's height above the legend, in pixels.
const WIDTH: u32 = 1000;
const PLOT_HEIGHT: u32 = 500;
/// Legend keys' width in pixels.
const KEY_WIDTH: i32 = 30;

/// The rows' label levels: superordinate, coarse, fine, then others in order of appearance.
pub(crate) fn zero_shot_levels(rows: &[ZeroShotRow]) -> Vec<&str> {
    let mut levels = unique(rows.iter().map(|r| r.level.as_str()));
    levels.sort_by_key(|l| level_rank(l));
    levels
}

/// Where an arm goes: `image`, `text`, then any other.
fn arm_rank(arm: &str) -> usize {
    match arm {
        "image" => 0,
        "text" => 1,
        _ => 2,
    }
}

/// The rows' arms: `image`, `text`, then others in order of appearance.
pub(crate) fn zero_shot_arms(rows: &[ZeroShotRow]) -> Vec<&str> {
    let mut arms = unique(rows.iter().map(|r| r.arm.as_str()));
    arms.sort_by_key(|a| arm_rank(a));
    arms
}

/// The models of zero-shot rows.
pub(crate) fn zero_shot_models(rows: &[ZeroShotRow]) -> Models {
    Models::new(rows.iter().map(|r| r.model.as_str()))
}

/// A marker shape (one per model, in turn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
    Square,
}

/// One line: a model's answers on one dataset through one arm.
#[derive(Debug, Clone, PartialEq)]
struct Line<'a> {
    model: &'a str,
    dataset: &'a str,
    arm: &'a str,
    colour: RGBColor,
    marker: Marker,
}

impl Line<'_> {
    fn matches(&self, r: &ZeroShotRow) -> bool {
        r.model == self.model && r.dataset == self.dataset && r.arm == self.arm
    }

    /// Every arm but the image is dashed.
    fn dashed(&self) -> bool {
        self.arm != "image"
    }

    /// `dataset · arm`, after the model's short name when there are several `models`.
    fn label(&self, models: &Models) -> String {
        format!(
            "{}{} · {}",
            models.prefix(self.model),
            self.dataset,
            self.arm
        )
    }
}

/// The lines of `rows`: by model, then dataset (each in order of appearance), then arm (image,
/// text, others); a colour per dataset and a marker per model.
fn lines<'a>(rows: &'a [ZeroShotRow], models: &Models) -> Vec<Line<'a>> {
    let datasets = unique(rows.iter().map(|r| r.dataset.as_str()));
    let markers = [Marker::Circle, Marker::Triangle, Marker::Square];
    let mut lines: Vec<Line> = unique(
        rows.iter()
            .map(|r| (r.model.as_str(), r.dataset.as_str(), r.arm.as_str())),
    )
    .into_iter()
    .map(|(model, dataset, arm)| {
        let d = datasets.iter().position(|x| *x == dataset).unwrap_or(0);
        Line {
            model,
            dataset,
            arm,
            colour: LEVEL_COLOURS[d % LEVEL_COLOURS.len()],
            marker: markers[models.rank(model) % markers.len()],
        }
    })
    .collect();
    lines.sort_by_key(|l| {
        (
            models.rank(l.model),
            rank_in(&datasets, l.dataset),
            arm_rank(l.arm),
        )
    });
    lines
}

/// Where `item` comes in `items` (after all of them when absent).
fn rank_in(items: &[&str], item: &str) -> usize {
    items.iter().position(|x| *x == item).unwrap_or(items.len())
}

/// Writes the figure to `png` and `svg` when there are rows, `title` as its caption; returns
/// whether it did (nothing is written otherwise).
pub fn zero_shot_figure(rows: &[ZeroShotRow], png: &Path, svg: &Path, title: &str) -> Result<bool> {
    if rows.is_empty() {
        return Ok(false);
    }
    register_font();
    let models = zero_shot_models(rows);
    let lines = lines(rows, &models);
    let mut labels: Vec<String> = lines.iter().map(|l| l.label(&models)).collect();
    labels.push("bars: 95% bootstrap interval".into());
    let size = (WIDTH, PLOT_HEIGHT + legend_height(labels.len(), 2));
    let fig = Figure {
        rows,
        lines,
        labels,
        levels: zero_shot_levels(rows),
        title,
    };
    draw(BitMapBackend::new(png, size).into_drawing_area(), &fig)?;
    draw(SVGBackend::new(svg, size).into_drawing_area(), &fig)?;
    Ok(true)
}

/// What the figure draws.
struct Figure<'a> {
    rows: &'a [ZeroShotRow],
    lines: Vec<Line<'a>>,
    /// The legend: a label per line, then the error bars'.
    labels: Vec<String>,
    levels: Vec<&'a str>,
    title: &'a str,
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, f: &Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err =
        |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the zero-shot figure: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let (plot, legend_area) = root.split_vertically(PLOT_HEIGHT);
    let n = f.levels.len() as f64;
    let mut chart = ChartBuilder::on(&plot)
        .caption(f.title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(56)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(n - 0.5), 0f64..1.05)
        .map_err(err)?;
    draw_percent_mesh(&mut chart, "exact match (%)", (15, 16)).map_err(err)?;
    // The lines side by side at each level, so their error bars do not overlap.
    let step = (0.3 / f.lines.len() as f64).min(0.04);
    let dodge = |li: usize| (li as f64 - (f.lines.len() as f64 - 1.0) / 2.0) * step;
    for (li, line) in f.lines.iter().enumerate() {
        let points: Vec<(f64, &ZeroShotRow)> = f
            .levels
            .iter()
            .enumerate()
            .filter_map(|(x, level)| {
                let r = f
                    .rows
                    .iter()
                    .find(|r| line.matches(r) && r.level == *level)?;
                r.exact_match
                    .is_finite()
                    .then_some((x as f64 + dodge(li), r))
            })
            .collect();
        let c = line.colour;
        let xy: Vec<(f64, f64)> = points.iter().map(|(x, r)| (*x, r.exact_match)).collect();
        if line.dashed() {
            chart
                .draw_series(DashedLineSeries::new(xy.clone(), 8, 5, c.stroke_width(2)))
                .map_err(err)?;
        } else {
            chart
                .draw_series(LineSeries::new(xy.clone(), c.stroke_width(2)))
                .map_err(err)?;
        }
        chart
            .draw_series(points.iter().filter_map(|(x, r)| {
                let (lo, hi) = (r.em_ci_low, r.em_ci_high);
                (lo.is_finite() && hi.is_finite()).then(|| {
                    ErrorBar::new_vertical(*x, lo, r.exact_match, hi, c.stroke_width(1), 6)
                })
            }))
            .map_err(err)?;
        let area = chart.plotting_area();
        for p in xy {
            draw_marker(area, line.marker, p, c).map_err(err)?;
        }
    }
    let ticks: Vec<(f64, String)> = f
        .levels
        .iter()
        .enumerate()
        .map(|(x, l)| (x as f64, l.to_string()))
        .collect();
    draw_x_ticks(&root, &chart, &ticks, (n - 1.0) / 2.0, "label level").map_err(err)?;
    draw_legend(&legend_area, &f.labels, 2, KEY_WIDTH, |i, x, y| {
        match f.lines.get(i) {
            Some(line) => draw_key(&legend_area, line, x, y),
            None => draw_whisker(&legend_area, x + KEY_WIDTH / 2, y),
        }
    })
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// A filled `marker` at `at` (in `area`'s coordinates).
fn draw_marker<DB: DrawingBackend, CT: CoordTranslate>(
    area: &DrawingArea<DB, CT>,
    marker: Marker,
    at: CT::From,
    c: RGBColor,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>
where
    CT::From: Clone,
{
    let style = c.filled();
    match marker {
        Marker::Circle => area.draw(&(EmptyElement::at(at) + Circle::new((0, 0), 4, style))),
        Marker::Triangle => {
            area.draw(&(EmptyElement::at(at) + TriangleMarker::new((0, 0), 5, style)))
        }
        Marker::Square => {
            area.draw(&(EmptyElement::at(at) + Rectangle::new([(-4, -4), (4, 4)], style)))
        }
    }
}

/// A line's legend key: its colour, solid or dashed, with its marker in the middle; `KEY_WIDTH`
/// wide from `x`, centred on `y`.
fn draw_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    line: &Line,
    x: i32,
    y: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = line.colour.stroke_width(2);
    let (dash, gap) = if line.dashed() {
        (8, 5)
    } else {
        (KEY_WIDTH, 0)
    };
    (x..x + KEY_WIDTH)
        .step_by((dash + gap) as usize)
        .try_for_each(|a| {
            let b = (a + dash).min(x + KEY_WIDTH);
            area.draw(&PathElement::new(vec![(a, y), (b, y)], style))
        })?;
    draw_marker(area, line.marker, (x + KEY_WIDTH / 2, y), line.colour)
}

#[cfg(test)]
#[path = "zero_shot_figure_tests.rs"]
mod tests;
