//! IQ4_NL and IQ4_XS: 4-bit codes indexing a fixed non-linear grid of 16
//! signed values ([`KVALUES_IQ4NL`]), times a scale (ggml `block_iq4_nl`,
//! `block_iq4_xs`).
//!
//! - IQ4_NL: blocks of 32, one f16 scale: `x = d * grid[q]`.
//! - IQ4_XS: super-blocks of 256 = 8 sub-blocks of 32, an f16 `d` and a
//!   6-bit signed scale per sub-block (stored +32; low 4 bits in nibbles of
//!   `scales_l`, sub-block `ib` in nibble `ib % 2` of byte `ib / 2`; high 2
//!   bits at bits `2*ib` of `scales_h`): `x = (d * (ls - 32)) * grid[q]`.
//!
//! In both, the codes of a 32-element group are packed like Q4_0: byte j
//! holds element j (low nibble) and element j+16 (high nibble).
//! Dequantization as ggml / gguf.quants (f32: sub-block scale rounded to
//! f32 first, then times the grid value); checked bit-for-bit against
//! gguf.quants' dequantizer.
//!
//! Quantizer (ggml `quantize_row_iq4_nl_ref` / `_xs_ref`, no importance
//! matrix, rewritten from its description): per 32-element group, with
//! weights `w = x^2`, start from `d = max / 127` (max = the signed element
//! of largest |x|), map each `x / d` to the nearest grid value, and take the
//! weighted least-squares scale `Σ w g x / Σ w g^2`; then try the 15 inverse
//! scales `(k - 127) / max`, k = -7..=7, keeping the one maximising
//! `(Σ w g x)^2 / Σ w g^2`. IQ4_NL stores that scale as f16 and re-maps the
//! codes with it (f32); IQ4_XS quantizes the 8 group scales to 6 bits
//! against the one of largest |scale| (`d = -max_scale / 32`) and re-maps
//! each group's codes with its quantized scale `d * l`. A group with
//! max |x| < 1e-15 gets scale 0 (codes map to the grid value nearest 0).
//! gguf.quants has no IQ4 quantizer: these are checked by error bounds and
//! through gguf's dequantizer, not bit-for-bit against ggml.

use super::k_search::{best_index, load, nearest_int, signed_amax, GROUP_MAX_EPS};
use super::{BlockFormat, QK};
use crate::dtype::QK_K;
use crate::DType;
use half::f16;

/// The IQ4 grid (ggml `kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// GGML `block_iq4_nl` (18 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ4NL {
    pub d: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4NL>() == 18);

/// GGML `block_iq4_xs` (136 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ4XS {
    pub d: f16,
    /// High 2 bits of the 8 sub-block scales (little-endian u16).
    pub scales_h: u16,
    /// Low 4 bits of the 8 sub-block scales, two per byte.
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4XS>() == 136);

#[inline]
fn grid(q: u8) -> f32 {
    f32::from(KVALUES_IQ4NL[usize::from(q & 0x0f)])
}

/// Dequantize one 32-element group of codes with scale `dl`.
#[inline]
fn dequant_group(dl: f32, qs: &[u8], out: &mut [f32]) {
    let (lo, hi) = out.split_at_mut(out.len().min(QK / 2));
    for (o, &q) in lo.iter_mut().zip(qs) {
        *o = dl * grid(q);
    }
    for (o, &q) in hi.iter_mut().zip(qs) {
        *o = dl * grid(q >> 4);
    }
}

/// Codes of one 32-element group for inverse scale `id`, packed.
#[inline]
fn pack_group(x: &[f32], id: f32) -> [u8; 16] {
    let mut qs = [0u8; 16];
    let code = |v: f32| best_index(&KVALUES_IQ4NL, id * v) as u8;
    for (j, q) in qs.iter_mut().enumerate() {
        let (a, b) = (x.get(j).copied(), x.get(j + 16).copied());
        *q = code(a.unwrap_or(0.0)) | (code(b.unwrap_or(0.0)) << 4);
    }
    qs
}

/// The best-scale search of one 32-element group (see the module docs).
fn group_scale(x: &[f32]) -> f32 {
    const NTRY: i32 = 7;
    let (max, amax) = signed_amax(x);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let g0 = f32::from(KVALUES_IQ4NL[0]);
    let sums = |id: f32| {
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for &v in x {
            let q = f32::from(KVALUES_IQ4NL[best_index(&KVALUES_IQ4NL, id * v)]);
            let w = v * v;
            sumqx += w * q * v;
            sumq2 += w * q * q;
        }
        (sumqx, sumq2)
    };
    let d0 = -max / g0;
    let (sumqx, sumq2) = sums(1.0 / d0);
    let mut d = if sumq2 > 0.0 { sumqx / sumq2 } else { d0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        let id = (itry as f32 + g0) / max;
        let (sumqx, sumq2) = sums(id);
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

impl BlockFormat for BlockIQ4NL {
    const DTYPE: DType = DType::IQ4_NL;
    const QK: usize = QK;

    /// `x[j] = d * grid[q[j]]`.
    fn dequantize(&self, out: &mut [f32]) {
        dequant_group(self.d.to_f32(), &self.qs, out);
    }

    fn quantize(x: &[f32]) -> Self {
        let x = load::<QK>(x);
        let d = group_scale(&x);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        BlockIQ4NL {
            d: f16::from_f32(d),
            qs: pack_group(&x, id),
        }
    }
}

impl BlockFormat for BlockIQ4XS {
    const DTYPE: DType = DType::IQ4_XS;
    const QK: usize = QK_K;

    /// `x = (d * (ls - 32)) * grid[q]` per 32-element sub-block.
    fn dequantize(&self, out: &mut [f32]) {
        let d = self.d.to_f32();
        for (ib, o) in out.chunks_mut(32).take(8).enumerate() {
            let lo = (self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0f;
            let hi = ((self.scales_h >> (2 * ib)) & 3) as u8;
            let ls = i16::from(lo | (hi << 4)) - 32;
            dequant_group(d * f32::from(ls), &self.qs[16 * ib..16 * ib + 16], o);
        }
    }

    fn quantize(x: &[f32]) -> Self {
        let x = load::<QK_K>(x);
        let mut scales = [0f32; 8];
        let mut amax_scale = 0f32;
        let mut max_scale = 0f32;
        for (s, xb) in scales.iter_mut().zip(x.chunks_exact(32)) {
            *s = group_scale(xb);
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = *s;
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut b = BlockIQ4XS {
            d: f16::from_f32(d),
            scales_h: 0,
            scales_l: [0; 4],
            qs: [0; 128],
        };
        for (ib, xb) in x.chunks_exact(32).enumerate() {
            let l = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            b.qs[16 * ib..16 * ib + 16].copy_from_slice(&pack_group(xb, idl));
            let l = (l + 32) as u8;
            b.scales_l[ib / 2] |= (l & 0x0f) << (4 * (ib % 2));
            b.scales_h |= u16::from(l >> 4) << (2 * ib);
        }
        b
    }
}
