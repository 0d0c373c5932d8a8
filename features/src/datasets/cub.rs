//! CUB-200-2011 and NABirds: `images.txt`, `classes.txt`, `image_class_labels.txt`,
//! `train_test_split.txt` (NABirds keys them by UUID and adds `hierarchy.txt`). CUB's per-image
//! attribute annotations, when present, become [`Dataset::attributes`] text ([`read_attributes`], in cub_attributes.rs).

use super::cub_attributes::read_attributes;
use super::lines::{key_rest, read_lines, BadPolicy};
use super::{Dataset, LabelLevel, Sample, Split};
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Which of the two layouts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    Cub,
    NaBirds,
}

/// The dataset folder: `root` itself or its usual subfolder (`CUB_200_2011`, `nabirds`).
fn locate(root: &Path, sub: &str) -> PathBuf {
    if !root.join("images.txt").exists() && root.join(sub).join("images.txt").exists() {
        root.join(sub)
    } else {
        root.to_path_buf()
    }
}

/// CUB fine name: `001.Black_footed_Albatross` → `Black footed Albatross`.
pub(crate) fn cub_fine_name(raw: &str) -> String {
    let s = match raw.split_once('.') {
        Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
        _ => raw,
    };
    s.replace('_', " ")
}

/// NABirds fine name: the leaf name without its sex/age/plumage suffix,
/// `Red-winged Blackbird (Female/juvenile)` → `Red-winged Blackbird`.
pub(crate) fn strip_variant(name: &str) -> &str {
    match name.rfind(" (") {
        Some(i) if name.ends_with(')') => name[..i].trim_end(),
        _ => name,
    }
}

/// `id → (value, line)` from a two-column file; classes are metadata, so any bad line is fatal.
fn read_table(path: &Path) -> Result<HashMap<String, String>> {
    let mut m = HashMap::new();
    for l in read_lines(path)? {
        let (k, v) = key_rest(&l.text).with_context(|| {
            format!(
                "{}:{}: malformed line {:?}: expected '<id> <value>'",
                path.display(),
                l.no,
                l.text
            )
        })?;
        if m.insert(k.to_string(), v.to_string()).is_some() {
            bail!("{}:{}: duplicate id '{k}'", path.display(), l.no);
        }
    }
    Ok(m)
}

/// Per-image two-column file: malformed and duplicate lines go through `bad`.
fn read_image_table(path: &Path, bad: &mut BadPolicy) -> Result<HashMap<String, (String, usize)>> {
    let mut m = HashMap::new();
    for l in read_lines(path)? {
        let Some((k, v)) = key_rest(&l.text) else {
            bad.bad(
                path,
                l.no,
                "",
                path,
                &format!("malformed line {:?}", l.text),
            )?;
            continue;
        };
        if m.contains_key(k) {
            bad.bad(path, l.no, k, path, &format!("duplicate image id '{k}'"))?;
            continue;
        }
        m.insert(k.to_string(), (v.to_string(), l.no));
    }
    Ok(m)
}

/// Loads CUB-200-2011 or NABirds from `root` (the folder holding `images.txt`, or its parent).
/// For CUB, [`Dataset::attributes`] holds each kept image's attribute text ([`read_attributes`],
/// attributes of certainty id ≥ `attr_certainty`); NABirds has no attribute files.
pub(crate) fn load(
    root: &Path,
    name: &str,
    flavor: Flavor,
    skip_bad: bool,
    attr_certainty: u8,
) -> Result<Dataset> {
    let root = locate(
        root,
        if flavor == Flavor::Cub {
            "CUB_200_2011"
        } else {
            "nabirds"
        },
    );
    let mut bad = BadPolicy::new(skip_bad);
    let classes_file = root.join("classes.txt");
    let classes = read_table(&classes_file)?;
    // class id → (fine name, coarse name)
    let mut class_labels: HashMap<&str, (String, Option<String>)> = HashMap::new();
    match flavor {
        Flavor::Cub => {
            for (id, raw) in &classes {
                class_labels.insert(id, (cub_fine_name(raw), None));
            }
        }
        Flavor::NaBirds => {
            let hfile = root.join("hierarchy.txt");
            let parent = read_table(&hfile)?;
            for (child, p) in &parent {
                if !classes.contains_key(child) || !classes.contains_key(p) {
                    bail!(
                        "{}: edge {child} → {p} names a class missing from {}",
                        hfile.display(),
                        classes_file.display()
                    );
                }
            }
            let children: HashSet<&str> = parent.values().map(String::as_str).collect();
            for (id, raw) in &classes {
                if children.contains(id.as_str()) {
                    continue; // internal node
                }
                let fine = strip_variant(raw).to_string();
                // coarse: the nearest ancestor whose name differs from the fine name (the parent,
                // or the grandparent for a sex/age variant under its species node)
                let mut cur = id;
                let mut coarse = None;
                for _ in 0..64 {
                    let Some(p) = parent.get(cur) else { break };
                    if strip_variant(&classes[p]) != fine {
                        coarse = Some(classes[p].clone());
                        break;
                    }
                    cur = p;
                }
                let coarse = coarse.with_context(|| {
                    format!("{}: leaf class {id} ({raw}) has no parent", hfile.display())
                })?;
                class_labels.insert(id, (fine, Some(coarse)));
            }
        }
    }
    let images_file = root.join("images.txt");
    let labels_file = root.join("image_class_labels.txt");
    let split_file = root.join("train_test_split.txt");
    let labels = read_image_table(&labels_file, &mut bad)?;
    let splits = read_image_table(&split_file, &mut bad)?;
    let img_root = root.join("images");
    let super_name = "Bird";
    let mut ds = Dataset {
        name: name.to_string(),
        root: img_root.clone(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    for l in read_lines(&images_file)? {
        let Some((id, rel)) = key_rest(&l.text) else {
            bad.bad(
                &images_file,
                l.no,
                "",
                &images_file,
                &format!("malformed line {:?}: expected '<id> <path>'", l.text),
            )?;
            continue;
        };
        if !seen.insert(id.to_string()) {
            bad.bad(
                &images_file,
                l.no,
                id,
                Path::new(rel),
                &format!("duplicate image id '{id}'"),
            )?;
            continue;
        }
        let Some((cid, cline)) = labels.get(id) else {
            bad.bad(
                &images_file,
                l.no,
                id,
                Path::new(rel),
                &format!("image '{id}' has no line in {}", labels_file.display()),
            )?;
            continue;
        };
        let Some((fine, coarse)) = class_labels.get(cid.as_str()) else {
            let what = if classes.contains_key(cid) {
                "is not a leaf class"
            } else {
                "is unknown"
            };
            bad.bad(
                &labels_file,
                *cline,
                id,
                Path::new(rel),
                &format!("class id '{cid}' {what} in {}", classes_file.display()),
            )?;
            continue;
        };
        let split = match splits.get(id) {
            Some((v, _)) if v == "1" => Split::Train,
            Some((v, _)) if v == "0" => Split::Test,
            Some((v, sline)) => {
                bad.bad(
                    &split_file,
                    *sline,
                    id,
                    Path::new(rel),
                    &format!("is_training_image must be 0 or 1, found '{v}'"),
                )?;
                continue;
            }
            None => {
                bad.bad(
                    &images_file,
                    l.no,
                    id,
                    Path::new(rel),
                    &format!("image '{id}' has no line in {}", split_file.display()),
                )?;
                continue;
            }
        };
        if !bad.image_exists(&img_root, Path::new(rel), &images_file, l.no, id)? {
            continue;
        }
        let labels = [
            Some(ds.intern_class(LabelLevel::Superordinate, super_name)),
            coarse
                .as_ref()
                .map(|c| ds.intern_class(LabelLevel::Coarse, c)),
            Some(ds.intern_class(LabelLevel::Fine, fine)),
        ];
        ds.samples.push(Sample {
            id: id.to_string(),
            path: PathBuf::from(rel),
            split,
            labels,
        });
    }
    let mut orphans: Vec<_> = labels
        .iter()
        .filter(|(id, _)| !seen.contains(*id))
        .collect();
    orphans.sort_by_key(|(_, (_, line))| *line);
    for (id, (_, line)) in orphans {
        {
            bad.bad(
                &labels_file,
                *line,
                id,
                &labels_file,
                &format!("image id '{id}' is not in {}", images_file.display()),
            )?;
        }
    }
    if flavor == Flavor::Cub {
        let mut attributes = read_attributes(&root, &seen, attr_certainty, &mut bad)?;
        let kept: HashSet<&str> = ds.samples.iter().map(|s| s.id.as_str()).collect();
        attributes.retain(|id, _| kept.contains(id.as_str()));
        ds.attributes = attributes;
    }
    bad.finish(&mut ds);
    Ok(ds)
}
