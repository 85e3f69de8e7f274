//! moe_route on CUDA: validate → launch (`kernels/moe_route.cu`). Implements
//! `kiln_core::ops::moe_route` (softmax or sigmoid scores, selection bias,
//! grouped top-k, renormalisation, routed scaling) with one block per
//! token; ids and weights are written on the device.
//!
//! The logits are not looked at on the host: a token whose logits (or the
//! bias) hold a non-finite value, which the reference refuses, gets every id
//! [`BAD_ID`] (past any expert: `matmul_id` then writes NaN rows) and NaN
//! weights. Callers that have the ids on the host report it
//! ([`first_bad_token`]).

use crate::kernels::MOE_ROUTE;
use crate::launch::ExArgs;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig};
use kiln_core::ops::moe_route::{MoeRouteParams, MoeScoring};

/// The id of every slot of a token with a non-finite logit or bias.
pub const BAD_ID: u32 = u32::MAX;

/// Most threads per token block (the kernel's shared arrays hold
/// `kiln_core::ops::moe_route::MAX_EXPERTS` experts).
const MAX_THREADS: usize = 256;

/// Mirrors `struct MoeRouteParams` in moe_route.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct MoeRouteK {
    n_tokens: u64,
    n_experts: u32,
    top_k: u32,
    n_group: u32,
    topk_group: u32,
    sigmoid: u32,
    norm_topk: u32,
    has_bias: u32,
    routed_scaling: f32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for MoeRouteK {}

/// The first token whose ids are [`BAD_ID`] (host copy of the routed ids).
pub fn first_bad_token(p: &MoeRouteParams, ids: &[u32]) -> Option<usize> {
    ids.iter()
        .position(|&e| e == BAD_ID)
        .map(|i| i / p.top_k.max(1))
}

/// Route `logits: [n_tokens, n_experts]` (plus `bias: [n_experts]`) into
/// `ids`, `weights: [n_tokens, top_k]`, slots by descending selection score
/// (ties: lower expert first).
pub fn moe_route(
    be: &CudaBackend,
    p: &MoeRouteParams,
    logits: &CudaView<'_, f32>,
    bias: Option<&CudaView<'_, f32>>,
    ids: &mut CudaViewMut<'_, u32>,
    weights: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(
        logits.len(),
        bias.map_or(0, |b| b.len()),
        ids.len(),
        weights.len(),
    )?;
    if p.n_tokens == 0 {
        return Ok(());
    }
    if bias.is_some_and(|b| b.is_empty()) {
        // validate() reads a zero length as "no bias".
        return Err(kiln_core::Error::invalid("moe_route", "bias is empty").into());
    }
    let f = be.function("moe_route", MOE_ROUTE, "moe_route_f32")?;
    let threads = (p.n_experts.div_ceil(32) * 32).clamp(32, MAX_THREADS) as u32;
    let cfg = LaunchConfig {
        grid_dim: (p.n_tokens.min(65_535) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let k = MoeRouteK {
        n_tokens: p.n_tokens as u64,
        n_experts: p.n_experts as u32,
        top_k: p.top_k as u32,
        n_group: p.n_group as u32,
        topk_group: p.topk_group as u32,
        sigmoid: u32::from(p.scoring == MoeScoring::Sigmoid),
        norm_topk: u32::from(p.norm_topk),
        has_bias: u32::from(bias.is_some()),
        routed_scaling: p.routed_scaling,
    };
    let mut a = ExArgs::new(be);
    // Without a bias the kernel never reads its bias argument: pass logits.
    a.val(k)
        .buf(logits)
        .buf(bias.unwrap_or(logits))
        .buf_mut(ids)
        .buf_mut(weights);
    // SAFETY: argument list matches moe_route_f32(MoeRouteParams, const
    // float*, const float*, u32*, float*); logits hold n_tokens * n_experts,
    // bias n_experts (read only when has_bias), ids and weights
    // n_tokens * top_k (validated above, n_experts <= 512 = the kernel's
    // shared arrays, top_k <= 16); blockDim is a multiple of 32. PDL: the
    // kernel waits (kiln_pdl_enter) before touching anything.
    unsafe { a.launch(be, &f, cfg, be.pdl_entry()) }
        .map_err(|e| CudaError::driver("launch moe_route_f32", e))?;
    Ok(())
}
