//! Case table and driver for `matmul` with MLX affine weights
//! ([`DType::Mlx`]): every bits (2, 3, 4, 5, 6, 8) × group size (32, 64,
//! 128) × scale dtype (F16, BF16, F32), odd shapes (k one group and odd
//! multiples of it, n odd, a large k), decode and prefill-sized `m`; for
//! the [`mlx_cover`] formats also every other mat-vec row count (4..8) and
//! more prefill shapes.
//!
//! Backends keep the activations in f32 for these weights, so the only error
//! against the f64 reference is f32 rounding. Per output, with `S = sum_e
//! (|scale_g| q_e + |bias_g|) |x_e|` (which bounds `sum |w_e x_e|` and every
//! partial sum a kernel forms):
//!
//! - reference: `w_e` rounded twice in f32 (`scale*q`, then `+ bias`), a
//!   relative `2u` per term (`u = 2^-24`) — slack;
//! - a kernel that sums `scale * sum(q x) + bias * sum(x)` per group: at most
//!   `group` roundings inside a group sum and `k / group` across groups;
//! - a kernel that dequantizes and runs an f32 dot: at most `k` roundings;
//!
//! so `|got - want| <= (k + k/group + MLX_TERMS_SLACK) * u * S`.
//!
//! A backend that rounds both operands to f16 for large `m` (CUDA's cuBLAS
//! prefill; `Options::matmul_f16_from_m`) is held, for those cases, to that
//! bound plus the f16 rounding of each product: `|fl16(a) - a| <= U16 |a| +
//! H` (`U16 = 2^-11`, `H = 2^-25` half the spacing of f16 subnormals), so
//! `|fl16(w) fl16(x) - w x| <= (2 U16 + U16^2) |w x| + 2 H (|w| + |x|) + H^2`
//! per term, times [`F16_OPERAND_SAFETY`].

use super::{expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::cases::matmul::MatmulFn;
use crate::{nmse, rand_f32, rand_rows, Guarded};
use kiln_core::ops::matmul::{matmul_ref, MatmulParams};
use kiln_core::quant::{dequantize_row, MlxAffine, MLX_AFFINE_BITS, MLX_AFFINE_GROUP_SIZES};
use kiln_core::DType;
use rand::Rng;

/// Extra roundings per output beyond one per accumulated term: the
/// reference's two per weight, scale/bias products, lane reductions.
pub const MLX_TERMS_SLACK: f64 = 16.0;

const U32: f64 = 1.0 / (1u64 << 24) as f64;
/// f16 unit roundoff.
const U16: f64 = 1.0 / 2048.0;
/// Half the spacing of f16 subnormals: the absolute rounding error below
/// f16's normal range.
const F16_SUB_HALF: f64 = 1.0 / (1u64 << 25) as f64;

/// Factor on the f16 operand term: covers the second-order effects the
/// per-term bound leaves out (the f32 rounding of `scale * q + bias` before
/// the f16 one, the f32 sums running over the rounded operands, which may
/// be larger than `S` by `U16`), each far below the term itself.
pub const F16_OPERAND_SAFETY: f64 = 2.0;

/// Every MLX format: bits × group size × scale dtype.
pub fn mlx_wtypes() -> Vec<DType> {
    let mut v = Vec::new();
    for bits in MLX_AFFINE_BITS {
        for g in MLX_AFFINE_GROUP_SIZES {
            for sd in [DType::F16, DType::BF16, DType::F32] {
                if let Ok(dt) = (MlxAffine {
                    bits,
                    group_size: g,
                    scale_dtype: sd,
                })
                .dtype()
                {
                    v.push(dt);
                }
            }
        }
    }
    v
}

/// Six formats that between them have every bits value, every group size
/// and every scale dtype (each group size and scale dtype twice): the
/// formats the other tables (matmul_id, embedding) and the extra shapes
/// here run.
pub fn mlx_cover() -> Vec<DType> {
    [
        (2, 32, DType::F16),
        (3, 64, DType::BF16),
        (4, 128, DType::F32),
        (5, 32, DType::BF16),
        (6, 64, DType::F32),
        (8, 128, DType::F16),
    ]
    .into_iter()
    .filter_map(|(bits, group_size, scale_dtype)| {
        MlxAffine {
            bits,
            group_size,
            scale_dtype,
        }
        .dtype()
        .ok()
    })
    .collect()
}

/// `(m, n, k in groups, big)`: k = one group, odd multiples (3, 33), a large
/// k (4224 values = 33·128, whatever the group); decode and 17-token
/// prefill (mat-mat path with a remainder).
const SHAPES: [(usize, usize, usize, bool); 6] = [
    (1, 7, 1, false),
    (1, 33, 3, false),
    (3, 5, 33, false),
    (17, 9, 3, false),
    (2, 1, 1, false),
    (1, 3, 0, true),
];

/// Extra shapes for the [`mlx_cover`] formats (same layout): the mat-vec
/// row counts [`SHAPES`] lacks (4..8), a prefill of whole 8-row tiles, the
/// smallest prefill with a large k.
const COVER_SHAPES: [(usize, usize, usize, bool); 7] = [
    (4, 3, 2, false),
    (5, 7, 5, false),
    (6, 1, 1, false),
    (7, 9, 2, false),
    (8, 33, 2, false),
    (64, 7, 3, false),
    (9, 5, 0, true),
];

/// Per-output bound (module docs) for MLX weights `w` `[n, k]` and
/// activations `x` `[m, k]`; `f16_operands`: the backend rounds both to f16
/// for this product. All zeros for a non-MLX `p.wtype`.
pub fn mlx_error_bounds(p: &MatmulParams, w: &[u8], x: &[f32], f16_operands: bool) -> Vec<f64> {
    let DType::Mlx(f) = p.wtype else {
        return vec![0.0; p.m * p.n];
    };
    let (g, bb, sb) = (f.group_size(), f.block_bytes(), f.scale_bytes());
    let qmax = f64::from((1u32 << f.bits()) - 1);
    let terms = (p.k + p.k / g) as f64 + MLX_TERMS_SLACK;
    let row = w.len() / p.n.max(1);
    let mut out = vec![0.0; p.m * p.n];
    for j in 0..p.n {
        let wr = &w[j * row..(j + 1) * row];
        for i in 0..p.m {
            let xi = &x[i * p.k..(i + 1) * p.k];
            let mut s = 0.0f64;
            for (blk, xg) in wr.chunks_exact(bb).zip(xg_chunks(xi, g)) {
                let sc = f64::from(f.read_scale(blk)).abs();
                let bi = f64::from(f.read_scale(&blk[sb..])).abs();
                s += (sc * qmax + bi) * xg.iter().map(|v| f64::from(v.abs())).sum::<f64>();
            }
            out[i * p.n + j] = terms * U32 * s;
        }
    }
    if f16_operands {
        add_f16_term(p, w, x, &mut out);
    }
    out
}

/// `out += F16_OPERAND_SAFETY * sum_e ((2 U16 + U16^2) |w_e x_e| + 2 H
/// (|w_e| + |x_e|) + H^2)` per output (module docs).
fn add_f16_term(p: &MatmulParams, w: &[u8], x: &[f32], out: &mut [f64]) {
    let row = w.len() / p.n.max(1);
    let mut wf = vec![0.0f32; p.k];
    for j in 0..p.n {
        if dequantize_row(p.wtype, &w[j * row..(j + 1) * row], &mut wf).is_err() {
            continue; // a malformed case; the reference reports it
        }
        for i in 0..p.m {
            let xi = &x[i * p.k..(i + 1) * p.k];
            let t: f64 = wf
                .iter()
                .zip(xi)
                .map(|(&a, &b)| {
                    let (a, b) = (f64::from(a.abs()), f64::from(b.abs()));
                    (2.0 * U16 + U16 * U16) * a * b
                        + 2.0 * F16_SUB_HALF * (a + b)
                        + F16_SUB_HALF * F16_SUB_HALF
                })
                .sum();
            out[i * p.n + j] += F16_OPERAND_SAFETY * t;
        }
    }
}

fn xg_chunks(x: &[f32], g: usize) -> std::slice::ChunksExact<'_, f32> {
    x.chunks_exact(g.max(1))
}

fn check(out: &Guarded, want: &[f32], bound: &[f64]) -> Result<(), String> {
    out.check_guards()?;
    let got = out.as_slice();
    let mut bad = Vec::new();
    for (idx, ((&g, &w), &b)) in got.iter().zip(want).zip(bound).enumerate() {
        let err = (f64::from(g) - f64::from(w)).abs();
        if err.is_nan() || err > b {
            bad.push(format!("[{idx}] got {g:e} want {w:e} bound {b:.3e}"));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(format!(
        "out: {}/{} over their bound (nmse {:.3e}); first: {}",
        bad.len(),
        got.len(),
        nmse(got, want),
        bad[..bad.len().min(4)].join("; ")
    ))
}

/// Run the MLX matmul table against `imp` (skipped, and counted so, when
/// `opts.matmul_wtypes` says the backend lacks MLX weights).
pub fn check_matmul_mlx(imp: &MatmulFn<'_>) -> crate::Report {
    check_matmul_mlx_with(imp, &Options::default())
}

/// [`check_matmul_mlx`] with explicit options.
pub fn check_matmul_mlx_with(imp: &MatmulFn<'_>, opts: &Options) -> crate::Report {
    let mut run = Runner::new("matmul_mlx", opts);
    let cover = mlx_cover();
    for wtype in mlx_wtypes() {
        if !(opts.matmul_wtypes)(wtype) {
            run.skip();
            continue;
        }
        let g = wtype.block_size();
        let extra: &[_] = if cover.contains(&wtype) {
            &COVER_SHAPES
        } else {
            &[]
        };
        for &(m, n, groups, big) in SHAPES.iter().chain(extra) {
            let k = if groups == 0 { 4224 } else { groups * g };
            let f16 = opts.matmul_f16_from_m.is_some_and(|m0| m >= m0);
            let name = format!("{wtype} m={m} n={n} k={k}");
            run.case(&name, big, |rng| {
                let p = MatmulParams { m, n, k, wtype };
                let w = rand_rows(rng, wtype, n, k);
                let mut x = rand_f32(rng, m * k, -1.0, 1.0);
                for v in x.iter_mut() {
                    if rng.gen_bool(0.05) {
                        *v *= 8.0;
                    }
                }
                let mut want = vec![0.0; m * n];
                matmul_ref(&p, &w, &x, &mut want).map_err(ref_failed)?;
                let mut out = Guarded::new(m * n);
                imp(&p, &w, &x, out.as_mut_slice()).map_err(impl_failed)?;
                check(&out, &want, &mlx_error_bounds(&p, &w, &x, f16))
            });
        }
    }
    let Some(&wtype) = mlx_wtypes().iter().find(|&&t| (opts.matmul_wtypes)(t)) else {
        return run.finish();
    };
    let g = wtype.block_size();
    let p = MatmulParams {
        m: 2,
        n: 3,
        k: 2 * g,
        wtype,
    };
    run.case("rejects k not a multiple of the group", false, |rng| {
        let bad = MatmulParams { k: g + g / 2, ..p };
        let w = rand_rows(rng, DType::F32, 3, g + g / 2);
        let mut out = Guarded::new(6);
        expect_reject(imp(&bad, &w, &vec![0.5; 3 * g], out.as_mut_slice()), &out)
    });
    run.case("rejects a short w", false, |rng| {
        let w = rand_rows(rng, wtype, 3, 2 * g);
        let mut out = Guarded::new(6);
        expect_reject(
            imp(&p, &w[..w.len() - 1], &vec![0.5; 4 * g], out.as_mut_slice()),
            &out,
        )
    });
    run.case("rejects a short out", false, |rng| {
        let w = rand_rows(rng, wtype, 3, 2 * g);
        let mut out = Guarded::new(5);
        expect_reject(imp(&p, &w, &vec![0.5; 4 * g], out.as_mut_slice()), &out)
    });
    run.finish()
}
