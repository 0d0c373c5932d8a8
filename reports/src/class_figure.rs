//! The per-class figure: which classes the projection loses. A scatter panel per dataset × model ×
//! label level (a row per dataset and model in order of appearance, the model named in the
//! caption when there are several; columns superordinate, coarse, fine) whose (that model's)
//! best pre-projection and best post-projection probes (the pair the modality-gap table compares)
//! both have per-class accuracies: each class's test accuracy before the projection (x) against
//! after it (y), a dashed y = x diagonal, classes below it (accuracy lost in the projection) in
//! the pre-projection warm colour and the rest in the post-projection teal, with the counts in
//! the panel's corners. The legend sits under the panels. Written as PNG and SVG.

use crate::markdown::best_pairs;
use crate::models::Models;
use crate::style::{draw_legend, legend_height, level_rank, register_font, stage_colour, unique};
use crate::{standard_rows, ClassRow, ResultRow};
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// One panel's size in pixels, the title's height above the panels and the narrowest figure
/// (room for the legend's three entries on one line).
const PANEL: (u32, u32) = (440, 440);
const TITLE_HEIGHT: u32 = 50;
const MIN_WIDTH: u32 = 820;
const GREY: RGBColor = RGBColor(128, 128, 128);
/// Legend keys' width in pixels, and the markers' radius.
const KEY_WIDTH: i32 = 24;
const MARKER: i32 = 4;
/// Accuracies closer than this are the same (both are fractions of one class's test images).
pub(crate) const SAME: f64 = 1e-9;
/// The longest feature point an axis label gives whole; longer ones lose their middle.
const AXIS_POINT_CHARS: usize = 30;
/// The axes run a little past 0–100% so markers at the ends are drawn whole.
const AXIS: (f64, f64) = (-0.03, 1.03);

/// One (dataset, model, level)'s classes under its best pre- and post-projection probes.
#[derive(Debug)]
pub(crate) struct ClassPanel<'a> {
    pub pre: ResultRow,
    pub post: ResultRow,
    /// (before, after) per class: those with test images and an accuracy under both probes,
    /// matched by class index, in index order.
    pub classes: Vec<(&'a ClassRow, &'a ClassRow)>,
}

/// How a class fared in the projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    Lost,
    Gained,
    Unchanged,
}

/// After − before, as a fraction.
pub(crate) fn change((before, after): (&ClassRow, &ClassRow)) -> f64 {
    after.accuracy - before.accuracy
}

pub(crate) fn fate(pair: (&ClassRow, &ClassRow)) -> Fate {
    match change(pair) {
        d if d < -SAME => Fate::Lost,
        d if d > SAME => Fate::Gained,
        _ => Fate::Unchanged,
    }
}

impl ClassPanel<'_> {
    /// Classes that (lost, gained, kept) accuracy.
    pub fn counts(&self) -> (usize, usize, usize) {
        let n = |f: Fate| self.classes.iter().filter(|p| fate(**p) == f).count();
        (n(Fate::Lost), n(Fate::Gained), n(Fate::Unchanged))
    }

    /// The mean over classes of after − before, as a fraction.
    pub fn mean_change(&self) -> f64 {
        let sum: f64 = self.classes.iter().map(|p| change(*p)).sum();
        sum / self.classes.len().max(1) as f64
    }
}

/// The class rows of the probe `row` (same dataset, model, feature point, stage, level and cache
/// entry) with test images and a finite accuracy, by class index (the first of duplicates).
fn probe_classes<'a>(row: &ResultRow, classes: &'a [ClassRow]) -> Vec<&'a ClassRow> {
    let mut out: Vec<&ClassRow> = Vec::new();
    for c in classes {
        let ours = c.dataset == row.dataset
            && c.model == row.model
            && c.feature_point == row.feature_point
            && c.stage == row.stage
            && c.level == row.level
            && c.cache_key == row.cache_key;
        if ours
            && c.n_test > 0
            && c.accuracy.is_finite()
            && !out.iter().any(|o| o.class_index == c.class_index)
        {
            out.push(c);
        }
    }
    out.sort_by_key(|c| c.class_index);
    out
}

/// A panel for each (dataset, model, level) of the standard probes in `rows` whose best pre- and
/// best post-projection probes ([`best_pairs`]: never of two models) share at least one class
/// with test images in `classes`; by dataset, then model, in order of appearance, then by level
/// (superordinate, coarse, fine, others).
pub(crate) fn class_panels<'a>(rows: &[ResultRow], classes: &'a [ClassRow]) -> Vec<ClassPanel<'a>> {
    let rows = standard_rows(rows);
    let datasets = unique(rows.iter().map(|r| r.dataset.as_str()));
    let models = Models::of(&rows);
    let mut panels: Vec<ClassPanel> = best_pairs(&rows)
        .into_iter()
        .filter_map(|(pre, post)| {
            let after = probe_classes(post, classes);
            let pairs: Vec<(&ClassRow, &ClassRow)> = probe_classes(pre, classes)
                .into_iter()
                .filter_map(|b| {
                    let a = after.iter().find(|a| a.class_index == b.class_index)?;
                    Some((b, *a))
                })
                .collect();
            (!pairs.is_empty()).then(|| ClassPanel {
                pre: pre.clone(),
                post: post.clone(),
                classes: pairs,
            })
        })
        .collect();
    panels.sort_by_key(|p| {
        let ds = datasets.iter().position(|d| *d == p.pre.dataset);
        (ds, models.rank(&p.pre.model), level_rank(&p.pre.level))
    });
    panels
}

/// `fp` whole when it has at most `max` characters, else its start and end around an ellipsis.
pub(crate) fn shorten(fp: &str, max: usize) -> String {
    let chars: Vec<char> = fp.chars().collect();
    if chars.len() <= max {
        return fp.to_string();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let start: String = chars[..head].iter().collect();
    let end: String = chars[chars.len() - tail..].iter().collect();
    format!("{start}…{end}")
}

/// Writes the figure to `png` and `svg` when some (dataset, level) of `rows`' standard probes has
/// class rows in `classes` for both its best pre- and best post-projection probe, `title` as its
/// caption; returns whether it did (nothing is written otherwise).
pub fn class_figure(
    rows: &[ResultRow],
    classes: &[ClassRow],
    png: &Path,
    svg: &Path,
    title: &str,
) -> Result<bool> {
    let panels = class_panels(rows, classes);
    if panels.is_empty() {
        return Ok(false);
    }
    register_font();
    let models = Models::of(&standard_rows(rows));
    // A row of panels per dataset and model.
    let lines = panel_rows(&panels).len() as u32;
    let mut levels = unique(panels.iter().map(|p| p.pre.level.as_str()));
    levels.sort_by_key(|l| level_rank(l));
    let size = (
        MIN_WIDTH.max(PANEL.0 * levels.len() as u32),
        TITLE_HEIGHT + PANEL.1 * lines + legend_height(LEGEND.len(), LEGEND.len()),
    );
    draw(
        BitMapBackend::new(png, size).into_drawing_area(),
        &panels,
        &levels,
        &models,
        title,
    )?;
    draw(
        SVGBackend::new(svg, size).into_drawing_area(),
        &panels,
        &levels,
        &models,
        title,
    )?;
    Ok(true)
}

/// The legend's entries, on one line.
const LEGEND: [(Key, &str); 3] = [
    (Key::Lost, "lost in the projection"),
    (Key::Kept, "gained or unchanged"),
    (Key::Diagonal, "dashed: y = x"),
];

#[derive(Debug, Clone, Copy)]
enum Key {
    Lost,
    Kept,
    Diagonal,
}

fn lost_colour() -> RGBColor {
    stage_colour("pre-projection")
}

fn kept_colour() -> RGBColor {
    stage_colour("post-projection")
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[ClassPanel],
    levels: &[&str],
    models: &Models,
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the class figure: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let body = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    let legend_h = legend_height(LEGEND.len(), LEGEND.len());
    let (grid, legend_area) = body.split_vertically(body.dim_in_pixel().1.saturating_sub(legend_h));
    // Square panels, centred when the legend makes the figure wider than they are.
    let pad = grid
        .dim_in_pixel()
        .0
        .saturating_sub(PANEL.0 * levels.len() as u32)
        / 2;
    let grid = grid.margin(0, 0, pad, pad);
    let lines = panel_rows(panels);
    let cells = grid.split_evenly((lines.len(), levels.len()));
    for (i, cell) in cells.iter().enumerate() {
        let ((ds, model), level) = (lines[i / levels.len()], levels[i % levels.len()]);
        let Some(panel) = panels
            .iter()
            .find(|p| p.pre.dataset == ds && p.pre.model == model && p.pre.level == level)
        else {
            continue;
        };
        draw_panel(cell, panel, models).map_err(err)?;
    }
    let labels: Vec<String> = LEGEND.iter().map(|(_, l)| l.to_string()).collect();
    draw_legend(&legend_area, &labels, LEGEND.len(), KEY_WIDTH, |i, x, y| {
        draw_key(&legend_area, LEGEND[i].0, x, y)
    })
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// The (dataset, model) of each row of panels, in the panels' order.
fn panel_rows<'a>(panels: &'a [ClassPanel]) -> Vec<(&'a str, &'a str)> {
    unique(
        panels
            .iter()
            .map(|p| (p.pre.dataset.as_str(), p.pre.model.as_str())),
    )
}

/// One (dataset, model, level)'s scatter, captioned with the model's short name when there are
/// several `models`.
fn draw_panel<DB: DrawingBackend>(
    cell: &DrawingArea<DB, Shift>,
    panel: &ClassPanel,
    models: &Models,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (pre, post) = (&panel.pre, &panel.post);
    let mut chart = ChartBuilder::on(cell)
        .caption(
            format!(
                "{} · {}{}",
                pre.dataset,
                models.prefix(&pre.model),
                pre.level
            ),
            ("sans-serif", 17),
        )
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(AXIS.0..AXIS.1, AXIS.0..AXIS.1)?;
    let percent = |v: &f64| format!("{:.0}", v * 100.0);
    chart
        .configure_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&percent)
        .y_label_formatter(&percent)
        .x_desc(format!(
            "before projection: {} (%)",
            shorten(&pre.feature_point, AXIS_POINT_CHARS)
        ))
        .y_desc(format!(
            "after: {} (%)",
            shorten(&post.feature_point, AXIS_POINT_CHARS)
        ))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart.draw_series(DashedLineSeries::new(
        vec![(0.0, 0.0), (1.0, 1.0)],
        6,
        4,
        GREY.stroke_width(1),
    ))?;
    let point = |(b, a): &(&ClassRow, &ClassRow)| (b.accuracy, a.accuracy);
    for (lost, colour) in [(false, kept_colour()), (true, lost_colour())] {
        chart.draw_series(
            panel
                .classes
                .iter()
                .filter(|p| (fate(**p) == Fate::Lost) == lost)
                .map(|p| Circle::new(point(p), MARKER, colour.mix(0.6).filled())),
        )?;
    }
    // The counts in the corners away from the diagonal: gains top left, losses bottom right.
    let (lost, gained, same) = panel.counts();
    let corner = |text: String, at: (f64, f64), pos: Pos, colour: RGBColor| {
        let style = ("sans-serif", 14).into_font().color(&colour).pos(pos);
        Text::new(text, at, style)
    };
    chart.draw_series([
        corner(
            format!("{gained} gained, {same} unchanged"),
            (0.0, 1.0),
            Pos::new(HPos::Left, VPos::Top),
            kept_colour(),
        ),
        corner(
            format!("{lost} lost"),
            (1.0, 0.0),
            Pos::new(HPos::Right, VPos::Bottom),
            lost_colour(),
        ),
    ])?;
    Ok(())
}

/// A legend key, `KEY_WIDTH` wide from `x`, centred on `y`.
fn draw_key<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    key: Key,
    x: i32,
    y: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let dot = |c: RGBColor| area.draw(&Circle::new((x + KEY_WIDTH / 2, y), MARKER, c.filled()));
    match key {
        Key::Lost => dot(lost_colour()),
        Key::Kept => dot(kept_colour()),
        Key::Diagonal => [(x, x + 9), (x + 15, x + KEY_WIDTH)]
            .into_iter()
            .try_for_each(|(a, b)| {
                area.draw(&PathElement::new(
                    vec![(a, y), (b, y)],
                    GREY.stroke_width(1),
                ))
            }),
    }
}

#[cfg(test)]
#[path = "class_figure_tests.rs"]
mod tests;
