//! Q4_0 and Q4_1: 32 weights per block, 4-bit codes.
//! Q4_0: x = d * (q - 8). Q4_1: x = d * q + m.
//! Nibble layout (ggml): byte j holds element j (low nibble) and j+16 (high).

use super::{BlockFormat, QK};
use crate::DType;
use half::f16;

/// GGML `block_q4_0`: scale + 16 bytes of nibbles (18 bytes).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// GGML `block_q4_1`: scale, min + 16 bytes of nibbles (20 bytes).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// Copy up to 32 values into a zero-padded block buffer (the trait's
/// precondition is `x.len() == 32`; a short slice counts as zero-padded).
#[inline]
pub(crate) fn load_block(x: &[f32]) -> [f32; QK] {
    let mut b = [0.0f32; QK];
    for (d, s) in b.iter_mut().zip(x) {
        *d = *s;
    }
    b
}

impl BlockFormat for BlockQ4_0 {
    const DTYPE: DType = DType::Q4_0;
    const QK: usize = QK;

    /// `x[j] = d * (q[j] - 8)`, one f32 multiply (as ggml / gguf.quants).
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let (lo, hi) = out.split_at_mut(out.len().min(QK / 2));
        for (o, q) in lo.iter_mut().zip(&self.qs) {
            *o = d * (f32::from(q & 0x0f) - 8.0);
        }
        for (o, q) in hi.iter_mut().zip(&self.qs) {
            *o = d * (f32::from(q >> 4) - 8.0);
        }
    }

    /// ggml `quantize_row_q4_0_ref`: `max` = the element of largest |x|
    /// (first one on ties, sign kept), `d = max / -8`, `id = 1/d` (0 if d == 0),
    /// `q = min(15, trunc(x*id + 8.5))`, all in f32; d stored as f16.
    fn quantize(x: &[f32]) -> Self {
        let x = load_block(x);
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in &x {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let code = |v: f32| -> u8 {
            // trunc toward zero; `as` saturates (NaN -> 0), so no UB and no panic.
            ((v * id + 8.5) as i32).clamp(0, 15) as u8
        };
        let mut qs = [0u8; 16];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = code(x[j]) | (code(x[j + 16]) << 4);
        }
        BlockQ4_0 {
            d: f16::from_f32(d),
            qs,
        }
    }
}

impl BlockFormat for BlockQ4_1 {
    const DTYPE: DType = DType::Q4_1;
    const QK: usize = QK;

    /// `x[j] = d * q[j] + m`: f32 multiply then f32 add, no FMA (as ggml / gguf.quants).
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let (lo, hi) = out.split_at_mut(out.len().min(QK / 2));
        for (o, q) in lo.iter_mut().zip(&self.qs) {
            *o = d * f32::from(q & 0x0f) + m;
        }
        for (o, q) in hi.iter_mut().zip(&self.qs) {
            *o = d * f32::from(q >> 4) + m;
        }
    }

    /// ggml `quantize_row_q4_1_ref`: `d = (max - min) / 15`, `id = 1/d`
    /// (0 if d == 0), `q = min(15, trunc((x - min)*id + 0.5))`, all in f32;
    /// d and m = min stored as f16.
    fn quantize(x: &[f32]) -> Self {
        let x = load_block(x);
        let mut min = f32::MAX;
        let mut max = -f32::MAX;
        for &v in &x {
            if v < min {
                min = v;
            }
            if v > max {
                max = v;
            }
        }
        let d = (max - min) / 15.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let code = |v: f32| -> u8 { (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8 };
        let mut qs = [0u8; 16];
        for (j, q) in qs.iter_mut().enumerate() {
            *q = code(x[j]) | (code(x[j + 16]) << 4);
        }
        BlockQ4_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qs,
        }
    }
}
