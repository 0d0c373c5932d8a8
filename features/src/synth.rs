//! The demo's procedurally generated fine-grained image set.
//!
//! Two superordinate classes (`curved`, `angular`) split into six coarse classes by shape; each
//! coarse class splits into four fine classes that differ only in small details: the colour of a
//! thin stripe (warm or cool) and the position of a small dark spot (left or right). Every image
//! gets random pose, scale, position, body colour and background clutter. A seeded ChaCha stream
//! and integer pixel output make the set identical on every machine.
//!
//! Every image also gets an attribute text (see [`attribute_text`]), what an observer would note
//! about it, in [`Dataset::attributes`] and the manifest's `attributes` column: the input of the
//! `llm.text.*` feature points.

use crate::datasets::{write_manifest, Dataset, LabelLevel, Sample, Split};
use anyhow::{Context, Result};
use image::{codecs::jpeg::JpegEncoder, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// File name of the manifest written next to the images.
pub const MANIFEST_NAME: &str = "manifest.csv";

/// Size and seed of the generated set.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub train_per_class: usize,
    pub test_per_class: usize,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    /// Probability that an image's attribute text leaves out one of its three attributes (each
    /// equally likely), so that, as with a real annotator, the text does not always pin down
    /// the fine class.
    pub attribute_dropout: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            train_per_class: 40,
            test_per_class: 20,
            width: 80,
            height: 72,
            seed: 0,
            attribute_dropout: 0.2,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Circle,
    Ellipse,
    Ring,
    Square,
    Triangle,
    Diamond,
}

const SHAPES: [(Shape, &str, &str); 6] = [
    (Shape::Circle, "circle", "curved"),
    (Shape::Ellipse, "ellipse", "curved"),
    (Shape::Ring, "ring", "curved"),
    (Shape::Square, "square", "angular"),
    (Shape::Triangle, "triangle", "angular"),
    (Shape::Diamond, "diamond", "angular"),
];
const STRIPES: [(&str, [f32; 3]); 2] = [
    ("warm-stripe", [225.0, 70.0, 40.0]),
    ("cool-stripe", [40.0, 110.0, 225.0]),
];
const SPOTS: [(&str, f32); 2] = [("spot-left", -0.45), ("spot-right", 0.45)];
/// What an observer calls the stripes' colours and the spots' positions.
const STRIPE_COLOURS: [&str; 2] = ["red", "blue"];
const SPOT_SIDES: [&str; 2] = ["left", "right"];

impl Shape {
    /// Whether local coordinates (unit object, centred at 0) fall inside the shape.
    fn contains(self, x: f32, y: f32) -> bool {
        match self {
            Shape::Circle => x * x + y * y <= 1.0,
            Shape::Ellipse => x * x + (y * y) / 0.36 <= 1.0,
            Shape::Ring => {
                let r2 = x * x + y * y;
                (0.3..=1.0).contains(&r2)
            }
            Shape::Square => x.abs() <= 0.85 && y.abs() <= 0.85,
            Shape::Triangle => y <= 0.8 && y >= -1.0 + 2.0 * x.abs() - 0.2,
            Shape::Diamond => x.abs() + y.abs() <= 1.0,
        }
    }
}

/// The fine class name of (shape, stripe, spot).
fn fine_name(shape: usize, stripe: usize, spot: usize) -> String {
    format!(
        "{}-{}-{}",
        SHAPES[shape].1, STRIPES[stripe].0, SPOTS[spot].0
    )
}

/// The attribute text of an image of (shape, stripe, spot), written as CUB's are
/// (`group: value` pairs joined by `"; "`): `"shape: ring; stripe color: blue; spot: left"`.
/// `omit` leaves one attribute out (0 shape, 1 stripe colour, 2 spot), as when an annotator did
/// not note it.
pub fn attribute_text(shape: usize, stripe: usize, spot: usize, omit: Option<usize>) -> String {
    [
        format!("shape: {}", SHAPES[shape].1),
        format!("stripe color: {}", STRIPE_COLOURS[stripe]),
        format!("spot: {}", SPOT_SIDES[spot]),
    ]
    .into_iter()
    .enumerate()
    .filter(|(i, _)| Some(*i) != omit)
    .map(|(_, t)| t)
    .collect::<Vec<_>>()
    .join("; ")
}

/// Every complete attribute text the generator writes, one per fine class (texts with an
/// attribute left out use the same words): the words a tokenizer for the demo must know.
pub fn attribute_texts() -> Vec<String> {
    let mut out = Vec::new();
    for shape in 0..SHAPES.len() {
        for stripe in 0..STRIPES.len() {
            for spot in 0..SPOTS.len() {
                out.push(attribute_text(shape, stripe, spot, None));
            }
        }
    }
    out
}

/// Renders one image of the given fine class with a per-image RNG.
fn render(
    cfg: &SynthConfig,
    shape: usize,
    stripe: usize,
    spot: usize,
    rng: &mut ChaCha8Rng,
) -> RgbImage {
    let (w, h) = (cfg.width, cfg.height);
    // Background: a random smooth gradient plus clutter (short bars and blobs).
    let bg0 = [
        rng.gen_range(60.0..200.0f32),
        rng.gen_range(60.0..200.0),
        rng.gen_range(60.0..200.0),
    ];
    let bg1 = [
        rng.gen_range(60.0..200.0f32),
        rng.gen_range(60.0..200.0),
        rng.gen_range(60.0..200.0),
    ];
    let mut px = vec![[0f32; 3]; (w * h) as usize];
    for y in 0..h {
        for x in 0..w {
            let t = (x + y) as f32 / (w + h) as f32;
            px[(y * w + x) as usize] = [0, 1, 2].map(|c| bg0[c] * (1.0 - t) + bg1[c] * t);
        }
    }
    for _ in 0..rng.gen_range(3..7) {
        let (cx, cy) = (rng.gen_range(0.0..w as f32), rng.gen_range(0.0..h as f32));
        let (rw, rh) = (rng.gen_range(2.0..10.0f32), rng.gen_range(1.0..4.0f32));
        let col = bg0.map(|v| (v + rng.gen_range(-50.0..50.0f32)).clamp(0.0, 255.0));
        let ang = rng.gen_range(0.0..std::f32::consts::PI);
        let (s, c) = ang.sin_cos();
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
                if (u / rw).powi(2) + (v / rh).powi(2) <= 1.0 {
                    px[(y * w + x) as usize] = col;
                }
            }
        }
    }
    // Object: pose (rotation up to ±25°), scale, position and body colour jitter.
    let radius = rng.gen_range(0.28..0.40) * h.min(w) as f32;
    let (ox, oy) = (
        w as f32 / 2.0 + rng.gen_range(-0.08..0.08) * w as f32,
        h as f32 / 2.0 + rng.gen_range(-0.08..0.08) * h as f32,
    );
    let ang = rng.gen_range(-0.44..0.44f32);
    let (s, c) = ang.sin_cos();
    let body = [
        rng.gen_range(190.0..240.0f32),
        rng.gen_range(190.0..240.0),
        rng.gen_range(170.0..220.0),
    ];
    let stripe_col = STRIPES[stripe]
        .1
        .map(|v| (v + rng.gen_range(-25.0..25.0f32)).clamp(0.0, 255.0));
    let stripe_y = rng.gen_range(-0.15..0.15f32);
    let spot_x = SPOTS[spot].1 + rng.gen_range(-0.08..0.08f32);
    let spot_y = rng.gen_range(0.25..0.45f32);
    let spot_r = rng.gen_range(0.16..0.21f32);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = ((x as f32 - ox) / radius, (y as f32 - oy) / radius);
            let (u, v) = (c * dx + s * dy, -s * dx + c * dy);
            if !SHAPES[shape].0.contains(u, v) {
                continue;
            }
            let p = &mut px[(y * w + x) as usize];
            *p = body;
            if (v - stripe_y).abs() <= 0.14 {
                *p = stripe_col;
            }
            if (u - spot_x).powi(2) + (v - spot_y).powi(2) <= spot_r * spot_r {
                *p = [30.0, 30.0, 30.0];
            }
        }
    }
    // Sensor noise.
    let mut img = RgbImage::new(w, h);
    for (i, p) in px.iter().enumerate() {
        let n = rng.gen_range(-8.0..8.0f32);
        let rgb = p.map(|v| (v + n).round().clamp(0.0, 255.0) as u8);
        img.put_pixel(i as u32 % w, i as u32 / w, Rgb(rgb));
    }
    img
}

/// Writes the generated set as JPEG files under `dir/images/<fine>/` plus `dir/manifest.csv`,
/// and returns it as a [`Dataset`] named `demo`, with every image's [`attribute_text`] in
/// [`Dataset::attributes`]: complete, except that with probability `cfg.attribute_dropout` one
/// of its three attributes (drawn uniformly) is left out. Which texts lose what is seeded
/// (`cfg.seed`, a ChaCha stream no image uses) and independent of the images' own streams.
pub fn generate(dir: &Path, cfg: &SynthConfig) -> Result<Dataset> {
    let mut ds = Dataset {
        name: "demo".into(),
        root: dir.to_path_buf(),
        ..Default::default()
    };
    let mut text_rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    text_rng.set_stream(u64::MAX);
    let mut jobs = Vec::new();
    for (shape, (_, coarse, sup)) in SHAPES.iter().enumerate() {
        for stripe in 0..STRIPES.len() {
            for spot in 0..SPOTS.len() {
                let fine = fine_name(shape, stripe, spot);
                let labels = [
                    Some(ds.intern_class(LabelLevel::Superordinate, sup)),
                    Some(ds.intern_class(LabelLevel::Coarse, coarse)),
                    Some(ds.intern_class(LabelLevel::Fine, &fine)),
                ];
                std::fs::create_dir_all(dir.join("images").join(&fine))
                    .with_context(|| format!("creating {}", dir.display()))?;
                for (split, n) in [
                    (Split::Train, cfg.train_per_class),
                    (Split::Test, cfg.test_per_class),
                ] {
                    for i in 0..n {
                        let rel = PathBuf::from("images")
                            .join(&fine)
                            .join(format!("{split}_{i:03}.jpg"));
                        let id = format!("{fine}/{split}_{i:03}");
                        // Both draws always, so the dropout rate changes which texts lose an
                        // attribute, never the stream.
                        let u: f64 = text_rng.gen();
                        let which = text_rng.gen_range(0..3);
                        let omit = (u < cfg.attribute_dropout).then_some(which);
                        ds.attributes
                            .insert(id.clone(), attribute_text(shape, stripe, spot, omit));
                        jobs.push((shape, stripe, spot, rel.clone()));
                        ds.samples.push(Sample {
                            id,
                            path: rel,
                            split,
                            labels,
                        });
                    }
                }
            }
        }
    }
    jobs.par_iter()
        .enumerate()
        .try_for_each(|(k, (shape, stripe, spot, rel))| -> Result<()> {
            // One stream per image: the output does not depend on thread scheduling.
            let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
            rng.set_stream(k as u64);
            let img = render(cfg, *shape, *stripe, *spot, &mut rng);
            let path = dir.join(rel);
            let file = std::fs::File::create(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            let mut enc = JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 92);
            enc.encode_image(&img)
                .with_context(|| format!("encoding {}", path.display()))?;
            Ok(())
        })?;
    write_manifest(&ds, &dir.join(MANIFEST_NAME))?;
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_labelled() {
        let cfg = SynthConfig {
            train_per_class: 2,
            test_per_class: 1,
            ..Default::default()
        };
        let a = tempfile_dir("a");
        let b = tempfile_dir("b");
        let da = generate(&a, &cfg).unwrap();
        generate(&b, &cfg).unwrap();
        assert_eq!(da.samples.len(), 24 * 3);
        assert_eq!(da.classes(LabelLevel::Superordinate).len(), 2);
        assert_eq!(da.classes(LabelLevel::Coarse).len(), 6);
        assert_eq!(da.classes(LabelLevel::Fine).len(), 24);
        for s in &da.samples {
            let x = std::fs::read(a.join(&s.path)).unwrap();
            let y = std::fs::read(b.join(&s.path)).unwrap();
            assert_eq!(x, y, "{} differs between runs", s.id);
        }
        let back = crate::datasets::read_manifest(&a.join(MANIFEST_NAME), "demo").unwrap();
        assert_eq!(back.samples, da.samples);
        assert_eq!(back.class_names, da.class_names);
        assert_eq!(back.attributes, da.attributes);
        assert_eq!(da.attributes.len(), da.samples.len());
        let ring = &da.attributes["ring-cool-stripe-spot-left/train_000"];
        assert!(
            [
                "shape: ring; stripe color: blue; spot: left",
                "stripe color: blue; spot: left",
                "shape: ring; spot: left",
                "shape: ring; stripe color: blue",
            ]
            .contains(&ring.as_str()),
            "{ring}"
        );
        std::fs::remove_dir_all(&a).ok();
        // No dropout: every text complete; full dropout: every text short of one attribute.
        for (p, parts) in [(0.0, 3), (1.0, 2)] {
            let d = generate(
                &a,
                &SynthConfig {
                    attribute_dropout: p,
                    ..cfg.clone()
                },
            )
            .unwrap();
            assert!(d
                .attributes
                .values()
                .all(|t| t.split("; ").count() == parts));
            std::fs::remove_dir_all(&a).ok();
        }
        std::fs::remove_dir_all(a).ok();
        std::fs::remove_dir_all(b).ok();
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gapprobe-synth-{tag}-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        d
    }
}
