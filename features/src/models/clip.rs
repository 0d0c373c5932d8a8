//! CLIP vision transformer (transformers' `CLIPVisionModel`), with hidden-state selection that
//! follows transformers: `hidden_states[0]` is the embedding output after `pre_layrnorm`,
//! `hidden_states[i]` the output of encoder layer `i`, so `hidden_states[-2]` is the output of
//! the second-to-last layer. Only the layers a request needs are run.

use super::fused;
use super::linear::{linear, stack, FusedLinear as Linear};
use super::norm::{layer_norm, FusedLayerNorm as LayerNorm};
use super::stages::mark;
use super::Act;
use candle_core::{Module, Result, Tensor};
use candle_nn::{conv2d_no_bias, Conv2d, Conv2dConfig, VarBuilder};
use serde::{Deserialize, Serialize};

/// `CLIPVisionConfig` fields the forward pass uses (names as in `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: Act,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
}

fn default_channels() -> usize {
    3
}
fn default_act() -> Act {
    Act::QuickGelu
}
fn default_eps() -> f64 {
    1e-5
}

impl ClipVisionConfig {
    /// Number of patch tokens (without CLS).
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Resolves a transformers-style hidden-state index (negative counts from the end) to
    /// `0..=num_hidden_layers`.
    pub fn resolve_layer(&self, index: i64) -> anyhow::Result<usize> {
        resolve_layer(self.num_hidden_layers, index)
    }
}

/// Resolves a transformers-style `hidden_states` index for an encoder of `layers` layers.
pub fn resolve_layer(layers: usize, index: i64) -> anyhow::Result<usize> {
    {
        let n = layers as i64;
        let r = if index < 0 { n + 1 + index } else { index };
        if !(0..=n).contains(&r) {
            anyhow::bail!(
                "layer index {index} is out of range: this encoder has hidden states 0..={n} (or -{}..=-1)",
                n + 1
            );
        }
        Ok(r as usize)
    }
}

struct Embeddings {
    patch: Conv2d,
    class: Tensor,
    position: Tensor,
    /// Add the position table with the fused kernel (candle's broadcast add is slow on CUDA).
    fused: bool,
}

impl Embeddings {
    fn new(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        let conv = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let patch = conv2d_no_bias(
            cfg.num_channels,
            cfg.hidden_size,
            cfg.patch_size,
            conv,
            vb.pp("patch_embedding"),
        )?;
        let class = vb.get(cfg.hidden_size, "class_embedding")?;
        let position = vb.get(
            (cfg.num_patches() + 1, cfg.hidden_size),
            "position_embedding.weight",
        )?;
        Ok(Self {
            patch,
            class,
            position,
            fused: fused::enabled_for(vb.device()),
        })
    }

    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = self
            .patch
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?; // [B, T, D]
        mark(&patches, "embeddings: patch conv")?;
        let d = patches.dim(2)?;
        let cls = self
            .class
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?
            .to_dtype(patches.dtype())?;
        let x = fused::add_table(
            &Tensor::cat(&[&cls, &patches], 1)?,
            &self.position,
            self.fused,
        )?;
        mark(&x, "embeddings: class + positions")?;
        Ok(x)
    }
}

/// q, k and v projections: three GEMMs, or one over the stacked weights when the fused
/// attention kernel reads them packed.
enum Qkv {
    Separate {
        q: Linear,
        k: Linear,
        v: Linear,
    },
    /// The stacked projection and the attention kernel, chosen when the model is built.
    Packed(Linear, fused::AttentionKernel),
}

pub(super) struct Attention {
    qkv: Qkv,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    /// Loads `q`, `k`, `v` and output projections named as given under `vb`.
    pub(super) fn with_names(
        vb: VarBuilder,
        d: usize,
        heads: usize,
        names: [&str; 4],
    ) -> Result<Self> {
        let head_dim = d / heads;
        let load = |name: &str| candle_nn::linear(d, d, vb.pp(name));
        let (q, k, v) = (load(names[0])?, load(names[1])?, load(names[2])?);
        let fused = fused::enabled_for(vb.device());
        let qkv = if fused::attention_supported(vb.device(), vb.dtype(), head_dim) {
            Qkv::Packed(stack(&[q, k, v], true)?, fused::AttentionKernel::from_env())
        } else {
            Qkv::Separate {
                q: Linear::new(q, fused),
                k: Linear::new(k, fused),
                v: Linear::new(v, fused),
            }
        };
        Ok(Self {
            qkv,
            out: linear(d, d, vb.pp(names[3]))?,
            heads,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// Multi-head self-attention over [B, T, D] before the output projection, in the input dtype
    /// (no f32 round trip): the fused kernel on a packed projection, or per-head matmuls with the
    /// fused last-dim softmax.
    fn mix(&self, x: &Tensor) -> Result<Tensor> {
        let (q, k, v) = match &self.qkv {
            // The bias goes in with its own vectorised pass: adding it inside the attention
            // kernel as q, k and v are read measured slower (4.5 ms vs 0.5 + 2.9 ms per layer
            // at batch 256 on an H200), since each K/V tile is read by every query block.
            // The fa kernels take the bias at no cost, so the projection skips its pass.
            Qkv::Packed(qkv, kernel) if kernel.folds_bias() => {
                let (y, bias) = qkv.forward_unbiased(x)?;
                mark(&y, "q|k|v GEMM")?;
                let a = fused::attention_packed_with(&y, bias, self.heads, self.scale, *kernel)?;
                mark(&a, "attention")?;
                return Ok(a);
            }
            Qkv::Packed(qkv, kernel) => {
                let qkv = qkv.forward(x)?;
                mark(&qkv, "q|k|v GEMM + bias")?;
                let a = fused::attention_packed_with(&qkv, None, self.heads, self.scale, *kernel)?;
                mark(&a, "attention")?;
                return Ok(a);
            }
            Qkv::Separate { q, k, v } => (q, k, v),
        };
        let (b, t, d) = x.dims3()?;
        let split = |y: Tensor| {
            y.reshape((b, t, self.heads, d / self.heads))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((q.forward(x)? * self.scale)?)?;
        let k = split(k.forward(x)?)?;
        let v = split(v.forward(x)?)?;
        mark(&v, "q, k, v GEMMs + head split")?;
        let attn = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let a = attn.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        mark(&a, "attention")?;
        Ok(a)
    }

    /// Folds an elementwise scale of the attention output into the output projection.
    pub(super) fn scale_output(&mut self, s: &Tensor) -> Result<()> {
        self.out = self.out.scaled_outputs(s)?;
        Ok(())
    }

    /// Self-attention including the output projection.
    pub(super) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.mix(x)?)
    }

    /// `(s, norm(s))` for `s = residual + attention(x)`, the add in the output projection's
    /// bias pass or epilogue; `fuse` as in
    /// [`Linear::forward_residual_norm`].
    pub(super) fn forward_residual_norm(
        &self,
        x: &Tensor,
        residual: &Tensor,
        norm: &LayerNorm,
        fuse: bool,
    ) -> Result<(Tensor, Tensor)> {
        self.out
            .forward_residual_norm(&self.mix(x)?, residual, norm, fuse)
    }
}

/// A pre-norm transformer layer with CLIP's tensor names (also SigLIP's).
pub(super) struct EncoderLayer {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    act: Act,
    /// Each residual add and the LayerNorm after it in one pass ([`super::add_norm`]).
    add_norm: bool,
}

impl EncoderLayer {
    fn new(vb: VarBuilder, cfg: &ClipVisionConfig) -> Result<Self> {
        Self::with_dims(
            vb,
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.hidden_act,
            cfg.layer_norm_eps,
        )
    }

    pub(super) fn with_dims(
        vb: VarBuilder,
        d: usize,
        inter: usize,
        heads: usize,
        act: Act,
        eps: f64,
    ) -> Result<Self> {
        let names = ["q_proj", "k_proj", "v_proj", "out_proj"];
        Ok(Self::from_parts(
            layer_norm(d, eps, vb.pp("layer_norm1"))?,
            Attention::with_names(vb.pp("self_attn"), d, heads, names)?,
            layer_norm(d, eps, vb.pp("layer_norm2"))?,
            linear(d, inter, vb.pp("mlp.fc1"))?,
            linear(inter, d, vb.pp("mlp.fc2"))?,
            act,
        ))
    }

    /// `x + attn(ln1(x))`, then `+ fc2(act(fc1(ln2(·))))`: the pre-norm layer from its parts
    /// (DINOv2's, once its layer scales are folded into `attn` and `fc2`).
    pub(super) fn from_parts(
        ln1: LayerNorm,
        attn: Attention,
        ln2: LayerNorm,
        fc1: Linear,
        fc2: Linear,
        act: Act,
    ) -> Self {
        Self {
            ln1,
            attn,
            ln2,
            fc1,
            fc2,
            act,
            add_norm: super::add_norm::enabled(),
        }
    }
}

/// A pre-norm layer that [`run_layers`] can hand its first LayerNorm's output to.
pub(super) trait PreNormLayer {
    /// The LayerNorm the layer's input goes through first.
    fn first_norm(&self) -> &LayerNorm;

    /// The layer on its input `x` and `first_norm(x)`, computed by the caller (in the previous
    /// layer's last residual add, when fused). With `next` (the next layer's first LayerNorm),
    /// also returns `next(output)`, so that norm can ride in this layer's last residual add.
    fn forward_normed(
        &self,
        x: &Tensor,
        normed: &Tensor,
        next: Option<&LayerNorm>,
    ) -> Result<(Tensor, Option<Tensor>)>;
}

impl PreNormLayer for EncoderLayer {
    fn first_norm(&self) -> &LayerNorm {
        &self.ln1
    }

    fn forward_normed(
        &self,
        x: &Tensor,
        normed: &Tensor,
        next: Option<&LayerNorm>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (x, n2) = self
            .attn
            .forward_residual_norm(normed, x, &self.ln2, self.add_norm)?;
        mark(&n2, "out GEMM + residual + norm")?;
        let h = self.fc1.forward_act(&n2, Some(self.act))?;
        mark(&h, "fc1 GEMM + activation")?;
        match next {
            Some(norm) => {
                let (y, n) = self
                    .fc2
                    .forward_residual_norm(&h, &x, norm, self.add_norm)?;
                mark(&n, "fc2 GEMM + residual + next norm")?;
                Ok((y, Some(n)))
            }
            None => {
                let y = self.fc2.forward_residual(&h, &x)?;
                mark(&y, "fc2 GEMM + residual (last layer)")?;
                Ok((y, None))
            }
        }
    }
}

/// Runs pre-norm `layers` from the embedding output `x` like [`collect_states`], handing each
/// layer's first LayerNorm output over from the previous layer's last residual add (one pass
/// for both where [`super::add_norm`] is on; the same numbers either way).
pub(super) fn run_layers<L: PreNormLayer>(
    x: Tensor,
    layers: &[L],
    wanted: &[usize],
) -> Result<Vec<Tensor>> {
    let last = wanted.iter().copied().max().unwrap_or(0);
    let mut normed: Option<Tensor> = None;
    collect_states(x, layers, wanted, |i, layer, x| {
        let n = match normed.take() {
            Some(n) => n,
            None => {
                let n = layer.first_norm().forward(x)?;
                mark(&n, "first layer's norm")?;
                n
            }
        };
        let next = layers.get(i + 1).filter(|_| i + 1 < last);
        let (y, n) = layer.forward_normed(x, &n, next.map(|l| l.first_norm()))?;
        normed = n;
        Ok(y)
    })
}

/// The CLIP vision tower. Loads only the layers below `max_layer`, so a layer −2 request never
/// reads the last layer's weights.
pub struct ClipVisionModel {
    embeddings: Embeddings,
    /// In the residual stream's dtype ([`super::fused::residual_dtype`]): the stream starts here.
    pre_layernorm: LayerNorm,
    layers: Vec<EncoderLayer>,
    cfg: ClipVisionConfig,
}

impl ClipVisionModel {
    /// Builds the tower from `vb` rooted at the `vision_model` prefix, loading layers `1..=max_layer`.
    pub fn new(vb: VarBuilder, cfg: &ClipVisionConfig, max_layer: usize) -> Result<Self> {
        let embeddings = Embeddings::new(vb.pp("embeddings"), cfg)?;
        let pre_layernorm = layer_norm(cfg.hidden_size, cfg.layer_norm_eps, vb.pp("pre_layrnorm"))?
            .to_dtype(fused::residual_dtype(vb.device(), vb.dtype()))?;
        let layers = (0..max_layer.min(cfg.num_hidden_layers))
            .map(|i| EncoderLayer::new(vb.pp(format!("encoder.layers.{i}")), cfg))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings,
            pre_layernorm,
            layers,
            cfg: cfg.clone(),
        })
    }

    /// The residual stream's dtype (where its pre-LayerNorm writes).
    pub fn stream_dtype(&self) -> candle_core::DType {
        self.pre_layernorm.dtype()
    }

    /// The configuration this tower was built from.
    pub fn config(&self) -> &ClipVisionConfig {
        &self.cfg
    }

    /// Runs the tower on normalised pixels [B, C, H, W] and returns `hidden_states[i]` for each
    /// requested (resolved, non-negative) index, in request order. Each is [B, 1 + T, D].
    pub fn hidden_states(&self, pixels: &Tensor, wanted: &[usize]) -> Result<Vec<Tensor>> {
        // The embeddings widened to the stream's dtype first, so its first value is not rounded.
        let stream = self.pre_layernorm.dtype();
        let x = self
            .pre_layernorm
            .forward(&self.embeddings.forward(pixels)?.to_dtype(stream)?)?;
        mark(&x, "embeddings: widen + pre-norm")?;
        run_layers(x, &self.layers, wanted)
    }
}

/// Runs `layers` from the embedding output `x` as far as the deepest wanted hidden state and
/// returns the wanted states in request order (`hidden_states[0]` is `x`). `forward` gets each
/// layer's index, the layer and its input.
pub(super) fn collect_states<L>(
    mut x: Tensor,
    layers: &[L],
    wanted: &[usize],
    mut forward: impl FnMut(usize, &L, &Tensor) -> Result<Tensor>,
) -> Result<Vec<Tensor>> {
    let last = wanted.iter().copied().max().unwrap_or(0);
    if last > layers.len() {
        candle_core::bail!(
            "hidden state {last} requested but only {} layers were loaded",
            layers.len()
        );
    }
    let mut states = vec![None; last + 1];
    if wanted.contains(&0) {
        states[0] = Some(x.clone());
    }
    for (i, layer) in layers.iter().take(last).enumerate() {
        x = forward(i, layer, &x)?;
        if wanted.contains(&(i + 1)) {
            states[i + 1] = Some(x.clone());
        }
    }
    Ok(wanted
        .iter()
        .map(|&i| states[i].clone().expect("state recorded above"))
        .collect())
}
