//! matmul_id on CUDA: validate → launch (`kernels/matmul_id.cu`). Implements
//! `kiln_core::ops::matmul_id` (GGML `mul_mat_id`): output row
//! `r = t·top_k + s` is expert `ids[r]`'s matrix times x row `r` (per slot)
//! or `t` (per token).
//!
//! Every output row is its own mat-vec (`mul_mv_id_<w>_f32`, the dense
//! mat-vec's tiling and block decoders, activations in f32), for decode and
//! prefill alike: each (token, slot) reads its expert's rows once. A
//! grouped mat-mat for prefill (rows of one expert sharing the weight
//! reads, as the CPU does) is not done yet. The formats are those of the
//! dense CUDA mat-vec ([`crate::matmul::supports`]); the others (MLX) are
//! refused with `Error::UnsupportedDType`.
//!
//! The ids are read on the device and not checked by the host: an id
//! `>= n_experts` makes its output row NaN and reads no weights. Callers
//! holding the ids on the host check them first
//! (`MatmulIdParams::check_ids`), as the reference does.

use crate::kernels::MATMUL_ID;
use crate::matmul::{check_alignment, matvec_plan, MatmulKernel, MV_ROWS, MV_THREADS, MV_WARPS};
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use kiln_core::ops::matmul_id::MatmulIdParams;
use kiln_core::{DType, Error};

const OP: &str = "matmul_id";

/// Output rows per launch (the grid's y dimension).
const MAX_ROWS_PER_LAUNCH: usize = 65_535;

/// Mirrors `struct MatmulIdParams` in matmul_id.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulIdK {
    n: u64,
    k: u64,
    row_bytes: u64,
    kw: u64,
    expert_stride: u64,
    n_experts: u64,
    top_k: u64,
    rows: u64,
    r0: u64,
    x_per_slot: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for MatmulIdK {}

/// True for the weight formats matmul_id has kernels for on CUDA (those of
/// the dense mat-vec).
pub fn supports(wtype: DType) -> bool {
    kernel_name(wtype).is_some()
}

fn kernel_name(wtype: DType) -> Option<&'static str> {
    Some(match wtype {
        DType::Q4_0 => "mul_mv_id_q4_0_f32",
        DType::Q4_1 => "mul_mv_id_q4_1_f32",
        DType::Q8_0 => "mul_mv_id_q8_0_f32",
        DType::Q5_0 => "mul_mv_id_q5_0_f32",
        DType::Q5_1 => "mul_mv_id_q5_1_f32",
        DType::IQ4_NL => "mul_mv_id_iq4_nl_f32",
        DType::Q4_K => "mul_mv_id_q4_K_f32",
        DType::Q5_K => "mul_mv_id_q5_K_f32",
        DType::Q6_K => "mul_mv_id_q6_K_f32",
        DType::IQ4_XS => "mul_mv_id_iq4_xs_f32",
        DType::Q3_K => "mul_mv_id_q3_K_f32",
        DType::Q2_K => "mul_mv_id_q2_K_f32",
        DType::F32 => "mul_mv_id_f32_f32",
        DType::F16 => "mul_mv_id_f16_f32",
        DType::BF16 => "mul_mv_id_bf16_f32",
        _ => return None,
    })
}

/// `out[r] = w[ids[r]] · x_row(r)` for every output row (module docs).
///
/// `w`: the stacked experts (alignment as for [`crate::matmul::matmul`]'s
/// weights, and `expert_stride` a multiple of it); `x`: `[n_tokens or
/// n_tokens·top_k, k]` (16-byte aligned for quantized weights); `ids`:
/// `[n_tokens·top_k]` on the device; `out`: `[n_tokens·top_k, n]`.
pub fn matmul_id(
    be: &CudaBackend,
    p: &MatmulIdParams,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    ids: &CudaView<'_, u32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(w.len(), x.len(), ids.len(), out.len())?;
    let Some(name) = kernel_name(p.wtype) else {
        return Err(Error::UnsupportedDType {
            op: OP,
            dtype: p.wtype,
        }
        .into());
    };
    let rows = p.rows()?;
    if rows == 0 || p.n == 0 {
        return Ok(());
    }
    // Expert 0 starts where w does; the others keep its alignment.
    check_alignment(be, &p.expert_matmul(1), w, x)?;
    let w_align = if p.wtype.type_size().is_multiple_of(4) {
        4
    } else {
        2
    };
    if !p.expert_stride.is_multiple_of(w_align) {
        return Err(Error::invalid(
            OP,
            format!(
                "expert_stride {} must be a multiple of {w_align} bytes for {} weights",
                p.expert_stride, p.wtype
            ),
        )
        .into());
    }
    let kw = match matvec_plan(&p.expert_matmul(1), 1, false) {
        MatmulKernel::MatVec { kw, .. } if p.wtype.is_quantized() => kw,
        _ => MV_WARPS,
    };
    let gx = p.n.div_ceil(MV_ROWS * (MV_WARPS / kw));
    if gx > i32::MAX as usize {
        return Err(Error::invalid(OP, format!("n = {} is too large for the grid", p.n)).into());
    }
    let f = be.function(OP, MATMUL_ID, name)?;
    let mut k = MatmulIdK {
        n: p.n as u64,
        k: p.k as u64,
        row_bytes: p.wtype.row_bytes(OP, p.k)? as u64,
        kw: kw as u64,
        expert_stride: p.expert_stride as u64,
        n_experts: p.n_experts as u64,
        top_k: p.top_k as u64,
        rows: rows as u64,
        r0: 0,
        x_per_slot: u64::from(p.x_per_slot),
    };
    for r0 in (0..rows).step_by(MAX_ROWS_PER_LAUNCH) {
        k.r0 = r0 as u64;
        let gy = (rows - r0).min(MAX_ROWS_PER_LAUNCH);
        let cfg = LaunchConfig {
            grid_dim: (gx as u32, gy as u32, 1),
            block_dim: (MV_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = be.stream().launch_builder(&f);
        l.arg(&k).arg(w).arg(x).arg(ids).arg(&mut *out);
        // SAFETY: arguments match mul_mv_id_<w>_f32(MatmulIdParams, const
        // u8*, const float*, const u32*, float*). Validated: w holds
        // n_experts matrices of n rows at expert_stride, x the rows x_row
        // reads, ids and out `rows` entries / rows; the kernel reads ids[r]
        // for r < rows, weights only of experts < n_experts, x rows < its
        // row count, and writes out[r * n + j] for r < rows, j < n.
        // Alignment of w, expert_stride and x checked above.
        unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch mul_mv_id", e))?;
    }
    Ok(())
}
