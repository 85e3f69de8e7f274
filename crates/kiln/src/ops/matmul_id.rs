//! Expert-routed matmul (spec: [`kiln_core::ops::matmul_id`]):
//! `out[t * top_k + s] = w[ids[t * top_k + s]] · x_row(t, s)`. `w` holds the
//! stacked expert matrices (raw blocks of `p.wtype`), `ids` the routing
//! (host memory, as token ids are). CUDA has no kernel yet: a CUDA stream
//! gets a typed error before any work.
use crate::device::Backend;
use crate::{ops::MatmulIdParams, Result, Stream, Tensor};

pub fn matmul_id(
    s: &Stream,
    p: &MatmulIdParams,
    w: &Tensor,
    x: &Tensor,
    ids: &[u32],
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "matmul_id";
    let _timer = s.scope(OP);
    let rows = p.rows()?;
    let x_rows = if p.x_per_slot { rows } else { p.n_tokens };
    if w.dtype() != p.wtype {
        return Err(crate::Error::DType {
            op: OP,
            what: "w",
            got: w.dtype(),
            expected: p.wtype.name(),
        });
    }
    match s.backend() {
        Backend::Cpu(ctx) => {
            let wb = w.cpu_bytes_for(OP, "w")?;
            let xs = x.f32_prefix(OP, "x", x_rows * p.k)?;
            let os = out.f32_prefix_mut(OP, "out", rows * p.n)?;
            Ok(kiln_cpu::matmul_id::matmul_id(ctx, p, wb, xs, ids, os)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(_) => Err(kiln_core::Error::invalid(
            OP,
            "no CUDA kernel yet: run matmul_id on a CPU stream",
        )
        .into()),
    }
}
