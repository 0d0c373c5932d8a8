//! The modality-gap figure: grouped bars of probe top-1 per dataset × label level, one bar per
//! feature point (pre-projection in warm colours, post-projection in teal), with 95% bootstrap
//! intervals and a dashed chance line per group. A layer sweep of three or more layers
//! (`vision.layer[K].cls` for several K) is drawn as its best layer, labelled so; the whole
//! sweep is in the layer figure ([`crate::layer_figure`]). Written as PNG and SVG.

use crate::layer_figure::swept_layer;
use crate::{standard_rows, ResultRow};
use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::FontStyle;
use std::path::Path;
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

/// The (stage, feature point) series of `rows`: pre-projection feature points first, then
/// post-projection, then the LLM's, each in order of appearance.
pub(crate) fn series(rows: &[ResultRow]) -> Vec<(String, String)> {
    let mut series = unique(
        rows.iter()
            .map(|r| (r.stage.clone(), r.feature_point.clone())),
    );
    series.sort_by_key(|(stage, _)| stage_order(stage));
    series
}

/// [`series`] with a colour each: a hue family per stage (warm before the projection, teal
/// after it, purple and green for the LLM's image and text arms), so the gap reads at a glance.
pub(crate) fn series_colours(rows: &[ResultRow]) -> Vec<(String, String, RGBColor)> {
    let mut used = [0usize; 4];
    series(rows)
        .into_iter()
        .map(|(stage, fp)| {
            let order = stage_order(&stage);
            let palette = [WARM, TEAL, PURPLE, GREEN][order];
            let color = palette[used[order] % palette.len()];
            used[order] += 1;
            (stage, fp, color)
        })
        .collect()
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
/// figure, `title` as its caption. Returns false (and writes nothing) unless the standard
/// probes' rows (few-shot rows are left out) have both arms.
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
    if LLM_STAGES
        .iter()
        .any(|s| !arms.iter().any(|r| r.stage == *s))
    {
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

/// The rows drawn as bars: of feature points that differ only in their layer (the vision
/// tower's, or one arm of the language model's), when there are three or more layers, only the
/// layer with the highest mean top-1 over all its rows stays; also returns a legend suffix for
/// each such kept feature point.
fn best_of_sweeps(rows: &[ResultRow]) -> (Vec<ResultRow>, Vec<(String, String)>) {
    let mut families: Vec<((&str, &str), Vec<i64>)> = Vec::new();
    for (prefix, k, tokens) in rows.iter().filter_map(|r| swept_layer(&r.feature_point)) {
        match families.iter_mut().find(|(f, _)| *f == (prefix, tokens)) {
            Some((_, layers)) if !layers.contains(&k) => layers.push(k),
            Some(_) => {}
            None => families.push(((prefix, tokens), vec![k])),
        }
    }
    let mut dropped: Vec<String> = Vec::new();
    let mut labels = Vec::new();
    for ((prefix, tokens), layers) in families.iter().filter(|(_, l)| l.len() >= 3) {
        let point = |k: i64| format!("{prefix}[{k}].{tokens}");
        let mean_top1 = |k: i64| {
            let fp = point(k);
            let v: Vec<f64> = rows
                .iter()
                .filter(|r| r.feature_point == fp)
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
            dropped.push(point(*k));
        }
        labels.push((point(best), format!(" (best of {} layers)", layers.len())));
    }
    let kept = rows
        .iter()
        .filter(|r| !dropped.contains(&r.feature_point))
        .cloned()
        .collect();
    (kept, labels)
}

fn unique<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    rows: &[ResultRow],
    labels: &[(String, String)],
    opts: &FigureOptions,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the figure: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    // Series: pre-projection feature points first, then post-projection, then the LLM's.
    let series = series_colours(rows);
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
    for (si, (stage, fp, color)) in series.iter().enumerate() {
        let color = *color;
        let bars: Vec<(f64, &ResultRow)> = rows
            .iter()
            .filter(|r| &r.stage == stage && &r.feature_point == fp)
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
        legend.push((
            color,
            format!(
                "{}: {fp}{}",
                stage_label(stage),
                labels
                    .iter()
                    .find(|(p, _)| p == fp)
                    .map_or("", |(_, suffix)| suffix.as_str())
            ),
        ));
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
mod tests {
    use super::*;
    use crate::test_rows::result_row;

    #[test]
    fn writes_png_and_svg_with_text() {
        let rows = vec![
            result_row("demo", "vision.layer[-2].patch.mean", "fine", 0.6),
            result_row("demo", "projector.mean", "fine", 0.4),
            result_row("demo", "vision.layer[-2].patch.mean", "coarse", 0.9),
            result_row("demo", "projector.mean", "coarse", 0.8),
        ];
        let dir = std::env::temp_dir().join(format!("gapprobe-fig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (png, svg) = (dir.join("f.png"), dir.join("f.svg"));
        modality_gap_figure(&rows, &png, &svg, &FigureOptions::default()).unwrap();
        let img = image_dims(&png);
        assert_eq!(img, (1000, 560));
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("projector.mean") && text.contains("fine") && text.contains("60.0"));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn llm_arms_get_their_own_figure_and_leave_the_gap_figure() {
        let mut rows = vec![
            result_row("demo", "vision.layer[-2].patch.mean", "fine", 0.6),
            result_row("demo", "projector.mean", "fine", 0.4),
            result_row("demo", "llm.image.layer[-1].last", "fine", 0.3),
        ];
        let dir = std::env::temp_dir().join(format!("gapprobe-fig-llm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (png, svg) = (dir.join("t.png"), dir.join("t.svg"));
        // One arm only: no figure, nothing written.
        assert!(!image_vs_text_figure(&rows, &png, &svg, "T").unwrap());
        assert!(!png.exists() && !svg.exists());
        rows.push(result_row("demo", "llm.text.layer[-1].last", "fine", 0.85));
        assert!(image_vs_text_figure(&rows, &png, &svg, "Caption T").unwrap());
        assert_eq!(image_dims(&png), (1000, 560));
        let text = std::fs::read_to_string(&svg).unwrap();
        for want in [
            "LLM, image in prompt: llm.image.layer[-1].last",
            "LLM, attribute text in prompt: llm.text.layer[-1].last",
            "85.0",
            "30.0",
            "Caption T",
        ] {
            assert!(text.contains(want), "{want} missing from the SVG");
        }
        assert!(!text.contains("projector.mean"), "only the LLM's arms");
        // The modality-gap figure keeps to the vision encoder and the projector.
        let (gpng, gsvg) = (dir.join("g.png"), dir.join("g.svg"));
        modality_gap_figure(&rows, &gpng, &gsvg, &FigureOptions::default()).unwrap();
        let text = std::fs::read_to_string(&gsvg).unwrap();
        assert!(
            text.contains("projector.mean") && !text.contains("llm."),
            "gap figure"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn an_arm_swept_over_layers_is_drawn_as_its_best_layer() {
        let mut rows = Vec::new();
        for (k, v) in [(0, 0.1), (8, 0.3), (16, 0.2)] {
            rows.push(result_row(
                "d",
                &format!("llm.image.layer[{k}].last"),
                "fine",
                v,
            ));
            rows.push(result_row(
                "d",
                &format!("llm.text.layer[{k}].last"),
                "fine",
                v + 0.5,
            ));
        }
        let (kept, labels) = best_of_sweeps(&rows);
        let points: Vec<&str> = kept.iter().map(|r| r.feature_point.as_str()).collect();
        assert_eq!(
            points,
            ["llm.image.layer[8].last", "llm.text.layer[8].last"]
        );
        assert_eq!(
            labels[1],
            (
                "llm.text.layer[8].last".to_string(),
                " (best of 3 layers)".to_string()
            )
        );
    }

    #[test]
    fn a_layer_sweep_is_drawn_as_its_best_layer() {
        let mut rows = vec![result_row("demo", "projector.mean", "fine", 0.4)];
        for (k, v) in [(1, 0.2), (2, 0.55), (3, 0.5)] {
            rows.push(result_row(
                "demo",
                &format!("vision.layer[{k}].cls"),
                "fine",
                v,
            ));
            rows.push(result_row(
                "demo",
                &format!("vision.layer[{k}].cls"),
                "coarse",
                v,
            ));
        }
        rows.push(result_row(
            "demo",
            "vision.layer[1].patch.mean",
            "fine",
            0.1,
        ));
        rows.push(result_row(
            "demo",
            "vision.layer[2].patch.mean",
            "fine",
            0.3,
        ));
        let (kept, labels) = best_of_sweeps(&rows);
        let points: Vec<&str> = kept.iter().map(|r| r.feature_point.as_str()).collect();
        assert_eq!(
            points,
            [
                "projector.mean",
                "vision.layer[2].cls",
                "vision.layer[2].cls",
                "vision.layer[1].patch.mean",
                "vision.layer[2].patch.mean"
            ]
        );
        assert_eq!(
            labels,
            [(
                "vision.layer[2].cls".to_string(),
                " (best of 3 layers)".to_string()
            )]
        );
        let dir = tempfile::tempdir().unwrap();
        let (png, svg) = (dir.path().join("f.png"), dir.path().join("f.svg"));
        modality_gap_figure(&rows, &png, &svg, &FigureOptions::default()).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.contains("pre-projection: vision.layer[2].cls (best of 3 layers)"),
            "legend"
        );
        assert!(
            !text.contains("vision.layer[3].cls"),
            "a dropped layer is drawn"
        );
    }

    fn image_dims(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let be = |o: usize| u32::from_be_bytes(bytes[o..o + 4].try_into().unwrap());
        (be(16), be(20))
    }
}
