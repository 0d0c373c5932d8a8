//! The pre-norm transformer layer the vision towers share: self-attention over a packed q|k|v
//! projection (or three projections where the fused kernel does not apply), the MLP, and the
//! loop that runs layers up to the deepest requested hidden state, handing each layer's first
//! LayerNorm over from the previous layer's last residual add.

use super::fused;
use super::linear::{linear, stack, FusedLinear as Linear};
use super::norm::{layer_norm, FusedLayerNorm as LayerNorm};
use super::stages::mark;
use super::Act;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

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
    /// bias pass or epilogue; `fuse` as in [`Linear::forward_residual_norm`].
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
    /// Loads a layer of width `d` (MLP `inter`, `heads` heads) with CLIP's tensor names under `vb`.
    fn with_dims(
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

    /// Layers `0..count` under `vb`'s `encoder.layers.{i}` (CLIP's and SigLIP's layout).
    pub(super) fn load_all(
        vb: &VarBuilder,
        count: usize,
        (d, inter, heads): (usize, usize, usize),
        act: Act,
        eps: f64,
    ) -> Result<Vec<Self>> {
        (0..count)
            .map(|i| {
                Self::with_dims(
                    vb.pp(format!("encoder.layers.{i}")),
                    d,
                    inter,
                    heads,
                    act,
                    eps,
                )
            })
            .collect()
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
