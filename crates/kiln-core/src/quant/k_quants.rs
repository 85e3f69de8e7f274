//! K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K: super-blocks of QK_K = 256
//! weights with per-sub-block scales (ggml `block_q2_K` ... `block_q6_K`).
//!
//! Spec: ggml's `ggml-common.h` layouts; dequantization as ggml's
//! `dequantize_row_q*_K` and gguf.quants (f32 arithmetic: the sub-block
//! scale `d * sc` and min `dmin * m` are each rounded to f32 first, then
//! `scale * q - min`, no FMA). Checked bit-for-bit against gguf.quants'
//! dequantizer (`tests/quant_fixtures_ggml.rs`).
//!
//! Quantizers: the plain (no importance matrix) reference algorithms of
//! ggml's `quantize_row_q*_K_ref`, rewritten from their description (see
//! `k_search.rs`). gguf.quants has no K-quant quantizer, so these are checked
//! by error bounds and properties, not bit-for-bit against ggml.
//!
//! Element order within a super-block, per format:
//! - Q2_K: 16 sub-blocks of 16; element i's 2-bit code is bits
//!   `2*((i%128)/32)` of `qs[32*(i/128) + i%32]`; `scales[i/16]` holds the
//!   4-bit scale (low nibble) and 4-bit min (high nibble).
//! - Q3_K: as Q2_K for the low 2 bits; the third bit is bit `i/32` of
//!   `hmask[i%32]`, *set* meaning "no -4 offset"; 16 6-bit signed scales
//!   (stored +32): low 4 bits in nibbles of `scales[0..8]`, high 2 bits in
//!   `scales[8..12]`.
//! - Q4_K / Q5_K: 8 sub-blocks of 32; element i's nibble is the low
//!   (even sub-block) or high (odd) nibble of `qs[32*(i/64) + i%32]`;
//!   Q5_K's fifth bit is bit `i/32` of `qh[i%32]`. 8 6-bit scales and mins
//!   packed in 12 bytes ([`pack_scale_min_k4`]).
//! - Q6_K: 16 sub-blocks of 16; low 4 bits from nibble `(i%128)/64` of
//!   `ql[64*(i/128) + i%64]`, high 2 bits from bits `2*((i%128)/32)` of
//!   `qh[32*(i/128) + i%32]`, minus 32; signed 8-bit scales.

use super::k_search::{
    load, make_q3_quants, make_qkx2_quants, make_qx_quants, nearest_int, Qkx2Params, GROUP_MAX_EPS,
};
use super::BlockFormat;
use crate::dtype::QK_K;
use crate::DType;
use half::f16;

/// GGML `block_q2_K` (84 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    /// Per 16-element sub-block: scale (low nibble), min (high nibble).
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// GGML `block_q3_K` (110 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

/// GGML `block_q4_K` (144 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// GGML `block_q5_K` (176 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

/// GGML `block_q6_K` (210 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

/// Pack eight 6-bit (scale, min) pairs into Q4_K / Q5_K's 12 bytes:
/// pairs 0..4 take the low 6 bits of bytes `j` (scale) and `j+4` (min);
/// pairs 4..8 keep their low 4 bits in byte `j+4` (scale low nibble, min
/// high nibble) and their top 2 bits in the top bits of bytes `j-4`
/// (scale) and `j` (min). Inputs are masked to 6 bits.
pub fn pack_scale_min_k4(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..4 {
        s[j] = sc[j] & 63;
        s[j + 4] = m[j] & 63;
    }
    for j in 4..8 {
        let (a, b) = (sc[j] & 63, m[j] & 63);
        s[j + 4] = (a & 0x0f) | ((b & 0x0f) << 4);
        s[j - 4] |= (a >> 4) << 6;
        s[j] |= (b >> 4) << 6;
    }
    s
}

/// Inverse of [`pack_scale_min_k4`]: the eight (scales, mins), each 0..=63
/// (ggml's `get_scale_min_k4` for j = 0..8).
pub fn unpack_scale_min_k4(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let mut sc = [0u8; 8];
    let mut m = [0u8; 8];
    for j in 0..4 {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
    }
    for j in 4..8 {
        sc[j] = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        m[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
    (sc, m)
}

/// Q3_K's sixteen 6-bit scale codes (0..=63, stored value = scale + 32).
pub(crate) fn unpack_scales_q3k(s: &[u8; 12]) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
        let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = low | (high << 4);
    }
    out
}

/// Inverse of [`unpack_scales_q3k`] (inputs masked to 6 bits).
fn pack_scales_q3k(l: &[u8; 16]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for (j, &v) in l.iter().enumerate() {
        let v = v & 63;
        if j < 8 {
            s[j] |= v & 0x0f;
        } else {
            s[j - 8] |= (v & 0x0f) << 4;
        }
        s[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
    }
    s
}

/// Pack 256 2-bit codes the Q2_K / Q3_K way (four 32-element runs per byte).
fn pack_2bit(l: &[u8; QK_K]) -> [u8; 64] {
    let mut qs = [0u8; 64];
    for c in 0..2 {
        for i in 0..32 {
            let b = 128 * c + i;
            qs[32 * c + i] = (l[b] & 3)
                | ((l[b + 32] & 3) << 2)
                | ((l[b + 64] & 3) << 4)
                | ((l[b + 96] & 3) << 6);
        }
    }
    qs
}

#[inline]
pub(crate) fn code_2bit(qs: &[u8; 64], i: usize) -> u8 {
    (qs[32 * (i / 128) + i % 32] >> (2 * ((i % 128) / 32))) & 3
}

#[inline]
pub(crate) fn nibble_k4(qs: &[u8; 128], i: usize) -> u8 {
    (qs[32 * (i / 64) + i % 32] >> (4 * ((i % 64) / 32))) & 0x0f
}

/// Pack 256 nibbles the Q4_K / Q5_K way.
fn pack_nibbles_k4(l: &[u8; QK_K]) -> [u8; 128] {
    let mut qs = [0u8; 128];
    for c in 0..4 {
        for i in 0..32 {
            qs[32 * c + i] = (l[64 * c + i] & 0x0f) | ((l[64 * c + 32 + i] & 0x0f) << 4);
        }
    }
    qs
}

impl BlockFormat for BlockQ2K {
    const DTYPE: DType = DType::Q2_K;
    const QK: usize = QK_K;

    /// `x = (d*sc) * q - (dmin*m)`, per 16-element sub-block.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        for (i, o) in out.iter_mut().take(QK_K).enumerate() {
            let s = self.scales[i / 16];
            let dl = d * f32::from(s & 0x0f);
            let ml = dmin * f32::from(s >> 4);
            *o = dl * f32::from(code_2bit(&self.qs, i)) - ml;
        }
    }

    /// Per sub-block, [`make_qkx2_quants`] (nmax 3, weights |x|, absolute
    /// error, 16 trials from nmax - 0.5 in steps of 0.1) gives a scale and a
    /// min; both are quantized to 4 bits against their block maxima
    /// (`d = max_scale / 15`, `dmin = max_min / 15`, f16), then every code is
    /// recomputed as `clamp(round((x + dmin*m) / (d*sc)), 0, 3)` (left from
    /// the search where `d*sc == 0`).
    fn quantize(x: &[f32]) -> Self {
        let x = load::<QK_K>(x);
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut mins = [0f32; 16];
        let p = Qkx2Params {
            nmax: 3,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        for j in 0..16 {
            let xs = &x[16 * j..16 * j + 16];
            let mut w = [0f32; 16];
            for (w, v) in w.iter_mut().zip(xs) {
                *w = v.abs();
            }
            scales[j] = make_qkx2_quants(p, xs, &w, &mut l[16 * j..16 * j + 16], &mut mins[j]);
        }
        let max_scale = scales.iter().fold(0f32, |a, &s| if s > a { s } else { a });
        let max_min = mins.iter().fold(0f32, |a, &s| if s > a { s } else { a });
        let mut sc = [0u8; 16];
        let mut d = f16::ZERO;
        let mut dmin = f16::ZERO;
        if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for (o, &s) in sc.iter_mut().zip(&scales) {
                *o = nearest_int(iscale * s).clamp(0, 15) as u8;
            }
            d = f16::from_f32(max_scale / 15.0);
        }
        if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for (o, &m) in sc.iter_mut().zip(&mins) {
                *o |= (nearest_int(iscale * m).clamp(0, 15) as u8) << 4;
            }
            dmin = f16::from_f32(max_min / 15.0);
        }
        for (j, &s) in sc.iter().enumerate() {
            let dl = d.to_f32() * f32::from(s & 0x0f);
            if dl == 0.0 {
                continue;
            }
            let dm = dmin.to_f32() * f32::from(s >> 4);
            for i in 16 * j..16 * j + 16 {
                l[i] = nearest_int((x[i] + dm) / dl).clamp(0, 3) as u8;
            }
        }
        BlockQ2K {
            scales: sc,
            qs: pack_2bit(&l),
            d,
            dmin,
        }
    }
}

impl BlockFormat for BlockQ3K {
    const DTYPE: DType = DType::Q3_K;
    const QK: usize = QK_K;

    /// `x = (d * (sc - 32)) * (q - (hbit ? 0 : 4))`, per 16-element sub-block.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let sc = unpack_scales_q3k(&self.scales);
        for (i, o) in out.iter_mut().take(QK_K).enumerate() {
            let dl = d * f32::from(i16::from(sc[i / 16]) - 32);
            let h = (self.hmask[i % 32] >> (i / 32)) & 1;
            let q = i16::from(code_2bit(&self.qs, i)) - if h == 0 { 4 } else { 0 };
            *o = dl * f32::from(q);
        }
    }

    /// Per sub-block, [`make_q3_quants`] (nmax 4, refined) gives a signed
    /// scale; the scales are quantized to 6 bits against the one of largest
    /// |scale| (`iscale = -32 / max_scale`, `d = 1/iscale` as f16), then
    /// every code is recomputed as `clamp(round(x / (d*sc)), -4, 3)` (left
    /// from the search where `d*sc == 0`); the code's bit 2 goes to `hmask`.
    fn quantize(x: &[f32]) -> Self {
        let x = load::<QK_K>(x);
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut amax = 0f32;
        let mut max_scale = 0f32;
        for j in 0..16 {
            scales[j] = make_q3_quants(4, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            if scales[j].abs() > amax {
                amax = scales[j].abs();
                max_scale = scales[j];
            }
        }
        // All-zero scales: the packed codes stay 0 (sc = -32) with d = 0, as ggml.
        let mut codes = [0u8; 16];
        let mut d = f16::ZERO;
        if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (c, &s) in codes.iter_mut().zip(&scales) {
                *c = (nearest_int(iscale * s).clamp(-32, 31) + 32) as u8;
            }
            d = f16::from_f32(1.0 / iscale);
        }
        let packed = pack_scales_q3k(&codes);
        let sc = unpack_scales_q3k(&packed);
        for (j, &s) in sc.iter().enumerate() {
            let dl = d.to_f32() * f32::from(i16::from(s) - 32);
            if dl == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(x[i] / dl).clamp(-4, 3) + 4) as u8;
            }
        }
        let mut hmask = [0u8; 32];
        for (i, v) in l.iter_mut().enumerate() {
            if *v > 3 {
                hmask[i % 32] |= 1 << (i / 32);
                *v -= 4;
            }
        }
        BlockQ3K {
            hmask,
            qs: pack_2bit(&l),
            scales: packed,
            d,
        }
    }
}

/// Shared Q4_K / Q5_K quantizer: per 32-element sub-block, weights
/// `sqrt(mean(x^2)) + |x|` and [`make_qkx2_quants`] with `p`; scales and
/// mins quantized to 6 bits against their maxima (`d = max_scale/63`,
/// `dmin = max_min/63`, f16); codes recomputed as
/// `clamp(round((x + dmin*m) / (d*sc)), 0, nmax)`. Returns d, dmin, the
/// packed scales and the 256 codes.
fn quantize_k4(x: &[f32; QK_K], p: Qkx2Params) -> (f16, f16, [u8; 12], [u8; QK_K]) {
    let mut l = [0u8; QK_K];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let sum_x2: f32 = xs.iter().map(|v| v * v).sum();
        let av_x = (sum_x2 / 32.0).sqrt();
        let mut w = [0f32; 32];
        for (w, v) in w.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        scales[j] = make_qkx2_quants(p, xs, &w, &mut l[32 * j..32 * j + 32], &mut mins[j]);
    }
    let max_scale = scales.iter().fold(0f32, |a, &s| if s > a { s } else { a });
    let max_min = mins.iter().fold(0f32, |a, &s| if s > a { s } else { a });
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        ls[j] = nearest_int(inv_scale * scales[j]).clamp(0, 63) as u8;
        lm[j] = nearest_int(inv_min * mins[j]).clamp(0, 63) as u8;
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = f16::from_f32(max_scale / 63.0);
    let dmin = f16::from_f32(max_min / 63.0);
    for j in 0..8 {
        let dl = d.to_f32() * f32::from(ls[j]);
        if dl == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * f32::from(lm[j]);
        for i in 32 * j..32 * j + 32 {
            l[i] = nearest_int((x[i] + dm) / dl).clamp(0, p.nmax) as u8;
        }
    }
    (d, dmin, packed, l)
}

impl BlockFormat for BlockQ4K {
    const DTYPE: DType = DType::Q4_K;
    const QK: usize = QK_K;

    /// `x = (d*sc) * q - (dmin*m)`, per 32-element sub-block.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        let (sc, m) = unpack_scale_min_k4(&self.scales);
        for (i, o) in out.iter_mut().take(QK_K).enumerate() {
            let dl = d * f32::from(sc[i / 32]);
            let ml = dmin * f32::from(m[i / 32]);
            *o = dl * f32::from(nibble_k4(&self.qs, i)) - ml;
        }
    }

    /// [`quantize_k4`] with nmax 15 and 21 trials from nmax - 1 in steps of
    /// 0.1, squared error (ggml `quantize_row_q4_K_ref`).
    fn quantize(x: &[f32]) -> Self {
        let p = Qkx2Params {
            nmax: 15,
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let (d, dmin, scales, l) = quantize_k4(&load(x), p);
        BlockQ4K {
            d,
            dmin,
            scales,
            qs: pack_nibbles_k4(&l),
        }
    }
}

impl BlockFormat for BlockQ5K {
    const DTYPE: DType = DType::Q5_K;
    const QK: usize = QK_K;

    /// `x = (d*sc) * q - (dmin*m)`, per 32-element sub-block, q in 0..=31.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        let dmin = self.dmin.to_f32();
        let (sc, m) = unpack_scale_min_k4(&self.scales);
        for (i, o) in out.iter_mut().take(QK_K).enumerate() {
            let dl = d * f32::from(sc[i / 32]);
            let ml = dmin * f32::from(m[i / 32]);
            let h = (self.qh[i % 32] >> (i / 32)) & 1;
            *o = dl * f32::from(nibble_k4(&self.qs, i) | (h << 4)) - ml;
        }
    }

    /// [`quantize_k4`] with nmax 31 and 16 trials from nmax - 0.5 in steps
    /// of 0.1, squared error (ggml `quantize_row_q5_K_ref`).
    fn quantize(x: &[f32]) -> Self {
        let p = Qkx2Params {
            nmax: 31,
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let (d, dmin, scales, l) = quantize_k4(&load(x), p);
        let mut qh = [0u8; 32];
        for (i, &v) in l.iter().enumerate() {
            qh[i % 32] |= ((v >> 4) & 1) << (i / 32);
        }
        BlockQ5K {
            d,
            dmin,
            scales,
            qh,
            qs: pack_nibbles_k4(&l),
        }
    }
}

impl BlockFormat for BlockQ6K {
    const DTYPE: DType = DType::Q6_K;
    const QK: usize = QK_K;

    /// `x = (d * sc) * (q - 32)`, per 16-element sub-block.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (i, o) in out.iter_mut().take(QK_K).enumerate() {
            let (h, r) = (i / 128, i % 128);
            let lo = (self.ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0f;
            let hi = (self.qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
            let q = i16::from(lo | (hi << 4)) - 32;
            *o = (d * f32::from(self.scales[i / 16])) * f32::from(q);
        }
    }

    /// Per 16-element sub-block, [`make_qx_quants`] (nmax 32, weights x^2)
    /// gives a signed scale; scales are quantized to i8 against the one of
    /// largest |scale| (`iscale = -128 / max_scale`, `d = 1/iscale` as f16,
    /// codes `min(127, round(iscale * s))`), then every code is recomputed as
    /// `clamp(round(x / (d*sc)), -32, 31)` (left from the search where
    /// `d*sc == 0`). An all-(near-)zero block (max |scale| < 1e-15) is all
    /// zero bytes.
    fn quantize(x: &[f32]) -> Self {
        let x = load::<QK_K>(x);
        let mut l = [0u8; QK_K];
        let mut scales = [0f32; 16];
        let mut max_abs = 0f32;
        let mut max_scale = 0f32;
        for j in 0..16 {
            scales[j] = make_qx_quants(32, &x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            if scales[j].abs() > max_abs {
                max_abs = scales[j].abs();
                max_scale = scales[j];
            }
        }
        let mut blk = BlockQ6K {
            ql: [0; 128],
            qh: [0; 64],
            scales: [0; 16],
            d: f16::ZERO,
        };
        if max_abs < GROUP_MAX_EPS {
            return blk;
        }
        let iscale = -128.0 / max_scale;
        blk.d = f16::from_f32(1.0 / iscale);
        for (o, &s) in blk.scales.iter_mut().zip(&scales) {
            *o = nearest_int(iscale * s).clamp(-128, 127) as i8;
        }
        for j in 0..16 {
            let dl = blk.d.to_f32() * f32::from(blk.scales[j]);
            if dl == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(x[i] / dl).clamp(-32, 31) + 32) as u8;
            }
        }
        for h in 0..2 {
            for i in 0..32 {
                let b = 128 * h + i;
                let (q1, q2, q3, q4) = (l[b], l[b + 32], l[b + 64], l[b + 96]);
                blk.ql[64 * h + i] = (q1 & 0x0f) | ((q3 & 0x0f) << 4);
                blk.ql[64 * h + i + 32] = (q2 & 0x0f) | ((q4 & 0x0f) << 4);
                blk.qh[32 * h + i] = ((q1 >> 4) & 3)
                    | (((q2 >> 4) & 3) << 2)
                    | (((q3 >> 4) & 3) << 4)
                    | (((q4 >> 4) & 3) << 6);
            }
        }
        blk
    }
}
