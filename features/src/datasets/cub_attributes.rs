//! CUB-200-2011's per-image attribute annotations as text for [`super::Dataset::attributes`]:
//! `attributes/image_attribute_labels.txt` with the names in `attributes.txt`.

use super::lines::{key_rest, read_lines, BadPolicy};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Default minimum certainty of an attribute kept in the text: 3 (probably) — 1 not visible,
/// 2 guessing, 3 probably, 4 definitely (`certainties.txt`).
pub(crate) const DEFAULT_ATTR_CERTAINTY: u8 = 3;

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
