//! IQ2_XXS, IQ2_XS, IQ3_XXS and IQ3_S weights against Q8_K activations
//! (spec: `kiln_core::quant::iq23`, reference `vec_dot_iq*_q8_K_ref`).
//!
//! Per weight block the tile decodes once, with kiln-core's reference
//! decoder ([`IqBlock::sub_block`]), the 256 signed grid values and the 16
//! odd half-sub-block multipliers, then for every activation row of the
//! tile takes the integer sum `isum = sum_h mult_h * sum_{j in h} v_j q_j`
//! (exact, as `Q8KDot::int_dot`) and adds `d_x * (d_w * isum)` in f32 with
//! `d_w = d * DOT_SCALE`. The integer sum is portable Rust or, with AVX2
//! detected at run time, `vpsignb` + `vpmaddubsw` + `vpmaddwd`; both give
//! the same integer, so the two paths agree bit for bit (tested).

use super::{Q8KActs, QFormat, Tile, TileSpec, TILE_C, TILE_R};
use crate::CpuFeatures;
use kiln_core::quant::{BlockIQ2XS, BlockIQ2XXS, BlockIQ3S, BlockIQ3XXS, IqBlock, QK_K};

/// One weight block decoded: signed grid values and half multipliers.
struct Decoded {
    v: [i8; QK_K],
    mult: [i16; 16],
}

fn decode<B: IqBlock>(b: &B) -> Decoded {
    let mut d = Decoded {
        v: [0; QK_K],
        mult: [0; 16],
    };
    for ib in 0..QK_K / 32 {
        let sb = b.sub_block(ib);
        d.v[32 * ib..32 * ib + 32].copy_from_slice(&sb.v);
        // Multipliers are 2 ls + 1 <= 31: exact in i16.
        d.mult[2 * ib] = sb.mult[0] as i16;
        d.mult[2 * ib + 1] = sb.mult[1] as i16;
    }
    d
}

/// Portable integer sum of a decoded block against 256 activation codes.
fn isum_scalar(d: &Decoded, q: &[i8; QK_K]) -> i32 {
    let mut isum = 0i32;
    for (h, (v, x)) in d.v.chunks_exact(16).zip(q.chunks_exact(16)).enumerate() {
        let s: i32 = v
            .iter()
            .zip(x)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        isum += i32::from(d.mult[h]) * s;
    }
    isum
}

/// AVX2 integer sum: per 32 codes `|v| * (q * sign v)` in byte pairs
/// (`vpmaddubsw`, at most `2 * 62 * 127`), times the half multipliers in
/// i16 pairs (`vpmaddwd`, at most `2 * 15748 * 31`), summed in i32 lanes.
///
/// # Safety
/// AVX2 must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn isum_avx2(d: &Decoded, q: &[i8; QK_K]) -> i32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_si256();
    for ib in 0..QK_K / 32 {
        // SAFETY: 32 bytes at 32 * ib of two 256-byte arrays (ib < 8);
        // unaligned loads.
        let (v, x) = unsafe {
            (
                _mm256_loadu_si256(d.v.as_ptr().add(32 * ib).cast()),
                _mm256_loadu_si256(q.as_ptr().add(32 * ib).cast()),
            )
        };
        let p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(v, v), _mm256_sign_epi8(x, v));
        let m = _mm256_setr_m128i(
            _mm_set1_epi16(d.mult[2 * ib]),
            _mm_set1_epi16(d.mult[2 * ib + 1]),
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

fn isum(avx2: bool, d: &Decoded, q: &[i8; QK_K]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the caller passes avx2 = true only when it was detected
        // at run time (CpuFeatures).
        return unsafe { isum_avx2(d, q) };
    }
    let _ = avx2;
    isum_scalar(d, q)
}

fn tile<B: IqBlock>(avx2: bool, w: &[u8], row_bytes: usize, acts: &Q8KActs, t: TileSpec) -> Tile {
    let bs = std::mem::size_of::<B>();
    let mut out = [[0.0f32; TILE_C]; TILE_R];
    for (r, out_r) in out.iter_mut().enumerate().take(t.nr) {
        let row = w.get(r * row_bytes..(r + 1) * row_bytes).unwrap_or(&[]);
        for (b, chunk) in row.chunks_exact(bs).enumerate() {
            let blk: B = bytemuck::pod_read_unaligned(chunk);
            let dw = blk.d().to_f32() * B::DOT_SCALE;
            let dec = decode(&blk);
            for (c, o) in out_r.iter_mut().enumerate().take(t.nc) {
                let Some(x) = acts.block(t.i0 + c, b) else {
                    continue;
                };
                *o += x.d * (dw * isum(avx2, &dec, &x.qs) as f32);
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
