//! Case table and driver for `argmax` (largest finite value, lowest index
//! on ties, NaN/inf ignored, error when nothing is finite).

use super::{impl_failed, Options, Runner};
use crate::{rand_f32, Report};
use kiln_core::ops::argmax::argmax_ref;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Implementation under test: `(x) -> index`.
pub type ArgmaxFn<'a> = dyn Fn(&[f32]) -> kiln_core::Result<u32> + 'a;

/// How a case's vector is built from uniform random values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Plain random values.
    Random,
    /// The maximum copied to a second, later index (tie).
    Tie,
    /// Every value equal (answer 0).
    AllEqual,
    /// The maximum at the last index.
    MaxLast,
    /// NaN, +inf and -inf sprinkled in, including just before the maximum.
    NonFinite,
    /// All values negative.
    Negative,
}

/// Lengths around SIMD widths and the SmolLM2 vocabulary (49152).
pub const SIZES: &[usize] = &[1, 2, 7, 8, 9, 16, 33, 257, 49152, 100_003];

const PATTERNS: &[Pattern] = &[
    Pattern::Random,
    Pattern::Tie,
    Pattern::AllEqual,
    Pattern::MaxLast,
    Pattern::NonFinite,
    Pattern::Negative,
];

fn build(rng: &mut ChaCha8Rng, n: usize, pat: Pattern) -> Vec<f32> {
    let mut x = match pat {
        Pattern::Negative => rand_f32(rng, n, -50.0, -1.0),
        Pattern::AllEqual => vec![0.75; n],
        _ => rand_f32(rng, n, -20.0, 20.0),
    };
    let imax = |x: &[f32]| {
        x.iter()
            .enumerate()
            .fold(0, |b, (i, &v)| if v > x[b] { i } else { b })
    };
    match pat {
        Pattern::Tie if n > 1 => {
            let i = rng.gen_range(0..n - 1);
            let j = rng.gen_range(i + 1..n);
            x[i] = 30.0;
            x[j] = 30.0;
        }
        Pattern::MaxLast => x[n - 1] = 30.0,
        Pattern::NonFinite => {
            for v in x.iter_mut() {
                match rng.gen_range(0..10) {
                    0 => *v = f32::NAN,
                    1 => *v = f32::INFINITY,
                    2 => *v = f32::NEG_INFINITY,
                    _ => {}
                }
            }
            let m = imax(&x);
            if m > 0 {
                x[m - 1] = f32::INFINITY;
            }
        }
        _ => {}
    }
    x
}

/// Run every `argmax` case against `imp`.
pub fn check_argmax(imp: &ArgmaxFn<'_>) -> Report {
    check_argmax_with(imp, &Options::default())
}

/// [`check_argmax`] with explicit options (indices are exact; `tol` unused).
pub fn check_argmax_with(imp: &ArgmaxFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("argmax", opts);
    for &n in SIZES {
        for &pat in PATTERNS {
            run.case(&format!("n={n} {pat:?}"), false, |rng| {
                let x = build(rng, n, pat);
                let show = |i: u32| {
                    x.get(i as usize)
                        .map_or("out of range".to_string(), |v| format!("{v:e}"))
                };
                // A short NonFinite vector may hold no finite value: then both must error.
                match (argmax_ref(&x), imp(&x)) {
                    (Ok(want), Ok(got)) if got == want => Ok(()),
                    (Ok(want), Ok(got)) => Err(format!(
                        "got index {got} ({}), want {want} ({})",
                        show(got),
                        show(want)
                    )),
                    (Ok(_), Err(e)) => Err(impl_failed(e)),
                    (Err(_), Err(_)) => Ok(()),
                    (Err(e), Ok(got)) => {
                        Err(format!("returned {got} where the reference errs: {e}"))
                    }
                }
            });
        }
    }
    let rejects: [(&str, Vec<f32>); 3] = [
        ("rejects empty input", vec![]),
        ("rejects all NaN", vec![f32::NAN; 9]),
        (
            "rejects only infinities",
            vec![f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::INFINITY],
        ),
    ];
    for (name, x) in rejects {
        run.case(name, false, |_| match imp(&x) {
            Ok(i) => Err(format!("returned {i} instead of an error")),
            Err(_) => Ok(()),
        });
    }
    run.finish()
}
