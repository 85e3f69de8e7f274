#!/usr/bin/env python3
"""Check matvec_fused's tile kernels (matvec_fused_tile<T>: the entries
matvec_fused_tile_m1 and matvec_fused_q8tile_m1) without a GPU, by running
their device code as host C++ with the emulation of check-cuda-tile.py.

The pieces of matvec_fused.cu the tile kernel uses (FusedParams,
fused_block_sum, fused_rope, fused_epilogue, matvec_fused_tile) are cut
out textually and compiled with matvec_tile.cuh, matvec_staged.cuh's
stage_commit / stage_wait, the block decoders (matvec.cuh, decode_kq.cuh)
and common.cuh's kiln_f32_to_bf16 behind cuda_host_shim.h and
check-cuda-tile.py's prelude (imported from it): one std::thread per CUDA
thread of a 128-thread CTA, one CTA at a time, cp.async as deferred copies
that land only at the __syncthreads after their stage_wait, every piece
checked to read inside the weights (guard zones around them, base 16-byte
aligned as the host requires) and to write inside its stack's slot, the
dynamic shared memory one exact-size heap buffer (stacks * tile_slot +
4 k when normalizing + tile_xq_bytes(k) for int8, as tile_launch sizes
it) poisoned with 0xCD before every CTA, `vals` and `red` per-CTA arrays
poisoned with NaN; AddressSanitizer and UBSan on. The grid is one CTA
longer than tile_launch's (ceil(rows per stack / tile_rows) + 1): the
extra one must exit. The PDL calls are no-ops (one grid at a time);
rsqrtf, __fdiv_rn, __expf and __frcp_rn are exact here, so this cannot
see the GPU's fast-math error (the bounds below allow for it) nor
cp.async timing, occupancy or shared-memory limits (the GPU parity tests
do: parity_cuda matvec_fused with KILN_MVF_TILE).

Reference (numpy float64, not kiln code): gguf's dequantizer for the
weights, RMSNorm of x in float64, y = W x', then the epilogue: Store,
Residual (+ res), SwiGlu (silu(gate) * up, weight [gate; up]) and Qkv
(normal-mode RoPE at the position on q and k pairs below n_rot of each
head, q -> out, k and v -> the cache row pos, or pos % n_ctx in a ring;
f32, f16 and bf16 caches). Bounds as kiln-testkit cases/matvec_fused.rs:
the product (k + 32) 2^-24 sum |w x'|, plus for int8 activations
sum_b d_b / 2 (1 + 2^-10) sum_{e in b} |w_e|; residual + 2^-24 |out|;
SwiGLU the propagated error plus 4e-6 |out|; a rotated pair e_a + e_b +
2^-23 |value|; a 16-bit cache between the roundings of the bound's two
ends (f16 overflow to inf included). For int8 tiles
also check-cuda-tile.py's exact model (codes of x' as tile_quantize_x
makes them, integer dot products per 16, offsets times d * code sum)
within 1e-5 of its terms' magnitudes (x' modelled in f32 from an f64 sum
of squares; the kernel's f32 sum may differ by an ulp or two, so a code
could flip at a rounding tie: never seen with this seed). Every output
written and finite; 64 guard floats each side of out and 64 guard bytes
each side of each cache unchanged; cache rows other than the position
byte-for-byte still poisoned.

--mutate OLD NEW edits the kernel source (matvec_tile.cuh + the cut parts
of matvec_fused.cu) first, to see the check fail, e.g.
  --mutate 'w + (rows + j0) * p.row_bytes' 'w + j0 * p.row_bytes'
                                             (gated: up stack = gate stack)
  --mutate 'j0 + 2 * (u64)t, vals[2 * t]' 'j0 + (u64)t, vals[2 * t]'
                                             (epilogue pair index)
  --mutate 'fused_rope(p, ps, in_head / 2' 'fused_rope(p, ps, in_head'
                                             (RoPE pair index)
  --mutate 'xr = xs;' 'xr = x;'              (norm skipped)
  --mutate 'area += 4 * p.k;' ''             (int8 area over the norm row)

Usage: python3 scripts/check-cuda-fused-tile.py [--mutate OLD NEW] [--quick]
(needs g++ with C++20 and libasan/libubsan, numpy, gguf)
"""
import argparse
import importlib.util
import pathlib
import subprocess
import sys
import tempfile

import gguf
import gguf.quants
import numpy as np

from kernel_src import common_decls, device_src, matvec_src

SCRIPTS = pathlib.Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
KERNELS = ROOT / "crates/kiln-cuda/kernels"
_spec = importlib.util.spec_from_file_location("check_cuda_tile", SCRIPTS / "check-cuda-tile.py")
tile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tile)

SEED = 2718
GUARD = 64  # guard bytes each side of the weights and caches (floats: out)

# format -> (float tile policy, int8 tile policy or None, f16 field offsets):
# the variants src/matvec_fused.rs compiles (FlatBlocks for the
# 32-element formats of matvec.cuh, SubBlocks for decode_kq.cuh's).
FORMATS = {
    "Q4_0": ("FloatTile<Q4_0T, FlatBlocks<Q4_0T>>", "Q8Tile<Q4Dot<false>>", [0]),
    "Q4_1": ("FloatTile<Q4_1T, FlatBlocks<Q4_1T>>", "Q8Tile<Q4Dot<true>>", [0, 2]),
    "Q8_0": ("FloatTile<Q8_0T, FlatBlocks<Q8_0T>>", "Q8Tile<Q8_0Dot>", [0]),
    "Q4_K": ("FloatTile<Q4_KT, SubBlocks<Q4_KT>>", "Q8Tile<Q4_KDot>", [0, 2]),
    "Q5_K": ("FloatTile<Q5_KT, SubBlocks<Q5_KT>>", "Q8Tile<Q5_KDot>", [0, 2]),
    "Q6_K": ("FloatTile<Q6_KT, SubBlocks<Q6_KT>>", "Q8Tile<Q6_KDot>", [208]),
    "Q5_0": ("FloatTile<Q5_0T, SubBlocks<Q5_0T>>", None, [0]),
    "IQ4_NL": ("FloatTile<IQ4_NLT, SubBlocks<IQ4_NLT>>", None, [0]),
}
EPIS = {"store": 0, "residual": 1, "swiglu": 2, "qkv": 3}
KV_TYPES = {"f32": 0, "f16": 1, "bf16": 2}
# (format, k, epilogue, n | (q heads, kv heads, head_dim, n_rot, n_ctx),
#  norm, wanted tile rows (None: tile_launch's default plan), cache type,
#  ring). Store / Residual with odd n: a half pair at the end; SwiGlu n =
#  2 x rows per stack.
CASES = [
    ("Q4_0", 96, "store", 67, True, None, None, False),
    ("Q4_0", 2048, "swiglu", 2 * 13, False, 2, None, False),
    ("Q4_0", 576, "qkv", (3, 1, 64, 64, 37), True, None, "f32", False),
    ("Q4_1", 32, "residual", 37, False, 2, None, False),
    ("Q4_1", 576, "swiglu", 2 * 21, True, None, None, False),
    ("Q4_1", 576, "qkv", (9, 3, 64, 64, 300), True, None, "f16", False),
    ("Q8_0", 96, "store", 19, True, 2, None, False),
    ("Q8_0", 1536, "residual", 67, True, None, None, False),
    ("Q8_0", 256, "qkv", (4, 2, 16, 8, 19), False, 2, "bf16", True),
    ("Q4_K", 256, "swiglu", 2 * 67, True, None, None, False),
    ("Q4_K", 2048, "store", 9, True, 2, None, False),
    ("Q4_K", 768, "qkv", (3, 1, 32, 16, 11), True, None, "f32", True),
    ("Q5_K", 768, "residual", 17, False, None, None, False),
    ("Q5_K", 256, "swiglu", 2 * 9, False, 2, None, False),
    ("Q6_K", 256, "store", 45, False, None, None, False),
    ("Q6_K", 1280, "swiglu", 2 * 7, True, 2, None, False),
    ("Q6_K", 512, "qkv", (2, 1, 64, 32, 23), False, 4, "f16", False),
    ("Q5_0", 96, "residual", 33, True, None, None, False),
    ("Q5_0", 576, "swiglu", 2 * 5, False, 2, None, False),
    ("IQ4_NL", 64, "store", 257, True, None, None, False),
    ("IQ4_NL", 256, "qkv", (3, 1, 8, 8, 37), True, 2, "bf16", False),
]
PRODUCT_SLACK = 32.0  # kiln-testkit cases/matvec_fused.rs
FAST_EXP_REL = 4e-6
INT8_X_SLACK = 1.0 / 1024.0
U32 = 2.0**-24
TILE_TARGET_PLAIN, TILE_TARGET_GATED = 8 * 1024, 24 * 1024  # src/matvec_tile.rs
POISON = {0: b"\x01\x00\xc0\x7f", 1: b"\x01\x7e", 2: b"\xc1\x7f"}  # NaN bits per cache type

PRELUDE_EXTRA = r"""
// PDL (common.cuh): the emulated grid runs after everything before it.
static inline void kiln_grid_wait() {}
static inline void kiln_grid_launch_dependents() {}
// Fast-math intrinsics, exact here.
static inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
static inline float __fdiv_rn(float a, float b) { return a / b; }
// The CTA's `vals` and `red` (poisoned with NaN before every CTA).
static float vals_smem[2 * 64], red_smem[32];
"""

MAIN = r"""
template <class T>
static void run(const std::string& b) {
    const auto pv = slurp<u64>(b + ".p");
    const auto fv = slurp<double>(b + ".f");
    FusedParams p = {};
    p.m = 1;
    p.n = pv[1];
    p.k = pv[2];
    p.row_bytes = pv[3];
    p.kw = 4;
    p.norm = (u32)pv[4];
    p.eps = (float)fv[0];
    p.epi = (u32)pv[5];
    p.q_dim = (u32)pv[6];
    p.kv_dim = (u32)pv[7];
    p.head_dim = (u32)pv[8];
    p.n_rot = (u32)pv[9];
    p.n_ctx = (u32)pv[10];
    p.freq_base = (float)fv[1];
    p.freq_scale = (float)fv[2];
    p.log2_base = fv[3];
    p.kv_type = (u32)pv[11];
    p.ring = (u32)pv[12];
    p.tile_rows = pv[13];
    p.tile_slot = pv[14];
    const u64 extra = pv[15], out_len = pv[16];
    const i32 position = (i32)(i64)pv[17];
    const bool gated = p.epi == EPI_SWIGLU, qkv = p.epi == EPI_QKV;
    const auto w = slurp<u8>(b + ".w");
    const auto xv = slurp<float>(b + ".x");
    std::vector<float4> xa(xv.size() / 4);  // 16-byte aligned x, exact size
    memcpy(xa.data(), xv.data(), xv.size() * 4);
    const float* x = (const float*)xa.data();
    // Absent buffers are x, as the host passes them.
    const auto nw = slurp<float>(b + ".g");
    const auto res = slurp<float>(b + ".r");
    const std::vector<i32> pos = {position};
    auto kc = slurp<u8>(b + ".kc");
    auto vc = slurp<u8>(b + ".vc");
    std::vector<float> out(out_len + 128, 12345.0f);  // 64 guard floats each side
    const u64 stacks = gated ? 2 : 1, rows = gated ? p.n / 2 : p.n;
    src_ranges[0] = {w.data() + GUARD, p.n * p.row_bytes};
    src_ranges[1] = {nullptr, 0};
    dyn_slot = p.tile_slot;
    dyn_bytes = stacks * p.tile_slot + extra;
    dyn_smem = (u8*)malloc(dyn_bytes);
    const unsigned gx = (unsigned)((rows + p.tile_rows - 1) / p.tile_rows) + 1;
    launch_ctas(gx, 1, [&] {
        matvec_fused_tile<T>(p, w.data() + GUARD, x, p.norm ? nw.data() : x,
                             p.epi == EPI_RESIDUAL ? res.data() : x, qkv ? pos.data() : (const i32*)x,
                             out.data() + 64, qkv ? (void*)(kc.data() + GUARD) : (void*)x,
                             qkv ? (void*)(vc.data() + GUARD) : (void*)x);
    });
    free(dyn_smem);
    spit(b + ".o", out);
    if (qkv) {
        spit(b + ".okc", kc);
        spit(b + ".ovc", vc);
    }
}

int main(int argc, char** argv) {
    const std::string dir = argv[1];
    for (int c = 0;; c++) {
        const std::string b = dir + "/case" + std::to_string(c);
        const auto pv = slurp<u64>(b + ".p");
        if (pv.empty()) break;
        switch (pv[0]) {
DISPATCH
        }
    }
    return guard_fail.load() != 0 || copy_fail.load() != 0 ? 3 : 0;
}
"""


def fused_src(mutate) -> str:
    """matvec_tile.cuh + the parts of matvec_fused.cu the tile kernel uses,
    with the shim hooks."""
    code = device_src("matvec_tile.cuh")
    mf = (KERNELS / "matvec_fused.cu").read_text()
    code += "\n" + tile.segment(mf, "#define EPI_STORE 0", "// w: [n, row_bytes], x: [m, k]")
    code += "\n" + tile.segment(mf, "// The tile variant (m = 1", "#define MVF_ENTRY")
    for old, new in mutate:
        if old not in code:
            sys.exit(f"--mutate: {old!r} not in matvec_tile.cuh / matvec_fused.cu's tile parts")
        code = code.replace(old, new)
    code = tile.replace_once(code, "for (u32 i = 0; i < 16; i++) dst[i] = i < n ? src[i] : (u8)0;",
                             "tile_cp16_check(dst, src, n);", "tile_cp16's fallback")
    code = tile.replace_once(code, "extern __shared__ __align__(16) u8 tile_smem[];",
                             "u8* const tile_smem = dyn_smem;", "tile_smem")
    code = tile.replace_once(code, "__shared__ float vals[2 * TILE_MAX_ROWS];", "float* const vals = vals_smem;",
                             "vals")
    code = tile.replace_once(code, "__shared__ float red[32];", "float* const red = red_smem;", "red")
    return code


def helpers_src() -> str:
    """check-cuda-tile.py's spit and launch_ctas, also poisoning vals / red."""
    h = tile.segment(tile.MAIN, "template <class T>\nstatic void spit", "template <class T, bool GATED>")
    return tile.replace_once(
        h, "for (float& g : gate_smem) g = __int_as_float(0x7fc00000);",
        "for (float& g : gate_smem) g = __int_as_float(0x7fc00000);\n"
        "                        for (float& g : vals_smem) g = __int_as_float(0x7fc00000);\n"
        "                        for (float& g : red_smem) g = __int_as_float(0x7fc00000);", "poison")


def bf16_src() -> str:
    cm = (KERNELS / "common.cuh").read_text()
    return tile.segment(cm, "__device__ __forceinline__ u16 kiln_f32_to_bf16", "// Programmatic dependent launch")


def random_blocks(rng, name, count):
    """Random valid blocks: random bytes, f16 scale fields in [-1, 1]."""
    qt = getattr(gguf.GGMLQuantizationType, name)
    _, ts = gguf.GGML_QUANT_SIZES[qt]
    data = rng.integers(0, 256, size=(count, ts), dtype=np.uint8)
    for off in FORMATS[name][2]:
        data[:, off : off + 2] = rng.uniform(-1, 1, size=count).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return data


def rope_ref(v, pos, head_dim, n_rot, base, scale):
    """Normal-mode RoPE of the heads of v (f64) at pos: (rotated, rotated mask)."""
    v = v.reshape(-1, head_dim).copy()
    rot = np.zeros(v.shape, bool)
    for ip in range(n_rot // 2):
        theta = pos * float(np.float32(scale)) * float(np.float32(base)) ** (-2.0 * ip / n_rot)
        c, s = np.cos(theta), np.sin(theta)
        a, b = v[:, 2 * ip].copy(), v[:, 2 * ip + 1].copy()
        v[:, 2 * ip], v[:, 2 * ip + 1] = a * c - b * s, a * s + b * c
        rot[:, 2 * ip : 2 * ip + 2] = True
    return v.reshape(-1), rot.reshape(-1)


def rope_tol(e, val, rot):
    """Rotated pairs: e_a + e_b + 2^-23 |value|; others e."""
    pair = (e.reshape(-1, 2).sum(axis=1)[:, None] * np.ones(2)).reshape(-1)
    return np.where(rot, pair + 2.0**-23 * np.abs(val), e)


def cache_decode(raw, kv):
    if kv == 0:
        return np.frombuffer(raw, np.float32).astype(np.float64)
    h = np.frombuffer(raw, np.uint16)
    if kv == 1:
        return h.view(np.float16).astype(np.float64)
    return (h.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def to_cache(v, kv):
    """f64 values rounded to the cache type (as f64): monotone roundings."""
    if kv == 0:
        return v.astype(np.float32).astype(np.float64)
    if kv == 1:
        with np.errstate(over="ignore"):
            return v.astype(np.float16).astype(np.float64)
    u = v.astype(np.float32).view(np.uint32).astype(np.uint64)
    b = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32)
    return (b << 16).view(np.float32).astype(np.float64)


def make_case(rng, c, case, q8):
    """Inputs, params and the reference of one case (both policies share it)."""
    name, k, epi, shape, norm, want_rows, kvn, ring = case
    qt = getattr(gguf.GGMLQuantizationType, name)
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    row_bytes = k // bs * ts
    if epi == "qkv":
        qh, kvh, hd, n_rot, n_ctx = shape
        qd, kvd = qh * hd, kvh * hd
        n = qd + 2 * kvd
    else:
        n, qd, kvd, hd, n_rot, n_ctx = shape, 0, 0, 0, 0, 0
    blocks = random_blocks(rng, name, n * (k // bs))
    wf = gguf.quants.dequantize(blocks.reshape(-1), qt).astype(np.float64).reshape(n, k)
    wbuf = rng.integers(0, 256, GUARD, dtype=np.uint8).tobytes() + blocks.tobytes() + \
        rng.integers(0, 256, GUARD, dtype=np.uint8).tobytes()
    x = rng.uniform(-2, 2, k).astype(np.float32)
    x[rng.random(k) < 0.05] *= 8  # outliers: block scales differ
    if c % 4 == 1 and k >= 64:
        x[32:64] = 0  # a zero block (scale 0)
    g = rng.uniform(0.5, 1.5, k).astype(np.float32) if norm else np.zeros(0, np.float32)
    eps = 1e-5
    x64 = x.astype(np.float64)
    if norm:
        ss = float((x64 * x64).sum())
        xn = x64 / np.sqrt(ss / k + eps) * g.astype(np.float64)
        inv32 = np.float32(1.0) / np.sqrt(np.float32(np.float32(ss) / np.float32(k)) + np.float32(eps))
        xq_in = ((x * inv32).astype(np.float32) * g).astype(np.float32)
    else:
        xn, xq_in = x64, x
    y = wf @ xn
    mag = np.abs(wf) @ np.abs(xn)
    eb = (k + PRODUCT_SLACK) * U32 * mag
    model = None
    if q8:
        nb32 = k // 32
        amax = np.abs(xn.reshape(-1, 32)).max(axis=1)
        wabs = np.abs(wf.reshape(n, nb32, 32)).sum(axis=2)
        eb = eb + (amax / 127.0 * 0.5 * (1 + INT8_X_SLACK) * wabs).sum(axis=1)
        qc, a, cc = tile.int8_terms(name, blocks)
        qc, a, cc = qc.reshape(n, nb32, 2, 16), a.reshape(n, nb32, 2), cc.reshape(n, nb32, 2)
        assert np.allclose(a[..., None] * qc + cc[..., None], wf.reshape(n, nb32, 2, 16), rtol=1e-6,
                           atol=1e-6), "int8 model decode != gguf"
        codes, dx, sx, _ = tile.quantize_x(xq_in)
        ch = codes.reshape(nb32, 2, 16)
        terms_a = a * dx[None, :, None] * (qc * ch[None]).sum(axis=3)
        if name in tile.HALF_OFFSETS:
            terms_c = cc * (dx[:, None] * ch.sum(axis=2))[None]
        else:
            assert np.array_equal(cc[..., 0], cc[..., 1])
            terms_c = cc[..., :1] * sx[None, :, None]
        model = (terms_a.sum(axis=(1, 2)) + terms_c.sum(axis=(1, 2)),
                 1e-5 * (np.abs(terms_a).sum(axis=(1, 2)) + np.abs(terms_c).sum(axis=(1, 2))) + 1e-30)
    stacks = 2 if epi == "swiglu" else 1
    rows = n // stacks
    xq_bytes = k + 8 * (k // 32) if q8 else 0
    extra = (4 * k if norm else 0) + xq_bytes
    target = want_rows * stacks * row_bytes if want_rows else (TILE_TARGET_GATED if stacks == 2 else TILE_TARGET_PLAIN)
    plan = tile.tile_plan(row_bytes, stacks, target, extra)
    assert plan is not None, case
    res = rng.uniform(-4, 4, n).astype(np.float32) if epi == "residual" else np.zeros(0, np.float32)
    kv = KV_TYPES[kvn] if kvn else 0
    base, scale, pos = 10000.0, 1.0, 0
    if epi == "qkv":
        base = [10000.0, 1e6][c % 2]
        scale = [1.0, 0.25][(c // 2) % 2]
        pos = int(rng.integers(1, n_ctx))
        if ring:
            pos += n_ctx * int(rng.integers(1, 5))
    p = dict(name=name, k=k, n=n, rows=rows, epi=epi, norm=norm, plan=plan, extra=extra, q8=q8, kv=kv,
             ring=ring, qd=qd, kvd=kvd, hd=hd, n_rot=n_rot, n_ctx=n_ctx, pos=pos, base=base, scale=scale,
             row_bytes=row_bytes)
    # The wanted outputs and their bounds (epilogue), from y (f64) and its bound eb.
    want = {}
    if epi == "store":
        want["out"] = (y, eb, model)
    elif epi == "residual":
        r64 = res.astype(np.float64)
        o = r64 + y
        want["out"] = (o, eb + U32 * np.abs(o), model and (r64 + model[0], model[1] + U32 * np.abs(o)))
    elif epi == "swiglu":
        def sw(yv, ev):
            gw, uw, gt, ut = yv[:rows], yv[rows:], ev[:rows], ev[rows:]
            o = tile.silu(gw) * uw
            t = 1.1 * gt * (np.abs(uw) + ut) + (np.abs(tile.silu(gw)) + 1.1 * gt) * ut + FAST_EXP_REL * np.abs(o)
            return o, t + 1e-30
        o, t = sw(y, eb)
        want["out"] = (o, t, model and sw(*model))
    else:
        def split(yv, ev):
            q, rq = rope_ref(yv[:qd], pos, hd, n_rot, base, scale)
            kk, rk = rope_ref(yv[qd : qd + kvd], pos, hd, n_rot, base, scale)
            return ((q, rope_tol(ev[:qd], q, rq)), (kk, rope_tol(ev[qd : qd + kvd], kk, rk)),
                    (yv[qd + kvd :], ev[qd + kvd :]))
        parts = split(y, eb)
        mparts = split(*model) if model else (None, None, None)
        for key, (v, t), m in zip(("out", "kc", "vc"), parts, mparts):
            want[key] = (v, t, m)
    out_len = {"store": n, "residual": n, "swiglu": rows, "qkv": qd}[epi]
    files = {"w": wbuf, "x": x.tobytes(), "g": g.tobytes(), "r": res.tobytes()}
    if epi == "qkv":
        cache = rng.integers(0, 256, GUARD, dtype=np.uint8).tobytes() + POISON[kv] * (n_ctx * kvd) + \
            rng.integers(0, 256, GUARD, dtype=np.uint8).tobytes()
        files["kc"] = cache
        files["vc"] = cache
    pv = [0, n, k, row_bytes, int(norm), EPIS[epi], qd, kvd, hd, n_rot, n_ctx, kv, int(ring), plan[0], plan[1],
          extra, out_len, pos]
    fv = [eps, base, scale, float(np.log2(np.float64(np.float32(base))))]
    return p, want, files, pv, fv


def check(p, want, t, c, files):
    """Problems of case c's outputs (list of strings)."""
    errs = []
    o = np.fromfile(t / f"case{c}.o", dtype=np.float32)
    if not (np.all(o[:GUARD] == 12345.0) and np.all(o[-GUARD:] == 12345.0)):
        errs.append("guard floats around out changed")
    got = {"out": o[GUARD:-GUARD].astype(np.float64)}
    worst = {"ref": 0.0, "model": 0.0}
    if p["epi"] == "qkv":
        kvd, kv = p["kvd"], p["kv"]
        esz = 4 if kv == 0 else 2
        row = p["pos"] % p["n_ctx"] if p["ring"] else p["pos"]
        for key in ("kc", "vc"):
            raw = (t / f"case{c}.o{key}").read_bytes()
            before = files[key]
            if raw[:GUARD] != before[:GUARD] or raw[-GUARD:] != before[-GUARD:]:
                errs.append(f"{key}: guard bytes changed")
            body, old = raw[GUARD:-GUARD], before[GUARD:-GUARD]
            lo, hi = row * kvd * esz, (row + 1) * kvd * esz
            if body[:lo] != old[:lo] or body[hi:] != old[hi:]:
                bad_rows = sorted({i // (kvd * esz) for i in range(len(body)) if body[i] != old[i]} - {row})
                errs.append(f"{key}: rows {bad_rows[:5]} other than {row} (position {p['pos']}) written")
            got[key] = cache_decode(body[lo:hi], kv)
    for key, (w, tol, model) in want.items():
        g = got[key]
        if np.any(np.isnan(g)):
            bad = np.nonzero(np.isnan(g))[0]
            errs.append(f"{key}: {len(bad)} NaN (unwritten?), first at {bad[:5].tolist()}")
            continue
        checks = [("ref", w, tol)]
        if model:
            checks.append(("model", model[0], model[1]))
        for what, wv, tv in checks:
            if key == "out" or p["kv"] == 0:
                err = np.abs(g - wv)
                ok = err <= tv
                worst[what] = max(worst[what], float((err / tv).max()))
            else:
                # A 16-bit cache holds an f32 value within the bound,
                # rounded: between the roundings of the bound's ends (f16
                # overflow to inf included).
                lo, hi = to_cache(wv - tv, p["kv"]), to_cache(wv + tv, p["kv"])
                ok = (lo <= g) & (g <= hi)
            for j in np.nonzero(~ok)[0][:3]:
                errs.append(f"{key}[{j}] ({what}): got {g[j]:.9g} want {wv[j]:.9g} tol {tv[j]:.3g}")
    return errs, worst


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mutate", nargs=2, action="append", default=[], metavar=("OLD", "NEW"),
                    help="replace text in matvec_tile.cuh / matvec_fused.cu's tile parts first")
    ap.add_argument("--quick", action="store_true", help="every other case")
    args = ap.parse_args()
    rng = np.random.default_rng(SEED)
    cases = CASES[::2] if args.quick else CASES
    policies = []
    for name, (fl, q8, _) in FORMATS.items():
        policies.append((name, False, fl))
        if q8:
            policies.append((name, True, q8))
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        runs = []
        for case in cases:
            for q8 in (False, True):
                if q8 and FORMATS[case[0]][1] is None:
                    continue
                c = len(runs)
                p, want, files, pv, fv = make_case(rng, c, case, q8)
                pv[0] = policies.index((case[0], q8, FORMATS[case[0]][1 if q8 else 0]))
                for ext, data in files.items():
                    (t / f"case{c}.{ext}").write_bytes(data)
                np.array(pv, dtype=np.uint64).tofile(t / f"case{c}.p")
                np.array(fv, dtype=np.float64).tofile(t / f"case{c}.f")
                runs.append((p, want, files))
        dispatch = [f"        case {i}: run<{pol}>(b); break;" for i, (_, _, pol) in enumerate(policies)]
        src = "\n".join([tile.PRELUDE, PRELUDE_EXTRA, common_decls(), bf16_src(), matvec_src(),
                         device_src("decode_kq.cuh"), tile.staged_src(), fused_src(args.mutate),
                         f"#define GUARD {GUARD}", helpers_src(), MAIN.replace("DISPATCH", "\n".join(dispatch))])
        (t / "emu.cpp").write_text(src)
        cc = subprocess.run(
            ["g++", "-std=c++20", "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-pthread", "-Wno-unknown-pragmas", "-I", str(SCRIPTS), "-o", str(t / "emu"), str(t / "emu.cpp")],
            capture_output=True, text=True)
        if cc.returncode != 0:
            print(cc.stderr[-6000:])
            return 2
        run = subprocess.run([str(t / "emu"), str(t)])
        if run.returncode != 0:
            print(f"emulator failed (rc {run.returncode}{': tile_cp16 guard / copies' if run.returncode == 3 else ''})")
            bad += 1
            if run.returncode != 3:
                return 2
        for c, (p, want, files) in enumerate(runs):
            errs, worst = check(p, want, t, c, files)
            epi = p["epi"]
            if epi == "qkv":
                epi += (f" {p['qd']}/{p['kvd']} hd={p['hd']} rot={p['n_rot']} {['f32', 'f16', 'bf16'][p['kv']]}"
                        f" pos={p['pos']}{' ring ' + str(p['n_ctx']) if p['ring'] else ''}")
            desc = (f"{p['name']} {'int8' if p['q8'] else 'float'} k={p['k']} n={p['n']} {epi}"
                    f"{' norm' if p['norm'] else ''} tile_rows={p['plan'][0]}")
            if errs:
                bad += 1
                print(f"FAIL {desc}: {len(errs)} problems")
                for m in errs[:6]:
                    print("   ", m)
            else:
                ratio = f"err/tol ref {worst['ref']:.3f}" + (f" model {worst['model']:.3f}" if p["q8"] else "")
                print(f"ok   {desc}: {ratio}")
    print(f"seed {SEED}: {'ok' if bad == 0 else 'MISMATCH'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
