//! The matrix products a linear probe's solver spends its time in, `A·M` and `Aᵀ·R` for a fixed
//! matrix `A`, in f32, on the device `A` was uploaded to.
//!
//! For the data, `A` is `X_aug`, the `n × (d+1)` training matrix with a trailing column of ones
//! (so one product gives `X·W + b`); the preconditioner's basis is another. On the CPU the rows
//! stay in host buffers and the products run through the `gemm` crate (the kernels candle's CPU
//! backend uses, here with their AVX-512 variants, chosen at run time) straight into buffers the
//! caller owns, so an L-BFGS iteration need not allocate. On other devices both orientations live
//! as candle tensors and the products go through candle.

use anyhow::{ensure, Result};
use candle_core::{Device, Tensor};
use ndarray::ArrayView2;
use rayon::prelude::*;

/// A fixed `rows × cols` f32 matrix on a device, with its two products.
pub struct DenseMatrix {
    rows: usize,
    cols: usize,
    store: Store,
}

enum Store {
    /// Row-major host rows and their transpose (a contiguous copy: `gemm` reads a transposed
    /// operand through strides more slowly).
    Host { x: Vec<f32>, xt: Vec<f32> },
    /// The matrix and its contiguous transpose (a plain GEMM for either product on any backend).
    Tensors { xa: Tensor, xa_t: Tensor },
}

impl DenseMatrix {
    /// `x` (`n × d`) with a column of ones appended (`X_aug`), on `device`.
    pub fn augmented(x: ArrayView2<f32>, device: &Device) -> Result<Self> {
        let (n, d) = x.dim();
        let mut buf = Vec::with_capacity(n * (d + 1));
        for row in x.outer_iter() {
            buf.extend(row.iter().copied());
            buf.push(1.0f32);
        }
        Self::from_row_major(buf, n, d + 1, device)
    }

    /// The row-major `rows × cols` matrix `buf`, on `device`.
    pub fn from_row_major(
        buf: Vec<f32>,
        rows: usize,
        cols: usize,
        device: &Device,
    ) -> Result<Self> {
        ensure!(
            buf.len() == rows * cols,
            "matrix buffer has the wrong length"
        );
        let store = if device.is_cpu() {
            let mut xt = vec![0f32; buf.len()];
            for (i, row) in buf.chunks_exact(cols).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    xt[j * rows + i] = v;
                }
            }
            Store::Host { x: buf, xt }
        } else {
            let xa = Tensor::from_vec(buf, (rows, cols), device)?;
            let xa_t = xa.t()?.contiguous()?;
            Store::Tensors { xa, xa_t }
        };
        Ok(Self { rows, cols, store })
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The matrix and its transpose as contiguous f32 tensors on `device` (shared when they
    /// already live there, else uploaded from the host copies).
    pub fn tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        Ok(match &self.store {
            Store::Tensors { xa, xa_t } if xa.device().same_device(device) => {
                (xa.clone(), xa_t.clone())
            }
            Store::Tensors { xa, xa_t } => (xa.to_device(device)?, xa_t.to_device(device)?),
            Store::Host { x, xt } => (
                Tensor::from_slice(x, (self.rows, self.cols), device)?,
                Tensor::from_slice(xt, (self.cols, self.rows), device)?,
            ),
        })
    }

    /// `out = A · M`, with `M` row-major `cols × k` and `out` row-major `rows × k`.
    pub fn mul(&self, m: &[f32], k: usize, out: &mut [f32]) -> Result<()> {
        self.product(false, m, k, out)
    }

    /// `out = Aᵀ · R`, with `R` row-major `rows × k` and `out` row-major `cols × k`.
    pub fn mul_t(&self, r: &[f32], k: usize, out: &mut [f32]) -> Result<()> {
        self.product(true, r, k, out)
    }

    /// `out = op(A) · B` with `op` the identity or the transpose.
    fn product(&self, transposed: bool, b: &[f32], k: usize, out: &mut [f32]) -> Result<()> {
        let (rows, inner) = if transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        };
        ensure!(
            b.len() == inner * k && out.len() == rows * k,
            "matrix product: operand of {} values or output of {} for a {rows}×{inner} by {inner}×{k} product",
            b.len(),
            out.len()
        );
        match &self.store {
            Store::Host { x, xt } => {
                host_product(if transposed { xt } else { x }, b, (rows, inner, k), out)?
            }
            Store::Tensors { xa, xa_t } => {
                device_gemm(if transposed { xa_t } else { xa }, b, (inner, k), out)?
            }
        }
        Ok(())
    }
}

/// `out (m × n) = a (m × k) · b (k × n)` for row-major host slices, through the same `gemm`
/// kernels as [`DenseMatrix`]'s CPU products, on rayon's threads.
pub fn host_product(
    a: &[f32],
    b: &[f32],
    (m, k, n): (usize, usize, usize),
    out: &mut [f32],
) -> Result<()> {
    ensure!(
        a.len() == m * k && b.len() == k * n && out.len() == m * n,
        "matrix product: {} × {} by {} × {} into {} values ({}, {} and {} given)",
        m,
        k,
        k,
        n,
        m * n,
        a.len(),
        b.len(),
        out.len()
    );
    // SAFETY: the sizes were checked above; the strides describe row-major matrices inside them.
    unsafe {
        host_gemm(
            (m, n, k),
            out.as_mut_ptr(),
            (a.as_ptr(), 1, k as isize),
            (b.as_ptr(), 1, n as isize),
        )
    };
    Ok(())
}

/// `dst = src` rounded to f32 (parallel over blocks): the f32 operand of a product.
pub fn narrow(src: &[f64], dst: &mut [f32]) {
    const BLOCK: usize = 1 << 14;
    dst.par_chunks_mut(BLOCK)
        .zip(src.par_chunks(BLOCK))
        .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d = s as f32));
}

/// `dst (m × n, row-major) = lhs (m × k) · rhs (k × n)`, with `(ptr, column stride, row stride)`
/// operands, on rayon's threads.
///
/// # Safety
/// Every element the strides address must lie inside the operands' allocations, and `dst` must
/// hold `m·n` elements that nothing else accesses during the call.
unsafe fn host_gemm(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    (lhs, lhs_cs, lhs_rs): (*const f32, isize, isize),
    (rhs, rhs_cs, rhs_rs): (*const f32, isize, isize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        n as isize,
        false,
        lhs,
        lhs_cs,
        lhs_rs,
        rhs,
        rhs_cs,
        rhs_rs,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::Rayon(rayon::current_num_threads()),
    );
}

/// `out = a · B` through candle, `B` uploaded from a host row-major `shape` buffer.
fn device_gemm(a: &Tensor, b: &[f32], shape: (usize, usize), out: &mut [f32]) -> Result<()> {
    let bt = Tensor::from_slice(b, shape, a.device())?;
    let prod: Vec<f32> = a.matmul(&bt)?.flatten_all()?.to_vec1()?;
    out.copy_from_slice(&prod);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    /// Both products against a naive f64 reference, with odd sizes that exercise the kernels'
    /// edge tiles.
    #[test]
    fn host_products_match_naive_sums() {
        let (n, d, k) = (37usize, 13usize, 5usize);
        let x = Array2::from_shape_fn((n, d), |(i, j)| ((i * 7 + j * 3) % 11) as f32 / 11.0 - 0.4);
        let dm = DenseMatrix::augmented(x.view(), &Device::Cpu).unwrap();
        let m: Vec<f32> = (0..(d + 1) * k)
            .map(|i| (i % 5) as f32 * 0.3 - 0.6)
            .collect();
        let mut z = vec![0.0f32; n * k];
        dm.mul(&m, k, &mut z).unwrap();
        let r: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.2 - 0.5).collect();
        let mut g = vec![0.0f32; (d + 1) * k];
        dm.mul_t(&r, k, &mut g).unwrap();
        let xa = |i: usize, j: usize| if j == d { 1.0 } else { x[[i, j]] as f64 };
        for i in 0..n {
            for c in 0..k {
                let want: f64 = (0..=d).map(|j| xa(i, j) * m[j * k + c] as f64).sum();
                assert!(
                    (z[i * k + c] as f64 - want).abs() < 1e-5,
                    "project ({i},{c})"
                );
            }
        }
        for j in 0..=d {
            for c in 0..k {
                let want: f64 = (0..n).map(|i| xa(i, j) * r[i * k + c] as f64).sum();
                assert!((g[j * k + c] as f64 - want).abs() < 1e-4, "back ({j},{c})");
            }
        }
        let mut small = vec![0f32; 3];
        let e = host_product(&m, &m, (n, d + 1, k), &mut small).unwrap_err();
        assert!(e.to_string().contains("matrix product"), "{e}");
    }
}
