//! Destination-passing ops. Each entry point validates the tensors against the
//! op's `kiln_core` params once (dtype, device, sizes), takes the prefixes of
//! preallocated buffers the params ask for, then dispatches to the backend.
//! Dispatch code holds no math.

/// The two-input elementwise ops over the first `p.n` elements (`add`,
/// `mul`, and the gated `out = act(gate) * up`): one dispatch for all of
/// them, each backend's function of the same name taking
/// `(backend, p, a, b, out)`; `$a`/`$b` name the inputs in errors.
macro_rules! binary_op {
    ($name:ident, $params:ty, $a:ident, $b:ident) => {
        pub fn $name(
            s: &$crate::Stream,
            p: &$params,
            $a: &$crate::Tensor,
            $b: &$crate::Tensor,
            out: &mut $crate::Tensor,
        ) -> $crate::Result<()> {
            const OP: &str = stringify!($name);
            let _timer = s.scope(OP);
            match s.backend() {
                $crate::device::Backend::Cpu(ctx) => {
                    let $a = $a.f32_prefix(OP, stringify!($a), p.n)?;
                    let $b = $b.f32_prefix(OP, stringify!($b), p.n)?;
                    let out = out.f32_prefix_mut(OP, "out", p.n)?;
                    Ok(kiln_cpu::$name::$name(ctx, p, $a, $b, out)?)
                }
                #[cfg(feature = "cuda")]
                $crate::device::Backend::Cuda(be) => {
                    let $a = $a.cuda_f32(OP, stringify!($a), p.n)?;
                    let $b = $b.cuda_f32(OP, stringify!($b), p.n)?;
                    let mut out = out.cuda_f32_mut(OP, "out", p.n)?;
                    kiln_cuda::$name::$name(be, p, &$a, &$b, &mut out)
                        .map_err($crate::ops::cuda_err)
                }
            }
        }
    };
}

pub mod add;
pub mod add_rows;
pub mod argmax;
pub mod attention;
pub mod cast;
pub mod copy_rows;
pub mod embedding;
pub mod gelu_mul;
pub mod l2_norm;
pub mod layer_norm;
pub mod matmul;
pub mod matmul_id;
pub mod matvec_fused;
pub mod moe_combine;
pub mod moe_route;
pub mod mul;
pub mod norm_rope;
pub mod qk_norm_rope_kv;
pub mod rms_norm;
pub mod rope;
pub mod rope_multi;
pub mod sample;
pub mod scale;
pub mod sigmoid_mul;
pub mod silu_mul;
pub mod softcap;
pub mod softmax;

pub use add::add;
pub use add_rows::add_rows;
pub use argmax::argmax;
pub use attention::{attention, attention_at};
pub use cast::cast;
pub use copy_rows::{copy_rows, copy_rows_at};
pub use embedding::embedding;
pub use gelu_mul::gelu_mul;
pub use l2_norm::l2_norm;
pub use layer_norm::layer_norm;
pub use matmul::matmul;
pub use matmul_id::{matmul_id, matmul_id_swiglu};
pub use matvec_fused::{fused_available, fused_params, matvec_fused, FusedInputs, FusedOutputs};
pub use moe_combine::moe_combine;
pub use moe_route::moe_route;
pub use mul::mul;
pub use norm_rope::norm_rope;
pub use qk_norm_rope_kv::{
    qk_norm_rope_kv, qk_norm_rope_kv_at, QkNormRopeKvInputs, QkNormRopeKvOutputs,
};
pub use rms_norm::rms_norm;
pub use rope::{rope, rope_with_factors};
pub use rope_multi::{rope_multi, rope_multi_cached, RopeMultiPacks};
pub use sample::sample;
pub use scale::scale;
pub use sigmoid_mul::sigmoid_mul;
pub use silu_mul::silu_mul;
pub use softcap::softcap;
pub use softmax::softmax;

pub use kiln_core::ops::add::AddParams;
pub use kiln_core::ops::add_rows::AddRowsParams;
pub use kiln_core::ops::attention::AttentionParams;
pub use kiln_core::ops::cast::CastParams;
pub use kiln_core::ops::copy_rows::CopyRowsParams;
pub use kiln_core::ops::embedding::EmbeddingParams;
pub use kiln_core::ops::gelu_mul::{GeluMode, GeluMulParams};
pub use kiln_core::ops::l2_norm::L2NormParams;
pub use kiln_core::ops::layer_norm::LayerNormParams;
pub use kiln_core::ops::matmul::MatmulParams;
pub use kiln_core::ops::matmul_id::MatmulIdParams;
pub use kiln_core::ops::matvec_fused::{FusedEpilogue, MatvecFusedParams, QkvRope};
pub use kiln_core::ops::moe_combine::MoeCombineParams;
pub use kiln_core::ops::moe_route::{MoeRouteParams, MoeScoring};
pub use kiln_core::ops::mul::MulParams;
pub use kiln_core::ops::norm_rope::NormRopeParams;
pub use kiln_core::ops::qk_norm_rope_kv::QkNormRopeKvParams;
pub use kiln_core::ops::rms_norm::RmsNormParams;
pub use kiln_core::ops::rope::{RopeMode, RopeParams};
pub use kiln_core::ops::rope_multi::{RopeMultiMode, RopeMultiParams, RopePairing, RopePositions};
pub use kiln_core::ops::sample::SampleParams;
pub use kiln_core::ops::scale::ScaleParams;
pub use kiln_core::ops::sigmoid_mul::SigmoidMulParams;
pub use kiln_core::ops::silu_mul::SiluMulParams;
pub use kiln_core::ops::softcap::SoftcapParams;
pub use kiln_core::ops::softmax::SoftmaxParams;

/// A CUDA backend error as a `kiln::Error`.
#[cfg(feature = "cuda")]
pub(crate) fn cuda_err(e: kiln_cuda::CudaError) -> crate::Error {
    match e {
        kiln_cuda::CudaError::Core(c) => crate::Error::Core(c),
        other => crate::Error::Device(other.to_string()),
    }
}
