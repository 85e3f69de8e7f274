//! The mixture-of-experts ops on the CPU backend against their kiln-core
//! references: the testkit's matmul_id table (every weight format, the
//! seed's mv_id / mm_id shapes), with SIMD and with the scalar fallback.
#![allow(clippy::unwrap_used)]

use kiln_core::ops::matmul_id::MatmulIdParams;
use kiln_cpu::{CpuContext, CpuFeatures};
use kiln_testkit::cases::matmul_id::check_matmul_id;

#[test]
fn matmul_id_matches_reference() {
    for (what, ctx) in [
        ("simd", CpuContext::new(2).unwrap()),
        (
            "scalar",
            CpuContext::with_features(2, CpuFeatures::default()).unwrap(),
        ),
    ] {
        let imp = |p: &MatmulIdParams, w: &[u8], x: &[f32], ids: &[u32], out: &mut [f32]| {
            kiln_cpu::matmul_id::matmul_id(&ctx, p, w, x, ids, out)
        };
        let report = check_matmul_id(&imp);
        eprintln!("{what}: {}", report.summary());
        report.into_result().unwrap();
    }
}

#[test]
fn matmul_id_swiglu_matches_reference() {
    use kiln_testkit::cases::matmul_id::check_matmul_id_swiglu_with;
    let ctx = CpuContext::new(2).unwrap();
    let imp = |p: &MatmulIdParams, g: &[u8], u: &[u8], x: &[f32], ids: &[u32], out: &mut [f32]| {
        kiln_cpu::matmul_id::matmul_id_swiglu(&ctx, p, g, u, x, ids, out)
    };
    let report = check_matmul_id_swiglu_with(&imp, &kiln_testkit::Options::default());
    eprintln!("{}", report.summary());
    report.into_result().unwrap();
}

#[test]
fn moe_route_matches_reference() {
    use kiln_core::ops::moe_route::MoeRouteParams;
    use kiln_testkit::cases::moe_route::check_moe_route;
    let ctx = CpuContext::new(2).unwrap();
    let imp = |p: &MoeRouteParams, l: &[f32], b: Option<&[f32]>, ids: &mut [u32], w: &mut [f32]| {
        kiln_cpu::moe_route::moe_route(&ctx, p, l, b, ids, w)
    };
    let report = check_moe_route(&imp);
    eprintln!("{}", report.summary());
    report.into_result().unwrap();
}

/// moe_combine against its reference: odd dims, one and several slots,
/// token counts on both sides of the threading threshold.
#[test]
fn moe_combine_matches_reference() {
    use kiln_core::ops::moe_combine::{moe_combine_ref, MoeCombineParams};
    use kiln_testkit::{case_rng, rand_f32, test_seed, Guarded};
    let ctx = CpuContext::new(2).unwrap();
    let mut rng = case_rng(test_seed(), "moe_combine", 0);
    for (n_tokens, top_k, dim) in [(1, 1, 1), (3, 2, 7), (5, 8, 33), (40, 8, 2048)] {
        let p = MoeCombineParams {
            n_tokens,
            top_k,
            dim,
        };
        let y = rand_f32(&mut rng, n_tokens * top_k * dim, -3.0, 3.0);
        let w = rand_f32(&mut rng, n_tokens * top_k, 0.0, 1.0);
        let res = rand_f32(&mut rng, n_tokens * dim, -1.0, 1.0);
        let mut want = vec![0.0f32; n_tokens * dim];
        moe_combine_ref(&p, &y, &w, &res, &mut want).unwrap();
        let mut out = Guarded::new(n_tokens * dim);
        kiln_cpu::moe_combine::moe_combine(&ctx, &p, &y, &w, &res, out.as_mut_slice()).unwrap();
        out.check_guards().unwrap();
        for (g, r) in out.as_slice().iter().zip(&want) {
            // top_k f32 FMAs of terms <= 3 plus a residual <= 1: a few ulps of 25.
            assert!(
                (g - r).abs() <= 1e-5,
                "{n_tokens}x{top_k}x{dim}: {g} vs {r}"
            );
        }
    }
}

/// add_rows against its reference (bit-identical: one f32 add each), both
/// sides of the threading threshold, plus a wrong bias length.
#[test]
fn add_rows_matches_reference() {
    use kiln_core::ops::add_rows::{add_rows_ref, AddRowsParams};
    use kiln_testkit::{case_rng, rand_f32, test_seed};
    let ctx = CpuContext::new(2).unwrap();
    let mut rng = case_rng(test_seed(), "add_rows", 0);
    for (rows, dim) in [(1, 1), (3, 7), (17, 896), (64, 2048)] {
        let p = AddRowsParams { rows, dim };
        let x = rand_f32(&mut rng, rows * dim, -3.0, 3.0);
        let b = rand_f32(&mut rng, dim, -1.0, 1.0);
        let (mut want, mut got) = (x.clone(), x);
        add_rows_ref(&p, &mut want, &b).unwrap();
        kiln_cpu::add_rows::add_rows(&ctx, &p, &mut got, &b).unwrap();
        assert!(got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.to_bits() == w.to_bits()));
        assert!(kiln_cpu::add_rows::add_rows(&ctx, &p, &mut got, &b[1..]).is_err());
    }
}

/// The testkit's moe_combine table (what `kiln selftest` runs).
#[test]
fn moe_combine_table() {
    let ctx = CpuContext::new(2).unwrap();
    let report = kiln_testkit::cases::moe_combine::check_moe_combine(&|p, y, w, res, out| {
        kiln_cpu::moe_combine::moe_combine(&ctx, p, y, w, res, out)
    });
    report.into_result().unwrap();
}
