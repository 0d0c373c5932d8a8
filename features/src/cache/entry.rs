//! Reading finished entries (and finished shard files).

use super::format::{read_str_attr, read_strings, read_u64_attr};
use super::{Provenance, Shard, SplitData};
use crate::datasets::{LabelLevel, Split};
use anyhow::{bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};

/// A finished entry (or shard file) on disk.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub path: PathBuf,
    pub key: String,
    pub provenance: Provenance,
    pub created: String,
    /// Dataset spec the features were extracted from (empty when unknown, e.g. imported).
    pub dataset_spec: String,
    /// `Some` for a shard file written with `--shard i/N`.
    pub shard: Option<Shard>,
}

/// Shape and storage of one split.
#[derive(Debug, Clone)]
pub struct SplitInfo {
    pub split: Split,
    pub shape: Vec<usize>,
    /// `f32` or `f16`.
    pub dtype: String,
    /// For shard files: the rows `[start, end)` of the whole split this file holds, and its size.
    pub rows: Option<(u64, u64, u64)>,
}

pub(crate) const SPLITS: [Split; 3] = [Split::Train, Split::Val, Split::Test];

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
        let shard = match (
            read_u64_attr(&file, "shard_index"),
            read_u64_attr(&file, "shard_count"),
        ) {
            (Some(i), Some(n)) => Some(Shard {
                index: i as usize,
                count: n as usize,
            }),
            _ => None,
        };
        Ok(CacheEntry {
            path: path.to_path_buf(),
            key: read_str_attr(&file, "key").with_context(bad)?,
            created: read_str_attr(&file, "created").unwrap_or_default(),
            dataset_spec: read_str_attr(&file, "dataset_spec").unwrap_or_default(),
            provenance,
            shard,
        })
    }

    fn file(&self) -> Result<hdf5::File> {
        hdf5::File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))
    }

    /// Items the dataset loader skipped (`skip_bad`) when this entry was written, as
    /// "id\tpath\treason" lines; empty for entries without the attribute.
    pub fn skipped(&self) -> Result<Vec<String>> {
        let file = self.file()?;
        match file.attr("skipped") {
            Ok(a) => {
                let text = a.read_scalar::<hdf5::types::VarLenUnicode>()?.to_string();
                serde_json::from_str(&text).with_context(|| {
                    format!("{}: malformed 'skipped' attribute", self.path.display())
                })
            }
            Err(_) => Ok(Vec::new()),
        }
    }

    /// Class names per level (empty where absent).
    pub fn classes(&self) -> Result<[Vec<String>; 3]> {
        let file = self.file()?;
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
        let file = self.file()?;
        Ok(SPLITS
            .into_iter()
            .filter(|s| file.link_exists(s.as_str()))
            .collect())
    }

    /// Shape and dtype of every split, without reading features.
    pub fn split_info(&self) -> Result<Vec<SplitInfo>> {
        let file = self.file()?;
        let mut out = Vec::new();
        for split in SPLITS {
            if !file.link_exists(split.as_str()) {
                continue;
            }
            let g = file.group(split.as_str())?;
            let ds = g.dataset("features")?;
            let rows = match (
                read_u64_attr(&g, "row_start"),
                read_u64_attr(&g, "row_end"),
                read_u64_attr(&g, "rows_total"),
            ) {
                (Some(a), Some(b), Some(n)) => Some((a, b, n)),
                _ => None,
            };
            out.push(SplitInfo {
                split,
                shape: ds.shape(),
                dtype: if ds.dtype()?.size() == 2 {
                    "f16"
                } else {
                    "f32"
                }
                .into(),
                rows,
            });
        }
        Ok(out)
    }

    /// Reads one split's features as f32 (f16 storage is widened).
    pub fn read_features(&self, split: Split) -> Result<ArrayD<f32>> {
        let file = self.file()?;
        let g = file
            .group(split.as_str())
            .with_context(|| format!("{} has no '{split}' split", self.path.display()))?;
        read_features_ds(&g.dataset("features")?)
            .with_context(|| format!("reading {split}/features of {}", self.path.display()))
    }

    /// SHA-256 of a split's features as little-endian f32 (C order) and their sum: what any
    /// other reader of the file must reproduce.
    pub fn features_checksum(&self, split: Split) -> Result<(String, f64)> {
        use sha2::{Digest, Sha256};
        let x = self.read_features(split)?;
        let mut h = Sha256::new();
        let mut sum = 0f64;
        for v in x.iter() {
            h.update(v.to_le_bytes());
            sum += *v as f64;
        }
        Ok((hex::encode(h.finalize()), sum))
    }

    /// Reads one split in full.
    pub fn read_split(&self, split: Split) -> Result<SplitData> {
        let file = self.file()?;
        let g = file
            .group(split.as_str())
            .with_context(|| format!("{} has no '{split}' split", self.path.display()))?;
        let features = read_features_ds(&g.dataset("features")?)
            .with_context(|| format!("reading {split}/features of {}", self.path.display()))?;
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

/// Reads a `features` dataset (f32 or f16) as f32.
pub(crate) fn read_features_ds(ds: &hdf5::Dataset) -> Result<ArrayD<f32>> {
    let shape = ds.shape();
    let ty = ds.dtype()?;
    let elem = ty.size();
    let le = matches!(ty.byte_order(), hdf5::datatype::ByteOrder::LittleEndian);
    if le
        && cfg!(target_endian = "little")
        && (elem == 4 || elem == 2)
        && matches!(ty.to_descriptor()?, hdf5::types::TypeDescriptor::Float(_))
    {
        let n: usize = shape.iter().product();
        if elem == 4 {
            let mut out = huge_vec::<f32>(n);
            // SAFETY: any bytes are a valid f32; the file holds little-endian f32 = native.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, n * 4) };
            if read_direct(ds, &shape, elem, bytes)? {
                return Ok(ArrayD::from_shape_vec(IxDyn(&shape), out)?);
            }
        } else {
            let mut raw = huge_vec::<half::f16>(n);
            // SAFETY: any bytes are a valid f16; the file holds little-endian f16 = native.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(raw.as_mut_ptr() as *mut u8, n * 2) };
            if read_direct(ds, &shape, elem, bytes)? {
                use half::slice::HalfFloatSliceExt;
                let mut out = huge_vec::<f32>(n);
                raw.convert_to_f32_slice(&mut out);
                return Ok(ArrayD::from_shape_vec(IxDyn(&shape), out)?);
            }
        }
    }
    if elem == 2 {
        use half::slice::HalfFloatSliceExt;
        let raw = ds.read_raw::<half::f16>()?;
        let mut out = vec![0f32; raw.len()];
        raw.convert_to_f32_slice(&mut out);
        Ok(ArrayD::from_shape_vec(IxDyn(&shape), out)?)
    } else {
        Ok(ds.read_dyn::<f32>()?)
    }
}

/// A zeroed vector of `n` values whose pages the kernel may back with transparent huge pages:
/// page faults of a fresh multi-GB buffer otherwise cost more than copying the data into it.
fn huge_vec<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    let bytes = n * std::mem::size_of::<T>();
    #[cfg(target_os = "linux")]
    if bytes >= 4 << 20 {
        let page = 4096usize;
        let start = (v.as_mut_ptr() as usize).div_ceil(page) * page;
        let end = (v.as_mut_ptr() as usize + bytes) / page * page;
        if end > start {
            // SAFETY: advisory only, on pages inside this vector's own allocation.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    v.resize(n, T::default());
    v
}

/// Fast path for unfiltered datasets whose storage is all allocated (how gapprobe writes
/// `features`): reads the raw bytes of each row chunk straight from the file with `pread`,
/// bypassing HDF5's per-chunk machinery. `None` when the layout does not qualify.
fn read_direct(ds: &hdf5::Dataset, shape: &[usize], elem: usize, out: &mut [u8]) -> Result<bool> {
    use rayon::prelude::*;
    use std::os::unix::fs::FileExt;
    let n = shape.first().copied().unwrap_or(0);
    let row_bytes = shape[1..].iter().product::<usize>() * elem;
    if n == 0 || row_bytes == 0 || !ds.filters().is_empty() || ds.file()?.userblock() != 0 {
        return Ok(false);
    }
    let file = std::fs::File::open(ds.filename())?;
    if !ds.is_chunked() {
        let Some(addr) = ds.offset() else {
            return Ok(false);
        };
        file.read_exact_at(out, addr)?;
        return Ok(true);
    }
    let Some(chunk) = ds.chunk() else {
        return Ok(false);
    };
    let nchunks = n.div_ceil(chunk[0]);
    if chunk[1..] != shape[1..] || ds.num_chunks() != Some(nchunks) {
        return Ok(false);
    }
    // (file address, first row) of every chunk; all must be allocated and full-size.
    let mut at = Vec::with_capacity(nchunks);
    for i in 0..nchunks {
        let Some(info) = ds.chunk_info(i) else {
            return Ok(false);
        };
        if info.size as usize != chunk[0] * row_bytes || info.offset[0] as usize >= n {
            return Ok(false);
        }
        at.push((info.addr, info.offset[0] as usize));
    }
    at.sort_by_key(|a| a.1);
    if at.iter().enumerate().any(|(i, a)| a.1 != i * chunk[0]) {
        return Ok(false);
    }
    out.par_chunks_mut(chunk[0] * row_bytes)
        .zip(at.par_iter())
        .try_for_each(|(dst, (addr, _))| file.read_exact_at(dst, *addr))?;
    Ok(true)
}
