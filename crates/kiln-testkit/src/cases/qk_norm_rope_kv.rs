//! Case table and driver for `qk_norm_rope_kv` (per-head RMSNorm + RoPE of
//! the q and k spans of `[q | k | v]` rows, q into `q_out`, k and v
//! appended to f32 / f16 / bf16 caches, plain or ring), against
//! `kiln_core::ops::qk_norm_rope_kv::qk_norm_rope_kv_ref`.
//!
//! - `q_out` and an f32 K cache: [`Tol::NORM_ROPE`] (the norm_rope bound).
//! - A 16-bit K cache: every element must be the cache type's rounding of
//!   some f32 within [`Tol::NORM_ROPE`]'s `max_abs` of the reference's f32
//!   value (rounding is monotone: between the roundings of `want - tol`
//!   and `want + tol`), i.e. the norm_rope bound, then the exact KV-append
//!   rounding. Nothing looser: a value one rounding step off where the
//!   reference is not near a rounding boundary fails.
//! - The V cache: bit for bit (a copy, or one rounding per value).
//!
//! Caches start poisoned between guard zones; rows outside the append must
//! keep their poison. Each case runs with the row given by the params
//! ([`Rows::Params`]) and with the row read from the first position
//! ([`Rows::FirstPosition`], the device-position variant a CUDA graph
//! records: `dst_row` is then the largest row allowed).

use super::rope::{factors, positions, Factors, Positions};
use super::{check_output, impl_failed, ref_failed, Options, Runner};
use crate::guard::GuardedKv;
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::norm_rope::NormRopeParams;
use kiln_core::ops::qk_norm_rope_kv::{qk_norm_rope_kv_ref, QkNormRopeKvIo, QkNormRopeKvParams};
use kiln_core::ops::rope::{RopeMode, RopeParams};
use kiln_core::{KvSlice, KvType};

/// Where the cache rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    /// Row `p.dst_row + t` (mod the ring).
    Params,
    /// Row `positions[0] + t` (mod the ring), `positions[0]` in
    /// `0..=p.dst_row`: the device-position variant.
    FirstPosition,
}

/// Implementation under test.
pub type QkNormRopeKvFn<'a> =
    dyn Fn(Rows, &QkNormRopeKvParams, QkNormRopeKvIo<'_>) -> kiln_core::Result<()> + 'a;

/// One case (run in both RoPE modes, every cache type, both [`Rows`]).
#[derive(Debug, Clone, Copy)]
pub struct QkCase {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_heads_kv: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    pub freq_base: f32,
    /// RoPE positions with [`Rows::Params`]; [`Rows::FirstPosition`] uses
    /// `dst_row, dst_row + 1, ...`.
    pub positions: Positions,
    pub factors: Option<Factors>,
    /// Rows of each cache.
    pub cache_rows: usize,
    /// The caches are rings of `cache_rows` rows.
    pub ring: bool,
    /// First cache row (any position in a ring).
    pub dst_row: usize,
}

#[allow(clippy::too_many_arguments)]
const fn c(
    n_tokens: usize,
    (n_heads, n_heads_kv): (usize, usize),
    (head_dim, n_rot): (usize, usize),
    freq_base: f32,
    positions: Positions,
    factors: Option<Factors>,
    (cache_rows, ring): (usize, bool),
    dst_row: usize,
) -> QkCase {
    QkCase {
        n_tokens,
        n_heads,
        n_heads_kv,
        head_dim,
        n_rot,
        freq_base,
        positions,
        factors,
        cache_rows,
        ring,
        dst_row,
    }
}

use Positions::{From, Random};
const RAND_F: Option<Factors> = Some(Factors::Random(0.5, 4.0));
const LLAMA3: Option<Factors> = Some(Factors::Llama3);
const PLAIN: bool = false;
const RING: bool = true;

/// Decode (1 token) at Qwen3's shapes (head_dim 128, 32 q / 4 kv heads as
/// Qwen3-30B-A3B, 16 / 8 as Qwen3-8B... here 7 / 3 and 9 / 1 for odd head
/// counts), the synthetic qwen3's (64, 4 / 2), one pair (head_dim 2),
/// partial rotation with an odd pair count (66 / 34), norm only (n_rot 0);
/// the first and last cache rows, deep positions, random positions (the
/// rope's, independent of the rows); batches of 3 and 5 tokens; rings:
/// many laps in, a batch that wraps past the ring's end, a batch that fills
/// the ring; with and without frequency factors.
pub const CASES: &[QkCase] = &[
    c(1, (4, 2), (64, 64), 1e6, From(0), None, (16, PLAIN), 0),
    c(1, (32, 4), (128, 128), 1e6, From(37), None, (40, PLAIN), 37),
    c(
        1,
        (7, 3),
        (128, 128),
        1e6,
        From(39),
        RAND_F,
        (40, PLAIN),
        39,
    ),
    c(
        1,
        (9, 1),
        (64, 64),
        1e4,
        Random(0, 1_000_000),
        None,
        (9, PLAIN),
        4,
    ),
    c(1, (3, 3), (2, 2), 1e4, From(5), None, (7, PLAIN), 5),
    c(
        1,
        (5, 1),
        (66, 34),
        1e4,
        From(3000),
        LLAMA3,
        (7, RING),
        3000,
    ),
    c(1, (1, 1), (16, 0), 1e4, From(2), None, (3, PLAIN), 2),
    c(3, (5, 3), (80, 48), 5e5, From(9), RAND_F, (12, PLAIN), 9),
    c(3, (4, 2), (64, 64), 1e6, From(115), None, (4, RING), 115),
    c(
        5,
        (3, 1),
        (128, 128),
        1e6,
        Random(-50, 9000),
        RAND_F,
        (5, RING),
        13,
    ),
    c(5, (2, 2), (256, 256), 1e4, From(1), None, (8, PLAIN), 1),
];

/// Run every case against `imp`.
pub fn check_qk_norm_rope_kv(imp: &QkNormRopeKvFn<'_>) -> Report {
    check_qk_norm_rope_kv_with(imp, &Options::default())
}

/// [`check_qk_norm_rope_kv`] with explicit options.
pub fn check_qk_norm_rope_kv_with(imp: &QkNormRopeKvFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("qk_norm_rope_kv", opts);
    let tol = run.tol(Tol::NORM_ROPE);
    for cs in CASES {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            for kv in KvType::ALL {
                for rows in [Rows::Params, Rows::FirstPosition] {
                    let name = format!("{mode:?} {kv} {rows:?} {cs:?}");
                    run.case(&name, false, |rng| {
                        run_case(rng, cs, mode, kv, rows, tol, imp)
                    });
                }
            }
        }
    }
    check_rejects(&mut run, imp);
    run.finish()
}

fn params(cs: &QkCase, mode: RopeMode) -> QkNormRopeKvParams {
    QkNormRopeKvParams {
        q: NormRopeParams {
            rope: RopeParams {
                n_tokens: cs.n_tokens,
                n_heads: cs.n_heads,
                head_dim: cs.head_dim,
                n_rot: cs.n_rot,
                freq_base: cs.freq_base,
                freq_scale: 1.0,
                mode,
            },
            eps: 1e-6,
        },
        n_heads_kv: cs.n_heads_kv,
        dst_row: cs.dst_row,
        dst_ring: cs.ring.then_some(cs.cache_rows),
    }
}

fn run_case(
    rng: &mut rand_chacha::ChaCha8Rng,
    cs: &QkCase,
    mode: RopeMode,
    kv: KvType,
    rows: Rows,
    tol: Tol,
    imp: &QkNormRopeKvFn<'_>,
) -> Result<(), String> {
    let mut p = params(cs, mode);
    let pos = match rows {
        Rows::Params => positions(rng, cs.n_tokens, cs.positions),
        Rows::FirstPosition => positions(rng, cs.n_tokens, From(cs.dst_row as i32)),
    };
    // The reference's params: the row the implementation must use.
    let want_p = p;
    if rows == Rows::FirstPosition {
        // The largest row the launch allows: the cache's last batch, or
        // with a ring any position (here far past the one used, and not
        // on its ring row, so using it instead shows).
        p.dst_row = if cs.ring {
            cs.dst_row + 10 * cs.cache_rows + 1
        } else {
            cs.cache_rows - cs.n_tokens
        };
    }
    let f = cs.factors.map(|fk| factors(rng, &p.q.rope, fk));
    let n = cs.n_tokens;
    let qkv = rand_f32(rng, n * p.row_len(), -3.0, 3.0);
    let q_norm = rand_f32(rng, cs.head_dim, -2.0, 2.0);
    let k_norm = rand_f32(rng, cs.head_dim, -2.0, 2.0);
    let cache_len = cs.cache_rows * p.kv_dim();
    let mut want_q = vec![0.0f32; n * p.q_dim()];
    let (mut want_k, mut want_v) = (GuardedKv::new(kv, cache_len), GuardedKv::new(kv, cache_len));
    // The reference's k before the cache rounding: an f32 "cache".
    let mut want_k32 = Guarded::new(cache_len);
    for (kc, vc) in [
        (want_k.as_mut(), want_v.as_mut()),
        (
            kiln_core::KvSliceMut::F32(want_k32.as_mut_slice()),
            GuardedKv::new(kv, cache_len).as_mut(),
        ),
    ] {
        let io = QkNormRopeKvIo {
            qkv: &qkv,
            q_norm: &q_norm,
            k_norm: &k_norm,
            factors: f.as_deref(),
            positions: &pos,
            q_out: &mut want_q,
            k_cache: kc,
            v_cache: vc,
        };
        qk_norm_rope_kv_ref(&want_p, io).map_err(ref_failed)?;
    }
    let mut q_out = Guarded::new(n * p.q_dim());
    let (mut got_k, mut got_v) = (GuardedKv::new(kv, cache_len), GuardedKv::new(kv, cache_len));
    let io = QkNormRopeKvIo {
        qkv: &qkv,
        q_norm: &q_norm,
        k_norm: &k_norm,
        factors: f.as_deref(),
        positions: &pos,
        q_out: q_out.as_mut_slice(),
        k_cache: got_k.as_mut(),
        v_cache: got_v.as_mut(),
    };
    imp(rows, &p, io).map_err(impl_failed)?;
    check_output("q_out", &q_out, &want_q, tol)?;
    got_k.check_guards().map_err(|e| format!("k_cache: {e}"))?;
    got_v.check_guards().map_err(|e| format!("v_cache: {e}"))?;
    check_k_cache(
        got_k.as_slice(),
        want_k32.as_slice(),
        want_k.as_slice(),
        tol,
    )?;
    let (g, w) = (bits(got_v.as_slice()), bits(want_v.as_slice()));
    match g.iter().zip(&w).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "v_cache[{i}] (row {}): bits {:#x}, want {:#x}",
            i / p.kv_dim().max(1),
            g[i],
            w[i]
        )),
    }
}

/// The K cache against the reference's f32 values `want32` (NaN where the
/// append does not write) and its stored cache `want` (see the module docs).
fn check_k_cache(
    got: KvSlice<'_>,
    want32: &[f32],
    want: KvSlice<'_>,
    tol: Tol,
) -> Result<(), String> {
    if let KvSlice::F32(g) = got {
        return crate::compare("k_cache", g, want32, tol);
    }
    let kv = got.kv_type();
    let (gb, wb) = (bits(got), bits(want));
    let mut bad = Vec::new();
    for (i, &w) in want32.iter().enumerate() {
        if w.is_nan() {
            // Outside the append: the poison must stay.
            if gb[i] != wb[i] {
                bad.push(format!("k_cache[{i}] outside the append was written"));
            }
            continue;
        }
        let g = kv.decode(gb[i] as u16);
        let (lo, hi) = (kv.round(w - tol.max_abs), kv.round(w + tol.max_abs));
        if !(lo <= g && g <= hi) {
            bad.push(format!(
                "k_cache[{i}] = {g}, want the {kv} rounding of {w} ± {} ([{lo}, {hi}])",
                tol.max_abs
            ));
        }
    }
    match bad.len() {
        0 => Ok(()),
        n => Err(format!(
            "{n} bad K cache element(s): {}",
            bad[..n.min(4)].join("; ")
        )),
    }
}

/// Bits of a cache (f32 bits as-is; 16-bit widened).
fn bits(s: KvSlice<'_>) -> Vec<u32> {
    match s {
        KvSlice::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        KvSlice::F16(v) | KvSlice::BF16(v) => v.iter().map(|&b| u32::from(b)).collect(),
    }
}

/// Invalid calls: each must fail and write none of the outputs.
fn check_rejects(run: &mut Runner<'_>, imp: &QkNormRopeKvFn<'_>) {
    let ok = params(&CASES[0], RopeMode::Neox); // 4 / 2 heads of 64, 16 rows
    let rope = |f: fn(&mut RopeParams)| {
        let mut p = ok;
        f(&mut p.q.rope);
        p
    };
    // (name, params, rows, qkv, q_norm, k_norm, positions, factors, cache rows)
    type Reject<'a> = (
        &'a str,
        QkNormRopeKvParams,
        Rows,
        usize,
        usize,
        usize,
        &'a [i32],
        Option<&'a [f32]>,
        usize,
    );
    let rejects: [Reject<'_>; 10] = [
        (
            "rejects odd n_rot",
            rope(|r| r.n_rot = 63),
            Rows::Params,
            512,
            64,
            64,
            &[0],
            None,
            16,
        ),
        (
            "rejects a short qkv row",
            ok,
            Rows::Params,
            511,
            64,
            64,
            &[0],
            None,
            16,
        ),
        (
            "rejects a short k_norm",
            ok,
            Rows::Params,
            512,
            64,
            63,
            &[0],
            None,
            16,
        ),
        (
            "rejects positions of the wrong length",
            ok,
            Rows::Params,
            512,
            64,
            64,
            &[0, 1],
            None,
            16,
        ),
        (
            "rejects a cache row past the end",
            QkNormRopeKvParams { dst_row: 16, ..ok },
            Rows::Params,
            512,
            64,
            64,
            &[16],
            None,
            16,
        ),
        (
            "rejects a cache too short for the largest row",
            QkNormRopeKvParams { dst_row: 15, ..ok },
            Rows::FirstPosition,
            512,
            64,
            64,
            &[3],
            None,
            15,
        ),
        (
            "rejects a first position past dst_row",
            QkNormRopeKvParams { dst_row: 3, ..ok },
            Rows::FirstPosition,
            512,
            64,
            64,
            &[4],
            None,
            16,
        ),
        (
            "rejects a negative first position",
            ok,
            Rows::FirstPosition,
            512,
            64,
            64,
            &[-1],
            None,
            16,
        ),
        (
            "rejects a ring larger than the cache",
            QkNormRopeKvParams {
                dst_ring: Some(17),
                ..ok
            },
            Rows::Params,
            512,
            64,
            64,
            &[0],
            None,
            16,
        ),
        (
            "rejects a zero factor",
            ok,
            Rows::Params,
            512,
            64,
            64,
            &[0],
            Some(&[0.0; 32]),
            16,
        ),
    ];
    for (name, p, rows, qkv_len, qn, kn, pos, f, cache_rows) in rejects {
        for kv in [KvType::F32, KvType::BF16] {
            run.case(&format!("{name} ({kv} caches)"), false, |rng| {
                let qkv = rand_f32(rng, qkv_len, -1.0, 1.0);
                let (q_norm, k_norm) = (rand_f32(rng, qn, -1.0, 1.0), rand_f32(rng, kn, -1.0, 1.0));
                let mut q_out = Guarded::new(p.q_dim());
                let (mut kc, mut vc) = (
                    GuardedKv::new(kv, cache_rows * 128),
                    GuardedKv::new(kv, cache_rows * 128),
                );
                let io = QkNormRopeKvIo {
                    qkv: &qkv,
                    q_norm: &q_norm,
                    k_norm: &k_norm,
                    factors: f,
                    positions: pos,
                    q_out: q_out.as_mut_slice(),
                    k_cache: kc.as_mut(),
                    v_cache: vc.as_mut(),
                };
                match imp(rows, &p, io) {
                    Ok(()) => Err("accepted an invalid call".to_string()),
                    Err(_) if !(q_out.untouched() && kc.untouched() && vc.untouched()) => {
                        Err("returned an error but wrote an output (validate first)".to_string())
                    }
                    Err(_) => q_out
                        .check_guards()
                        .and(kc.check_guards())
                        .and(vc.check_guards()),
                }
            });
        }
    }
}
