//! `zero_shot.csv` (and `zero_shot.parquet`): the zero-shot answers' exact match and token F1 per
//! dataset, model, arm and label level, written and read with polars.

use crate::table::{number_column, read_csv, text_column, write_csv, write_parquet};
use crate::ZeroShotRow;
use anyhow::Result;
use polars::prelude::{Column, DataFrame};
use std::path::Path;

/// The text columns, in the order written.
const TEXT: [&str; 6] = ["dataset", "model", "arm", "level", "prompt", "model_key"];

/// Writes `rows` as CSV with a header.
pub fn write_zero_shot_csv(rows: &[ZeroShotRow], path: &Path) -> Result<()> {
    write_csv(&mut frame(rows)?, path)
}

/// Writes `rows` as Parquet (the same columns, typed: strings, f64 and u64).
pub fn write_zero_shot_parquet(rows: &[ZeroShotRow], path: &Path) -> Result<()> {
    write_parquet(&mut frame(rows)?, path)
}

fn frame(rows: &[ZeroShotRow]) -> Result<DataFrame> {
    let s = |f: fn(&ZeroShotRow) -> &str| rows.iter().map(f).map(String::from).collect::<Vec<_>>();
    let f = |g: fn(&ZeroShotRow) -> f64| rows.iter().map(g).collect::<Vec<f64>>();
    let u = |g: fn(&ZeroShotRow) -> u64| rows.iter().map(g).collect::<Vec<u64>>();
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new("dataset".into(), s(|r| &r.dataset)),
            Column::new("model".into(), s(|r| &r.model)),
            Column::new("arm".into(), s(|r| &r.arm)),
            Column::new("level".into(), s(|r| &r.level)),
            Column::new("n".into(), u(|r| r.n)),
            Column::new("exact_match".into(), f(|r| r.exact_match)),
            Column::new("em_ci_low".into(), f(|r| r.em_ci_low)),
            Column::new("em_ci_high".into(), f(|r| r.em_ci_high)),
            Column::new("f1".into(), f(|r| r.f1)),
            Column::new("prompt".into(), s(|r| &r.prompt)),
            Column::new("max_new_tokens".into(), u(|r| r.max_new_tokens)),
            Column::new("model_key".into(), s(|r| &r.model_key)),
        ],
    )?)
}

/// Reads a `zero_shot.csv` written by [`write_zero_shot_csv`].
pub fn read_zero_shot_csv(path: &Path) -> Result<Vec<ZeroShotRow>> {
    let df = read_csv(path, &TEXT)?;
    let text = |c: &str| text_column(&df, path, c);
    let num = |c: &str| number_column(&df, path, c);
    let (ds, model, arm, level, prompt, key) = (
        text("dataset")?,
        text("model")?,
        text("arm")?,
        text("level")?,
        text("prompt")?,
        text("model_key")?,
    );
    let (n, em, lo, hi, f1, max_new) = (
        num("n")?,
        num("exact_match")?,
        num("em_ci_low")?,
        num("em_ci_high")?,
        num("f1")?,
        num("max_new_tokens")?,
    );
    Ok((0..df.height())
        .map(|i| ZeroShotRow {
            dataset: ds[i].clone(),
            model: model[i].clone(),
            arm: arm[i].clone(),
            level: level[i].clone(),
            n: n[i] as u64,
            exact_match: em[i],
            em_ci_low: lo[i],
            em_ci_high: hi[i],
            f1: f1[i],
            prompt: prompt[i].clone(),
            max_new_tokens: max_new[i] as u64,
            model_key: key[i].clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_rows::zero_shot_row;

    #[test]
    fn csv_round_trips_with_awkward_prompts_and_keys() {
        let image = ZeroShotRow {
            model: "llava-hf/llava-1.5-7b-hf".into(),
            prompt: "USER: <image>\nWhat is the name of the \"bird species\", exactly, in this \
                     image?\nASSISTANT:"
                .into(),
            model_key: "0042".into(),
            exact_match: 1.0 / 3.0,
            ..zero_shot_row("cub", "image", "fine", 0.0)
        };
        let text = ZeroShotRow {
            arm: "text".into(),
            level: "1.0".into(),
            prompt: "  Attributes: a, b; \"c\"\r\n\n  What is it?  ".into(),
            model_key: "1e5".into(),
            n: 5794,
            max_new_tokens: 32,
            f1: 0.123_456_789_012_345_67,
            ..zero_shot_row("cub, 200", "text", "", 0.0)
        };
        let rows = vec![image, text, zero_shot_row("é", "image", "coarse", 0.4)];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zero_shot.csv");
        write_zero_shot_csv(&rows, &path).unwrap();
        assert_eq!(read_zero_shot_csv(&path).unwrap(), rows);
        write_zero_shot_parquet(&rows, &dir.path().join("zero_shot.parquet")).unwrap();
        assert!(
            std::fs::metadata(dir.path().join("zero_shot.parquet"))
                .unwrap()
                .len()
                > 0
        );
        // No rows: a header alone, read back as none.
        write_zero_shot_csv(&[], &path).unwrap();
        assert_eq!(read_zero_shot_csv(&path).unwrap(), []);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nowhere.csv");
        let e = format!("{:#}", read_zero_shot_csv(&missing).unwrap_err());
        assert!(e.contains("nowhere.csv"), "{e}");
        let partial = dir.path().join("partial.csv");
        std::fs::write(&partial, "dataset,model\nd,m\n").unwrap();
        let e = format!("{:#}", read_zero_shot_csv(&partial).unwrap_err());
        assert!(e.contains("partial.csv") && e.contains("arm"), "{e}");
    }
}
