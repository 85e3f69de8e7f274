//! Expert-routed matmul bench (issue 6): `matmul_id` and the fused
//! `matmul_id_swiglu` at Qwen3-30B-A3B's expert shapes (128 experts, top-8,
//! d = 2048, expert ffn = 768), every weight format CUDA runs.
//!
//! Rows:
//! - `1×8 gate`: one token, 8 of 128 experts, n = 768, k = 2048 (the gate or
//!   up projection); `1×8 swiglu`: gate + up + SiLU·mul in one launch;
//!   `1×8 down`: n = 2048, k = 768. GB/s counts the routed experts' weight
//!   bytes (distinct experts only) plus the activations read, against the
//!   streaming-read ceiling of the same run.
//! - `4×8 …`: four tokens, 8 experts each (ids overlap at random).
//! - `512×8 gate` (prefill, the grouped path): TFLOP/s.
//!
//! The stacks have the real size (128 experts: Q4_K ~113 MB per matrix, more
//! than the 50 MB L2) and every timed call takes a fresh set of expert ids
//! from a pool, so the L2 does not serve repeats. Kernel time = median of 50
//! event-bracketed calls behind a busy kernel; back-to-back = the mean of 50
//! calls with launch gaps. `KILN_BENCH_ONLY=decode|prefill` runs one half.
//! Run: `cargo bench -p kiln-cuda --bench moe`; skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backend, time_ms, Ceiling};
use kiln_core::ops::matmul_id::MatmulIdParams;
use kiln_core::DType;
use kiln_cuda::matmul::set_staged;
use kiln_cuda::matmul_id::{matmul_id, matmul_id_swiglu, select_matmul_id, supports};
use kiln_cuda::matvec_tile::{q8_tile_supports, set_id_tile, set_id_tile_q8, TILE_AUTO};
use kiln_testkit::{case_rng, rand_f32, rand_rows};

const EXPERTS: usize = 128;
const TOP_K: usize = 8;
const D: usize = 2048;
const FF: usize = 768;
/// Id sets in the pool (each call takes the next one).
const POOL: usize = 64;
const ITERS: usize = 50;

/// How the per-row kernels read quantized expert rows.
#[derive(Clone, Copy, PartialEq)]
enum Loads {
    Direct,
    Staged,
    /// Tile kernels with this target of shared bytes per CTA.
    Tile(usize),
    /// The default tiles with int8 activations (`q8_tile_supports`).
    TileQ8,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Gate,
    Swiglu,
    Down,
}

fn main() {
    let Some(be) = backend("moe") else { return };
    let mut ceil = Ceiling::measure(&be);
    let mut rng = case_rng(1, "cumoe-bench", 0);
    let only = std::env::var("KILN_BENCH_ONLY").unwrap_or_default();
    println!();
    println!(
        "| tokens×top-k | op (n×k) | wtype | kernel | median µs | routed GB/s | % of ceiling | TFLOP/s | back-to-back µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // Decode rows run with direct loads, with the weights staged through
    // shared memory (`set_staged`) and as tiles (`set_id_tile`, the default
    // target), quantized formats only; `KILN_BENCH_TILE_SWEEP=1` adds
    // other tile targets for Q4_K.
    let sweep = std::env::var("KILN_BENCH_TILE_SWEEP").is_ok_and(|v| v == "1");
    let mut runs = Vec::new();
    for wtype in DType::ALL {
        if !supports(wtype) {
            continue;
        }
        let mut modes = vec![Loads::Direct];
        if wtype.is_quantized() {
            modes.push(Loads::Staged);
            modes.push(Loads::Tile(TILE_AUTO));
            if q8_tile_supports(wtype) {
                modes.push(Loads::TileQ8);
            }
            if sweep && wtype == DType::Q4_K {
                modes.extend([8192, 16384, 32768, 49152].map(Loads::Tile));
            }
        }
        if only != "prefill" {
            for tokens in [1, 4] {
                for kind in [Kind::Gate, Kind::Swiglu, Kind::Down] {
                    for &st in &modes {
                        runs.push((tokens, kind, wtype, st));
                    }
                }
            }
        }
        if only != "decode" {
            runs.push((512, Kind::Gate, wtype, Loads::Direct));
        }
    }
    for (tokens, kind, wtype, loads) in runs {
        set_staged(&be, loads == Loads::Staged);
        set_id_tile(
            &be,
            match loads {
                Loads::Tile(t) => t,
                Loads::TileQ8 => TILE_AUTO,
                _ => 0,
            },
        );
        set_id_tile_q8(&be, loads == Loads::TileQ8);
        let (n, k) = if kind == Kind::Down { (D, FF) } else { (FF, D) };
        let mut p = MatmulIdParams {
            n_tokens: tokens,
            top_k: TOP_K,
            n,
            k,
            n_experts: EXPERTS,
            expert_stride: 0,
            wtype,
            x_per_slot: kind == Kind::Down,
        };
        let one = rand_rows(&mut rng, wtype, n, k);
        p.expert_stride = one.len();
        // One random expert repeated: the bytes, not the values, set the speed.
        let stack: Vec<u8> = one.repeat(EXPERTS);
        let wg = be.upload(&stack).unwrap();
        let wu = if kind == Kind::Swiglu {
            Some(be.upload(&stack).unwrap())
        } else {
            None
        };
        let x_rows = if p.x_per_slot { tokens * TOP_K } else { tokens };
        let dx = be
            .upload(&rand_f32(&mut rng, x_rows * k, -1.0, 1.0))
            .unwrap();
        let rows = tokens * TOP_K;
        // POOL id sets, each token's top-k distinct; distinct experts per set.
        let mut ids = Vec::with_capacity(POOL * rows);
        let mut distinct = Vec::with_capacity(POOL);
        for _ in 0..POOL {
            let mut seen = [false; EXPERTS];
            for _ in 0..tokens {
                let mut chosen = Vec::with_capacity(TOP_K);
                while chosen.len() < TOP_K {
                    let u = rand_f32(&mut rng, 1, 0.0, 1.0)[0];
                    let e = ((u * EXPERTS as f32) as u32).min(EXPERTS as u32 - 1);
                    if !chosen.contains(&e) {
                        chosen.push(e);
                    }
                }
                for &e in &chosen {
                    seen[e as usize] = true;
                }
                ids.extend(chosen);
            }
            distinct.push(seen.iter().filter(|&&s| s).count());
        }
        let dids = be.upload(&ids).unwrap();
        let mut dout = be.alloc_zeros::<f32>(rows * n).unwrap();
        let call = |i: usize, dout: &mut kiln_cuda::CudaSlice<f32>| {
            let set = i % POOL;
            let ids = dids.slice(set * rows..(set + 1) * rows);
            match &wu {
                Some(wu) => matmul_id_swiglu(
                    &be,
                    &p,
                    &wg.slice(..),
                    &wu.slice(..),
                    &dx.slice(..),
                    &ids,
                    &mut dout.slice_mut(..),
                ),
                None => matmul_id(
                    &be,
                    &p,
                    &wg.slice(..),
                    &dx.slice(..),
                    &ids,
                    &mut dout.slice_mut(..),
                ),
            }
        };
        let (ms, b2b) = time_ms(&be, ITERS, || ceil.busy(&be), |i| call(i, &mut dout));
        let mats = if kind == Kind::Swiglu { 2 } else { 1 };
        let mean_distinct = distinct.iter().sum::<usize>() as f64 / POOL as f64;
        let bytes = mean_distinct * (mats * p.expert_stride) as f64 + (x_rows * k * 4) as f64;
        let gbs = bytes / ms / 1e6;
        let tf = 2.0 * (mats * rows * n * k) as f64 / ms / 1e9;
        let op = match kind {
            Kind::Gate => "gate",
            Kind::Swiglu => "swiglu",
            Kind::Down => "down",
        };
        let kern = if kind == Kind::Swiglu {
            "PerRow swiglu".to_string()
        } else {
            format!("{:?}", select_matmul_id(&p))
        };
        let kern = match loads {
            Loads::Direct => kern,
            Loads::Staged => kern + " staged",
            Loads::Tile(TILE_AUTO) => format!("{kern} tile"),
            Loads::Tile(t) => format!("{kern} tile {}K", t / 1024),
            Loads::TileQ8 => format!("{kern} tile q8"),
        };
        println!(
            "| {tokens}×{TOP_K} | {op} ({n}×{k}) | {wtype} | {kern} | {:.2} | {gbs:.0} | {:.0}% | {tf:.2} | {:.2} |",
            ms * 1e3,
            ceil.pct(gbs),
            b2b * 1e3
        );
    }
}
