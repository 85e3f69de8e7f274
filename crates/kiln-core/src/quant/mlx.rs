//! MLX affine quantization: the format `mlx.core.quantize(w, group_size,
//! bits, mode="affine")` writes and mlx-lm model directories carry as
//! `weight` (uint32) / `scales` / `biases` tensors.
//!
//! Spec (checked against `mlx` 0.32.4 with the fixtures made by
//! `scripts/fixtures/make_mlx_fixtures.py`):
//!
//! - A row of `n` values is cut into groups of `group_size` (32, 64 or 128)
//!   consecutive values; each group has one `scale` and one `bias`, stored in
//!   two separate arrays of `n / group_size` elements in the scale dtype
//!   (f16, bf16 or f32: mlx always uses the input's dtype). A value is
//!   `w = scale * q + bias`, `q` an unsigned `bits`-bit code (bits 2, 3, 4,
//!   5, 6 or 8).
//! - Codes form one little-endian bit stream per row: code `i` occupies bits
//!   `i * bits .. (i + 1) * bits` of the row, bit `b` being bit `b % 32` of
//!   little-endian uint32 word `b / 32`. For 3, 5 and 6 bits a code may
//!   straddle two words (e.g. 3-bit code 10 is bits 30..33: two bits in word
//!   0, one in word 1). A row has `n * bits / 32` words; every supported
//!   (bits, group_size) pair makes that a whole number of words per group.
//! - Quantize (mlx's CPU `fast::Quantize`, all in f32), per group:
//!   `lo = min`, `hi = max`, `n_bins = 2^bits - 1`;
//!   `s = max((hi - lo) / n_bins, 1e-7)`; if `|lo| > |hi|` the anchor
//!   ("edge") is `lo` and `s` stays positive, else the edge is `hi` and
//!   `s = -s`; `q0 = rint(edge / s)` (ties to even); if `q0 != 0` then
//!   `s = edge / q0`, `bias = edge`, else `bias = 0` (s kept). So the edge
//!   value is reproduced exactly (code 0 is the edge; a negative scale walks
//!   down from the max). Codes are `clamp(rint((w - bias) / s), 0, n_bins)`
//!   computed with the f32 `s` and `bias`; only then are `s` and `bias`
//!   rounded (to nearest even) to the scale dtype for storage.
//! - Dequantize: mlx evaluates `scale * q + bias` in the scale dtype (two
//!   roundings for f16/bf16). kiln's reference evaluates it in f32 (`q * s`
//!   rounded to f32, then `+ bias` rounded to f32, no FMA): bit-exact with
//!   mlx for f32 scales; for f16/bf16 scales `q * s` is exact in f32, so
//!   kiln's value is the exact result rounded once, and mlx's f16/bf16
//!   output differs from it by at most half an ulp (in the scale dtype) of
//!   `q * s` plus half an ulp of the result.
//!
//! Differences from mlx, by design:
//! - kiln quantizes f32 input; mlx first has the input in the scale dtype.
//!   For input already representable in the scale dtype (every real MLX
//!   checkpoint) the results are identical.
//! - Non-finite input, or a scale / bias that overflows the scale dtype,
//!   is an error here (mlx silently writes inf/NaN).

use crate::error::check_len;
use crate::quant::float::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
use crate::{DType, Error, Result};

/// Bit widths MLX affine supports.
pub const MLX_AFFINE_BITS: [u32; 6] = [2, 3, 4, 5, 6, 8];
/// Group sizes MLX affine supports.
pub const MLX_AFFINE_GROUP_SIZES: [usize; 3] = [32, 64, 128];
/// mlx's floor on the initial `(max - min) / n_bins` scale.
pub const MLX_AFFINE_EPS: f32 = 1e-7;

/// One MLX affine quantization: bits per code, values per group and the
/// dtype of the scales and biases arrays. Build with [`MlxAffine::new`]
/// (validated); every function taking one validates it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MlxAffine {
    /// Bits per code: 2, 3, 4, 5, 6 or 8.
    pub bits: u32,
    /// Consecutive values per scale/bias pair: 32, 64 or 128.
    pub group_size: usize,
    /// Element type of the scales and biases arrays: F16, BF16 or F32.
    pub scale_dtype: DType,
}

/// Byte sizes of the three arrays one row needs (see [`MlxAffine::row_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MlxRowBytes {
    /// Packed uint32 words, in bytes (`row_len * bits / 8`).
    pub packed: usize,
    /// Scales, in bytes (`row_len / group_size` elements of the scale dtype).
    pub scales: usize,
    /// Biases, in bytes (same as `scales`).
    pub biases: usize,
}

impl MlxRowBytes {
    /// All three together.
    pub fn total(&self) -> usize {
        self.packed + self.scales + self.biases
    }
}

/// One quantized row, read side. `scales` and `biases` are the raw
/// little-endian bytes of the scale dtype (as in a safetensors file).
#[derive(Clone, Copy, Debug)]
pub struct MlxRow<'a> {
    /// Packed codes: `row_len * bits / 32` words.
    pub packed: &'a [u32],
    /// `row_len / group_size` scales, little-endian bytes of the scale dtype.
    pub scales: &'a [u8],
    /// `row_len / group_size` biases, little-endian bytes of the scale dtype.
    pub biases: &'a [u8],
}

/// One quantized row, write side (same layout as [`MlxRow`]).
#[derive(Debug)]
pub struct MlxRowMut<'a> {
    /// Packed codes: `row_len * bits / 32` words.
    pub packed: &'a mut [u32],
    /// `row_len / group_size` scales, little-endian bytes of the scale dtype.
    pub scales: &'a mut [u8],
    /// `row_len / group_size` biases, little-endian bytes of the scale dtype.
    pub biases: &'a mut [u8],
}

fn check_bits(op: &'static str, bits: u32) -> Result<()> {
    if MLX_AFFINE_BITS.contains(&bits) {
        Ok(())
    } else {
        Err(Error::invalid(
            op,
            format!("unsupported bits {bits} (MLX affine supports 2, 3, 4, 5, 6, 8)"),
        ))
    }
}

/// Bytes per element of a supported scale dtype.
fn scale_size(op: &'static str, dtype: DType) -> Result<usize> {
    match dtype {
        DType::F16 | DType::BF16 => Ok(2),
        DType::F32 => Ok(4),
        other => Err(Error::UnsupportedDType { op, dtype: other }),
    }
}

impl MlxAffine {
    /// A validated description (see [`MlxAffine::validate`]).
    pub fn new(bits: u32, group_size: usize, scale_dtype: DType) -> Result<Self> {
        let p = MlxAffine {
            bits,
            group_size,
            scale_dtype,
        };
        p.validate()?;
        Ok(p)
    }

    /// Errors unless bits is 2/3/4/5/6/8, group_size 32/64/128 and the
    /// scale dtype F16/BF16/F32.
    pub fn validate(&self) -> Result<()> {
        self.validate_for("mlx_affine::validate")
    }

    fn validate_for(&self, op: &'static str) -> Result<()> {
        check_bits(op, self.bits)?;
        if !MLX_AFFINE_GROUP_SIZES.contains(&self.group_size) {
            return Err(Error::invalid(
                op,
                format!(
                    "unsupported group size {} (MLX affine supports 32, 64, 128)",
                    self.group_size
                ),
            ));
        }
        scale_size(op, self.scale_dtype).map(|_| ())
    }

    /// Largest code, `2^bits - 1`.
    pub fn max_code(&self) -> u32 {
        (1u32 << self.bits.min(31)) - 1
    }

    /// Storage cost per weight: `bits + 2 * scale_bits / group_size`
    /// (e.g. 4.5 for 4-bit, group 64, f16). 0 when invalid.
    pub fn bits_per_weight(&self) -> f64 {
        match scale_size("mlx_affine::bits_per_weight", self.scale_dtype) {
            Ok(s) if self.group_size > 0 => {
                f64::from(self.bits) + (2 * 8 * s) as f64 / self.group_size as f64
            }
            _ => 0.0,
        }
    }

    /// Groups in a row of `row_len` values; errors (naming the op) when the
    /// params are invalid or `row_len` is not a multiple of the group size.
    pub fn groups_per_row(&self, row_len: usize) -> Result<usize> {
        self.groups_for("mlx_affine::groups_per_row", row_len)
    }

    fn groups_for(&self, op: &'static str, row_len: usize) -> Result<usize> {
        self.validate_for(op)?;
        if !row_len.is_multiple_of(self.group_size) {
            return Err(Error::invalid(
                op,
                format!(
                    "row length {row_len} is not a multiple of the MLX group size {}",
                    self.group_size
                ),
            ));
        }
        Ok(row_len / self.group_size)
    }

    /// uint32 words of packed codes in a row of `row_len` values.
    pub fn packed_words_per_row(&self, row_len: usize) -> Result<usize> {
        self.sizes_for("mlx_affine::packed_words_per_row", row_len)
            .map(|s| s.packed / 4)
    }

    /// Byte sizes of the packed, scales and biases arrays of one row.
    pub fn row_bytes(&self, row_len: usize) -> Result<MlxRowBytes> {
        self.sizes_for("mlx_affine::row_bytes", row_len)
    }

    fn sizes_for(&self, op: &'static str, row_len: usize) -> Result<MlxRowBytes> {
        let groups = self.groups_for(op, row_len)?;
        let ssize = scale_size(op, self.scale_dtype)?;
        // group_size * bits is a multiple of 32 for every supported pair.
        let words_per_group = self.group_size * self.bits as usize / 32;
        let overflow = || Error::invalid(op, format!("row of {row_len} values overflows"));
        let packed = groups
            .checked_mul(words_per_group * 4)
            .ok_or_else(overflow)?;
        let scales = groups.checked_mul(ssize).ok_or_else(overflow)?;
        Ok(MlxRowBytes {
            packed,
            scales,
            biases: scales,
        })
    }
}

/// Read element `i` of a little-endian scale-dtype array. The caller has
/// checked the length and the dtype; an out-of-range index reads 0.
#[inline]
fn read_scale(dtype: DType, bytes: &[u8], i: usize) -> f32 {
    match dtype {
        DType::F32 => match bytes.get(4 * i..4 * i + 4) {
            Some(&[a, b, c, d]) => f32::from_le_bytes([a, b, c, d]),
            _ => 0.0,
        },
        DType::F16 | DType::BF16 => match bytes.get(2 * i..2 * i + 2) {
            Some(&[a, b]) => {
                let h = u16::from_le_bytes([a, b]);
                if dtype == DType::F16 {
                    f16_bits_to_f32(h)
                } else {
                    bf16_bits_to_f32(h)
                }
            }
            _ => 0.0,
        },
        _ => 0.0,
    }
}

/// `v` rounded (to nearest even) to the scale dtype, as f32.
#[inline]
fn round_to_scale_dtype(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => f16_bits_to_f32(f32_to_f16_bits(v)),
        DType::BF16 => bf16_bits_to_f32(f32_to_bf16_bits(v)),
        _ => v,
    }
}

/// Write element `i` of a little-endian scale-dtype array (rounding to
/// nearest even). Lengths checked by the caller; out of range is a no-op.
#[inline]
fn write_scale(dtype: DType, bytes: &mut [u8], i: usize, v: f32) {
    match dtype {
        DType::F32 => {
            if let Some(c) = bytes.get_mut(4 * i..4 * i + 4) {
                c.copy_from_slice(&v.to_le_bytes());
            }
        }
        DType::F16 | DType::BF16 => {
            let h = if dtype == DType::F16 {
                f32_to_f16_bits(v)
            } else {
                f32_to_bf16_bits(v)
            };
            if let Some(c) = bytes.get_mut(2 * i..2 * i + 2) {
                c.copy_from_slice(&h.to_le_bytes());
            }
        }
        _ => {}
    }
}

/// Code `i` of a little-endian bit stream of `bits`-bit codes. Missing
/// words read as 0 (callers check lengths).
#[inline]
pub(crate) fn get_code(packed: &[u32], bits: u32, i: usize) -> u32 {
    let bit = i * bits as usize;
    let (w, shift) = (bit / 32, (bit % 32) as u32);
    let lo = u64::from(packed.get(w).copied().unwrap_or(0));
    let hi = if shift + bits > 32 {
        u64::from(packed.get(w + 1).copied().unwrap_or(0))
    } else {
        0
    };
    ((((hi << 32) | lo) >> shift) as u32) & ((1u32 << bits) - 1)
}

/// OR code `q` (already `< 2^bits`) into the bit stream at position `i`.
#[inline]
fn put_code(packed: &mut [u32], bits: u32, i: usize, q: u32) {
    let bit = i * bits as usize;
    let (w, shift) = (bit / 32, (bit % 32) as u32);
    let v = u64::from(q) << shift;
    if let Some(x) = packed.get_mut(w) {
        *x |= v as u32;
    }
    if shift + bits > 32 {
        if let Some(x) = packed.get_mut(w + 1) {
            *x |= (v >> 32) as u32;
        }
    }
}

/// Unpack a row's codes: `packed` must hold exactly `codes.len() * bits / 32`
/// words (`codes.len() * bits` a multiple of 32). Codes are < 2^bits.
pub fn unpack_codes_row(bits: u32, packed: &[u32], codes: &mut [u8]) -> Result<()> {
    const OP: &str = "mlx_affine::unpack_codes_row";
    check_bits(OP, bits)?;
    let words = stream_words(OP, bits, codes.len())?;
    check_len(OP, "packed", packed.len(), words)?;
    for (i, c) in codes.iter_mut().enumerate() {
        *c = get_code(packed, bits, i) as u8;
    }
    Ok(())
}

/// Pack codes into a row's little-endian bit stream (overwrites `packed`,
/// which must hold exactly `codes.len() * bits / 32` words). Errors if a
/// code does not fit in `bits` bits.
pub fn pack_codes_row(bits: u32, codes: &[u8], packed: &mut [u32]) -> Result<()> {
    const OP: &str = "mlx_affine::pack_codes_row";
    check_bits(OP, bits)?;
    let words = stream_words(OP, bits, codes.len())?;
    check_len(OP, "packed", packed.len(), words)?;
    let max = (1u32 << bits) - 1;
    if let Some((i, &c)) = codes.iter().enumerate().find(|&(_, &c)| u32::from(c) > max) {
        return Err(Error::invalid(
            OP,
            format!("code {c} at index {i} does not fit in {bits} bits"),
        ));
    }
    packed.fill(0);
    for (i, &c) in codes.iter().enumerate() {
        put_code(packed, bits, i, u32::from(c));
    }
    Ok(())
}

fn stream_words(op: &'static str, bits: u32, n: usize) -> Result<usize> {
    let total = n
        .checked_mul(bits as usize)
        .ok_or_else(|| Error::invalid(op, format!("{n} codes of {bits} bits overflow")))?;
    if !total.is_multiple_of(32) {
        return Err(Error::invalid(
            op,
            format!("{n} codes of {bits} bits do not fill whole 32-bit words"),
        ));
    }
    Ok(total / 32)
}

/// Check the three arrays of a row against `p` and `row_len`; returns the
/// group count.
fn check_row(
    op: &'static str,
    p: &MlxAffine,
    row_len: usize,
    lens: (usize, usize, usize),
) -> Result<usize> {
    let sizes = p.sizes_for(op, row_len)?;
    check_len(op, "packed words", lens.0, sizes.packed / 4)?;
    check_len(op, "scales bytes", lens.1, sizes.scales)?;
    check_len(op, "biases bytes", lens.2, sizes.biases)?;
    Ok(sizes.scales / scale_size(op, p.scale_dtype)?)
}

/// Reference dequantize of one row: `out[i] = scale[g] * q[i] + bias[g]`
/// evaluated in f32 (product rounded to f32, then the sum; no FMA), with
/// `g = i / group_size`. `out.len()` is the row length; the three arrays
/// must have exactly the lengths [`MlxAffine::row_bytes`] gives.
pub fn dequantize_row_mlx_affine_ref(
    p: &MlxAffine,
    src: MlxRow<'_>,
    out: &mut [f32],
) -> Result<()> {
    const OP: &str = "mlx_affine::dequantize_row";
    let lens = (src.packed.len(), src.scales.len(), src.biases.len());
    check_row(OP, p, out.len(), lens)?;
    for (g, og) in out.chunks_exact_mut(p.group_size).enumerate() {
        let scale = read_scale(p.scale_dtype, src.scales, g);
        let bias = read_scale(p.scale_dtype, src.biases, g);
        let base = g * p.group_size;
        for (j, o) in og.iter_mut().enumerate() {
            let q = get_code(src.packed, p.bits, base + j) as f32;
            let t = scale * q; // one rounding (exact for f16/bf16 scales)
            *o = t + bias;
        }
    }
    Ok(())
}

/// mlx's f32 scale and bias for one group (before storage rounding).
/// `group` is finite and non-empty (checked by the caller).
fn group_params(n_bins: f32, group: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in group {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let lo_is_edge = lo.abs() > hi.abs();
    let step = ((hi - lo) / n_bins).max(MLX_AFFINE_EPS);
    let (edge, scale) = if lo_is_edge { (lo, step) } else { (hi, -step) };
    let q0 = (edge / scale).round_ties_even();
    if q0 != 0.0 {
        (edge / q0, edge)
    } else {
        (scale, 0.0)
    }
}

/// Reference quantize of one row, mlx's algorithm (see the module docs):
/// fills `dst.packed` (overwritten), `dst.scales` and `dst.biases`.
///
/// Errors, before writing anything, on invalid params, a row length that is
/// not a multiple of the group size, wrong array lengths, a non-finite input
/// (naming its index) or a group whose scale or bias overflows the scale
/// dtype (naming the group).
pub fn quantize_row_mlx_affine_ref(p: &MlxAffine, x: &[f32], dst: MlxRowMut<'_>) -> Result<()> {
    const OP: &str = "mlx_affine::quantize_row";
    let lens = (dst.packed.len(), dst.scales.len(), dst.biases.len());
    check_row(OP, p, x.len(), lens)?;
    if let Some((i, v)) = x.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(Error::invalid(
            OP,
            format!("input value {v} at index {i} is not finite"),
        ));
    }
    let n_bins = p.max_code() as f32;
    // Pass 1: every group's stored scale and bias must be finite.
    for (g, xg) in x.chunks_exact(p.group_size).enumerate() {
        let (scale, bias) = group_params(n_bins, xg);
        let (s, b) = (
            round_to_scale_dtype(p.scale_dtype, scale),
            round_to_scale_dtype(p.scale_dtype, bias),
        );
        if !s.is_finite() || !b.is_finite() {
            return Err(Error::invalid(
                OP,
                format!(
                    "group {g}: scale {scale} / bias {bias} overflow {} (input range too large)",
                    p.scale_dtype
                ),
            ));
        }
    }
    // Pass 2: codes with the f32 scale and bias, then store them rounded.
    dst.packed.fill(0);
    for (g, xg) in x.chunks_exact(p.group_size).enumerate() {
        let (scale, bias) = group_params(n_bins, xg);
        let base = g * p.group_size;
        for (j, &v) in xg.iter().enumerate() {
            let q = ((v - bias) / scale).round_ties_even().clamp(0.0, n_bins);
            put_code(dst.packed, p.bits, base + j, q as u32);
        }
        write_scale(p.scale_dtype, dst.scales, g, scale);
        write_scale(p.scale_dtype, dst.biases, g, bias);
    }
    Ok(())
}
