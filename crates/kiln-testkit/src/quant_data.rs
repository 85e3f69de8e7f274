//! Random rows in any [`DType`], built block by block from random codes and
//! sane random scales (not through a quantizer), so a dequantizing op or a
//! dot kernel sees every code value and every sub-block scale / min code
//! (random bytes), with f16 scales chosen so element magnitudes stay below
//! about 2.6.

use half::{bf16, f16};
use kiln_core::quant::{BlockQ4_0, BlockQ4_1, BlockQ8K, BlockQ8_0, BlockQ8_1};
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
        DType::Q8_K => {
            for _ in 0..blocks {
                let mut b = BlockQ8K {
                    d: rng.gen_range(0.001f32..0.02),
                    qs: [0; 256],
                    bsums: [0; 16],
                };
                for q in b.qs.iter_mut() {
                    *q = rng.gen_range(-127..=127);
                }
                for (s, q) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
                    *s = q.iter().map(|&v| i16::from(v)).sum();
                }
                out.extend_from_slice(bytemuck::bytes_of(&b));
            }
        }
        DType::Mlx(f) => {
            // Random code words; scale of either sign with |scale * max code|
            // in [0.1, 1), bias in (-1, 1), stored in the scale dtype.
            let qmax = ((1u32 << f.bits()) - 1) as f32;
            for _ in 0..blocks {
                let s = rng.gen_range(0.1f32..1.0) / qmax;
                let s = if rng.gen_bool(0.5) { -s } else { s };
                let b = rng.gen_range(-1.0f32..1.0);
                for v in [s, b] {
                    match f.scale_dtype() {
                        DType::F32 => out.extend(v.to_le_bytes()),
                        DType::BF16 => out.extend(bf16::from_f32(v).to_le_bytes()),
                        _ => out.extend(f16::from_f32(v).to_le_bytes()),
                    }
                }
                out.extend((0..4 * f.words_per_block()).map(|_| rng.gen::<u8>()));
            }
        }
        _ => {
            // Random bytes (codes, packed sub-block scales and mins), then
            // the f16 header fields at `fields` set to sane values. Bounds
            // on |x| per format: largest |code| × largest sub-block scale ×
            // the f16 range given here, plus the largest min.
            let (fields, ranges): (&[usize], [(f32, f32); 2]) = match dtype {
                // d * (q - 16), |q - 16| <= 16
                DType::Q5_0 => (&[0], [(0.01, 0.15), (0.0, 0.0)]),
                // d * q + m, q <= 31; m is signed below
                DType::Q5_1 => (&[0, 2], [(0.005, 0.05), (0.0, 1.0)]),
                // d * grid, |grid| <= 127
                DType::IQ4_NL => (&[0], [(0.001, 0.02), (0.0, 0.0)]),
                // d*sc*q - dmin*mn, sc, mn <= 15, q <= 3
                DType::Q2_K => (&[80, 82], [(0.002, 0.028), (0.002, 0.08)]),
                // d*(sc-32)*q, |sc-32| <= 32, |q| <= 4
                DType::Q3_K => (&[108], [(0.001, 0.02), (0.0, 0.0)]),
                // sc, mn <= 63, q <= 15
                DType::Q4_K => (&[0, 2], [(0.0002, 0.0013), (0.0002, 0.02)]),
                // q <= 31
                DType::Q5_K => (&[0, 2], [(0.0001, 0.00066), (0.0002, 0.02)]),
                // d*sc*(q-32), |sc| <= 128, |q-32| <= 32
                DType::Q6_K => (&[208], [(0.0001, 0.0006), (0.0, 0.0)]),
                // d*(0.5+ls)/4*grid, ls <= 15, grid <= 43
                DType::IQ2_XXS | DType::IQ2_XS => (&[0], [(0.002, 0.014), (0.0, 0.0)]),
                // d*(0.5+ls)/2*grid, grid <= 62; IQ3_S d*(1+2ls)*grid, grid <= 15
                DType::IQ3_XXS | DType::IQ3_S => (&[0], [(0.0007, 0.005), (0.0, 0.0)]),
                // d*(ls-32)*grid, |ls-32| <= 32, |grid| <= 127
                _ => (&[0], [(0.0001, 0.0006), (0.0, 0.0)]),
            };
            let ts = dtype.type_size();
            for _ in 0..blocks {
                let start = out.len();
                out.extend((0..ts).map(|_| rng.gen::<u8>()));
                for (i, &off) in fields.iter().enumerate() {
                    let (lo, hi) = ranges[i];
                    let v = if dtype == DType::Q5_1 && i == 1 {
                        // Q5_1's min: signed, |m| < 1.
                        f16::from_f32(rng.gen_range(-hi..hi))
                    } else if matches!(
                        dtype,
                        DType::Q5_0
                            | DType::IQ4_NL
                            | DType::Q3_K
                            | DType::Q6_K
                            | DType::IQ4_XS
                            | DType::IQ2_XXS
                            | DType::IQ2_XS
                            | DType::IQ3_XXS
                            | DType::IQ3_S
                    ) {
                        // Symmetric formats: a scale of either sign.
                        scale(rng, lo, hi)
                    } else {
                        // K-quant d / dmin are non-negative in real files.
                        f16::from_f32(rng.gen_range(lo..hi))
                    };
                    out[start + off..start + off + 2].copy_from_slice(&v.to_le_bytes());
                }
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
