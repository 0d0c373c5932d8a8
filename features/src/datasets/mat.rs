//! A minimal MATLAB MAT v5 (and v7, compressed) reader and writer: the subset the Stanford Dogs
//! and Stanford Cars annotation files use (numeric, char, cell and struct arrays). MAT v7.3
//! files are HDF5 and are not read here.

use anyhow::{bail, ensure, Context, Result};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

/// A MATLAB array. Dimensions are MATLAB's; data is stored column-major.
#[derive(Debug, Clone, PartialEq)]
pub enum MatValue {
    /// Any numeric or logical class, converted to f64 (the imaginary part is dropped).
    Num { dims: Vec<usize>, data: Vec<f64> },
    /// A char array.
    Char { dims: Vec<usize>, data: Vec<char> },
    /// A cell array.
    Cell {
        dims: Vec<usize>,
        items: Vec<MatValue>,
    },
    /// A struct array: `items[i]` holds the values of element `i`, in `fields` order.
    Struct {
        dims: Vec<usize>,
        fields: Vec<String>,
        items: Vec<Vec<MatValue>>,
    },
}

impl MatValue {
    /// A 1×N char array.
    pub fn str(s: &str) -> MatValue {
        let data: Vec<char> = s.chars().collect();
        MatValue::Char {
            dims: vec![1, data.len()],
            data,
        }
    }

    /// An N×1 numeric column.
    pub fn column(v: &[f64]) -> MatValue {
        MatValue::Num {
            dims: vec![v.len(), 1],
            data: v.to_vec(),
        }
    }

    /// The strings this value holds: the rows of a char matrix, or one per cell (cells
    /// holding 1×N char arrays or nested 1×1 cells, as MATLAB writes them).
    pub fn strings(&self) -> Result<Vec<String>> {
        match self {
            MatValue::Char { dims, data } => {
                let rows = dims.first().copied().unwrap_or(0);
                if rows <= 1 {
                    return Ok(vec![data.iter().collect()]);
                }
                let cols = data.len() / rows;
                Ok((0..rows)
                    .map(|r| {
                        let s: String = (0..cols).map(|c| data[r + rows * c]).collect();
                        s.trim_end().to_string()
                    })
                    .collect())
            }
            MatValue::Cell { items, .. } => {
                let mut out = Vec::with_capacity(items.len());
                for it in items {
                    let s = it.strings()?;
                    ensure!(s.len() == 1, "cell holds {} strings, expected 1", s.len());
                    out.extend(s);
                }
                Ok(out)
            }
            MatValue::Num { data, .. } if data.is_empty() => Ok(vec![String::new()]),
            other => bail!("expected text, found {}", other.kind()),
        }
    }

    /// The numbers this value holds (a numeric array, or cells of scalars).
    pub fn numbers(&self) -> Result<Vec<f64>> {
        match self {
            MatValue::Num { data, .. } => Ok(data.clone()),
            MatValue::Cell { items, .. } => {
                let mut out = Vec::new();
                for it in items {
                    out.extend(it.numbers()?);
                }
                Ok(out)
            }
            other => bail!("expected numbers, found {}", other.kind()),
        }
    }

    /// The values of field `name` across the elements of a struct array.
    pub fn field(&self, name: &str) -> Result<Vec<&MatValue>> {
        match self {
            MatValue::Struct { fields, items, .. } => {
                let i = fields.iter().position(|f| f == name).with_context(|| {
                    format!("struct has no field '{name}' (fields: {fields:?})")
                })?;
                Ok(items.iter().map(|e| &e[i]).collect())
            }
            other => bail!("expected a struct, found {}", other.kind()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            MatValue::Num { .. } => "a numeric array",
            MatValue::Char { .. } => "a char array",
            MatValue::Cell { .. } => "a cell array",
            MatValue::Struct { .. } => "a struct array",
        }
    }
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

const MX_CELL: u8 = 1;
const MX_STRUCT: u8 = 2;
const MX_CHAR: u8 = 4;

/// Reads every named variable of a MAT v5 file.
pub fn read_mat(path: &Path) -> Result<BTreeMap<String, MatValue>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_mat(&bytes).with_context(|| format!("{}: not a readable MAT v5 file", path.display()))
}

/// Parses the bytes of a MAT v5 file.
pub fn parse_mat(bytes: &[u8]) -> Result<BTreeMap<String, MatValue>> {
    ensure!(bytes.len() >= 128, "file shorter than the 128-byte header");
    if bytes.starts_with(b"\x89HDF") || bytes[..116].windows(4).any(|w| w == b"7.3 ") {
        bail!("MAT v7.3 (HDF5) files are not supported; re-save with -v7");
    }
    let be = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        _ => bail!("bad endian indicator in the header"),
    };
    let mut r = Reader {
        b: bytes,
        pos: 128,
        be,
    };
    let mut vars = BTreeMap::new();
    while r.pos + 8 <= r.b.len() {
        let (ty, data) = r.element()?;
        let (name, value) = match ty {
            MI_COMPRESSED => {
                let mut raw = Vec::new();
                flate2::read::ZlibDecoder::new(data)
                    .read_to_end(&mut raw)
                    .context("inflating a compressed element")?;
                let mut inner = Reader {
                    b: &raw,
                    pos: 0,
                    be,
                };
                let (ty, data) = inner.element()?;
                ensure!(
                    ty == MI_MATRIX,
                    "compressed element of type {ty}, expected miMATRIX"
                );
                matrix(data, be)?
            }
            MI_MATRIX => matrix(data, be)?,
            _ => continue, // subsystem data and the like
        };
        if let Some(v) = value {
            vars.insert(name, v);
        }
    }
    Ok(vars)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    be: bool,
}

impl<'a> Reader<'a> {
    fn u32_at(&self, at: usize) -> Result<u32> {
        let s = self.b.get(at..at + 4).context("truncated element tag")?;
        let a = [s[0], s[1], s[2], s[3]];
        Ok(if self.be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }

    /// Next data element: (type, payload). Handles the small-element format and padding.
    fn element(&mut self) -> Result<(u32, &'a [u8])> {
        let first = self.u32_at(self.pos)?;
        // small data element: size in the high half, type in the low half (either endianness)
        let (small_n, small_t) = (first >> 16, first & 0xffff);
        if small_n != 0 {
            let start = self.pos + 4;
            let data = self
                .b
                .get(start..start + small_n as usize)
                .context("truncated small element")?;
            self.pos += 8;
            return Ok((small_t, data));
        }
        let n = self.u32_at(self.pos + 4)? as usize;
        let start = self.pos + 8;
        let data = self.b.get(start..start + n).with_context(|| {
            format!("element at byte {} claims {n} bytes past the end", self.pos)
        })?;
        self.pos = if first == MI_COMPRESSED {
            start + n
        } else {
            start + n.div_ceil(8) * 8
        };
        Ok((first, data))
    }
}

fn numbers(ty: u32, d: &[u8], be: bool) -> Result<Vec<f64>> {
    macro_rules! conv {
        ($t:ty, $n:expr) => {
            d.chunks_exact($n)
                .map(|c| {
                    let a: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                    (if be {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    }) as f64
                })
                .collect()
        };
    }
    Ok(match ty {
        MI_INT8 => d.iter().map(|&x| x as i8 as f64).collect(),
        MI_UINT8 | MI_UTF8 => d.iter().map(|&x| x as f64).collect(),
        MI_INT16 => conv!(i16, 2),
        MI_UINT16 | MI_UTF16 => conv!(u16, 2),
        MI_INT32 => conv!(i32, 4),
        MI_UINT32 | MI_UTF32 => conv!(u32, 4),
        MI_SINGLE => conv!(f32, 4),
        MI_DOUBLE => conv!(f64, 8),
        MI_INT64 => conv!(i64, 8),
        MI_UINT64 => conv!(u64, 8),
        other => bail!("unsupported numeric data type {other}"),
    })
}

/// Parses a miMATRIX payload into (name, value); `None` value for an empty placeholder.
fn matrix(data: &[u8], be: bool) -> Result<(String, Option<MatValue>)> {
    if data.is_empty() {
        return Ok((String::new(), None));
    }
    let mut r = Reader {
        b: data,
        pos: 0,
        be,
    };
    let (_, flags) = r.element()?;
    let flags = numbers(MI_UINT32, flags.get(..4).context("short array flags")?, be)?[0] as u32;
    let class = (flags & 0xff) as u8;
    let (ty, d) = r.element()?;
    let dims: Vec<usize> = numbers(ty, d, be)?
        .into_iter()
        .map(|x| x as usize)
        .collect();
    let count: usize = dims.iter().product();
    let (_, name) = r.element()?;
    let name = String::from_utf8_lossy(name).into_owned();
    let value = match class {
        MX_CELL => {
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let (ty, d) = r.element()?;
                ensure!(ty == MI_MATRIX, "cell item of type {ty}");
                items.push(matrix(d, be)?.1.unwrap_or(MatValue::Num {
                    dims: vec![0, 0],
                    data: vec![],
                }));
            }
            MatValue::Cell { dims, items }
        }
        MX_STRUCT => {
            let (_, len) = r.element()?;
            let len = numbers(
                MI_INT32,
                len.get(..4).context("short field-name length")?,
                be,
            )?[0] as usize;
            ensure!(len > 0, "struct field-name length 0");
            let (_, names) = r.element()?;
            let fields: Vec<String> = names
                .chunks(len)
                .map(|c| {
                    String::from_utf8_lossy(c)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .collect();
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let mut e = Vec::with_capacity(fields.len());
                for _ in &fields {
                    let (ty, d) = r.element()?;
                    ensure!(ty == MI_MATRIX, "struct field of type {ty}");
                    e.push(matrix(d, be)?.1.unwrap_or(MatValue::Num {
                        dims: vec![0, 0],
                        data: vec![],
                    }));
                }
                items.push(e);
            }
            MatValue::Struct {
                dims,
                fields,
                items,
            }
        }
        MX_CHAR => {
            let (ty, d) = r.element()?;
            let data: Vec<char> = if ty == MI_UTF8 {
                String::from_utf8_lossy(d).chars().collect()
            } else {
                numbers(ty, d, be)?
                    .into_iter()
                    .map(|c| char::from_u32(c as u32).unwrap_or('\u{fffd}'))
                    .collect()
            };
            MatValue::Char { dims, data }
        }
        6..=15 => {
            let (ty, d) = r.element()?;
            MatValue::Num {
                dims,
                data: numbers(ty, d, be)?,
            }
        }
        3 => bail!("MATLAB objects (variable '{name}') are not supported"),
        5 => bail!("sparse arrays (variable '{name}') are not supported"),
        other => bail!("unsupported array class {other} (variable '{name}')"),
    };
    Ok((name, Some(value)))
}

/// Writes `vars` as a little-endian MAT v5 file (zlib-compressed elements when `compress`).
/// Meant for test fixtures; numbers are written as doubles, text as UTF-16.
pub fn write_mat(path: &Path, vars: &[(&str, MatValue)], compress: bool) -> Result<()> {
    let mut out = Vec::new();
    let mut header = b"MATLAB 5.0 MAT-file, written by gapprobe".to_vec();
    header.resize(116, b' ');
    out.extend(header);
    out.extend([0u8; 8]);
    out.extend(0x0100u16.to_le_bytes());
    out.extend(b"IM");
    for (name, v) in vars {
        let el = matrix_element(name, v);
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(&el)?;
            let z = z.finish()?;
            out.extend(MI_COMPRESSED.to_le_bytes());
            out.extend((z.len() as u32).to_le_bytes());
            out.extend(z);
        } else {
            out.extend(el);
        }
    }
    std::fs::write(path, out).with_context(|| format!("writing {}", path.display()))
}

fn push_el(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend(ty.to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out.extend(data);
    out.resize(out.len() + (8 - data.len() % 8) % 8, 0);
}

fn matrix_element(name: &str, v: &MatValue) -> Vec<u8> {
    let (class, dims) = match v {
        MatValue::Num { dims, .. } => (6u32, dims),
        MatValue::Char { dims, .. } => (MX_CHAR as u32, dims),
        MatValue::Cell { dims, .. } => (MX_CELL as u32, dims),
        MatValue::Struct { dims, .. } => (MX_STRUCT as u32, dims),
    };
    let mut body = Vec::new();
    let mut flags = class.to_le_bytes().to_vec();
    flags.extend([0u8; 4]);
    push_el(&mut body, MI_UINT32, &flags);
    let d: Vec<u8> = dims
        .iter()
        .flat_map(|&x| (x as i32).to_le_bytes())
        .collect();
    push_el(&mut body, MI_INT32, &d);
    push_el(&mut body, MI_INT8, name.as_bytes());
    match v {
        MatValue::Num { data, .. } => {
            let b: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            push_el(&mut body, MI_DOUBLE, &b);
        }
        MatValue::Char { data, .. } => {
            let b: Vec<u8> = data
                .iter()
                .flat_map(|&c| (c as u32 as u16).to_le_bytes())
                .collect();
            push_el(&mut body, MI_UINT16, &b);
        }
        MatValue::Cell { items, .. } => {
            for it in items {
                body.extend(matrix_element("", it));
            }
        }
        MatValue::Struct { fields, items, .. } => {
            let len = fields.iter().map(|f| f.len() + 1).max().unwrap_or(1).max(8);
            push_el(&mut body, MI_INT32, &(len as i32).to_le_bytes());
            let mut names = Vec::new();
            for f in fields {
                let mut b = f.as_bytes().to_vec();
                b.resize(len, 0);
                names.extend(b);
            }
            push_el(&mut body, MI_INT8, &names);
            for e in items {
                for x in e {
                    body.extend(matrix_element("", x));
                }
            }
        }
    }
    let mut out = Vec::new();
    push_el(&mut out, MI_MATRIX, &body);
    out
}
