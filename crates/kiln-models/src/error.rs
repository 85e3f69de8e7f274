//! The engine's error type: one line naming what went wrong and the bad value.

/// Errors from loading and running models.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Kiln(#[from] kiln::Error),
    #[error(transparent)]
    Core(#[from] kiln_core::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Chat(#[from] crate::chat::ChatError),
    #[error(transparent)]
    Sampler(#[from] crate::sampler::SamplerError),
    /// The file is valid GGUF but describes something kiln cannot run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A tensor the architecture needs is missing or has the wrong shape.
    #[error("model weights: {0}")]
    Weights(String),
    /// Bad hyper-parameters in the file's metadata.
    #[error("model config: {0}")]
    Config(String),
    /// The prompt plus generation does not fit the context window.
    #[error("context full: {needed} tokens needed, the context holds {n_ctx} (raise -c)")]
    ContextFull { needed: usize, n_ctx: usize },
    /// Bad input from the caller (empty prompt, bad option).
    #[error("{0}")]
    Input(String),
}

/// Result alias for the engine.
pub type Result<T> = std::result::Result<T, ModelError>;
