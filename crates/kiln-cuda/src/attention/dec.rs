//! The lane-group decode kernel of the attention family
//! (`kernels/attention_dec.cuh`, [`AttentionKernel::DecodeGroups`]): for
//! few queries (`n_tokens <= DECODE_MAX_TOKENS`) and head dims 64, 128 and
//! 256. A warp is cut into groups of `head_dim / 8` lanes, each lane
//! holding 8 elements of a row (16-byte loads for f16/bf16 caches, two for
//! f32), and every group streams its own keys with its own online softmax,
//! so a block has `1024 / head_dim` keys in flight instead of the warp
//! decode kernel's 4 and a score costs `log2(head_dim / 8)` shuffles. The
//! grid, split plan fields and partial layout are the split-KV ones; the
//! plan aims at [`DECG_BLOCKS_PER_SM`] blocks per SM with splits of at
//! least two keys per stream. The last block's merge loads every split's
//! `(m, l)` at once, then sums the partials with 16-byte loads spread over
//! the whole block, skipping empty splits (those past the device position
//! of an `_at` launch planned for a later one). Also the launcher of the
//! warp decode kernel (`attention_decode_l<L>`) that covers the other
//! decode shapes.
//!
//! `KILN_ATTN_DEC=old` makes [`super::attention`] and
//! [`super::attention_at`] run the warp decode kernel instead (A/B, and a
//! fallback); a forced [`AttentionKernel::DecodeGroups`] still runs this one.

use super::kern::{kernel_fn, Kern, DEC_DPLS, DEC_WARPS};
use super::{
    key_span, launch_merging, plan_splits, split_kv_plan, unsupported, AttentionKernel, AttnK,
    SplitKvPlan, SplitShape, DECODE_MAX_TOKENS, GRID_YZ_MAX, MAX_SPLITS,
};
use crate::kv::KvView;
use crate::Result;
use cudarc::driver::{CudaView, CudaViewMut, LaunchConfig};
use kiln_core::ops::attention::AttentionParams;
use kiln_core::Error;
use std::sync::OnceLock;

/// Head dims with a lane-group decode instance (`DECG_ENTRY` in attention_dec.cuh).
pub const DECG_HEAD_DIMS: [usize; 3] = [64, 128, 256];
/// Most query heads per block (`DECG_MAX_HEADS`: q and acc in registers).
pub const DECG_MAX_HEADS: usize = 4;
/// Blocks aimed for per SM: the kernel's launch bounds hold a thread to 128
/// registers (`DECG_MIN_BLOCKS` in attention_dec.cuh; the compile test
/// checks it does not spill), so 4 blocks of 128 threads are resident per
/// SM; one full wave keeps the most loads in flight.
pub const DECG_BLOCKS_PER_SM: usize = 4;
/// Fewest keys per split: this many per key stream (the merge of a split
/// costs about one more dependent load round trip).
const DECG_MIN_KEYS_PER_STREAM: usize = 2;
/// Split chunks are multiples of this (the plan's `key_tile`; the kernel
/// has no key tiles).
const DECG_CHUNK_GRAIN: usize = 16;
const DECG_THREADS: u32 = 128;

/// Key streams of a block for head dim `d`: 4 warps × 32 / (d / 8) lanes.
fn streams(d: usize) -> usize {
    (1024 / d.max(1)).max(1)
}

/// Whether `p` fits the lane-group kernel (few queries, an instance's head dim).
pub fn decg_eligible(p: &AttentionParams) -> bool {
    p.n_tokens <= DECODE_MAX_TOKENS && DECG_HEAD_DIMS.contains(&p.head_dim)
}

/// `KILN_ATTN_DEC=old`: the automatic choice and `attention_at` take the
/// warp decode kernel instead (read once per process).
fn old_by_env() -> bool {
    static OLD: OnceLock<bool> = OnceLock::new();
    *OLD.get_or_init(|| std::env::var("KILN_ATTN_DEC").is_ok_and(|v| v == "old"))
}

/// The split plan of the lane-group kernel for `p` on `sm_count` SMs.
pub fn decg_plan(p: &AttentionParams, sm_count: usize) -> SplitKvPlan {
    let d = p.head_dim.max(1);
    let group = p.group().max(1);
    let heads_per_block = group.min(DECG_MAX_HEADS);
    let head_chunks = group.div_ceil(heads_per_block);
    let base_blocks = p.n_tokens.clamp(1, GRID_YZ_MAX) * p.n_kv_heads.max(1) * head_chunks;
    let max_keys = key_span(p);
    let min_keys = (DECG_MIN_KEYS_PER_STREAM * streams(d)).max(DECG_CHUNK_GRAIN);
    let target = DECG_BLOCKS_PER_SM * sm_count.max(1);
    plan_splits(SplitShape {
        target_blocks: target,
        base_blocks,
        max_keys,
        min_keys,
        key_tile: DECG_CHUNK_GRAIN,
        heads_per_block,
    })
}

/// The automatic decode choice: the lane-group kernel where it applies
/// (`None`: it does not).
pub(super) fn select(p: &AttentionParams, sm_count: usize) -> Option<AttentionKernel> {
    decg_eligible(p).then(|| AttentionKernel::DecodeGroups(decg_plan(p, sm_count)))
}

/// `kernel` with `KILN_ATTN_DEC=old` applied: the lane-group choice becomes
/// the warp decode kernel's split-KV plan.
pub(super) fn adjust(p: &AttentionParams, kernel: AttentionKernel, sm: usize) -> AttentionKernel {
    adjust_for(p, kernel, sm, old_by_env())
}

/// [`adjust`] with the switch given (`old`: `KILN_ATTN_DEC=old`).
pub(super) fn adjust_for(
    p: &AttentionParams,
    kernel: AttentionKernel,
    sm: usize,
    old: bool,
) -> AttentionKernel {
    match kernel {
        AttentionKernel::DecodeGroups(_) if old => AttentionKernel::SplitKv(split_kv_plan(p, sm)),
        k => k,
    }
}

/// Dynamic shared memory (floats): the streams' merge slots, or the split
/// merge's weights and column sums, whichever is larger.
fn decg_smem_floats(d: usize, plan: &SplitKvPlan) -> usize {
    let hb = plan.heads_per_block;
    (streams(d) * hb * (d + 2)).max(2 * hb * plan.splits + 4 * DECG_THREADS as usize)
}

/// Reject a plan the lane-group kernel cannot run correctly.
pub(super) fn check_plan(
    p: &AttentionParams,
    plan: &SplitKvPlan,
) -> std::result::Result<usize, Error> {
    let bad = |what: &str| unsupported(format!("lane-group decode plan {plan:?}: {what}"));
    let Some(i) = DECG_HEAD_DIMS.iter().position(|&d| d == p.head_dim) else {
        return Err(unsupported(format!(
            "the lane-group decode kernel has no instance for head_dim {} (instances: \
             {DECG_HEAD_DIMS:?})",
            p.head_dim
        )));
    };
    if p.n_tokens > DECODE_MAX_TOKENS {
        return Err(unsupported(format!(
            "the lane-group decode kernel takes at most {DECODE_MAX_TOKENS} tokens, not {}",
            p.n_tokens
        )));
    }
    if plan.chunk == 0 || plan.splits == 0 || plan.splits > MAX_SPLITS {
        return Err(bad("chunk must be positive and splits in 1..=256"));
    }
    let covered = plan.splits.saturating_mul(plan.chunk);
    if covered < key_span(p) {
        return Err(bad("splits * chunk must cover every key"));
    }
    // The kernel adds split * chunk (+ one stream step) to positions below
    // 2^30 in u32.
    if covered > (i32::MAX as usize) / 2 {
        return Err(bad("splits * chunk must stay below 2^30"));
    }
    if plan.heads_per_block == 0 || plan.heads_per_block > DECG_MAX_HEADS {
        return Err(bad("heads_per_block must be in 1..=4"));
    }
    if decg_smem_floats(p.head_dim, plan) * 4 > 48 * 1024 {
        return Err(bad("shared memory exceeds 48 KiB"));
    }
    if p.n_kv_heads * p.group().div_ceil(plan.heads_per_block) > GRID_YZ_MAX {
        return Err(bad("too many heads for one grid"));
    }
    Ok(i)
}

/// Launch `attention_decg_d<D>[_at]_<kv>` with `plan` (one launch; with
/// several splits the last block of each group merges them).
#[allow(clippy::too_many_arguments)]
pub(super) fn launch(
    be: &crate::CudaBackend,
    p: &AttentionParams,
    plan: &SplitKvPlan,
    mut params: AttnK,
    pos: Option<&CudaView<'_, i32>>,
    q: &CudaView<'_, f32>,
    (k, v): (KvView<'_, '_>, KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let i = check_plan(p, plan)?;
    params.n_splits = plan.splits as u32;
    params.chunk = plan.chunk as u32;
    params.heads_per_block = plan.heads_per_block as u32;
    params.key_tile = plan.key_tile as u32;
    params.prefetch = u32::from(be.attn_prefetch());
    let head_chunks = p.group().div_ceil(plan.heads_per_block);
    let cfg = LaunchConfig {
        grid_dim: (
            plan.splits as u32,
            (p.n_kv_heads * head_chunks) as u32,
            p.n_tokens.min(GRID_YZ_MAX) as u32,
        ),
        block_dim: (DECG_THREADS, 1, 1),
        shared_mem_bytes: (decg_smem_floats(p.head_dim, plan) * 4) as u32,
    };
    let f = kernel_fn(
        be,
        k.kv_type(),
        Kern::DecodeGroups {
            i,
            at: pos.is_some(),
        },
    )?;
    launch_merging(be, p, *plan, f, cfg, params, pos, (q, k, v), out)
}

/// Dynamic shared memory (bytes) of the warp decode kernel.
pub(super) fn warp_smem_bytes(d: usize, plan: &SplitKvPlan) -> usize {
    DEC_WARPS * plan.heads_per_block * (d + 2) * std::mem::size_of::<f32>()
}

/// The warp decode kernel (`attention_decode_l<L>`, few queries, any head
/// dim up to 512): the split plan's grid, one launch
/// whatever the split count (the last block of a group merges).
#[allow(clippy::too_many_arguments)]
pub(super) fn launch_warp(
    be: &crate::CudaBackend,
    p: &AttentionParams,
    plan: &SplitKvPlan,
    params: AttnK,
    pos: Option<&CudaView<'_, i32>>,
    q: &CudaView<'_, f32>,
    (k, v): (KvView<'_, '_>, KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let d = p.head_dim;
    // The instance with the fewest values per lane that holds d.
    let lanes = d.div_ceil(32).max(1);
    let i = DEC_DPLS
        .iter()
        .position(|&l| l >= lanes)
        .ok_or_else(|| unsupported(format!("head_dim {d} exceeds the decode kernel")))?;
    let head_chunks = p.group().div_ceil(plan.heads_per_block);
    let cfg = LaunchConfig {
        grid_dim: (
            plan.splits as u32,
            (p.n_kv_heads * head_chunks) as u32,
            p.n_tokens.min(GRID_YZ_MAX) as u32,
        ),
        block_dim: ((DEC_WARPS * 32) as u32, 1, 1),
        shared_mem_bytes: warp_smem_bytes(d, plan) as u32,
    };
    let at = pos.is_some();
    let f = kernel_fn(be, k.kv_type(), Kern::Decode { i, at })?;
    launch_merging(be, p, *plan, f, cfg, params, pos, (q, k, v), out)
}
