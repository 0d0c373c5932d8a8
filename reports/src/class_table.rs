//! `per_class.csv` (and `per_class.parquet`): each class's test accuracy under each standard
//! probe, written and read with polars.

use crate::table::{number_column, read_csv, text_column, write_csv, write_parquet};
use crate::ClassRow;
use anyhow::Result;
use polars::prelude::{Column, DataFrame};
use std::path::Path;

/// The text columns.
const TEXT: [&str; 7] = [
    "dataset",
    "model",
    "feature_point",
    "stage",
    "level",
    "class",
    "cache_key",
];

/// Writes `rows` as CSV with a header.
pub fn write_class_csv(rows: &[ClassRow], path: &Path) -> Result<()> {
    write_csv(&mut frame(rows)?, path)
}

/// Writes `rows` as Parquet.
pub fn write_class_parquet(rows: &[ClassRow], path: &Path) -> Result<()> {
    write_parquet(&mut frame(rows)?, path)
}

fn frame(rows: &[ClassRow]) -> Result<DataFrame> {
    let s = |f: fn(&ClassRow) -> &str| rows.iter().map(f).map(String::from).collect::<Vec<_>>();
    let u = |g: fn(&ClassRow) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new("dataset".into(), s(|r| &r.dataset)),
            Column::new("model".into(), s(|r| &r.model)),
            Column::new("feature_point".into(), s(|r| &r.feature_point)),
            Column::new("stage".into(), s(|r| &r.stage)),
            Column::new("level".into(), s(|r| &r.level)),
            Column::new("class".into(), s(|r| &r.class)),
            Column::new("class_index".into(), u(|r| r.class_index)),
            Column::new("n_test".into(), u(|r| r.n_test)),
            Column::new(
                "accuracy".into(),
                rows.iter().map(|r| r.accuracy).collect::<Vec<f64>>(),
            ),
            Column::new("cache_key".into(), s(|r| &r.cache_key)),
        ],
    )?)
}

/// Reads a `per_class.csv` written by [`write_class_csv`].
pub fn read_class_csv(path: &Path) -> Result<Vec<ClassRow>> {
    let df = read_csv(path, &TEXT)?;
    let text = |c: &str| text_column(&df, path, c);
    let num = |c: &str| number_column(&df, path, c);
    let (ds, model, fp, stage, level, class, key) = (
        text("dataset")?,
        text("model")?,
        text("feature_point")?,
        text("stage")?,
        text("level")?,
        text("class")?,
        text("cache_key")?,
    );
    let (index, n, acc) = (num("class_index")?, num("n_test")?, num("accuracy")?);
    Ok((0..df.height())
        .map(|i| ClassRow {
            dataset: ds[i].clone(),
            model: model[i].clone(),
            feature_point: fp[i].clone(),
            stage: stage[i].clone(),
            level: level[i].clone(),
            class: class[i].clone(),
            class_index: index[i] as u64,
            n_test: n[i] as u64,
            accuracy: acc[i],
            cache_key: key[i].clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_with_awkward_class_names() {
        let row = |class: &str, i: u64, acc: f64| ClassRow {
            dataset: "cub".into(),
            model: "llava-hf/llava-1.5-7b-hf".into(),
            feature_point: "vision.layer[-2].patch.mean".into(),
            stage: "pre-projection".into(),
            level: "fine".into(),
            class: class.into(),
            class_index: i,
            n_test: 30,
            accuracy: acc,
            cache_key: "abc".into(),
        };
        let rows = vec![
            row("Black_footed_Albatross", 0, 0.9),
            row("Chuck-will's-widow, \"quoted\"", 1, 0.333_333_333_333_333_3),
        ];
        let path =
            std::env::temp_dir().join(format!("gapprobe-per-class-{}.csv", std::process::id()));
        write_class_csv(&rows, &path).unwrap();
        let back = read_class_csv(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back, rows);
        // A file whose class names are all digits (a manifest's numeric labels) keeps them as
        // written, not as the numbers CSV type inference would make of them.
        let numeric = vec![row("007", 0, 0.5), row("1.0", 1, 0.25)];
        write_class_csv(&numeric, &path).unwrap();
        let back = read_class_csv(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back, numeric);
    }
}
