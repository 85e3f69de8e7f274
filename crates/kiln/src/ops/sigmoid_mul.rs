//! `out = sigmoid(gate) * up` over the first `p.n` elements (gated attention's output gate).
//! Dispatch: the `binary_op!` macro in ops/mod.rs (shared by the two-input elementwise ops).

binary_op!(sigmoid_mul, crate::ops::SigmoidMulParams, gate, up);
