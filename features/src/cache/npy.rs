//! A minimal `.npy` reader (little-endian, C order; float32/float16/float64 and integer arrays),
//! enough for `gapprobe cache import` without another dependency.

use anyhow::{bail, Context, Result};
use ndarray::{ArrayD, IxDyn};
use std::path::Path;

/// An array read from a `.npy` file.
pub enum NpyArray {
    Float(ArrayD<f32>),
    Int(ArrayD<i64>),
}

/// Reads `path`, widening floats to f32 and integers to i64.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let bad = |why: &str| {
        anyhow::anyhow!(
            "{} is not a supported .npy file ({why}); save it with numpy.save as a C-order float32/float16 or integer array",
            path.display()
        )
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("no NUMPY magic"));
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown version")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + hlen)
            .ok_or_else(|| bad("short header"))?,
    )
    .map_err(|_| bad("header is not text"))?;
    let field = |name: &str| -> Result<&str> {
        let at = header
            .find(&format!("'{name}'"))
            .ok_or_else(|| bad(&format!("no '{name}' in header")))?;
        Ok(header[at + name.len() + 2..]
            .trim_start()
            .trim_start_matches(':')
            .trim_start())
    };
    let descr = field("descr")?;
    let descr = descr[1..].split('\'').next().unwrap_or("");
    if field("fortran_order")?.starts_with("True") {
        return Err(bad("Fortran order"));
    }
    let shape_s = field("shape")?;
    let shape_s = &shape_s[1..shape_s.find(')').ok_or_else(|| bad("bad shape"))?];
    let shape: Vec<usize> = shape_s
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<Result<_>>()?;
    let data = &bytes[start + hlen..];
    let n: usize = shape.iter().product();
    let width = descr[2..].parse::<usize>().unwrap_or(0);
    if data.len() < n * width {
        bail!(
            "{} is truncated: {} bytes of data for shape {shape:?}",
            path.display(),
            data.len()
        );
    }
    let chunks = data[..n * width].chunks_exact(width.max(1));
    let le = descr.starts_with('<') || descr.starts_with('|');
    if !le {
        return Err(bad(&format!("dtype {descr} is not little-endian")));
    }
    let arr = match &descr[1..] {
        "f4" => NpyArray::Float(to(
            shape,
            chunks.map(|c| f32::from_le_bytes(c.try_into().unwrap())),
        )?),
        "f2" => NpyArray::Float(to(
            shape,
            chunks.map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32()),
        )?),
        "f8" => NpyArray::Float(to(
            shape,
            chunks.map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32),
        )?),
        "i4" => NpyArray::Int(to(
            shape,
            chunks.map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64),
        )?),
        "i8" => NpyArray::Int(to(
            shape,
            chunks.map(|c| i64::from_le_bytes(c.try_into().unwrap())),
        )?),
        "u1" | "i1" => NpyArray::Int(to(shape, chunks.map(|c| c[0] as i64))?),
        other => return Err(bad(&format!("dtype {other} is not supported"))),
    };
    Ok(arr)
}

fn to<T>(shape: Vec<usize>, it: impl Iterator<Item = T>) -> Result<ArrayD<T>> {
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), it.collect())?)
}

/// Writes a float32 `.npy` file (tests and interchange).
pub fn write_npy_f32(path: &Path, a: &ArrayD<f32>) -> Result<()> {
    let shape = a
        .shape()
        .iter()
        .map(|d| format!("{d},"))
        .collect::<String>();
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({shape}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    for v in a.as_standard_layout().iter() {
        out.extend(v.to_le_bytes());
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_f32() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let a = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![1.0f32, 2., 3., 4., 5., -6.5]).unwrap();
        write_npy_f32(&p, &a).unwrap();
        match read_npy(&p).unwrap() {
            NpyArray::Float(b) => assert_eq!(a, b),
            NpyArray::Int(_) => panic!("float expected"),
        }
    }
}
