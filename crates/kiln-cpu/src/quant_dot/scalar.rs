//! Portable kernels: the same activation quantizer and tile dots as
//! `avx2.rs`, written as plain loops (integer block sums, f32 scaling). Used
//! when the CPU lacks AVX2/FMA/F16C and as the forced-scalar test path.

use super::{Q8Acts, QFormat, Tile, TileSpec, TILE_C, TILE_R};
use half::f16;
use kiln_core::quant::{KVALUES_IQ4NL, QK};

/// Quantize rows of 32-element blocks (GGML `quantize_row_q8_1_ref` codes,
/// f32 scale): `d = amax/127`, `q = round_half_away(x * (1/d))`, `s = d*sum(q)`.
pub(super) fn quantize_rows(x: &[f32], qs: &mut [[i8; QK]], ds: &mut [[f32; 2]]) {
    for ((xb, q), d) in x.chunks_exact(QK).zip(qs.iter_mut()).zip(ds.iter_mut()) {
        let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let dx = amax / 127.0;
        let id = if dx != 0.0 { 1.0 / dx } else { 0.0 };
        let mut isum = 0i32;
        for (o, v) in q.iter_mut().zip(xb) {
            // f32::round is C roundf; `as` saturates (NaN -> 0).
            *o = (v * id).round() as i8;
            isum += i32::from(*o);
        }
        *d = [dx, dx * isum as f32];
    }
}

#[inline]
fn f16_at(b: &[u8], off: usize) -> f32 {
    match b.get(off..off + 2) {
        Some(h) => f16::from_le_bytes([h[0], h[1]]).to_f32(),
        None => 0.0,
    }
}

/// Integer dot of one weight block's 32 codes (as i32, in element order)
/// with one activation block.
#[inline]
fn isum(wq: &[i32; QK], xq: &[i8; QK]) -> i32 {
    wq.iter().zip(xq).map(|(&a, &b)| a * i32::from(b)).sum()
}

/// Unpack 16 bytes of nibbles (low = elements 0..16, high = 16..32).
fn nibbles(qs: &[u8], wq: &mut [i32; QK]) {
    for (j, &byte) in qs.iter().take(QK / 2).enumerate() {
        wq[j] = i32::from(byte & 0x0f);
        wq[j + QK / 2] = i32::from(byte >> 4);
    }
}

/// Add the fifth bits (bit `j` of the little-endian u32 at `qh`) as 16.
fn high_bits(qh: &[u8], wq: &mut [i32; QK]) {
    let h = match qh.get(..4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    };
    for (j, q) in wq.iter_mut().enumerate() {
        *q |= (((h >> j) & 1) as i32) << 4;
    }
}

/// Decode one weight block: codes in element order, `d_w`, `m_w`
/// (`m_w = -8 d_w` for Q4_0 and `-16 d_w` for Q5_0 so the codes stay
/// unsigned; 0 for the signed-code formats Q8_0 and IQ4_NL).
fn decode(f: QFormat, blk: &[u8], wq: &mut [i32; QK]) -> (f32, f32) {
    let d = f16_at(blk, 0);
    match f {
        QFormat::Q5_0 => {
            nibbles(blk.get(6..).unwrap_or(&[]), wq);
            high_bits(blk.get(2..).unwrap_or(&[]), wq);
            (d, -16.0 * d)
        }
        QFormat::Q5_1 => {
            nibbles(blk.get(8..).unwrap_or(&[]), wq);
            high_bits(blk.get(4..).unwrap_or(&[]), wq);
            (d, f16_at(blk, 2))
        }
        QFormat::IQ4_NL => {
            nibbles(blk.get(2..).unwrap_or(&[]), wq);
            for q in wq.iter_mut() {
                *q = i32::from(KVALUES_IQ4NL[(*q & 0x0f) as usize]);
            }
            (d, 0.0)
        }
        QFormat::Q4_0 | QFormat::Q4_1 => {
            let (m, off) = if f == QFormat::Q4_1 {
                (f16_at(blk, 2), 4)
            } else {
                (-8.0 * d, 2)
            };
            for (j, &byte) in blk.iter().skip(off).take(QK / 2).enumerate() {
                wq[j] = i32::from(byte & 0x0f);
                wq[j + QK / 2] = i32::from(byte >> 4);
            }
            (d, m)
        }
        QFormat::Q8_0 => {
            for (o, &byte) in wq.iter_mut().zip(blk.iter().skip(2)) {
                *o = i32::from(byte as i8);
            }
            (d, 0.0)
        }
        // Q8_K formats are computed by `kquant.rs`, never decoded here.
        _ => (0.0, 0.0),
    }
}

/// One tile, bounds already checked by `mod.rs::dot_tile` (slicing here is
/// still checked, so a violated bound would only yield zeros, never UB).
pub(super) fn dot_tile(f: QFormat, w: &[u8], row_bytes: usize, acts: &Q8Acts, t: TileSpec) -> Tile {
    let a = acts.view();
    let bs = f.block_bytes();
    let mut out = [[0.0f32; TILE_C]; TILE_R];
    let mut wq = [0i32; QK];
    for (r, out_r) in out.iter_mut().enumerate().take(t.nr) {
        let row = w.get(r * row_bytes..(r + 1) * row_bytes).unwrap_or(&[]);
        for (b, blk) in row.chunks_exact(bs).enumerate() {
            let (dw, mw) = decode(f, blk, &mut wq);
            for (c, o) in out_r.iter_mut().enumerate().take(t.nc) {
                let idx = (t.i0 + c) * a.nb + b;
                let (Some(xq), Some(&[dx, sx])) = (a.qs.get(idx), a.ds.get(idx)) else {
                    continue;
                };
                *o += dw * dx * isum(&wq, xq) as f32 + mw * sx;
            }
        }
    }
    out
}
