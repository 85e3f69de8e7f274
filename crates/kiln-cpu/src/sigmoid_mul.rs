//! sigmoid_mul on the CPU: `out = sigmoid(gate) * up` (spec:
//! [`kiln_core::ops::sigmoid_mul`]), computed as `up / (1 + exp(-gate))`
//! by the loop [`silu_mul`](crate::silu_mul) uses (rayon chunks, AVX2 with
//! the vectorised `exp8`, relative error < 4e-7, and an exact division), so
//! results are within a few ulp of the f64 reference.

use crate::silu_mul::sigmoid_gate;
use crate::CpuContext;
use kiln_core::ops::sigmoid_mul::SigmoidMulParams;
use kiln_core::Result;

/// `out = sigmoid(gate) * up`.
pub fn sigmoid_mul(
    ctx: &CpuContext,
    p: &SigmoidMulParams,
    gate: &[f32],
    up: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(gate.len(), up.len(), out.len())?;
    sigmoid_gate::<false>(ctx, gate, up, out);
    Ok(())
}
