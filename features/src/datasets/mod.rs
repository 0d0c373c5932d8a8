//! Datasets: a uniform list of labelled images, whatever layout they came from.
//!
//! Every source (the demo generator, a CSV manifest, the official fine-grained distributions) is
//! turned into a [`Dataset`]: samples with a path, a split and up to three label levels
//! (superordinate / coarse / fine). Labels are stored as indices into per-level name tables.

mod aircraft;
mod cars;
mod cub;
mod cub_attributes;
mod dogs;
mod imagefolder;
mod inat;
pub mod inspect;
mod labelmap;
mod lines;
mod manifest;
pub mod mat;
mod spec;
pub mod splits;

pub use cars::body_type as cars_body_type;
pub use labelmap::{apply_label_map, read_label_map};
pub use manifest::{load_manifest, read_manifest, write_manifest};
pub use spec::DatasetSpec;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The three label levels of the Finer protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelLevel {
    Superordinate,
    Coarse,
    Fine,
}

impl LabelLevel {
    /// All levels, from broad to fine.
    pub const ALL: [LabelLevel; 3] = [
        LabelLevel::Superordinate,
        LabelLevel::Coarse,
        LabelLevel::Fine,
    ];

    /// Lower-case name, as used in manifests, the cache and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelLevel::Superordinate => "superordinate",
            LabelLevel::Coarse => "coarse",
            LabelLevel::Fine => "fine",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for LabelLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LabelLevel {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "superordinate" | "super" => Ok(LabelLevel::Superordinate),
            "coarse" => Ok(LabelLevel::Coarse),
            "fine" => Ok(LabelLevel::Fine),
            _ => bail!("unknown label level '{s}': expected superordinate, coarse or fine"),
        }
    }
}

/// Which part of a dataset a sample belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    /// Lower-case name, as used in manifests and as the HDF5 group name.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            other => bail!("unknown split '{other}': expected train, val or test"),
        }
    }
}

/// One labelled image. `labels[level]` indexes [`Dataset::class_names`] of that level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Stable identifier (the source's image id, or the relative path).
    pub id: String,
    /// Absolute or dataset-root-relative path of the image file.
    pub path: PathBuf,
    pub split: Split,
    /// Label index per level (superordinate, coarse, fine); `None` where the level is absent.
    pub labels: [Option<u32>; 3],
}

impl Sample {
    /// The label of this sample at `level`, if the dataset has that level.
    pub fn label(&self, level: LabelLevel) -> Option<u32> {
        self.labels[level.index()]
    }
}

/// A labelled image collection with name tables per level.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dataset {
    /// Short name used in cache keys and reports (e.g. `cub`, `demo`).
    pub name: String,
    /// Folder that relative sample paths are resolved against.
    pub root: PathBuf,
    pub samples: Vec<Sample>,
    /// Class names per level; empty for a level the dataset does not have.
    pub class_names: [Vec<String>; 3],
    /// Items left out by a loader run with `skip_bad=1` (missing files, malformed lines, ...).
    #[serde(default)]
    pub skipped: Vec<SkippedItem>,
    /// Rows to cut from the bottom of every image before preprocessing (FGVC-Aircraft's
    /// 20-pixel copyright banner); 0 for no crop. Extraction must apply it.
    #[serde(default)]
    pub crop_bottom_px: u32,
    /// Optional free-text attributes per sample id (the manifest's `attributes` column).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// An image or annotation line a loader skipped instead of failing (`skip_bad=1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedItem {
    /// Sample id where known, else the annotation file and line.
    pub id: String,
    /// Image path (or annotation file) concerned.
    pub path: PathBuf,
    /// Why it was skipped, naming the file and line.
    pub reason: String,
}

impl Dataset {
    /// Class names of `level` (empty when the level is absent).
    pub fn classes(&self, level: LabelLevel) -> &[String] {
        &self.class_names[level.index()]
    }

    /// Levels for which this dataset has labels.
    pub fn levels(&self) -> Vec<LabelLevel> {
        LabelLevel::ALL
            .into_iter()
            .filter(|l| !self.classes(*l).is_empty())
            .collect()
    }

    /// Samples of one split, in dataset order.
    pub fn split(&self, split: Split) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.split == split).collect()
    }

    /// Resolve a sample's path against the dataset root.
    pub fn image_path(&self, sample: &Sample) -> PathBuf {
        if sample.path.is_absolute() {
            sample.path.clone()
        } else {
            self.root.join(&sample.path)
        }
    }

    /// Interns `name` in the class table of `level`, returning its index.
    pub fn intern_class(&mut self, level: LabelLevel, name: &str) -> u32 {
        let table = &mut self.class_names[level.index()];
        match table.iter().position(|n| n == name) {
            Some(i) => i as u32,
            None => {
                table.push(name.to_string());
                (table.len() - 1) as u32
            }
        }
    }

    /// Hash of everything that defines the dataset's content for caching: ids, paths, splits,
    /// labels and class tables (not the pixels; image files are fingerprinted separately).
    pub fn manifest_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        for level in LabelLevel::ALL {
            h.update([0xff]);
            for n in self.classes(level) {
                h.update(n.as_bytes());
                h.update([0]);
            }
        }
        if self.crop_bottom_px > 0 {
            h.update(b"crop_bottom_px");
            h.update(self.crop_bottom_px.to_le_bytes());
        }
        for s in &self.samples {
            h.update(s.id.as_bytes());
            h.update([0]);
            h.update(s.path.to_string_lossy().as_bytes());
            h.update([0]);
            h.update(s.split.as_str().as_bytes());
            for l in s.labels {
                h.update(l.map(|v| v as i64).unwrap_or(-1).to_le_bytes());
            }
        }
        hex::encode(h.finalize())
    }

    /// Reads the header of every image in parallel (width × height, no full decode). An
    /// unreadable file is an error naming it, or with `skip_bad` it is removed from the samples
    /// and recorded in [`Dataset::skipped`]. Returns the dimensions of the kept samples.
    pub fn check_images(&mut self, skip_bad: bool) -> Result<Vec<(u32, u32)>> {
        use rayon::prelude::*;
        let results: Vec<std::result::Result<(u32, u32), String>> = self
            .samples
            .par_iter()
            .map(|s| {
                let p = self.image_path(s);
                image::image_dimensions(&p).map_err(|e| format!("{}: {e}", p.display()))
            })
            .collect();
        if !skip_bad {
            if let Some((s, Err(e))) = self.samples.iter().zip(&results).find(|(_, r)| r.is_err()) {
                bail!(
                    "dataset '{}': unreadable image {e} (sample '{}')",
                    self.name,
                    s.id
                );
            }
        }
        let mut dims = Vec::with_capacity(results.len());
        let mut kept = Vec::with_capacity(results.len());
        for (s, r) in std::mem::take(&mut self.samples).into_iter().zip(results) {
            match r {
                Ok(d) => {
                    dims.push(d);
                    kept.push(s);
                }
                Err(e) => self.skipped.push(SkippedItem {
                    id: s.id.clone(),
                    path: s.path.clone(),
                    reason: format!("unreadable image: {e}"),
                }),
            }
        }
        self.samples = kept;
        Ok(dims)
    }

    /// Checks internal consistency: unique ids, label indices within their tables.
    pub fn validate(&self) -> Result<()> {
        let mut seen = std::collections::HashSet::new();
        for (row, s) in self.samples.iter().enumerate() {
            if !seen.insert(&s.id) {
                bail!(
                    "dataset '{}': duplicate sample id '{}' (row {row})",
                    self.name,
                    s.id
                );
            }
            for level in LabelLevel::ALL {
                if let Some(l) = s.label(level) {
                    let n = self.classes(level).len();
                    if l as usize >= n {
                        bail!(
                            "dataset '{}': sample '{}' (row {row}) has {level} label {l} but only {n} classes",
                            self.name,
                            s.id
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
