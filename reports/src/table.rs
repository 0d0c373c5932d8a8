//! `results.csv` (and `results.parquet`): one row per dataset × feature point × level, written
//! and read with polars; the helpers `similarity.csv` shares.

use crate::ResultRow;
use anyhow::{Context, Result};
use polars::prelude::{
    Column, CsvReadOptions, CsvWriter, DataFrame, DataType, Field, ParquetWriter, Schema,
    SerReader, SerWriter,
};
use std::path::Path;
use std::sync::Arc;

/// The text columns.
const TEXT: [&str; 7] = [
    "dataset",
    "model",
    "feature_point",
    "stage",
    "level",
    "solver",
    "cache_key",
];

fn frame(rows: &[ResultRow]) -> Result<DataFrame> {
    let s = |f: fn(&ResultRow) -> &str| rows.iter().map(f).map(String::from).collect::<Vec<_>>();
    let f = |g: fn(&ResultRow) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let u = |g: fn(&ResultRow) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new("dataset".into(), s(|r| &r.dataset)),
            Column::new("model".into(), s(|r| &r.model)),
            Column::new("feature_point".into(), s(|r| &r.feature_point)),
            Column::new("stage".into(), s(|r| &r.stage)),
            Column::new("level".into(), s(|r| &r.level)),
            Column::new("top1".into(), f(|r| r.top1)),
            Column::new("top1_ci_low".into(), f(|r| r.top1_ci_low)),
            Column::new("top1_ci_high".into(), f(|r| r.top1_ci_high)),
            Column::new("top5".into(), f(|r| r.top5)),
            Column::new("mean_per_class".into(), f(|r| r.mean_per_class)),
            Column::new("macro_f1".into(), f(|r| r.macro_f1)),
            Column::new("chosen_c".into(), f(|r| r.chosen_c)),
            Column::new("n_train".into(), u(|r| r.n_train)),
            Column::new("n_test".into(), u(|r| r.n_test)),
            Column::new("n_classes".into(), u(|r| r.n_classes)),
            Column::new("solver".into(), s(|r| &r.solver)),
            Column::new("cache_key".into(), s(|r| &r.cache_key)),
            Column::new("shots".into(), u(|r| r.shots)),
            Column::new("draws".into(), u(|r| r.draws)),
            Column::new("top1_std".into(), f(|r| r.top1_std)),
        ],
    )?)
}

/// Writes `rows` as CSV with a header.
pub fn write_results_csv(rows: &[ResultRow], path: &Path) -> Result<()> {
    write_csv(&mut frame(rows)?, path)
}

/// Writes `rows` as Parquet (the same columns, typed: strings, f64 and u64).
pub fn write_results_parquet(rows: &[ResultRow], path: &Path) -> Result<()> {
    write_parquet(&mut frame(rows)?, path)
}

/// Writes `df` as Parquet.
pub(crate) fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    ParquetWriter::new(file).finish(df)?;
    Ok(())
}

/// Writes `df` as CSV with a header.
pub(crate) fn write_csv(df: &mut DataFrame, path: &Path) -> Result<()> {
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    CsvWriter::new(&mut file).include_header(true).finish(df)?;
    Ok(())
}

/// Reads a CSV with a header, the `text` columns as text whatever they look like (a key or class
/// name of digits keeps its leading zeros, a name like `1.0` stays `1.0`).
pub(crate) fn read_csv(path: &Path, text: &[&str]) -> Result<DataFrame> {
    let schema: Schema = text
        .iter()
        .map(|c| Field::new((*c).into(), DataType::String))
        .collect();
    CsvReadOptions::default()
        .with_has_header(true)
        .with_schema_overwrite(Some(Arc::new(schema)))
        .try_into_reader_with_file_path(Some(path.to_path_buf()))
        .and_then(|r| r.finish())
        .with_context(|| format!("reading {}", path.display()))
}

/// Column `c` of `df` (read from `path`) as text; missing values become "".
pub(crate) fn text_column(df: &DataFrame, path: &Path, c: &str) -> Result<Vec<String>> {
    let col = df
        .column(c)
        .with_context(|| format!("{}: no column {c}", path.display()))?
        .cast(&DataType::String)?;
    Ok(col
        .str()?
        .iter()
        .map(|v| v.unwrap_or("").to_string())
        .collect())
}

/// Column `c` of `df` (read from `path`) as numbers; missing values become NaN.
pub(crate) fn number_column(df: &DataFrame, path: &Path, c: &str) -> Result<Vec<f64>> {
    let col = df
        .column(c)
        .with_context(|| format!("{}: no column {c}", path.display()))?
        .cast(&DataType::Float64)?;
    Ok(col.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

/// Column `c` of `df` as optional numbers: empty cells, and every row when the file predates
/// the column, are `None`.
pub(crate) fn optional_number_column(df: &DataFrame, c: &str) -> Result<Vec<Option<f64>>> {
    match df.column(c) {
        Ok(col) => Ok(col.cast(&DataType::Float64)?.f64()?.iter().collect()),
        Err(_) => Ok(vec![None; df.height()]),
    }
}

/// Reads a `results.csv` written by [`write_results_csv`].
pub fn read_results_csv(path: &Path) -> Result<Vec<ResultRow>> {
    let df = read_csv(path, &TEXT)?;
    let text = |c: &str| text_column(&df, path, c);
    let num = |c: &str| number_column(&df, path, c);
    let (ds, model, fp, stage, level, solver, key) = (
        text("dataset")?,
        text("model")?,
        text("feature_point")?,
        text("stage")?,
        text("level")?,
        text("solver")?,
        text("cache_key")?,
    );
    let (top1, lo, hi, top5, mpc, f1, c) = (
        num("top1")?,
        num("top1_ci_low")?,
        num("top1_ci_high")?,
        num("top5")?,
        num("mean_per_class")?,
        num("macro_f1")?,
        num("chosen_c")?,
    );
    let (ntr, nte, ncl) = (num("n_train")?, num("n_test")?, num("n_classes")?);
    // Files written before few-shot probes existed lack these: standard probes, one draw.
    let (shots, draws, std) = (
        optional_number_column(&df, "shots")?,
        optional_number_column(&df, "draws")?,
        optional_number_column(&df, "top1_std")?,
    );
    Ok((0..df.height())
        .map(|i| ResultRow {
            dataset: ds[i].clone(),
            model: model[i].clone(),
            feature_point: fp[i].clone(),
            stage: stage[i].clone(),
            level: level[i].clone(),
            top1: top1[i],
            top1_ci_low: lo[i],
            top1_ci_high: hi[i],
            top5: top5[i],
            mean_per_class: mpc[i],
            macro_f1: f1[i],
            chosen_c: c[i],
            n_train: ntr[i] as u64,
            n_test: nte[i] as u64,
            n_classes: ncl[i] as u64,
            solver: solver[i].clone(),
            cache_key: key[i].clone(),
            shots: shots[i].unwrap_or(0.0) as u64,
            draws: draws[i].unwrap_or(1.0) as u64,
            top1_std: std[i].unwrap_or(0.0),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips() {
        let row = ResultRow {
            dataset: "demo".into(),
            model: "m, with comma".into(),
            feature_point: "vision.layer[-2].patch.mean".into(),
            stage: "pre-projection".into(),
            level: "fine".into(),
            top1: 0.5,
            top1_ci_low: 0.4,
            top1_ci_high: 0.6,
            top5: 0.9,
            mean_per_class: 0.48,
            macro_f1: 0.47,
            chosen_c: 0.1,
            n_train: 960,
            n_test: 480,
            n_classes: 24,
            solver: "candle".into(),
            cache_key: "abc".into(),
            shots: 0,
            draws: 1,
            top1_std: 0.0,
        };
        let few = ResultRow {
            shots: 4,
            draws: 3,
            top1_std: 0.0125,
            ..row.clone()
        };
        let path =
            std::env::temp_dir().join(format!("gapprobe-results-{}.csv", std::process::id()));
        let rows = vec![row, few];
        write_results_csv(&rows, &path).unwrap();
        let back = read_results_csv(&path).unwrap();
        assert_eq!(back, rows);
        // A file from before few-shot probes (no shots, draws, top1_std) reads as standard rows.
        let text = std::fs::read_to_string(&path).unwrap();
        let old: String = text
            .lines()
            .map(|l| {
                let cells: Vec<&str> = l.rsplitn(4, ',').collect();
                cells[3].to_string() + "\n"
            })
            .collect();
        std::fs::write(&path, &old).unwrap();
        let back = read_results_csv(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert!(!old.contains("shots"), "{old}");
        assert_eq!(back[0], rows[0]);
        assert_eq!(
            (back[1].shots, back[1].draws, back[1].top1_std),
            (0, 1, 0.0)
        );
    }
}
