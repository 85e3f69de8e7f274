//! Q8_0 (weights and activations) and Q8_1 (activations, carries the block sum).
//! Q8_0: x = d * q. Q8_1: x = d * q, s = d * sum(q) (used by Q4_1 dots).

use super::q4::load_block;
use super::{BlockFormat, QK};
use crate::DType;
use half::f16;

/// GGML `block_q8_0`: scale + 32 signed bytes (34 bytes).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// GGML `block_q8_1`: scale, `s = d * sum(qs)`, 32 signed bytes (36 bytes).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// ggml's Q8 scale and codes: `d = amax / 127`, `id = 1/d` (0 if d == 0),
/// `q = round_half_away_from_zero(x * id)`, all in f32. Returns the f32 `d`
/// (before its f16 rounding; Q8_1's `s` needs it) and the codes.
#[inline]
fn quantize_q8(x: &[f32]) -> (f32, [i8; QK]) {
    let x = load_block(x);
    let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    let mut qs = [0i8; QK];
    for (q, v) in qs.iter_mut().zip(&x) {
        // f32::round is round-half-away-from-zero (C roundf); `as` saturates.
        *q = (v * id).round() as i8;
    }
    (d, qs)
}

#[inline]
fn dequantize_q8(d: f16, qs: &[i8; QK], out: &mut [f32]) {
    let d = d.to_f32();
    for (o, q) in out.iter_mut().zip(qs) {
        *o = f32::from(*q) * d;
    }
}

impl BlockFormat for BlockQ8_0 {
    const DTYPE: DType = DType::Q8_0;
    const QK: usize = QK;

    /// `x[j] = q[j] * d`.
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_q8(self.d, &self.qs, out);
    }

    /// ggml `quantize_row_q8_0_ref`; d stored as f16.
    fn quantize(x: &[f32]) -> Self {
        let (d, qs) = quantize_q8(x);
        BlockQ8_0 {
            d: f16::from_f32(d),
            qs,
        }
    }
}

impl BlockFormat for BlockQ8_1 {
    const DTYPE: DType = DType::Q8_1;
    const QK: usize = QK;

    /// `x[j] = q[j] * d` (`s` is only used by dot products).
    fn dequantize(&self, out: &mut [f32]) {
        dequantize_q8(self.d, &self.qs, out);
    }

    /// ggml `quantize_row_q8_1_ref`: codes and d as Q8_0;
    /// `s = f16(f32(sum(q)) * d)` with the f32 `d`, before d's f16 rounding.
    fn quantize(x: &[f32]) -> Self {
        let (d, qs) = quantize_q8(x);
        let isum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
        BlockQ8_1 {
            d: f16::from_f32(d),
            // |isum| <= 32 * 128, exact in f32.
            s: f16::from_f32(isum as f32 * d),
            qs,
        }
    }
}
