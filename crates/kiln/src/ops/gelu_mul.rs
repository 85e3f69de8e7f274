//! `out = gelu(gate) * up` over the first `p.n` elements (Gemma's GeGLU;
//! tanh or erf GELU by `p.mode`).
//! Dispatch: the `binary_op!` macro in ops/mod.rs (shared by the two-input elementwise ops).

binary_op!(gelu_mul, crate::ops::GeluMulParams, gate, up);
