//! Shared plumbing of the loaders: whitespace-separated annotation files with line numbers, and
//! the `skip_bad` policy (fail with file and line, or record the item and go on).

use super::{Dataset, SkippedItem};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// One non-empty line of an annotation file.
pub(crate) struct Line {
    /// 1-based line number.
    pub no: usize,
    pub text: String,
}

/// Reads `path` as text lines, dropping blank lines (a trailing `\r` is removed).
pub(crate) fn read_lines(path: &Path) -> Result<Vec<Line>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| Line {
            no: i + 1,
            text: l.trim_end_matches('\r').to_string(),
        })
        .filter(|l| !l.text.trim().is_empty())
        .collect())
}

/// Splits `"<key> <rest with spaces>"`; `None` when there is no second field.
pub(crate) fn key_rest(line: &str) -> Option<(&str, &str)> {
    let t = line.trim();
    let (k, r) = t.split_once(char::is_whitespace)?;
    let r = r.trim();
    (!r.is_empty()).then_some((k, r))
}

/// How a loader reacts to a bad item.
pub(crate) struct BadPolicy {
    pub skip_bad: bool,
    pub skipped: Vec<SkippedItem>,
}

impl BadPolicy {
    pub fn new(skip_bad: bool) -> Self {
        BadPolicy {
            skip_bad,
            skipped: Vec::new(),
        }
    }

    /// A bad item at `file:line`: an error, or (with `skip_bad`) recorded and `Ok(())`.
    pub fn bad(
        &mut self,
        file: &Path,
        line: usize,
        id: &str,
        path: &Path,
        msg: &str,
    ) -> Result<()> {
        let reason = if line > 0 {
            format!("{}:{line}: {msg}", file.display())
        } else {
            format!("{}: {msg}", file.display())
        };
        if !self.skip_bad {
            bail!("{reason} (pass skip_bad=1 / --skip-bad to skip such items)");
        }
        self.skipped.push(SkippedItem {
            id: id.to_string(),
            path: path.to_path_buf(),
            reason,
        });
        Ok(())
    }

    /// Checks that the image `root/rel` exists; reports it as bad (naming `file:line`) if not.
    pub fn image_exists(
        &mut self,
        root: &Path,
        rel: &Path,
        file: &Path,
        line: usize,
        id: &str,
    ) -> Result<bool> {
        if root.join(rel).is_file() {
            return Ok(true);
        }
        let msg = format!("missing image {}", root.join(rel).display());
        self.bad(file, line, id, rel, &msg)?;
        Ok(false)
    }

    /// Moves the recorded items into `ds.skipped`.
    pub fn finish(self, ds: &mut Dataset) {
        ds.skipped.extend(self.skipped);
    }
}

/// The first of `candidates` (relative to `root`) that exists, for sources whose files may sit
/// at the top level or in a subfolder.
pub(crate) fn find_file(root: &Path, candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(|c| root.join(c)).find(|p| p.exists())
}
