//! Progress bars (indicatif) that `-q` silences.

use indicatif::{ProgressBar, ProgressStyle};
use std::time::Duration;

/// Creates progress bars, or hidden ones when quiet.
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
}

impl Ui {
    /// A bar counting `len` items.
    pub fn bar(&self, len: u64, msg: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template("{msg:28} [{bar:32}] {pos}/{len} {per_sec} eta {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(msg.to_string());
        bar
    }

    /// A spinner for work without a known length.
    pub fn spinner(&self, msg: &str) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let s = ProgressBar::new_spinner();
        s.set_message(msg.to_string());
        s.enable_steady_tick(Duration::from_millis(120));
        s
    }
}
