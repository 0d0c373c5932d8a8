//! Writing entries in row blocks, resumably.
//!
//! The first block creates `<target>.partial` completely (attributes, classes, ids, paths,
//! labels, and fixed-size `features` datasets with all storage allocated up front) under a
//! temporary name, flushes it and renames it; from then on a block only writes feature rows and
//! then the split's `rows_done` counter, each followed by a flush, so a killed process leaves a
//! file whose metadata never changed and whose `rows_done` rows are all on disk. A rerun reopens
//! it, checks it belongs to the same provenance key and plan, and continues from `rows_done`.
//! When every split is done, `complete` is set to 1 and the file is renamed to `target`.

use super::entry::CacheEntry;
use super::format::{
    now_iso8601, read_str_attr, read_strings, read_u64_attr, write_str_attr, write_strings,
    write_u64_attr, CHUNK_BYTES, FORMAT_VERSION,
};
use super::{EntryData, Provenance, Shard, StorageDtype};
use crate::datasets::{LabelLevel, Split};
use anyhow::{bail, Context, Result};
use hdf5::dataset::{AllocTime, FillTime};
use ndarray::{ArrayViewD, Axis};
use std::ops::Range;
use std::path::{Path, PathBuf};
use tracing::{info, warn};

/// A feature row with NaN or Inf, refused by [`EntryWriter::write_rows`] (callers that know why
/// such rows arise, e.g. a float16 residual stream's overflow, can downcast to it and say so).
#[derive(Debug)]
pub struct NonFiniteRow {
    pub split: Split,
    /// The row's index in the split.
    pub row: usize,
    /// The image's id.
    pub image: String,
    /// The partial file, which keeps the rows before it.
    pub partial: PathBuf,
}

impl std::fmt::Display for NonFiniteRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "split {}: feature row {} (image {}) contains NaN or Inf; nothing was cached for it \
             (the partial file {} keeps the rows before it)",
            self.split,
            self.row,
            self.image,
            self.partial.display()
        )
    }
}

impl std::error::Error for NonFiniteRow {}

/// What one split of a file will hold: rows `rows` of the whole split (all of it unless sharded).
#[derive(Debug, Clone)]
pub struct SplitPlan {
    pub split: Split,
    /// Rows of the whole split this file holds.
    pub rows: Range<usize>,
    /// Rows in the whole split.
    pub total: usize,
    /// Per row of `rows`: image id, path and labels per level (-1: unlabelled).
    pub ids: Vec<String>,
    pub paths: Vec<String>,
    pub labels: [Option<Vec<i32>>; 3],
}

/// Everything an entry (or shard file) holds except its feature rows.
#[derive(Debug, Clone)]
pub struct EntryPlan {
    pub provenance: Provenance,
    pub classes: [Vec<String>; 3],
    pub splits: Vec<SplitPlan>,
    /// Dataset spec to reload the dataset from (`verify`); empty when unknown.
    pub dataset_spec: String,
    /// Images per encoder batch; recorded so a resume batches exactly like the first run.
    pub batch_size: usize,
    pub shard: Option<Shard>,
    /// Items the dataset loader skipped (`skip_bad`), as "id\tpath\treason" lines; stored in the
    /// `skipped` attribute (a JSON list) so the entry says what it lacks.
    pub skipped: Vec<String>,
}

/// Writes one entry or shard file block by block; see the module docs.
pub struct EntryWriter {
    target: PathBuf,
    partial: PathBuf,
    plan: EntryPlan,
    file: Option<hdf5::File>,
    rows_done: Vec<usize>,
}

/// `<target>.partial`: where `target` is written until complete.
pub fn partial_path(target: &Path) -> PathBuf {
    let mut s = target.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

fn storage(prov: &Provenance) -> Result<StorageDtype> {
    prov.storage_dtype.parse()
}

fn rows_sel(a: usize, b: usize, ndim: usize) -> hdf5::Selection {
    let mut v: Vec<hdf5::SliceOrIndex> = vec![(a..b).into()];
    v.extend((1..ndim).map(|_| hdf5::SliceOrIndex::from(..)));
    hdf5::Hyperslab::from(v).into()
}

impl EntryWriter {
    /// Prepares to write `target`, resuming `<target>.partial` when it holds an earlier,
    /// interrupted write of the same plan; a partial file of anything else is replaced.
    /// The caller must hold the entry's [`EntryLock`](super::EntryLock).
    pub fn open(target: &Path, plan: EntryPlan) -> Result<Self> {
        storage(&plan.provenance)?;
        for s in &plan.splits {
            let n = s.rows.len();
            if s.ids.len() != n || s.paths.len() != n {
                bail!(
                    "split {}: {n} rows planned but {} ids and {} paths",
                    s.split,
                    s.ids.len(),
                    s.paths.len()
                );
            }
            if let Some(l) = s.labels.iter().flatten().find(|l| l.len() != n) {
                bail!("split {}: {} labels for {n} rows", s.split, l.len());
            }
        }
        let partial = partial_path(target);
        let mut w = EntryWriter {
            target: target.to_path_buf(),
            rows_done: vec![0; plan.splits.len()],
            partial,
            plan,
            file: None,
        };
        if w.partial.exists() {
            match w.reopen() {
                Ok(()) => info!(
                    "resuming {} ({} of {} rows already written)",
                    w.partial.display(),
                    w.rows_done.iter().sum::<usize>(),
                    w.plan.splits.iter().map(|s| s.rows.len()).sum::<usize>()
                ),
                Err(e) => {
                    warn!(
                        "discarding {}: {e:#}; extracting it again from the first row",
                        w.partial.display()
                    );
                    w.file = None;
                    w.rows_done.iter_mut().for_each(|r| *r = 0);
                    std::fs::remove_file(&w.partial)
                        .with_context(|| format!("removing {}", w.partial.display()))?;
                }
            }
        }
        Ok(w)
    }

    fn reopen(&mut self) -> Result<()> {
        let file = hdf5::File::open_rw(&self.partial)?;
        let key = read_str_attr(&file, "key")?;
        if key != self.plan.provenance.key() {
            bail!("it belongs to another provenance key ({key})");
        }
        let shard = read_u64_attr(&file, "shard_index").zip(read_u64_attr(&file, "shard_count"));
        if shard != self.plan.shard.map(|s| (s.index as u64, s.count as u64)) {
            bail!("it was written for another shard");
        }
        if let Some(b) = read_u64_attr(&file, "batch_size") {
            self.plan.batch_size = b as usize;
        }
        for (i, s) in self.plan.splits.iter().enumerate() {
            let g = file.group(s.split.as_str())?;
            if g.dataset("features")?.shape()[0] != s.rows.len()
                || read_strings(&g, "ids")? != s.ids
            {
                bail!("its {} rows differ from the dataset's", s.split);
            }
            let done = g.dataset("rows_done")?.read_raw::<u64>()?[0] as usize;
            if done > s.rows.len() {
                bail!("its {} progress ({done}) exceeds the split", s.split);
            }
            self.rows_done[i] = done;
        }
        self.file = Some(file);
        Ok(())
    }

    /// Images per batch to extract with (the recorded one when resuming).
    pub fn batch_size(&self) -> usize {
        self.plan.batch_size
    }

    /// The plan being written.
    pub fn plan(&self) -> &EntryPlan {
        &self.plan
    }

    /// Rows of `split` already on disk, counted from the start of this file's row range.
    pub fn rows_done(&self, split: Split) -> usize {
        self.plan
            .splits
            .iter()
            .position(|s| s.split == split)
            .map(|i| self.rows_done[i])
            .unwrap_or(0)
    }

    /// Creates the partial file with every dataset, under a temporary name first.
    fn create(&mut self, inner: &[usize]) -> Result<()> {
        let dir = self.target.parent().expect("entry paths have a parent");
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache folder {}", dir.display()))?;
        let tmp = self.partial.with_extension("partial.tmp");
        let prov = &self.plan.provenance;
        let f16 = storage(prov)? == StorageDtype::F16;
        {
            let file =
                hdf5::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
            write_str_attr(&file, "key", &prov.key())?;
            write_str_attr(&file, "provenance", &serde_json::to_string(prov)?)?;
            for (k, v) in prov.fields() {
                write_str_attr(&file, &k, &v)?;
            }
            write_str_attr(&file, "dataset_spec", &self.plan.dataset_spec)?;
            write_str_attr(
                &file,
                "skipped",
                &serde_json::to_string(&self.plan.skipped)?,
            )?;
            write_str_attr(&file, "created", &now_iso8601())?;
            write_u64_attr(&file, "format_version", FORMAT_VERSION as u64)?;
            write_u64_attr(&file, "batch_size", self.plan.batch_size as u64)?;
            if let Some(s) = self.plan.shard {
                write_u64_attr(&file, "shard_index", s.index as u64)?;
                write_u64_attr(&file, "shard_count", s.count as u64)?;
            }
            file.new_attr::<u8>()
                .create("complete")?
                .write_scalar(&0u8)?;
            let classes = file.create_group("classes")?;
            for level in LabelLevel::ALL {
                let names = &self.plan.classes[level as usize];
                if !names.is_empty() {
                    write_strings(&classes, level.as_str(), names)?;
                }
            }
            for s in &self.plan.splits {
                let g = file.create_group(s.split.as_str())?;
                if self.plan.shard.is_some() {
                    write_u64_attr(&g, "row_start", s.rows.start as u64)?;
                    write_u64_attr(&g, "row_end", s.rows.end as u64)?;
                    write_u64_attr(&g, "rows_total", s.total as u64)?;
                }
                let n = s.rows.len();
                let mut shape = vec![n];
                shape.extend_from_slice(inner);
                let row_bytes = inner.iter().product::<usize>().max(1) * if f16 { 2 } else { 4 };
                let mut chunk = shape.clone();
                chunk[0] = (CHUNK_BYTES / row_bytes).clamp(1, n.max(1));
                let b = g.new_dataset_builder();
                let b = if f16 {
                    b.empty::<half::f16>()
                } else {
                    b.empty::<f32>()
                };
                let mut b = b.shape(shape);
                if n > 0 {
                    b = b.chunk(chunk);
                }
                b.alloc_time(Some(AllocTime::Early))
                    .fill_time(FillTime::Never)
                    .create("features")?;
                write_strings(&g, "ids", &s.ids)?;
                write_strings(&g, "paths", &s.paths)?;
                let lg = g.create_group("labels")?;
                for level in LabelLevel::ALL {
                    if let Some(l) = &s.labels[level as usize] {
                        lg.new_dataset_builder()
                            .with_data(&l[..])
                            .create(level.as_str())?;
                    }
                }
                g.new_dataset_builder()
                    .with_data(&[0u64][..])
                    .create("rows_done")?;
            }
            file.flush()?;
        }
        std::fs::rename(&tmp, &self.partial)
            .with_context(|| format!("renaming {} to {}", tmp.display(), self.partial.display()))?;
        self.file = Some(hdf5::File::open_rw(&self.partial)?);
        Ok(())
    }

    /// Writes feature rows `row0..row0 + n` of `split` (counted from the start of this file's row
    /// range) and records them as done. Rows already on disk are skipped; rows must arrive in order.
    pub fn write_rows(&mut self, split: Split, row0: usize, feats: ArrayViewD<f32>) -> Result<()> {
        let i = self
            .plan
            .splits
            .iter()
            .position(|s| s.split == split)
            .with_context(|| format!("{} has no {split} split", self.target.display()))?;
        let n = feats.shape()[0];
        let done = self.rows_done[i];
        if row0 + n <= done {
            return Ok(());
        }
        if row0 > done {
            bail!(
                "{split} rows {row0}.. written before rows {done}..{row0} of {}",
                self.target.display()
            );
        }
        let total = self.plan.splits[i].rows.len();
        if row0 + n > total {
            bail!(
                "{split} rows {row0}..{} exceed the {total} planned rows",
                row0 + n
            );
        }
        let rows = feats.slice_axis(Axis(0), (done - row0..n).into());
        if let Some((k, _)) = rows.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            let row = done + k / (rows.len() / rows.shape()[0]).max(1);
            return Err(NonFiniteRow {
                split,
                row,
                image: self.plan.splits[i].ids[row].clone(),
                partial: self.partial.clone(),
            }
            .into());
        }
        if self.file.is_none() {
            self.create(&feats.shape()[1..])?;
        }
        let file = self.file.as_ref().expect("created");
        let g = file.group(split.as_str())?;
        let ds = g.dataset("features")?;
        let sel = rows_sel(done, row0 + n, rows.ndim());
        let rows = rows.as_standard_layout();
        if storage(&self.plan.provenance)? == StorageDtype::F16 {
            ds.write_slice(&rows.mapv(half::f16::from_f32), sel)?;
        } else {
            ds.write_slice(&rows, sel)?;
        }
        file.flush()?;
        g.dataset("rows_done")?
            .write_raw(&[(row0 + n) as u64][..])?;
        file.flush()?;
        self.rows_done[i] = row0 + n;
        Ok(())
    }

    /// Marks the file complete and renames it to its final name. Every split must be done.
    pub fn finish(mut self) -> Result<CacheEntry> {
        for (s, &d) in self.plan.splits.iter().zip(&self.rows_done) {
            if d != s.rows.len() {
                bail!(
                    "{}: {} has {d} of {} rows; run the extraction again to resume it",
                    self.partial.display(),
                    s.split,
                    s.rows.len()
                );
            }
        }
        let file = self.file.take().with_context(|| {
            format!(
                "{} has no rows to write; use fewer shards or a larger dataset",
                self.target.display()
            )
        })?;
        file.attr("complete")?.write_scalar(&1u8)?;
        file.flush()?;
        file.close()?;
        std::fs::rename(&self.partial, &self.target)
            .with_context(|| format!("finishing {}", self.target.display()))?;
        CacheEntry::open(&self.target)
    }
}

/// Writes a whole entry at `target` in one go (used for imports and whole-entry writes).
pub fn write_all(
    target: &Path,
    prov: &Provenance,
    data: &EntryData,
    dataset_spec: &str,
) -> Result<CacheEntry> {
    let plan = EntryPlan {
        provenance: prov.clone(),
        classes: data.classes.clone(),
        splits: data
            .splits
            .iter()
            .map(|s| SplitPlan {
                split: s.split,
                rows: 0..s.features.shape()[0],
                total: s.features.shape()[0],
                ids: s.ids.clone(),
                paths: s.paths.clone(),
                labels: s.labels.clone(),
            })
            .collect(),
        dataset_spec: dataset_spec.into(),
        batch_size: 0,
        shard: None,
        skipped: Vec::new(),
    };
    let partial = partial_path(target);
    if partial.exists() {
        std::fs::remove_file(&partial)
            .with_context(|| format!("removing stale {}", partial.display()))?;
    }
    let mut w = EntryWriter::open(target, plan)?;
    for s in &data.splits {
        w.write_rows(s.split, 0, s.features.view())?;
    }
    w.finish()
}
