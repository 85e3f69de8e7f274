//! Case table and driver for `embedding` (row lookup + dequantize): the
//! GGML and float formats of [`CASES`], and MLX affine tables in the
//! [`mlx_cover`] formats (every bits value, group size and scale dtype) with
//! one group per row, odd group counts and a long row.

use super::matmul_mlx::mlx_cover;
use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_rows, Guarded, Report, Tol};
use kiln_core::ops::embedding::{embedding_ref, EmbeddingParams};
use kiln_core::DType;
use rand::Rng;

/// Implementation under test: `(params, table bytes, ids, out)`.
pub type EmbeddingFn<'a> =
    dyn Fn(&EmbeddingParams, &[u8], &[u32], &mut [f32]) -> kiln_core::Result<()> + 'a;

/// One case: table shape and format, number of ids, large?
#[derive(Debug, Clone, Copy)]
pub struct EmbeddingCase {
    pub n_vocab: usize,
    pub dim: usize,
    pub dtype: DType,
    pub n_ids: usize,
    pub big: bool,
}

const fn c(n_vocab: usize, dim: usize, dtype: DType, n_ids: usize, big: bool) -> EmbeddingCase {
    EmbeddingCase {
        n_vocab,
        dim,
        dtype,
        n_ids,
        big,
    }
}

/// Every dtype; odd dims for the float formats; odd vocabularies with one
/// block per row and with several for the quantized ones (the 256-element
/// formats also eight super-blocks, a 2048-wide model's row); one id; no
/// ids; SmolLM2's Q8_0 `token_embd` (49152 x 576) for a 7-token prompt and a
/// 512-token prefill, a 2048-wide Q4_K table (as Q4_K_M files store
/// `token_embd`) for a 512-token prefill.
pub const CASES: &[EmbeddingCase] = &[
    c(1, 1, DType::F32, 1, false),
    c(5, 7, DType::F32, 9, false),
    c(100, 33, DType::F32, 17, false),
    c(5, 7, DType::F16, 9, false),
    c(100, 576, DType::F16, 3, false),
    c(5, 7, DType::BF16, 9, false),
    c(100, 33, DType::BF16, 4, false),
    c(3, 32, DType::Q4_0, 5, false),
    c(50, 96, DType::Q4_0, 9, false),
    c(3, 32, DType::Q4_1, 5, false),
    c(50, 576, DType::Q4_1, 9, false),
    c(3, 32, DType::Q8_0, 5, false),
    c(3, 64, DType::Q8_1, 5, false),
    c(10, 32, DType::Q8_0, 0, false),
    c(49152, 576, DType::Q8_0, 7, false),
    c(49152, 576, DType::Q8_0, 512, true),
    c(3, 32, DType::Q5_0, 5, false),
    c(33, 96, DType::Q5_0, 9, false),
    c(3, 32, DType::Q5_1, 5, false),
    c(7, 576, DType::Q5_1, 9, false),
    c(3, 32, DType::IQ4_NL, 5, false),
    c(33, 96, DType::IQ4_NL, 1, false),
    c(3, 256, DType::Q2_K, 5, false),
    c(7, 768, DType::Q2_K, 9, false),
    c(3, 256, DType::Q3_K, 5, false),
    c(7, 768, DType::Q3_K, 9, false),
    c(3, 256, DType::Q4_K, 5, false),
    c(7, 768, DType::Q4_K, 9, false),
    c(1031, 2048, DType::Q4_K, 7, false),
    c(32003, 2048, DType::Q4_K, 512, true),
    c(3, 256, DType::Q5_K, 5, false),
    c(7, 768, DType::Q5_K, 9, false),
    c(3, 256, DType::Q6_K, 5, false),
    c(7, 768, DType::Q6_K, 9, false),
    c(1031, 2048, DType::Q6_K, 1, false),
    c(3, 256, DType::Q8_K, 5, false),
    c(7, 768, DType::Q8_K, 9, false),
    c(3, 256, DType::IQ4_XS, 5, false),
    c(7, 768, DType::IQ4_XS, 9, false),
    c(3, 256, DType::IQ2_XXS, 5, false),
    c(7, 768, DType::IQ2_XXS, 9, false),
    c(3, 256, DType::IQ2_XS, 5, false),
    c(7, 768, DType::IQ2_XS, 9, false),
    c(3, 256, DType::IQ3_XXS, 5, false),
    c(7, 768, DType::IQ3_XXS, 9, false),
    c(3, 256, DType::IQ3_S, 5, false),
    c(7, 768, DType::IQ3_S, 9, false),
    c(5, 256, DType::Q6_K, 0, false),
];

/// MLX table shapes: `(n_vocab, dim in groups, n_ids)`, dim = one group,
/// three groups and 4224 values (33 groups of 128, 66 of 64, 132 of 32).
const MLX_SHAPES: [(usize, usize, usize); 3] = [(7, 1, 5), (33, 3, 9), (5, 0, 3)];

/// Random ids that include the first and last row and a repeat.
fn ids(rng: &mut impl Rng, n_vocab: usize, n: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..n).map(|_| rng.gen_range(0..n_vocab as u32)).collect();
    if n >= 3 {
        ids[0] = 0;
        ids[n - 1] = (n_vocab - 1) as u32;
        ids[1] = ids[n - 1];
    }
    ids
}

/// Run every `embedding` case against `imp`.
pub fn check_embedding(imp: &EmbeddingFn<'_>) -> Report {
    check_embedding_with(imp, &Options::default())
}

/// [`check_embedding`] with explicit options.
pub fn check_embedding_with(imp: &EmbeddingFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("embedding", opts);
    // Bit-exact: the reference rounds each multiply and add once (none fused,
    // codes and f16 / bf16 scales convert exactly), which a correct backend
    // reproduces; an error of one ulp (a fused multiply-add) or a flushed
    // subnormal would pass any looser bound.
    let tol = run.tol(Tol::EXACT);
    let mlx = mlx_cover().into_iter().flat_map(|dtype| {
        MLX_SHAPES.map(|(n_vocab, groups, n_ids)| {
            let g = dtype.block_size();
            c(
                n_vocab,
                if groups == 0 { 4224 } else { groups * g },
                dtype,
                n_ids,
                false,
            )
        })
    });
    for cs in CASES.iter().copied().chain(mlx) {
        let name = format!(
            "{} vocab={} dim={} ids={}",
            cs.dtype, cs.n_vocab, cs.dim, cs.n_ids
        );
        run.case(&name, cs.big, |rng| {
            let p = EmbeddingParams {
                n_vocab: cs.n_vocab,
                dim: cs.dim,
                dtype: cs.dtype,
            };
            let table = rand_rows(rng, cs.dtype, cs.n_vocab, cs.dim);
            let ids = ids(rng, cs.n_vocab, cs.n_ids);
            let mut want = vec![0.0; cs.n_ids * cs.dim];
            embedding_ref(&p, &table, &ids, &mut want).map_err(ref_failed)?;
            let mut out = Guarded::new(want.len());
            imp(&p, &table, &ids, out.as_mut_slice()).map_err(impl_failed)?;
            check_output("out", &out, &want, tol)
        });
    }
    let p = EmbeddingParams {
        n_vocab: 4,
        dim: 32,
        dtype: DType::Q8_0,
    };
    run.case("rejects an id == n_vocab", false, |rng| {
        let table = rand_rows(rng, p.dtype, 4, 32);
        let mut out = Guarded::new(64);
        expect_reject(imp(&p, &table, &[1, 4], out.as_mut_slice()), &out)
    });
    run.case("rejects a short table", false, |rng| {
        let table = rand_rows(rng, p.dtype, 4, 32);
        let mut out = Guarded::new(32);
        expect_reject(
            imp(&p, &table[..table.len() - 1], &[0], out.as_mut_slice()),
            &out,
        )
    });
    run.case("rejects dim not a multiple of the block", false, |rng| {
        let table = rand_rows(rng, DType::F32, 4, 33);
        let bad = EmbeddingParams { dim: 33, ..p };
        let mut out = Guarded::new(33);
        expect_reject(imp(&bad, &table, &[0], out.as_mut_slice()), &out)
    });
    run.case(
        "rejects a K-quant dim not a multiple of 256",
        false,
        |rng| {
            let table = rand_rows(rng, DType::F32, 4, 96);
            let bad = EmbeddingParams {
                dim: 96,
                dtype: DType::Q4_K,
                ..p
            };
            let mut out = Guarded::new(96);
            expect_reject(imp(&bad, &table, &[0], out.as_mut_slice()), &out)
        },
    );
    // Q8_K's scale is an f32: subnormal scales give subnormal values, which
    // the reference keeps (a flush-to-zero multiply would give zeros).
    run.case("Q8_K subnormal scales", false, |rng| {
        let p = EmbeddingParams {
            n_vocab: 5,
            dim: 512,
            dtype: DType::Q8_K,
        };
        let mut table = rand_rows(rng, p.dtype, p.n_vocab, p.dim);
        for block in table.chunks_exact_mut(p.dtype.type_size()) {
            let d = rng.gen_range(1u32..0x0080_0000) | if rng.gen() { 0x8000_0000 } else { 0 };
            block[..4].copy_from_slice(&d.to_le_bytes());
        }
        let ids = ids(rng, p.n_vocab, 6);
        let mut want = vec![0.0; ids.len() * p.dim];
        embedding_ref(&p, &table, &ids, &mut want).map_err(ref_failed)?;
        let mut out = Guarded::new(want.len());
        imp(&p, &table, &ids, out.as_mut_slice()).map_err(impl_failed)?;
        check_output("out", &out, &want, tol)
    });
    let dtype = mlx_cover().into_iter().next();
    if let Some(dtype) = dtype {
        run.case(
            "rejects an MLX dim not a multiple of the group",
            false,
            |rng| {
                let half = dtype.block_size() / 2;
                let table = rand_rows(rng, DType::F32, 4, half);
                let bad = EmbeddingParams {
                    n_vocab: 4,
                    dim: half,
                    dtype,
                };
                let mut out = Guarded::new(half);
                expect_reject(imp(&bad, &table, &[0], out.as_mut_slice()), &out)
            },
        );
    }
    run.finish()
}
