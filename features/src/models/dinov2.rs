//! DINOv2 (transformers' `Dinov2Model`, and `Dinov2WithRegistersModel`): a vision-only baseline.
//! Tokens are `[CLS, registers…, patches…]`; `hidden_states[0]` is the embedding output and
//! `hidden_states[i]` the output of layer `i` (before the final `layernorm`). Position embeddings
//! are interpolated to the input grid exactly as transformers does (bicubic, torch's kernels).

use super::layers::{run_layers, Attention, EncoderLayer, PreNormLayer};
use super::linear::{linear, FusedLinear as Linear};
use super::norm::{layer_norm, FusedLayerNorm as LayerNorm};
use super::patch_embed::PatchEmbedding;
use super::Act;
use crate::preprocess::Resample;
use crate::resample::resample_coeffs;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;

/// `Dinov2Config` fields the forward pass uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Act,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    /// Register tokens (`Dinov2WithRegistersModel`); 0 for plain DINOv2.
    #[serde(default)]
    pub num_register_tokens: usize,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_channels() -> usize {
    3
}
fn default_act() -> Act {
    Act::Gelu
}
fn default_eps() -> f64 {
    1e-6
}

/// One DINOv2 layer: with the fused ops, its layer scales folded into the output projection and
/// fc2 so that it is CLIP's pre-norm layer (residual adds in their bias passes, each fused with
/// the LayerNorm after it where [`super::add_norm`] is on); otherwise as transformers runs it.
enum Layer {
    Folded(EncoderLayer),
    Plain(PlainLayer),
}

struct PlainLayer {
    norm1: LayerNorm,
    attn: Attention,
    scale1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    scale2: Tensor,
    act: Act,
}

impl Layer {
    fn new(vb: VarBuilder, cfg: &Dinov2Config) -> Result<Self> {
        let (d, eps) = (cfg.hidden_size, cfg.layer_norm_eps);
        let inter = (d as f64 * cfg.mlp_ratio) as usize;
        let names = [
            "attention.query",
            "attention.key",
            "attention.value",
            "output.dense",
        ];
        let mut attn =
            Attention::with_names(vb.pp("attention"), d, cfg.num_attention_heads, names)?;
        let scale1 = vb.get(d, "layer_scale1.lambda1")?;
        let fc2 = linear(inter, d, vb.pp("mlp.fc2"))?;
        let scale2 = vb.get(d, "layer_scale2.lambda1")?;
        let (norm1, norm2) = (
            layer_norm(d, eps, vb.pp("norm1"))?,
            layer_norm(d, eps, vb.pp("norm2"))?,
        );
        let fc1 = linear(d, inter, vb.pp("mlp.fc1"))?;
        if fc2.is_fused() {
            attn.scale_output(&scale1)?;
            let fc2 = fc2.scaled_outputs(&scale2)?;
            let layer = EncoderLayer::from_parts(norm1, attn, norm2, fc1, fc2, cfg.hidden_act);
            return Ok(Layer::Folded(layer));
        }
        Ok(Layer::Plain(PlainLayer {
            norm1,
            attn,
            scale1,
            norm2,
            fc1,
            fc2,
            scale2,
            act: cfg.hidden_act,
        }))
    }
}

impl PreNormLayer for Layer {
    fn first_norm(&self) -> &LayerNorm {
        match self {
            Layer::Folded(l) => l.first_norm(),
            Layer::Plain(l) => &l.norm1,
        }
    }

    fn forward_normed(
        &self,
        x: &Tensor,
        normed: &Tensor,
        next: Option<&LayerNorm>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let l = match self {
            Layer::Folded(l) => return l.forward_normed(x, normed, next),
            Layer::Plain(l) => l,
        };
        let a = l.attn.forward(normed)?;
        let x = (x + a.broadcast_mul(&l.scale1)?)?;
        let h = l.norm2.forward(&x)?;
        let h = l.fc2.forward(&l.act.forward(&l.fc1.forward(&h)?)?)?;
        let y = (x + h.broadcast_mul(&l.scale2)?)?;
        let n = next.map(|norm| norm.forward(&y)).transpose()?;
        Ok((y, n))
    }
}

/// The DINOv2 backbone, loaded up to layer `max_layer`.
pub struct Dinov2Model {
    patch: PatchEmbedding,
    cls: Tensor,
    registers: Option<Tensor>,
    /// Position embeddings [1 + N, D] as stored (f32 on the CPU, for interpolation).
    position: Tensor,
    /// Interpolated position embeddings per input grid (rows, cols), on the model's device.
    resized: Mutex<HashMap<(usize, usize), Tensor>>,
    layers: Vec<Layer>,
    cfg: Dinov2Config,
    device: Device,
    dtype: DType,
    /// Add the position table with the fused kernel (see [`super::fused::add_table`]).
    fused: bool,
    /// The residual stream's dtype ([`super::fused::residual_dtype`]).
    stream: DType,
}

impl Dinov2Model {
    /// Builds the model from `vb` rooted at its prefix (`""` or `dinov2`), layers `1..=max_layer`.
    pub fn new(vb: VarBuilder, cfg: &Dinov2Config, max_layer: usize) -> Result<Self> {
        if cfg.use_swiglu_ffn {
            candle_core::bail!("DINOv2 with a SwiGLU MLP (dinov2-giant) is not supported yet");
        }
        let d = cfg.hidden_size;
        let emb = vb.pp("embeddings");
        let patch = PatchEmbedding::new(
            emb.pp("patch_embeddings.projection"),
            cfg.num_channels,
            d,
            cfg.patch_size,
            true,
        )?;
        let cls = emb.get((1, 1, d), "cls_token")?;
        let registers = match cfg.num_register_tokens {
            0 => None,
            r => Some(emb.get((1, r, d), "register_tokens")?),
        };
        let n = (cfg.image_size / cfg.patch_size).pow(2);
        let position = emb
            .get((1, n + 1, d), "position_embeddings")?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        let layers = (0..max_layer.min(cfg.num_hidden_layers))
            .map(|i| Layer::new(vb.pp(format!("encoder.layer.{i}")), cfg))
            .collect::<Result<_>>()?;
        Ok(Self {
            patch,
            cls,
            registers,
            position,
            resized: Mutex::new(HashMap::new()),
            layers,
            cfg: cfg.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
            fused: super::fused::enabled_for(vb.device()),
            stream: super::fused::residual_dtype(vb.device(), vb.dtype()),
        })
    }

    /// The residual stream's dtype.
    pub fn stream_dtype(&self) -> DType {
        self.stream
    }

    /// The configuration this model was built from.
    pub fn config(&self) -> &Dinov2Config {
        &self.cfg
    }

    /// Position embeddings [1 + rows·cols, D] for an input grid, interpolated as transformers.
    fn position_for(&self, rows: usize, cols: usize) -> Result<Tensor> {
        let mut cache = self.resized.lock().expect("position cache poisoned");
        if let Some(t) = cache.get(&(rows, cols)) {
            return Ok(t.clone());
        }
        let (n1, d) = self.position.dims2()?;
        let side = ((n1 - 1) as f64).sqrt() as usize;
        let pos = if rows * cols == n1 - 1 && rows == cols {
            self.position.clone()
        } else {
            let grid: Vec<f32> = self
                .position
                .narrow(0, 1, n1 - 1)?
                .flatten_all()?
                .to_vec1()?;
            let antialias = self.cfg.num_register_tokens > 0;
            let out = interpolate_bicubic(&grid, side, side, d, rows, cols, antialias);
            let patches = Tensor::from_vec(out, (rows * cols, d), &Device::Cpu)?;
            Tensor::cat(&[&self.position.narrow(0, 0, 1)?, &patches], 0)?
        };
        let pos = pos.to_dtype(self.dtype)?.to_device(&self.device)?;
        cache.insert((rows, cols), pos.clone());
        Ok(pos)
    }

    /// `hidden_states[i]` for each wanted (resolved) index, each [B, 1 + R + T, D].
    pub fn hidden_states(&self, pixels: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        let b = pixels.dim(0)?;
        let (p, (rows, cols)) = self.patch.forward(pixels)?; // [B, rows·cols, D]
        let d = p.dim(2)?;
        let cls = self.cls.broadcast_as((b, 1, d))?.to_dtype(p.dtype())?;
        let pos = self.position_for(rows, cols)?;
        let x = super::fused::add_table(&Tensor::cat(&[&cls, &p], 1)?, &pos, self.fused)?;
        let x = match &self.registers {
            Some(r) => {
                let r = r.broadcast_as((b, r.dim(1)?, d))?.to_dtype(x.dtype())?;
                let t = x.dim(1)?;
                Tensor::cat(&[&x.narrow(1, 0, 1)?, &r, &x.narrow(1, 1, t - 1)?], 1)?
            }
            None => x,
        };
        run_layers(x.to_dtype(self.stream)?, &self.layers, wanted)
    }
}

/// torch's `interpolate(mode="bicubic", align_corners=False)` of a [H, W, D] grid (row-major,
/// channels last) to [rows, cols, D]: a = −0.75 with clamped borders, or with `antialias` the
/// separable a = −0.5 filter (torch's `_upsample_bicubic2d_aa`, PIL's coefficients in float).
fn interpolate_bicubic(
    grid: &[f32],
    h: usize,
    w: usize,
    d: usize,
    rows: usize,
    cols: usize,
    antialias: bool,
) -> Vec<f32> {
    let taps = |n_in: usize, n_out: usize| -> Vec<Vec<(usize, f64)>> {
        if antialias {
            return resample_coeffs(n_in, n_out, Resample::Bicubic)
                .into_iter()
                .map(|(x0, k)| {
                    k.into_iter()
                        .enumerate()
                        .map(|(j, w)| (x0 + j, w))
                        .collect()
                })
                .collect();
        }
        const A: f64 = -0.75;
        let cc1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
        let cc2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
        let scale = n_in as f64 / n_out as f64;
        (0..n_out)
            .map(|i| {
                let real = scale * (i as f64 + 0.5) - 0.5;
                let x0 = real.floor();
                let t = real - x0;
                let ws = [cc2(t + 1.0), cc1(t), cc1(1.0 - t), cc2(2.0 - t)];
                (0..4)
                    .map(|j| {
                        let idx = (x0 as i64 - 1 + j as i64).clamp(0, n_in as i64 - 1) as usize;
                        (idx, ws[j])
                    })
                    .collect()
            })
            .collect()
    };
    let (ty, tx) = (taps(h, rows), taps(w, cols));
    let mut out = vec![0f32; rows * cols * d];
    for (r, wy) in ty.iter().enumerate() {
        for (c, wx) in tx.iter().enumerate() {
            let o = &mut out[(r * cols + c) * d..(r * cols + c + 1) * d];
            let mut acc = vec![0f64; d];
            for &(y, ky) in wy {
                for &(x, kx) in wx {
                    let k = ky * kx;
                    let src = &grid[(y * w + x) * d..(y * w + x + 1) * d];
                    acc.iter_mut()
                        .zip(src)
                        .for_each(|(a, &s)| *a += k * s as f64);
                }
            }
            o.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        }
    }
    out
}
