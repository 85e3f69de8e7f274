//! mul on the CPU: `out = a * b` (spec: [`kiln_core::ops::mul`]), chunked
//! over the rayon pool for long vectors, AVX2 inside a chunk.

use crate::CpuContext;
use kiln_core::ops::mul::MulParams;
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many elements one thread does the whole vector.
const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `out = a * b` (bit-identical to [`kiln_core::ops::mul::mul_ref`]).
pub fn mul(ctx: &CpuContext, p: &MulParams, a: &[f32], b: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(a.len(), b.len(), out.len())?;
    let f = ctx.features();
    let run = |a: &[f32], b: &[f32], o: &mut [f32]| {
        #[cfg(target_arch = "x86_64")]
        if f.has_avx2_fma() {
            // SAFETY: AVX2 was detected at run time; equal lengths per chunk.
            unsafe { mul_avx2(a, b, o) };
            return;
        }
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = x * y;
        }
    };
    if p.n < PAR_MIN || ctx.threads() == 1 {
        run(a, b, out);
    } else {
        ctx.pool().install(|| {
            out.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
                .for_each(|(o, (a, b))| run(a, b, o));
        });
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mul_avx2(a: &[f32], b: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len().min(a.len()).min(b.len());
    let (pa, pb, po) = (a.as_ptr(), b.as_ptr(), out.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(
            po.add(i),
            _mm256_mul_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))),
        );
        i += 8;
    }
    while i < n {
        *po.add(i) = *pa.add(i) * *pb.add(i);
        i += 1;
    }
}
