//! Random rows in any [`DType`], built block by block from random codes and
//! sane random scales (not through a quantizer), so a dequantizing op sees
//! every code value. Element magnitudes stay below about 2.6.
//!
//! Formats without a hand-built generator yet (Q5_*, K-quants, Q8_K, IQ4_*;
//! no backend runs them so far) are made by kiln-core's reference quantizer
//! from uniform values in [-1.5, 1.5).

use half::{bf16, f16};
use kiln_core::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1};
use kiln_core::DType;
use rand::Rng;

/// `rows` rows of `cols` elements in `dtype`, as raw GGML bytes.
/// `cols` must be a multiple of the dtype's block size (else a row is cut short).
pub fn rand_rows(rng: &mut impl Rng, dtype: DType, rows: usize, cols: usize) -> Vec<u8> {
    let n = rows * cols;
    let blocks = n / dtype.block_size();
    let mut out = Vec::with_capacity(blocks * dtype.type_size());
    match dtype {
        DType::F32 => (0..n).for_each(|_| out.extend(rng.gen_range(-2.0f32..2.0).to_le_bytes())),
        DType::F16 => {
            (0..n).for_each(|_| out.extend(f16::from_f32(rng.gen_range(-2.0..2.0)).to_le_bytes()))
        }
        DType::BF16 => {
            (0..n).for_each(|_| out.extend(bf16::from_f32(rng.gen_range(-2.0..2.0)).to_le_bytes()))
        }
        DType::Q4_0 => {
            for _ in 0..blocks {
                let b = BlockQ4_0 {
                    d: scale(rng, 0.01, 0.3),
                    qs: rng.gen(),
                };
                out.extend_from_slice(bytemuck::bytes_of(&b));
            }
        }
        DType::Q4_1 => {
            for _ in 0..blocks {
                let b = BlockQ4_1 {
                    d: f16::from_f32(rng.gen_range(0.01..0.1)),
                    m: f16::from_f32(rng.gen_range(-1.0..0.5)),
                    qs: rng.gen(),
                };
                out.extend_from_slice(bytemuck::bytes_of(&b));
            }
        }
        DType::Q8_0 => {
            for _ in 0..blocks {
                let b = BlockQ8_0 {
                    d: scale(rng, 0.001, 0.02),
                    qs: rng.gen(),
                };
                out.extend_from_slice(bytemuck::bytes_of(&b));
            }
        }
        DType::Q8_1 => {
            for _ in 0..blocks {
                let d = scale(rng, 0.001, 0.02);
                let qs: [i8; 32] = rng.gen();
                let sum: i32 = qs.iter().map(|&q| i32::from(q)).sum();
                let s = f16::from_f32(d.to_f32() * sum as f32);
                out.extend_from_slice(bytemuck::bytes_of(&BlockQ8_1 { d, s, qs }));
            }
        }
        DType::Q5_0
        | DType::Q5_1
        | DType::Q2_K
        | DType::Q3_K
        | DType::Q4_K
        | DType::Q5_K
        | DType::Q6_K
        | DType::Q8_K
        | DType::IQ4_NL
        | DType::IQ4_XS => {
            let x: Vec<f32> = (0..blocks * dtype.block_size())
                .map(|_| rng.gen_range(-1.5f32..1.5))
                .collect();
            out.resize(blocks * dtype.type_size(), 0);
            // Lengths are whole blocks by construction, so this cannot fail;
            // if it ever did, the short (empty) output shows it.
            if kiln_core::quant::quantize_row(dtype, &x, &mut out).is_err() {
                out.clear();
            }
        }
    }
    out
}

/// A random f16 scale with magnitude in `[lo, hi)` and random sign.
fn scale(rng: &mut impl Rng, lo: f32, hi: f32) -> f16 {
    let s = f16::from_f32(rng.gen_range(lo..hi));
    if rng.gen_bool(0.5) {
        -s
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes_and_ranges() {
        let mut rng = crate::rng(1);
        for dt in DType::ALL {
            // 256: a whole number of blocks for every format (QK_K = 256).
            let bytes = rand_rows(&mut rng, dt, 3, 256);
            assert_eq!(bytes.len(), 3 * dt.row_bytes("t", 256).unwrap(), "{dt}");
            let mut x = vec![0.0; 256];
            for row in bytes.chunks(dt.row_bytes("t", 256).unwrap()) {
                kiln_core::quant::dequantize_row(dt, row, &mut x).unwrap();
                assert!(x.iter().all(|v| v.abs() < 2.7), "{dt}: {x:?}");
            }
        }
    }
}
