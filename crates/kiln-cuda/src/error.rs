//! Errors of the CUDA backend: one line naming the cause.

/// Everything that can go wrong on the CUDA path.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda could not be opened: no NVIDIA driver on this machine.
    #[error("no CUDA driver found (libcuda could not be loaded)")]
    NoDriver,
    /// libnvrtc could not be opened: kernels cannot be compiled.
    #[error("CUDA runtime compiler NVRTC not found (libnvrtc could not be loaded; install the CUDA toolkit or set LD_LIBRARY_PATH)")]
    NoNvrtc,
    /// The driver loaded but reports no device at this ordinal.
    #[error("no CUDA device {ordinal} (the driver reports {count})")]
    NoDevice { ordinal: usize, count: usize },
    /// A driver call failed.
    #[error("CUDA {op}: {msg}")]
    Driver { op: &'static str, msg: String },
    /// NVRTC rejected a kernel source.
    #[error("NVRTC failed to compile {source_name} (options {options:?}): {log}")]
    Compile {
        source_name: String,
        options: Vec<String>,
        log: String,
    },
    /// Not enough device memory.
    #[error("out of GPU memory: {what} needs {needed} bytes, {free} free")]
    OutOfMemory {
        what: String,
        needed: usize,
        free: usize,
    },
    /// Validation failure (from kiln-core).
    #[error(transparent)]
    Core(#[from] kiln_core::Error),
}

impl CudaError {
    pub(crate) fn driver(op: &'static str, e: impl std::fmt::Debug) -> Self {
        CudaError::Driver {
            op,
            msg: format!("{e:?}"),
        }
    }
}

/// Result alias for the CUDA backend.
pub type Result<T> = std::result::Result<T, CudaError>;
