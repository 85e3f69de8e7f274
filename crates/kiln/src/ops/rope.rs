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
