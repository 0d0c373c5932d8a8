//! `answers.jsonl`: every zero-shot answer as it is generated, one JSON object a line, appended
//! and flushed batch by batch, so an interrupted run loses at most the batch in flight and a
//! rerun asks only what is not answered yet. Each answer carries the key of everything that
//! produced it (weights, tokenizer, prompt, decoding, dtype, dataset); answers under another key
//! are kept in the file but never reused.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// One generated answer and its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Key of the run settings that produced it ([`AnswerStore`]).
    pub key: String,
    pub dataset: String,
    pub model: String,
    /// `image` or `text`.
    pub arm: String,
    pub level: String,
    pub sample_id: String,
    /// The label at `level`.
    pub label: String,
    /// Labels counted as right (at broad levels the finer labels too, as Finer does).
    pub accepted: Vec<String>,
    /// The prompt as asked: the chat template with the level's question (its concept filled
    /// in), `<image>` where the image or its text went.
    pub question: String,
    /// The generated text (special tokens left out).
    pub output: String,
    /// The part scored: after "Answer:" when the output has it.
    pub answer: String,
    pub exact: bool,
    pub f1: f64,
}

/// The answers file of an output folder.
pub struct AnswerStore {
    path: PathBuf,
    file: std::fs::File,
    done: HashSet<(String, String, String, String, String)>,
    answers: Vec<Answer>,
}

impl AnswerStore {
    /// Opens (or creates) `dir/answers.jsonl` and reads what it holds; a line that does not
    /// parse (a run killed mid-write leaves at most one, the last) is reported with its number.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("answers.jsonl");
        let mut answers = Vec::new();
        let mut torn = false;
        if path.exists() {
            let f = std::fs::File::open(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let lines: Vec<String> = std::io::BufReader::new(f)
                .lines()
                .collect::<std::io::Result<_>>()
                .with_context(|| format!("reading {}", path.display()))?;
            for (i, line) in lines.iter().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Answer>(line) {
                    Ok(a) => answers.push(a),
                    Err(_) if i + 1 == lines.len() => torn = true,
                    Err(e) => anyhow::bail!(
                        "{} line {}: not an answer ({e}); move the file away to start afresh",
                        path.display(),
                        i + 1
                    ),
                }
            }
        }
        if torn {
            // Rewrite without the torn last line so appends start on a line of their own.
            let mut text = String::new();
            for a in &answers {
                text.push_str(&serde_json::to_string(a)?);
                text.push('\n');
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            tracing::warn!("{}: dropped a torn last line", path.display());
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let done = answers.iter().map(Self::id).collect();
        Ok(Self {
            path,
            file,
            done,
            answers,
        })
    }

    fn id(a: &Answer) -> (String, String, String, String, String) {
        (
            a.key.clone(),
            a.dataset.clone(),
            a.arm.clone(),
            a.level.clone(),
            a.sample_id.clone(),
        )
    }

    /// Whether this sample was answered under `key` at this arm and level.
    pub fn has(&self, key: &str, dataset: &str, arm: &str, level: &str, sample: &str) -> bool {
        self.done.contains(&(
            key.into(),
            dataset.into(),
            arm.into(),
            level.into(),
            sample.into(),
        ))
    }

    /// Appends answers and flushes them to disk.
    pub fn append(&mut self, new: Vec<Answer>) -> Result<()> {
        let mut text = String::new();
        for a in &new {
            text.push_str(&serde_json::to_string(a)?);
            text.push('\n');
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()))?;
        for a in new {
            self.done.insert(Self::id(&a));
            self.answers.push(a);
        }
        Ok(())
    }

    /// The answers under `key` for one dataset, arm and level, in file order.
    pub fn of(&self, key: &str, dataset: &str, arm: &str, level: &str) -> Vec<&Answer> {
        self.answers
            .iter()
            .filter(|a| a.key == key && a.dataset == dataset && a.arm == arm && a.level == level)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(key: &str, sample: &str) -> Answer {
        Answer {
            key: key.into(),
            dataset: "d".into(),
            model: "m".into(),
            arm: "image".into(),
            level: "fine".into(),
            sample_id: sample.into(),
            label: "Bald Eagle".into(),
            accepted: vec!["Bald Eagle".into()],
            question: "Q?\n\"quoted\"".into(),
            output: "Answer: a bald eagle".into(),
            answer: "a bald eagle".into(),
            exact: true,
            f1: 1.0,
        }
    }

    #[test]
    fn answers_survive_a_reopen_and_only_their_key_reuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = AnswerStore::open(dir.path()).unwrap();
        store
            .append(vec![
                answer("k1", "a"),
                answer("k1", "b"),
                answer("k2", "a"),
            ])
            .unwrap();
        drop(store);
        let store = AnswerStore::open(dir.path()).unwrap();
        assert!(store.has("k1", "d", "image", "fine", "b"));
        assert!(!store.has("k1", "d", "text", "fine", "b"));
        assert!(!store.has("k3", "d", "image", "fine", "a"));
        let k1 = store.of("k1", "d", "image", "fine");
        assert_eq!(k1.len(), 2);
        assert_eq!(*k1[0], answer("k1", "a"));
        assert_eq!(store.of("k2", "d", "image", "fine").len(), 1);
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_a_corrupt_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("answers.jsonl");
        let good = serde_json::to_string(&answer("k", "a")).unwrap();
        std::fs::write(&path, format!("{good}\n{}", &good[..good.len() / 2])).unwrap();
        let mut store = AnswerStore::open(dir.path()).unwrap();
        assert_eq!(store.of("k", "d", "image", "fine").len(), 1);
        store.append(vec![answer("k", "b")]).unwrap();
        let lines: Vec<String> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines
            .iter()
            .all(|l| serde_json::from_str::<Answer>(l).is_ok()));

        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = AnswerStore::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("answers.jsonl line 2"), "{err}");
    }
}
