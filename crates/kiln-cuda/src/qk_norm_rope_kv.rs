//! qk_norm_rope_kv on CUDA: validate → select → launch
//! (`kernels/qk_norm_rope_kv.cu`). Implements
//! `kiln_core::ops::qk_norm_rope_kv` (per-head RMSNorm + RoPE of the q and
//! k spans of `[q | k | v]` rows, q out, k and v appended to the KV caches)
//! in one launch where the unfused ops take four (a row copy of k, two
//! norm_ropes, the two cache appends), with norm_rope.cu's numerics (the
//! same device code, `kernels/norm_rope.cuh`) and copy_rows.cu's cache
//! rounding. Positions and frequency factors are read on the device; the
//! `_at` variant also reads the cache row (the first position), so a
//! recorded decode graph replays at the staged position.

use crate::kernels::QK_NORM_ROPE_KV;
use crate::kv::KvViewMut;
use crate::launch::{arg, launch_ex};
use crate::norm_rope::{head_rows_launch, MAX_HEAD_DIM};
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DeviceRepr, LaunchConfig};
use kiln_core::ops::qk_norm_rope_kv::{QkNormRopeKvLens, QkNormRopeKvParams};
use kiln_core::ops::rope::RopeMode;
use kiln_core::{Error, KvType};

const OP: &str = "qk_norm_rope_kv";

/// Mirrors `struct QkNormRopeKvParams` in qk_norm_rope_kv.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct QkK {
    n_tokens: u64,
    n_heads: u64,
    n_heads_kv: u64,
    head_dim: u64,
    n_rot: u64,
    rows_per_block: u64,
    dst_row: u64,
    ring: u64,
    freq_base: f32,
    freq_scale: f32,
    eps: f32,
    pad: u32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for QkK {}

/// Where the kernel takes the first cache row from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkRows {
    /// `p.dst_row`.
    Params,
    /// The first position on the device, clamped to `0..=p.dst_row`.
    FirstPosition,
}

/// One kernel per RoPE pairing, cache element type and row source
/// (frequency factors are a null-or-not pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkNormRopeKvKernel {
    pub mode: RopeMode,
    pub kv: KvType,
    pub rows: QkRows,
}

impl QkNormRopeKvKernel {
    /// Every entry point of qk_norm_rope_kv.cu.
    pub fn all() -> Vec<QkNormRopeKvKernel> {
        let mut v = Vec::new();
        for rows in [QkRows::Params, QkRows::FirstPosition] {
            for kv in KvType::ALL {
                for mode in [RopeMode::Normal, RopeMode::Neox] {
                    v.push(QkNormRopeKvKernel { mode, kv, rows });
                }
            }
        }
        v
    }

    /// Entry point in qk_norm_rope_kv.cu:
    /// `qk_norm_rope_kv[_at]_{normal,neox}_{f32,f16,bf16}`.
    pub fn name(self) -> &'static str {
        let rows = match self.rows {
            QkRows::Params => 0,
            QkRows::FirstPosition => 1,
        };
        let mode = match self.mode {
            RopeMode::Normal => 0,
            RopeMode::Neox => 1,
        };
        let kv = match self.kv {
            KvType::F32 => 0,
            KvType::F16 => 1,
            KvType::BF16 => 2,
        };
        NAMES[rows][mode][kv]
    }
}

/// `[rows][mode][kv]`: see [`QkNormRopeKvKernel::name`].
const NAMES: [[[&str; 3]; 2]; 2] = [
    [
        [
            "qk_norm_rope_kv_normal_f32",
            "qk_norm_rope_kv_normal_f16",
            "qk_norm_rope_kv_normal_bf16",
        ],
        [
            "qk_norm_rope_kv_neox_f32",
            "qk_norm_rope_kv_neox_f16",
            "qk_norm_rope_kv_neox_bf16",
        ],
    ],
    [
        [
            "qk_norm_rope_kv_at_normal_f32",
            "qk_norm_rope_kv_at_normal_f16",
            "qk_norm_rope_kv_at_normal_bf16",
        ],
        [
            "qk_norm_rope_kv_at_neox_f32",
            "qk_norm_rope_kv_at_neox_f16",
            "qk_norm_rope_kv_at_neox_bf16",
        ],
    ],
];

/// The launch of `p` and the head rows per block it assigns: the rows of
/// a token (its q, k and v heads, `n_heads + 2 n_heads_kv`) one per warp,
/// `min(rows, 8)` warps; a block per token and row group, or a block per
/// token with all its rows from [`crate::norm_rope::BLOCK_PER_TOKEN_MIN_TOKENS`] tokens on
/// (norm_rope's geometry). Grid dims are capped at 65 535 (the kernel
/// grid-strides over the rest).
pub fn qk_norm_rope_kv_launch(p: &QkNormRopeKvParams) -> (LaunchConfig, usize) {
    head_rows_launch(p.q.rope.n_tokens, p.q.rope.n_heads + 2 * p.n_heads_kv)
}

/// Device buffers of one launch (the caches' views may live for other
/// times than the inputs').
pub struct QkNormRopeKvArgs<'a, 'b, 'k, 'v> {
    /// `[n_tokens, q_dim + 2 kv_dim]`.
    pub qkv: &'a CudaView<'b, f32>,
    pub q_norm: &'a CudaView<'b, f32>,
    pub k_norm: &'a CudaView<'b, f32>,
    /// `[n_rot / 2]`; values checked by the caller where it loads them.
    pub factors: Option<&'a CudaView<'b, f32>>,
    pub positions: &'a CudaView<'b, i32>,
    /// `[n_tokens, q_dim]`; must not overlap `qkv`.
    pub q_out: &'a mut CudaViewMut<'b, f32>,
    /// Both of one element type.
    pub k_cache: KvViewMut<'a, 'k>,
    pub v_cache: KvViewMut<'a, 'v>,
}

/// `q_out`, and the cache rows from `p.dst_row` (see
/// `kiln_core::ops::qk_norm_rope_kv`).
pub fn qk_norm_rope_kv(
    be: &CudaBackend,
    p: &QkNormRopeKvParams,
    a: QkNormRopeKvArgs<'_, '_, '_, '_>,
) -> Result<()> {
    launch(be, p, QkRows::Params, a)
}

/// [`qk_norm_rope_kv`] with the first cache row read from `positions[0]`
/// on the device when the kernel runs (a CUDA-graph decode step):
/// `p.dst_row` is the largest row allowed (`p` is validated with it) and
/// the device value is clamped to `0..=p.dst_row`; with a ring it is a
/// position (rows `(row + t) % ring`).
pub fn qk_norm_rope_kv_at(
    be: &CudaBackend,
    p: &QkNormRopeKvParams,
    a: QkNormRopeKvArgs<'_, '_, '_, '_>,
) -> Result<()> {
    launch(be, p, QkRows::FirstPosition, a)
}

fn launch(
    be: &CudaBackend,
    p: &QkNormRopeKvParams,
    rows: QkRows,
    mut a: QkNormRopeKvArgs<'_, '_, '_, '_>,
) -> Result<()> {
    let r = &p.q.rope;
    p.validate(&QkNormRopeKvLens {
        qkv: a.qkv.len(),
        q_norm: a.q_norm.len(),
        k_norm: a.k_norm.len(),
        positions: a.positions.len(),
        q_out: a.q_out.len(),
        k_cache: a.k_cache.len(),
        v_cache: a.v_cache.len(),
    })?;
    if let Some(f) = a.factors {
        kiln_core::error::check_len(OP, "frequency factors", f.len(), r.n_rot / 2)?;
    }
    if r.head_dim > MAX_HEAD_DIM {
        return Err(Error::invalid(
            OP,
            format!(
                "head_dim {} exceeds the CUDA kernel's {MAX_HEAD_DIM}",
                r.head_dim
            ),
        )
        .into());
    }
    let kv = a.k_cache.kv_type();
    if a.v_cache.kv_type() != kv {
        return Err(Error::invalid(
            OP,
            format!(
                "a {kv} K cache with a {} V cache (both must be of one type)",
                a.v_cache.kv_type()
            ),
        )
        .into());
    }
    if r.n_tokens == 0 || r.n_heads + 2 * p.n_heads_kv == 0 {
        return Ok(());
    }
    let kernel = QkNormRopeKvKernel {
        mode: r.mode,
        kv,
        rows,
    };
    let f = be.function(OP, QK_NORM_ROPE_KV, kernel.name())?;
    let (cfg, rpb) = qk_norm_rope_kv_launch(p);
    let mut k = QkK {
        n_tokens: r.n_tokens as u64,
        n_heads: r.n_heads as u64,
        n_heads_kv: p.n_heads_kv as u64,
        head_dim: r.head_dim as u64,
        n_rot: r.n_rot as u64,
        rows_per_block: rpb as u64,
        dst_row: p.dst_row as u64,
        ring: p.dst_ring.unwrap_or(0) as u64,
        freq_base: r.freq_base,
        freq_scale: r.freq_scale,
        eps: p.q.eps,
        pad: 0,
    };
    let st = be.stream();
    let (mut pqkv, _g0) = a.qkv.device_ptr(st);
    let (mut pqn, _g1) = a.q_norm.device_ptr(st);
    let (mut pkn, _g2) = a.k_norm.device_ptr(st);
    let (mut pf, _g3) = match a.factors {
        Some(f) => {
            let (ptr, g) = f.device_ptr(st);
            (ptr, Some(g))
        }
        None => (0, None),
    };
    let (mut ppos, _g4) = a.positions.device_ptr(st);
    let (mut pq, _g5) = cudarc::driver::DevicePtrMut::device_ptr_mut(a.q_out, st);
    let (mut pk, _g6) = a.k_cache.device_ptr_mut(st);
    let (mut pv, _g7) = a.v_cache.device_ptr_mut(st);
    let mut args = [
        arg(&mut k),
        arg(&mut pqkv),
        arg(&mut pqn),
        arg(&mut pkn),
        arg(&mut pf),
        arg(&mut ppos),
        arg(&mut pq),
        arg(&mut pk),
        arg(&mut pv),
    ];
    // SAFETY: `args` match qk_norm_rope_kv[_at]_<mode>_<t>(QkNormRopeKvParams,
    // const float* qkv, const float* q_norm, const float* k_norm, const
    // float* factors (null: none), const i32* pos, float* q_out, t* k_cache,
    // t* v_cache) with t both caches' element type (checked equal; the name
    // was chosen by it). validate() checked qkv (n_tokens * (q_dim + 2
    // kv_dim)), q_norm and k_norm (head_dim), positions (n_tokens >= 1, so
    // pos[0] exists for _at), q_out (n_tokens * q_dim), factors (n_rot / 2),
    // and both caches against the append: without a ring rows dst_row ..
    // dst_row + n_tokens fit, so do those from any row the _at kernel clamps
    // to 0..=dst_row; with a ring of r rows, n_tokens <= r and r * kv_dim
    // fit, and the kernel takes every row modulo r. head_dim <= 512 fits
    // the shared rows; blockDim is 32 * warps with 1..=8 warps and
    // rows_per_block >= 1. PDL: the kernel waits (kiln_pdl_enter) before
    // touching anything.
    unsafe { launch_ex(be, &f, cfg, be.pdl_entry(), &mut args) }
        .map_err(|e| CudaError::driver("launch qk_norm_rope_kv", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::ops::norm_rope::NormRopeParams;
    use kiln_core::ops::rope::RopeParams;

    fn p(n_tokens: usize, n_heads: usize, n_heads_kv: usize) -> QkNormRopeKvParams {
        QkNormRopeKvParams {
            q: NormRopeParams {
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
            },
            n_heads_kv,
            dst_row: 0,
            dst_ring: None,
        }
    }

    #[test]
    fn launch_geometry_and_names() {
        // Qwen3-30B-A3B decode: 32 + 2 * 4 = 40 rows, 5 blocks of 8 warps.
        let (c, rpb) = qk_norm_rope_kv_launch(&p(1, 32, 4));
        assert_eq!((c.grid_dim, c.block_dim.0, rpb), ((1, 5, 1), 256, 8));
        // 1 + 2 * 1 rows: 3 warps.
        let (c, rpb) = qk_norm_rope_kv_launch(&p(3, 1, 1));
        assert_eq!((c.grid_dim, c.block_dim.0, rpb), ((3, 1, 1), 96, 3));
        // Prefill: a block per token with all 16 rows.
        let (c, rpb) = qk_norm_rope_kv_launch(&p(512, 8, 4));
        assert_eq!((c.grid_dim, c.block_dim.0, rpb), ((512, 1, 1), 256, 16));
        let names: Vec<&str> = QkNormRopeKvKernel::all()
            .into_iter()
            .map(|k| k.name())
            .collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 12);
        let k = QkNormRopeKvKernel {
            mode: RopeMode::Neox,
            kv: KvType::BF16,
            rows: QkRows::FirstPosition,
        };
        assert_eq!(k.name(), "qk_norm_rope_kv_at_neox_bf16");
    }
}
