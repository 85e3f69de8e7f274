//! gelu_mul on CUDA: validate → launch (`kernels/gelu_mul.cu`). Implements
//! `kiln_core::ops::gelu_mul`: `out = gelu(gate) * up`. Tanh mode
//! (`gelu_mul_f32`): `gate * up / (1 + exp(-2u))` with `-2u = g (c1 + c3
//! g²)`; erf mode (`gelu_erf_mul_f32`): `0.5 g erfcf(-g/√2) up`.

use crate::kernels::GELU_MUL;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DeviceRepr, PushKernelArg};
use kiln_core::ops::gelu_mul::{GeluMode, GeluMulParams, GELU_COEF_A, GELU_SQRT_2_OVER_PI};

/// Mirrors `struct GeluMulParams` in gelu_mul.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct GeluMulK {
    n: u64,
    c1: f32,
    c3: f32,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for GeluMulK {}

/// `-2 √(2/π)` and `-2 √(2/π) · 0.044715` in f32 (as the CPU backend rounds them).
const C1: f32 = (-2.0 * GELU_SQRT_2_OVER_PI) as f32;
const C3: f32 = (-2.0 * GELU_SQRT_2_OVER_PI * GELU_COEF_A) as f32;

/// `out[i] = gelu(gate[i]) * up[i]` for `i < n`, with the GELU of `p.mode`.
pub fn gelu_mul(
    be: &CudaBackend,
    p: &GeluMulParams,
    gate: &CudaView<'_, f32>,
    up: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    if p.n == 0 {
        return Ok(());
    }
    let name = match p.mode {
        GeluMode::Tanh => "gelu_mul_f32",
        GeluMode::Erf => "gelu_erf_mul_f32",
    };
    let f = be.function("gelu_mul", GELU_MUL, name)?;
    let cfg = crate::launch::vec4_grid(p.n);
    let k = GeluMulK {
        n: p.n as u64,
        c1: C1,
        c3: C3,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(gate).arg(up).arg(out);
    // SAFETY: argument list matches gelu_mul_f32 / gelu_erf_mul_f32
    // (GeluMulParams, const float*, const float*, float*); all three hold n
    // floats (validated above).
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver(name, e))?;
    Ok(())
}
