//! The LLaMA decoder of LLaVA's language model (transformers' `LlamaModel`), run for its hidden
//! states: `hidden_states[0]` is the input embeddings, `hidden_states[i]` the output of decoder
//! layer `i`, and `hidden_states[L]` the last layer's output after the final RMSNorm (as
//! transformers returns it with `output_hidden_states=True`). Only the layers a request needs are
//! loaded and run. Generation (a KV cache and the language-model head) is in
//! [`super::generate`].

pub use super::llama_config::LlamaConfig;
use super::Act;
use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{linear_b, Embedding, Linear, VarBuilder};

/// transformers' `LlamaRMSNorm`: normalise in f32, back to the input dtype, times the weight.
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(size: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xf
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        normed.broadcast_mul(&self.weight)
    }
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, hd, kv) = (cfg.hidden_size, cfg.head_dim(), cfg.kv_heads());
        let b = cfg.attention_bias;
        Ok(Self {
            q: linear_b(h, cfg.num_attention_heads * hd, b, vb.pp("q_proj"))?,
            k: linear_b(h, kv * hd, b, vb.pp("k_proj"))?,
            v: linear_b(h, kv * hd, b, vb.pp("v_proj"))?,
            o: linear_b(cfg.num_attention_heads * hd, h, b, vb.pp("o_proj"))?,
            heads: cfg.num_attention_heads,
            kv_heads: kv,
            head_dim: hd,
        })
    }

    /// Causal self-attention over [B, T, D]; `rope` is (cos, sin) [T or B×T, head_dim / 2],
    /// `mask` broadcasts to [B, heads, T, T_keys] (−∞ or a large negative where a query may not
    /// look). With a `cache`, the new keys and values are appended to the ones it holds and
    /// attention runs over all of them. Scores and softmax in f32 (as transformers' eager path
    /// upcasts the softmax).
    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Tensor,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor, heads: usize| {
            y.reshape((b, t, heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(x)?, self.heads)?;
        let k = split(self.k.forward(x)?, self.kv_heads)?;
        let v = split(self.v.forward(x)?, self.kv_heads)?;
        let q = candle_nn::rotary_emb::rope(&q, &rope.0, &rope.1)?;
        let k = candle_nn::rotary_emb::rope(&k, &rope.0, &rope.1)?;
        let (k, v) = match cache {
            Some(c) => c.append(k, v)?,
            None => (k, v),
        };
        let tk = k.dim(2)?;
        let groups = self.heads / self.kv_heads;
        let repeat = |y: Tensor| -> Result<Tensor> {
            if groups == 1 {
                return Ok(y);
            }
            // [B, KV, T, hd] → [B, KV, G, T, hd] → [B, KV·G, T, hd] (query head h uses KV h / G).
            y.unsqueeze(2)?
                .expand((b, self.kv_heads, groups, tk, self.head_dim))?
                .reshape((b, self.heads, tk, self.head_dim))
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?
            .to_dtype(DType::F32)?
            .broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out = probs.matmul(&v)?;
        let out = out
            .transpose(1, 2)?
            .reshape((b, t, self.heads * self.head_dim))?;
        self.o.forward(&out)
    }
}

/// The keys and values one attention layer has seen so far, [B, KV heads, T_seen, head_dim]
/// (after RoPE): what lets generation run one new token at a time. Backed by candle-nn's
/// preallocated `KvCache`: a step writes its token in place, and attention reads views of it.
#[derive(Clone)]
pub struct LayerCache {
    kv: candle_nn::kv_cache::KvCache,
}

impl LayerCache {
    /// A cache with room for `capacity` positions (it grows past them if it must).
    pub fn new(capacity: usize) -> Self {
        Self {
            kv: candle_nn::kv_cache::KvCache::new(2, capacity.max(1)),
        }
    }

    /// Appends new keys and values along the sequence and returns all of them.
    fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        self.kv.append(&k.contiguous()?, &v.contiguous()?)
    }
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
    act: Act,
}

impl Mlp {
    fn new(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, i, b) = (cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias);
        Ok(Self {
            gate: linear_b(h, i, b, vb.pp("gate_proj"))?,
            up: linear_b(h, i, b, vb.pp("up_proj"))?,
            down: linear_b(i, h, b, vb.pp("down_proj"))?,
            act: cfg.hidden_act,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = (self.act.forward(&self.gate.forward(x)?)? * self.up.forward(x)?)?;
        self.down.forward(&gated)
    }
}

struct DecoderLayer {
    input_norm: RmsNorm,
    attention: Attention,
    post_attention_norm: RmsNorm,
    mlp: Mlp,
}

impl DecoderLayer {
    fn new(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            input_norm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            attention: Attention::new(vb.pp("self_attn"), cfg)?,
            post_attention_norm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        mask: &Tensor,
        cache: Option<&mut LayerCache>,
    ) -> Result<Tensor> {
        let h = (x + self
            .attention
            .forward(&self.input_norm.forward(x)?, rope, mask, cache)?)?;
        &h + self.mlp.forward(&self.post_attention_norm.forward(&h)?)?
    }
}

/// A LLaMA decoder loaded up to hidden state `top` (the final norm only when `top` is the last).
pub struct LlamaModel {
    embed: Embedding,
    layers: Vec<DecoderLayer>,
    norm: Option<RmsNorm>,
    cfg: LlamaConfig,
    dtype: DType,
    device: Device,
}

impl LlamaModel {
    /// Loads `embed_tokens`, decoder layers `0..top` and, when `top == num_hidden_layers`, the
    /// final `norm`, from `vb` (the prefix of `embed_tokens.weight`).
    pub fn new(vb: VarBuilder, cfg: &LlamaConfig, top: usize) -> Result<Self> {
        cfg.check_rope()?;
        let top = top.min(cfg.num_hidden_layers);
        let embed_weight = vb.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let layers = (0..top)
            .map(|i| DecoderLayer::new(vb.pp(format!("layers.{i}")), cfg))
            .collect::<Result<_>>()?;
        let norm = if top == cfg.num_hidden_layers {
            Some(RmsNorm::new(
                cfg.hidden_size,
                cfg.rms_norm_eps,
                vb.pp("norm"),
            )?)
        } else {
            None
        };
        Ok(Self {
            embed: Embedding::new(embed_weight, cfg.hidden_size),
            layers,
            norm,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Number of decoder layers loaded (the deepest hidden state this model can return).
    pub fn loaded_layers(&self) -> usize {
        self.layers.len()
    }

    /// The dtype the weights (and the residual stream) are in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Token embeddings [B, T] → [B, T, D].
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed.forward(ids)
    }

    /// Runs the decoder over input embeddings [B, T, D] (positions 0..T, causal attention: with
    /// right padding a sequence's real tokens never see its padding) and returns the requested
    /// `hidden_states` indices (resolved, each ≤ the loaded depth), in request order.
    pub fn hidden_states(&self, embeds: &Tensor, layers: &[usize]) -> Result<Vec<Tensor>> {
        let top = layers.iter().copied().max().unwrap_or(0);
        let last = self.cfg.num_hidden_layers;
        if top > self.layers.len() || (top == last && self.norm.is_none()) {
            candle_core::bail!(
                "hidden state {top} requested but only {} decoder layers are loaded",
                self.layers.len()
            );
        }
        let t = embeds.dim(1)?;
        let rope = self.rope(t)?;
        let mask = causal_mask(t, &self.device)?;
        let mut x = embeds.to_dtype(self.dtype)?;
        let mut out: Vec<Option<Tensor>> = vec![None; layers.len()];
        let mut keep = |i: usize, x: &Tensor| {
            for (slot, &l) in out.iter_mut().zip(layers) {
                if l == i {
                    *slot = Some(x.clone());
                }
            }
        };
        keep(0, &x);
        for (i, layer) in self.layers.iter().take(top).enumerate() {
            x = layer.forward(&x, &rope, &mask, None)?;
            if i + 1 == last {
                x = self
                    .norm
                    .as_ref()
                    .expect("loaded with the last layer")
                    .forward(&x)?;
            }
            keep(i + 1, &x);
        }
        Ok(out
            .into_iter()
            .map(|s| s.expect("every layer ≤ top is visited"))
            .collect())
    }

    /// Runs every decoder layer and the final norm over new input embeddings [B, T, D], whose
    /// positions are `positions` [B, T] (u32), attending through `mask` (broadcast to
    /// [B, heads, T, T_seen + T]) to what `caches` (one per layer) hold and to themselves; the
    /// caches gain the new keys and values. Returns the normed last hidden state [B, T, D].
    pub fn forward_cached(
        &self,
        embeds: &Tensor,
        positions: &Tensor,
        mask: &Tensor,
        caches: &mut [LayerCache],
    ) -> Result<Tensor> {
        let norm = match &self.norm {
            Some(n) if self.layers.len() == self.cfg.num_hidden_layers => n,
            _ => candle_core::bail!(
                "generation needs all {} decoder layers and the final norm loaded",
                self.cfg.num_hidden_layers
            ),
        };
        if caches.len() != self.layers.len() {
            candle_core::bail!(
                "{} layer caches for {} layers",
                caches.len(),
                self.layers.len()
            );
        }
        let (b, t) = positions.dims2()?;
        let pos = positions.to_dtype(DType::F32)?.reshape((b, t, 1))?;
        let rope = self.rope_of(&pos)?;
        let mut x = embeds.to_dtype(self.dtype)?;
        for (layer, cache) in self.layers.iter().zip(caches.iter_mut()) {
            x = layer.forward(&x, &rope, mask, Some(cache))?;
        }
        norm.forward(&x)
    }

    /// (cos, sin) [T, head_dim / 2] for positions 0..T, computed in f32 as transformers does.
    fn rope(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let pos = Tensor::arange(0u32, t as u32, &self.device)?
            .to_dtype(DType::F32)?
            .reshape((t, 1))?;
        self.rope_of(&pos)
    }

    /// (cos, sin) for f32 positions [..., 1]: [..., head_dim / 2] in the weights' dtype.
    fn rope_of(&self, pos: &Tensor) -> Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim();
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / self.cfg.rope_base().powf(2.0 * i as f64 / hd as f64) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, hd / 2), &self.device)?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok((
            freqs.cos()?.to_dtype(self.dtype)?.contiguous()?,
            freqs.sin()?.to_dtype(self.dtype)?.contiguous()?,
        ))
    }
}

/// [T, T] f32: 0 on and below the diagonal, −∞ above.
fn causal_mask(t: usize, device: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (t, t), device)
}
