//! `out[m, n] = x[m, k] · w[n, k]ᵀ` with w in any supported weight format.
use crate::device::Backend;
use crate::{ops::MatmulParams, Result, Stream, Tensor};

/// True when `device`'s backend implements matmul for `wtype` weights: every
/// format of `MatmulParams::supports` on the CPU, the formats with kernels
/// (`kiln_cuda::matmul::supports`) on CUDA. Loaders check this up front so
/// an unsupported file fails with a clear error instead of at the first op.
pub fn supports(device: crate::Device, wtype: kiln_core::DType) -> bool {
    match device {
        crate::Device::Cpu => MatmulParams::supports(wtype),
        #[cfg(feature = "cuda")]
        crate::Device::Cuda(_) => kiln_cuda::matmul::supports(wtype),
        #[cfg(not(feature = "cuda"))]
        crate::Device::Cuda(_) => false,
    }
}

/// `m` = rows of `x` used (a prefix of the buffer); `w` must be `[n, k]`.
pub fn matmul(s: &Stream, w: &Tensor, x: &Tensor, m: usize, out: &mut Tensor) -> Result<()> {
    const OP: &str = "matmul";
    let _timer = s.scope(OP);
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
    match s.backend() {
        Backend::Cpu(ctx) => {
            let x = x.f32_prefix(OP, "x", m * p.k)?;
            let out = out.f32_prefix_mut(OP, "out", m * p.n)?;
            let wb = w.cpu_bytes_for(OP, "w")?;
            // Decode-sized calls use the packed weights where the CPU has
            // the kernel (packed on the first such call).
            let packed = if m <= kiln_cpu::quant_dot::PACK_MAX_M {
                w.cpu_packed(ctx.features())
            } else {
                None
            };
            Ok(match packed {
                Some(pk) => kiln_cpu::matmul::matmul_packed(ctx, &p, pk, wb, x, out),
                None => kiln_cpu::matmul::matmul(ctx, &p, wb, x, out),
            }?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let wb = w.cuda_bytes(OP, "w")?;
            let x = x.cuda_f32(OP, "x", m * p.k)?;
            let mut out = out.cuda_f32_mut(OP, "out", m * p.n)?;
            kiln_cuda::matmul::matmul(be, &p, &wb, &x, &mut out).map_err(super::cuda_err)
        }
    }
}
