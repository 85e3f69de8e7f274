//! Index of the largest finite value among the first `n` elements.
use crate::device::Backend;
use crate::{Result, Stream, Tensor};

pub fn argmax(s: &Stream, x: &Tensor, n: usize) -> Result<u32> {
    const OP: &str = "argmax";
    let _timer = s.scope(OP);
    match s.backend() {
        Backend::Cpu(ctx) => Ok(kiln_cpu::argmax::argmax(ctx, x.f32_prefix(OP, "x", n)?)?),
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            kiln_cuda::argmax::argmax_host(be, &x.cuda_f32(OP, "x", n)?).map_err(super::cuda_err)
        }
    }
}
