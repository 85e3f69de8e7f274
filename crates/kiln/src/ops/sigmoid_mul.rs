//! `out = sigmoid(gate) * up` over the first `p.n` elements (gated attention's output gate).
//! Dispatch: the `gated_op!` macro in ops/mod.rs (shared by the gated ops).

gated_op!(sigmoid_mul, crate::ops::SigmoidMulParams);
