#!/usr/bin/env python3
"""Time PyTorch's scaled_dot_product_attention at the shapes kiln's
attention bench (crates/kiln-cuda/benches/attention.rs) runs, as the peer
figure beside kiln's:

- decode: batch 1, one query, 32 query heads over 8 KV heads (GQA),
  head_dim 128, 4k and 32k keys, bf16 and f16 (K and V in the cache type,
  as kiln's 16-bit caches);
- prefill: causal, 32 heads, head_dim 128, 4k and 8k tokens, bf16 and f16.

Each shape: warm-up, then the median of many calls, each bracketed by CUDA
events; inputs rotate over enough copies (>= 256 MiB of K/V) that the L2
does not serve repeats. Decode reports KV GB/s (K and V read once) beside a
streaming-read ceiling measured in the same run (a device-to-device copy of
2 GiB: read + write bytes over time), prefill TFLOP/s (4 * heads * d per
key seen, causal: half the square). Prints a markdown table. SDPA picks
its own backend (flash / memory-efficient / cuDNN) per shape.

GQA: with enable_gqa=True (torch >= 2.5) K/V keep 8 heads; otherwise K/V
are expanded to 32 heads first (outside the timing) and the row says so.

Usage (on the GPU machine): python3 scripts/bench-sdpa.py [--iters 200]
"""
import argparse
import statistics

import torch
import torch.nn.functional as F


def ceiling_gbs(iters=20):
    """Streaming-copy bandwidth (read + write) of 2 GiB, GB/s."""
    n = (2 << 30) // 4
    a = torch.empty(n, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        b.copy_(a)
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    ms = statistics.median(times)
    return 2 * a.numel() * 4 / (ms * 1e-3) / 1e9


def gqa_supported():
    try:
        q = torch.zeros(1, 4, 1, 8, device="cuda", dtype=torch.float16)
        kv = torch.zeros(1, 2, 4, 8, device="cuda", dtype=torch.float16)
        F.scaled_dot_product_attention(q, kv, kv, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


def time_ms(fn, n_copies, iters):
    """Median and mean of `iters` event-bracketed calls fn(i), after warm-up."""
    for i in range(5):
        fn(i % n_copies)
    torch.cuda.synchronize()
    ev = []
    for i in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(i % n_copies)
        e.record()
        ev.append((s, e))
    torch.cuda.synchronize()
    t = [s.elapsed_time(e) for s, e in ev]
    return statistics.median(t), statistics.mean(t)


def bench(kind, n_q, n_kv, heads, kv_heads, d, dtype, gqa, iters):
    kv_bytes = 2 * n_kv * kv_heads * d * torch.finfo(dtype).bits // 8
    n_copies = max(1, min(16, -(-(256 << 20) // kv_bytes)))
    expand = not gqa and kv_heads != heads
    copies = []
    for _ in range(n_copies):
        q = torch.randn(1, heads, n_q, d, device="cuda", dtype=dtype)
        k = torch.randn(1, kv_heads, n_kv, d, device="cuda", dtype=dtype)
        v = torch.randn(1, kv_heads, n_kv, d, device="cuda", dtype=dtype)
        if expand:
            rep = heads // kv_heads
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        copies.append((q, k, v))
    causal = kind == "prefill"
    kwargs = {"is_causal": causal}
    if gqa and kv_heads != heads:
        kwargs["enable_gqa"] = True

    def call(i):
        q, k, v = copies[i]
        return F.scaled_dot_product_attention(q, k, v, **kwargs)

    med, mean = time_ms(call, n_copies, iters)
    keys = n_q * (n_q + 1) // 2 if causal else n_q * n_kv
    flops = 4.0 * heads * d * keys
    return {
        "kv_gbs": kv_bytes / (med * 1e-3) / 1e9,
        "tflops": flops / (med * 1e-3) / 1e12,
        "median_us": med * 1e3,
        "mean_us": mean * 1e3,
        "note": "K/V expanded to all heads" if expand else "",
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=200)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.cuda.get_device_name()
    ceil = ceiling_gbs()
    gqa = gqa_supported()
    print(f"device: {dev}, torch {torch.__version__}, copy ceiling {ceil:.0f} GB/s, enable_gqa {gqa}")
    print()
    print("| kind | heads | d | dtype | tokens | kv | median µs | mean µs | KV GB/s | % of ceiling | TFLOP/s | note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    shapes = [
        ("decode", 1, 4096, 32, 8),
        ("decode", 1, 32768, 32, 8),
        ("prefill", 4096, 4096, 32, 32),
        ("prefill", 8192, 8192, 32, 32),
    ]
    for dtype in (torch.bfloat16, torch.float16):
        for kind, n_q, n_kv, heads, kv_heads in shapes:
            r = bench(kind, n_q, n_kv, heads, kv_heads, 128, dtype, gqa, args.iters)
            name = str(dtype).replace("torch.", "")
            print(
                f"| {kind} | {heads}/{kv_heads} | 128 | {name} | {n_q} | {n_kv} | "
                f"{r['median_us']:.1f} | {r['mean_us']:.1f} | {r['kv_gbs']:.0f} | "
                f"{100 * r['kv_gbs'] / ceil:.0f}% | {r['tflops']:.1f} | {r['note']} |"
            )


if __name__ == "__main__":
    main()
