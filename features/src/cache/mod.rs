//! The HDF5 feature cache. One file per (model, dataset, feature point), named by a key that
//! hashes everything that produced the features ([`Provenance`]): a change in any input is a miss,
//! never a silent reuse. Files are written under a `.partial` name and renamed when complete, so
//! a file at an entry's path is always a finished entry. Layout (see docs/cache-format.md):
//!
//! ```text
//! /                      attrs: key, provenance (JSON), one attr per provenance field, created, complete
//! /classes/<level>       class names (variable-length UTF-8)
//! /<split>/features      [N, D] or [N, T, D] float32, chunked by rows
//! /<split>/ids, /paths   image id and path per row
//! /<split>/labels/<level> int32 class index per row (-1: no label at this level)
//! ```

use crate::datasets::{LabelLevel, Split};
use anyhow::{bail, Context, Result};
use hdf5::types::VarLenUnicode;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Everything that produced a cache entry. All fields enter the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub model_id: String,
    /// Hub commit, or `local` for a folder.
    pub model_revision: String,
    /// SHA-256 over name, dtype, shape and bytes of every tensor read to produce the features.
    pub weights_fingerprint: String,
    /// SHA-256 of the checkpoint's `config.json`.
    pub config_hash: String,
    /// Preprocessing configuration as JSON.
    pub preprocess: String,
    pub feature_point: String,
    /// Dtype the model ran in (`f32`, `bf16`, `f16`).
    pub compute_dtype: String,
    pub device: String,
    pub gapprobe_version: String,
    pub dataset: String,
    /// SHA-256 of the dataset's ids, paths, splits, labels and class tables.
    pub manifest_hash: String,
}

impl Provenance {
    /// The entry key: SHA-256 of the canonical JSON of all fields.
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(
            serde_json::to_vec(self).expect("provenance serialises"),
        ))
    }

    fn fields(&self) -> Vec<(String, String)> {
        let v = serde_json::to_value(self).expect("provenance serialises");
        v.as_object()
            .expect("struct")
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| v.to_string()),
                )
            })
            .collect()
    }
}

/// One split's rows.
#[derive(Debug, Clone)]
pub struct SplitData {
    pub split: Split,
    pub ids: Vec<String>,
    pub paths: Vec<String>,
    /// Per level (superordinate, coarse, fine): class index per row, -1 where unlabelled;
    /// `None` where the dataset lacks the level.
    pub labels: [Option<Vec<i32>>; 3],
    pub features: ArrayD<f32>,
}

/// What an entry holds besides provenance.
#[derive(Debug, Clone)]
pub struct EntryData {
    pub classes: [Vec<String>; 3],
    pub splits: Vec<SplitData>,
}

/// The cache rooted at a folder.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    pub root: PathBuf,
}

/// A finished entry on disk.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub path: PathBuf,
    pub key: String,
    pub provenance: Provenance,
    pub created: String,
}

fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.trim_matches('_')
        .chars()
        .rev()
        .take(60)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn vlu(s: &str) -> Result<VarLenUnicode> {
    s.parse::<VarLenUnicode>()
        .map_err(|e| anyhow::anyhow!("string {s:?} cannot be stored in HDF5: {e}"))
}

fn write_str_attr(loc: &hdf5::Location, name: &str, value: &str) -> Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&vlu(value)?)?;
    Ok(())
}

fn read_str_attr(loc: &hdf5::Location, name: &str) -> Result<String> {
    Ok(loc.attr(name)?.read_scalar::<VarLenUnicode>()?.to_string())
}

fn write_strings(group: &hdf5::Group, name: &str, values: &[String]) -> Result<()> {
    let v: Vec<VarLenUnicode> = values.iter().map(|s| vlu(s)).collect::<Result<_>>()?;
    group.new_dataset_builder().with_data(&v[..]).create(name)?;
    Ok(())
}

fn read_strings(group: &hdf5::Group, name: &str) -> Result<Vec<String>> {
    Ok(group
        .dataset(name)?
        .read_raw::<VarLenUnicode>()?
        .into_iter()
        .map(|s| s.to_string())
        .collect())
}

/// Current UTC time as ISO 8601 (no external clock crate needed).
fn now_iso8601() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl FeatureCache {
    /// A cache rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FeatureCache { root: root.into() }
    }

    /// Where the entry for `prov` lives: `<root>/<dataset>/<model>/<feature point>-<key[..16]>.h5`.
    pub fn entry_path(&self, prov: &Provenance) -> PathBuf {
        let fp: crate::FeaturePoint = prov
            .feature_point
            .parse()
            .expect("stored feature points parse");
        self.root
            .join(slug(&prov.dataset))
            .join(slug(&prov.model_id))
            .join(format!("{}-{}.h5", fp.slug(), &prov.key()[..16]))
    }

    /// The finished entry for `prov`, if there is one. A file whose stored provenance does not
    /// match (a hash-prefix collision or a hand-edited file) is an error, never a hit.
    pub fn lookup(&self, prov: &Provenance) -> Result<Option<CacheEntry>> {
        let path = self.entry_path(prov);
        if !path.exists() {
            return Ok(None);
        }
        let entry = CacheEntry::open(&path)?;
        if entry.provenance != *prov {
            bail!(
                "cache file {} does not hold what its name says (stored provenance differs); remove it with `gapprobe cache rm {}`",
                path.display(),
                path.display()
            );
        }
        Ok(Some(entry))
    }

    /// Writes an entry atomically (`.partial` file, then rename) and returns it.
    pub fn write(&self, prov: &Provenance, data: &EntryData) -> Result<CacheEntry> {
        let path = self.entry_path(prov);
        let dir = path.parent().expect("entry paths have a parent");
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache folder {}", dir.display()))?;
        let partial = path.with_extension("h5.partial");
        let created = now_iso8601();
        {
            let file = hdf5::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            write_str_attr(&file, "key", &prov.key())?;
            write_str_attr(&file, "provenance", &serde_json::to_string(prov)?)?;
            for (k, v) in prov.fields() {
                write_str_attr(&file, &k, &v)?;
            }
            write_str_attr(&file, "created", &created)?;
            let classes = file.create_group("classes")?;
            for level in LabelLevel::ALL {
                let names = &data.classes[level as usize];
                if !names.is_empty() {
                    write_strings(&classes, level.as_str(), names)?;
                }
            }
            for s in &data.splits {
                write_split(&file, s)?;
            }
            file.new_attr::<u8>()
                .create("complete")?
                .write_scalar(&1u8)?;
            file.flush()?;
        }
        std::fs::rename(&partial, &path)
            .with_context(|| format!("finishing {}", path.display()))?;
        CacheEntry::open(&path)
    }

    /// All finished entries under the root, sorted by path.
    pub fn list(&self) -> Result<Vec<CacheEntry>> {
        let mut out = Vec::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "h5") {
                    out.push(CacheEntry::open(&p)?);
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }
}

fn write_split(file: &hdf5::File, s: &SplitData) -> Result<()> {
    let n = s.features.shape()[0];
    if s.ids.len() != n || s.paths.len() != n {
        bail!(
            "split {}: {} feature rows but {} ids and {} paths",
            s.split,
            n,
            s.ids.len(),
            s.paths.len()
        );
    }
    if let Some((i, _)) = s.features.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        let row = i / (s.features.len() / n.max(1)).max(1);
        bail!(
            "split {}: feature row {row} (image {}) contains NaN or Inf; nothing was cached",
            s.split,
            s.ids[row]
        );
    }
    let g = file.create_group(s.split.as_str())?;
    let mut chunk = s.features.shape().to_vec();
    chunk[0] = n
        .clamp(1, (1 << 20) / chunk[1..].iter().product::<usize>().max(1))
        .max(1);
    g.new_dataset_builder()
        .with_data(s.features.view())
        .chunk(chunk)
        .create("features")?;
    write_strings(&g, "ids", &s.ids)?;
    write_strings(&g, "paths", &s.paths)?;
    let lg = g.create_group("labels")?;
    for level in LabelLevel::ALL {
        if let Some(l) = &s.labels[level as usize] {
            if l.len() != n {
                bail!("split {}: {} {level} labels for {n} rows", s.split, l.len());
            }
            lg.new_dataset_builder()
                .with_data(&l[..])
                .create(level.as_str())?;
        }
    }
    Ok(())
}

impl CacheEntry {
    /// Opens a finished entry and reads its provenance.
    pub fn open(path: &Path) -> Result<Self> {
        let file = hdf5::File::open(path)
            .with_context(|| format!("{} is not a readable HDF5 cache entry", path.display()))?;
        let bad = || {
            format!(
                "{} is not a gapprobe cache entry (missing provenance); remove it",
                path.display()
            )
        };
        let complete = file
            .attr("complete")
            .and_then(|a| a.read_scalar::<u8>())
            .unwrap_or(0);
        if complete != 1 {
            bail!(
                "{} is incomplete; remove it with `gapprobe cache rm` and extract again",
                path.display()
            );
        }
        let provenance: Provenance =
            serde_json::from_str(&read_str_attr(&file, "provenance").with_context(bad)?)
                .with_context(bad)?;
        Ok(CacheEntry {
            path: path.to_path_buf(),
            key: read_str_attr(&file, "key").with_context(bad)?,
            created: read_str_attr(&file, "created").unwrap_or_default(),
            provenance,
        })
    }

    /// Class names per level (empty where absent).
    pub fn classes(&self) -> Result<[Vec<String>; 3]> {
        let file = hdf5::File::open(&self.path)?;
        let g = file.group("classes")?;
        let mut out: [Vec<String>; 3] = Default::default();
        for level in LabelLevel::ALL {
            if g.link_exists(level.as_str()) {
                out[level as usize] = read_strings(&g, level.as_str())?;
            }
        }
        Ok(out)
    }

    /// Splits stored in this entry.
    pub fn splits(&self) -> Result<Vec<Split>> {
        let file = hdf5::File::open(&self.path)?;
        Ok([Split::Train, Split::Val, Split::Test]
            .into_iter()
            .filter(|s| file.link_exists(s.as_str()))
            .collect())
    }

    /// Reads one split in full.
    pub fn read_split(&self, split: Split) -> Result<SplitData> {
        let file = hdf5::File::open(&self.path)?;
        let g = file
            .group(split.as_str())
            .with_context(|| format!("{} has no '{split}' split", self.path.display()))?;
        let features = g.dataset("features")?.read_dyn::<f32>()?;
        let lg = g.group("labels")?;
        let mut labels: [Option<Vec<i32>>; 3] = Default::default();
        for level in LabelLevel::ALL {
            if lg.link_exists(level.as_str()) {
                labels[level as usize] = Some(lg.dataset(level.as_str())?.read_raw::<i32>()?);
            }
        }
        Ok(SplitData {
            split,
            ids: read_strings(&g, "ids")?,
            paths: read_strings(&g, "paths")?,
            labels,
            features,
        })
    }
}
