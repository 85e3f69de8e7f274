//! attention bench: decode (1 query against 1k / 4k / 8k keys) and a
//! 512-token prefill at SmolLM2's head layout (9 query heads, 3 KV heads,
//! head_dim 64), and causal prefills of 4k and 8k tokens at Llama 3 8B's
//! (32 query heads, 8 KV heads, head_dim 128): the launcher's kernel, then
//! for split-KV decode other split counts and for prefill the f32 tiled
//! kernel against the tensor-core one. KV GB/s (K and V read once) against
//! the streaming-read ceiling measured in the same run, and TFLOP/s
//! (4·heads·d per key seen: a causal prefill of n tokens counts its
//! n(n+1)/2 (query, key) pairs once). Inputs rotate over copies (≥ 128 MiB
//! of KV) so the L2 does not serve repeats. Median of 50 event-bracketed
//! calls behind a busy kernel (10 for the 4k/8k prefills), and the
//! back-to-back mean. Run: `cargo bench -p kiln-cuda --bench attention`;
//! skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backend, time_ms, Ceiling};
use kiln_core::ops::attention::AttentionParams;
use kiln_cuda::attention::{attention_with_kernel, select_attention, AttentionKernel, SplitKvPlan};
use kiln_testkit::{case_rng, rand_f32};

/// A bench row's shape.
struct Shape {
    n_tokens: usize,
    kv: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

const fn s(n_tokens: usize, kv: usize, heads: usize, kv_heads: usize, head_dim: usize) -> Shape {
    Shape {
        n_tokens,
        kv,
        heads,
        kv_heads,
        head_dim,
    }
}

const SHAPES: &[Shape] = &[
    s(1, 1024, 9, 3, 64),
    s(1, 4096, 9, 3, 64),
    s(1, 8192, 9, 3, 64),
    s(512, 512, 9, 3, 64),
    s(4096, 4096, 32, 8, 128),
    s(8192, 8192, 32, 8, 128),
];

fn main() {
    let Some(be) = backend("attention") else {
        return;
    };
    let sm = be.info().sm_count as usize;
    let mut ceil = Ceiling::measure(&be);
    println!();
    println!(
        "| tokens | kv | heads | d | kernel | median µs | KV GB/s | % of ceiling | TFLOP/s | back-to-back µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for sh in SHAPES {
        let (n_tokens, kv, heads, head_dim) = (sh.n_tokens, sh.kv, sh.heads, sh.head_dim);
        let p = AttentionParams {
            n_tokens,
            n_heads: heads,
            n_kv_heads: sh.kv_heads,
            head_dim,
            pos0: kv - n_tokens,
            kv_stride: kv,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: None,
        };
        let q_len = n_tokens * heads * head_dim;
        let kv_len = kv * sh.kv_heads * head_dim;
        let kv_bytes = 2 * kv_len * 4;
        let n_copies = (128usize << 20).div_ceil(kv_bytes).clamp(1, 16);
        let mut rng = case_rng(1, "attention-bench", kv);
        let copies: Vec<_> = (0..n_copies)
            .map(|_| {
                (
                    be.upload(&rand_f32(&mut rng, q_len, -1.0, 1.0)).unwrap(),
                    be.upload(&rand_f32(&mut rng, kv_len, -1.0, 1.0)).unwrap(),
                    be.upload(&rand_f32(&mut rng, kv_len, -1.0, 1.0)).unwrap(),
                )
            })
            .collect();
        let mut out = be.alloc_zeros::<f32>(q_len).unwrap();
        let chosen = select_attention(&p, sm).unwrap();
        let mut kernels = vec![chosen];
        // Prefill: the f32 tiled kernel beside the tensor-core one.
        if let AttentionKernel::Mma { head_dim } = chosen {
            kernels.push(AttentionKernel::Tiled { head_dim });
        }
        if let AttentionKernel::SplitKv(plan) = chosen {
            for splits in [8usize, 16, 32, 64, 128, 256] {
                let chunk = kv.div_ceil(splits).div_ceil(plan.key_tile) * plan.key_tile;
                let alt = SplitKvPlan {
                    splits: kv.div_ceil(chunk),
                    chunk,
                    ..plan
                };
                if alt != plan && !kernels.contains(&AttentionKernel::SplitKv(alt)) {
                    kernels.push(AttentionKernel::SplitKv(alt));
                }
            }
        }
        // Keys seen, summed over queries (causal).
        let keys: usize = (0..n_tokens).map(|t| p.pos0 + t + 1).sum();
        let flops = 4.0 * (heads * head_dim) as f64 * keys as f64;
        let reps = if n_tokens >= 4096 { 10 } else { 50 };
        for (i, kernel) in kernels.iter().enumerate() {
            let (ms, b2b) = time_ms(
                &be,
                reps,
                || ceil.busy(&be),
                |c| {
                    let (q, k, v) = &copies[c % copies.len()];
                    attention_with_kernel(
                        &be,
                        &p,
                        kernel,
                        &q.slice(..),
                        &k.slice(..),
                        &v.slice(..),
                        &mut out.slice_mut(..),
                    )
                },
            );
            let gbs = kv_bytes as f64 / ms / 1e6;
            println!(
                "| {n_tokens} | {kv} | {heads}/{} | {head_dim} | {}{kernel:?} | {:.2} | {gbs:.0} | {:.0}% | {:.2} | {:.2} |",
                sh.kv_heads,
                if i == 0 { "" } else { "alt: " },
                ms * 1e3,
                ceil.pct(gbs),
                flops / ms / 1e9,
                b2b * 1e3
            );
        }
    }
}
