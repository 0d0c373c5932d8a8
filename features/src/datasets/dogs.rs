//! Stanford Dogs: `Images/<wnid>-<Breed>/*.jpg` and the lists `train_list.mat` / `test_list.mat`
//! (variables `file_list` and `labels`, 1-based), in `lists/` or at the top level.

use super::lines::{find_file, BadPolicy};
use super::mat::read_mat;
use super::{Dataset, LabelLevel, Sample, Split};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Breed from a folder name: `n02085782-Japanese_spaniel` → `Japanese spaniel`.
pub(crate) fn breed_name(folder: &str) -> String {
    let s = match folder.split_once('-') {
        Some((wnid, rest))
            if wnid.starts_with('n') && wnid[1..].chars().all(|c| c.is_ascii_digit()) =>
        {
            rest
        }
        _ => folder,
    };
    s.replace('_', " ")
}

/// Loads Stanford Dogs from `root` (the folder holding `Images/` and the lists).
pub(crate) fn load(root: &Path, name: &str, skip_bad: bool) -> Result<Dataset> {
    let img_root = root.join("Images");
    if !img_root.is_dir() {
        bail!("{}: Stanford Dogs needs an Images/ folder", root.display());
    }
    let mut bad = BadPolicy::new(skip_bad);
    let mut ds = Dataset {
        name: name.to_string(),
        root: img_root.clone(),
        ..Default::default()
    };
    let mut label_folder: HashMap<i64, String> = HashMap::new();
    let mut seen = HashSet::new();
    for (list, split) in [
        ("train_list.mat", Split::Train),
        ("test_list.mat", Split::Test),
    ] {
        let file =
            find_file(root, &[format!("lists/{list}").as_str(), list]).with_context(|| {
                format!(
                    "{}: no lists/{list} (Stanford Dogs lists.tar)",
                    root.display()
                )
            })?;
        let vars = read_mat(&file)?;
        let var = |v: &str| {
            vars.get(v)
                .with_context(|| format!("{}: no variable '{v}'", file.display()))
        };
        let files = var("file_list")?
            .strings()
            .with_context(|| format!("{}: file_list", file.display()))?;
        let labels = var("labels")?
            .numbers()
            .with_context(|| format!("{}: labels", file.display()))?;
        if files.len() != labels.len() {
            bail!(
                "{}: file_list has {} entries but labels {}",
                file.display(),
                files.len(),
                labels.len()
            );
        }
        for (i, (rel, &label)) in files.iter().zip(&labels).enumerate() {
            let entry = i + 1;
            let relp = Path::new(rel);
            let Some(folder) = rel.split('/').next().filter(|_| rel.contains('/')) else {
                bad.bad(
                    &file,
                    0,
                    rel,
                    relp,
                    &format!("file_list entry {entry}: '{rel}' is not <folder>/<file>"),
                )?;
                continue;
            };
            if label < 1.0 || label.fract() != 0.0 {
                bad.bad(
                    &file,
                    0,
                    rel,
                    relp,
                    &format!("labels entry {entry}: unknown class id {label}"),
                )?;
                continue;
            }
            let prev = label_folder
                .entry(label as i64)
                .or_insert_with(|| folder.to_string());
            if prev.as_str() != folder {
                let msg = format!("labels entry {entry}: class id {label} of '{rel}' already names folder '{prev}'");
                bad.bad(&file, 0, rel, relp, &msg)?;
                continue;
            }
            if !seen.insert(rel.clone()) {
                bad.bad(
                    &file,
                    0,
                    rel,
                    relp,
                    &format!("file_list entry {entry}: duplicate image '{rel}'"),
                )?;
                continue;
            }
            if !img_root.join(relp).is_file() {
                let msg = format!(
                    "file_list entry {entry}: missing image {}",
                    img_root.join(relp).display()
                );
                bad.bad(&file, 0, rel, relp, &msg)?;
                continue;
            }
            let labels = [
                Some(ds.intern_class(LabelLevel::Superordinate, "Dog")),
                None,
                Some(ds.intern_class(LabelLevel::Fine, &breed_name(folder))),
            ];
            ds.samples.push(Sample {
                id: rel.clone(),
                path: PathBuf::from(rel),
                split,
                labels,
            });
        }
    }
    bad.finish(&mut ds);
    Ok(ds)
}
