//! kiln-core: the GPU-free foundation of kiln.
//!
//! - [`DType`]: every tensor element / block format kiln knows.
//! - [`KvType`]: KV-cache element types (f32, f16, bf16) and cache slices.
//! - [`quant`]: GGML block layouts, scalar reference quantize / dequantize / dot.
//! - [`gguf`]: bounded GGUF v2/v3 reader and a writer.
//! - [`safetensors`]: bounded safetensors reader (MLX / Hugging Face weights).
//! - [`ops`]: per op family its params struct, `validate()` and the naive
//!   scalar reference every backend is tested against.

pub mod dtype;
pub mod error;
pub mod gguf;
pub mod kv;
pub mod ops;
pub mod quant;
pub mod safetensors;

pub use dtype::DType;
pub use error::{Error, Result};
pub use kv::{KvSlice, KvSliceMut, KvType};
