//! `out = gelu(gate) * up` over the first `p.n` elements (Gemma's GeGLU;
//! tanh or erf GELU by `p.mode`).
//! Dispatch: the `gated_op!` macro in ops/mod.rs (shared by the gated ops).

gated_op!(gelu_mul, crate::ops::GeluMulParams);
