//! GPU parity of `kiln_cuda::matmul` against `matmul_ref`: the testkit's case
//! tables (every GGML/float format, m in 1..64, odd n, SmolLM2 shapes; every
//! MLX format, the MLX table), plus m = 9 and m = 512 (the prefill path) for
//! every GGML/float format and the six `mlx_cover` MLX formats with odd n
//! and odd block counts, large k (14336), odd k for float formats, and the
//! alignment rules. MLX outputs are held to the MLX table's f32 bound, plus
//! f16 operand rounding where the plan is the f16 GEMM. Failures name the
//! format, shape and plan. Only the
//! weight formats with CUDA kernels (`kiln_cuda::matmul::supports`) run; the
//! others must be refused with `UnsupportedDType`. Device outputs
//! sit between sentinel guard zones and start NaN-poisoned. Skips without a
//! GPU. Timing lives in `benches/matmul.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cudarc::driver::CudaSlice;
use kiln_core::ops::matmul::{matmul_ref, MatmulParams};
use kiln_core::DType;
use kiln_cuda::matmul::MV_MAX_ROWS;
use kiln_cuda::matmul::{
    matmul, matmul_with_kernel, select_matmul, set_staged, supports, GemmOperand, MatmulKernel,
};
use kiln_cuda::matvec_tile::{set_dense_tile, set_id_tile, set_id_tile_q8, TILE_AUTO};
use kiln_cuda::{CudaBackend, CudaError};
use kiln_testkit::cases::matmul::{check_matmul_with, error_bounds, WTYPES};
use kiln_testkit::cases::matmul_mlx::{
    check_matmul_mlx_with, mlx_cover, mlx_error_bounds, mlx_wtypes,
};
use kiln_testkit::{case_rng, rand_f32, rand_rows, test_seed, Options};

fn backend() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(be) => Some(be),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn to_core(e: CudaError) -> kiln_core::Error {
    match e {
        CudaError::Core(e) => e,
        other => kiln_core::Error::invalid("matmul (cuda)", other.to_string()),
    }
}

/// Upload `data` (at least one element is allocated, so empty inputs work).
fn upload<T: cudarc::driver::DeviceRepr + Copy + Default>(
    be: &CudaBackend,
    data: &[T],
) -> Result<CudaSlice<T>, CudaError> {
    if data.is_empty() {
        be.upload(&[T::default()])
    } else {
        be.upload(data)
    }
}

/// matmul on the GPU into a NaN-poisoned device output between sentinel
/// guards; check the guards and copy the interior into `out`. `x_offset`
/// shifts x inside its device buffer (alignment tests); `kernel` forces a
/// plan (`None`: the launcher's own).
fn run_gpu(
    be: &CudaBackend,
    p: &MatmulParams,
    kernel: Option<MatmulKernel>,
    w: &[u8],
    x: &[f32],
    x_offset: usize,
    out: &mut [f32],
) -> Result<(), CudaError> {
    let dw = upload(be, w)?;
    let mut xs = vec![0.0f32; x_offset];
    xs.extend_from_slice(x);
    let dx = upload(be, &xs)?;
    out.fill(f32::NAN);
    kiln_cuda::harness::guarded(be, out, |view| {
        let wv = dw.slice(0..w.len());
        let xv = dx.slice(x_offset..x_offset + x.len());
        match kernel {
            None => matmul(be, p, &wv, &xv, view),
            Some(kern) => matmul_with_kernel(be, p, kern, &wv, &xv, view),
        }
    })
    .map_err(CudaError::Core)
}

#[test]
fn matmul_matches_reference() {
    let Some(be) = backend() else { return };
    // The testkit's default bounds (8-bit activation quantization, f32
    // accumulation) apply unchanged: the mat-vec path keeps f32 activations
    // and the f16 prefill path rounds each operand by at most 2^-11
    // relative, well inside the 8-bit bound (see src/matmul.rs).
    let imp = |p: &MatmulParams, w: &[u8], x: &[f32], out: &mut [f32]| {
        run_gpu(&be, p, None, w, x, 0, out).map_err(to_core)
    };
    // Formats without CUDA kernels are skipped by the table (counted in the
    // summary) and must be refused with the typed error, not a panic.
    let opts = Options {
        matmul_wtypes: supports,
        matmul_f16_from_m: Some(MV_MAX_ROWS + 1),
        ..Options::default()
    };
    // Every MLX format's kernels, compiled in parallel first.
    kiln_cuda::mlx::prepare(&be, &["matmul"], &mlx_wtypes()).unwrap();
    // Direct-load and staged mat-vecs (kiln_cuda::matmul::staged).
    for on in [false, true] {
        set_staged(&be, on);
        let report = check_matmul_with(&imp, &opts);
        eprintln!("staged {on}: {}", report.summary());
        report.into_result().unwrap();
        let report = check_matmul_mlx_with(&imp, &opts);
        eprintln!("staged {on}, MLX: {}", report.summary());
        report.into_result().unwrap();
    }
    set_staged(&be, false);
    // One-row mat-vecs through matmul_id's tile kernels as one expert
    // (matvec_tile::dense_tile_matvec): float activations at the default
    // tile size, then int8 activations (the formats that have them; the
    // 8-bit activation bound above is exactly their rounding) in 2-row
    // tiles (target 1 byte), so an odd n ends in a partial tile.
    for (target, q8) in [(TILE_AUTO, false), (1, true)] {
        set_dense_tile(&be, true);
        set_id_tile(&be, target);
        set_id_tile_q8(&be, q8);
        let report = check_matmul_with(&imp, &opts);
        eprintln!("dense tile {target} int8 {q8}: {}", report.summary());
        set_dense_tile(&be, false);
        set_id_tile(&be, TILE_AUTO);
        set_id_tile_q8(&be, false);
        report.into_result().unwrap();
    }
    for wtype in WTYPES.into_iter().filter(|&t| !supports(t)) {
        eprintln!("{wtype}: no CUDA matmul kernel; checking it is refused");
        let p = MatmulParams {
            m: 1,
            n: 3,
            k: 256,
            wtype,
        };
        let w = rand_rows(
            &mut case_rng(test_seed(), "cumatmul-unsupported", 0),
            wtype,
            3,
            256,
        );
        let mut out = vec![f32::NAN; 3];
        match run_gpu(&be, &p, None, &w, &[0.5; 256], 0, &mut out) {
            Err(CudaError::Core(kiln_core::Error::UnsupportedDType { .. })) => {}
            other => panic!("{wtype}: expected UnsupportedDType, got {other:?}"),
        }
    }
}

/// The formats of the shape tests below: the GGML and float ones, then the
/// six MLX formats that cover every bits value, group size and scale dtype.
fn shape_wtypes() -> Vec<DType> {
    WTYPES.into_iter().chain(mlx_cover()).collect()
}

/// The testkit's per-element bound for a case run with `plan`: MLX weights
/// get f16 operand rounding on the f16 GEMM.
fn bounds(p: &MatmulParams, plan: MatmulKernel, w: &[u8], x: &[f32]) -> Vec<f64> {
    match p.wtype {
        DType::Mlx(_) => {
            let f16 = plan
                == MatmulKernel::Gemm {
                    operand: GemmOperand::F16,
                };
            mlx_error_bounds(p, w, x, f16)
        }
        _ => error_bounds(p, w, x).unwrap(),
    }
}

/// One random case on the GPU (plan `kernel`, or the launcher's), held to
/// the testkit's per-element bound; returns the worst err/bound or a message.
fn bounded_case(
    be: &CudaBackend,
    p: &MatmulParams,
    kernel: Option<MatmulKernel>,
    (seed, tag, index): (u64, &str, usize),
) -> Result<f64, String> {
    let mut rng = case_rng(seed, tag, index);
    let (m, n, k) = (p.m, p.n, p.k);
    let w = rand_rows(&mut rng, p.wtype, n, k);
    let mut x = rand_f32(&mut rng, m * k, -4.0, 4.0);
    if m >= 2 {
        x[k..2 * k].fill(0.0); // a zero row
    }
    let mut want = vec![0.0f32; m * n];
    matmul_ref(p, &w, &x, &mut want).unwrap();
    let bound = bounds(p, kernel.unwrap_or_else(|| select_matmul(p)), &w, &x);
    let mut got = vec![f32::NAN; m * n];
    run_gpu(be, p, kernel, &w, &x, 0, &mut got).map_err(|e| format!("error {e}"))?;
    let mut msgs = Vec::new();
    let mut worst = 0.0f64;
    for (idx, ((&g, &r), &b)) in got.iter().zip(&want).zip(&bound).enumerate() {
        let err = (f64::from(g) - f64::from(r)).abs();
        if err.is_nan() || err > b {
            if msgs.len() < 3 {
                msgs.push(format!("[{idx}] got {g:e} want {r:e} bound {b:.3e}"));
            }
        } else if b > 0.0 {
            worst = worst.max(err / b);
        }
    }
    if msgs.is_empty() {
        Ok(worst)
    } else {
        Err(msgs.join("; "))
    }
}

/// Shapes the testkit table lacks: m = 9 (smallest prefill) and 512 for
/// every format, odd n, odd block counts; odd k for the float formats.
#[test]
fn prefill_and_odd_shapes() {
    let Some(be) = backend() else { return };
    let seed = test_seed();
    eprintln!("seed {seed} (KILN_TEST_SEED to repeat)");
    let mut failures = Vec::new();
    let mut count = 0;
    for (ci, &wtype) in shape_wtypes()
        .iter()
        .enumerate()
        .filter(|(_, &t)| supports(t))
    {
        let g = wtype.block_size();
        let mut shapes = if let DType::Mlx(_) = wtype {
            // k: one group, 3 and 17 groups.
            vec![
                (9, 1, g),
                (9, 33, 3 * g),
                (9, 257, 17 * g),
                (512, 33, 3 * g),
            ]
        } else if wtype.block_size() == 256 {
            // k: one super-block, 3 and 9 (k not a multiple of 512).
            vec![(9, 1, 256), (9, 33, 768), (9, 257, 2304), (512, 33, 768)]
        } else {
            vec![(9, 1, 32), (9, 33, 96), (9, 257, 544), (512, 33, 96)]
        };
        shapes.push(if let DType::Mlx(_) = wtype {
            (512, 257, 17 * g)
        } else if wtype.block_size() == 256 {
            (512, 257, 2304)
        } else {
            (512, 257, 544)
        });
        // Large k (Llama-3-8B's FFN width) for decode, a partial m chunk and prefill.
        shapes.extend([(1, 33, 14336), (6, 7, 14336), (9, 7, 14336)]);
        if !wtype.is_quantized() {
            shapes.extend([(9, 7, 1), (17, 33, 33), (512, 65, 999), (5, 31, 77)]);
        }
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            count += 1;
            let p = MatmulParams { m, n, k, wtype };
            match bounded_case(&be, &p, None, (seed, "cumatmul", ci * 100 + si)) {
                Ok(worst) => eprintln!(
                    "{wtype} m={m} n={n} k={k} ({:?}): ok, worst err/bound {worst:.3}",
                    select_matmul(&p)
                ),
                Err(e) => failures.push(format!("{wtype} m={m} n={n} k={k}: {e}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every forced plan is correct for every shape: chunked mat-vec (the
/// no-cuBLAS fallback) at prefill sizes, each kw, and GEMM at decode sizes.
#[test]
fn forced_plans() {
    let Some(be) = backend() else { return };
    let seed = test_seed();
    eprintln!("seed {seed} (KILN_TEST_SEED to repeat)");
    let mut failures = Vec::new();
    let mut count = 0;
    for (ci, &wtype) in shape_wtypes()
        .iter()
        .enumerate()
        .filter(|(_, &t)| supports(t))
    {
        let operand = if wtype.is_quantized() {
            GemmOperand::F16
        } else {
            GemmOperand::F32
        };
        let mut plans = vec![MatmulKernel::Gemm { operand }];
        for rows in [1, 3, 8] {
            for kw in [1, 2, 4] {
                plans.push(MatmulKernel::MatVec { rows, kw });
            }
        }
        let g = wtype.block_size();
        let shapes = if let DType::Mlx(_) = wtype {
            [(1, 33, 3 * g), (5, 257, 17 * g), (17, 7, g), (64, 65, 1536)]
        } else if g == 256 {
            [(1, 33, 768), (5, 257, 2304), (17, 7, 256), (64, 65, 1536)]
        } else {
            [(1, 33, 96), (5, 257, 544), (17, 7, 32), (64, 65, 1536)]
        };
        for (pi, &plan) in plans.iter().enumerate() {
            for (si, &(m, n, k)) in shapes.iter().enumerate() {
                count += 1;
                let p = MatmulParams { m, n, k, wtype };
                let idx = (ci * 100 + pi) * 10 + si;
                if let Err(e) = bounded_case(&be, &p, Some(plan), (seed, "cumatmul-forced", idx)) {
                    failures.push(format!("{wtype} m={m} n={n} k={k} {plan:?}: {e}"));
                }
            }
        }
    }
    // Plans that do not fit are refused.
    let p = MatmulParams {
        m: 2,
        n: 3,
        k: 64,
        wtype: DType::Q4_1,
    };
    for bad in [
        MatmulKernel::MatVec { rows: 9, kw: 1 },
        MatmulKernel::MatVec { rows: 2, kw: 3 },
        MatmulKernel::Gemm {
            operand: GemmOperand::F32,
        },
        MatmulKernel::Empty,
    ] {
        if bounded_case(&be, &p, Some(bad), (seed, "cumatmul-forced-bad", 0)).is_ok() {
            failures.push(format!("accepted {bad:?}"));
        }
    }
    eprintln!("forced plans: {count} cases, {} failures", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The staged mat-vec (weights copied through shared memory in 16-, 8- or
/// 4-byte pieces, chosen by the row length) and the direct one (rows whose
/// length is not a multiple of 4 bytes): every quantized format at block
/// counts that hit each copy width, one chunk, several chunks and a
/// partial last chunk, each kw and several m.
#[test]
fn staged_copy_widths() {
    let Some(be) = backend() else { return };
    let seed = test_seed();
    eprintln!("seed {seed} (KILN_TEST_SEED to repeat)");
    let mut failures = Vec::new();
    let mut count = 0;
    let mut widths = std::collections::BTreeMap::new();
    set_staged(&be, true);
    for (ci, &wtype) in shape_wtypes().iter().enumerate() {
        if !supports(wtype) || !wtype.is_quantized() {
            continue;
        }
        for (bi, nb) in [1usize, 2, 3, 4, 5, 8, 16, 41, 97, 130]
            .into_iter()
            .enumerate()
        {
            let k = nb * wtype.block_size();
            let rb = nb * wtype.type_size();
            let cw = [16, 8, 4].into_iter().find(|a| rb % a == 0).unwrap_or(0);
            *widths.entry((wtype.to_string(), cw)).or_insert(0) += 1;
            for rows in [1, 3, 8] {
                for kw in [1, 2, 4] {
                    count += 1;
                    let plan = MatmulKernel::MatVec { rows, kw };
                    let p = MatmulParams {
                        m: rows,
                        n: 7,
                        k,
                        wtype,
                    };
                    let idx = (ci * 100 + bi) * 100 + rows * 10 + kw;
                    if let Err(e) =
                        bounded_case(&be, &p, Some(plan), (seed, "cumatmul-staged", idx))
                    {
                        failures.push(format!("{wtype} nb={nb} (cw {cw}) m={rows} kw={kw}: {e}"));
                    }
                }
            }
        }
    }
    set_staged(&be, false);
    eprintln!("copy widths hit (format, width): {widths:?}");
    eprintln!(
        "staged copy widths: {count} cases, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn alignment_rules() {
    let Some(be) = backend() else { return };
    let mut rng = case_rng(test_seed(), "cumatmul-align", 0);
    let (m, n, k) = (2, 5, 64);
    let x = rand_f32(&mut rng, m * k, -1.0, 1.0);
    // Quantized weights read x as float4: an x view 4 bytes off is refused.
    let p = MatmulParams {
        m,
        n,
        k,
        wtype: DType::Q4_1,
    };
    let w = rand_rows(&mut rng, p.wtype, n, k);
    let mut out = vec![f32::NAN; m * n];
    let err = run_gpu(&be, &p, None, &w, &x, 1, &mut out).unwrap_err();
    assert!(err.to_string().contains("aligned"), "{err}");
    assert!(out.iter().all(|v| v.is_nan()), "wrote after an error");
    // MLX blocks are read as 32-bit words: weights 2 bytes off are refused.
    let p = MatmulParams {
        wtype: mlx_cover()[0],
        ..p
    };
    let w = rand_rows(&mut rng, p.wtype, n, k);
    let dw = be.upload(&[vec![0u8; 2], w.clone()].concat()).unwrap();
    let dx = be.upload(&x).unwrap();
    let mut dout = be.alloc_zeros::<f32>(m * n).unwrap();
    let err = matmul(
        &be,
        &p,
        &dw.slice(2..2 + w.len()),
        &dx.slice(..),
        &mut dout.slice_mut(..),
    )
    .unwrap_err();
    assert!(err.to_string().contains("aligned"), "{err}");
    // Float weights take any 4-byte aligned x.
    let p = MatmulParams {
        wtype: DType::F32,
        ..p
    };
    let w = rand_rows(&mut rng, p.wtype, n, k);
    let mut want = vec![0.0; m * n];
    matmul_ref(&p, &w, &x, &mut want).unwrap();
    run_gpu(&be, &p, None, &w, &x, 1, &mut out).unwrap();
    for (g, r) in out.iter().zip(&want) {
        assert!((g - r).abs() <= 1e-4, "{g} vs {r}");
    }
}
