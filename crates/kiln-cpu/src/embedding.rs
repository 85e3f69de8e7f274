//! embedding on the CPU (spec: [`kiln_core::ops::embedding`]): one
//! dequantized table row per id, ids spread over the rayon pool for
//! prefill-sized batches.

use crate::CpuContext;
use kiln_core::ops::embedding::EmbeddingParams;
use kiln_core::quant::dequantize_row;
use kiln_core::Result;
use rayon::prelude::*;

/// Below this many output elements one thread does every row.
const PAR_MIN: usize = 1 << 14;

/// `out[t] = dequantize(table[ids[t]])`.
pub fn embedding(
    ctx: &CpuContext,
    p: &EmbeddingParams,
    table: &[u8],
    ids: &[u32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(table.len(), ids, out.len())?;
    let rb = p.row_bytes()?;
    let row = |id: u32, o: &mut [f32]| {
        let start = id as usize * rb;
        dequantize_row(p.dtype, &table[start..start + rb], o)
    };
    if ids.len() * p.dim < PAR_MIN || ctx.threads() == 1 {
        ids.iter()
            .zip(out.chunks_exact_mut(p.dim))
            .try_for_each(|(&id, o)| row(id, o))
    } else {
        ctx.pool().install(|| {
            ids.par_iter()
                .zip(out.par_chunks_exact_mut(p.dim))
                .try_for_each(|(&id, o)| row(id, o))
        })
    }
}
