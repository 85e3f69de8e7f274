//! moe_combine on CUDA: validate → launch (`kernels/moe_combine.cu`).
//! Implements `kiln_core::ops::moe_combine`: `out[t] = residual[t] +
//! Σ_s weights[t·top_k + s] · y[t·top_k + s]`, summed in f32.

use crate::kernels::MOE_COMBINE;
use crate::launch::ExArgs;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig};
use kiln_core::ops::moe_combine::MoeCombineParams;

/// Mirrors `struct MoeCombineParams` in moe_combine.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct MoeCombineK {
    n_tokens: u64,
    top_k: u64,
    dim: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for MoeCombineK {}

/// `y: [n_tokens·top_k, dim]`, `weights: [n_tokens·top_k]`,
/// `residual, out: [n_tokens, dim]`.
pub fn moe_combine(
    be: &CudaBackend,
    p: &MoeCombineParams,
    y: &CudaView<'_, f32>,
    weights: &CudaView<'_, f32>,
    residual: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(y.len(), weights.len(), residual.len(), out.len())?;
    let total = p.n_tokens * p.dim;
    if total == 0 {
        return Ok(());
    }
    let f = be.function("moe_combine", MOE_COMBINE, "moe_combine_f32")?;
    let threads = 256u32;
    let cfg = LaunchConfig {
        grid_dim: (total.div_ceil(threads as usize).min(65_535) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let k = MoeCombineK {
        n_tokens: p.n_tokens as u64,
        top_k: p.top_k as u64,
        dim: p.dim as u64,
    };
    let mut a = ExArgs::new(be);
    a.val(k).buf(y).buf(weights).buf(residual).buf_mut(out);
    // SAFETY: argument list matches moe_combine_f32(MoeCombineParams, const
    // float*, const float*, const float*, float*); lengths validated above
    // (y rows·dim, weights rows, residual and out n_tokens·dim). PDL: the
    // kernel waits (kiln_pdl_enter) before touching anything.
    unsafe { a.launch(be, &f, cfg, be.pdl_entry()) }
        .map_err(|e| CudaError::driver("launch moe_combine_f32", e))?;
    Ok(())
}
