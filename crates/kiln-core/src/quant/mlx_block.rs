//! kiln's block layout for MLX affine weights ([`DType::Mlx`]).
//!
//! An mlx-lm checkpoint stores a quantized `[n, k]` linear as three arrays:
//! `weight` `[n, k*bits/32]` uint32 (each row one little-endian bit stream of
//! codes, see [`super::mlx`]), `scales` and `biases` `[n, k/group_size]` in
//! the scale dtype. kiln repacks them at load time into blocks of one group
//! each, so every row-wise op (matmul, embedding lookup, row views) treats
//! them like a GGML block format:
//!
//! ```text
//! block = scale (scale dtype) | bias (scale dtype) | group_size*bits/32 u32 words (LE)
//! ```
//!
//! A group's codes are a whole number of words for every supported
//! (bits, group size) pair, so the words are the same bits as in the mlx
//! stream and a block is 4-byte aligned relative to the row start.
//! Values are `scale * q + bias` as in the mlx reference
//! ([`super::mlx::dequantize_row_mlx_affine_ref`]).

use super::mlx::{MlxAffine, MlxRow, MlxRowMut};
use crate::error::check_len;
use crate::{DType, Error, Result};
use std::fmt;

/// Scale dtype of an [`MlxFormat`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum MlxScale {
    F16,
    BF16,
    F32,
}

/// A validated MLX affine format, compact enough to be a [`DType`] variant
/// (bits 2..8, group 32/64/128, scale dtype F16/BF16/F32). Build it from an
/// [`MlxAffine`] with [`MlxAffine::dtype`] or [`MlxFormat::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MlxFormat {
    bits: u8,
    group: u8,
    scale: MlxScale,
}

impl MlxFormat {
    /// Validate `p` (see [`MlxAffine::validate`]) and compact it.
    pub fn new(p: &MlxAffine) -> Result<MlxFormat> {
        p.validate()?;
        let scale = match p.scale_dtype {
            DType::F16 => MlxScale::F16,
            DType::BF16 => MlxScale::BF16,
            _ => MlxScale::F32,
        };
        Ok(MlxFormat {
            bits: p.bits as u8,
            group: p.group_size as u8,
            scale,
        })
    }

    /// Bits per code.
    pub fn bits(self) -> u32 {
        u32::from(self.bits)
    }

    /// Values per group (= per block).
    pub fn group_size(self) -> usize {
        usize::from(self.group)
    }

    /// The dtype of the scale and bias (F16, BF16 or F32).
    pub fn scale_dtype(self) -> DType {
        match self.scale {
            MlxScale::F16 => DType::F16,
            MlxScale::BF16 => DType::BF16,
            MlxScale::F32 => DType::F32,
        }
    }

    /// Bytes of one scale (or bias).
    pub fn scale_bytes(self) -> usize {
        match self.scale {
            MlxScale::F32 => 4,
            _ => 2,
        }
    }

    /// uint32 words of codes per block.
    pub fn words_per_block(self) -> usize {
        self.group_size() * self.bits() as usize / 32
    }

    /// Bytes per block: scale + bias + codes.
    pub fn block_bytes(self) -> usize {
        2 * self.scale_bytes() + 4 * self.words_per_block()
    }

    /// The full description.
    pub fn affine(self) -> MlxAffine {
        MlxAffine {
            bits: self.bits(),
            group_size: self.group_size(),
            scale_dtype: self.scale_dtype(),
        }
    }

    /// Read a scale or bias stored at the start of `b` (little-endian).
    #[inline]
    pub fn read_scale(self, b: &[u8]) -> f32 {
        match (self.scale, b) {
            (MlxScale::F32, &[x0, x1, x2, x3, ..]) => f32::from_le_bytes([x0, x1, x2, x3]),
            (MlxScale::F16, &[x0, x1, ..]) => {
                super::float::f16_bits_to_f32(u16::from_le_bytes([x0, x1]))
            }
            (MlxScale::BF16, &[x0, x1, ..]) => {
                super::float::bf16_bits_to_f32(u16::from_le_bytes([x0, x1]))
            }
            _ => 0.0,
        }
    }
}

impl fmt::Display for MlxFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MLX_Q{}_G{}_{}",
            self.bits,
            self.group,
            self.scale_dtype()
        )
    }
}

impl MlxAffine {
    /// The kiln block dtype for this format (validates).
    pub fn dtype(&self) -> Result<DType> {
        MlxFormat::new(self).map(DType::Mlx)
    }
}

/// Most words a block can hold (group 128 × 8 bits).
const MAX_WORDS: usize = 128 * 8 / 32;

/// Copy a block's code words (little-endian bytes) into `w`.
fn block_words(f: MlxFormat, block: &[u8], w: &mut [u32; MAX_WORDS]) {
    let codes = block.get(2 * f.scale_bytes()..).unwrap_or(&[]);
    for (dst, c) in w.iter_mut().zip(codes.chunks_exact(4)) {
        if let &[a, b, c2, d] = c {
            *dst = u32::from_le_bytes([a, b, c2, d]);
        }
    }
}

/// Dequantize whole blocks (lengths checked by the caller: `src` is
/// `out.len() / group` blocks): `out = scale * q + bias` in f32, the
/// product rounded first (no FMA), as the mlx reference.
pub(crate) fn dequantize_blocks_mlx(f: MlxFormat, src: &[u8], out: &mut [f32]) {
    let (sb, bits) = (f.scale_bytes(), f.bits());
    let mut words = [0u32; MAX_WORDS];
    for (block, o) in src
        .chunks_exact(f.block_bytes())
        .zip(out.chunks_exact_mut(f.group_size()))
    {
        let scale = f.read_scale(block);
        let bias = f.read_scale(block.get(sb..).unwrap_or(&[]));
        block_words(f, block, &mut words);
        for (j, v) in o.iter_mut().enumerate() {
            let q = super::mlx::get_code(&words, bits, j) as f32;
            let t = scale * q;
            *v = t + bias;
        }
    }
}

/// Quantize a row with mlx's algorithm into blocks (`out` holds exactly
/// the row's blocks; checked by the caller). Errors as
/// [`super::mlx::quantize_row_mlx_affine_ref`].
pub(crate) fn quantize_blocks_mlx(f: MlxFormat, x: &[f32], out: &mut [u8]) -> Result<()> {
    let p = f.affine();
    let sizes = p.row_bytes(x.len())?;
    let mut packed = vec![0u32; sizes.packed / 4];
    let mut scales = vec![0u8; sizes.scales];
    let mut biases = vec![0u8; sizes.biases];
    super::mlx::quantize_row_mlx_affine_ref(
        &p,
        x,
        MlxRowMut {
            packed: &mut packed,
            scales: &mut scales,
            biases: &mut biases,
        },
    )?;
    let row = MlxRow {
        packed: &packed,
        scales: &scales,
        biases: &biases,
    };
    interleave_row(f, row, out)
}

/// Interleave one row's three mlx arrays into kiln blocks. `dst` must hold
/// `row_len / group` blocks, the arrays that many groups.
fn interleave_row(f: MlxFormat, src: MlxRow<'_>, dst: &mut [u8]) -> Result<()> {
    const OP: &str = "mlx_affine::repack";
    let (sb, wpb) = (f.scale_bytes(), f.words_per_block());
    let groups = dst.len() / f.block_bytes();
    check_len(OP, "packed words", src.packed.len(), groups * wpb)?;
    check_len(OP, "scales bytes", src.scales.len(), groups * sb)?;
    check_len(OP, "biases bytes", src.biases.len(), groups * sb)?;
    for (g, block) in dst.chunks_exact_mut(f.block_bytes()).enumerate() {
        let (head, codes) = block.split_at_mut(2 * sb);
        head[..sb].copy_from_slice(&src.scales[g * sb..(g + 1) * sb]);
        head[sb..].copy_from_slice(&src.biases[g * sb..(g + 1) * sb]);
        for (c, w) in codes
            .chunks_exact_mut(4)
            .zip(&src.packed[g * wpb..(g + 1) * wpb])
        {
            c.copy_from_slice(&w.to_le_bytes());
        }
    }
    Ok(())
}

/// The three arrays of an mlx quantized `[rows, row_len]` matrix, as raw
/// little-endian bytes (as a safetensors file holds them).
#[derive(Clone, Copy, Debug)]
pub struct MlxArrays<'a> {
    /// `rows * row_len * bits / 32` uint32 words.
    pub packed: &'a [u8],
    /// `rows * row_len / group_size` scales in the scale dtype.
    pub scales: &'a [u8],
    /// Same shape and dtype as `scales`.
    pub biases: &'a [u8],
}

/// Repack an mlx quantized matrix (`rows × row_len` values) into kiln's
/// [`DType::Mlx`] blocks: `rows * (row_len / group)` blocks, row-major.
/// Errors name the array whose length does not match the shape.
pub fn repack_mlx_matrix(
    p: &MlxAffine,
    rows: usize,
    row_len: usize,
    src: MlxArrays<'_>,
) -> Result<Vec<u8>> {
    const OP: &str = "mlx_affine::repack";
    let f = MlxFormat::new(p)?;
    let sizes = p.row_bytes(row_len)?;
    let total = |per_row: usize, what: &str| {
        rows.checked_mul(per_row)
            .ok_or_else(|| Error::invalid(OP, format!("{what}: {rows} rows overflow")))
    };
    check_len(
        OP,
        "packed bytes",
        src.packed.len(),
        total(sizes.packed, "packed")?,
    )?;
    check_len(
        OP,
        "scales bytes",
        src.scales.len(),
        total(sizes.scales, "scales")?,
    )?;
    check_len(
        OP,
        "biases bytes",
        src.biases.len(),
        total(sizes.biases, "biases")?,
    )?;
    let row_out = DType::Mlx(f).row_bytes(OP, row_len)?;
    let mut out = vec![0u8; total(row_out, "blocks")?];
    let mut words = vec![0u32; sizes.packed / 4];
    for (r, dst) in out.chunks_exact_mut(row_out.max(1)).enumerate() {
        let pk = &src.packed[r * sizes.packed..(r + 1) * sizes.packed];
        for (w, c) in words.iter_mut().zip(pk.chunks_exact(4)) {
            if let &[a, b, c2, d] = c {
                *w = u32::from_le_bytes([a, b, c2, d]);
            }
        }
        let row = MlxRow {
            packed: &words,
            scales: &src.scales[r * sizes.scales..(r + 1) * sizes.scales],
            biases: &src.biases[r * sizes.biases..(r + 1) * sizes.biases],
        };
        interleave_row(f, row, dst)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::quant::mlx::{
        dequantize_row_mlx_affine_ref, MLX_AFFINE_BITS, MLX_AFFINE_GROUP_SIZES,
    };
    use crate::quant::{dequantize_row, quantize_row};

    /// Blocks dequantize exactly as the mlx-layout reference, for every
    /// format; repacking the mlx arrays gives the same blocks as quantizing
    /// into blocks directly.
    #[test]
    fn blocks_match_the_mlx_layout_reference() {
        let mut seed = 12345u32;
        let mut rnd = || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        };
        for bits in MLX_AFFINE_BITS {
            for g in MLX_AFFINE_GROUP_SIZES {
                for sd in [DType::F16, DType::BF16, DType::F32] {
                    let p = MlxAffine::new(bits, g, sd).unwrap();
                    let dt = p.dtype().unwrap();
                    let (rows, k) = (3, 3 * g);
                    let x: Vec<f32> = (0..rows * k).map(|_| rnd()).collect();
                    let s = p.row_bytes(k).unwrap();
                    let (mut pk, mut sc, mut bi) = (vec![], vec![], vec![]);
                    let mut blocks = vec![0u8; rows * dt.row_bytes("t", k).unwrap()];
                    for (r, xr) in x.chunks(k).enumerate() {
                        let mut w = vec![0u32; s.packed / 4];
                        let (mut a, mut b) = (vec![0u8; s.scales], vec![0u8; s.biases]);
                        let dst = MlxRowMut {
                            packed: &mut w,
                            scales: &mut a,
                            biases: &mut b,
                        };
                        crate::quant::quantize_row_mlx_affine_ref(&p, xr, dst).unwrap();
                        let mut want = vec![0f32; k];
                        let row = MlxRow {
                            packed: &w,
                            scales: &a,
                            biases: &b,
                        };
                        dequantize_row_mlx_affine_ref(&p, row, &mut want).unwrap();
                        let rb = blocks.len() / rows;
                        let blk = &mut blocks[r * rb..(r + 1) * rb];
                        quantize_row(dt, xr, blk).unwrap();
                        let mut got = vec![f32::NAN; k];
                        dequantize_row(dt, blk, &mut got).unwrap();
                        assert_eq!(got, want, "{dt}");
                        pk.extend(w.iter().flat_map(|v| v.to_le_bytes()));
                        sc.extend(a);
                        bi.extend(b);
                    }
                    let arrays = MlxArrays {
                        packed: &pk,
                        scales: &sc,
                        biases: &bi,
                    };
                    assert_eq!(repack_mlx_matrix(&p, rows, k, arrays).unwrap(), blocks);
                    let short = MlxArrays {
                        scales: &sc[1..],
                        ..arrays
                    };
                    let e = repack_mlx_matrix(&p, rows, k, short).unwrap_err();
                    assert!(e.to_string().contains("scales bytes"), "{e}");
                }
            }
        }
    }

    #[test]
    fn format_basics() {
        let p = MlxAffine::new(4, 64, DType::BF16).unwrap();
        let dt = p.dtype().unwrap();
        assert_eq!(dt.to_string(), "MLX_Q4_G64_BF16");
        assert_eq!((dt.block_size(), dt.type_size()), (64, 36));
        assert!(dt.is_quantized() && dt.ggml_id().is_none());
        assert_eq!(dt.bits_per_weight(), p.bits_per_weight());
        let DType::Mlx(f) = dt else { unreachable!() };
        assert_eq!(f.affine(), p);
        assert!(MlxAffine {
            bits: 7,
            group_size: 64,
            scale_dtype: DType::F16
        }
        .dtype()
        .is_err());
        let e = dt.row_bytes("t", 96).unwrap_err();
        assert!(e.to_string().contains("96"), "{e}");
    }
}
