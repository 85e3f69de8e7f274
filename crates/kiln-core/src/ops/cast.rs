//! cast: convert `n` elements between the float formats F32, F16 and BF16,
//! in any of the nine directions (the three same-type ones are bit copies).
//!
//! Spec, per element (the conversions of [`crate::quant::float`], which the
//! GGUF reader and writer use too):
//! - same type: the bits are copied unchanged (NaN payloads included);
//! - F16 / BF16 -> F32: exact (`f16_bits_to_f32`, `bf16_bits_to_f32`); an
//!   f16 NaN keeps its sign and payload and gets the quiet bit;
//! - F32 -> F16: round to nearest, ties to even; past the largest finite
//!   f16 (65504; from 65520 up) to ±inf; subnormal f16 results are kept;
//!   NaN keeps its sign and top 10 payload bits and gets the quiet bit
//!   (`0x7e00`);
//! - F32 -> BF16: round to nearest, ties to even on the raw bits (ggml's
//!   rule); NaN keeps its top bits and gets the quiet bit (`0x0040`);
//! - F16 <-> BF16: through f32 (exact), then the rounding above.
//!
//! Every backend must reproduce these bits exactly. Buffers hold f32 values
//! ([`CastSrc::F32`]) or the 16-bit patterns of f16 / bf16 values
//! ([`CastSrc::Bits`]); which 16-bit format is meant is the params' dtype.

use crate::error::check_len;
use crate::quant::float::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
use crate::{DType, Error, Result};

/// Params of [`cast_ref`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CastParams {
    /// Elements in `src` and `dst`.
    pub n: usize,
    /// Format of `src`: F32, F16 or BF16.
    pub src: DType,
    /// Format of `dst`: F32, F16 or BF16.
    pub dst: DType,
}

/// The formats a cast converts between.
pub const CAST_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

impl CastParams {
    /// Both dtypes are F32, F16 or BF16; both buffers hold exactly `n` elements.
    pub fn validate(&self, src_len: usize, dst_len: usize) -> Result<()> {
        for dtype in [self.src, self.dst] {
            if !CAST_DTYPES.contains(&dtype) {
                return Err(Error::UnsupportedDType { op: "cast", dtype });
            }
        }
        check_len("cast", "src", src_len, self.n)?;
        check_len("cast", "dst", dst_len, self.n)
    }

    /// [`Self::validate`], and each buffer stores its dtype's elements: f32
    /// values for F32, 16-bit patterns for F16 and BF16 (`*_f32`: the
    /// buffer holds f32).
    pub fn validate_storage(
        &self,
        src_len: usize,
        src_f32: bool,
        dst_len: usize,
        dst_f32: bool,
    ) -> Result<()> {
        self.validate(src_len, dst_len)?;
        for (what, dtype, is_f32) in [("src", self.src, src_f32), ("dst", self.dst, dst_f32)] {
            if (dtype == DType::F32) != is_f32 {
                let held = if is_f32 {
                    "f32 values"
                } else {
                    "16-bit patterns"
                };
                return Err(Error::invalid(
                    "cast",
                    format!("{what} is {dtype} but its buffer holds {held}"),
                ));
            }
        }
        Ok(())
    }
}

/// The source of a cast: f32 values or f16 / bf16 bit patterns.
#[derive(Debug, Clone, Copy)]
pub enum CastSrc<'a> {
    F32(&'a [f32]),
    Bits(&'a [u16]),
}

/// The destination of a cast: f32 values or f16 / bf16 bit patterns.
#[derive(Debug)]
pub enum CastDst<'a> {
    F32(&'a mut [f32]),
    Bits(&'a mut [u16]),
}

impl CastSrc<'_> {
    pub fn len(&self) -> usize {
        match self {
            CastSrc::F32(v) => v.len(),
            CastSrc::Bits(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_f32(&self) -> bool {
        matches!(self, CastSrc::F32(_))
    }

    /// Element `i` as raw bits (a 16-bit pattern zero-extended).
    fn bits(&self, i: usize) -> u32 {
        match self {
            CastSrc::F32(v) => v[i].to_bits(),
            CastSrc::Bits(v) => u32::from(v[i]),
        }
    }
}

impl CastDst<'_> {
    pub fn len(&self) -> usize {
        match self {
            CastDst::F32(v) => v.len(),
            CastDst::Bits(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_f32(&self) -> bool {
        matches!(self, CastDst::F32(_))
    }
}

impl CastParams {
    /// [`Self::validate_storage`] on the buffers themselves.
    pub fn validate_bufs(&self, src: &CastSrc<'_>, dst: &CastDst<'_>) -> Result<()> {
        self.validate_storage(src.len(), src.is_f32(), dst.len(), dst.is_f32())
    }
}

/// One element, `bits` of format `src` (16-bit formats zero-extended) to
/// the bits of format `dst`, as the module spec says. Both dtypes must be
/// cast dtypes (anything else is read / written as f32).
#[inline]
pub fn cast_bits(src: DType, dst: DType, bits: u32) -> u32 {
    if src == dst {
        return bits;
    }
    let x = match src {
        DType::F16 => f16_bits_to_f32(bits as u16),
        DType::BF16 => bf16_bits_to_f32(bits as u16),
        _ => f32::from_bits(bits),
    };
    match dst {
        DType::F16 => u32::from(f32_to_f16_bits(x)),
        DType::BF16 => u32::from(f32_to_bf16_bits(x)),
        _ => x.to_bits(),
    }
}

/// Reference: `dst[i] = cast(src[i])` for `i < n`, per [`cast_bits`].
pub fn cast_ref(p: &CastParams, src: CastSrc<'_>, dst: CastDst<'_>) -> Result<()> {
    p.validate_bufs(&src, &dst)?;
    match dst {
        CastDst::F32(out) => {
            for (i, o) in out.iter_mut().enumerate() {
                *o = f32::from_bits(cast_bits(p.src, p.dst, src.bits(i)));
            }
        }
        CastDst::Bits(out) => {
            for (i, o) in out.iter_mut().enumerate() {
                // The destination is F16 or BF16 (validated): 16 bits.
                *o = cast_bits(p.src, p.dst, src.bits(i)) as u16;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use DType::{BF16, F16, F32};

    fn one(src: DType, dst: DType, bits: u32) -> u32 {
        cast_bits(src, dst, bits)
    }

    #[test]
    fn f32_to_f16_rounds_to_nearest_even() {
        let h = |x: f32| one(F32, F16, x.to_bits());
        assert_eq!(h(1.0), 0x3c00);
        assert_eq!(h(-2.5), 0xc100);
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1).
        assert_eq!(h(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3 * 2^-11 is halfway between odd 0x3c01 and 0x3c02: up.
        assert_eq!(h(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(h(65504.0), 0x7bff);
        assert_eq!(h(65519.996), 0x7bff);
        assert_eq!(h(65520.0), 0x7c00);
        assert_eq!(h(-1e9), 0xfc00);
        assert_eq!(h(f32::INFINITY), 0x7c00);
        // Subnormals: 2^-24 is the smallest; 2^-25 ties to 0; just above rounds up.
        assert_eq!(h(2f32.powi(-24)), 0x0001);
        assert_eq!(h(2f32.powi(-25)), 0x0000);
        assert_eq!(h(-2f32.powi(-25) * 1.0000001), 0x8001);
        assert_eq!(h(3.0 * 2f32.powi(-25)), 0x0002);
        assert_eq!(h(2f32.powi(-14) * (1.0 - 2f32.powi(-12))), 0x0400);
        // f32 subnormals underflow to a signed zero.
        assert_eq!(one(F32, F16, 0x8000_0001), 0x8000);
    }

    #[test]
    fn nan_and_inf_survive_every_direction() {
        // f32 NaNs: sign and top payload kept, quiet bit set.
        assert_eq!(one(F32, F16, 0x7f80_0001), 0x7e00);
        assert_eq!(one(F32, F16, 0xffc0_2000), 0xfe01);
        assert_eq!(one(F32, BF16, 0x7f80_0001), 0x7fc0);
        assert_eq!(one(F32, BF16, 0xff81_0000), 0xffc1);
        // f16 NaN -> f32 -> bf16.
        assert_eq!(one(F16, F32, 0x7c01), 0x7fc0_2000);
        assert_eq!(one(F16, BF16, 0xfc01), 0xffc0);
        assert_eq!(one(BF16, F16, 0x7f81), 0x7e08);
        for (src, inf) in [(F32, 0x7f80_0000u32), (F16, 0x7c00), (BF16, 0x7f80)] {
            for dst in CAST_DTYPES {
                let want = match dst {
                    F16 => 0x7c00,
                    BF16 => 0x7f80,
                    _ => 0x7f80_0000,
                };
                assert_eq!(one(src, dst, inf), want, "{src} -> {dst}");
            }
        }
        // Identity copies keep signalling payloads bit for bit.
        assert_eq!(one(F16, F16, 0x7c01), 0x7c01);
        assert_eq!(one(BF16, BF16, 0xff81), 0xff81);
        assert_eq!(one(F32, F32, 0x7f80_0001), 0x7f80_0001);
    }

    #[test]
    fn half_formats_widen_exactly_and_round_trip() {
        for h in 0..=u16::MAX {
            let b = u32::from(h);
            let x = one(F16, F32, b);
            if f32::from_bits(x).is_nan() {
                continue;
            }
            assert_eq!(one(F32, F16, x), b, "f16 {h:#06x}");
            assert_eq!(one(BF16, F32, b), b << 16);
            assert_eq!(one(F32, BF16, b << 16), b, "bf16 {h:#06x}");
        }
        // bf16 -> f16 rounds: 1 + 2^-7 (bf16 0x3f81) is exact in f16; the
        // largest bf16 (3.39e38) overflows; a bf16 subnormal underflows.
        assert_eq!(one(BF16, F16, 0x3f81), 0x3c08);
        assert_eq!(one(BF16, F16, 0x7f7f), 0x7c00);
        assert_eq!(one(BF16, F16, 0x0001), 0x0000);
        // f16 -> bf16 rounds: 1 + 2^-8 + 2^-9 (f16 0x3c06) to 1 + 2^-7.
        assert_eq!(one(F16, BF16, 0x3c06), 0x3f81);
    }

    #[test]
    fn reference_and_validation() {
        let p = CastParams {
            n: 3,
            src: F32,
            dst: BF16,
        };
        let mut out = [0u16; 3];
        cast_ref(&p, CastSrc::F32(&[1.0, -0.0, 3.0]), CastDst::Bits(&mut out)).unwrap();
        assert_eq!(out, [0x3f80, 0x8000, 0x4040]);
        let mut back = [0f32; 3];
        let q = CastParams {
            src: BF16,
            dst: F32,
            ..p
        };
        cast_ref(&q, CastSrc::Bits(&out), CastDst::F32(&mut back)).unwrap();
        assert_eq!(back, [1.0, -0.0, 3.0]);

        let e = CastParams {
            src: DType::Q8_0,
            ..p
        }
        .validate(3, 3)
        .unwrap_err();
        assert!(e.to_string().contains("cast: unsupported dtype"), "{e}");
        assert!(p.validate(3, 2).is_err());
        assert!(p.validate(2, 3).is_err());
        let e = cast_ref(&p, CastSrc::Bits(&[0; 3]), CastDst::Bits(&mut out)).unwrap_err();
        assert!(e.to_string().contains("src is F32"), "{e}");
        let e = cast_ref(&q, CastSrc::Bits(&[0; 3]), CastDst::Bits(&mut out)).unwrap_err();
        assert!(e.to_string().contains("dst is F32"), "{e}");
        assert_eq!(
            out,
            [0x3f80, 0x8000, 0x4040],
            "a rejected call writes nothing"
        );
    }
}
