//! Low-level HDF5 helpers shared by the cache modules: string attributes and datasets, times,
//! file-name slugs, and the names of the on-disk fields (see docs/cache-format.md).

use anyhow::Result;
use hdf5::types::VarLenUnicode;

/// Layout version written to the `format_version` attribute.
pub const FORMAT_VERSION: u32 = 2;
/// Target size of one row chunk of `features` (bytes): large chunks make whole-split reads fast.
pub const CHUNK_BYTES: usize = 4 << 20;

pub(crate) fn slug(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_matches('_');
    let n = s.chars().count();
    s.chars().skip(n.saturating_sub(60)).collect()
}

pub(crate) fn vlu(s: &str) -> Result<VarLenUnicode> {
    s.parse::<VarLenUnicode>()
        .map_err(|e| anyhow::anyhow!("string {s:?} cannot be stored in HDF5: {e}"))
}

pub(crate) fn write_str_attr(loc: &hdf5::Location, name: &str, value: &str) -> Result<()> {
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&vlu(value)?)?;
    Ok(())
}

pub(crate) fn write_u64_attr(loc: &hdf5::Location, name: &str, value: u64) -> Result<()> {
    loc.new_attr::<u64>().create(name)?.write_scalar(&value)?;
    Ok(())
}

pub(crate) fn read_str_attr(loc: &hdf5::Location, name: &str) -> Result<String> {
    Ok(loc.attr(name)?.read_scalar::<VarLenUnicode>()?.to_string())
}

pub(crate) fn read_u64_attr(loc: &hdf5::Location, name: &str) -> Option<u64> {
    loc.attr(name).ok()?.read_scalar::<u64>().ok()
}

pub(crate) fn write_strings(group: &hdf5::Group, name: &str, values: &[String]) -> Result<()> {
    let v: Vec<VarLenUnicode> = values.iter().map(|s| vlu(s)).collect::<Result<_>>()?;
    group.new_dataset_builder().with_data(&v[..]).create(name)?;
    Ok(())
}

pub(crate) fn read_strings(group: &hdf5::Group, name: &str) -> Result<Vec<String>> {
    Ok(group
        .dataset(name)?
        .read_raw::<VarLenUnicode>()?
        .into_iter()
        .map(|s| s.to_string())
        .collect())
}

/// Current UTC time as ISO 8601 (no external clock crate needed).
pub(crate) fn now_iso8601() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    iso8601(secs)
}

/// Seconds since the epoch → ISO 8601 UTC.
pub fn iso8601(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
