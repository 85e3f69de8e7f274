//! GGUF v2/v3 reader and writer (ggml `docs/gguf.md`, as llama.cpp and the
//! `gguf` Python package write it).
//!
//! Layout, all little-endian:
//!
//! ```text
//! "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//! kv_count   × { string key | u32 value type | value }
//! tensor_count × { string name | u32 n_dims | n_dims × u64 ne | u32 ggml type | u64 offset }
//! padding to `general.alignment` (default 32)
//! data section: each tensor at `offset` (a multiple of the alignment)
//! ```
//!
//! A string is `u64 len | utf-8 bytes`; an array is `u32 elem type | u64 count
//! | elems` and may nest. `ne[0]` is the innermost (contiguous) dimension.
//!
//! The reader treats files as untrusted: every count and length is checked
//! against the bytes that remain before anything is allocated, nesting is
//! limited, and all tensor ranges are checked (in the file, aligned, not
//! overlapping). Errors are one line naming the key, tensor or byte offset.

mod parse;
mod reader;
mod value;
mod writer;

pub use reader::GgufFile;
pub use value::{ArrayValue, Value, ValueType};
pub use writer::{GgufWriter, TensorDataFn};

use crate::DType;

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The metadata key that sets the data alignment.
pub const ALIGNMENT_KEY: &str = "general.alignment";

/// Deepest array nesting accepted (an array of arrays is depth 2).
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Most dimensions a tensor may have (GGML_MAX_DIMS).
pub const MAX_DIMS: usize = 4;

/// One tensor's entry in the tensor-info table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is `ne[0]`, the innermost dimension.
    pub dims: Vec<u64>,
    pub dtype: DType,
    /// Byte offset relative to the data section start.
    pub offset: u64,
    /// Bytes of tensor data: `row_bytes(ne[0]) * product(ne[1..])`.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of dims; saturates rather than wrapping
    /// for hand-built infos — the reader has already rejected overflow).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// Row-major shape, outermost first (the dims reversed).
    pub fn shape(&self) -> Vec<usize> {
        self.dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect()
    }
}

/// Round `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    x.checked_add(mask).map(|v| v & !mask)
}

/// Bytes of a tensor with GGUF-order `dims` of `dtype`; checks dims count,
/// nonzero dims, block divisibility and overflow. Errors are plain messages
/// for the caller to prefix with the tensor name.
pub(crate) fn tensor_n_bytes(dims: &[u64], dtype: DType) -> std::result::Result<u64, String> {
    if dims.is_empty() || dims.len() > MAX_DIMS {
        return Err(format!("n_dims {} is not in 1..={MAX_DIMS}", dims.len()));
    }
    let mut n_elem: u64 = 1;
    for (i, &d) in dims.iter().enumerate() {
        if d == 0 {
            return Err(format!("ne[{i}] is 0"));
        }
        n_elem = n_elem
            .checked_mul(d)
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| format!("element count of dims {dims:?} overflows"))?;
    }
    let ne0 = usize::try_from(dims[0]).map_err(|_| format!("ne[0] {} is too large", dims[0]))?;
    let row = dtype.row_bytes("gguf", ne0).map_err(|_| {
        format!(
            "ne[0] = {ne0} is not a multiple of the {dtype} block size {}",
            dtype.block_size()
        )
    })? as u64;
    dims[1..]
        .iter()
        .try_fold(row, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("byte size of dims {dims:?} ({dtype}) overflows"))
}

/// GGML's name for a tensor type id, for error messages about types kiln
/// does not support (ids of removed types read as `None`).
pub fn ggml_type_name(id: u32) -> Option<&'static str> {
    const NAMES: [&str; 40] = [
        "F32", "F16", "Q4_0", "Q4_1", "", "", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
        "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
        "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "", "", "", "TQ1_0",
        "TQ2_0", "", "", "", "MXFP4",
    ];
    NAMES
        .get(usize::try_from(id).ok()?)
        .copied()
        .filter(|s| !s.is_empty())
}
