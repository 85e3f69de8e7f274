//! IQ2_XXS, IQ2_XS, IQ3_XXS and IQ3_S: llama.cpp's lattice i-quants
//! (ggml `block_iq2_xxs`, `block_iq2_xs`, `block_iq3_xxs`, `block_iq3_s`).
//!
//! Every format stores 256-weight super-blocks as 8 sub-blocks of 32. A
//! sub-block's weights come in runs of 8 (IQ2) or 4 (IQ3) whose unsigned
//! magnitudes are one row of a fixed grid (`iq23_grids.rs`, generated from
//! the `gguf` package by `scripts/fixtures/make_iq_grids.py`); signs come
//! separately. Per weight `x = db * grid * sign` with, per sub-block (or
//! half sub-block, IQ2_XS) a 4-bit scale `ls`:
//!
//! - IQ2_XXS (66 bytes): `d`, then per sub-block two little-endian u32:
//!   the first holds 4 grid indices (one byte each, `IQ2XXS_GRID`, 8
//!   weights each); the second holds 4 7-bit sign indices (bits `7l..7l+7`,
//!   through `KSIGNS_IQ2XS`) and `ls` in bits 28..32.
//!   `db = d * (0.5 + ls) * 0.25`.
//! - IQ2_XS (74 bytes): `d`, 32 u16 (low 9 bits: `IQ2XS_GRID` index, high
//!   7: sign index), then 8 scale bytes: sub-block `ib` uses the low nibble
//!   for its first 16 weights, the high one for the last 16.
//!   `db = d * (0.5 + ls) * 0.25`.
//! - IQ3_XXS (98 bytes): `d`, 64 grid-index bytes (`IQ3XXS_GRID`, 4 weights
//!   each, 8 per sub-block), then per sub-block a u32 laid out like
//!   IQ2_XXS's second word. `db = d * (0.5 + ls) * 0.5`.
//! - IQ3_S (110 bytes): `d`, 64 low index bytes, 8 bytes of 9th index bits
//!   (index `j` takes bit `j % 8` of `qh[j / 8]`; `IQ3S_GRID`, 4 weights
//!   each), 32 bytes of explicit sign bits (bit `i % 8` of byte `i / 8` set =
//!   weight `i` negative), 4 scale bytes (sub-block `ib`: nibble `ib % 2` of
//!   byte `ib / 2`). `db = d * (1 + 2 * ls)`.
//!
//! Dequantization computes `db` in f32 in that order, then `db * (grid *
//! sign)` (as ggml and gguf.quants; the sign flip is exact): checked bit
//! for bit against gguf.quants' dequantizer.
//!
//! Every `db` is `d` times a power of two times the odd integer `2 ls + 1`
//! (IQ3_S: `1 + 2 ls`), so the Q8_K dot ([`Q8KDot`]) is integer: per
//! sub-block `(2 ls + 1) * sum_j grid_j sign_j q_j`, and the block scale is
//! `d / 8` (IQ2), `d / 4` (IQ3_XXS), `d` (IQ3_S), exact in f32.
//!
//! There is no quantizer ([`crate::Error::NoQuantizer`]): ggml makes
//! IQ2_XXS / IQ2_XS only with an importance matrix, which kiln does not
//! make, and its IQ3 quantizers' lattice searches are not reimplemented.

use super::dot_ref::Q8KDot;
use super::iq23_grids::{IQ2XS_GRID, IQ2XXS_GRID, IQ3S_GRID, IQ3XXS_GRID, KSIGNS_IQ2XS};
use super::BlockQ8K;
use crate::dtype::QK_K;
use crate::DType;
use half::f16;

/// GGML `block_iq2_xxs` (66 bytes): `qs` is ggml's `uint16_t qs[32]` as bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ2XXS {
    pub d: f16,
    pub qs: [u8; 64],
}
const _: () = assert!(std::mem::size_of::<BlockIQ2XXS>() == 66);

/// GGML `block_iq2_xs` (74 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ2XS {
    pub d: f16,
    /// Low 9 bits: grid index; high 7: sign index.
    pub qs: [u16; 32],
    /// Two 4-bit scales per sub-block.
    pub scales: [u8; 8],
}
const _: () = assert!(std::mem::size_of::<BlockIQ2XS>() == 74);

/// GGML `block_iq3_xxs` (98 bytes): 64 grid indices, then 8 u32 of sign
/// indices and scales.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ3XXS {
    pub d: f16,
    pub qs: [u8; 96],
}
const _: () = assert!(std::mem::size_of::<BlockIQ3XXS>() == 98);

/// GGML `block_iq3_s` (110 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIQ3S {
    pub d: f16,
    pub qs: [u8; 64],
    pub qh: [u8; 8],
    pub signs: [u8; 32],
    pub scales: [u8; 4],
}
const _: () = assert!(std::mem::size_of::<BlockIQ3S>() == 110);

/// One sub-block decoded: the 32 signed grid values and the odd integer
/// scale multiplier of each 16-weight half.
#[derive(Clone, Copy, Debug)]
pub struct SubBlock {
    pub v: [i8; 32],
    pub mult: [i32; 2],
}

/// One sub-block unpacked but not expanded: grid row magnitudes of
/// elements `8l..8l+8` as the bytes of `grid[l]` (little-endian: byte `j`
/// is element `8l + j`; IQ3: two 4-wide rows), bit `i` of `signs` set =
/// element `i` negative, and the two half multipliers. The fast paths
/// start from this; [`IqBlock::sub_block`] expands it.
#[derive(Clone, Copy, Debug)]
pub struct Packed {
    pub grid: [u64; 4],
    pub signs: u32,
    pub mult: [i32; 2],
}

/// The i-quant formats of this file: a decoder per sub-block.
pub trait IqBlock: bytemuck::Pod {
    /// The dtype this block encodes.
    const DTYPE: DType;
    /// `db = d * (a + ls) * b` (`(a, b)` = `(0.5, 0.25)`, `(0.5, 0.5)`) or,
    /// for IQ3_S, `d * (1 + 2 ls)`; `DOT_SCALE` = `b / 2` is the factor
    /// with which `d * (2 ls + 1)` gives `db` (1 for IQ3_S).
    const DOT_SCALE: f32;
    /// The f16 super-block scale.
    fn d(&self) -> f16;
    /// Sub-block `ib` (0..8), packed.
    fn packed(&self, ib: usize) -> Packed;
    /// The f32 scale of half `h` (0..16) of the super-block, computed as
    /// gguf.quants does.
    fn db(&self, h: usize) -> f32;
    /// Sub-block `ib` (0..8), expanded to signed values.
    fn sub_block(&self, ib: usize) -> SubBlock {
        let p = self.packed(ib);
        let mut v = [0i8; 32];
        for (i, o) in v.iter_mut().enumerate() {
            // Grid magnitudes are at most 62: exact in i8 with either sign.
            let g = (p.grid[i / 8] >> (8 * (i % 8))) as u8 as i8;
            *o = if p.signs & (1 << i) != 0 { -g } else { g };
        }
        SubBlock { v, mult: p.mult }
    }
}

#[inline]
fn word(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_le_bytes(w)
}

/// The 8 sign bits of sign index `idx` (low 7 bits) at bit `8 * l`.
#[inline]
fn ksigns(idx: u32, l: usize) -> u32 {
    u32::from(KSIGNS_IQ2XS[(idx & 127) as usize]) << (8 * l)
}

/// Two 4-wide IQ3 grid rows as one 8-byte row.
#[inline]
fn pair(a: &[u8; 4], b: &[u8; 4]) -> u64 {
    u64::from(u32::from_le_bytes(*a)) | (u64::from(u32::from_le_bytes(*b)) << 32)
}

/// `d * (0.5 + ls) * k` in f32, left to right (gguf.quants' order).
#[inline]
fn half_scale(d: f16, ls: u32, k: f32) -> f32 {
    d.to_f32() * (0.5 + ls as f32) * k
}

impl IqBlock for BlockIQ2XXS {
    const DTYPE: DType = DType::IQ2_XXS;
    const DOT_SCALE: f32 = 0.125;
    fn d(&self) -> f16 {
        self.d
    }
    fn packed(&self, ib: usize) -> Packed {
        let (a, b) = (word(&self.qs, 8 * ib), word(&self.qs, 8 * ib + 4));
        let mut p = Packed {
            grid: [0; 4],
            signs: 0,
            mult: [2 * (b >> 28) as i32 + 1; 2],
        };
        for l in 0..4 {
            p.grid[l] = u64::from_le_bytes(IQ2XXS_GRID[((a >> (8 * l)) & 0xff) as usize]);
            p.signs |= ksigns(b >> (7 * l), l);
        }
        p
    }
    fn db(&self, h: usize) -> f32 {
        half_scale(self.d, word(&self.qs, 8 * (h / 2) + 4) >> 28, 0.25)
    }
}

impl BlockIQ2XS {
    fn ls(&self, h: usize) -> u32 {
        u32::from((self.scales[(h / 2) % 8] >> (4 * (h % 2))) & 0x0f)
    }
}

impl IqBlock for BlockIQ2XS {
    const DTYPE: DType = DType::IQ2_XS;
    const DOT_SCALE: f32 = 0.125;
    fn d(&self) -> f16 {
        self.d
    }
    fn packed(&self, ib: usize) -> Packed {
        let ib = ib % 8;
        let m = |h: usize| 2 * self.ls(h) as i32 + 1;
        let mut p = Packed {
            grid: [0; 4],
            signs: 0,
            mult: [m(2 * ib), m(2 * ib + 1)],
        };
        for l in 0..4 {
            let q = self.qs[4 * ib + l];
            p.grid[l] = u64::from_le_bytes(IQ2XS_GRID[usize::from(q & 511)]);
            p.signs |= ksigns(u32::from(q >> 9), l);
        }
        p
    }
    fn db(&self, h: usize) -> f32 {
        half_scale(self.d, self.ls(h), 0.25)
    }
}

impl IqBlock for BlockIQ3XXS {
    const DTYPE: DType = DType::IQ3_XXS;
    const DOT_SCALE: f32 = 0.25;
    fn d(&self) -> f16 {
        self.d
    }
    fn packed(&self, ib: usize) -> Packed {
        let ib = ib % 8;
        let aux = word(&self.qs, 64 + 4 * ib);
        let mut p = Packed {
            grid: [0; 4],
            signs: 0,
            mult: [2 * (aux >> 28) as i32 + 1; 2],
        };
        for l in 0..4 {
            let (g1, g2) = (self.qs[8 * ib + 2 * l], self.qs[8 * ib + 2 * l + 1]);
            p.grid[l] = pair(&IQ3XXS_GRID[usize::from(g1)], &IQ3XXS_GRID[usize::from(g2)]);
            p.signs |= ksigns(aux >> (7 * l), l);
        }
        p
    }
    fn db(&self, h: usize) -> f32 {
        half_scale(self.d, word(&self.qs, 64 + 4 * (h / 2)) >> 28, 0.5)
    }
}

impl BlockIQ3S {
    fn ls(&self, ib: usize) -> u32 {
        u32::from((self.scales[(ib / 2) % 4] >> (4 * (ib % 2))) & 0x0f)
    }
    /// Grid row of index `j` (0..64): `qs[j]` plus bit `j % 8` of `qh[j / 8]`.
    fn row(&self, j: usize) -> &'static [u8; 4] {
        let hi = usize::from((self.qh[j / 8] >> (j % 8)) & 1) << 8;
        &IQ3S_GRID[usize::from(self.qs[j]) | hi]
    }
}

impl IqBlock for BlockIQ3S {
    const DTYPE: DType = DType::IQ3_S;
    const DOT_SCALE: f32 = 1.0;
    fn d(&self) -> f16 {
        self.d
    }
    fn packed(&self, ib: usize) -> Packed {
        let ib = ib % 8;
        let mut p = Packed {
            grid: [0; 4],
            signs: word(&self.signs, 4 * ib),
            mult: [1 + 2 * self.ls(ib) as i32; 2],
        };
        for (l, g) in p.grid.iter_mut().enumerate() {
            *g = pair(self.row(8 * ib + 2 * l), self.row(8 * ib + 2 * l + 1));
        }
        p
    }
    fn db(&self, h: usize) -> f32 {
        // 1 + 2 * ls is an integer below 32: exact in f32.
        self.d.to_f32() * (1 + 2 * self.ls(h / 2)) as f32
    }
}

/// Reference dequantize of one super-block (`out.len() == 256`; shorter:
/// a prefix).
pub(super) fn dequantize_iq<B: IqBlock>(b: &B, out: &mut [f32]) {
    for (ib, o) in out.chunks_mut(32).take(QK_K / 32).enumerate() {
        let sb = b.sub_block(ib);
        for (h, oh) in o.chunks_mut(16).enumerate() {
            let db = b.db(2 * ib + h);
            for (y, &v) in oh.iter_mut().zip(&sb.v[16 * h..]) {
                *y = db * f32::from(v);
            }
        }
    }
}

/// The integer sum of one super-block against one Q8_K block:
/// `sum_ib sum_h mult_h * sum_{j in half h} v_j * q_j` (at most
/// `8 * 32 * 62 * 127 * 31 < 2^26`).
#[inline]
pub fn int_dot_iq<B: IqBlock>(b: &B, x: &BlockQ8K) -> i32 {
    let mut isum = 0i32;
    for ib in 0..QK_K / 32 {
        let sb = b.sub_block(ib);
        let q = &x.qs[32 * ib..32 * ib + 32];
        for h in 0..2 {
            let s: i32 = sb.v[16 * h..16 * h + 16]
                .iter()
                .zip(&q[16 * h..16 * h + 16])
                .map(|(&a, &c)| i32::from(a) * i32::from(c))
                .sum();
            isum += sb.mult[h] * s;
        }
    }
    isum
}

macro_rules! iq_q8k_dot {
    ($($t:ty),*) => {$(
        impl Q8KDot for $t {
            fn int_dot(&self, x: &BlockQ8K) -> (i32, i32) {
                (int_dot_iq(self, x), 0)
            }
            fn scales(&self) -> (f32, f32) {
                // d times a power of two: exact.
                (self.d.to_f32() * <$t as IqBlock>::DOT_SCALE, 0.0)
            }
        }
    )*};
}
iq_q8k_dot!(BlockIQ2XXS, BlockIQ2XS, BlockIQ3XXS, BlockIQ3S);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn sizes_ids_and_no_quantizer() {
        fn check<B: IqBlock>(id: u32, size: usize) {
            let dt = B::DTYPE;
            assert_eq!(std::mem::size_of::<B>(), size, "{dt}");
            assert_eq!(dt.type_size(), size, "{dt}");
            assert_eq!(dt.block_size(), QK_K, "{dt}");
            assert_eq!(dt.ggml_id(), Some(id), "{dt}");
            assert_eq!(DType::from_ggml_id(id).unwrap(), dt);
            assert_eq!(DType::from_name(dt.name()), Some(dt));
            let mut out = vec![0u8; size];
            let e = crate::quant::quantize_row(dt, &[0.5; QK_K], &mut out).unwrap_err();
            assert!(
                matches!(e, crate::Error::NoQuantizer { dtype, .. } if dtype == dt),
                "{e}"
            );
            let why = if id < 18 {
                "importance matrix"
            } else {
                "no IQ3 quantizer"
            };
            assert!(e.to_string().contains(why), "{e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        // Sizes as gguf's GGML_QUANT_SIZES.
        check::<BlockIQ2XXS>(16, 66);
        check::<BlockIQ2XS>(17, 74);
        check::<BlockIQ3XXS>(18, 98);
        check::<BlockIQ3S>(21, 110);
        assert_eq!(DType::IQ2_XXS.bits_per_weight(), 2.0625);
        assert_eq!(DType::IQ3_S.bits_per_weight(), 3.4375);
    }

    /// A hand-built IQ3_S block: index 256 + 3 through the qh bit, signs of
    /// element 1 and 6, scale nibble 2 -> db = 5 d.
    #[test]
    fn iq3_s_layout() {
        let mut b: BlockIQ3S = bytemuck::Zeroable::zeroed();
        b.d = f16::from_f32(0.5);
        b.qs[1] = 3;
        b.qh[0] = 0b10;
        b.signs[0] = 0b0100_0010;
        b.scales[0] = 2;
        let mut out = [0f32; 256];
        dequantize_iq(&b, &mut out);
        let g0 = IQ3S_GRID[0].map(f32::from);
        let g1 = IQ3S_GRID[256 + 3].map(f32::from);
        let want = [
            2.5 * g0[0],
            -2.5 * g0[1],
            2.5 * g0[2],
            2.5 * g0[3],
            2.5 * g1[0],
            2.5 * g1[1],
            -2.5 * g1[2],
            2.5 * g1[3],
        ];
        assert_eq!(out[..8], want);
        // Sub-block 1 uses the high nibble (0): db = d.
        assert_eq!(out[32], 0.5 * g0[0]);
    }

    /// IQ2_XXS: scale in the top 4 bits of the second word, 7-bit sign
    /// indices with the parity bit as the 8th sign.
    #[test]
    fn iq2_xxs_layout() {
        let mut b: BlockIQ2XXS = bytemuck::Zeroable::zeroed();
        b.d = f16::from_f32(1.0);
        b.qs[0] = 1; // grid row 1 for weights 0..8
        let w1: u32 = (3 << 28) | 1; // sign index 1 -> 0x81: weights 0 and 7 negative
        b.qs[4..8].copy_from_slice(&w1.to_le_bytes());
        let mut out = [0f32; 256];
        dequantize_iq(&b, &mut out);
        let db = (0.5 + 3.0) * 0.25;
        let g = IQ2XXS_GRID[1].map(f32::from);
        assert_eq!(out[0], -db * g[0]);
        assert_eq!(out[1], db * g[1]);
        assert_eq!(out[7], -db * g[7]);
        assert_eq!(out[8], db * f32::from(IQ2XXS_GRID[0][0]));
        assert_eq!(b.sub_block(0).mult, [7, 7]);
    }
}
