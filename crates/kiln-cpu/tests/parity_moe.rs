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
