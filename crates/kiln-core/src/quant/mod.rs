//! GGML block formats: one file per format family, each defining its block
//! struct (size-checked at compile time), and implementing [`BlockFormat`]
//! with the scalar reference quantize / dequantize; plus the row-level
//! dispatch every backend and loader uses, and the reference dot products
//! the fast paths are tested against.
//!
//! Spec: ggml's `ggml-common.h` block layouts and `ggml-quants.c` reference
//! quantizers (`quantize_row_*_ref`), as reimplemented by the `gguf` Python
//! package's `gguf.quants`; checked bit-for-bit against fixtures made with it
//! (`scripts/fixtures/make_quant_fixtures.py`). Bytes are little-endian as in
//! GGUF; the block structs are read with native layout, so kiln supports
//! little-endian hosts only.
//!
//! Formats: Q4_0/Q4_1 (`q4.rs`), Q5_0/Q5_1 (`q5.rs`), Q8_0/Q8_1 (`q8.rs`),
//! Q2_K..Q6_K (`k_quants.rs`, scale searches in `k_search.rs`), Q8_K
//! (`q8k.rs`), IQ4_NL/IQ4_XS (`iq4.rs`), IQ2_XXS/IQ2_XS/IQ3_XXS/IQ3_S
//! (`iq23.rs`, grids in the generated `iq23_grids.rs`; dequantize and dot
//! only, no quantizer), F32/F16/BF16 (`float.rs`), MLX
//! affine (`mlx.rs`: mlx's own layout; `mlx_block.rs`: kiln's block repack,
//! [`DType::Mlx`]).
//! Quantized-activation reference dots: Q4_0/Q4_1/Q8_0 below, the other
//! formats (against Q8_0 / Q8_1 / Q8_K, [`Q8KDot`]) in `dot_ref.rs`.
//! gguf.quants quantizes only Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 of these; the
//! other quantizers are checked through gguf's dequantizer and by error
//! bounds (`tests/quant_fixtures_ggml.rs`, `tests.rs`, `tests_k.rs`).
//!
//! Adding a format = one new file implementing [`BlockFormat`] + one arm in
//! the dispatch functions below.

use crate::error::check_len;
use crate::{DType, Error, Result};
use half::f16;

mod dot_ref;
pub mod float;
pub mod iq23;
mod iq23_grids;
pub mod iq4;
pub mod k_quants;
mod k_search;
pub mod mlx;
pub mod mlx_block;
pub mod q4;
pub mod q5;
pub mod q8;
pub mod q8k;

pub use crate::dtype::QK_K;
pub use dot_ref::{
    vec_dot_iq2_xs_q8_K_ref, vec_dot_iq2_xxs_q8_K_ref, vec_dot_iq3_s_q8_K_ref,
    vec_dot_iq3_xxs_q8_K_ref, vec_dot_iq4_nl_q8_0_ref, vec_dot_iq4_xs_q8_K_ref,
    vec_dot_q2_K_q8_K_ref, vec_dot_q3_K_q8_K_ref, vec_dot_q4_K_q8_K_ref, vec_dot_q5_0_q8_0_ref,
    vec_dot_q5_1_q8_1_ref, vec_dot_q5_K_q8_K_ref, vec_dot_q6_K_q8_K_ref, vec_dot_q8_K_ref, Q8KDot,
};
pub use iq23::{BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS, IqBlock};
pub use iq23_grids::{IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS};
pub use iq4::{BlockIQ4NL, BlockIQ4XS, KVALUES_IQ4NL};
pub use k_quants::{
    pack_scale_min_k4, unpack_scale_min_k4, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K,
};
pub use mlx::{
    dequantize_row_mlx_affine_ref, pack_codes_row, quantize_row_mlx_affine_ref, unpack_codes_row,
    MlxAffine, MlxRow, MlxRowBytes, MlxRowMut, MLX_AFFINE_BITS, MLX_AFFINE_EPS,
    MLX_AFFINE_GROUP_SIZES,
};
pub use mlx_block::{repack_mlx_matrix, MlxArrays, MlxFormat};
pub use q4::{BlockQ4_0, BlockQ4_1};
pub use q5::{BlockQ5_0, BlockQ5_1};
pub use q8::{BlockQ8_0, BlockQ8_1};
pub use q8k::BlockQ8K;

/// Block elements for the 32-wide legacy formats.
pub const QK: usize = 32;

/// A GGML block format with a scalar reference quantizer and dequantizer.
///
/// The per-block methods take slices for convenience; their precondition is
/// `len == Self::QK`. They never panic: a longer `out` has its tail left
/// untouched, a shorter one receives a prefix, and a short `x` is treated as
/// zero-padded. Row-level callers should use [`dequantize_row`] /
/// [`quantize_row`], which check lengths and return errors.
pub trait BlockFormat: bytemuck::Pod {
    /// The dtype this block encodes.
    const DTYPE: crate::DType;
    /// Elements per block.
    const QK: usize;
    /// Reference dequantize: `out.len() == Self::QK`.
    fn dequantize(&self, out: &mut [f32]);
    /// Reference quantize (matches ggml's `quantize_row_*_ref`): `x.len() == Self::QK`.
    fn quantize(x: &[f32]) -> Self;
}

/// Reinterpret bytes as f16 pairs, etc. Helper for code reading the `d` fields.
#[inline]
pub fn f16_to_f32(h: f16) -> f32 {
    h.to_f32()
}

/// View `bytes` as a slice of blocks without copying.
///
/// Errors (naming the block type) when the length is not a whole number of
/// blocks or the address is not aligned for the block struct (2 bytes for
/// the f16-scaled formats). Row functions below do not need alignment.
pub fn blocks<B: BlockFormat>(bytes: &[u8]) -> Result<&[B]> {
    bytemuck::try_cast_slice(bytes).map_err(|e| cast_error::<B>("quant::blocks", bytes, e))
}

/// Mutable twin of [`blocks`], e.g. for writing quantized activations in place.
pub fn blocks_mut<B: BlockFormat>(bytes: &mut [u8]) -> Result<&mut [B]> {
    let (len, addr) = (bytes.len(), bytes.as_ptr() as usize);
    bytemuck::try_cast_slice_mut(bytes)
        .map_err(|e| cast_error_at::<B>("quant::blocks_mut", len, addr, e))
}

fn cast_error<B: BlockFormat>(op: &'static str, bytes: &[u8], e: bytemuck::PodCastError) -> Error {
    cast_error_at::<B>(op, bytes.len(), bytes.as_ptr() as usize, e)
}

fn cast_error_at<B: BlockFormat>(
    op: &'static str,
    len: usize,
    addr: usize,
    e: bytemuck::PodCastError,
) -> Error {
    let size = std::mem::size_of::<B>();
    let align = std::mem::align_of::<B>();
    let why = match e {
        bytemuck::PodCastError::TargetAlignmentGreaterAndInputNotAligned => {
            format!("address {addr:#x} is not aligned to {align} bytes")
        }
        bytemuck::PodCastError::OutputSliceWouldHaveSlop | bytemuck::PodCastError::SizeMismatch => {
            format!("{len} bytes is not a whole number of {size}-byte blocks")
        }
        other => format!("{other:?}"),
    };
    Error::invalid(
        op,
        format!("cannot view {len} bytes as {} blocks: {why}", B::DTYPE),
    )
}

/// Dequantize one row: `src` must hold exactly `dtype.row_bytes(out.len())`
/// bytes (and `out.len()` must be a multiple of the block size).
/// Works for every dtype, including F32/F16/BF16. `src` needs no alignment.
pub fn dequantize_row(dtype: DType, src: &[u8], out: &mut [f32]) -> Result<()> {
    const OP: &str = "quant::dequantize_row";
    let need = dtype.row_bytes(OP, out.len())?;
    check_len(OP, "src", src.len(), need)?;
    match dtype {
        DType::F32 => float::dequantize_row_f32(src, out),
        DType::F16 => float::dequantize_row_f16(src, out),
        DType::BF16 => float::dequantize_row_bf16(src, out),
        DType::Q4_0 => dequantize_blocks::<BlockQ4_0>(src, out),
        DType::Q4_1 => dequantize_blocks::<BlockQ4_1>(src, out),
        DType::Q8_0 => dequantize_blocks::<BlockQ8_0>(src, out),
        DType::Q8_1 => dequantize_blocks::<BlockQ8_1>(src, out),
        DType::Q5_0 => dequantize_blocks::<BlockQ5_0>(src, out),
        DType::Q5_1 => dequantize_blocks::<BlockQ5_1>(src, out),
        DType::Q2_K => dequantize_blocks::<BlockQ2K>(src, out),
        DType::Q3_K => dequantize_blocks::<BlockQ3K>(src, out),
        DType::Q4_K => dequantize_blocks::<BlockQ4K>(src, out),
        DType::Q5_K => dequantize_blocks::<BlockQ5K>(src, out),
        DType::Q6_K => dequantize_blocks::<BlockQ6K>(src, out),
        DType::Q8_K => dequantize_blocks::<BlockQ8K>(src, out),
        DType::IQ4_NL => dequantize_blocks::<BlockIQ4NL>(src, out),
        DType::IQ4_XS => dequantize_blocks::<BlockIQ4XS>(src, out),
        DType::IQ2_XXS => dequantize_iq_blocks::<BlockIQ2XXS>(src, out),
        DType::IQ2_XS => dequantize_iq_blocks::<BlockIQ2XS>(src, out),
        DType::IQ3_XXS => dequantize_iq_blocks::<BlockIQ3XXS>(src, out),
        DType::IQ3_S => dequantize_iq_blocks::<BlockIQ3S>(src, out),
        DType::Mlx(f) => mlx_block::dequantize_blocks_mlx(f, src, out),
    }
    Ok(())
}

/// Quantize one row: `out` must hold exactly `dtype.row_bytes(x.len())`
/// bytes. Every dtype but the IQ2/IQ3 i-quants ([`Error::NoQuantizer`]);
/// bit-exact with ggml's reference quantizers.
pub fn quantize_row(dtype: DType, x: &[f32], out: &mut [u8]) -> Result<()> {
    const OP: &str = "quant::quantize_row";
    let need = dtype.row_bytes(OP, x.len())?;
    check_len(OP, "out", out.len(), need)?;
    match dtype {
        DType::F32 => float::quantize_row_f32(x, out),
        DType::F16 => float::quantize_row_f16(x, out),
        DType::BF16 => float::quantize_row_bf16(x, out),
        DType::Q4_0 => quantize_blocks::<BlockQ4_0>(x, out),
        DType::Q4_1 => quantize_blocks::<BlockQ4_1>(x, out),
        DType::Q8_0 => quantize_blocks::<BlockQ8_0>(x, out),
        DType::Q8_1 => quantize_blocks::<BlockQ8_1>(x, out),
        DType::Q5_0 => quantize_blocks::<BlockQ5_0>(x, out),
        DType::Q5_1 => quantize_blocks::<BlockQ5_1>(x, out),
        DType::Q2_K => quantize_blocks::<BlockQ2K>(x, out),
        DType::Q3_K => quantize_blocks::<BlockQ3K>(x, out),
        DType::Q4_K => quantize_blocks::<BlockQ4K>(x, out),
        DType::Q5_K => quantize_blocks::<BlockQ5K>(x, out),
        DType::Q6_K => quantize_blocks::<BlockQ6K>(x, out),
        DType::Q8_K => quantize_blocks::<BlockQ8K>(x, out),
        DType::IQ4_NL => quantize_blocks::<BlockIQ4NL>(x, out),
        DType::IQ4_XS => quantize_blocks::<BlockIQ4XS>(x, out),
        DType::IQ2_XXS | DType::IQ2_XS => {
            let why = "ggml makes it only with an importance matrix (llama.cpp's imatrix), which kiln does not make";
            return Err(Error::NoQuantizer { op: OP, dtype, why });
        }
        DType::IQ3_XXS | DType::IQ3_S => {
            let why = "kiln has no IQ3 quantizer";
            return Err(Error::NoQuantizer { op: OP, dtype, why });
        }
        DType::Mlx(f) => mlx_block::quantize_blocks_mlx(f, x, out)?,
    }
    Ok(())
}

/// Lengths already checked by the caller. Reads each block unaligned.
fn dequantize_blocks<B: BlockFormat>(src: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    for (chunk, o) in src.chunks_exact(size).zip(out.chunks_exact_mut(B::QK)) {
        let b: B = bytemuck::pod_read_unaligned(chunk);
        b.dequantize(o);
    }
}

/// [`dequantize_blocks`] for the i-quants of `iq23.rs`.
fn dequantize_iq_blocks<B: IqBlock>(src: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    for (chunk, o) in src.chunks_exact(size).zip(out.chunks_exact_mut(QK_K)) {
        let b: B = bytemuck::pod_read_unaligned(chunk);
        iq23::dequantize_iq(&b, o);
    }
}

/// Lengths already checked by the caller.
fn quantize_blocks<B: BlockFormat>(x: &[f32], out: &mut [u8]) {
    let size = std::mem::size_of::<B>();
    for (xs, chunk) in x.chunks_exact(B::QK).zip(out.chunks_exact_mut(size)) {
        let b = B::quantize(xs);
        chunk.copy_from_slice(bytemuck::bytes_of(&b));
    }
}

/// Reference dot of one weight row (any dtype, `w_row` exactly
/// `dtype.row_bytes(x.len())` bytes) with f32 activations: dequantize each
/// block to f32, then accumulate `w * x` in f64; rounded to f32 once.
pub fn vec_dot_ref(dtype: DType, w_row: &[u8], x: &[f32]) -> Result<f32> {
    const OP: &str = "quant::vec_dot_ref";
    let need = dtype.row_bytes(OP, x.len())?;
    check_len(OP, "w_row", w_row.len(), need)?;
    // Chunk = one block for quantized formats (at most QK_K = 256
    // elements), 64 elements for plain floats.
    let chunk = if dtype.is_quantized() {
        dtype.block_size()
    } else {
        64
    };
    let mut buf = [0.0f32; QK_K];
    if chunk > buf.len() {
        return Err(Error::UnsupportedDType { op: OP, dtype });
    }
    let mut acc = 0.0f64;
    let mut off = 0usize;
    for xs in x.chunks(chunk) {
        let nb = dtype.row_bytes(OP, xs.len())?;
        let src = w_row
            .get(off..off + nb)
            .ok_or_else(|| Error::invalid(OP, "w_row too short"))?;
        off += nb;
        let w = &mut buf[..xs.len()];
        dequantize_row(dtype, src, w)?;
        acc += w
            .iter()
            .zip(xs)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .sum::<f64>();
    }
    Ok(acc as f32)
}

fn check_blocks(op: &'static str, nw: usize, nx: usize) -> Result<()> {
    check_len(op, "activation blocks", nx, nw)
}

#[inline]
fn isum_q4_q8(qs4: &[u8; 16], qs8: &[i8; 32], offset: i32) -> i32 {
    let mut s = 0i32;
    for j in 0..16 {
        let lo = i32::from(qs4[j] & 0x0f) - offset;
        let hi = i32::from(qs4[j] >> 4) - offset;
        s += lo * i32::from(qs8[j]) + hi * i32::from(qs8[j + 16]);
    }
    s
}

/// Reference Q4_0 x Q8_0 dot: per block the integer sum
/// `isum = sum_j (q_w[j] - 8) * q_x[j]`, then `sum_b d_w * d_x * isum`.
///
/// Each block term is exact in f64 (f16 * f16 * |isum| < 2^15 needs 37 bits)
/// and blocks are accumulated in f64, so this is the defined value rounded
/// once to f32; fast paths (f32 accumulation in any order) are compared to it
/// with a tolerance. Errors when the block counts differ.
pub fn vec_dot_q4_0_q8_0_ref(w: &[BlockQ4_0], x: &[BlockQ8_0]) -> Result<f32> {
    check_blocks("quant::vec_dot_q4_0_q8_0_ref", w.len(), x.len())?;
    let mut acc = 0.0f64;
    for (bw, bx) in w.iter().zip(x) {
        let isum = isum_q4_q8(&bw.qs, &bx.qs, 8);
        acc += f64::from(bw.d.to_f32()) * f64::from(bx.d.to_f32()) * f64::from(isum);
    }
    Ok(acc as f32)
}

/// Reference Q4_1 x Q8_1 dot:
/// `sum_b d_w * d_x * isum + m_w * s_x`, `isum = sum_j q_w[j] * q_x[j]`.
///
/// Uses the activation's stored `s` (f16 of `d * sum(q_x)`), exactly as the
/// fast paths do; terms exact in f64, f64 accumulation, one final rounding.
/// Errors when the block counts differ.
pub fn vec_dot_q4_1_q8_1_ref(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> Result<f32> {
    check_blocks("quant::vec_dot_q4_1_q8_1_ref", w.len(), x.len())?;
    let mut acc = 0.0f64;
    for (bw, bx) in w.iter().zip(x) {
        let isum = isum_q4_q8(&bw.qs, &bx.qs, 0);
        acc += f64::from(bw.d.to_f32()) * f64::from(bx.d.to_f32()) * f64::from(isum);
        acc += f64::from(bw.m.to_f32()) * f64::from(bx.s.to_f32());
    }
    Ok(acc as f32)
}

/// Reference Q8_0 x Q8_0 dot: `sum_b d_w * d_x * sum_j q_w[j] * q_x[j]`;
/// terms exact in f64, f64 accumulation, one final rounding.
/// Errors when the block counts differ.
pub fn vec_dot_q8_0_q8_0_ref(w: &[BlockQ8_0], x: &[BlockQ8_0]) -> Result<f32> {
    check_blocks("quant::vec_dot_q8_0_q8_0_ref", w.len(), x.len())?;
    let mut acc = 0.0f64;
    for (bw, bx) in w.iter().zip(x) {
        let isum: i32 = bw
            .qs
            .iter()
            .zip(&bx.qs)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        acc += f64::from(bw.d.to_f32()) * f64::from(bx.d.to_f32()) * f64::from(isum);
    }
    Ok(acc as f32)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod tests_k;
