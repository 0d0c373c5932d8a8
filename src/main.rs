//! The `gapprobe` command line.

mod bench;
mod cache_cmd;
mod datasets_cmd;
mod demo;
mod device;
mod experiment;
mod pipeline;
mod ui;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gapprobe_features::cache::FeatureCache;
use gapprobe_features::datasets::{DatasetSpec, LabelLevel};
use gapprobe_features::extract::ExtractOptions;
use gapprobe_features::synth::SynthConfig;
use gapprobe_features::FeaturePoint;
use gapprobe_probes::ProbeConfig;
use std::path::PathBuf;
use ui::Ui;

#[derive(Parser)]
#[command(name = "gapprobe", version, about = "Measure how much fine-grained visual information a vision-language model loses between its vision encoder and its language model.", long_about = None)]
struct Cli {
    /// Hide progress bars (logs still go to stderr; RUST_LOG=debug gives detail).
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct CacheArg {
    /// Cache root [default: $GAPPROBE_CACHE, else ~/.cache/gapprobe]
    #[arg(long, env = "GAPPROBE_CACHE")]
    cache: Option<PathBuf>,
}

impl CacheArg {
    fn open(&self) -> FeatureCache {
        let root = self.cache.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from(".cache"))
                .join("gapprobe")
        });
        FeatureCache::new(root)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline offline on generated images and a random-weight model.
    #[command(
        after_help = "Example:\n  gapprobe demo --out reports/demo\n\nWrites report.md, modality_gap.png/.svg, results.csv and the feature cache (DIR/cache). \
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
        /// Feature points (repeatable).
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
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
    },
    /// Train linear probes on cached features and write results.csv / results.json.
    #[command(
        after_help = "Example:\n  gapprobe probe 3f2a9c1e 77b0d412 --levels coarse,fine --out results/\n\nENTRY is a cache file or a key prefix from `gapprobe cache ls`."
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
        /// Output folder for results.csv and results.json.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Render report.md and the modality-gap figure from a results.csv.
    #[command(
        after_help = "Example:\n  gapprobe report --results results/results.csv --out results/"
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
    Run { experiment: PathBuf },
    /// Measure encoder + projector throughput (images/s, ms/batch, TFLOP/s) and end-to-end rate.
    #[command(after_help = "Example:\n  gapprobe bench --device cuda --dtypes bf16,f16 --batch-sizes 64,128,256 --e2e-images 2048\n  gapprobe bench --preset smoke   # CPU code-path check\n\nFLOPs/img = 2·P·(C·p²)·d + L·(2·N·(4d² + 2df) + 4N²d) + 2·P·(d·h + h·o): matmul FLOPs only, as in torch_baseline.py.")]
    Bench {
        /// llava15-7b (CLIP ViT-L/14-336 + LLaVA-1.5 projector) or smoke.
        #[arg(long, default_value = "llava15-7b")]
        preset: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, value_delimiter = ',', default_value = "f32")]
        dtypes: Vec<String>,
        #[arg(long, value_delimiter = ',', default_value = "8")]
        batch_sizes: Vec<usize>,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// JPEGs for the end-to-end measurement (0 skips it).
        #[arg(long, default_value_t = 0)]
        e2e_images: usize,
        #[arg(long, default_value_t = 64)]
        e2e_batch: usize,
    },
    /// Inspect the feature cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Inspect datasets (counts per split and level, class balance, image sizes).
    #[command(subcommand)]
    Datasets(datasets_cmd::DatasetsCommand),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// List finished entries.
    #[command(after_help = "Example:\n  gapprobe cache ls --cache reports/demo/cache")]
    Ls {
        #[command(flatten)]
        cache: CacheArg,
    },
    /// Show an entry's provenance and shapes.
    #[command(after_help = "Example:\n  gapprobe cache info 3f2a9c1e --cache reports/demo/cache")]
    Info {
        /// Cache file or key prefix.
        entry: String,
        #[command(flatten)]
        cache: CacheArg,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "gapprobe=info,gapprobe_features=info,gapprobe_probes=info,warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn main() {
    init_logging();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

fn run(cli: Cli) -> Result<()> {
    let ui = Ui { quiet: cli.quiet };
    match cli.command {
        Command::Demo {
            out,
            cache,
            train_per_class,
            test_per_class,
            seed,
        } => {
            let synth = SynthConfig {
                train_per_class,
                test_per_class,
                seed,
                ..Default::default()
            };
            let exp = demo::prepare(&demo::DemoOptions {
                out: out.clone(),
                cache,
                synth,
                model_seed: seed,
            })?;
            std::fs::write(out.join("experiment.toml"), toml::to_string_pretty(&exp)?)?;
            let s = pipeline::run_experiment(&exp, &ui, &command_line())?;
            println!(
                "demo report: {} ({} results; {} cache entries reused, {} extracted, {} forward passes)",
                out.join("report.md").display(),
                s.results,
                s.entries_reused.len(),
                s.entries_extracted.len(),
                s.forward_passes
            );
        }
        Command::Run { experiment } => {
            let exp = experiment::Experiment::load(&experiment)?;
            let s = pipeline::run_experiment(&exp, &ui, &command_line())?;
            println!(
                "report: {} ({} results, {} forward passes)",
                exp.output.join("report.md").display(),
                s.results,
                s.forward_passes
            );
        }
        Command::Extract {
            model,
            dataset,
            feature_points,
            cache,
            device,
            dtype,
            batch_size,
        } => {
            let spec: DatasetSpec = dataset.parse()?;
            let ds = spec.load()?;
            let points = feature_points
                .iter()
                .map(|p| p.parse())
                .collect::<Result<Vec<FeaturePoint>>>()?;
            let opts = ExtractOptions {
                batch_size,
                device: device::parse_device(&device)?,
                dtype: device::parse_dtype(&dtype)?,
            };
            let mut summary = pipeline::RunSummary::default();
            let entries = pipeline::ensure_features(
                &cache.open(),
                &model,
                &ds,
                &points,
                &opts,
                &ui,
                &mut summary,
            )?;
            for e in entries {
                println!(
                    "{}  {}  {}",
                    &e.key[..16],
                    e.provenance.feature_point,
                    e.path.display()
                );
            }
        }
        Command::Probe {
            entries,
            cache,
            levels,
            solver,
            seed,
            out,
        } => {
            let cache = cache.open();
            let levels = levels
                .iter()
                .map(|l| l.parse())
                .collect::<Result<Vec<LabelLevel>>>()?;
            let cfg = ProbeConfig {
                solver: solver.parse()?,
                seed,
                ..Default::default()
            };
            let mut rows = Vec::new();
            let mut details = Vec::new();
            for what in &entries {
                let entry = cache_cmd::find(&cache, what)?;
                for (level, report) in pipeline::probe_entry(&entry, &levels, &cfg, &ui)? {
                    rows.push(pipeline::result_row(&entry, level, &report, &cfg)?);
                    details.push(serde_json::json!({"cache_key": entry.key, "level": level, "provenance": entry.provenance, "report": report}));
                }
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            gapprobe_reports::write_results_csv(&rows, &out.join("results.csv"))?;
            std::fs::write(
                out.join("results.json"),
                serde_json::to_string_pretty(&details)?,
            )?;
            println!(
                "wrote {} rows to {}",
                rows.len(),
                out.join("results.csv").display()
            );
        }
        Command::Report {
            results,
            out,
            title,
        } => {
            let rows = gapprobe_reports::read_results_csv(&results)?;
            let model = rows.first().map(|r| r.model.clone()).unwrap_or_default();
            pipeline::write_report(
                &out,
                &title,
                &model,
                &[],
                &rows,
                &serde_json::Value::Null,
                &command_line(),
            )?;
            println!("report: {}", out.join("report.md").display());
        }
        Command::Bench { preset, device, dtypes, batch_sizes, warmup, iters, e2e_images, e2e_batch } => {
            bench::run(&bench::BenchOptions { preset, device, dtypes, batch_sizes, warmup, iters, e2e_images, e2e_batch }, &ui)?;
        }
        Command::Datasets(cmd) => datasets_cmd::run(cmd)?,
        Command::Cache(CacheCommand::Ls { cache }) => cache_cmd::ls(&cache.open())?,
        Command::Cache(CacheCommand::Info { entry, cache }) => {
            cache_cmd::info(&cache.open(), &entry)?
        }
    }
    Ok(())
}
