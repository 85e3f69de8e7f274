//! Case table and driver for `matmul` (`out[m, n] = x[m, k] · w[n, k]ᵀ`).
//!
//! The reference (`matmul_ref`) multiplies the stored weights with f32
//! activations. Fast backends quantize the activations to 8 bits per element
//! in blocks as long as the weight's (GGML Q8_0 / Q8_1: 32 per block, Q8_K:
//! 256 per block for the K-quants, IQ4_XS and the IQ2/IQ3 i-quants;
//! `d = amax/127` either way), so
//! each output is held to a bound derived from that quantization, element by
//! element:
//!
//! - activation codes: `|x_e - d q_e| <= d * ACT_Q8_ERR` for every element of
//!   a block with scale `d = amax_b / 127`, so the error of one output is at
//!   most `sum_b d_b * ACT_Q8_ERR * sum_{e in b} |w_e|`;
//! - f32 accumulation: at most `(nb + F32_TERMS_SLACK) * 2^-24` times the sum
//!   of the magnitudes of the block terms a kernel adds, `nb = k / block`
//!   (bounded from the weight block headers, see [`block_term_bound`]).
//!
//! Float weights (F32/F16/BF16) are not quantized: only the f32 bound applies,
//! `(k + F32_TERMS_SLACK) * 2^-24 * sum_e |w_e x_e|` (any summation order).
//! A `Options::tol` override replaces these bounds with that [`Tol`].

use super::{expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{nmse, rand_f32, rand_rows, Guarded, Report};
use half::f16;
use kiln_core::ops::matmul::{matmul_ref, MatmulParams};
use kiln_core::quant::dequantize_row;
use kiln_core::DType;
use rand::Rng;

/// Implementation under test: `(params, w bytes, x, out)`.
pub type MatmulFn<'a> =
    dyn Fn(&MatmulParams, &[u8], &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Worst-case activation code error in units of the block scale `d`:
/// 1/2 from rounding to the nearest code, plus `127 * 2^-11` when the scale
/// is stored as f16 (GGML blocks: `q` is computed with the f32 scale, the
/// product uses the f16 one); f32-scale backends stay within the 1/2.
pub const ACT_Q8_ERR: f64 = 0.5 + 127.0 / 2048.0;

/// Extra rounding steps per output on top of one per accumulated term:
/// scale products, lane reductions, the f64 reference's final rounding.
pub const F32_TERMS_SLACK: f64 = 16.0;

/// Unit roundoff of f32.
const U32: f64 = 1.0 / (1u64 << 24) as f64;

/// One case: shape and weight format.
#[derive(Debug, Clone, Copy)]
pub struct MatmulCase {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub wtype: DType,
    pub big: bool,
}

/// Every weight format matmul is defined for.
pub const WTYPES: [DType; 19] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q5_0,
    DType::Q5_1,
    DType::IQ4_NL,
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
];
/// Token counts: decode (1), tile remainders (2, 3, 5, 17), whole tiles (8, 64).
pub const MS: [usize; 7] = [1, 2, 3, 5, 8, 17, 64];
/// Output features: one row, odd counts around the 2- and 4-row tiles.
pub const NS: [usize; 4] = [1, 7, 33, 257];
/// Input features: 1..3 blocks, SmolLM2's 576 (dim) and 1536 (ffn).
pub const KS: [usize; 5] = [32, 64, 96, 576, 1536];
/// Input features for the 256-element super-block formats (K-quants,
/// IQ4_XS, IQ2/IQ3): one and two super-blocks, and 7 (1536 + 256).
pub const KS_K: [usize; 3] = [256, 512, 1792];

/// The input-feature list for a weight format (its block size must divide k).
pub fn ks_for(wtype: DType) -> &'static [usize] {
    if wtype.block_size() == 256 {
        &KS_K
    } else {
        &KS
    }
}

/// The odd-shape cross product `WTYPES × MS × NS × ks_for(wtype)`, then
/// SmolLM2-135M's shapes (q/o 576×576, ffn up 1536×576, ffn down 576×1536,
/// the Q8_0 tied output 49152×576) for decode and a 512-token prefill
/// (large), and a decode / prefill pair for the K-quants a Q4_K_M file
/// mixes (Q4_K, Q6_K) at 576×1536.
pub fn cases() -> Vec<MatmulCase> {
    let mut v = Vec::new();
    for &wtype in &WTYPES {
        for &m in &MS {
            for &n in &NS {
                for &k in ks_for(wtype) {
                    v.push(MatmulCase {
                        m,
                        n,
                        k,
                        wtype,
                        big: false,
                    });
                }
            }
        }
    }
    for (n, k) in [(576, 576), (1536, 576), (576, 1536)] {
        v.push(MatmulCase {
            m: 1,
            n,
            k,
            wtype: DType::Q4_1,
            big: false,
        });
        v.push(MatmulCase {
            m: 512,
            n,
            k,
            wtype: DType::Q4_1,
            big: true,
        });
    }
    v.push(MatmulCase {
        m: 1,
        n: 49152,
        k: 576,
        wtype: DType::Q8_0,
        big: true,
    });
    for wtype in [DType::Q4_K, DType::Q6_K] {
        for (m, big) in [(1, false), (512, true)] {
            v.push(MatmulCase {
                m,
                n: 576,
                k: 1536,
                wtype,
                big,
            });
        }
    }
    v.push(MatmulCase {
        m: 0,
        n: 7,
        k: 64,
        wtype: DType::Q4_1,
        big: false,
    });
    v
}

/// Activations in ±1 with ~5% outliers (×8) so block scales differ, and one
/// all-zero row (scale 0) when `m >= 3`.
fn activations(rng: &mut impl Rng, m: usize, k: usize) -> Vec<f32> {
    let mut x = rand_f32(rng, m * k, -1.0, 1.0);
    for v in x.iter_mut() {
        if rng.gen_bool(0.05) {
            *v *= 8.0;
        }
    }
    if m >= 3 {
        x[k..2 * k].fill(0.0);
    }
    x
}

fn f16_at(b: &[u8], off: usize) -> f64 {
    f64::from(f16::from_le_bytes([b[off], b[off + 1]]).to_f32())
}

/// Largest magnitude of one block's contribution per unit of
/// `sum |d_x q_x|` over the block, i.e. a bound `T` with
/// `|term| <= T * sum_j |d_x q_x[j]|` for every f32 quantity a kernel forms
/// from this block (so its f32 roundings are at most `2^-24 T sum|d_x q_x|`
/// each). Per format, from the block layout (`d`, `dmin`, `m` the f16
/// header fields; `sc`, `mn` the integer sub-block scales and mins):
///
/// - Q4_0 `15|d| + 8|d|`, Q5_0 `31|d| + 16|d|`: kernels keep the codes
///   unsigned and add the offset as a separate term `m = -8d` / `-16d`.
/// - Q4_1 `15|d| + |m|`, Q5_1 `31|d| + |m|`: unsigned code term + min term.
/// - Q8_0 `128|d|`; IQ4_NL `127|d|` (largest |grid value|).
/// - Q2_K `3|d| max sc + |dmin| max mn`, Q4_K `15|d| max sc + |dmin| max mn`,
///   Q5_K `31|d| max sc + |dmin| max mn`: the scaled code sum
///   `d * sum_s sc_s sum q q_x` and the min sum `dmin * sum_s mn_s bsum_s`
///   are separate f32 terms (codes unsigned: 0..3, 0..15, 0..31).
/// - Q3_K `4|d| max|sc - 32|`, Q6_K `32|d| max|sc|`, IQ4_XS
///   `127|d| max|ls - 32|`: one signed term (|code| <= 4, 32, 127); code
///   offsets are removed in integer arithmetic before any rounding.
/// - IQ2_XXS / IQ2_XS `43 |d|/8 max(2ls+1)`, IQ3_XXS `62 |d|/4 max(2ls+1)`,
///   IQ3_S `15 |d| max(1+2ls)`: largest grid magnitude times the largest
///   odd multiplier times the block scale of the integer dot.
///
/// Taking the maximum over the sub-blocks bounds every sub-block's share.
pub fn block_term_bound(wtype: DType, block: &[u8]) -> f64 {
    let h = |off: usize| f16_at(block, off).abs();
    match wtype {
        DType::Q4_0 => 23.0 * h(0),
        DType::Q4_1 => 15.0 * h(0) + h(2),
        DType::Q5_0 => 47.0 * h(0),
        DType::Q5_1 => 31.0 * h(0) + h(2),
        DType::Q8_0 => 128.0 * h(0),
        DType::IQ4_NL => 127.0 * h(0),
        DType::Q2_K => {
            let sc = block[..16].iter().map(|&b| b & 0x0f).max().unwrap_or(0);
            let mn = block[..16].iter().map(|&b| b >> 4).max().unwrap_or(0);
            3.0 * h(80) * f64::from(sc) + h(82) * f64::from(mn)
        }
        DType::Q4_K | DType::Q5_K => {
            let mut s = [0u8; 12];
            s.copy_from_slice(&block[4..16]);
            let (sc, mn) = kiln_core::quant::unpack_scale_min_k4(&s);
            let qmax = if wtype == DType::Q4_K { 15.0 } else { 31.0 };
            let (sc, mn) = (sc.iter().max(), mn.iter().max());
            qmax * h(0) * f64::from(*sc.unwrap_or(&0)) + h(2) * f64::from(*mn.unwrap_or(&0))
        }
        DType::Q3_K => {
            // 6-bit codes (value + 32), as kiln_core's Q3_K unpacking.
            let s = &block[96..108];
            let amax = (0..16)
                .map(|j| {
                    let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
                    let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
                    (i32::from(low | (high << 4)) - 32).abs()
                })
                .max()
                .unwrap_or(0);
            4.0 * h(108) * f64::from(amax)
        }
        DType::Q6_K => {
            let amax = block[192..208]
                .iter()
                .map(|&b| i32::from(b as i8).abs())
                .max()
                .unwrap_or(0);
            32.0 * h(208) * f64::from(amax)
        }
        DType::IQ4_XS => {
            let sh = u16::from_le_bytes([block[2], block[3]]);
            let amax = (0..8)
                .map(|g| {
                    let lo = (block[4 + g / 2] >> (4 * (g % 2))) & 0x0f;
                    let hi = ((sh >> (2 * g)) & 3) as u8;
                    (i32::from(lo | (hi << 4)) - 32).abs()
                })
                .max()
                .unwrap_or(0);
            127.0 * h(0) * f64::from(amax)
        }
        DType::IQ2_XXS | DType::IQ3_XXS => {
            // ls: top 4 bits of each sub-block's sign/scale word.
            let (words, gmax, scale) = if wtype == DType::IQ2_XXS {
                (
                    (0..8).map(|ib| 2 + 8 * ib + 4).collect::<Vec<_>>(),
                    43.0,
                    0.125,
                )
            } else {
                ((0..8).map(|ib| 66 + 4 * ib).collect::<Vec<_>>(), 62.0, 0.25)
            };
            let ls = words.iter().map(|&o| block[o + 3] >> 4).max().unwrap_or(0);
            gmax * scale * h(0) * f64::from(2 * ls + 1)
        }
        DType::IQ2_XS => {
            let s = &block[66..74];
            let ls = s
                .iter()
                .flat_map(|&b| [b & 0x0f, b >> 4])
                .max()
                .unwrap_or(0);
            43.0 * 0.125 * h(0) * f64::from(2 * ls + 1)
        }
        DType::IQ3_S => {
            let s = &block[106..110];
            let ls = s
                .iter()
                .flat_map(|&b| [b & 0x0f, b >> 4])
                .max()
                .unwrap_or(0);
            15.0 * h(0) * f64::from(2 * ls + 1)
        }
        _ => 0.0,
    }
}

/// Per-output error bound (see the module docs) for weights `w` `[n, k]`
/// and activations `x` `[m, k]`. MLX weights: the f32-activation bound of
/// [`super::matmul_mlx::mlx_error_bounds`] (its f16-operand variant is for
/// CUDA's prefill path).
pub fn error_bounds(p: &MatmulParams, w: &[u8], x: &[f32]) -> kiln_core::Result<Vec<f64>> {
    let (m, n, k) = (p.m, p.n, p.k);
    let row = p.w_row_bytes()?;
    if let DType::Mlx(_) = p.wtype {
        return Ok(super::matmul_mlx::mlx_error_bounds(p, w, x, false));
    }
    let mut wf = vec![0.0f32; n * k];
    for j in 0..n {
        dequantize_row(
            p.wtype,
            &w[j * row..(j + 1) * row],
            &mut wf[j * k..(j + 1) * k],
        )?;
    }
    let mut bound = vec![0.0f64; m * n];
    if p.wtype.is_quantized() {
        let (bs, ts) = (p.wtype.block_size(), p.wtype.type_size());
        let nb = k / bs;
        let terms = (nb as f64 + F32_TERMS_SLACK) * U32;
        // Per activation block: scale d and sum |x| (+ the code rounding).
        let mut dx = vec![0.0f64; m * nb];
        let mut sx = vec![0.0f64; m * nb];
        for (i, (d, s)) in dx.chunks_mut(nb).zip(sx.chunks_mut(nb)).enumerate() {
            for b in 0..nb {
                let xb = &x[i * k + b * bs..i * k + (b + 1) * bs];
                let amax = xb.iter().fold(0.0f64, |a, v| a.max(f64::from(v.abs())));
                d[b] = amax / 127.0;
                s[b] = xb.iter().map(|v| f64::from(v.abs())).sum::<f64>()
                    + bs as f64 * d[b] * ACT_Q8_ERR;
            }
        }
        for j in 0..n {
            let wrow = &w[j * row..(j + 1) * row];
            let wabs: Vec<f64> = wf[j * k..(j + 1) * k]
                .chunks(bs)
                .map(|c| c.iter().map(|v| f64::from(v.abs())).sum())
                .collect();
            let tb: Vec<f64> = wrow
                .chunks(ts)
                .map(|blk| block_term_bound(p.wtype, blk))
                .collect();
            for i in 0..m {
                let mut e = 0.0;
                for b in 0..nb {
                    e += dx[i * nb + b] * ACT_Q8_ERR * wabs[b] + terms * tb[b] * sx[i * nb + b];
                }
                bound[i * n + j] = e;
            }
        }
    } else {
        let terms = (k as f64 + F32_TERMS_SLACK) * U32;
        for i in 0..m {
            for j in 0..n {
                let s: f64 = wf[j * k..(j + 1) * k]
                    .iter()
                    .zip(&x[i * k..(i + 1) * k])
                    .map(|(a, b)| f64::from(a.abs()) * f64::from(b.abs()))
                    .sum();
                bound[i * n + j] = terms * s;
            }
        }
    }
    Ok(bound)
}

/// Guards, unwritten (NaN) outputs, then every element within its bound.
pub(crate) fn check_bounded(out: &Guarded, want: &[f32], bound: &[f64]) -> Result<(), String> {
    out.check_guards()?;
    let got = out.as_slice();
    let mut bad = 0usize;
    let mut first = String::new();
    let mut worst = 0.0f64;
    for (idx, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (f64::from(g) - f64::from(w)).abs();
        let ratio = if err.is_nan() {
            f64::INFINITY
        } else {
            err / b.max(f64::MIN_POSITIVE)
        };
        if err.is_nan() || err > b {
            if bad < 6 {
                first += &format!(" [{idx}] got {g:e} want {w:e} bound {b:.3e};");
            }
            bad += 1;
        }
        if err > 0.0 || err.is_nan() {
            worst = worst.max(ratio);
        }
    }
    if bad == 0 {
        return Ok(());
    }
    Err(format!(
        "out: {bad}/{} elements over their bound (worst err/bound {worst:.3}, nmse {:.3e}); first:{}",
        got.len(),
        nmse(got, want),
        first.trim_end_matches(';')
    ))
}

/// Run every `matmul` case against `imp` (cases of formats outside
/// `opts.matmul_wtypes` are skipped).
pub fn check_matmul(imp: &MatmulFn<'_>) -> Report {
    check_matmul_with(imp, &Options::default())
}

/// [`check_matmul`] with explicit options.
pub fn check_matmul_with(imp: &MatmulFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("matmul", opts);
    let tol = opts.tol;
    for cs in cases() {
        if !(opts.matmul_wtypes)(cs.wtype) {
            run.skip();
            continue;
        }
        let name = format!("{} m={} n={} k={}", cs.wtype, cs.m, cs.n, cs.k);
        run.case(&name, cs.big, |rng| {
            let p = MatmulParams {
                m: cs.m,
                n: cs.n,
                k: cs.k,
                wtype: cs.wtype,
            };
            let w = rand_rows(rng, cs.wtype, cs.n, cs.k);
            let x = activations(rng, cs.m, cs.k);
            let mut want = vec![0.0; cs.m * cs.n];
            matmul_ref(&p, &w, &x, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(want.len());
            imp(&p, &w, &x, out.as_mut_slice()).map_err(impl_failed)?;
            match tol {
                Some(t) => super::check_output("out", &out, &want, t),
                None => check_bounded(&out, &want, &error_bounds(&p, &w, &x).map_err(ref_failed)?),
            }
        });
    }
    let p = MatmulParams {
        m: 2,
        n: 3,
        k: 64,
        wtype: DType::Q4_1,
    };
    let wlen = 3 * 40;
    run.case("rejects k not a multiple of the block", false, |rng| {
        let bad = MatmulParams { k: 48, ..p };
        let w = rand_rows(rng, DType::F32, 3, 48);
        let mut out = Guarded::new(6);
        expect_reject(imp(&bad, &w, &[0.5; 96], out.as_mut_slice()), &out)
    });
    run.case("rejects a short w", false, |rng| {
        let w = rand_rows(rng, p.wtype, 3, 64);
        let mut out = Guarded::new(6);
        expect_reject(
            imp(&p, &w[..wlen - 1], &[0.5; 128], out.as_mut_slice()),
            &out,
        )
    });
    run.case("rejects a short x", false, |rng| {
        let w = rand_rows(rng, p.wtype, 3, 64);
        let mut out = Guarded::new(6);
        expect_reject(imp(&p, &w, &[0.5; 127], out.as_mut_slice()), &out)
    });
    run.case("rejects a short out", false, |rng| {
        let w = rand_rows(rng, p.wtype, 3, 64);
        let mut out = Guarded::new(5);
        expect_reject(imp(&p, &w, &[0.5; 128], out.as_mut_slice()), &out)
    });
    run.case("rejects a long out", false, |rng| {
        let w = rand_rows(rng, p.wtype, 3, 64);
        let mut out = Guarded::new(7);
        expect_reject(imp(&p, &w, &[0.5; 128], out.as_mut_slice()), &out)
    });
    if (opts.matmul_wtypes)(DType::Q4_K) {
        run.case("rejects k not a multiple of 256 for Q4_K", false, |rng| {
            let bad = MatmulParams {
                k: 64,
                wtype: DType::Q4_K,
                ..p
            };
            let w = rand_rows(rng, DType::F32, 3, 64);
            let mut out = Guarded::new(6);
            expect_reject(imp(&bad, &w, &[0.5; 128], out.as_mut_slice()), &out)
        });
    }
    run.case("rejects Q8_K weights", false, |rng| {
        let bad = MatmulParams {
            k: 256,
            wtype: DType::Q8_K,
            ..p
        };
        let w = rand_rows(rng, DType::Q8_K, 3, 256);
        let mut out = Guarded::new(6);
        expect_reject(imp(&bad, &w, &[0.5; 512], out.as_mut_slice()), &out)
    });
    run.case("rejects Q8_1 weights", false, |rng| {
        let bad = MatmulParams {
            wtype: DType::Q8_1,
            ..p
        };
        let w = rand_rows(rng, DType::Q8_1, 3, 64);
        let mut out = Guarded::new(6);
        expect_reject(imp(&bad, &w, &[0.5; 128], out.as_mut_slice()), &out)
    });
    run.finish()
}
