//! Case table and driver for `rope_multi` (`[seq_len, n_heads, head_dim]`,
//! input → output, f32 and bf16; spec: kiln_core::ops::rope_multi).

use super::{check_output, impl_failed, ref_failed, Options, Runner};
use crate::guard::GUARD;
use crate::{compare, rand_f32, Guarded, Report, Tol};
use kiln_core::ops::rope_multi::{
    rope_multi_ref, rope_multi_ref_bf16, RopeMultiMode, RopeMultiParams, RopePairing, RopePositions,
};
use kiln_core::quant::float::{bf16_bits_to_f32, f32_to_bf16_bits};
use rand::Rng;

/// Implementation under test, f32: `(params, positions, x, out)`.
pub type RopeMultiFn<'a> =
    dyn Fn(&RopeMultiParams, &RopePositions<'_>, &[f32], &mut [f32]) -> kiln_core::Result<()> + 'a;
/// Implementation under test, bf16 bits.
pub type RopeMultiBf16Fn<'a> =
    dyn Fn(&RopeMultiParams, &RopePositions<'_>, &[u16], &mut [u16]) -> kiln_core::Result<()> + 'a;

/// One case: (mode, head_dim, rope_dim, n_heads, seq_len, freq_base,
/// sections, big).
type Case = (
    RopeMultiMode,
    usize,
    usize,
    usize,
    usize,
    f32,
    [u32; 4],
    bool,
);

use RopeMultiMode::{Imrope, Mrope, Vision};

/// The seed's shapes (the n_rot 8 spec case, the random case, Qwen3.5's
/// head_dim 256 / rope_dim 64 / sections [11, 11, 10, 0] / base 1e7),
/// Qwen2-VL-like MROPE, a vision tower, odd sizes (head_dim 10, sections
/// that do not cover the pairs, zero sections), one head, and a prefill of
/// 300 tokens (the threaded path).
pub const CASES: &[Case] = &[
    (Imrope, 16, 8, 1, 1, 2.0, [2, 2, 1, 0], false),
    (Imrope, 32, 16, 4, 6, 1e4, [3, 3, 2, 0], false),
    (Imrope, 256, 64, 4, 3, 1e7, [11, 11, 10, 0], false),
    (Mrope, 128, 128, 3, 7, 1e6, [16, 24, 24, 0], false),
    (Mrope, 10, 6, 7, 5, 1e4, [1, 1, 1, 0], false),
    (Mrope, 12, 12, 2, 3, 1e4, [0, 0, 0, 0], false),
    (Imrope, 18, 14, 3, 9, 5e5, [1, 2, 0, 1], false),
    (Vision, 80, 80, 5, 9, 1e4, [20, 20, 0, 0], false),
    (Vision, 16, 16, 1, 2, 1e4, [1, 7, 5, 5], false),
    (Imrope, 256, 64, 16, 300, 1e7, [11, 11, 10, 0], true),
];

fn params(c: &Case, pairing: RopePairing) -> RopeMultiParams {
    let &(mode, head_dim, rope_dim, n_heads, seq_len, freq_base, sections, _) = c;
    RopeMultiParams {
        head_dim,
        rope_dim,
        n_heads,
        seq_len,
        freq_base,
        mode,
        sections,
        pairing,
    }
}

/// Pairings worth running (both agree when rope_dim == head_dim).
fn pairings(c: &Case) -> &'static [RopePairing] {
    if c.2 == c.1 {
        &[RopePairing::HeadHalf]
    } else {
        &[RopePairing::HeadHalf, RopePairing::RopeHalf]
    }
}

/// Random per-axis positions in [0, 5000) (distinct axes, so a wrong axis
/// shows).
fn positions(rng: &mut impl Rng, seq_len: usize) -> Vec<i32> {
    (0..4 * seq_len).map(|_| rng.gen_range(0..5000)).collect()
}

fn name(p: &RopeMultiParams, what: &str) -> String {
    format!(
        "{what} {:?} {:?} head_dim={} rope_dim={} heads={} seq={} base={} sections={:?}",
        p.mode, p.pairing, p.head_dim, p.rope_dim, p.n_heads, p.seq_len, p.freq_base, p.sections
    )
}

/// Run every case (f32 with i32 and u32 positions, bf16) against `imp` /
/// `imp_bf16`.
pub fn check_rope_multi(imp: &RopeMultiFn<'_>, imp_bf16: &RopeMultiBf16Fn<'_>) -> Report {
    check_rope_multi_with(imp, imp_bf16, &Options::default())
}

/// [`check_rope_multi`] with explicit options.
pub fn check_rope_multi_with(
    imp: &RopeMultiFn<'_>,
    imp_bf16: &RopeMultiBf16Fn<'_>,
    opts: &Options,
) -> Report {
    let mut run = Runner::new("rope_multi", opts);
    let tol = run.tol(Tol::ROPE);
    let tol16 = run.tol(Tol::ROPE_BF16);
    for c in CASES {
        for &pairing in pairings(c) {
            let p = params(c, pairing);
            let n = p.n_heads * p.head_dim * p.seq_len;
            for unsigned in [false, true] {
                let what = if unsigned { "f32 u32-positions" } else { "f32" };
                run.case(&name(&p, what), c.7, |rng| {
                    let pos = positions(rng, p.seq_len);
                    let pos_u: Vec<u32> = pos.iter().map(|&v| v as u32).collect();
                    let rp = if unsigned {
                        RopePositions::U32(&pos_u)
                    } else {
                        RopePositions::I32(&pos)
                    };
                    let x = rand_f32(rng, n, -2.0, 2.0);
                    let mut want = vec![0.0f32; n];
                    rope_multi_ref(&p, &rp, &x, &mut want).map_err(ref_failed)?;
                    let mut out = Guarded::new(n);
                    imp(&p, &rp, &x, out.as_mut_slice()).map_err(impl_failed)?;
                    check_output("out", &out, &want, tol)
                });
            }
            run.case(&name(&p, "bf16"), c.7, |rng| {
                let pos = positions(rng, p.seq_len);
                let rp = RopePositions::I32(&pos);
                let x: Vec<u16> = rand_f32(rng, n, -2.0, 2.0)
                    .into_iter()
                    .map(f32_to_bf16_bits)
                    .collect();
                let mut want = vec![0u16; n];
                rope_multi_ref_bf16(&p, &rp, &x, &mut want).map_err(ref_failed)?;
                // NaN-poisoned output between guard zones of a sentinel.
                const SENT: u16 = 0xDEAD;
                let mut buf = vec![SENT; n + 2 * GUARD];
                buf[GUARD..GUARD + n].fill(0xFFFF);
                imp_bf16(&p, &rp, &x, &mut buf[GUARD..GUARD + n]).map_err(impl_failed)?;
                if buf[..GUARD]
                    .iter()
                    .chain(&buf[GUARD + n..])
                    .any(|&v| v != SENT)
                {
                    return Err("write outside the output (guard zone changed)".into());
                }
                let got: Vec<f32> = buf[GUARD..GUARD + n]
                    .iter()
                    .map(|&b| bf16_bits_to_f32(b))
                    .collect();
                let want: Vec<f32> = want.iter().map(|&b| bf16_bits_to_f32(b)).collect();
                compare("out", &got, &want, tol16)
            });
        }
    }
    run.finish()
}
