//! rope_multi on the CPU (spec: [`kiln_core::ops::rope_multi`]), input →
//! output, f32 or bf16.
//!
//! The per-pair table ([`RopeMultiPack`]: axis and inverse frequency of each
//! pair) comes from the caller (kiln keeps one per device and parameter set);
//! per token, the cos/sin of every rotating pair are formed once (angle in
//! f64 as the reference does, rounded once to f32) and applied to all heads.
//! Tokens spread over the rayon pool for prefill-sized inputs.

use crate::CpuContext;
use kiln_core::ops::rope_multi::{RopeMultiPack, RopeMultiParams, RopePositions};
use kiln_core::quant::float::{bf16_bits_to_f32, f32_to_bf16_bits};
use kiln_core::{Error, Result};
use rayon::prelude::*;

/// Below this many elements one thread does every token.
const PAR_MIN: usize = 1 << 14;

fn check_pack(p: &RopeMultiParams, pack: &RopeMultiPack) -> Result<()> {
    if pack.n_pairs != p.n_pairs()
        || pack.half != p.half()
        || pack.axis.len() != pack.n_pairs
        || pack.inv_freq.len() != pack.n_pairs
    {
        return Err(Error::invalid(
            "rope_multi",
            format!(
                "parameter pack of {} pairs (half {}) does not fit head_dim {} / rope_dim {} ({:?})",
                pack.n_pairs, pack.half, p.head_dim, p.rope_dim, p.pairing
            ),
        ));
    }
    Ok(())
}

/// cos/sin of every pair of token `t` (pass-through pairs: cos 1, sin 0).
fn angles(
    p: &RopeMultiParams,
    pack: &RopeMultiPack,
    pos: &RopePositions<'_>,
    t: usize,
    cs: &mut Vec<(f32, f32)>,
) {
    cs.clear();
    for (&axis, &inv) in pack.axis.iter().zip(&pack.inv_freq) {
        if axis == RopeMultiPack::PASS {
            cs.push((1.0, 0.0));
        } else {
            let q = pos.get(axis as usize * p.seq_len + t);
            let (s, c) = (f64::from(q) * inv).sin_cos();
            cs.push((c as f32, s as f32));
        }
    }
}

/// One token: `out = rope_multi(x)` over its `n_heads` heads, elements read
/// and written through `ld` / `st` (f32 or bf16 storage).
fn token<T: Copy>(
    p: &RopeMultiParams,
    pack: &RopeMultiPack,
    cs: &[(f32, f32)],
    x: &[T],
    out: &mut [T],
    (ld, st): Conv<T>,
) {
    out.copy_from_slice(x);
    for (xh, oh) in x
        .chunks_exact(p.head_dim)
        .zip(out.chunks_exact_mut(p.head_dim))
    {
        for (pair, (&axis, &(c, s))) in pack.axis.iter().zip(cs).enumerate() {
            if axis == RopeMultiPack::PASS {
                continue;
            }
            let (a, b) = (ld(xh[pair]), ld(xh[pair + pack.half]));
            oh[pair] = st(a * c - b * s);
            oh[pair + pack.half] = st(a * s + b * c);
        }
    }
}

/// Load / store conversions of an element type.
type Conv<T> = (fn(T) -> f32, fn(f32) -> T);

fn run<T: Copy + Send + Sync>(
    ctx: &CpuContext,
    p: &RopeMultiParams,
    pack: &RopeMultiPack,
    positions: &RopePositions<'_>,
    x: &[T],
    out: &mut [T],
    (ld, st): Conv<T>,
) -> Result<()> {
    p.validate(positions, x.len(), out.len())?;
    check_pack(p, pack)?;
    let tok = p.n_heads * p.head_dim;
    let one = |t: usize, xt: &[T], ot: &mut [T], cs: &mut Vec<(f32, f32)>| {
        angles(p, pack, positions, t, cs);
        token(p, pack, cs, xt, ot, (ld, st));
    };
    if x.len() < PAR_MIN || ctx.threads() == 1 {
        let mut cs = Vec::with_capacity(pack.n_pairs);
        for (t, (xt, ot)) in x
            .chunks_exact(tok)
            .zip(out.chunks_exact_mut(tok))
            .enumerate()
        {
            one(t, xt, ot, &mut cs);
        }
    } else {
        ctx.pool().install(|| {
            x.par_chunks_exact(tok)
                .zip(out.par_chunks_exact_mut(tok))
                .enumerate()
                .for_each_init(Vec::new, |cs, (t, (xt, ot))| one(t, xt, ot, cs));
        });
    }
    Ok(())
}

/// `out = rope_multi(x)` for f32 `x, out: [seq_len, n_heads, head_dim]`;
/// `pack` must be `p.pack()` (checked for shape).
pub fn rope_multi(
    ctx: &CpuContext,
    p: &RopeMultiParams,
    pack: &RopeMultiPack,
    positions: &RopePositions<'_>,
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    run(ctx, p, pack, positions, x, out, (|v| v, |v| v))
}

/// The same for bf16 tensors (bits): f32 arithmetic, one rounding per output.
pub fn rope_multi_bf16(
    ctx: &CpuContext,
    p: &RopeMultiParams,
    pack: &RopeMultiPack,
    positions: &RopePositions<'_>,
    x: &[u16],
    out: &mut [u16],
) -> Result<()> {
    run(
        ctx,
        p,
        pack,
        positions,
        x,
        out,
        (bf16_bits_to_f32, f32_to_bf16_bits),
    )
}
