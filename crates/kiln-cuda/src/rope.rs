//! rope on CUDA: validate → select → launch (`kernels/rope.cu`). Implements
//! `kiln_core::ops::rope` in place on `x: [n_tokens, n_heads, head_dim]`,
//! normal and NeoX pairing, partial rotary (dims `>= n_rot` untouched). The
//! angle is formed in f64 on the device, like the reference.

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

/// One kernel per pairing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeKernel {
    Normal,
    Neox,
}

impl RopeKernel {
    /// Entry point in rope.cu.
    pub fn name(self) -> &'static str {
        match self {
            RopeKernel::Normal => "rope_normal_f32",
            RopeKernel::Neox => "rope_neox_f32",
        }
    }
}

/// Kernel choice by [`RopeMode`].
pub fn select_rope(p: &RopeParams) -> RopeKernel {
    match p.mode {
        RopeMode::Normal => RopeKernel::Normal,
        RopeMode::Neox => RopeKernel::Neox,
    }
}

/// Rotate `x` in place; `positions: [n_tokens]`.
pub fn rope(
    be: &CudaBackend,
    p: &RopeParams,
    positions: &CudaView<'_, i32>,
    x: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(positions.len(), x.len())?;
    let half = p.n_rot / 2;
    if p.n_tokens == 0 || p.n_heads == 0 || half == 0 {
        return Ok(());
    }
    let kernel = select_rope(p);
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
    l.arg(&k).arg(positions).arg(x);
    // SAFETY: argument list matches rope_*_f32(RopeParams, const int*, float*);
    // positions holds n_tokens values and x n_tokens * n_heads * head_dim
    // (validated above); pair indices stay below n_rot <= head_dim.
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch rope", e))?;
    Ok(())
}
