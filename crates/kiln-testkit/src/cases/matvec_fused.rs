//! Case table and driver for `matvec_fused` (norm → mat-vec → epilogue; see
//! `kiln_core::ops::matvec_fused`).
//!
//! Fused kernels keep activations in f32, so every output is held to a bound
//! derived element by element from the f32 arithmetic, not a flat tolerance:
//!
//! - product `y = x'·wᵀ`: `(k + PRODUCT_SLACK) · 2⁻²⁴ · Σ_e |w_e x'_e|` — one
//!   rounding per accumulated term in any order, plus the f32 (not f64)
//!   normalization of `x'` (a few ulp per element, in `PRODUCT_SLACK`);
//! - residual: `+ 2⁻²⁴ |out|` for the final add;
//! - SwiGLU `silu(g)·u`: `|silu'(g)·u|·e_g + |silu(g)|·e_u` (silu' ≤ 1.1)
//!   plus `FAST_EXP_REL · |out|` for a fast `exp` and the products;
//! - with [`Options::fused_int8_x`], the product adds the activations'
//!   int8 rounding: `Σ_b d_b / 2 · Σ_{e ∈ b} |w_e|` over the 32-element
//!   blocks `b` of `x'`, `d_b = amax_b / 127` (times `1 + 2⁻¹⁰` for the
//!   backend's own `x'` and `d` differing from the reference's by a few
//!   ulp);
//! - RoPE: a rotation keeps the error vector's length, so a rotated pair's
//!   elements are off by at most `e_a + e_b`, plus `2⁻²³ · |value|`.
//!
//! Caches start NaN-poisoned on both sides: rows other than the positions'
//! must stay NaN. Ring caches (`QkvRope::ring`) get positions one to four
//! laps past `n_ctx`, each in a row of its own. The QKV cases take turns
//! with f32, f16 and bf16 caches:
//! a 16-bit cache holds the rounded value, and an implementation whose f32
//! result is within its bound `b` of the reference's may round to the
//! neighbouring 16-bit value, so there the bound is `b` plus one step of
//! the type at the value ([`HALF_STEP_F16`], [`HALF_STEP_BF16`]).

use super::{expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::guard::GuardedKv;
use crate::{rand_f32, rand_rows, Guarded, Report};
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::ops::matvec_fused::{
    matvec_fused_ref, FusedEpilogue, FusedRefIo, MatvecFusedParams, QkvRope,
};
use kiln_core::ops::rms_norm::{rms_norm_ref, RmsNormParams};
use kiln_core::quant::dequantize_row;
use kiln_core::{DType, KvType};
use rand::seq::SliceRandom;
use rand::Rng;

/// Implementation under test: params and plain slices (as the reference).
pub type MatvecFusedFn<'a> =
    dyn Fn(&MatvecFusedParams, FusedRefIo<'_>) -> kiln_core::Result<()> + 'a;

/// Extra roundings per product output beyond one per term: lane and warp
/// reductions, block-scale products, and the f32 normalization of x (its
/// sum of squares and rsqrt are a few ulp off the f64 reference's).
pub const PRODUCT_SLACK: f64 = 32.0;
/// Relative error allowed on a SwiGLU output for a fast `exp` (CUDA's
/// `__expf`: 2 + 1.16·|g| ulp, ~1e-6 relative for |g| ≤ 8) and two products.
pub const FAST_EXP_REL: f64 = 4e-6;
const U32: f64 = 1.0 / (1u64 << 24) as f64;
/// One step of f16 at `|x|` is at most `2⁻¹⁰ |x|` (normal values) or the
/// subnormal spacing 2⁻²⁴: the rounding of a value within the bound may
/// land one step away.
pub const HALF_STEP_F16: (f64, f64) = (1.0 / 1024.0, 1.0 / (1u64 << 24) as f64);
/// One step of bf16 at `|x|`: at most `2⁻⁷ |x|` (the smallest normal
/// spacing, 2⁻¹³³, is below any bound here).
pub const HALF_STEP_BF16: (f64, f64) = (1.0 / 128.0, 0.0);

#[derive(Debug, Clone, Copy)]
struct Case {
    m: usize,
    k: usize,
    wtype: DType,
    norm: bool,
    epi: FusedEpilogue,
    /// Weight rows.
    n: usize,
    /// Cache element type (QKV epilogue).
    kv: KvType,
    big: bool,
}

fn qkv(
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    n_rot: usize,
    n_ctx: usize,
) -> FusedEpilogue {
    FusedEpilogue::Qkv(QkvRope {
        q_dim: q_heads * head_dim,
        kv_dim: kv_heads * head_dim,
        head_dim,
        n_rot,
        freq_base: 10000.0,
        freq_scale: 1.0,
        n_ctx,
        ring: false,
    })
}

/// [`qkv`] into ring caches of `n_ctx` rows (sliding-window KV caches).
fn qkv_ring(
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    n_rot: usize,
    n_ctx: usize,
) -> FusedEpilogue {
    match qkv(q_heads, kv_heads, head_dim, n_rot, n_ctx) {
        FusedEpilogue::Qkv(q) => FusedEpilogue::Qkv(QkvRope { ring: true, ..q }),
        other => other,
    }
}

fn rows_of(epi: &FusedEpilogue, n: usize) -> usize {
    match epi {
        FusedEpilogue::Qkv(q) => q.q_dim + 2 * q.kv_dim,
        _ => n,
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    // Every format with a fused kernel: the 32-element block formats, the
    // float ones, then decode_kq.cuh's formats (Q5/IQ4_NL blocks and the
    // 256-element super-blocks), then decode_iq.cuh's i-quants.
    let wtypes = [
        DType::Q4_0,
        DType::Q4_1,
        DType::Q8_0,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::Q5_0,
        DType::Q5_1,
        DType::IQ4_NL,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
        DType::IQ4_XS,
        DType::Q3_K,
        DType::Q2_K,
        DType::IQ2_XXS,
        DType::IQ2_XS,
        DType::IQ3_XXS,
        DType::IQ3_S,
    ];
    let epis = [
        (FusedEpilogue::Store, 7),
        (FusedEpilogue::Store, 257),
        (FusedEpilogue::Residual, 33),
        (FusedEpilogue::SwiGlu, 2),
        (FusedEpilogue::SwiGlu, 66),
        (qkv(3, 1, 8, 8, 37), 0),
        (qkv(4, 2, 16, 8, 19), 0),
        // m <= 8 positions in a ring of 11 rows: distinct rows.
        (qkv_ring(3, 1, 8, 8, 11), 0),
    ];
    for (wi, &wtype) in wtypes.iter().enumerate() {
        // Quantized: rows loaded directly (row bytes not a multiple of 4)
        // and staged with 4-, 8- and 16-byte copies over one or several
        // chunks; 2560 with the norm also tests the fallback to direct loads
        // when normalized rows plus staging exceed 48 KB of shared memory.
        // Float: odd k (4-byte loads) and 16-byte loads. Super-blocks: one,
        // three (an odd count) and eight of them (m <= 3 with the norm:
        // (3 + 1) * 2048 floats fit the 48 KB of shared memory).
        let ks: &[usize] = if wtype.block_size() == 256 {
            &[256, 768, 2048]
        } else if wtype.is_quantized() {
            &[32, 96, 576, 1536, 2560]
        } else {
            &[45, 96, 1024]
        };
        for (ei, &(epi, n)) in epis.iter().enumerate() {
            for (ki, &k) in ks.iter().enumerate() {
                let m = [1, 2, 3, 8][(wi + ei + ki) % 4];
                let norm = (wi + ei + ki) % 2 == 0;
                v.push(Case {
                    m,
                    k,
                    wtype,
                    norm,
                    epi,
                    n: rows_of(&epi, n),
                    kv: KvType::F32,
                    big: false,
                });
            }
        }
    }
    // The QKV cases take turns with the cache types.
    for (i, c) in v
        .iter_mut()
        .filter(|c| matches!(c.epi, FusedEpilogue::Qkv(_)))
        .enumerate()
    {
        c.kv = KvType::ALL[i % 3];
    }
    // SmolLM2-135M's decode layer (with each cache type; then with a
    // 512-row ring, Gemma 3's local layers' window) and head.
    let smol = [
        (qkv(9, 3, 64, 64, 300), 0, 576, true),
        (qkv(9, 3, 64, 64, 300), 0, 576, true),
        (qkv(9, 3, 64, 64, 300), 0, 576, true),
        (qkv_ring(9, 3, 64, 64, 512), 0, 576, true),
        (FusedEpilogue::Residual, 576, 576, false),
        (FusedEpilogue::SwiGlu, 3072, 576, true),
        (FusedEpilogue::Residual, 576, 1536, false),
    ];
    for (i, (epi, n, k, norm)) in smol.into_iter().enumerate() {
        v.push(Case {
            m: 1,
            k,
            wtype: DType::Q4_1,
            norm,
            epi,
            n: rows_of(&epi, n),
            kv: if i < 4 {
                KvType::ALL[i % 3]
            } else {
                KvType::F32
            },
            big: false,
        });
    }
    v.push(Case {
        m: 1,
        k: 576,
        wtype: DType::Q8_0,
        norm: true,
        epi: FusedEpilogue::Store,
        n: 49152,
        kv: KvType::F32,
        big: true,
    });
    v
}

/// Dequantized weights `[n, k]`.
fn weights_f32(p: &MatmulParams, w: &[u8]) -> kiln_core::Result<Vec<f32>> {
    let row = p.w_row_bytes()?;
    let mut wf = vec![0.0f32; p.n * p.k];
    for j in 0..p.n {
        dequantize_row(
            p.wtype,
            &w[j * row..(j + 1) * row],
            &mut wf[j * p.k..(j + 1) * p.k],
        )?;
    }
    Ok(wf)
}

/// Per-element bounds of `y` (`[m, n]`), see the module docs.
fn product_bounds(p: &MatmulParams, wf: &[f32], xn: &[f32], int8_x: bool) -> Vec<f64> {
    let terms = (p.k as f64 + PRODUCT_SLACK) * U32;
    let mut b = vec![0.0; p.m * p.n];
    for i in 0..p.m {
        let xi = &xn[i * p.k..(i + 1) * p.k];
        // Half the int8 step of each 32-element block of this row.
        let half_step: Vec<f64> = xi
            .chunks(32)
            .map(|blk| {
                let amax = blk.iter().fold(0.0f64, |a, v| a.max(f64::from(v.abs())));
                amax / 127.0 / 2.0 * (1.0 + INT8_X_SLACK)
            })
            .collect();
        for j in 0..p.n {
            let wj = &wf[j * p.k..(j + 1) * p.k];
            let s: f64 = wj
                .iter()
                .zip(xi)
                .map(|(a, c)| f64::from(a.abs()) * f64::from(c.abs()))
                .sum();
            let mut e = terms * s;
            if int8_x {
                e += wj
                    .chunks(32)
                    .zip(&half_step)
                    .map(|(wb, h)| h * wb.iter().map(|v| f64::from(v.abs())).sum::<f64>())
                    .sum::<f64>();
            }
            b[i * p.n + j] = e;
        }
    }
    b
}

/// Relative slack on the int8 activation step (see the module docs).
const INT8_X_SLACK: f64 = 1.0 / 1024.0;

fn within(what: &str, got: &[f32], want: &[f32], bound: &[f64]) -> Result<(), String> {
    let mut bad = Vec::new();
    for (i, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let ok = if w.is_nan() {
            g.is_nan()
        } else {
            (f64::from(g) - f64::from(w)).abs() <= b
        };
        if !ok && bad.len() < 4 {
            bad.push(format!("[{i}] got {g:e} want {w:e} bound {b:.2e}"));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {}", bad.join("; ")))
    }
}

/// Run every case against `imp`.
pub fn check_matvec_fused_with(imp: &MatvecFusedFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("matvec_fused", opts);
    for cs in cases() {
        let name = format!(
            "{} m={} n={} k={} norm={} kv={} {:?}",
            cs.wtype, cs.m, cs.n, cs.k, cs.norm, cs.kv, cs.epi
        );
        run.case(&name, cs.big, |rng| {
            one_case(imp, &cs, opts.fused_int8_x, rng)
        });
    }
    rejects(&mut run, imp);
    run.finish()
}

fn one_case(
    imp: &MatvecFusedFn<'_>,
    cs: &Case,
    int8_x: bool,
    rng: &mut impl Rng,
) -> Result<(), String> {
    let mm = MatmulParams {
        m: cs.m,
        n: cs.n,
        k: cs.k,
        wtype: cs.wtype,
    };
    let eps = 1e-5;
    let p = MatvecFusedParams {
        mm,
        norm_eps: cs.norm.then_some(eps),
        epilogue: cs.epi,
    };
    let w = rand_rows(rng, cs.wtype, cs.n, cs.k);
    let x = rand_f32(rng, cs.m * cs.k, -2.0, 2.0);
    let norm_w = if cs.norm {
        rand_f32(rng, cs.k, 0.5, 1.5)
    } else {
        Vec::new()
    };
    let residual = if cs.epi == FusedEpilogue::Residual {
        rand_f32(rng, cs.m * cs.n, -4.0, 4.0)
    } else {
        Vec::new()
    };
    let (positions, cache_len) = match cs.epi {
        FusedEpilogue::Qkv(q) => {
            // Distinct rows; never 0 (no rotation there: a missing RoPE
            // would pass), which the engine tests cover. A ring's positions
            // are 1 to 4 laps further on.
            let mut rows: Vec<i32> = (1..q.n_ctx as i32).collect();
            rows.shuffle(rng);
            let mut pos = rows[..cs.m].to_vec();
            if q.ring {
                for p in &mut pos {
                    *p += q.n_ctx as i32 * rng.gen_range(1..=4);
                }
            }
            (pos, q.n_ctx * q.kv_dim)
        }
        _ => (Vec::new(), 0),
    };
    let out_len = cs.m * p.out_cols();
    let mut want = vec![0.0f32; out_len];
    let (mut want_kc, mut want_vc) = (
        GuardedKv::new(cs.kv, cache_len),
        GuardedKv::new(cs.kv, cache_len),
    );
    matvec_fused_ref(
        &p,
        FusedRefIo {
            w: &w,
            x: &x,
            norm_w: &norm_w,
            residual: &residual,
            positions: &positions,
            out: &mut want,
            k_cache: want_kc.as_mut(),
            v_cache: want_vc.as_mut(),
        },
    )
    .map_err(ref_failed)?;
    let (want_k, want_v) = (want_kc.as_slice().to_f32(), want_vc.as_slice().to_f32());
    let mut out = Guarded::new(out_len);
    let (mut kc, mut vc) = (
        GuardedKv::new(cs.kv, cache_len),
        GuardedKv::new(cs.kv, cache_len),
    );
    imp(
        &p,
        FusedRefIo {
            w: &w,
            x: &x,
            norm_w: &norm_w,
            residual: &residual,
            positions: &positions,
            out: out.as_mut_slice(),
            k_cache: kc.as_mut(),
            v_cache: vc.as_mut(),
        },
    )
    .map_err(impl_failed)?;
    out.check_guards()?;
    kc.check_guards()?;
    vc.check_guards()?;

    // Bounds.
    let wf = weights_f32(&mm, &w).map_err(ref_failed)?;
    let xn = if cs.norm {
        let mut v = vec![0.0; x.len()];
        let np = RmsNormParams {
            rows: cs.m,
            dim: cs.k,
            eps,
        };
        rms_norm_ref(&np, &x, &norm_w, &mut v).map_err(ref_failed)?;
        v
    } else {
        x.clone()
    };
    let yb = product_bounds(&mm, &wf, &xn, int8_x);
    let n = cs.n;
    match cs.epi {
        FusedEpilogue::Store => within("out", out.as_slice(), &want, &yb),
        FusedEpilogue::Residual => {
            let b: Vec<f64> = yb
                .iter()
                .zip(&want)
                .map(|(e, o)| e + U32 * f64::from(o.abs()))
                .collect();
            within("out", out.as_slice(), &want, &b)
        }
        FusedEpilogue::SwiGlu => {
            // y itself, for silu(g) and u.
            let mut y = vec![0.0f32; cs.m * n];
            kiln_core::ops::matmul::matmul_ref(&mm, &w, &xn, &mut y).map_err(ref_failed)?;
            let h = n / 2;
            let mut b = vec![0.0; cs.m * h];
            for i in 0..cs.m {
                for j in 0..h {
                    let (g, u) = (f64::from(y[i * n + j]), f64::from(y[i * n + h + j]));
                    let silu = g / (1.0 + (-g).exp());
                    b[i * h + j] = 1.1 * u.abs() * yb[i * n + j]
                        + silu.abs() * yb[i * n + h + j]
                        + FAST_EXP_REL * (silu * u).abs()
                        + 1e-30;
                }
            }
            within("out", out.as_slice(), &want, &b)
        }
        FusedEpilogue::Qkv(q) => {
            let (qd, kvd, hd) = (q.q_dim, q.kv_dim, q.head_dim);
            // Bound of a (possibly rotated) column c of segment seg.
            let col_bound = |i: usize, c: usize, rotated: bool, val: f32| -> f64 {
                let e = if rotated {
                    let base = c - c % 2;
                    yb[i * n + base] + yb[i * n + base + 1]
                } else {
                    yb[i * n + c]
                };
                e + 2.0 * U32 * f64::from(val.abs())
            };
            let mut bq = vec![0.0; cs.m * qd];
            for i in 0..cs.m {
                for c in 0..qd {
                    bq[i * qd + c] = col_bound(i, c, c % hd < q.n_rot, want[i * qd + c]);
                }
            }
            within("q", out.as_slice(), &want, &bq)?;
            // A 16-bit cache may round to the neighbouring value.
            let (rel, abs) = match cs.kv {
                KvType::F32 => (0.0, 0.0),
                KvType::F16 => HALF_STEP_F16,
                KvType::BF16 => HALF_STEP_BF16,
            };
            let step = |b: f64, w: f32| b + rel * (f64::from(w.abs()) + b) + abs;
            let mut bk = vec![f64::INFINITY; cache_len];
            let mut bv = vec![f64::INFINITY; cache_len];
            for (i, &pos) in positions.iter().enumerate() {
                let r = q.cache_row(pos as usize) * kvd;
                for c in 0..kvd {
                    let b = col_bound(i, qd + c, c % hd < q.n_rot, want_k[r + c]);
                    bk[r + c] = step(b, want_k[r + c]);
                    let b = col_bound(i, qd + kvd + c, false, want_v[r + c]);
                    bv[r + c] = step(b, want_v[r + c]);
                }
            }
            kc.check_guards()?;
            vc.check_guards()?;
            within("k_cache", &kc.as_slice().to_f32(), &want_k, &bk)?;
            within("v_cache", &vc.as_slice().to_f32(), &want_v, &bv)
        }
    }
}

fn rejects(run: &mut Runner<'_>, imp: &MatvecFusedFn<'_>) {
    let base = MatvecFusedParams {
        mm: MatmulParams {
            m: 1,
            n: 6,
            k: 32,
            wtype: DType::Q4_1,
        },
        norm_eps: None,
        epilogue: FusedEpilogue::Store,
    };
    let call = |p: &MatvecFusedParams,
                w: &[u8],
                x: &[f32],
                res: &[f32],
                pos: &[i32],
                out: &mut Guarded,
                kc: &mut Guarded| {
        let mut vc = Guarded::new(kc.len());
        let r = imp(
            p,
            FusedRefIo {
                w,
                x,
                norm_w: &[1.0; 32],
                residual: res,
                positions: pos,
                out: out.as_mut_slice(),
                k_cache: kiln_core::KvSliceMut::F32(kc.as_mut_slice()),
                v_cache: kiln_core::KvSliceMut::F32(vc.as_mut_slice()),
            },
        );
        if !vc.untouched() {
            return Err(kiln_core::Error::invalid("test", "v cache written"));
        }
        r
    };
    run.case("rejects m = 9", false, |rng| {
        let p = MatvecFusedParams {
            mm: MatmulParams { m: 9, ..base.mm },
            ..base
        };
        let w = rand_rows(rng, DType::Q4_1, 6, 32);
        let mut out = Guarded::new(54);
        let mut kc = Guarded::new(0);
        expect_reject(call(&p, &w, &[0.5; 288], &[], &[], &mut out, &mut kc), &out)
    });
    run.case("rejects swiglu with odd n", false, |rng| {
        let p = MatvecFusedParams {
            mm: MatmulParams { n: 5, ..base.mm },
            epilogue: FusedEpilogue::SwiGlu,
            ..base
        };
        let w = rand_rows(rng, DType::Q4_1, 5, 32);
        let mut out = Guarded::new(2);
        let mut kc = Guarded::new(0);
        expect_reject(call(&p, &w, &[0.5; 32], &[], &[], &mut out, &mut kc), &out)
    });
    run.case("rejects a short residual", false, |rng| {
        let p = MatvecFusedParams {
            epilogue: FusedEpilogue::Residual,
            ..base
        };
        let w = rand_rows(rng, DType::Q4_1, 6, 32);
        let mut out = Guarded::new(6);
        let mut kc = Guarded::new(0);
        expect_reject(
            call(&p, &w, &[0.5; 32], &[0.0; 5], &[], &mut out, &mut kc),
            &out,
        )
    });
    run.case("rejects a position past the cache", false, |rng| {
        let epi = qkv(1, 1, 2, 2, 4);
        let p = MatvecFusedParams {
            epilogue: epi,
            ..base
        };
        let w = rand_rows(rng, DType::Q4_1, 6, 32);
        let mut out = Guarded::new(2);
        let mut kc = Guarded::new(8);
        let r = call(&p, &w, &[0.5; 32], &[], &[4], &mut out, &mut kc);
        if !kc.untouched() {
            return Err("k cache written".into());
        }
        expect_reject(r, &out)
    });
    run.case("rejects a negative position into a ring", false, |rng| {
        let p = MatvecFusedParams {
            epilogue: qkv_ring(1, 1, 2, 2, 4),
            ..base
        };
        let w = rand_rows(rng, DType::Q4_1, 6, 32);
        let mut out = Guarded::new(2);
        let mut kc = Guarded::new(8);
        let r = call(&p, &w, &[0.5; 32], &[], &[-1], &mut out, &mut kc);
        if !kc.untouched() {
            return Err("k cache written".into());
        }
        expect_reject(r, &out)
    });
}
