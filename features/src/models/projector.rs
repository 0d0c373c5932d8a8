//! LLaVA projectors: LLaVA-1.5's `mlp2x_gelu` (Linear → GELU → Linear) and LLaVA-1.0's single
//! Linear, in the llava-hf (`multi_modal_projector.linear_1/2`) and original
//! (`model.mm_projector.0/2`) layouts.

use super::linear::{linear, FusedLinear as Linear};
use super::stages::mark;
use super::Act;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Projector architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorKind {
    /// One Linear (LLaVA-1.0, `mm_projector_type: linear`).
    Linear,
    /// Linear → activation → Linear (LLaVA-1.5, `mlp2x_gelu`).
    Mlp2x,
}

/// Where the projector's tensors live in a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorLayout {
    /// `multi_modal_projector.linear_1` / `linear_2`.
    LlavaHf,
    /// `mm_projector.0` / `mm_projector.2` (or `mm_projector` for a single Linear).
    Original,
}

/// Shape and activation of a projector.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectorConfig {
    pub kind: ProjectorKind,
    pub layout: ProjectorLayout,
    pub in_dim: usize,
    pub out_dim: usize,
    pub act: Act,
}

/// A LLaVA projector mapping vision tokens [B, T, D_v] to LLM embeddings [B, T, D_llm].
pub struct Projector {
    first: Linear,
    second: Option<Linear>,
    act: Act,
}

impl Projector {
    /// Loads the projector from `vb` rooted at its prefix (e.g. `multi_modal_projector`).
    pub fn new(vb: VarBuilder, cfg: &ProjectorConfig) -> Result<Self> {
        let (n1, n2) = match (cfg.layout, cfg.kind) {
            (ProjectorLayout::LlavaHf, _) => ("linear_1", "linear_2"),
            (ProjectorLayout::Original, ProjectorKind::Mlp2x) => ("0", "2"),
            (ProjectorLayout::Original, ProjectorKind::Linear) => ("", ""),
        };
        Ok(match cfg.kind {
            ProjectorKind::Linear if n1.is_empty() => Self {
                first: linear(cfg.in_dim, cfg.out_dim, vb)?,
                second: None,
                act: cfg.act,
            },
            ProjectorKind::Linear => Self {
                first: linear(cfg.in_dim, cfg.out_dim, vb.pp(n1))?,
                second: None,
                act: cfg.act,
            },
            ProjectorKind::Mlp2x => Self {
                first: linear(cfg.in_dim, cfg.out_dim, vb.pp(n1))?,
                second: Some(linear(cfg.out_dim, cfg.out_dim, vb.pp(n2))?),
                act: cfg.act,
            },
        })
    }
}

impl Projector {
    /// (hidden width, output width): the first Linear's output and the projector's output.
    pub fn widths(&self) -> (usize, usize) {
        let out = |l: &Linear| l.out_dim();
        let hidden = out(&self.first);
        (hidden, self.second.as_ref().map(out).unwrap_or(hidden))
    }
}

impl Module for Projector {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Hidden states from an f32 residual stream enter in the projector's own dtype.
        let x = &x.to_dtype(self.first.dtype())?;
        mark(x, "projector: input in its dtype")?;
        let Some(second) = &self.second else {
            let y = self.first.forward(x)?;
            mark(&y, "projector: linear")?;
            return Ok(y);
        };
        let h = self.first.forward_act(x, Some(self.act))?;
        mark(&h, "projector: fc1 GEMM + activation")?;
        let y = second.forward(&h)?;
        mark(&y, "projector: fc2 GEMM")?;
        Ok(y)
    }
}
