//! The L-BFGS correction pairs of the device-resident solver ([`crate::resident`]) as candle
//! tensors: one buffer written in place, its inner products with a vector in one product, the
//! compact form's small algebra on the host ([`PairGram`], shared with the host
//! [`crate::lbfgs_memory::Memory`]).

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::VecDeque;

use crate::lbfgs_memory::PairGram;

/// The L-BFGS pairs on the device: `S` in rows `0..cap` and `Y` in rows `cap..2·cap` of one
/// buffer, written in place, with their inner products on the host.
pub(crate) struct DeviceMemory {
    cap: usize,
    pairs: Tensor,
    /// Slots in use, oldest pair first.
    order: VecDeque<usize>,
    gram: PairGram,
    /// The newest pair's products are still to be computed.
    pending: bool,
}

impl DeviceMemory {
    pub(crate) fn new(cap: usize, len: usize, device: &Device) -> Result<Self> {
        let cap = cap.max(1);
        Ok(Self {
            cap,
            pairs: Tensor::zeros((2 * cap, len), DType::F64, device)?,
            order: VecDeque::new(),
            gram: PairGram::default(),
            pending: false,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(crate) fn clear(&mut self) {
        self.order.clear();
        self.gram = PairGram::default();
        self.pending = false;
    }

    pub(crate) fn push(&mut self, s: &Tensor, y: &Tensor) -> Result<()> {
        if self.pending {
            self.products(None)?;
        }
        let slot = if self.order.len() == self.cap {
            self.gram.pop_oldest();
            self.order.pop_front().unwrap_or(0)
        } else {
            self.order.len()
        };
        let len = self.pairs.dim(1)?;
        self.pairs.slice_set(&s.reshape((1, len))?, 0, slot)?;
        self.pairs
            .slice_set(&y.reshape((1, len))?, 0, self.cap + slot)?;
        self.order.push_back(slot);
        self.pending = true;
        Ok(())
    }

    /// `(Sᵀg, Yᵀg)` in pair order when `g` is given, and the pending pair's products, from one
    /// product with the whole buffer.
    fn products(&mut self, g: Option<&Tensor>) -> Result<(Vec<f64>, Vec<f64>)> {
        let len = self.pairs.dim(1)?;
        let mut cols = Vec::new();
        if let Some(g) = g {
            cols.push(g.reshape((len, 1))?);
        }
        let newest = *self.order.back().context("no pairs")?;
        if self.pending {
            cols.push(self.pairs.narrow(0, self.cap + newest, 1)?.t()?);
        }
        let w = cols.len();
        let prod: Vec<f64> = self
            .pairs
            .matmul(&Tensor::cat(&cols, 1)?)?
            .flatten_all()?
            .to_vec1()?;
        let at = |row: usize, col: usize| prod[row * w + col];
        let pick = |col: usize, off: usize| -> Vec<f64> {
            self.order.iter().map(|&s| at(off + s, col)).collect()
        };
        let (a, b) = match g {
            Some(_) => (pick(0, 0), pick(0, self.cap)),
            None => (Vec::new(), Vec::new()),
        };
        if self.pending {
            let (sy, yy) = (pick(w - 1, 0), pick(w - 1, self.cap));
            self.gram.push(&sy, &yy);
            self.pending = false;
        }
        Ok((a, b))
    }

    /// `−H·g`.
    pub(crate) fn direction(&mut self, g: &Tensor) -> Result<Tensor> {
        if self.is_empty() {
            return Ok(g.neg()?);
        }
        let (a, b) = self.products(Some(g))?;
        let (gamma, cs, cy) = self.gram.coefficients(&a, &b);
        let mut coef = vec![0f64; 2 * self.cap];
        for (i, &slot) in self.order.iter().enumerate() {
            coef[slot] = cs[i];
            coef[self.cap + slot] = cy[i];
        }
        let coef = Tensor::from_vec(coef, (1, 2 * self.cap), g.device())?;
        let combo = coef.matmul(&self.pairs)?.reshape(g.shape())?;
        Ok((combo - g.affine(gamma, 0.0)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lbfgs_memory::Memory;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The device memory's ring of slots must give the host memory's direction (oldest-first
    /// pairs) through more pushes than it holds; the host stores its pairs in f32, hence the
    /// tolerance.
    #[test]
    fn device_memory_matches_the_host_memory() {
        let (rows, cols, cap) = (37usize, 5usize, 3usize);
        let len = rows * cols;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let diag: Vec<f64> = (0..len).map(|_| rng.gen_range(0.1..10.0)).collect();
        let dev = Device::Cpu;
        let mut host = Memory::new(cap);
        let mut device = DeviceMemory::new(cap, len, &dev).unwrap();
        let tensor = |v: &[f64]| Tensor::from_slice(v, (rows, cols), &dev).unwrap();
        for step in 0..8 {
            let s: Vec<f64> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let y: Vec<f64> = s.iter().zip(&diag).map(|(s, h)| s * h).collect();
            host.push(&s, &y);
            device.push(&tensor(&s), &tensor(&y)).unwrap();
            let g: Vec<f64> = (0..len).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut want = vec![0.0; len];
            host.direction(&g, &mut want);
            let got: Vec<f64> = device
                .direction(&tensor(&g))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-5 * scale,
                "step {step}: error {err:e} of {scale:e}"
            );
        }
    }
}
