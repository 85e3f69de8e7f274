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

/// Staging modes of a backend ([`set_staged`], `KILN_MV_STAGED`): auto
/// (the default: the dense and fused mat-vecs load directly, matmul_id
/// stages where [`id_stages_by_default`] says so), on, off.
pub(crate) const STAGED_AUTO: u8 = 0;
pub(crate) const STAGED_ON: u8 = 1;
pub(crate) const STAGED_OFF: u8 = 2;

/// Whether the mat-vecs of `be` (plain and fused) stage quantized weights
/// through shared memory and read float weights 16 bytes per thread
/// ([`stage_copy_width`]). Off unless turned on (`KILN_MV_STAGED=1` or
/// [`set_staged`]): on SmolLM2's small decode mat-vecs staging lost 4% of
/// tg128 (docs/perf.md §16).
pub fn staged(be: &CudaBackend) -> bool {
    be.matmul.staged_flag().load(Ordering::Relaxed) == STAGED_ON
}

/// Whether `be`'s matmul_id stages quantized `wtype` expert rows: as
/// [`set_staged`] / `KILN_MV_STAGED` say, else [`id_stages_by_default`].
pub fn id_staged(be: &CudaBackend, wtype: DType) -> bool {
    match be.matmul.staged_flag().load(Ordering::Relaxed) {
        STAGED_ON => wtype.is_quantized(),
        STAGED_OFF => false,
        _ => id_stages_by_default(wtype),
    }
}

/// The measured default for matmul_id (pure): staging wins for every
/// quantized format but Q8_0 at Qwen3-30B-A3B's expert shapes (bench_moe on
/// an H100, docs/perf.md §21: Q4_K gate+up+SiLU 27.3 -> 21.9 µs, down 19.6
/// -> 15.1 µs; Q8_0 23.0 -> 23.8 µs).
pub fn id_stages_by_default(wtype: DType) -> bool {
    wtype.is_quantized() && wtype != DType::Q8_0 && !matches!(wtype, DType::Mlx(_))
}

/// Turn staging on or off for `be` (parity tests and A/B benches); this
/// also overrides matmul_id's default.
pub fn set_staged(be: &CudaBackend, on: bool) {
    let mode = if on { STAGED_ON } else { STAGED_OFF };
    be.matmul.staged_flag().store(mode, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn matmul_id_staging_default_follows_the_measurements() {
        for t in [
            DType::Q4_0,
            DType::Q4_1,
            DType::Q4_K,
            DType::Q6_K,
            DType::IQ4_XS,
        ] {
            assert!(id_stages_by_default(t), "{t}");
        }
        for t in [DType::Q8_0, DType::F32, DType::F16, DType::BF16] {
            assert!(!id_stages_by_default(t), "{t}");
        }
    }

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
