//! The command line's shape (clap): subcommands, their flags and `--help` examples.

use crate::{bench, datasets_cmd};
use clap::{Args, Parser, Subcommand};
use gapprobe_features::batching::BatchSize;
use gapprobe_features::cache::FeatureCache;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "gapprobe", version, about = "Measure how much fine-grained visual information a vision-language model loses between its vision encoder and its language model.", long_about = None)]
pub struct Cli {
    /// Hide progress bars (logs still go to stderr; RUST_LOG=debug gives detail).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Clone)]
pub struct CacheArg {
    /// Cache root [default: $GAPPROBE_CACHE, else ~/.cache/gapprobe]
    #[arg(long, env = "GAPPROBE_CACHE")]
    pub cache: Option<PathBuf>,
}

impl CacheArg {
    pub fn open(&self) -> FeatureCache {
        FeatureCache::new(
            self.cache
                .clone()
                .unwrap_or_else(FeatureCache::default_root),
        )
    }
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the whole pipeline offline on generated images and a random-weight model.
    #[command(
        after_help = "Example:\n  gapprobe demo --out reports/demo\n\nWrites report.md, modality_gap.png/.svg, results.csv/.parquet/.json, similarity.csv/.parquet and the feature cache (DIR/cache). \
A second run reuses the cache and performs no forward pass."
    )]
    Demo {
        /// Output folder.
        #[arg(long, default_value = "reports/demo")]
        out: PathBuf,
        /// Cache root [default: OUT/cache]
        #[arg(long)]
        cache: Option<PathBuf>,
        /// Training images per fine class.
        #[arg(long, default_value_t = 40)]
        train_per_class: usize,
        /// Test images per fine class.
        #[arg(long, default_value_t = 20)]
        test_per_class: usize,
        /// Seed of the images and of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Extract features into the cache (only what it does not hold yet).
    #[command(
        after_help = "Example:\n  gapprobe extract --model llava-hf/llava-1.5-7b-hf --dataset manifest:/data/birds.csv \\\n    -f 'vision.layer[-2].patch.mean' -f projector.mean --device cuda --dtype bf16"
    )]
    Extract {
        /// Checkpoint folder or Hugging Face hub id.
        #[arg(long)]
        model: String,
        /// Dataset spec, e.g. manifest:/data/birds.csv.
        #[arg(long)]
        dataset: String,
        /// Skip missing or malformed items instead of stopping (the spec option skip_bad=1); they
        /// are listed in each cache entry's `skipped` attribute.
        #[arg(long)]
        skip_bad: bool,
        /// Feature points (repeatable); `vision.layer[0:25:4].cls` or `vision.layer[4,8,-2].cls` name
        /// several layers (docs/feature-points.md).
        #[arg(short = 'f', long = "feature-point", default_values_t = ["vision.layer[-2].patch.mean".to_string(), "projector.mean".to_string()])]
        feature_points: Vec<String>,
        #[command(flatten)]
        cache: CacheArg,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// f32, bf16 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Keep the residual stream (the hidden states between layers) in f32 around bf16/f16
        /// layers: about halves the bf16 error at layer −2, for twice the stream's memory traffic.
        /// The default with bf16 (on CUDA); `--f32-residual=false` keeps a bf16 stream, as
        /// PyTorch's eager bf16 does. Part of the cache key. Also: GAPPROBE_RESIDUAL=f32|model.
        #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
        f32_residual: Option<bool>,
        /// The language model's prompt for llm.* feature points; `<image>` marks where the image
        /// (llm.image) or the image's attribute text (llm.text) goes. Part of the cache key.
        #[arg(long, default_value = gapprobe_features::models::DEFAULT_PROMPT)]
        prompt: String,
        /// Images per forward pass, or `auto`: from free GPU memory (at most 256), 32 on the CPU.
        /// An out-of-memory error names the size that fits.
        #[arg(long, default_value = "auto")]
        batch_size: BatchSize,
        /// Extract only shard I of N (0-based, e.g. 0/4) into a shard file; join the N shard
        /// files with `gapprobe cache merge`. Every shard must use the same --batch-size.
        #[arg(long)]
        shard: Option<String>,
        /// Store features as f32 or f16 (reads always return f32).
        #[arg(long, default_value = "f32")]
        storage_dtype: String,
        /// Exit with a message instead of waiting when another process writes the same entry.
        #[arg(long)]
        no_wait: bool,
        /// Deflate-compress each new entry's features once it is finished (level 1-9, default 4;
        /// storage only, the key is unchanged). See `gapprobe cache compress`.
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "4", value_name = "LEVEL")]
        compress: Option<u8>,
    },
    /// Train linear probes on cached features and write results.csv / .parquet / .json and
    /// per_class.csv / .parquet.
    #[command(
        after_help = "Examples:\n  gapprobe probe 3f2a9c1e 77b0d412 --levels coarse,fine --out results/\n  gapprobe probe 3f2a9c1e 77b0d412 --shots 1,2,4,8,16 --shot-draws 3 --out results/\n\nENTRY is a cache file or a key prefix from `gapprobe cache ls`. Few-shot rows carry their k in results.csv's `shots` column (0 = the whole training split)."
    )]
    Probe {
        /// Cache entries (file paths or key prefixes).
        #[arg(required = true)]
        entries: Vec<String>,
        #[command(flatten)]
        cache: CacheArg,
        /// Label levels [default: all the entry has].
        #[arg(long, value_delimiter = ',')]
        levels: Vec<String>,
        /// candle (default) or linfa.
        #[arg(long, default_value = "candle")]
        solver: String,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Few-shot probes besides the standard one: training images per class, e.g.
        /// 1,2,4,8,16 (each drawn --shot-draws times; C chosen on a disjoint draw of min(k, 4)
        /// per class, never refitted on it).
        #[arg(long, value_delimiter = ',')]
        shots: Vec<usize>,
        /// Random draws each few-shot score averages.
        #[arg(long, default_value_t = 3)]
        shot_draws: usize,
        /// Output folder for results.csv / .parquet / .json and per_class.csv / .parquet.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Representation similarity of two cache entries: linear CKA, debiased CKA and mutual
    /// k-NN alignment (how much a projection changed the features' geometry), and Liang et al.'s
    /// centroid modality gap for entries of one width (e.g. llm.image vs llm.text at one layer).
    #[command(
        after_help = "Example:\n  gapprobe compare 3f2a9c1e 77b0d412 --split test --k 10 --json similarity.json\n\nENTRY is a cache file or a key prefix from `gapprobe cache ls`; every pair of the entries is compared. They must hold pooled [N, D] features of the same dataset; rows are matched by image id. The centroid gap (distance between the means of the unit-normalised features, 0 to 2) is printed only for entries of the same width; it is meaningful where both share one space."
    )]
    Compare {
        /// Two or more cache entries (file paths or key prefixes), e.g. a vision layer and the
        /// projector's output.
        #[arg(required = true, num_args = 2..)]
        entries: Vec<String>,
        #[command(flatten)]
        cache: CacheArg,
        /// Split to compare: train, val or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Neighbours per sample for mutual k-NN.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Compare at most this many rows, a seeded random subset (mutual k-NN costs O(N²·D)).
        #[arg(long, default_value_t = 10_000)]
        max_rows: usize,
        /// Seed of that subset.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the comparisons as a JSON array to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Render report.md, the modality-gap figure and (for layer sweeps) the layer figure from a
    /// results.csv.
    #[command(
        after_help = "Example:\n  gapprobe report --results results/results.csv --out results/\n\nA similarity.csv and a per_class.csv beside results.csv come into the report too."
    )]
    Report {
        #[arg(long)]
        results: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(
            long,
            default_value = "Linear-probe accuracy before vs after projection"
        )]
        title: String,
    },
    /// Run an experiment TOML: extract → cache → probe → report, reusing what the cache holds.
    #[command(
        after_help = "Example:\n  gapprobe run experiments/llava15-cub.toml\n\nSee README.md for the file format."
    )]
    Run {
        experiment: PathBuf,
        /// Skip missing or malformed items in every dataset (skip_bad=1); the report lists them.
        #[arg(long)]
        skip_bad: bool,
    },
    /// Ask the language model to name each test image's class per label level (image and/or
    /// text arm) and score its greedy answers with the Finer paper's exact match.
    ZeroShot(crate::zero_shot_cmd::ZeroShotArgs),
    /// Measure encoder + projector throughput (images/s, ms/batch, TFLOP/s) and end-to-end rate.
    Bench(bench::BenchOptions),
    /// Inspect the feature cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Inspect datasets (counts per split and level, class balance, image sizes).
    #[command(subcommand)]
    Datasets(datasets_cmd::DatasetsCommand),
}

#[derive(Subcommand)]
pub enum CacheCommand {
    /// List finished entries.
    #[command(after_help = "Example:\n  gapprobe cache ls --cache reports/demo/cache")]
    Ls {
        #[command(flatten)]
        cache: CacheArg,
        /// Also list shard files, partial (unfinished) files and unreadable files.
        #[arg(long)]
        all: bool,
    },
    /// Show an entry's provenance and shapes.
    #[command(after_help = "Example:\n  gapprobe cache info 3f2a9c1e --cache reports/demo/cache")]
    Info {
        /// Cache file or key prefix.
        entry: String,
        #[command(flatten)]
        cache: CacheArg,
        /// Print JSON, with a SHA-256 and sum of each split's features (as f32).
        #[arg(long)]
        json: bool,
    },
    /// Check entries: row counts, NaN/Inf, completion, and whether the model weights, config
    /// and dataset still fingerprint the same.
    #[command(after_help = "Example:\n  gapprobe cache verify --cache reports/demo/cache")]
    Verify {
        /// Cache files or key prefixes [default: every file in the cache].
        entries: Vec<String>,
        #[command(flatten)]
        cache: CacheArg,
        /// Skip re-fingerprinting the model and dataset.
        #[arg(long)]
        no_sources: bool,
    },
    /// Remove entries.
    #[command(after_help = "Example:\n  gapprobe cache rm 3f2a9c1e --cache reports/demo/cache")]
    Rm {
        /// Cache files or key prefixes.
        #[arg(required = true)]
        entries: Vec<String>,
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Remove partial files nobody is writing, unused locks, unreadable files and, optionally,
    /// old entries or entries not in a keep-list. Dry run unless --yes.
    #[command(after_help = "Example:\n  gapprobe cache gc --older-than-days 90 --yes")]
    Gc {
        #[command(flatten)]
        cache: CacheArg,
        /// Also remove entries created more than this many days ago.
        #[arg(long)]
        older_than_days: Option<u64>,
        /// Also remove entries whose key (prefix) is not listed in this file (whitespace-separated).
        #[arg(long)]
        keep: Option<PathBuf>,
        /// Remove for real.
        #[arg(long)]
        yes: bool,
    },
    /// Join the shard files of a `--shard i/N` extraction into one entry.
    #[command(
        after_help = "Example:\n  gapprobe cache merge cache/demo/*/projector.mean-*.shard-*.h5 --cache cache"
    )]
    Merge {
        /// All N shard files of one entry.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        cache: CacheArg,
        /// Exit instead of waiting when another process writes the entry.
        #[arg(long)]
        no_wait: bool,
    },
    /// Rewrite finished entries with their features deflate-compressed (same key; the file is
    /// replaced only after its features read back bit-identical).
    #[command(
        after_help = "Example:\n  gapprobe cache compress 3f2a9c1e --level 6 --shuffle --cache reports/demo/cache"
    )]
    Compress {
        /// Cache files or key prefixes.
        #[arg(required = true)]
        entries: Vec<String>,
        #[command(flatten)]
        cache: CacheArg,
        /// Deflate level, 1 (fastest) to 9 (smallest).
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(1..=9))]
        level: u8,
        /// Apply the shuffle filter before deflate (often smaller for float data).
        #[arg(long)]
        shuffle: bool,
        /// Exit instead of waiting when another process writes the entry.
        #[arg(long)]
        no_wait: bool,
    },
    /// Import features computed elsewhere as a cache entry that probes and reports accept.
    #[command(
        after_help = "Examples:\n  gapprobe cache import --split train=tr.npy,tr_labels.txt --split test=te.npy,te_labels.npy \\\n    --feature-point projector.mean --dataset birds\n  gapprobe cache import --h5 feats.h5 --feature-point vision.layer[-2].cls --dataset birds"
    )]
    Import {
        /// HDF5 file with <split>/features and <split>/labels (optional <split>/ids, classes/<level>).
        #[arg(long)]
        h5: Option<PathBuf>,
        /// SPLIT=FEATURES.npy,LABELS (LABELS: .npy integers or text, one label per line); repeatable.
        #[arg(long = "split")]
        splits: Vec<String>,
        /// Feature point the features correspond to (decides before/after projection in reports).
        #[arg(long)]
        feature_point: String,
        /// Dataset name for the provenance and reports.
        #[arg(long, default_value = "imported")]
        dataset: String,
        /// Label level of the labels.
        #[arg(long, default_value = "fine")]
        level: String,
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Measure writing a split's features batch by batch (as `extract` does) and reading them
    /// into an f32 ndarray (page cache).
    #[command(after_help = "Example:\n  gapprobe cache bench --rows 65536 --dim 1024")]
    Bench {
        /// Folder for the throwaway file [default: the system temp folder].
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 65536)]
        rows: usize,
        #[arg(long, default_value_t = 1024)]
        dim: usize,
        /// Rows per write (an extraction writes one batch at a time).
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Store the synthetic features as f16.
        #[arg(long)]
        f16: bool,
    },
}
