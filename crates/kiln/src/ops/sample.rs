//! One token id from the first `p.n_vocab` logits: repetition penalty,
//! top-k, top-p, min-p, temperature and the draw `u` (spec:
//! [`kiln_core::ops::sample`]; every backend returns the same id).
//!
//! On CUDA the logits stay on the device and only the id comes back (one
//! synchronizing download of one word, as [`crate::ops::argmax`]). The
//! penalty ids reach the device through the stream's own copy (a
//! stream-ordered upload, only when they changed since the last call); the
//! draw and the settings are launch arguments. A row with no usable logit
//! (all NaN or `-inf`), which the backends report as
//! [`NO_TOKEN`](kiln_core::ops::sample::NO_TOKEN), is a typed error here.
use crate::device::Backend;
use crate::{ops::SampleParams, Result, Stream, Tensor};
use kiln_core::ops::sample::no_usable;
pub use kiln_core::ops::sample::NO_TOKEN;

pub fn sample(
    s: &Stream,
    p: &SampleParams,
    logits: &Tensor,
    penalty_ids: &[u32],
    u: f64,
) -> Result<u32> {
    match sample_id(s, p, logits, penalty_ids, u)? {
        NO_TOKEN => Err(no_usable(p.n_vocab).into()),
        id => Ok(id),
    }
}

/// [`sample`] returning the raw id: [`NO_TOKEN`] when no logit is usable
/// (for callers with an error of their own for that, e.g. a sampler).
pub fn sample_id(
    s: &Stream,
    p: &SampleParams,
    logits: &Tensor,
    penalty_ids: &[u32],
    u: f64,
) -> Result<u32> {
    const OP: &str = "sample";
    let _timer = s.scope(OP);
    p.validate_call(p.n_vocab, penalty_ids.len(), u)?;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let x = logits.f32_prefix(OP, "logits", p.n_vocab)?;
            s.with_sample_scratch(|scratch| {
                scratch.set_features(ctx.features());
                sample_host(scratch, p, x, penalty_ids, u)
            })
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let x = logits.cuda_f32(OP, "logits", p.n_vocab)?;
            s.with_device_penalty_ids(be, penalty_ids, |ids| {
                kiln_cuda::sample::sample_host(be, p, &x, ids, u).map_err(super::cuda_err)
            })
        }
    }
}

/// Buffers of [`sample_host`], reused between calls.
pub use kiln_cpu::sample::SampleScratch;

/// The raw id ([`NO_TOKEN`] included) for logits already on the host (a
/// downloaded row), by the CPU implementation with caller-owned buffers:
/// the same id as [`sample`] on any backend.
pub fn sample_host(
    scratch: &mut SampleScratch,
    p: &SampleParams,
    logits: &[f32],
    penalty_ids: &[u32],
    u: f64,
) -> Result<u32> {
    Ok(kiln_cpu::sample::sample_with(
        scratch,
        p,
        logits,
        penalty_ids,
        u,
    )?)
}
