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
            // The ids buffer may hold more than this call's rows (it is
            // sized for a whole batch): `ids.cuda` checks the room and
            // views the first `rows`.
            let d = ids.cuda(OP, rows)?;
            p.validate(
                wb.len(),
                x_rows.saturating_mul(p.k),
                d.len(),
                rows.saturating_mul(p.n),
            )?;
            let xs = x.cuda_f32(OP, "x", x_rows * p.k)?;
            let mut os = out.cuda_f32_mut(OP, "out", rows * p.n)?;
            kiln_cuda::matmul_id::matmul_id(be, p, &wb, &xs, &d, &mut os).map_err(super::cuda_err)
        }
    }
}

/// The expert FFN's first half, `out = silu(w_gate · x) * (w_up · x)` per
/// routed row (spec: `kiln_core::ops::matmul_id::matmul_id_swiglu_ref`):
/// one launch on CUDA (meant for decode: every row is its own mat-vec), the
/// composition on the CPU. Ids as for [`matmul_id`].
pub fn matmul_id_swiglu(
    s: &Stream,
    p: &MatmulIdParams,
    w_gate: &Tensor,
    w_up: &Tensor,
    x: &Tensor,
    ids: &Ids,
    out: &mut Tensor,
) -> Result<()> {
    const OP: &str = "matmul_id_swiglu";
    let _timer = s.scope(OP);
    let rows = p.rows()?;
    for (what, w) in [("w_gate", w_gate), ("w_up", w_up)] {
        if w.dtype() != p.wtype {
            return Err(crate::Error::DType {
                op: OP,
                what,
                got: w.dtype(),
                expected: p.wtype.name(),
            });
        }
    }
    match s.backend() {
        Backend::Cpu(ctx) => {
            let wg = w_gate.cpu_bytes_for(OP, "w_gate")?;
            let wu = w_up.cpu_bytes_for(OP, "w_up")?;
            let xs = x.f32_prefix(OP, "x", p.n_tokens * p.k)?;
            let os = out.f32_prefix_mut(OP, "out", rows * p.n)?;
            let ids = ids.host(OP, rows)?;
            Ok(kiln_cpu::matmul_id::matmul_id_swiglu(
                ctx, p, wg, wu, xs, ids, os,
            )?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let wg = w_gate.cuda_bytes(OP, "w_gate")?;
            let wu = w_up.cuda_bytes(OP, "w_up")?;
            let d = ids.cuda(OP, rows)?;
            let xs = x.cuda_f32(OP, "x", p.n_tokens * p.k)?;
            let mut os = out.cuda_f32_mut(OP, "out", rows * p.n)?;
            kiln_cuda::matmul_id::matmul_id_swiglu(be, p, &wg, &wu, &xs, &d, &mut os)
                .map_err(super::cuda_err)
        }
    }
}
