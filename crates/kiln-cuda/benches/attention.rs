//! attention bench: decode (1 query against 1k / 4k / 8k keys) and a
//! 512-token prefill at SmolLM2's head layout (9 query heads, 3 KV heads,
//! head_dim 64): the launcher's kernel, then for split-KV decode other split
//! counts. KV GB/s (K and V read once) against the streaming-read ceiling
//! measured in the same run, and TFLOP/s (4·heads·d per key seen). Inputs
//! rotate over copies (≥ 128 MiB of KV) so the L2 does not serve repeats.
//! Median of 50 event-bracketed calls behind a busy kernel, and the
//! back-to-back mean. Run: `cargo bench -p kiln-cuda --bench attention`;
//! skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backend, time_ms, Ceiling};
use kiln_core::ops::attention::AttentionParams;
use kiln_cuda::attention::{attention_with_kernel, select_attention, AttentionKernel, SplitKvPlan};
use kiln_testkit::{case_rng, rand_f32};

const HEADS: usize = 9;
const KV_HEADS: usize = 3;
const HEAD_DIM: usize = 64;

fn main() {
    let Some(be) = backend("attention") else {
        return;
    };
    let sm = be.info().sm_count as usize;
    let mut ceil = Ceiling::measure(&be);
    println!();
    println!(
        "| tokens | kv | kernel | median µs | KV GB/s | % of ceiling | TFLOP/s | back-to-back µs |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (n_tokens, kv) in [(1usize, 1024usize), (1, 4096), (1, 8192), (512, 512)] {
        let p = AttentionParams {
            n_tokens,
            n_heads: HEADS,
            n_kv_heads: KV_HEADS,
            head_dim: HEAD_DIM,
            pos0: kv - n_tokens,
            kv_stride: kv,
            scale: 1.0 / (HEAD_DIM as f32).sqrt(),
            window: None,
            softcap: None,
        };
        let q_len = n_tokens * HEADS * HEAD_DIM;
        let kv_len = kv * KV_HEADS * HEAD_DIM;
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
        let flops = 4.0 * (HEADS * HEAD_DIM) as f64 * keys as f64;
        for (i, kernel) in kernels.iter().enumerate() {
            let (ms, b2b) = time_ms(
                &be,
                50,
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
                "| {n_tokens} | {kv} | {}{kernel:?} | {:.2} | {gbs:.0} | {:.0}% | {:.2} | {:.2} |",
                if i == 0 { "" } else { "alt: " },
                ms * 1e3,
                ceil.pct(gbs),
                flops / ms / 1e9,
                b2b * 1e3
            );
        }
    }
}
