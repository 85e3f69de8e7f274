//! matmul_id on the CPU (spec: [`kiln_core::ops::matmul_id`]).
//!
//! Rows are grouped by expert (mm_id style, for decode and prefill alike):
//! each expert used by any (token, slot) gathers its activation rows into a
//! contiguous scratch, runs the backend's [`crate::matmul::matmul`] once
//! (activations quantized once per expert, every weight row read once for
//! all its rows, the pool splitting the weight rows), and scatters the
//! results to their output rows. Experts no row routes to cost nothing.

use crate::matmul::matmul;
use crate::CpuContext;
use kiln_core::ops::matmul_id::MatmulIdParams;
use kiln_core::Result;

/// `out[t * top_k + s] = w[ids[t * top_k + s]] · x_row(t, s)` (see the module docs).
pub fn matmul_id(
    ctx: &CpuContext,
    p: &MatmulIdParams,
    w: &[u8],
    x: &[f32],
    ids: &[u32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(w.len(), x.len(), ids.len(), out.len())?;
    p.check_ids(ids)?;
    if p.n == 0 || ids.is_empty() {
        return Ok(());
    }
    // rows_of[e]: the output rows expert e serves, in order.
    let mut rows_of: Vec<Vec<usize>> = vec![Vec::new(); p.n_experts];
    for (r, &e) in ids.iter().enumerate() {
        rows_of[e as usize].push(r);
    }
    let mut xg: Vec<f32> = Vec::new();
    let mut og: Vec<f32> = Vec::new();
    for (e, rows) in rows_of.iter().enumerate() {
        if rows.is_empty() {
            continue;
        }
        xg.clear();
        for &r in rows {
            xg.extend_from_slice(&x[p.x_row(r) * p.k..][..p.k]);
        }
        og.resize(rows.len() * p.n, 0.0);
        matmul(
            ctx,
            &p.expert_matmul(rows.len()),
            p.expert(w, e)?,
            &xg,
            &mut og,
        )?;
        for (i, &r) in rows.iter().enumerate() {
            out[r * p.n..][..p.n].copy_from_slice(&og[i * p.n..][..p.n]);
        }
    }
    Ok(())
}

/// `out = silu(w_gate · x) * (w_up · x)` per routed row (spec:
/// [`kiln_core::ops::matmul_id::matmul_id_swiglu_ref`]). On the CPU this is
/// the composition (two [`matmul_id`] and [`crate::silu_mul::silu_mul`]):
/// decode here is bound by the weight bytes, which the composition reads
/// once each, not by launches; the two small intermediates are allocated
/// per call.
pub fn matmul_id_swiglu(
    ctx: &CpuContext,
    p: &MatmulIdParams,
    w_gate: &[u8],
    w_up: &[u8],
    x: &[f32],
    ids: &[u32],
    out: &mut [f32],
) -> Result<()> {
    p.validate_swiglu(w_gate.len(), w_up.len(), x.len(), ids.len(), out.len())?;
    p.check_ids(ids)?;
    let n = out.len();
    let (mut g, mut u) = (vec![0.0f32; n], vec![0.0f32; n]);
    matmul_id(ctx, p, w_gate, x, ids, &mut g)?;
    matmul_id(ctx, p, w_up, x, ids, &mut u)?;
    let sp = kiln_core::ops::silu_mul::SiluMulParams { n };
    crate::silu_mul::silu_mul(ctx, &sp, &g, &u, out)
}
