//! The HDF5 feature cache. One file per (model, dataset, feature point), named by a key that
//! hashes everything that produced the features ([`Provenance`]): a change in any input is a miss,
//! never a silent reuse. Layout and attributes: docs/cache-format.md.
//!
//! Writing ([`writer`]) goes through `<entry>.h5.partial`, filled in row blocks with its progress
//! recorded, so an interrupted extraction resumes where it stopped; the file is renamed to its
//! final name only when every split is complete. A lock file ([`lock`]) keeps two processes off
//! one entry. `--shard i/N` writes part of the rows to a shard file, joined by [`shard::merge`].

pub mod compress;
mod entry;
pub mod format;
pub mod import;
pub mod lock;
pub mod npy;
pub mod shard;
pub mod source;
pub mod verify;
pub mod writer;

pub use compress::Compression;
pub use entry::{CacheEntry, SplitInfo};
pub use lock::EntryLock;
pub use shard::Shard;
pub use writer::{EntryPlan, EntryWriter, NonFiniteRow, SplitPlan};

use crate::datasets::Split;
use anyhow::{bail, Result};
use format::slug;
use ndarray::ArrayD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// Everything that produced a cache entry. All fields enter the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub model_id: String,
    /// Hub commit, or `local` for a folder.
    pub model_revision: String,
    /// SHA-256 over name, dtype, shape and bytes of every tensor read to produce this feature
    /// point (across all weight files; tensors the point does not need are not covered).
    /// Imported entries: SHA-256 of the imported files.
    pub weights_fingerprint: String,
    /// SHA-256 of the checkpoint's `config.json`.
    pub config_hash: String,
    /// Preprocessing configuration as JSON.
    pub preprocess: String,
    pub feature_point: String,
    /// Dtype the model ran in (`f32`, `bf16`, `f16`).
    pub compute_dtype: String,
    /// Dtype `features` is stored in (`f32` or `f16`); reads always return f32.
    pub storage_dtype: String,
    pub device: String,
    pub gapprobe_version: String,
    pub dataset: String,
    /// SHA-256 of the dataset's ids, paths, splits, labels and class tables.
    pub manifest_hash: String,
    /// `llm.*` points: the prompt, the tokenizer's SHA-256 and (text arm) the texts' SHA-256, as
    /// JSON; empty (and left out of the key, so older entries keep theirs) for other points.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub llm_input: String,
}

impl Provenance {
    /// The entry key: SHA-256 of the canonical JSON of all fields.
    pub fn key(&self) -> String {
        hex::encode(Sha256::digest(
            serde_json::to_vec(self).expect("provenance serialises"),
        ))
    }

    /// (field, value) pairs, each stored as its own root attribute.
    pub fn fields(&self) -> Vec<(String, String)> {
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

/// How `features` is stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageDtype {
    #[default]
    F32,
    F16,
}

impl std::str::FromStr for StorageDtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" => Ok(StorageDtype::F32),
            "f16" | "float16" => Ok(StorageDtype::F16),
            o => bail!("storage dtype '{o}' is not f32 or f16"),
        }
    }
}

impl std::fmt::Display for StorageDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageDtype::F32 => "f32",
            StorageDtype::F16 => "f16",
        })
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

/// Files under the cache root, by kind.
#[derive(Debug, Default)]
pub struct Scan {
    /// Finished entries (`*.h5` without shard attributes).
    pub entries: Vec<CacheEntry>,
    /// Finished shard files (`*.shard-I-of-N.h5`).
    pub shards: Vec<CacheEntry>,
    /// Unfinished writes (`*.partial`, `*.partial.tmp`, `*.compress.tmp`).
    pub partials: Vec<PathBuf>,
    /// Lock files (`*.lock`).
    pub locks: Vec<PathBuf>,
    /// `.h5` files that are not readable entries, with the reason.
    pub broken: Vec<(PathBuf, String)>,
}

impl FeatureCache {
    /// A cache rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FeatureCache { root: root.into() }
    }

    /// The root when none is given: `$GAPPROBE_CACHE`, else `$XDG_CACHE_HOME/gapprobe`, else
    /// `~/.cache/gapprobe`.
    pub fn default_root() -> PathBuf {
        if let Some(root) = std::env::var_os("GAPPROBE_CACHE") {
            return PathBuf::from(root);
        }
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"))
            .join("gapprobe")
    }

    /// Where the entry for `prov` lives: `<root>/<dataset>/<model>/<feature point>-<key[..16]>.h5`.
    pub fn entry_path(&self, prov: &Provenance) -> PathBuf {
        let fp = prov
            .feature_point
            .parse::<crate::FeaturePoint>()
            .map(|p| p.slug())
            .unwrap_or_else(|_| slug(&prov.feature_point));
        self.root
            .join(slug(&prov.dataset))
            .join(slug(&prov.model_id))
            .join(format!("{fp}-{}.h5", &prov.key()[..16]))
    }

    /// Where shard `shard` of the entry for `prov` lives (next to the entry).
    pub fn shard_path(&self, prov: &Provenance, shard: Shard) -> PathBuf {
        let p = self.entry_path(prov);
        p.with_extension(format!("shard-{}-of-{}.h5", shard.index, shard.count))
    }

    /// The finished entry for `prov`, if there is one. A file whose stored provenance does not
    /// match (a hash-prefix collision or a hand-edited file) is an error, never a hit.
    pub fn lookup(&self, prov: &Provenance) -> Result<Option<CacheEntry>> {
        Self::lookup_at(&self.entry_path(prov), prov)
    }

    /// Like [`lookup`](Self::lookup) for an explicit path (entry or shard file).
    pub fn lookup_at(path: &Path, prov: &Provenance) -> Result<Option<CacheEntry>> {
        if !path.exists() {
            return Ok(None);
        }
        let entry = CacheEntry::open(path)?;
        if entry.provenance != *prov {
            bail!(
                "cache file {} does not hold what its name says (stored provenance differs); remove it with `gapprobe cache rm {}`",
                path.display(),
                path.display()
            );
        }
        Ok(Some(entry))
    }

    /// All finished entries under the root (shards excluded), sorted by path.
    pub fn list(&self) -> Result<Vec<CacheEntry>> {
        let scan = self.scan();
        if let Some((p, why)) = scan.broken.first() {
            bail!(
                "{} is not a readable cache entry ({why}); check it with `gapprobe cache verify {}` or remove it with `gapprobe cache rm {}`",
                p.display(),
                p.display(),
                p.display()
            );
        }
        Ok(scan.entries)
    }

    /// Walks the root and sorts every file it finds by kind.
    pub fn scan(&self) -> Scan {
        let mut scan = Scan::default();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                if p.is_dir() {
                    stack.push(p);
                } else if name.ends_with(".partial")
                    || name.ends_with(".partial.tmp")
                    || name.ends_with(".compress.tmp")
                {
                    scan.partials.push(p);
                } else if name.ends_with(".lock") {
                    scan.locks.push(p);
                } else if name.ends_with(".h5") {
                    match CacheEntry::open(&p) {
                        Ok(e) if e.shard.is_some() => scan.shards.push(e),
                        Ok(e) => scan.entries.push(e),
                        Err(err) => scan.broken.push((p, format!("{err:#}"))),
                    }
                }
            }
        }
        scan.entries.sort_by(|a, b| a.path.cmp(&b.path));
        scan.shards.sort_by(|a, b| a.path.cmp(&b.path));
        scan.partials.sort();
        scan.locks.sort();
        scan
    }

    /// Writes a whole entry at once (through the same partial-file path as extraction).
    pub fn write(&self, prov: &Provenance, data: &EntryData) -> Result<CacheEntry> {
        writer::write_all(&self.entry_path(prov), prov, data, "")
    }
}

#[cfg(test)]
mod tests;
