//! Case table and driver for `cast` (f32 / f16 / bf16 in all nine
//! directions). The reference is bit-exact, so every backend must be: the
//! outputs are compared bit for bit (NaN payloads and the sign of zero
//! included), not with a [`crate::Tol`].
//!
//! Inputs per direction:
//! - "specials": ±0, ±inf, quiet and signalling NaNs with several payloads,
//!   the largest finite values and the overflow thresholds of f16 / bf16,
//!   subnormals of every format, the underflow thresholds, and exact ties
//!   (round-half-to-even up and down) in the normal and subnormal ranges
//!   of both 16-bit formats; for a 16-bit source, all 65 536 bit patterns;
//! - random lengths (SIMD and threading edges, a prefill-sized buffer),
//!   filled with a mix of random bit patterns (NaNs among them), values
//!   across the f16 exponent range, constructed f16 and bf16 ties and
//!   widened 16-bit values (f32 sources), or random 16-bit patterns.

use super::{impl_failed, ref_failed, Options, Runner};
use crate::guard::GuardedU16;
use crate::{Guarded, Report};
use kiln_core::ops::cast::{cast_ref, CastDst, CastParams, CastSrc, CAST_DTYPES};
use kiln_core::DType;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Implementation under test: `(params, src, dst)`.
pub type CastFn<'a> = dyn Fn(&CastParams, CastSrc<'_>, CastDst<'_>) -> kiln_core::Result<()> + 'a;

/// Lengths of the random cases (`true`: skipped in quick mode).
pub const SIZES: &[(usize, bool)] = &[
    (0, false),
    (1, false),
    (7, false),
    (33, false),
    (4097, false),
    (100_003, false),
    (512 * 576, true),
];

/// f32 bit patterns every f32-source case starts with (and their negations).
pub const F32_SPECIALS: &[u32] = &[
    0x0000_0000, // 0
    0x3f80_0000, // 1
    0x7f80_0000, // inf
    0x7fc0_0000, // canonical quiet NaN
    0x7f80_0001, // signalling NaN, lowest payload bit (lost in f16 / bf16)
    0x7fbf_ffff, // signalling NaN, full payload
    0x7fff_ffff, // quiet NaN, full payload
    0x7f80_2000, // signalling NaN whose payload reaches f16's bits
    0x7f81_0000, // signalling NaN whose payload reaches bf16's bits
    0x7f7f_ffff, // f32 max: overflows both 16-bit formats
    0x0000_0001, // smallest f32 subnormal: underflows to 0
    0x007f_ffff, // largest f32 subnormal (a bf16 subnormal after rounding)
    0x0080_0000, // smallest f32 normal
    // f16 range: max 65504, 65519.996 (max), 65520 (tie -> inf), 65536.
    0x477f_e000,
    0x477f_efff,
    0x477f_f000,
    0x4780_0000,
    // f16 subnormals: 2^-14 (smallest normal) and just below it, 2^-24,
    // 2^-25 (tie -> 0) and its neighbours, 1.5 and 2.5 x 2^-24 (ties).
    0x3880_0000,
    0x387f_ffff,
    0x387f_f000,
    0x3380_0000,
    0x3300_0000,
    0x3300_0001,
    0x32ff_ffff,
    0x33c0_0000,
    0x3420_0000,
    // f16 ties at 1: 1 + 2^-11 (to even: down), 1 + 3*2^-11 (up), neighbours.
    0x3f80_1000,
    0x3f80_3000,
    0x3f80_1001,
    0x3f80_0fff,
    // bf16 ties: 1 + 2^-8 (down), 1 + 3*2^-8 (up), neighbours; max and its
    // overflow tie; a bf16 subnormal tie and a tie that rounds up into
    // the normals.
    0x3f80_8000,
    0x3f81_8000,
    0x3f80_8001,
    0x3f80_7fff,
    0x7f7f_7fff,
    0x7f7f_8000,
    0x0000_8000,
    0x0001_8000,
    0x007f_8000,
    // Plain values.
    0x4049_0fdb, // pi
    0x3dcc_cccd, // 0.1
    0x4b80_0001, // 2^24 + 2
];

/// Run every `cast` case against `imp`.
pub fn check_cast(imp: &CastFn<'_>) -> Report {
    check_cast_with(imp, &Options::default())
}

/// [`check_cast`] with explicit options.
pub fn check_cast_with(imp: &CastFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("cast", opts);
    for src in CAST_DTYPES {
        for dst in CAST_DTYPES {
            let name = |what: &str| format!("{src}->{dst} {what}");
            if src == DType::F32 {
                run.case(&name("specials"), false, |rng| {
                    let mut x: Vec<u32> = F32_SPECIALS
                        .iter()
                        .flat_map(|&b| [b, b | 0x8000_0000])
                        .collect();
                    x.extend((0..1000).map(|_| f32_bits(rng)));
                    check(imp, src, dst, &x)
                });
            } else {
                run.case(&name("all 65536 patterns"), false, |_| {
                    check(imp, src, dst, &(0..=0xffff).collect::<Vec<u32>>())
                });
            }
            for &(n, big) in SIZES {
                run.case(&name(&format!("n={n}")), big, |rng| {
                    let x: Vec<u32> = if src == DType::F32 {
                        (0..n).map(|_| f32_bits(rng)).collect()
                    } else {
                        (0..n).map(|_| u32::from(rng.gen::<u16>())).collect()
                    };
                    check(imp, src, dst, &x)
                });
            }
        }
    }
    rejections(&mut run, imp);
    run.finish()
}

/// One random f32 bit pattern from a mix of categories (see the module docs).
fn f32_bits(rng: &mut ChaCha8Rng) -> u32 {
    let sign = if rng.gen::<bool>() { 0x8000_0000 } else { 0 };
    match rng.gen_range(0..8) {
        // Any pattern (about 0.4% NaN, 0.4% subnormal).
        0 | 1 => rng.gen(),
        // Exponents across the f16 range and a little past it both ways.
        2 | 3 => sign | (rng.gen_range(98u32..=144) << 23) | rng.gen_range(0..0x80_0000),
        // f16 ties: the 13 dropped bits exactly half (normal range), or
        // half of the significand bits shifted out (subnormal range; at
        // 2^-25 the tie bit is the implicit one).
        4 => {
            let e = rng.gen_range(102u32..=142);
            let drop = if e >= 113 { 13 } else { 126 - e };
            let keep = rng.gen_range(0..0x80_0000u32) >> drop << drop;
            let tie = if drop < 24 { 1 << (drop - 1) } else { 0 };
            sign | (e << 23) | keep | tie
        }
        // bf16 ties anywhere (all exponents below inf, subnormals included).
        5 => sign | (rng.gen_range(0u32..0xff) << 23) | (rng.gen_range(0..0x80u32) << 16) | 0x8000,
        // A widened f16 or bf16 value (exactly representable: no rounding).
        6 => {
            let h = rng.gen::<u16>();
            if rng.gen::<bool>() {
                kiln_core::quant::float::f16_bits_to_f32(h).to_bits()
            } else {
                u32::from(h) << 16
            }
        }
        _ => rng.gen_range(-4.0f32..4.0).to_bits(),
    }
}

/// Run `imp` on `x` (bits of `src`) into a poisoned, guarded `dst` buffer
/// and compare every output bit with the reference.
fn check(imp: &CastFn<'_>, src: DType, dst: DType, x: &[u32]) -> Result<(), String> {
    let p = CastParams {
        n: x.len(),
        src,
        dst,
    };
    let xf: Vec<f32> = x.iter().map(|&b| f32::from_bits(b)).collect();
    let xh: Vec<u16> = x.iter().map(|&b| b as u16).collect();
    let input = || {
        if src == DType::F32 {
            CastSrc::F32(&xf)
        } else {
            CastSrc::Bits(&xh)
        }
    };
    let (got, want): (Vec<u32>, Vec<u32>) = if dst == DType::F32 {
        let mut want = vec![0f32; x.len()];
        cast_ref(&p, input(), CastDst::F32(&mut want)).map_err(ref_failed)?;
        let mut out = Guarded::new(x.len());
        imp(&p, input(), CastDst::F32(out.as_mut_slice())).map_err(impl_failed)?;
        out.check_guards()?;
        (
            out.as_slice().iter().map(|v| v.to_bits()).collect(),
            want.iter().map(|v| v.to_bits()).collect(),
        )
    } else {
        let mut want = vec![0u16; x.len()];
        cast_ref(&p, input(), CastDst::Bits(&mut want)).map_err(ref_failed)?;
        let mut out = GuardedU16::new(x.len());
        imp(&p, input(), CastDst::Bits(out.as_mut_slice())).map_err(impl_failed)?;
        out.check_guards()?;
        (
            out.as_slice().iter().map(|&v| u32::from(v)).collect(),
            want.iter().map(|&v| u32::from(v)).collect(),
        )
    };
    let bad: Vec<usize> = (0..x.len()).filter(|&i| got[i] != want[i]).collect();
    if bad.is_empty() {
        return Ok(());
    }
    let first: Vec<String> = bad
        .iter()
        .take(6)
        .map(|&i| {
            format!(
                "[{i}] {:#x} -> got {:#x}, want {:#x}",
                x[i], got[i], want[i]
            )
        })
        .collect();
    Err(format!(
        "{} of {} outputs differ in their bits: {}",
        bad.len(),
        x.len(),
        first.join("; ")
    ))
}

/// Invalid calls: each must return an error and write nothing.
fn rejections(run: &mut Runner<'_>, imp: &CastFn<'_>) {
    let reject = |p: CastParams, src: CastSrc<'_>, n_out: usize, f32_out: bool| {
        if f32_out {
            let mut out = Guarded::new(n_out);
            let r = imp(&p, src, CastDst::F32(out.as_mut_slice()));
            super::expect_reject(r, &out)
        } else {
            let mut out = GuardedU16::new(n_out);
            match imp(&p, src, CastDst::Bits(out.as_mut_slice())) {
                Ok(()) => Err("accepted an invalid call".to_string()),
                Err(_) if !out.untouched() => {
                    Err("returned an error but wrote its output (validate first)".to_string())
                }
                Err(_) => out.check_guards(),
            }
        }
    };
    let p = |src, dst| CastParams { n: 8, src, dst };
    let (f, h) = ([1.0f32; 8], [0x3c00u16; 8]);
    run.case("rejects dst shorter than n", false, |_| {
        reject(p(DType::F32, DType::F16), CastSrc::F32(&f), 7, false)
    });
    run.case("rejects src longer than n", false, |_| {
        let long = [0x3c00u16; 9];
        reject(p(DType::BF16, DType::F32), CastSrc::Bits(&long), 8, true)
    });
    run.case("rejects a quantized src dtype", false, |_| {
        reject(p(DType::Q8_0, DType::F32), CastSrc::Bits(&h), 8, true)
    });
    run.case("rejects a quantized dst dtype", false, |_| {
        reject(p(DType::F32, DType::Q4_0), CastSrc::F32(&f), 8, false)
    });
    run.case("rejects an F32 src in a 16-bit buffer", false, |_| {
        reject(p(DType::F32, DType::F16), CastSrc::Bits(&h), 8, false)
    });
    run.case("rejects an F16 dst in an f32 buffer", false, |_| {
        reject(p(DType::BF16, DType::F16), CastSrc::Bits(&h), 8, true)
    });
}
