//! matmul bench: mat-vec (decode, m = 1..8) and prefill (m = 512) at
//! SmolLM2-135M's shapes and at 4096², weight GB/s against the streaming-read
//! ceiling measured in the same run, plus TFLOP/s for prefill. Weights are
//! rotated over copies (≥ 150 MiB, ≥ 3× the H100's 50 MB L2) so the L2 does
//! not serve repeats. Median of 50 event-bracketed calls behind a busy
//! kernel (kernel time), and the back-to-back mean (host bottlenecks too).
//! Run: `cargo bench -p kiln-cuda --bench matmul`; skips without a GPU.
//! `KILN_BENCH_ONLY=decode|prefill` runs one half. Mat-vec rows are timed
//! with the direct-load kernels and again with staged weights
//! (`kiln_cuda::matmul::set_staged`), in the same run. MLX affine formats:
//! every bits value at mlx-lm's default (group 64, bf16 scales), and 4-bit
//! at group 32 / f16 and group 128 / f32 (their kernels compiled before the
//! table starts).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backend, time_ms, Ceiling};
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::quant::MlxAffine;
use kiln_core::DType;
use kiln_cuda::matmul::{matmul, matmul_with_kernel, select_matmul_for, set_staged, MatmulKernel};
use kiln_cuda::matvec_tile::{q8_tile_supports, set_dense_tile, set_id_tile, set_id_tile_q8};
use kiln_testkit::{case_rng, rand_f32, rand_rows};

fn main() {
    let Some(be) = backend("matmul") else { return };
    let mut ceil = Ceiling::measure(&be);
    let mut rng = case_rng(1, "cumatmul-bench", 0);
    println!();
    println!("| shape (n×k) | wtype | m | kernel | median µs | weight GB/s | % of ceiling | back-to-back µs |");
    println!("|---|---|---|---|---|---|---|---|");
    // (n, k, wtype, m, forced kw): the launcher's plan, then other kw.
    let shapes = [
        (576, 576, DType::Q4_1, 1, None),
        (1536, 576, DType::Q4_1, 1, None),
        (576, 1536, DType::Q4_1, 1, None),
        (49152, 576, DType::Q8_0, 1, None),
        (49152, 576, DType::Q8_0, 1, Some(2)),
        (4096, 4096, DType::Q4_1, 1, None),
        (4096, 4096, DType::Q4_1, 1, Some(1)),
        (4096, 4096, DType::Q4_1, 1, Some(4)),
        (4096, 4096, DType::Q8_0, 1, None),
        (4096, 4096, DType::Q4_0, 1, None),
        (4096, 4096, DType::Q4_1, 4, None),
        (4096, 4096, DType::Q4_1, 8, None),
        (1536, 576, DType::Q4_1, 512, None),
        (576, 1536, DType::Q4_1, 512, None),
    ];
    // Issue 4's shapes for every weight format CUDA runs: decode both ways
    // round and a 512-token prefill.
    let mut shapes = shapes.to_vec();
    for wtype in DType::ALL {
        if !kiln_cuda::matmul::supports(wtype) {
            continue;
        }
        shapes.extend([
            (14336, 4096, wtype, 1, None),
            (4096, 14336, wtype, 1, None),
            (4096, 14336, wtype, 512, None),
        ]);
    }
    let mlx: Vec<DType> = [
        (2, 64, DType::BF16),
        (3, 64, DType::BF16),
        (4, 64, DType::BF16),
        (5, 64, DType::BF16),
        (6, 64, DType::BF16),
        (8, 64, DType::BF16),
        (4, 32, DType::F16),
        (4, 128, DType::F32),
    ]
    .into_iter()
    .map(|(bits, g, sd)| MlxAffine::new(bits, g, sd).unwrap().dtype().unwrap())
    .collect();
    kiln_cuda::mlx::prepare(&be, &["matmul"], &mlx).unwrap();
    for &wtype in &mlx {
        shapes.extend([
            (14336, 4096, wtype, 1, None),
            (4096, 14336, wtype, 1, None),
            (4096, 14336, wtype, 512, None),
        ]);
    }
    let mut bf16_peer = std::collections::HashMap::new();
    // KILN_BENCH_ONLY=decode (m ≤ 8) or prefill (m > 8) runs half the table.
    let only = std::env::var("KILN_BENCH_ONLY").unwrap_or_default();
    // Modes: (staged, dense tile: None or (target bytes, int8 x)). One-row
    // quantized mat-vecs also run through matmul_id's tile kernels
    // (matvec_tile::dense_tile_matvec), float and int8, 8 and 24 KiB CTAs.
    let runs = shapes.iter().flat_map(|&(n, k, wtype, m, force_kw)| {
        let mut modes = vec![(false, None)];
        if m <= 8 {
            modes.push((true, None));
        }
        if m == 1 && force_kw.is_none() && wtype.is_quantized() && DType::ALL.contains(&wtype) {
            for target in [8 << 10, 24 << 10] {
                modes.push((false, Some((target, false))));
                if q8_tile_supports(wtype) {
                    modes.push((false, Some((target, true))));
                }
            }
        }
        modes
            .into_iter()
            .map(move |(st, tile)| (n, k, wtype, m, force_kw, st, tile))
    });
    for (n, k, wtype, m, force_kw, staged, tile) in runs {
        if (only == "decode" && m > 8) || (only == "prefill" && m <= 8) {
            continue;
        }
        set_staged(&be, staged);
        set_dense_tile(&be, tile.is_some());
        if let Some((target, q8)) = tile {
            set_id_tile(&be, target);
            set_id_tile_q8(&be, q8);
        }
        let p = MatmulParams { m, n, k, wtype };
        let wbytes = n * p.w_row_bytes().unwrap();
        // Enough weight copies that the set is ≥ 3× L2 (50 MB), at least 4.
        let copies = ((150usize << 20).div_ceil(wbytes)).max(4);
        let w = rand_rows(&mut rng, wtype, n, k);
        let mut flat = Vec::with_capacity(copies * wbytes);
        for _ in 0..copies {
            flat.extend_from_slice(&w);
        }
        let dw = be.upload(&flat).unwrap();
        let dx = be.upload(&rand_f32(&mut rng, m * k, -1.0, 1.0)).unwrap();
        let mut dout = be.alloc_zeros::<f32>(m * n).unwrap();
        let plan = match (select_matmul_for(&p, staged), force_kw) {
            (MatmulKernel::MatVec { rows, .. }, Some(kw)) => MatmulKernel::MatVec { rows, kw },
            (plan, _) => plan,
        };
        let (ms, b2b) = time_ms(
            &be,
            50,
            || ceil.busy(&be),
            |i| {
                let c = i % copies;
                let (wv, xv) = (dw.slice(c * wbytes..(c + 1) * wbytes), dx.slice(..));
                if tile.is_some() {
                    matmul(&be, &p, &wv, &xv, &mut dout.slice_mut(..))
                } else {
                    matmul_with_kernel(&be, &p, plan, &wv, &xv, &mut dout.slice_mut(..))
                }
            },
        );
        let gbs = wbytes as f64 / ms / 1e6;
        let kern = match (plan, tile) {
            (_, Some((target, q8))) => format!(
                "tile {} KiB{}",
                target >> 10,
                if q8 { " int8 x" } else { "" }
            ),
            (MatmulKernel::MatVec { rows, kw }, _) => format!(
                "mat-vec m{rows} kw{kw} {}",
                if staged { "staged" } else { "direct" }
            ),
            (MatmulKernel::Gemm { operand }, _) => format!("dequant+gemm {operand:?}"),
            (MatmulKernel::Empty, _) => "empty".into(),
        };
        let extra = if m > 8 {
            let tf = 2.0 * (m * n * k) as f64 / ms / 1e9;
            let peer = *bf16_peer
                .entry((n, k, m))
                .or_insert_with(|| cublas_bf16_tflops(&be, n, k, m));
            format!(
                " ({tf:.1} TFLOP/s; cuBLAS bf16 {peer:.0} same run: {:.0}%)",
                100.0 * tf / peer
            )
        } else {
            String::new()
        };
        println!(
            "| {n}×{k} | {wtype} | {m} | {kern} | {:.2}{extra} | {gbs:.0} | {:.0}% | {:.2} |",
            ms * 1e3,
            ceil.pct(gbs),
            b2b * 1e3
        );
    }
}

/// The peer for prefill: cuBLAS bf16 × bf16 → bf16 GEMM (f32 accumulation)
/// of the same shape, random operands, median TFLOP/s of 50 calls.
fn cublas_bf16_tflops(be: &kiln_cuda::CudaBackend, n: usize, k: usize, m: usize) -> f64 {
    use cudarc::cublas::{result as blas, sys as bsys, CudaBlas};
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    use std::ffi::c_void;
    let mut rng = case_rng(2, "cublas-bf16", n * 7 + k);
    let bits = |len: usize, rng: &mut _| -> Vec<u16> {
        rand_f32(rng, len, -1.0, 1.0)
            .into_iter()
            .map(|v| (v.to_bits() >> 16) as u16)
            .collect()
    };
    let a = be.upload(&bits(n * k, &mut rng)).unwrap();
    let b = be.upload(&bits(k * m, &mut rng)).unwrap();
    let mut c = be.alloc_zeros::<u16>(n * m).unwrap();
    let blas = CudaBlas::new(be.stream().clone()).unwrap();
    let (alpha, beta) = (1.0f32, 0.0f32);
    let mut ceil_busy = || Ok(());
    let (ms, _) = time_ms(be, 50, &mut ceil_busy, |_| {
        let st = be.stream();
        let (ap, _g1) = a.device_ptr(st);
        let (bp, _g2) = b.device_ptr(st);
        let (cp, _g3) = c.device_ptr_mut(st);
        // SAFETY: A [n, k] row-major = k×n col-major (op T), B k×m, C n×m,
        // all within their buffers; host scalars.
        unsafe {
            blas::gemm_ex(
                *blas.handle(),
                bsys::cublasOperation_t::CUBLAS_OP_T,
                bsys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                m as i32,
                k as i32,
                (&alpha as *const f32).cast(),
                ap as *const c_void,
                bsys::cudaDataType_t::CUDA_R_16BF,
                k as i32,
                bp as *const c_void,
                bsys::cudaDataType_t::CUDA_R_16BF,
                k as i32,
                (&beta as *const f32).cast(),
                cp as *mut c_void,
                bsys::cudaDataType_t::CUDA_R_16BF,
                n as i32,
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| kiln_cuda::CudaError::Driver {
            op: "cublas bf16 gemm",
            msg: format!("{e:?}"),
        })
    });
    2.0 * (m * n * k) as f64 / ms / 1e9
}
