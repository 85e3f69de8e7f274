//! kiln-testkit: the parity harness every kiln backend runs.
//!
//! - [`rng`]: one seed per run (`KILN_TEST_SEED` or the clock), per-case streams.
//! - [`Guarded`]: output buffers with NaN-poisoned interiors and sentinel guards.
//! - [`compare`] / [`Tol`]: NMSE plus max-abs checks that summarise every mismatch.
//! - [`Report`]: per-case `op case: ok/FAIL` lines and an `N passed, M failed` line.
//! - [`cases`]: per op family a case table (odd shapes + SmolLM2 shapes) and a
//!   driver `check_<op>(&impl)` that runs it against the kiln-core reference.
//!
//! A backend plugs in with a closure over plain slices, e.g.
//! `check_add(&|p, a, b, out| kiln_cpu::add::add(&ctx, p, a, b, out))`, and
//! asserts with `report.into_result()` (which prints every failure and the seed).

pub mod cases;
pub mod compare;
pub mod guard;
pub mod quant_data;
pub mod report;
pub mod rng;

pub use cases::Options;
pub use compare::{compare, max_abs_err, nmse, Tol};
pub use guard::{Guarded, GuardedKv, GuardedU16};
pub use quant_data::rand_rows;
pub use report::{CaseResult, Report};
pub use rng::{case_rng, rand_f32, rng, test_seed};

/// Every driver of this crate, merged into one report, with `imps` supplying
/// each op's implementation. Convenient for `kiln selftest`.
pub struct AllOps<'a> {
    pub add: &'a cases::add::AddFn<'a>,
    pub add_rows: &'a cases::add_rows::AddRowsFn<'a>,
    pub argmax: &'a cases::argmax::ArgmaxFn<'a>,
    pub attention: &'a cases::attention::AttentionFn<'a>,
    pub copy_rows: &'a cases::copy_rows::CopyRowsFn<'a>,
    pub cast: &'a cases::cast::CastFn<'a>,
    pub embedding: &'a cases::embedding::EmbeddingFn<'a>,
    pub gelu_mul: &'a cases::gelu_mul::GeluMulFn<'a>,
    pub l2_norm: &'a cases::l2_norm::L2NormFn<'a>,
    pub layer_norm: &'a cases::layer_norm::LayerNormFn<'a>,
    pub matmul: &'a cases::matmul::MatmulFn<'a>,
    pub matmul_id: &'a cases::matmul_id::MatmulIdFn<'a>,
    pub matmul_id_swiglu: &'a cases::matmul_id::MatmulIdSwigluFn<'a>,
    pub moe_combine: &'a cases::moe_combine::MoeCombineFn<'a>,
    pub moe_route: &'a cases::moe_route::MoeRouteFn<'a>,
    pub mul: &'a cases::mul::MulFn<'a>,
    pub norm_rope: &'a cases::norm_rope::NormRopeFn<'a>,
    pub qk_norm_rope_kv: &'a cases::qk_norm_rope_kv::QkNormRopeKvFn<'a>,
    pub rms_norm: &'a cases::rms_norm::RmsNormFn<'a>,
    pub rope: &'a cases::rope::RopeFn<'a>,
    pub rope_factors: &'a cases::rope::RopeFactorsFn<'a>,
    pub rope_multi: &'a cases::rope_multi::RopeMultiFn<'a>,
    pub rope_multi_bf16: &'a cases::rope_multi::RopeMultiBf16Fn<'a>,
    pub sample: &'a cases::sample::SampleFn<'a>,
    pub scale: &'a cases::scale::ScaleFn<'a>,
    pub sigmoid_mul: &'a cases::sigmoid_mul::SigmoidMulFn<'a>,
    pub silu_mul: &'a cases::silu_mul::SiluMulFn<'a>,
    pub softcap: &'a cases::softcap::SoftcapFn<'a>,
    pub softmax: &'a cases::softmax::SoftmaxFn<'a>,
}

/// Run every op family's driver with `opts`; one merged [`Report`].
pub fn check_all(imps: &AllOps<'_>, opts: &Options) -> Report {
    use cases::*;
    let mut r = Report::new(opts.seed);
    r.merge(add::check_add_with(imps.add, opts));
    r.merge(add_rows::check_add_rows_with(imps.add_rows, opts));
    r.merge(argmax::check_argmax_with(imps.argmax, opts));
    r.merge(attention::check_attention_with(imps.attention, opts));
    r.merge(attention::check_attention_window_with(imps.attention, opts));
    r.merge(copy_rows::check_copy_rows_with(imps.copy_rows, opts));
    r.merge(cast::check_cast_with(imps.cast, opts));
    r.merge(embedding::check_embedding_with(imps.embedding, opts));
    r.merge(gelu_mul::check_gelu_mul_with(imps.gelu_mul, opts));
    r.merge(matmul::check_matmul_with(imps.matmul, opts));
    r.merge(matmul_mlx::check_matmul_mlx_with(imps.matmul, opts));
    r.merge(matmul_id::check_matmul_id_with(imps.matmul_id, opts));
    r.merge(matmul_id::check_matmul_id_swiglu_with(
        imps.matmul_id_swiglu,
        opts,
    ));
    r.merge(moe_combine::check_moe_combine_with(imps.moe_combine, opts));
    r.merge(moe_route::check_moe_route_with(imps.moe_route, opts));
    r.merge(mul::check_mul_with(imps.mul, opts));
    r.merge(norm_rope::check_norm_rope_with(imps.norm_rope, opts));
    r.merge(qk_norm_rope_kv::check_qk_norm_rope_kv_with(
        imps.qk_norm_rope_kv,
        opts,
    ));
    r.merge(rms_norm::check_rms_norm_with(imps.rms_norm, opts));
    r.merge(rope::check_rope_with(imps.rope, opts));
    r.merge(rope::check_rope_factors_with(imps.rope_factors, opts));
    r.merge(rope_multi::check_rope_multi_with(
        imps.rope_multi,
        imps.rope_multi_bf16,
        opts,
    ));
    r.merge(sample::check_sample_with(imps.sample, opts));
    r.merge(scale::check_scale_with(imps.scale, opts));
    r.merge(sigmoid_mul::check_sigmoid_mul_with(imps.sigmoid_mul, opts));
    r.merge(silu_mul::check_silu_mul_with(imps.silu_mul, opts));
    r.merge(softmax::check_softmax_with(imps.softmax, opts));
    r.merge(layer_norm::check_layer_norm_with(imps.layer_norm, opts));
    r.merge(l2_norm::check_l2_norm_with(imps.l2_norm, opts));
    r.merge(softcap::check_softcap_with(imps.softcap, opts));
    r
}

/// The default model (SmolLM2-135M-Instruct Q4_1) for end-to-end tests:
/// `$KILN_MODEL`, else `$KILN_CACHE/models/…`, else
/// `$XDG_CACHE_HOME/kiln/models/…`, else `~/.cache/kiln/models/…` (the rules
/// of scripts/fetch-model.sh).
/// `None` (after printing why the caller skips) when the file is absent.
pub fn default_model() -> Option<std::path::PathBuf> {
    cached_model(
        "KILN_MODEL",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "default model",
        "scripts/fetch-model.sh",
    )
}

/// The second real model (Gemma 3 270M Q4_K_M): `$KILN_GEMMA`, else the
/// cache as for [`default_model`] (scripts/fetch-gemma.sh). `None` (after
/// printing why the caller skips) when absent.
pub fn gemma_model() -> Option<std::path::PathBuf> {
    cached_model(
        "KILN_GEMMA",
        "gemma-3-270m-q4_k_m.gguf",
        "Gemma 3 model",
        "scripts/fetch-gemma.sh",
    )
}

fn cached_model(env: &str, file: &str, what: &str, fetch: &str) -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    let p = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("KILN_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("kiln")))
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kiln")
            });
        cache.join("models").join(file)
    });
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "SKIPPED: {what} not found at {} (run {fetch} or set {env})",
            p.display()
        );
        None
    }
}
