//! The attention module's kernel table: the entry points of
//! `kernels/attention.cu` (and the headers it includes), their names per
//! cache type, and the per-type handle table of the backend
//! (`CudaBackend::attn_fns`), filled on a type's first launch.

use super::mma;
use super::{DECG_HEAD_DIMS, TILED_HEAD_DIMS};
use crate::kernels::ATTENTION;
use crate::registry::Variant;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::CudaFunction;
use kiln_core::KvType;

/// The variant of `attention.cu` for a cache type (`None`: f32, the family
/// module itself).
pub fn kv_variant(kv: KvType) -> Option<Variant<'static>> {
    match kv {
        KvType::F32 => None,
        KvType::F16 => Some(Variant {
            label: "kv_f16",
            defines: "#define KILN_KV 1\n",
        }),
        KvType::BF16 => Some(Variant {
            label: "kv_bf16",
            defines: "#define KILN_KV 2\n",
        }),
    }
}

/// Warps per block of the warp decode kernel (`DEC_WARPS` in attention.cu).
pub(super) const DEC_WARPS: usize = 4;
/// The decode kernel instances' values per lane (`DEC_ENTRY` in attention.cu).
pub(super) const DEC_DPLS: [usize; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 16];

/// A kernel of the attention module (its slot in the per-type table).
#[derive(Debug, Clone, Copy)]
pub(super) enum Kern {
    Split {
        at: bool,
        direct: bool,
    },
    /// The warp decode kernel holding `DEC_DPLS[i]` values per lane.
    Decode {
        i: usize,
        at: bool,
    },
    /// The lane-group decode kernel for `DECG_HEAD_DIMS[i]`.
    DecodeGroups {
        i: usize,
        at: bool,
    },
    /// The tiled kernel for `TILED_HEAD_DIMS[i]`.
    Tiled {
        i: usize,
    },
    /// The tensor-core prefill kernel for `mma::MMA_HEAD_DIMS[i]`.
    Mma {
        i: usize,
    },
    /// The pipelined tensor-core prefill kernel (v2) for `mma::MMA_HEAD_DIMS[i]`.
    Mma2 {
        i: usize,
    },
}

impl Kern {
    pub(super) const COUNT: usize = 4
        + 2 * DEC_DPLS.len()
        + TILED_HEAD_DIMS.len()
        + 2 * mma::MMA_HEAD_DIMS.len()
        + 2 * DECG_HEAD_DIMS.len();

    pub(super) fn slot(self) -> usize {
        match self {
            Kern::Split { at, direct } => usize::from(at) * 2 + usize::from(direct),
            Kern::Decode { i, at } => 4 + usize::from(at) * DEC_DPLS.len() + i,
            Kern::Tiled { i } => 4 + 2 * DEC_DPLS.len() + i,
            Kern::Mma { i } => 4 + 2 * DEC_DPLS.len() + TILED_HEAD_DIMS.len() + i,
            Kern::DecodeGroups { i, at } => {
                4 + 2 * DEC_DPLS.len()
                    + TILED_HEAD_DIMS.len()
                    + mma::MMA_HEAD_DIMS.len()
                    + usize::from(at) * DECG_HEAD_DIMS.len()
                    + i
            }
            Kern::Mma2 { i } => {
                4 + 2 * DEC_DPLS.len()
                    + TILED_HEAD_DIMS.len()
                    + mma::MMA_HEAD_DIMS.len()
                    + 2 * DECG_HEAD_DIMS.len()
                    + i
            }
        }
    }

    /// Entry point name for cache type `kv` (e.g. `attention_decode_l4_at_bf16`).
    fn name(self, kv: KvType) -> String {
        let at = |a: bool| if a { "at_" } else { "" };
        match self {
            Kern::Split { at: a, direct } => format!(
                "attention_split_{}{}{kv}",
                if direct { "direct_" } else { "" },
                at(a)
            ),
            Kern::Decode { i, at: a } => {
                format!("attention_decode_l{}_{}{kv}", DEC_DPLS[i], at(a))
            }
            Kern::Tiled { i } => format!("attention_tiled_d{}_{kv}", TILED_HEAD_DIMS[i]),
            Kern::Mma { i } => format!("attention_mma_d{}_{kv}", mma::MMA_HEAD_DIMS[i]),
            Kern::Mma2 { i } => format!("attention_mma2_d{}_{kv}", mma::MMA_HEAD_DIMS[i]),
            Kern::DecodeGroups { i, at: a } => {
                format!("attention_decg_d{}_{}{kv}", DECG_HEAD_DIMS[i], at(a))
            }
        }
    }

    /// Every kernel, in slot order.
    pub(super) fn all() -> Vec<Kern> {
        let mut v: Vec<Kern> = Vec::with_capacity(Self::COUNT);
        for at in [false, true] {
            for direct in [false, true] {
                v.push(Kern::Split { at, direct });
            }
        }
        for at in [false, true] {
            v.extend((0..DEC_DPLS.len()).map(|i| Kern::Decode { i, at }));
        }
        v.extend((0..TILED_HEAD_DIMS.len()).map(|i| Kern::Tiled { i }));
        v.extend((0..mma::MMA_HEAD_DIMS.len()).map(|i| Kern::Mma { i }));
        for at in [false, true] {
            v.extend((0..DECG_HEAD_DIMS.len()).map(|i| Kern::DecodeGroups { i, at }));
        }
        v.extend((0..mma::MMA_HEAD_DIMS.len()).map(|i| Kern::Mma2 { i }));
        v
    }
}

/// Every entry point the module for `kv` holds (the compile test checks them).
pub fn kernel_names(kv: KvType) -> Vec<String> {
    Kern::all().into_iter().map(|k| k.name(kv)).collect()
}

/// The handle of `k` for cache type `kv` (the table is filled, compiling
/// the variant if needed, on the type's first launch).
pub(super) fn kernel_fn(be: &CudaBackend, kv: KvType, k: Kern) -> Result<&CudaFunction> {
    let ti = match kv {
        KvType::F32 => 0,
        KvType::F16 => 1,
        KvType::BF16 => 2,
    };
    let slot = &be.attn_fns[ti];
    if slot.get().is_none() {
        let table = Kern::all()
            .into_iter()
            .map(|k| {
                let name = k.name(kv);
                match kv_variant(kv) {
                    None => be.function_named("attention", ATTENTION, &name),
                    Some(v) => be.registry().variant_function(
                        be.context(),
                        "attention",
                        ATTENTION,
                        v,
                        &name,
                    ),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let _ = slot.set(table);
    }
    slot.get()
        .and_then(|t| t.get(k.slot()))
        .ok_or_else(|| CudaError::driver("attention", "kernel table not filled"))
}
