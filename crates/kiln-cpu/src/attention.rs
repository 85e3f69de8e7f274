//! attention on the CPU (spec: [`kiln_core::ops::attention`]): causal GQA
//! over the KV cache (f32, or f16 / bf16 widened to f32 a block of rows at
//! a time), optionally through a sliding window (each query walks only its
//! key range `AttentionParams::key_range`) and with a logit soft cap.
//!
//! Work item = one query token (all heads) over a range of keys. Keys are
//! walked in blocks of [`BLOCK`]; each K/V cache row (all kv heads,
//! contiguous) is loaded once per item and used by every query head while it
//! sits in L1 — at long contexts the cache does not fit in the last-level
//! cache, and per-head passes would stream it `n_heads` times. Per block and
//! head (online softmax, as in flash attention):
//! 1. `s_j = (scale * q) . k_j` into a small per-task scratch (with a soft
//!    cap `c`: `s_j = c * tanh((scale / c * q) . k_j)`);
//! 2. new running max `m' = max(m, max_j s_j)`; rescale `acc` and `l` by
//!    `exp(m - m')`; `p_j = exp(s_j - m')` (vectorised exp, relative error
//!    < 4e-7), `l += sum p_j` (f64 lanes);
//! 3. `acc += sum_j p_j v_j` (axpy over head_dim); at the end `out = acc / l`.
//!
//! Items run in parallel on the pool (prefill: one per token, uneven causal
//! lengths balanced by work stealing). When there are fewer tokens than
//! threads to feed (decode) and the cache is long, each token's keys are
//! split into chunks whose partial `(m, l, acc)` are merged with the same
//! rescaling.
//!
//! Ring caches (a window and positions past `kv_stride`: position `j` in row
//! `j % kv_stride`): a block stops at the ring's end, so its rows stay
//! contiguous.
//!
//! f16 / bf16 caches: each block's K and V rows (all kv heads) are widened
//! into per-task f32 buffers once and then used by every head exactly as
//! f32 rows are, so the arithmetic is the f32 path's on the stored values.

use crate::vmath;
use crate::{CpuContext, CpuFeatures};
use kiln_core::ops::attention::AttentionParams;
use kiln_core::{Error, KvSlice, Result};
use rayon::prelude::*;

/// Keys per online-softmax block: the block's K/V rows (BLOCK * n_kv_heads *
/// head_dim floats each: 24 KiB for SmolLM2) stay in L1 while every head uses them.
const BLOCK: usize = 32;
/// Smallest key range worth a task of its own when splitting along keys.
const MIN_SPLIT_KEYS: usize = 256;

/// Per-task scratch: scaled queries `[n_heads, d]`, block scores `[n_heads, BLOCK]`,
/// and for 16-bit caches the block's K and V rows widened to f32
/// `[BLOCK, n_kv_heads * d]`.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    s: Vec<f32>,
    kw: Vec<f32>,
    vw: Vec<f32>,
}

/// Running softmax state of one item: `acc` `[n_heads, d]` (unnormalised),
/// `m` and `l` `[n_heads]`.
struct State<'s> {
    acc: &'s mut [f32],
    m: &'s mut [f32],
    l: &'s mut [f32],
}

/// One block of keys: `n` K and V rows (all kv heads), as f32.
struct Block<'b> {
    n: usize,
    k: &'b [f32],
    v: &'b [f32],
}

/// Shared inputs of every item.
struct Inputs<'a> {
    p: &'a AttentionParams,
    f: CpuFeatures,
    q: &'a [f32],
    k: KvSlice<'a>,
    v: KvSlice<'a>,
}

/// Elements `r` of a 16-bit cache widened into `out` (cleared first).
fn widen(src: KvSlice<'_>, r: std::ops::Range<usize>, out: &mut Vec<f32>) {
    out.clear();
    match src.slice(r) {
        KvSlice::F32(v) => out.extend_from_slice(v),
        KvSlice::F16(v) => {
            use half::slice::HalfFloatSliceExt;
            out.resize(v.len(), 0.0);
            // F16C where the CPU has it (exact either way).
            bytemuck::cast_slice::<u16, half::f16>(v).convert_to_f32_slice(out);
        }
        KvSlice::BF16(v) => out.extend(v.iter().map(|&b| f32::from_bits(u32::from(b) << 16))),
    }
}

impl Inputs<'_> {
    /// Token `t` over keys `j0..j1`, starting from an empty state.
    fn run(&self, t: usize, j0: usize, j1: usize, sc: &mut Scratch, st: State<'_>) {
        let (d, nh) = (self.p.head_dim, self.p.n_heads);
        let qs = match self.p.softcap {
            Some(c) => self.p.scale / c,
            None => self.p.scale,
        };
        sc.q.clear();
        sc.q.extend(self.q[t * nh * d..][..nh * d].iter().map(|&x| x * qs));
        sc.s.clear();
        sc.s.resize(nh * BLOCK, 0.0);
        st.acc.fill(0.0);
        st.m.fill(f32::NEG_INFINITY);
        st.l.fill(0.0);
        let mut st = st;
        let stride = self.p.n_kv_heads * d;
        // Widening buffers, taken out of the scratch while blocks borrow it.
        let (mut kw, mut vw) = (std::mem::take(&mut sc.kw), std::mem::take(&mut sc.vw));
        let mut b0 = j0;
        while b0 < j1 {
            // A block never crosses a ring's end: its rows are contiguous.
            let r0 = self.p.kv_row(b0);
            let b1 = (b0 + BLOCK).min(j1).min(b0 + self.p.kv_stride - r0);
            let rows = r0 * stride..(r0 + b1 - b0) * stride;
            let blk = match (self.k, self.v) {
                (KvSlice::F32(k), KvSlice::F32(v)) => Block {
                    n: b1 - b0,
                    k: &k[rows.clone()],
                    v: &v[rows],
                },
                (k, v) => {
                    widen(k, rows.clone(), &mut kw);
                    widen(v, rows, &mut vw);
                    Block {
                        n: b1 - b0,
                        k: &kw,
                        v: &vw,
                    }
                }
            };
            #[cfg(target_arch = "x86_64")]
            if self.f.has_avx2_fma() {
                // SAFETY: AVX2+FMA were detected at run time; the block holds
                // rows r0..r0 + (b1 - b0) (in bounds: validate checked the
                // cache lengths, and b1 - b0 <= kv_stride - r0).
                unsafe {
                    match d {
                        32 => self.block_avx2_fixed::<4>(&blk, sc, &mut st),
                        64 => self.block_avx2_fixed::<8>(&blk, sc, &mut st),
                        128 => self.block_avx2_fixed::<16>(&blk, sc, &mut st),
                        _ => self.block_avx2(&blk, sc, &mut st),
                    }
                }
                b0 = b1;
                continue;
            }
            self.block_scalar(&blk, sc, &mut st);
            b0 = b1;
        }
        sc.kw = kw;
        sc.vw = vw;
    }

    /// Apply the soft cap to raw scores (q was pre-scaled by `scale / c`).
    #[inline]
    fn cap(&self, s: &mut [f32]) {
        if let Some(c) = self.p.softcap {
            s.iter_mut().for_each(|x| *x = c * x.tanh());
        }
    }

    /// Rescale head `h`'s state to the new max of its block scores `s`.
    /// Returns the max to subtract from the scores.
    fn rescale(&self, h: usize, block_max: f32, st: &mut State<'_>) -> f32 {
        let d = self.p.head_dim;
        let m_new = st.m[h].max(block_max);
        if m_new > st.m[h] && st.l[h] > 0.0 {
            let c = (st.m[h] - m_new).exp();
            st.l[h] *= c;
            st.acc[h * d..][..d].iter_mut().for_each(|x| *x *= c);
        }
        st.m[h] = m_new;
        m_new
    }

    fn block_scalar(&self, blk: &Block<'_>, sc: &mut Scratch, st: &mut State<'_>) {
        let (d, nh, n) = (self.p.head_dim, self.p.n_heads, blk.n);
        let stride = self.p.n_kv_heads * d;
        for j in 0..n {
            let krow = &blk.k[j * stride..][..stride];
            for h in 0..nh {
                let kh = &krow[self.p.kv_head(h) * d..][..d];
                sc.s[h * BLOCK + j] = vmath::scalar::dot(&sc.q[h * d..][..d], kh);
            }
        }
        for h in 0..nh {
            let s = &mut sc.s[h * BLOCK..][..n];
            self.cap(s);
            let m = self.rescale(h, vmath::scalar::max(s), st);
            st.l[h] += vmath::scalar::exp_sub_sum(s, m);
        }
        for j in 0..n {
            let vrow = &blk.v[j * stride..][..stride];
            for h in 0..nh {
                let vh = &vrow[self.p.kv_head(h) * d..][..d];
                vmath::scalar::axpy(sc.s[h * BLOCK + j], vh, &mut st.acc[h * d..][..d]);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2(&self, blk: &Block<'_>, sc: &mut Scratch, st: &mut State<'_>) {
        use vmath::avx2;
        let (d, nh, n) = (self.p.head_dim, self.p.n_heads, blk.n);
        let stride = self.p.n_kv_heads * d;
        for j in 0..n {
            let krow = &blk.k[j * stride..][..stride];
            for h in 0..nh {
                let kh = &krow[self.p.kv_head(h) * d..][..d];
                sc.s[h * BLOCK + j] = avx2::dot(&sc.q[h * d..][..d], kh);
            }
        }
        for h in 0..nh {
            let s = &mut sc.s[h * BLOCK..][..n];
            self.cap(s);
            let m = self.rescale(h, avx2::max(s), st);
            st.l[h] += avx2::exp_sub_sum(s, m);
        }
        for j in 0..n {
            let vrow = &blk.v[j * stride..][..stride];
            for h in 0..nh {
                let vh = &vrow[self.p.kv_head(h) * d..][..d];
                avx2::axpy(sc.s[h * BLOCK + j], vh, &mut st.acc[h * d..][..d]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Inputs<'_> {
    /// [`Self::block_avx2`] for `head_dim == 8 * NV`: a query head and its
    /// accumulator live in `NV` registers across the block, and scores are
    /// reduced four keys at a time.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn block_avx2_fixed<const NV: usize>(
        &self,
        blk: &Block<'_>,
        sc: &mut Scratch,
        st: &mut State<'_>,
    ) {
        use std::arch::x86_64::*;
        let (d, nh, n) = (self.p.head_dim, self.p.n_heads, blk.n);
        debug_assert_eq!(d, 8 * NV);
        let stride = self.p.n_kv_heads * d;
        let (kp, vp) = (blk.k.as_ptr(), blk.v.as_ptr());
        // Every row index below is < n and every column < stride, so the raw
        // reads stay inside the block's rows.
        debug_assert!(n * stride <= blk.k.len() && n * stride <= blk.v.len());
        for h in 0..nh {
            let kvo = self.p.kv_head(h) * d;
            let qp = sc.q.as_ptr().add(h * d);
            let qv: [__m256; NV] = std::array::from_fn(|i| _mm256_loadu_ps(qp.add(8 * i)));
            let dot = |j: usize| -> __m256 {
                let kr = kp.add(j * stride + kvo);
                // Two accumulator chains (even / odd vectors) to hide FMA latency.
                let mut ab = [_mm256_setzero_ps(); 2];
                for (i, qi) in qv.iter().enumerate() {
                    ab[i % 2] = _mm256_fmadd_ps(*qi, _mm256_loadu_ps(kr.add(8 * i)), ab[i % 2]);
                }
                _mm256_add_ps(ab[0], ab[1])
            };
            let s = &mut sc.s[h * BLOCK..][..n];
            let mut j = 0;
            while j + 4 <= n {
                let (d0, d1, d2, d3) = (dot(j), dot(j + 1), dot(j + 2), dot(j + 3));
                // Transpose-reduce: lanes of r = [s0 s1 s2 s3] in each 128-bit half.
                let r = _mm256_hadd_ps(_mm256_hadd_ps(d0, d1), _mm256_hadd_ps(d2, d3));
                let r4 = _mm_add_ps(_mm256_castps256_ps128(r), _mm256_extractf128_ps(r, 1));
                _mm_storeu_ps(s.as_mut_ptr().add(j), r4);
                j += 4;
            }
            while j < n {
                s[j] = vmath::avx2::hsum(dot(j));
                j += 1;
            }
            self.cap(s);
            let m = self.rescale(h, vmath::avx2::max(s), st);
            st.l[h] += vmath::avx2::exp_sub_sum(s, m);
            let ap = st.acc.as_mut_ptr().add(h * d);
            let mut acc: [__m256; NV] = std::array::from_fn(|i| _mm256_loadu_ps(ap.add(8 * i)));
            for (j, &w) in s.iter().enumerate() {
                let vr = vp.add(j * stride + kvo);
                let pw = _mm256_set1_ps(w);
                for (i, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(pw, _mm256_loadu_ps(vr.add(8 * i)), *a);
                }
            }
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(ap.add(8 * i), *a);
            }
        }
    }
}

/// Causal GQA attention; see the module docs. `k` and `v` must be caches
/// of the same element type.
pub fn attention(
    ctx: &CpuContext,
    p: &AttentionParams,
    q: &[f32],
    k: KvSlice<'_>,
    v: KvSlice<'_>,
    out: &mut [f32],
) -> Result<()> {
    p.validate(q.len(), k.len(), v.len(), out.len())?;
    if k.kv_type() != v.kv_type() {
        return Err(Error::invalid(
            "attention",
            format!("k cache is {} but v cache is {}", k.kv_type(), v.kv_type()),
        ));
    }
    if p.n_tokens == 0 {
        return Ok(());
    }
    let (d, nh) = (p.head_dim, p.n_heads);
    let inputs = Inputs {
        p,
        f: ctx.features(),
        q,
        k,
        v,
    };
    let max_keys = p
        .window
        .map_or(p.pos0 + p.n_tokens, |w| w.min(p.pos0 + p.n_tokens));
    let threads = ctx.threads();
    let splits = if threads > 1 && p.n_tokens < 2 * threads && max_keys >= 2 * MIN_SPLIT_KEYS {
        (2 * threads)
            .div_ceil(p.n_tokens)
            .min(max_keys / MIN_SPLIT_KEYS)
    } else {
        1
    };

    ctx.pool().install(|| {
        if splits == 1 {
            out.par_chunks_mut(nh * d).enumerate().for_each_init(
                || (Scratch::default(), vec![0.0f32; 2 * nh]),
                |(sc, ml), (t, o)| {
                    let (m, l) = ml.split_at_mut(nh);
                    let (first, end) = p.key_range(t);
                    inputs.run(
                        t,
                        first,
                        end,
                        sc,
                        State {
                            acc: &mut *o,
                            m,
                            l: &mut *l,
                        },
                    );
                    for (oh, &lh) in o.chunks_exact_mut(d).zip(l.iter()) {
                        let inv = 1.0 / lh;
                        oh.iter_mut().for_each(|x| *x *= inv);
                    }
                },
            );
        } else {
            // Partial c of token t at (t * splits + c) * size: [m; nh] [l; nh] [acc; nh * d].
            let size = nh * (d + 2);
            let mut part = vec![0.0f32; p.n_tokens * splits * size];
            part.par_chunks_mut(size).enumerate().for_each_init(
                Scratch::default,
                |sc, (tc, pc)| {
                    let (t, c) = (tc / splits, tc % splits);
                    let (first, end) = p.key_range(t);
                    let n = end - first;
                    let per = n.div_ceil(splits);
                    let (j0, j1) = (first + (c * per).min(n), first + ((c + 1) * per).min(n));
                    let (m, rest) = pc.split_at_mut(nh);
                    let (l, acc) = rest.split_at_mut(nh);
                    inputs.run(t, j0, j1, sc, State { acc, m, l });
                },
            );
            out.par_chunks_mut(nh * d)
                .zip(part.par_chunks(splits * size))
                .for_each(|(o, parts)| merge(parts, nh, d, o));
        }
    });
    Ok(())
}

/// Merge the partial `(m, l, acc)` of each head of a token into `out`.
fn merge(parts: &[f32], nh: usize, d: usize, out: &mut [f32]) {
    let size = nh * (d + 2);
    for (h, o) in out.chunks_exact_mut(d).enumerate() {
        let chunks = || {
            parts
                .chunks_exact(size)
                .map(|c| (c[h], c[nh + h], &c[2 * nh + h * d..][..d]))
        };
        let big_m = chunks()
            .map(|(m, _, _)| m)
            .fold(f32::NEG_INFINITY, f32::max);
        o.fill(0.0);
        let mut l = 0.0f32;
        for (m, lc, acc) in chunks() {
            if lc == 0.0 {
                continue; // empty key range
            }
            let w = (m - big_m).exp();
            l += w * lc;
            for (x, &a) in o.iter_mut().zip(acc) {
                *x += w * a;
            }
        }
        let inv = 1.0 / l;
        o.iter_mut().for_each(|x| *x *= inv);
    }
}
