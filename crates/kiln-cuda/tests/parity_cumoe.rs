//! GPU parity of the mixture-of-experts families (moe_route, matmul_id,
//! moe_combine) against their kiln-core references: the testkit tables
//! through the harness's host wrappers (`harness::matmul_id_host` etc.), the
//! same ones `kiln selftest --device cuda` runs (matmul_id: every format with a CUDA
//! mat-vec, the six `mlx_cover` MLX formats included, the others skipped and
//! refused with `UnsupportedDType`), plus
//! what only the device sees: out-of-range expert ids (NaN rows, no reads
//! past the weights), non-finite router logits (`BAD_ID` ids, NaN weights),
//! more than 65535 output rows (several launches), and the alignment rules.
//! matmul_id runs its table through both kernels (per-row and grouped) and
//! every way the per-row kernels load quantized rows (direct, staged, tiles).
//! Skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::matmul_id::{matmul_id_ref, MatmulIdParams};
use kiln_core::ops::moe_route::{moe_route_ref, MoeRouteParams, MoeScoring};
use kiln_core::DType;
use kiln_cuda::harness::{self, guarded, guarded_with};
use kiln_cuda::matmul_id::MatmulIdKernel;
use kiln_cuda::matvec_tile::{set_id_tile, set_id_tile_q8, TILE_AUTO};
use kiln_cuda::{matmul_id, moe_route, CudaBackend};
use kiln_testkit::cases::matmul::{error_bounds, WTYPES};
use kiln_testkit::cases::matmul_id::{check_matmul_id_swiglu_with, check_matmul_id_with};
use kiln_testkit::cases::matmul_mlx::{mlx_cover, mlx_wtypes};
use kiln_testkit::cases::moe_combine::check_moe_combine_with;
use kiln_testkit::cases::moe_route::check_moe_route_with;
use kiln_testkit::{case_rng, compare, rand_f32, rand_rows, test_seed, Options, Tol};

fn backend() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(be) => {
            eprintln!("device: {}, seed {}", be.info().name, test_seed());
            Some(be)
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn opts() -> Options {
    Options {
        matmul_wtypes: matmul_id::supports,
        ..Options::default()
    }
}

/// Print the report; fail with every failing case.
fn check(op: &str, report: kiln_testkit::Report) {
    println!("== {op} ==\n{report}");
    eprintln!("{op}: {}", report.summary());
    report.into_result().unwrap();
}

#[test]
fn parity_moe_route() {
    let Some(be) = backend() else { return };
    check(
        "moe_route",
        check_moe_route_with(
            &|p, l, b, ids, w| harness::moe_route_host(&be, p, l, b, ids, w),
            &opts(),
        ),
    );
}

#[test]
fn parity_matmul_id() {
    let Some(be) = backend() else { return };
    check(
        "matmul_id",
        check_matmul_id_with(
            &|p, w, x, ids, out| harness::matmul_id_host(&be, p, w, x, ids, out),
            &opts(),
        ),
    );
}

/// The per-row path's ways of reading quantized expert rows: (name,
/// staged, tile target bytes, int8-activation tiles): direct loads, staged
/// through shared memory (matvec_staged.cuh), and tiles (matvec_tile.cuh)
/// of the default size, of 2 rows (target 1 byte) and as large as fit (64
/// rows or 48 KiB): odd row counts leave partial tiles and half pairs in
/// each; then the default tiles with int8 activations (the formats of
/// `q8_tile_supports`: Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K; the others keep
/// float tiles).
const LOADS: [(&str, bool, usize, bool); 6] = [
    ("direct", false, 0, false),
    ("staged", true, 0, false),
    ("tile", false, TILE_AUTO, false),
    ("tile-2-rows", false, 1, false),
    ("tile-max", false, 1 << 20, false),
    ("tile-q8", false, TILE_AUTO, true),
];

fn set_loads(be: &CudaBackend, staged: bool, tile: usize, q8: bool) {
    kiln_cuda::matmul::set_staged(be, staged);
    set_id_tile(be, tile);
    set_id_tile_q8(be, q8);
}

#[test]
fn parity_matmul_id_swiglu() {
    let Some(be) = backend() else { return };
    for (name, staged, tile, q8) in LOADS {
        set_loads(&be, staged, tile, q8);
        check(
            &format!("matmul_id_swiglu loads={name}"),
            check_matmul_id_swiglu_with(
                &|p, g, u, x, ids, out| harness::matmul_id_swiglu_host(&be, p, g, u, x, ids, out),
                &opts(),
            ),
        );
    }
}

#[test]
fn parity_moe_combine() {
    let Some(be) = backend() else { return };
    check(
        "moe_combine",
        check_moe_combine_with(
            &|p, y, w, r, out| harness::moe_combine_host(&be, p, y, w, r, out),
            &opts(),
        ),
    );
}

/// Rows checked one by one against the reference: with f32 activations
/// only f32 summation order differs (k <= 256 terms of |w·x| <= ~10): far
/// below 1e-3, while a wrong expert or x row is off by O(1). Kernels with
/// int8 activations get the testkit's bound for them (within_row_bound).
const ROW_TOL: Tol = Tol {
    nmse: 1e-9,
    max_abs: 1e-3,
};

/// Whether one output row of expert `e` over x row `xr` is within the
/// testkit's bound of the reference: int8 activations (the tiles of the
/// formats that quantize x) round x per 32, which the bound covers element
/// by element (kiln-testkit cases/matmul.rs); at least ROW_TOL's f32 bound.
fn within_row_bound(
    p: &MatmulIdParams,
    w: &[u8],
    e: u32,
    xr: &[f32],
    got: &[f32],
    want: &[f32],
) -> bool {
    let we = &w[e as usize * p.expert_stride..][..p.expert_stride];
    let bound = error_bounds(&p.expert_matmul(1), we, xr).unwrap();
    got.iter()
        .zip(want)
        .zip(&bound)
        .all(|((g, w), b)| f64::from((g - w).abs()) <= b.max(f64::from(ROW_TOL.max_abs)))
}

fn id_params(wtype: DType, n_tokens: usize, top_k: usize, n: usize, k: usize) -> MatmulIdParams {
    MatmulIdParams {
        n_tokens,
        top_k,
        n,
        k,
        n_experts: 3,
        expert_stride: n * wtype.row_bytes("t", k).unwrap(),
        wtype,
        x_per_slot: false,
    }
}

/// matmul_id on the device with host `ids` uploaded unchecked.
fn run_id(
    be: &CudaBackend,
    p: &MatmulIdParams,
    w: &[u8],
    x: &[f32],
    ids: &[u32],
    out: &mut [f32],
) -> kiln_core::Result<()> {
    run_id_with(be, p, None, w, x, ids, out)
}

/// [`run_id`] with a forced kernel (`None`: the launcher's choice).
fn run_id_with(
    be: &CudaBackend,
    p: &MatmulIdParams,
    kernel: Option<MatmulIdKernel>,
    w: &[u8],
    x: &[f32],
    ids: &[u32],
    out: &mut [f32],
) -> kiln_core::Result<()> {
    let up = |v: &[u8]| be.upload(if v.is_empty() { &[0u8][..] } else { v });
    let (wd, xd, idd) = (
        up(w).unwrap(),
        be.upload(if x.is_empty() { &[0.0f32][..] } else { x })
            .unwrap(),
        be.upload(if ids.is_empty() { &[0u32][..] } else { ids })
            .unwrap(),
    );
    let (wv, xv, iv) = (
        wd.slice(0..w.len()),
        xd.slice(0..x.len()),
        idd.slice(0..ids.len()),
    );
    guarded(be, out, |o| match kernel {
        None => matmul_id::matmul_id(be, p, &wv, &xv, &iv, o),
        Some(kern) => matmul_id::matmul_id_with_kernel(be, p, kern, &wv, &xv, &iv, o),
    })
}

/// The testkit table once per kernel (each shape through both paths).
#[test]
fn parity_matmul_id_both_kernels() {
    let Some(be) = backend() else { return };
    kiln_cuda::mlx::prepare(&be, &["matmul_id"], &mlx_cover()).unwrap();
    // Each path with every way of loading (LOADS; tiles are the per-row
    // path's only).
    for (name, staged, tile, q8) in LOADS {
        set_loads(&be, staged, tile, q8);
        let kernels: &[MatmulIdKernel] = if tile > 0 {
            &[MatmulIdKernel::PerRow]
        } else {
            &[MatmulIdKernel::PerRow, MatmulIdKernel::Grouped]
        };
        for &kern in kernels {
            let imp = |p: &MatmulIdParams, w: &[u8], x: &[f32], ids: &[u32], out: &mut [f32]| {
                p.validate(w.len(), x.len(), ids.len(), out.len())?;
                p.check_ids(ids)?;
                run_id_with(&be, p, Some(kern), w, x, ids, out)
            };
            check(
                &format!("matmul_id {kern:?} loads={name}"),
                check_matmul_id_with(&imp, &opts()),
            );
        }
    }
}

/// Ids the host did not check: rows of out-of-range ids come back NaN, the
/// others as the reference; nothing outside the output is written.
#[test]
fn matmul_id_out_of_range_ids_give_nan_rows() {
    let Some(be) = backend() else { return };
    let mut rng = case_rng(test_seed(), "matmul_id-bad-ids", 0);
    // Tiles (the default for quantized formats) and pair kernels.
    for (wtype, tile, q8) in [DType::Q4_0, DType::Q4_K, DType::F16, mlx_cover()[1]]
        .into_iter()
        .flat_map(|t| [(t, TILE_AUTO, false), (t, TILE_AUTO, true), (t, 0, false)])
    {
        set_loads(&be, false, tile, q8);
        let p = id_params(wtype, 3, 2, 5, 256);
        let w = rand_rows(&mut rng, wtype, 3 * p.n, p.k);
        let x = rand_f32(&mut rng, 3 * p.k, -1.0, 1.0);
        let ids = [0u32, 3, 2, u32::MAX, 1, 1];
        for kern in [MatmulIdKernel::PerRow, MatmulIdKernel::Grouped] {
            let mut out = vec![f32::NAN; 6 * p.n];
            run_id_with(&be, &p, Some(kern), &w, &x, &ids, &mut out).unwrap();
            let one = MatmulIdParams {
                n_tokens: 1,
                top_k: 1,
                ..p
            };
            for (r, (&e, got)) in ids.iter().zip(out.chunks(p.n)).enumerate() {
                if e >= 3 {
                    assert!(
                        got.iter().all(|v| v.is_nan()),
                        "{wtype} tile {tile} q8 {q8} row {r} not NaN"
                    );
                } else {
                    let mut want = vec![0.0f32; p.n];
                    let xr = &x[(r / 2) * p.k..][..p.k];
                    matmul_id_ref(&one, &w, xr, &[e], &mut want).unwrap();
                    let ok = within_row_bound(&one, &w, e, xr, got, &want);
                    assert!(
                        ok,
                        "{wtype} tile {tile} q8 {q8} {kern:?} row {r}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }
}

/// More output rows than one launch's grid holds (65535): every row is
/// computed, the per-row launches chained by row offset, the grouped plan
/// scanning its ids in several shared-memory tiles.
#[test]
fn matmul_id_many_rows() {
    let Some(be) = backend() else { return };
    // 21_900 tokens x 3 of the 3 experts = 65_700 rows (top_k <= n_experts).
    let p = MatmulIdParams {
        n_tokens: 21_900,
        top_k: 3,
        x_per_slot: true,
        ..id_params(DType::Q8_0, 1, 1, 3, 32)
    };
    let mut rng = case_rng(test_seed(), "matmul_id-many-rows", 0);
    let w = rand_rows(&mut rng, DType::Q8_0, 3 * p.n, p.k);
    let rows = p.n_tokens * p.top_k;
    let x = rand_f32(&mut rng, rows * p.k, -1.0, 1.0);
    let ids: Vec<u32> = (0..rows as u32).map(|r| r % 3).collect();
    let mut want = vec![0.0f32; rows * p.n];
    matmul_id_ref(&p, &w, &x, &ids, &mut want).unwrap();
    for kern in [MatmulIdKernel::PerRow, MatmulIdKernel::Grouped] {
        let mut out = vec![f32::NAN; rows * p.n];
        run_id_with(&be, &p, Some(kern), &w, &x, &ids, &mut out).unwrap();
        for (r, (got, want)) in out.chunks(p.n).zip(want.chunks(p.n)).enumerate() {
            let xr = &x[r * p.k..][..p.k];
            let ok = within_row_bound(&p, &w, ids[r], xr, got, want);
            assert!(ok, "{kern:?} row {r}: {got:?} vs {want:?}");
        }
    }
}

#[test]
fn matmul_id_refuses_formats_and_misalignment() {
    let Some(be) = backend() else { return };
    let mut rng = case_rng(test_seed(), "matmul_id-refusals", 0);
    for wtype in WTYPES.iter().copied().chain(mlx_wtypes()) {
        if matmul_id::supports(wtype) {
            continue;
        }
        let Ok(rb) = wtype.row_bytes("t", 256) else {
            continue;
        };
        let p = MatmulIdParams {
            expert_stride: 2 * rb,
            ..id_params(DType::F32, 1, 1, 2, 256)
        };
        let p = MatmulIdParams { wtype, ..p };
        let w = vec![0u8; 3 * p.expert_stride];
        let x = vec![0.0f32; p.k];
        let mut out = vec![f32::NAN; p.n];
        let e = run_id(&be, &p, &w, &x, &[0], &mut out).unwrap_err();
        assert!(
            matches!(e, kiln_core::Error::UnsupportedDType { .. }),
            "{wtype}: {e}"
        );
    }
    // Q4_1 blocks are read as 32-bit words: an expert stride of 2 mod 4 is refused.
    let p = MatmulIdParams {
        expert_stride: id_params(DType::Q4_1, 1, 1, 2, 32).expert_stride + 2,
        ..id_params(DType::Q4_1, 1, 1, 2, 32)
    };
    let w = rand_rows(&mut rng, DType::Q4_1, 8, 32);
    let x = rand_f32(&mut rng, 32, -1.0, 1.0);
    let mut out = vec![f32::NAN; 2];
    let e = run_id(&be, &p, &w, &x, &[1], &mut out).unwrap_err();
    assert!(e.to_string().contains("expert_stride"), "{e}");
}

/// A token with a non-finite logit gets BAD_ID ids and NaN weights; the
/// other tokens route as the reference.
#[test]
fn moe_route_marks_non_finite_tokens() {
    let Some(be) = backend() else { return };
    for scoring in [MoeScoring::Softmax, MoeScoring::Sigmoid] {
        let p = MoeRouteParams {
            scoring,
            ..MoeRouteParams::softmax_topk(3, 8, 2, true)
        };
        let mut logits: Vec<f32> = (0..24).map(|i| ((i * 5) % 8) as f32 * 0.5 - 2.0).collect();
        logits[8 + 3] = f32::NAN;
        let ld = be.upload(&logits).unwrap();
        let mut ids = vec![0u32; 6];
        let mut w = vec![0.0f32; 6];
        guarded_with(&be, &mut ids, 0xDEAD_BEEF, |iv| {
            guarded(&be, &mut w, |wv| {
                moe_route::moe_route(&be, &p, &ld.slice(..), None, iv, wv)
            })
            .map_err(kiln_cuda::CudaError::from)
        })
        .unwrap();
        assert_eq!(moe_route::first_bad_token(&p, &ids), Some(1));
        assert!(ids[2..4].iter().all(|&e| e == moe_route::BAD_ID));
        assert!(w[2..4].iter().all(|v| v.is_nan()));
        for t in [0usize, 2] {
            let one = MoeRouteParams { n_tokens: 1, ..p };
            let (mut wi, mut ww) = ([0u32; 2], [0.0f32; 2]);
            moe_route_ref(&one, &logits[t * 8..][..8], None, &mut wi, &mut ww).unwrap();
            assert_eq!(ids[t * 2..][..2], wi, "{scoring:?} token {t}");
            compare("w", &w[t * 2..][..2], &ww, Tol::ELEMENTWISE).unwrap();
        }
    }
}
