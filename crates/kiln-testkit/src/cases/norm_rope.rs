//! Case table and driver for `norm_rope` (per-head RMSNorm, then RoPE, of
//! `[n_tokens, n_heads, head_dim]` into `out`), against
//! `kiln_core::ops::norm_rope::norm_rope_ref`.

use super::rope::{factors, positions, Factors, Positions};
use super::{check_output, expect_reject, impl_failed, ref_failed, Options, Runner};
use crate::{rand_f32, Guarded, Report, Tol};
use kiln_core::ops::norm_rope::{norm_rope_ref, NormRopeParams};
use kiln_core::ops::rope::{RopeMode, RopeParams};

/// Implementation under test: `(params, x, w [head_dim], factors [n_rot /
/// 2], positions [n_tokens], out)`.
pub type NormRopeFn<'a> = dyn Fn(&NormRopeParams, &[f32], &[f32], Option<&[f32]>, &[i32], &mut [f32]) -> kiln_core::Result<()>
    + 'a;

/// One case (run in both RoPE modes): shape, RoPE base and scale, positions,
/// eps, frequency factors, |x| bound, large?
#[derive(Debug, Clone, Copy)]
pub struct NormRopeCase {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub n_rot: usize,
    pub freq_base: f32,
    pub freq_scale: f32,
    pub positions: Positions,
    pub eps: f32,
    pub factors: Option<Factors>,
    pub amp: f32,
    pub big: bool,
}

#[allow(clippy::too_many_arguments)]
const fn c(
    n_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    n_rot: usize,
    freq_base: f32,
    positions: Positions,
    eps: f32,
    factors: Option<Factors>,
) -> NormRopeCase {
    NormRopeCase {
        n_tokens,
        n_heads,
        head_dim,
        n_rot,
        freq_base,
        freq_scale: 1.0,
        positions,
        eps,
        factors,
        amp: 3.0,
        big: false,
    }
}

const fn scaled(cs: NormRopeCase, freq_scale: f32) -> NormRopeCase {
    NormRopeCase { freq_scale, ..cs }
}

const fn tiny(cs: NormRopeCase) -> NormRopeCase {
    NormRopeCase { amp: 1e-3, ..cs }
}

const fn big(cs: NormRopeCase) -> NormRopeCase {
    NormRopeCase { big: true, ..cs }
}

use Positions::{From, Random};
const RAND_F: Option<Factors> = Some(Factors::Random(0.5, 4.0));
const WIDE_F: Option<Factors> = Some(Factors::Random(0.25, 40.0));
const LLAMA3: Option<Factors> = Some(Factors::Llama3);

/// Odd head counts 1..9; head_dim 2 (one pair), 16 with n_rot 0 (norm only),
/// 64, 66 with n_rot 34 (odd pair count), 80 with n_rot 48 (partial), 128
/// (Qwen3), 256 (Gemma 3, 4 q heads and 1 kv head of 270M; base 10 000 on
/// local layers, 1e6 on global ones); eps 1e-6 and 1e-5, one case with
/// |x| < 1e-3 where eps dominates; positions from 0, deep in a context and
/// random up to 1e6 (some negative); with and without frequency factors
/// (random, wide, Llama 3.1's); decode (1 token), 3 and 17 tokens; prefills
/// of 512 and 200 tokens marked big.
pub const CASES: &[NormRopeCase] = &[
    c(1, 1, 2, 2, 10000.0, From(1), 1e-6, None),
    c(3, 5, 2, 2, 10000.0, Random(-50, 100), 1e-5, RAND_F),
    c(3, 3, 16, 0, 10000.0, From(3), 1e-6, None),
    c(1, 9, 64, 64, 100000.0, From(8191), 1e-5, None),
    c(3, 7, 64, 64, 10000.0, From(0), 1e-5, RAND_F),
    c(5, 3, 66, 34, 10000.0, Random(-50, 9000), 1e-5, WIDE_F),
    c(3, 7, 80, 48, 500000.0, Random(0, 9000), 1e-6, None),
    scaled(c(17, 3, 80, 48, 500000.0, From(100), 1e-5, WIDE_F), 0.5),
    c(1, 9, 128, 128, 1e6, Random(100_000, 1_000_000), 1e-6, None),
    c(17, 5, 128, 128, 1e6, From(4000), 1e-6, LLAMA3),
    tiny(c(3, 1, 128, 128, 1e6, From(40_000), 1e-5, None)),
    c(1, 4, 256, 256, 10000.0, From(700), 1e-6, None),
    scaled(
        c(17, 1, 256, 256, 1e6, Random(0, 200_000), 1e-6, None),
        0.125,
    ),
    c(3, 9, 256, 256, 1e6, Random(-5, 300_000), 1e-5, WIDE_F),
    big(c(512, 9, 128, 128, 1e6, From(0), 1e-6, None)),
    big(c(200, 3, 256, 256, 1e6, Random(0, 100_000), 1e-6, LLAMA3)),
];

/// Run every `norm_rope` case, in both modes, against `imp`.
pub fn check_norm_rope(imp: &NormRopeFn<'_>) -> Report {
    check_norm_rope_with(imp, &Options::default())
}

/// [`check_norm_rope`] with explicit options.
pub fn check_norm_rope_with(imp: &NormRopeFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("norm_rope", opts);
    let tol = run.tol(Tol::NORM_ROPE);
    for cs in CASES {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let name = format!(
                "{mode:?} tokens={} heads={} head_dim={} n_rot={} base={} scale={} pos={:?} \
                 eps={:e} factors={:?} |x|<{}",
                cs.n_tokens,
                cs.n_heads,
                cs.head_dim,
                cs.n_rot,
                cs.freq_base,
                cs.freq_scale,
                cs.positions,
                cs.eps,
                cs.factors,
                cs.amp
            );
            run.case(&name, cs.big, |rng| {
                let p = NormRopeParams {
                    rope: RopeParams {
                        n_tokens: cs.n_tokens,
                        n_heads: cs.n_heads,
                        head_dim: cs.head_dim,
                        n_rot: cs.n_rot,
                        freq_base: cs.freq_base,
                        freq_scale: cs.freq_scale,
                        mode,
                    },
                    eps: cs.eps,
                };
                let f = cs.factors.map(|fk| factors(rng, &p.rope, fk));
                let pos = positions(rng, cs.n_tokens, cs.positions);
                let n = cs.n_tokens * cs.n_heads * cs.head_dim;
                let x = rand_f32(rng, n, -cs.amp, cs.amp);
                let w = rand_f32(rng, cs.head_dim, -2.0, 2.0);
                let mut want = vec![0.0; n];
                norm_rope_ref(&p, &x, &w, f.as_deref(), &pos, &mut want).map_err(ref_failed)?;
                let mut out = Guarded::new(n);
                imp(&p, &x, &w, f.as_deref(), &pos, out.as_mut_slice()).map_err(impl_failed)?;
                check_output("out", &out, &want, tol)
            });
        }
    }
    check_rejects(&mut run, imp);
    run.finish()
}

/// One invalid call: its params and the inputs' lengths / values.
struct Reject {
    name: &'static str,
    p: NormRopeParams,
    x_len: usize,
    w_len: usize,
    positions: &'static [i32],
    factors: Option<&'static [f32]>,
}

/// Invalid calls: each must fail and leave `out` untouched.
fn check_rejects(run: &mut Runner<'_>, imp: &NormRopeFn<'_>) {
    let p = NormRopeParams {
        rope: RopeParams {
            n_tokens: 2,
            n_heads: 3,
            head_dim: 8,
            n_rot: 8,
            freq_base: 10000.0,
            freq_scale: 1.0,
            mode: RopeMode::Neox,
        },
        eps: 1e-6,
    };
    let ok = Reject {
        name: "",
        p,
        x_len: 48,
        w_len: 8,
        positions: &[0, 1],
        factors: None,
    };
    let rope = |name, rope: RopeParams| Reject {
        name,
        p: NormRopeParams { rope, ..p },
        ..ok
    };
    let eps = |name, eps: f32| Reject {
        name,
        p: NormRopeParams { eps, ..p },
        ..ok
    };
    let rejects = [
        rope("rejects odd n_rot", RopeParams { n_rot: 7, ..p.rope }),
        rope(
            "rejects n_rot > head_dim",
            RopeParams {
                n_rot: 10,
                ..p.rope
            },
        ),
        Reject {
            name: "rejects positions of the wrong length",
            positions: &[0],
            ..ok
        },
        Reject {
            name: "rejects w of the wrong length",
            w_len: 7,
            ..ok
        },
        Reject {
            name: "rejects x of the wrong length",
            x_len: 47,
            ..ok
        },
        eps("rejects eps 0", 0.0),
        eps("rejects negative eps", -1e-6),
        eps("rejects NaN eps", f32::NAN),
        eps("rejects infinite eps", f32::INFINITY),
        Reject {
            name: "rejects too few factors",
            factors: Some(&[1.0; 3]),
            ..ok
        },
        Reject {
            name: "rejects a zero factor",
            factors: Some(&[1.0, 0.0, 1.0, 1.0]),
            ..ok
        },
    ];
    for r in rejects {
        run.case(r.name, false, |rng| {
            let x = rand_f32(rng, r.x_len, -1.0, 1.0);
            let w = rand_f32(rng, r.w_len, -1.0, 1.0);
            let mut out = Guarded::new(48);
            let result = imp(&r.p, &x, &w, r.factors, r.positions, out.as_mut_slice());
            expect_reject(result, &out)
        });
    }
}
