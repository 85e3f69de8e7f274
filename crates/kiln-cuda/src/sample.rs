//! sample on CUDA: validate → launch (`kernels/sample.cu`). Implements
//! `kiln_core::ops::sample` exactly (the same id as the reference for the
//! same draw): one block (up to 1024 threads) finds the maximum, the
//! top-k / top-p thresholds by radix select over the values' key bits
//! with integer histograms, and draws with integer prefix sums over
//! ascending ids. [`sample`] writes the id (or
//! [`NO_TOKEN`](kiln_core::ops::sample::NO_TOKEN)) to device memory without
//! syncing; [`sample_host`] downloads it.
//!
//! Inputs: the logits and the penalty ids are device buffers (the kiln op
//! keeps the ids in a stream-owned copy, re-uploaded by a stream-ordered
//! copy only when they change); the draw `u` and the settings travel by
//! value in the launch's params, so nothing waits for the host. With a
//! penalty the kernel writes the penalized row to the backend's launcher
//! scratch (`n_vocab` floats).

use crate::kernels::SAMPLE;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use kiln_core::error::check_len;
use kiln_core::ops::sample::SampleParams;

/// Mirrors `struct SampleParams` in sample.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct SampleK {
    n: u64,
    n_pen: u64,
    top_k: u64,
    u: f64,
    top_p: f64,
    temperature: f32,
    ln_min_p: f32,
    penalty: f32,
    flags: u32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for SampleK {}

const PENALIZE: u32 = 1;
const MIN_P: u32 = 2;
const THRESHOLD: u32 = 4;

impl SampleK {
    fn new(p: &SampleParams, u: f64, threshold: bool) -> Self {
        let ln_min_p = p.ln_min_p();
        SampleK {
            n: p.n_vocab as u64,
            n_pen: p.n_penalty_ids as u64,
            top_k: p.top_k.min(p.n_vocab) as u64,
            u,
            top_p: f64::from(p.top_p),
            temperature: p.temperature,
            ln_min_p: ln_min_p.unwrap_or(0.0),
            penalty: p.repeat_penalty,
            flags: if p.penalizes() { PENALIZE } else { 0 }
                | if ln_min_p.is_some() { MIN_P } else { 0 }
                | if threshold { THRESHOLD } else { 0 },
        }
    }
}

/// `out[0]` = the sampled id of `logits` (or `NO_TOKEN`) on the backend's
/// stream; `penalty_ids: [p.n_penalty_ids]`, `out: [1]`, or `[2]` to get
/// the kept set's threshold key in `out[1]` too
/// (`kiln_core::ops::sample::Sampled`, what the parity tests compare).
pub fn sample(
    be: &CudaBackend,
    p: &SampleParams,
    logits: &CudaView<'_, f32>,
    penalty_ids: &CudaView<'_, u32>,
    u: f64,
    out: &mut CudaViewMut<'_, u32>,
) -> Result<()> {
    p.validate_call(logits.len(), penalty_ids.len(), u)?;
    let threshold = out.len() == 2;
    if !threshold {
        check_len("sample", "out", out.len(), 1)?;
    }
    let f = be.function("sample", SAMPLE, "sample_f32")?;
    let cfg = LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (crate::launch::row_threads(p.n_vocab), 1, 1),
        shared_mem_bytes: 0,
    };
    let k = SampleK::new(p, u, threshold);
    let work = if p.penalizes() { p.n_vocab } else { 1 };
    be.with_scratch_f32(work, |work| {
        let mut l = be.stream().launch_builder(&f);
        l.arg(&k).arg(logits).arg(penalty_ids).arg(work).arg(out);
        // SAFETY: argument list matches sample_f32(SampleParams, const float*,
        // const u32*, float*, u32*): logits hold n floats, penalty_ids n_pen
        // words (validated), work n floats when the kernel writes it, out one
        // or two words (THRESHOLD); blockDim is a multiple of 32, at most 1024.
        unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch sample_f32", e))?;
        Ok(())
    })
}

/// [`sample`] into the backend's result word, downloaded (syncs the
/// stream). Returns the raw id: `NO_TOKEN` when nothing is usable (the kiln
/// op turns it into an error).
pub fn sample_host(
    be: &CudaBackend,
    p: &SampleParams,
    logits: &CudaView<'_, f32>,
    penalty_ids: &CudaView<'_, u32>,
    u: f64,
) -> Result<u32> {
    p.validate_call(logits.len(), penalty_ids.len(), u)?;
    let host = be.with_result_u32(|id| {
        sample(be, p, logits, penalty_ids, u, id)?;
        be.download(&*id)
    })?;
    host.first()
        .copied()
        .ok_or_else(|| CudaError::driver("sample", "empty result download"))
}
