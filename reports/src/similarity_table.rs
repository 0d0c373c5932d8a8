//! `similarity.csv` (and `similarity.parquet`): one row per pair of feature points compared on a
//! dataset, written and read with polars.

use crate::table::{number_column, read_csv, text_column, write_csv, write_parquet};
use crate::SimilarityRow;
use anyhow::Result;
use polars::prelude::{Column, DataFrame, DataType};
use std::path::Path;

const TEXT: [&str; 9] = [
    "dataset",
    "model",
    "feature_point_a",
    "stage_a",
    "feature_point_b",
    "stage_b",
    "split",
    "cache_key_a",
    "cache_key_b",
];
const NUMBERS: [&str; 5] = ["n", "linear_cka", "debiased_cka", "mutual_knn", "k"];

fn text_fields(r: &SimilarityRow) -> [&str; 9] {
    [
        &r.dataset,
        &r.model,
        &r.feature_point_a,
        &r.stage_a,
        &r.feature_point_b,
        &r.stage_b,
        &r.split,
        &r.cache_key_a,
        &r.cache_key_b,
    ]
}

fn number_fields(r: &SimilarityRow) -> [f64; 5] {
    [
        r.n as f64,
        r.linear_cka,
        r.debiased_cka,
        r.mutual_knn,
        r.k as f64,
    ]
}

/// Writes `rows` as CSV with a header.
pub fn write_similarity_csv(rows: &[SimilarityRow], path: &Path) -> Result<()> {
    write_csv(&mut frame(rows)?, path)
}

/// Writes `rows` as Parquet.
pub fn write_similarity_parquet(rows: &[SimilarityRow], path: &Path) -> Result<()> {
    write_parquet(&mut frame(rows)?, path)
}

fn frame(rows: &[SimilarityRow]) -> Result<DataFrame> {
    let mut columns = Vec::new();
    for (i, name) in TEXT.iter().enumerate() {
        let values: Vec<String> = rows.iter().map(|r| text_fields(r)[i].to_string()).collect();
        columns.push(Column::new((*name).into(), values));
    }
    for (i, name) in NUMBERS.iter().enumerate() {
        let values: Vec<f64> = rows.iter().map(|r| number_fields(r)[i]).collect();
        let column = Column::new((*name).into(), values);
        columns.push(if matches!(*name, "n" | "k") {
            column.cast(&DataType::UInt64)?
        } else {
            column
        });
    }
    Ok(DataFrame::new(rows.len(), columns)?)
}

/// Reads a `similarity.csv` written by [`write_similarity_csv`].
pub fn read_similarity_csv(path: &Path) -> Result<Vec<SimilarityRow>> {
    let df = read_csv(path)?;
    let text = TEXT
        .iter()
        .map(|c| text_column(&df, path, c))
        .collect::<Result<Vec<_>>>()?;
    let numbers = NUMBERS
        .iter()
        .map(|c| number_column(&df, path, c))
        .collect::<Result<Vec<_>>>()?;
    Ok((0..df.height())
        .map(|i| SimilarityRow {
            dataset: text[0][i].clone(),
            model: text[1][i].clone(),
            feature_point_a: text[2][i].clone(),
            stage_a: text[3][i].clone(),
            feature_point_b: text[4][i].clone(),
            stage_b: text[5][i].clone(),
            split: text[6][i].clone(),
            cache_key_a: text[7][i].clone(),
            cache_key_b: text[8][i].clone(),
            n: numbers[0][i] as u64,
            linear_cka: numbers[1][i],
            debiased_cka: numbers[2][i],
            mutual_knn: numbers[3][i],
            k: numbers[4][i] as u64,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips() {
        let row = SimilarityRow {
            dataset: "demo".into(),
            model: "m, with comma".into(),
            feature_point_a: "vision.layer[-2].patch.mean".into(),
            stage_a: "pre-projection".into(),
            feature_point_b: "projector.mean".into(),
            stage_b: "post-projection".into(),
            split: "test".into(),
            n: 480,
            linear_cka: 0.988_256_830_990_758_1,
            debiased_cka: -0.003,
            mutual_knn: 0.885_833_333_333_333_4,
            k: 10,
            cache_key_a: "abc".into(),
            cache_key_b: "def".into(),
        };
        let path =
            std::env::temp_dir().join(format!("gapprobe-similarity-{}.csv", std::process::id()));
        write_similarity_csv(std::slice::from_ref(&row), &path).unwrap();
        let back = read_similarity_csv(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back, vec![row]);
    }
}
