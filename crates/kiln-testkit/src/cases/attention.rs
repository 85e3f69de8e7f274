//! Case table and driver for causal GQA `attention` over a KV cache.
//!
//! Cache rows past `pos0 + n_tokens` are filled with NaN: an implementation
//! that reads beyond the causal window poisons its output and fails. The
//! sliding-window cases ([`check_attention_window`], a driver of its own;
//! [`crate::check_all`] runs both with the same implementation) also poison
//! the rows before the first query's window, so an off-by-one at the
//! window's start fails too. Ring caches (a window and positions past
//! `kv_stride`, which wrap) poison every row no query of the call sees.
//!
//! Every case runs with f32, f16 and bf16 caches ([`KvType`]): the random
//! f32 keys and values are rounded to the cache type (the poison stays
//! NaN) and the reference reads the rounded values widened to f32. Backends
//! widen the same stored values exactly and compute in f32, so the f16 /
//! bf16 cases are held to the same tolerance as f32 ([`Tol::ATTENTION`]):
//! the rounding is in the inputs both sides see, not in the arithmetic.
//! Soft-capped cases ([`SOFTCAP_CASES`]) run on every cache type too.

use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::attention::{attention_ref, AttentionParams};
use kiln_core::{KvSlice, KvType};

/// Implementation under test: `(params, q, k, v, out)`; `k` and `v` have
/// the same element type.
pub type AttentionFn<'a> = dyn Fn(&AttentionParams, &[f32], KvSlice<'_>, KvSlice<'_>, &mut [f32]) -> kiln_core::Result<()>
    + 'a;

/// A cache of `kv` elements holding `x` rounded (f32: as is).
#[derive(Debug, Clone)]
pub enum KvData {
    F32(Vec<f32>),
    F16(Vec<u16>),
    BF16(Vec<u16>),
}

impl KvData {
    /// `x` stored as `kv` (f16 / bf16: rounded to nearest even).
    pub fn encode(kv: KvType, x: &[f32]) -> KvData {
        let bits = |t: KvType| x.iter().map(|&v| t.encode(v).unwrap_or(0)).collect();
        match kv {
            KvType::F32 => KvData::F32(x.to_vec()),
            KvType::F16 => KvData::F16(bits(kv)),
            KvType::BF16 => KvData::BF16(bits(kv)),
        }
    }

    pub fn slice(&self) -> KvSlice<'_> {
        match self {
            KvData::F32(v) => KvSlice::F32(v),
            KvData::F16(v) => KvSlice::F16(v),
            KvData::BF16(v) => KvSlice::BF16(v),
        }
    }

    /// The stored values widened to f32 (what the reference reads).
    pub fn widened(&self) -> Vec<f32> {
        self.slice().to_f32()
    }
}

/// One case. `scale: None` means `1/sqrt(head_dim)`; q and k are uniform in
/// ±`qk_amp`, v in ±1.
#[derive(Debug, Clone, Copy)]
pub struct AttentionCase {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub pos0: usize,
    pub kv_stride: usize,
    pub qk_amp: f32,
    pub scale: Option<f32>,
    pub big: bool,
}

#[allow(clippy::too_many_arguments)]
const fn c(
    n_tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    kv_stride: usize,
    qk_amp: f32,
    scale: Option<f32>,
    big: bool,
) -> AttentionCase {
    AttentionCase {
        n_tokens,
        n_heads,
        n_kv_heads,
        head_dim,
        pos0,
        kv_stride,
        qk_amp,
        scale,
        big,
    }
}

/// Minimal and odd shapes (head_dim 1, 7, 33), MHA / MQA / GQA, spare cache
/// capacity, peaked scores (scale 1), head_dim 128, and SmolLM2 (9 heads /
/// 3 kv heads, head_dim 64): first token, decode at 300 and at the end of an
/// 8k cache, a short prefill continuing a cache, a 512-token prefill; then
/// prefills for tensor-core tiles.
pub const CASES: &[AttentionCase] = &[
    c(1, 1, 1, 1, 0, 1, 1.0, None, false),
    c(1, 1, 1, 7, 2, 5, 1.0, None, false),
    c(3, 2, 1, 8, 0, 5, 1.0, None, false),
    c(5, 4, 2, 33, 11, 20, 1.0, None, false),
    c(33, 6, 6, 16, 0, 40, 1.0, None, false),
    c(2, 8, 1, 128, 3, 9, 1.0, None, false),
    c(9, 4, 4, 64, 20, 29, 2.0, Some(1.0), false),
    c(1, 9, 3, 64, 0, 8, 1.0, None, false),
    c(1, 9, 3, 64, 300, 512, 1.0, None, false),
    c(7, 9, 3, 64, 100, 128, 1.0, None, false),
    c(1, 9, 3, 64, 8191, 8192, 1.0, None, false),
    c(4, 9, 3, 64, 2000, 2100, 1.0, None, false),
    c(512, 9, 3, 64, 0, 512, 1.0, None, true),
    // Prefill sizes for CUDA's tensor-core kernel (64-query tiles, 64-key
    // tiles): its fewest queries, a partial last tile continuing a cache
    // (SmolLM2's 9/3 at head_dim 64, 32/8 at head_dim 128).
    c(16, 4, 2, 128, 0, 16, 1.0, None, false),
    c(77, 9, 3, 64, 30, 110, 1.0, None, false),
    c(100, 32, 8, 128, 37, 140, 1.0, None, false),
];

/// Soft-capped cases: `(case, cap)`. Caps well below the scores' range
/// (scale 1, |q|, |k| <= 2: raw scores up to ~2 d) so tanh saturates,
/// one near it; decode (split-KV and warp kernels, CPU key splits), a
/// prefill on a tiled head_dim, an odd head_dim and Gemma 2's cap of 50.
pub const SOFTCAP_CASES: &[(AttentionCase, f32)] = &[
    (c(1, 8, 2, 64, 700, 701, 2.0, Some(1.0), false), 5.0),
    (c(3, 4, 1, 128, 40, 50, 2.0, Some(1.0), false), 2.0),
    (c(40, 4, 2, 64, 10, 50, 2.0, Some(1.0), false), 3.0),
    (c(5, 4, 2, 33, 11, 20, 2.0, Some(1.0), false), 8.0),
    (c(1, 16, 8, 256, 2000, 2001, 1.0, None, false), 50.0),
];

/// Run every `attention` case against `imp`.
pub fn check_attention(imp: &AttentionFn<'_>) -> Report {
    check_attention_with(imp, &Options::default())
}

/// [`AttentionParams`] of a table case.
fn case_params(cs: &AttentionCase, softcap: Option<f32>) -> AttentionParams {
    AttentionParams {
        n_tokens: cs.n_tokens,
        n_heads: cs.n_heads,
        n_kv_heads: cs.n_kv_heads,
        head_dim: cs.head_dim,
        pos0: cs.pos0,
        kv_stride: cs.kv_stride,
        scale: cs.scale.unwrap_or(1.0 / (cs.head_dim as f32).sqrt()),
        window: None,
        softcap,
    }
}

/// [`check_attention`] with explicit options.
pub fn check_attention_with(imp: &AttentionFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("attention", opts);
    let table = CASES
        .iter()
        .map(|cs| (cs, None))
        .chain(SOFTCAP_CASES.iter().map(|(cs, cap)| (cs, Some(*cap))));
    for (cs, cap) in table {
        for kv in KvType::ALL {
            let name = format!(
                "kv={kv} tokens={} heads={}/{} head_dim={} pos0={} kv_stride={} scale={}{}",
                cs.n_tokens,
                cs.n_heads,
                cs.n_kv_heads,
                cs.head_dim,
                cs.pos0,
                cs.kv_stride,
                cs.scale.map_or("1/sqrt(d)".to_string(), |s| s.to_string()),
                cap.map_or(String::new(), |c| format!(" softcap={c}"))
            );
            let p = case_params(cs, cap);
            let tol = attention_tol(opts, &p, cs.qk_amp);
            run.case(&name, cs.big, |rng| {
                run_case(rng, &p, kv, cs.qk_amp, imp, tol)
            });
        }
    }
    let p = AttentionParams {
        n_tokens: 2,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        pos0: 1,
        kv_stride: 4,
        scale: 0.35,
        window: None,
        softcap: None,
    };
    let rejects = [
        (
            "rejects n_heads not a multiple of n_kv_heads",
            AttentionParams { n_kv_heads: 3, ..p },
        ),
        (
            "rejects pos0 + n_tokens > kv_stride",
            AttentionParams { pos0: 3, ..p },
        ),
        (
            "rejects n_kv_heads 0",
            AttentionParams { n_kv_heads: 0, ..p },
        ),
    ];
    let rejects = rejects.into_iter().chain([
        (
            "rejects softcap 0",
            AttentionParams {
                softcap: Some(0.0),
                ..p
            },
        ),
        (
            "rejects a NaN softcap",
            AttentionParams {
                softcap: Some(f32::NAN),
                ..p
            },
        ),
    ]);
    for (name, bad) in rejects {
        run.case(name, false, |rng| {
            let q = rand_f32(rng, 64, -1.0, 1.0);
            let kv = rand_f32(rng, 4 * bad.n_kv_heads * 8, -1.0, 1.0);
            let mut out = Guarded::new(64);
            let (k, v) = (KvSlice::F32(&kv), KvSlice::F32(&kv));
            expect_reject(imp(&bad, &q, k, v, out.as_mut_slice()), &out)
        });
    }
    run.case("rejects a short k cache", false, |rng| {
        let q = rand_f32(rng, 64, -1.0, 1.0);
        let v = rand_f32(rng, 64, -1.0, 1.0);
        let mut out = Guarded::new(64);
        let (k, v) = (KvSlice::F32(&v[..63]), KvSlice::F32(&v));
        expect_reject(imp(&p, &q, k, v, out.as_mut_slice()), &out)
    });
    run.case("rejects k and v of different types", false, |rng| {
        let q = rand_f32(rng, 64, -1.0, 1.0);
        let v = rand_f32(rng, 64, -1.0, 1.0);
        let k = KvData::encode(KvType::BF16, &v);
        let mut out = Guarded::new(64);
        expect_reject(
            imp(&p, &q, k.slice(), KvSlice::F32(&v), out.as_mut_slice()),
            &out,
        )
    });
    run.finish()
}

/// The bound for `p` with q and k in ±`qk_amp`: [`Tol::ATTENTION`], or where
/// the backend rounds operands to bf16 (`Options::attention_bf16`)
/// [`Tol::attention_bf16`] (`Tol::ATTENTION_BF16` for |q|, |k| <= 1 and
/// scale 1/sqrt(d), looser for the peaked cases' spread scores); an
/// explicit `Options::tol` wins.
fn attention_tol(opts: &Options, p: &AttentionParams, qk_amp: f32) -> Tol {
    let default = if (opts.attention_bf16)(p) {
        Tol::attention_bf16(p.head_dim, qk_amp, p.scale)
    } else {
        Tol::ATTENTION
    };
    opts.tol.unwrap_or(default)
}

/// Random q/k/v for `p` (the caches stored as `kv`), NaN in every cache row
/// no query may read, the reference on the stored values, the
/// implementation, the comparison.
fn run_case(
    rng: &mut rand_chacha::ChaCha8Rng,
    p: &AttentionParams,
    kv: KvType,
    qk_amp: f32,
    imp: &AttentionFn<'_>,
    tol: Tol,
) -> Result<(), String> {
    let nq = p.n_tokens * p.n_heads * p.head_dim;
    let row = p.n_kv_heads * p.head_dim;
    let q = rand_f32(rng, nq, -qk_amp, qk_amp);
    let mut k = rand_f32(rng, p.kv_stride * row, -qk_amp, qk_amp);
    let mut v = rand_f32(rng, p.kv_stride * row, -1.0, 1.0);
    // Rows no query sees (past the last token, before query 0's first key,
    // and in a ring the rows of overwritten positions) hold NaN.
    let mut seen = vec![false; p.kv_stride];
    for j in p.key_range(0).0..p.pos0 + p.n_tokens {
        seen[p.kv_row(j)] = true;
    }
    for (r, _) in seen.iter().enumerate().filter(|(_, &s)| !s) {
        k[r * row..][..row].fill(f32::NAN);
        v[r * row..][..row].fill(f32::NAN);
    }
    let (k, v) = (KvData::encode(kv, &k), KvData::encode(kv, &v));
    let mut want = vec![0.0; nq];
    attention_ref(p, &q, &k.widened(), &v.widened(), &mut want).map_err(ref_failed)?;
    let mut out = Guarded::new(nq);
    imp(p, &q, k.slice(), v.slice(), out.as_mut_slice()).map_err(impl_failed)?;
    check_output("out", &out, &want, tol)
}

/// A sliding-window case: the shape as in [`AttentionCase`] (scale
/// `1/sqrt(head_dim)`, |q|, |k| <= 1) plus the window.
#[derive(Debug, Clone, Copy)]
pub struct WindowCase {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub pos0: usize,
    pub kv_stride: usize,
    pub window: usize,
    pub big: bool,
}

#[allow(clippy::too_many_arguments)]
const fn w(
    n_tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    kv_stride: usize,
    window: usize,
    big: bool,
) -> WindowCase {
    WindowCase {
        n_tokens,
        n_heads,
        n_kv_heads,
        head_dim,
        pos0,
        kv_stride,
        window,
        big,
    }
}

/// Sliding-window cases. The window's edges (1: only the query's own
/// key; exactly the keys there are; one fewer), odd head dims, and Gemma 3
/// 270M's local layers (4 q heads / 1 kv head, head_dim 256, window 512):
/// decode past the window, a prefill straddling it, a long decode that
/// takes the CPU's split-keys path, a prefill longer than the window.
pub const WINDOW_CASES: &[WindowCase] = &[
    w(1, 1, 1, 7, 5, 6, 1, false),
    w(1, 1, 1, 8, 5, 6, 6, false),
    w(1, 1, 1, 8, 5, 6, 5, false),
    w(3, 2, 1, 8, 0, 5, 2, false),
    w(5, 4, 2, 33, 11, 20, 3, false),
    w(9, 4, 1, 256, 20, 40, 8, false),
    w(1, 4, 1, 256, 600, 700, 512, false),
    w(64, 4, 1, 256, 480, 600, 512, false),
    w(1, 4, 1, 256, 3000, 3001, 512, false),
    w(600, 4, 1, 64, 0, 600, 512, true),
    // Windows shorter than a 64-key tile inside a prefill continuing a cache
    // (CUDA's tensor-core kernel at head_dim 64 and 128).
    w(70, 9, 3, 64, 5, 75, 16, false),
    w(100, 8, 2, 128, 300, 401, 40, false),
    // Ring caches (positions past kv_stride wrap; kv_stride >= window +
    // n_tokens - 1): decode with a ring of exactly the window, many laps
    // in; a prefill whose keys wrap mid-range (Gemma 3 270M's local layers
    // with a 64-token batch); tensor-core prefills that wrap inside a tile.
    w(1, 1, 1, 8, 13, 6, 6, false),
    w(1, 4, 1, 256, 3000, 512, 512, false),
    w(3, 2, 1, 33, 9, 5, 3, false),
    w(4, 4, 1, 256, 28, 11, 8, false),
    w(1, 4, 1, 256, 28, 8, 8, false),
    w(64, 4, 1, 256, 1000, 575, 512, false),
    w(70, 9, 3, 64, 200, 85, 16, false),
    w(100, 8, 2, 128, 3000, 139, 40, false),
];

/// Run every sliding-window case against `imp`.
pub fn check_attention_window(imp: &AttentionFn<'_>) -> Report {
    check_attention_window_with(imp, &Options::default())
}

/// [`check_attention_window`] with explicit options.
pub fn check_attention_window_with(imp: &AttentionFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("attention_window", opts);
    for &WindowCase {
        n_tokens,
        n_heads,
        n_kv_heads,
        head_dim,
        pos0,
        kv_stride,
        window,
        big,
    } in WINDOW_CASES
    {
        let p = AttentionParams {
            n_tokens,
            n_heads,
            n_kv_heads,
            head_dim,
            pos0,
            kv_stride,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: Some(window),
            softcap: None,
        };
        let tol = attention_tol(opts, &p, 1.0);
        for kv in KvType::ALL {
            let name = format!(
                "kv={kv} tokens={n_tokens} heads={n_heads}/{n_kv_heads} head_dim={head_dim} \
                 pos0={pos0} kv_stride={kv_stride} window={window}"
            );
            run.case(&name, big, |rng| run_case(rng, &p, kv, 1.0, imp, tol));
        }
    }
    run.case(
        "rejects a ring that would overwrite visible keys",
        false,
        |rng| {
            // Window 4, 3 tokens: a ring needs 6 rows, this one has 5.
            let p = AttentionParams {
                n_tokens: 3,
                n_heads: 1,
                n_kv_heads: 1,
                head_dim: 8,
                pos0: 10,
                kv_stride: 5,
                scale: 0.35,
                window: Some(4),
                softcap: None,
            };
            let q = rand_f32(rng, 24, -1.0, 1.0);
            let kv = rand_f32(rng, 40, -1.0, 1.0);
            let mut out = Guarded::new(24);
            let kv = KvSlice::F32(&kv);
            expect_reject(imp(&p, &q, kv, kv, out.as_mut_slice()), &out)
        },
    );
    run.case("rejects window 0", false, |rng| {
        let p = AttentionParams {
            n_tokens: 1,
            n_heads: 1,
            n_kv_heads: 1,
            head_dim: 8,
            pos0: 0,
            kv_stride: 1,
            scale: 0.35,
            window: Some(0),
            softcap: None,
        };
        let x = rand_f32(rng, 8, -1.0, 1.0);
        let mut out = Guarded::new(8);
        let kv = KvSlice::F32(&x);
        expect_reject(imp(&p, &x, kv, kv, out.as_mut_slice()), &out)
    });
    run.finish()
}
