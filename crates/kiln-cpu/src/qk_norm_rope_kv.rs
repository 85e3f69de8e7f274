//! qk_norm_rope_kv on the CPU (spec: [`kiln_core::ops::qk_norm_rope_kv`]):
//! per token, this crate's [`crate::norm_rope::norm_rope`] on its q and k
//! spans of the `[q | k | v]` row and [`crate::copy_rows::copy_rows_kv`] of
//! the normed k and of v into the caches.
//!
//! No fused loop, as for norm_rope: the fusion saves CUDA launches, and
//! running the existing kernels keeps the CPU's values bit-identical to the
//! unfused ops (the per-head norm and the rotation are per row, so one call
//! per token gives the same bits as one call over the batch).

use crate::CpuContext;
use kiln_core::ops::copy_rows::CopyRowsParams;
use kiln_core::ops::norm_rope::NormRopeParams;
use kiln_core::ops::qk_norm_rope_kv::{check_qk_factors, QkNormRopeKvIo, QkNormRopeKvParams};
use kiln_core::{KvSliceMut, Result};

/// See the module docs; everything is checked before anything is written.
/// Allocates one `kv_dim` row for the normed k when the K cache is f16 or
/// bf16 (an f32 cache takes it in place).
pub fn qk_norm_rope_kv(
    ctx: &CpuContext,
    p: &QkNormRopeKvParams,
    io: QkNormRopeKvIo<'_>,
) -> Result<()> {
    p.validate(&io.lens())?;
    check_qk_factors(p, io.factors)?;
    let (qd, kvd, row) = (p.q_dim(), p.kv_dim(), p.row_len());
    let one = |np: NormRopeParams| NormRopeParams {
        rope: kiln_core::ops::rope::RopeParams {
            n_tokens: 1,
            ..np.rope
        },
        ..np
    };
    let (pq, pk) = (one(p.q), one(p.k()));
    let append = p.append();
    let QkNormRopeKvIo {
        qkv,
        q_norm,
        k_norm,
        factors,
        positions,
        q_out,
        mut k_cache,
        mut v_cache,
    } = io;
    let mut k_tmp = match k_cache {
        KvSliceMut::F32(_) => Vec::new(),
        _ => vec![0.0f32; kvd],
    };
    for t in 0..p.q.rope.n_tokens {
        let src = &qkv[t * row..(t + 1) * row];
        let pos = &positions[t..t + 1];
        let q_row = &mut q_out[t * qd..(t + 1) * qd];
        crate::norm_rope::norm_rope(ctx, &pq, &src[..qd], q_norm, factors, pos, q_row)?;
        // The cache row of token t (validated: inside the cache or ring).
        let at = append.dst_index(t);
        let store = CopyRowsParams {
            row_len: kvd,
            n_rows: 1,
            src_row: 0,
            dst_row: at,
            dst_ring: None,
        };
        let k_src = &src[qd..qd + kvd];
        match &mut k_cache {
            KvSliceMut::F32(c) => {
                let dst = &mut c[at * kvd..(at + 1) * kvd];
                crate::norm_rope::norm_rope(ctx, &pk, k_src, k_norm, factors, pos, dst)?;
            }
            kc => {
                crate::norm_rope::norm_rope(ctx, &pk, k_src, k_norm, factors, pos, &mut k_tmp)?;
                crate::copy_rows::copy_rows_kv(ctx, &store, &k_tmp, kc.reborrow())?;
            }
        }
        let v_src = &src[qd + kvd..];
        crate::copy_rows::copy_rows_kv(ctx, &store, v_src, v_cache.reborrow())?;
    }
    Ok(())
}

/// The device-position variant's CPU form (the host has the position):
/// `p` is validated with `p.dst_row` as the largest row allowed, then the
/// rows start at `positions[0]`, which must be in `0..=p.dst_row`
/// ([`QkNormRopeKvParams::at`]).
pub fn qk_norm_rope_kv_at(
    ctx: &CpuContext,
    p: &QkNormRopeKvParams,
    io: QkNormRopeKvIo<'_>,
) -> Result<()> {
    p.validate(&io.lens())?;
    qk_norm_rope_kv(ctx, &p.at(io.positions)?, io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kiln_core::ops::copy_rows::CopyRowsParams;
    use kiln_core::ops::rope::{RopeMode, RopeParams};

    /// Bit for bit the unfused CPU ops (norm_rope over the whole batch, then
    /// copy_rows_kv), which the CPU forward runs.
    #[test]
    fn matches_the_unfused_cpu_ops_bit_for_bit() {
        let ctx = CpuContext::new(2).unwrap();
        for (n, ring, dst_row) in [(1usize, None, 5usize), (3, Some(4), 6), (5, None, 0)] {
            let p = QkNormRopeKvParams {
                q: NormRopeParams {
                    rope: RopeParams {
                        n_tokens: n,
                        n_heads: 5,
                        head_dim: 64,
                        n_rot: 64,
                        freq_base: 1e6,
                        freq_scale: 1.0,
                        mode: RopeMode::Neox,
                    },
                    eps: 1e-6,
                },
                n_heads_kv: 3,
                dst_row,
                dst_ring: ring,
            };
            let (qd, kvd) = (p.q_dim(), p.kv_dim());
            let qkv: Vec<f32> = (0..n * p.row_len())
                .map(|i| ((i * 37) % 101) as f32 / 17.0 - 3.0)
                .collect();
            let w: Vec<f32> = (0..64).map(|i| 0.5 + (i % 7) as f32 * 0.2).collect();
            let pos: Vec<i32> = (0..n as i32).map(|t| 300 + t).collect();
            let rows = 12;
            // Unfused: gather q, k, v; norm_rope each; copy_rows_kv into f16.
            let [q, k, v] = kiln_core::ops::qk_norm_rope_kv::split_qkv(&p, &qkv);
            let mut want_q = vec![0.0; n * qd];
            crate::norm_rope::norm_rope(&ctx, &p.q, &q, &w, None, &pos, &mut want_q).unwrap();
            let mut kr = vec![0.0; n * kvd];
            crate::norm_rope::norm_rope(&ctx, &p.k(), &k, &w, None, &pos, &mut kr).unwrap();
            let a = CopyRowsParams {
                row_len: kvd,
                n_rows: n,
                src_row: 0,
                dst_row,
                dst_ring: ring,
            };
            let (mut wk, mut wv) = (vec![7u16; rows * kvd], vec![7u16; rows * kvd]);
            crate::copy_rows::copy_rows_kv(&ctx, &a, &kr, KvSliceMut::F16(&mut wk)).unwrap();
            crate::copy_rows::copy_rows_kv(&ctx, &a, &v, KvSliceMut::BF16(&mut wv)).unwrap();
            let mut wk32 = vec![-1.0f32; rows * kvd];
            crate::copy_rows::copy_rows_kv(&ctx, &a, &kr, KvSliceMut::F32(&mut wk32)).unwrap();
            // Fused, with an f16 K cache and then an f32 one.
            let (mut gk, mut gv) = (vec![7u16; rows * kvd], vec![7u16; rows * kvd]);
            let mut got_q = vec![f32::NAN; n * qd];
            let io = QkNormRopeKvIo {
                qkv: &qkv,
                q_norm: &w,
                k_norm: &w,
                factors: None,
                positions: &pos,
                q_out: &mut got_q,
                k_cache: KvSliceMut::F16(&mut gk),
                v_cache: KvSliceMut::BF16(&mut gv),
            };
            qk_norm_rope_kv(&ctx, &p, io).unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got_q), bits(&want_q));
            assert_eq!((&gk, &gv), (&wk, &wv));
            let mut gk32 = vec![-1.0f32; rows * kvd];
            let io = QkNormRopeKvIo {
                qkv: &qkv,
                q_norm: &w,
                k_norm: &w,
                factors: None,
                positions: &pos,
                q_out: &mut got_q,
                k_cache: KvSliceMut::F32(&mut gk32),
                v_cache: KvSliceMut::BF16(&mut gv),
            };
            qk_norm_rope_kv(&ctx, &p, io).unwrap();
            assert_eq!(bits(&gk32), bits(&wk32));
        }
    }
}
