//! cast on the CPU: f32 / f16 / bf16 conversion (spec:
//! [`kiln_core::ops::cast`]). Each element goes through the reference's own
//! per-element conversion ([`cast_bits`]; f16 uses F16C where the CPU has
//! it, which rounds and treats NaN as the scalar code does), with the
//! direction fixed outside the loop; same-type casts are slice copies.
//! Chunked over the rayon pool for long buffers.

use crate::CpuContext;
use kiln_core::ops::cast::{cast_bits, CastDst, CastParams, CastSrc};
use kiln_core::{DType, Result};
use rayon::prelude::*;

/// Below this many elements one thread does the whole buffer.
const PAR_MIN: usize = 1 << 16;
/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `dst = cast(src)` for the first `p.n` elements (bit-identical to
/// [`kiln_core::ops::cast::cast_ref`]).
pub fn cast(ctx: &CpuContext, p: &CastParams, src: CastSrc<'_>, dst: CastDst<'_>) -> Result<()> {
    p.validate_bufs(&src, &dst)?;
    let (s, d) = (p.src, p.dst);
    let par = p.n >= PAR_MIN && ctx.threads() > 1;
    match (src, dst) {
        (CastSrc::F32(x), CastDst::F32(o)) => o.copy_from_slice(x),
        (CastSrc::Bits(x), CastDst::Bits(o)) if s == d => o.copy_from_slice(x),
        (CastSrc::F32(x), CastDst::Bits(o)) => map(ctx, par, x, o, |v: &f32| {
            cast_bits(DType::F32, d, v.to_bits()) as u16
        }),
        (CastSrc::Bits(x), CastDst::F32(o)) => map(ctx, par, x, o, |&v: &u16| {
            f32::from_bits(cast_bits(s, DType::F32, u32::from(v)))
        }),
        (CastSrc::Bits(x), CastDst::Bits(o)) => map(ctx, par, x, o, |&v: &u16| {
            cast_bits(s, d, u32::from(v)) as u16
        }),
    }
    Ok(())
}

/// `o[i] = f(&x[i])`, over the pool when `par`.
fn map<S: Sync, D: Send>(
    ctx: &CpuContext,
    par: bool,
    x: &[S],
    o: &mut [D],
    f: impl Fn(&S) -> D + Sync,
) {
    let run = |x: &[S], o: &mut [D]| {
        for (o, v) in o.iter_mut().zip(x) {
            *o = f(v);
        }
    };
    if par {
        ctx.pool().install(|| {
            o.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(o, x)| run(x, o));
        });
    } else {
        run(x, o);
    }
}
