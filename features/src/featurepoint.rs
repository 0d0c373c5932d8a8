//! Feature points: where in the model a feature is read, as one string used by the CLI, the
//! experiment TOML and the cache. Grammar:
//!
//! * `vision.layer[K].cls` — the CLS token of `hidden_states[K]` (transformers indexing; negative
//!   counts from the end, so `-2` is the output of the second-to-last encoder layer); an error
//!   for encoders without CLS (SigLIP);
//! * `vision.layer[K].patch.mean` / `.patch.none` — patch tokens (after CLS and any DINOv2
//!   register tokens), mean-pooled or kept [N, T, D];
//! * `vision.layer[K].all.mean` / `.all.none` — every token (CLS, registers, patches);
//! * `projector.mean` / `projector.none` — the projector output over the tokens the model feeds
//!   it (LLaVA: `vision_feature_layer`, patch tokens for `vision_feature_select_strategy=default`).
//!
//! The per-family list is in `docs/feature-points.md`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which tokens of a hidden state are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Tokens {
    Cls,
    Patch,
    All,
}

/// How tokens are reduced to one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Pool {
    Mean,
    /// No pooling: features are stored as [N, T, D].
    None,
}

/// A named place in a model to read features from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeaturePoint {
    Vision {
        layer: i64,
        tokens: Tokens,
        pool: Pool,
    },
    Projector {
        pool: Pool,
    },
}

impl FeaturePoint {
    /// `pre` for vision-tower features, `post` for projector output: the two sides of the gap.
    pub fn stage(&self) -> &'static str {
        match self {
            FeaturePoint::Vision { .. } => "pre-projection",
            FeaturePoint::Projector { .. } => "post-projection",
        }
    }

    /// Whether the feature is one vector per image (pooled or CLS).
    pub fn is_pooled(&self) -> bool {
        match self {
            FeaturePoint::Vision {
                tokens: Tokens::Cls,
                ..
            } => true,
            FeaturePoint::Vision { pool, .. } | FeaturePoint::Projector { pool } => {
                *pool == Pool::Mean
            }
        }
    }

    /// A file-name-safe form of the feature point.
    pub fn slug(&self) -> String {
        self.to_string().replace(['[', ']'], "").replace('-', "m")
    }
}

impl fmt::Display for FeaturePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pool = |p: &Pool| match p {
            Pool::Mean => "mean",
            Pool::None => "none",
        };
        match self {
            FeaturePoint::Vision {
                layer,
                tokens: Tokens::Cls,
                ..
            } => write!(f, "vision.layer[{layer}].cls"),
            FeaturePoint::Vision {
                layer,
                tokens,
                pool: p,
            } => {
                let t = if *tokens == Tokens::Patch {
                    "patch"
                } else {
                    "all"
                };
                write!(f, "vision.layer[{layer}].{t}.{}", pool(p))
            }
            FeaturePoint::Projector { pool: p } => write!(f, "projector.{}", pool(p)),
        }
    }
}

impl FromStr for FeaturePoint {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let help =
            "expected e.g. vision.layer[-2].patch.mean, vision.layer[-2].cls or projector.mean";
        let parse_pool = |p: Option<&str>| match p {
            Some("mean") => Ok(Pool::Mean),
            Some("none") => Ok(Pool::None),
            other => bail!("feature point '{s}': pooling {other:?} is not mean or none; {help}"),
        };
        let parts: Vec<&str> = s.trim().split('.').collect();
        match parts.as_slice() {
            ["projector", rest @ ..] if rest.len() == 1 => Ok(FeaturePoint::Projector {
                pool: parse_pool(rest.first().copied())?,
            }),
            ["vision", layer, rest @ ..] => {
                let k = layer
                    .strip_prefix("layer[")
                    .and_then(|l| l.strip_suffix(']'))
                    .with_context(|| {
                        format!("feature point '{s}': '{layer}' is not layer[K]; {help}")
                    })?;
                let layer: i64 = k.parse().with_context(|| {
                    format!("feature point '{s}': layer index '{k}' is not an integer")
                })?;
                match rest {
                    ["cls"] => Ok(FeaturePoint::Vision { layer, tokens: Tokens::Cls, pool: Pool::None }),
                    [t @ ("patch" | "all"), p] => {
                        let tokens = if *t == "patch" { Tokens::Patch } else { Tokens::All };
                        Ok(FeaturePoint::Vision { layer, tokens, pool: parse_pool(Some(p))? })
                    }
                    _ => bail!("feature point '{s}': after layer[K] comes cls, patch.<pool> or all.<pool>; {help}"),
                }
            }
            _ => bail!("unknown feature point '{s}'; {help}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        for s in [
            "vision.layer[-2].patch.mean",
            "vision.layer[-2].cls",
            "vision.layer[12].all.none",
            "projector.mean",
            "projector.none",
        ] {
            let fp: FeaturePoint = s.parse().unwrap();
            assert_eq!(fp.to_string(), s);
        }
        for bad in [
            "vision.layer[x].cls",
            "vision.layer[-2].patch",
            "projector",
            "text.mean",
            "vision.layer[-2].cls.mean",
        ] {
            assert!(
                bad.parse::<FeaturePoint>().is_err(),
                "{bad} should not parse"
            );
        }
        assert_eq!(
            "vision.layer[-2].patch.mean"
                .parse::<FeaturePoint>()
                .unwrap()
                .slug(),
            "vision.layerm2.patch.mean"
        );
    }
}
