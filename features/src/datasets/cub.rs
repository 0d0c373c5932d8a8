//! CUB-200-2011 and NABirds: `images.txt`, `classes.txt`, `image_class_labels.txt`,
//! `train_test_split.txt` (NABirds keys them by UUID and adds `hierarchy.txt`). CUB's per-image
//! attribute annotations, when present, become [`Dataset::attributes`] text ([`read_attributes`]).

use super::lines::{key_rest, read_lines, BadPolicy};
use super::{Dataset, LabelLevel, Sample, Split};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Default minimum certainty of an attribute kept in the text: 3 (probably) — 1 not visible,
/// 2 guessing, 3 probably, 4 definitely (`certainties.txt`).
pub(crate) const DEFAULT_ATTR_CERTAINTY: u8 = 3;

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

/// Where CUB's `attributes.txt` (`<attribute id> <group>::<value>`) lies: the dataset folder,
/// its `attributes/` subfolder, or its parent (where the official tarball puts it), in that order.
fn find_attribute_names(root: &Path) -> Option<PathBuf> {
    let mut candidates = vec![
        root.join("attributes.txt"),
        root.join("attributes").join("attributes.txt"),
    ];
    if let Some(parent) = root.parent() {
        candidates.push(parent.join("attributes.txt"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Attribute names: group names, and attribute id → (group index, value).
type AttributeNames = (Vec<String>, BTreeMap<u32, (usize, String)>);

/// `attributes.txt` → (group names in order of their first attribute id, attribute id →
/// (group index, value)). `has_bill_shape::curved_(up_or_down)` is group `bill shape`, value
/// `curved (up or down)`. Attribute names are metadata: any bad line is fatal.
fn read_attribute_names(path: &Path) -> Result<AttributeNames> {
    let mut raw: BTreeMap<u32, (String, String, usize)> = BTreeMap::new();
    for l in read_lines(path)? {
        let malformed = || {
            format!(
                "{}:{}: malformed line {:?}: expected '<attribute id> <group>::<value>'",
                path.display(),
                l.no,
                l.text
            )
        };
        let (k, v) = key_rest(&l.text).with_context(malformed)?;
        let id: u32 = k.parse().ok().with_context(malformed)?;
        let (g, val) = v.split_once("::").with_context(malformed)?;
        let group = g.strip_prefix("has_").unwrap_or(g).replace('_', " ");
        let value = val.replace('_', " ");
        if group.trim().is_empty() || value.trim().is_empty() {
            bail!("{}", malformed());
        }
        if raw.insert(id, (group, value, l.no)).is_some() {
            bail!("{}:{}: duplicate attribute id '{id}'", path.display(), l.no);
        }
    }
    let mut groups: Vec<String> = Vec::new();
    let mut names = BTreeMap::new();
    for (id, (group, value, _)) in raw {
        let gi = match groups.iter().position(|g| *g == group) {
            Some(i) => i,
            None => {
                groups.push(group);
                groups.len() - 1
            }
        };
        names.insert(id, (gi, value));
    }
    Ok((groups, names))
}

/// CUB's per-image attributes as text, keyed by image id, from
/// `attributes/image_attribute_labels.txt` (`<image id> <attribute id> <is_present>
/// <certainty id> <time>`; a line with a sixth field, a quirk of the official file, is read by
/// its first four) and `attributes.txt` (found by [`find_attribute_names`]).
///
/// An attribute is kept when `is_present` is 1 and its certainty id is at least `min_certainty`
/// (1 not visible, 2 guessing, 3 probably, 4 definitely). Kept attributes are grouped by the
/// name before `::` (leading `has_` dropped); `_` becomes a space in group and value. Each group
/// is written `<group>: <values>` with its values in attribute-id order joined by `", "`; groups
/// come in the order of their smallest attribute id in `attributes.txt` and are joined by `"; "`:
/// `bill shape: dagger; wing color: blue, white; size: small (5 - 9 in)`. An image with no kept
/// attribute has no entry (never an empty string).
///
/// When either file is absent the result is empty (no error): the attributes are optional.
/// `certainties.txt` is not needed (the ids' meaning is fixed). In `image_attribute_labels.txt`,
/// a malformed line (wrong field count, non-numeric field, `is_present` not 0/1, certainty not
/// 1-4), an unknown attribute id, a repeated (image, attribute) pair or an image id not in
/// `images` (the ids of `images.txt`) is an error naming the file and line, or with `skip_bad`
/// that line is recorded in the skipped list and ignored (an unknown image id only once).
pub(crate) fn read_attributes(
    root: &Path,
    images: &HashSet<String>,
    min_certainty: u8,
    bad: &mut BadPolicy,
) -> Result<BTreeMap<String, String>> {
    let labels_file = root.join("attributes").join("image_attribute_labels.txt");
    let (true, Some(names_file)) = (labels_file.is_file(), find_attribute_names(root)) else {
        return Ok(BTreeMap::new());
    };
    let (groups, names) = read_attribute_names(&names_file)?;
    // dense indices: attribute id → column, image id → row of the seen bitmap
    let attr_col: HashMap<u32, usize> = names.keys().enumerate().map(|(i, id)| (*id, i)).collect();
    let attr_ids: Vec<u32> = names.keys().copied().collect();
    let image_row: HashMap<&str, usize> = images
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut seen = vec![false; image_row.len() * attr_ids.len()];
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); image_row.len()];
    let mut unknown_images: HashSet<String> = HashSet::new();
    // ~3.7 million lines in the real file: parse in place rather than through `read_lines`
    let text = std::fs::read_to_string(&labels_file)
        .with_context(|| format!("reading {}", labels_file.display()))?;
    for (i, line) in text.lines().enumerate() {
        let no = i + 1;
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let mut complain = |msg: String| bad.bad(&labels_file, no, "", &labels_file, &msg);
        let expected = "expected '<image id> <attribute id> <is_present> <certainty id> <time>'";
        if fields.len() != 5 && fields.len() != 6 {
            complain(format!(
                "malformed line {:?}: {expected} (found {} fields)",
                line.trim_end_matches('\r'),
                fields.len()
            ))?;
            continue;
        }
        let (img, attr, present, certainty) = (fields[0], fields[1], fields[2], fields[3]);
        let (Ok(attr_id), Ok(present), Ok(certainty)) = (
            attr.parse::<u32>(),
            present.parse::<u8>(),
            certainty.parse::<u8>(),
        ) else {
            complain(format!(
                "malformed line {:?}: {expected} with numeric ids",
                line.trim_end_matches('\r')
            ))?;
            continue;
        };
        if present > 1 {
            complain(format!("is_present must be 0 or 1, found '{}'", fields[2]))?;
            continue;
        }
        if !(1..=4).contains(&certainty) {
            complain(format!(
                "certainty id must be 1 to 4, found '{}'",
                fields[3]
            ))?;
            continue;
        }
        let Some(&col) = attr_col.get(&attr_id) else {
            complain(format!(
                "attribute id '{attr_id}' is not in {}",
                names_file.display()
            ))?;
            continue;
        };
        let Some(&row) = image_row.get(img) else {
            if unknown_images.insert(img.to_string()) {
                complain(format!(
                    "image id '{img}' is not in {}",
                    root.join("images.txt").display()
                ))?;
            }
            continue;
        };
        let cell = &mut seen[row * attr_ids.len() + col];
        if *cell {
            complain(format!(
                "duplicate line for image '{img}' attribute '{attr_id}'"
            ))?;
            continue;
        }
        *cell = true;
        if present == 1 && certainty >= min_certainty {
            kept[row].push(col);
        }
    }
    let mut out = BTreeMap::new();
    for (id, row) in image_row {
        let cols = &mut kept[row];
        if cols.is_empty() {
            continue;
        }
        cols.sort_unstable(); // column order is attribute-id order
        let mut by_group: Vec<Vec<&str>> = vec![Vec::new(); groups.len()];
        for &c in cols.iter() {
            let (g, v) = &names[&attr_ids[c]];
            by_group[*g].push(v);
        }
        let text: Vec<String> = by_group
            .iter()
            .enumerate()
            .filter(|(_, vs)| !vs.is_empty())
            .map(|(g, vs)| format!("{}: {}", groups[g], vs.join(", ")))
            .collect();
        out.insert(id.to_string(), text.join("; "));
    }
    Ok(out)
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
