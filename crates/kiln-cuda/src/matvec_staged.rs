//! The staged mat-vec's host side (`kernels/matvec_staged.cuh`): the chunk
//! geometry mirrored from the kernel header (to plan how many warps share a
//! row), the copy width a launch can use, the shared memory a CTA's staging
//! takes, and the per-backend switch. The kernels themselves are entries of
//! matmul.cu and matvec_fused.cu.

use crate::matmul::{MV_ROWS, MV_WARPS};
use crate::CudaBackend;
use kiln_core::DType;
use std::sync::atomic::Ordering;

/// Target bytes of one staged chunk (`STAGE_TARGET_BYTES`, matvec_staged.cuh).
const STAGE_TARGET_BYTES: usize = 768;

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Super-blocks of `ts` bytes (`sub` virtual 32-element blocks each) per
/// staged chunk: mirrors `stage_sblocks` in matvec_staged.cuh (the smallest
/// count whose bytes are a multiple of 16 and whose virtual blocks a multiple
/// of 8, times as many as fit [`STAGE_TARGET_BYTES`]). Used only to plan
/// `kw`; the kernel uses its own copy.
pub(crate) fn stage_sblocks(ts: usize, sub: usize) -> usize {
    let (a, b) = (16 / gcd(ts, 16), 8 / gcd(sub, 8));
    let base = a / gcd(a, b) * b;
    base * (STAGE_TARGET_BYTES / (base * ts)).max(1)
}

/// Staged chunks in flight per warp plus the one being decoded (`STAGE_N`).
const STAGE_N: usize = 3;

/// Shared memory one CTA's staging area takes for `wtype` (`StagePlan::BYTES`).
pub(crate) fn stage_bytes(wtype: DType) -> usize {
    let ts = wtype.type_size();
    let sub = (wtype.block_size() / 32).max(1);
    MV_WARPS * STAGE_N * MV_ROWS * stage_sblocks(ts, sub) * ts
}

/// The mat-vec copy width (`MatmulParams::cw` in matmul.cu) for weights of
/// `row_bytes` per row starting at device address `wp` (x at `xp`): quantized
/// rows are staged through shared memory in the widest of 16/8/4-byte pieces
/// that divides both; float rows use 16-byte loads when rows and x are
/// 16-byte aligned. 0: the direct-load kernel.
pub(crate) fn stage_copy_width(quantized: bool, row_bytes: usize, wp: u64, xp: u64) -> u64 {
    let fits = |a: u64| (row_bytes as u64).is_multiple_of(a) && wp.is_multiple_of(a);
    if quantized {
        [16, 8, 4].into_iter().find(|&a| fits(a)).unwrap_or(0)
    } else if fits(16) && xp.is_multiple_of(16) {
        16
    } else {
        0
    }
}

/// Whether the mat-vecs of `be` (plain and fused) stage quantized weights
/// through shared memory and read float weights 16 bytes per thread
/// ([`stage_copy_width`]). Off by default: the staged kernels compile for
/// sm_80/sm_90 and their parity tests and benches exist, but they have not
/// yet run on a GPU; `KILN_MV_STAGED=1` turns them on for a process.
pub fn staged(be: &CudaBackend) -> bool {
    be.matmul.staged_flag().load(Ordering::Relaxed)
}

/// Turn staging on or off for `be` (parity tests and A/B benches).
pub fn set_staged(be: &CudaBackend, on: bool) {
    be.matmul.staged_flag().store(on, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn staged_chunks() {
        // (format, super-blocks per chunk): bytes a multiple of 16, virtual
        // blocks a multiple of 8, about STAGE_TARGET_BYTES.
        let want = [
            (DType::Q4_0, 40),
            (DType::Q4_1, 32),
            (DType::Q8_0, 16),
            (DType::Q5_0, 32),
            (DType::Q5_1, 32),
            (DType::IQ4_NL, 40),
            (DType::Q4_K, 5),
            (DType::Q5_K, 4),
            (DType::Q6_K, 8),
            (DType::IQ4_XS, 4),
            (DType::Q3_K, 8),
            (DType::Q2_K, 8),
        ];
        for (t, sb) in want {
            let (ts, sub) = (t.type_size(), t.block_size() / 32);
            assert_eq!(stage_sblocks(ts, sub), sb, "{t}");
            assert_eq!(sb * ts % 16, 0, "{t}");
            assert_eq!(sb * sub % 8, 0, "{t}");
        }
        assert_eq!(stage_copy_width(true, 2304, 0x1000, 0), 16);
        assert_eq!(stage_copy_width(true, 360, 0x1000, 0), 8);
        assert_eq!(stage_copy_width(true, 324, 0x1000, 0), 4);
        assert_eq!(stage_copy_width(true, 2304, 0x1002, 0), 0);
        assert_eq!(stage_copy_width(false, 8192, 0x1000, 0x2000), 16);
        assert_eq!(stage_copy_width(false, 8192, 0x1000, 0x2004), 0);
        assert_eq!(stage_copy_width(false, 8194, 0x1000, 0x2000), 0);
    }
}
