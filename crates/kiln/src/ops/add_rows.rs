//! `x[r, :] += bias` for the first `p.rows` rows of `x` (spec:
//! [`kiln_core::ops::add_rows`]), in place.
use crate::device::Backend;
use crate::{ops::AddRowsParams, Result, Stream, Tensor};

pub fn add_rows(s: &Stream, p: &AddRowsParams, x: &mut Tensor, bias: &Tensor) -> Result<()> {
    const OP: &str = "add_rows";
    let _timer = s.scope(OP);
    let n = p
        .rows
        .checked_mul(p.dim)
        .ok_or_else(|| kiln_core::Error::invalid(OP, "rows * dim overflows"))?;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let b = bias.f32_prefix(OP, "bias", p.dim)?;
            let xs = x.f32_prefix_mut(OP, "x", n)?;
            Ok(kiln_cpu::add_rows::add_rows(ctx, p, xs, b)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let b = bias.cuda_f32(OP, "bias", p.dim)?;
            let mut xs = x.cuda_f32_mut(OP, "x", n)?;
            kiln_cuda::add_rows::add_rows(be, p, &mut xs, &b).map_err(super::cuda_err)
        }
    }
}
