//! kiln-cpu: the fast CPU backend. Same op families and names as
//! `kiln_core::ops`, multi-threaded with rayon and vectorised with
//! `std::arch` behind runtime feature detection (scalar fallback always).

pub mod context;

pub use context::{CpuContext, CpuFeatures};
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
pub mod moe_combine;
pub mod moe_route;
pub mod mul;
pub mod norm_rope;
pub mod qk_norm_rope_kv;
pub mod quant_dot;
pub mod rms_norm;
pub mod rope;
pub mod rope_multi;
mod rows;
pub mod sample;
pub mod scale;
pub mod sigmoid_mul;
pub mod silu_mul;
pub mod softcap;
pub mod softmax;
pub mod vmath;
