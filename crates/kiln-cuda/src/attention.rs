//! attention on CUDA: causal GQA attention over a KV cache of f32, f16 or
//! bf16 ([`KvView`]), with an optional sliding window and logit soft cap,
//! the semantics of `kiln_core::ops::attention::attention_ref` (see there
//! for shapes and the window). Validate → select → launch
//! (`kernels/attention.cu`).
//!
//! Cache types: `attention.cu` is the f32 family module; f16 and bf16
//! caches use its variants compiled with `KILN_KV` 1 / 2 ([`kv_variant`],
//! on first use), whose kernels widen each loaded value to f32; the kernel
//! choice and plan do not depend on the type. Handles live in a per-type
//! table (the backend's `attn_fns`), so a launch looks nothing up.
//!
//! Windows: every kernel masks keys before `i - w + 1` for the query at
//! position `i`; the split-KV kernels split only the keys some query of the
//! call sees ([`key_span`] of them, starting at the first query's first
//! key), so a long context with a short window does not launch splits of
//! invisible keys, and a split that still has none for its query (later
//! queries of a batch, or a graph replay at an earlier position) writes an
//! empty partial that the merge weighs by exactly zero.
//!
//! Ring caches (a window, positions past `kv_stride`, position `j` in row
//! `j % kv_stride`): key ranges, masks and split plans ([`key_span`]) are
//! in positions; each load maps its position to a row (`kv_row` in
//! attention.cu, per row: a tile may straddle the ring's end), always one
//! below `kv_stride`. Positions must stay below 2^30 ([`base_params`]).
//!
//! Kernels ([`select_attention`] picks one):
//! - [`AttentionKernel::DecodeGroups`]: decode (`n_tokens <=
//!   DECODE_MAX_TOKENS`) for head dims 64, 128 and 256 ([`dec`]: lane
//!   groups of a warp stream keys independently, 16-byte K/V loads, a plan
//!   of about [`DECG_BLOCKS_PER_SM`] blocks per SM). The same partials,
//!   tickets and one-launch merge as `SplitKv`. `KILN_ATTN_DEC=old` makes
//!   [`attention`] and [`attention_at`] take the warp decode kernel
//!   (`SplitKv`) instead, for A/B runs and as a fallback.
//! - [`AttentionKernel::SplitKv`]: flash decoding. Blocks over (key split,
//!   kv head × head chunk, token) stream their keys with an online softmax
//!   and write partials to the backend's scratch buffer
//!   ([`CudaBackend::with_scratch_f32`]); the last block of each group (a
//!   ticket counter, [`CudaBackend::with_tickets`]) merges them, so the
//!   whole attention is one launch. The split
//!   count grows with the key count until the grid fills the GPU. Used for
//!   decode head dims the lane-group kernel has no instance for
//!   (`n_tokens <= DECODE_MAX_TOKENS`: the warp decode kernel on the same
//!   plan, head dims up to [`DEC_MAX_HEAD_DIM`]) and for any head_dim
//!   ≤ 256 the tiled kernel has no instance for.
//! - [`AttentionKernel::Mma2`] / [`AttentionKernel::Mma`]: prefill on
//!   tensor cores (sm_80+, bf16 operands, f32 accumulation and softmax;
//!   [`mma`]), picked from [`MMA_MIN_TOKENS`] queries for head_dim 64 and
//!   128: the pipelined v2 for more than [`MMA_BM`] queries, v1 below
//!   (and everywhere with `KILN_ATTN_MMA=v1`).
//! - [`AttentionKernel::Tiled`]: prefill. One block per (32 queries, head),
//!   32-key tiles in shared memory, f32 math; head_dim 64, 80, 96 or 128;
//!   also where the tensor-core kernel cannot run (older GPU, unaligned
//!   views, `KILN_ATTN_MMA=0`).

use crate::kv::KvView;
use crate::launch::{arg, launch_ex};
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{
    CudaFunction, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
};
use kiln_core::ops::attention::AttentionParams;
use kiln_core::{Error, KvType};

mod dec;
mod kern;
mod mma;
pub use dec::{decg_eligible, decg_plan, DECG_BLOCKS_PER_SM, DECG_HEAD_DIMS, DECG_MAX_HEADS};
use kern::{kernel_fn, Kern};
pub use kern::{kernel_names, kv_variant};
pub use mma::{
    mma2_smem_bytes, mma_eligible, mma_kernel_for, uses_bf16, MMA_BM, MMA_HEAD_DIMS, MMA_MIN_TOKENS,
};

/// Queries per call up to which the split-KV (decode) kernel is used.
pub const DECODE_MAX_TOKENS: usize = 4;
/// Head dims with a tiled (prefill) kernel instance.
pub const TILED_HEAD_DIMS: [usize; 4] = [64, 80, 96, 128];
/// Largest head_dim of the split-KV kernel (its shared-memory budget).
pub const SPLIT_MAX_HEAD_DIM: usize = 256;
/// Largest head_dim of the warp decode kernel (decode, `n_tokens <=
/// DECODE_MAX_TOKENS`): 32 lanes × 16 values.
pub const DEC_MAX_HEAD_DIM: usize = 512;
/// Most query heads per block of the decode instance for head dims above
/// 256 (its q and acc registers: 2 × 2 × 16 per lane).
pub const DEC_WIDE_MAX_HEADS: usize = 2;
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
    /// Lane-group decode (`n_tokens <= DECODE_MAX_TOKENS`, head_dim in
    /// [`DECG_HEAD_DIMS`]) on this plan (`key_tile`: the chunk grain, 16).
    DecodeGroups(SplitKvPlan),
    /// Tiled prefill for this head_dim (one of [`TILED_HEAD_DIMS`]).
    Tiled { head_dim: usize },
    /// Tensor-core prefill for this head_dim (one of [`MMA_HEAD_DIMS`];
    /// sm_80+, bf16 operands): v1, 64-query tiles.
    Mma { head_dim: usize },
    /// The pipelined tensor-core prefill (v2): 128-query tiles, 64-key
    /// tiles in a multi-stage shared-memory ring; same head dims, operands
    /// and bound as `Mma`.
    Mma2 { head_dim: usize },
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
    /// q multiplier: scale · log2(e), or scale / c with a soft cap c.
    scale_log2: f32,
    /// Sliding window (0 = none); see [`kernel_window`].
    window: u32,
    /// Soft cap c · log2(e); 0 = none.
    cap_log2: f32,
    /// Cache rows: position `j` is row `j % kv_rows` (see [`kv_rows`]).
    kv_rows: u32,
    /// Decode kernels: 1 = prefetch the older cache rows into L2 before the
    /// PDL wait (see [`crate::CudaBackend::attn_prefetch`]).
    prefetch: u32,
}
const _: () = assert!(std::mem::size_of::<AttnK>() == 60);
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

/// The rows positions map into (`kv_row` in attention.cu): `kv_stride`, or
/// `u32::MAX` when it does not fit (positions, below 2^30, then map to
/// themselves as with `j % kv_stride`); >= 1 (validate needs a row).
fn kv_rows(p: &AttentionParams) -> u32 {
    u32::try_from(p.kv_stride).unwrap_or(u32::MAX).max(1)
}

/// The split-KV plan for `p` on a GPU with `sm_count` SMs.
pub fn split_kv_plan(p: &AttentionParams, sm_count: usize) -> SplitKvPlan {
    let d = p.head_dim.max(1);
    let group = p.group().max(1);
    let key_tile = if d <= 128 { 32 } else { 16 };
    let max_heads = if d > SPLIT_MAX_HEAD_DIM {
        DEC_WIDE_MAX_HEADS
    } else {
        MAX_HEADS_PER_BLOCK
    };
    let heads_per_block = group.min((1024 / d).max(1)).min(max_heads);
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
    plan_splits(SplitShape {
        target_blocks: target,
        base_blocks,
        max_keys,
        min_keys,
        key_tile,
        heads_per_block,
    })
}

/// What a split plan is made from (both decode planners share it).
pub(crate) struct SplitShape {
    /// Blocks the grid should reach.
    pub target_blocks: usize,
    /// Blocks with one split (tokens × KV heads × head chunks).
    pub base_blocks: usize,
    /// Keys the longest row may see.
    pub max_keys: usize,
    /// Fewest keys worth a split of their own.
    pub min_keys: usize,
    /// Chunks are whole multiples of this.
    pub key_tile: usize,
    pub heads_per_block: usize,
}

/// Enough splits to reach `target_blocks` (at most `MAX_SPLITS`, none
/// shorter than `min_keys`), chunks rounded up to whole key tiles, and the
/// split count those chunks actually need.
pub(crate) fn plan_splits(s: SplitShape) -> SplitKvPlan {
    let splits = s
        .target_blocks
        .div_ceil(s.base_blocks.max(1))
        .min(s.max_keys.div_ceil(s.min_keys.max(1)))
        .clamp(1, MAX_SPLITS);
    let tile = s.key_tile.max(1);
    let chunk = s.max_keys.div_ceil(splits).div_ceil(tile) * tile;
    SplitKvPlan {
        splits: s.max_keys.div_ceil(chunk.max(1)),
        chunk,
        heads_per_block: s.heads_per_block,
        key_tile: s.key_tile,
    }
}

/// Pick the kernel for `p` on a GPU with `sm_count` SMs, or say why none fits.
/// Pure: also answers "is this supported". It assumes an sm_80+ device;
/// [`attention`] turns [`AttentionKernel::Mma2`] into `Mma` where v2
/// cannot run, and either into the tiled kernel of the same head_dim
/// where no tensor-core kernel can.
pub fn select_attention(
    p: &AttentionParams,
    sm_count: usize,
) -> std::result::Result<AttentionKernel, Error> {
    let d = p.head_dim;
    if mma_eligible(p) {
        return Ok(mma_kernel_for(p));
    }
    if p.n_tokens > DECODE_MAX_TOKENS && TILED_HEAD_DIMS.contains(&d) {
        return Ok(AttentionKernel::Tiled { head_dim: d });
    }
    if let Some(k) = dec::select(p, sm_count) {
        return Ok(k);
    }
    let max_d = if p.n_tokens <= DECODE_MAX_TOKENS {
        DEC_MAX_HEAD_DIM
    } else {
        SPLIT_MAX_HEAD_DIM
    };
    if d == 0 || d > max_d {
        return Err(unsupported(format!(
            "head_dim {d} is not supported on CUDA (tiled prefill: {TILED_HEAD_DIMS:?}; \
             split-KV: 1..={SPLIT_MAX_HEAD_DIM}; decode of <= {DECODE_MAX_TOKENS} tokens: \
             1..={DEC_MAX_HEAD_DIM})"
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
    if p.n_tokens <= DECODE_MAX_TOKENS {
        // The warp decode kernel: registers per lane and its shared memory.
        let d = p.head_dim;
        if d > DEC_MAX_HEAD_DIM
            || (d > SPLIT_MAX_HEAD_DIM && plan.heads_per_block > DEC_WIDE_MAX_HEADS)
        {
            return Err(bad(
                "head_dim or heads_per_block too large for the decode kernel",
            ));
        }
        if dec::warp_smem_bytes(d, plan) > 48 * 1024 {
            return Err(bad("shared memory exceeds 48 KiB"));
        }
    } else if p.head_dim > SPLIT_MAX_HEAD_DIM
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

/// `k` and `v` hold the same type; the type.
fn check_kv(k: &KvView<'_, '_>, v: &KvView<'_, '_>) -> Result<KvType> {
    if k.kv_type() != v.kv_type() {
        return Err(unsupported(format!(
            "k cache is {} but v cache is {}",
            k.kv_type(),
            v.kv_type()
        ))
        .into());
    }
    Ok(k.kv_type())
}

/// Launch a prefill kernel `f(AttnParams, const float* q, const kv_t* k,
/// const kv_t* v, float* out)` without PDL (it does not wait for its
/// predecessor).
///
/// # Safety
/// `f` has that signature with `kv_t` the caches' element type, and with
/// `cfg` and `params` it reads and writes only inside the (validated)
/// buffers.
unsafe fn launch_prefill(
    be: &CudaBackend,
    f: &CudaFunction,
    cfg: LaunchConfig,
    mut params: AttnK,
    q: &CudaView<'_, f32>,
    (k, v): (&KvView<'_, '_>, &KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let st = be.stream();
    let (mut pq, _g1) = q.device_ptr(st);
    let (mut pk, _g2) = k.device_ptr(st);
    let (mut pv, _g3) = v.device_ptr(st);
    let (mut po, _g4) = out.device_ptr_mut(st);
    let mut args = [
        arg(&mut params),
        arg(&mut pq),
        arg(&mut pk),
        arg(&mut pv),
        arg(&mut po),
    ];
    // SAFETY: the caller's contract; the pointers outlive the launch.
    unsafe { launch_ex(be, f, cfg, false, &mut args) }
}

/// `out = attention(q, k, v)` on the backend's stream; see the module docs.
pub fn attention(
    be: &CudaBackend,
    p: &AttentionParams,
    q: &CudaView<'_, f32>,
    k: KvView<'_, '_>,
    v: KvView<'_, '_>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    check_kv(&k, &v)?;
    let sm = be.info().sm_count.max(1) as usize;
    let kernel = dec::adjust(p, select_attention(p, sm)?, sm);
    let kernel = mma::adjust(be, kernel, &k, &v, out);
    attention_with_kernel(be, p, &kernel, q, k, v, out)
}

/// [`attention`] with an explicit kernel choice (benches, tuning). Validates
/// `p` and the choice.
pub fn attention_with_kernel(
    be: &CudaBackend,
    p: &AttentionParams,
    kernel: &AttentionKernel,
    q: &CudaView<'_, f32>,
    k: KvView<'_, '_>,
    v: KvView<'_, '_>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    let kv = check_kv(&k, &v)?;
    if p.n_tokens == 0 {
        return Ok(());
    }
    let params = base_params(p)?;
    match *kernel {
        AttentionKernel::Tiled { head_dim } => {
            let i = TILED_HEAD_DIMS.iter().position(|&t| t == head_dim);
            let Some(i) = i.filter(|_| head_dim == p.head_dim) else {
                return Err(unsupported(format!(
                    "tiled kernel for head_dim {head_dim} cannot run head_dim {} \
                     (instances: {TILED_HEAD_DIMS:?})",
                    p.head_dim
                ))
                .into());
            };
            if p.n_heads > GRID_YZ_MAX {
                return Err(unsupported(format!("n_heads {} exceeds the grid", p.n_heads)).into());
            }
            let f = kernel_fn(be, kv, Kern::Tiled { i })?;
            let cfg = LaunchConfig {
                grid_dim: (p.n_tokens.div_ceil(TILE_Q) as u32, p.n_heads as u32, 1),
                block_dim: (TILE_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: attention_tiled_d*_<kv> has launch_prefill's signature
            // for the caches' type (the variant was chosen by it); lengths
            // were validated and the kernel reads q rows below n_tokens and
            // cache rows kv_row(j) < kv_rows <= kv_stride (positions j from
            // the first query's first key to pos0 + n_tokens), and writes
            // out's n_tokens * n_heads * head_dim elements.
            unsafe { launch_prefill(be, f, cfg, params, q, (&k, &v), out) }
                .map_err(|e| CudaError::driver("launch attention_tiled", e))?;
        }
        AttentionKernel::Mma { head_dim } => {
            mma::launch(be, p, (head_dim, false), params, q, (k, v), out)?;
        }
        AttentionKernel::Mma2 { head_dim } => {
            mma::launch(be, p, (head_dim, true), params, q, (k, v), out)?;
        }
        AttentionKernel::SplitKv(plan) => {
            launch_split(be, p, &plan, params, None, q, (k, v), out)?;
        }
        AttentionKernel::DecodeGroups(plan) => {
            dec::launch(be, p, &plan, params, None, q, (k, v), out)?;
        }
    }
    Ok(())
}

/// [`attention`] for a CUDA-graph decode step: the position of query 0 is
/// read from `pos[0]` on the device when the kernel runs, not from `p`.
/// `p.pos0` is the largest position the call may see (e.g. `kv_stride -
/// n_tokens`; any, for a ring): the split plan and the bounds are made for
/// it, and the device value is clamped to it. Runs the lane-group decode
/// kernel where [`decg_eligible`] (unless `KILN_ATTN_DEC=old`), else the
/// split-KV kernel (the warp decode kernel for few queries); the launch
/// arguments do not depend on the device position, so a graph recorded
/// once replays for every position. A window is applied at the device
/// position (the splits cover the window's keys at `p.pos0`, which cover
/// them at any earlier position).
pub fn attention_at(
    be: &CudaBackend,
    p: &AttentionParams,
    pos: &CudaView<'_, i32>,
    q: &CudaView<'_, f32>,
    (k, v): (KvView<'_, '_>, KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let sm = be.info().sm_count.max(1) as usize;
    let kernel =
        dec::select(p, sm).unwrap_or_else(|| AttentionKernel::SplitKv(split_kv_plan(p, sm)));
    let kernel = dec::adjust(p, kernel, sm);
    attention_at_with_kernel(be, p, &kernel, pos, q, (k, v), out)
}

/// [`attention_at`] with an explicit kernel: [`AttentionKernel::SplitKv`]
/// (the warp decode kernel for `n_tokens <= DECODE_MAX_TOKENS`) or
/// [`AttentionKernel::DecodeGroups`], on a plan made for `p.pos0` (tests,
/// benches, A/B). Validates `p` and the choice; the prefill kernels have
/// no device-position entry points.
pub fn attention_at_with_kernel(
    be: &CudaBackend,
    p: &AttentionParams,
    kernel: &AttentionKernel,
    pos: &CudaView<'_, i32>,
    q: &CudaView<'_, f32>,
    (k, v): (KvView<'_, '_>, KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    check_kv(&k, &v)?;
    if p.n_tokens == 0 {
        return Ok(());
    }
    if pos.is_empty() {
        return Err(unsupported("attention_at: the device position buffer is empty".into()).into());
    }
    let d = p.head_dim;
    let max_d = if p.n_tokens <= DECODE_MAX_TOKENS {
        DEC_MAX_HEAD_DIM
    } else {
        SPLIT_MAX_HEAD_DIM
    };
    if d == 0 || d > max_d {
        return Err(unsupported(format!(
            "head_dim {d} is not supported by the split-KV kernel (1..={max_d} for {} tokens)",
            p.n_tokens
        ))
        .into());
    }
    let params = base_params(p)?;
    match *kernel {
        AttentionKernel::SplitKv(plan) => {
            launch_split(be, p, &plan, params, Some(pos), q, (k, v), out)
        }
        AttentionKernel::DecodeGroups(plan) => {
            dec::launch(be, p, &plan, params, Some(pos), q, (k, v), out)
        }
        AttentionKernel::Tiled { .. }
        | AttentionKernel::Mma { .. }
        | AttentionKernel::Mma2 { .. } => Err(unsupported(format!(
            "attention_at runs the split-KV and decode kernels, not {kernel:?}"
        ))
        .into()),
    }
}

/// The kernel params every attention launch starts from (split fields are
/// filled by the split-KV launch), after checking the sizes fit the kernels'
/// u32 indexing (positions, which a ring's take past kv_stride, + one
/// chunk of slack).
fn base_params(p: &AttentionParams) -> Result<AttnK> {
    let fits = |x: usize| x <= (i32::MAX as usize) / 2;
    if !fits(p.pos0 + p.n_tokens) || !fits(p.n_heads) || !fits(p.head_dim) {
        return Err(unsupported(format!(
            "sizes too large for the CUDA kernels (positions, n_heads and head_dim \
             must stay below 2^30): pos0 {} + n_tokens {}, n_heads {}, head_dim {}",
            p.pos0, p.n_tokens, p.n_heads, p.head_dim
        ))
        .into());
    }
    let log2e = std::f32::consts::LOG2_E;
    let (scale_log2, cap_log2) = match p.softcap {
        Some(c) => (p.scale / c, c * log2e),
        None => (p.scale * log2e, 0.0),
    };
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
        scale_log2,
        window: kernel_window(p),
        cap_log2,
        kv_rows: kv_rows(p),
        prefetch: 0,
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
    (k, v): (KvView<'_, '_>, KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let plan = *plan;
    check_plan(p, &plan)?;
    let kv = k.kv_type();
    params.n_splits = plan.splits as u32;
    params.chunk = plan.chunk as u32;
    params.heads_per_block = plan.heads_per_block as u32;
    params.key_tile = plan.key_tile as u32;
    let head_chunks = p.group().div_ceil(plan.heads_per_block);
    if p.n_tokens <= DECODE_MAX_TOKENS {
        return dec::launch_warp(be, p, &plan, params, pos, q, (k, v), out);
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
    let at = pos.is_some();
    if plan.splits == 1 {
        let f = kernel_fn(be, kv, Kern::Split { at, direct: true })?;
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
        // SAFETY: arguments match attention_split_direct[_at]_<kv>(AttnParams,
        // [const i32* pos,] const float*, const kv_t*, const kv_t*, float*)
        // with kv_t the caches' element type; lengths were validated for
        // pos0 = params.pos0 (the device position is clamped to it), every
        // cache row read is kv_row(j) < kv_rows <= kv_stride, the
        // plan checked (shared memory as computed), the kernel writes each
        // (token, head) row of out once, and it waits for the previous
        // kernel before reading anything (PDL).
        unsafe { launch_ex(be, f, cfg, be.pdl(), &mut args) }
            .map_err(|e| CudaError::driver("launch attention_split_direct", e))?;
        return Ok(());
    }
    let f = kernel_fn(be, kv, Kern::Split { at, direct: false })?;
    launch_merging(be, p, plan, f, cfg, params, pos, (q, k, v), out)
}

/// Launch a split kernel that writes partials to the backend scratch and
/// merges them in the last block of each group (`attention_split[_at]_<kv>`,
/// `attention_decode_l<L>[_at]_<kv>`, `attention_decg_d<D>[_at]_<kv>`: the
/// same parameter list).
#[allow(clippy::too_many_arguments)]
fn launch_merging(
    be: &CudaBackend,
    p: &AttentionParams,
    plan: SplitKvPlan,
    f: &CudaFunction,
    cfg: LaunchConfig,
    mut params: AttnK,
    pos: Option<&CudaView<'_, i32>>,
    (q, k, v): (&CudaView<'_, f32>, KvView<'_, '_>, KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let head_chunks = p.group().div_ceil(plan.heads_per_block);
    let need = split_scratch_len(p, &plan).max(1);
    let n_tickets = p.n_tokens.min(GRID_YZ_MAX) * p.n_kv_heads * head_chunks;
    be.with_scratch_f32(need, |part| {
        be.with_tickets(n_tickets, |tickets| {
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
            // const float* q, const kv_t* k, const kv_t* v, float* part,
            // u32* tickets, float* out) for the three kernel families, kv_t the
            // caches' element type (`f` comes from that type's table);
            // lengths were validated for pos0 = params.pos0 (a device
            // position is clamped to it; every cache row read is kv_row(j) <
            // kv_rows <= kv_stride) and the plan checked (grid and
            // shared memory as the caller computed); `part` holds n_tokens *
            // n_heads * splits * (head_dim + 2) floats (unused with one
            // split), `tickets` one zeroed counter per (token, grid row) that
            // the merging block resets; each (token, head) row of out is
            // written once; the kernels wait for the previous kernel before
            // reading (PDL).
            unsafe { launch_ex(be, f, cfg, be.pdl(), &mut args) }
                .map_err(|e| CudaError::driver("launch attention (merging)", e))?;
            Ok(())
        })
    })
}

#[cfg(test)]
#[path = "attention_tests.rs"]
mod tests;
