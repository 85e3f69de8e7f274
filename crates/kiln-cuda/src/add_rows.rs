//! add_rows on CUDA: validate → launch (`kernels/add_rows.cu`). Implements
//! `kiln_core::ops::add_rows`: `x[r, c] += bias[c]` in place, bit-exact.

use crate::kernels::ADD_ROWS;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use kiln_core::ops::add_rows::AddRowsParams;

/// Mirrors `struct AddRowsParams` in add_rows.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct AddRowsK {
    rows: u64,
    dim: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for AddRowsK {}

/// `x: [rows, dim]` gets `bias: [dim]` added to every row, in place.
pub fn add_rows(
    be: &CudaBackend,
    p: &AddRowsParams,
    x: &mut CudaViewMut<'_, f32>,
    bias: &CudaView<'_, f32>,
) -> Result<()> {
    p.validate(x.len(), bias.len())?;
    if p.rows == 0 || p.dim == 0 {
        return Ok(());
    }
    let f = be.function("add_rows", ADD_ROWS, "add_rows_f32")?;
    // threadIdx.x over columns; enough column blocks for one row, rows on y.
    let threads = 256u32;
    let cfg = LaunchConfig {
        grid_dim: (
            p.dim.div_ceil(threads as usize).min(65_535) as u32,
            p.rows.min(65_535) as u32,
            1,
        ),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let k = AddRowsK {
        rows: p.rows as u64,
        dim: p.dim as u64,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(x).arg(bias);
    // SAFETY: argument list matches add_rows_f32(AddRowsParams, float*, const
    // float*); x holds rows * dim floats and bias dim (validated above).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch add_rows_f32", e))?;
    Ok(())
}
