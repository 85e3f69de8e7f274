//! `out = silu(gate) * up` over the first `p.n` elements.
//! Dispatch: the `gated_op!` macro in ops/mod.rs (shared by the gated ops).

gated_op!(silu_mul, crate::ops::SiluMulParams);
