//! matmul_id: the expert-routed matmul of mixture-of-experts layers (GGML
//! `mul_mat_id`; mlx-native's `quantized_matmul_id_ggml`, whose tests in
//! shared/seeds/002 are the spec): for token `t` and routing slot `s`
//! (`0 <= s < top_k`), with `e = ids[t * top_k + s]`,
//!
//! `out[(t * top_k + s) * n + j] = dot(w_e[j], x_row(t, s))`
//!
//! - `w`: `n_experts` expert matrices, each `[n, k]` rows of `wtype` (raw
//!   GGML blocks), expert `e` starting at byte `e * expert_stride`
//!   (`expert_stride >= n * row_bytes`; GGUF stacks experts back to back).
//! - `x`: `[n_tokens, k]` when every slot of a token reads the token's row
//!   (gate / up projections), or `[n_tokens * top_k, k]` with
//!   [`MatmulIdParams::x_per_slot`] (the down projection reads each slot's
//!   own activations).
//! - `ids`: `[n_tokens * top_k]` expert indices; one `>= n_experts` is an
//!   error naming its position and value, raised before any output is
//!   written.
//! - `out`: `[n_tokens * top_k, n]` f32.
//!
//! The reference computes every row with [`crate::quant::vec_dot_ref`]
//! (exact product of the stored weights with f32 activations), like
//! [`crate::ops::matmul::matmul_ref`].
//!
//! [`matmul_id_swiglu_ref`] is the expert FFN's first half in one op:
//! `out = silu(gate · x) * (up · x)` with the gate and up stacks routed by
//! the same ids (what a fused kernel reads in one pass; spec: the
//! composition of two `matmul_id_ref` and [`crate::ops::silu_mul`]).

use crate::error::check_len;
use crate::ops::matmul::{matmul_ref, MatmulParams};
use crate::{DType, Error, Result};

const OP: &str = "matmul_id";

/// Shape, routing and weight format of one matmul_id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulIdParams {
    pub n_tokens: usize,
    /// Experts per token (1..=n_experts).
    pub top_k: usize,
    /// Rows of each expert matrix (output features).
    pub n: usize,
    /// Row length (input features).
    pub k: usize,
    pub n_experts: usize,
    /// Bytes from one expert matrix to the next.
    pub expert_stride: usize,
    pub wtype: DType,
    /// `x` has one row per (token, slot) instead of one per token.
    pub x_per_slot: bool,
}

impl MatmulIdParams {
    /// The plain matmul of one expert over `m` gathered rows.
    pub fn expert_matmul(&self, m: usize) -> MatmulParams {
        MatmulParams {
            m,
            n: self.n,
            k: self.k,
            wtype: self.wtype,
        }
    }

    /// Output rows (`n_tokens * top_k`).
    pub fn rows(&self) -> Result<usize> {
        self.n_tokens
            .checked_mul(self.top_k)
            .ok_or_else(|| Error::invalid(OP, "n_tokens * top_k overflows"))
    }

    /// Shapes and lengths (ids are checked by [`MatmulIdParams::check_ids`]).
    pub fn validate(
        &self,
        w_len: usize,
        x_len: usize,
        ids_len: usize,
        out_len: usize,
    ) -> Result<()> {
        if !MatmulParams::supports(self.wtype) {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: self.wtype,
            });
        }
        if self.n_experts == 0 {
            return Err(Error::invalid(OP, "n_experts must be > 0"));
        }
        if self.top_k == 0 || self.top_k > self.n_experts {
            return Err(Error::invalid(
                OP,
                format!(
                    "top_k {} must be in 1..={} (n_experts)",
                    self.top_k, self.n_experts
                ),
            ));
        }
        let row_bytes = self.wtype.row_bytes(OP, self.k)?;
        let expert_bytes = row_bytes
            .checked_mul(self.n)
            .ok_or_else(|| Error::invalid(OP, "n * row bytes overflows"))?;
        if self.expert_stride < expert_bytes {
            return Err(Error::invalid(
                OP,
                format!(
                    "expert_stride {} is smaller than one expert matrix ({} rows x {} bytes = {})",
                    self.expert_stride, self.n, row_bytes, expert_bytes
                ),
            ));
        }
        let w_need = self
            .expert_stride
            .checked_mul(self.n_experts - 1)
            .and_then(|v| v.checked_add(expert_bytes))
            .ok_or_else(|| Error::invalid(OP, "expert weights overflow"))?;
        if w_len < w_need {
            return Err(Error::invalid(
                OP,
                format!(
                    "w has {w_len} bytes, {} experts of stride {} need {w_need}",
                    self.n_experts, self.expert_stride
                ),
            ));
        }
        let rows = self.rows()?;
        let x_rows = if self.x_per_slot { rows } else { self.n_tokens };
        let mul = |a: usize, b: usize, what: &str| {
            a.checked_mul(b)
                .ok_or_else(|| Error::invalid(OP, format!("{what} overflows")))
        };
        check_len(OP, "x", x_len, mul(x_rows, self.k, "x")?)?;
        check_len(OP, "ids", ids_len, rows)?;
        check_len(OP, "out", out_len, mul(rows, self.n, "out")?)
    }

    /// Every id below `n_experts`.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids
            .iter()
            .enumerate()
            .find(|(_, &e)| e as usize >= self.n_experts)
        {
            Some((i, &e)) => Err(Error::invalid(
                OP,
                format!(
                    "ids[{i}] = {e} is out of range (n_experts {})",
                    self.n_experts
                ),
            )),
            None => Ok(()),
        }
    }

    /// The `x` row that output row `r = t * top_k + s` reads.
    pub fn x_row(&self, r: usize) -> usize {
        if self.x_per_slot {
            r
        } else {
            r / self.top_k
        }
    }

    /// The bytes of expert `e`'s matrix within `w`.
    pub fn expert<'a>(&self, w: &'a [u8], e: usize) -> Result<&'a [u8]> {
        let len = self.wtype.row_bytes(OP, self.k)? * self.n;
        w.get(e * self.expert_stride..e * self.expert_stride + len)
            .ok_or_else(|| Error::invalid(OP, format!("expert {e} lies outside w")))
    }
}

/// Reference: one [`matmul_ref`] row per (token, slot).
pub fn matmul_id_ref(
    p: &MatmulIdParams,
    w: &[u8],
    x: &[f32],
    ids: &[u32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(w.len(), x.len(), ids.len(), out.len())?;
    p.check_ids(ids)?;
    let one = p.expert_matmul(1);
    for (r, &e) in ids.iter().enumerate() {
        let xr = &x[p.x_row(r) * p.k..][..p.k];
        matmul_ref(
            &one,
            p.expert(w, e as usize)?,
            xr,
            &mut out[r * p.n..][..p.n],
        )?;
    }
    Ok(())
}

/// `out[r, j] = silu(g[r, j]) * u[r, j]` with `g = matmul_id(w_gate)` and
/// `u = matmul_id(w_up)` for the same params and ids (`p.x_per_slot` must
/// be false: both read the token's row). Both stacks have `p`'s layout.
pub fn matmul_id_swiglu_ref(
    p: &MatmulIdParams,
    w_gate: &[u8],
    w_up: &[u8],
    x: &[f32],
    ids: &[u32],
    out: &mut [f32],
) -> Result<()> {
    p.validate_swiglu(w_gate.len(), w_up.len(), x.len(), ids.len(), out.len())?;
    p.check_ids(ids)?;
    let n = out.len();
    let (mut g, mut u) = (vec![0.0f32; n], vec![0.0f32; n]);
    matmul_id_ref(p, w_gate, x, ids, &mut g)?;
    matmul_id_ref(p, w_up, x, ids, &mut u)?;
    crate::ops::silu_mul::silu_mul_ref(&crate::ops::silu_mul::SiluMulParams { n }, &g, &u, out)
}

impl MatmulIdParams {
    /// [`MatmulIdParams::validate`] for the gated pair: both stacks the same
    /// size, activations per token (not per slot).
    pub fn validate_swiglu(
        &self,
        gate_len: usize,
        up_len: usize,
        x_len: usize,
        ids_len: usize,
        out_len: usize,
    ) -> Result<()> {
        if self.x_per_slot {
            return Err(Error::invalid(
                "matmul_id_swiglu",
                "x_per_slot: the gate and up projections read each token's row",
            ));
        }
        if gate_len != up_len {
            return Err(Error::invalid(
                "matmul_id_swiglu",
                format!("gate stack of {gate_len} bytes and up stack of {up_len} differ"),
            ));
        }
        self.validate(gate_len, x_len, ids_len, out_len)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn p(wtype: DType) -> MatmulIdParams {
        MatmulIdParams {
            n_tokens: 2,
            top_k: 2,
            n: 3,
            k: 32,
            n_experts: 3,
            expert_stride: 3 * wtype.row_bytes("t", 32).unwrap(),
            wtype,
            x_per_slot: false,
        }
    }

    /// F32 experts by hand: expert e's rows are (e + 1) * unit vectors.
    #[test]
    fn routes_rows_to_experts() {
        let q = p(DType::F32);
        let mut w = Vec::new();
        for e in 0..3 {
            for j in 0..3 {
                let mut row = [0.0f32; 32];
                row[j] = (e + 1) as f32;
                w.extend(row.iter().flat_map(|v| v.to_le_bytes()));
            }
        }
        let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let ids = [2, 0, 1, 1];
        let mut out = vec![f32::NAN; 12];
        matmul_id_ref(&q, &w, &x, &ids, &mut out).unwrap();
        // token 0 (x = 0..32): experts 2, 0; token 1 (x = 32..64): experts 1, 1.
        assert_eq!(
            out,
            [0.0, 3.0, 6.0, 0.0, 1.0, 2.0, 64.0, 66.0, 68.0, 64.0, 66.0, 68.0]
        );
        let per_slot = MatmulIdParams {
            x_per_slot: true,
            n_tokens: 1,
            ..q
        };
        let mut out = vec![f32::NAN; 6];
        matmul_id_ref(&per_slot, &w, &x, &[0, 2], &mut out).unwrap();
        assert_eq!(out, [0.0, 1.0, 2.0, 96.0, 99.0, 102.0]);
    }

    #[test]
    fn rejections() {
        let q = p(DType::Q4_0);
        let w = vec![0u8; 3 * q.expert_stride];
        let mut out = vec![0.0f32; 12];
        let e = matmul_id_ref(&q, &w, &[0.0; 64], &[0, 1, 3, 0], &mut out).unwrap_err();
        assert!(e.to_string().contains("ids[2] = 3"), "{e}");
        let bad = |q: MatmulIdParams, wl: usize, needle: &str| {
            let e = q.validate(wl, 64, 4, 12).unwrap_err().to_string();
            assert!(e.contains("matmul_id") && e.contains(needle), "{e}");
        };
        bad(MatmulIdParams { top_k: 4, ..q }, w.len(), "top_k");
        bad(MatmulIdParams { top_k: 0, ..q }, w.len(), "top_k");
        bad(MatmulIdParams { k: 33, ..q }, w.len(), "33");
        bad(
            MatmulIdParams {
                expert_stride: 10,
                ..q
            },
            w.len(),
            "expert_stride",
        );
        bad(q, w.len() - 1, "w has");
        bad(
            MatmulIdParams {
                wtype: DType::Q8_K,
                ..q
            },
            w.len(),
            "Q8_K",
        );
        assert!(q.validate(w.len(), 63, 4, 12).is_err());
        assert!(q.validate(w.len(), 64, 3, 12).is_err());
    }

    /// The gated pair equals silu(gate) * up computed op by op; per-slot x
    /// and mismatched stacks are refused.
    #[test]
    fn swiglu_composes() {
        let q = p(DType::F32);
        let w: Vec<u8> = (0..3 * 3 * 32)
            .flat_map(|i| ((i % 7) as f32 * 0.25 - 0.75).to_le_bytes())
            .collect();
        let wu: Vec<u8> = (0..3 * 3 * 32)
            .flat_map(|i| ((i % 5) as f32 * 0.5 - 1.0).to_le_bytes())
            .collect();
        let x: Vec<f32> = (0..64).map(|i| (i % 9) as f32 * 0.1 - 0.4).collect();
        let ids = [2, 0, 1, 1];
        let (mut g, mut u, mut out) = (vec![0.0; 12], vec![0.0; 12], vec![f32::NAN; 12]);
        matmul_id_ref(&q, &w, &x, &ids, &mut g).unwrap();
        matmul_id_ref(&q, &wu, &x, &ids, &mut u).unwrap();
        matmul_id_swiglu_ref(&q, &w, &wu, &x, &ids, &mut out).unwrap();
        for i in 0..12 {
            let want =
                (f64::from(g[i]) / (1.0 + (-f64::from(g[i])).exp()) * f64::from(u[i])) as f32;
            assert_eq!(out[i], want, "{i}");
        }
        let per_slot = MatmulIdParams {
            x_per_slot: true,
            ..q
        };
        assert!(matmul_id_swiglu_ref(&per_slot, &w, &wu, &x, &ids, &mut out).is_err());
        let e = matmul_id_swiglu_ref(&q, &w, &wu[4..], &x, &ids, &mut out).unwrap_err();
        assert!(e.to_string().contains("differ"), "{e}");
        let e = matmul_id_swiglu_ref(&q, &w, &wu, &x, &[0, 3, 1, 1], &mut out).unwrap_err();
        assert!(e.to_string().contains("ids[1] = 3"), "{e}");
    }
}
