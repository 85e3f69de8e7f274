//! The error type of the `kiln` crate.

/// Errors from the public API: validation (from kiln-core) or backend failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Validation or format error raised by kiln-core or a backend.
    #[error(transparent)]
    Core(#[from] kiln_core::Error),

    /// A tensor of the wrong dtype was passed to an op.
    #[error("{op}: {what} has dtype {got}, expected {expected}")]
    DType {
        op: &'static str,
        what: &'static str,
        got: kiln_core::DType,
        expected: &'static str,
    },

    /// A tensor is too small or has the wrong shape for the op's params.
    #[error("{op}: {what} has {got} elements, the op needs {needed}")]
    TooSmall {
        op: &'static str,
        what: &'static str,
        got: usize,
        needed: usize,
    },

    /// Tensors on different devices were passed to one op.
    #[error("{op}: tensors live on different devices ({a} and {b})")]
    DeviceMismatch {
        op: &'static str,
        a: String,
        b: String,
    },

    /// The op has no implementation on this backend yet (e.g. Gemma's
    /// `gelu_mul` on CUDA): the caller should run on another device.
    #[error("{op} is not supported on {device} yet (run on the CPU instead)")]
    NotSupported { op: &'static str, device: String },

    /// A device could not be opened.
    #[error("device: {0}")]
    Device(String),
}

/// Result alias for the `kiln` crate.
pub type Result<T> = std::result::Result<T, Error>;
