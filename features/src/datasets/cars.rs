//! Stanford Cars: the devkit (`cars_meta.mat`, `cars_train_annos.mat`,
//! `cars_test_annos_withlabels.mat`, images in `cars_train/`, `cars_test/`) or the CSV
//! redistribution (`names.csv`, `anno_train.csv`, `anno_test.csv`: fname,x1,y1,x2,y2,class with
//! no header). Bounding boxes are ignored: the full image is used.

use super::labelmap::split_csv;
use super::lines::{find_file, read_lines, BadPolicy};
use super::mat::read_mat;
use super::{Dataset, LabelLevel, Sample, Split};
use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Coarse label of a Stanford Cars class: the body-type word in its name, checked in this order
/// (first match wins): Minivan → "minivan"; Convertible → "convertible"; Cab / Pickup →
/// "pickup"; SUV → "SUV"; Wagon → "wagon"; Hatchback → "hatchback"; Van → "van"; Coupe →
/// "coupe"; Sedan → "sedan"; no such word → "other".
pub fn body_type(class_name: &str) -> &'static str {
    let words: Vec<String> = class_name
        .split(|c: char| c.is_whitespace() || c == '/')
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    const RULES: [(&[&str], &str); 9] = [
        (&["minivan"], "minivan"),
        (&["convertible"], "convertible"),
        (&["cab", "pickup"], "pickup"),
        (&["suv"], "SUV"),
        (&["wagon"], "wagon"),
        (&["hatchback"], "hatchback"),
        (&["van"], "van"),
        (&["coupe"], "coupe"),
        (&["sedan"], "sedan"),
    ];
    RULES
        .iter()
        .find(|(ws, _)| ws.iter().any(|w| has(w)))
        .map(|(_, t)| *t)
        .unwrap_or("other")
}

/// One annotation: (image file name, 1-based class id, where it came from, entry/line).
struct Anno {
    fname: String,
    class: f64,
    line: usize,
}

/// Loads Stanford Cars from `root`, auto-detecting the devkit or the CSV layout.
pub(crate) fn load(root: &Path, name: &str, skip_bad: bool) -> Result<Dataset> {
    let mut bad = BadPolicy::new(skip_bad);
    let (names, names_file, parts) = if let Some(meta) =
        find_file(root, &["devkit/cars_meta.mat", "cars_meta.mat"])
    {
        let names = read_mat(&meta)?
            .get("class_names")
            .with_context(|| format!("{}: no variable 'class_names'", meta.display()))?
            .strings()
            .with_context(|| format!("{}: class_names", meta.display()))?;
        let mut parts = Vec::new();
        for (split, files) in [
            (
                Split::Train,
                ["devkit/cars_train_annos.mat", "cars_train_annos.mat"],
            ),
            (
                Split::Test,
                [
                    "cars_test_annos_withlabels.mat",
                    "devkit/cars_test_annos_withlabels.mat",
                ],
            ),
        ] {
            let file = find_file(root, &files).with_context(|| {
                format!(
                    "{}: Stanford Cars devkit lacks {}",
                    root.display(),
                    files[1]
                )
            })?;
            let vars = read_mat(&file)?;
            let annos = vars
                .get("annotations")
                .with_context(|| format!("{}: no variable 'annotations'", file.display()))?;
            let f = |field: &str| {
                annos
                    .field(field)
                    .with_context(|| format!("{}: annotations", file.display()))
            };
            let (fnames, classes) = (f("fname")?, f("class")?);
            let mut list = Vec::new();
            for (i, (n, c)) in fnames.iter().zip(classes).enumerate() {
                let fname = n
                    .strings()
                    .ok()
                    .and_then(|s| s.into_iter().next())
                    .unwrap_or_default();
                let class = c
                    .numbers()
                    .ok()
                    .and_then(|v| v.first().copied())
                    .unwrap_or(f64::NAN);
                list.push(Anno {
                    fname,
                    class,
                    line: i + 1,
                });
            }
            let dir = if split == Split::Train {
                "cars_train"
            } else {
                "cars_test"
            };
            parts.push((split, file, list, vec![PathBuf::from(dir)]));
        }
        (names, meta, parts)
    } else if let Some(names_file) = find_file(root, &["names.csv", "car_data/names.csv"]) {
        let names: Vec<String> = read_lines(&names_file)?
            .into_iter()
            .map(|l| l.text.trim().to_string())
            .collect();
        let mut parts = Vec::new();
        for (split, csv, dir, sub) in [
            (Split::Train, "anno_train.csv", "cars_train", "train"),
            (Split::Test, "anno_test.csv", "cars_test", "test"),
        ] {
            let file =
                find_file(root, &[csv, format!("car_data/{csv}").as_str()]).with_context(|| {
                    format!("{}: Stanford Cars CSV layout lacks {csv}", root.display())
                })?;
            let mut list = Vec::new();
            for l in read_lines(&file)? {
                let f = split_csv(&l.text);
                let class = f.get(5).and_then(|c| c.parse::<f64>().ok());
                match (f.len(), class) {
                    (6, Some(class)) if !f[0].is_empty() => list.push(Anno {
                        fname: f[0].clone(),
                        class,
                        line: l.no,
                    }),
                    _ => bad.bad(
                        &file,
                        l.no,
                        "",
                        &file,
                        &format!(
                            "malformed line {:?}: expected fname,x1,y1,x2,y2,class",
                            l.text
                        ),
                    )?,
                }
            }
            let dirs = vec![
                PathBuf::from(dir),
                PathBuf::from("car_data/car_data").join(sub),
                PathBuf::from("car_data").join(sub),
                PathBuf::from(sub),
            ];
            parts.push((split, file, list, dirs));
        }
        (names, names_file, parts)
    } else {
        bail!(
            "{}: no Stanford Cars devkit (devkit/cars_meta.mat) or CSV layout (names.csv, anno_train.csv, anno_test.csv)",
            root.display()
        );
    };
    if names.is_empty() {
        bail!("{}: no class names", names_file.display());
    }
    let mut ds = Dataset {
        name: name.to_string(),
        root: root.to_path_buf(),
        ..Default::default()
    };
    let mut seen = HashSet::new();
    for (split, file, list, dirs) in parts {
        let line_kind = if file.extension().is_some_and(|e| e == "mat") {
            0
        } else {
            1
        };
        for a in list {
            let (line, entry) = if line_kind == 1 {
                (a.line, String::new())
            } else {
                (0, format!("annotations entry {}: ", a.line))
            };
            let id = format!("{split}/{}", a.fname);
            let cls = a.class as usize;
            if a.class.fract() != 0.0 || cls < 1 || cls > names.len() {
                bad.bad(
                    &file,
                    line,
                    &id,
                    Path::new(&a.fname),
                    &format!(
                        "{entry}unknown class id {} (classes are 1..={})",
                        a.class,
                        names.len()
                    ),
                )?;
                continue;
            }
            if a.fname.is_empty() {
                bad.bad(&file, line, &id, &file, &format!("{entry}empty file name"))?;
                continue;
            }
            if !seen.insert(id.clone()) {
                bad.bad(
                    &file,
                    line,
                    &id,
                    Path::new(&a.fname),
                    &format!("{entry}duplicate image '{}'", a.fname),
                )?;
                continue;
            }
            let class_name = &names[cls - 1];
            let candidates: Vec<PathBuf> = dirs
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    if i == 0 {
                        d.join(&a.fname)
                    } else {
                        d.join(class_name.replace('/', "-")).join(&a.fname)
                    }
                })
                .collect();
            let rel = match candidates.iter().find(|c| root.join(c).is_file()) {
                Some(c) => c.clone(),
                None => {
                    let msg = format!(
                        "{entry}missing image {}",
                        root.join(&candidates[0]).display()
                    );
                    bad.bad(&file, line, &id, &candidates[0], &msg)?;
                    continue;
                }
            };
            let labels = [
                Some(ds.intern_class(LabelLevel::Superordinate, "Car")),
                Some(ds.intern_class(LabelLevel::Coarse, body_type(class_name))),
                Some(ds.intern_class(LabelLevel::Fine, class_name)),
            ];
            ds.samples.push(Sample {
                id,
                path: rel,
                split,
                labels,
            });
        }
    }
    bad.finish(&mut ds);
    Ok(ds)
}
