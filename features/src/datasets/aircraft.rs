//! FGVC-Aircraft 2013b: `data/images/<id>.jpg` and `data/images_{variant,family,manufacturer}_
//! {train,val,test}.txt` (`<id> <label with spaces>`). Fine = variant, coarse = manufacturer
//! (or family), superordinate = "Airplane". The 20-pixel copyright banner at the bottom of every
//! image is recorded as [`Dataset::crop_bottom_px`].

use super::lines::{key_rest, read_lines, BadPolicy};
use super::{Dataset, LabelLevel, Sample, Split};
use anyhow::{bail, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Height of the copyright banner.
pub const BANNER_PX: u32 = 20;

/// Loads FGVC-Aircraft from `root` (the `fgvc-aircraft-2013b` folder or its `data/`).
/// `coarse` is `manufacturer` or `family`; with `official_val` the official val split becomes
/// [`Split::Val`], otherwise it joins train (the usual trainval / test protocol).
pub(crate) fn load(
    root: &Path,
    name: &str,
    coarse: &str,
    official_val: bool,
    skip_bad: bool,
) -> Result<Dataset> {
    if coarse != "manufacturer" && coarse != "family" {
        bail!("aircraft: coarse must be manufacturer or family, got '{coarse}'");
    }
    let data = if root.join("data/images_variant_test.txt").exists() {
        root.join("data")
    } else {
        root.to_path_buf()
    };
    if !data.join("images_variant_test.txt").exists() {
        bail!(
            "{}: no images_variant_test.txt here or in data/ (FGVC-Aircraft 2013b)",
            root.display()
        );
    }
    let mut bad = BadPolicy::new(skip_bad);
    let mut ds = Dataset {
        name: name.to_string(),
        root: data.join("images"),
        crop_bottom_px: BANNER_PX,
        ..Default::default()
    };
    let mut seen = HashSet::new();
    for (part, split) in [
        ("train", Split::Train),
        (
            "val",
            if official_val {
                Split::Val
            } else {
                Split::Train
            },
        ),
        ("test", Split::Test),
    ] {
        let cfile = data.join(format!("images_{coarse}_{part}.txt"));
        let mut coarse_of: HashMap<String, String> = HashMap::new();
        for l in read_lines(&cfile)? {
            match key_rest(&l.text) {
                Some((id, c)) => {
                    coarse_of.insert(id.to_string(), c.to_string());
                }
                None => bad.bad(
                    &cfile,
                    l.no,
                    "",
                    &cfile,
                    &format!("malformed line {:?}: expected '<id> <{coarse}>'", l.text),
                )?,
            }
        }
        let vfile = data.join(format!("images_variant_{part}.txt"));
        for l in read_lines(&vfile)? {
            let Some((id, variant)) = key_rest(&l.text) else {
                bad.bad(
                    &vfile,
                    l.no,
                    "",
                    &vfile,
                    &format!("malformed line {:?}: expected '<id> <variant>'", l.text),
                )?;
                continue;
            };
            let rel = PathBuf::from(format!("{id}.jpg"));
            if !seen.insert(id.to_string()) {
                bad.bad(
                    &vfile,
                    l.no,
                    id,
                    &rel,
                    &format!("duplicate image id '{id}'"),
                )?;
                continue;
            }
            let Some(c) = coarse_of.get(id) else {
                bad.bad(
                    &vfile,
                    l.no,
                    id,
                    &rel,
                    &format!("image '{id}' has no line in {}", cfile.display()),
                )?;
                continue;
            };
            if !bad.image_exists(&ds.root.clone(), &rel, &vfile, l.no, id)? {
                continue;
            }
            let labels = [
                Some(ds.intern_class(LabelLevel::Superordinate, "Airplane")),
                Some(ds.intern_class(LabelLevel::Coarse, c)),
                Some(ds.intern_class(LabelLevel::Fine, variant)),
            ];
            ds.samples.push(Sample {
                id: id.to_string(),
                path: rel,
                split,
                labels,
            });
        }
    }
    bad.finish(&mut ds);
    Ok(ds)
}
