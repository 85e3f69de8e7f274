//! [`SafetensorsFile`]: a bounded reader for the safetensors format
//! (huggingface/safetensors `README.md`, "Format"), with zero-copy access to
//! tensor data in a read-only memory map, like [`crate::gguf::GgufFile`].
//!
//! Layout:
//!
//! ```text
//! u64 (little-endian) N | N bytes of UTF-8 JSON header | data section
//! ```
//!
//! The header is one JSON object. Each key except `__metadata__` names a
//! tensor: `{"dtype": "F16", "shape": [2, 3], "data_offsets": [begin, end]}`
//! with offsets relative to the start of the data section, `end - begin ==
//! numel * element size`. `__metadata__`, optional, maps strings to strings.
//! Values are little-endian and row-major.
//!
//! The file is untrusted: the header length is capped ([`MAX_HEADER_LEN`])
//! and checked against the file length before anything is parsed, JSON
//! nesting is limited by serde_json's recursion limit, every dtype must be a
//! known one, shapes may not overflow, byte counts must match the shape,
//! and every tensor's range must lie inside the data section without
//! overlapping another. Gaps between tensors are accepted (the spec forbids
//! them, but they are harmless to a reader). Errors are one line naming the
//! tensor and the bad value.

use crate::{Error, Result};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

/// Largest accepted JSON header (the reference implementation's limit).
pub const MAX_HEADER_LEN: u64 = 100 << 20;

/// Element types of the safetensors format.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StDType {
    BOOL,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl StDType {
    const ALL: [StDType; 15] = [
        StDType::BOOL,
        StDType::U8,
        StDType::I8,
        StDType::F8_E5M2,
        StDType::F8_E4M3,
        StDType::I16,
        StDType::U16,
        StDType::F16,
        StDType::BF16,
        StDType::I32,
        StDType::U32,
        StDType::F32,
        StDType::F64,
        StDType::I64,
        StDType::U64,
    ];

    /// The header's spelling, e.g. `"BF16"`.
    pub fn name(self) -> &'static str {
        match self {
            StDType::BOOL => "BOOL",
            StDType::U8 => "U8",
            StDType::I8 => "I8",
            StDType::F8_E5M2 => "F8_E5M2",
            StDType::F8_E4M3 => "F8_E4M3",
            StDType::I16 => "I16",
            StDType::U16 => "U16",
            StDType::F16 => "F16",
            StDType::BF16 => "BF16",
            StDType::I32 => "I32",
            StDType::U32 => "U32",
            StDType::F32 => "F32",
            StDType::F64 => "F64",
            StDType::I64 => "I64",
            StDType::U64 => "U64",
        }
    }

    /// Parse the header's spelling (exact, as the format defines it).
    pub fn from_name(s: &str) -> Option<StDType> {
        StDType::ALL.iter().copied().find(|d| d.name() == s)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            StDType::BOOL | StDType::U8 | StDType::I8 | StDType::F8_E5M2 | StDType::F8_E4M3 => 1,
            StDType::I16 | StDType::U16 | StDType::F16 | StDType::BF16 => 2,
            StDType::I32 | StDType::U32 | StDType::F32 => 4,
            StDType::F64 | StDType::I64 | StDType::U64 => 8,
        }
    }

    /// The kiln dtype of a float element type kiln computes with
    /// (F32, F16, BF16); `None` for the others.
    pub fn to_float_dtype(self) -> Option<crate::DType> {
        match self {
            StDType::F32 => Some(crate::DType::F32),
            StDType::F16 => Some(crate::DType::F16),
            StDType::BF16 => Some(crate::DType::BF16),
            _ => None,
        }
    }
}

impl std::fmt::Display for StDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StTensorInfo {
    pub name: String,
    pub dtype: StDType,
    /// Row-major, outermost first.
    pub shape: Vec<usize>,
    /// Byte range in the whole file (header included), checked in bounds.
    pub range: Range<usize>,
}

impl StTensorInfo {
    /// Number of elements (the shape was checked not to overflow).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

enum Storage {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

/// A parsed safetensors file: header validated up front, data left in place.
pub struct SafetensorsFile {
    storage: Storage,
    tensors: Vec<StTensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("n_tensors", &self.tensors.len())
            .field("len", &self.bytes().len())
            .finish()
    }
}

fn err(msg: impl Into<String>) -> Error {
    Error::Safetensors(msg.into())
}

impl SafetensorsFile {
    /// Memory-map and parse the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsFile> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            context: format!("opening safetensors file {}", path.display()),
            source,
        })?;
        // SAFETY: the map is read-only and lives as long as the
        // `SafetensorsFile`. If another process truncates or rewrites the file
        // while it is mapped, reads may see changed bytes or fault: the
        // accepted cost of zero-copy weights (as for GGUF). All bounds are
        // checked against the length at map time.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| Error::Io {
            context: format!("memory-mapping safetensors file {}", path.display()),
            source,
        })?;
        let (tensors, metadata) = parse_header(&map).map_err(|e| match e {
            Error::Safetensors(msg) => err(format!("{}: {msg}", path.display())),
            other => other,
        })?;
        Ok(SafetensorsFile {
            storage: Storage::Mmap(map),
            tensors,
            metadata,
        })
    }

    /// Parse a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<SafetensorsFile> {
        let (tensors, metadata) = parse_header(&bytes)?;
        Ok(SafetensorsFile {
            storage: Storage::Owned(bytes),
            tensors,
            metadata,
        })
    }

    /// The whole file (tensor ranges index into it).
    pub fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Every tensor, sorted by name.
    pub fn tensors(&self) -> &[StTensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&StTensorInfo> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.tensors.get(i))
    }

    /// The bytes of a tensor of this file (its range was checked at parse).
    pub fn data(&self, info: &StTensorInfo) -> Result<&[u8]> {
        self.bytes().get(info.range.clone()).ok_or_else(|| {
            err(format!(
                "tensor {:?}: range {:?} is not in this file",
                info.name, info.range
            ))
        })
    }

    /// The `__metadata__` string map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
}

type Parsed = (Vec<StTensorInfo>, BTreeMap<String, String>);

/// Parse and validate the header of `bytes` (a whole file).
fn parse_header(bytes: &[u8]) -> Result<Parsed> {
    let Some((len_bytes, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(err(format!(
            "file of {} bytes is too short for the 8-byte header length",
            bytes.len()
        )));
    };
    let n = u64::from_le_bytes(*len_bytes);
    if n > MAX_HEADER_LEN {
        return Err(err(format!(
            "header length {n} exceeds the limit of {MAX_HEADER_LEN} bytes"
        )));
    }
    if n > rest.len() as u64 {
        return Err(err(format!(
            "header length {n} runs past the end of the file ({} bytes after the length)",
            rest.len()
        )));
    }
    let (header, data) = rest.split_at(n as usize);
    let data_start = 8 + n as usize;
    let json: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| err(format!("header is not valid JSON: {e}")))?;
    let serde_json::Value::Object(map) = json else {
        return Err(err("header is not a JSON object"));
    };
    let mut tensors = Vec::with_capacity(map.len());
    let mut metadata = BTreeMap::new();
    for (name, v) in map {
        if name == "__metadata__" {
            metadata = parse_metadata(&v)?;
            continue;
        }
        tensors.push(parse_tensor(name, &v, data.len(), data_start)?);
    }
    // Ranges must not overlap (empty tensors overlap nothing).
    let mut by_start: Vec<&StTensorInfo> = tensors.iter().filter(|t| !t.range.is_empty()).collect();
    by_start.sort_by_key(|t| t.range.start);
    for w in by_start.windows(2) {
        if let [a, b] = w {
            if b.range.start < a.range.end {
                return Err(err(format!(
                    "tensors {:?} and {:?} overlap (data offsets {}..{} and {}..{})",
                    a.name,
                    b.name,
                    a.range.start - data_start,
                    a.range.end - data_start,
                    b.range.start - data_start,
                    b.range.end - data_start
                )));
            }
        }
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((tensors, metadata))
}

fn parse_metadata(v: &serde_json::Value) -> Result<BTreeMap<String, String>> {
    let serde_json::Value::Object(m) = v else {
        return Err(err("__metadata__ is not a JSON object"));
    };
    m.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(err(format!(
                "__metadata__ value of {k:?} is not a string: {other}"
            ))),
        })
        .collect()
}

fn parse_tensor(
    name: String,
    v: &serde_json::Value,
    data_len: usize,
    data_start: usize,
) -> Result<StTensorInfo> {
    let bad = |what: &str| err(format!("tensor {name:?}: {what}"));
    let serde_json::Value::Object(o) = v else {
        return Err(bad("entry is not a JSON object"));
    };
    let dtype_s = o
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| bad("missing or non-string \"dtype\""))?;
    let dtype =
        StDType::from_name(dtype_s).ok_or_else(|| bad(&format!("unknown dtype {dtype_s:?}")))?;
    let shape_v = o
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("missing or non-array \"shape\""))?;
    let shape = shape_v
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| bad(&format!("shape entry {d} is not a non-negative integer")))
        })
        .collect::<Result<Vec<usize>>>()?;
    let offs = o
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("missing or non-array \"data_offsets\""))?;
    let [begin, end] = offs.as_slice() else {
        return Err(bad(&format!(
            "\"data_offsets\" has {} entries, expected 2",
            offs.len()
        )));
    };
    let off = |x: &serde_json::Value| {
        x.as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .ok_or_else(|| bad(&format!("data offset {x} is not a non-negative integer")))
    };
    let (begin, end) = (off(begin)?, off(end)?);
    if begin > end || end > data_len {
        return Err(bad(&format!(
            "data offsets {begin}..{end} are not inside the data section of {data_len} bytes"
        )));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(&format!("shape {shape:?} overflows")))?;
    if bytes != end - begin {
        return Err(bad(&format!(
            "{} bytes of data for shape {shape:?} of {dtype} (needs {bytes})",
            end - begin
        )));
    }
    Ok(StTensorInfo {
        name,
        dtype,
        shape,
        range: data_start + begin..data_start + end,
    })
}

/// Serialize tensors `(name, dtype, shape, bytes)` as a safetensors file
/// (in the given order, no metadata). For tests and fixture tools: a wrong
/// byte count for a shape is an error.
pub fn write_safetensors(tensors: &[(&str, StDType, &[usize], &[u8])]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    let mut off = 0usize;
    for &(name, dtype, shape, data) in tensors {
        let need = shape
            .iter()
            .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
            .ok_or_else(|| err(format!("tensor {name:?}: shape {shape:?} overflows")))?;
        if need != data.len() {
            return Err(err(format!(
                "tensor {name:?}: {} bytes for shape {shape:?} of {dtype} (needs {need})",
                data.len()
            )));
        }
        header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": dtype.name(),
                "shape": shape,
                "data_offsets": [off, off + need],
            }),
        );
        off += need;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + json.len() + off);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for &(_, _, _, data) in tensors {
        out.extend_from_slice(data);
    }
    Ok(out)
}
