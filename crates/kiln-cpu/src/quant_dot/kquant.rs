//! Q8_K activations and the super-block (QK_K = 256) dot kernels: Q2_K,
//! Q3_K, Q4_K, Q5_K, Q6_K and IQ4_XS weights against GGML `block_q8_K`
//! activations, as ggml's CPU backend pairs them (the IQ2/IQ3 i-quants share
//! the activations and checks; their kernels are in `iq23.rs`).
//!
//! Activations are quantized by `kiln_core`'s reference Q8_K quantizer
//! (bit-exact with ggml: f32 scale `d = max / -127`, round-half-even codes,
//! 16-element sums `bsums`). Per block pair the kernels compute the integer
//! sums of `kiln_core::quant::Q8KDot` and add
//! `d_x * d_w * isum - d_x * dmin_w * msum` in f32.
//!
//! The scalar tile (fallback and `KILN_NO_SIMD=1`) reuses `Q8KDot::int_dot`
//! per block; `avx2_k.rs` holds the AVX2 kernels. [`dot_tile_k`] checks
//! every bound the unsafe kernels rely on.

use super::QFormat;
use super::{Tile, TileSpec, TILE_C, TILE_R};
use crate::CpuFeatures;
use kiln_core::quant::{
    BlockFormat, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, Q8KDot,
    QK_K,
};
use kiln_core::{DType, Error, Result};

/// Activations `[m, k]` as GGML Q8_K blocks (`k / 256` per row, row-major).
/// Buffers only grow, so a reused `Q8KActs` does not allocate in steady state.
#[derive(Debug, Default, Clone)]
pub struct Q8KActs {
    m: usize,
    nb: usize,
    blocks: Vec<BlockQ8K>,
}

const ZERO_BLOCK: BlockQ8K = BlockQ8K {
    d: 0.0,
    qs: [0; QK_K],
    bsums: [0; 16],
};

impl Q8KActs {
    /// Empty; buffers grow on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rows.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Blocks per row (`k / 256`).
    pub fn blocks_per_row(&self) -> usize {
        self.nb
    }

    /// The blocks of row `i` (empty when out of range).
    pub fn row(&self, i: usize) -> &[BlockQ8K] {
        if i >= self.m {
            return &[];
        }
        self.blocks
            .get(i * self.nb..(i + 1) * self.nb)
            .unwrap_or(&[])
    }

    /// Block `b` of row `i` (`None` when out of range).
    pub(crate) fn block(&self, i: usize, b: usize) -> Option<&BlockQ8K> {
        if i >= self.m || b >= self.nb {
            return None;
        }
        self.blocks.get(i * self.nb + b)
    }

    pub(crate) fn all(&self) -> &[BlockQ8K] {
        &self.blocks[..self.m * self.nb]
    }

    fn reset(&mut self, m: usize, nb: usize) -> Result<()> {
        let total = m.checked_mul(nb).ok_or_else(|| {
            Error::invalid("quant_dot::Q8KActs", format!("{m} x {nb} blocks overflow"))
        })?;
        self.m = m;
        self.nb = nb;
        if self.blocks.len() < total {
            self.blocks.resize(total, ZERO_BLOCK);
        }
        Ok(())
    }

    /// Quantize `x: [m, k]` (`k` a multiple of 256) on the calling thread.
    pub fn quantize(&mut self, features: CpuFeatures, x: &[f32], m: usize, k: usize) -> Result<()> {
        self.quantize_with(x, m, k, |x, b| quantize_rows_k(features, x, b))
    }

    /// Quantize with a caller-supplied row quantizer (the matmul splits rows
    /// over threads): `f(x_rows, blocks)` must fill every block, e.g. by
    /// calling [`quantize_rows_k`].
    pub(crate) fn quantize_with(
        &mut self,
        x: &[f32],
        m: usize,
        k: usize,
        f: impl FnOnce(&[f32], &mut [BlockQ8K]),
    ) -> Result<()> {
        const OP: &str = "quant_dot::Q8KActs::quantize";
        if !k.is_multiple_of(QK_K) {
            return Err(Error::BadRowLength {
                op: OP,
                dtype: DType::Q8_K,
                len: k,
                block: QK_K,
            });
        }
        let need = m
            .checked_mul(k)
            .ok_or_else(|| Error::invalid(OP, format!("{m} x {k} overflows")))?;
        kiln_core::error::check_len(OP, "x", x.len(), need)?;
        self.reset(m, k / QK_K)?;
        f(x, &mut self.blocks[..m * (k / QK_K)]);
        Ok(())
    }

    /// Activations taken from GGML Q8_K blocks (`m` rows of `nb` blocks).
    pub fn from_blocks(blocks: &[BlockQ8K], m: usize, nb: usize) -> Result<Self> {
        let mut a = Q8KActs::new();
        a.reset(m, nb)?;
        kiln_core::error::check_len(
            "quant_dot::Q8KActs::from_blocks",
            "blocks",
            blocks.len(),
            m * nb,
        )?;
        a.blocks[..m * nb].copy_from_slice(blocks);
        Ok(a)
    }
}

/// Quantize whole rows to Q8_K: `x.len() == 256 * blocks.len()` (shorter:
/// only the common prefix is written). ggml's reference quantizer: the
/// codes are small integers computed in f32, identical on every path.
pub fn quantize_rows_k(features: CpuFeatures, x: &[f32], blocks: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if features.has_avx2_fma() {
        for (xb, b) in x.chunks_exact(QK_K).zip(blocks.iter_mut()) {
            // SAFETY: AVX2/FMA/F16C detected at run time; xb holds 256 f32.
            *b = unsafe { super::avx2_k::quantize_block_k(xb) };
        }
        return;
    }
    let _ = features;
    for (xb, b) in x.chunks_exact(QK_K).zip(blocks.iter_mut()) {
        *b = BlockQ8K::quantize(xb);
    }
}

/// Compute one tile of a Q8_K-activation format. Checks every bound the
/// unsafe kernels rely on and returns an error (never reads out of bounds)
/// when one fails.
pub fn dot_tile_k(
    features: CpuFeatures,
    f: QFormat,
    w: &[u8],
    acts: &Q8KActs,
    t: TileSpec,
) -> Result<Tile> {
    const OP: &str = "quant_dot::dot_tile_k";
    let nb = acts.nb;
    let row_bytes = nb * f.block_bytes();
    let ok = f.uses_q8k()
        && (1..=TILE_R).contains(&t.nr)
        && (1..=TILE_C).contains(&t.nc)
        && t.i0 + t.nc <= acts.m
        && w.len() >= t.nr * row_bytes;
    if !ok {
        return Err(Error::invalid(
            OP,
            format!(
                "bad tile: {f:?} weights, {} rows of {row_bytes} bytes in {} bytes, activation rows {}..{} of {}",
                t.nr,
                w.len(),
                t.i0,
                t.i0 + t.nc,
                acts.m
            ),
        ));
    }
    if f.is_iq23() {
        return Ok(super::iq23::dot_tile(features, f, w, row_bytes, acts, t));
    }
    #[cfg(target_arch = "x86_64")]
    if features.has_avx2_fma() {
        // SAFETY: features detected at run time; bounds checked above: w
        // holds nr rows of nb blocks, activation rows i0..i0+nc exist.
        return Ok(unsafe { super::avx2_k::dot_tile(f, w, row_bytes, acts, t) });
    }
    let _ = features;
    Ok(match f {
        QFormat::Q2_K => scalar_tile::<BlockQ2K>(w, row_bytes, acts, t),
        QFormat::Q3_K => scalar_tile::<BlockQ3K>(w, row_bytes, acts, t),
        QFormat::Q4_K => scalar_tile::<BlockQ4K>(w, row_bytes, acts, t),
        QFormat::Q5_K => scalar_tile::<BlockQ5K>(w, row_bytes, acts, t),
        QFormat::Q6_K => scalar_tile::<BlockQ6K>(w, row_bytes, acts, t),
        _ => scalar_tile::<BlockIQ4XS>(w, row_bytes, acts, t),
    })
}

/// Portable tile: per block pair the integer sums of [`Q8KDot::int_dot`],
/// scaled and accumulated in f32 (block term
/// `d_x*d_w*isum - d_x*dmin_w*msum`). Slicing stays checked.
fn scalar_tile<B: Q8KDot>(w: &[u8], row_bytes: usize, acts: &Q8KActs, t: TileSpec) -> Tile {
    let bs = std::mem::size_of::<B>();
    let nb = acts.nb;
    let mut out = [[0.0f32; TILE_C]; TILE_R];
    for (r, out_r) in out.iter_mut().enumerate().take(t.nr) {
        let row = w.get(r * row_bytes..(r + 1) * row_bytes).unwrap_or(&[]);
        for (b, chunk) in row.chunks_exact(bs).enumerate() {
            let blk: B = bytemuck::pod_read_unaligned(chunk);
            let (dw, dmin) = blk.scales();
            for (c, o) in out_r.iter_mut().enumerate().take(t.nc) {
                let Some(x) = acts.blocks.get((t.i0 + c) * nb + b) else {
                    continue;
                };
                let (isum, msum) = blk.int_dot(x);
                *o += x.d * (dw * isum as f32) - x.d * (dmin * msum as f32);
            }
        }
    }
    out
}

/// One row of a Q8_K-activation format (`w`: `x.len()` weight blocks of
/// format `f`) against Q8_K activation blocks: a convenience and test
/// entry (the matmul quantizes once and calls [`dot_tile_k`] directly).
pub fn vec_dot_q8_k(features: CpuFeatures, f: QFormat, w: &[u8], x: &[BlockQ8K]) -> Result<f32> {
    const OP: &str = "quant_dot::vec_dot_q8_k";
    if !f.uses_q8k() {
        return Err(Error::UnsupportedDType {
            op: OP,
            dtype: f.dtype(),
        });
    }
    kiln_core::error::check_len(OP, "w (bytes)", w.len(), x.len() * f.block_bytes())?;
    let acts = Q8KActs::from_blocks(x, 1, x.len())?;
    let t = dot_tile_k(
        features,
        f,
        w,
        &acts,
        TileSpec {
            nr: 1,
            i0: 0,
            nc: 1,
        },
    )?;
    Ok(t[0][0])
}
