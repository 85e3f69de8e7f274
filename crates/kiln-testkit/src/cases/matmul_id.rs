//! Case table and driver for `matmul_id` (expert-routed matmul, spec:
//! kiln_core::ops::matmul_id): every weight format, the seed's mv_id and
//! mm_id shapes (shared/seeds/002: 1 token × 4 experts top-1 up to 32
//! tokens × 16 experts top-8 at k = 2048, with its id pattern
//! `(3t + 7s + 1) % n_experts`), odd row counts, one-block rows, padded
//! expert strides, per-slot activations and random ids (unused and repeated
//! experts), and the rejection of an out-of-range id. Each output row is
//! held to the matmul table's per-element bound for its expert and row.
//! MLX weights: the [`mlx_cover`] formats (every bits value, group size and
//! scale dtype), with the MLX matmul table's f32-activation bound.

use super::matmul::{check_bounded, error_bounds, WTYPES};
use super::matmul_mlx::mlx_cover;
use super::{impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, rand_rows, Guarded, Report};
use kiln_core::ops::matmul_id::{matmul_id_ref, matmul_id_swiglu_ref, MatmulIdParams};
use kiln_core::DType;
use rand::Rng;

/// Implementation under test: `(params, w, x, ids, out)`.
pub type MatmulIdFn<'a> =
    dyn Fn(&MatmulIdParams, &[u8], &[f32], &[u32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// Implementation under test of the gated pair: `(params, w_gate, w_up, x,
/// ids, out)`.
pub type MatmulIdSwigluFn<'a> =
    dyn Fn(&MatmulIdParams, &[u8], &[u8], &[f32], &[u32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// (n_tokens, n_experts, top_k, n, k in blocks of 256 or 32·bs, seed ids,
/// x per slot, stride padding bytes, big).
type Case = (usize, usize, usize, usize, usize, bool, bool, usize, bool);

/// k is given in 256-element units (every format's block divides 256).
pub const CASES: &[Case] = &[
    // The seed's mv_id cases.
    (1, 4, 1, 2, 1, true, false, 0, false),
    (1, 8, 8, 4, 1, true, false, 0, false),
    (4, 8, 2, 4, 2, true, false, 0, false),
    (8, 16, 4, 16, 4, true, false, 0, false),
    // The seed's mm_id cases.
    (16, 8, 8, 16, 2, true, false, 0, false),
    (64, 4, 1, 16, 4, true, false, 0, false),
    (32, 16, 8, 16, 8, true, false, 0, true),
    // Odd rows, random ids (repeats, unused experts), per-slot x, padding.
    (3, 5, 2, 7, 1, false, false, 0, false),
    (5, 9, 3, 33, 1, false, true, 64, false),
    (1, 128, 8, 7, 2, false, false, 0, false),
];

/// Run every case for every format `opts.matmul_wtypes` accepts (the GGML
/// and float formats, then [`mlx_cover`]).
pub fn check_matmul_id(imp: &MatmulIdFn<'_>) -> Report {
    check_matmul_id_with(imp, &Options::default())
}

/// [`check_matmul_id`] with explicit options.
pub fn check_matmul_id_with(imp: &MatmulIdFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("matmul_id", opts);
    each_case(&mut run, opts, true, |run, name, big, wtype, c, k| {
        run.case(name, big, |rng| one_case(imp, wtype, c, k, rng))
    });
    // An id past the last expert: a typed error, output untouched.
    run.case("out-of-range id", false, |rng| {
        let p = MatmulIdParams {
            n_tokens: 2,
            top_k: 2,
            n: 3,
            k: 32,
            n_experts: 4,
            expert_stride: DType::Q8_0.row_bytes("t", 32).map_err(ref_failed)? * 3,
            wtype: DType::Q8_0,
            x_per_slot: false,
        };
        let w = rand_rows(rng, DType::Q8_0, 12, 32);
        let x = rand_f32(rng, 64, -1.0, 1.0);
        let mut out = Guarded::new(12);
        match imp(&p, &w, &x, &[0, 1, 4, 2], out.as_mut_slice()) {
            Ok(()) => Err("accepted ids[2] = 4 with 4 experts".into()),
            Err(e) if !e.to_string().contains("ids[2] = 4") => {
                Err(format!("error does not name the id: {e}"))
            }
            Err(_) if out.as_slice().iter().all(|v| v.is_nan()) => out.check_guards(),
            Err(_) => Err("wrote output before refusing".into()),
        }
    });
    run.finish()
}

/// Call `f(run, name, big, wtype, case, k)` for every format
/// `opts.matmul_wtypes` accepts (the GGML and float formats, then
/// [`mlx_cover`]) and every case (the per-slot ones only when `per_slot`);
/// the refused formats count as skipped.
fn each_case(
    run: &mut Runner,
    opts: &Options,
    per_slot: bool,
    mut f: impl FnMut(&mut Runner, &str, bool, DType, &Case, usize),
) {
    for wtype in WTYPES.into_iter().chain(mlx_cover()) {
        for c in CASES.iter().filter(|c| per_slot || !c.6) {
            if !(opts.matmul_wtypes)(wtype) {
                run.skip();
                continue;
            }
            let &(n_tokens, n_experts, top_k, n, k256, _, slot, pad, big) = c;
            let k = k256 * 256;
            let name = format!(
                "{wtype} tokens={n_tokens} experts={n_experts} top_k={top_k} n={n} k={k} per_slot={slot} pad={pad}"
            );
            f(run, &name, big, wtype, c, k);
        }
    }
}

/// A case's params (`x_per_slot` as given), random ids (the seed's pattern
/// or uniform) and activations.
struct Routed {
    p: MatmulIdParams,
    ids: Vec<u32>,
    x: Vec<f32>,
}

impl Routed {
    fn new(
        wtype: DType,
        c: &Case,
        k: usize,
        x_per_slot: bool,
        rng: &mut impl Rng,
    ) -> Result<Routed, String> {
        let &(n_tokens, n_experts, top_k, n, _, seed_ids, _, pad, _) = c;
        let row = wtype.row_bytes("matmul_id", k).map_err(ref_failed)?;
        let p = MatmulIdParams {
            n_tokens,
            top_k,
            n,
            k,
            n_experts,
            expert_stride: n * row + pad,
            wtype,
            x_per_slot,
        };
        let rows = n_tokens * top_k;
        let ids: Vec<u32> = (0..rows)
            .map(|r| {
                let (t, s) = (r / top_k, r % top_k);
                if seed_ids {
                    ((t * 3 + s * 7 + 1) % n_experts) as u32
                } else {
                    rng.gen_range(0..n_experts as u32)
                }
            })
            .collect();
        let x_rows = if x_per_slot { rows } else { n_tokens };
        let x = rand_f32(rng, x_rows * k, -2.0, 2.0);
        Ok(Routed { p, ids, x })
    }

    /// A random stack of `n_experts` matrices with `pad` random bytes after each.
    fn stack(&self, rng: &mut impl Rng) -> Vec<u8> {
        let p = &self.p;
        let pad = p.expert_stride - p.n * p.wtype.row_bytes("matmul_id", p.k).unwrap_or(0);
        let mut w = Vec::with_capacity(p.n_experts * p.expert_stride);
        for _ in 0..p.n_experts {
            w.extend(rand_rows(rng, p.wtype, p.n, p.k));
            w.extend((0..pad).map(|_| rng.gen::<u8>()));
        }
        w
    }

    /// Each output's matmul error bound for stack `w`.
    fn bounds(&self, w: &[u8]) -> Result<Vec<f64>, String> {
        let p = &self.p;
        let mut bound = Vec::with_capacity(self.ids.len() * p.n);
        for (r, &e) in self.ids.iter().enumerate() {
            let we = p.expert(w, e as usize).map_err(ref_failed)?;
            let xr = &self.x[p.x_row(r) * p.k..][..p.k];
            bound.extend(error_bounds(&p.expert_matmul(1), we, xr).map_err(ref_failed)?);
        }
        Ok(bound)
    }
}

fn one_case(
    imp: &MatmulIdFn<'_>,
    wtype: DType,
    c: &Case,
    k: usize,
    rng: &mut impl Rng,
) -> Result<(), String> {
    let rt = Routed::new(wtype, c, k, c.6, rng)?;
    let w = rt.stack(rng);
    let (p, ids, x) = (&rt.p, &rt.ids, &rt.x);
    let mut want = vec![0.0f32; ids.len() * p.n];
    matmul_id_ref(p, &w, x, ids, &mut want).map_err(ref_failed)?;
    let bound = rt.bounds(&w)?;
    let mut out = Guarded::new(ids.len() * p.n);
    imp(p, &w, x, ids, out.as_mut_slice()).map_err(impl_failed)?;
    check_bounded(&out, &want, &bound)
}

/// Bound on |silu(g')u' - silu(g)u| for |g' - g| <= bg, |u' - u| <= bu:
/// silu's slope is within [-0.1, 1.1], so the gate's error moves the
/// product by at most 1.1 bg (|u| + bu) and the up's by (|silu(g)| +
/// 1.1 bg) bu; plus 8 f32 ulps of the product for the exp / reciprocal /
/// multiplies of the epilogue (the fast `__expf` is within 2 ulps).
fn swiglu_bound(g: f32, u: f32, bg: f64, bu: f64) -> f64 {
    let (g, u) = (f64::from(g), f64::from(u));
    let silu = g / (1.0 + (-g).exp());
    1.1 * bg * (u.abs() + bu)
        + (silu.abs() + 1.1 * bg) * bu
        + 8.0 * f64::from(f32::EPSILON) * (silu * u).abs()
}

/// Run the matmul_id cases (activations per token; the per-slot case is
/// the down projection's, not this op's) through the gated pair, every
/// format `opts.matmul_wtypes` accepts, each output held to the bound its
/// gate and up rows' matmul bounds imply ([`swiglu_bound`]); and the
/// rejections (an out-of-range id, per-slot activations).
pub fn check_matmul_id_swiglu_with(imp: &MatmulIdSwigluFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("matmul_id_swiglu", opts);
    each_case(&mut run, opts, false, |run, name, big, wtype, c, k| {
        run.case(name, big, |rng| swiglu_case(imp, wtype, c, k, rng))
    });
    run.case("out-of-range id / per-slot x", false, |rng| {
        let p = MatmulIdParams {
            n_tokens: 2,
            top_k: 2,
            n: 3,
            k: 32,
            n_experts: 4,
            expert_stride: DType::Q8_0.row_bytes("t", 32).map_err(ref_failed)? * 3,
            wtype: DType::Q8_0,
            x_per_slot: false,
        };
        let (wg, wu) = (
            rand_rows(rng, DType::Q8_0, 12, 32),
            rand_rows(rng, DType::Q8_0, 12, 32),
        );
        let x = rand_f32(rng, 128, -1.0, 1.0);
        let mut out = Guarded::new(12);
        match imp(&p, &wg, &wu, &x[..64], &[0, 1, 4, 2], out.as_mut_slice()) {
            Ok(()) => return Err("accepted ids[2] = 4 with 4 experts".into()),
            Err(e) if !e.to_string().contains("ids[2] = 4") => {
                return Err(format!("error does not name the id: {e}"))
            }
            Err(_) if !out.as_slice().iter().all(|v| v.is_nan()) => {
                return Err("wrote output before refusing".into())
            }
            Err(_) => out.check_guards()?,
        }
        let slot = MatmulIdParams {
            x_per_slot: true,
            ..p
        };
        match imp(&slot, &wg, &wu, &x, &[0, 1, 3, 2], out.as_mut_slice()) {
            Ok(()) => Err("accepted per-slot activations".into()),
            Err(_) if out.as_slice().iter().all(|v| v.is_nan()) => out.check_guards(),
            Err(_) => Err("wrote output before refusing".into()),
        }
    });
    run.finish()
}

fn swiglu_case(
    imp: &MatmulIdSwigluFn<'_>,
    wtype: DType,
    c: &Case,
    k: usize,
    rng: &mut impl Rng,
) -> Result<(), String> {
    let rt = Routed::new(wtype, c, k, false, rng)?;
    let (wg, wu) = (rt.stack(rng), rt.stack(rng));
    let (p, ids, x) = (&rt.p, &rt.ids, &rt.x);
    let len = ids.len() * p.n;
    let mut want = vec![0.0f32; len];
    matmul_id_swiglu_ref(p, &wg, &wu, x, ids, &mut want).map_err(ref_failed)?;
    let (mut g, mut u) = (vec![0.0f32; len], vec![0.0f32; len]);
    matmul_id_ref(p, &wg, x, ids, &mut g).map_err(ref_failed)?;
    matmul_id_ref(p, &wu, x, ids, &mut u).map_err(ref_failed)?;
    let (bg, bu) = (rt.bounds(&wg)?, rt.bounds(&wu)?);
    let bound: Vec<f64> = (0..len)
        .map(|i| swiglu_bound(g[i], u[i], bg[i], bu[i]))
        .collect();
    let mut out = Guarded::new(len);
    imp(p, &wg, &wu, x, ids, out.as_mut_slice()).map_err(impl_failed)?;
    check_bounded(&out, &want, &bound)
}
