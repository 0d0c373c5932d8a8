//! `gapprobe cache compress` / `extract --compress`: rewrites a finished entry with its `features`
//! deflate-compressed (optionally shuffled first). Compression is storage, not provenance: the key
//! and every other group, dataset and attribute stay the same; only the features' filters change
//! and a root attribute `compression` (e.g. `deflate:4+shuffle`) is added.
//!
//! The resumable writer never compresses (its fixed, preallocated chunks are what make it
//! kill-safe); compression always rewrites a *finished* file: a complete copy is written to
//! `<entry>.compress.tmp`, its features are read back and compared bit for bit with the
//! original, and only then is it renamed over the entry. A process killed at any point leaves
//! either the old or the new entry under the final name (plus, at worst, a stale `.compress.tmp`
//! that `gapprobe cache gc` removes).

use super::entry::CacheEntry;
use super::format::{vlu, write_str_attr};
use super::lock::EntryLock;
use anyhow::{bail, Context, Result};
use hdf5::types::{IntSize, TypeDescriptor, VarLenUnicode};
use ndarray::IxDyn;
use std::path::{Path, PathBuf};
use tracing::info;

/// Root attribute naming the features' compression (absent: uncompressed).
pub const ATTR: &str = "compression";

/// Rows copied per block (in chunks), so compressing never holds a whole split twice.
const BLOCK_CHUNKS: usize = 16;

/// Deflate level 1-9, optionally after the shuffle filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    pub level: u8,
    pub shuffle: bool,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            level: 4,
            shuffle: false,
        }
    }
}

impl Compression {
    /// Deflate at `level` (1-9).
    pub fn new(level: u8, shuffle: bool) -> Result<Self> {
        if !(1..=9).contains(&level) {
            bail!("compression level {level} is not in 1-9");
        }
        if !hdf5::filters::deflate_available() {
            bail!("this build of HDF5 has no deflate filter");
        }
        Ok(Compression { level, shuffle })
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "deflate:{}{}",
            self.level,
            if self.shuffle { "+shuffle" } else { "" }
        )
    }
}

/// Where the compressed copy of `path` is written before it replaces `path`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".compress.tmp");
    PathBuf::from(s)
}

/// The `compression` attribute of the file at `path` (`None`: uncompressed).
pub fn compression_of(path: &Path) -> Result<Option<String>> {
    let file = hdf5::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(match file.attr(ATTR) {
        Ok(a) => Some(a.read_scalar::<VarLenUnicode>()?.to_string()),
        Err(_) => None,
    })
}

/// Compresses the finished entry (or shard file) at `path`, taking its lock (waiting for it
/// when `wait`). Returns the entry and whether it was rewritten (false: it already had `c`).
pub fn compress(path: &Path, c: Compression, wait: bool) -> Result<(CacheEntry, bool)> {
    let _lock = EntryLock::acquire(path, wait)?;
    compress_locked(path, c)
}

/// Like [`compress`], for a caller that already holds the entry's lock.
pub fn compress_locked(path: &Path, c: Compression) -> Result<(CacheEntry, bool)> {
    let before = CacheEntry::open(path)?;
    if compression_of(path)?.as_deref() == Some(c.to_string().as_str()) {
        return Ok((before, false));
    }
    let tmp = tmp_path(path);
    let result = write_copy(path, &tmp, c).and_then(|()| check_copy(&before, &tmp));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("compressing {}", path.display())));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    info!("compressed {} ({c})", path.display());
    Ok((CacheEntry::open(path)?, true))
}

/// Writes `dst`: everything of `src` as it is, except `features` (filtered with `c`) and the
/// root `compression` attribute.
fn write_copy(src: &Path, dst: &Path, c: Compression) -> Result<()> {
    let sf = hdf5::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let df = hdf5::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    copy_attrs(&sf, &df, &[ATTR])?;
    write_str_attr(&df, ATTR, &c.to_string())?;
    for name in sf.member_names()? {
        if let Ok(sg) = sf.group(&name) {
            if sg.link_exists("features") {
                let dg = df.create_group(&name)?;
                copy_attrs(&sg, &dg, &[])?;
                for child in sg.member_names()? {
                    if child == "features" {
                        copy_features(&sg.dataset("features")?, &dg, c)?;
                    } else {
                        copy_object(&sg, &child, &dg)?;
                    }
                }
                continue;
            }
        }
        copy_object(&sf, &name, &df)?;
    }
    df.flush()?;
    Ok(())
}

/// Copies object `name` of `src` (a group with everything under it, or a dataset) into `dst`.
fn copy_object(src: &hdf5::Group, name: &str, dst: &hdf5::Group) -> Result<()> {
    match src.dataset(name) {
        Ok(d) => d.copy_to(dst, name),
        Err(_) => src.group(name)?.copy_to(dst, name),
    }
    .with_context(|| format!("copying {name}"))
}

/// Copies every attribute of `src` onto `dst` except `skip`. gapprobe writes only UTF-8 string,
/// uint8 and uint64 scalar attributes; anything else is refused rather than altered.
fn copy_attrs(src: &hdf5::Location, dst: &hdf5::Location, skip: &[&str]) -> Result<()> {
    for name in src.attr_names()? {
        if skip.contains(&name.as_str()) {
            continue;
        }
        let a = src.attr(&name)?;
        match a.dtype()?.to_descriptor()? {
            TypeDescriptor::VarLenUnicode => {
                let v = a.read_scalar::<VarLenUnicode>()?;
                dst.new_attr::<VarLenUnicode>()
                    .create(name.as_str())?
                    .write_scalar(&vlu(v.as_str())?)?;
            }
            TypeDescriptor::Unsigned(IntSize::U1) => {
                let v = a.read_scalar::<u8>()?;
                dst.new_attr::<u8>()
                    .create(name.as_str())?
                    .write_scalar(&v)?;
            }
            TypeDescriptor::Unsigned(IntSize::U8) => {
                let v = a.read_scalar::<u64>()?;
                dst.new_attr::<u64>()
                    .create(name.as_str())?
                    .write_scalar(&v)?;
            }
            t => bail!("attribute {name} has a type gapprobe does not write ({t:?})"),
        }
    }
    Ok(())
}

/// Writes `features` into `dst` with `c`'s filters, the same dtype and row chunks, copying the
/// stored values (f32 or f16) unchanged, a block of chunks at a time.
fn copy_features(src: &hdf5::Dataset, dst: &hdf5::Group, c: Compression) -> Result<()> {
    let shape = src.shape();
    let n = shape.first().copied().unwrap_or(0);
    let f16 = src.dtype()?.size() == 2;
    if n == 0 || shape.iter().product::<usize>() == 0 {
        // Nothing to compress (and HDF5 filters need a chunked layout).
        return Ok(src.copy_to(dst, "features")?);
    }
    let chunk = match src.chunk() {
        Some(c) => c,
        None => {
            let row_bytes = shape[1..].iter().product::<usize>() * if f16 { 2 } else { 4 };
            let mut c = shape.clone();
            c[0] = (super::format::CHUNK_BYTES / row_bytes.max(1)).clamp(1, n);
            c
        }
    };
    let b = dst.new_dataset_builder();
    let b = if f16 {
        b.empty::<half::f16>()
    } else {
        b.empty::<f32>()
    };
    let mut b = b.shape(shape.clone()).chunk(chunk.clone());
    if c.shuffle {
        b = b.shuffle();
    }
    let ds = b.deflate(c.level).create("features")?;
    let block = chunk[0] * BLOCK_CHUNKS;
    for a in (0..n).step_by(block) {
        let e = (a + block).min(n);
        let sel = rows(a, e, shape.len());
        if f16 {
            let x = src.read_slice::<half::f16, _, IxDyn>(sel.clone())?;
            ds.write_slice(&x, sel)?;
        } else {
            let x = src.read_slice::<f32, _, IxDyn>(sel.clone())?;
            ds.write_slice(&x, sel)?;
        }
    }
    Ok(())
}

/// Whether two `features` datasets of one shape and dtype hold the same stored values, bit for
/// bit, compared a block of rows at a time (whole splits can be many GB).
fn same_bits(x: &hdf5::Dataset, y: &hdf5::Dataset) -> Result<bool> {
    let shape = x.shape();
    let n = shape.first().copied().unwrap_or(0);
    let row = shape[1..].iter().product::<usize>().max(1);
    let block = (BLOCK_CHUNKS * super::format::CHUNK_BYTES / 4 / row).max(1);
    let f16 = x.dtype()?.size() == 2;
    for a in (0..n).step_by(block) {
        let sel = rows(a, (a + block).min(n), shape.len());
        let same = if f16 {
            let p = x.read_slice::<half::f16, _, IxDyn>(sel.clone())?;
            let q = y.read_slice::<half::f16, _, IxDyn>(sel)?;
            p.iter()
                .zip(q.iter())
                .all(|(p, q)| p.to_bits() == q.to_bits())
        } else {
            let p = x.read_slice::<f32, _, IxDyn>(sel.clone())?;
            let q = y.read_slice::<f32, _, IxDyn>(sel)?;
            p.iter()
                .zip(q.iter())
                .all(|(p, q)| p.to_bits() == q.to_bits())
        };
        if !same {
            return Ok(false);
        }
    }
    Ok(true)
}

fn rows(a: usize, b: usize, ndim: usize) -> hdf5::Selection {
    let mut v: Vec<hdf5::SliceOrIndex> = vec![(a..b).into()];
    v.extend((1..ndim).map(|_| hdf5::SliceOrIndex::from(..)));
    hdf5::Hyperslab::from(v).into()
}

/// Reads the copy back: same key and provenance, same splits and shapes, and every split's
/// features bit-identical to the original's.
fn check_copy(before: &CacheEntry, tmp: &Path) -> Result<()> {
    let after = CacheEntry::open(tmp)?;
    if after.key != before.key || after.provenance != before.provenance {
        bail!("the compressed copy {} changed the key", tmp.display());
    }
    let (sa, sb) = (before.split_info()?, after.split_info()?);
    if sa.len() != sb.len() {
        bail!("the compressed copy {} lost a split", tmp.display());
    }
    let (fa, fb) = (
        hdf5::File::open(&before.path)?,
        hdf5::File::open(&after.path)?,
    );
    for (a, b) in sa.iter().zip(&sb) {
        if a.split != b.split || a.shape != b.shape || a.dtype != b.dtype {
            bail!(
                "the compressed copy {} stores {} differently",
                tmp.display(),
                a.split
            );
        }
        let x = fa.group(a.split.as_str())?.dataset("features")?;
        let y = fb.group(b.split.as_str())?.dataset("features")?;
        if !same_bits(&x, &y)? {
            bail!(
                "the compressed copy {} does not read back {}'s features bit for bit",
                tmp.display(),
                a.split
            );
        }
    }
    Ok(())
}
