//! One string names a dataset in the CLI, the experiment TOML and the cache:
//! `kind:path[?key=value&...]`, e.g. `manifest:/data/birds.csv`, `demo:reports/demo/data`.

use super::{read_manifest, Dataset};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A parsed dataset spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    /// Source kind: `manifest`, `demo`, ...
    pub kind: String,
    /// File or folder the source lives in.
    pub path: PathBuf,
    /// Source-specific options after `?`.
    pub options: BTreeMap<String, String>,
    /// Name used in reports and cache keys (`name=` option, else the kind).
    pub name: String,
}

impl FromStr for DatasetSpec {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, rest) = s.split_once(':').with_context(|| {
            format!("dataset spec '{s}' must look like kind:path, e.g. manifest:/data/birds.csv")
        })?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut options = BTreeMap::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("dataset spec '{s}': option '{kv}' must be key=value"))?;
            options.insert(k.to_string(), v.to_string());
        }
        if path.is_empty() {
            bail!("dataset spec '{s}' has no path after '{kind}:'");
        }
        let name = options
            .get("name")
            .cloned()
            .unwrap_or_else(|| kind.to_string());
        Ok(DatasetSpec {
            kind: kind.to_string(),
            path: PathBuf::from(path),
            options,
            name,
        })
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.path.display())?;
        let mut sep = '?';
        for (k, v) in &self.options {
            write!(f, "{sep}{k}={v}")?;
            sep = '&';
        }
        Ok(())
    }
}

impl DatasetSpec {
    /// Loads the dataset this spec names.
    pub fn load(&self) -> Result<Dataset> {
        match self.kind.as_str() {
            "manifest" => read_manifest(&self.path, &self.name),
            "demo" => read_manifest(&self.path.join(crate::synth::MANIFEST_NAME), &self.name),
            other => bail!(
                "unknown dataset kind '{other}' in '{self}': supported kinds are manifest, demo"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kind_path_and_options() {
        let s: DatasetSpec = "manifest:/data/b.csv?name=birds&x=1".parse().unwrap();
        assert_eq!(s.kind, "manifest");
        assert_eq!(s.path, PathBuf::from("/data/b.csv"));
        assert_eq!(s.name, "birds");
        assert_eq!(s.options.get("x").map(String::as_str), Some("1"));
        assert_eq!(s.to_string(), "manifest:/data/b.csv?name=birds&x=1");
        assert!("nocolon".parse::<DatasetSpec>().is_err());
        assert!("manifest:".parse::<DatasetSpec>().is_err());
    }
}
