//! sample on the CPU (spec: [`kiln_core::ops::sample`]): the same ids as
//! the reference, bit for bit (the same key, weight and target functions;
//! integer sums), without its sorts. Single-threaded: one pass over the
//! row, then work on the tokens that can survive.
//!
//! 1. One pass over 64-value chunks: each chunk's maximum (kept) and
//!    usable count, in eight float lanes so it vectorizes; with top-k on,
//!    the k-th largest key by a streamed selection: a chunk whose maximum
//!    is not above the running threshold is skipped; keys above it go to a
//!    buffer of a few k, cut back to k with `select_nth_unstable` when full.
//! 2. Only the chunks whose maximum reaches a threshold are read again.
//!    Top-p: the mass `Z` over `v >= t_k` and the candidates' mass over
//!    `v >= max(t_k, t_min)`; when that reaches the target (otherwise the
//!    nucleus threshold lies below the candidates and cuts nothing), radix
//!    select over the candidates' keys with 11-bit digits and `u64` mass
//!    histograms — the GPU's method with wider digits, the same answer.
//!    Float compares stand in for key compares (the key orders as the
//!    value does, `-0 == +0`).
//! 3. The draw: each chunk's weight sum, then the one chunk where the
//!    running sum passes the target, walked in id order. Weights are
//!    computed a chunk at a time, eight lanes at once with AVX2.

use kiln_core::ops::sample::{
    draw_target, key, key_value, penalize, top_p_target, weight, SampleParams, Sampled, KEY_INF,
    NO_TOKEN,
};
use kiln_core::Result;

use crate::CpuContext;

/// Values per chunk of the skipping scans.
const CHUNK: usize = 64;
/// Key of `-f32::MAX`, the smallest usable finite key.
const KEY_MIN_FINITE: u32 = 0x0080_0000;

/// Buffers [`sample_with`] reuses between calls (a sampler keeps one, so
/// decoding does not allocate per token once they have grown).
#[derive(Debug, Default, Clone)]
pub struct SampleScratch {
    /// Logits after the repetition penalty.
    work: Vec<f32>,
    /// Each chunk's maximum.
    chunk_max: Vec<f32>,
    /// Streamed top-k keys.
    keys: Vec<u32>,
    /// Top-p's candidates: key and temperature-1 weight.
    c_key: Vec<u32>,
    c_w: Vec<u32>,
    /// Each chunk's draw-weight sum.
    chunk_sum: Vec<u64>,
    /// Radix-select histogram.
    hist: Vec<u64>,
    /// Weights of one chunk.
    chunk_w: Vec<u32>,
    /// Whether AVX2 computes the weights (detected on first use).
    simd: Option<bool>,
}

impl SampleScratch {
    /// Compute weights with AVX2 exactly when `f` has it (else the CPU's
    /// own detection decides, at first use). The ids do not depend on it.
    pub fn set_features(&mut self, f: crate::CpuFeatures) {
        self.simd = Some(f.has_avx2_fma());
    }
}

/// One token id from `logits` (or [`NO_TOKEN`]), allocating its scratch.
pub fn sample(
    ctx: &CpuContext,
    p: &SampleParams,
    logits: &[f32],
    penalty_ids: &[u32],
    u: f64,
) -> Result<u32> {
    Ok(sample_full(ctx, p, logits, penalty_ids, u)?.id)
}

/// [`sample`] with caller-owned scratch.
pub fn sample_with(
    s: &mut SampleScratch,
    p: &SampleParams,
    logits: &[f32],
    penalty_ids: &[u32],
    u: f64,
) -> Result<u32> {
    Ok(sample_full_with(s, p, logits, penalty_ids, u)?.id)
}

/// [`sample`] with the kept set's threshold key (what the parity tests compare).
pub fn sample_full(
    ctx: &CpuContext,
    p: &SampleParams,
    logits: &[f32],
    penalty_ids: &[u32],
    u: f64,
) -> Result<Sampled> {
    let mut s = SampleScratch {
        simd: Some(ctx.features().has_avx2_fma()),
        ..SampleScratch::default()
    };
    sample_full_with(&mut s, p, logits, penalty_ids, u)
}

/// [`sample_full`] with caller-owned scratch.
pub fn sample_full_with(
    s: &mut SampleScratch,
    p: &SampleParams,
    logits: &[f32],
    penalty_ids: &[u32],
    u: f64,
) -> Result<Sampled> {
    p.validate_call(logits.len(), penalty_ids.len(), u)?;
    let simd = *s
        .simd
        .get_or_insert_with(|| crate::CpuFeatures::detect().has_avx2_fma());
    let v: &[f32] = if p.penalizes() {
        s.work.clear();
        s.work.extend_from_slice(logits);
        for &id in penalty_ids {
            if let (Some(o), Some(&x)) = (s.work.get_mut(id as usize), logits.get(id as usize)) {
                *o = penalize(x, p.repeat_penalty);
            }
        }
        &s.work
    } else {
        logits
    };

    // Pass 1. NaN never compares greater and -inf is the start, so `max`
    // stays -inf exactly when nothing is usable.
    let stream_k = (p.top_k > 0 && p.top_k < v.len()).then_some(p.top_k);
    let (max, usable) = pass1(&mut s.chunk_max, &mut s.keys, v, stream_k);
    if max == f32::NEG_INFINITY {
        return Ok(Sampled {
            id: NO_TOKEN,
            threshold: 0,
        });
    }
    let max_key = key(max);
    if max_key == KEY_INF || p.temperature == 0.0 {
        return Ok(Sampled {
            id: among_maxima(p, v, max, u),
            threshold: max_key,
        });
    }
    let m = key_value(max_key);
    let k_top = match (p.top_k_of(usable), stream_k) {
        (Some(k), Some(_)) => cut_to_k(&mut s.keys, k),
        _ => 0,
    };
    let k_min = p.ln_min_p().map_or(0, |l| key(m + l));
    let k_cut = k_top.max(k_min).max(1);

    // Only chunks that reach a threshold are read again (values, not keys:
    // `x >= t` is `key(x) >= key(t)` for usable x; -f32::MAX stands for
    // "every finite value").
    let t_top = key_value(k_top.max(KEY_MIN_FINITE));
    let t_cut = key_value(k_cut.max(KEY_MIN_FINITE));
    let mut lo = k_cut;
    if p.top_p < 1.0 {
        // Z over the top-k survivors, the mass of those at or above t_cut
        // ((x - m) / 1 is x - m exactly: the temperature-1 weights).
        let (mut z, mut mass) = (0u64, 0u64);
        for (chunk, &cm) in v.chunks(CHUNK).zip(&s.chunk_max) {
            if cm >= t_top {
                weights(simd, &mut s.chunk_w, chunk, m, 1.0, t_top);
                for (&x, &w) in chunk.iter().zip(&s.chunk_w) {
                    z += u64::from(w);
                    mass += if x >= t_cut { u64::from(w) } else { 0 };
                }
            }
        }
        let target = top_p_target(p.top_p, z);
        if mass >= target {
            // First digit (the top 11 key bits) straight from the row, then
            // the candidates under it gathered for the remaining digits.
            let (chunk_max, chunk_w) = (&s.chunk_max, &mut s.chunk_w);
            let mut cands = |f: &mut dyn FnMut(u32, u32)| {
                for (chunk, &cm) in v.chunks(CHUNK).zip(chunk_max) {
                    if cm >= t_cut {
                        weights(simd, chunk_w, chunk, m, 1.0, t_cut);
                        for (&x, &w) in chunk.iter().zip(chunk_w.iter()) {
                            if x >= t_cut {
                                f(key(x), w);
                            }
                        }
                    }
                }
            };
            let (hist, keys, ws) = (&mut s.hist, &mut s.c_key, &mut s.c_w);
            hist.clear();
            hist.resize(1 << 11, 0);
            cands(&mut |k, w| hist[(k >> 21) as usize] += u64::from(w));
            let (d, above) = pick_bin(hist, 0, target);
            keys.clear();
            ws.clear();
            cands(&mut |k, w| {
                if k >> 21 == d {
                    keys.push(k);
                    ws.push(w);
                }
            });
            lo = lo.max(mass_select(keys, ws, target, hist, d << 21, above));
        }
    }

    // The draw: weights of the kept tokens chunk by chunk, then the chunk
    // where the running sum passes the target, walked in id order.
    let t_lo = key_value(lo.max(KEY_MIN_FINITE));
    let t = p.temperature;
    s.chunk_sum.clear();
    let mut total = 0u64;
    for (chunk, &cm) in v.chunks(CHUNK).zip(&s.chunk_max) {
        let mut sum = 0;
        if cm >= t_lo {
            weights(simd, &mut s.chunk_w, chunk, m, t, t_lo);
            sum = s.chunk_w.iter().map(|&w| u64::from(w)).sum();
        }
        s.chunk_sum.push(sum);
        total += sum;
    }
    let target = draw_target(u, total);
    let mut cum = 0u64;
    for (c, (chunk, &sum)) in v.chunks(CHUNK).zip(&s.chunk_sum).enumerate() {
        if cum + sum <= target {
            cum += sum;
            continue;
        }
        weights(simd, &mut s.chunk_w, chunk, m, t, t_lo);
        for (j, &w) in s.chunk_w.iter().enumerate() {
            cum += u64::from(w);
            if cum > target {
                return Ok(Sampled {
                    id: (c * CHUNK + j) as u32,
                    threshold: lo,
                });
            }
        }
    }
    Ok(Sampled {
        id: NO_TOKEN,
        threshold: lo,
    })
}

/// `out[i] = weight((vals[i] - m) / t)` where `vals[i] >= thr`, else 0;
/// eight at a time with AVX2 when `simd` (the same operations, so the same
/// bits: no FMA, IEEE rounding, no flush to zero).
fn weights(simd: bool, out: &mut Vec<u32>, vals: &[f32], m: f32, t: f32, thr: f32) {
    out.clear();
    out.resize(vals.len(), 0);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: AVX2 was detected at run time (`CpuFeatures`).
        done = unsafe { avx2::weights(out, vals, m, t, thr) };
    }
    let _ = simd;
    for (o, &x) in out[done..].iter_mut().zip(&vals[done..]) {
        *o = if x >= thr { weight((x - m) / t) } else { 0 };
    }
}

/// Pass 1: the maximum and the usable count; each chunk's maximum into
/// `chunk_max`; with `k`, the streamed top-k keys in `keys` (more than k
/// of them: [`cut_to_k`] finishes the selection).
fn pass1(
    chunk_max: &mut Vec<f32>,
    keys: &mut Vec<u32>,
    v: &[f32],
    k: Option<usize>,
) -> (f32, usize) {
    chunk_max.clear();
    keys.clear();
    let cap = k.map_or(0, |k| (2 * k).max(k + 1024));
    // Values not above `floor` cannot be among the k largest.
    let mut floor = f32::NEG_INFINITY;
    let (mut max, mut usable) = (f32::NEG_INFINITY, 0usize);
    for chunk in v.chunks(CHUNK) {
        let (cm, cu) = max_and_usable(chunk);
        chunk_max.push(cm);
        usable += cu;
        max = if cm > max { cm } else { max };
        if let Some(k) = k {
            if cm > floor {
                for &x in chunk {
                    if x > floor {
                        keys.push(key(x));
                        if keys.len() == cap {
                            floor = key_value(cut_to_k(keys, k));
                        }
                    }
                }
            }
        }
    }
    (max, usable)
}

/// The largest value (-inf when none is usable) and the usable count, in
/// eight independent lanes.
fn max_and_usable(v: &[f32]) -> (f32, usize) {
    let mut m = [f32::NEG_INFINITY; 8];
    let mut n = [0u32; 8];
    let mut it = v.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            m[j] = if c[j] > m[j] { c[j] } else { m[j] };
            n[j] += u32::from(c[j] > f32::NEG_INFINITY);
        }
    }
    for &x in it.remainder() {
        m[0] = if x > m[0] { x } else { m[0] };
        n[0] += u32::from(x > f32::NEG_INFINITY);
    }
    let max = m
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    (max, n.iter().map(|&c| c as usize).sum())
}

/// Keep the `k` largest of `keys` and return the k-th largest.
fn cut_to_k(keys: &mut Vec<u32>, k: usize) -> u32 {
    if k == 0 || keys.len() < k {
        return 0;
    }
    let (_, kth, _) = keys.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
    let kth = *kth;
    keys.truncate(k);
    kth
}

/// Stage 3 of the spec: temperature 0 (the first maximum) or the `+inf`
/// tokens equally likely. `max` is usable, so `x == max` is `key(x) ==
/// key(max)`.
fn among_maxima(p: &SampleParams, v: &[f32], max: f32, u: f64) -> u32 {
    let mut top = v
        .iter()
        .enumerate()
        .filter(|&(_, &x)| x == max)
        .map(|(i, _)| i as u32);
    if p.temperature == 0.0 {
        return top.next().unwrap_or(NO_TOKEN);
    }
    let count = v.iter().filter(|&&x| x == max).count();
    let j = draw_target(u, count as u64) as usize;
    top.nth(j).unwrap_or(NO_TOKEN)
}

/// The bin where the mass from the top, starting at `above` (below the
/// target), reaches the target (bin 0 if none earlier), and the mass above
/// that bin.
fn pick_bin(hist: &[u64], mut above: u64, target: u64) -> (u32, u64) {
    let mut d = hist.len().saturating_sub(1);
    while d > 0 && above + hist[d] < target {
        above += hist[d];
        d -= 1;
    }
    (d as u32, above)
}

/// The largest key `K` with `Σ_{key >= K} w >= target`, given the top 11
/// bits (`prefix`), the mass `above` of the keys above that range, and the
/// candidates in that range (`keys`, weights `w`): the last two digits
/// (11 and 10 bits) most significant first, each pass histogramming the
/// weights of the candidates under the prefix found so far.
fn mass_select(
    keys: &[u32],
    w: &[u32],
    target: u64,
    hist: &mut Vec<u64>,
    mut prefix: u32,
    mut above: u64,
) -> u32 {
    for (shift, bits) in [(10u32, 11u32), (0, 10)] {
        let bins = 1usize << bits;
        hist.clear();
        hist.resize(bins, 0);
        let high = u32::MAX << (shift + bits);
        for (&k, &w) in keys.iter().zip(w) {
            if k & high == prefix {
                hist[((k >> shift) as usize) & (bins - 1)] += u64::from(w);
            }
        }
        let (d, a) = pick_bin(hist, above, target);
        above = a;
        prefix |= d << shift;
    }
    prefix
}

/// kiln-core's `weight` eight lanes at a time, step for step.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Fills `out[..8k]` (k = `vals.len() / 8`) as [`super::weights`] does;
    /// returns how many it filled.
    ///
    /// # Safety
    /// The CPU must support AVX2; `out` is at least as long as `vals`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn weights(out: &mut [u32], vals: &[f32], m: f32, t: f32, thr: f32) -> usize {
        let f = |b: u32| _mm256_set1_ps(f32::from_bits(b));
        let (vm, vt, vthr) = (_mm256_set1_ps(m), _mm256_set1_ps(t), _mm256_set1_ps(thr));
        let (lo_cut, half, one) = (
            _mm256_set1_ps(-22.0),
            _mm256_set1_ps(0.5),
            _mm256_set1_ps(1.0),
        );
        let poly = [
            f(0x3950_0d01),
            f(0x3ab6_0b61),
            f(0x3c08_8889),
            f(0x3d2a_aaab),
            f(0x3e2a_aaab),
            f(0x3f00_0000),
        ];
        let n8 = vals.len() / 8 * 8;
        let mut i = 0;
        while i < n8 {
            let v = _mm256_loadu_ps(vals.as_ptr().add(i));
            let keep = _mm256_cmp_ps(v, vthr, _CMP_GE_OQ);
            let x = _mm256_div_ps(_mm256_sub_ps(v, vm), vt);
            let ok = _mm256_and_ps(keep, _mm256_cmp_ps(x, lo_cut, _CMP_GT_OQ));
            let x = _mm256_and_ps(x, ok);
            let tt = _mm256_mul_ps(x, f(0x3fb8_aa3b));
            let y = _mm256_add_ps(tt, half);
            let n = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(y));
            let n = _mm256_sub_ps(n, _mm256_and_ps(_mm256_cmp_ps(n, y, _CMP_GT_OQ), one));
            let r = _mm256_sub_ps(
                _mm256_sub_ps(x, _mm256_mul_ps(n, f(0x3f31_7200))),
                _mm256_mul_ps(n, f(0x35bf_be8e)),
            );
            let mut p = poly[0];
            for &c in &poly[1..] {
                p = _mm256_add_ps(_mm256_mul_ps(p, r), c);
            }
            p = _mm256_add_ps(_mm256_mul_ps(p, r), one);
            p = _mm256_add_ps(_mm256_mul_ps(p, r), one);
            let e = _mm256_slli_epi32(
                _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)),
                23,
            );
            let w = _mm256_mul_ps(
                _mm256_mul_ps(p, _mm256_castsi256_ps(e)),
                _mm256_set1_ps(2_147_483_648.0),
            );
            // w is in [0, 2^31]: truncation is exact below 2^31, and 2^31
            // converts to 0x8000_0000, which is 2^31 as u32.
            let wi = _mm256_and_si256(_mm256_cvttps_epi32(w), _mm256_castps_si256(ok));
            _mm256_storeu_si256(out.as_mut_ptr().add(i).cast(), wi);
            i += 8;
        }
        n8
    }
}
