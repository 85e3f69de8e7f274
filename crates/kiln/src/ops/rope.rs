//! Rotary position embedding, in place on `x: [n_tokens, n_heads, head_dim]`.
use crate::device::Backend;
use crate::{ops::RopeParams, Result, Stream, Tensor};

pub fn rope(s: &Stream, p: &RopeParams, positions: &[i32], x: &mut Tensor) -> Result<()> {
    const OP: &str = "rope";
    let _timer = s.scope(OP);
    let n = p.n_tokens * p.n_heads * p.head_dim;
    match s.backend() {
        Backend::Cpu(ctx) => Ok(kiln_cpu::rope::rope(
            ctx,
            p,
            positions,
            x.f32_prefix_mut(OP, "x", n)?,
        )?),
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            p.validate(positions.len(), n)?;
            let mut x = x.cuda_f32_mut(OP, "x", n)?;
            s.with_device_positions(be, positions, |pos| {
                kiln_cuda::rope::rope(be, p, pos, &mut x).map_err(super::cuda_err)
            })
        }
    }
}

/// [`rope`] with per-pair frequency factors (Llama 3.1's `rope_freqs`, an
/// f32 tensor of `n_rot / 2`; spec: `kiln_core::ops::rope`). On the CPU
/// every call checks the factors' values; a CUDA stream checks their length
/// only (the values are on the device: check them once with
/// `kiln_core::ops::rope::check_factors` where they are loaded).
pub fn rope_with_factors(
    s: &Stream,
    p: &RopeParams,
    factors: Option<&Tensor>,
    positions: &[i32],
    x: &mut Tensor,
) -> Result<()> {
    const OP: &str = "rope";
    let Some(factors) = factors else {
        return rope(s, p, positions, x);
    };
    let _timer = s.scope(OP);
    let n = p.n_tokens * p.n_heads * p.head_dim;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let f = factors.f32_prefix(OP, "frequency factors", p.n_rot / 2)?;
            Ok(kiln_cpu::rope::rope_with_factors(
                ctx,
                p,
                Some(f),
                positions,
                x.f32_prefix_mut(OP, "x", n)?,
            )?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            p.validate(positions.len(), n)?;
            let f = factors.cuda_f32(OP, "frequency factors", p.n_rot / 2)?;
            let mut x = x.cuda_f32_mut(OP, "x", n)?;
            s.with_device_positions(be, positions, |pos| {
                kiln_cuda::rope::rope_with_factors(be, p, Some(&f), pos, &mut x)
                    .map_err(super::cuda_err)
            })
        }
    }
}
