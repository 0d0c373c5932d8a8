//! Reading a feature point out of a model's hidden states: token selection (CLS, patch, all, by
//! the tower's token layout) and pooling, and the projector output.

use super::{mean_tokens, VisionLanguageModel};
use crate::featurepoint::{FeaturePoint, LlmInput, LlmRead, Pool, Tokens};
use anyhow::{bail, Context, Result};
use candle_core::{Module, Tensor};

impl VisionLanguageModel {
    /// Checks that this model can produce `point` (layer in range, CLS exists, projector exists),
    /// so a bad request fails before any image is read.
    pub fn check_point(&self, point: &FeaturePoint) -> Result<()> {
        let info = self.vision.config();
        match point {
            FeaturePoint::Vision { layer, tokens, .. } => {
                info.resolve_layer(*layer)?;
                if *tokens == Tokens::Cls && !info.has_cls {
                    bail!(
                        "feature point '{point}': {} has no CLS token; use patch.mean or all.mean",
                        info.family
                    );
                }
            }
            FeaturePoint::Projector { .. } => {
                if self.projector.is_none() {
                    bail!("feature point '{point}': this checkpoint has no projector (it is not a LLaVA checkpoint)");
                }
            }
            FeaturePoint::Llm { input, layer, .. } => {
                if *input == LlmInput::Image && self.projector.is_none() {
                    bail!("feature point '{point}': this checkpoint has no projector (it is not a LLaVA checkpoint)");
                }
                let lm = self.language.as_ref().with_context(|| {
                    format!("feature point '{point}': the language model is not loaded")
                })?;
                lm.llama.config().resolve_layer(*layer).with_context(|| {
                    format!("feature point '{point}': the language model's layers")
                })?;
            }
        }
        Ok(())
    }

    /// The resolved `hidden_states` index a feature point reads.
    pub fn point_layer(&self, point: &FeaturePoint) -> Result<usize> {
        match point {
            FeaturePoint::Vision { layer, .. } => self.vision.config().resolve_layer(*layer),
            FeaturePoint::Projector { .. } => Ok(self.projector_layer),
            FeaturePoint::Llm {
                input: LlmInput::Image,
                ..
            } => Ok(self.projector_layer),
            FeaturePoint::Llm { .. } => Ok(0),
        }
    }

    /// The resolved language-model `hidden_states` index and read of an LLM point.
    pub fn llm_read(&self, point: &FeaturePoint) -> Result<(usize, LlmRead)> {
        match point {
            FeaturePoint::Llm { layer, read, .. } => {
                let lm = self
                    .language
                    .as_ref()
                    .context("the language model is not loaded")?;
                Ok((lm.llama.config().resolve_layer(*layer)?, *read))
            }
            _ => bail!("feature point '{point}' is not a language-model point"),
        }
    }

    /// Selects and pools the tokens of `point` from its hidden state [B, prefix + T, D]
    /// (`hidden_states[self.point_layer(point)]`): [B, D] pooled / CLS, [B, T, D] for `.none`.
    pub fn read_point(&self, point: &FeaturePoint, state: &Tensor) -> Result<Tensor> {
        self.check_point(point)?;
        let info = self.vision.config();
        let t = state.dim(1)?;
        let pooled = |x: Tensor, pool: Pool| -> Result<Tensor> {
            Ok(match pool {
                Pool::Mean => mean_tokens(&x)?,
                Pool::None => x,
            })
        };
        let patches = || state.narrow(1, info.prefix_tokens, t - info.prefix_tokens);
        match point {
            FeaturePoint::Vision {
                tokens: Tokens::Cls,
                ..
            } => Ok(state.narrow(1, 0, 1)?.squeeze(1)?),
            FeaturePoint::Vision {
                tokens: Tokens::Patch,
                pool,
                ..
            } => pooled(patches()?, *pool),
            FeaturePoint::Vision {
                tokens: Tokens::All,
                pool,
                ..
            } => pooled(state.clone(), *pool),
            FeaturePoint::Llm { .. } => {
                bail!("feature point '{point}' is read by the language model, not from a hidden state")
            }
            FeaturePoint::Projector { pool } => {
                // LLaVA's `default`/`patch` strategy drops exactly the first (CLS) token.
                let tokens = if self.projector_drops_cls && info.has_cls {
                    state.narrow(1, 1, t - 1)?
                } else {
                    state.clone()
                };
                let projector = self.projector.as_ref().context("no projector")?;
                pooled(projector.forward(&tokens)?, *pool)
            }
        }
    }
}
