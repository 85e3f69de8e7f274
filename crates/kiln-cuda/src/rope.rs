//! rope on CUDA: validate → select → launch (`kernels/rope.cu`). Implements
//! `kiln_core::ops::rope` in place on `x: [n_tokens, n_heads, head_dim]`,
//! normal and NeoX pairing, partial rotary (dims `>= n_rot` untouched). The
//! angle is formed in f64 on the device, like the reference. With per-pair
//! frequency factors (Llama 3.1's `rope_freqs`, [`rope_with_factors`]) pair
//! `i`'s angle is divided by `factors[i]`.

use crate::kernels::ROPE;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use kiln_core::ops::rope::{RopeMode, RopeParams};

/// Mirrors `struct RopeParams` in rope.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct RopeK {
    n_tokens: u64,
    n_heads: u64,
    head_dim: u64,
    n_rot: u64,
    freq_base: f32,
    freq_scale: f32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for RopeK {}

/// One kernel per pairing, with or without frequency factors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeKernel {
    Normal,
    Neox,
    NormalFactors,
    NeoxFactors,
}

impl RopeKernel {
    /// Entry point in rope.cu.
    pub fn name(self) -> &'static str {
        match self {
            RopeKernel::Normal => "rope_normal_f32",
            RopeKernel::Neox => "rope_neox_f32",
            RopeKernel::NormalFactors => "rope_normal_ff_f32",
            RopeKernel::NeoxFactors => "rope_neox_ff_f32",
        }
    }
}

/// Kernel choice by [`RopeMode`] and whether frequency factors are given.
pub fn select_rope(p: &RopeParams, factors: bool) -> RopeKernel {
    match (p.mode, factors) {
        (RopeMode::Normal, false) => RopeKernel::Normal,
        (RopeMode::Neox, false) => RopeKernel::Neox,
        (RopeMode::Normal, true) => RopeKernel::NormalFactors,
        (RopeMode::Neox, true) => RopeKernel::NeoxFactors,
    }
}

/// Rotate `x` in place; `positions: [n_tokens]`.
pub fn rope(
    be: &CudaBackend,
    p: &RopeParams,
    positions: &CudaView<'_, i32>,
    x: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    rope_with_factors(be, p, None, positions, x)
}

/// [`rope`] with optional per-pair frequency factors `[n_rot / 2]`. Their
/// length is checked here; their values live on the device, so the caller
/// checks them once where it has them on the host
/// (`kiln_core::ops::rope::check_factors`: finite and > 0). A zero or
/// non-finite factor gives NaN or unrotated pairs, never an out-of-bounds access.
pub fn rope_with_factors(
    be: &CudaBackend,
    p: &RopeParams,
    factors: Option<&CudaView<'_, f32>>,
    positions: &CudaView<'_, i32>,
    x: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(positions.len(), x.len())?;
    let half = p.n_rot / 2;
    if let Some(f) = factors {
        kiln_core::error::check_len("rope", "frequency factors", f.len(), half)?;
    }
    if p.n_tokens == 0 || p.n_heads == 0 || half == 0 {
        return Ok(());
    }
    let kernel = select_rope(p, factors.is_some());
    let f = be.function("rope", ROPE, kernel.name())?;
    // threadIdx.x over pairs (angle computed once per thread), threadIdx.y over heads.
    let bx = (half.div_ceil(32) * 32).min(128);
    let by = (256 / bx).min(p.n_heads).max(1);
    let cfg = LaunchConfig {
        grid_dim: (
            p.n_tokens.min(65_535) as u32,
            half.div_ceil(bx).min(65_535) as u32,
            1,
        ),
        block_dim: (bx as u32, by as u32, 1),
        shared_mem_bytes: 0,
    };
    let k = RopeK {
        n_tokens: p.n_tokens as u64,
        n_heads: p.n_heads as u64,
        head_dim: p.head_dim as u64,
        n_rot: p.n_rot as u64,
        freq_base: p.freq_base,
        freq_scale: p.freq_scale,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(positions);
    if let Some(f) = factors {
        l.arg(f);
    }
    l.arg(x);
    // SAFETY: argument list matches rope_{normal,neox}_f32(RopeParams, const
    // int*, float*), or with the factors (const float*) before x for the _ff
    // kernels (chosen by the same `factors.is_some()`); positions holds
    // n_tokens values, factors n_rot / 2 and x n_tokens * n_heads * head_dim
    // (validated above); pair indices stay below n_rot <= head_dim.
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch rope", e))?;
    Ok(())
}
