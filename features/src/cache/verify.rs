//! `gapprobe cache verify`: is an entry what it claims to be, and do its sources still
//! fingerprint the same?

use super::entry::{read_features_ds, CacheEntry};
use super::format::{read_str_attr, read_strings};
use super::{import, source};
use crate::datasets::{DatasetSpec, LabelLevel};
use crate::models::Checkpoint;
use crate::FeaturePoint;
use std::path::{Path, PathBuf};

/// Outcome of verifying one file.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub path: PathBuf,
    /// What is wrong, each with what to do about it.
    pub problems: Vec<String>,
    /// What was checked and found fine, or could not be checked.
    pub notes: Vec<String>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the entry (or shard file) at `path`; with `sources`, also re-fingerprints the model
/// weights and config and reloads the dataset to compare its manifest hash.
pub fn verify(path: &Path, sources: bool) -> VerifyReport {
    let mut r = VerifyReport {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let p = path.display().to_string();
    let rm = format!("remove it (`gapprobe cache rm {p}`) and extract again");
    let entry = match CacheEntry::open(path) {
        Ok(e) => e,
        Err(e) => {
            r.problems.push(format!("{e:#}"));
            return r;
        }
    };
    if let Err(e) = check_structure(&entry, &mut r, &rm) {
        r.problems.push(format!("{p} cannot be read: {e:#}; {rm}"));
    }
    if sources {
        check_sources(&entry, &mut r);
    }
    r
}

fn check_structure(entry: &CacheEntry, r: &mut VerifyReport, rm: &str) -> anyhow::Result<()> {
    let p = entry.path.display().to_string();
    if entry.key != entry.provenance.key() {
        r.problems.push(format!(
            "{p}: stored key {} is not the hash of its provenance ({}): the file was edited; {rm}",
            entry.key,
            entry.provenance.key()
        ));
    }
    let file = hdf5::File::open(&entry.path)?;
    for (k, v) in entry.provenance.fields() {
        if read_str_attr(&file, &k).ok().as_deref() != Some(v.as_str()) {
            r.problems.push(format!(
                "{p}: attribute {k} disagrees with the provenance JSON; {rm}"
            ));
        }
    }
    let classes = entry.classes()?;
    let mut rows = 0;
    for info in entry.split_info()? {
        let split = info.split;
        let g = file.group(split.as_str())?;
        let n = info.shape[0];
        rows += n;
        let ids = read_strings(&g, "ids")?.len();
        let paths = read_strings(&g, "paths")?.len();
        if ids != n || paths != n {
            r.problems.push(format!(
                "{p}: {split} has {n} feature rows but {ids} ids and {paths} paths; {rm}"
            ));
        }
        let done = g.dataset("rows_done")?.read_raw::<u64>()?[0] as usize;
        if done != n {
            r.problems.push(format!(
                "{p}: {split} records {done} of {n} rows written; {rm}"
            ));
        }
        let lg = g.group("labels")?;
        for level in LabelLevel::ALL {
            if !lg.link_exists(level.as_str()) {
                continue;
            }
            let y = lg.dataset(level.as_str())?.read_raw::<i32>()?;
            let k = classes[level as usize].len() as i32;
            if y.len() != n {
                r.problems.push(format!(
                    "{p}: {split} has {} {level} labels for {n} rows; {rm}",
                    y.len()
                ));
            }
            if let Some(bad) = y.iter().find(|&&v| v < -1 || v >= k) {
                r.problems.push(format!(
                    "{p}: {split} {level} label {bad} is outside the {k} classes; {rm}"
                ));
            }
        }
        let x = read_features_ds(&g.dataset("features")?)?;
        let bad = x.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            r.problems.push(format!(
                "{p}: {split}/features holds {bad} NaN/Inf values; {rm}"
            ));
        }
    }
    r.notes.push(format!(
        "structure: complete, {rows} rows, counts consistent, all values finite"
    ));
    Ok(())
}

fn check_sources(entry: &CacheEntry, r: &mut VerifyReport) {
    let p = entry.path.display().to_string();
    let prov = &entry.provenance;
    let stale = format!(
        "the cached features no longer match their sources; remove the entry (`gapprobe cache rm {p}`) and extract again"
    );
    if let Some(files) = prov.model_id.strip_prefix("imported:") {
        let files: Vec<PathBuf> = files.split(',').map(PathBuf::from).collect();
        if files.iter().all(|f| f.is_file()) {
            match import::files_fingerprint(&files) {
                Ok(f) if f == prov.weights_fingerprint => r
                    .notes
                    .push("sources: imported files fingerprint the same".into()),
                Ok(_) => r.problems.push(format!(
                    "{p}: the imported files {files:?} changed since the import; import them again"
                )),
                Err(e) => r.notes.push(format!("sources: not checked ({e:#})")),
            }
        } else {
            r.notes
                .push("sources: imported files not found here; not re-fingerprinted".into());
        }
        return;
    }
    let point: Result<FeaturePoint, _> = prov.feature_point.parse();
    match (Checkpoint::resolve(&prov.model_id), point) {
        (Ok(ck), Ok(point)) => {
            if source::revision(&ck) != prov.model_revision {
                r.problems.push(format!(
                    "{p}: model '{}' now resolves to revision {} (cached: {}); {stale}",
                    prov.model_id,
                    source::revision(&ck),
                    prov.model_revision
                ));
            }
            let pre = serde_json::to_string(&ck.preprocess).unwrap_or_default();
            if pre != prov.preprocess {
                r.problems.push(format!(
                    "{p}: the preprocessing config of '{}' changed; {stale}",
                    prov.model_id
                ));
            }
            match source::fingerprint(&ck, &point) {
                Ok((w, c)) => {
                    if w != prov.weights_fingerprint {
                        r.problems.push(format!(
                            "{p}: the weights of '{}' fingerprint differently now; {stale}",
                            prov.model_id
                        ));
                    } else if c != prov.config_hash {
                        r.problems.push(format!(
                            "{p}: config.json of '{}' changed; {stale}",
                            prov.model_id
                        ));
                    } else {
                        r.notes.push(format!(
                            "sources: weights and config of '{}' fingerprint the same",
                            prov.model_id
                        ));
                    }
                }
                Err(e) => r.problems.push(format!("{p}: {e:#}; {stale}")),
            }
        }
        (Err(e), _) => r.notes.push(format!(
            "sources: model '{}' not reachable here, weights not re-fingerprinted ({e:#})",
            prov.model_id
        )),
        (_, Err(e)) => r.problems.push(format!("{p}: {e:#}")),
    }
    if entry.dataset_spec.is_empty() {
        r.notes
            .push("sources: no dataset spec recorded; manifest not re-hashed".into());
        return;
    }
    match entry
        .dataset_spec
        .parse::<DatasetSpec>()
        .and_then(|s| s.load())
    {
        Ok(ds) if ds.manifest_hash() == prov.manifest_hash => r.notes.push(format!(
            "sources: dataset {} hashes the same",
            entry.dataset_spec
        )),
        Ok(_) => r.problems.push(format!(
            "{p}: dataset {} changed (ids, paths, splits, labels or classes); {stale}",
            entry.dataset_spec
        )),
        Err(e) => r.notes.push(format!(
            "sources: dataset {} not loadable here, manifest not re-hashed ({e:#})",
            entry.dataset_spec
        )),
    }
}
