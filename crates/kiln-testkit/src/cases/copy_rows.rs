//! Case table and driver for `copy_rows` (the KV-cache append and the
//! last-row pick; spec: kiln_core::ops::copy_rows) into f32, f16 and bf16
//! destinations.
//!
//! Exact: a copy, or one round-to-nearest-even per value into a 16-bit
//! cache, must give the reference's bits. The sources mix random values
//! with values that test the rounding: exact ties of f16 and of bf16 (both
//! directions of even), values past the f16 maximum (to ±inf), f16
//! subnormals, signed zeros. Destinations start poisoned between guard
//! zones; the rows outside the copy must keep their poison bits.

use super::{impl_failed, ref_failed, Options, Runner};
use crate::guard::GuardedKv;
use crate::{rand_f32, Report};
use kiln_core::ops::copy_rows::{copy_rows_ref_kv, CopyRowsParams};
use kiln_core::{KvSlice, KvSliceMut, KvType};
use rand::Rng;

/// Implementation under test: `(params, src, dst)`.
pub type CopyRowsFn<'a> =
    dyn Fn(&CopyRowsParams, &[f32], KvSliceMut<'_>) -> kiln_core::Result<()> + 'a;

/// `(row_len, n_rows, src_rows, src_row, dst_rows, dst_row, big)`: single
/// elements, odd lengths (scalar tails of vector copies), SmolLM2's KV rows
/// (192) deep in a cache, the last-row pick (576), a prefill append, an
/// empty copy.
pub const CASES: &[(usize, usize, usize, usize, usize, usize, bool)] = &[
    (1, 1, 1, 0, 1, 0, false),
    (7, 3, 5, 2, 4, 1, false),
    (33, 2, 2, 0, 9, 7, false),
    (576, 1, 7, 6, 1, 0, false),
    (192, 1, 1, 0, 2048, 37, false),
    (64, 9, 9, 0, 100, 91, false),
    (5, 0, 3, 3, 2, 2, false),
    (1000, 257, 300, 40, 600, 111, true),
];

/// `(row_len, n_rows, src_rows, ring, dst_row)`: sliding-window KV appends
/// into a ring of `ring` rows (the source's last `n_rows` rows): one row
/// at a position many laps in, a batch that wraps past the ring's end, a
/// batch that fills the ring exactly, an odd row length.
pub const RING_CASES: &[(usize, usize, usize, usize, usize)] = &[
    (192, 1, 1, 7, 3000),
    (64, 9, 12, 20, 115),
    (33, 5, 5, 5, 13),
    (7, 3, 4, 4, 2),
];

/// Random source rows (a quarter of them rounding tests), the reference and
/// the implementation into poisoned guarded destinations, compared bit for
/// bit.
fn run_case(
    rng: &mut rand_chacha::ChaCha8Rng,
    p: &CopyRowsParams,
    kv: KvType,
    (src_rows, dst_rows): (usize, usize),
    imp: &CopyRowsFn<'_>,
) -> Result<(), String> {
    let row_len = p.row_len;
    let mut src = rand_f32(rng, row_len * src_rows, -4.0, 4.0);
    for x in src.iter_mut() {
        if rng.gen_range(0..4) == 0 {
            *x = special(rng);
        }
    }
    let mut want = GuardedKv::new(kv, row_len * dst_rows);
    copy_rows_ref_kv(p, &src, want.as_mut()).map_err(ref_failed)?;
    let mut got = GuardedKv::new(kv, row_len * dst_rows);
    imp(p, &src, got.as_mut()).map_err(impl_failed)?;
    got.check_guards()?;
    let (g, w) = (bits(got.as_slice()), bits(want.as_slice()));
    match g.iter().zip(&w).position(|(a, b)| a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "dst[{i}] (row {}): bits {:#x}, want {:#x}",
            i / row_len.max(1),
            g[i],
            w[i]
        )),
    }
}

/// Values that test the rounding (see the module docs).
fn special(rng: &mut impl Rng) -> f32 {
    let tie16 = |m: u32| f32::from_bits(0x3f80_0000 + (m << 13) + (1 << 12));
    let tie_bf = |m: u32| f32::from_bits(0x3f80_0000 + (m << 16) + (1 << 15));
    match rng.gen_range(0..8) {
        0 => tie16(rng.gen_range(0..1024)),
        1 => -tie16(rng.gen_range(0..1024)),
        2 => tie_bf(rng.gen_range(0..128)),
        3 => -tie_bf(rng.gen_range(0..128)),
        4 => rng.gen_range(65504.0..70000.0) * if rng.gen() { 1.0 } else { -1.0 },
        5 => rng.gen_range(-1e-6..1e-6),
        6 => {
            if rng.gen() {
                0.0
            } else {
                -0.0
            }
        }
        _ => rng.gen_range(-4.0..4.0),
    }
}

/// Bits of the interior (f32 bits widened to u32 as-is; 16-bit as u32).
fn bits(s: KvSlice<'_>) -> Vec<u32> {
    match s {
        KvSlice::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        KvSlice::F16(v) | KvSlice::BF16(v) => v.iter().map(|&b| u32::from(b)).collect(),
    }
}

/// Run every case, for every destination type, against `imp`.
pub fn check_copy_rows(imp: &CopyRowsFn<'_>) -> Report {
    check_copy_rows_with(imp, &Options::default())
}

/// [`check_copy_rows`] with explicit options.
pub fn check_copy_rows_with(imp: &CopyRowsFn<'_>, opts: &Options) -> Report {
    let mut run = Runner::new("copy_rows", opts);
    for &(row_len, n_rows, src_rows, src_row, dst_rows, dst_row, big) in CASES {
        let p = CopyRowsParams {
            row_len,
            n_rows,
            src_row,
            dst_row,
            dst_ring: None,
        };
        for kv in KvType::ALL {
            let name = format!("dst={kv} {p:?} src_rows={src_rows} dst_rows={dst_rows}");
            run.case(&name, big, |rng| {
                run_case(rng, &p, kv, (src_rows, dst_rows), imp)
            });
        }
    }
    for &(row_len, n_rows, src_rows, ring, dst_row) in RING_CASES {
        let p = CopyRowsParams {
            row_len,
            n_rows,
            src_row: src_rows - n_rows,
            dst_row,
            dst_ring: Some(ring),
        };
        for kv in KvType::ALL {
            // One row past the ring: it must keep its poison.
            let name = format!("ring dst={kv} {p:?} src_rows={src_rows}");
            run.case(&name, false, |rng| {
                run_case(rng, &p, kv, (src_rows, ring + 1), imp)
            });
        }
    }
    let rejects = [
        ("rejects source rows past the end", 4, 2, 3, 0, 12, 12),
        ("rejects destination rows past the end", 4, 2, 0, 3, 12, 12),
        (
            "rejects an overflowing dst_row",
            4,
            2,
            0,
            usize::MAX,
            12,
            12,
        ),
    ];
    let ring_rejects = [
        (
            "rejects a ring shorter than the batch",
            4,
            3,
            0,
            9,
            12,
            8,
            Some(2),
        ),
        (
            "rejects a ring longer than dst",
            4,
            2,
            0,
            9,
            12,
            12,
            Some(4),
        ),
        ("rejects a ring of 0 rows", 4, 1, 0, 0, 12, 12, Some(0)),
    ];
    let rejects = rejects
        .into_iter()
        .map(|(n, a, b, c, d, e, f)| (n, a, b, c, d, e, f, None))
        .chain(ring_rejects);
    for (name, row_len, n_rows, src_row, dst_row, src_len, dst_len, dst_ring) in rejects {
        let p = CopyRowsParams {
            row_len,
            n_rows,
            src_row,
            dst_row,
            dst_ring,
        };
        for kv in [KvType::F32, KvType::BF16] {
            run.case(&format!("{name} (dst {kv})"), false, |_| {
                let src = vec![1.0f32; src_len];
                let mut got = GuardedKv::new(kv, dst_len);
                match imp(&p, &src, got.as_mut()) {
                    Ok(()) => Err("accepted an invalid call".to_string()),
                    Err(_) if !got.untouched() => {
                        Err("returned an error but wrote dst".to_string())
                    }
                    Err(_) => got.check_guards(),
                }
            });
        }
    }
    run.finish()
}
