//! AVX2 + FMA + F16C kernels for the super-block formats against Q8_K
//! activations (see `kquant.rs` for the formulas).
//!
//! Per block pair the integer sum `isum` is built in 8 i32 lanes: codes
//! (unsigned where the format allows, else signed through the `vpsignb`
//! trick) times activation codes with `vpmaddubsw` (pairs to i16, no
//! saturation: at most `2 * 63 * 127` for Q6_K's unsigned 6-bit codes,
//! `2 * 127 * 127` for IQ4_XS), then `vpmaddwd` with the sub-block scale
//! broadcast as i16 (pairs to i32, sub-block scale applied exactly). Code
//! offsets (Q3_K's -4, Q6_K's -32) are subtracted in the integer domain
//! through the activation's `bsums`, so each lane holds an exact signed
//! sum. The lanes are converted to f32 once per block and accumulated with
//! one FMA by `d_w * d_x`; the min term `d_x * dmin_w * msum` (Q2_K, Q4_K,
//! Q5_K: mins times `bsums` pairs, 8 i32 lanes) is accumulated the same way
//! in a second vector. Sub-block scales are widened to i16 once per block
//! and broadcast per sub-block with one `vpshufb`.
//!
//! Every function here is `unsafe`: callers (`kquant.rs::dot_tile_k`)
//! guarantee that the CPU has AVX2/FMA/F16C and that all bounds hold.

use super::avx2::{hsum, iq4_grid, nibbles};
use super::{Q8KActs, QFormat, Tile, TileSpec, TILE_C, TILE_R};
use kiln_core::quant::BlockQ8K;
use std::arch::x86_64::*;

const F_Q2_K: u8 = 0;
const F_Q3_K: u8 = 1;
const F_Q4_K: u8 = 2;
const F_Q5_K: u8 = 3;
const F_Q6_K: u8 = 4;
const F_IQ4_XS: u8 = 5;

const fn block_bytes(f: u8) -> usize {
    match f {
        F_Q2_K => 84,
        F_Q3_K => 110,
        F_Q4_K => 144,
        F_Q5_K => 176,
        F_Q6_K => 210,
        _ => 136,
    }
}

/// Offsets of the f16 `d` and `dmin` (or `usize::MAX`: no min).
const fn header(f: u8) -> (usize, usize) {
    match f {
        F_Q2_K => (80, 82),
        F_Q3_K => (108, usize::MAX),
        F_Q4_K | F_Q5_K => (0, 2),
        F_Q6_K => (208, usize::MAX),
        _ => (0, usize::MAX),
    }
}

/// `vpshufb` controls broadcasting i16 lane `j` of a 128-bit half to all
/// 8 lanes of both halves (`SHUF_ONE[j]`).
static SHUF_ONE: [[u8; 32]; 8] = {
    let mut t = [[0u8; 32]; 8];
    let mut j = 0;
    while j < 8 {
        let mut b = 0;
        while b < 32 {
            t[j][b] = (2 * j + b % 2) as u8;
            b += 1;
        }
        j += 1;
    }
    t
};

/// `vpshufb` controls giving i16 lane `2g` in the low half and `2g + 1` in
/// the high half (`SHUF_PAIR[g]`, g < 4): the scales of the two 16-element
/// sub-blocks of a 32-element group.
static SHUF_PAIR: [[u8; 32]; 4] = {
    let mut t = [[0u8; 32]; 4];
    let mut g = 0;
    while g < 4 {
        let mut b = 0;
        while b < 32 {
            let lane = 2 * g + b / 16;
            t[g][b] = (2 * lane + b % 2) as u8;
            b += 1;
        }
        g += 1;
    }
    t
};

/// Eight i16 scales (from 8 bytes, sign- or zero-extended by the caller)
/// in both 128-bit halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast8(v: __m128i) -> __m256i {
    _mm256_broadcastsi128_si256(v)
}

/// `v` shuffled by the 32-byte control `c`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn shuf(v: __m256i, c: &[u8; 32]) -> __m256i {
    // SAFETY: c is 32 bytes; unaligned load.
    _mm256_shuffle_epi8(v, unsafe { _mm256_loadu_si256(c.as_ptr().cast()) })
}

/// The i16 scales of 32-element group `g` (sub-blocks `2g`, `2g + 1`)
/// from `lo` / `hi` = sub-block scales 0..8 / 8..16 in both halves.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group_scales(lo: __m256i, hi: __m256i, g: usize) -> __m256i {
    shuf(if g < 4 { lo } else { hi }, &SHUF_PAIR[g % 4])
}

/// `sum_pairs(codes * x) * scales`, to i32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_scaled(codes_u: __m256i, x: __m256i, scales: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(codes_u, x), scales)
}

/// Q4_K / Q5_K's 12 packed bytes → (8 scales, 8 mins) as little-endian u64
/// bytes (the unpacking of `kiln_core::quant::unpack_scale_min_k4` on three
/// 32-bit words: scales/mins 0..4 are the low 6 bits of bytes 0..4 / 4..8;
/// 4..8 take their low nibbles from bytes 8..12 and their top 2 bits from
/// bits 6..8 of bytes 0..4 / 4..8).
#[inline]
fn scales_k4(s: &[u8; 12]) -> (u64, u64) {
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (s0, s1, s2) = (w(0), w(1), w(2));
    let sc_lo = s0 & 0x3f3f_3f3f;
    let m_lo = s1 & 0x3f3f_3f3f;
    let sc_hi = (s2 & 0x0f0f_0f0f) | ((s0 >> 2) & 0x3030_3030);
    let m_hi = ((s2 >> 4) & 0x0f0f_0f0f) | ((s1 >> 2) & 0x3030_3030);
    (
        u64::from(sc_lo) | (u64::from(sc_hi) << 32),
        u64::from(m_lo) | (u64::from(m_hi) << 32),
    )
}

/// 8 i32 lanes summing to `sum_s m_s * (bsums[2s] + bsums[2s+1])` for
/// 8 mins packed in `mins`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn msum_8(mins: u64, bsums: __m256i) -> __m256i {
    let m = _mm_cvtsi64_si128(mins as i64);
    let dup = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m));
    _mm256_madd_epi16(bsums, dup)
}

/// Q3_K's 16 scales minus 32 (i8), from its 12 packed bytes via three
/// 32-bit words: low nibbles of scales 0..8 / 8..16 are the low / high
/// nibbles of bytes 0..8, the top 2 bits come from bytes 8..12, shifted
/// by 2 per group of 4 scales (as `kiln_core`'s Q3_K unpacking).
#[inline]
fn scales_q3k(s: &[u8; 12]) -> [u8; 16] {
    let w = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (a0, a1, a2) = (w(0), w(1), w(2));
    let (lo, hi) = (0x0f0f_0f0fu32, 0x0303_0303u32);
    let words = [
        (a0 & lo) | ((a2 & hi) << 4),
        (a1 & lo) | (((a2 >> 2) & hi) << 4),
        ((a0 >> 4) & lo) | (((a2 >> 4) & hi) << 4),
        ((a1 >> 4) & lo) | (((a2 >> 6) & hi) << 4),
    ];
    let mut out = [0u8; 16];
    for (o, wd) in out.chunks_exact_mut(4).zip(words) {
        // Each byte is 0..=63; subtracting 32 bytewise cannot borrow across
        // bytes when done per byte (wrapping to the i8 value).
        for (b, v) in o.iter_mut().zip(wd.to_le_bytes()) {
            *b = v.wrapping_sub(32);
        }
    }
    out
}

/// Integer sums of one weight super-block at `p` against `x`: 8 i32 lanes
/// summing to `isum`, and 8 summing to `msum` (zero for formats without mins).
///
/// # Safety
/// AVX2/FMA/F16C present; `p` readable for one block of format `F`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block<const F: u8>(p: *const u8, x: &BlockQ8K) -> (__m256i, __m256i) {
    let xq = x.qs.as_ptr();
    let m4 = _mm256_set1_epi8(0x0f);
    // SAFETY (whole body): `p` is readable for the block (caller) and every
    // offset below lies inside it; `xq` points to 256 codes, `bsums` to 32 bytes.
    unsafe {
        let bsums = _mm256_loadu_si256(x.bsums.as_ptr().cast::<__m256i>());
        let mut acc = _mm256_setzero_si256();
        match F {
            F_Q4_K | F_Q5_K => {
                let sc: [u8; 12] = std::ptr::read_unaligned(p.add(4).cast());
                let (sc, mins) = scales_k4(&sc);
                let scv = bcast8(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(sc as i64)));
                let (qs, hbits) = if F == F_Q5_K {
                    (48, load(p, 16))
                } else {
                    (16, _mm256_setzero_si256())
                };
                for c in 0..4 {
                    let q = load(p, qs + 32 * c);
                    let mut lo = _mm256_and_si256(q, m4);
                    let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                    if F == F_Q5_K {
                        let b0 = _mm256_set1_epi8((1u8 << (2 * c)) as i8);
                        let b1 = _mm256_set1_epi8((1u8 << (2 * c + 1)) as i8);
                        let h16 = _mm256_set1_epi8(0x10);
                        let set0 = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, b0), b0);
                        let set1 = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, b1), b1);
                        lo = _mm256_or_si256(lo, _mm256_and_si256(set0, h16));
                        hi = _mm256_or_si256(hi, _mm256_and_si256(set1, h16));
                    }
                    let s0 = shuf(scv, &SHUF_ONE[2 * c]);
                    let s1 = shuf(scv, &SHUF_ONE[2 * c + 1]);
                    acc = _mm256_add_epi32(acc, mul_scaled(lo, load(xq.cast(), 64 * c), s0));
                    acc = _mm256_add_epi32(acc, mul_scaled(hi, load(xq.cast(), 64 * c + 32), s1));
                }
                (acc, msum_8(mins, bsums))
            }
            F_Q6_K => {
                let sc: [i8; 16] = std::ptr::read_unaligned(p.add(192).cast());
                let sc8 = _mm_loadu_si128(sc.as_ptr().cast());
                let sc16 = _mm256_cvtepi8_epi16(sc8);
                let (slo, shi) = (
                    bcast8(_mm_cvtepi8_epi16(sc8)),
                    bcast8(_mm_cvtepi8_epi16(_mm_unpackhi_epi64(sc8, sc8))),
                );
                let m3 = _mm256_set1_epi8(3);
                for h in 0..2 {
                    let a = load(p, 64 * h);
                    let b = load(p, 64 * h + 32);
                    let qh = load(p, 128 + 32 * h);
                    for s in 0..4 {
                        let lo = match s {
                            0 => _mm256_and_si256(a, m4),
                            1 => _mm256_and_si256(b, m4),
                            2 => _mm256_and_si256(_mm256_srli_epi16::<4>(a), m4),
                            _ => _mm256_and_si256(_mm256_srli_epi16::<4>(b), m4),
                        };
                        let cnt = _mm_cvtsi32_si128(2 * s as i32);
                        let hi = _mm256_and_si256(_mm256_srl_epi16(qh, cnt), m3);
                        let q = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(hi));
                        let g = 4 * h + s;
                        let scv = group_scales(slo, shi, g);
                        acc = _mm256_add_epi32(acc, mul_scaled(q, load(xq.cast(), 32 * g), scv));
                    }
                }
                // Codes were unsigned (q + 32): subtract 32 * sum_s sc_s * bsum_s.
                let corr = _mm256_madd_epi16(bsums, sc16);
                (
                    _mm256_sub_epi32(acc, _mm256_slli_epi32::<5>(corr)),
                    _mm256_setzero_si256(),
                )
            }
            F_Q2_K => {
                let sm = _mm_loadu_si128(p.cast());
                let m4x = _mm_set1_epi8(0x0f);
                let mins16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16::<4>(sm), m4x));
                let sc8 = _mm_and_si128(sm, m4x);
                let (slo, shi) = (
                    bcast8(_mm_cvtepu8_epi16(sc8)),
                    bcast8(_mm_cvtepu8_epi16(_mm_unpackhi_epi64(sc8, sc8))),
                );
                let m3 = _mm256_set1_epi8(3);
                for h in 0..2 {
                    let q = load(p, 16 + 32 * h);
                    for s in 0..4 {
                        let cnt = _mm_cvtsi32_si128(2 * s as i32);
                        let c = _mm256_and_si256(_mm256_srl_epi16(q, cnt), m3);
                        let g = 4 * h + s;
                        let scv = group_scales(slo, shi, g);
                        acc = _mm256_add_epi32(acc, mul_scaled(c, load(xq.cast(), 32 * g), scv));
                    }
                }
                (acc, _mm256_madd_epi16(bsums, mins16))
            }
            F_Q3_K => {
                let packed: [u8; 12] = std::ptr::read_unaligned(p.add(96).cast());
                let sc = scales_q3k(&packed);
                let sc8 = _mm_loadu_si128(sc.as_ptr().cast());
                let sc16 = _mm256_cvtepi8_epi16(sc8);
                let (slo, shi) = (
                    bcast8(_mm_cvtepi8_epi16(sc8)),
                    bcast8(_mm_cvtepi8_epi16(_mm_unpackhi_epi64(sc8, sc8))),
                );
                let hm = load(p, 0);
                let m3 = _mm256_set1_epi8(3);
                let four = _mm256_set1_epi8(4);
                for h in 0..2 {
                    let q = load(p, 32 + 32 * h);
                    for s in 0..4 {
                        let g = 4 * h + s;
                        let cnt = _mm_cvtsi32_si128(2 * s as i32);
                        let c = _mm256_and_si256(_mm256_srl_epi16(q, cnt), m3);
                        let bit = _mm256_set1_epi8((1u8 << g) as i8);
                        let set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                        // u = code + 4*hbit in 0..=7 (the value is u - 4).
                        let u = _mm256_or_si256(c, _mm256_and_si256(set, four));
                        let scv = group_scales(slo, shi, g);
                        acc = _mm256_add_epi32(acc, mul_scaled(u, load(xq.cast(), 32 * g), scv));
                    }
                }
                let corr = _mm256_madd_epi16(bsums, sc16);
                (
                    _mm256_sub_epi32(acc, _mm256_slli_epi32::<2>(corr)),
                    _mm256_setzero_si256(),
                )
            }
            _ => {
                // IQ4_XS: signed grid values, |v| <= 127.
                let grid = iq4_grid();
                let sh = u32::from(std::ptr::read_unaligned(p.add(2).cast::<u16>()));
                let sl: [u8; 4] = std::ptr::read_unaligned(p.add(4).cast());
                for g in 0..8 {
                    let v = _mm256_shuffle_epi8(grid, nibbles(p.add(8 + 16 * g)));
                    let x8 = load(xq.cast(), 32 * g);
                    let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(x8, v));
                    let ls = ((sl[g / 2] >> (4 * (g % 2))) & 0x0f) as i16
                        | ((((sh >> (2 * g)) & 3) as i16) << 4);
                    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(ls - 32)));
                }
                (acc, _mm256_setzero_si256())
            }
        }
    }
}

/// 32 bytes at `p + o`.
///
/// # Safety
/// `p + o` readable for 32 bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load(p: *const u8, o: usize) -> __m256i {
    // SAFETY: caller's bound; unaligned load.
    unsafe { _mm256_loadu_si256(p.add(o).cast()) }
}

/// f16 at `p` widened to f32.
///
/// # Safety
/// `p` readable for 2 bytes; F16C present.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    // SAFETY: caller guarantees 2 readable bytes; unaligned read.
    let bits = unsafe { std::ptr::read_unaligned(p.cast::<u16>()) };
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
}

/// The tile kernel: `R` weight rows × `C` activation rows over all blocks.
///
/// # Safety
/// AVX2/FMA/F16C present; `w` readable for `R` rows of `row_bytes`
/// (= `nb` blocks); activation rows `i0..i0+C` exist in `x` (`nb` blocks each).
#[inline]
#[allow(clippy::needless_range_loop)] // r and c index several arrays at once
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile<const F: u8, const R: usize, const C: usize>(
    w: *const u8,
    row_bytes: usize,
    x: &[BlockQ8K],
    nb: usize,
    i0: usize,
) -> Tile {
    let bs = block_bytes(F);
    let (hd, hm) = header(F);
    let mut acc = [[_mm256_setzero_ps(); C]; R];
    let mut accm = [[_mm256_setzero_ps(); C]; R];
    let xp = x.as_ptr();
    // Software prefetch of the next tile's rows (R rows further on), one
    // block per step: mat-vec streams weights from DRAM. Prefetches never
    // fault and the address is formed with wrapping arithmetic.
    let ahead = w.wrapping_add(R * row_bytes);
    for b in 0..nb {
        if C == 1 {
            for r in 0..R {
                let q = ahead.wrapping_add(r * row_bytes + b * bs);
                let mut o = 0;
                while o < bs {
                    _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(o).cast());
                    o += 64;
                }
            }
        }
        for r in 0..R {
            // SAFETY: block b of row r lies inside w (caller's bound).
            let p = unsafe { w.add(r * row_bytes + b * bs) };
            // SAFETY: header offsets lie inside the block.
            let (dw, dmin) = unsafe {
                (
                    f16_at(p.add(hd)),
                    if hm == usize::MAX {
                        0.0
                    } else {
                        f16_at(p.add(hm))
                    },
                )
            };
            for c in 0..C {
                // SAFETY: row i0+c < m and b < nb: inside x (caller's bound).
                let xb = unsafe { &*xp.add((i0 + c) * nb + b) };
                // SAFETY: forwarded caller contract (block readable, features).
                let (iv, mv) = unsafe { block::<F>(p, xb) };
                acc[r][c] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(iv), _mm256_set1_ps(dw * xb.d), acc[r][c]);
                if hm != usize::MAX {
                    let dm = _mm256_set1_ps(dmin * xb.d);
                    accm[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mv), dm, accm[r][c]);
                }
            }
        }
    }
    let mut out = [[0.0f32; TILE_C]; TILE_R];
    for r in 0..R {
        for c in 0..C {
            out[r][c] = hsum(acc[r][c]) - hsum(accm[r][c]);
        }
    }
    out
}

/// Monomorphised kernel for format `F`, chosen by tile shape.
///
/// # Safety
/// As [`tile`], for `t.nr` rows and `t.nc` activation rows.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_f<const F: u8>(w: *const u8, rb: usize, a: &Q8KActs, t: TileSpec) -> Tile {
    let (x, nb, i0) = (a.all(), a.blocks_per_row(), t.i0);
    // SAFETY: forwarded caller contract; shapes match (nr, nc).
    unsafe {
        match (t.nr, t.nc) {
            (1, 1) => tile::<F, 1, 1>(w, rb, x, nb, i0),
            (2, 1) => tile::<F, 2, 1>(w, rb, x, nb, i0),
            (3, 1) => tile::<F, 3, 1>(w, rb, x, nb, i0),
            (4, 1) => tile::<F, 4, 1>(w, rb, x, nb, i0),
            (1, 2) => tile::<F, 1, 2>(w, rb, x, nb, i0),
            (2, 2) => tile::<F, 2, 2>(w, rb, x, nb, i0),
            (3, 2) => tile::<F, 3, 2>(w, rb, x, nb, i0),
            (4, 2) => tile::<F, 4, 2>(w, rb, x, nb, i0),
            (1, 3) => tile::<F, 1, 3>(w, rb, x, nb, i0),
            (2, 3) => tile::<F, 2, 3>(w, rb, x, nb, i0),
            (3, 3) => tile::<F, 3, 3>(w, rb, x, nb, i0),
            (4, 3) => tile::<F, 4, 3>(w, rb, x, nb, i0),
            (1, 4) => tile::<F, 1, 4>(w, rb, x, nb, i0),
            (2, 4) => tile::<F, 2, 4>(w, rb, x, nb, i0),
            (3, 4) => tile::<F, 3, 4>(w, rb, x, nb, i0),
            _ => tile::<F, 4, 4>(w, rb, x, nb, i0),
        }
    }
}

/// Dispatch on the weight format.
///
/// # Safety
/// AVX2/FMA/F16C present; bounds as checked by `kquant.rs::dot_tile_k`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_tile(
    f: QFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &Q8KActs,
    t: TileSpec,
) -> Tile {
    let p = w.as_ptr();
    // SAFETY: forwarded caller contract.
    unsafe {
        match f {
            QFormat::Q2_K => tile_f::<F_Q2_K>(p, row_bytes, acts, t),
            QFormat::Q3_K => tile_f::<F_Q3_K>(p, row_bytes, acts, t),
            QFormat::Q4_K => tile_f::<F_Q4_K>(p, row_bytes, acts, t),
            QFormat::Q5_K => tile_f::<F_Q5_K>(p, row_bytes, acts, t),
            QFormat::Q6_K => tile_f::<F_Q6_K>(p, row_bytes, acts, t),
            QFormat::IQ4_XS => tile_f::<F_IQ4_XS>(p, row_bytes, acts, t),
            // 32-element formats never reach this kernel (mod.rs routes them).
            _ => [[0.0; TILE_C]; TILE_R],
        }
    }
}

/// One Q8_K block of `x` (256 f32), bit-identical to the reference
/// `BlockQ8K::quantize`: the first element of largest |x| (sign kept) sets
/// `iscale = -127 / max`, codes are `round_ties_even(iscale * x)` clamped
/// to i8 (`vroundps` to nearest-even, then saturating packs), `bsums` are
/// the 16-element sums, `d = 1 / iscale`.
///
/// # Safety
/// AVX2/FMA/F16C present; `x` holds 256 f32.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn quantize_block_k(x: &[f32]) -> BlockQ8K {
    let p = x.as_ptr();
    let sign = _mm256_set1_ps(-0.0);
    let mut am = _mm256_setzero_ps();
    for i in 0..32 {
        // SAFETY: 8 f32 at 8i < 256.
        let v = unsafe { _mm256_loadu_ps(p.add(8 * i)) };
        // NaN lanes keep the running max (operand order), as the reference skips them.
        am = _mm256_max_ps(_mm256_andnot_ps(sign, v), am);
    }
    let m4 = _mm_max_ps(_mm256_castps256_ps128(am), _mm256_extractf128_ps::<1>(am));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
    let mut b = BlockQ8K {
        d: 0.0,
        qs: [0; 256],
        bsums: [0; 16],
    };
    // The reference keeps the first element whose |x| beats the running
    // maximum: the first one equal to amax. (amax is 0 for an all-zero or
    // all-NaN block: the reference returns zeros there too.)
    let Some(&max) = x[..256].iter().find(|v| v.abs() == amax) else {
        return b;
    };
    if amax == 0.0 {
        return b;
    }
    let iscale = -127.0 / max;
    let is = _mm256_set1_ps(iscale);
    let q = b.qs.as_mut_ptr();
    for i in 0..8 {
        // 32 codes: four vectors of 8, rounded to nearest-even, packed with
        // saturation to i16 then i8 (lane order fixed by the permute).
        let mut iv = [_mm256_setzero_si256(); 4];
        for (t, o) in iv.iter_mut().enumerate() {
            // SAFETY: 8 f32 at 32i + 8t < 256.
            let v = unsafe { _mm256_loadu_ps(p.add(32 * i + 8 * t)) };
            let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(v, is),
            );
            *o = _mm256_cvtps_epi32(r);
        }
        let p01 = _mm256_packs_epi32(iv[0], iv[1]);
        let p23 = _mm256_packs_epi32(iv[2], iv[3]);
        let perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let packed = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(p01, p23), perm);
        // SAFETY: 32 bytes at 32i < 256 of qs.
        unsafe { _mm256_storeu_si256(q.add(32 * i).cast(), packed) };
        // bsums of elements 32i..32i+16 and 32i+16..32i+32.
        let lo = _mm256_add_epi32(iv[0], iv[1]);
        let hi = _mm256_add_epi32(iv[2], iv[3]);
        let hs = |v: __m256i| {
            let s4 = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            let s2 = _mm_add_epi32(s4, _mm_shuffle_epi32::<0b01_00_11_10>(s4));
            let s1 = _mm_add_epi32(s2, _mm_shuffle_epi32::<0b10_11_00_01>(s2));
            _mm_cvtsi128_si32(s1)
        };
        // Codes lie in [-127, 127] (|iscale * x| <= 127), so the i32 sums
        // equal the saturated codes' sums and fit i16 (|sum| <= 16 * 127).
        b.bsums[2 * i] = hs(lo) as i16;
        b.bsums[2 * i + 1] = hs(hi) as i16;
    }
    b.d = 1.0 / iscale;
    b
}
