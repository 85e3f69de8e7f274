//! `x[r, :] += bias` for the first `p.rows` rows of `x` (spec:
//! [`kiln_core::ops::add_rows`]), in place. CUDA has no kernel yet: a CUDA
//! stream gets a typed error before any work.
use crate::device::Backend;
use crate::{ops::AddRowsParams, Result, Stream, Tensor};

pub fn add_rows(s: &Stream, p: &AddRowsParams, x: &mut Tensor, bias: &Tensor) -> Result<()> {
    const OP: &str = "add_rows";
    let _timer = s.scope(OP);
    match s.backend() {
        Backend::Cpu(ctx) => {
            let b = bias.f32_prefix(OP, "bias", p.dim)?;
            let xs = x.f32_prefix_mut(OP, "x", p.rows * p.dim)?;
            Ok(kiln_cpu::add_rows::add_rows(ctx, p, xs, b)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(_) => Err(kiln_core::Error::invalid(
            OP,
            "no CUDA kernel yet: run add_rows on a CPU stream",
        )
        .into()),
    }
}
