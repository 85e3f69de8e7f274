//! The CUDA C++ sources, embedded in the binary. One `.cu` per op family,
//! shared `.cuh` headers expanded by the registry before compiling.

/// Lines starting with this, naming one of [`HEADERS`], are replaced by it.
pub const INCLUDE_MARKER: &str = "#include";

/// kiln's own headers, by the name the sources include them with.
pub const HEADERS: &[(&str, &str)] = &[("common.cuh", include_str!("../kernels/common.cuh"))];

pub const ADD: &str = include_str!("../kernels/add.cu");

/// Every family, for the test that compiles all kernels and for warm-up.
pub const FAMILIES: &[(&str, &str)] = &[("add", ADD)];
