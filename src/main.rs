//! The `gapprobe` command line.

mod bench;
mod bench_checks;
mod bench_e2e;
mod bench_ops;
mod cache_cmd;
mod cli;
mod datasets_cmd;
mod demo;
mod device;
mod experiment;
mod pipeline;
mod ui;
mod zero_shot_cmd;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{CacheCommand, Cli, Command};
use gapprobe_features::cache::Compression;
use gapprobe_features::datasets::{DatasetSpec, LabelLevel};
use gapprobe_features::extract::ExtractOptions;
use gapprobe_features::synth::SynthConfig;
use ui::Ui;

/// Logs go to stderr, coloured only on a terminal and without `NO_COLOR` set, so that a log
/// file (a SLURM job's `.err`, a pipe) holds plain text.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "gapprobe=info,gapprobe_features=info,gapprobe_probes=info,warn",
        )
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(use_colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .with_target(false)
        .init();
}

/// Colour on a terminal unless `NO_COLOR` is set to a non-empty value (no-color.org).
fn use_colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

fn main() {
    // A closed pipe (`gapprobe cache ls | head`) ends the process quietly, as it does for other
    // command-line tools, instead of a panic on the next print.
    #[cfg(unix)]
    // SAFETY: called before any other thread exists; restores the default disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    init_logging();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `--skip-bad`: the spec with `skip_bad=1`, so missing, malformed and unreadable images are
/// skipped (and listed) before extraction starts.
fn with_skip_bad(mut spec: DatasetSpec) -> DatasetSpec {
    spec.options.insert("skip_bad".into(), "1".into());
    spec
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
        Command::ZeroShot(args) => zero_shot_cmd::run(args, &ui, &command_line())?,
        Command::Run {
            experiment,
            skip_bad,
        } => {
            let mut exp = experiment::Experiment::load(&experiment)?;
            if skip_bad {
                for d in &mut exp.datasets {
                    d.spec = with_skip_bad(d.spec.parse()?).to_string();
                }
            }
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
            skip_bad,
            feature_points,
            cache,
            device,
            dtype,
            f32_residual,
            prompt,
            batch_size,
            shard,
            storage_dtype,
            no_wait,
            compress,
        } => {
            let mut spec: DatasetSpec = dataset.parse()?;
            if skip_bad {
                spec = with_skip_bad(spec);
            }
            let ds = spec.load()?;
            let points =
                gapprobe_features::featurepoint::parse_feature_point_list(&feature_points)?;
            let opts = ExtractOptions {
                batch_size,
                device: device::parse_device(&device)?,
                dtype: device::parse_dtype(&dtype)?,
                f32_residual,
                prompt,
            };
            device::check_dtype_on(&opts.device, opts.dtype)?;
            let mut summary = pipeline::RunSummary::default();
            let copts = pipeline::CacheOptions {
                storage: storage_dtype.parse()?,
                shard: shard.as_deref().map(str::parse).transpose()?,
                no_wait,
                dataset_spec: spec.to_string(),
                compress: compress.map(|l| Compression::new(l, false)).transpose()?,
            };
            let entries = pipeline::ensure_features_with(
                &cache.open(),
                &model,
                &ds,
                &points,
                &opts,
                &copts,
                &ui,
                &mut summary,
            )?;
            for e in entries {
                cache_cmd::print_entry_line(&e);
            }
        }
        Command::Probe {
            entries,
            cache,
            levels,
            solver,
            seed,
            shots,
            shot_draws,
            out,
        } => {
            let cache = cache.open();
            let levels = levels
                .iter()
                .map(|l| l.parse())
                .collect::<Result<Vec<LabelLevel>>>()?;
            // The same checks as an experiment's [probe] section.
            let cfg = experiment::ProbeSection {
                solver,
                seed,
                shots,
                shot_draws,
                ..Default::default()
            }
            .to_config()?;
            let mut rows = Vec::new();
            let mut details = Vec::new();
            let mut classes = Vec::new();
            for what in &entries {
                let entry = cache_cmd::find(&cache, what)?;
                let probed = pipeline::probe_entry(&entry, &levels, &cfg, &ui)?;
                rows.extend(probed.rows);
                details.extend(probed.details);
                classes.extend(probed.classes);
            }
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            gapprobe_reports::write_results_csv(&rows, &out.join("results.csv"))?;
            gapprobe_reports::write_results_parquet(&rows, &out.join("results.parquet"))?;
            gapprobe_reports::write_class_csv(&classes, &out.join("per_class.csv"))?;
            gapprobe_reports::write_class_parquet(&classes, &out.join("per_class.parquet"))?;
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
        Command::Compare {
            entries,
            cache,
            split,
            k,
            max_rows,
            seed,
            json,
        } => {
            let cache = cache.open();
            let opts = pipeline::CompareOptions {
                split: split.parse()?,
                k,
                max_rows,
                seed,
            };
            let entries = entries
                .iter()
                .map(|e| cache_cmd::find(&cache, e))
                .collect::<Result<Vec<_>>>()?;
            let refs: Vec<_> = entries.iter().collect();
            let comparisons = pipeline::compare_pairs(&refs, &opts, &ui)
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            print_comparisons(&entries, &comparisons);
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&comparisons)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        Command::Report {
            results,
            out,
            title,
        } => {
            let rows = gapprobe_reports::read_results_csv(&results)?;
            let model = rows.first().map(|r| r.model.clone()).unwrap_or_default();
            // A similarity.csv beside the results (from `gapprobe run`) comes into the report too.
            let similarity_csv = results.with_file_name("similarity.csv");
            let similarity = if similarity_csv.is_file() {
                gapprobe_reports::read_similarity_csv(&similarity_csv)?
            } else {
                Vec::new()
            };
            // And a per_class.csv (from `run` or `probe`).
            let class_csv = results.with_file_name("per_class.csv");
            let classes = if class_csv.is_file() {
                gapprobe_reports::read_class_csv(&class_csv)?
            } else {
                Vec::new()
            };
            // And a zero_shot.csv (from `run` with [zero_shot], or `zero-shot` into the same folder).
            let zero_shot_csv = results.with_file_name("zero_shot.csv");
            let zero_shot = if zero_shot_csv.is_file() {
                gapprobe_reports::read_zero_shot_csv(&zero_shot_csv)?
            } else {
                Vec::new()
            };
            pipeline::write_report(
                &out,
                &pipeline::ReportInput {
                    title: &title,
                    model: &model,
                    notes: &[],
                    rows: &rows,
                    classes: &classes,
                    similarity: &similarity,
                    zero_shot: &zero_shot,
                    details: None,
                    command: &command_line(),
                },
            )?;
            println!("report: {}", out.join("report.md").display());
        }
        Command::Bench(opts) => bench::run(&opts, &ui)?,
        Command::Datasets(cmd) => datasets_cmd::run(cmd)?,
        Command::Cache(CacheCommand::Ls { cache, all }) => cache_cmd::ls(&cache.open(), all)?,
        Command::Cache(CacheCommand::Info { entry, cache, json }) => {
            cache_cmd::info(&cache.open(), &entry, json)?
        }
        Command::Cache(CacheCommand::Verify {
            entries,
            cache,
            no_sources,
        }) => cache_cmd::verify(&cache.open(), &entries, !no_sources)?,
        Command::Cache(CacheCommand::Rm { entries, cache }) => {
            cache_cmd::rm(&cache.open(), &entries)?
        }
        Command::Cache(CacheCommand::Gc {
            cache,
            older_than_days,
            keep,
            yes,
        }) => cache_cmd::gc(&cache.open(), older_than_days, keep.as_deref(), yes)?,
        Command::Cache(CacheCommand::Merge {
            files,
            cache,
            no_wait,
        }) => cache_cmd::merge(&cache.open(), &files, no_wait)?,
        Command::Cache(CacheCommand::Compress {
            entries,
            cache,
            level,
            shuffle,
            no_wait,
        }) => cache_cmd::compress(
            &cache.open(),
            &entries,
            Compression::new(level, shuffle)?,
            no_wait,
        )?,
        Command::Cache(CacheCommand::Import {
            h5,
            splits,
            feature_point,
            dataset,
            level,
            cache,
        }) => {
            let opts = gapprobe_features::cache::import::ImportOptions {
                feature_point,
                dataset,
                level: level.parse()?,
            };
            cache_cmd::import(&cache.open(), h5.as_deref(), &splits, &opts)?
        }
        Command::Cache(CacheCommand::Bench {
            dir,
            rows,
            dim,
            batch,
            reps,
            f16,
        }) => cache_cmd::bench(
            &dir.unwrap_or_else(std::env::temp_dir),
            rows,
            dim,
            batch,
            reps,
            f16,
        )?,
    }
    Ok(())
}

/// The `compare` command's table: the entries, numbered, then one line per pair.
fn print_comparisons(
    entries: &[gapprobe_features::cache::CacheEntry],
    comparisons: &[gapprobe_reports::SimilarityRow],
) {
    let Some(first) = comparisons.first() else {
        return;
    };
    println!("{} ({} split)", first.dataset, first.split);
    let width = entries
        .iter()
        .map(|e| e.provenance.feature_point.len())
        .max()
        .unwrap_or(0);
    for (i, e) in entries.iter().enumerate() {
        println!(
            "  {:>2}  {:<width$}  {}  key {}",
            i + 1,
            e.provenance.feature_point,
            e.provenance.model_id,
            &e.key[..e.key.len().min(8)]
        );
    }
    // compare_pairs' order: (1, 2), (1, 3), …, (2, 3), …
    let pairs = (1..=entries.len()).flat_map(|i| (i + 1..=entries.len()).map(move |j| (i, j)));
    println!(
        "{:>7} {:>7} {:>11} {:>13} {:>15} {:>13}",
        "pair",
        "rows",
        "linear CKA",
        "debiased CKA",
        format!("mutual k-NN@{}", first.k),
        "centroid gap"
    );
    for (c, (i, j)) in comparisons.iter().zip(pairs) {
        // Liang et al.'s gap only between feature points of one width (one space).
        let gap = c.centroid_gap.map_or("–".into(), |g| format!("{g:.4}"));
        println!(
            "{:>7} {:>7} {:>11.4} {:>13.4} {:>15.4} {:>13}",
            format!("{i}-{j}"),
            c.n,
            c.linear_cka,
            c.debiased_cka,
            c.mutual_knn,
            gap
        );
    }
}

#[cfg(test)]
mod tests {
    use super::use_colour;
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some(OsStr::new(""))));
        assert!(!use_colour(true, Some(OsStr::new("1"))));
        assert!(!use_colour(false, None));
    }
}
