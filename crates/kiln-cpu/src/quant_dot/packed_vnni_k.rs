//! The AVX-512 VNNI kernels of the packed mat-vec for the super-block
//! formats against Q8_K activations: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and
//! IQ4_XS (layout and formulas: `packed.rs`; shared helpers:
//! `packed_vnni.rs`). Every kernel is `unsafe`: callers check the CPU
//! features and every bound (`PackedWeights::group_ref`).

use super::packed::{GroupRef, PACK_MAX_M, PACK_ROWS, PF_BYTES};
use super::packed_vnni::{half16, iq4_grid_u8, rows_of, store, xq4};
use kiln_core::quant::BlockQ8K;
use std::arch::x86_64::*;

/// The super-block kernels for `ng` groups: `K` = 0 (Q4_K), 1 (Q5_K),
/// 2 (Q6_K), 3 (IQ4_XS), 4 (Q2_K), 5 (Q3_K); as `packed_vnni::groups`.
///
/// # Safety
/// As [`group_q45k`] / [`group_q6k`] / [`group_iq4xs`] / [`group_q2k`] /
/// [`group_q3k`] for each of the `ng` groups; `out`
/// writable there.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn groups_k<const K: u8, const M: usize>(
    k: &GroupRef,
    ng: usize,
    a: &[BlockQ8K],
    out: *mut f32,
    ld: usize,
) {
    let lines = match K {
        0 => 36,
        1 => 44,
        2 => 52,
        3 => 34,
        4 => 21,
        _ => 27,
    };
    let (cs, ds) = (k.nb * lines * 64, k.nb * PACK_ROWS);
    for g in 0..ng {
        let kg = GroupRef {
            // SAFETY: group g < ng lies in the caller's range.
            codes: unsafe { k.codes.add(g * cs) },
            d: k.d.wrapping_add(g * ds),
            nb: k.nb,
        };
        // SAFETY: forwarded contract.
        let r = unsafe {
            match K {
                0 => group_q45k::<false, M>(&kg, a),
                1 => group_q45k::<true, M>(&kg, a),
                2 => group_q6k::<M>(&kg, a),
                3 => group_iq4xs::<M>(&kg, a),
                4 => group_q2k::<M>(&kg, a),
                _ => group_q3k::<M>(&kg, a),
            }
        };
        // SAFETY: forwarded contract.
        unsafe { store::<M>(out.add(PACK_ROWS * g), ld, &r) };
    }
}

/// Byte `J` of every 32-bit lane of `v`, as i32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn byte_lane<const J: u32>(v: __m512i) -> __m512i {
    _mm512_and_si512(_mm512_srli_epi32::<J>(v), _mm512_set1_epi32(0xff))
}

/// Scale `j` (0..8) of each row lane, from the bytes of `lo` (0..4) and
/// `hi` (4..8).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn scale_of(lo: __m512i, hi: __m512i, j: usize) -> __m512i {
    match j {
        0 => byte_lane::<0>(lo),
        1 => byte_lane::<8>(lo),
        2 => byte_lane::<16>(lo),
        3 => byte_lane::<24>(lo),
        4 => byte_lane::<0>(hi),
        5 => byte_lane::<8>(hi),
        6 => byte_lane::<16>(hi),
        _ => byte_lane::<24>(hi),
    }
}

/// Q4_K (`Q5 = false`) or Q5_K, `M` activation rows (Q8_K blocks, `a`:
/// `M` rows of `k.nb`).
///
/// Q5_K's block has 8 more word lines after the scales, its `qh`: bit `j`
/// of `qh[l]` is bit 4 of element `l` of sub-block `j`, added to the
/// nibble by a masked byte add (`vptestmb`); otherwise the two are alike.
///
/// Per super-block and row lane: the 12 scale bytes (lines 0..3) give
/// the eight 6-bit scales `sc_j` and mins `m_j` (four per 32-bit lane);
/// `isum_j = Σ q·x` over sub-block `j` (8 `vpdpbusd`); the integer sums
/// `Σ_j sc_j isum_j` (`vpmulld`) and `Σ_j m_j B_j` (`vpmaddwd` of the mins
/// with pairs of the 32-element sums `B_j = bsums[2j] + bsums[2j+1]`), then
/// `d_x (d_w Σ sc isum - dmin_w Σ m B)`, the formula of `Q8KDot` for Q4_K.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `k` points at one Q4_K (36 lines per block)
/// or Q5_K (44 lines) group; `a` holds `M` rows of `k.nb` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group_q45k<const Q5: bool, const M: usize>(
    k: &GroupRef,
    a: &[BlockQ8K],
) -> [[f32; PACK_ROWS]; PACK_MAX_M] {
    // Word lines before the nibbles (scales, then Q5_K's qh); all lines.
    let qs0 = if Q5 { 11 } else { 3 };
    let lines = qs0 + 33;
    let b16 = _mm512_set1_epi8(0x10);
    let nb = k.nb;
    let (m4, m6, m30) = (
        _mm512_set1_epi8(0x0f),
        _mm512_set1_epi8(0x3f),
        _mm512_set1_epi8(0x30),
    );
    let lo16 = _mm512_set1_epi32(0x00ff_00ff);
    let mut acc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        // SAFETY: block b < nb of this group (caller's bound).
        let base = unsafe { k.codes.add(b * lines * 64) };
        // SAFETY: lines 0..3 (scale bytes) and the last (d, dmin) of block b.
        let (q0, q1, q2, dw, dmin) = unsafe {
            (
                _mm512_load_si512(base.cast()),
                _mm512_load_si512(base.add(64).cast()),
                _mm512_load_si512(base.add(2 * 64).cast()),
                half16(base.add((lines - 1) * 64).cast()),
                half16(base.add((lines - 1) * 64 + 32).cast()),
            )
        };
        // Byte i of each lane: scales 0..4 / 4..8 and mins 0..4 / 4..8.
        let sc_lo = _mm512_and_si512(q0, m6);
        let sc_hi = _mm512_or_si512(
            _mm512_and_si512(q2, m4),
            _mm512_and_si512(_mm512_srli_epi16::<2>(q0), m30),
        );
        let mn_lo = _mm512_and_si512(q1, m6);
        let mn_hi = _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16::<4>(q2), m4),
            _mm512_and_si512(_mm512_srli_epi16::<2>(q1), m30),
        );
        // Mins as i16 pairs per lane: (m0, m2), (m1, m3), (m4, m6), (m5, m7).
        let mn = [
            _mm512_and_si512(mn_lo, lo16),
            _mm512_srli_epi16::<8>(mn_lo),
            _mm512_and_si512(mn_hi, lo16),
            _mm512_srli_epi16::<8>(mn_hi),
        ];
        let mut isc = [_mm512_setzero_si512(); M];
        for p in 0..4 {
            // Lines qs0+8p..qs0+8p+8: low nibbles are sub-block 2p, high 2p + 1.
            // Four chains per activation row: low/high × even/odd line.
            let mut s = [[_mm512_setzero_si512(); 4]; M];
            // Software prefetch 2 KiB ahead, a quarter block's lines per
            // quarter (9 or 11) so the requests spread out: prefetching a
            // whole block at once cost ~20 points of the read (docs/perf.md
            // §27). Never faults; wrapping address arithmetic.
            let q = lines / 4;
            let ahead = base.wrapping_add(2 * PF_BYTES + q * p * 64);
            for j in 0..q {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * j).cast());
            }
            for u in 0..8 {
                // SAFETY: line qs0 + 8p + u < lines - 1 of block b.
                let v = unsafe { _mm512_load_si512(base.add((qs0 + 8 * p + u) * 64).cast()) };
                let mut lo = _mm512_and_si512(v, m4);
                let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4);
                if Q5 {
                    // SAFETY: qh word u is line 3 + u of block b.
                    let qh = unsafe { _mm512_load_si512(base.add((3 + u) * 64).cast()) };
                    let bit = |j: usize| _mm512_set1_epi8((1u8 << j) as i8);
                    let (ml, mh) = (
                        _mm512_test_epi8_mask(qh, bit(2 * p)),
                        _mm512_test_epi8_mask(qh, bit(2 * p + 1)),
                    );
                    lo = _mm512_mask_add_epi8(lo, ml, lo, b16);
                    hi = _mm512_mask_add_epi8(hi, mh, hi, b16);
                }
                for (c, s_c) in s.iter_mut().enumerate() {
                    // SAFETY: row c < M, block b < nb (caller's bound); the
                    // codes 64p + 4u.. and 64p + 32 + 4u.. lie in its 256.
                    unsafe {
                        let xq = (*a.as_ptr().add(c * nb + b)).qs.as_ptr().add(64 * p);
                        let e = u & 1;
                        s_c[e] = _mm512_dpbusd_epi32(s_c[e], lo, xq4(xq, u));
                        s_c[2 + e] = _mm512_dpbusd_epi32(s_c[2 + e], hi, xq4(xq, 8 + u));
                    }
                }
            }
            let (sa, sb) = (
                scale_of(sc_lo, sc_hi, 2 * p),
                scale_of(sc_lo, sc_hi, 2 * p + 1),
            );
            for (isc_c, s_c) in isc.iter_mut().zip(&s) {
                let s_lo = _mm512_add_epi32(s_c[0], s_c[1]);
                let s_hi = _mm512_add_epi32(s_c[2], s_c[3]);
                *isc_c = _mm512_add_epi32(*isc_c, _mm512_mullo_epi32(s_lo, sa));
                *isc_c = _mm512_add_epi32(*isc_c, _mm512_mullo_epi32(s_hi, sb));
            }
        }
        for (c, acc_c) in acc.iter_mut().enumerate() {
            // SAFETY: row c < M, block b < nb.
            let x = unsafe { &*a.as_ptr().add(c * nb + b) };
            let bs = |j: usize| i32::from(x.bsums[2 * j]) + i32::from(x.bsums[2 * j + 1]);
            let pair = |j0: usize, j1: usize| _mm512_set1_epi32((bs(j0) & 0xffff) | (bs(j1) << 16));
            let msum = _mm512_add_epi32(
                _mm512_add_epi32(
                    _mm512_madd_epi16(mn[0], pair(0, 2)),
                    _mm512_madd_epi16(mn[1], pair(1, 3)),
                ),
                _mm512_add_epi32(
                    _mm512_madd_epi16(mn[2], pair(4, 6)),
                    _mm512_madd_epi16(mn[3], pair(5, 7)),
                ),
            );
            let t = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(isc[c]));
            let t = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(msum), t);
            *acc_c = _mm512_fmadd_ps(t, _mm512_set1_ps(x.d), *acc_c);
        }
    }
    rows_of(acc)
}

/// Signed byte `J` of every 32-bit lane of `v`, as i32 lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn sbyte_lane<const SHL: u32>(v: __m512i) -> __m512i {
    _mm512_srai_epi32::<24>(_mm512_slli_epi32::<SHL>(v))
}

/// `Σ_s v_s bsums_s` per row lane for 16 per-lane i16 values `v` given
/// as i16 pairs: `ev[i]` holds `(v[4i], v[4i+2])`, `od[i]` holds
/// `(v[4i+1], v[4i+3])` (`vpmaddwd` with pairs of `bsums`; exact in i32).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn bsums_dot(ev: &[__m512i; 4], od: &[__m512i; 4], bsums: &[i16; 16]) -> __m512i {
    let pair = |j0: usize, j1: usize| {
        let lo = i32::from(bsums[j0]) & 0xffff;
        _mm512_set1_epi32(lo | (i32::from(bsums[j1]) << 16))
    };
    let mut s = _mm512_setzero_si512();
    for i in 0..4 {
        s = _mm512_add_epi32(s, _mm512_madd_epi16(ev[i], pair(4 * i, 4 * i + 2)));
        s = _mm512_add_epi32(s, _mm512_madd_epi16(od[i], pair(4 * i + 1, 4 * i + 3)));
    }
    s
}

/// Q6_K's sub-block scale `j` (0..16, signed) of each row lane, from the
/// four scale words `w` (bytes `4i..4i + 4` in word `i`).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn scale6_of(w: &[__m512i; 4], j: usize) -> __m512i {
    let v = w[j / 4];
    match j % 4 {
        0 => sbyte_lane::<24>(v),
        1 => sbyte_lane::<16>(v),
        2 => sbyte_lane::<8>(v),
        _ => sbyte_lane::<0>(v),
    }
}

/// Q6_K, `M` activation rows (Q8_K blocks, `a`: `M` rows of `k.nb`).
///
/// Block lines: 4 words of the 16 signed scales, 32 words of `ql`, 16 of
/// `qh`; `d` in `k.d`. Element `128n + 32q + l` (half `n`, quarter `q`,
/// `l < 32`) has the 6-bit code `ql[64n + 32(q&1) + l]`'s nibble `q >> 1`
/// plus bits `2q..2q+2` of `qh[32n + l]` as bits 4..6; its value is
/// `code - 32` and its scale `sc[8n + 2q + l/16]`. Per row lane:
/// `isum_j = Σ code·x` over sub-block `j` (16 elements, 4 `vpdpbusd`), then
/// `d_x d_w (Σ_j sc_j isum_j - 32 Σ_j sc_j bsums_j)` (`vpmulld`; the offset
/// term by `vpmaddwd` of the scales with `bsums` pairs), `Q8KDot`'s
/// formula for Q6_K with the offset folded into the activation sums.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `k` points at one Q6_K group (52 lines per
/// block, `nb * 16` d); `a` holds `M` rows of `k.nb` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group_q6k<const M: usize>(
    k: &GroupRef,
    a: &[BlockQ8K],
) -> [[f32; PACK_ROWS]; PACK_MAX_M] {
    const LINES: usize = 52;
    let nb = k.nb;
    let (m4, m30) = (_mm512_set1_epi8(0x0f), _mm512_set1_epi8(0x30));
    let mut acc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        // SAFETY: block b < nb of this group (caller's bound).
        let base = unsafe { k.codes.add(b * LINES * 64) };
        // SAFETY: lines 0..4 of block b and its 16 d.
        let (w, dw) = unsafe {
            let l = |i: usize| _mm512_load_si512(base.add(64 * i).cast());
            ([l(0), l(1), l(2), l(3)], half16(k.d.add(b * PACK_ROWS)))
        };
        _mm_prefetch::<_MM_HINT_T0>(k.d.wrapping_add((b + 4) * PACK_ROWS).cast());
        let mut isc = [_mm512_setzero_si512(); M];
        for n in 0..2 {
            // Software prefetch 2 KiB ahead, 13 lines per half-half block
            // (52 per block), spread as for Q4_K; never faults.
            for h in 0..2 {
                let ahead = base.wrapping_add(2 * PF_BYTES + (26 * n + 13 * h) * 64);
                for j in 0..13 {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * j).cast());
                }
                // Elements l = 16h..16h + 16 of the four quarters: sub-blocks
                // 8n + 2q + h, one accumulator each per activation row.
                let mut s = [[_mm512_setzero_si512(); 4]; M];
                for u in 4 * h..4 * h + 4 {
                    // SAFETY: ql words 16n + u, 16n + 8 + u (lines 4..36) and
                    // qh word 8n + u (lines 36..52) of block b.
                    let (qa, qb, qh) = unsafe {
                        (
                            _mm512_load_si512(base.add((4 + 16 * n + u) * 64).cast()),
                            _mm512_load_si512(base.add((4 + 16 * n + 8 + u) * 64).cast()),
                            _mm512_load_si512(base.add((36 + 8 * n + u) * 64).cast()),
                        )
                    };
                    let c = [
                        _mm512_or_si512(
                            _mm512_and_si512(qa, m4),
                            _mm512_and_si512(_mm512_slli_epi16::<4>(qh), m30),
                        ),
                        _mm512_or_si512(
                            _mm512_and_si512(qb, m4),
                            _mm512_and_si512(_mm512_slli_epi16::<2>(qh), m30),
                        ),
                        _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16::<4>(qa), m4),
                            _mm512_and_si512(qh, m30),
                        ),
                        _mm512_or_si512(
                            _mm512_and_si512(_mm512_srli_epi16::<4>(qb), m4),
                            _mm512_and_si512(_mm512_srli_epi16::<2>(qh), m30),
                        ),
                    ];
                    for (ci, s_c) in s.iter_mut().enumerate() {
                        // SAFETY: row ci < M, block b < nb; the codes
                        // 128n + 32q + 4u.. lie in its 256.
                        unsafe {
                            let xq = (*a.as_ptr().add(ci * nb + b)).qs.as_ptr().add(128 * n);
                            for (q, s_q) in s_c.iter_mut().enumerate() {
                                *s_q = _mm512_dpbusd_epi32(*s_q, c[q], xq4(xq, 8 * q + u));
                            }
                        }
                    }
                }
                for (isc_c, s_c) in isc.iter_mut().zip(&s) {
                    for (q, s_q) in s_c.iter().enumerate() {
                        let sc = scale6_of(&w, 8 * n + 2 * q + h);
                        *isc_c = _mm512_add_epi32(*isc_c, _mm512_mullo_epi32(*s_q, sc));
                    }
                }
            }
        }
        // Scales as i16 pairs per lane: word i gives (sc[4i], sc[4i+2]) and
        // (sc[4i+1], sc[4i+3]), sign-extended.
        let ev = w.map(|v| _mm512_srai_epi16::<8>(_mm512_slli_epi16::<8>(v)));
        let od = w.map(|v| _mm512_srai_epi16::<8>(v));
        for (c, acc_c) in acc.iter_mut().enumerate() {
            // SAFETY: row c < M, block b < nb.
            let x = unsafe { &*a.as_ptr().add(c * nb + b) };
            let off = bsums_dot(&ev, &od, &x.bsums);
            // Σ sc (code - 32) x = Σ sc·isum - 32 Σ sc·bsums (exact in i32).
            let tot = _mm512_sub_epi32(isc[c], _mm512_slli_epi32::<5>(off));
            let t = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(tot));
            *acc_c = _mm512_fmadd_ps(t, _mm512_set1_ps(x.d), *acc_c);
        }
    }
    rows_of(acc)
}

/// IQ4_XS, `M` activation rows (Q8_K blocks, `a`: `M` rows of `k.nb`).
///
/// Block lines: the words `d | scales_h << 16` and `scales_l`, then 32
/// words of `qs` (sub-block `ib`: words `4ib..4ib + 4`, low nibbles are its
/// elements `4u + i`, high ones `16 + 4u + i`). Sub-block `ib`'s scale is
/// `ls - 32`, `ls` = nibble `ib` of `scales_l` | bits `2ib..2ib+2` of
/// `scales_h` as bits 4..6; codes go through the grid stored `+ 128`
/// (`vpshufb`), so per row lane `isum_ib = Σ (v + 128) x - 128 B_ib` with
/// `B_ib` the sub-block's activation sum (two `bsums`), then
/// `d_x d_w Σ_ib (ls_ib - 32) isum_ib`: `Q8KDot`'s formula for IQ4_XS.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `k` points at one IQ4_XS group (34 lines
/// per block); `a` holds `M` rows of `k.nb` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group_iq4xs<const M: usize>(
    k: &GroupRef,
    a: &[BlockQ8K],
) -> [[f32; PACK_ROWS]; PACK_MAX_M] {
    const LINES: usize = 34;
    let nb = k.nb;
    let m4 = _mm512_set1_epi8(0x0f);
    let grid = iq4_grid_u8();
    let mut acc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        // SAFETY: block b < nb of this group (caller's bound).
        let base = unsafe { k.codes.add(b * LINES * 64) };
        // SAFETY: lines 0 and 1 of block b.
        let (w0, w1) = unsafe {
            (
                _mm512_load_si512(base.cast()),
                _mm512_load_si512(base.add(64).cast()),
            )
        };
        let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(w0));
        let sh = _mm512_srli_epi32::<16>(w0);
        let mut tot = [_mm512_setzero_si512(); M];
        for ib in 0..8 {
            // Software prefetch 2 KiB ahead, 4 lines per sub-block (34 per
            // block, the two scale lines with the first); never faults.
            let ahead = base.wrapping_add(2 * PF_BYTES + (2 + 4 * ib) * 64);
            for j in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * j).cast());
            }
            let lo4 = _mm512_and_si512(
                _mm512_srlv_epi32(w1, _mm512_set1_epi32(4 * ib as i32)),
                _mm512_set1_epi32(0x0f),
            );
            let hi2 = _mm512_and_si512(
                _mm512_srlv_epi32(sh, _mm512_set1_epi32(2 * ib as i32)),
                _mm512_set1_epi32(0x03),
            );
            let scale = _mm512_sub_epi32(
                _mm512_or_si512(lo4, _mm512_slli_epi32::<4>(hi2)),
                _mm512_set1_epi32(32),
            );
            let mut s = [[_mm512_setzero_si512(); 2]; M];
            for u in 0..4 {
                // SAFETY: line 2 + 4ib + u < 34 of block b.
                let v = unsafe { _mm512_load_si512(base.add((2 + 4 * ib + u) * 64).cast()) };
                let lo = _mm512_shuffle_epi8(grid, _mm512_and_si512(v, m4));
                let hi = _mm512_shuffle_epi8(grid, _mm512_and_si512(_mm512_srli_epi16::<4>(v), m4));
                for (c, s_c) in s.iter_mut().enumerate() {
                    // SAFETY: row c < M, block b < nb (caller's bound); the
                    // codes 32ib + 4u.. and 32ib + 16 + 4u.. lie in its 256.
                    unsafe {
                        let xq = (*a.as_ptr().add(c * nb + b)).qs.as_ptr().add(32 * ib);
                        s_c[0] = _mm512_dpbusd_epi32(s_c[0], lo, xq4(xq, u));
                        s_c[1] = _mm512_dpbusd_epi32(s_c[1], hi, xq4(xq, 4 + u));
                    }
                }
            }
            for (c, (tot_c, s_c)) in tot.iter_mut().zip(&s).enumerate() {
                // SAFETY: row c < M, block b < nb.
                let x = unsafe { &*a.as_ptr().add(c * nb + b) };
                let bsum = i32::from(x.bsums[2 * ib]) + i32::from(x.bsums[2 * ib + 1]);
                let isum = _mm512_sub_epi32(
                    _mm512_add_epi32(s_c[0], s_c[1]),
                    _mm512_set1_epi32(128 * bsum),
                );
                *tot_c = _mm512_add_epi32(*tot_c, _mm512_mullo_epi32(isum, scale));
            }
        }
        for (c, acc_c) in acc.iter_mut().enumerate() {
            // SAFETY: row c < M, block b < nb.
            let x = unsafe { &*a.as_ptr().add(c * nb + b) };
            let t = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(tot[c]));
            *acc_c = _mm512_fmadd_ps(t, _mm512_set1_ps(x.d), *acc_c);
        }
    }
    rows_of(acc)
}

/// Q2_K, `M` activation rows (Q8_K blocks, `a`: `M` rows of `k.nb`).
///
/// Block lines: 4 words of the 16 scale bytes (scale in the low nibble,
/// min in the high), 16 words of `qs`, then the word `d | dmin << 16`.
/// Element `128n + 32j + 16h + l` (`l < 16`) is bits `2j..2j+2` of
/// `qs[32n + 16h + l]`, in sub-block `s = 8n + 2j + h`. Per row lane:
/// `isum_s = Σ q·x` (4 `vpdpbusd`), then
/// `d_x (d_w Σ_s sc_s isum_s - dmin_w Σ_s m_s bsums_s)` (`vpmulld`; the
/// min term by `vpmaddwd` of the mins with `bsums` pairs): `Q8KDot`'s
/// formula for Q2_K.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `k` points at one Q2_K group (21 lines per
/// block); `a` holds `M` rows of `k.nb` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group_q2k<const M: usize>(
    k: &GroupRef,
    a: &[BlockQ8K],
) -> [[f32; PACK_ROWS]; PACK_MAX_M] {
    const LINES: usize = 21;
    let nb = k.nb;
    let (m3, m4, lo16) = (
        _mm512_set1_epi8(0x03),
        _mm512_set1_epi8(0x0f),
        _mm512_set1_epi32(0x00ff_00ff),
    );
    let mut acc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        // SAFETY: block b < nb of this group (caller's bound).
        let base = unsafe { k.codes.add(b * LINES * 64) };
        // Software prefetch 2 KiB ahead, the block's 21 lines; never faults.
        let ahead = base.wrapping_add(2 * PF_BYTES);
        for j in 0..LINES {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * j).cast());
        }
        // SAFETY: lines 0..4 (scales) and 20 (d, dmin) of block b.
        let (w, dd) = unsafe {
            let l = |i: usize| _mm512_load_si512(base.add(64 * i).cast());
            ([l(0), l(1), l(2), l(3)], l(20))
        };
        let dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
        let dmin = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32::<16>(dd)));
        let sc = |s: usize| {
            _mm512_and_si512(
                _mm512_srlv_epi32(w[s / 4], _mm512_set1_epi32(8 * (s % 4) as i32)),
                _mm512_set1_epi32(0x0f),
            )
        };
        let mut isc = [_mm512_setzero_si512(); M];
        for n in 0..2 {
            // SAFETY: qs words 8n..8n + 8 are lines 4 + 8n.. of block b.
            let v: [__m512i; 8] = std::array::from_fn(|u| unsafe {
                _mm512_load_si512(base.add((4 + 8 * n + u) * 64).cast())
            });
            for j in 0..4 {
                let shift = _mm_cvtsi32_si128(2 * j as i32);
                let mut s = [[_mm512_setzero_si512(); 2]; M];
                for u in 0..4 {
                    let c0 = _mm512_and_si512(_mm512_srl_epi16(v[u], shift), m3);
                    let c1 = _mm512_and_si512(_mm512_srl_epi16(v[4 + u], shift), m3);
                    for (ci, s_c) in s.iter_mut().enumerate() {
                        // SAFETY: row ci < M, block b < nb; the codes
                        // 128n + 32j + 4u.. and + 16 lie in its 256.
                        unsafe {
                            let xq = (*a.as_ptr().add(ci * nb + b))
                                .qs
                                .as_ptr()
                                .add(128 * n + 32 * j);
                            s_c[0] = _mm512_dpbusd_epi32(s_c[0], c0, xq4(xq, u));
                            s_c[1] = _mm512_dpbusd_epi32(s_c[1], c1, xq4(xq, 4 + u));
                        }
                    }
                }
                let (sa, sb) = (sc(8 * n + 2 * j), sc(8 * n + 2 * j + 1));
                for (isc_c, s_c) in isc.iter_mut().zip(&s) {
                    *isc_c = _mm512_add_epi32(*isc_c, _mm512_mullo_epi32(s_c[0], sa));
                    *isc_c = _mm512_add_epi32(*isc_c, _mm512_mullo_epi32(s_c[1], sb));
                }
            }
        }
        // Mins as i16 pairs per lane: word i gives (m[4i], m[4i+2]) and
        // (m[4i+1], m[4i+3]).
        let mins: [__m512i; 4] =
            std::array::from_fn(|i| _mm512_and_si512(_mm512_srli_epi16::<4>(w[i]), m4));
        let (ev, od) = (
            mins.map(|v| _mm512_and_si512(v, lo16)),
            mins.map(|v| _mm512_srli_epi16::<8>(v)),
        );
        for (c, acc_c) in acc.iter_mut().enumerate() {
            // SAFETY: row c < M, block b < nb.
            let x = unsafe { &*a.as_ptr().add(c * nb + b) };
            let msum = bsums_dot(&ev, &od, &x.bsums);
            let t = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(isc[c]));
            let t = _mm512_fnmadd_ps(dmin, _mm512_cvtepi32_ps(msum), t);
            *acc_c = _mm512_fmadd_ps(t, _mm512_set1_ps(x.d), *acc_c);
        }
    }
    rows_of(acc)
}

/// Q3_K, `M` activation rows (Q8_K blocks, `a`: `M` rows of `k.nb`).
///
/// Block lines: 8 words of `hmask`, 16 of `qs`, 3 of the 12 scale bytes;
/// `d` in `k.d`. Element `128n + 32j + 16h + l` (`l < 16`) has the 3-bit
/// code `(qs[32n + 16h + l] >> 2j) & 3`, plus 4 where bit `4n + j` of
/// `hmask[16h + l]` is set (`vptestmb`, masked add); its value is
/// `code - 4`, in sub-block `s = 8n + 2j + h` with the 6-bit scale
/// `sc_s - 32` (low nibbles from the first two words, high bits from the
/// third, per lane as `unpack_scales_q3k` does per byte). Per row lane:
/// `d_x d_w (Σ_s (sc_s - 32) isum_s - 4 Σ_s (sc_s - 32) bsums_s)`,
/// `Q8KDot`'s formula for Q3_K with the offset folded into the sums.
///
/// # Safety
/// AVX-512 F/BW/VNNI present; `k` points at one Q3_K group (27 lines per
/// block, `nb * 16` d); `a` holds `M` rows of `k.nb` blocks.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn group_q3k<const M: usize>(
    k: &GroupRef,
    a: &[BlockQ8K],
) -> [[f32; PACK_ROWS]; PACK_MAX_M] {
    const LINES: usize = 27;
    let nb = k.nb;
    let (m3, m4, m30, four) = (
        _mm512_set1_epi8(0x03),
        _mm512_set1_epi8(0x0f),
        _mm512_set1_epi8(0x30),
        _mm512_set1_epi8(4),
    );
    let mut acc = [_mm512_setzero_ps(); M];
    for b in 0..nb {
        // SAFETY: block b < nb of this group (caller's bound).
        let base = unsafe { k.codes.add(b * LINES * 64) };
        // Software prefetch 2 KiB ahead, the block's 27 lines, and the
        // separate d four blocks ahead; never faults.
        let ahead = base.wrapping_add(2 * PF_BYTES);
        for j in 0..LINES {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * j).cast());
        }
        _mm_prefetch::<_MM_HINT_T0>(k.d.wrapping_add((b + 4) * PACK_ROWS).cast());
        // SAFETY: lines 0..8 (hmask) and 24..27 (scales) of block b; its d.
        let (hm, w, dw) = unsafe {
            let l = |i: usize| _mm512_load_si512(base.add(64 * i).cast());
            (
                std::array::from_fn::<__m512i, 8, _>(&l),
                [l(24), l(25), l(26)],
                half16(k.d.add(b * PACK_ROWS)),
            )
        };
        // Scale bytes 4i..4i+4 per lane (0..=63, stored + 32).
        let scb = [
            _mm512_or_si512(
                _mm512_and_si512(w[0], m4),
                _mm512_and_si512(_mm512_slli_epi16::<4>(w[2]), m30),
            ),
            _mm512_or_si512(
                _mm512_and_si512(w[1], m4),
                _mm512_and_si512(_mm512_slli_epi16::<2>(w[2]), m30),
            ),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(w[0]), m4),
                _mm512_and_si512(w[2], m30),
            ),
            _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(w[1]), m4),
                _mm512_and_si512(_mm512_srli_epi16::<2>(w[2]), m30),
            ),
        ];
        let scale = |s: usize| {
            let v = _mm512_and_si512(
                _mm512_srlv_epi32(scb[s / 4], _mm512_set1_epi32(8 * (s % 4) as i32)),
                _mm512_set1_epi32(0xff),
            );
            _mm512_sub_epi32(v, _mm512_set1_epi32(32))
        };
        let mut isc = [_mm512_setzero_si512(); M];
        for n in 0..2 {
            // SAFETY: qs words 8n..8n + 8 are lines 8 + 8n.. of block b.
            let v: [__m512i; 8] = std::array::from_fn(|u| unsafe {
                _mm512_load_si512(base.add((8 + 8 * n + u) * 64).cast())
            });
            for j in 0..4 {
                let shift = _mm_cvtsi32_si128(2 * j as i32);
                let bit = _mm512_set1_epi8((1u8 << (4 * n + j)) as i8);
                let mut s = [[_mm512_setzero_si512(); 2]; M];
                for hu in 0..8 {
                    let c = _mm512_and_si512(_mm512_srl_epi16(v[hu], shift), m3);
                    let c = _mm512_mask_add_epi8(c, _mm512_test_epi8_mask(hm[hu], bit), c, four);
                    for (ci, s_c) in s.iter_mut().enumerate() {
                        // SAFETY: row ci < M, block b < nb; the codes
                        // 128n + 32j + 4hu.. lie in its 256.
                        unsafe {
                            let xq = (*a.as_ptr().add(ci * nb + b))
                                .qs
                                .as_ptr()
                                .add(128 * n + 32 * j);
                            s_c[hu / 4] = _mm512_dpbusd_epi32(s_c[hu / 4], c, xq4(xq, hu));
                        }
                    }
                }
                let (sa, sb) = (scale(8 * n + 2 * j), scale(8 * n + 2 * j + 1));
                for (isc_c, s_c) in isc.iter_mut().zip(&s) {
                    *isc_c = _mm512_add_epi32(*isc_c, _mm512_mullo_epi32(s_c[0], sa));
                    *isc_c = _mm512_add_epi32(*isc_c, _mm512_mullo_epi32(s_c[1], sb));
                }
            }
        }
        // Signed scales as i16 pairs per lane: word i gives (sc[4i], sc[4i+2])
        // and (sc[4i+1], sc[4i+3]), each minus 32.
        let m32 = _mm512_set1_epi16(32);
        let lo16 = _mm512_set1_epi32(0x00ff_00ff);
        let (ev, od) = (
            scb.map(|v| _mm512_sub_epi16(_mm512_and_si512(v, lo16), m32)),
            scb.map(|v| _mm512_sub_epi16(_mm512_srli_epi16::<8>(v), m32)),
        );
        for (c, acc_c) in acc.iter_mut().enumerate() {
            // SAFETY: row c < M, block b < nb.
            let x = unsafe { &*a.as_ptr().add(c * nb + b) };
            let off = bsums_dot(&ev, &od, &x.bsums);
            // Σ (sc - 32)(code - 4) x = Σ (sc - 32) isum - 4 Σ (sc - 32) bsums.
            let tot = _mm512_sub_epi32(isc[c], _mm512_slli_epi32::<2>(off));
            let t = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(tot));
            *acc_c = _mm512_fmadd_ps(t, _mm512_set1_ps(x.d), *acc_c);
        }
    }
    rows_of(acc)
}
