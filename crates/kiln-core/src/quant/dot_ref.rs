//! Reference dot products for the weight formats added after Q4_0/Q4_1/Q8_0,
//! with activations in the 8-bit format each format's fast path uses (as
//! ggml's CPU backend does): Q8_0 for Q5_0 and IQ4_NL, Q8_1 for Q5_1, Q8_K for
//! the K-quants Q2_K..Q6_K, IQ4_XS and the IQ2/IQ3 i-quants (`iq23.rs`
//! implements their [`Q8KDot`]).
//!
//! Every block term is an integer sum times scales:
//!
//! - 32-element blocks: `d_w * d_x * sum_j c_w[j] * q_x[j]` with the signed
//!   code value `c_w` (`q - 16` for Q5_0, the grid value for IQ4_NL); Q5_1
//!   adds `m_w * s_x` (the activation's stored block sum, as in Q4_1).
//! - Q8_K super-blocks: `d_x * (d_w * isum - dmin_w * msum)` where
//!   `isum = sum_s sc_s * sum_{j in s} c_w[j] * q_x[j]` over the sub-blocks
//!   `s` with their integer scales `sc_s`, and `msum = sum_s m_s * bsum_s`
//!   (integer mins times the activation's stored 16-element sums `bsums`;
//!   0 for formats without mins). [`Q8KDot::int_dot`] returns the two
//!   integer sums, which are exact in i32 (largest: Q6_K,
//!   `256 * 32 * 127 * 128 < 2^28`).
//!
//! The references accumulate the block terms in f64 (each term within
//! 2^-53 relative of exact) and round once to f32: the defined value fast
//! paths are compared to. They equal `vec_dot_ref` of the dequantized
//! activations up to the f32 roundings inside the dequantizers (tested).

#![allow(non_snake_case)] // names spell the GGML formats: q4_K, q8_K

use super::iq4::KVALUES_IQ4NL;
use super::k_quants::{code_2bit, nibble_k4, unpack_scale_min_k4, unpack_scales_q3k};
use super::q5::unpack5;
use super::{
    check_blocks, BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS, BlockIQ4NL, BlockIQ4XS,
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K, BlockQ8K, BlockQ8_0,
    BlockQ8_1,
};
use crate::Result;

/// A super-block format whose dot product runs against Q8_K activations.
pub trait Q8KDot: bytemuck::Pod {
    /// `(isum, msum)` of one super-block against one Q8_K block (see the
    /// module docs): the block term is `d_x * (d_w * isum - dmin_w * msum)`.
    fn int_dot(&self, x: &BlockQ8K) -> (i32, i32);
    /// `(d_w, dmin_w)` widened to f32 (`dmin_w = 0` for formats without mins).
    fn scales(&self) -> (f32, f32);
}

#[inline]
fn dot16(c: impl Iterator<Item = i32>, x: &[i8]) -> i32 {
    c.zip(x).map(|(a, &b)| a * i32::from(b)).sum()
}

impl Q8KDot for BlockQ2K {
    fn int_dot(&self, x: &BlockQ8K) -> (i32, i32) {
        let (mut isum, mut msum) = (0i32, 0i32);
        for (s, &sm) in self.scales.iter().enumerate() {
            let c = (16 * s..16 * s + 16).map(|i| i32::from(code_2bit(&self.qs, i)));
            isum += i32::from(sm & 0x0f) * dot16(c, &x.qs[16 * s..16 * s + 16]);
            msum += i32::from(sm >> 4) * i32::from(x.bsums[s]);
        }
        (isum, msum)
    }
    fn scales(&self) -> (f32, f32) {
        (self.d.to_f32(), self.dmin.to_f32())
    }
}

impl Q8KDot for BlockQ3K {
    fn int_dot(&self, x: &BlockQ8K) -> (i32, i32) {
        let sc = unpack_scales_q3k(&self.scales);
        let mut isum = 0i32;
        for (s, &scale) in sc.iter().enumerate() {
            let c = (16 * s..16 * s + 16).map(|i| {
                let h = (self.hmask[i % 32] >> (i / 32)) & 1;
                i32::from(code_2bit(&self.qs, i)) - if h == 0 { 4 } else { 0 }
            });
            isum += (i32::from(scale) - 32) * dot16(c, &x.qs[16 * s..16 * s + 16]);
        }
        (isum, 0)
    }
    fn scales(&self) -> (f32, f32) {
        (self.d.to_f32(), 0.0)
    }
}

/// Q4_K / Q5_K: 8 sub-blocks of 32, codes from `code(i)`.
fn int_dot_k4(scales: &[u8; 12], code: impl Fn(usize) -> i32, x: &BlockQ8K) -> (i32, i32) {
    let (sc, m) = unpack_scale_min_k4(scales);
    let (mut isum, mut msum) = (0i32, 0i32);
    for s in 0..8 {
        let c = (32 * s..32 * s + 32).map(&code);
        isum += i32::from(sc[s]) * dot16(c, &x.qs[32 * s..32 * s + 32]);
        msum += i32::from(m[s]) * (i32::from(x.bsums[2 * s]) + i32::from(x.bsums[2 * s + 1]));
    }
    (isum, msum)
}

impl Q8KDot for BlockQ4K {
    fn int_dot(&self, x: &BlockQ8K) -> (i32, i32) {
        int_dot_k4(&self.scales, |i| i32::from(nibble_k4(&self.qs, i)), x)
    }
    fn scales(&self) -> (f32, f32) {
        (self.d.to_f32(), self.dmin.to_f32())
    }
}

impl Q8KDot for BlockQ5K {
    fn int_dot(&self, x: &BlockQ8K) -> (i32, i32) {
        let code = |i: usize| {
            let h = (self.qh[i % 32] >> (i / 32)) & 1;
            i32::from(nibble_k4(&self.qs, i) | (h << 4))
        };
        int_dot_k4(&self.scales, code, x)
    }
    fn scales(&self) -> (f32, f32) {
        (self.d.to_f32(), self.dmin.to_f32())
    }
}

impl Q8KDot for BlockQ6K {
    fn int_dot(&self, x: &BlockQ8K) -> (i32, i32) {
        let code = |i: usize| {
            let (h, r) = (i / 128, i % 128);
            let lo = (self.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
            let hi = (self.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
            i32::from(lo | (hi << 4)) - 32
        };
        let mut isum = 0i32;
        for (s, &scale) in self.scales.iter().enumerate() {
            let c = (16 * s..16 * s + 16).map(code);
            isum += i32::from(scale) * dot16(c, &x.qs[16 * s..16 * s + 16]);
        }
        (isum, 0)
    }
    fn scales(&self) -> (f32, f32) {
        (self.d.to_f32(), 0.0)
    }
}

/// Grid values of one 32-element IQ4 group (Q4_0 nibble order).
#[inline]
fn iq4_group(qs: &[u8]) -> impl Iterator<Item = i32> + '_ {
    let g = |q: u8| i32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)]);
    let lo = qs.iter().take(16).map(move |&q| g(q));
    let hi = qs.iter().take(16).map(move |&q| g(q >> 4));
    lo.chain(hi)
}

impl Q8KDot for BlockIQ4XS {
    fn int_dot(&self, x: &BlockQ8K) -> (i32, i32) {
        let mut isum = 0i32;
        for ib in 0..8 {
            let lo = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let hi = ((self.scales_h >> (2 * ib)) & 3) as u8;
            let ls = i32::from(lo | (hi << 4)) - 32;
            let c = iq4_group(&self.qs[16 * ib..16 * ib + 16]);
            isum += ls * dot16(c, &x.qs[32 * ib..32 * ib + 32]);
        }
        (isum, 0)
    }
    fn scales(&self) -> (f32, f32) {
        (self.d.to_f32(), 0.0)
    }
}

/// Reference `B × Q8_K` dot for any [`Q8KDot`] format:
/// `sum_b d_x * (d_w * isum - dmin_w * msum)` in f64, rounded once.
/// Errors when the block counts differ.
pub fn vec_dot_q8_K_ref<B: Q8KDot>(w: &[B], x: &[BlockQ8K]) -> Result<f32> {
    check_blocks("quant::vec_dot_q8_K_ref", w.len(), x.len())?;
    let mut acc = 0.0f64;
    for (bw, bx) in w.iter().zip(x) {
        let (isum, msum) = bw.int_dot(bx);
        let (d, dmin) = bw.scales();
        acc +=
            f64::from(bx.d) * (f64::from(d) * f64::from(isum) - f64::from(dmin) * f64::from(msum));
    }
    Ok(acc as f32)
}

/// Reference Q2_K × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_q2_K_q8_K_ref(w: &[BlockQ2K], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference Q3_K × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_q3_K_q8_K_ref(w: &[BlockQ3K], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference Q4_K × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_q4_K_q8_K_ref(w: &[BlockQ4K], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference Q5_K × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_q5_K_q8_K_ref(w: &[BlockQ5K], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference Q6_K × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_q6_K_q8_K_ref(w: &[BlockQ6K], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference IQ2_XXS × Q8_K dot ([`vec_dot_q8_K_ref`]; integer sums in `iq23.rs`).
pub fn vec_dot_iq2_xxs_q8_K_ref(w: &[BlockIQ2XXS], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference IQ2_XS × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_iq2_xs_q8_K_ref(w: &[BlockIQ2XS], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference IQ3_XXS × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_iq3_xxs_q8_K_ref(w: &[BlockIQ3XXS], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference IQ3_S × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_iq3_s_q8_K_ref(w: &[BlockIQ3S], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}
/// Reference IQ4_XS × Q8_K dot ([`vec_dot_q8_K_ref`]).
pub fn vec_dot_iq4_xs_q8_K_ref(w: &[BlockIQ4XS], x: &[BlockQ8K]) -> Result<f32> {
    vec_dot_q8_K_ref(w, x)
}

#[inline]
fn isum32(c: impl Iterator<Item = i32>, x: &[i8; 32]) -> i32 {
    dot16(c, x)
}

/// Reference Q5_0 × Q8_0 dot: `sum_b d_w * d_x * sum_j (q_w[j] - 16) * q_x[j]`.
pub fn vec_dot_q5_0_q8_0_ref(w: &[BlockQ5_0], x: &[BlockQ8_0]) -> Result<f32> {
    check_blocks("quant::vec_dot_q5_0_q8_0_ref", w.len(), x.len())?;
    let mut acc = 0.0f64;
    for (bw, bx) in w.iter().zip(x) {
        let q = unpack5(bw.qh, &bw.qs);
        let isum = isum32(q.iter().map(|&v| i32::from(v) - 16), &bx.qs);
        acc += f64::from(bw.d.to_f32()) * f64::from(bx.d.to_f32()) * f64::from(isum);
    }
    Ok(acc as f32)
}

/// Reference Q5_1 × Q8_1 dot: `sum_b d_w * d_x * sum_j q_w[j] * q_x[j] + m_w * s_x`
/// (the activation's stored `s`, as the fast paths use it).
pub fn vec_dot_q5_1_q8_1_ref(w: &[BlockQ5_1], x: &[BlockQ8_1]) -> Result<f32> {
    check_blocks("quant::vec_dot_q5_1_q8_1_ref", w.len(), x.len())?;
    let mut acc = 0.0f64;
    for (bw, bx) in w.iter().zip(x) {
        let q = unpack5(bw.qh, &bw.qs);
        let isum = isum32(q.iter().map(|&v| i32::from(v)), &bx.qs);
        acc += f64::from(bw.d.to_f32()) * f64::from(bx.d.to_f32()) * f64::from(isum);
        acc += f64::from(bw.m.to_f32()) * f64::from(bx.s.to_f32());
    }
    Ok(acc as f32)
}

/// Reference IQ4_NL × Q8_0 dot: `sum_b d_w * d_x * sum_j grid[q_w[j]] * q_x[j]`.
pub fn vec_dot_iq4_nl_q8_0_ref(w: &[BlockIQ4NL], x: &[BlockQ8_0]) -> Result<f32> {
    check_blocks("quant::vec_dot_iq4_nl_q8_0_ref", w.len(), x.len())?;
    let mut acc = 0.0f64;
    for (bw, bx) in w.iter().zip(x) {
        let isum = isum32(iq4_group(&bw.qs), &bx.qs);
        acc += f64::from(bw.d.to_f32()) * f64::from(bx.d.to_f32()) * f64::from(isum);
    }
    Ok(acc as f32)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::super::{dequantize_row, quantize_row, vec_dot_ref, BlockFormat};
    use super::*;
    use crate::DType;
    use half::f16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Offsets of the f16 scale fields of each format (random bytes there
    /// could be inf/NaN; they get sane random values instead).
    fn f16_fields(dt: DType) -> &'static [usize] {
        match dt {
            DType::Q2_K => &[80, 82],
            DType::Q3_K => &[108],
            DType::Q6_K => &[208],
            DType::Q4_K | DType::Q5_K | DType::Q5_1 => &[0, 2],
            _ => &[0],
        }
    }

    /// Random bytes (every code and sub-block scale value) with f16 scales
    /// of random sign and magnitude in [0.001, 0.1).
    fn random_blocks(r: &mut ChaCha8Rng, dt: DType, nb: usize) -> Vec<u8> {
        let ts = dt.type_size();
        let mut v: Vec<u8> = (0..nb * ts).map(|_| r.gen()).collect();
        for blk in v.chunks_mut(ts) {
            for &off in f16_fields(dt) {
                let s = r.gen_range(0.001f32..0.1) * if r.gen_bool(0.5) { -1.0 } else { 1.0 };
                blk[off..off + 2].copy_from_slice(&f16::from_f32(s).to_le_bytes());
            }
        }
        v
    }

    /// The ref dot equals the f64 dot of the dequantized weights with the
    /// dequantized activations up to the dequantizers' f32 roundings: at
    /// most 4 per product (`d*sc`, `*q`, `- dmin*m`, `d_x*q_x`), each
    /// relative to `|w| + 2*max|dmin*m|`; `TOL_REL` = 16 f32 ulps covers
    /// them, plus one final rounding of each side.
    const TOL_REL: f64 = 16.0 / 16_777_216.0;

    fn check(dt: DType, w: &[u8], x: &[f32], got: f64) {
        let n = x.len();
        let mut wf = vec![0.0f32; n];
        dequantize_row(dt, w, &mut wf).unwrap();
        let mins = matches!(dt, DType::Q2_K | DType::Q4_K | DType::Q5_K | DType::Q5_1);
        let ts = dt.type_size();
        let bs = dt.block_size();
        let mut scale_sum = 0.0f64;
        for (b, blk) in w.chunks(ts).enumerate() {
            let mmax = if mins {
                let off = if dt == DType::Q2_K { 82 } else { 2 };
                let dm = f64::from(f16::from_le_bytes([blk[off], blk[off + 1]]).to_f32());
                dm.abs() * if dt == DType::Q5_1 { 1.0 } else { 63.0 }
            } else {
                0.0
            };
            for i in b * bs..(b + 1) * bs {
                scale_sum += (f64::from(wf[i].abs()) + 2.0 * mmax) * f64::from(x[i].abs());
            }
        }
        let want = vec_dot_ref(dt, w, x).unwrap();
        // + one f32 rounding of each result.
        let tol = TOL_REL * scale_sum + f64::from(want.abs()) / 8_388_608.0;
        let err = (got - f64::from(want)).abs();
        assert!(
            err <= tol,
            "{dt}: ref dot {got} vs f64 dot {want} (tol {tol:e})"
        );
    }

    #[test]
    fn q8_k_dots_match_dequantized_dot() {
        let mut r = ChaCha8Rng::seed_from_u64(0x006b_5f64_6f74);
        eprintln!("seed {:#x}", 0x006b_5f64_6f74u64);
        for dt in [
            DType::Q2_K,
            DType::Q3_K,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
            DType::IQ4_XS,
            DType::IQ2_XXS,
            DType::IQ2_XS,
            DType::IQ3_XXS,
            DType::IQ3_S,
        ] {
            // The IQ2/IQ3 i-quants have no quantizer: random blocks only.
            let iq23 = matches!(
                dt,
                DType::IQ2_XXS | DType::IQ2_XS | DType::IQ3_XXS | DType::IQ3_S
            );
            for (rep, nb) in [1usize, 2, 5].into_iter().cycle().take(30).enumerate() {
                let n = nb * 256;
                let w = if rep % 2 == 0 || iq23 {
                    random_blocks(&mut r, dt, nb)
                } else {
                    let xs: Vec<f32> = (0..n).map(|_| r.gen_range(-2.0f32..2.0)).collect();
                    let mut w = vec![0u8; nb * dt.type_size()];
                    quantize_row(dt, &xs, &mut w).unwrap();
                    w
                };
                let xs: Vec<f32> = (0..n).map(|_| r.gen_range(-3.0f32..3.0)).collect();
                let mut xq = vec![0u8; nb * 292];
                quantize_row(DType::Q8_K, &xs, &mut xq).unwrap();
                let mut xd = vec![0.0f32; n];
                dequantize_row(DType::Q8_K, &xq, &mut xd).unwrap();
                let xb: Vec<BlockQ8K> = pods(&xq);
                let got = match dt {
                    DType::Q2_K => vec_dot_q2_K_q8_K_ref(&pods(&w), &xb),
                    DType::Q3_K => vec_dot_q3_K_q8_K_ref(&pods(&w), &xb),
                    DType::Q4_K => vec_dot_q4_K_q8_K_ref(&pods(&w), &xb),
                    DType::Q5_K => vec_dot_q5_K_q8_K_ref(&pods(&w), &xb),
                    DType::Q6_K => vec_dot_q6_K_q8_K_ref(&pods(&w), &xb),
                    DType::IQ2_XXS => vec_dot_iq2_xxs_q8_K_ref(&pods(&w), &xb),
                    DType::IQ2_XS => vec_dot_iq2_xs_q8_K_ref(&pods(&w), &xb),
                    DType::IQ3_XXS => vec_dot_iq3_xxs_q8_K_ref(&pods(&w), &xb),
                    DType::IQ3_S => vec_dot_iq3_s_q8_K_ref(&pods(&w), &xb),
                    _ => vec_dot_iq4_xs_q8_K_ref(&pods(&w), &xb),
                }
                .unwrap();
                check(dt, &w, &xd, f64::from(got));
            }
        }
    }

    fn pods<B: bytemuck::Pod>(w: &[u8]) -> Vec<B> {
        w.chunks(std::mem::size_of::<B>())
            .map(bytemuck::pod_read_unaligned)
            .collect()
    }

    #[test]
    fn q8_0_and_q8_1_dots_match_dequantized_dot() {
        let mut r = ChaCha8Rng::seed_from_u64(0x0071_3564_6f74);
        eprintln!("seed {:#x}", 0x0071_3564_6f74u64);
        for dt in [DType::Q5_0, DType::Q5_1, DType::IQ4_NL] {
            for nb in [1usize, 3, 8, 1, 3, 8] {
                let w = random_blocks(&mut r, dt, nb);
                let n = nb * 32;
                let xs: Vec<f32> = (0..n).map(|_| r.gen_range(-3.0f32..3.0)).collect();
                let act = if dt == DType::Q5_1 {
                    DType::Q8_1
                } else {
                    DType::Q8_0
                };
                let mut xq = vec![0u8; nb * act.type_size()];
                quantize_row(act, &xs, &mut xq).unwrap();
                let mut xd = vec![0.0f32; n];
                dequantize_row(act, &xq, &mut xd).unwrap();
                let (got, adjust) = match dt {
                    DType::Q5_0 => (vec_dot_q5_0_q8_0_ref(&pods(&w), &pods(&xq)).unwrap(), 0.0),
                    DType::IQ4_NL => (vec_dot_iq4_nl_q8_0_ref(&pods(&w), &pods(&xq)).unwrap(), 0.0),
                    _ => {
                        // The Q5_1 ref uses the stored f16 `s`, not `d * sum(q)`:
                        // shift the dequantized dot by `m * (s - d*sum(q))`.
                        let (wb, xb): (Vec<BlockQ5_1>, Vec<BlockQ8_1>) = (pods(&w), pods(&xq));
                        let adjust: f64 = wb
                            .iter()
                            .zip(&xb)
                            .map(|(bw, bx)| {
                                let isum: i32 = bx.qs.iter().map(|&q| i32::from(q)).sum();
                                let exact = f64::from(bx.d.to_f32()) * f64::from(isum);
                                f64::from(bw.m.to_f32()) * (f64::from(bx.s.to_f32()) - exact)
                            })
                            .sum();
                        (vec_dot_q5_1_q8_1_ref(&wb, &xb).unwrap(), adjust)
                    }
                };
                check(dt, &w, &xd, f64::from(got) - adjust);
            }
        }
    }

    #[test]
    fn refs_reject_mismatched_blocks() {
        let x = [BlockQ8K::quantize(&[0.5; 256]); 2];
        let w = [BlockQ4K::quantize(&[0.5; 256])];
        assert!(vec_dot_q4_K_q8_K_ref(&w, &x).is_err());
        let w = [BlockQ5_0::quantize(&[0.5; 32])];
        let x = [BlockQ8_0::quantize(&[0.5; 32]); 3];
        assert!(vec_dot_q5_0_q8_0_ref(&w, &x).is_err());
    }
}
