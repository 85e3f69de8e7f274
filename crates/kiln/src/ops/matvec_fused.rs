//! The decode mat-vec with RMSNorm before and one epilogue after
//! (`kiln_core::ops::matvec_fused`). CUDA only: it exists to cut a decode
//! step's launches; on the CPU the engine runs the unfused ops, which give
//! the same answers ([`fused_available`] says which applies).
use crate::device::Backend;
use crate::{Result, Stream, Tensor};
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::ops::matvec_fused::{FusedEpilogue, MatvecFusedParams};

const OP: &str = "matvec_fused";

/// The read-only operands. `norm_w` is needed when `p.norm_eps` is set,
/// `residual` for [`FusedEpilogue::Residual`], `positions` (host values,
/// staged to the device like the other `_at` ops) for [`FusedEpilogue::Qkv`].
pub struct FusedInputs<'a> {
    pub w: &'a Tensor,
    pub x: &'a Tensor,
    pub norm_w: Option<&'a Tensor>,
    pub residual: Option<&'a Tensor>,
    pub positions: &'a [i32],
}

/// Where results go: `out`, plus the K and V caches for the QKV epilogue
/// (F32, F16 or BF16, both of one dtype: the epilogue rounds k and v as
/// the KV append does).
pub struct FusedOutputs<'a> {
    pub out: &'a mut Tensor,
    pub kv: Option<(&'a mut Tensor, &'a mut Tensor)>,
}

/// Whether `s` runs [`matvec_fused`] for `p` (and if not, why).
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
pub fn fused_available(s: &Stream, p: &MatvecFusedParams) -> std::result::Result<(), String> {
    match s.backend() {
        Backend::Cpu(_) => Err("matvec_fused runs on CUDA only".into()),
        #[cfg(feature = "cuda")]
        Backend::Cuda(_) => match kiln_cuda::matvec_fused::fused_supported(p) {
            None => Ok(()),
            Some(why) => Err(why),
        },
    }
}

/// Params for weight `w` (`[n, k]`) applied to `m` rows.
pub fn fused_params(
    w: &Tensor,
    m: usize,
    norm_eps: Option<f32>,
    epilogue: FusedEpilogue,
) -> Result<MatvecFusedParams> {
    let [n, k] = w.dims() else {
        return Err(kiln_core::Error::invalid(
            OP,
            format!("weight must be 2-D, got {:?}", w.shape()),
        )
        .into());
    };
    Ok(MatvecFusedParams {
        mm: MatmulParams {
            m,
            n: *n,
            k: *k,
            wtype: w.dtype(),
        },
        norm_eps,
        epilogue,
    })
}

/// Run one fused mat-vec; see the module docs.
#[cfg_attr(not(feature = "cuda"), allow(unused_variables))]
pub fn matvec_fused(
    s: &Stream,
    p: &MatvecFusedParams,
    i: FusedInputs<'_>,
    o: FusedOutputs<'_>,
) -> Result<()> {
    let _timer = s.scope(OP);
    p.check_positions(i.positions)?;
    match s.backend() {
        Backend::Cpu(_) => Err(kiln_core::Error::invalid(
            OP,
            "runs on CUDA only; run rms_norm + matmul + the epilogue op on the CPU",
        )
        .into()),
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            use kiln_cuda::matvec_fused::{matvec_fused, FusedArgs};
            let mm = &p.mm;
            let w = i.w.cuda_bytes(OP, "w")?;
            let x = i.x.cuda_f32(OP, "x", mm.m * mm.k)?;
            let norm_w = match i.norm_w {
                Some(t) => Some(t.cuda_f32(OP, "norm_w", mm.k)?),
                None => None,
            };
            let residual = match i.residual {
                Some(t) => Some(t.cuda_f32(OP, "residual", mm.m * mm.n)?),
                None => None,
            };
            let mut out = o.out.cuda_f32_mut(OP, "out", mm.m * p.out_cols())?;
            let (mut kc, mut vc) = match o.kv {
                Some((k, v)) => {
                    if k.dtype() != v.dtype() {
                        return Err(kiln_core::Error::invalid(
                            OP,
                            format!("k cache is {} but v cache is {}", k.dtype(), v.dtype()),
                        )
                        .into());
                    }
                    let (nk, nv) = (k.numel(), v.numel());
                    (
                        Some(k.cuda_kv_mut(OP, "k_cache", nk)?),
                        Some(v.cuda_kv_mut(OP, "v_cache", nv)?),
                    )
                }
                None => (None, None),
            };
            let qkv = matches!(p.epilogue, FusedEpilogue::Qkv(_));
            let mut run = |pos: Option<&kiln_cuda::CudaView<'_, i32>>| {
                matvec_fused(
                    be,
                    p,
                    FusedArgs {
                        w: &w,
                        x: &x,
                        norm_w: norm_w.as_ref(),
                        residual: residual.as_ref(),
                        out: &mut out,
                        k_cache: kc.as_mut().map(|c| c.view()),
                        v_cache: vc.as_mut().map(|c| c.view()),
                    },
                    pos,
                )
                .map_err(super::cuda_err)
            };
            if qkv {
                s.with_device_positions(be, i.positions, |pos| run(Some(pos)))
            } else {
                run(None)
            }
        }
    }
}
