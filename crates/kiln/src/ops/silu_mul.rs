//! `out = silu(gate) * up` over the first `p.n` elements.
//! Dispatch: the `binary_op!` macro in ops/mod.rs (shared by the two-input elementwise ops).

binary_op!(silu_mul, crate::ops::SiluMulParams, gate, up);
