//! The tile mat-vec's host side (`kernels/matvec_tile.cuh`): how many weight
//! rows one CTA of matmul_id's tile kernels holds, and the per-backend
//! switch. The kernels are entries of matmul_id.cu.

use crate::CudaBackend;
use std::sync::atomic::Ordering;

/// Default shared-memory bytes one tile CTA requests (all its stacks).
pub const TILE_TARGET_BYTES: usize = 24 * 1024;
/// Rows per tile at most (`TILE_MAX_ROWS`, matvec_tile.cuh).
const TILE_MAX_ROWS: usize = 64;
/// Dynamic shared memory a tile CTA may take without an opt-in attribute.
const TILE_MAX_SMEM: usize = 48 * 1024;

/// A tile kernel launch: weight rows per CTA and shared bytes per stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlan {
    pub rows: usize,
    pub slot: usize,
}

/// The tile for `mats` stacks (1, or 2 for the gated path) of `row_bytes`
/// rows near `target` shared bytes per CTA (pure): as many rows as fit,
/// rounded down to a multiple of 8 (two per warp of four) from 8 rows up,
/// else to an even count; at least 2 rows, at most 64, and within 48 KiB
/// (each stack's slot has 16 bytes of slack for the aligned-down start).
/// `None` when two rows do not fit, or `target` is 0 (tiles off).
pub fn tile_plan(row_bytes: usize, mats: usize, target: usize) -> Option<TilePlan> {
    if row_bytes == 0 || mats == 0 || target == 0 {
        return None;
    }
    let slot = |rows: usize| (rows * row_bytes + 16).next_multiple_of(16);
    let mut rows = (target / (mats * row_bytes)).clamp(2, TILE_MAX_ROWS);
    rows = if rows >= 8 {
        rows / 8 * 8
    } else {
        rows / 2 * 2
    };
    while rows > 2 && mats * slot(rows) > TILE_MAX_SMEM {
        rows -= 2;
    }
    (mats * slot(rows) <= TILE_MAX_SMEM).then(|| TilePlan {
        rows,
        slot: slot(rows),
    })
}

/// The target bytes of `be`'s tile CTAs, 0 = tiles off: `KILN_MV_TILE`
/// (`0` off, a number of bytes) or [`set_id_tile`], else
/// [`TILE_TARGET_BYTES`].
pub fn id_tile_bytes(be: &CudaBackend) -> usize {
    be.matmul.tile_flag().load(Ordering::Relaxed)
}

/// Tiles on with `target` bytes per CTA, or off with 0 (parity tests and
/// A/B benches).
pub fn set_id_tile(be: &CudaBackend, target: usize) {
    be.matmul.tile_flag().store(target, Ordering::Relaxed);
}

/// The initial target from `KILN_MV_TILE` (unparsable: the default).
pub(crate) fn tile_bytes_from_env() -> usize {
    std::env::var("KILN_MV_TILE")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(TILE_TARGET_BYTES)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tile_plans() {
        // Qwen3-30B-A3B Q4_K: gate+up rows of 1152 bytes, down rows of 432.
        assert_eq!(
            tile_plan(1152, 2, TILE_TARGET_BYTES).map(|t| t.rows),
            Some(8)
        );
        assert_eq!(
            tile_plan(1152, 1, TILE_TARGET_BYTES).map(|t| t.rows),
            Some(16)
        );
        assert_eq!(
            tile_plan(432, 1, TILE_TARGET_BYTES).map(|t| t.rows),
            Some(56)
        );
        // Few rows fit: even counts; slots of 16-byte multiples with slack.
        let t = tile_plan(5000, 2, TILE_TARGET_BYTES).unwrap();
        assert_eq!((t.rows, t.slot), (2, 10016));
        // Two rows past 48 KiB: no tile; target 0: off.
        assert_eq!(tile_plan(13_000, 2, TILE_TARGET_BYTES), None);
        assert_eq!(tile_plan(1152, 2, 0), None);
        for rb in [18, 34, 144, 176, 210, 1152, 2176, 7616] {
            for mats in [1, 2] {
                for target in [1, 8192, TILE_TARGET_BYTES, 1 << 20] {
                    if let Some(t) = tile_plan(rb, mats, target) {
                        assert!(t.rows >= 2 && t.rows % 2 == 0 && t.rows <= TILE_MAX_ROWS);
                        assert!(t.slot >= t.rows * rb + 16 && t.slot % 16 == 0);
                        assert!(mats * t.slot <= TILE_MAX_SMEM, "{rb} {mats} {target}");
                    }
                }
            }
        }
    }
}
