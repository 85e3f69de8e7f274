//! matmul: `out[m, n] = x[m, k] · w[n, k]ᵀ` — every output is the dot product
//! of one activation row with one weight row (GGML `mul_mat` with `src0 = w`,
//! `src1 = x`).
//!
//! - `w`: `[n, k]` row-major in `wtype`; each weight row is
//!   `wtype.row_bytes(k)` bytes (whole blocks, raw GGML layout).
//! - `x`: `[m, k]` f32 (m = tokens), `out`: `[m, n]` f32 with
//!   `out[i*n + j] = dot(w_j, x_i)`.
//!
//! The reference keeps activations in f32 (no activation quantization): it is
//! the exact product of the stored weights with `x`, computed by
//! [`crate::quant::vec_dot_ref`] (dequantize, then an f64 dot). Fast backends
//! quantize `x` to Q8_0 / Q8_1 / Q8_K (as the weight format's fast path
//! needs) and are held to a bound derived from that quantization error (see
//! `kiln-testkit/src/cases/matmul.rs`).

use crate::{error::check_len, DType, Error, Result};

const OP: &str = "matmul";

/// Shape and weight format of one matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatmulParams {
    /// Rows of `x` (tokens).
    pub m: usize,
    /// Output features = weight rows.
    pub n: usize,
    /// Input features (row length of `w` and `x`).
    pub k: usize,
    /// Element / block format of `w`.
    pub wtype: DType,
}

impl MatmulParams {
    /// True for the weight formats matmul is defined for (the reference and
    /// the CPU backend implement all of them; a backend may support fewer
    /// and says so with its own check, e.g. `kiln_cuda::matmul::supports`).
    /// Not the activation-only formats Q8_1 and Q8_K.
    pub fn supports(wtype: DType) -> bool {
        matches!(
            wtype,
            DType::F32
                | DType::F16
                | DType::BF16
                | DType::Q4_0
                | DType::Q4_1
                | DType::Q5_0
                | DType::Q5_1
                | DType::Q8_0
                | DType::Q2_K
                | DType::Q3_K
                | DType::Q4_K
                | DType::Q5_K
                | DType::Q6_K
                | DType::IQ4_NL
                | DType::IQ4_XS
                | DType::IQ2_XXS
                | DType::IQ2_XS
                | DType::IQ3_XXS
                | DType::IQ3_S
                | DType::Mlx(_)
        )
    }

    /// Bytes of one weight row (`k` must be a multiple of the block size).
    pub fn w_row_bytes(&self) -> Result<usize> {
        self.wtype.row_bytes(OP, self.k)
    }

    /// Check the dtype, `k` against the block size and all three buffer lengths
    /// (`w` in bytes, `x` and `out` in f32 elements).
    pub fn validate(&self, w_len: usize, x_len: usize, out_len: usize) -> Result<()> {
        if !Self::supports(self.wtype) {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: self.wtype,
            });
        }
        let row = self.w_row_bytes()?;
        let overflow = |what: &str| {
            Error::invalid(
                OP,
                format!(
                    "{what} size overflows (m={}, n={}, k={})",
                    self.m, self.n, self.k
                ),
            )
        };
        let w_need = self.n.checked_mul(row).ok_or_else(|| overflow("w"))?;
        let x_need = self.m.checked_mul(self.k).ok_or_else(|| overflow("x"))?;
        let out_need = self.m.checked_mul(self.n).ok_or_else(|| overflow("out"))?;
        check_len(OP, "w (bytes)", w_len, w_need)?;
        check_len(OP, "x", x_len, x_need)?;
        check_len(OP, "out", out_len, out_need)
    }
}

/// Reference matmul: `out[i*n + j] = vec_dot_ref(wtype, w_j, x_i)` with f32
/// activations (no activation quantization), each dot accumulated in f64.
pub fn matmul_ref(p: &MatmulParams, w: &[u8], x: &[f32], out: &mut [f32]) -> Result<()> {
    p.validate(w.len(), x.len(), out.len())?;
    let row = p.w_row_bytes()?;
    for i in 0..p.m {
        let xi = &x[i * p.k..(i + 1) * p.k];
        for j in 0..p.n {
            out[i * p.n + j] = crate::quant::vec_dot_ref(p.wtype, &w[j * row..(j + 1) * row], xi)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn f32_reference_is_a_plain_dot() {
        // w: 2 x 3, x: 1 x 3
        let w: Vec<u8> = [1.0f32, 2.0, 3.0, -1.0, 0.5, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let x = [1.0f32, 1.0, 2.0];
        let mut out = [f32::NAN; 2];
        let p = MatmulParams {
            m: 1,
            n: 2,
            k: 3,
            wtype: DType::F32,
        };
        matmul_ref(&p, &w, &x, &mut out).unwrap();
        assert_eq!(out, [9.0, -0.5]);
    }

    #[test]
    fn validation_names_the_problem() {
        let p = MatmulParams {
            m: 2,
            n: 3,
            k: 48,
            wtype: DType::Q4_1,
        };
        assert!(matches!(
            p.validate(0, 0, 0),
            Err(Error::BadRowLength { .. })
        ));
        let p = MatmulParams {
            m: 2,
            n: 3,
            k: 64,
            wtype: DType::Q4_1,
        };
        assert!(p.validate(3 * 40, 128, 6).is_ok());
        assert!(matches!(
            p.validate(3 * 40 - 1, 128, 6),
            Err(Error::LengthMismatch {
                what: "w (bytes)",
                ..
            })
        ));
        assert!(matches!(
            p.validate(3 * 40, 127, 6),
            Err(Error::LengthMismatch { what: "x", .. })
        ));
        assert!(matches!(
            p.validate(3 * 40, 128, 7),
            Err(Error::LengthMismatch { what: "out", .. })
        ));
        let p = MatmulParams {
            m: 1,
            n: 1,
            k: 32,
            wtype: DType::Q8_1,
        };
        assert!(matches!(
            p.validate(36, 32, 1),
            Err(Error::UnsupportedDType { .. })
        ));
        let p = MatmulParams {
            m: usize::MAX,
            n: 2,
            k: 32,
            wtype: DType::F32,
        };
        assert!(p.validate(256, 0, 0).is_err());
    }
}
