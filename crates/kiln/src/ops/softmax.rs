//! Row softmax of `x * scale`.
use crate::device::Backend;
use crate::{ops::SoftmaxParams, Result, Stream, Tensor};

pub fn softmax(s: &Stream, p: &SoftmaxParams, x: &Tensor, out: &mut Tensor) -> Result<()> {
    const OP: &str = "softmax";
    let _timer = s.scope(OP);
    let n = p.rows * p.cols;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let x = x.f32_prefix(OP, "x", n)?;
            let out = out.f32_prefix_mut(OP, "out", n)?;
            Ok(kiln_cpu::softmax::softmax(ctx, p, x, out)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let x = x.cuda_f32(OP, "x", n)?;
            let mut out = out.cuda_f32_mut(OP, "out", n)?;
            kiln_cuda::softmax::softmax(be, p, &x, &mut out).map_err(super::cuda_err)
        }
    }
}
