//! `gapprobe datasets inspect`: counts per split and level, class balance, image sizes.

use super::{Dataset, LabelLevel, Split};
use rand::seq::index::sample as sample_indices;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::fmt::Write;

fn min_med_max(mut v: Vec<usize>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort_unstable();
    format!("{} / {} / {}", v[0], v[v.len() / 2], v[v.len() - 1])
}

/// A human-readable summary of `ds`; image sizes are read from up to `sample` images chosen
/// with a fixed seed (headers only).
pub fn summary(ds: &Dataset, sample: usize) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "dataset '{}' at {}", ds.name, ds.root.display());
    let _ = writeln!(o, "{} images", ds.samples.len());
    if ds.crop_bottom_px > 0 {
        let _ = writeln!(
            o,
            "crop: bottom {} px removed at extraction",
            ds.crop_bottom_px
        );
    }
    let levels = ds.levels();
    let absent: Vec<&str> = LabelLevel::ALL
        .into_iter()
        .filter(|l| !levels.contains(l))
        .map(LabelLevel::as_str)
        .collect();
    // split × level table
    let _ = write!(o, "\n{:<8} {:>8}", "split", "images");
    for l in &levels {
        let _ = write!(o, " {:>22}", format!("{l} (imgs/classes)"));
    }
    let _ = writeln!(o);
    let splits: Vec<Option<Split>> = vec![
        Some(Split::Train),
        Some(Split::Val),
        Some(Split::Test),
        None,
    ];
    for sp in splits {
        let rows: Vec<_> = ds
            .samples
            .iter()
            .filter(|s| sp.is_none_or(|x| s.split == x))
            .collect();
        if rows.is_empty() && sp.is_some() {
            continue;
        }
        let name = sp.map(|s| s.as_str()).unwrap_or("total");
        let _ = write!(o, "{name:<8} {:>8}", rows.len());
        for &l in &levels {
            let labelled: Vec<u32> = rows.iter().filter_map(|s| s.label(l)).collect();
            let mut distinct = labelled.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let _ = write!(
                o,
                " {:>22}",
                format!("{}/{}", labelled.len(), distinct.len())
            );
        }
        let _ = writeln!(o);
    }
    if !absent.is_empty() {
        let _ = writeln!(o, "absent levels: {}", absent.join(", "));
    }
    // Attribute texts: what llm.text.* feature points read.
    let with_text = ds
        .samples
        .iter()
        .filter(|s| ds.attributes.contains_key(&s.id))
        .count();
    if with_text == 0 {
        let _ = writeln!(
            o,
            "attribute texts: none (llm.text.* feature points need one per image)"
        );
    } else {
        let _ = writeln!(
            o,
            "attribute texts: {with_text} of {} images{}",
            ds.samples.len(),
            if with_text < ds.samples.len() {
                " (llm.text.* feature points need one per image)"
            } else {
                ""
            }
        );
        if let Some(s) = ds
            .samples
            .iter()
            .find(|s| ds.attributes.contains_key(&s.id))
        {
            let _ = writeln!(o, "  e.g. {}: {:?}", s.id, ds.attributes[&s.id]);
        }
    }
    // class balance
    let _ = writeln!(o, "\nclass balance (images per class, min / median / max):");
    for &l in &levels {
        let n = ds.classes(l).len();
        let count = |split: Option<Split>| {
            let mut c = vec![0usize; n];
            for s in &ds.samples {
                if split.is_none_or(|x| s.split == x) {
                    if let Some(v) = s.label(l) {
                        c[v as usize] += 1;
                    }
                }
            }
            c
        };
        let _ = writeln!(
            o,
            "  {:<14} {n:>6} classes   all {:<18} train {}",
            l.as_str(),
            min_med_max(count(None)),
            min_med_max(count(Some(Split::Train)))
        );
    }
    // image sizes
    let k = sample.min(ds.samples.len());
    if k > 0 {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut idx = sample_indices(&mut rng, ds.samples.len(), k).into_vec();
        idx.sort_unstable();
        let dims: Vec<Result<(u32, u32), String>> = idx
            .par_iter()
            .map(|&i| {
                let p = ds.image_path(&ds.samples[i]);
                image::image_dimensions(&p).map_err(|e| format!("{}: {e}", p.display()))
            })
            .collect();
        let ok: Vec<(u32, u32)> = dims
            .iter()
            .filter_map(|d| d.as_ref().ok().copied())
            .collect();
        let _ = writeln!(
            o,
            "\nimage sizes ({} of {k} sampled images readable):",
            ok.len()
        );
        let _ = writeln!(
            o,
            "  width  {}",
            min_med_max(ok.iter().map(|d| d.0 as usize).collect())
        );
        let _ = writeln!(
            o,
            "  height {}",
            min_med_max(ok.iter().map(|d| d.1 as usize).collect())
        );
        for e in dims.iter().filter_map(|d| d.as_ref().err()).take(10) {
            let _ = writeln!(o, "  unreadable: {e}");
        }
    }
    if !ds.skipped.is_empty() {
        let _ = writeln!(o, "\n{} skipped items:", ds.skipped.len());
        for s in ds.skipped.iter().take(20) {
            let _ = writeln!(o, "  {}", s.reason);
        }
        if ds.skipped.len() > 20 {
            let _ = writeln!(o, "  ... and {} more", ds.skipped.len() - 20);
        }
    }
    o
}
