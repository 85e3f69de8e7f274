//! attention on CUDA: causal GQA attention over an f32 KV cache, with an
//! optional sliding window, the semantics of
//! `kiln_core::ops::attention::attention_ref` (see there for shapes and the
//! window). Validate → select → launch (`kernels/attention.cu`).
//!
//! Windows: every kernel masks keys before `i - w + 1` for the query at
//! position `i`; the split-KV kernels split only the keys some query of the
//! call sees ([`key_span`] of them, starting at the first query's first
//! key), so a long context with a short window does not launch splits of
//! invisible keys, and a split that still has none for its query (later
//! queries of a batch, or a graph replay at an earlier position) writes an
//! empty partial that the merge weighs by exactly zero.
//!
//! Kernels ([`select_attention`] picks one):
//! - [`AttentionKernel::SplitKv`]: flash decoding. Blocks over (key split,
//!   kv head × head chunk, token) stream their keys with an online softmax
//!   and write partials to the backend's scratch buffer
//!   ([`CudaBackend::with_scratch_f32`]); the last block of each group (a
//!   ticket counter, [`CudaBackend::with_tickets`]) merges them, so the
//!   whole attention is one launch. The split
//!   count grows with the key count until the grid fills the GPU. Used for
//!   decode (`n_tokens <= DECODE_MAX_TOKENS`) and for any head_dim ≤ 256 the
//!   tiled kernel has no instance for.
//! - [`AttentionKernel::Mma`]: prefill on tensor cores (sm_80+, bf16
//!   operands, f32 accumulation and softmax; [`mma`]), picked from
//!   [`MMA_MIN_TOKENS`] queries for head_dim 64 and 128.
//! - [`AttentionKernel::Tiled`]: prefill. One block per (32 queries, head),
//!   32-key tiles in shared memory, f32 math; head_dim 64, 80, 96 or 128;
//!   also where the tensor-core kernel cannot run (older GPU, unaligned
//!   views, `KILN_ATTN_MMA=0`).

use crate::kernels::ATTENTION;
use crate::launch::{arg, launch_ex};
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{
    CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use kiln_core::ops::attention::AttentionParams;
use kiln_core::Error;

mod mma;
pub use mma::{mma_eligible, uses_bf16, MMA_HEAD_DIMS, MMA_MIN_TOKENS};

/// Queries per call up to which the split-KV (decode) kernel is used.
pub const DECODE_MAX_TOKENS: usize = 4;
/// Head dims with a tiled (prefill) kernel instance.
pub const TILED_HEAD_DIMS: [usize; 4] = [64, 80, 96, 128];
/// Largest head_dim of the split-KV kernel (its shared-memory budget).
pub const SPLIT_MAX_HEAD_DIM: usize = 256;
/// Most key splits per query (a bound on the partials' scratch).
pub const MAX_SPLITS: usize = 256;
/// Fewest keys per split: below this the merge costs more than the
/// extra parallelism gains.
pub const MIN_KEYS_PER_SPLIT: usize = 32;
/// Fewest keys per split of the warp decode kernel (n_tokens <=
/// DECODE_MAX_TOKENS): 4 warps stream 64 keys in about the time a merge
/// takes (at 129 keys, 5 splits + a block-synchronous merge measured 15.6 us
/// per call on an H100, one split of 9 keys 5.8 us).
pub const DEC_MIN_KEYS_PER_SPLIT: usize = 64;
/// Most query heads per split-KV block (shared memory for q and acc).
pub const MAX_HEADS_PER_BLOCK: usize = 8;
/// Split-KV blocks aimed for, in percent of the SM count: fewer, longer
/// splits overlap their tile loads (register prefetch) and make the merge
/// cheaper; 1.5 blocks per SM measured best on an H100 at kv 1k-8k, d 64.
const SPLIT_BLOCKS_PERCENT_OF_SMS: usize = 150;
const SPLIT_THREADS: u32 = 128;
/// Registers per thread holding one K/V tile: key_tile * head_dim <= 128 * 32.
const SPLIT_TILE_ELEMS: usize = 128 * 32;
const TILE_Q: usize = 32;
const TILE_THREADS: u32 = 128;
/// Grid y/z limit of a launch.
const GRID_YZ_MAX: usize = 65_535;

/// How the split-KV kernel divides the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitKvPlan {
    /// Splits over the key range (1 = no merge).
    pub splits: usize,
    /// Keys per split, a multiple of `key_tile`.
    pub chunk: usize,
    /// Query heads of one kv head handled by one block.
    pub heads_per_block: usize,
    /// Keys per shared-memory tile (32, or 16 for head_dim > 128).
    pub key_tile: usize,
}

/// The attention kernel for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Split-KV flash decoding (the last block merges when `splits > 1`).
    SplitKv(SplitKvPlan),
    /// Tiled prefill for this head_dim (one of [`TILED_HEAD_DIMS`]).
    Tiled { head_dim: usize },
    /// Tensor-core prefill for this head_dim (one of [`MMA_HEAD_DIMS`];
    /// sm_80+, bf16 operands).
    Mma { head_dim: usize },
}

/// Mirrors `struct AttnParams` in attention.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AttnK {
    n_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    pos0: u32,
    group: u32,
    n_splits: u32,
    chunk: u32,
    heads_per_block: u32,
    key_tile: u32,
    scale_log2: f32,
    /// Sliding window (0 = none); see [`kernel_window`].
    window: u32,
}
const _: () = assert!(std::mem::size_of::<AttnK>() == 48);
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for AttnK {}

fn unsupported(msg: String) -> Error {
    Error::invalid("attention", msg)
}

/// Keys that some query of `p` sees: `pos0 + n_tokens` causally; with a
/// window `w`, the first query's `w` keys and one more per further query
/// (`w + n_tokens - 1`), whichever is fewer. At least 1. The split-KV
/// kernels split this many keys, starting at the first query's first key.
pub fn key_span(p: &AttentionParams) -> usize {
    let all = (p.pos0 + p.n_tokens).max(1);
    match p.window {
        Some(w) => all.min(w.saturating_add(p.n_tokens.saturating_sub(1)).max(1)),
        None => all,
    }
}

/// The window the kernels get: 0 (none) when absent or when it covers
/// every key of the call (then it masks nothing), else `w < pos0 +
/// n_tokens`, which fits a u32 once [`base_params`] has checked the sizes.
fn kernel_window(p: &AttentionParams) -> u32 {
    match p.window {
        Some(w) if w < p.pos0 + p.n_tokens => w as u32,
        _ => 0,
    }
}

/// The split-KV plan for `p` on a GPU with `sm_count` SMs.
pub fn split_kv_plan(p: &AttentionParams, sm_count: usize) -> SplitKvPlan {
    let d = p.head_dim.max(1);
    let group = p.group().max(1);
    let key_tile = if d <= 128 { 32 } else { 16 };
    let heads_per_block = group.min((1024 / d).max(1)).min(MAX_HEADS_PER_BLOCK);
    let head_chunks = group.div_ceil(heads_per_block);
    let base_blocks = p.n_tokens.clamp(1, GRID_YZ_MAX) * p.n_kv_heads.max(1) * head_chunks;
    let max_keys = key_span(p);
    let target = (SPLIT_BLOCKS_PERCENT_OF_SMS * sm_count.max(1)).div_ceil(100);
    // The warp decode kernel streams keys with no block-wide step per tile;
    // its splits pay a merge (the last block of a group reads every split's
    // partial), so they start later.
    let min_keys = if p.n_tokens <= DECODE_MAX_TOKENS {
        DEC_MIN_KEYS_PER_SPLIT
    } else {
        MIN_KEYS_PER_SPLIT
    };
    let splits = target
        .div_ceil(base_blocks)
        .min(max_keys.div_ceil(min_keys))
        .clamp(1, MAX_SPLITS);
    let chunk = max_keys.div_ceil(splits).div_ceil(key_tile) * key_tile;
    SplitKvPlan {
        splits: max_keys.div_ceil(chunk),
        chunk,
        heads_per_block,
        key_tile,
    }
}

/// Pick the kernel for `p` on a GPU with `sm_count` SMs, or say why none fits.
/// Pure: also answers "is this supported". It assumes an sm_80+ device;
/// [`attention`] turns [`AttentionKernel::Mma`] into the tiled kernel of
/// the same head_dim where the tensor-core kernel cannot run.
pub fn select_attention(
    p: &AttentionParams,
    sm_count: usize,
) -> std::result::Result<AttentionKernel, Error> {
    let d = p.head_dim;
    if mma_eligible(p) {
        return Ok(AttentionKernel::Mma { head_dim: d });
    }
    if p.n_tokens > DECODE_MAX_TOKENS && TILED_HEAD_DIMS.contains(&d) {
        return Ok(AttentionKernel::Tiled { head_dim: d });
    }
    if d == 0 || d > SPLIT_MAX_HEAD_DIM {
        return Err(unsupported(format!(
            "head_dim {d} is not supported on CUDA (tiled prefill: {TILED_HEAD_DIMS:?}; \
             split-KV: 1..={SPLIT_MAX_HEAD_DIM})"
        )));
    }
    Ok(AttentionKernel::SplitKv(split_kv_plan(p, sm_count)))
}

/// Dynamic shared memory (bytes) of the split-KV kernel; the layout in attention.cu.
fn split_smem_bytes(d: usize, plan: &SplitKvPlan) -> usize {
    let (hb, bk) = (plan.heads_per_block, plan.key_tile);
    let floats = 2 * hb * d + bk * (d + 1) + bk * d + hb * bk + 3 * hb;
    floats * std::mem::size_of::<f32>()
}

/// Scratch floats the split-KV plan needs (0 for one split).
pub fn split_scratch_len(p: &AttentionParams, plan: &SplitKvPlan) -> usize {
    if plan.splits <= 1 {
        return 0;
    }
    p.n_tokens * p.n_heads * plan.splits * (p.head_dim + 2)
}

/// Reject a plan the kernels cannot run correctly.
fn check_plan(p: &AttentionParams, plan: &SplitKvPlan) -> std::result::Result<(), Error> {
    let max_keys = key_span(p);
    let bad = |what: &str| unsupported(format!("split-KV plan {plan:?}: {what}"));
    if plan.key_tile != 16 && plan.key_tile != 32 {
        return Err(bad("key_tile must be 16 or 32"));
    }
    if plan.chunk == 0 || !plan.chunk.is_multiple_of(plan.key_tile) {
        return Err(bad("chunk must be a positive multiple of key_tile"));
    }
    let covered = plan.splits.saturating_mul(plan.chunk);
    if plan.splits == 0 || plan.splits > MAX_SPLITS || covered < max_keys {
        return Err(bad("splits must be in 1..=256 and cover every key"));
    }
    // The kernels add split * chunk to a key index below i32::MAX / 2 in u32.
    if covered > (i32::MAX as usize) / 2 {
        return Err(bad("splits * chunk must stay below 2^30"));
    }
    if plan.heads_per_block == 0 || plan.heads_per_block > MAX_HEADS_PER_BLOCK {
        return Err(bad("heads_per_block must be in 1..=8"));
    }
    if p.head_dim > SPLIT_MAX_HEAD_DIM
        || plan.key_tile * p.head_dim > SPLIT_TILE_ELEMS
        || split_smem_bytes(p.head_dim, plan) > 48 * 1024
    {
        return Err(bad("shared memory exceeds 48 KiB"));
    }
    if p.n_kv_heads * p.group().div_ceil(plan.heads_per_block) > GRID_YZ_MAX {
        return Err(bad("too many heads for one grid"));
    }
    Ok(())
}

/// `out = attention(q, k, v)` on the backend's stream; see the module docs.
pub fn attention(
    be: &CudaBackend,
    p: &AttentionParams,
    q: &CudaView<'_, f32>,
    k: &CudaView<'_, f32>,
    v: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    let kernel = select_attention(p, be.info().sm_count.max(1) as usize)?;
    let kernel = mma::adjust(be, kernel, k, v, out);
    attention_with_kernel(be, p, &kernel, q, k, v, out)
}

/// [`attention`] with an explicit kernel choice (benches, tuning). Validates
/// `p` and the choice.
pub fn attention_with_kernel(
    be: &CudaBackend,
    p: &AttentionParams,
    kernel: &AttentionKernel,
    q: &CudaView<'_, f32>,
    k: &CudaView<'_, f32>,
    v: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    if p.n_tokens == 0 {
        return Ok(());
    }
    let params = base_params(p)?;
    match *kernel {
        AttentionKernel::Tiled { head_dim } => {
            if head_dim != p.head_dim || !TILED_HEAD_DIMS.contains(&head_dim) {
                return Err(unsupported(format!(
                    "tiled kernel for head_dim {head_dim} cannot run head_dim {} \
                     (instances: {TILED_HEAD_DIMS:?})",
                    p.head_dim
                ))
                .into());
            }
            if p.n_heads > GRID_YZ_MAX {
                return Err(unsupported(format!("n_heads {} exceeds the grid", p.n_heads)).into());
            }
            let name = match head_dim {
                64 => "attention_tiled_d64_f32",
                80 => "attention_tiled_d80_f32",
                96 => "attention_tiled_d96_f32",
                _ => "attention_tiled_d128_f32",
            };
            let f = be.function("attention", ATTENTION, name)?;
            let cfg = LaunchConfig {
                grid_dim: (p.n_tokens.div_ceil(TILE_Q) as u32, p.n_heads as u32, 1),
                block_dim: (TILE_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let mut l = be.stream().launch_builder(&f);
            l.arg(&params).arg(q).arg(k).arg(v).arg(out);
            // SAFETY: arguments match attention_tiled_d*_f32(AttnParams, const float*,
            // const float*, const float*, float*); lengths were validated and the
            // kernel reads q/k/v rows below pos0 + n_tokens (from the first
            // query's first key) and writes out's n_tokens * n_heads * head_dim
            // elements.
            unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch attention_tiled", e))?;
        }
        AttentionKernel::Mma { head_dim } => {
            mma::launch(be, p, head_dim, params, q, k, v, out)?;
        }
        AttentionKernel::SplitKv(plan) => {
            launch_split(be, p, &plan, params, None, q, k, v, out)?;
        }
    }
    Ok(())
}

/// [`attention`] for a CUDA-graph decode step: the position of query 0 is
/// read from `pos[0]` on the device when the kernel runs, not from `p`.
/// `p.pos0` is the largest position the call may see (e.g. `kv_stride -
/// n_tokens`): the split-KV plan and the bounds are made for it, and the
/// device value is clamped to it. Always runs the split-KV kernel (decode);
/// the launch arguments do not depend on the device position, so a graph
/// recorded once replays for every position. A window is applied at the
/// device position (the splits cover the window's keys at `p.pos0`, which
/// cover them at any earlier position).
#[allow(clippy::too_many_arguments)]
pub fn attention_at(
    be: &CudaBackend,
    p: &AttentionParams,
    pos: &CudaView<'_, i32>,
    q: &CudaView<'_, f32>,
    k: &CudaView<'_, f32>,
    v: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    if p.n_tokens == 0 {
        return Ok(());
    }
    if pos.is_empty() {
        return Err(unsupported("attention_at: the device position buffer is empty".into()).into());
    }
    let d = p.head_dim;
    if d == 0 || d > SPLIT_MAX_HEAD_DIM {
        return Err(unsupported(format!(
            "head_dim {d} is not supported by the split-KV kernel (1..={SPLIT_MAX_HEAD_DIM})"
        ))
        .into());
    }
    let params = base_params(p)?;
    let plan = split_kv_plan(p, be.info().sm_count.max(1) as usize);
    launch_split(be, p, &plan, params, Some(pos), q, k, v, out)
}

/// The kernel params every attention launch starts from (split fields are
/// filled by the split-KV launch), after checking the sizes fit the kernels'
/// u32 indexing (positions + one chunk of slack).
fn base_params(p: &AttentionParams) -> Result<AttnK> {
    let fits = |x: usize| x <= (i32::MAX as usize) / 2;
    if !fits(p.pos0 + p.n_tokens) || !fits(p.n_heads) || !fits(p.head_dim) {
        return Err(unsupported(format!(
            "sizes too large for the CUDA kernels: pos0 {} + n_tokens {}, n_heads {}, head_dim {}",
            p.pos0, p.n_tokens, p.n_heads, p.head_dim
        ))
        .into());
    }
    Ok(AttnK {
        n_tokens: p.n_tokens as u32,
        n_heads: p.n_heads as u32,
        n_kv_heads: p.n_kv_heads as u32,
        head_dim: p.head_dim as u32,
        pos0: p.pos0 as u32,
        group: p.group() as u32,
        n_splits: 1,
        chunk: 0,
        heads_per_block: 0,
        key_tile: 0,
        scale_log2: p.scale * std::f32::consts::LOG2_E,
        window: kernel_window(p),
    })
}

/// The split-KV launch (one kernel, merge included); with `pos`, the `_at` kernels that
/// read pos0 from the device.
#[allow(clippy::too_many_arguments)]
fn launch_split(
    be: &CudaBackend,
    p: &AttentionParams,
    plan: &SplitKvPlan,
    mut params: AttnK,
    pos: Option<&CudaView<'_, i32>>,
    q: &CudaView<'_, f32>,
    k: &CudaView<'_, f32>,
    v: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let plan = *plan;
    check_plan(p, &plan)?;
    params.n_splits = plan.splits as u32;
    params.chunk = plan.chunk as u32;
    params.heads_per_block = plan.heads_per_block as u32;
    params.key_tile = plan.key_tile as u32;
    let head_chunks = p.group().div_ceil(plan.heads_per_block);
    if p.n_tokens <= DECODE_MAX_TOKENS {
        return launch_decode(be, p, &plan, params, pos, q, k, v, out);
    }
    let cfg = LaunchConfig {
        grid_dim: (
            plan.splits as u32,
            (p.n_kv_heads * head_chunks) as u32,
            p.n_tokens.min(GRID_YZ_MAX) as u32,
        ),
        block_dim: (SPLIT_THREADS, 1, 1),
        shared_mem_bytes: split_smem_bytes(p.head_dim, &plan) as u32,
    };
    if plan.splits == 1 {
        let name = match pos {
            Some(_) => "attention_split_direct_at_f32",
            None => "attention_split_direct_f32",
        };
        let f = be.function("attention", ATTENTION, name)?;
        let st = be.stream();
        let (mut pq, _g1) = q.device_ptr(st);
        let (mut pk, _g2) = k.device_ptr(st);
        let (mut pv, _g3) = v.device_ptr(st);
        let (mut po, _g4) = out.device_ptr_mut(st);
        let (mut pp, _g5) = match pos {
            Some(p) => p.device_ptr(st),
            None => q.device_ptr(st),
        };
        let mut args = vec![arg(&mut params)];
        if pos.is_some() {
            args.push(arg(&mut pp));
        }
        args.extend([arg(&mut pq), arg(&mut pk), arg(&mut pv), arg(&mut po)]);
        // SAFETY: arguments match attention_split_direct[_at]_f32(AttnParams,
        // [const i32* pos,] const float*, const float*, const float*, float*);
        // lengths were validated for pos0 = params.pos0 (the device position is
        // clamped to it), the plan checked (shared memory as computed), the
        // kernel writes each (token, head) row of out once, and it waits for
        // the previous kernel before reading anything (PDL).
        unsafe { launch_ex(be, &f, cfg, be.pdl(), &mut args) }
            .map_err(|e| CudaError::driver("launch attention_split_direct", e))?;
        return Ok(());
    }
    let name = match pos {
        Some(_) => "attention_split_at_f32",
        None => "attention_split_f32",
    };
    launch_merging(be, p, &plan, name, cfg, params, pos, (q, k, v), out)
}

/// Launch a split kernel that writes partials to the backend scratch and
/// merges them in the last block of each group (`attention_split[_at]_f32`,
/// `attention_decode_l<L>[_at]_f32`: the same parameter list).
#[allow(clippy::too_many_arguments)]
fn launch_merging(
    be: &CudaBackend,
    p: &AttentionParams,
    plan: &SplitKvPlan,
    name: &'static str,
    cfg: LaunchConfig,
    mut params: AttnK,
    pos: Option<&CudaView<'_, i32>>,
    (q, k, v): (&CudaView<'_, f32>, &CudaView<'_, f32>, &CudaView<'_, f32>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let head_chunks = p.group().div_ceil(plan.heads_per_block);
    let need = split_scratch_len(p, plan).max(1);
    let n_tickets = p.n_tokens.min(GRID_YZ_MAX) * p.n_kv_heads * head_chunks;
    be.with_scratch_f32(need, |part| {
        be.with_tickets(n_tickets, |tickets| {
            let f = be.function("attention", ATTENTION, name)?;
            let st = be.stream();
            let (mut pq, _g1) = q.device_ptr(st);
            let (mut pk, _g2) = k.device_ptr(st);
            let (mut pv, _g3) = v.device_ptr(st);
            let (mut ppart, _g4) = part.device_ptr_mut(st);
            let (mut pt, _g5) = tickets.device_ptr_mut(st);
            let (mut po, _g6) = out.device_ptr_mut(st);
            let (mut pp, _g7) = match pos {
                Some(p) => p.device_ptr(st),
                None => q.device_ptr(st),
            };
            let mut args = vec![arg(&mut params)];
            if pos.is_some() {
                args.push(arg(&mut pp));
            }
            args.extend([
                arg(&mut pq),
                arg(&mut pk),
                arg(&mut pv),
                arg(&mut ppart),
                arg(&mut pt),
                arg(&mut po),
            ]);
            // SAFETY: arguments match <name>(AttnParams, [const i32* pos,]
            // const float* q, const float* k, const float* v, float* part,
            // u32* tickets, float* out) for both kernel families; lengths
            // were validated for pos0 = params.pos0 (a device position is
            // clamped to it) and the plan checked (grid and shared memory as
            // the caller computed); `part` holds n_tokens * n_heads * splits *
            // (head_dim + 2) floats (unused with one split), `tickets` one
            // zeroed counter per (token, grid row) that the merging block
            // resets; each (token, head) row of out is written once; the
            // kernels wait for the previous kernel before reading (PDL).
            unsafe { launch_ex(be, &f, cfg, be.pdl(), &mut args) }
                .map_err(|e| CudaError::driver("launch attention (merging)", e))?;
            Ok(())
        })
    })
}

/// Warps per block of the warp decode kernel (`DEC_WARPS` in attention.cu).
const DEC_WARPS: usize = 4;
const DEC_NAMES: [&str; 8] = [
    "attention_decode_l1_f32",
    "attention_decode_l2_f32",
    "attention_decode_l3_f32",
    "attention_decode_l4_f32",
    "attention_decode_l5_f32",
    "attention_decode_l6_f32",
    "attention_decode_l7_f32",
    "attention_decode_l8_f32",
];
const DEC_AT_NAMES: [&str; 8] = [
    "attention_decode_l1_at_f32",
    "attention_decode_l2_at_f32",
    "attention_decode_l3_at_f32",
    "attention_decode_l4_at_f32",
    "attention_decode_l5_at_f32",
    "attention_decode_l6_at_f32",
    "attention_decode_l7_at_f32",
    "attention_decode_l8_at_f32",
];

/// The warp decode kernel (few queries): the split plan's grid, one launch
/// whatever the split count (the last block of a group merges).
#[allow(clippy::too_many_arguments)]
fn launch_decode(
    be: &CudaBackend,
    p: &AttentionParams,
    plan: &SplitKvPlan,
    params: AttnK,
    pos: Option<&CudaView<'_, i32>>,
    q: &CudaView<'_, f32>,
    k: &CudaView<'_, f32>,
    v: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let d = p.head_dim;
    let lanes = d.div_ceil(32).clamp(1, 8);
    let head_chunks = p.group().div_ceil(plan.heads_per_block);
    let cfg = LaunchConfig {
        grid_dim: (
            plan.splits as u32,
            (p.n_kv_heads * head_chunks) as u32,
            p.n_tokens.min(GRID_YZ_MAX) as u32,
        ),
        block_dim: ((DEC_WARPS * 32) as u32, 1, 1),
        shared_mem_bytes: (DEC_WARPS * plan.heads_per_block * (d + 2) * 4) as u32,
    };
    let name = match pos {
        Some(_) => DEC_AT_NAMES[lanes - 1],
        None => DEC_NAMES[lanes - 1],
    };
    launch_merging(be, p, plan, name, cfg, params, pos, (q, k, v), out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn p(n_tokens: usize, n_heads: usize, n_kv: usize, d: usize, pos0: usize) -> AttentionParams {
        AttentionParams {
            n_tokens,
            n_heads,
            n_kv_heads: n_kv,
            head_dim: d,
            pos0,
            kv_stride: pos0 + n_tokens,
            scale: 0.125,
            window: None,
        }
    }

    #[test]
    fn selection() {
        assert_eq!(
            select_attention(&p(512, 9, 3, 64, 0), 132).unwrap(),
            AttentionKernel::Mma { head_dim: 64 }
        );
        // Tensor cores from MMA_MIN_TOKENS queries, for head_dim 64 and 128;
        // the f32 tiled kernel below that and for the other head dims.
        for (n, d, want) in [
            (16, 128, AttentionKernel::Mma { head_dim: 128 }),
            (4096, 128, AttentionKernel::Mma { head_dim: 128 }),
            (15, 64, AttentionKernel::Tiled { head_dim: 64 }),
            (5, 128, AttentionKernel::Tiled { head_dim: 128 }),
            (512, 96, AttentionKernel::Tiled { head_dim: 96 }),
            (512, 80, AttentionKernel::Tiled { head_dim: 80 }),
        ] {
            assert_eq!(select_attention(&p(n, 32, 8, d, 7), 132).unwrap(), want);
            assert_eq!(
                uses_bf16(&p(n, 32, 8, d, 7)),
                matches!(want, AttentionKernel::Mma { .. })
            );
        }
        // Prefill with a head_dim the tiled kernel lacks falls back to split-KV.
        assert!(matches!(
            select_attention(&p(33, 6, 6, 16, 0), 132).unwrap(),
            AttentionKernel::SplitKv(_)
        ));
        // A window is no reason to change kernel; its splits cover only the
        // window's keys.
        let windowed = AttentionParams {
            window: Some(512),
            ..p(1, 4, 1, 256, 8000)
        };
        let AttentionKernel::SplitKv(plan) = select_attention(&windowed, 132).unwrap() else {
            panic!("decode must be split-KV");
        };
        assert!(plan.splits * plan.chunk >= 512 && (plan.splits - 1) * plan.chunk < 512);
        assert_eq!(
            select_attention(
                &AttentionParams {
                    window: Some(512),
                    ..p(600, 4, 1, 64, 0)
                },
                132
            )
            .unwrap(),
            AttentionKernel::Mma { head_dim: 64 }
        );
        let e = select_attention(&p(1, 1, 1, 300, 0), 132).unwrap_err();
        assert!(e.to_string().contains("head_dim 300"), "{e}");
        let e = select_attention(&p(64, 1, 1, 512, 0), 132).unwrap_err();
        assert!(e.to_string().contains("head_dim 512"), "{e}");
    }

    #[test]
    fn key_span_and_kernel_window() {
        let base = p(1, 1, 1, 64, 99); // keys 0..100
        assert_eq!(key_span(&base), 100);
        let w = |window, pp: AttentionParams| AttentionParams {
            window: Some(window),
            ..pp
        };
        assert_eq!(key_span(&w(1, base)), 1);
        assert_eq!(key_span(&w(40, base)), 40);
        assert_eq!(key_span(&w(100, base)), 100);
        assert_eq!(key_span(&w(usize::MAX, base)), 100);
        // 7 queries at 93..=99 with window 40: keys 54..=99.
        assert_eq!(key_span(&w(40, p(7, 1, 1, 64, 93))), 46);
        assert_eq!(kernel_window(&base), 0);
        assert_eq!(kernel_window(&w(99, base)), 99);
        assert_eq!(kernel_window(&w(100, base)), 0);
        assert_eq!(kernel_window(&w(usize::MAX, base)), 0);
        // Plans cover the span, not the context.
        let plan = split_kv_plan(&w(512, p(1, 4, 1, 256, 100_000)), 132);
        assert!(plan.splits * plan.chunk >= 512 && plan.splits * plan.chunk < 1024);
        check_plan(&w(512, p(1, 4, 1, 256, 100_000)), &plan).unwrap();
        // A forced plan whose offsets would overflow u32 is refused.
        let huge = SplitKvPlan {
            splits: 2,
            chunk: 1 << 31,
            ..plan
        };
        assert!(check_plan(&base, &huge).is_err());
    }

    #[test]
    fn split_plans_cover_the_keys_and_fill_the_gpu() {
        for kv in [1usize, 31, 33, 1000, 1024, 4096, 8192, 100_000] {
            for (h, hk, d) in [(9, 3, 64), (32, 8, 128), (8, 1, 256), (64, 4, 80)] {
                let pp = p(1, h, hk, d, kv - 1);
                let AttentionKernel::SplitKv(plan) = select_attention(&pp, 132).unwrap() else {
                    panic!("decode must be split-KV");
                };
                check_plan(&pp, &plan).unwrap();
                assert!(plan.splits * plan.chunk >= kv);
                assert!(
                    (plan.splits - 1) * plan.chunk < kv,
                    "{plan:?}: an empty split"
                );
                if kv >= 8192 {
                    let blocks = plan.splits * hk * h.div_ceil(hk).div_ceil(plan.heads_per_block);
                    assert!(blocks >= 132, "kv {kv}: {plan:?} gives {blocks} blocks");
                }
            }
        }
    }
}
