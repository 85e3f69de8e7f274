//! Plain float element formats F32, F16 and BF16 (GGML types 0, 1 and 30),
//! stored little-endian, one element per "block".
//!
//! - F16: IEEE 754 binary16; f32 -> f16 rounds to nearest, ties to even
//!   (the `half` crate), overflow -> ±inf, subnormals kept.
//! - BF16: the top 16 bits of an f32. f32 -> bf16 follows ggml's
//!   `ggml_compute_fp32_to_bf16` (and `gguf.quants.BF16`): NaN keeps its top
//!   bits and is forced quiet (bit 6 of the bf16 set); everything else
//!   rounds to nearest, ties to even, on the raw bits (so values past the
//!   bf16 max round to ±inf, subnormals are kept, never flushed).
//!
//! Row functions take exact lengths; callers (`quant::dequantize_row` /
//! `quant::quantize_row`) check them first, so here a short buffer just
//! limits how many elements are converted (no panic).

use half::f16;

/// f32 -> bf16 bits, exactly as ggml's `ggml_compute_fp32_to_bf16`.
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if (u & 0x7fff_ffff) > 0x7f80_0000 {
        // NaN: keep sign and top payload bits, force the quiet bit.
        return ((u >> 16) as u16) | 0x0040;
    }
    // Round to nearest even on the 16 dropped bits. Cannot overflow u32:
    // the largest non-NaN input is 0xff80_0000 (-inf).
    let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1));
    (rounded >> 16) as u16
}

/// bf16 bits -> f32 (exact).
#[inline]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// f32 -> f16 bits, round to nearest even.
#[inline]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// f16 bits -> f32 (exact).
#[inline]
pub fn f16_bits_to_f32(b: u16) -> f32 {
    f16::from_bits(b).to_f32()
}

/// Little-endian f32 bytes -> f32.
pub(crate) fn dequantize_row_f32(src: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
        *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

/// Little-endian f16 bytes -> f32.
pub(crate) fn dequantize_row_f16(src: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// Little-endian bf16 bytes -> f32.
pub(crate) fn dequantize_row_bf16(src: &[u8], out: &mut [f32]) {
    for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = bf16_bits_to_f32(u16::from_le_bytes([c[0], c[1]]));
    }
}

/// f32 -> little-endian f32 bytes.
pub(crate) fn quantize_row_f32(x: &[f32], out: &mut [u8]) {
    for (v, c) in x.iter().zip(out.chunks_exact_mut(4)) {
        c.copy_from_slice(&v.to_le_bytes());
    }
}

/// f32 -> little-endian f16 bytes.
pub(crate) fn quantize_row_f16(x: &[f32], out: &mut [u8]) {
    for (v, c) in x.iter().zip(out.chunks_exact_mut(2)) {
        c.copy_from_slice(&f32_to_f16_bits(*v).to_le_bytes());
    }
}

/// f32 -> little-endian bf16 bytes.
pub(crate) fn quantize_row_bf16(x: &[f32], out: &mut [u8]) {
    for (v, c) in x.iter().zip(out.chunks_exact_mut(2)) {
        c.copy_from_slice(&f32_to_bf16_bits(*v).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_and_nan() {
        // ties to even
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8001)), 0x3f81);
        // overflow to inf, inf stays inf
        assert_eq!(f32_to_bf16_bits(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16_bits(f32::NEG_INFINITY), 0xff80);
        // signalling NaN is quieted, sign kept
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x7f80_0001)), 0x7fc0);
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0xff80_0001)), 0xffc0);
        assert!(bf16_bits_to_f32(0x7fc0).is_nan());
        // subnormals are kept
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x0001_0000)), 0x0001);
    }

    #[test]
    fn f16_rounding() {
        assert_eq!(f32_to_f16_bits(65520.0), 0x7c00);
        assert_eq!(f32_to_f16_bits(65504.0), 0x7bff);
        assert_eq!(f32_to_f16_bits(f32::from_bits(0x3300_0000)), 0x0000);
        assert_eq!(f32_to_f16_bits(f32::from_bits(0x3300_0001)), 0x0001);
        assert_eq!(f16_bits_to_f32(0x3c00), 1.0);
    }
}
