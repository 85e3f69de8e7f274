//! Q8_K: the 8-bit activation format of ggml's K-quant dot products
//! (`block_q8_K`): 256 values, an f32 scale, i8 codes and the sums of each
//! 16 codes (`bsums`, used by the Q2_K..Q6_K dots for the min terms).
//! x = d * q.
//!
//! Quantizer: ggml's `quantize_row_q8_K_ref` as described there: `max` = the
//! element of largest |x| (first on ties, sign kept); an all-zero block is
//! all zero; else `iscale = -127 / max`,
//! `q = min(127, round_half_even(iscale * x))`, `d = 1 / iscale` (f32, not
//! rounded to f16). gguf.quants has no
//! Q8_K, so the fixture script derives it from this definition in numpy.

use super::k_search::{load, nearest_int, signed_amax};
use super::BlockFormat;
use crate::dtype::QK_K;
use crate::DType;

/// GGML `block_q8_K` (292 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    /// `bsums[j] = sum(qs[16*j .. 16*j + 16])`.
    pub bsums: [i16; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl BlockFormat for BlockQ8K {
    const DTYPE: DType = DType::Q8_K;
    const QK: usize = QK_K;

    /// `x[j] = d * q[j]` (`bsums` is only used by dot products).
    fn dequantize(&self, out: &mut [f32]) {
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = self.d * f32::from(q);
        }
    }

    fn quantize(x: &[f32]) -> Self {
        let x = load::<QK_K>(x);
        let mut b = BlockQ8K {
            d: 0.0,
            qs: [0; 256],
            bsums: [0; 16],
        };
        let (max, amax) = signed_amax(&x);
        if amax == 0.0 {
            return b;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(&x) {
            *q = nearest_int(iscale * v).clamp(-128, 127) as i8;
        }
        for (s, qs) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            // |sum| <= 16 * 128: fits i16.
            *s = qs.iter().map(|&q| i16::from(q)).sum();
        }
        b.d = 1.0 / iscale;
        b
    }
}
