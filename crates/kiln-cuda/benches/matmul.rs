//! matmul bench: mat-vec (decode, m = 1..8) and prefill (m = 512) at
//! SmolLM2-135M's shapes and at 4096², weight GB/s against the streaming-read
//! ceiling measured in the same run, plus TFLOP/s for prefill. Weights are
//! rotated over copies (≥ 150 MiB, ≥ 3× the H100's 50 MB L2) so the L2 does
//! not serve repeats. Median of 50 event-bracketed calls behind a busy
//! kernel (kernel time), and the back-to-back mean (host bottlenecks too).
//! Run: `cargo bench -p kiln-cuda --bench matmul`; skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backend, time_ms, Ceiling};
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::DType;
use kiln_cuda::matmul::{matmul_with_kernel, select_matmul, MatmulKernel};
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
    for (n, k, wtype, m, force_kw) in shapes {
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
        let plan = match (select_matmul(&p), force_kw) {
            (MatmulKernel::MatVec { rows, .. }, Some(kw)) => MatmulKernel::MatVec { rows, kw },
            (plan, _) => plan,
        };
        let (ms, b2b) = time_ms(
            &be,
            50,
            || ceil.busy(&be),
            |i| {
                let c = i % copies;
                matmul_with_kernel(
                    &be,
                    &p,
                    plan,
                    &dw.slice(c * wbytes..(c + 1) * wbytes),
                    &dx.slice(..),
                    &mut dout.slice_mut(..),
                )
            },
        );
        let gbs = wbytes as f64 / ms / 1e6;
        let kern = match plan {
            MatmulKernel::MatVec { rows, kw } => format!("mat-vec m{rows} kw{kw}"),
            MatmulKernel::Gemm { operand } => format!("dequant+gemm {operand:?}"),
            MatmulKernel::Empty => "empty".into(),
        };
        let extra = if m > 8 {
            format!(" ({:.1} TFLOP/s)", 2.0 * (m * n * k) as f64 / ms / 1e9)
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
