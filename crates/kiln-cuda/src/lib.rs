//! kiln-cuda: the CUDA backend.
//!
//! - [`CudaBackend`]: one device, its context and stream, the kernel
//!   registry and (later) cuBLAS handles. Opening it first checks that the
//!   CUDA driver and NVRTC libraries exist, so a machine without CUDA gets a
//!   typed error (and the caller falls back to the CPU) instead of a panic.
//! - [`registry`]: CUDA C++ sources in `kernels/`, embedded with
//!   `include_str!`, compiled at first use by NVRTC for the device's own
//!   architecture to CUBIN, cached on disk.
//! - One launcher file per op family (validate → select → launch), the same
//!   names as `kiln_core::ops` and `kiln_cpu`.

pub mod device;
pub mod error;
pub mod harness;
pub mod harness_qk;
pub mod kernels;
mod launch;
pub mod registry;

pub mod add;
pub mod add_rows;
pub mod argmax;
pub mod attention;
pub mod cast;
pub mod copy_rows;
pub mod embedding;
pub mod gelu_mul;
pub mod kv;
pub mod l2_norm;
pub mod layer_norm;
pub mod matmul;
pub mod matmul_id;
pub mod matvec_fused;
pub mod matvec_staged;
pub mod matvec_tile;
pub mod mlx;
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

pub use cudarc::driver::{
    CudaGraph, CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceRepr, ValidAsZeroBits,
};
pub use device::{CudaBackend, DeviceInfo};
pub use error::{CudaError, Result};
pub use kv::{KvView, KvViewMut};
