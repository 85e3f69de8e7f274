//! AVX2 + FMA + F16C kernels for the quantized dots (see `mod.rs` for the
//! formulas). Integer products use `vpmaddubsw` (unsigned 4-bit or |q8| codes
//! × signed activation codes, pairs summed to i16 without overflow:
//! `2*15*127` resp. `2*128*127 < 2^15`) then `vpmaddwd` with ones (i16 pairs
//! to i32); each block's i32 vector is converted to f32 and accumulated with
//! one FMA by `d_w * d_x`. The 8 lanes are reduced once per tile.
//!
//! Every function here is `unsafe`: callers (in `mod.rs`) guarantee that the
//! CPU has AVX2/FMA/F16C and that all bounds hold.

use super::{ActsView, Q8Acts, QFormat, Tile, TileSpec, TILE_C, TILE_R};
use kiln_core::quant::QK;
use std::arch::x86_64::*;

const F_Q4_0: u8 = 0;
const F_Q4_1: u8 = 1;
const F_Q8_0: u8 = 2;
const F_Q5_0: u8 = 3;
const F_Q5_1: u8 = 4;
const F_IQ4_NL: u8 = 5;

/// Formats whose codes are signed (product via the `vpsignb` trick, no
/// m-term); the others keep unsigned codes and add `m_w * s_x`.
const fn signed_codes(f: u8) -> bool {
    f == F_Q8_0 || f == F_IQ4_NL
}

/// Block bytes of format `f`.
const fn block_bytes(f: u8) -> usize {
    match f {
        F_Q4_0 | F_IQ4_NL => 18,
        F_Q4_1 => 20,
        F_Q5_0 => 22,
        F_Q5_1 => 24,
        _ => 34,
    }
}

/// The 32 bits at `p` (little-endian) as 32 bytes, `0xff` where the bit
/// of that element is set: byte `j` takes source byte `j / 8` (a shuffle
/// within each 128-bit half of the broadcast word), then tests bit `j % 8`.
///
/// # Safety
/// `p` must be readable for 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bits_to_bytes(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 4 readable bytes; unaligned read.
    let bits = unsafe { std::ptr::read_unaligned(p.cast::<i32>()) };
    let v = _mm256_set1_epi32(bits);
    let shuf = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let sel = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let b = _mm256_and_si256(_mm256_shuffle_epi8(v, shuf), sel);
    _mm256_cmpeq_epi8(b, sel)
}

/// The IQ4 grid in both 128-bit halves (a `vpshufb` table).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn iq4_grid() -> __m256i {
    let g = kiln_core::quant::KVALUES_IQ4NL;
    // SAFETY: g is 16 bytes; unaligned load.
    let t = unsafe { _mm_loadu_si128(g.as_ptr().cast()) };
    _mm256_broadcastsi128_si256(t)
}

/// 32 codes of one weight block of format `F` at `p` (element order):
/// unsigned 4/5-bit codes, signed 8-bit ones (Q8_0) or signed grid values
/// (IQ4_NL).
///
/// # Safety
/// `p` must be readable for one whole block of format `F`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn codes<const F: u8>(p: *const u8) -> __m256i {
    // SAFETY: every offset below lies inside the block (caller's bound).
    unsafe {
        match F {
            F_Q4_0 => nibbles(p.add(2)),
            F_Q4_1 => nibbles(p.add(4)),
            F_Q5_0 => _mm256_or_si256(
                nibbles(p.add(6)),
                _mm256_and_si256(bits_to_bytes(p.add(2)), _mm256_set1_epi8(0x10)),
            ),
            F_Q5_1 => _mm256_or_si256(
                nibbles(p.add(8)),
                _mm256_and_si256(bits_to_bytes(p.add(4)), _mm256_set1_epi8(0x10)),
            ),
            F_IQ4_NL => _mm256_shuffle_epi8(iq4_grid(), nibbles(p.add(2))),
            _ => _mm256_loadu_si256(p.add(2).cast()),
        }
    }
}

/// Offset added to unsigned codes (`m_w = -OFFSET * d_w`), for the
/// formats without a stored min (Q4_0: 8, Q5_0: 16).
const fn code_offset(f: u8) -> f32 {
    match f {
        F_Q4_0 => 8.0,
        F_Q5_0 => 16.0,
        _ => 0.0,
    }
}

/// Whether the second f16 of the header is a stored min.
const fn stored_min(f: u8) -> bool {
    f == F_Q4_1 || f == F_Q5_1
}

/// Quantize rows of 32-element blocks to codes + `[d, s]` (GGML Q8_1 codes,
/// f32 scale). Rounds half away from zero exactly like C `roundf`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_rows(x: &[f32], qs: &mut [[i8; QK]], ds: &mut [[f32; 2]]) {
    let sign = _mm256_set1_ps(-0.0);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for ((xb, q), d) in x.chunks_exact(QK).zip(qs.iter_mut()).zip(ds.iter_mut()) {
        let p = xb.as_ptr();
        // SAFETY: xb has exactly 32 f32 (chunks_exact); unaligned loads.
        let v = unsafe {
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let a01 = _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]));
        let a23 = _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3]));
        let a = _mm256_max_ps(a01, a23);
        let m4 = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m1 = _mm_max_ss(m2, _mm_movehdup_ps(m2));
        let amax = _mm_cvtss_f32(m1);
        let dx = amax / 127.0;
        let id = if dx != 0.0 { 1.0 / dx } else { 0.0 };
        let idv = _mm256_set1_ps(id);
        let mut iv = [_mm256_setzero_si256(); 4];
        for (o, vj) in iv.iter_mut().zip(v) {
            let y = _mm256_mul_ps(vj, idv);
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
            // y - trunc(y) is exact; round away from zero when |frac| >= 0.5.
            let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(y, t));
            let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, half);
            let step = _mm256_or_ps(_mm256_and_ps(y, sign), one);
            *o = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, step)));
        }
        let sum = _mm256_add_epi32(
            _mm256_add_epi32(iv[0], iv[1]),
            _mm256_add_epi32(iv[2], iv[3]),
        );
        let s4 = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256::<1>(sum),
        );
        let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
        let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b10_11_00_01>(s2));
        let isum = _mm_cvtsi128_si32(s1);
        let p01 = _mm256_packs_epi32(iv[0], iv[1]);
        let p23 = _mm256_packs_epi32(iv[2], iv[3]);
        let packed = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), perm);
        // SAFETY: q is a [i8; 32]; unaligned 32-byte store.
        unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), packed) };
        *d = [dx, dx * isum as f32];
    }
}

/// Sum of the 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum(v: __m256) -> f32 {
    let s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    _mm_cvtss_f32(s1)
}

/// 16 bytes of packed nibbles → 32 unsigned codes in element order
/// (low nibbles = elements 0..16, high nibbles = elements 16..32): the 16
/// bytes are broadcast to both 128-bit halves (a single load), the upper
/// half shifted right by 4, then masked.
///
/// # Safety
/// `p` must be readable for 16 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    // SAFETY: caller guarantees 16 readable bytes; unaligned load.
    let q = _mm256_broadcastsi128_si256(unsafe { _mm_loadu_si128(p.cast()) });
    let shifted = _mm256_srlv_epi32(q, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0f))
}

/// f16 at `p` (and the next f16 in lane 1) widened to f32.
///
/// # Safety
/// `p` must be readable for 4 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn half2(p: *const u8) -> __m128 {
    // SAFETY: caller guarantees 4 readable bytes; unaligned read.
    let bits = unsafe { std::ptr::read_unaligned(p.cast::<i32>()) };
    _mm_cvtph_ps(_mm_cvtsi32_si128(bits))
}

/// The tile kernel: `R` weight rows × `C` activation rows over all blocks.
///
/// Per block: each weight row is expanded once (codes, `d_w`, `m_w`); each
/// activation block is loaded once and multiplied with all `R` rows.
///
/// # Safety
/// AVX2/FMA/F16C present; `w` readable for `R` rows of `row_bytes`
/// (= `nb` blocks); activation rows `i0..i0+C` exist; `i0 % TILE_C == 0`
/// so `st[b*m4 + i0 .. +4]` lies inside each block's padded column.
#[inline]
#[allow(clippy::needless_range_loop)] // r and c index several arrays at once
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const F: u8, const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    a: &ActsView<'_>,
    i0: usize,
) -> Tile {
    let bs = block_bytes(F);
    let nb = a.nb;
    let ones = _mm256_set1_epi16(1);
    let neg_off = _mm_set1_ps(-code_offset(F));
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut accm = [_mm_setzero_ps(); R];
    let qs = a.qs.as_ptr();
    let ds = a.ds.as_ptr();
    let st = a.st.as_ptr();
    if C == 1 {
        // Mat-vec: one activation row. Per block, the header pair of each
        // weight row times the activation pair gives `[d_w*d_x, m_w*s_x]` in
        // one multiply; lane 1 accumulates the m-term in `accm`.
        let row = qs.wrapping_add(i0 * nb);
        let rds = ds.wrapping_add(i0 * nb);
        // Q4_0/Q5_0: header lanes are [d_w, d_w]; scale the activation
        // pair to [d_x, -offset s_x]. Q4_1/Q5_1: [d_w, m_w] · [d_x, s_x].
        // Q8_0/IQ4_NL: lane 0 only.
        let xmul = if code_offset(F) != 0.0 {
            _mm_setr_ps(1.0, -code_offset(F), 0.0, 0.0)
        } else {
            _mm_setr_ps(1.0, 1.0, 0.0, 0.0)
        };
        // Software prefetch of the next tile (the R rows after these, which
        // are contiguous in memory), spread over the blocks: decode streams
        // weights from DRAM and the hardware prefetcher alone left a 2.5x gap
        // to the streaming-read bandwidth on the 49152 x 576 output matrix.
        // Prefetches never fault, and the address is only formed with
        // wrapping arithmetic, so running past the end of `w` is harmless.
        let ahead = w.wrapping_add(R * row_bytes);
        for b in 0..nb {
            let q = ahead.wrapping_add(b * R * bs);
            _mm_prefetch::<_MM_HINT_T0>(q.cast());
            _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(64).cast());
            if R * bs > 128 {
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(128).cast());
            }
            // SAFETY: row i0 < m and block b < nb: inside qs/ds (caller's bound).
            let (xq, xds) = unsafe {
                (
                    _mm256_loadu_si256(row.add(b).cast()),
                    _mm_castpd_ps(_mm_load_sd(rds.add(b).cast())),
                )
            };
            let xds = _mm_mul_ps(xds, xmul);
            for r in 0..R {
                // SAFETY: block b of row r lies inside w (caller's bound); every
                // block holds >= 4 header bytes and its codes after them.
                let (h, wv) = unsafe {
                    let p = w.add(r * row_bytes + b * bs);
                    let h = if stored_min(F) {
                        half2(p)
                    } else {
                        _mm_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(p.cast::<i16>())))
                    };
                    (h, codes::<F>(p))
                };
                let prod = _mm_mul_ps(h, xds);
                if !signed_codes(F) {
                    accm[r] = _mm_add_ps(accm[r], prod);
                }
                let p16 = if signed_codes(F) {
                    _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xq, wv))
                } else {
                    _mm256_maddubs_epi16(wv, xq)
                };
                let p32 = _mm256_madd_epi16(p16, ones);
                acc[r][0] = _mm256_fmadd_ps(
                    _mm256_cvtepi32_ps(p32),
                    _mm256_broadcastss_ps(prod),
                    acc[r][0],
                );
            }
        }
        let mut out = [[0.0f32; TILE_C]; TILE_R];
        for r in 0..R {
            let mut m = [0.0f32; 4];
            // SAFETY: m is 4 f32.
            unsafe { _mm_storeu_ps(m.as_mut_ptr(), accm[r]) };
            out[r][0] = hsum(acc[r][0]) + if signed_codes(F) { 0.0 } else { m[1] };
        }
        return out;
    }
    for b in 0..nb {
        let mut wq = [_mm256_setzero_si256(); R];
        let mut dw = [_mm256_setzero_ps(); R];
        let mut mw = [_mm_setzero_ps(); R];
        for r in 0..R {
            // SAFETY: block b of row r lies inside w (caller's bound).
            let p = unsafe { w.add(r * row_bytes + b * bs) };
            // SAFETY: every block holds >= 4 header bytes and its codes after them.
            unsafe {
                let h = half2(p);
                dw[r] = _mm256_broadcastss_ps(h);
                mw[r] = if stored_min(F) {
                    _mm_permute_ps::<0b01_01_01_01>(h)
                } else {
                    _mm_mul_ps(neg_off, _mm_broadcastss_ps(h))
                };
                wq[r] = codes::<F>(p);
            }
        }
        if !signed_codes(F) {
            // SAFETY: b*m4 + i0 + 4 <= nb*m4 because i0 + 4 <= m4 (i0 % 4 == 0, i0 < m).
            let s4 = unsafe { _mm_loadu_ps(st.add(b * a.m4 + i0)) };
            for r in 0..R {
                accm[r] = _mm_fmadd_ps(mw[r], s4, accm[r]);
            }
        }
        for c in 0..C {
            let idx = (i0 + c) * nb + b;
            // SAFETY: row i0+c < m, block b < nb: idx < m*nb = qs.len() = ds.len() (in use).
            let (xq, dx) = unsafe {
                (
                    _mm256_loadu_si256(qs.add(idx).cast()),
                    _mm256_broadcast_ss(&(*ds.add(idx))[0]),
                )
            };
            for r in 0..R {
                let p16 = if signed_codes(F) {
                    _mm256_maddubs_epi16(
                        _mm256_sign_epi8(wq[r], wq[r]),
                        _mm256_sign_epi8(xq, wq[r]),
                    )
                } else {
                    _mm256_maddubs_epi16(wq[r], xq)
                };
                let p32 = _mm256_madd_epi16(p16, ones);
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p32), _mm256_mul_ps(dw[r], dx), acc[r][c]);
            }
        }
    }
    let mut out = [[0.0f32; TILE_C]; TILE_R];
    for r in 0..R {
        let mut m = [0.0f32; 4];
        // SAFETY: m is 4 f32.
        unsafe { _mm_storeu_ps(m.as_mut_ptr(), accm[r]) };
        for c in 0..C {
            out[r][c] = hsum(acc[r][c]) + m[c];
        }
    }
    out
}

/// Monomorphised kernel for format `F`, chosen by tile shape.
///
/// # Safety
/// As [`tile`], for `t.nr` rows and `t.nc` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_f<const F: u8>(w: *const u8, rb: usize, a: &ActsView<'_>, t: TileSpec) -> Tile {
    let i0 = t.i0;
    // SAFETY: forwarded caller contract; shapes match (nr, nc).
    unsafe {
        match (t.nr, t.nc) {
            (1, 1) => tile::<F, 1, 1>(w, rb, a, i0),
            (2, 1) => tile::<F, 2, 1>(w, rb, a, i0),
            (3, 1) => tile::<F, 3, 1>(w, rb, a, i0),
            (4, 1) => tile::<F, 4, 1>(w, rb, a, i0),
            (1, 2) => tile::<F, 1, 2>(w, rb, a, i0),
            (2, 2) => tile::<F, 2, 2>(w, rb, a, i0),
            (3, 2) => tile::<F, 3, 2>(w, rb, a, i0),
            (4, 2) => tile::<F, 4, 2>(w, rb, a, i0),
            (1, 3) => tile::<F, 1, 3>(w, rb, a, i0),
            (2, 3) => tile::<F, 2, 3>(w, rb, a, i0),
            (3, 3) => tile::<F, 3, 3>(w, rb, a, i0),
            (4, 3) => tile::<F, 4, 3>(w, rb, a, i0),
            (1, 4) => tile::<F, 1, 4>(w, rb, a, i0),
            (2, 4) => tile::<F, 2, 4>(w, rb, a, i0),
            (3, 4) => tile::<F, 3, 4>(w, rb, a, i0),
            _ => tile::<F, 4, 4>(w, rb, a, i0),
        }
    }
}

/// Dispatch on the weight format.
///
/// # Safety
/// AVX2/FMA/F16C present; bounds as checked by `mod.rs::dot_tile`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_tile(
    f: QFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &Q8Acts,
    t: TileSpec,
) -> Tile {
    let a = acts.view();
    let p = w.as_ptr();
    // SAFETY: forwarded caller contract.
    unsafe {
        match f {
            QFormat::Q4_0 => tile_f::<F_Q4_0>(p, row_bytes, &a, t),
            QFormat::Q4_1 => tile_f::<F_Q4_1>(p, row_bytes, &a, t),
            QFormat::Q8_0 => tile_f::<F_Q8_0>(p, row_bytes, &a, t),
            QFormat::Q5_0 => tile_f::<F_Q5_0>(p, row_bytes, &a, t),
            QFormat::Q5_1 => tile_f::<F_Q5_1>(p, row_bytes, &a, t),
            QFormat::IQ4_NL => tile_f::<F_IQ4_NL>(p, row_bytes, &a, t),
            // Q8_K formats never reach this kernel (mod.rs routes them to
            // `avx2_k`); an empty tile keeps this total.
            _ => [[0.0; TILE_C]; TILE_R],
        }
    }
}
