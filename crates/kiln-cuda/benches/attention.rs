//! attention bench: decode (1 query against 128 / 1k / 4k / 8k keys) and a
//! 512-token prefill at SmolLM2's head layout (9 query heads, 3 KV heads,
//! head_dim 64), with other split counts for the decode kernel; then the
//! issue's shapes with f32, f16 and bf16 caches: decode with 32 query / 8 KV
//! heads, head_dim 128, at 4k and 32k keys, and causal prefill of 4k and 8k
//! tokens with 32 heads (as `scripts/bench-sdpa.py` times PyTorch's SDPA);
//! prefill rows time the pipelined tensor-core kernel (v2, `Mma2`), then
//! v1 (`alt: Mma`, what `KILN_ATTN_MMA=v1` runs), then the f32-operand
//! tiled one;
//! decode rows time the lane-group decode kernel (the default), then the
//! warp decode kernel (`alt: SplitKv`, what `KILN_ATTN_DEC=old` runs).
//! KV GB/s (K and V read once, in the cache's element size) against the
//! streaming-read ceiling measured in the same run, and TFLOP/s (4·heads·d
//! per key seen: a causal prefill counts each (query, key) pair once).
//! Inputs rotate over copies (≥ 128 MiB of KV) so the L2
//! does not serve repeats. Median of 50 event-bracketed calls behind a busy
//! kernel (10 for the 4k/8k prefills), and the back-to-back mean. Run: `cargo bench -p kiln-cuda
//! --bench attention`; skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{backend, time_ms, Ceiling};
use kiln_core::ops::attention::AttentionParams;
use kiln_core::KvType;
use kiln_cuda::attention::{
    attention_with_kernel, select_attention, split_kv_plan, AttentionKernel, SplitKvPlan,
};
use kiln_cuda::harness::{with_kv_view, KvDev};
use kiln_cuda::CudaBackend;
use kiln_testkit::cases::attention::KvData;
use kiln_testkit::{case_rng, rand_f32};

/// One bench row: heads, KV heads, head_dim, queries, keys, cache type, and
/// whether to also time other split counts.
struct Shape {
    heads: usize,
    kv_heads: usize,
    d: usize,
    n_tokens: usize,
    kv: usize,
    kv_type: KvType,
    alt_splits: bool,
}

fn shapes() -> Vec<Shape> {
    let mut v = Vec::new();
    for (n_tokens, kv) in [
        (1usize, 128usize),
        (1, 1024),
        (1, 4096),
        (1, 8192),
        (512, 512),
    ] {
        v.push(Shape {
            heads: 9,
            kv_heads: 3,
            d: 64,
            n_tokens,
            kv,
            kv_type: KvType::F32,
            alt_splits: true,
        });
    }
    for kv_type in [KvType::F32, KvType::F16, KvType::BF16] {
        for (n_tokens, kv, kv_heads) in [
            (1, 4096, 8),
            (1, 32_768, 8),
            (4096, 4096, 32),
            (8192, 8192, 32),
        ] {
            v.push(Shape {
                heads: 32,
                kv_heads,
                d: 128,
                n_tokens,
                kv,
                kv_type,
                alt_splits: false,
            });
        }
    }
    v
}

fn main() {
    let Some(be) = backend("attention") else {
        return;
    };
    let mut ceil = Ceiling::measure(&be);
    println!();
    println!(
        "| heads | d | kv type | tokens | kv | kernel | median µs | KV GB/s | % of ceiling | TFLOP/s | back-to-back µs |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for sh in shapes() {
        run_shape(&be, &mut ceil, &sh);
    }
}

fn run_shape(be: &CudaBackend, ceil: &mut Ceiling, sh: &Shape) {
    let sm = be.info().sm_count as usize;
    let Shape {
        heads,
        kv_heads,
        d,
        n_tokens,
        kv,
        kv_type,
        alt_splits,
    } = *sh;
    let p = AttentionParams {
        n_tokens,
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim: d,
        pos0: kv - n_tokens,
        kv_stride: kv,
        scale: 1.0 / (d as f32).sqrt(),
        window: None,
        softcap: None,
    };
    let q_len = n_tokens * heads * d;
    let kv_len = kv * kv_heads * d;
    let kv_bytes = 2 * kv_len * kv_type.bytes();
    let n_copies = (128usize << 20).div_ceil(kv_bytes).clamp(1, 16);
    let mut rng = case_rng(1, "attention-bench", kv);
    let up_kv = |rng: &mut _| {
        let x = rand_f32(rng, kv_len, -1.0, 1.0);
        KvDev::upload(be, KvData::encode(kv_type, &x).slice()).unwrap()
    };
    let copies: Vec<_> = (0..n_copies)
        .map(|_| {
            let q = be.upload(&rand_f32(&mut rng, q_len, -1.0, 1.0)).unwrap();
            (q, up_kv(&mut rng), up_kv(&mut rng))
        })
        .collect();
    let mut out = be.alloc_zeros::<f32>(q_len).unwrap();
    let chosen = select_attention(&p, sm).unwrap();
    let mut kernels = vec![chosen];
    // Prefill: the tensor-core v1 beside v2 (what KILN_ATTN_MMA=v1 runs),
    // and the f32-operand tiled kernel.
    match chosen {
        AttentionKernel::Mma2 { head_dim } => kernels.extend([
            AttentionKernel::Mma { head_dim },
            AttentionKernel::Tiled { head_dim },
        ]),
        AttentionKernel::Mma { head_dim } => kernels.push(AttentionKernel::Tiled { head_dim }),
        _ => {}
    }
    // Decode: the warp decode kernel beside the lane-group one.
    if let AttentionKernel::DecodeGroups(_) = chosen {
        kernels.push(AttentionKernel::SplitKv(split_kv_plan(&p, sm)));
    }
    // Other split counts of the chosen decode kernel.
    let with_plan = |plan| match chosen {
        AttentionKernel::DecodeGroups(_) => Some(AttentionKernel::DecodeGroups(plan)),
        AttentionKernel::SplitKv(_) => Some(AttentionKernel::SplitKv(plan)),
        _ => None,
    };
    if let (AttentionKernel::SplitKv(plan) | AttentionKernel::DecodeGroups(plan), true) =
        (chosen, alt_splits)
    {
        for splits in [8usize, 16, 32, 64, 128, 256] {
            let chunk = kv.div_ceil(splits).div_ceil(plan.key_tile) * plan.key_tile;
            let alt = SplitKvPlan {
                splits: kv.div_ceil(chunk),
                chunk,
                ..plan
            };
            if let Some(k) = with_plan(alt).filter(|k| !kernels.contains(k)) {
                kernels.push(k);
            }
        }
    }
    // Keys seen, summed over queries (causal).
    let keys: usize = (0..n_tokens).map(|t| p.pos0 + t + 1).sum();
    let flops = 4.0 * (heads * d) as f64 * keys as f64;
    for (i, kernel) in kernels.iter().enumerate() {
        let (ms, b2b) = time_ms(
            be,
            if n_tokens >= 4096 { 10 } else { 50 },
            || ceil.busy(be),
            |c| {
                let (q, k, v) = &copies[c % copies.len()];
                with_kv_view(k, |kv| {
                    with_kv_view(v, |vv| {
                        attention_with_kernel(
                            be,
                            &p,
                            kernel,
                            &q.slice(..),
                            kv,
                            vv,
                            &mut out.slice_mut(..),
                        )
                    })
                })
            },
        );
        let gbs = kv_bytes as f64 / ms / 1e6;
        println!(
            "| {heads}/{kv_heads} | {d} | {kv_type} | {n_tokens} | {kv} | {}{kernel:?} | {:.2} | {gbs:.0} | {:.0}% | {:.2} | {:.2} |",
            if i == 0 { "" } else { "alt: " },
            ms * 1e3,
            ceil.pct(gbs),
            flops / ms / 1e9,
            b2b * 1e3
        );
    }
}
