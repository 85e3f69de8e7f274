//! IQ2_XXS, IQ2_XS, IQ3_XXS and IQ3_S weights against Q8_K activations
//! (spec: `kiln_core::quant::iq23`, reference `vec_dot_iq*_q8_K_ref`).
//!
//! Per weight block the tile decodes once, with kiln-core's decoder
//! ([`IqBlock::packed`]: grid rows as bytes, sign bits, the odd half
//! multipliers; the portable path expands them with [`IqBlock::sub_block`]),
//! then for every activation row of the tile takes the integer sum
//! `isum = sum_h mult_h * sum_{j in h} v_j q_j` (exact, as
//! `Q8KDot::int_dot`) and adds `d_x * (d_w * isum)` in f32 with
//! `d_w = d * DOT_SCALE`. The integer sum is portable Rust or, with AVX2
//! detected at run time, sign bits expanded by a byte shuffle, then
//! `vpmaddubsw` + `vpmaddwd`; both give the same integer, so the two paths
//! agree bit for bit (tested).

use super::{Q8KActs, QFormat, Tile, TileSpec, TILE_C, TILE_R};
use crate::CpuFeatures;
use kiln_core::quant::iq23::Packed;
use kiln_core::quant::{BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS, IqBlock, QK_K};

/// One weight block decoded once per tile: the packed sub-blocks (grid
/// bytes, sign bits, multipliers; the AVX2 path) or the 256 signed values
/// and 16 half multipliers (the portable path).
enum Decoded {
    Packed([Packed; QK_K / 32]),
    Values { v: [i8; QK_K], mult: [i16; 16] },
}

fn decode<B: IqBlock>(avx2: bool, b: &B) -> Decoded {
    if avx2 {
        return Decoded::Packed(std::array::from_fn(|ib| b.packed(ib)));
    }
    let (mut v, mut mult) = ([0i8; QK_K], [0i16; 16]);
    for ib in 0..QK_K / 32 {
        let sb = b.sub_block(ib);
        v[32 * ib..32 * ib + 32].copy_from_slice(&sb.v);
        // Multipliers are 2 ls + 1 <= 31: exact in i16.
        mult[2 * ib] = sb.mult[0] as i16;
        mult[2 * ib + 1] = sb.mult[1] as i16;
    }
    Decoded::Values { v, mult }
}

/// Portable integer sum of a decoded block against 256 activation codes.
fn isum_scalar(v: &[i8; QK_K], mult: &[i16; 16], q: &[i8; QK_K]) -> i32 {
    let mut isum = 0i32;
    for (h, (v, x)) in v.chunks_exact(16).zip(q.chunks_exact(16)).enumerate() {
        let s: i32 = v
            .iter()
            .zip(x)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        isum += i32::from(mult[h]) * s;
    }
    isum
}

/// AVX2 integer sum from the packed sub-blocks: per 32 codes the grid
/// magnitudes (4 x 8 bytes) times the codes negated where the sign bit is
/// set, in byte pairs (`vpmaddubsw`, at most `2 * 62 * 127`), times the
/// half multipliers in i16 pairs (`vpmaddwd`, at most `2 * 15748 * 31`),
/// summed in i32 lanes. Codes are in [-127, 127] (Q8_K), so negation is exact.
///
/// # Safety
/// AVX2 must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn isum_avx2(p: &[Packed; QK_K / 32], q: &[i8; QK_K]) -> i32 {
    use std::arch::x86_64::*;
    // Sign byte l of the 32-bit word to bytes 8l..8l+8, then one bit each.
    let shuf = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let mut acc = _mm256_setzero_si256();
    for (ib, pk) in p.iter().enumerate() {
        let [g0, g1, g2, g3] = pk.grid.map(|g| g as i64);
        let v = _mm256_setr_epi64x(g0, g1, g2, g3);
        let sb = _mm256_shuffle_epi8(_mm256_set1_epi32(pk.signs as i32), shuf);
        let neg = _mm256_cmpeq_epi8(_mm256_and_si256(sb, bits), bits);
        // SAFETY: 32 bytes at 32 * ib of a 256-byte array (ib < 8), unaligned load.
        let x = unsafe { _mm256_loadu_si256(q.as_ptr().add(32 * ib).cast()) };
        let xs = _mm256_sub_epi8(_mm256_xor_si256(x, neg), neg);
        let p16 = _mm256_maddubs_epi16(v, xs);
        // Multipliers are 2 ls + 1 <= 31: exact in i16.
        let m = _mm256_setr_m128i(
            _mm_set1_epi16(pk.mult[0] as i16),
            _mm_set1_epi16(pk.mult[1] as i16),
        );
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p16, m));
    }
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    _mm_cvtsi128_si32(s)
}

fn isum(d: &Decoded, q: &[i8; QK_K]) -> i32 {
    match d {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: Decoded::Packed is made only when AVX2 was detected at
        // run time (`dot_tile`, CpuFeatures).
        Decoded::Packed(p) => unsafe { isum_avx2(p, q) },
        // Not made on other targets (`decode` packs only with AVX2); kept
        // correct anyway.
        #[cfg(not(target_arch = "x86_64"))]
        Decoded::Packed(p) => p
            .iter()
            .zip(q.chunks_exact(32))
            .map(|(pk, x)| {
                let v = |i: usize| {
                    let g = i32::from((pk.grid[i / 8] >> (8 * (i % 8))) as u8);
                    if pk.signs & (1 << i) != 0 {
                        -g
                    } else {
                        g
                    }
                };
                (0..32)
                    .map(|i| pk.mult[i / 16] * v(i) * i32::from(x[i]))
                    .sum::<i32>()
            })
            .sum(),
        Decoded::Values { v, mult } => isum_scalar(v, mult, q),
    }
}

fn tile<B: IqBlock>(avx2: bool, w: &[u8], row_bytes: usize, acts: &Q8KActs, t: TileSpec) -> Tile {
    let bs = std::mem::size_of::<B>();
    let mut out = [[0.0f32; TILE_C]; TILE_R];
    for (r, out_r) in out.iter_mut().enumerate().take(t.nr) {
        let row = w.get(r * row_bytes..(r + 1) * row_bytes).unwrap_or(&[]);
        for (b, chunk) in row.chunks_exact(bs).enumerate() {
            let blk: B = bytemuck::pod_read_unaligned(chunk);
            let dw = blk.d().to_f32() * B::DOT_SCALE;
            let dec = decode(avx2, &blk);
            for (c, o) in out_r.iter_mut().enumerate().take(t.nc) {
                let Some(x) = acts.block(t.i0 + c, b) else {
                    continue;
                };
                *o += x.d * (dw * isum(&dec, &x.qs) as f32);
            }
        }
    }
    out
}

/// One tile of an i-quant format (`f.is_iq23()`); bounds are checked by
/// the caller (`kquant.rs::dot_tile_k`), slicing here stays checked.
pub(super) fn dot_tile(
    features: CpuFeatures,
    f: QFormat,
    w: &[u8],
    row_bytes: usize,
    acts: &Q8KActs,
    t: TileSpec,
) -> Tile {
    let avx2 = cfg!(target_arch = "x86_64") && features.has_avx2_fma();
    match f {
        QFormat::IQ2_XXS => tile::<BlockIQ2XXS>(avx2, w, row_bytes, acts, t),
        QFormat::IQ2_XS => tile::<BlockIQ2XS>(avx2, w, row_bytes, acts, t),
        QFormat::IQ3_XXS => tile::<BlockIQ3XXS>(avx2, w, row_bytes, acts, t),
        QFormat::IQ3_S => tile::<BlockIQ3S>(avx2, w, row_bytes, acts, t),
        // Other formats never reach here (kquant.rs routes them).
        _ => [[0.0; TILE_C]; TILE_R],
    }
}
