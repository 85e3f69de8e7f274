//! Copy whole rows between f32 tensors (KV-cache append, last-row pick).
use crate::device::Backend;
use crate::{ops::CopyRowsParams, Result, Stream, Tensor};

pub fn copy_rows(s: &Stream, p: &CopyRowsParams, src: &Tensor, dst: &mut Tensor) -> Result<()> {
    const OP: &str = "copy_rows";
    let _timer = s.scope(OP);
    let (ns, nd) = (src.numel(), dst.numel());
    match s.backend() {
        Backend::Cpu(ctx) => {
            let src = src.f32_prefix(OP, "src", ns)?;
            let dst = dst.f32_prefix_mut(OP, "dst", nd)?;
            Ok(kiln_cpu::copy_rows::copy_rows(ctx, p, src, dst)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let src = src.cuda_f32(OP, "src", ns)?;
            let mut dst = dst.cuda_f32_mut(OP, "dst", nd)?;
            kiln_cuda::copy_rows::copy_rows(be, p, &src, &mut dst).map_err(super::cuda_err)
        }
    }
}
