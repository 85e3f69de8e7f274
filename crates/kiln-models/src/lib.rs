//! kiln-models: the inference engine on top of `kiln`.
//!
//! GGUF file → [`config::ModelConfig`] + [`weights::LlamaWeights`] (quantized
//! weights borrowed zero-copy from the mmap) → [`llama`] forward on a
//! [`kiln::Stream`] → logits → [`sampler`] → token → [`tokenizer`] → text.
//! Gemma 3 files run [`gemma3`]'s forward over the same weights plus its
//! extra norms (CUDA: see `model::CUDA_ARCHS_ENV`).

pub mod chat;
pub mod config;
pub mod error;
pub mod gemma3;
pub mod generate;
pub mod kv_cache;
pub mod llama;
pub mod mlx;
pub mod model;
pub mod perplexity;
pub mod quantize;
pub mod qwen3;
pub mod qwen3moe;
pub mod sampler;
pub mod synth;
pub mod tokenizer;
pub mod weights;

pub use error::{ModelError, Result};
pub use model::{Model, State};
