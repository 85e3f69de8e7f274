//! Q5_0 and Q5_1: 32 weights per block, 5-bit codes (ggml `block_q5_0`,
//! `block_q5_1`). Q5_0: x = d * (q - 16). Q5_1: x = d * q + m.
//!
//! Code layout (ggml): the low 4 bits as in Q4 (byte j of `qs` holds element
//! j in its low nibble and element j+16 in its high nibble); the fifth bit of
//! element j is bit j of `qh`, read as a little-endian u32.

use super::q4::load_block;
use super::{BlockFormat, QK};
use crate::DType;
use half::f16;

/// GGML `block_q5_0`: scale, 32 high bits, 16 bytes of nibbles (22 bytes).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// GGML `block_q5_1`: scale, min, 32 high bits, 16 bytes of nibbles (24 bytes).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// Unpack the 32 five-bit codes (0..=31).
#[inline]
pub(crate) fn unpack5(qh: [u8; 4], qs: &[u8; 16]) -> [u8; QK] {
    let h = u32::from_le_bytes(qh);
    let mut q = [0u8; QK];
    for j in 0..QK / 2 {
        let hi0 = ((h >> j) & 1) as u8;
        let hi1 = ((h >> (j + 16)) & 1) as u8;
        q[j] = (qs[j] & 0x0f) | (hi0 << 4);
        q[j + 16] = (qs[j] >> 4) | (hi1 << 4);
    }
    q
}

/// Pack 32 codes (each 0..=31) into (qh, qs).
#[inline]
fn pack5(q: &[u8; QK]) -> ([u8; 4], [u8; 16]) {
    let mut h = 0u32;
    let mut qs = [0u8; 16];
    for j in 0..QK / 2 {
        qs[j] = (q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4);
    }
    for (j, &v) in q.iter().enumerate() {
        h |= u32::from((v >> 4) & 1) << j;
    }
    (h.to_le_bytes(), qs)
}

impl BlockFormat for BlockQ5_0 {
    const DTYPE: DType = DType::Q5_0;
    const QK: usize = QK;

    /// `x[j] = d * (q[j] - 16)`, one f32 multiply (as ggml / gguf.quants).
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let q = unpack5(self.qh, &self.qs);
        for (o, &v) in out.iter_mut().zip(&q) {
            *o = d * f32::from(i16::from(v) - 16);
        }
    }

    /// ggml `quantize_row_q5_0_ref`: `max` = the element of largest |x|
    /// (first one on ties, sign kept), `d = max / -16`, `id = 1/d` (0 if
    /// d == 0), `q = min(31, trunc(x*id + 16.5))`, all in f32; d stored as f16.
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
        let d = max / -16.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut q = [0u8; QK];
        for (c, &v) in q.iter_mut().zip(&x) {
            // trunc toward zero; `as` saturates (NaN -> 0), so no UB and no panic.
            *c = ((v * id + 16.5) as i32).clamp(0, 31) as u8;
        }
        let (qh, qs) = pack5(&q);
        BlockQ5_0 {
            d: f16::from_f32(d),
            qh,
            qs,
        }
    }
}

impl BlockFormat for BlockQ5_1 {
    const DTYPE: DType = DType::Q5_1;
    const QK: usize = QK;

    /// `x[j] = d * q[j] + m`: f32 multiply then f32 add, no FMA (as ggml / gguf.quants).
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let m = self.m.to_f32();
        let q = unpack5(self.qh, &self.qs);
        for (o, &v) in out.iter_mut().zip(&q) {
            *o = d * f32::from(v) + m;
        }
    }

    /// ggml `quantize_row_q5_1_ref`: `d = (max - min) / 31`, `id = 1/d`
    /// (0 if d == 0), `q = min(31, trunc((x - min)*id + 0.5))`, all in f32;
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
        let d = (max - min) / 31.0;
        let id = if d == 0.0 { 0.0 } else { 1.0 / d };
        let mut q = [0u8; QK];
        for (c, &v) in q.iter_mut().zip(&x) {
            *c = (((v - min) * id + 0.5) as i32).clamp(0, 31) as u8;
        }
        let (qh, qs) = pack5(&q);
        BlockQ5_1 {
            d: f16::from_f32(d),
            m: f16::from_f32(min),
            qh,
            qs,
        }
    }
}
