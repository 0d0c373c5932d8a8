//! One string names a dataset in the CLI, the experiment TOML and the cache:
//! `kind:path[?key=value&...]`, e.g. `manifest:/data/birds.csv`, `demo:reports/demo/data`,
//! `cub:/data/CUB_200_2011?labelmap=/data/cub_coarse.csv&val_fraction=0.1`,
//! `inat2021:/data/inat?annotations=train_mini.json&coarse=order`. See docs/datasets.md.

use super::{
    aircraft, apply_label_map, cars, cub, cub_attributes, dogs, imagefolder, inat, load_manifest,
    read_label_map, splits, Dataset, LabelLevel, Split,
};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A parsed dataset spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Source kind: `manifest`, `demo`, ...
    pub kind: String,
    /// File or folder the source lives in.
    pub path: PathBuf,
    /// Source-specific options after `?`.
    pub options: BTreeMap<String, String>,
    /// Name used in reports and cache keys (`name=` option, else the kind).
    pub name: String,
}

impl FromStr for DatasetSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, rest) = s.split_once(':').with_context(|| {
            format!("dataset spec '{s}' must look like kind:path, e.g. manifest:/data/birds.csv")
        })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut options = BTreeMap::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("dataset spec '{s}': option '{kv}' must be key=value"))?;
            options.insert(k.to_string(), v.to_string());
        }
        if path.is_empty() {
            bail!("dataset spec '{s}' has no path after '{kind}:'");
        }
        let name = options
            .get("name")
            .cloned()
            .unwrap_or_else(|| kind.to_string());
        Ok(DatasetSpec {
            kind: kind.to_string(),
            path: PathBuf::from(path),
            options,
            name,
        })
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.path.display())?;
        let mut sep = '?';
        for (k, v) in &self.options {
            write!(f, "{sep}{k}={v}")?;
            sep = '&';
        }
        Ok(())
    }
}

/// Options every kind accepts, then the kind-specific ones.
const COMMON_OPTIONS: [&str; 9] = [
    "name",
    "skip_bad",
    "check_images",
    "labelmap",
    "superordinate",
    "val_fraction",
    "test_fraction",
    "seed",
    "few_shot",
];

/// Dataset kinds and their own options.
pub const KINDS: [(&str, &[&str]); 9] = [
    ("manifest", &[]),
    ("demo", &[]),
    ("imagefolder", &[]),
    ("cub", &["attr_certainty"]),
    ("nabirds", &[]),
    ("dogs", &[]),
    ("cars", &[]),
    ("aircraft", &["coarse", "val"]),
    ("inat2021", &["annotations", "test", "coarse", "fine"]),
];

impl DatasetSpec {
    /// An option's value, if given.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }

    fn parsed<T: FromStr>(&self, key: &str) -> Result<Option<T>>
    where
        T::Err: fmt::Display,
    {
        self.option(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| anyhow::anyhow!("dataset spec '{self}': option {key}={v}: {e}"))
            })
            .transpose()
    }

    fn flag(&self, key: &str) -> Result<bool> {
        match self.option(key) {
            None | Some("0") | Some("false") | Some("no") => Ok(false),
            Some("") | Some("1") | Some("true") | Some("yes") => Ok(true),
            Some(v) => bail!("dataset spec '{self}': option {key}={v}: expected 1 or 0"),
        }
    }

    /// Loads the dataset this spec names, then applies the common options: `superordinate=`,
    /// `labelmap=`, `test_fraction=`, `val_fraction=`, `few_shot=` (in that order, all seeded by
    /// `seed=`, default 0). `skip_bad=1` records bad items instead of failing;
    /// `check_images=1` reads every image header ([`Dataset::check_images`]); `skip_bad=1` implies it.
    pub fn load(&self) -> Result<Dataset> {
        let kind_opts = KINDS
            .iter()
            .find(|(k, _)| *k == self.kind)
            .map(|(_, o)| *o)
            .with_context(|| {
                let kinds: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
                format!(
                    "unknown dataset kind '{}' in '{self}': supported kinds are {}",
                    self.kind,
                    kinds.join(", ")
                )
            })?;
        for k in self.options.keys() {
            if !COMMON_OPTIONS.contains(&k.as_str()) && !kind_opts.contains(&k.as_str()) {
                bail!(
                    "dataset spec '{self}': unknown option '{k}' (known: {})",
                    COMMON_OPTIONS
                        .iter()
                        .chain(kind_opts)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        let skip_bad = self.flag("skip_bad")?;
        let (p, n) = (&self.path, self.name.as_str());
        let mut ds = match self.kind.as_str() {
            "manifest" => load_manifest(p, n, skip_bad),
            "demo" => load_manifest(&p.join(crate::synth::MANIFEST_NAME), n, skip_bad),
            "imagefolder" => imagefolder::load(p, n),
            "cub" => {
                let c = self
                    .parsed::<u8>("attr_certainty")?
                    .unwrap_or(cub_attributes::DEFAULT_ATTR_CERTAINTY);
                if !(1..=4).contains(&c) {
                    bail!("dataset spec '{self}': attr_certainty must be 1 to 4 (1 not visible, 2 guessing, 3 probably, 4 definitely)");
                }
                cub::load(p, n, cub::Flavor::Cub, skip_bad, c)
            }
            "nabirds" => cub::load(
                p,
                n,
                cub::Flavor::NaBirds,
                skip_bad,
                cub_attributes::DEFAULT_ATTR_CERTAINTY,
            ),
            "dogs" => dogs::load(p, n, skip_bad),
            "cars" => cars::load(p, n, skip_bad),
            "aircraft" => {
                let val = self.option("val").unwrap_or("train");
                if val != "train" && val != "official" {
                    bail!(
                        "dataset spec '{self}': val must be train (merge into train) or official"
                    );
                }
                let coarse = self.option("coarse").unwrap_or("manufacturer");
                aircraft::load(p, n, coarse, val == "official", skip_bad)
            }
            "inat2021" => inat::load(
                p,
                n,
                &inat::InatOptions {
                    train: self.option("annotations"),
                    test: self.option("test").unwrap_or("val.json"),
                    coarse: self.option("coarse").unwrap_or("family"),
                    fine: self.option("fine").unwrap_or("name"),
                    skip_bad,
                },
            ),
            _ => unreachable!("kind checked above"),
        }
        .with_context(|| format!("loading dataset {self}"))?;
        let seed: u64 = self.parsed("seed")?.unwrap_or(0);
        if let Some(sup) = self.option("superordinate") {
            ds.class_names[LabelLevel::Superordinate as usize] = vec![sup.to_string()];
            for s in &mut ds.samples {
                s.labels[LabelLevel::Superordinate as usize] = Some(0);
            }
        }
        if let Some(map) = self.option("labelmap") {
            let map_path = PathBuf::from(map);
            let pairs = read_label_map(&map_path)?;
            apply_label_map(&mut ds, &pairs, &map_path)
                .with_context(|| format!("dataset spec '{self}'"))?;
        }
        if let Some(f) = self.parsed::<f64>("test_fraction")? {
            if !ds.split(Split::Test).is_empty() {
                bail!("dataset spec '{self}': test_fraction given but the source already has a test split");
            }
            splits::carve(&mut ds, Split::Train, Split::Test, f, seed)?;
        }
        if let Some(f) = self.parsed::<f64>("val_fraction")? {
            splits::carve_val(&mut ds, f, seed)?;
        }
        if let Some(k) = self.parsed::<usize>("few_shot")? {
            splits::few_shot(&mut ds, k, seed)?;
        }
        // Skipping bad items includes unreadable images, so skip_bad implies the header check.
        if skip_bad || self.flag("check_images")? {
            ds.check_images(skip_bad)?;
        }
        ds.validate()?;
        Ok(ds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_path_and_options() {
        let s: DatasetSpec = "manifest:/data/b.csv?name=birds&x=1".parse().unwrap();
        assert_eq!(s.kind, "manifest");
        assert_eq!(s.path, PathBuf::from("/data/b.csv"));
        assert_eq!(s.name, "birds");
        assert_eq!(s.options.get("x").map(String::as_str), Some("1"));
        assert_eq!(s.to_string(), "manifest:/data/b.csv?name=birds&x=1");
        assert!("nocolon".parse::<DatasetSpec>().is_err());
        assert!("manifest:".parse::<DatasetSpec>().is_err());
    }
}
