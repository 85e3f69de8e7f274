//! `out = a * b` over the first `p.n` elements.
//! Dispatch: the `binary_op!` macro in ops/mod.rs (shared by the two-input elementwise ops).

binary_op!(mul, crate::ops::MulParams, a, b);
