//! embedding on CUDA: validate → select → launch (`kernels/embedding.cu`).
//! Implements `kiln_core::ops::embedding` (row lookup + dequantize) for every
//! table format: F32, F16, BF16, every GGML block format (Q4_0, Q4_1, Q5_0,
//! Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K, IQ4_NL, IQ4_XS) and
//! every MLX format (one kernel per MLX format, compiled on first use:
//! `crate::mlx`). Q5_*, the K-quants but Q8_K and IQ4_* decode through the
//! mat-vec block decoders of `decode_kq.cuh`, one thread per 8 values; the
//! others one value per thread. Every value is rounded as the reference
//! (`d * q`, or `d * q` then `+ m`, unfused; Q8_K's f32 scale through
//! `kiln_mul_rn`, which keeps subnormals under `--use_fast_math`), so the
//! lookup is bit-exact: the testkit table compares bits, the compile test
//! checks the PTX (no `fma`, no flush in Q8_K), and
//! `scripts/check-cuda-embedding.py` runs the kernels as host C++.
//!
//! The ids live on the device, so the launcher cannot check them without a
//! sync: it validates the table and output sizes, and the kernel checks each
//! id. A row whose id is `>= n_vocab` is **filled with NaN** (never read out
//! of bounds). Callers that hold the ids on the host should also run
//! [`EmbeddingParams::validate`] with them to get a proper error.

use crate::kernels::EMBEDDING;
use crate::launch::ExArgs;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaFunction, CudaView, CudaViewMut, DevicePtr, DeviceRepr, LaunchConfig};
use kiln_core::error::check_len;
use kiln_core::ops::embedding::EmbeddingParams;
use kiln_core::quant::MlxFormat;
use kiln_core::{DType, Error};

/// Mirrors `struct EmbeddingParams` in embedding.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct EmbeddingK {
    n_ids: u64,
    n_vocab: u64,
    dim: u64,
    row_bytes: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for EmbeddingK {}

/// The kernel for a table format (one per [`DType`], named as its variant).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingKernel {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q8_1,
    Q8_K,
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
    /// `embedding_mlx_<tag>_f32` in the format's variant of embedding.cu.
    Mlx(MlxFormat),
}

/// An MLX format's kernel in its variant of embedding.cu.
fn mlx_kernel_names(tag: &str) -> Vec<String> {
    vec![format!("embedding_mlx_{tag}_f32")]
}

impl EmbeddingKernel {
    /// Entry point in embedding.cu (MLX: the name without the format's tag;
    /// its variant's kernel is `embedding_mlx_<tag>_f32`).
    pub fn name(self) -> &'static str {
        match self {
            EmbeddingKernel::F32 => "embedding_f32_f32",
            EmbeddingKernel::F16 => "embedding_f16_f32",
            EmbeddingKernel::BF16 => "embedding_bf16_f32",
            EmbeddingKernel::Q4_0 => "embedding_q4_0_f32",
            EmbeddingKernel::Q4_1 => "embedding_q4_1_f32",
            EmbeddingKernel::Q8_0 => "embedding_q8_0_f32",
            EmbeddingKernel::Q8_1 => "embedding_q8_1_f32",
            EmbeddingKernel::Q8_K => "embedding_q8_k_f32",
            EmbeddingKernel::Q5_0 => "embedding_q5_0_f32",
            EmbeddingKernel::Q5_1 => "embedding_q5_1_f32",
            EmbeddingKernel::IQ4_NL => "embedding_iq4_nl_f32",
            EmbeddingKernel::Q2_K => "embedding_q2_k_f32",
            EmbeddingKernel::Q3_K => "embedding_q3_k_f32",
            EmbeddingKernel::Q4_K => "embedding_q4_k_f32",
            EmbeddingKernel::Q5_K => "embedding_q5_k_f32",
            EmbeddingKernel::Q6_K => "embedding_q6_k_f32",
            EmbeddingKernel::IQ4_XS => "embedding_iq4_xs_f32",
            EmbeddingKernel::IQ2_XXS => "embedding_iq2_xxs_f32",
            EmbeddingKernel::IQ2_XS => "embedding_iq2_xs_f32",
            EmbeddingKernel::IQ3_XXS => "embedding_iq3_xxs_f32",
            EmbeddingKernel::IQ3_S => "embedding_iq3_s_f32",
            EmbeddingKernel::Mlx(_) => "embedding_mlx",
        }
    }

    /// Alignment the kernel needs of the table's device address (its widest
    /// scalar load: f32 values, Q8_K's f32 scale, MLX blocks' 32-bit words
    /// and the 32-bit words the decoders load from blocks whose size is a
    /// multiple of 4 bytes, else the f16 fields of the rows and blocks).
    pub fn table_align(self) -> u64 {
        match self {
            EmbeddingKernel::F32
            | EmbeddingKernel::Mlx(_)
            | EmbeddingKernel::Q8_K
            | EmbeddingKernel::Q5_1
            | EmbeddingKernel::Q2_K
            | EmbeddingKernel::Q4_K
            | EmbeddingKernel::Q5_K
            | EmbeddingKernel::IQ4_XS => 4,
            _ => 2,
        }
    }

    /// Values one thread writes per step: 8 (a decoder lane part) for the
    /// `decode_kq.cuh` and `decode_iq.cuh` formats, else 1.
    pub fn values_per_thread(self) -> usize {
        match self {
            EmbeddingKernel::Q5_0
            | EmbeddingKernel::Q5_1
            | EmbeddingKernel::IQ4_NL
            | EmbeddingKernel::Q2_K
            | EmbeddingKernel::Q3_K
            | EmbeddingKernel::Q4_K
            | EmbeddingKernel::Q5_K
            | EmbeddingKernel::Q6_K
            | EmbeddingKernel::IQ4_XS
            | EmbeddingKernel::IQ2_XXS
            | EmbeddingKernel::IQ2_XS
            | EmbeddingKernel::IQ3_XXS
            | EmbeddingKernel::IQ3_S => 8,
            _ => 1,
        }
    }

    fn function(self, be: &CudaBackend) -> Result<CudaFunction> {
        if let EmbeddingKernel::Mlx(f) = self {
            let fns = be
                .mlx
                .embedding
                .get(be, "embedding", EMBEDDING, f, mlx_kernel_names)?;
            return fns
                .first()
                .cloned()
                .ok_or_else(|| CudaError::driver("embedding", "MLX kernel table"));
        }
        be.function("embedding", EMBEDDING, self.name())
    }
}

/// Kernel choice: one per table format (every [`DType`] has one).
pub fn select_embedding(p: &EmbeddingParams) -> Result<EmbeddingKernel> {
    Ok(match p.dtype {
        DType::F32 => EmbeddingKernel::F32,
        DType::F16 => EmbeddingKernel::F16,
        DType::BF16 => EmbeddingKernel::BF16,
        DType::Q4_0 => EmbeddingKernel::Q4_0,
        DType::Q4_1 => EmbeddingKernel::Q4_1,
        DType::Q8_0 => EmbeddingKernel::Q8_0,
        DType::Q8_1 => EmbeddingKernel::Q8_1,
        DType::Q8_K => EmbeddingKernel::Q8_K,
        DType::Q5_0 => EmbeddingKernel::Q5_0,
        DType::Q5_1 => EmbeddingKernel::Q5_1,
        DType::IQ4_NL => EmbeddingKernel::IQ4_NL,
        DType::Q2_K => EmbeddingKernel::Q2_K,
        DType::Q3_K => EmbeddingKernel::Q3_K,
        DType::Q4_K => EmbeddingKernel::Q4_K,
        DType::Q5_K => EmbeddingKernel::Q5_K,
        DType::Q6_K => EmbeddingKernel::Q6_K,
        DType::IQ4_XS => EmbeddingKernel::IQ4_XS,
        DType::IQ2_XXS => EmbeddingKernel::IQ2_XXS,
        DType::IQ2_XS => EmbeddingKernel::IQ2_XS,
        DType::IQ3_XXS => EmbeddingKernel::IQ3_XXS,
        DType::IQ3_S => EmbeddingKernel::IQ3_S,
        DType::Mlx(f) => EmbeddingKernel::Mlx(f),
    })
}

/// `out[t, :] = dequantize(table[ids[t], :])` for `t < n_ids` on the backend's
/// stream. `table: [n_vocab, row_bytes]` raw GGML bytes, `ids: [n_ids]`,
/// `out: [n_ids, dim]`. Ids are checked on the device: an out-of-range id
/// yields a NaN row (see the module docs).
pub fn embedding(
    be: &CudaBackend,
    p: &EmbeddingParams,
    table: &CudaView<'_, u8>,
    ids: &CudaView<'_, u32>,
    n_ids: usize,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    // Validate: dim, block multiple and table size (no host ids to check here).
    p.validate(table.len(), &[], 0)?;
    check_len("embedding", "ids", ids.len(), n_ids)?;
    let n = n_ids
        .checked_mul(p.dim)
        .ok_or_else(|| Error::invalid("embedding", "n_ids * dim overflows"))?;
    check_len("embedding", "out", out.len(), n)?;
    let row_bytes = p.row_bytes()?;
    // Select.
    let kernel = select_embedding(p)?;
    let (ptr, _sync) = table.device_ptr(be.stream());
    if ptr % kernel.table_align() != 0 {
        return Err(Error::invalid(
            "embedding",
            format!(
                "{} table at device address {ptr:#x} is not {}-byte aligned",
                p.dtype,
                kernel.table_align()
            ),
        )
        .into());
    }
    if n == 0 {
        return Ok(());
    }
    // Launch: grid.x over ids, grid.y over chunks of a row (of the row's
    // values, or of its lane parts of 8 values).
    let f = kernel.function(be)?;
    let items = p.dim / kernel.values_per_thread();
    let threads = items.div_ceil(32).clamp(1, 8) as u32 * 32;
    let cfg = LaunchConfig {
        grid_dim: (
            n_ids.min(65_535) as u32,
            items.div_ceil(threads as usize).min(65_535) as u32,
            1,
        ),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let k = EmbeddingK {
        n_ids: n_ids as u64,
        n_vocab: p.n_vocab as u64,
        dim: p.dim as u64,
        row_bytes: row_bytes as u64,
    };
    let mut a = ExArgs::new(be);
    a.val(k).buf(table).buf(ids).buf_mut(out);
    // SAFETY: argument list matches embedding_*_f32(EmbeddingParams, const u8*,
    // const u32*, float*); the table holds n_vocab * row_bytes bytes at the
    // checked alignment, ids n_ids values, out n_ids * dim floats (validated
    // above); the kernel reads a row only for an id < n_vocab. PDL: the
    // kernel waits (kiln_pdl_enter) before touching anything.
    unsafe { a.launch(be, &f, cfg, be.pdl_entry()) }
        .map_err(|e| CudaError::driver("launch embedding", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every GGML format has its own kernel; its alignment divides the block
    /// size (so every row of an aligned table is aligned too), and the
    /// 8-values-per-thread kernels get whole 32-element virtual blocks.
    #[test]
    fn every_ggml_format_has_a_kernel() {
        let mut names = Vec::new();
        for dtype in DType::ALL {
            let p = EmbeddingParams {
                n_vocab: 1,
                dim: dtype.block_size(),
                dtype,
            };
            let k = select_embedding(&p).unwrap();
            assert_eq!(dtype.type_size() as u64 % k.table_align(), 0, "{dtype}");
            if k.values_per_thread() == 8 {
                assert_eq!(dtype.block_size() % 32, 0, "{dtype}");
            }
            names.push(k.name());
        }
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DType::ALL.len());
    }
}
