//! Feature standardisation with training statistics (scikit-learn's `StandardScaler`:
//! population standard deviation, i.e. `ddof = 0`).

use anyhow::{ensure, Result};
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Per-feature mean and scale fitted on training data.
///
/// Constant features (standard deviation exactly 0, or below `1e-12`·max(1, |mean|) from
/// rounding) get scale 1, as in scikit-learn, so they are only centred (to 0 on train).
#[derive(Debug, Clone)]
pub struct Standardizer {
    /// Per-feature mean.
    pub mean: Array1<f64>,
    /// Per-feature scale (standard deviation, or 1 for constant features).
    pub scale: Array1<f64>,
}

impl Standardizer {
    /// Fit means and standard deviations (accumulated in f64) on the rows of `x`.
    pub fn fit(x: ArrayView2<f32>) -> Result<Self> {
        let (n, d) = x.dim();
        ensure!(n > 0, "cannot standardise an empty array");
        let mut mean = Array1::<f64>::zeros(d);
        for row in x.outer_iter() {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
        }
        mean /= n as f64;
        let mut var = Array1::<f64>::zeros(d);
        for row in x.outer_iter() {
            var.iter_mut()
                .zip(row)
                .zip(&mean)
                .for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2));
        }
        var /= n as f64;
        let scale = var
            .iter()
            .zip(&mean)
            .map(|(&v, m)| {
                let sd = v.sqrt();
                if sd <= 1e-12 * m.abs().max(1.0) {
                    1.0
                } else {
                    sd
                }
            })
            .collect();
        Ok(Self { mean, scale })
    }

    /// `(x - mean) / scale` in f32.
    pub fn transform(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        ensure!(
            x.ncols() == self.mean.len(),
            "standardizer fitted on {} features, got {}",
            self.mean.len(),
            x.ncols()
        );
        let mut out = x.to_owned();
        for mut row in out.axis_iter_mut(Axis(0)) {
            row.iter_mut()
                .zip(&self.mean)
                .zip(&self.scale)
                .for_each(|((v, m), s)| *v = ((*v as f64 - m) / s) as f32);
        }
        Ok(out)
    }

    /// Number of features treated as constant (scale 1).
    pub fn n_constant(&self) -> usize {
        self.scale
            .iter()
            .zip(self.mean.iter())
            .filter(|(s, _)| **s == 1.0)
            .count()
    }
}
