//! ImageFolder: `root/<class>/<image>`, or `root/{train,val,test}/<class>/<image>`. The class
//! folder name is the fine label; files are taken in sorted order.

use super::{Dataset, LabelLevel, Sample, Split};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Image file extensions picked up (case-insensitive).
pub const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    v.sort();
    Ok(v)
}

/// Loads an ImageFolder tree. Without split folders every image is in [`Split::Train`] (carve a
/// test split with `test_fraction=`).
pub(crate) fn load(root: &Path, name: &str) -> Result<Dataset> {
    if !root.is_dir() {
        bail!("imagefolder: {} is not a folder", root.display());
    }
    let split_dirs: Vec<(Split, PathBuf)> = [Split::Train, Split::Val, Split::Test]
        .into_iter()
        .map(|s| (s, root.join(s.as_str())))
        .filter(|(_, d)| d.is_dir())
        .collect();
    let parts = if split_dirs.is_empty() {
        vec![(Split::Train, root.to_path_buf())]
    } else {
        split_dirs
    };
    let mut ds = Dataset {
        name: name.to_string(),
        root: root.to_path_buf(),
        ..Default::default()
    };
    for (split, dir) in parts {
        for class_dir in sorted_entries(&dir)?.into_iter().filter(|p| p.is_dir()) {
            let class = class_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for file in sorted_entries(&class_dir)? {
                let ok = file.is_file()
                    && file
                        .extension()
                        .is_some_and(|e| EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)));
                if !ok {
                    continue;
                }
                let rel = file.strip_prefix(root).unwrap_or(&file).to_path_buf();
                let label = ds.intern_class(LabelLevel::Fine, &class);
                ds.samples.push(Sample {
                    id: rel.to_string_lossy().replace('\\', "/"),
                    path: rel,
                    split,
                    labels: [None, None, Some(label)],
                });
            }
        }
    }
    if ds.samples.is_empty() {
        bail!(
            "imagefolder: no images ({}) in class folders under {}",
            EXTENSIONS.join(", "),
            root.display()
        );
    }
    Ok(ds)
}
