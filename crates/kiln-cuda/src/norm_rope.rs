//! norm_rope on CUDA: validate → select → launch (`kernels/norm_rope.cu`).
//! Implements `kiln_core::ops::norm_rope` (per-head RMSNorm, then RoPE) in
//! one launch where the unfused ops take two, with the numerics of
//! `rms_norm.cu` (f32 sum of squares, `rsqrtf`) and `rope.cu` (f64 angles and
//! rotation). Head rows of up to [`MAX_HEAD_DIM`] floats; positions (and
//! frequency factors) are read on the device, so a recorded graph replays
//! at the staged position.

use crate::kernels::NORM_ROPE;
use crate::launch::ExArgs;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig};
use kiln_core::ops::norm_rope::NormRopeParams;
use kiln_core::ops::rope::RopeMode;

/// Longest head row the kernel holds in shared memory (`NR_MAX_DIM`).
pub const MAX_HEAD_DIM: usize = 512;
/// Warps per block (`NR_MAX_WARPS`): one head row per warp at a time.
const MAX_WARPS: usize = 8;
/// From this many tokens on, a block takes all heads of its token (each
/// block computes its token's angles once); below, heads are split over
/// blocks, one per warp, for more blocks in flight. About one block per SM
/// of an H100 (132).
pub const BLOCK_PER_TOKEN_MIN_TOKENS: usize = 128;

/// Mirrors `struct NormRopeParams` in norm_rope.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct NormRopeK {
    n_tokens: u64,
    n_heads: u64,
    head_dim: u64,
    n_rot: u64,
    heads_per_block: u64,
    freq_base: f32,
    freq_scale: f32,
    eps: f32,
    pad: u32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for NormRopeK {}

/// One kernel per pairing, with or without frequency factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormRopeKernel {
    Normal,
    Neox,
    NormalFactors,
    NeoxFactors,
}

impl NormRopeKernel {
    /// Entry point in norm_rope.cu.
    pub fn name(self) -> &'static str {
        match self {
            NormRopeKernel::Normal => "norm_rope_normal_f32",
            NormRopeKernel::Neox => "norm_rope_neox_f32",
            NormRopeKernel::NormalFactors => "norm_rope_normal_ff_f32",
            NormRopeKernel::NeoxFactors => "norm_rope_neox_ff_f32",
        }
    }
}

/// Kernel choice by [`RopeMode`] and whether frequency factors are given.
pub fn select_norm_rope(p: &NormRopeParams, factors: bool) -> NormRopeKernel {
    match (p.rope.mode, factors) {
        (RopeMode::Normal, false) => NormRopeKernel::Normal,
        (RopeMode::Neox, false) => NormRopeKernel::Neox,
        (RopeMode::Normal, true) => NormRopeKernel::NormalFactors,
        (RopeMode::Neox, true) => NormRopeKernel::NeoxFactors,
    }
}

/// The launch of `p` (at least one token and one head) and the heads per
/// block it assigns: `min(n_heads, 8)` warps; a block per token and head
/// group of one head per warp, or a block per token with all its heads from
/// [`BLOCK_PER_TOKEN_MIN_TOKENS`] tokens on. Grid dims are capped at 65 535
/// (the kernel grid-strides over the rest).
pub fn norm_rope_launch(p: &NormRopeParams) -> (LaunchConfig, usize) {
    head_rows_launch(p.rope.n_tokens, p.rope.n_heads)
}

/// The geometry of [`norm_rope_launch`] for `rows` head rows per token
/// (shared with qk_norm_rope_kv, whose rows are a token's q, k and v heads):
/// the launch and the rows per block.
pub(crate) fn head_rows_launch(n_tokens: usize, rows: usize) -> (LaunchConfig, usize) {
    let (n_tokens, rows) = (n_tokens.max(1), rows.max(1));
    let warps = rows.min(MAX_WARPS);
    let per_block = if n_tokens >= BLOCK_PER_TOKEN_MIN_TOKENS {
        rows
    } else {
        warps
    };
    let cfg = LaunchConfig {
        grid_dim: (
            n_tokens.min(65_535) as u32,
            rows.div_ceil(per_block).min(65_535) as u32,
            1,
        ),
        block_dim: (32 * warps as u32, 1, 1),
        shared_mem_bytes: 0,
    };
    (cfg, per_block)
}

/// `out = rope(rms_norm(x, w, eps))` per head row of `x, out: [n_tokens,
/// n_heads, head_dim]`; `w: [head_dim]`, `positions: [n_tokens]`, optional
/// `factors: [n_rot / 2]`. The factors' length is checked here; their values
/// live on the device, so the caller checks them once where it has them on
/// the host (`kiln_core::ops::norm_rope::check_norm_rope_factors`). A
/// `head_dim` above [`MAX_HEAD_DIM`] is an error naming the op.
pub fn norm_rope(
    be: &CudaBackend,
    p: &NormRopeParams,
    x: &CudaView<'_, f32>,
    w: &CudaView<'_, f32>,
    factors: Option<&CudaView<'_, f32>>,
    positions: &CudaView<'_, i32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(x.len(), w.len(), positions.len(), out.len())?;
    let r = &p.rope;
    if let Some(f) = factors {
        kiln_core::error::check_len("norm_rope", "frequency factors", f.len(), r.n_rot / 2)?;
    }
    if r.head_dim > MAX_HEAD_DIM {
        return Err(kiln_core::Error::invalid(
            "norm_rope",
            format!(
                "head_dim {} exceeds the CUDA kernel's {MAX_HEAD_DIM}",
                r.head_dim
            ),
        )
        .into());
    }
    if r.n_tokens == 0 || r.n_heads == 0 {
        return Ok(());
    }
    let kernel = select_norm_rope(p, factors.is_some());
    let f = be.function("norm_rope", NORM_ROPE, kernel.name())?;
    let (cfg, hpb) = norm_rope_launch(p);
    let k = NormRopeK {
        n_tokens: r.n_tokens as u64,
        n_heads: r.n_heads as u64,
        head_dim: r.head_dim as u64,
        n_rot: r.n_rot as u64,
        heads_per_block: hpb as u64,
        freq_base: r.freq_base,
        freq_scale: r.freq_scale,
        eps: p.eps,
        pad: 0,
    };
    let mut a = ExArgs::new(be);
    a.val(k).buf(x).buf(w);
    if let Some(f) = factors {
        a.buf(f);
    }
    a.buf(positions).buf_mut(out);
    // SAFETY: argument list matches norm_rope_{normal,neox}_f32(NormRopeParams,
    // const float* x, const float* w, const int* pos, float* out), with the
    // factors (const float*) after w for the _ff kernels (chosen by the same
    // `factors.is_some()`); x and out hold n_tokens * n_heads * head_dim
    // floats, w head_dim, positions n_tokens and factors n_rot / 2 (validated
    // above); head_dim <= 512 fits the shared rows, blockDim is 32 * warps
    // with 1..=8 warps and heads_per_block >= 1, as the kernel requires.
    // PDL: the kernel waits (kiln_pdl_enter) before touching anything.
    unsafe { a.launch(be, &f, cfg, be.pdl_entry()) }
        .map_err(|e| CudaError::driver("launch norm_rope", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::ops::rope::RopeParams;

    fn p(n_tokens: usize, n_heads: usize) -> NormRopeParams {
        NormRopeParams {
            rope: RopeParams {
                n_tokens,
                n_heads,
                head_dim: 128,
                n_rot: 128,
                freq_base: 1e6,
                freq_scale: 1.0,
                mode: RopeMode::Neox,
            },
            eps: 1e-6,
        }
    }

    #[test]
    fn launch_geometry() {
        // Decode, 32 q heads: 4 blocks of 8 warps, one head each.
        let (c, hpb) = norm_rope_launch(&p(1, 32));
        assert_eq!((c.grid_dim, c.block_dim.0, hpb), ((1, 4, 1), 256, 8));
        // 3 heads: 3 warps, one block per token.
        let (c, hpb) = norm_rope_launch(&p(17, 3));
        assert_eq!((c.grid_dim, c.block_dim.0, hpb), ((17, 1, 1), 96, 3));
        // Prefill: a block per token takes all 9 heads with 8 warps.
        let (c, hpb) = norm_rope_launch(&p(512, 9));
        assert_eq!((c.grid_dim, c.block_dim.0, hpb), ((512, 1, 1), 256, 9));
        let (c, _) = norm_rope_launch(&p(100_000, 40));
        assert_eq!(c.grid_dim, (65_535, 1, 1));
    }
}
