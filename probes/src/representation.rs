//! How alike two representations of the same samples are, whatever their widths: linear CKA
//! (Kornblith et al. 2019), its debiased form (the unbiased HSIC estimator of Song et al. 2012,
//! as in Kornblith's reference code), mutual k-nearest-neighbour alignment (Huh et al. 2024,
//! "The Platonic Representation Hypothesis"), and, for two representations in one space (an
//! image's and its text's hidden state in the same language model), the centroid modality gap of
//! Liang et al. 2022 ("Mind the Gap").
//!
//! Before vs after a projection layer, these say how much the geometry changed, where the probes
//! say how much label information survived. Row `i` of both inputs must be the same sample.
//!
//! Both CKAs are computed in feature space (`‖XᵀY‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F)` on column-centred
//! features, with the debiasing terms from row norms), `O(n·(dx + dy)²)`, so no `n × n` Gram
//! matrix is formed. The products run in f32 through the `gemm` crate; centring, norms and sums
//! are f64. Mutual k-NN uses cosine similarity (rows L2-normalised, as platonic-rep measures),
//! excludes each sample from its own neighbours, breaks ties by the lower row index, and costs
//! `O(n²·(dx + dy))`: subsample rows for very large splits.

use crate::products::{host_product, DenseMatrix};
use anyhow::{bail, ensure, Result};
use candle_core::Device;
use ndarray::{ArrayView1, ArrayView2};
use rayon::prelude::*;
use serde::Serialize;

/// Every similarity between two representations of the same `n` samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Similarity {
    /// Samples (rows) compared.
    pub n: usize,
    /// Linear CKA (biased HSIC), in `[0, 1]`.
    pub linear_cka: f64,
    /// Debiased linear CKA (unbiased HSIC); can be slightly negative for unrelated features.
    pub debiased_cka: f64,
    /// Mean fraction of shared neighbours among each sample's `k` nearest, in `[0, 1]`.
    pub mutual_knn: f64,
    /// Neighbours per sample for `mutual_knn`.
    pub k: usize,
    /// Centroid modality gap ([`centroid_gap`]) when both have the same width, else `None`.
    /// Meaningful only when the two share one space (e.g. `llm.image` and `llm.text` at one layer).
    pub centroid_gap: Option<f64>,
}

/// Every similarity of `x` (`n × dx`) and `y` (`n × dy`), with `k` neighbours; the centroid gap
/// only when `dx == dy`.
pub fn similarity(x: ArrayView2<f32>, y: ArrayView2<f32>, k: usize) -> Result<Similarity> {
    let (linear_cka, debiased_cka) = ckas(x, y)?;
    let centroid_gap = if x.ncols() == y.ncols() {
        Some(centroid_gap(x, y)?)
    } else {
        None
    };
    Ok(Similarity {
        n: x.nrows(),
        linear_cka,
        debiased_cka,
        mutual_knn: mutual_knn(x, y, k)?,
        k,
        centroid_gap,
    })
}

/// Centroid modality gap of Liang et al. 2022: `‖mean(x̂) − mean(ŷ)‖`, the distance between the
/// means of the L2-normalised rows of `x` and of `y` (both `n × d`, one space). 0 when the two
/// clouds share a centre, up to 2 when they sit at opposite poles of the unit sphere. Rows need
/// not be paired; every row needs a non-zero norm.
pub fn centroid_gap(x: ArrayView2<f32>, y: ArrayView2<f32>) -> Result<f64> {
    ensure!(
        x.ncols() == y.ncols(),
        "the centroid gap compares two representations in one space: widths {} and {} differ",
        x.ncols(),
        y.ncols()
    );
    ensure!(
        x.nrows() > 0 && y.nrows() > 0,
        "the centroid gap needs at least one row on each side"
    );
    let cx = unit_centroid(x, "x")?;
    let cy = unit_centroid(y, "y")?;
    Ok(cx
        .iter()
        .zip(&cy)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt())
}

/// Euclidean norm of `row`, summed in f64.
fn l2_norm(row: ArrayView1<f32>) -> f64 {
    row.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// The mean of `a`'s L2-normalised rows, in f64.
fn unit_centroid(a: ArrayView2<f32>, name: &str) -> Result<Vec<f64>> {
    let mut sum = vec![0f64; a.ncols()];
    for (i, row) in a.outer_iter().enumerate() {
        let norm = l2_norm(row);
        ensure!(
            norm.is_finite() && norm > 0.0,
            "{name}: row {i} has norm {norm}, so it has no direction to normalise"
        );
        sum.iter_mut()
            .zip(row)
            .for_each(|(s, &v)| *s += v as f64 / norm);
    }
    let n = a.nrows() as f64;
    Ok(sum.into_iter().map(|s| s / n).collect())
}

/// Linear CKA of `x` and `y` (Kornblith et al. 2019, biased HSIC).
pub fn linear_cka(x: ArrayView2<f32>, y: ArrayView2<f32>) -> Result<f64> {
    Ok(ckas(x, y)?.0)
}

/// Debiased linear CKA of `x` and `y` (unbiased HSIC; needs at least 4 rows).
pub fn debiased_linear_cka(x: ArrayView2<f32>, y: ArrayView2<f32>) -> Result<f64> {
    Ok(ckas(x, y)?.1)
}

/// `(linear CKA, debiased linear CKA)`: the products they share are computed once.
fn ckas(x: ArrayView2<f32>, y: ArrayView2<f32>) -> Result<(f64, f64)> {
    check_pair(x, y, 4)?;
    let n = x.nrows();
    let xs = Centred::new(x, "x");
    let ys = Centred::new(y, "y");
    for c in [&xs, &ys] {
        ensure!(
            c.squared_norm > 0.0,
            "{} is constant across all {n} rows: CKA is undefined for a representation that does \
             not vary",
            c.name
        );
    }
    let (xm, ym) = (xs.matrix()?, ys.matrix()?);
    let xy = cross_squared_norm(&xm, &ys)?;
    let xx = cross_squared_norm(&xm, &xs)?;
    let yy = cross_squared_norm(&ym, &ys)?;
    let biased = xy / (xx.sqrt() * yy.sqrt());
    let debiased_xy = debias(xy, &xs, &ys);
    let debiased_xx = debias(xx, &xs, &xs);
    let debiased_yy = debias(yy, &ys, &ys);
    ensure!(
        debiased_xx > 0.0 && debiased_yy > 0.0,
        "debiased CKA is undefined here: the unbiased HSIC of a representation with itself is not \
         positive (too few rows, n = {n}, for the features' variation)"
    );
    Ok((
        biased,
        debiased_xy / (debiased_xx.sqrt() * debiased_yy.sqrt()),
    ))
}

/// `‖AᵀB‖²_F` turned into `n(n−3)` times the unbiased HSIC of the linear kernels (Song et al.
/// 2012, in the feature-space form of Kornblith's reference code).
fn debias(dot: f64, a: &Centred, b: &Centred) -> f64 {
    let n = a.rows as f64;
    let rows: f64 = a
        .row_norms
        .iter()
        .zip(&b.row_norms)
        .map(|(p, q)| p * q)
        .sum();
    dot - n / (n - 2.0) * rows + a.squared_norm * b.squared_norm / ((n - 1.0) * (n - 2.0))
}

/// Column-centred features, row-major f32, with their squared row norms.
struct Centred {
    name: &'static str,
    rows: usize,
    cols: usize,
    values: Vec<f32>,
    row_norms: Vec<f64>,
    squared_norm: f64,
}

impl Centred {
    fn new(a: ArrayView2<f32>, name: &'static str) -> Self {
        let (rows, cols) = a.dim();
        let mut means = vec![0f64; cols];
        for row in a.outer_iter() {
            means.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
        }
        means.iter_mut().for_each(|m| *m /= rows as f64);
        let mut values = Vec::with_capacity(rows * cols);
        let mut row_norms = Vec::with_capacity(rows);
        for row in a.outer_iter() {
            let mut norm = 0f64;
            for (&v, m) in row.iter().zip(&means) {
                let c = v as f64 - m;
                norm += c * c;
                values.push(c as f32);
            }
            row_norms.push(norm);
        }
        let squared_norm = row_norms.iter().sum();
        Self {
            name,
            rows,
            cols,
            values,
            row_norms,
            squared_norm,
        }
    }

    /// The centred features as the products' operand.
    fn matrix(&self) -> Result<DenseMatrix> {
        DenseMatrix::from_row_major(self.values.clone(), self.rows, self.cols, &Device::Cpu)
    }
}

/// `‖Aᵀ·B‖²_F` for `a` the operand of some centred `A`: the product in f32, the sum of squares
/// in f64.
fn cross_squared_norm(a: &DenseMatrix, b: &Centred) -> Result<f64> {
    let mut out = vec![0f32; a.cols() * b.cols];
    a.mul_t(&b.values, b.cols, &mut out)?;
    // In order, not in parallel: the same inputs give the same bits on every run.
    Ok(out.iter().map(|&v| (v as f64) * (v as f64)).sum())
}

/// Rows compared per block of the similarity matrix in [`mutual_knn`].
const KNN_BLOCK: usize = 256;

/// Mutual k-NN alignment of `x` and `y` (Huh et al. 2024): for each sample, the fraction of its
/// `k` nearest neighbours in `x` (cosine similarity, itself excluded) that are also among its `k`
/// nearest in `y`, averaged over samples.
pub fn mutual_knn(x: ArrayView2<f32>, y: ArrayView2<f32>, k: usize) -> Result<f64> {
    check_pair(x, y, 2)?;
    let n = x.nrows();
    ensure!(
        (1..n).contains(&k),
        "mutual k-NN needs 1 ≤ k < rows; got k = {k} for {n} rows"
    );
    let nx = neighbours(x, k, "x")?;
    let ny = neighbours(y, k, "y")?;
    let shared: usize = nx
        .par_chunks(k)
        .zip(ny.par_chunks(k))
        .map(|(a, b)| a.iter().filter(|i| b.binary_search(i).is_ok()).count())
        .sum();
    Ok(shared as f64 / (n * k) as f64)
}

/// Each row's `k` nearest rows by cosine similarity (itself excluded; ties to the lower index),
/// `n × k` row-major, each row's list sorted by index.
fn neighbours(a: ArrayView2<f32>, k: usize, name: &str) -> Result<Vec<u32>> {
    let (n, d) = a.dim();
    let mut unit = Vec::with_capacity(n * d);
    for (i, row) in a.outer_iter().enumerate() {
        let norm = l2_norm(row);
        if norm == 0.0 {
            bail!("{name}: row {i} is all zeros, so it has no direction for cosine similarity");
        }
        unit.extend(row.iter().map(|&v| (v as f64 / norm) as f32));
    }
    // Uᵀ as a row-major d × n operand: each block's similarities are U_block · Uᵀ.
    let mut unit_t = vec![0f32; n * d];
    for (i, row) in unit.chunks_exact(d).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            unit_t[j * n + i] = v;
        }
    }
    let mut out = vec![0u32; n * k];
    let mut sims = vec![0f32; KNN_BLOCK.min(n) * n];
    for (b, rows) in unit.chunks(KNN_BLOCK * d).enumerate() {
        let m = rows.len() / d;
        let sims = &mut sims[..m * n];
        host_product(rows, &unit_t, (m, d, n), sims)?;
        let first = b * KNN_BLOCK;
        out[first * k..(first + m) * k]
            .par_chunks_mut(k)
            .zip(sims.par_chunks(n))
            .enumerate()
            .for_each(|(r, (dst, row))| top_k(row, first + r, dst));
    }
    Ok(out)
}

/// The `dst.len()` indices of the largest values of `row`, `skip` excluded, ties to the lower
/// index, written sorted by index.
fn top_k(row: &[f32], skip: usize, dst: &mut [u32]) {
    let mut idx: Vec<u32> = (0..row.len() as u32)
        .filter(|&j| j as usize != skip)
        .collect();
    let k = dst.len();
    let order = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
    }
    let chosen = &mut idx[..k];
    chosen.sort_unstable();
    dst.copy_from_slice(chosen);
}

/// Same rows, at least `min_rows`, every value finite (the first offending row is named).
fn check_pair(x: ArrayView2<f32>, y: ArrayView2<f32>, min_rows: usize) -> Result<()> {
    ensure!(
        x.nrows() == y.nrows(),
        "the two representations must describe the same samples: x has {} rows, y has {}",
        x.nrows(),
        y.nrows()
    );
    ensure!(
        x.nrows() >= min_rows,
        "need at least {min_rows} rows to compare representations, got {}",
        x.nrows()
    );
    for (name, a) in [("x", x), ("y", y)] {
        ensure!(a.ncols() > 0, "{name} has no columns");
        if let Some(i) = a
            .outer_iter()
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            bail!("{name}: row {i} holds a NaN or infinite value; fix or drop that sample");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Axis};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((n, d), |_| rng.gen_range(-1.0f32..1.0))
    }

    #[test]
    fn a_representation_is_identical_to_itself_and_to_its_rotations_and_scalings() {
        let x = random(50, 6, 1);
        let s = similarity(x.view(), x.view(), 5).unwrap();
        assert!((s.linear_cka - 1.0).abs() < 1e-6, "{s:?}");
        assert!((s.debiased_cka - 1.0).abs() < 1e-6, "{s:?}");
        assert_eq!(s.mutual_knn, 1.0);
        // A column permutation with scaling and a shift: CKA is invariant to all three.
        let mut y = x.select(Axis(1), &[3, 0, 5, 1, 4, 2]);
        y.mapv_inplace(|v| 3.0 * v + 7.0);
        let s = similarity(x.view(), y.view(), 5).unwrap();
        assert!((s.linear_cka - 1.0).abs() < 1e-5, "{s:?}");
        assert!((s.debiased_cka - 1.0).abs() < 1e-5, "{s:?}");
    }

    #[test]
    fn unrelated_representations_score_low() {
        let s = similarity(random(400, 8, 2).view(), random(400, 8, 3).view(), 10).unwrap();
        assert!(s.debiased_cka.abs() < 0.05, "{s:?}");
        assert!(s.linear_cka < 0.1, "{s:?}");
        // Chance overlap is about k / (n − 1).
        assert!(s.mutual_knn < 0.1, "{s:?}");
    }

    #[test]
    fn ties_go_to_the_lower_index_and_the_sample_itself_is_skipped() {
        let mut dst = [0u32; 2];
        top_k(&[0.5, 1.0, 0.5, 0.5, 0.9], 1, &mut dst);
        assert_eq!(dst, [0, 4]);
        top_k(&[0.5, 1.0, 0.5, 0.5, 0.2], 1, &mut dst);
        assert_eq!(dst, [0, 2]);
    }

    #[test]
    fn bad_input_is_named() {
        let x = random(10, 3, 4);
        let mut y = random(10, 3, 5);
        let e = similarity(x.view(), random(9, 3, 6).view(), 3).unwrap_err();
        assert!(e.to_string().contains("10 rows, y has 9"), "{e}");
        y[[7, 1]] = f32::NAN;
        let e = linear_cka(x.view(), y.view()).unwrap_err();
        assert!(e.to_string().contains("y: row 7"), "{e}");
        let e = mutual_knn(x.view(), x.view(), 10).unwrap_err();
        assert!(e.to_string().contains("k = 10"), "{e}");
        let constant = Array2::<f32>::ones((10, 3));
        let e = linear_cka(constant.view(), x.view()).unwrap_err();
        assert!(e.to_string().contains("constant"), "{e}");
        let mut zero_row = random(10, 3, 7);
        zero_row.row_mut(2).fill(0.0);
        let e = mutual_knn(x.view(), zero_row.view(), 3).unwrap_err();
        assert!(e.to_string().contains("y: row 2"), "{e}");
    }
}
