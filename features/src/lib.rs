//! gapprobe-features: pixels → cached feature arrays.
//!
//! Datasets and manifests ([`datasets`]), the demo's generated image set ([`synth`]),
//! transformers-compatible preprocessing ([`preprocess`]), CLIP encoders and LLaVA projectors
//! ([`models`]), feature points ([`featurepoint`]), batched extraction ([`extract`]) and the HDF5
//! cache ([`cache`]).

pub mod batching;
pub mod cache;
pub mod cuda_pool;
pub mod datasets;
pub mod decode;
pub mod extract;
pub mod featurepoint;
pub mod models;
pub mod preprocess;
pub mod resample;
pub mod synth;
pub mod upload;

pub use featurepoint::FeaturePoint;

/// Version recorded in cache provenance.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
