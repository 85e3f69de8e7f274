//! KV-cache element types: the caches hold f32 values, or f16 / bf16 bits
//! (`u16`, little-endian in memory like the GGML F16 / BF16 formats).
//!
//! Writing a cache rounds f32 to the element type exactly as the GGUF float
//! formats do ([`crate::quant::float`]): f16 to nearest even (overflow to
//! ±inf, subnormals kept), bf16 to nearest even on the raw bits (NaN kept
//! quiet). Reading widens exactly. Attention reads the stored values
//! widened to f32 and computes in f32, so the reference is
//! [`crate::ops::attention::attention_ref`] over the widened cache.

use crate::quant::float::{bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits};
use crate::{DType, Error, Result};
use std::fmt;
use std::str::FromStr;

/// Element type of a K or V cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KvType {
    #[default]
    F32,
    F16,
    BF16,
}

impl KvType {
    /// Every KV type, f32 first.
    pub const ALL: [KvType; 3] = [KvType::F32, KvType::F16, KvType::BF16];

    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 | KvType::BF16 => 2,
        }
    }

    /// The tensor dtype of a cache of this type.
    pub fn dtype(self) -> DType {
        match self {
            KvType::F32 => DType::F32,
            KvType::F16 => DType::F16,
            KvType::BF16 => DType::BF16,
        }
    }

    /// The KV type of a tensor dtype, or an error naming `op` and the dtype.
    pub fn from_dtype(op: &'static str, d: DType) -> Result<KvType> {
        match d {
            DType::F32 => Ok(KvType::F32),
            DType::F16 => Ok(KvType::F16),
            DType::BF16 => Ok(KvType::BF16),
            other => Err(Error::invalid(
                op,
                format!("a KV cache of {other} (supported: F32, F16, BF16)"),
            )),
        }
    }

    /// Lower-case name, as the command line spells it (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::BF16 => "bf16",
        }
    }

    /// The 16-bit encoding of `x` (f16 or bf16, round to nearest even);
    /// `None` for f32.
    pub fn encode(self, x: f32) -> Option<u16> {
        match self {
            KvType::F32 => None,
            KvType::F16 => Some(f32_to_f16_bits(x)),
            KvType::BF16 => Some(f32_to_bf16_bits(x)),
        }
    }

    /// The value of the 16-bit element `b` (exact). f32 has no 16-bit
    /// form: NaN.
    pub fn decode(self, b: u16) -> f32 {
        match self {
            KvType::F32 => f32::NAN,
            KvType::F16 => f16_bits_to_f32(b),
            KvType::BF16 => bf16_bits_to_f32(b),
        }
    }

    /// `x` rounded to this type and widened back (the value a cache holds).
    pub fn round(self, x: f32) -> f32 {
        match self.encode(x) {
            Some(b) => self.decode(b),
            None => x,
        }
    }
}

impl fmt::Display for KvType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KvType {
    type Err = Error;
    fn from_str(s: &str) -> Result<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(KvType::F32),
            "f16" => Ok(KvType::F16),
            "bf16" => Ok(KvType::BF16),
            other => Err(Error::invalid(
                "kv type",
                format!("{other:?} (expected f32, f16 or bf16)"),
            )),
        }
    }
}

/// A cache (or part of one) as read by an op.
#[derive(Debug, Clone, Copy)]
pub enum KvSlice<'a> {
    F32(&'a [f32]),
    F16(&'a [u16]),
    BF16(&'a [u16]),
}

impl<'a> KvSlice<'a> {
    pub fn kv_type(&self) -> KvType {
        match self {
            KvSlice::F32(_) => KvType::F32,
            KvSlice::F16(_) => KvType::F16,
            KvSlice::BF16(_) => KvType::BF16,
        }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        match self {
            KvSlice::F32(v) => v.len(),
            KvSlice::F16(v) | KvSlice::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` widened to f32 (`i < len`).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            KvSlice::F32(v) => v[i],
            KvSlice::F16(v) => f16_bits_to_f32(v[i]),
            KvSlice::BF16(v) => bf16_bits_to_f32(v[i]),
        }
    }

    /// Every element widened to f32 (tests, the reference).
    pub fn to_f32(&self) -> Vec<f32> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }

    /// Elements `r` of the same type.
    pub fn slice(&self, r: std::ops::Range<usize>) -> KvSlice<'a> {
        match *self {
            KvSlice::F32(v) => KvSlice::F32(&v[r]),
            KvSlice::F16(v) => KvSlice::F16(&v[r]),
            KvSlice::BF16(v) => KvSlice::BF16(&v[r]),
        }
    }
}

/// A cache as written by an op (the KV append).
#[derive(Debug)]
pub enum KvSliceMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [u16]),
    BF16(&'a mut [u16]),
}

impl KvSliceMut<'_> {
    pub fn kv_type(&self) -> KvType {
        match self {
            KvSliceMut::F32(_) => KvType::F32,
            KvSliceMut::F16(_) => KvType::F16,
            KvSliceMut::BF16(_) => KvType::BF16,
        }
    }

    /// Elements.
    pub fn len(&self) -> usize {
        match self {
            KvSliceMut::F32(v) => v.len(),
            KvSliceMut::F16(v) | KvSliceMut::BF16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same elements, borrowed for a shorter time (to pass the cache
    /// to several ops by value).
    pub fn reborrow(&mut self) -> KvSliceMut<'_> {
        match self {
            KvSliceMut::F32(v) => KvSliceMut::F32(v),
            KvSliceMut::F16(v) => KvSliceMut::F16(v),
            KvSliceMut::BF16(v) => KvSliceMut::BF16(v),
        }
    }

    /// Read-only view.
    pub fn as_slice(&self) -> KvSlice<'_> {
        match self {
            KvSliceMut::F32(v) => KvSlice::F32(v),
            KvSliceMut::F16(v) => KvSlice::F16(v),
            KvSliceMut::BF16(v) => KvSlice::BF16(v),
        }
    }

    /// Write `src` rounded to the element type at elements `at..at + src.len()`
    /// (the caller checked the range).
    pub fn store(&mut self, at: usize, src: &[f32]) {
        match self {
            KvSliceMut::F32(d) => d[at..at + src.len()].copy_from_slice(src),
            KvSliceMut::F16(d) => {
                for (o, &x) in d[at..at + src.len()].iter_mut().zip(src) {
                    *o = f32_to_f16_bits(x);
                }
            }
            KvSliceMut::BF16(d) => {
                for (o, &x) in d[at..at + src.len()].iter_mut().zip(src) {
                    *o = f32_to_bf16_bits(x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_round_trip_and_rounding() {
        for t in KvType::ALL {
            assert_eq!(t.name().parse::<KvType>().unwrap(), t);
            assert_eq!(KvType::from_dtype("t", t.dtype()).unwrap(), t);
        }
        assert!("q8".parse::<KvType>().is_err());
        assert!(KvType::from_dtype("t", DType::Q4_0).is_err());
        // Ties to even: 1 + 2^-11 is halfway between two f16 values.
        let tie = 1.0 + f32::powi(2.0, -11);
        assert_eq!(KvType::F16.round(tie), 1.0);
        assert_eq!(KvType::F16.round(65520.0), f32::INFINITY);
        assert_eq!(KvType::BF16.round(1.0 + f32::powi(2.0, -8)), 1.0);
        assert_eq!(KvType::F32.round(tie), tie);
        let mut buf = [0u16; 3];
        let mut m = KvSliceMut::BF16(&mut buf);
        m.store(1, &[1.5, -2.0]);
        assert_eq!(m.as_slice().to_f32(), [0.0, 1.5, -2.0]);
    }
}
