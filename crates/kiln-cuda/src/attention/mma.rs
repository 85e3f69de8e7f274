//! The tensor-core prefill kernel of the attention family
//! (`kernels/attention_mma.cuh`, [`AttentionKernel::Mma`]): FlashAttention-2
//! tiles of 64 queries of one head over 32-key tiles, S = Q Kᵀ and O += P V
//! on `mma.m16n8k16` with bf16 operands and f32 accumulation, online softmax
//! in f32 registers. sm_80+ only; head_dim 64 or 128; f32, f16 or bf16
//! caches (one entry point per type, `attention_mma_d<D>_<kv>`), K/V rows
//! read 16 bytes at a time (base pointers 16-byte aligned, `out` 8-byte
//! aligned).
//!
//! Precision: q (pre-scaled by `scale·log2 e`), k, v and the softmax
//! weights are rounded to bf16 (relative 2^-8), so the result differs from
//! the f32 kernels by ~1e-3 on the testkit's inputs; `Tol::ATTENTION_BF16`
//! (kiln-testkit) is its bound. `attention()` falls back to the f32 tiled
//! kernel where this one cannot run (older GPU, unaligned views) or when
//! `KILN_ATTN_MMA=0`.

use super::{kernel_fn, launch_prefill, unsupported, AttentionKernel, AttnK, Kern, GRID_YZ_MAX};
use crate::kv::KvView;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig};
use kiln_core::ops::attention::AttentionParams;
use std::sync::OnceLock;

/// Head dims with a tensor-core instance.
pub const MMA_HEAD_DIMS: [usize; 2] = [64, 128];
/// Queries per call from which [`super::select_attention`] picks the
/// tensor-core kernel (below, a 64-row tile is mostly padding and the f32
/// tiled kernel's 32-row tiles waste less).
pub const MMA_MIN_TOKENS: usize = 16;
/// Query rows per CTA (`MMA_BM` in attention_mma.cuh).
const MMA_BM: usize = 64;
const MMA_THREADS: u32 = 128;

/// Whether `p` runs on the tensor-core kernel when the device allows it
/// (the selection's rule; see [`super::select_attention`]).
pub fn mma_eligible(p: &AttentionParams) -> bool {
    p.n_tokens >= MMA_MIN_TOKENS && MMA_HEAD_DIMS.contains(&p.head_dim)
}

/// Whether [`super::attention`] rounds operands to bf16 for `p` on some
/// device (the tensor-core kernel): the parity tests hold those calls to
/// `Tol::ATTENTION_BF16` (`kiln_testkit::Options::attention_bf16`).
pub fn uses_bf16(p: &AttentionParams) -> bool {
    mma_eligible(p)
}

/// `KILN_ATTN_MMA=0` turns the automatic choice of the tensor-core kernel
/// off for the process (forced launches still run it).
fn mma_enabled_by_env() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var("KILN_ATTN_MMA").map_or(true, |v| v != "0"))
}

/// Why the tensor-core kernel cannot run this call on `be`, if it cannot.
fn mma_obstacle(be: &CudaBackend, head_dim: usize, kp: u64, vp: u64, op: u64) -> Option<String> {
    if !MMA_HEAD_DIMS.contains(&head_dim) {
        return Some(format!(
            "the tensor-core kernel has no instance for head_dim {head_dim} \
             (instances: {MMA_HEAD_DIMS:?})"
        ));
    }
    let cc = be.info().cc;
    if cc.0 < 8 {
        return Some(format!(
            "the tensor-core kernel needs sm_80+, this device is sm_{}{}",
            cc.0, cc.1
        ));
    }
    if !kp.is_multiple_of(16) || !vp.is_multiple_of(16) || !op.is_multiple_of(8) {
        return Some(format!(
            "the tensor-core kernel needs 16-byte aligned k/v and 8-byte aligned out \
             (k {kp:#x}, v {vp:#x}, out {op:#x})"
        ));
    }
    None
}

/// The automatic choice, adjusted for the device and the buffers: the
/// tensor-core kernel becomes the f32 tiled one (same head dims) where it
/// cannot run or is turned off.
pub(super) fn adjust(
    be: &CudaBackend,
    kernel: AttentionKernel,
    k: &KvView<'_, '_>,
    v: &KvView<'_, '_>,
    out: &CudaViewMut<'_, f32>,
) -> AttentionKernel {
    let AttentionKernel::Mma { head_dim } = kernel else {
        return kernel;
    };
    let st = be.stream();
    let (kp, _g1) = k.device_ptr(st);
    let (vp, _g2) = v.device_ptr(st);
    let (op, _g3) = out.device_ptr(st);
    if mma_enabled_by_env() && mma_obstacle(be, head_dim, kp, vp, op).is_none() {
        kernel
    } else {
        AttentionKernel::Tiled { head_dim }
    }
}

/// Launch `attention_mma_d<head_dim>_<kv>`; `p` validated and the caches'
/// types checked equal by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch(
    be: &CudaBackend,
    p: &AttentionParams,
    head_dim: usize,
    params: AttnK,
    q: &CudaView<'_, f32>,
    (k, v): (KvView<'_, '_>, KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let bad = |msg: String| -> CudaError { unsupported(msg).into() };
    if head_dim != p.head_dim {
        return Err(bad(format!(
            "tensor-core kernel for head_dim {head_dim} cannot run head_dim {} \
             (instances: {MMA_HEAD_DIMS:?})",
            p.head_dim
        )));
    }
    let q_tiles = p.n_tokens.div_ceil(MMA_BM);
    if q_tiles > GRID_YZ_MAX || p.n_heads > i32::MAX as usize {
        return Err(bad(format!(
            "n_tokens {} / n_heads {} exceed the tensor-core kernel's grid",
            p.n_tokens, p.n_heads
        )));
    }
    let Some(i) = MMA_HEAD_DIMS.iter().position(|&d| d == head_dim) else {
        return Err(bad(format!(
            "no tensor-core kernel for head_dim {head_dim} (instances: {MMA_HEAD_DIMS:?})"
        )));
    };
    {
        let st = be.stream();
        let (kp, _g1) = k.device_ptr(st);
        let (vp, _g2) = v.device_ptr(st);
        let (op, _g3) = out.device_ptr_mut(st);
        if let Some(why) = mma_obstacle(be, head_dim, kp, vp, op) {
            return Err(bad(why));
        }
    }
    let f = kernel_fn(be, k.kv_type(), Kern::Mma { i })?;
    let cfg = LaunchConfig {
        grid_dim: (p.n_heads as u32, q_tiles as u32, 1),
        block_dim: (MMA_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    // SAFETY: attention_mma_d*_<kv> has launch_prefill's signature for the
    // caches' type (the variant was chosen by it); lengths were validated,
    // the device is sm_80+ and k/v/out aligned as the kernel's vector
    // accesses need (checked above); the kernel reads q rows < n_tokens and
    // the cache rows kv_row(j) < kv_rows <= kv_stride of positions j from the
    // first query's first key to pos0 + n_tokens, and writes each (token,
    // head) row of out once (static shared memory).
    unsafe { launch_prefill(be, f, cfg, params, q, (&k, &v), out) }
        .map_err(|e| CudaError::driver("launch attention_mma", e))?;
    Ok(())
}
