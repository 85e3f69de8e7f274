//! Mixture-of-experts routing (spec: [`kiln_core::ops::moe_route`]): router
//! logits `[n_tokens, n_experts]` (and an optional selection bias
//! `[n_experts]`) to expert ids ([`Ids`] on the stream's device, what
//! `matmul_id` reads) and weights `[n_tokens, top_k]`. The CPU refuses
//! non-finite logits or bias values with a typed error; CUDA runs with no
//! synchronization and marks such a token's ids and weights instead (every
//! id past the experts, so `matmul_id` writes NaN rows for it: the
//! non-finite value reaches the logits, where the sampler reports it).
use crate::device::Backend;
use crate::{ops::MoeRouteParams, Ids, Result, Stream, Tensor};

pub fn moe_route(
    s: &Stream,
    p: &MoeRouteParams,
    logits: &Tensor,
    bias: Option<&Tensor>,
    ids: &mut Ids,
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
            let ids = ids.host_mut(OP, n)?;
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
            let mut d = ids.cuda_mut(OP, n)?;
            kiln_cuda::moe_route::moe_route(be, p, &l, b.as_ref(), &mut d, &mut w)
                .map_err(super::cuda_err)
        }
    }
}
