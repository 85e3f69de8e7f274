//! Seeded randomness for parity tests.
//!
//! Every run takes one seed: `KILN_TEST_SEED` if set, else a fresh one from
//! the clock. Each case derives its own stream from (seed, op, case index), so
//! a failure reported as "seed S" replays exactly with `KILN_TEST_SEED=S`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::OnceLock;

/// Environment variable that fixes the seed of a run.
pub const SEED_ENV: &str = "KILN_TEST_SEED";

/// The seed of this process: `KILN_TEST_SEED` (decimal or 0x-hex) or the clock.
/// Unparsable values fall back to the clock with a warning on stderr.
pub fn test_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| match std::env::var(SEED_ENV) {
        Ok(s) => parse_seed(&s).unwrap_or_else(|| {
            eprintln!("kiln-testkit: cannot parse {SEED_ENV}={s:?}; using a fresh seed");
            clock_seed()
        }),
        Err(_) => clock_seed(),
    })
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix64(nanos ^ u64::from(std::process::id()))
}

/// SplitMix64 finaliser: a cheap bijective mix for deriving sub-seeds.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A deterministic generator from `seed`.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The generator of case `index` of `op` under run seed `seed`.
pub fn case_rng(seed: u64, op: &str, index: usize) -> ChaCha8Rng {
    let mut h = seed;
    for b in op.bytes() {
        h = splitmix64(h ^ u64::from(b));
    }
    rng(splitmix64(h ^ index as u64))
}

/// `n` values uniform in `[lo, hi)`.
pub fn rand_f32(rng: &mut impl Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(lo..hi)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn deterministic_and_in_range() {
        let a = rand_f32(&mut rng(7), 100, -2.0, 3.0);
        let b = rand_f32(&mut rng(7), 100, -2.0, 3.0);
        assert_eq!(a, b);
        assert!(a.iter().all(|&v| (-2.0..3.0).contains(&v)));
        let c = rand_f32(&mut case_rng(7, "add", 1), 4, 0.0, 1.0);
        let d = rand_f32(&mut case_rng(7, "add", 2), 4, 0.0, 1.0);
        assert_ne!(c, d);
    }

    #[test]
    fn parses_seeds() {
        assert_eq!(parse_seed(" 42 "), Some(42));
        assert_eq!(parse_seed("0x10"), Some(16));
        assert_eq!(parse_seed("x"), None);
    }
}
