//! User label maps (fine → coarse), for sources without a coarse level of their own (CUB, Dogs)
//! or to replace the one a loader derives.

use super::{lines::read_lines, Dataset, LabelLevel};
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// Normalised key used to match fine names: lower case, `_` as space, spaces collapsed.
fn key(name: &str) -> String {
    name.replace('_', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Reads a fine → coarse map: JSON (`{"fine": "coarse", ...}`) when the file ends in `.json`,
/// else CSV with two columns `fine,coarse` (an optional header row `fine,coarse`; fields may be
/// double-quoted). Errors name the file and line.
pub fn read_label_map(path: &Path) -> Result<Vec<(String, String)>> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)
            .with_context(|| {
                format!(
                    "{}: expected a JSON object {{\"fine\": \"coarse\"}}",
                    path.display()
                )
            })?;
        return map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(c) => Ok((k, c)),
                other => bail!(
                    "{}: value for '{k}' must be a string, found {other}",
                    path.display()
                ),
            })
            .collect();
    }
    let mut out = Vec::new();
    for l in read_lines(path)? {
        let fields = split_csv(&l.text);
        if fields.len() != 2 || fields.iter().any(|f| f.is_empty()) {
            bail!(
                "{}:{}: expected two non-empty fields 'fine,coarse', found {:?}",
                path.display(),
                l.no,
                l.text
            );
        }
        if out.is_empty()
            && fields[0].eq_ignore_ascii_case("fine")
            && fields[1].eq_ignore_ascii_case("coarse")
        {
            continue;
        }
        out.push((fields[0].clone(), fields[1].clone()));
    }
    Ok(out)
}

/// Splits one CSV line (commas; fields optionally double-quoted with `""` escapes).
pub(crate) fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    fields.push(cur.trim().to_string());
    fields
}

/// Sets the coarse level of `ds` from `map` (fine name → coarse name), replacing any coarse
/// labels it had. Fine names match case-insensitively with `_` read as a space. Every fine class
/// of the dataset must be in the map: the error lists those that are not.
pub fn apply_label_map(ds: &mut Dataset, map: &[(String, String)], source: &Path) -> Result<()> {
    let fine = ds.classes(LabelLevel::Fine).to_vec();
    if fine.is_empty() {
        bail!(
            "label map {}: dataset '{}' has no fine labels to map",
            source.display(),
            ds.name
        );
    }
    let mut lookup: HashMap<String, &str> = HashMap::new();
    for (f, c) in map {
        if let Some(prev) = lookup.insert(key(f), c.as_str()) {
            if prev != c.as_str() {
                bail!(
                    "label map {}: '{f}' maps to both '{prev}' and '{c}'",
                    source.display()
                );
            }
        }
    }
    let missing: Vec<&String> = fine
        .iter()
        .filter(|f| !lookup.contains_key(&key(f)))
        .collect();
    if !missing.is_empty() {
        bail!(
            "label map {} lacks {} of the {} fine classes of '{}', e.g. {:?}",
            source.display(),
            missing.len(),
            fine.len(),
            ds.name,
            missing.iter().take(5).collect::<Vec<_>>()
        );
    }
    ds.class_names[LabelLevel::Coarse as usize].clear();
    let coarse_of: Vec<u32> = fine
        .iter()
        .map(|f| {
            let c = lookup[&key(f)].to_string();
            ds.intern_class(LabelLevel::Coarse, &c)
        })
        .collect();
    for s in &mut ds.samples {
        s.labels[LabelLevel::Coarse as usize] =
            s.label(LabelLevel::Fine).map(|f| coarse_of[f as usize]);
    }
    Ok(())
}
