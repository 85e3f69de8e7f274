//! The tensor-core prefill kernels of the attention family: FlashAttention-2
//! tiles, S = Q Kᵀ and O += P V on `mma.m16n8k16` with bf16 operands and f32
//! accumulation, online softmax in f32 registers. sm_80+ only; head_dim 64
//! or 128; f32, f16 or bf16 caches (one entry point per type), K/V rows read
//! 16 bytes at a time (base pointers 16-byte aligned, `out` 8-byte aligned).
//!
//! - [`AttentionKernel::Mma2`] (v2, `kernels/attention_mma2.cuh`,
//!   `attention_mma2_d<D>_<kv>`): 128 queries (8 warps) per block over
//!   64-key tiles in a ring of dynamic shared memory, one barrier per tile;
//!   16-bit caches are copied by `cp.async` three tiles deep and used as
//!   stored (bf16 caches with bf16 operands, f16 caches with f16 operands:
//!   Q and P rounded to f16), f32 ones register-staged (rounded to bf16)
//!   two deep. The default for more than [`MMA_BM`] queries.
//! - [`AttentionKernel::Mma`] (v1, `kernels/attention_mma.cuh`,
//!   `attention_mma_d<D>_<kv>`): 64 queries (4 warps) per block over
//!   32-key tiles, static shared memory, two barriers per tile. The default
//!   for [`MMA_MIN_TOKENS`] ..= [`MMA_BM`] queries (v2's 128-row tiles would
//!   be half padding), and everywhere with `KILN_ATTN_MMA=v1`.
//!
//! Precision: q (pre-scaled by `scale·log2 e`), k, v and the softmax
//! weights are rounded to bf16 (relative 2^-8), so the result differs from
//! the f32 kernels by ~1e-3 on the testkit's inputs; `Tol::ATTENTION_BF16`
//! (kiln-testkit) is its bound. v2 with an f16 cache multiplies in f16
//! instead (k and v exact, q and the weights relative 2^-11; q scaled per
//! warp by a power of two into f16's range): ~1e-4, inside the same bound.
//! `attention()` falls back to the f32 tiled kernel where neither can run
//! (older GPU, unaligned views) or when `KILN_ATTN_MMA=0`.

use super::{kernel_fn, launch_prefill, unsupported, AttentionKernel, AttnK, Kern, GRID_YZ_MAX};
use crate::kv::KvView;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, LaunchConfig};
use kiln_core::ops::attention::AttentionParams;
use kiln_core::KvType;
use std::sync::OnceLock;

/// Head dims with a tensor-core instance.
pub const MMA_HEAD_DIMS: [usize; 2] = [64, 128];
/// Queries per call from which [`super::select_attention`] picks the
/// tensor-core kernel (below, a 64-row tile is mostly padding and the f32
/// tiled kernel's 32-row tiles waste less).
pub const MMA_MIN_TOKENS: usize = 16;
/// Query rows per CTA of v1 (`MMA_BM` in attention_mma.cuh); v2 is picked
/// for calls of more queries.
pub const MMA_BM: usize = 64;
const MMA_THREADS: u32 = 128;
/// Query rows, threads and keys per tile of v2 (`MMA2_*` in attention_mma2.cuh).
const MMA2_BM: usize = 128;
const MMA2_THREADS: u32 = 256;
const MMA2_BN: usize = 64;

/// The dynamic shared memory of v2 for a head_dim and cache type: its
/// ring of K/V stages (`MMA2_STAGES`: 3 for 16-bit caches, copied by
/// cp.async; 2 for f32, register-staged), each a K and a V tile of
/// `MMA2_BN` keys × head_dim 16-bit values.
pub fn mma2_smem_bytes(head_dim: usize, kv: KvType) -> usize {
    let stages = if kv == KvType::F32 { 2 } else { 3 };
    stages * 2 * MMA2_BN * head_dim * 2
}

/// The tensor-core kernel [`super::select_attention`] picks for `p` (with
/// [`mma_eligible`]): v2 for more than one v1 tile of queries, else v1.
pub fn mma_kernel_for(p: &AttentionParams) -> AttentionKernel {
    if p.n_tokens > MMA_BM {
        AttentionKernel::Mma2 {
            head_dim: p.head_dim,
        }
    } else {
        AttentionKernel::Mma {
            head_dim: p.head_dim,
        }
    }
}

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

/// `KILN_ATTN_MMA`: `0` turns the automatic choice of the tensor-core
/// kernels off for the process (the f32 tiled kernel instead), `v1` makes
/// it take v1 where it would take v2 (A/B runs, a fallback); forced
/// launches run what they name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MmaEnv {
    Off,
    V1,
    Auto,
}

fn mma_env() -> MmaEnv {
    static ON: OnceLock<MmaEnv> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("KILN_ATTN_MMA").as_deref() {
        Ok("0") => MmaEnv::Off,
        Ok("v1") => MmaEnv::V1,
        _ => MmaEnv::Auto,
    })
}

/// Why v2 cannot run on `be` with these caches (beyond [`mma_obstacle`]).
fn mma2_obstacle(be: &CudaBackend, head_dim: usize, kv: KvType) -> Option<String> {
    let need = mma2_smem_bytes(head_dim, kv);
    let have = usize::try_from(be.info().smem_optin).unwrap_or(0);
    (need > have).then(|| {
        format!(
            "the pipelined tensor-core kernel needs {need} bytes of shared memory per block \
             for head_dim {head_dim} with a {kv} cache, this device allows {have}"
        )
    })
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

/// The automatic choice, adjusted for the device, the buffers and
/// `KILN_ATTN_MMA`: v2 becomes v1 where its shared memory does not fit or
/// with `v1`; a tensor-core kernel becomes the f32 tiled one (same head
/// dims) where it cannot run or with `0`.
pub(super) fn adjust(
    be: &CudaBackend,
    kernel: AttentionKernel,
    k: &KvView<'_, '_>,
    v: &KvView<'_, '_>,
    out: &CudaViewMut<'_, f32>,
) -> AttentionKernel {
    let head_dim = match kernel {
        AttentionKernel::Mma { head_dim } | AttentionKernel::Mma2 { head_dim } => head_dim,
        _ => return kernel,
    };
    let st = be.stream();
    let (kp, _g1) = k.device_ptr(st);
    let (vp, _g2) = v.device_ptr(st);
    let (op, _g3) = out.device_ptr(st);
    let env = mma_env();
    if env == MmaEnv::Off || mma_obstacle(be, head_dim, kp, vp, op).is_some() {
        return AttentionKernel::Tiled { head_dim };
    }
    if matches!(kernel, AttentionKernel::Mma2 { .. })
        && (env == MmaEnv::V1 || mma2_obstacle(be, head_dim, k.kv_type()).is_some())
    {
        return AttentionKernel::Mma { head_dim };
    }
    kernel
}

/// Launch `attention_mma_d<head_dim>_<kv>` (v1) or, with `v2`,
/// `attention_mma2_d<head_dim>_<kv>`; `p` validated and the caches' types
/// checked equal by the caller.
#[allow(clippy::too_many_arguments)]
pub(super) fn launch(
    be: &CudaBackend,
    p: &AttentionParams,
    (head_dim, v2): (usize, bool),
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
    let q_tiles = p.n_tokens.div_ceil(if v2 { MMA2_BM } else { MMA_BM });
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
    let kv = k.kv_type();
    let (f, cfg) = if v2 {
        if let Some(why) = mma2_obstacle(be, head_dim, kv) {
            return Err(bad(why));
        }
        let smem = mma2_smem_bytes(head_dim, kv);
        let f = kernel_fn(be, kv, Kern::Mma2 { i })?;
        // Opt in to more than the default 48 KiB (checked against the
        // device's limit above); not a stream operation.
        f.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem as i32,
        )
        .map_err(|e| CudaError::driver("attention_mma2 shared memory", e))?;
        let cfg = LaunchConfig {
            grid_dim: (p.n_heads as u32, q_tiles as u32, 1),
            block_dim: (MMA2_THREADS, 1, 1),
            shared_mem_bytes: smem as u32,
        };
        (f, cfg)
    } else {
        let f = kernel_fn(be, kv, Kern::Mma { i })?;
        let cfg = LaunchConfig {
            grid_dim: (p.n_heads as u32, q_tiles as u32, 1),
            block_dim: (MMA_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        (f, cfg)
    };
    // SAFETY: attention_mma[2]_d*_<kv> has launch_prefill's signature for
    // the caches' type (the variant was chosen by it); lengths were
    // validated, the device is sm_80+ and k/v/out aligned as the kernels'
    // vector accesses and cp.async need (checked above); the kernel reads q
    // rows < n_tokens and the cache rows kv_row(j) < kv_rows <= kv_stride of
    // positions j from the first query's first key to pos0 + n_tokens, and
    // writes each (token, head) row of out once; v2's dynamic shared memory
    // is what mma2_smem_bytes computes for its stages (the device allows it,
    // checked above), v1's is static.
    unsafe { launch_prefill(be, f, cfg, params, q, (&k, &v), out) }
        .map_err(|e| CudaError::driver("launch attention_mma", e))?;
    Ok(())
}
