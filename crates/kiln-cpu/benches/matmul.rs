//! matmul bench: GB/s (weight bytes read) and GFLOP/s (`2*m*n*k`) for
//! SmolLM2-135M's shapes, beside a streaming-read ceiling measured in the
//! same run (sum over a 1 GiB buffer, 1 and 2 threads).
//!
//! - decode (m = 1): each call reads a different copy of the weights, rotated
//!   over >= 128 MiB so neither L2 nor the 32 MiB L3 serves repeats ("cold"),
//!   and also the same copy again ("hot", cache-resident).
//! - prefill (m = 512): compute-bound; hot weights.
//! - model sweeps: every matmul of one decode step (30 layers + the Q8_0
//!   output, ~96 MiB of weights) and of a 512-token prefill (output for the
//!   last token only): matmul-only tokens/s, an upper bound for the engine.
//!
//! The streaming-read ceiling is a plain (hardware-prefetched) read; the
//! mat-vec kernels issue software prefetches and can exceed it on one thread.
//!
//! - format table: mat-vec (m = 1) for every weight format at 4096x4096 and
//!   11008x4096 (llama-7B-like attention and FFN rows; 14336x4096 scaled to
//!   this machine), cold weights rotated over >= 256 MiB, effective GB/s =
//!   (weight + activation bytes) / time, and its % of a 64 MiB streaming
//!   read timed between the calls on the same threads (median over the
//!   rounds: the VM's bandwidth drifts over a run, so a read measured once
//!   at the start gave ratios off by ±15 points); packed rows (`+pk`,
//!   AVX-512 VNNI CPUs) for the formats with a packed kernel; and a hot
//!   rate (<= 512 KiB of rows, L2-resident): the kernel's compute ceiling.
//!
//! Median of many timed calls after a warm-up. Run:
//! `cargo bench -p kiln-cpu --bench matmul` (`-- quick` for fewer repeats,
//! `-- formats` for the format table only, `-- smollm` for the rest only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::matmul::MatmulParams;
use kiln_core::DType;
use kiln_cpu::matmul::{matmul, matmul_packed, matmul_quantized, quantize_activations};
use kiln_cpu::quant_dot::{PackedWeights, Q8Acts};
use kiln_cpu::CpuContext;
use kiln_testkit::{rand_f32, rand_rows, rng};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median seconds of `reps` calls of `f(rep)` after `reps/10 + 1` warm-ups.
fn time(reps: usize, mut f: impl FnMut(usize)) -> f64 {
    for r in 0..reps / 10 + 1 {
        f(r);
    }
    median(
        (0..reps)
            .map(|r| {
                let t = Instant::now();
                f(r);
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// Streaming read of a 1 GiB buffer (u64 sum), GB/s.
fn stream_read(ctx: &CpuContext, buf: &[u64]) -> f64 {
    let bytes = std::mem::size_of_val(buf) as f64;
    let chunk = buf.len().div_ceil(ctx.threads() * 16);
    let t = time(5, |_| {
        let s: u64 = ctx.pool().install(|| {
            buf.par_chunks(chunk)
                .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
                .reduce(|| 0, u64::wrapping_add)
        });
        black_box(s);
    });
    bytes / t / 1e9
}

struct Shape {
    name: &'static str,
    n: usize,
    k: usize,
    wtype: DType,
}

const SHAPES: [Shape; 4] = [
    Shape {
        name: "attn q/o 576x576",
        n: 576,
        k: 576,
        wtype: DType::Q4_1,
    },
    Shape {
        name: "ffn up 1536x576",
        n: 1536,
        k: 576,
        wtype: DType::Q4_1,
    },
    Shape {
        name: "ffn down 576x1536",
        n: 576,
        k: 1536,
        wtype: DType::Q4_1,
    },
    Shape {
        name: "output 49152x576",
        n: 49152,
        k: 576,
        wtype: DType::Q8_0,
    },
];

/// Weight copies rotated so that >= 128 MiB is touched between repeats.
fn weight_copies(s: &Shape) -> Vec<Vec<u8>> {
    let bytes = s.n * s.wtype.row_bytes("bench", s.k).unwrap();
    let copies = (128usize << 20).div_ceil(bytes).clamp(1, 64);
    let mut r = rng(1);
    (0..copies)
        .map(|_| rand_rows(&mut r, s.wtype, s.n, s.k))
        .collect()
}

/// SmolLM2-135M per layer: q, k, v, o, gate, up, down as (n, k).
const LAYER: [(usize, usize); 7] = [
    (576, 576),
    (192, 576),
    (192, 576),
    (576, 576),
    (1536, 576),
    (1536, 576),
    (576, 1536),
];
const LAYERS: usize = 30;

/// Weight formats of the format table (every format matmul supports).
const FORMATS: [DType; 19] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::IQ4_NL,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::IQ4_XS,
    DType::IQ2_XXS,
    DType::IQ2_XS,
    DType::IQ3_XXS,
    DType::IQ3_S,
];

/// Format table shapes `(n, k)`.
const FORMAT_SHAPES: [(usize, usize); 2] = [(4096, 4096), (11008, 4096)];

/// GB/s of one streaming read of `buf` on the context's threads.
fn read_once(ctx: &CpuContext, buf: &[u64]) -> f64 {
    let chunk = buf.len().div_ceil(ctx.threads() * 16);
    let t = Instant::now();
    let s: u64 = ctx.pool().install(|| {
        buf.par_chunks(chunk)
            .map(|c| c.iter().fold(0u64, |a, &v| a.wrapping_add(v)))
            .reduce(|| 0, u64::wrapping_add)
    });
    black_box(s);
    std::mem::size_of_val(buf) as f64 / t.elapsed().as_secs_f64() / 1e9
}

/// Mat-vec GB/s of every format and shape, one table for all thread
/// counts. Each round times the plain kernel, the packed one (where the
/// CPU has it) and a 64 MiB streaming read, back to back on the same
/// threads; the ratios are medians over rounds against that interleaved
/// read, so the VM's drifting bandwidth moves both sides together.
fn format_table(ctxs: &[CpuContext], stream: &[u64], quick: bool) {
    println!(
        "\n== mat-vec by format (m = 1, cold weights; % of a streaming read interleaved with the calls) =="
    );
    println!(
        "{:<9} {:<11} {:>7} {:>9} {:>10} {:>8} {:>8} {:>8} {:>9}",
        "format", "shape", "threads", "MB", "us/call", "GB/s", "read", "of read", "hot GB/s"
    );
    let mut r = rng(3);
    let x = rand_f32(&mut r, 4096, -1.0, 1.0);
    let mut out = vec![0.0f32; 11008];
    let feat = kiln_cpu::CpuFeatures::detect();
    // KILN_BENCH_FORMATS=Q3_K,Q2_K times only those formats.
    let only = std::env::var("KILN_BENCH_FORMATS").unwrap_or_default();
    let wanted = |t: DType| only.is_empty() || only.split(',').any(|f| f == t.to_string());
    for wtype in FORMATS.into_iter().filter(|&t| wanted(t)) {
        for (n, k) in FORMAT_SHAPES {
            let one = rand_rows(&mut r, wtype, n, k);
            // Distinct copies (contents need not differ) so >= 256 MiB pass
            // between repeats of one copy: the 32 MiB L3 cannot serve them.
            let copies = (256usize << 20).div_ceil(one.len()).clamp(1, 64);
            let ws: Vec<Vec<u8>> = (0..copies).map(|_| one.clone()).collect();
            drop(one);
            let bytes = (ws[0].len() + 4 * k) as f64;
            let rounds = if quick { 10 } else { 2 * copies.max(20) };
            let p = MatmulParams { m: 1, n, k, wtype };
            // The packed layout (AVX-512 VNNI CPUs; Q4_0, Q4_1, Q8_0, Q4_K),
            // one packed copy per weight copy.
            let t0 = Instant::now();
            let packed: Vec<PackedWeights> = ws
                .iter()
                .filter_map(|w| PackedWeights::pack(feat, wtype, n, k, w).unwrap())
                .collect();
            if !packed.is_empty() {
                let gbs = (packed.len() * ws[0].len()) as f64 / t0.elapsed().as_secs_f64() / 1e9;
                println!("{wtype} {n}x{k}: packing {gbs:.2} GB/s (rayon pool)");
            }
            // Hot: the first rows, <= 512 KiB, L2-resident and timed again
            // and again: the kernel's compute-bound rate.
            let row = ws[0].len() / n;
            let nh = ((512usize << 10) / row).clamp(16, n) / 16 * 16;
            let ph = MatmulParams { n: nh, ..p };
            let hot_bytes = (nh * row + 4 * k) as f64;
            let packed_hot = PackedWeights::pack(feat, wtype, nh, k, &ws[0][..nh * row]).unwrap();
            let slice = (64usize << 20) / 8;
            for ctx in ctxs {
                let (mut tp, mut tk, mut rd) = (Vec::new(), Vec::new(), Vec::new());
                for round in 0..rounds + 2 {
                    let i = round % ws.len();
                    let t = Instant::now();
                    matmul(ctx, &p, &ws[i], &x[..k], &mut out[..n]).unwrap();
                    tp.push(t.elapsed().as_secs_f64());
                    if let Some(pk) = packed.get(i) {
                        let t = Instant::now();
                        matmul_packed(ctx, &p, pk, &ws[i], &x[..k], &mut out[..n]).unwrap();
                        tk.push(t.elapsed().as_secs_f64());
                    }
                    let off = (round * slice) % (stream.len() - slice);
                    rd.push(read_once(ctx, &stream[off..off + slice]));
                }
                // The first two rounds warm up.
                let (tp, tk, rd) = (&tp[2..], tk.get(2..).unwrap_or(&[]), &rd[2..]);
                let bw = median(rd.to_vec());
                let th = time(rounds * 10, |_| {
                    matmul(ctx, &ph, &ws[0][..nh * row], &x[..k], &mut out[..nh]).unwrap();
                });
                let t = median(tp.to_vec());
                let row_of = |name: &str, t: f64, th: f64| {
                    print_row(name, n, k, ctx.threads(), bytes, t, bw, hot_bytes / th)
                };
                row_of(&wtype.to_string(), t, th);
                let Some(ph_packed) = &packed_hot else {
                    continue;
                };
                let th = time(rounds * 10, |_| {
                    let w = &ws[0][..nh * row];
                    matmul_packed(ctx, &ph, ph_packed, w, &x[..k], &mut out[..nh]).unwrap();
                });
                row_of(&format!("{wtype}+pk"), median(tk.to_vec()), th);
            }
        }
    }
}

/// One line of the format table.
#[allow(clippy::too_many_arguments)] // one table row's columns
fn print_row(
    name: &str,
    n: usize,
    k: usize,
    threads: usize,
    bytes: f64,
    t: f64,
    bw: f64,
    hot: f64,
) {
    let gbs = bytes / t / 1e9;
    println!(
        "{:<9} {:<11} {:>7} {:>9.1} {:>10.1} {:>8.2} {:>8.2} {:>7.0}% {:>9.2}",
        name,
        format!("{n}x{k}"),
        threads,
        bytes / 1e6,
        t * 1e6,
        gbs,
        bw,
        100.0 * gbs / bw,
        hot / 1e9
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let only_formats = std::env::args().any(|a| a == "formats");
    let only_smollm = std::env::args().any(|a| a == "smollm");
    if !only_smollm {
        let stream_buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect(); // 1 GiB
        let ctxs = [CpuContext::new(1).unwrap(), CpuContext::new(2).unwrap()];
        let bw: Vec<f64> = ctxs.iter().map(|c| stream_read(c, &stream_buf)).collect();
        println!(
            "features: {:?}; streaming read: {:.2} GB/s (1 thread), {:.2} GB/s (2 threads)",
            kiln_cpu::CpuFeatures::detect(),
            bw[0],
            bw[1]
        );
        format_table(&ctxs, &stream_buf, quick);
        drop(stream_buf);
        if only_formats {
            return;
        }
    }
    let reps_dec = if quick { 50 } else { 300 };
    let reps_pre = if quick { 3 } else { 11 };
    let features = kiln_cpu::CpuFeatures::detect();
    println!("features: {features:?}");

    let stream_buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect(); // 1 GiB
    let shapes: Vec<(&Shape, Vec<Vec<u8>>)> =
        SHAPES.iter().map(|s| (s, weight_copies(s))).collect();
    let mut r = rng(2);
    let model: Vec<(usize, usize, Vec<u8>)> = (0..LAYERS)
        .flat_map(|_| LAYER)
        .map(|(n, k)| (n, k, rand_rows(&mut r, DType::Q4_1, n, k)))
        .collect();
    let out_w = rand_rows(&mut r, DType::Q8_0, 49152, 576);
    let x512 = rand_f32(&mut r, 512 * 1536, -1.0, 1.0);
    let mut out = vec![0.0f32; 512 * 49152];

    for threads in [1, 2] {
        let ctx = CpuContext::new(threads).unwrap();
        let bw = stream_read(&ctx, &stream_buf);
        println!("\n== {threads} thread(s): streaming read {bw:.1} GB/s ==");
        println!(
            "{:<22} {:>4} {:>10} {:>9} {:>8} {:>9} {:>9}",
            "shape", "m", "us/call", "GB/s", "of BW", "GFLOP/s", "case"
        );
        for (s, copies) in &shapes {
            let wbytes = copies[0].len() as f64;
            for (label, rotate) in [("cold", true), ("hot", false)] {
                let p = MatmulParams {
                    m: 1,
                    n: s.n,
                    k: s.k,
                    wtype: s.wtype,
                };
                let t = time(reps_dec, |rep| {
                    let w = if rotate {
                        &copies[rep % copies.len()]
                    } else {
                        &copies[0]
                    };
                    matmul(&ctx, &p, w, &x512[..s.k], &mut out[..s.n]).unwrap();
                });
                let gbs = wbytes / t / 1e9;
                println!(
                    "{:<22} {:>4} {:>10.1} {:>9.1} {:>7.0}% {:>9.1} {:>9}",
                    s.name,
                    1,
                    t * 1e6,
                    gbs,
                    100.0 * gbs / bw,
                    2.0 * (s.n * s.k) as f64 / t / 1e9,
                    label
                );
            }
            if s.n > 10_000 {
                continue; // the output matrix is applied to the last token only
            }
            let m = 512;
            let p = MatmulParams {
                m,
                n: s.n,
                k: s.k,
                wtype: s.wtype,
            };
            let t = time(reps_pre, |_| {
                matmul(&ctx, &p, &copies[0], &x512[..m * s.k], &mut out[..m * s.n]).unwrap()
            });
            println!(
                "{:<22} {:>4} {:>10.1} {:>9.2} {:>8} {:>9.1} {:>9}",
                s.name,
                m,
                t * 1e6,
                wbytes / t / 1e9,
                "",
                2.0 * (m * s.n * s.k) as f64 / t / 1e9,
                "prefill"
            );
        }

        // Scratch: thread-local reuse (matmul) vs a fresh buffer per call.
        for (m, n, k) in [(1usize, 576usize, 576usize), (512, 1536, 576)] {
            let p = MatmulParams {
                m,
                n,
                k,
                wtype: DType::Q4_1,
            };
            let w = &shapes[if n == 576 { 0 } else { 1 }].1[0];
            let reps = if m == 1 { reps_dec } else { reps_pre };
            let t_tls = time(reps, |_| {
                matmul(&ctx, &p, w, &x512[..m * k], &mut out[..m * n]).unwrap()
            });
            let t_new = time(reps, |_| {
                let mut acts = Q8Acts::new();
                quantize_activations(&ctx, &x512[..m * k], m, k, &mut acts).unwrap();
                matmul_quantized(&ctx, &p, w, &acts, &mut out[..m * n]).unwrap();
            });
            println!(
                "scratch m={m:<3} {n}x{k}: thread-local {:.1} us, fresh Vec per call {:.1} us",
                t_tls * 1e6,
                t_new * 1e6
            );
        }

        // Model sweeps (matmuls only).
        let bytes: usize = model.iter().map(|(_, _, w)| w.len()).sum::<usize>() + out_w.len();
        let decode_step = |out: &mut [f32]| {
            for (n, k, w) in &model {
                let p = MatmulParams {
                    m: 1,
                    n: *n,
                    k: *k,
                    wtype: DType::Q4_1,
                };
                matmul(&ctx, &p, w, &x512[..*k], &mut out[..*n]).unwrap();
            }
            let p = MatmulParams {
                m: 1,
                n: 49152,
                k: 576,
                wtype: DType::Q8_0,
            };
            matmul(&ctx, &p, &out_w, &x512[..576], &mut out[..49152]).unwrap();
        };
        let reps_sweep = if quick { 5 } else { 31 };
        // Called from this (non-pool) thread: every matmul wakes the pool.
        let t_dec = time(reps_sweep, |_| decode_step(&mut out));
        // Called from inside the pool, as an engine running a whole forward
        // pass under one `install` would: workers are already awake.
        let t_dec_in = ctx
            .pool()
            .install(|| time(reps_sweep, |_| decode_step(&mut out)));
        for (label, t) in [("outside pool", t_dec), ("inside pool.install", t_dec_in)] {
            println!(
                "decode sweep, {label} (211 matmuls, {:.1} MB): {:.2} ms/token = {:.1} tok/s, {:.1} GB/s ({:.0}% of BW)",
                bytes as f64 / 1e6,
                t * 1e3,
                1.0 / t,
                bytes as f64 / t / 1e9,
                100.0 * bytes as f64 / t / 1e9 / bw
            );
        }
        let t_pre = time(if quick { 1 } else { 3 }, |_| {
            for (n, k, w) in &model {
                let p = MatmulParams {
                    m: 512,
                    n: *n,
                    k: *k,
                    wtype: DType::Q4_1,
                };
                matmul(&ctx, &p, w, &x512[..512 * k], &mut out[..512 * n]).unwrap();
            }
            let p = MatmulParams {
                m: 1,
                n: 49152,
                k: 576,
                wtype: DType::Q8_0,
            };
            matmul(&ctx, &p, &out_w, &x512[..576], &mut out[..49152]).unwrap();
        });
        let flops: f64 = model
            .iter()
            .map(|(n, k, _)| 2.0 * 512.0 * (*n * *k) as f64)
            .sum();
        println!(
            "prefill sweep (512 tokens): {:.1} ms = {:.1} tok/s, {:.1} GFLOP/s",
            t_pre * 1e3,
            512.0 / t_pre,
            flops / t_pre / 1e9
        );
    }
}
