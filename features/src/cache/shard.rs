//! `--shard i/N`: split every dataset split into N contiguous row blocks, aligned to whole
//! encoder batches so each shard batches its images exactly as a single-machine run does, and
//! join the N shard files back into one entry ([`merge`]).

use super::entry::{read_features_ds, CacheEntry, SPLITS};
use super::format::read_u64_attr;
use super::lock::EntryLock;
use super::writer::{EntryPlan, EntryWriter, SplitPlan};
use super::FeatureCache;
use anyhow::{bail, Context, Result};
use std::ops::Range;
use std::path::PathBuf;
use tracing::info;

/// Shard `index` of `count` (0-based: `0/4` … `3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let help = || format!("--shard '{s}' must be I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').with_context(help)?;
        let shard = Shard {
            index: i.trim().parse().with_context(help)?,
            count: n.trim().parse().with_context(help)?,
        };
        if shard.count == 0 || shard.index >= shard.count {
            bail!(help());
        }
        Ok(shard)
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Rows of a split of `n` rows this shard extracts: batches `[i·B/N, (i+1)·B/N)` of the
    /// split's `B = ceil(n / batch)` batches, as rows.
    pub fn rows(&self, n: usize, batch: usize) -> Range<usize> {
        let batch = batch.max(1);
        let nb = n.div_ceil(batch);
        let lo = self.index * nb / self.count;
        let hi = (self.index + 1) * nb / self.count;
        (lo * batch).min(n)..(hi * batch).min(n)
    }
}

/// Joins shard files (all N shards of one provenance) into the finished entry, copying rows in
/// order. Returns the entry; fails naming the problem when the shards do not fit together.
pub fn merge(cache: &FeatureCache, files: &[PathBuf], wait: bool) -> Result<CacheEntry> {
    let mut shards: Vec<CacheEntry> = files
        .iter()
        .map(|f| CacheEntry::open(f))
        .collect::<Result<_>>()?;
    let first = shards.first().context("no shard files given")?.clone();
    let Some(Shard { count, .. }) = first.shard else {
        bail!(
            "{} is not a shard file (it has no shard_index/shard_count)",
            first.path.display()
        );
    };
    for s in &shards {
        if s.key != first.key || s.provenance != first.provenance {
            bail!(
                "{} and {} belong to different entries (keys {} and {}); merge only shards of one extraction",
                first.path.display(), s.path.display(), &first.key[..16], &s.key[..16]
            );
        }
        match s.shard {
            Some(sh) if sh.count == count => {}
            _ => bail!("{} is not a shard of {count}", s.path.display()),
        }
    }
    shards.sort_by_key(|s| s.shard.expect("checked").index);
    for (i, s) in shards.iter().enumerate() {
        let got = s.shard.expect("checked").index;
        if got != i {
            bail!(
                "shard {i}/{count} is {} (got shard {got} {}); give each of the {count} shard files once",
                if got > i { "missing" } else { "given twice" },
                s.path.display()
            );
        }
    }
    if shards.len() != count {
        bail!(
            "{} shard files given but they are shards of {count}",
            shards.len()
        );
    }
    let target = cache.entry_path(&first.provenance);
    if target.exists() {
        info!("{} already exists; nothing to merge", target.display());
        return CacheEntry::open(&target);
    }
    let _lock = EntryLock::acquire(&target, wait)?;
    let opened: Vec<hdf5::File> = shards
        .iter()
        .map(|s| hdf5::File::open(&s.path).with_context(|| format!("opening {}", s.path.display())))
        .collect::<Result<_>>()?;
    let batch = read_u64_attr(&opened[0], "batch_size").unwrap_or(0) as usize;
    let mut splits = Vec::new();
    for split in SPLITS {
        let present = opened
            .iter()
            .filter(|f| f.link_exists(split.as_str()))
            .count();
        if present == 0 {
            continue;
        }
        if present != count {
            bail!("split {split} is in only {present} of the {count} shard files");
        }
        let mut plan = SplitPlan {
            split,
            rows: 0..0,
            total: 0,
            ids: Vec::new(),
            paths: Vec::new(),
            labels: Default::default(),
        };
        for (s, f) in shards.iter().zip(&opened) {
            let data = s.read_split(split)?;
            let g = f.group(split.as_str())?;
            let (a, b, n) = (
                read_u64_attr(&g, "row_start").unwrap_or(0) as usize,
                read_u64_attr(&g, "row_end").unwrap_or(0) as usize,
                read_u64_attr(&g, "rows_total").unwrap_or(0) as usize,
            );
            if a != plan.rows.end || b - a != data.ids.len() || (plan.total != 0 && n != plan.total)
            {
                bail!(
                    "{}: its {split} rows {a}..{b} do not continue the previous shards (which end at row {}); the shards were not written by one `--shard i/{count}` extraction",
                    s.path.display(),
                    plan.rows.end
                );
            }
            plan.rows.end = b;
            plan.total = n;
            plan.ids.extend(data.ids);
            plan.paths.extend(data.paths);
            for (dst, src) in plan.labels.iter_mut().zip(data.labels) {
                if let Some(src) = src {
                    dst.get_or_insert_with(Vec::new).extend(src);
                }
            }
        }
        if plan.rows.end != plan.total {
            bail!(
                "the shards cover {} of the {} {split} rows",
                plan.rows.end,
                plan.total
            );
        }
        splits.push(plan);
    }
    let plan = EntryPlan {
        provenance: first.provenance.clone(),
        classes: first.classes()?,
        splits,
        dataset_spec: first.dataset_spec.clone(),
        batch_size: batch,
        shard: None,
        skipped: first.skipped()?,
    };
    let mut w = EntryWriter::open(&target, plan)?;
    let mut row0 = [0usize; 3];
    for f in &opened {
        for (k, split) in SPLITS.into_iter().enumerate() {
            if !f.link_exists(split.as_str()) {
                continue;
            }
            let x = read_features_ds(&f.group(split.as_str())?.dataset("features")?)?;
            let n = x.shape()[0];
            w.write_rows(split, row0[k], x.view())?;
            row0[k] += n;
        }
    }
    let entry = w.finish()?;
    info!("merged {count} shards into {}", entry.path.display());
    Ok(entry)
}

/// Split `split` rows of a dataset into a shard plan (all rows when `shard` is `None`).
pub fn plan_rows(shard: Option<Shard>, n: usize, batch: usize) -> Range<usize> {
    shard.map(|s| s.rows(n, batch)).unwrap_or(0..n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_rows_in_whole_batches() {
        for n in [0, 1, 7, 64, 65, 1000] {
            for count in 1..6 {
                let mut next = 0;
                for index in 0..count {
                    let r = Shard { index, count }.rows(n, 4);
                    assert_eq!(r.start, next);
                    assert!(r.start.is_multiple_of(4) || r.start == n);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
        assert!("3/3".parse::<Shard>().is_err());
        assert_eq!(
            "1/3".parse::<Shard>().unwrap(),
            Shard { index: 1, count: 3 }
        );
    }
}
