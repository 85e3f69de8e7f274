//! matvec_fused: the decode-step mat-vec with its neighbours folded in, so a
//! llama layer is a handful of launches instead of a dozen:
//!
//! 1. optionally RMS-normalize the rows of `x` with `norm_w` first
//!    ([`crate::ops::rms_norm::rms_norm_ref`]);
//! 2. `y = x' · wᵀ` ([`crate::ops::matmul::matmul_ref`]);
//! 3. one epilogue ([`FusedEpilogue`]) on each pair of output columns.
//!
//! The reference is exactly that composition of the existing references, so
//! a fused kernel is held to the same answers as the unfused sequence.

use super::matmul::{matmul_ref, MatmulParams};
use super::rms_norm::{rms_norm_ref, RmsNormParams};
use super::rope::{RopeMode, RopeParams};
use crate::error::check_len;
use crate::{Error, KvSliceMut, Result};

const OP: &str = "matvec_fused";

/// Most rows of `x` one fused mat-vec takes (decode batches).
pub const FUSED_MAX_ROWS: usize = 8;

/// Where the QKV epilogue sends q, k and v, and how it rotates them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QkvRope {
    /// Query columns (heads × head_dim), first in `y`.
    pub q_dim: usize,
    /// Key columns = value columns, after the queries.
    pub kv_dim: usize,
    pub head_dim: usize,
    /// Rotated dims per head (even, ≤ head_dim); normal (GGUF llama) pairs.
    pub n_rot: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    /// Rows of each cache (`[n_ctx, kv_dim]`).
    pub n_ctx: usize,
    /// The caches are rings of `n_ctx` rows (a sliding-window cache, see
    /// `kiln_core::ops::attention`): position `p` goes to row `p % n_ctx`
    /// and may be `>= n_ctx`. `false`: row `p`, `p < n_ctx`.
    pub ring: bool,
}

impl QkvRope {
    /// The cache row of position `pos` (checked by
    /// [`MatvecFusedParams::check_positions`]).
    pub fn cache_row(&self, pos: usize) -> usize {
        if self.ring {
            pos % self.n_ctx.max(1)
        } else {
            pos
        }
    }
}

/// What happens to the product `y` (`[m, n]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FusedEpilogue {
    /// `out = y`, `[m, n]`.
    Store,
    /// `out = residual + y`, both `[m, n]`.
    Residual,
    /// The weight is `[gate; up]` (`n / 2` rows each):
    /// `out[i, j] = silu(y[i, j]) · y[i, j + n / 2]`, `[m, n / 2]`.
    SwiGlu,
    /// `y = [q | k | v]`: RoPE (normal mode) at `positions[i]` on q and k,
    /// then q → `out` (`[m, q_dim]`), k and v → row `positions[i]` of the
    /// caches (f32, or rounded to f16 / bf16 as the KV append rounds:
    /// [`crate::KvSliceMut::store`]).
    Qkv(QkvRope),
}

/// Shape and stages of one fused mat-vec.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatvecFusedParams {
    /// The product: `m ≤ FUSED_MAX_ROWS` rows, weight `[n, k]` in `wtype`.
    pub mm: MatmulParams,
    /// `Some(eps)`: RMS-normalize `x` rows with a `[k]` weight first.
    pub norm_eps: Option<f32>,
    pub epilogue: FusedEpilogue,
}

/// Buffer lengths for [`MatvecFusedParams::validate`] (0 for absent ones).
#[derive(Debug, Clone, Copy, Default)]
pub struct FusedLens {
    pub w: usize,
    pub x: usize,
    pub norm_w: usize,
    pub residual: usize,
    pub positions: usize,
    pub out: usize,
    pub k_cache: usize,
    pub v_cache: usize,
}

impl MatvecFusedParams {
    /// Columns of `out`.
    pub fn out_cols(&self) -> usize {
        match self.epilogue {
            FusedEpilogue::Store | FusedEpilogue::Residual => self.mm.n,
            FusedEpilogue::SwiGlu => self.mm.n / 2,
            FusedEpilogue::Qkv(q) => q.q_dim,
        }
    }

    /// The RoPE of the QKV epilogue as [`RopeParams`] for `heads` heads.
    pub fn rope(q: &QkvRope, n_tokens: usize, n_heads: usize) -> RopeParams {
        RopeParams {
            n_tokens,
            n_heads,
            head_dim: q.head_dim,
            n_rot: q.n_rot,
            freq_base: q.freq_base,
            freq_scale: q.freq_scale,
            mode: RopeMode::Normal,
        }
    }

    /// Check shapes, stages and every buffer length.
    pub fn validate(&self, l: &FusedLens) -> Result<()> {
        let mm = &self.mm;
        if mm.m == 0 || mm.m > FUSED_MAX_ROWS {
            return Err(Error::invalid(
                OP,
                format!("m = {} rows, supported 1..={FUSED_MAX_ROWS}", mm.m),
            ));
        }
        let out_need = mm.m * self.out_cols();
        mm.validate(l.w, l.x, mm.m * mm.n)?;
        if self.norm_eps.is_some() {
            check_len(OP, "norm_w", l.norm_w, mm.k)?;
        }
        match self.epilogue {
            FusedEpilogue::Store => {}
            FusedEpilogue::Residual => check_len(OP, "residual", l.residual, mm.m * mm.n)?,
            FusedEpilogue::SwiGlu => {
                if !mm.n.is_multiple_of(2) {
                    return Err(Error::invalid(
                        OP,
                        format!("swiglu needs [gate; up] weight rows, n = {} is odd", mm.n),
                    ));
                }
            }
            FusedEpilogue::Qkv(q) => {
                let hd = q.head_dim;
                if hd == 0
                    || !hd.is_multiple_of(2)
                    || !q.n_rot.is_multiple_of(2)
                    || q.n_rot > hd
                    || !q.q_dim.is_multiple_of(hd)
                    || !q.kv_dim.is_multiple_of(hd)
                    || mm.n != q.q_dim + 2 * q.kv_dim
                {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "qkv: n = {} must be q_dim {} + 2 * kv_dim {}, both multiples of an \
                             even head_dim {} with an even n_rot {} <= head_dim",
                            mm.n, q.q_dim, q.kv_dim, hd, q.n_rot
                        ),
                    ));
                }
                check_len(OP, "positions", l.positions, mm.m)?;
                check_len(OP, "k_cache", l.k_cache, q.n_ctx * q.kv_dim)?;
                check_len(OP, "v_cache", l.v_cache, q.n_ctx * q.kv_dim)?;
            }
        }
        check_len(OP, "out", l.out, out_need)
    }

    /// Check that every position is a cache row (QKV epilogue).
    pub fn check_positions(&self, positions: &[i32]) -> Result<()> {
        if let FusedEpilogue::Qkv(q) = self.epilogue {
            let bad_pos = |p: i32| p < 0 || (!q.ring && p as usize >= q.n_ctx) || q.n_ctx == 0;
            if let Some(&bad) = positions.iter().find(|&&p| bad_pos(p)) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "position {bad} is not a cache row (n_ctx {}, ring {})",
                        q.n_ctx, q.ring
                    ),
                ));
            }
            // Two positions of one call on the same cache row would race.
            let rows: Vec<usize> = positions.iter().map(|&p| q.cache_row(p as usize)).collect();
            for (i, r) in rows.iter().enumerate() {
                if let Some(j) = rows[..i].iter().position(|x| x == r) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "positions {} and {} share cache row {r} (n_ctx {}, ring {})",
                            positions[j], positions[i], q.n_ctx, q.ring
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Inputs and outputs of [`matvec_fused_ref`].
pub struct FusedRefIo<'a> {
    pub w: &'a [u8],
    pub x: &'a [f32],
    pub norm_w: &'a [f32],
    pub residual: &'a [f32],
    pub positions: &'a [i32],
    pub out: &'a mut [f32],
    pub k_cache: KvSliceMut<'a>,
    pub v_cache: KvSliceMut<'a>,
}

impl FusedRefIo<'_> {
    pub fn lens(&self) -> FusedLens {
        FusedLens {
            w: self.w.len(),
            x: self.x.len(),
            norm_w: self.norm_w.len(),
            residual: self.residual.len(),
            positions: self.positions.len(),
            out: self.out.len(),
            k_cache: self.k_cache.len(),
            v_cache: self.v_cache.len(),
        }
    }
}

/// Reference: the composition of the rms_norm, matmul, rope, silu_mul, add
/// and copy references (f64 inside each, f32 between them).
pub fn matvec_fused_ref(p: &MatvecFusedParams, io: FusedRefIo<'_>) -> Result<()> {
    p.validate(&io.lens())?;
    p.check_positions(io.positions)?;
    let mm = p.mm;
    let normed;
    let x = match p.norm_eps {
        Some(eps) => {
            let mut v = vec![0.0f32; mm.m * mm.k];
            let np = RmsNormParams {
                rows: mm.m,
                dim: mm.k,
                eps,
            };
            rms_norm_ref(&np, io.x, io.norm_w, &mut v)?;
            normed = v;
            &normed[..]
        }
        None => io.x,
    };
    let mut y = vec![0.0f32; mm.m * mm.n];
    matmul_ref(&mm, io.w, x, &mut y)?;
    match p.epilogue {
        FusedEpilogue::Store => io.out.copy_from_slice(&y),
        FusedEpilogue::Residual => {
            for ((o, &r), &v) in io.out.iter_mut().zip(io.residual).zip(&y) {
                *o = r + v;
            }
        }
        FusedEpilogue::SwiGlu => {
            let half = mm.n / 2;
            for (orow, yrow) in io.out.chunks_exact_mut(half).zip(y.chunks_exact(mm.n)) {
                let (gate, up) = yrow.split_at(half);
                for ((o, &g), &u) in orow.iter_mut().zip(gate).zip(up) {
                    let g = f64::from(g);
                    *o = (g / (1.0 + (-g).exp()) * f64::from(u)) as f32;
                }
            }
        }
        FusedEpilogue::Qkv(q) => {
            let (qd, kvd) = (q.q_dim, q.kv_dim);
            let mut qs = Vec::with_capacity(mm.m * qd);
            let mut ks = Vec::with_capacity(mm.m * kvd);
            for row in y.chunks_exact(mm.n) {
                qs.extend_from_slice(&row[..qd]);
                ks.extend_from_slice(&row[qd..qd + kvd]);
            }
            let rq = MatvecFusedParams::rope(&q, mm.m, qd / q.head_dim);
            super::rope::rope_ref(&rq, io.positions, &mut qs)?;
            let rk = MatvecFusedParams::rope(&q, mm.m, kvd / q.head_dim);
            super::rope::rope_ref(&rk, io.positions, &mut ks)?;
            io.out.copy_from_slice(&qs);
            let (mut kc, mut vc) = (io.k_cache, io.v_cache);
            for (i, row) in y.chunks_exact(mm.n).enumerate() {
                let at = q.cache_row(io.positions[i] as usize) * kvd;
                kc.store(at, &ks[i * kvd..(i + 1) * kvd]);
                vc.store(at, &row[qd + kvd..]);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::DType;

    fn mm(m: usize, n: usize, k: usize) -> MatmulParams {
        MatmulParams {
            m,
            n,
            k,
            wtype: DType::F32,
        }
    }

    #[test]
    fn qkv_writes_q_and_cache_rows() {
        // Identity-like weights: y = x (n = k = 6 = q 2 + k 2 + v 2), head_dim 2,
        // no rotation at position 0.
        let k = 6;
        let mut w = vec![0.0f32; k * k];
        for i in 0..k {
            w[i * k + i] = 1.0;
        }
        let wb: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
        let p = MatvecFusedParams {
            mm: mm(1, 6, 6),
            norm_eps: None,
            epilogue: FusedEpilogue::Qkv(QkvRope {
                q_dim: 2,
                kv_dim: 2,
                head_dim: 2,
                n_rot: 2,
                freq_base: 10000.0,
                freq_scale: 1.0,
                n_ctx: 3,
                ring: false,
            }),
        };
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (mut out, mut kc, mut vc) = ([f32::NAN; 2], [9.0f32; 6], [9.0f32; 6]);
        matvec_fused_ref(
            &p,
            FusedRefIo {
                w: &wb,
                x: &x,
                norm_w: &[],
                residual: &[],
                positions: &[0],
                out: &mut out,
                k_cache: KvSliceMut::F32(&mut kc),
                v_cache: KvSliceMut::F32(&mut vc),
            },
        )
        .unwrap();
        assert_eq!(out, [1.0, 2.0]);
        assert_eq!(kc, [3.0, 4.0, 9.0, 9.0, 9.0, 9.0]);
        assert_eq!(vc, [5.0, 6.0, 9.0, 9.0, 9.0, 9.0]);
        // A position past the cache is an error, not a write.
        let err = matvec_fused_ref(
            &p,
            FusedRefIo {
                w: &wb,
                x: &x,
                norm_w: &[],
                residual: &[],
                positions: &[3],
                out: &mut out,
                k_cache: KvSliceMut::F32(&mut kc),
                v_cache: KvSliceMut::F32(&mut vc),
            },
        );
        assert!(err.unwrap_err().to_string().contains("position 3"));
    }

    #[test]
    fn positions_must_be_distinct_cache_rows() {
        let q = QkvRope {
            q_dim: 2,
            kv_dim: 2,
            head_dim: 2,
            n_rot: 2,
            freq_base: 10000.0,
            freq_scale: 1.0,
            n_ctx: 3,
            ring: true,
        };
        let p = MatvecFusedParams {
            mm: mm(2, 6, 6),
            norm_eps: None,
            epilogue: FusedEpilogue::Qkv(q),
        };
        // A ring of 3: positions 4 and 5 are rows 1 and 2; 2 and 5 share row 2.
        assert!(p.check_positions(&[4, 5]).is_ok());
        let e = p.check_positions(&[2, 5]).unwrap_err();
        assert!(e.to_string().contains("share cache row 2"), "{e}");
        assert!(p.check_positions(&[-1, 5]).is_err());
        let flat = MatvecFusedParams {
            epilogue: FusedEpilogue::Qkv(QkvRope { ring: false, ..q }),
            ..p
        };
        assert!(flat.check_positions(&[4, 5]).is_err());
        assert!(flat.check_positions(&[1, 1]).is_err());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let p = MatvecFusedParams {
            mm: mm(9, 4, 4),
            norm_eps: None,
            epilogue: FusedEpilogue::Store,
        };
        assert!(p.validate(&FusedLens::default()).is_err());
        let p = MatvecFusedParams {
            mm: mm(1, 3, 4),
            norm_eps: None,
            epilogue: FusedEpilogue::SwiGlu,
        };
        let l = FusedLens {
            w: 48,
            x: 4,
            out: 1,
            ..Default::default()
        };
        assert!(p.validate(&l).unwrap_err().to_string().contains("odd"));
    }
}
