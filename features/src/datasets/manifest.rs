//! CSV and Parquet manifests: one row per image with `path`, `split` and any of the label-level columns.

use super::lines::BadPolicy;
use super::{Dataset, LabelLevel, Sample, Split};
use anyhow::{bail, Context, Result};
use polars::prelude::{
    Column, CsvReadOptions, CsvWriter, DataFrame, DataType, ParquetReader, SerReader, SerWriter,
};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Reads a CSV manifest (columns `path`, `split`, optional `id`, and any of `superordinate`,
/// `coarse`, `fine`). Relative paths are resolved against the manifest's folder.
/// Image files are not checked; [`load_manifest`] does.
pub fn read_manifest(path: &Path, name: &str) -> Result<Dataset> {
    load(path, name, None)
}

/// Reads a CSV or Parquet manifest (Parquet when the file ends in `.parquet` / `.pq`): columns
/// `path`, `split`, optional `id`, any of `superordinate` / `coarse` / `fine`, and optional
/// `attributes` (free text per image). Missing images and duplicate ids are errors naming the
/// file and line (row for Parquet), or with `skip_bad` are recorded in [`Dataset::skipped`].
pub fn load_manifest(path: &Path, name: &str, skip_bad: bool) -> Result<Dataset> {
    load(path, name, Some(BadPolicy::new(skip_bad)))
}

fn read_frame(path: &Path) -> Result<(DataFrame, bool)> {
    let parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet") || e.eq_ignore_ascii_case("pq"));
    let df = if parquet {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        ParquetReader::new(f)
            .finish()
            .with_context(|| format!("reading Parquet manifest {}", path.display()))?
    } else {
        CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0)) // every column as string: labels like "001" stay names
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .and_then(|r| r.finish())
            .with_context(|| format!("reading manifest {}", path.display()))?
    };
    Ok((df, parquet))
}

fn load(path: &Path, name: &str, mut check: Option<BadPolicy>) -> Result<Dataset> {
    let (df, parquet) = read_frame(path)?;
    let text_column = |col: &str| -> Result<Option<Vec<Option<String>>>> {
        match df.column(col) {
            Ok(c) => {
                let c = c
                    .cast(&DataType::String)
                    .with_context(|| format!("{}: column '{col}' as text", path.display()))?;
                let s = c
                    .str()
                    .with_context(|| format!("{}: column '{col}'", path.display()))?;
                Ok(Some(s.iter().map(|v| v.map(str::to_string)).collect()))
            }
            Err(_) => Ok(None),
        }
    };
    let paths = text_column("path")?
        .with_context(|| format!("{}: manifest needs a 'path' column", path.display()))?;
    let splits = text_column("split")?
        .with_context(|| format!("{}: manifest needs a 'split' column", path.display()))?;
    let ids = text_column("id")?;
    let attributes = match text_column("attributes")? {
        Some(a) => Some(a),
        None => text_column("attribute")?,
    };
    let level_cols: Vec<(LabelLevel, Vec<Option<String>>)> = LabelLevel::ALL
        .into_iter()
        .filter_map(|l| {
            text_column(l.as_str())
                .transpose()
                .map(|c| c.map(|c| (l, c)))
        })
        .collect::<Result<_>>()?;
    if level_cols.is_empty() {
        bail!(
            "{}: manifest has no label column (superordinate, coarse or fine)",
            path.display()
        );
    }
    let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut ds = Dataset {
        name: name.to_string(),
        root,
        ..Default::default()
    };
    let mut seen = std::collections::HashSet::new();
    for row in 0..df.height() {
        // CSV: 1-based line after the header; Parquet: 1-based row
        let (line, at) = if parquet {
            (0, format!("{} row {}", path.display(), row + 1))
        } else {
            (row + 2, format!("{}:{}", path.display(), row + 2))
        };
        let p = paths[row]
            .as_deref()
            .filter(|p| !p.is_empty())
            .with_context(|| format!("{at}: empty path"))?;
        let split: Split = splits[row]
            .as_deref()
            .unwrap_or("")
            .parse()
            .with_context(|| at.clone())?;
        let mut labels = [None; 3];
        for (level, col) in &level_cols {
            let v = col[row]
                .as_deref()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("{at}: empty {level} label for {p}"))?;
            labels[*level as usize] = Some(ds.intern_class(*level, v));
        }
        let id = ids
            .as_ref()
            .and_then(|c| c[row].clone())
            .unwrap_or_else(|| p.to_string());
        if let Some(bad) = check.as_mut() {
            let rowmsg = if parquet {
                format!("row {}: ", row + 1)
            } else {
                String::new()
            };
            if !seen.insert(id.clone()) {
                bad.bad(
                    path,
                    line,
                    &id,
                    Path::new(p),
                    &format!("{rowmsg}duplicate id '{id}'"),
                )?;
                continue;
            }
            let full = ds.root.join(p);
            if !full.is_file() {
                bad.bad(
                    path,
                    line,
                    &id,
                    Path::new(p),
                    &format!("{rowmsg}missing image {}", full.display()),
                )?;
                continue;
            }
        }
        if let Some(a) = attributes.as_ref().and_then(|c| c[row].clone()) {
            if !a.is_empty() {
                ds.attributes.insert(id.clone(), a);
            }
        }
        ds.samples.push(Sample {
            id,
            path: PathBuf::from(p),
            split,
            labels,
        });
    }
    if let Some(bad) = check {
        bad.finish(&mut ds);
    }
    ds.validate()?;
    Ok(ds)
}

/// Writes `ds` as a CSV manifest readable by [`read_manifest`] (paths as stored in the samples,
/// plus an `attributes` column when the dataset has any).
pub fn write_manifest(ds: &Dataset, path: &Path) -> Result<()> {
    let col = |f: &dyn Fn(&Sample) -> String| -> Vec<String> { ds.samples.iter().map(f).collect() };
    let mut columns = vec![
        Column::new("id".into(), col(&|s| s.id.clone())),
        Column::new(
            "path".into(),
            col(&|s| s.path.to_string_lossy().into_owned()),
        ),
        Column::new("split".into(), col(&|s| s.split.to_string())),
    ];
    for level in ds.levels() {
        let names = ds.classes(level);
        columns.push(Column::new(
            level.as_str().into(),
            col(&|s| {
                s.label(level)
                    .map(|l| names[l as usize].clone())
                    .unwrap_or_default()
            }),
        ));
    }
    if !ds.attributes.is_empty() {
        columns.push(Column::new(
            "attributes".into(),
            col(&|s| ds.attributes.get(&s.id).cloned().unwrap_or_default()),
        ));
    }
    let mut df = DataFrame::new(ds.samples.len(), columns)?;
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    CsvWriter::new(&mut file)
        .include_header(true)
        .finish(&mut df)?;
    Ok(())
}
