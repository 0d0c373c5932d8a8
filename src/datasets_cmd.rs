//! `gapprobe datasets inspect <spec>`: load a dataset and print its counts per split and level,
//! class balance, image sizes and skipped items.

use anyhow::Result;
use clap::Subcommand;
use gapprobe_features::datasets::{inspect, DatasetSpec};

/// `gapprobe datasets ...`
#[derive(Subcommand)]
pub enum DatasetsCommand {
    /// Load a dataset spec and print counts per split × level, class balance and image sizes.
    #[command(
        after_help = "Examples:\n  gapprobe datasets inspect cub:/data/CUB_200_2011\n  gapprobe datasets inspect 'inat2021:/data/inat?annotations=train_mini.json&coarse=order' --sample 500\n\nSpec syntax and options: docs/datasets.md."
    )]
    Inspect {
        /// Dataset spec, e.g. cub:/data/CUB_200_2011 or manifest:/data/birds.parquet.
        spec: String,
        /// Number of images whose size is read (seeded sample).
        #[arg(long, default_value_t = 200)]
        sample: usize,
        /// Skip and list bad items instead of failing (same as the spec option skip_bad=1).
        #[arg(long)]
        skip_bad: bool,
    },
}

/// Runs a `datasets` subcommand.
pub fn run(cmd: DatasetsCommand) -> Result<()> {
    match cmd {
        DatasetsCommand::Inspect {
            spec,
            sample,
            skip_bad,
        } => {
            let mut spec: DatasetSpec = spec.parse()?;
            if skip_bad {
                spec.options.insert("skip_bad".into(), "1".into());
            }
            let ds = spec.load()?;
            print!("{}", inspect::summary(&ds, sample));
        }
    }
    Ok(())
}
