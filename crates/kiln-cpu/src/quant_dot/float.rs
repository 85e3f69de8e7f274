//! Dots of plain float weight rows (F32, F16, BF16; little-endian bytes,
//! no alignment needed) with f32 activations: f32 FMA accumulation in 4×8
//! lanes on AVX2 (F16 widened with F16C, BF16 by a 16-bit shift), plain f32
//! loops otherwise. Not the hot path for quantized models.

use crate::CpuFeatures;
use kiln_core::quant::float::{bf16_bits_to_f32, f16_bits_to_f32};
use kiln_core::DType;

/// `dot(w_row, x)` for `wtype` in {F32, F16, BF16}; `w_row` must hold
/// `x.len()` elements (a shorter row only contributes its prefix). Any
/// other dtype returns 0 (callers dispatch on the dtype first).
pub fn dot_float_row(features: CpuFeatures, wtype: DType, w_row: &[u8], x: &[f32]) -> f32 {
    let es = wtype.type_size();
    let n = x.len().min(w_row.len() / es);
    let (w_row, x) = (&w_row[..n * es], &x[..n]);
    #[cfg(target_arch = "x86_64")]
    if features.has_avx2_fma() {
        // SAFETY: features detected at run time; w_row holds exactly n elements
        // of `es` bytes and x exactly n f32 (sliced above).
        return unsafe { avx2::dot(wtype, w_row, x) };
    }
    let _ = features;
    scalar_dot(wtype, w_row, x)
}

fn scalar_dot(wtype: DType, w: &[u8], x: &[f32]) -> f32 {
    match wtype {
        DType::F32 => w
            .chunks_exact(4)
            .zip(x)
            .map(|(c, v)| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) * v)
            .sum(),
        DType::F16 => w
            .chunks_exact(2)
            .zip(x)
            .map(|(c, v)| f16_bits_to_f32(u16::from_le_bytes([c[0], c[1]])) * v)
            .sum(),
        DType::BF16 => w
            .chunks_exact(2)
            .zip(x)
            .map(|(c, v)| bf16_bits_to_f32(u16::from_le_bytes([c[0], c[1]])) * v)
            .sum(),
        _ => 0.0,
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::scalar_dot;
    use kiln_core::DType;
    use std::arch::x86_64::*;

    /// Load 8 weights starting at element `j` as f32.
    ///
    /// # Safety
    /// AVX2/F16C present; elements `j..j+8` lie inside `w`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load8(wtype: DType, w: *const u8, j: usize) -> __m256 {
        // SAFETY: caller guarantees 8 elements at j; unaligned loads.
        unsafe {
            match wtype {
                DType::F32 => _mm256_loadu_ps(w.add(4 * j).cast()),
                DType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(w.add(2 * j).cast())),
                _ => {
                    let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(w.add(2 * j).cast()));
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h))
                }
            }
        }
    }

    /// # Safety
    /// AVX2/FMA/F16C present; `w` holds exactly `x.len()` elements of `wtype`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot(wtype: DType, w: &[u8], x: &[f32]) -> f32 {
        let n = x.len();
        let wp = w.as_ptr();
        let xp = x.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut j = 0;
        let es = wtype.type_size();
        // No software prefetch: the hardware prefetcher streams the row.
        // Prefetching the next row (16 KB ahead for F32 k = 4096) cost ~20%
        // on the dev VM (17.7 vs 21.9 GB/s one thread, interleaved A/B in
        // one process; docs/perf.md §27).
        while j + 32 <= n {
            for (u, a) in acc.iter_mut().enumerate() {
                // SAFETY: j + 8u + 8 <= n elements in both rows.
                unsafe {
                    *a = _mm256_fmadd_ps(
                        load8(wtype, wp, j + 8 * u),
                        _mm256_loadu_ps(xp.add(j + 8 * u)),
                        *a,
                    )
                };
            }
            j += 32;
        }
        while j + 8 <= n {
            // SAFETY: j + 8 <= n.
            unsafe {
                acc[0] = _mm256_fmadd_ps(load8(wtype, wp, j), _mm256_loadu_ps(xp.add(j)), acc[0])
            };
            j += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps::<1>(s));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
        _mm_cvtss_f32(s1) + scalar_dot(wtype, &w[j * es..], &x[j..])
    }
}
