//! Element and block formats. Ids follow GGML's `ggml_type` numbering so a
//! GGUF tensor type maps one to one.

use crate::{Error, Result};
use std::fmt;

/// A tensor element or block format.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    /// Activation format: Q8_0 plus the block sum `s = d * sum(qs)` (f16).
    Q8_1,
}

impl DType {
    /// Every dtype, in GGML id order.
    pub const ALL: [DType; 7] = [
        DType::F32,
        DType::F16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q8_1,
        DType::BF16,
    ];

    /// GGML `ggml_type` id.
    pub fn ggml_id(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q8_0 => 8,
            DType::Q8_1 => 9,
            DType::BF16 => 30,
        }
    }

    /// Map a GGML type id to a dtype; unknown or unsupported ids are an error.
    pub fn from_ggml_id(id: u32) -> Result<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.ggml_id() == id)
            .ok_or(Error::UnknownGgmlType(id))
    }

    /// Elements per block (1 for plain floats).
    pub fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 | DType::Q8_1 => 32,
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q8_0 => 34,
            DType::Q8_1 => 36,
        }
    }

    /// True for block-quantized formats.
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// Bytes of a row of `n` elements; `n` must be a multiple of the block size.
    pub fn row_bytes(self, op: &'static str, n: usize) -> Result<usize> {
        let bs = self.block_size();
        if !n.is_multiple_of(bs) {
            return Err(Error::BadRowLength {
                op,
                dtype: self,
                len: n,
                block: bs,
            });
        }
        (n / bs)
            .checked_mul(self.type_size())
            .ok_or_else(|| Error::invalid(op, format!("row of {n} {self} elements overflows")))
    }

    /// Bits per weight (for `kiln info`).
    pub fn bits_per_weight(self) -> f64 {
        (self.type_size() * 8) as f64 / self.block_size() as f64
    }

    /// The GGML name, e.g. `Q4_1`.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q8_0 => "Q8_0",
            DType::Q8_1 => "Q8_1",
        }
    }

    /// Parse a GGML name (case-insensitive).
    pub fn from_name(s: &str) -> Option<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
