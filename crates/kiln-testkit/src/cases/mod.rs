//! Case tables and drivers, one module per op family.
//!
//! A driver `check_<op>(imp)` runs every case of its table: fresh seeded
//! inputs, the kiln-core reference into a plain vector, the implementation
//! under test into a [`Guarded`] buffer (NaN-poisoned, sentinel guards), then
//! guard check + [`compare`]. It also feeds a few invalid calls that the
//! implementation must reject with an error without writing its output.
//! Implementations are closures over plain slices, so any backend (CPU,
//! CUDA with its own upload/download) can be plugged in.

use crate::compare::{compare, Tol};
use crate::guard::Guarded;
use crate::report::Report;
use crate::rng::{case_rng, test_seed};
use rand_chacha::ChaCha8Rng;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub mod add;
pub mod add_rows;
pub mod argmax;
pub mod attention;
pub mod cast;
pub mod copy_rows;
pub mod embedding;
pub mod gated;
pub mod gelu_mul;
pub mod l2_norm;
pub mod layer_norm;
pub mod matmul;
pub mod matmul_id;
pub mod matmul_mlx;
pub mod matvec_fused;
pub mod moe_combine;
pub mod moe_route;
pub mod mul;
pub mod norm_rope;
pub mod qk_norm_rope_kv;
pub mod rms_norm;
pub mod rope;
pub mod rope_multi;
pub mod sample;
pub mod scale;
pub mod sigmoid_mul;
pub mod silu_mul;
pub mod softcap;
pub mod softmax;

/// How a driver runs.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Run seed (default: [`test_seed`]).
    pub seed: u64,
    /// Replace the op's default tolerance (e.g. a bf16 backend); `None` keeps it.
    pub tol: Option<Tol>,
    /// Skip the large cases (prefill-sized, long KV) — for a quick selftest.
    pub quick: bool,
    /// The matmul weight formats the backend implements; cases of other
    /// formats are counted as skipped (e.g. `kiln_cuda::matmul::supports`).
    pub matmul_wtypes: fn(kiln_core::DType) -> bool,
    /// The smallest `m` from which the backend's matmul may round weights
    /// and activations to f16 (CUDA's cuBLAS prefill path: `m > 8`);
    /// `None`: never (the CPU keeps f32 activations for MLX weights). The
    /// MLX matmul table's bound assumes f32 activations; for cases with
    /// `m` at or above this it adds f16 operand rounding
    /// (`matmul_mlx::mlx_error_bounds`).
    pub matmul_f16_from_m: Option<usize>,
    /// Whether the backend's attention rounds its operands to bf16 for
    /// these params (CUDA's tensor-core prefill:
    /// `kiln_cuda::attention::uses_bf16`); those cases are held to
    /// [`Tol::ATTENTION_BF16`] instead of [`Tol::ATTENTION`] (scaled with the
    /// scores' spread by [`Tol::attention_bf16`] for the peaked cases).
    /// Default: never.
    pub attention_bf16: fn(&kiln_core::ops::attention::AttentionParams) -> bool,
    /// Whether the backend's fused mat-vec may round its (normalized)
    /// activations to int8 codes per 32 elements (`d = amax / 127`, CUDA's
    /// int8 tiles): the product bound then adds that rounding,
    /// `Σ_b d_b / 2 · Σ_{e ∈ b} |w_e|` (`matvec_fused`'s module docs).
    /// Default: no (f32 activations).
    pub fused_int8_x: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: test_seed(),
            tol: None,
            quick: false,
            matmul_wtypes: kiln_core::ops::matmul::MatmulParams::supports,
            matmul_f16_from_m: None,
            attention_bf16: |_| false,
            fused_int8_x: false,
        }
    }
}

/// Runs the cases of one op and collects their results.
pub(crate) struct Runner<'o> {
    op: &'static str,
    opts: &'o Options,
    report: Report,
    index: usize,
}

impl<'o> Runner<'o> {
    pub(crate) fn new(op: &'static str, opts: &'o Options) -> Self {
        Runner {
            op,
            opts,
            report: Report::new(opts.seed),
            index: 0,
        }
    }

    /// The tolerance to use: the caller's override or the op's default.
    pub(crate) fn tol(&self, default: Tol) -> Tol {
        self.opts.tol.unwrap_or(default)
    }

    /// Run one case with its own random stream. `big` cases are skipped in
    /// quick mode. A panic inside the case is recorded as a failure.
    pub(crate) fn case(
        &mut self,
        name: &str,
        big: bool,
        f: impl FnOnce(&mut ChaCha8Rng) -> Result<(), String>,
    ) {
        let index = self.index;
        self.index += 1;
        if big && self.opts.quick {
            self.report.skipped += 1;
            return;
        }
        let mut rng = case_rng(self.opts.seed, self.op, index);
        let outcome = match catch_unwind(AssertUnwindSafe(|| f(&mut rng))) {
            Ok(r) => r,
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "non-string payload".to_string());
                Err(format!("panicked: {msg}"))
            }
        };
        self.report.push(self.op, name, outcome);
    }

    /// Count a case as skipped without running it (the backend lacks it).
    pub(crate) fn skip(&mut self) {
        self.index += 1;
        self.report.skipped += 1;
    }

    pub(crate) fn finish(self) -> Report {
        self.report
    }
}

/// Describe an implementation error as a case failure.
pub(crate) fn impl_failed(e: kiln_core::Error) -> String {
    format!("implementation returned an error: {e}")
}

/// Describe a reference error (a bad case table) as a case failure.
pub(crate) fn ref_failed(e: kiln_core::Error) -> String {
    format!("reference returned an error (bad case?): {e}")
}

/// Guards intact, then `compare` against the reference.
pub(crate) fn check_output(
    what: &str,
    out: &Guarded,
    want: &[f32],
    tol: Tol,
) -> Result<(), String> {
    out.check_guards()?;
    compare(what, out.as_slice(), want, tol)
}

/// An invalid call must return `Err` and leave its (guarded) output untouched.
pub(crate) fn expect_reject(result: kiln_core::Result<()>, out: &Guarded) -> Result<(), String> {
    match result {
        Ok(()) => Err("accepted an invalid call".to_string()),
        Err(_) if !out.untouched() => {
            Err("returned an error but wrote its output (validate first)".to_string())
        }
        Err(_) => out.check_guards(),
    }
}
