//! Small-op bench: embedding, rms_norm, rope, silu_mul, softmax, copy_rows
//! and argmax at SmolLM2-135M's shapes (decode, n = 1, and a 512-token
//! prefill), and sample at SmolLM2's and Gemma 3's vocabularies (logits
//! uniform in [-8, 8): the top-p-only row keeps a large nucleus). These ops are launch- and latency-bound at decode sizes, so the
//! table gives both the kernel time (median of 200 event-bracketed calls
//! behind a busy kernel) and the back-to-back mean (launch overhead
//! included), and the bytes each call moves (read + written) as GB/s
//! against the streaming-read ceiling measured in the same run.
//! Run: `cargo bench -p kiln-cuda --bench ops`; skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backend, time_ms, Ceiling};
use kiln_core::ops::copy_rows::CopyRowsParams;
use kiln_core::ops::embedding::EmbeddingParams;
use kiln_core::ops::rms_norm::RmsNormParams;
use kiln_core::ops::rope::{RopeMode, RopeParams};
use kiln_core::ops::sample::SampleParams;
use kiln_core::ops::silu_mul::SiluMulParams;
use kiln_core::ops::softmax::SoftmaxParams;
use kiln_core::DType;
use kiln_cuda::{argmax, copy_rows, embedding, rms_norm, rope, sample, silu_mul, softmax};
use kiln_cuda::{CudaBackend, CudaError};
use kiln_testkit::{case_rng, rand_f32, rand_rows};

const ITERS: usize = 200;

/// One table row.
fn row(
    be: &CudaBackend,
    ceil: &mut Ceiling,
    op: &str,
    shape: &str,
    bytes: usize,
    f: impl FnMut(usize) -> Result<(), CudaError>,
) {
    let (ms, b2b) = time_ms(be, ITERS, || ceil.busy(be), f);
    let gbs = bytes as f64 / ms / 1e6;
    println!(
        "| {op} | {shape} | {:.2} | {:.2} | {gbs:.0} | {:.1}% |",
        ms * 1e3,
        b2b * 1e3,
        ceil.pct(gbs)
    );
}

fn main() {
    let Some(be) = backend("ops") else { return };
    let mut ceil = Ceiling::measure(&be);
    let mut rng = case_rng(1, "timing", 0);
    let (dim, ffn, vocab, heads, hd) = (576usize, 1536usize, 49152usize, 9usize, 64usize);
    let f = 4usize; // bytes per f32
    let table = rand_rows(&mut rng, DType::Q8_0, vocab, dim);
    let t = be.upload(&table).unwrap();
    let big = be
        .upload(&rand_f32(&mut rng, 512 * ffn, -2.0, 2.0))
        .unwrap();
    let big2 = be
        .upload(&rand_f32(&mut rng, 512 * ffn, -2.0, 2.0))
        .unwrap();
    let mut out = be.alloc_zeros::<f32>(512 * ffn).unwrap();
    let mut idx = be.alloc_zeros::<u32>(1).unwrap();
    let ids = be
        .upload(&(0..512u32).map(|i| i * 90).collect::<Vec<_>>())
        .unwrap();
    let pos = be.upload(&(0..512i32).collect::<Vec<_>>()).unwrap();
    let w = be.upload(&rand_f32(&mut rng, dim, -1.0, 1.0)).unwrap();
    let q8_row = DType::Q8_0.row_bytes("bench", dim).unwrap();
    println!();
    println!("| op | shape | median µs | back-to-back µs | GB/s moved | % of ceiling |");
    println!("|---|---|---|---|---|---|");
    for n in [1usize, 512] {
        let ep = EmbeddingParams {
            n_vocab: vocab,
            dim,
            dtype: DType::Q8_0,
        };
        row(
            &be,
            &mut ceil,
            "embedding",
            &format!("q8_0 n={n} dim={dim}"),
            n * (q8_row + dim * f + 4),
            |_| {
                embedding::embedding(
                    &be,
                    &ep,
                    &t.slice(..),
                    &ids.slice(..n),
                    n,
                    &mut out.slice_mut(..n * dim),
                )
            },
        );
        let rp = RmsNormParams {
            rows: n,
            dim,
            eps: 1e-5,
        };
        row(
            &be,
            &mut ceil,
            "rms_norm",
            &format!("rows={n} dim={dim}"),
            (2 * n + 1) * dim * f,
            |_| {
                rms_norm::rms_norm(
                    &be,
                    &rp,
                    &big.slice(..n * dim),
                    &w.slice(..),
                    &mut out.slice_mut(..n * dim),
                )
            },
        );
        let pp = RopeParams {
            n_tokens: n,
            n_heads: heads,
            head_dim: hd,
            n_rot: hd,
            freq_base: 100000.0,
            freq_scale: 1.0,
            mode: RopeMode::Normal,
        };
        row(
            &be,
            &mut ceil,
            "rope",
            &format!("tokens={n} heads={heads}x{hd}"),
            n * (2 * heads * hd * f + 4),
            |_| {
                rope::rope(
                    &be,
                    &pp,
                    &pos.slice(..n),
                    &mut out.slice_mut(..n * heads * hd),
                )
            },
        );
        let sp = SiluMulParams { n: n * ffn };
        row(
            &be,
            &mut ceil,
            "silu_mul",
            &format!("n={}", n * ffn),
            3 * n * ffn * f,
            |_| {
                silu_mul::silu_mul(
                    &be,
                    &sp,
                    &big.slice(..n * ffn),
                    &big2.slice(..n * ffn),
                    &mut out.slice_mut(..n * ffn),
                )
            },
        );
        let smp = SoftmaxParams {
            rows: heads,
            cols: n,
            scale: 0.125,
        };
        row(
            &be,
            &mut ceil,
            "softmax",
            &format!("rows={heads} cols={n}"),
            2 * heads * n * f,
            |_| {
                softmax::softmax(
                    &be,
                    &smp,
                    &big.slice(..heads * n),
                    &mut out.slice_mut(..heads * n),
                )
            },
        );
        let cp = CopyRowsParams {
            row_len: 3 * 64,
            n_rows: n,
            src_row: 0,
            dst_row: 7,
            dst_ring: None,
        };
        row(
            &be,
            &mut ceil,
            "copy_rows",
            &format!("rows={n} x 192"),
            2 * n * 192 * f,
            |_| copy_rows::copy_rows(&be, &cp, &big.slice(..n * 192), &mut out.slice_mut(..)),
        );
    }
    row(
        &be,
        &mut ceil,
        "argmax",
        &format!("n={vocab}"),
        vocab * f,
        |_| argmax::argmax(&be, &big.slice(..vocab), &mut idx.slice_mut(..)),
    );
    let logits = be.upload(&rand_f32(&mut rng, 262_144, -8.0, 8.0)).unwrap();
    let pen = be
        .upload(&(0..64u32).map(|i| i * 997).collect::<Vec<_>>())
        .unwrap();
    let stages: [(&str, f32, usize, f32, f32, f32); 4] = [
        (
            "k40 p0.95 min0.05 t0.8 pen1.1 (64 ids)",
            0.8,
            40,
            0.95,
            0.05,
            1.1,
        ),
        ("p0.9, no top-k", 1.0, 0, 0.9, 0.0, 1.0),
        ("temperature 1 only", 1.0, 0, 1.0, 0.0, 1.0),
        ("temperature 0", 0.0, 0, 1.0, 0.0, 1.0),
    ];
    for n in [vocab, 262_144] {
        for (name, temperature, top_k, top_p, min_p, repeat_penalty) in stages {
            let p = SampleParams {
                n_vocab: n,
                temperature,
                top_k,
                top_p,
                min_p,
                repeat_penalty,
                n_penalty_ids: 64,
            };
            row(
                &be,
                &mut ceil,
                "sample",
                &format!("n={n} {name}"),
                n * f,
                |i| {
                    let u = (i as f64 * 0.618_034).fract();
                    sample::sample(
                        &be,
                        &p,
                        &logits.slice(..n),
                        &pen.slice(..),
                        u,
                        &mut idx.slice_mut(..),
                    )
                },
            );
        }
    }
}
