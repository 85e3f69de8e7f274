//! Parity of the CPU matmul with MLX affine weights against `matmul_ref`:
//! the testkit table (every bits × group × scale dtype, odd shapes, fresh
//! random inputs, poisoned outputs, rejected bad calls) for SIMD and forced
//! scalar, 1 and 2 threads; plus degenerate shapes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::matmul::MatmulParams;
use kiln_cpu::matmul::matmul;
use kiln_cpu::{CpuContext, CpuFeatures};
use kiln_testkit::cases::matmul_mlx::{check_matmul_mlx, mlx_wtypes};

fn feature_sets() -> Vec<(&'static str, CpuFeatures)> {
    let mut v = vec![("scalar", CpuFeatures::default())];
    let f = CpuFeatures::detect();
    if f.has_avx2_fma() {
        v.push(("simd", f));
    } else {
        eprintln!(
            "SKIPPED: SIMD MLX kernels not tested: this CPU (or KILN_NO_SIMD) lacks AVX2/FMA"
        );
    }
    v
}

#[test]
fn matmul_mlx_matches_reference_case_table() {
    let mut failures = Vec::new();
    for (fname, feat) in feature_sets() {
        for threads in [1, 2] {
            let ctx = CpuContext::with_features(threads, feat).unwrap();
            let report = check_matmul_mlx(&|p, w, x, out| matmul(&ctx, p, w, x, out));
            eprintln!("matmul_mlx {fname} threads={threads}: {}", report.summary());
            if let Err(e) = report.into_result() {
                failures.push(format!("{fname} threads={threads}:\n{e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn empty_shapes() {
    let ctx = CpuContext::new(2).unwrap();
    for wtype in mlx_wtypes() {
        let p = MatmulParams {
            m: 2,
            n: 3,
            k: 0,
            wtype,
        };
        let mut out = [f32::NAN; 6];
        matmul(&ctx, &p, &[], &[], &mut out).unwrap();
        assert_eq!(out, [0.0; 6], "{wtype} k=0");
        let k = wtype.block_size();
        let w = vec![0u8; 3 * wtype.row_bytes("t", k).unwrap()];
        let p = MatmulParams {
            m: 0,
            n: 3,
            k,
            wtype,
        };
        matmul(&ctx, &p, &w, &[], &mut []).unwrap();
    }
}
