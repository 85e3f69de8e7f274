//! The tile mat-vec's host side (`kernels/matvec_tile.cuh`): how many weight
//! rows one CTA of matmul_id's tile kernels holds, and the per-backend
//! switches. The kernels are entries of matmul_id.cu; a dense one-row
//! mat-vec can run through them as one expert ([`dense_tile_matvec`]).

use crate::matmul_id::{matmul_id_with_kernel, tile_kernel_names, MatmulIdKernel};
use crate::{CudaBackend, Result};
use cudarc::driver::{CudaView, CudaViewMut};
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::ops::matmul_id::MatmulIdParams;
use kiln_core::DType;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Shared-memory bytes one tile CTA requests by default: the gated kernel
/// (two stacks) and the plain one, from bench_moe's sweep on an H100
/// (docs/perf.md §22: Qwen3-30B-A3B Q4_K, gate+up 18.5 µs at 24 KiB vs
/// 21.5 at 8; gate 10.9 µs at 8 KiB vs 11.8 at 24, down 11.4 vs 14.3).
pub const TILE_TARGET_GATED: usize = 24 * 1024;
pub const TILE_TARGET_PLAIN: usize = 8 * 1024;
/// The switch value for the per-kernel defaults above.
pub const TILE_AUTO: usize = usize::MAX;
/// Rows per tile at most (`TILE_MAX_ROWS`, matvec_tile.cuh).
const TILE_MAX_ROWS: usize = 64;
/// Shared memory a tile CTA may take without an opt-in attribute: its
/// static and dynamic shared memory together (a launch whose sum exceeds
/// it fails).
const TILE_MAX_SMEM: usize = 48 * 1024;
/// The tile kernels' static shared memory, rounded up: matvec_fused_tile's
/// `vals` and `red` (640 bytes), mv_id_tile's `gate` (256). The dynamic
/// bytes get the rest of [`TILE_MAX_SMEM`].
const TILE_STATIC_SMEM: usize = 1024;

/// A tile kernel launch: weight rows per CTA and shared bytes per stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    pub rows: usize,
    pub slot: usize,
}

/// The tile for `mats` stacks (1, or 2 for the gated path) of `row_bytes`
/// rows near `target` shared bytes per CTA (pure): from 4 rows up, the
/// nearest multiple of 8 rows (two pairs per warp of four; at least 8),
/// below that an even count; at least 2 rows, at most 64, within 48 KiB
/// with `extra` bytes after the stacks and the kernels' static shared
/// memory (each stack's slot has 16 bytes of slack for the aligned-down
/// start).
/// `None` when two rows do not fit, or `target` is 0 (tiles off).
pub fn tile_plan(row_bytes: usize, mats: usize, target: usize, extra: usize) -> Option<TilePlan> {
    if row_bytes == 0 || mats == 0 || target == 0 {
        return None;
    }
    let limit = TILE_MAX_SMEM.saturating_sub(TILE_STATIC_SMEM + extra);
    let slot = |rows: usize| (rows * row_bytes + 16).next_multiple_of(16);
    let fit = target / (mats * row_bytes);
    let mut rows = if fit >= 4 {
        ((fit + 4) / 8 * 8).max(8)
    } else {
        (fit / 2 * 2).max(2)
    }
    .min(TILE_MAX_ROWS);
    while rows > 2 && mats * slot(rows) > limit {
        rows -= if rows > 8 { 8 } else { 2 };
    }
    (mats * slot(rows) <= limit).then(|| TilePlan {
        rows,
        slot: slot(rows),
    })
}

/// Whether `wtype` has tile kernels with int8 activations (`Q8Tile`,
/// `mul_mv_id[_swiglu]_q8tile_<w>_f32`): Q4_0, Q4_1, Q8_0, Q4_K, Q5_K and
/// Q6_K.
pub fn q8_tile_supports(wtype: DType) -> bool {
    q8_dot_type(wtype).is_some()
}

/// The Q8 dot unit of `wtype` in matvec_tile.cuh (the `Q8Tile` policy's
/// argument; matvec_fused.cu's `KILN_MVF_Q8DOT`), for the formats that have one.
pub fn q8_dot_type(wtype: DType) -> Option<&'static str> {
    Some(match wtype {
        DType::Q4_0 => "Q4Dot<false>",
        DType::Q4_1 => "Q4Dot<true>",
        DType::Q8_0 => "Q8_0Dot",
        DType::Q4_K => "Q4_KDot",
        DType::Q5_K => "Q5_KDot",
        DType::Q6_K => "Q6_KDot",
        _ => return None,
    })
}

/// How `matvec_fused` takes its one-row products ([`fused_tile`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedTile {
    /// The pair kernels (`matvec_fused_m<M>`).
    Off,
    /// Tiles with float activations (every quantized format).
    Float,
    /// Tiles with int8 activations where the format has a Q8 dot unit
    /// ([`q8_dot_type`]), float tiles elsewhere.
    Int8,
}

/// `be`'s matvec_fused tile mode: `KILN_MVF_TILE=1` float tiles, `=q8`
/// int8 tiles, else off ([`set_fused_tile`]). Opt-in until measured on a
/// GPU. The bytes per CTA follow [`id_tile_bytes`] (default 8 KiB, 24 KiB
/// for the SwiGLU epilogue's two stacks).
pub fn fused_tile(be: &CudaBackend) -> FusedTile {
    match be.matmul.tiles.fused_tile_flag().load(Ordering::Relaxed) {
        1 => FusedTile::Float,
        2 => FusedTile::Int8,
        _ => FusedTile::Off,
    }
}

/// Set `be`'s matvec_fused tile mode (parity tests and A/B benches).
pub fn set_fused_tile(be: &CudaBackend, mode: FusedTile) {
    let v = match mode {
        FusedTile::Off => 0,
        FusedTile::Float => 1,
        FusedTile::Int8 => 2,
    };
    be.matmul
        .tiles
        .fused_tile_flag()
        .store(v, Ordering::Relaxed);
}

/// Shared bytes of the int8 x area after the stacks (`tile_xq_bytes`,
/// matvec_tile.cuh): k codes, then a scale and a sum per 32 elements.
pub fn tile_xq_bytes(k: usize) -> usize {
    k + 8 * (k / 32)
}

/// The target of a tile CTA over `mats` stacks when `be`'s switch says
/// `flag` ([`id_tile_bytes`]): the per-kernel default for [`TILE_AUTO`].
pub fn tile_target(flag: usize, mats: usize) -> usize {
    match (flag, mats) {
        (TILE_AUTO, 1) => TILE_TARGET_PLAIN,
        (TILE_AUTO, _) => TILE_TARGET_GATED,
        (t, _) => t,
    }
}

/// `be`'s tile switch: 0 = tiles off, [`TILE_AUTO`], or a target in bytes
/// for every tile CTA: `KILN_MV_TILE` (`0` off, a number of bytes) or
/// [`set_id_tile`], else [`TILE_AUTO`].
pub fn id_tile_bytes(be: &CudaBackend) -> usize {
    be.matmul.tiles.tile_flag().load(Ordering::Relaxed)
}

/// Tiles on with `target` bytes per CTA ([`TILE_AUTO`]: the defaults), or
/// off with 0 (parity tests and A/B benches).
pub fn set_id_tile(be: &CudaBackend, target: usize) {
    be.matmul.tiles.tile_flag().store(target, Ordering::Relaxed);
}

/// Whether `be`'s tiles take int8 activations where the format has such
/// kernels ([`q8_tile_supports`]): off unless `KILN_MV_TILE_Q8=1` or
/// [`set_id_tile_q8`]. Opt-in: checked on the host only
/// (scripts/check-cuda-tile.py), not yet run or measured on a GPU
/// (docs/perf.md §22).
pub fn id_tile_q8(be: &CudaBackend) -> bool {
    be.matmul.tiles.tile_q8_flag().load(Ordering::Relaxed)
}

/// Int8-activation tiles on or off for `be` (parity tests and A/B benches).
pub fn set_id_tile_q8(be: &CudaBackend, on: bool) {
    be.matmul.tiles.tile_q8_flag().store(on, Ordering::Relaxed);
}

/// Whether `be` runs one-row quantized mat-vecs (`matmul` with m = 1)
/// through matmul_id's tile kernels as a single expert ([`dense_tile_matvec`]):
/// off unless `KILN_MV_DENSE_TILE=1` or [`set_dense_tile`]. Opt-in until
/// measured on a GPU (bench_matmul prints both).
pub fn dense_tile(be: &CudaBackend) -> bool {
    be.matmul.tiles.dense_tile_flag().load(Ordering::Relaxed)
}

/// Dense tiles on or off for `be` (parity tests and A/B benches).
pub fn set_dense_tile(be: &CudaBackend, on: bool) {
    be.matmul
        .tiles
        .dense_tile_flag()
        .store(on, Ordering::Relaxed);
}

/// `out = w · x` for one row of x through the tile kernels, when
/// [`dense_tile`] is on and the format has them: `w` as the only expert of
/// a matmul_id (expert 0 from a device word holding 0), with the tile size
/// and int8 switches of matmul_id ([`id_tile_bytes`], [`id_tile_q8`]).
/// `Ok(false)`: not taken (the caller runs its mat-vec). The tile plan may
/// still fall back to matmul_id's per-row kernel (unaligned weights).
pub(crate) fn dense_tile_matvec(
    be: &CudaBackend,
    p: &MatmulParams,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<bool> {
    if !dense_tile(be) || p.m != 1 || p.n == 0 || tile_kernel_names(p.wtype, false).is_none() {
        return Ok(false);
    }
    let ip = MatmulIdParams {
        n_tokens: 1,
        top_k: 1,
        n: p.n,
        k: p.k,
        n_experts: 1,
        expert_stride: p.w_row_bytes()?.saturating_mul(p.n),
        wtype: p.wtype,
        x_per_slot: false,
    };
    let ids = be.zero_u32();
    matmul_id_with_kernel(be, &ip, MatmulIdKernel::PerRow, w, x, &ids, out)?;
    Ok(true)
}

/// The tile kernels' switches of one backend, each read from its
/// environment variable on first use.
#[derive(Default)]
pub(crate) struct TileSwitches {
    /// matmul_id's tile target bytes (0 = off; `matvec_tile`), from
    /// `KILN_MV_TILE` on first use.
    tile: OnceLock<AtomicUsize>,
    /// matmul_id's int8-activation tiles (`matvec_tile::id_tile_q8`), from
    /// `KILN_MV_TILE_Q8=1` on first use.
    tile_q8: OnceLock<AtomicBool>,
    /// One-row mat-vecs through the tile kernels (`matvec_tile::dense_tile`),
    /// from `KILN_MV_DENSE_TILE=1` on first use.
    dense_tile: OnceLock<AtomicBool>,
    /// matvec_fused's tile mode (`matvec_tile::fused_tile`: 0 off, 1 float,
    /// 2 int8), from `KILN_MVF_TILE` on first use.
    fused_tile: OnceLock<AtomicU8>,
}

impl TileSwitches {
    /// matmul_id's tile target (`matvec_tile::id_tile_bytes`).
    pub(crate) fn tile_flag(&self) -> &AtomicUsize {
        self.tile
            .get_or_init(|| AtomicUsize::new(tile_bytes_from_env()))
    }

    /// matmul_id's int8-activation tile switch (`matvec_tile::id_tile_q8`).
    pub(crate) fn tile_q8_flag(&self) -> &AtomicBool {
        self.tile_q8.get_or_init(|| {
            AtomicBool::new(std::env::var("KILN_MV_TILE_Q8").is_ok_and(|v| v == "1"))
        })
    }

    /// The dense tile switch (`matvec_tile::dense_tile`).
    pub(crate) fn dense_tile_flag(&self) -> &AtomicBool {
        self.dense_tile.get_or_init(|| {
            AtomicBool::new(std::env::var("KILN_MV_DENSE_TILE").is_ok_and(|v| v == "1"))
        })
    }

    /// The matvec_fused tile mode (`matvec_tile::fused_tile`).
    pub(crate) fn fused_tile_flag(&self) -> &AtomicU8 {
        self.fused_tile
            .get_or_init(|| match std::env::var("KILN_MVF_TILE").as_deref() {
                Ok("1") => AtomicU8::new(1),
                Ok("q8") => AtomicU8::new(2),
                _ => AtomicU8::new(0),
            })
    }
}

/// The initial target from `KILN_MV_TILE` (unparsable: the default).
pub(crate) fn tile_bytes_from_env() -> usize {
    std::env::var("KILN_MV_TILE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(TILE_AUTO)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tile_plans() {
        let rows = |rb, mats| tile_plan(rb, mats, tile_target(TILE_AUTO, mats), 0).map(|t| t.rows);
        // Qwen3-30B-A3B Q4_K: gate+up rows of 1152 bytes, down rows of 432.
        assert_eq!(rows(1152, 2), Some(8));
        assert_eq!(rows(1152, 1), Some(8));
        assert_eq!(rows(432, 1), Some(16));
        assert_eq!(tile_plan(1152, 1, 24 * 1024, 0).map(|t| t.rows), Some(24));
        // Few rows fit: even counts; slots of 16-byte multiples with slack.
        let t = tile_plan(5000, 2, TILE_TARGET_GATED, 0).unwrap();
        assert_eq!((t.rows, t.slot), (2, 10016));
        // Two rows past 48 KiB: no tile; target 0: off.
        assert_eq!(tile_plan(13_000, 2, TILE_TARGET_GATED, 0), None);
        // The static shared memory counts: matvec_fused's gated Q8_0 tile
        // at k = 5120 with the norm and int8 x (extra 4 k + 5120 + 1280)
        // took 2 x 10896 + 26880 = 48672 dynamic bytes, over 48 KiB with
        // the kernel's 640 static ones.
        assert_eq!(tile_plan(5440, 2, TILE_TARGET_GATED, 26_880), None);
        assert_eq!(tile_plan(1152, 2, 0, 0), None);
        assert_eq!(tile_target(0, 2), 0);
        assert_eq!(tile_target(5000, 1), 5000);
        // The int8 x area: k codes, a scale and a sum per 32.
        assert_eq!(tile_xq_bytes(2048), 2560);
        assert_eq!(tile_xq_bytes(64), 80);
        // Int8-activation tiles: exactly these formats, each with its
        // kernel names, and float tiles too.
        let q8 = [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q8_0,
            DType::Q4_K,
            DType::Q5_K,
            DType::Q6_K,
        ];
        for t in DType::ALL {
            let want = q8.contains(&t);
            assert_eq!(q8_tile_supports(t), want, "{t:?}");
            assert_eq!(tile_kernel_names(t, true).is_some(), want, "{t:?}");
            assert!(!want || tile_kernel_names(t, false).is_some(), "{t:?}");
        }
        assert_eq!(
            tile_kernel_names(DType::Q6_K, true),
            Some((
                "mul_mv_id_q8tile_q6_K_f32",
                "mul_mv_id_swiglu_q8tile_q6_K_f32"
            ))
        );
        for rb in [18, 34, 144, 176, 210, 1152, 2176, 7616] {
            for mats in [1, 2] {
                for target in [1, 8192, TILE_TARGET_GATED, 1 << 20] {
                    if let Some(t) = tile_plan(rb, mats, target, 2560) {
                        assert!(t.rows >= 2 && t.rows % 2 == 0 && t.rows <= TILE_MAX_ROWS);
                        assert!(t.rows < 8 || t.rows % 8 == 0, "{rb} {mats} {target}");
                        assert!(t.slot >= t.rows * rb + 16 && t.slot % 16 == 0);
                        assert!(
                            mats * t.slot + 2560 + TILE_STATIC_SMEM <= TILE_MAX_SMEM,
                            "{rb} {mats} {target}"
                        );
                    }
                }
            }
        }
    }
}
