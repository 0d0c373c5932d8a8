//! `gapprobe cache ls|info`.

use anyhow::{bail, Result};
use gapprobe_features::cache::{CacheEntry, FeatureCache};
use std::path::Path;

/// Prints one line per finished entry.
pub fn ls(cache: &FeatureCache) -> Result<()> {
    let entries = cache.list()?;
    if entries.is_empty() {
        println!("no entries under {}", cache.root.display());
    }
    for e in entries {
        let p = &e.provenance;
        println!(
            "{}  {:<10} {:<32} {:<12} {}",
            &e.key[..16],
            p.dataset,
            p.feature_point,
            e.created,
            e.path.display()
        );
    }
    Ok(())
}

/// Finds an entry by file path or key prefix.
pub fn find(cache: &FeatureCache, what: &str) -> Result<CacheEntry> {
    if Path::new(what).is_file() {
        return CacheEntry::open(Path::new(what));
    }
    let matches: Vec<CacheEntry> = cache
        .list()?
        .into_iter()
        .filter(|e| e.key.starts_with(what))
        .collect();
    match matches.len() {
        1 => Ok(matches.into_iter().next().expect("one")),
        0 => bail!(
            "no cache entry under {} has a key starting with '{what}' (see `gapprobe cache ls`)",
            cache.root.display()
        ),
        n => bail!("'{what}' matches {n} entries; give more of the key"),
    }
}

/// Prints an entry's provenance and shapes.
pub fn info(cache: &FeatureCache, what: &str) -> Result<()> {
    let e = find(cache, what)?;
    println!(
        "path: {}\nkey: {}\ncreated: {}",
        e.path.display(),
        e.key,
        e.created
    );
    let prov = serde_json::to_value(&e.provenance)?;
    for (k, v) in prov.as_object().expect("struct") {
        println!(
            "{k}: {}",
            v.as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string())
        );
    }
    let classes = e.classes()?;
    for (level, names) in ["superordinate", "coarse", "fine"].iter().zip(&classes) {
        if !names.is_empty() {
            println!("classes/{level}: {}", names.len());
        }
    }
    for split in e.splits()? {
        let d = e.read_split(split)?;
        println!("{split}/features: {:?} float32", d.features.shape());
    }
    Ok(())
}
