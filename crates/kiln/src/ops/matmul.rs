//! `out[m, n] = x[m, k] · w[n, k]ᵀ` with w in any supported weight format.
use crate::{ops::MatmulParams, Device, Result, Stream, Tensor};

/// `m` = rows of `x` used (a prefix of the buffer); `w` must be `[n, k]`.
pub fn matmul(s: &Stream, w: &Tensor, x: &Tensor, m: usize, out: &mut Tensor) -> Result<()> {
    const OP: &str = "matmul";
    let [n, k] = w.dims() else {
        return Err(kiln_core::Error::invalid(
            OP,
            format!("weight must be 2-D, got {:?}", w.shape()),
        )
        .into());
    };
    let p = MatmulParams {
        m,
        n: *n,
        k: *k,
        wtype: w.dtype(),
    };
    let x = x.f32_prefix(OP, "x", m * p.k)?;
    let out = out.f32_prefix_mut(OP, "out", m * p.n)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::matmul::matmul(
            s.cpu_ctx(),
            &p,
            w.bytes(),
            x,
            out,
        )?),
    }
}
