//! The one error type of kiln-core. Every variant names the op (or file
//! section) and the bad value, so a CLI can print it as one line.

use crate::DType;

/// Errors raised by kiln-core: validation, formats, GGUF parsing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An op was called with an argument it cannot accept.
    #[error("{op}: {msg}")]
    InvalidArgument { op: &'static str, msg: String },

    /// A buffer length does not match what the shape requires.
    #[error("{op}: {what} has length {got}, expected {expected}")]
    LengthMismatch {
        op: &'static str,
        what: &'static str,
        got: usize,
        expected: usize,
    },

    /// The op has no implementation for this element / block type.
    #[error("{op}: unsupported dtype {dtype}")]
    UnsupportedDType { op: &'static str, dtype: DType },

    /// A format kiln reads and runs but cannot quantize to (the IQ2/IQ3
    /// i-quants; `why` says which: ggml makes IQ2_XXS / IQ2_XS only with an
    /// importance matrix, and kiln has no IQ3 quantizer).
    #[error("{op}: kiln cannot quantize to {dtype}: {why}; pick another type, or bring a GGUF quantized by llama.cpp")]
    NoQuantizer {
        op: &'static str,
        dtype: DType,
        why: &'static str,
    },

    /// A GGML type id kiln does not know.
    #[error("unknown GGML tensor type id {0}")]
    UnknownGgmlType(u32),

    /// A row length that is not a multiple of the format's block size.
    #[error("{op}: row length {len} is not a multiple of the {dtype} block size {block}")]
    BadRowLength {
        op: &'static str,
        dtype: DType,
        len: usize,
        block: usize,
    },

    /// Malformed, truncated or inconsistent GGUF file.
    #[error("GGUF: {0}")]
    Gguf(String),

    /// Malformed, truncated or inconsistent safetensors file.
    #[error("safetensors: {0}")]
    Safetensors(String),

    /// I/O error, with the path or action that failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result alias for kiln-core.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// This error as `op`'s: an invalid-argument or length error of a
    /// composed op's stage renamed to the op the caller called (others
    /// unchanged).
    pub fn for_op(self, op: &'static str) -> Self {
        match self {
            Error::InvalidArgument { msg, .. } => Error::InvalidArgument { op, msg },
            Error::LengthMismatch {
                what,
                got,
                expected,
                ..
            } => Error::LengthMismatch {
                op,
                what,
                got,
                expected,
            },
            other => other,
        }
    }

    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            msg: msg.into(),
        }
    }
}

/// Check `got == expected` for a buffer length, naming op and buffer.
pub fn check_len(op: &'static str, what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            op,
            what,
            got,
            expected,
        })
    }
}
