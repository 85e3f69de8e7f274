//! Mixture-of-experts routing (spec: [`kiln_core::ops::moe_route`]): router
//! logits `[n_tokens, n_experts]` (and an optional selection bias
//! `[n_experts]`) to expert ids (host memory, what `matmul_id` takes) and
//! weights `[n_tokens, top_k]`. On CUDA the kernel writes the ids into the
//! stream's device copy of expert ids and they are downloaded into `ids`
//! (one synchronization per call); a following `matmul_id` with the same
//! ids reads the device copy without uploading. Non-finite logits or bias
//! values are the same typed error as on the CPU (found from the ids the
//! kernel marks, then named by a host look at the inputs).
use crate::device::Backend;
use crate::{ops::MoeRouteParams, Result, Stream, Tensor};

pub fn moe_route(
    s: &Stream,
    p: &MoeRouteParams,
    logits: &Tensor,
    bias: Option<&Tensor>,
    ids: &mut [u32],
    weights: &mut Tensor,
) -> Result<()> {
    const OP: &str = "moe_route";
    let _timer = s.scope(OP);
    // Sizes checked here so the prefixes below cannot overflow.
    p.validate(
        p.n_tokens.saturating_mul(p.n_experts),
        bias.map_or(0, |_| p.n_experts),
        p.n_tokens.saturating_mul(p.top_k),
        p.n_tokens.saturating_mul(p.top_k),
    )?;
    let n = p.n_tokens * p.top_k;
    match s.backend() {
        Backend::Cpu(ctx) => {
            let l = logits.f32_prefix(OP, "logits", p.n_tokens * p.n_experts)?;
            let b = match bias {
                Some(b) => Some(b.f32_prefix(OP, "bias", p.n_experts)?),
                None => None,
            };
            let w = weights.f32_prefix_mut(OP, "weights", n)?;
            let got = ids.len();
            let ids = ids.get_mut(..n).ok_or(crate::Error::TooSmall {
                op: OP,
                what: "ids",
                got,
                needed: n,
            })?;
            Ok(kiln_cpu::moe_route::moe_route(ctx, p, l, b, ids, w)?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            let l = logits.cuda_f32(OP, "logits", p.n_tokens * p.n_experts)?;
            let b = match bias {
                Some(b) => Some(b.cuda_f32(OP, "bias", p.n_experts)?),
                None => None,
            };
            let mut w = weights.cuda_f32_mut(OP, "weights", n)?;
            let got = ids.len();
            let ids = ids.get_mut(..n).ok_or(crate::Error::TooSmall {
                op: OP,
                what: "ids",
                got,
                needed: n,
            })?;
            s.write_device_expert_ids(be, ids, |d| {
                kiln_cuda::moe_route::moe_route(be, p, &l, b.as_ref(), d, &mut w)
                    .map_err(super::cuda_err)
            })?;
            if kiln_cuda::moe_route::first_bad_token(p, ids).is_some() {
                // Name the token and expert as the CPU does.
                let mut hl = Vec::new();
                logits.read_f32(s, p.n_tokens * p.n_experts, &mut hl)?;
                let mut hb = Vec::new();
                if let Some(b) = bias {
                    b.read_f32(s, p.n_experts, &mut hb)?;
                }
                p.check_finite(&hl, bias.map(|_| hb.as_slice()))?;
                return Err(kiln_core::Error::invalid(OP, "non-finite logits or bias").into());
            }
            Ok(())
        }
    }
}
