//! The AVX-512 VNNI kernels of the packed mat-vec for the 32-element
//! formats, and the helpers the super-block kernels (`packed_vnni_k.rs`)
//! share (layout and formulas: `packed.rs`). Every kernel is `unsafe`:
//! callers check the CPU features and every bound
//! (`PackedWeights::group_ref`).

use super::packed::{GroupRef, PACK_MAX_M, PACK_ROWS, PF_BYTES};
use super::ActsView;
use std::arch::x86_64::*;

/// Store a group's `M` rows of 16 results at `out + c * ld`.
///
/// # Safety
/// `out + c * ld .. + 16` writable for `c < M`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn store<const M: usize>(
    out: *mut f32,
    ld: usize,
    r: &[[f32; PACK_ROWS]; PACK_MAX_M],
) {
    for (c, rc) in r.iter().enumerate().take(M) {
        // SAFETY: caller's bound; unaligned 64-byte load and store.
        unsafe { _mm512_storeu_ps(out.add(c * ld), _mm512_loadu_ps(rc.as_ptr())) };
    }
}

/// Code lines per block of the 32-element format `F` (see [`group`]).
const fn lines32(f: u8) -> usize {
    match f {
        2 => 8,
        1 | 4 => 5,
        5 => 6,
        _ => 4,
    }
}

/// [`group`] for `ng` consecutive groups from `k`, group `g`'s results at
/// `out + 16 g` (row `c` at `+ c * ld`).
///
/// # Safety
/// As [`group`] for each of the `ng` groups; `out` writable there.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn groups<const F: u8, const M: usize>(
    k: &GroupRef,
    ng: usize,
    a: &ActsView<'_>,
    out: *mut f32,
    ld: usize,
) {
    let (cs, ds) = (k.nb * lines32(F) * 64, k.nb * PACK_ROWS);
    for g in 0..ng {
        let kg = GroupRef {
            // SAFETY: group g < ng lies in the caller's range.
            codes: unsafe { k.codes.add(g * cs) },
            d: k.d.wrapping_add(g * ds),
            nb: k.nb,
        };
        // SAFETY: forwarded contract.
        unsafe { store::<M>(out.add(PACK_ROWS * g), ld, &group::<F, M>(&kg, a)) };
    }
}

/// The IQ4 grid plus 128 (unsigned bytes, what `vpdpbusd` multiplies) in
/// each 128-bit lane: a `vpshufb` table for the nibbles.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) fn iq4_grid_u8() -> __m512i {
    let mut t = [0u8; 16];
    for (o, &v) in t.iter_mut().zip(&kiln_core::quant::KVALUES_IQ4NL) {
        *o = (i16::from(v) + 128) as u8;
    }
    // SAFETY: t is 16 bytes; unaligned load, broadcast to the 4 lanes.
    _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(t.as_ptr().cast()) })
}

/// A kernel's `M` accumulators as rows of 16 results.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) fn rows_of<const M: usize>(acc: [__m512; M]) -> [[f32; PACK_ROWS]; PACK_MAX_M] {
    let mut out = [[0.0f32; PACK_ROWS]; PACK_MAX_M];
    for (o, v) in out.iter_mut().zip(acc) {
        // SAFETY: o is 16 f32.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
    }
    out
}

/// 16 f16 at `p` widened to f32.
///
/// # Safety
/// AVX-512F present; `p` readable for 16 u16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn half16(p: *const u16) -> __m512 {
    // SAFETY: caller's bound; unaligned 32-byte load.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
}

/// The 4 activation codes `4j..4j+4` at `x`, broadcast to all lanes.
///
/// # Safety
/// `x` readable for `4j + 4` bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn xq4(x: *const i8, j: usize) -> __m512i {
    // SAFETY: caller's bound; unaligned 4-byte read.
    _mm512_set1_epi32(unsafe { std::ptr::read_unaligned(x.add(4 * j).cast::<i32>()) })
}

/// Format `F`: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0, 3 = IQ4_NL (Q4_0's layout;
/// each nibble picks `KVALUES_IQ4NL[q] + 128` from a `vpshufb` table, an
/// unsigned byte, with Q8_0's offset), 4 = Q5_0, 5 = Q5_1 (the Q4 nibbles
/// plus bit `e` of the block's 32-bit `qh` as bit 4 of element `e`, from a
/// fifth line of `qh` words: a `vpshufb` copies the right `qh` byte to the
/// 4 bytes of each lane, `vptestmb` picks each byte's bit, a masked add
/// sets bit 4; Q5_1's sixth line holds d and m); `M` activation rows.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `k` points at one group's `nb` blocks
/// (codes: `nb * lines` 64-byte lines, 64-byte aligned, Q4_1's fifth line
/// holding d and m; Q4_0 / Q8_0: `d` holds `nb * 16` u16); `a` has `M`
/// rows of `k.nb` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group<const F: u8, const M: usize>(
    k: &GroupRef,
    a: &ActsView<'_>,
) -> [[f32; PACK_ROWS]; PACK_MAX_M] {
    let nb = k.nb;
    // Q4_1 carries d and m in a fifth line, Q5_1 in a sixth (after qh);
    // Q4_0 / Q8_0 / IQ4_NL / Q5_0 read `k.d`.
    let lines = lines32(F);
    // The line of d (and m) for the inline layouts.
    let dline = if F == 5 { 5 } else { 4 };
    let inline = F == 1 || F == 5;
    let off = match F {
        0 => -8.0f32,
        4 => -16.0,
        2 | 3 => -128.0,
        _ => 0.0,
    };
    // Q5: per lane dword r of a 128-bit lane, byte index 4r + s (for s
    // added), and the bit masks of elements 4j.. (j even / odd).
    let rep = _mm512_set4_epi32(0x0c0c_0c0c, 0x0808_0808, 0x0404_0404, 0);
    let (bits_ev, bits_od) = (
        _mm512_set1_epi32(0x0804_0201),
        _mm512_set1_epi32(0x8040_2010u32 as i32),
    );
    let b16 = _mm512_set1_epi8(0x10);
    let mask = _mm512_set1_epi8(0x0f);
    let grid = iq4_grid_u8();

    let mut acc = [_mm512_setzero_ps(); M];
    let qs = a.qs.as_ptr();
    let ds = a.ds.as_ptr();
    for b in 0..nb {
        // SAFETY: block b < nb of this group (caller's bound).
        let (v, dw) = unsafe {
            let base = k.codes.add(b * lines * 64);
            // Software prefetch PF_BYTES ahead in the code stream (and
            // as many blocks ahead in the scales); never faults, and the
            // address is formed with wrapping arithmetic, so running past
            // the group (into the next, or past the end) is harmless.
            let ahead = base.wrapping_add(if F == 2 { 2 * PF_BYTES } else { PF_BYTES });
            for j in 0..lines {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * j).cast());
            }
            let mut v = [_mm512_setzero_si512(); 8];
            for (j, vj) in v.iter_mut().enumerate().take(if F == 2 { 8 } else { 4 }) {
                *vj = _mm512_load_si512(base.add(64 * j).cast());
            }
            if F == 4 || F == 5 {
                v[4] = _mm512_load_si512(base.add(4 * 64).cast());
            }
            if inline {
                (v, half16(base.add(dline * 64).cast()))
            } else {
                let d_ahead = k.d.wrapping_add((b + PF_BYTES / (lines * 64)) * PACK_ROWS);
                _mm_prefetch::<_MM_HINT_T0>(d_ahead.cast());
                (v, half16(k.d.add(b * PACK_ROWS)))
            }
        };
        // Q4: low nibbles (elements 4j..) and high nibbles (16 + 4j..).
        let mut c = [_mm512_setzero_si512(); 8];
        if F == 2 {
            c = v;
        } else {
            for j in 0..4 {
                c[j] = _mm512_and_si512(v[j], mask);
                c[4 + j] = _mm512_and_si512(_mm512_srli_epi16::<4>(v[j]), mask);
            }
            if F == 3 {
                for cj in c.iter_mut() {
                    *cj = _mm512_shuffle_epi8(grid, *cj);
                }
            }
            if F == 4 || F == 5 {
                // Element 4j + i takes bit 4j + i of qh (byte j/2); element
                // 16 + 4j + i bit 16 + 4j + i (byte 2 + j/2).
                let qh = v[4];
                for j in 0..4 {
                    let bits = if j % 2 == 0 { bits_ev } else { bits_od };
                    let lo_b = _mm512_shuffle_epi8(
                        qh,
                        _mm512_add_epi8(rep, _mm512_set1_epi8((j / 2) as i8)),
                    );
                    let hi_b = _mm512_shuffle_epi8(
                        qh,
                        _mm512_add_epi8(rep, _mm512_set1_epi8((2 + j / 2) as i8)),
                    );
                    let (ml, mh) = (
                        _mm512_test_epi8_mask(lo_b, bits),
                        _mm512_test_epi8_mask(hi_b, bits),
                    );
                    c[j] = _mm512_mask_add_epi8(c[j], ml, c[j], b16);
                    c[4 + j] = _mm512_mask_add_epi8(c[4 + j], mh, c[4 + j], b16);
                }
            }
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            // SAFETY: activation row i < M, block b < nb (caller's bound).
            let (x, dx, sx) = unsafe {
                let idx = i * nb + b;
                let [dx, sx] = *ds.add(idx);
                (qs.add(idx).cast::<i8>(), dx, sx)
            };
            // Two chains of four dot-adds (c[j] pairs with codes 4j..4j+4).
            // SAFETY: x holds 32 codes.
            let (s0, s1) = unsafe {
                let mut s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[0], xq4(x, 0));
                let mut s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[4], xq4(x, 4));
                for j in 1..4 {
                    s0 = _mm512_dpbusd_epi32(s0, c[j], xq4(x, j));
                    s1 = _mm512_dpbusd_epi32(s1, c[4 + j], xq4(x, 4 + j));
                }
                (s0, s1)
            };
            let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
            if inline {
                // SAFETY: Q4_1's fifth / Q5_1's sixth line of block b: 16 d,
                // then 16 m.
                let mw = unsafe { half16(k.codes.add((b * lines + dline) * 64 + 32).cast()) };
                let t = _mm512_mul_ps(isum, _mm512_set1_ps(dx));
                *acc_i = _mm512_fmadd_ps(t, dw, *acc_i);
                *acc_i = _mm512_fmadd_ps(mw, _mm512_set1_ps(sx), *acc_i);
            } else {
                let t = _mm512_fmadd_ps(isum, _mm512_set1_ps(dx), _mm512_set1_ps(off * sx));
                *acc_i = _mm512_fmadd_ps(t, dw, *acc_i);
            }
        }
    }
    rows_of(acc)
}
