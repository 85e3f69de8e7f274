//! Mixture-of-experts routing (spec: [`kiln_core::ops::moe_route`]): router
//! logits `[n_tokens, n_experts]` (and an optional selection bias
//! `[n_experts]`) to expert ids (host memory, what `matmul_id` takes) and
//! weights `[n_tokens, top_k]`. CUDA has no kernel yet: a CUDA stream gets
//! a typed error before any work.
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
        Backend::Cuda(_) => Err(kiln_core::Error::invalid(
            OP,
            "no CUDA kernel yet: run moe_route on a CPU stream",
        )
        .into()),
    }
}
