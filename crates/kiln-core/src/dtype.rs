//! Element and block formats. Ids follow GGML's `ggml_type` numbering so a
//! GGUF tensor type maps one to one.

use crate::quant::mlx_block::MlxFormat;
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
    Q5_0,
    Q5_1,
    /// Activation format: Q8_0 plus the block sum `s = d * sum(qs)` (f16).
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    /// Activation format of the K-quant dot products: f32 scale, 256 i8
    /// codes and 16 partial sums.
    Q8_K,
    IQ4_NL,
    IQ4_XS,
    /// 2.06 bits per weight: lattice i-quant, 8-weight grid rows (no
    /// quantizer: ggml needs an importance matrix for it).
    IQ2_XXS,
    /// 2.31 bits per weight (no quantizer).
    IQ2_XS,
    /// 3.06 bits per weight (no quantizer).
    IQ3_XXS,
    /// 3.44 bits per weight (no quantizer).
    IQ3_S,
    /// MLX affine quantization, repacked by kiln into one block per group
    /// (`[scale][bias][codes]`, see [`crate::quant::mlx`]). Not a GGML type.
    Mlx(MlxFormat),
}

/// Elements per K-quant super-block (ggml `QK_K`).
pub const QK_K: usize = 256;

impl DType {
    /// Every GGML dtype, in GGML id order (not the MLX formats).
    pub const ALL: [DType; 21] = [
        DType::F32,
        DType::F16,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q8_0,
        DType::Q8_1,
        DType::Q2_K,
        DType::Q3_K,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::Q8_K,
        DType::IQ2_XXS,
        DType::IQ2_XS,
        DType::IQ3_XXS,
        DType::IQ4_NL,
        DType::IQ3_S,
        DType::IQ4_XS,
        DType::BF16,
    ];

    /// GGML `ggml_type` id; `None` for the MLX formats (GGUF cannot hold them).
    pub fn ggml_id(self) -> Option<u32> {
        Some(match self {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::Q4_0 => 2,
            DType::Q4_1 => 3,
            DType::Q5_0 => 6,
            DType::Q5_1 => 7,
            DType::Q8_0 => 8,
            DType::Q8_1 => 9,
            DType::Q2_K => 10,
            DType::Q3_K => 11,
            DType::Q4_K => 12,
            DType::Q5_K => 13,
            DType::Q6_K => 14,
            DType::Q8_K => 15,
            DType::IQ2_XXS => 16,
            DType::IQ2_XS => 17,
            DType::IQ3_XXS => 18,
            DType::IQ4_NL => 20,
            DType::IQ3_S => 21,
            DType::IQ4_XS => 23,
            DType::BF16 => 30,
            DType::Mlx(_) => return None,
        })
    }

    /// Map a GGML type id to a dtype; unknown or unsupported ids are an error.
    pub fn from_ggml_id(id: u32) -> Result<DType> {
        DType::ALL
            .iter()
            .copied()
            .find(|d| d.ggml_id() == Some(id))
            .ok_or(Error::UnknownGgmlType(id))
    }

    /// Elements per block (1 for plain floats).
    pub fn block_size(self) -> usize {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => 1,
            DType::Q4_0
            | DType::Q4_1
            | DType::Q5_0
            | DType::Q5_1
            | DType::Q8_0
            | DType::Q8_1
            | DType::IQ4_NL => 32,
            DType::Q2_K
            | DType::Q3_K
            | DType::Q4_K
            | DType::Q5_K
            | DType::Q6_K
            | DType::Q8_K
            | DType::IQ4_XS
            | DType::IQ2_XXS
            | DType::IQ2_XS
            | DType::IQ3_XXS
            | DType::IQ3_S => QK_K,
            DType::Mlx(f) => f.group_size(),
        }
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::Q4_0 => 18,
            DType::Q4_1 => 20,
            DType::Q5_0 => 22,
            DType::Q5_1 => 24,
            DType::Q8_0 => 34,
            DType::Q8_1 => 36,
            DType::Q2_K => 84,
            DType::Q3_K => 110,
            DType::Q4_K => 144,
            DType::Q5_K => 176,
            DType::Q6_K => 210,
            DType::Q8_K => 292,
            DType::IQ4_NL => 18,
            DType::IQ4_XS => 136,
            DType::IQ2_XXS => 66,
            DType::IQ2_XS => 74,
            DType::IQ3_XXS => 98,
            DType::IQ3_S => 110,
            DType::Mlx(f) => f.block_bytes(),
        }
    }

    /// True when kiln can quantize to this format ([`crate::quant::quantize_row`]):
    /// every format but the IQ2/IQ3 i-quants (ggml makes IQ2_XXS / IQ2_XS
    /// only with an importance matrix; kiln has no IQ3 quantizer). kiln
    /// reads and runs all four.
    pub fn has_quantizer(self) -> bool {
        !matches!(
            self,
            DType::IQ2_XXS | DType::IQ2_XS | DType::IQ3_XXS | DType::IQ3_S
        )
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

    /// The GGML name, e.g. `Q4_1` (`MLX` for every MLX format; `Display`
    /// spells those out, e.g. `MLX_Q4_G64_F16`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::Q4_0 => "Q4_0",
            DType::Q4_1 => "Q4_1",
            DType::Q8_0 => "Q8_0",
            DType::Q5_0 => "Q5_0",
            DType::Q5_1 => "Q5_1",
            DType::Q8_1 => "Q8_1",
            DType::Q2_K => "Q2_K",
            DType::Q3_K => "Q3_K",
            DType::Q4_K => "Q4_K",
            DType::Q5_K => "Q5_K",
            DType::Q6_K => "Q6_K",
            DType::Q8_K => "Q8_K",
            DType::IQ4_NL => "IQ4_NL",
            DType::IQ4_XS => "IQ4_XS",
            DType::IQ2_XXS => "IQ2_XXS",
            DType::IQ2_XS => "IQ2_XS",
            DType::IQ3_XXS => "IQ3_XXS",
            DType::IQ3_S => "IQ3_S",
            DType::Mlx(_) => "MLX",
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
        match self {
            DType::Mlx(m) => write!(f, "{m}"),
            _ => f.write_str(self.name()),
        }
    }
}
