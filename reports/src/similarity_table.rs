//! `similarity.csv` (and `similarity.parquet`): one row per pair of feature points compared on a
//! dataset, written and read with polars.

use crate::table::{
    number_column, optional_number_column, read_csv, text_column, write_csv, write_parquet,
};
use crate::SimilarityRow;
use anyhow::Result;
use polars::prelude::{Column, DataFrame};
use std::path::Path;

/// Writes `rows` as CSV with a header.
pub fn write_similarity_csv(rows: &[SimilarityRow], path: &Path) -> Result<()> {
    write_csv(&mut frame(rows)?, path)
}

/// Writes `rows` as Parquet.
pub fn write_similarity_parquet(rows: &[SimilarityRow], path: &Path) -> Result<()> {
    write_parquet(&mut frame(rows)?, path)
}

fn frame(rows: &[SimilarityRow]) -> Result<DataFrame> {
    let s =
        |f: fn(&SimilarityRow) -> &str| rows.iter().map(f).map(String::from).collect::<Vec<_>>();
    let f = |g: fn(&SimilarityRow) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let u = |g: fn(&SimilarityRow) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new("dataset".into(), s(|r| &r.dataset)),
            Column::new("model_a".into(), s(|r| &r.model_a)),
            Column::new("feature_point_a".into(), s(|r| &r.feature_point_a)),
            Column::new("stage_a".into(), s(|r| &r.stage_a)),
            Column::new("model_b".into(), s(|r| &r.model_b)),
            Column::new("feature_point_b".into(), s(|r| &r.feature_point_b)),
            Column::new("stage_b".into(), s(|r| &r.stage_b)),
            Column::new("split".into(), s(|r| &r.split)),
            Column::new("n".into(), u(|r| r.n)),
            Column::new("linear_cka".into(), f(|r| r.linear_cka)),
            Column::new("debiased_cka".into(), f(|r| r.debiased_cka)),
            Column::new("mutual_knn".into(), f(|r| r.mutual_knn)),
            Column::new("k".into(), u(|r| r.k)),
            Column::new(
                "centroid_gap".into(),
                rows.iter().map(|r| r.centroid_gap).collect::<Vec<_>>(),
            ),
            Column::new("cache_key_a".into(), s(|r| &r.cache_key_a)),
            Column::new("cache_key_b".into(), s(|r| &r.cache_key_b)),
        ],
    )?)
}

/// Reads a `similarity.csv` written by [`write_similarity_csv`].
pub fn read_similarity_csv(path: &Path) -> Result<Vec<SimilarityRow>> {
    let df = read_csv(
        path,
        &[
            "dataset",
            "model_a",
            "feature_point_a",
            "stage_a",
            "model_b",
            "feature_point_b",
            "stage_b",
            "split",
            "cache_key_a",
            "cache_key_b",
        ],
    )?;
    let text = |c: &str| text_column(&df, path, c);
    let num = |c: &str| number_column(&df, path, c);
    let (ds, model_a, fp_a, stage_a) = (
        text("dataset")?,
        text("model_a")?,
        text("feature_point_a")?,
        text("stage_a")?,
    );
    let (model_b, fp_b, stage_b, split) = (
        text("model_b")?,
        text("feature_point_b")?,
        text("stage_b")?,
        text("split")?,
    );
    let (key_a, key_b) = (text("cache_key_a")?, text("cache_key_b")?);
    let (n, cka, dcka, knn, k) = (
        num("n")?,
        num("linear_cka")?,
        num("debiased_cka")?,
        num("mutual_knn")?,
        num("k")?,
    );
    let gap = optional_number_column(&df, "centroid_gap")?;
    Ok((0..df.height())
        .map(|i| SimilarityRow {
            dataset: ds[i].clone(),
            model_a: model_a[i].clone(),
            feature_point_a: fp_a[i].clone(),
            stage_a: stage_a[i].clone(),
            model_b: model_b[i].clone(),
            feature_point_b: fp_b[i].clone(),
            stage_b: stage_b[i].clone(),
            split: split[i].clone(),
            n: n[i] as u64,
            linear_cka: cka[i],
            debiased_cka: dcka[i],
            mutual_knn: knn[i],
            k: k[i] as u64,
            centroid_gap: gap[i],
            cache_key_a: key_a[i].clone(),
            cache_key_b: key_b[i].clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips() {
        let row = row();
        let mut same_space = row.clone();
        same_space.centroid_gap = Some(0.412_345_678_901_234_5);
        let path =
            std::env::temp_dir().join(format!("gapprobe-similarity-{}.csv", std::process::id()));
        let rows = vec![row, same_space];
        write_similarity_csv(&rows, &path).unwrap();
        let back = read_similarity_csv(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back, rows);
    }

    #[test]
    fn files_without_the_centroid_gap_column_still_read() {
        let path = std::env::temp_dir().join(format!(
            "gapprobe-similarity-old-{}.csv",
            std::process::id()
        ));
        // No comma inside a cell, so that the line splits into its cells.
        let plain = SimilarityRow {
            model_a: "m".into(),
            ..row()
        };
        write_similarity_csv(std::slice::from_ref(&plain), &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        // Drop the column as files written before it existed lack it.
        let old: String = text
            .lines()
            .map(|l| {
                let cells: Vec<&str> = l.split(',').collect();
                let keep: Vec<&str> = cells
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != 13)
                    .map(|(_, c)| *c)
                    .collect();
                keep.join(",") + "\n"
            })
            .collect();
        assert!(text.lines().next().unwrap().contains("centroid_gap"));
        assert!(!old.contains("centroid_gap"));
        std::fs::write(&path, old).unwrap();
        let back = read_similarity_csv(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!(back, vec![plain]);
    }

    fn row() -> SimilarityRow {
        SimilarityRow {
            dataset: "demo".into(),
            model_a: "m, with comma".into(),
            feature_point_a: "vision.layer[-2].patch.mean".into(),
            stage_a: "pre-projection".into(),
            model_b: "other/model".into(),
            feature_point_b: "projector.mean".into(),
            stage_b: "post-projection".into(),
            split: "test".into(),
            n: 480,
            linear_cka: 0.988_256_830_990_758_1,
            debiased_cka: -0.003,
            mutual_knn: 0.885_833_333_333_333_4,
            k: 10,
            centroid_gap: None,
            cache_key_a: "abc".into(),
            cache_key_b: "def".into(),
        }
    }
}
