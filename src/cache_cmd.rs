//! `gapprobe cache ls|info|verify|rm|gc|merge|compress|import|bench`.

use anyhow::{bail, Context, Result};
use gapprobe_features::cache::format::iso8601;
use gapprobe_features::cache::import::{import_h5, import_npy, ImportOptions, NpySplit};
use gapprobe_features::cache::lock::lock_path;
use gapprobe_features::cache::{
    compress, shard, verify, CacheEntry, Compression, EntryLock, FeatureCache,
};
use gapprobe_features::datasets::Split;
use std::path::{Path, PathBuf};

/// Prints one line per finished entry; with `all`, also shard files, partial files and locks.
pub fn ls(cache: &FeatureCache, all: bool) -> Result<()> {
    let scan = cache.scan();
    if scan.entries.is_empty() && !all {
        println!("no entries under {}", cache.root.display());
    }
    let line = |e: &CacheEntry| {
        let p = &e.provenance;
        println!(
            "{}  {:<10} {:<32} {:<20} {}",
            &e.key[..16],
            p.dataset,
            p.feature_point,
            e.created,
            e.path.display()
        );
    };
    scan.entries.iter().for_each(line);
    if all {
        for e in &scan.shards {
            print!("shard {} ", e.shard.expect("shards have one"));
            line(e);
        }
        for p in &scan.partials {
            let held = EntryLock::is_held(&lock_path(&partial_target(p)));
            println!(
                "partial{}  {}",
                if held { " (being written)" } else { "" },
                p.display()
            );
        }
        for (p, why) in &scan.broken {
            println!("broken  {}  ({why})", p.display());
        }
    }
    Ok(())
}

/// The entry or shard file an unfinished file (`.partial`, `.partial.tmp`, `.compress.tmp`)
/// is being written for.
fn partial_target(p: &Path) -> PathBuf {
    let name = p.to_string_lossy();
    match name.strip_suffix(".compress.tmp") {
        Some(t) => PathBuf::from(t),
        None => PathBuf::from(name.trim_end_matches(".tmp").trim_end_matches(".partial")),
    }
}

/// Finds an entry (or shard file) by file path or key prefix.
pub fn find(cache: &FeatureCache, what: &str) -> Result<CacheEntry> {
    if Path::new(what).is_file() {
        return CacheEntry::open(Path::new(what));
    }
    let matches: Vec<CacheEntry> = cache
        .list()?
        .into_iter()
        .filter(|e| e.key.starts_with(what))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one")),
        0 => bail!(
            "no cache entry under {} has a key starting with '{what}' (see `gapprobe cache ls`)",
            cache.root.display()
        ),
        n => bail!("'{what}' matches {n} entries; give more of the key"),
    }
}

/// Prints an entry's provenance and shapes; `json` adds a SHA-256 and sum of every split's
/// features (as little-endian f32, the way gapprobe reads them) for cross-checks.
pub fn info(cache: &FeatureCache, what: &str, json: bool) -> Result<()> {
    let e = find(cache, what)?;
    let classes = e.classes()?;
    let compression = compress::compression_of(&e.path)?;
    if json {
        let mut splits = serde_json::Map::new();
        for s in e.split_info()? {
            let (sha, sum) = e.features_checksum(s.split)?;
            splits.insert(
                s.split.to_string(),
                serde_json::json!({
                    "shape": s.shape, "dtype": s.dtype, "rows": s.rows,
                    "features_f32_sha256": sha, "features_sum": sum,
                }),
            );
        }
        let v = serde_json::json!({
            "path": e.path, "key": e.key, "created": e.created, "dataset_spec": e.dataset_spec,
            "shard": e.shard.map(|s| s.to_string()), "compression": compression,
            "provenance": e.provenance,
            "classes": {"superordinate": classes[0], "coarse": classes[1], "fine": classes[2]},
            "splits": splits,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "path: {}\nkey: {}\ncreated: {}\ndataset_spec: {}",
        e.path.display(),
        e.key,
        e.created,
        e.dataset_spec
    );
    if let Some(s) = e.shard {
        println!("shard: {s}");
    }
    println!("compression: {}", compression.as_deref().unwrap_or("none"));
    for (k, v) in e.provenance.fields() {
        println!("{k}: {v}");
    }
    for (level, names) in ["superordinate", "coarse", "fine"].iter().zip(&classes) {
        if !names.is_empty() {
            println!("classes/{level}: {}", names.len());
        }
    }
    for s in e.split_info()? {
        println!("{}/features: {:?} {}", s.split, s.shape, s.dtype);
    }
    Ok(())
}

/// Verifies entries (all of them, shard files and unreadable files included, when `whats` is
/// empty). Fails when any has a problem.
pub fn verify(cache: &FeatureCache, whats: &[String], sources: bool) -> Result<()> {
    let paths: Vec<PathBuf> = if whats.is_empty() {
        let scan = cache.scan();
        scan.entries
            .iter()
            .chain(&scan.shards)
            .map(|e| e.path.clone())
            .chain(scan.broken.into_iter().map(|(p, _)| p))
            .collect()
    } else {
        whats
            .iter()
            .map(|w| {
                if Path::new(w).exists() {
                    Ok(PathBuf::from(w))
                } else {
                    find(cache, w).map(|e| e.path)
                }
            })
            .collect::<Result<_>>()?
    };
    let mut bad = 0;
    for p in &paths {
        let r = verify::verify(p, sources);
        println!("{}  {}", if r.ok() { "ok  " } else { "FAIL" }, p.display());
        for n in &r.notes {
            println!("      {n}");
        }
        for n in &r.problems {
            println!("      problem: {n}");
        }
        bad += usize::from(!r.ok());
    }
    if bad > 0 {
        bail!("{bad} of {} cache files failed verification", paths.len());
    }
    println!("{} cache file(s) verified", paths.len());
    Ok(())
}

/// Removes entries by key prefix or path (with their lock files).
pub fn rm(cache: &FeatureCache, whats: &[String]) -> Result<()> {
    for w in whats {
        let path = if Path::new(w).is_file() {
            PathBuf::from(w)
        } else {
            find(cache, w)?.path
        };
        if EntryLock::is_held(&lock_path(&path)) {
            bail!(
                "{} is being written by another process; try again when it is done",
                path.display()
            );
        }
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        let _ = std::fs::remove_file(lock_path(&path));
        println!("removed {}", path.display());
    }
    Ok(())
}

/// Garbage collection: partial files nobody is writing, unused lock files, unreadable `.h5`
/// files, and optionally entries older than `older_than_days` or whose key is not listed in
/// `keep`. Only prints what it would remove unless `yes`.
pub fn gc(
    cache: &FeatureCache,
    older_than_days: Option<u64>,
    keep: Option<&Path>,
    yes: bool,
) -> Result<()> {
    let scan = cache.scan();
    let mut doomed: Vec<(PathBuf, String)> = Vec::new();
    for p in &scan.partials {
        if !EntryLock::is_held(&lock_path(&partial_target(p))) {
            doomed.push((p.clone(), "unfinished write nobody is resuming".into()));
        }
    }
    for (p, why) in &scan.broken {
        doomed.push((p.clone(), format!("unreadable: {why}")));
    }
    let keep: Option<Vec<String>> = keep
        .map(|k| {
            std::fs::read_to_string(k)
                .with_context(|| format!("reading keep-list {}", k.display()))
                .map(|t| t.split_whitespace().map(String::from).collect())
        })
        .transpose()?;
    let cutoff = older_than_days.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        iso8601(now.saturating_sub(d * 86_400))
    });
    for e in scan.entries.iter().chain(&scan.shards) {
        if let Some(c) = &cutoff {
            if e.created < *c {
                doomed.push((
                    e.path.clone(),
                    format!("created {} (before {c})", e.created),
                ));
                continue;
            }
        }
        if let Some(k) = &keep {
            if !k.iter().any(|k| e.key.starts_with(k.as_str())) {
                doomed.push((e.path.clone(), "key not in the keep-list".into()));
            }
        }
    }
    for l in &scan.locks {
        let target = PathBuf::from(l.to_string_lossy().trim_end_matches(".lock"));
        let partial = PathBuf::from(format!("{}.partial", target.display()));
        let doomed_target = doomed.iter().any(|(p, _)| *p == target);
        if !EntryLock::is_held(l)
            && (!partial.exists() || doomed.iter().any(|(p, _)| *p == partial))
            && (!target.exists() || doomed_target)
        {
            doomed.push((l.clone(), "lock nobody holds".into()));
        }
    }
    if doomed.is_empty() {
        println!("nothing to collect under {}", cache.root.display());
        return Ok(());
    }
    for (p, why) in &doomed {
        if yes {
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
            println!("removed {}  ({why})", p.display());
        } else {
            println!("would remove {}  ({why})", p.display());
        }
    }
    if !yes {
        println!(
            "dry run: run again with --yes to remove these {} file(s)",
            doomed.len()
        );
    }
    Ok(())
}

/// Prints `key-prefix  feature-point  path`, the line extract, merge and import end with.
pub fn print_entry_line(e: &CacheEntry) {
    println!(
        "{}  {}  {}",
        &e.key[..16],
        e.provenance.feature_point,
        e.path.display()
    );
}

/// `gapprobe cache merge`.
pub fn merge(cache: &FeatureCache, files: &[PathBuf], no_wait: bool) -> Result<()> {
    let e = shard::merge(cache, files, !no_wait)?;
    print_entry_line(&e);
    Ok(())
}

/// `gapprobe cache compress`: rewrites each entry with deflate-compressed features (same key).
pub fn compress(
    cache: &FeatureCache,
    whats: &[String],
    c: Compression,
    no_wait: bool,
) -> Result<()> {
    for w in whats {
        let e = find(cache, w)?;
        let before = std::fs::metadata(&e.path)?.len();
        let (e, rewritten) = compress::compress(&e.path, c, !no_wait)?;
        let after = std::fs::metadata(&e.path)?.len();
        if rewritten {
            println!(
                "{}  {c}  {before} -> {after} bytes ({:.0}%)  {}",
                &e.key[..16],
                100.0 * after as f64 / before.max(1) as f64,
                e.path.display()
            );
        } else {
            println!("{}  already {c}  {}", &e.key[..16], e.path.display());
        }
    }
    Ok(())
}

/// `gapprobe cache import`: `--h5 FILE` or `--split SPLIT=FEATURES.npy,LABELS` (repeatable).
pub fn import(
    cache: &FeatureCache,
    h5: Option<&Path>,
    splits: &[String],
    opts: &ImportOptions,
) -> Result<()> {
    let e = match (h5, splits.is_empty()) {
        (Some(f), true) => import_h5(cache, f, opts)?,
        (None, false) => {
            let splits = splits
                .iter()
                .map(|s| {
                    let help =
                        || format!("--split '{s}' must look like train=features.npy,labels.txt");
                    let (split, files) = s.split_once('=').with_context(help)?;
                    let (f, l) = files.split_once(',').with_context(help)?;
                    Ok(NpySplit {
                        split: split.parse::<Split>()?,
                        features: f.into(),
                        labels: l.into(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            import_npy(cache, &splits, opts)?
        }
        _ => bail!("give either --h5 FILE or one or more --split SPLIT=FEATURES.npy,LABELS"),
    };
    print_entry_line(&e);
    Ok(())
}

/// `gapprobe cache bench`: writes a synthetic `rows × dim` split into a throwaway cache under
/// `dir` in batches of `batch` rows, as an extraction does, then reads it back `reps` times (from
/// page cache) and prints both throughputs.
pub fn bench(
    dir: &Path,
    rows: usize,
    dim: usize,
    batch: usize,
    reps: usize,
    f16: bool,
) -> Result<()> {
    use gapprobe_features::cache::{EntryPlan, EntryWriter, Provenance, SplitPlan};
    let tmp = dir.join(format!("gapprobe-cache-bench-{}", std::process::id()));
    let cache = FeatureCache::new(&tmp);
    let mut state = 0x9e3779b97f4a7c15u64;
    let data: Vec<f32> = (0..rows * dim)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    let features = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[rows, dim]), data)?;
    let prov = Provenance {
        model_id: "bench".into(),
        model_revision: "bench".into(),
        weights_fingerprint: String::new(),
        config_hash: String::new(),
        preprocess: String::new(),
        feature_point: "projector.mean".into(),
        compute_dtype: "f32".into(),
        storage_dtype: if f16 { "f16" } else { "f32" }.into(),
        device: "cpu".into(),
        gapprobe_version: gapprobe_features::VERSION.into(),
        dataset: "bench".into(),
        manifest_hash: String::new(),
        llm_input: String::new(),
    };
    let ids: Vec<String> = (0..rows).map(|i| i.to_string()).collect();
    let batch = batch.max(1);
    let plan = EntryPlan {
        provenance: prov.clone(),
        classes: Default::default(),
        splits: vec![SplitPlan {
            split: Split::Train,
            rows: 0..rows,
            total: rows,
            paths: ids.clone(),
            ids,
            labels: Default::default(),
        }],
        dataset_spec: "bench".into(),
        batch_size: batch,
        shard: None,
        skipped: Vec::new(),
    };
    let t = std::time::Instant::now();
    let mut writer = EntryWriter::open(&cache.entry_path(&prov), plan)?;
    for row0 in (0..rows).step_by(batch) {
        let rows = features.slice_axis(ndarray::Axis(0), (row0..(row0 + batch).min(rows)).into());
        writer.write_rows(Split::Train, row0, rows)?;
    }
    let entry = writer.finish()?;
    let written = t.elapsed().as_secs_f64();
    println!(
        "cache write: {rows} x {dim} f32 in batches of {batch}, {} stored: {:.1} ms = {:.2} GB/s \
         of f32 input (file created, written, finished)",
        if f16 { "f16" } else { "f32" },
        written * 1e3,
        (rows * dim * 4) as f64 / written / 1e9
    );
    let bytes = (rows * dim * 4) as f64;
    let mut times = Vec::new();
    for _ in 0..reps.max(1) + 1 {
        let t = std::time::Instant::now();
        let x = entry.read_features(Split::Train)?;
        times.push(t.elapsed().as_secs_f64());
        assert_eq!(x.shape(), [rows, dim]);
    }
    times.remove(0); // the first read may still be faulting in the page cache
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "cache read: {rows} x {dim} {} stored, read as f32 ({:.0} MiB): median {:.1} ms = {:.2} GB/s, best {:.2} GB/s over {} reads",
        if f16 { "f16" } else { "f32" },
        bytes / (1 << 20) as f64,
        median * 1e3,
        bytes / median / 1e9,
        bytes / times[0] / 1e9,
        times.len()
    );
    std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    Ok(())
}
