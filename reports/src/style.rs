//! Plotting helpers the figures share: the embedded font, the stage palettes and how stages are
//! named and ordered, the label levels' order and palette, the 0–100% y axis, the legend under a
//! plot and hand-drawn x ticks.

use crate::models::Models;
use crate::ResultRow;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" (once).
pub(crate) fn register_font() {
    REGISTER.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            if plotters::style::register_font("sans-serif", style, FONT).is_err() {
                panic!("embedded DejaVu Sans failed to load");
            }
        }
    });
}

const WARM: [RGBColor; 3] = [
    RGBColor(224, 130, 20),
    RGBColor(253, 184, 99),
    RGBColor(179, 88, 6),
];
const TEAL: [RGBColor; 3] = [
    RGBColor(1, 102, 94),
    RGBColor(53, 151, 143),
    RGBColor(128, 205, 193),
];
/// The language model reading the image's projector tokens.
const PURPLE: [RGBColor; 3] = [
    RGBColor(84, 39, 136),
    RGBColor(128, 115, 172),
    RGBColor(178, 171, 210),
];
/// The language model reading the image's attribute text.
const GREEN: [RGBColor; 3] = [
    RGBColor(27, 120, 55),
    RGBColor(90, 174, 97),
    RGBColor(166, 219, 160),
];

/// Colours by label level (superordinate, coarse, fine, then others in order of appearance).
pub(crate) const LEVEL_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The language model's stages (`llm.image.*`, `llm.text.*` feature points).
pub(crate) const LLM_STAGES: [&str; 2] = ["llm-image", "llm-text"];

/// How a stage is named in legends.
pub(crate) fn stage_label(stage: &str) -> &str {
    match stage {
        "llm-image" => "LLM, image in prompt",
        "llm-text" => "LLM, attribute text in prompt",
        other => other,
    }
}

/// Where a stage's bars go, left to right: vision, projector, LLM on the image, LLM on text.
fn stage_order(stage: &str) -> usize {
    match stage {
        "pre-projection" => 0,
        "post-projection" => 1,
        "llm-image" => 2,
        _ => 3,
    }
}

/// A line or a set of bars: one feature point of one stage of one model.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub model: String,
    pub stage: String,
    pub feature_point: String,
}

impl Series {
    /// Whether `r` belongs to this series.
    pub fn matches(&self, r: &ResultRow) -> bool {
        r.model == self.model && r.stage == self.stage && r.feature_point == self.feature_point
    }

    /// The legend label: `stage: feature point` and `suffix`, after the model's short name when
    /// there are several `models`.
    pub fn label(&self, models: &Models, suffix: &str) -> String {
        format!(
            "{}{}: {}{suffix}",
            models.prefix(&self.model),
            stage_label(&self.stage),
            self.feature_point
        )
    }
}

/// The (model, stage, feature point) series of `rows`: by model in order of appearance, and for
/// each pre-projection feature points first, then post-projection, then the LLM's, each in order
/// of appearance.
pub(crate) fn series(rows: &[ResultRow]) -> Vec<Series> {
    let models = Models::of(rows);
    let mut series = unique(rows.iter().map(|r| Series {
        model: r.model.clone(),
        stage: r.stage.clone(),
        feature_point: r.feature_point.clone(),
    }));
    series.sort_by_key(|s| (models.rank(&s.model), stage_order(&s.stage)));
    series
}

/// The first colour of `stage`'s hue family (what its first series gets): warm before the
/// projection, teal after it, purple and green for the LLM's image and text arms.
pub(crate) fn stage_colour(stage: &str) -> RGBColor {
    [WARM, TEAL, PURPLE, GREEN][stage_order(stage)][0]
}

/// [`series`] with a colour each: a hue family per stage (warm before the projection, teal
/// after it, purple and green for the LLM's image and text arms), so the gap reads at a glance;
/// the series of a family (of every model) take its shades in turn.
pub(crate) fn series_colours(rows: &[ResultRow]) -> Vec<(Series, RGBColor)> {
    let mut used = [0usize; 4];
    series(rows)
        .into_iter()
        .map(|s| {
            let order = stage_order(&s.stage);
            let palette = [WARM, TEAL, PURPLE, GREEN][order];
            let color = palette[used[order] % palette.len()];
            used[order] += 1;
            (s, color)
        })
        .collect()
}

/// Label levels in the order panels and tables give them; others follow in order of appearance.
const LEVEL_ORDER: [&str; 3] = ["superordinate", "coarse", "fine"];

/// Where `level` goes among the label levels: superordinate, coarse, fine, then any other (sort
/// stably by this to keep the others in order of appearance).
pub(crate) fn level_rank(level: &str) -> usize {
    LEVEL_ORDER
        .iter()
        .position(|o| *o == level)
        .unwrap_or(LEVEL_ORDER.len())
}

/// Unique values in order of appearance.
pub(crate) fn unique<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The y axis of a top-1 chart, 0–100%, with no x labels (drawn by hand) and no light grid;
/// `sizes` are the tick labels' and the axis description's font sizes.
pub(crate) fn draw_percent_mesh<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    y_desc: &str,
    sizes: (u32, u32),
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(11)
        .y_label_formatter(&|v| format!("{:.0}", v * 100.0))
        .y_desc(y_desc)
        .label_style(("sans-serif", sizes.0))
        .axis_desc_style(("sans-serif", sizes.1))
        .light_line_style(WHITE.mix(0.0))
        .draw()
}

/// Height of a legend of `n` entries in `cols` columns under a plot.
pub(crate) fn legend_height(n: usize, cols: usize) -> u32 {
    14 + 22 * n.div_ceil(cols.max(1)) as u32
}

/// Draws a legend under a plot, `cols` entries to a line: `key(i, x, y)` draws entry `i`'s key,
/// `key_width` pixels wide from `x`, centred on `y`; its label follows.
pub(crate) fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    labels: &[String],
    cols: usize,
    key_width: i32,
    mut key: impl FnMut(usize, i32, i32) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let cols = cols.max(1);
    let (w, _) = area.dim_in_pixel();
    let col_w = (w as i32 - 2 * 78) / cols as i32;
    let left = Pos::new(HPos::Left, VPos::Center);
    for (i, label) in labels.iter().enumerate() {
        let x = 78 + (i % cols) as i32 * col_w;
        let y = 14 + (i / cols) as i32 * 22;
        key(i, x, y)?;
        let style = ("sans-serif", 14).into_font().color(&BLACK).pos(left);
        area.draw(&Text::new(label.clone(), (x + key_width + 6, y), style))?;
    }
    Ok(())
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

/// An error bar's legend key centred on (`x`, `y`): a vertical whisker with a cap at each end.
pub(crate) fn draw_whisker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x: i32,
    y: i32,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let style = BLACK.stroke_width(1);
    let (top, bottom) = (y - 7, y + 7);
    [
        (x, top, x, bottom),
        (x - 4, top, x + 4, top),
        (x - 4, bottom, x + 4, bottom),
    ]
    .into_iter()
    .try_for_each(|(x0, y0, x1, y1)| area.draw(&PathElement::new(vec![(x0, y0), (x1, y1)], style)))
}
