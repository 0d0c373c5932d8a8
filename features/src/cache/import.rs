//! `gapprobe cache import`: features computed elsewhere (`.npy` per split with a labels file, or
//! one `.h5` with `<split>/features` and `<split>/labels`) become a normal entry whose provenance
//! says `model_id = imported:<files>`, so probes and reports work on any encoder's features.

use super::entry::{read_features_ds, SPLITS};
use super::format::read_strings;
use super::npy::{read_npy, NpyArray};
use super::{CacheEntry, EntryData, FeatureCache, Provenance, SplitData};
use crate::datasets::{LabelLevel, Split};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// One split given as `.npy` features plus a labels file (`.npy` integers, or text with one
/// integer or class name per line).
#[derive(Debug, Clone)]
pub struct NpySplit {
    pub split: Split,
    pub features: PathBuf,
    pub labels: PathBuf,
}

/// How to describe the imported features.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Which feature point they correspond to (decides pre/post-projection in reports).
    pub feature_point: String,
    /// Dataset name recorded in the provenance.
    pub dataset: String,
    /// Label level the labels belong to.
    pub level: LabelLevel,
}

/// SHA-256 over the bytes of `files`, in order (the imported entry's `weights_fingerprint`).
pub fn files_fingerprint(files: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let mut r = std::fs::File::open(f).with_context(|| format!("reading {}", f.display()))?;
        loop {
            let n = r.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        h.update([0xff]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Labels as class indices plus the class table: integers keep their values (classes named
/// "0".."max"); names are indexed in sorted order.
fn read_labels(path: &Path) -> Result<Vec<String>> {
    if path.extension().is_some_and(|e| e == "npy") {
        return match read_npy(path)? {
            NpyArray::Int(a) => Ok(a.iter().map(|v| v.to_string()).collect()),
            NpyArray::Float(_) => bail!("{}: labels must be integers, not floats", path.display()),
        };
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

fn class_table(all: &[&Vec<String>]) -> Vec<String> {
    let mut names: Vec<String> = all.iter().flat_map(|v| v.iter().cloned()).collect();
    names.sort();
    names.dedup();
    if names.iter().all(|n| n.parse::<u32>().is_ok()) {
        let max = names
            .iter()
            .map(|n| n.parse::<u32>().unwrap())
            .max()
            .unwrap_or(0);
        return (0..=max).map(|i| i.to_string()).collect();
    }
    names
}

/// One split's features, labels and (optional) image ids, as read from the imported files.
type ImportedSplit = (
    Split,
    ndarray::ArrayD<f32>,
    Vec<String>,
    Option<Vec<String>>,
);

fn build(
    cache: &FeatureCache,
    files: Vec<PathBuf>,
    opts: &ImportOptions,
    splits: Vec<ImportedSplit>,
    classes: Option<Vec<String>>,
) -> Result<CacheEntry> {
    opts.feature_point.parse::<crate::FeaturePoint>()?;
    let names: Vec<&Vec<String>> = splits.iter().map(|s| &s.2).collect();
    // Given names: labels index them. Otherwise the table is built from the label values.
    let indexed = classes.is_some();
    let table = classes.unwrap_or_else(|| class_table(&names));
    let mut data = EntryData {
        classes: Default::default(),
        splits: Vec::new(),
    };
    let mut h = Sha256::new();
    for (split, x, labels, ids) in splits {
        if x.ndim() < 2 || x.shape()[0] != labels.len() {
            bail!(
                "{split}: features of shape {:?} need one row per label ({} labels)",
                x.shape(),
                labels.len()
            );
        }
        let y: Vec<i32> = labels
            .iter()
            .map(|l| {
                let i = if indexed {
                    l.parse::<usize>().ok().filter(|&i| i < table.len())
                } else {
                    table.iter().position(|n| n == l)
                };
                i.map(|i| i as i32).with_context(|| {
                    format!(
                        "{split}: label '{l}' is not in the class table ({} classes)",
                        table.len()
                    )
                })
            })
            .collect::<Result<_>>()?;
        let ids = ids.unwrap_or_else(|| (0..y.len()).map(|i| format!("{split}/{i}")).collect());
        for (id, l) in ids.iter().zip(&y) {
            h.update(id.as_bytes());
            h.update(l.to_le_bytes());
        }
        let mut lab: [Option<Vec<i32>>; 3] = Default::default();
        lab[opts.level as usize] = Some(y);
        data.splits.push(SplitData {
            split,
            paths: ids.clone(),
            ids,
            labels: lab,
            features: x,
        });
    }
    for n in &table {
        h.update(n.as_bytes());
    }
    data.classes[opts.level as usize] = table;
    let abs: Vec<String> = files
        .iter()
        .map(|f| {
            std::fs::canonicalize(f)
                .unwrap_or(f.clone())
                .display()
                .to_string()
        })
        .collect();
    let prov = Provenance {
        model_id: format!("imported:{}", abs.join(",")),
        model_revision: "imported".into(),
        weights_fingerprint: files_fingerprint(&files)?,
        config_hash: String::new(),
        preprocess: String::new(),
        feature_point: opts.feature_point.clone(),
        compute_dtype: "unknown".into(),
        storage_dtype: "f32".into(),
        device: "unknown".into(),
        gapprobe_version: crate::VERSION.into(),
        dataset: opts.dataset.clone(),
        manifest_hash: hex::encode(h.finalize()),
        llm_input: String::new(),
    };
    if let Some(e) = cache.lookup(&prov)? {
        return Ok(e);
    }
    let _lock = super::EntryLock::acquire(&cache.entry_path(&prov), true)?;
    cache.write(&prov, &data)
}

/// Imports `.npy` features, one file pair per split.
pub fn import_npy(
    cache: &FeatureCache,
    splits: &[NpySplit],
    opts: &ImportOptions,
) -> Result<CacheEntry> {
    let mut files = Vec::new();
    let mut parts = Vec::new();
    for s in splits {
        let x = match read_npy(&s.features)? {
            NpyArray::Float(x) => x,
            NpyArray::Int(_) => bail!("{}: features must be floats", s.features.display()),
        };
        parts.push((s.split, x, read_labels(&s.labels)?, None));
        files.extend([s.features.clone(), s.labels.clone()]);
    }
    build(cache, files, opts, parts, None)
}

/// Imports an `.h5` file with `<split>/features` ([N, D] float) and `<split>/labels` (integers
/// or a group with one dataset per level; `opts.level` is taken), optional `<split>/ids` and
/// `classes/<level>` names.
pub fn import_h5(cache: &FeatureCache, path: &Path, opts: &ImportOptions) -> Result<CacheEntry> {
    let f = hdf5::File::open(path)
        .with_context(|| format!("{} is not a readable HDF5 file", path.display()))?;
    let mut parts = Vec::new();
    for split in SPLITS {
        if !f.link_exists(split.as_str()) {
            continue;
        }
        let g = f.group(split.as_str())?;
        let x =
            read_features_ds(&g.dataset("features").with_context(|| {
                format!("{}: {split} has no 'features' dataset", path.display())
            })?)?;
        let y = match g.dataset("labels") {
            Ok(d) => d.read_raw::<i64>()?,
            Err(_) => g
                .group("labels")
                .and_then(|l| l.dataset(opts.level.as_str()))
                .with_context(|| format!("{}: {split} has no 'labels' dataset", path.display()))?
                .read_raw::<i64>()?,
        };
        let ids = g
            .link_exists("ids")
            .then(|| read_strings(&g, "ids"))
            .transpose()?;
        parts.push((split, x, y.iter().map(|v| v.to_string()).collect(), ids));
    }
    if parts.is_empty() {
        bail!(
            "{} has no train/val/test groups with features and labels",
            path.display()
        );
    }
    let classes = f
        .group("classes")
        .ok()
        .filter(|g| g.link_exists(opts.level.as_str()))
        .map(|g| read_strings(&g, opts.level.as_str()))
        .transpose()?;
    build(cache, vec![path.to_path_buf()], opts, parts, classes)
}
