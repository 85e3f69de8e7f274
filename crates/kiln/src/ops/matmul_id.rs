//! Expert-routed matmul (spec: [`kiln_core::ops::matmul_id`]):
//! `out[t * top_k + s] = w[ids[t * top_k + s]] · x_row(t, s)`. `w` holds the
//! stacked expert matrices (raw blocks of `p.wtype`), `ids` the routing on
//! the stream's device (what `moe_route` wrote). The CPU refuses an id past
//! the experts with a typed error; CUDA reads the ids on the device with no
//! synchronization and writes NaN rows for such an id, reading no weights
//! for it (see [`crate::Ids`]). CUDA covers the weight formats of its dense
//! mat-vec ([`supports`]).
use crate::device::Backend;
use crate::{ops::MatmulIdParams, Ids, Result, Stream, Tensor};

/// True when `device`'s backend implements matmul_id for `wtype` experts.
pub fn supports(device: crate::Device, wtype: kiln_core::DType) -> bool {
    match device {
        crate::Device::Cpu => crate::ops::MatmulParams::supports(wtype),
        #[cfg(feature = "cuda")]
        crate::Device::Cuda(_) => kiln_cuda::matmul_id::supports(wtype),
        #[cfg(not(feature = "cuda"))]
        crate::Device::Cuda(_) => false,
    }
}

pub fn matmul_id(
    s: &Stream,
    p: &MatmulIdParams,
    w: &Tensor,
    x: &Tensor,
    ids: &Ids,
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
            let ids = ids.host(OP, rows)?;
            Ok(kiln_cpu::matmul_id::matmul_id(ctx, p, wb, xs, ids, os)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let wb = w.cuda_bytes(OP, "w")?;
            p.validate(
                wb.len(),
                x_rows.saturating_mul(p.k),
                ids.len(),
                rows.saturating_mul(p.n),
            )?;
            let d = ids.cuda(OP, rows)?;
            let xs = x.cuda_f32(OP, "x", x_rows * p.k)?;
            let mut os = out.cuda_f32_mut(OP, "out", rows * p.n)?;
            kiln_cuda::matmul_id::matmul_id(be, p, &wb, &xs, &d, &mut os).map_err(super::cuda_err)
        }
    }
}
