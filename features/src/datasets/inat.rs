//! iNaturalist 2021: COCO-style `train.json` / `train_mini.json` / `val.json` whose categories
//! carry the taxonomy. Superordinate = `supercategory`, coarse = a taxonomy rank (`family` by
//! default), fine = `name` (or `common_name`).

use super::lines::BadPolicy;
use super::{Dataset, LabelLevel, Sample, Split};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Ranks accepted for the coarse level.
pub const RANKS: [&str; 7] = [
    "supercategory",
    "kingdom",
    "phylum",
    "class",
    "order",
    "family",
    "genus",
];

#[derive(Deserialize)]
struct Coco {
    images: Vec<Image>,
    annotations: Vec<Annotation>,
    categories: Vec<HashMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct Image {
    id: i64,
    file_name: String,
}

#[derive(Deserialize)]
struct Annotation {
    image_id: i64,
    category_id: i64,
}

/// Options of the iNat loader.
pub(crate) struct InatOptions<'a> {
    pub train: Option<&'a str>,
    pub test: &'a str,
    pub coarse: &'a str,
    pub fine: &'a str,
    pub skip_bad: bool,
}

/// Loads iNat 2021 from `root` (the folder holding the JSON files and the image folders).
pub(crate) fn load(root: &Path, name: &str, o: &InatOptions) -> Result<Dataset> {
    if !RANKS.contains(&o.coarse) {
        bail!(
            "inat2021: coarse must be one of {RANKS:?}, got '{}'",
            o.coarse
        );
    }
    if o.fine != "name" && o.fine != "common_name" {
        bail!(
            "inat2021: fine must be name or common_name, got '{}'",
            o.fine
        );
    }
    let train = match o.train {
        Some(t) => t.to_string(),
        None if root.join("train.json").exists() => "train.json".into(),
        None => "train_mini.json".into(),
    };
    let mut bad = BadPolicy::new(o.skip_bad);
    let mut ds = Dataset {
        name: name.to_string(),
        root: root.to_path_buf(),
        ..Default::default()
    };
    for (file, split) in [(train.as_str(), Split::Train), (o.test, Split::Test)] {
        let path = root.join(file);
        let reader = std::io::BufReader::new(
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        );
        let coco: Coco = serde_json::from_reader(reader).with_context(|| {
            format!("{}: not a COCO-style iNat annotation file", path.display())
        })?;
        let field = |c: &HashMap<String, serde_json::Value>, i: usize, k: &str| -> Result<String> {
            match c.get(k) {
                Some(serde_json::Value::String(s)) => Ok(s.clone()),
                Some(v @ serde_json::Value::Number(_)) => Ok(v.to_string()),
                _ => bail!("{}: categories[{i}] has no string '{k}'", path.display()),
            }
        };
        let mut cats: HashMap<i64, [String; 3]> = HashMap::new();
        for (i, c) in coco.categories.iter().enumerate() {
            let id = c.get("id").and_then(|v| v.as_i64()).with_context(|| {
                format!("{}: categories[{i}] has no integer 'id'", path.display())
            })?;
            let labels = [
                field(c, i, "supercategory")?,
                field(c, i, o.coarse)?,
                field(c, i, o.fine)?,
            ];
            if cats.insert(id, labels).is_some() {
                bail!(
                    "{}: categories[{i}]: duplicate category id {id}",
                    path.display()
                );
            }
        }
        let mut cat_of: HashMap<i64, (i64, usize)> = HashMap::new();
        for (i, a) in coco.annotations.iter().enumerate() {
            if !cats.contains_key(&a.category_id) {
                let msg = format!("annotations[{i}]: unknown category id {}", a.category_id);
                bad.bad(&path, 0, &a.image_id.to_string(), &path, &msg)?;
                continue;
            }
            if cat_of.insert(a.image_id, (a.category_id, i)).is_some() {
                let msg = format!(
                    "annotations[{i}]: second annotation for image {}",
                    a.image_id
                );
                bad.bad(&path, 0, &a.image_id.to_string(), &path, &msg)?;
            }
        }
        let mut seen = HashSet::new();
        for (i, im) in coco.images.iter().enumerate() {
            let rel = Path::new(&im.file_name);
            if !seen.insert(im.id) {
                bad.bad(
                    &path,
                    0,
                    &im.file_name,
                    rel,
                    &format!("images[{i}]: duplicate image id {}", im.id),
                )?;
                continue;
            }
            let Some((cat, _)) = cat_of.get(&im.id) else {
                bad.bad(
                    &path,
                    0,
                    &im.file_name,
                    rel,
                    &format!("images[{i}]: image id {} has no annotation", im.id),
                )?;
                continue;
            };
            if !root.join(rel).is_file() {
                let msg = format!("images[{i}]: missing image {}", root.join(rel).display());
                bad.bad(&path, 0, &im.file_name, rel, &msg)?;
                continue;
            }
            let [s, c, f] = &cats[cat];
            let labels = [
                Some(ds.intern_class(LabelLevel::Superordinate, s)),
                Some(ds.intern_class(LabelLevel::Coarse, c)),
                Some(ds.intern_class(LabelLevel::Fine, f)),
            ];
            ds.samples.push(Sample {
                id: im.file_name.clone(),
                path: PathBuf::from(&im.file_name),
                split,
                labels,
            });
        }
    }
    bad.finish(&mut ds);
    Ok(ds)
}
