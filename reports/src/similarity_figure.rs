//! The representation-similarity figure: per dataset and model (pairs within one model; pairs
//! across models are in the report's table only), two matrices over its feature points,
//! linear CKA and mutual k-NN alignment (both symmetric, 1 on the diagonal), cells coloured on a
//! viridis scale from 0 to 1 (drawn beside each matrix) and labelled with their values where
//! cells are large enough (at least 24 px; a layer sweep's many points get 16 px cells and a
//! wider figure instead). Written as PNG and SVG.

use crate::models::Models;
use crate::style::{register_font, unique};
use crate::SimilarityRow;
use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// Viridis at 0, 0.25, 0.5, 0.75 and 1 (matplotlib's values), interpolated linearly between.
const VIRIDIS: [(f64, f64, f64); 5] = [
    (68.0, 1.0, 84.0),
    (59.0, 82.0, 139.0),
    (33.0, 145.0, 140.0),
    (94.0, 201.0, 98.0),
    (253.0, 231.0, 37.0),
];

fn viridis(v: f64) -> RGBColor {
    let t = v.clamp(0.0, 1.0) * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// One dataset's and model's matrix: its feature points and the value of each pair under one
/// measure.
struct Matrix {
    dataset: String,
    model: String,
    measure: String,
    points: Vec<String>,
    /// `values[i][j]`, `None` where the pair was not compared.
    values: Vec<Vec<Option<f64>>>,
}

/// Reads one measure off a row.
type Measure = fn(&SimilarityRow) -> f64;

/// The matrices of each (dataset, model), by dataset in order of appearance and then by model,
/// from the pairs within one model (pairs across two models are in the report's table only).
fn matrices(rows: &[SimilarityRow]) -> Vec<Matrix> {
    let within: Vec<&SimilarityRow> = rows.iter().filter(|r| r.model_a == r.model_b).collect();
    let mut groups = unique(
        within
            .iter()
            .map(|r| (r.dataset.as_str(), r.model_a.as_str())),
    );
    // A dataset's models one after another.
    models(rows).side_by_side(&mut groups, |(ds, model)| (*ds, *model));
    let mut out = Vec::new();
    for (ds, model) in groups {
        let pairs: Vec<&SimilarityRow> = within
            .iter()
            .copied()
            .filter(|r| r.dataset == ds && r.model_a == model)
            .collect();
        let mut points: Vec<String> = Vec::new();
        for r in &pairs {
            for p in [&r.feature_point_a, &r.feature_point_b] {
                if !points.contains(p) {
                    points.push(p.clone());
                }
            }
        }
        let k = pairs.first().map_or(0, |r| r.k);
        let measures: [(String, Measure); 2] = [
            ("linear CKA".into(), |r| r.linear_cka),
            (format!("mutual k-NN@{k}"), |r| r.mutual_knn),
        ];
        for (measure, value) in measures {
            let m = points.len();
            let mut values = vec![vec![None; m]; m];
            for (i, row) in values.iter_mut().enumerate() {
                row[i] = Some(1.0);
            }
            for r in &pairs {
                let i = points.iter().position(|p| *p == r.feature_point_a);
                let j = points.iter().position(|p| *p == r.feature_point_b);
                if let (Some(i), Some(j)) = (i, j) {
                    values[i][j] = Some(value(r));
                    values[j][i] = Some(value(r));
                }
            }
            out.push(Matrix {
                dataset: ds.to_string(),
                model: model.to_string(),
                measure,
                points: points.clone(),
                values,
            });
        }
    }
    out
}

/// The models of `rows` (both sides of each pair).
fn models(rows: &[SimilarityRow]) -> Models {
    Models::new(
        rows.iter()
            .flat_map(|r| [r.model_a.as_str(), r.model_b.as_str()]),
    )
}

/// Writes the figure to `png` and `svg`: a row per dataset and model (named in the titles when
/// the rows hold several), CKA left and mutual k-NN right; pairs across two models are left out
/// (when there are only such pairs the figure says so). An error when there are no rows.
pub fn similarity_figure(rows: &[SimilarityRow], png: &Path, svg: &Path) -> Result<()> {
    register_font();
    if rows.is_empty() {
        return Err(anyhow!("no similarity rows to plot"));
    }
    let models = models(rows);
    let panels = matrices(rows);
    if panels.is_empty() {
        // Only pairs across models: a line saying where they are, so a report still has its
        // figure.
        let size = (1040, 120);
        draw_note(BitMapBackend::new(png, size).into_drawing_area())?;
        draw_note(SVGBackend::new(svg, size).into_drawing_area())?;
        return Ok(());
    }
    // Cells of at least 16 px: a layer sweep's 25 points widen and heighten the figure.
    let n = panels.iter().map(|m| m.points.len()).max().unwrap_or(1) as u32;
    let size = (
        1040.max(2 * ((LABEL_WIDTH + SCALE_WIDTH) as u32 + 30 + 16 * n)),
        370.max(110 + 16 * n) * (panels.len() as u32 / 2),
    );
    draw(
        BitMapBackend::new(png, size).into_drawing_area(),
        &panels,
        &models,
    )?;
    draw(
        SVGBackend::new(svg, size).into_drawing_area(),
        &panels,
        &models,
    )?;
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    panels: &[Matrix],
    models: &Models,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the figure: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((panels.len() / 2, 2));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel, models).map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// The figure when every pair is across two models: a line of text.
fn draw_note<DB: DrawingBackend>(root: DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the figure: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let (w, h) = root.dim_in_pixel();
    root.draw(&Text::new(
        "Only pairs across two models were compared: see the report's table.",
        (w as i32 / 2, h as i32 / 2),
        ("sans-serif", 18)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))
    .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Room left of a matrix for its row labels, in pixels.
const LABEL_WIDTH: i32 = 215;
/// Room right of a matrix for its colour scale, in pixels.
const SCALE_WIDTH: i32 = 50;

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: &Matrix,
    models: &Models,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    let title = if models.several() {
        format!("{} · {} — {}", m.dataset, models.name(&m.model), m.measure)
    } else {
        format!("{} — {}", m.dataset, m.measure)
    };
    area.draw(&Text::new(
        title,
        (w / 2, 10),
        ("sans-serif", 18)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    let n = m.points.len() as i32;
    // Labels on the left ("1 vision.layer[-2].cls"), numbers under the columns.
    let cell = ((w - LABEL_WIDTH - SCALE_WIDTH - 20).min(h - 80) / n.max(1)).max(8);
    let (x0, y0) = (LABEL_WIDTH + 10, 40);
    let label = ("sans-serif", cell.min(13)).into_font().color(&BLACK);
    // Values in the cells only where they fit; similarity.csv has them all.
    let show_values = cell >= 24;
    for (i, p) in m.points.iter().enumerate() {
        let i = i as i32;
        let name: String = if p.chars().count() > 30 {
            let head: String = p.chars().take(29).collect();
            format!("{head}…")
        } else {
            p.clone()
        };
        area.draw(&Text::new(
            format!("{} {name}", i + 1),
            (x0 - 6, y0 + i * cell + cell / 2),
            label.clone().pos(Pos::new(HPos::Right, VPos::Center)),
        ))?;
        area.draw(&Text::new(
            format!("{}", i + 1),
            (x0 + i * cell + cell / 2, y0 + n * cell + 4),
            label.clone().pos(Pos::new(HPos::Center, VPos::Top)),
        ))?;
    }
    for (i, row) in m.values.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let (x, y) = (x0 + j as i32 * cell, y0 + i as i32 * cell);
            let color = v.map_or(RGBColor(230, 230, 230), viridis);
            area.draw(&Rectangle::new(
                [(x, y), (x + cell - 1, y + cell - 1)],
                color.filled(),
            ))?;
            if let Some(v) = v.filter(|_| show_values) {
                let ink = if v > 0.6 { BLACK } else { WHITE };
                area.draw(&Text::new(
                    format!("{v:.2}"),
                    (x + cell / 2, y + cell / 2),
                    ("sans-serif", (cell / 4).clamp(9, 16))
                        .into_font()
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center)),
                ))?;
            }
        }
    }
    // The colour scale, 0 at the bottom to 1 at the top, beside the matrix: 64 bands (one
    // rectangle per pixel row made the SVG mostly scale).
    const BANDS: i32 = 64;
    let (sx, height) = (x0 + n * cell + 12, n * cell);
    for band in 0..BANDS {
        let (top, bottom) = (
            y0 + height - (band + 1) * height / BANDS,
            y0 + height - band * height / BANDS,
        );
        area.draw(&Rectangle::new(
            [(sx, top), (sx + 12, bottom)],
            viridis(band as f64 / (BANDS - 1) as f64).filled(),
        ))?;
    }
    for (v, y) in [(1.0, y0), (0.5, y0 + height / 2), (0.0, y0 + height - 1)] {
        area.draw(&Text::new(
            format!("{v:.1}"),
            (sx + 16, y),
            label.clone().pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "similarity_figure_tests.rs"]
mod tests;
