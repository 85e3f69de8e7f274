//! kiln: the public face of the library.
//!
//! - [`Device`]: where tensors live and ops run (the CPU today; CUDA is the
//!   next backend and slots in as another variant).
//! - [`Tensor`]: dtype + shape + backend storage. Quantized weights stay as
//!   raw GGML blocks, usually borrowed zero-copy from a memory-mapped GGUF.
//! - [`Stream`]: an ordered queue of work on one device. On the CPU an op runs
//!   to completion when enqueued; the API is the same one the CUDA stream uses.
//! - [`ops`]: destination-passing ops. Each validates once against the
//!   `kiln_core` params, then dispatches to the backend that owns the tensors.

pub mod device;
pub mod error;
pub mod ids;
pub mod ops;
pub mod tensor;

pub use device::{Device, Graph, Stream};
pub use error::{Error, Result};
pub use ids::Ids;
pub use kiln_core::DType;
pub use tensor::{HostBytes, Shape, Tensor};
