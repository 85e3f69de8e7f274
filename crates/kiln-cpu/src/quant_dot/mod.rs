//! Quantized dot-product kernels for the CPU matmul: weights stay in their
//! GGML block format, activations are quantized once per matmul to 8-bit
//! codes and every block pair is an integer dot product scaled in f32.
//!
//! 32-element blocks, activations [`Q8Acts`] (Q8_0/Q8_1 codes, f32 scales):
//!
//! - Q4_1 / Q5_1 × Q8_1: `sum_b d_w*d_x*sum_j q_w[j]*q_x[j] + m_w*s_x`, `s_x = d_x*sum_j q_x[j]`.
//! - Q4_0 / Q5_0 × Q8_0: the same with `m_w = -8*d_w` / `-16*d_w` (the
//!   codes stay unsigned; `q_w - 8` / `q_w - 16` is the signed value).
//! - Q8_0 / IQ4_NL × Q8_0: `sum_b d_w*d_x*sum_j c_w[j]*q_x[j]` with the
//!   signed code (IQ4_NL: the grid value `KVALUES_IQ4NL[q]`).
//!
//! 256-element super-blocks (Q2_K..Q6_K, IQ4_XS, and the IQ2/IQ3 i-quants
//! IQ2_XXS, IQ2_XS, IQ3_XXS, IQ3_S), activations [`Q8KActs`] (GGML Q8_K
//! blocks): `sum_b d_x*(d_w*isum - dmin_w*msum)` with the integer sums of
//! `kiln_core::quant::Q8KDot` (`kquant.rs`, `avx2_k.rs`; the i-quants in
//! `iq23.rs`).
//!
//! These are the formulas of `kiln_core::quant::vec_dot_*_ref`; the kernels
//! differ from those references only in summation order and f32 rounding.
//!
//! Layout: `scalar.rs` holds the portable reference-shaped kernels, `avx2.rs`
//! the AVX2+FMA+F16C ones (32-element blocks); `kquant.rs` the Q8_K
//! activations, their dispatch and scalar kernel, `avx2_k.rs` their AVX2
//! kernels. This file holds the Q8 activation format, the dispatch (by
//! [`CpuFeatures`]) and the bounds checks that make the unsafe kernels
//! sound. The unit of work is a *tile*: `R` weight rows × `C` activation
//! rows, all `k` columns, results kept in registers.

use crate::CpuFeatures;
use kiln_core::quant::{BlockQ4_0, BlockQ4_1, BlockQ8_0, BlockQ8_1, QK};
use kiln_core::{DType, Error, Result};

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_k;
mod float;
mod iq23;
mod kquant;
mod mlx;
mod packed;
#[cfg(target_arch = "x86_64")]
mod packed_vnni;
#[cfg(target_arch = "x86_64")]
mod packed_vnni_k;
mod scalar;

pub use float::dot_float_row;
pub use kquant::{dot_tile_k, quantize_rows_k, vec_dot_q8_k, Q8KActs};
pub use mlx::{
    dequantize_mlx_row, dot_f32_tile, dot_mlx_row, dot_mlx_row_scalar, mlx_group_sums, F32_TILE_C,
    F32_TILE_R,
};
pub(crate) use packed::Acts;
pub use packed::{pack_supported, PackedWeights, PACK_MAX_M, PACK_ROWS};

/// Most weight rows per tile.
pub const TILE_R: usize = 4;
/// Most activation rows per tile.
pub const TILE_C: usize = 4;

/// Weight formats with an integer kernel.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QFormat {
    Q4_0,
    Q4_1,
    Q8_0,
    Q5_0,
    Q5_1,
    IQ4_NL,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    IQ4_XS,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ3_S,
}

impl QFormat {
    /// The integer-kernel format for a weight dtype (None for float weights).
    pub fn of(dtype: DType) -> Option<QFormat> {
        Some(match dtype {
            DType::Q4_0 => QFormat::Q4_0,
            DType::Q4_1 => QFormat::Q4_1,
            DType::Q8_0 => QFormat::Q8_0,
            DType::Q5_0 => QFormat::Q5_0,
            DType::Q5_1 => QFormat::Q5_1,
            DType::IQ4_NL => QFormat::IQ4_NL,
            DType::Q2_K => QFormat::Q2_K,
            DType::Q3_K => QFormat::Q3_K,
            DType::Q4_K => QFormat::Q4_K,
            DType::Q5_K => QFormat::Q5_K,
            DType::Q6_K => QFormat::Q6_K,
            DType::IQ4_XS => QFormat::IQ4_XS,
            DType::IQ2_XXS => QFormat::IQ2_XXS,
            DType::IQ2_XS => QFormat::IQ2_XS,
            DType::IQ3_XXS => QFormat::IQ3_XXS,
            DType::IQ3_S => QFormat::IQ3_S,
            _ => return None,
        })
    }

    /// The weight dtype.
    pub fn dtype(self) -> DType {
        match self {
            QFormat::Q4_0 => DType::Q4_0,
            QFormat::Q4_1 => DType::Q4_1,
            QFormat::Q8_0 => DType::Q8_0,
            QFormat::Q5_0 => DType::Q5_0,
            QFormat::Q5_1 => DType::Q5_1,
            QFormat::IQ4_NL => DType::IQ4_NL,
            QFormat::Q2_K => DType::Q2_K,
            QFormat::Q3_K => DType::Q3_K,
            QFormat::Q4_K => DType::Q4_K,
            QFormat::Q5_K => DType::Q5_K,
            QFormat::Q6_K => DType::Q6_K,
            QFormat::IQ4_XS => DType::IQ4_XS,
            QFormat::IQ2_XXS => DType::IQ2_XXS,
            QFormat::IQ2_XS => DType::IQ2_XS,
            QFormat::IQ3_XXS => DType::IQ3_XXS,
            QFormat::IQ3_S => DType::IQ3_S,
        }
    }

    /// Bytes per weight block.
    pub fn block_bytes(self) -> usize {
        self.dtype().type_size()
    }

    /// True for the super-block formats whose activations are Q8_K
    /// ([`Q8KActs`], 256 per block); false for the 32-block formats, whose
    /// activations are [`Q8Acts`] (Q8_0 / Q8_1 codes).
    pub fn uses_q8k(self) -> bool {
        matches!(
            self,
            QFormat::Q2_K
                | QFormat::Q3_K
                | QFormat::Q4_K
                | QFormat::Q5_K
                | QFormat::Q6_K
                | QFormat::IQ4_XS
                | QFormat::IQ2_XXS
                | QFormat::IQ2_XS
                | QFormat::IQ3_XXS
                | QFormat::IQ3_S
        )
    }

    /// True for the IQ2/IQ3 i-quants (`iq23.rs`: grid decode, then an
    /// integer dot).
    pub fn is_iq23(self) -> bool {
        matches!(
            self,
            QFormat::IQ2_XXS | QFormat::IQ2_XS | QFormat::IQ3_XXS | QFormat::IQ3_S
        )
    }

    /// True when the dot needs the activation block sums `s`.
    pub fn needs_sums(self) -> bool {
        matches!(
            self,
            QFormat::Q4_0 | QFormat::Q4_1 | QFormat::Q5_0 | QFormat::Q5_1
        )
    }
}

/// Activations `[m, k]` quantized to 8-bit codes, 32 per block:
/// `x[i, 32*b + j] ≈ d[i, b] * qs[i, b][j]` with `d = amax/127` kept in f32
/// (not rounded to f16 as GGML's Q8_0/Q8_1 do: one rounding less) and
/// `s[i, b] = d * sum_j qs[i, b][j]` (the Q8_1 sum).
///
/// The codes are those of GGML's `quantize_row_q8_0_ref` / `q8_1_ref`
/// (`round_half_away(x * (1/d))`). Buffers only grow, so a reused
/// `Q8Acts` does not allocate in steady state.
#[derive(Debug, Default, Clone)]
pub struct Q8Acts {
    m: usize,
    nb: usize,
    /// `m` padded up to a multiple of [`TILE_C`] (row stride of `st`).
    m4: usize,
    /// Codes, `[m * nb]` blocks, row-major.
    qs: Vec<[i8; QK]>,
    /// `[d, s]` per block, `[m * nb]`, row-major.
    ds: Vec<[f32; 2]>,
    /// Sums transposed: `st[b * m4 + i] = s[i, b]`, zero-padded rows.
    st: Vec<f32>,
}

impl Q8Acts {
    /// Empty; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Blocks per row (`k / 32`).
    pub fn blocks_per_row(&self) -> usize {
        self.nb
    }

    /// Size the buffers for `m` rows of `nb` blocks (grow only).
    fn reset(&mut self, m: usize, nb: usize) -> Result<()> {
        const OP: &str = "quant_dot::Q8Acts";
        let m4 = m.div_ceil(TILE_C) * TILE_C;
        let total = m
            .checked_mul(nb)
            .ok_or_else(|| Error::invalid(OP, format!("{m} x {nb} blocks overflow")))?;
        let st_len = m4
            .checked_mul(nb)
            .ok_or_else(|| Error::invalid(OP, format!("{m4} x {nb} blocks overflow")))?;
        self.m = m;
        self.nb = nb;
        self.m4 = m4;
        self.qs.resize(total, [0; QK]);
        self.ds.resize(total, [0.0; 2]);
        self.st.resize(st_len, 0.0);
        Ok(())
    }

    /// Quantize `x: [m, k]` (f32, `k` a multiple of 32) on the calling thread.
    pub fn quantize(&mut self, features: CpuFeatures, x: &[f32], m: usize, k: usize) -> Result<()> {
        self.quantize_with(x, m, k, |x, qs, ds| quantize_rows(features, x, qs, ds))
    }

    /// Quantize with a caller-supplied row quantizer (the matmul uses it to
    /// split rows over threads): `f(x_rows, qs_rows, ds_rows)` must fill
    /// `qs`/`ds` for all given rows, e.g. by calling [`quantize_rows`].
    pub(crate) fn quantize_with(
        &mut self,
        x: &[f32],
        m: usize,
        k: usize,
        f: impl FnOnce(&[f32], &mut [[i8; QK]], &mut [[f32; 2]]),
    ) -> Result<()> {
        const OP: &str = "quant_dot::Q8Acts::quantize";
        if !k.is_multiple_of(QK) {
            return Err(Error::BadRowLength {
                op: OP,
                dtype: DType::Q8_1,
                len: k,
                block: QK,
            });
        }
        let need = m
            .checked_mul(k)
            .ok_or_else(|| Error::invalid(OP, format!("{m} x {k} overflows")))?;
        kiln_core::error::check_len(OP, "x", x.len(), need)?;
        self.reset(m, k / QK)?;
        let total = m * self.nb;
        f(x, &mut self.qs[..total], &mut self.ds[..total]);
        self.transpose_sums();
        Ok(())
    }

    /// Fill `st` from `ds` (padding rows stay zero).
    fn transpose_sums(&mut self) {
        let (m, nb, m4) = (self.m, self.nb, self.m4);
        for b in 0..nb {
            let col = &mut self.st[b * m4..(b + 1) * m4];
            for (i, v) in col.iter_mut().enumerate() {
                *v = if i < m { self.ds[i * nb + b][1] } else { 0.0 };
            }
        }
    }

    /// Activations taken from GGML Q8_0 blocks (`m` rows of `nb` blocks):
    /// codes copied, `d` widened from f16, `s = d * sum(q)` in f32.
    pub fn from_q8_0(blocks: &[BlockQ8_0], m: usize, nb: usize) -> Result<Self> {
        let mut a = Q8Acts::new();
        a.reset(m, nb)?;
        kiln_core::error::check_len(
            "quant_dot::Q8Acts::from_q8_0",
            "blocks",
            blocks.len(),
            m * nb,
        )?;
        for ((q, ds), b) in a.qs.iter_mut().zip(a.ds.iter_mut()).zip(blocks) {
            *q = b.qs;
            let d = b.d.to_f32();
            let isum: i32 = b.qs.iter().map(|&v| i32::from(v)).sum();
            *ds = [d, d * isum as f32];
        }
        a.transpose_sums();
        Ok(a)
    }

    /// Activations taken from GGML Q8_1 blocks: codes copied, `d` and the
    /// stored `s` widened from f16 (so results match `vec_dot_q4_1_q8_1_ref`).
    pub fn from_q8_1(blocks: &[BlockQ8_1], m: usize, nb: usize) -> Result<Self> {
        let mut a = Q8Acts::new();
        a.reset(m, nb)?;
        kiln_core::error::check_len(
            "quant_dot::Q8Acts::from_q8_1",
            "blocks",
            blocks.len(),
            m * nb,
        )?;
        for ((q, ds), b) in a.qs.iter_mut().zip(a.ds.iter_mut()).zip(blocks) {
            *q = b.qs;
            *ds = [b.d.to_f32(), b.s.to_f32()];
        }
        a.transpose_sums();
        Ok(a)
    }

    /// Codes of row `i` (for tests).
    pub fn row_codes(&self, i: usize) -> &[[i8; QK]] {
        self.qs.get(i * self.nb..(i + 1) * self.nb).unwrap_or(&[])
    }

    /// `[d, s]` of row `i` (for tests).
    pub fn row_scales(&self, i: usize) -> &[[f32; 2]] {
        self.ds.get(i * self.nb..(i + 1) * self.nb).unwrap_or(&[])
    }
}

/// Quantize whole rows: `x.len() == 32 * qs.len() == 32 * ds.len()`
/// (shorter slices: only the common prefix is written).
pub fn quantize_rows(features: CpuFeatures, x: &[f32], qs: &mut [[i8; QK]], ds: &mut [[f32; 2]]) {
    #[cfg(target_arch = "x86_64")]
    if features.has_avx2_fma() {
        // SAFETY: AVX2/FMA/F16C were detected at run time (CpuFeatures::detect);
        // the kernel only touches the slices it is given, by chunks_exact.
        unsafe { avx2::quantize_rows(x, qs, ds) };
        return;
    }
    let _ = features;
    scalar::quantize_rows(x, qs, ds);
}

/// One tile of results, `out[r][c] = dot(w row r, activation row i0 + c)`.
pub type Tile = [[f32; TILE_C]; TILE_R];

/// Where a tile lies: `nr` weight rows starting at `w` (rows `row_bytes`
/// apart, `row_bytes == nb * block_bytes`) and `nc` activation rows starting
/// at `i0` (a multiple of [`TILE_C`]).
#[derive(Debug, Clone, Copy)]
pub struct TileSpec {
    pub nr: usize,
    pub i0: usize,
    pub nc: usize,
}

/// Compute one tile. Checks every bound the unsafe kernels rely on and
/// returns an error (never reads out of bounds) when one fails.
pub fn dot_tile(
    features: CpuFeatures,
    f: QFormat,
    w: &[u8],
    acts: &Q8Acts,
    t: TileSpec,
) -> Result<Tile> {
    const OP: &str = "quant_dot::dot_tile";
    let nb = acts.nb;
    let row_bytes = nb * f.block_bytes();
    let ok = !f.uses_q8k()
        && (1..=TILE_R).contains(&t.nr)
        && (1..=TILE_C).contains(&t.nc)
        && t.i0.is_multiple_of(TILE_C)
        && t.i0 + t.nc <= acts.m
        && w.len() >= t.nr * row_bytes;
    if !ok {
        return Err(Error::invalid(
            OP,
            format!(
                "bad tile: {:?} weights, {} weight rows of {row_bytes} bytes in {} bytes, activation rows {}..{} of {}",
                f,
                t.nr,
                w.len(),
                t.i0,
                t.i0 + t.nc,
                acts.m
            ),
        ));
    }
    #[cfg(target_arch = "x86_64")]
    if features.has_avx2_fma() {
        // SAFETY: features detected at run time; bounds checked above:
        // w holds nr rows of nb blocks, rows i0..i0+nc exist in qs/ds, and
        // st has m4 >= i0 + TILE_C entries per block (i0 % TILE_C == 0).
        return Ok(unsafe { avx2::dot_tile(f, w, row_bytes, acts, t) });
    }
    let _ = features;
    Ok(scalar::dot_tile(f, w, row_bytes, acts, t))
}

/// Raw parts of [`Q8Acts`] for the kernels.
pub(crate) struct ActsView<'a> {
    pub nb: usize,
    pub m4: usize,
    pub qs: &'a [[i8; QK]],
    pub ds: &'a [[f32; 2]],
    pub st: &'a [f32],
}

impl Q8Acts {
    pub(crate) fn view(&self) -> ActsView<'_> {
        ActsView {
            nb: self.nb,
            m4: self.m4,
            qs: &self.qs,
            ds: &self.ds,
            st: &self.st,
        }
    }
}

fn one_row_dot(features: CpuFeatures, f: QFormat, w: &[u8], acts: &Q8Acts) -> Result<f32> {
    let t = dot_tile(
        features,
        f,
        w,
        acts,
        TileSpec {
            nr: 1,
            i0: 0,
            nc: 1,
        },
    )?;
    Ok(t[0][0])
}

/// Q4_0 weights · Q8_0 activations, one row (convenience and test entry;
/// the matmul quantizes once and calls [`dot_tile`] directly).
pub fn vec_dot_q4_0_q8_0(features: CpuFeatures, w: &[BlockQ4_0], x: &[BlockQ8_0]) -> Result<f32> {
    kiln_core::error::check_len(
        "quant_dot::vec_dot_q4_0_q8_0",
        "activation blocks",
        x.len(),
        w.len(),
    )?;
    let acts = Q8Acts::from_q8_0(x, 1, x.len())?;
    one_row_dot(features, QFormat::Q4_0, bytemuck::cast_slice(w), &acts)
}

/// Q4_1 weights · Q8_1 activations, one row (uses the blocks' stored `s`).
pub fn vec_dot_q4_1_q8_1(features: CpuFeatures, w: &[BlockQ4_1], x: &[BlockQ8_1]) -> Result<f32> {
    kiln_core::error::check_len(
        "quant_dot::vec_dot_q4_1_q8_1",
        "activation blocks",
        x.len(),
        w.len(),
    )?;
    let acts = Q8Acts::from_q8_1(x, 1, x.len())?;
    one_row_dot(features, QFormat::Q4_1, bytemuck::cast_slice(w), &acts)
}

/// Q8_0 weights · Q8_0 activations, one row.
pub fn vec_dot_q8_0_q8_0(features: CpuFeatures, w: &[BlockQ8_0], x: &[BlockQ8_0]) -> Result<f32> {
    kiln_core::error::check_len(
        "quant_dot::vec_dot_q8_0_q8_0",
        "activation blocks",
        x.len(),
        w.len(),
    )?;
    let acts = Q8Acts::from_q8_0(x, 1, x.len())?;
    one_row_dot(features, QFormat::Q8_0, bytemuck::cast_slice(w), &acts)
}
