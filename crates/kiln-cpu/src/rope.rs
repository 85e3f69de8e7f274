//! rope on the CPU (spec: [`kiln_core::ops::rope`]), in place.
//!
//! cos/sin per (position, pair) come from a process-wide table keyed by
//! `(n_rot, freq_base, freq_scale)` and grown on demand up to
//! [`MAX_CACHED_POS`] positions; angles are formed in f64 exactly as the
//! reference does, then rounded once to f32. Positions outside the table
//! (negative or beyond the cap) compute their row on the fly. Tokens spread
//! over the rayon pool for prefill-sized batches; AVX2 rotates 4 pairs (Normal)
//! or 8 pairs (NeoX) per instruction group.

use crate::CpuContext;
use kiln_core::ops::rope::{RopeMode, RopeParams};
use kiln_core::Result;
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Largest number of positions a cached table covers (n_rot 128: 16 MiB).
pub const MAX_CACHED_POS: usize = 1 << 15;
/// Tables kept for distinct (n_rot, base, scale) keys.
const MAX_TABLES: usize = 4;
/// Below this many elements one thread does every token.
const PAR_MIN: usize = 1 << 14;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    n_rot: usize,
    base_bits: u32,
    scale_bits: u32,
    /// FNV-1a of the frequency factors' bits (0: none).
    factors: u64,
}

/// `cs[pos * n_rot ..][..n_rot]` = `cos(theta_0..half) ++ sin(theta_0..half)`.
struct Table {
    key: Key,
    n_pos: usize,
    cs: Vec<f32>,
}

static TABLES: Mutex<Vec<Arc<Table>>> = Mutex::new(Vec::new());

fn factors_key(factors: Option<&[f32]>) -> u64 {
    factors.map_or(0, |f| {
        f.iter().fold(0xCBF2_9CE4_8422_2325u64, |h, v| {
            v.to_bits()
                .to_le_bytes()
                .iter()
                .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3))
        })
    })
}

/// Fill `row` (`n_rot` floats) with the cos/sin of every pair at `pos`.
fn fill_row(p: &RopeParams, factors: Option<&[f32]>, pos: i32, row: &mut [f32]) {
    let half = p.n_rot / 2;
    for i in 0..half {
        let div = factors.map_or(1.0, |f| f64::from(f[i]));
        let (s, c) = (p.theta(pos, i) / div).sin_cos();
        row[i] = c as f32;
        row[half + i] = s as f32;
    }
}

/// A table covering positions `0..need`, or `None` when `need` exceeds the cap.
fn table_for(p: &RopeParams, factors: Option<&[f32]>, need: usize) -> Option<Arc<Table>> {
    if need > MAX_CACHED_POS || p.n_rot == 0 {
        return None;
    }
    let key = Key {
        n_rot: p.n_rot,
        base_bits: p.freq_base.to_bits(),
        scale_bits: p.freq_scale.to_bits(),
        factors: factors_key(factors),
    };
    // A poisoned lock only means another thread panicked mid-build; the Vec
    // of finished Arcs is still consistent.
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = tables.iter().find(|t| t.key == key && t.n_pos >= need) {
        return Some(Arc::clone(t));
    }
    let n_pos = need.next_power_of_two().clamp(1024, MAX_CACHED_POS);
    let mut cs = vec![0.0f32; n_pos * p.n_rot];
    for (pos, row) in cs.chunks_exact_mut(p.n_rot).enumerate() {
        fill_row(p, factors, pos as i32, row);
    }
    let t = Arc::new(Table { key, n_pos, cs });
    tables.retain(|t| t.key != key);
    tables.insert(0, Arc::clone(&t));
    tables.truncate(MAX_TABLES);
    Some(t)
}

/// Rotate `x: [n_tokens, n_heads, head_dim]` in place.
pub fn rope(ctx: &CpuContext, p: &RopeParams, positions: &[i32], x: &mut [f32]) -> Result<()> {
    rope_with_factors(ctx, p, None, positions, x)
}

/// [`rope`] with optional per-pair frequency factors
/// ([`kiln_core::ops::rope`]'s docs); the cached tables are keyed by them too.
pub fn rope_with_factors(
    ctx: &CpuContext,
    p: &RopeParams,
    factors: Option<&[f32]>,
    positions: &[i32],
    x: &mut [f32],
) -> Result<()> {
    p.validate(positions.len(), x.len())?;
    kiln_core::ops::rope::check_factors(p, factors)?;
    let tok_len = p.n_heads * p.head_dim;
    if p.n_rot == 0 || tok_len == 0 {
        return Ok(());
    }
    let need = positions
        .iter()
        .filter(|&&q| q >= 0)
        .map(|&q| q as usize + 1)
        .max()
        .unwrap_or(0);
    let table = table_for(p, factors, need);
    let f = ctx.features();
    let token = |pos: i32, xt: &mut [f32], scratch: &mut Vec<f32>| {
        let cs: &[f32] = match &table {
            Some(t) if pos >= 0 && (pos as usize) < t.n_pos => {
                &t.cs[pos as usize * p.n_rot..][..p.n_rot]
            }
            _ => {
                scratch.resize(p.n_rot, 0.0);
                fill_row(p, factors, pos, scratch);
                scratch
            }
        };
        let (cos, sin) = cs.split_at(p.n_rot / 2);
        for head in xt.chunks_exact_mut(p.head_dim) {
            rotate_head(f, p.mode, cos, sin, &mut head[..p.n_rot]);
        }
    };
    if x.len() < PAR_MIN || ctx.threads() == 1 {
        let mut scratch = Vec::new();
        for (&pos, xt) in positions.iter().zip(x.chunks_exact_mut(tok_len)) {
            token(pos, xt, &mut scratch);
        }
    } else {
        ctx.pool().install(|| {
            positions
                .par_iter()
                .zip(x.par_chunks_exact_mut(tok_len))
                .for_each_init(Vec::new, |scratch, (&pos, xt)| token(pos, xt, scratch));
        });
    }
    Ok(())
}

/// Rotate the first `n_rot = 2 * cos.len()` dims of one head.
fn rotate_head(f: crate::CpuFeatures, mode: RopeMode, cos: &[f32], sin: &[f32], h: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if f.has_avx2_fma() {
        // SAFETY: AVX2+FMA were detected at run time; h has 2 * cos.len() elements.
        unsafe {
            match mode {
                RopeMode::Normal => normal_avx2(cos, sin, h),
                RopeMode::Neox => neox_avx2(cos, sin, h),
            }
        }
        return;
    }
    let _ = f;
    let half = cos.len();
    match mode {
        RopeMode::Normal => normal_tail(cos, sin, h, 0),
        RopeMode::Neox => {
            let (a, b) = h.split_at_mut(half);
            neox_tail(cos, sin, a, b, 0)
        }
    }
}

/// Normal pairs `(2i, 2i+1)` for `i >= from`.
fn normal_tail(cos: &[f32], sin: &[f32], h: &mut [f32], from: usize) {
    for i in from..cos.len() {
        let (a, b) = (h[2 * i], h[2 * i + 1]);
        h[2 * i] = a * cos[i] - b * sin[i];
        h[2 * i + 1] = a * sin[i] + b * cos[i];
    }
}

/// NeoX pairs `(a[i], b[i])` for `i >= from`.
fn neox_tail(cos: &[f32], sin: &[f32], a: &mut [f32], b: &mut [f32], from: usize) {
    for i in from..cos.len() {
        let (x, y) = (a[i], b[i]);
        a[i] = x * cos[i] - y * sin[i];
        b[i] = x * sin[i] + y * cos[i];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normal_avx2(cos: &[f32], sin: &[f32], h: &mut [f32]) {
    use std::arch::x86_64::*;
    let half = cos.len().min(sin.len()).min(h.len() / 2);
    let dup = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    let ph = h.as_mut_ptr();
    let mut i = 0;
    while i + 4 <= half {
        let c = _mm256_permutevar8x32_ps(
            _mm256_castps128_ps256(_mm_loadu_ps(cos.as_ptr().add(i))),
            dup,
        );
        let s = _mm256_permutevar8x32_ps(
            _mm256_castps128_ps256(_mm_loadu_ps(sin.as_ptr().add(i))),
            dup,
        );
        let x = _mm256_loadu_ps(ph.add(2 * i));
        let xs = _mm256_permute_ps(x, 0b1011_0001); // (b, a) per pair
                                                    // even lanes: a c - b s; odd lanes: b c + a s.
        _mm256_storeu_ps(
            ph.add(2 * i),
            _mm256_fmaddsub_ps(x, c, _mm256_mul_ps(xs, s)),
        );
        i += 4;
    }
    normal_tail(&cos[..half], &sin[..half], h, i);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn neox_avx2(cos: &[f32], sin: &[f32], h: &mut [f32]) {
    use std::arch::x86_64::*;
    let half = cos.len().min(sin.len()).min(h.len() / 2);
    let (a, b) = h.split_at_mut(half);
    let (pa, pb) = (a.as_mut_ptr(), b.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= half {
        let c = _mm256_loadu_ps(cos.as_ptr().add(i));
        let s = _mm256_loadu_ps(sin.as_ptr().add(i));
        let x = _mm256_loadu_ps(pa.add(i));
        let y = _mm256_loadu_ps(pb.add(i));
        _mm256_storeu_ps(pa.add(i), _mm256_fmsub_ps(x, c, _mm256_mul_ps(y, s)));
        _mm256_storeu_ps(pb.add(i), _mm256_fmadd_ps(x, s, _mm256_mul_ps(y, c)));
        i += 8;
    }
    neox_tail(&cos[..half], &sin[..half], a, b, i);
}
