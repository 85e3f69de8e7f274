//! MLX affine weights ([`DType::Mlx`]) on CUDA: the kernels of each format
//! are a [`Variant`] of their family's source (matmul.cu, matmul_id.cu,
//! embedding.cu; the decoder is `kernels/mlx.cuh`), compiled on first use
//! with the format's bits, group size and scale dtype as compile-time
//! constants (the `KILN_MLX_*` defines of [`defines`]). A process compiles
//! only the formats it meets (a model uses one to three), the GGML modules
//! stay as they were, and each format's decoder has constant shifts, masks
//! and block sizes. Kernel handles are kept per format in
//! [`MlxFunctions`] (after the first launch of a format, no lock or lookup
//! per launch). [`prepare`] compiles many formats at once, in parallel
//! (test tables, warm-up).

use crate::kernels::{EMBEDDING, MATMUL, MATMUL_ID};
use crate::registry::Variant;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::CudaFunction;
use kiln_core::quant::{MlxFormat, MLX_AFFINE_BITS, MLX_AFFINE_GROUP_SIZES};
use kiln_core::DType;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// MLX formats: 6 bit widths × 3 group sizes × 3 scale dtypes.
pub const N_FORMATS: usize = 54;

/// Scale dtypes in table order (`KILN_MLX_SCALE` 0, 1, 2 in mlx.cuh).
const SCALES: [DType; 3] = [DType::F16, DType::BF16, DType::F32];

/// The families with MLX variants: (family, source).
pub const FAMILIES: [(&str, &str); 3] = [
    ("matmul", MATMUL),
    ("matmul_id", MATMUL_ID),
    ("embedding", EMBEDDING),
];

/// Position of `f` in the per-format tables (bits, then group size, then
/// scale dtype); `None` only for a format kiln-core would not build.
pub fn index(f: MlxFormat) -> Option<usize> {
    let b = MLX_AFFINE_BITS.iter().position(|&b| b == f.bits())?;
    let g = MLX_AFFINE_GROUP_SIZES
        .iter()
        .position(|&g| g == f.group_size())?;
    let s = SCALES.iter().position(|&s| s == f.scale_dtype())?;
    Some((b * MLX_AFFINE_GROUP_SIZES.len() + g) * SCALES.len() + s)
}

fn scale_code(f: MlxFormat) -> (usize, &'static str) {
    match f.scale_dtype() {
        DType::F16 => (0, "f16"),
        DType::BF16 => (1, "bf16"),
        _ => (2, "f32"),
    }
}

/// The format's part of its kernel names, e.g. `q4_g64_bf16`
/// (`mul_mv_mlx_q4_g64_bf16_f32_m1`).
pub fn tag(f: MlxFormat) -> String {
    format!("q{}_g{}_{}", f.bits(), f.group_size(), scale_code(f).1)
}

/// The `#define` prelude that makes a family's source the format's variant
/// (kernels/mlx.cuh).
pub fn defines(f: MlxFormat) -> String {
    format!(
        "#define KILN_MLX_BITS {}\n#define KILN_MLX_GROUP {}\n#define KILN_MLX_SCALE {}\n\
         #define KILN_MLX_TAG {}\n",
        f.bits(),
        f.group_size(),
        scale_code(f).0,
        tag(f)
    )
}

/// Cache and log name of a format's variant, e.g. `mlx_q4_g64_bf16`.
pub fn label(f: MlxFormat) -> String {
    format!("mlx_{}", tag(f))
}

/// Kernel handles of one family's MLX variants, per format, each table
/// filled on the format's first use.
pub(crate) struct MlxFunctions {
    slots: [OnceLock<Vec<CudaFunction>>; N_FORMATS],
}

impl Default for MlxFunctions {
    fn default() -> Self {
        MlxFunctions {
            slots: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl MlxFunctions {
    /// The kernels `names(tag(f))` of `family`'s variant for `f`, in that
    /// order (compiled, or read from the disk cache, on first use).
    pub(crate) fn get(
        &self,
        be: &CudaBackend,
        family: &'static str,
        src: &'static str,
        f: MlxFormat,
        names: fn(&str) -> Vec<String>,
    ) -> Result<&[CudaFunction]> {
        let slot = index(f)
            .and_then(|i| self.slots.get(i))
            .ok_or_else(|| CudaError::driver("mlx kernels", format!("no table for {f}")))?;
        if slot.get().is_none() {
            let (label, defs) = (label(f), defines(f));
            let v = Variant {
                label: &label,
                defines: &defs,
            };
            let fns = names(&tag(f))
                .iter()
                .map(|n| {
                    be.registry()
                        .variant_function(be.context(), family, src, v, n)
                })
                .collect::<Result<Vec<_>>>()?;
            let _ = slot.set(fns);
        }
        slot.get()
            .map(Vec::as_slice)
            .ok_or_else(|| CudaError::driver("mlx kernels", "table not filled"))
    }
}

/// The MLX kernel tables of a backend, one per family ([`FAMILIES`]).
#[derive(Default)]
pub(crate) struct MlxKernels {
    pub(crate) matmul: MlxFunctions,
    pub(crate) matmul_id: MlxFunctions,
    pub(crate) embedding: MlxFunctions,
}

/// Compile (or read from the disk cache) and load the variants of
/// `families` (names from [`FAMILIES`]; others are ignored) for every MLX
/// format in `wtypes` (other dtypes are ignored), on up to
/// `std::thread::available_parallelism` threads, so a table of many formats
/// does not compile them one after another. Launches then find the modules
/// loaded. Errors: the first compile or load error.
pub fn prepare(be: &CudaBackend, families: &[&str], wtypes: &[DType]) -> Result<()> {
    let mut work = Vec::new();
    for &(family, src) in FAMILIES.iter().filter(|(f, _)| families.contains(f)) {
        for &t in wtypes {
            if let DType::Mlx(f) = t {
                work.push((family, src, f));
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len());
    let next = AtomicUsize::new(0);
    let first_err: Mutex<Option<CudaError>> = Mutex::new(None);
    let (reg, ctx) = (be.registry(), be.context());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(&(family, src, f)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let (label, defs) = (label(f), defines(f));
                    let v = Variant {
                        label: &label,
                        defines: &defs,
                    };
                    if let Err(e) = reg.variant_module(ctx, family, src, v) {
                        if let Ok(mut slot) = first_err.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    match first_err.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(CudaError::driver("mlx prepare", "lock poisoned")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kiln_core::quant::MlxAffine;

    #[test]
    fn every_format_has_its_own_slot_and_tag() {
        let mut seen = std::collections::HashSet::new();
        let mut tags = std::collections::HashSet::new();
        for bits in MLX_AFFINE_BITS {
            for g in MLX_AFFINE_GROUP_SIZES {
                for sd in SCALES {
                    let DType::Mlx(f) = MlxAffine::new(bits, g, sd).unwrap().dtype().unwrap()
                    else {
                        unreachable!()
                    };
                    let i = index(f).unwrap();
                    assert!(i < N_FORMATS && seen.insert(i), "{f}");
                    assert!(tags.insert(tag(f)));
                }
            }
        }
        assert_eq!(seen.len(), N_FORMATS);
        let DType::Mlx(f) = MlxAffine::new(3, 64, DType::BF16).unwrap().dtype().unwrap() else {
            unreachable!()
        };
        assert_eq!(tag(f), "q3_g64_bf16");
        assert_eq!(
            defines(f),
            "#define KILN_MLX_BITS 3\n#define KILN_MLX_GROUP 64\n#define KILN_MLX_SCALE 1\n\
             #define KILN_MLX_TAG q3_g64_bf16\n"
        );
    }
}
