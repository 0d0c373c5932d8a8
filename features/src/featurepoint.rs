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
//!   it (LLaVA: `vision_feature_layer`, patch tokens for `vision_feature_select_strategy=default`);
//! * `llm.image.layer[K].last` / `.mean` — LLaVA's language model (`hidden_states[K]` of the LLaMA
//!   decoder) reading the prompt with the image's projector tokens in place of `<image>`, at the
//!   last prompt token or averaged over the prompt;
//! * `llm.text.layer[K].last` / `.mean` — the same prompt with the image's attribute text in
//!   place of `<image>` (the Finer paper's text-only arm; the dataset must carry a text per image).
//!
//! Where a list of feature points is read (`extract -f`, an experiment's `feature_points`),
//! `layer[…]` may hold several layers: `vision.layer[4,8,-2].cls`, or Python slices of
//! `hidden_states`, `vision.layer[0:25:4].cls` (0, 4, …, 24) and `vision.layer[-6:].patch.mean`
//! (the last six); see [`parse_feature_points`].
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

/// What stands where `<image>` is in the language model's prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LlmInput {
    /// The image's projector tokens.
    Image,
    /// The image's attribute text.
    Text,
}

/// How a language-model hidden state is reduced to one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LlmRead {
    /// The last prompt token (where the model would start its answer).
    Last,
    /// The mean over every prompt token.
    Mean,
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
    Llm {
        input: LlmInput,
        layer: i64,
        read: LlmRead,
    },
}

impl FeaturePoint {
    /// `pre` for vision-tower features, `post` for projector output: the two sides of the gap.
    pub fn stage(&self) -> &'static str {
        match self {
            FeaturePoint::Vision { .. } => "pre-projection",
            FeaturePoint::Projector { .. } => "post-projection",
            FeaturePoint::Llm {
                input: LlmInput::Image,
                ..
            } => "llm-image",
            FeaturePoint::Llm {
                input: LlmInput::Text,
                ..
            } => "llm-text",
        }
    }

    /// Whether the feature comes from the language model (needs its weights and tokenizer).
    pub fn is_llm(&self) -> bool {
        matches!(self, FeaturePoint::Llm { .. })
    }

    /// Whether the feature is computed from the image's text, not its pixels.
    pub fn is_text(&self) -> bool {
        matches!(
            self,
            FeaturePoint::Llm {
                input: LlmInput::Text,
                ..
            }
        )
    }

    /// Whether the feature is one vector per image (pooled or CLS).
    pub fn is_pooled(&self) -> bool {
        match self {
            FeaturePoint::Llm { .. } => true,
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
            FeaturePoint::Llm { input, layer, read } => {
                let input = match input {
                    LlmInput::Image => "image",
                    LlmInput::Text => "text",
                };
                let read = match read {
                    LlmRead::Last => "last",
                    LlmRead::Mean => "mean",
                };
                write!(f, "llm.{input}.layer[{layer}].{read}")
            }
        }
    }
}

impl FromStr for FeaturePoint {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let help =
            "expected e.g. vision.layer[-2].patch.mean, vision.layer[-2].cls, projector.mean \
             or llm.text.layer[-1].last";
        let parse_pool = |p: Option<&str>| match p {
            Some("mean") => Ok(Pool::Mean),
            Some("none") => Ok(Pool::None),
            other => bail!("feature point '{s}': pooling {other:?} is not mean or none; {help}"),
        };
        let parts: Vec<&str> = s.trim().split('.').collect();
        let layer_index = |layer: &str| -> Result<i64> {
            let k = layer
                .strip_prefix("layer[")
                .and_then(|l| l.strip_suffix(']'))
                .with_context(|| {
                    format!("feature point '{s}': '{layer}' is not layer[K]; {help}")
                })?;
            k.parse().with_context(|| {
                format!("feature point '{s}': layer index '{k}' is not an integer")
            })
        };
        match parts.as_slice() {
            ["llm", input, layer, read] => {
                let input = match *input {
                    "image" => LlmInput::Image,
                    "text" => LlmInput::Text,
                    other => bail!("feature point '{s}': '{other}' is not image or text; {help}"),
                };
                let layer = layer_index(layer)?;
                let read = match *read {
                    "last" => LlmRead::Last,
                    "mean" => LlmRead::Mean,
                    other => bail!("feature point '{s}': '{other}' is not last or mean; {help}"),
                };
                Ok(FeaturePoint::Llm { input, layer, read })
            }
            ["projector", rest @ ..] if rest.len() == 1 => Ok(FeaturePoint::Projector {
                pool: parse_pool(rest.first().copied())?,
            }),
            ["vision", layer, rest @ ..] => {
                let layer = layer_index(layer)?;
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

/// One feature point, or several when `layer[…]` lists layers: comma-separated indices and
/// Python slices `start:stop[:step]` (stop excluded, step ≥ 1), in the order written, duplicates
/// dropped. A bound may be left out where no model depth is needed to expand it: `[:4]` is
/// 0–3, `[-6:]` is −6 to −1; `[4:]`, `[:-2]` and `[1:-1]` are errors, since they depend on the
/// model's depth.
pub fn parse_feature_points(spec: &str) -> Result<Vec<FeaturePoint>> {
    let spec = spec.trim();
    let head = ["vision.layer[", "llm.image.layer[", "llm.text.layer["]
        .into_iter()
        .find(|h| spec.starts_with(h));
    let Some((head, inner)) = head.and_then(|head| {
        spec[head.len()..]
            .split_once(']')
            .map(|(inner, _)| (head, inner))
            .filter(|(_, inner)| inner.contains([',', ':']))
    }) else {
        return Ok(vec![spec.parse()?]);
    };
    let rest = &spec[head.len() + inner.len() + 1..];
    let mut layers = Vec::new();
    for item in inner.split(',') {
        for layer in expand_layers(item.trim())
            .with_context(|| format!("feature point '{spec}': layers '{item}'"))?
        {
            if !layers.contains(&layer) {
                layers.push(layer);
            }
        }
    }
    layers
        .into_iter()
        .map(|layer| {
            format!("{head}{layer}]{rest}")
                .parse()
                .with_context(|| format!("in '{spec}'"))
        })
        .collect()
}

/// Every feature point of `specs` ([`parse_feature_points`] each), in order, duplicates dropped.
pub fn parse_feature_point_list<S: AsRef<str>>(specs: &[S]) -> Result<Vec<FeaturePoint>> {
    let mut points: Vec<FeaturePoint> = Vec::new();
    for spec in specs {
        for point in parse_feature_points(spec.as_ref())? {
            if !points.contains(&point) {
                points.push(point);
            }
        }
    }
    Ok(points)
}

/// An index or a Python slice of `hidden_states`, as the indices it selects.
fn expand_layers(item: &str) -> Result<Vec<i64>> {
    let parts: Vec<&str> = item.split(':').map(str::trim).collect();
    let int = |s: &str| -> Result<Option<i64>> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .with_context(|| format!("'{s}' is not an integer"))
    };
    let (start, stop, step) = match parts.as_slice() {
        [one] => {
            return int(one)?.map(|k| vec![k]).context("an empty layer index");
        }
        [a, b] => (int(a)?, int(b)?, 1),
        [a, b, c] => (int(a)?, int(b)?, int(c)?.unwrap_or(1)),
        _ => bail!("a slice is start:stop or start:stop:step"),
    };
    if step < 1 {
        bail!("the step must be at least 1");
    }
    let depth_needed =
        "depends on the model's depth: give both bounds with the same sign, or list the layers";
    let (start, stop) = match (start, stop) {
        (Some(a), Some(b)) if (a < 0) == (b < 0) => (a, b),
        (Some(a), Some(0)) if a < 0 => bail!("the slice selects no layer"),
        (None, Some(b)) if b >= 0 => (0, b),
        (Some(a), None) if a < 0 => (a, 0),
        _ => bail!("{depth_needed}"),
    };
    let layers: Vec<i64> = (start..stop).step_by(step as usize).collect();
    if layers.is_empty() {
        bail!("the slice selects no layer");
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Vec<String> {
        parse_feature_points(spec)
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn layer_lists_and_slices_expand_like_python() {
        assert_eq!(names("projector.mean"), ["projector.mean"]);
        assert_eq!(names("vision.layer[-2].cls"), ["vision.layer[-2].cls"]);
        assert_eq!(
            names("vision.layer[4, 8,-2].cls"),
            [
                "vision.layer[4].cls",
                "vision.layer[8].cls",
                "vision.layer[-2].cls"
            ]
        );
        assert_eq!(
            names("vision.layer[0:25:8].patch.mean"),
            [0, 8, 16, 24].map(|k| format!("vision.layer[{k}].patch.mean"))
        );
        assert_eq!(
            names("vision.layer[-3:].all.none"),
            [-3, -2, -1].map(|k| format!("vision.layer[{k}].all.none"))
        );
        assert_eq!(
            names("vision.layer[:2].cls"),
            ["vision.layer[0].cls", "vision.layer[1].cls"]
        );
        // Duplicates go, the first position stays.
        assert_eq!(
            names("vision.layer[1:3,2,1].cls"),
            ["vision.layer[1].cls", "vision.layer[2].cls"]
        );
        assert_eq!(
            names("llm.text.layer[0:3].last"),
            [0, 1, 2].map(|k| format!("llm.text.layer[{k}].last"))
        );
        assert_eq!(
            names("llm.image.layer[8,-1].mean"),
            ["llm.image.layer[8].mean", "llm.image.layer[-1].mean"]
        );
        let list =
            parse_feature_point_list(&["vision.layer[-2].cls", "vision.layer[-3:].cls"]).unwrap();
        assert_eq!(list.len(), 3, "{list:?}");
        for (bad, says) in [
            ("vision.layer[4:].cls", "model's depth"),
            ("vision.layer[:-2].cls", "model's depth"),
            ("vision.layer[1:-1].cls", "model's depth"),
            ("vision.layer[3:1].cls", "no layer"),
            ("vision.layer[-2:0].cls", "no layer"),
            ("vision.layer[0:4:0].cls", "step"),
            ("vision.layer[1:x].cls", "'x' is not an integer"),
            ("vision.layer[1,].cls", "empty"),
            ("vision.layer[1:3].cls.mean", "after layer[K]"),
        ] {
            let e = format!("{:#}", parse_feature_points(bad).unwrap_err());
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn round_trips_and_rejects() {
        for s in [
            "vision.layer[-2].patch.mean",
            "vision.layer[-2].cls",
            "vision.layer[12].all.none",
            "projector.mean",
            "projector.none",
            "llm.image.layer[-1].last",
            "llm.text.layer[16].mean",
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
            "llm.audio.layer[-1].last",
            "llm.text.layer[-1].first",
            "llm.text.layer[-1]",
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
