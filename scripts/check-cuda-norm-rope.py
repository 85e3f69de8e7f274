#!/usr/bin/env python3
"""Check the norm_rope CUDA kernel without a GPU, by running its device code
as host C++ (the technique of check-cuda-moe.py).

crates/kiln-cuda/kernels/norm_rope.cu (with norm_rope.cuh) is compiled with g++ behind small
shims: one std::thread per CUDA thread of a block, __syncthreads a
block-wide std::barrier, __syncwarp a per-warp barrier, __shfl_xor_sync an
exchange through memory between two per-warp barriers, __shared__ arrays
function statics (blocks run one after another). So the indexing of rows,
pairs (normal and neox) and tail dims, the shared angle table and per-warp
rows, the head groups, both grid-stride loops and the barriers run as
written, under the launcher's geometry (kiln-cuda/src/norm_rope.rs,
norm_rope_launch, mirrored below) and under others: heads per block not a
multiple of the warps, and grids smaller than the work. Every output starts
as NaN between guard zones, so an unwritten element or a stray write shows.
What this cannot check is timing and the GPU's rsqrtf / f64 pow and sincos
(the GPU parity tests do: parity_norm_rope in
crates/kiln-cuda/tests/parity_cuops.rs, and `kiln selftest --device cuda`).

The reference is kiln-core's, in float64 with numpy: rms_norm_ref over the
head rows (rounded to f32), then rope_ref_with_factors. Outputs must be
within 2e-5 (Tol::NORM_ROPE's max_abs).

Usage: python3 scripts/check-cuda-norm-rope.py   (needs g++ with C++20 and numpy)
"""
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNEL = ROOT / "crates/kiln-cuda/kernels/norm_rope.cu"
SEED = 4242
GUARD = 64
TOL = 2e-5
# kiln-cuda/src/norm_rope.rs
MAX_WARPS = 8
BLOCK_PER_TOKEN_MIN_TOKENS = 128

PRELUDE = r"""
#define KILN_SHIM_BLOCK_SYNC
#define KILN_SHIM_WARP_SHFL
#define KILN_SHIM_SLURP
#include "cuda_host_shim.h"
typedef int i32;
typedef unsigned int u32;
typedef unsigned long long u64;
static inline void __syncwarp() { warp_bars[threadIdx.x / 32]->arrive_and_wait(); }
static inline float kiln_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
static inline float __fdiv_rn(float a, float b) { return a / b; }
// PDL (griddepcontrol) has no host meaning: blocks run one after another.
static inline void kiln_pdl_enter() {}
"""

MAIN = r"""
static float bits(u64 b) { u32 u = (u32)b; float f; memcpy(&f, &u, 4); return f; }

int main(int argc, char** argv) {
    const std::string dir = argv[1];
    // Per case: params u64 (n_tokens, n_heads, head_dim, n_rot, hpb, neox, ff,
    // warps, gx, gy, base bits, scale bits, eps bits), x, w, factors, pos.
    for (int c = 0;; c++) {
        const std::string b = dir + "/c" + std::to_string(c);
        const auto pv = slurp<u64>(b + ".p");
        if (pv.empty()) break;
        NormRopeParams p = {pv[0], pv[1], pv[2], pv[3], pv[4], bits(pv[10]), bits(pv[11]), bits(pv[12]), 0};
        const bool neox = pv[5], ff = pv[6];
        const unsigned warps = (unsigned)pv[7], gx = (unsigned)pv[8], gy = (unsigned)pv[9];
        const auto x = slurp<float>(b + ".x");
        const auto w = slurp<float>(b + ".w");
        const auto f = slurp<float>(b + ".f");
        const auto pos = slurp<i32>(b + ".pos");
        const u64 n = p.n_tokens * p.n_heads * p.head_dim;
        std::vector<float> out(n + 2 * GUARD, 12345.0f);
        std::fill(out.begin() + GUARD, out.begin() + GUARD + n, NAN);
        float* o = out.data() + GUARD;
        launch(gx, gy, 32 * warps, [&] {
            if (neox && ff) norm_rope_neox_ff_f32(p, x.data(), w.data(), f.data(), pos.data(), o);
            else if (neox) norm_rope_neox_f32(p, x.data(), w.data(), pos.data(), o);
            else if (ff) norm_rope_normal_ff_f32(p, x.data(), w.data(), f.data(), pos.data(), o);
            else norm_rope_normal_f32(p, x.data(), w.data(), pos.data(), o);
        });
        FILE* fo = fopen((b + ".out").c_str(), "wb");
        fwrite(out.data(), 4, out.size(), fo);
        fclose(fo);
    }
    return 0;
}
"""


def device_src() -> str:
    """norm_rope.cu with norm_rope.cuh (its per-head code) pasted in, less
    the other include (common.cuh)."""
    header = (KERNEL.parent / "norm_rope.cuh").read_text()
    src = KERNEL.read_text().replace('#include "norm_rope.cuh"', header)
    return "\n".join(l for l in src.splitlines() if not l.startswith("#include"))


def launch_geometry(n_tokens, n_heads):
    """kiln-cuda's norm_rope_launch: (warps, heads per block, gx, gy)."""
    n_tokens, n_heads = max(n_tokens, 1), max(n_heads, 1)
    warps = min(n_heads, MAX_WARPS)
    hpb = n_heads if n_tokens >= BLOCK_PER_TOKEN_MIN_TOKENS else warps
    return warps, hpb, min(n_tokens, 65535), min(-(-n_heads // hpb), 65535)


def reference(x, w, f, pos, nt, nh, d, n_rot, base, scale, eps, neox):
    """kiln-core norm_rope_ref: rms_norm_ref (f64, rounded to f32), then
    rope_ref_with_factors (f64 angle, sincos and rotation, rounded to f32)."""
    rows = x.astype(np.float64).reshape(nt * nh, d)
    inv = 1.0 / np.sqrt((rows * rows).sum(axis=1) / d + np.float64(np.float32(eps)))
    normed = (rows * inv[:, None] * w.astype(np.float64)[None, :]).astype(np.float32)
    out = normed.reshape(nt, nh, d).astype(np.float64)
    half = n_rot // 2
    i = np.arange(half, dtype=np.float64)
    inv_freq = np.float64(np.float32(base)) ** (-2.0 * i / n_rot)
    for t in range(nt):
        theta = np.float64(pos[t]) * np.float64(np.float32(scale)) * inv_freq
        if f is not None:
            theta = theta / f.astype(np.float64)
        s, c = np.sin(theta), np.cos(theta)
        ia = i.astype(int) if neox else 2 * i.astype(int)
        ib = ia + half if neox else ia + 1
        a, b = out[t][:, ia].copy(), out[t][:, ib].copy()
        out[t][:, ia] = (a * c - b * s).astype(np.float32)
        out[t][:, ib] = (a * s + b * c).astype(np.float32)
    return out.astype(np.float32).reshape(-1)


def main() -> int:
    rng = np.random.default_rng(SEED)
    # (n_tokens, n_heads, head_dim, n_rot, base, scale, eps, factors?, positions, geometry)
    # geometry: None = the launcher's; else (warps, heads per block, gx, gy).
    cases = [
        (1, 1, 2, 2, 1e4, 1.0, 1e-6, False, "from1", None),
        (3, 5, 2, 2, 1e4, 1.0, 1e-5, True, "rand", None),
        (3, 3, 16, 0, 1e4, 1.0, 1e-6, False, "from1", None),
        (1, 9, 64, 64, 1e5, 1.0, 1e-5, False, "deep", None),
        (5, 3, 66, 34, 1e4, 1.0, 1e-5, True, "rand", None),
        (3, 7, 80, 48, 5e5, 0.5, 1e-6, True, "rand", None),
        (1, 32, 128, 128, 1e6, 1.0, 1e-6, False, "deep", None),
        (2, 4, 256, 256, 1e4, 1.0, 1e-6, False, "rand", None),
        (2, 3, 512, 512, 1e6, 1.0, 1e-6, True, "deep", None),
        (1, 2, 510, 300, 1e6, 1.0, 1e-6, False, "deep", None),
        # The prefill geometry: a block per token with all its heads.
        (130, 9, 64, 64, 1e6, 1.0, 1e-6, False, "from0", None),
        # 9 heads in groups of 3 on 2 warps; grids smaller than the work.
        (7, 9, 80, 48, 5e5, 1.0, 1e-5, True, "rand", (2, 3, 3, 2)),
        (7, 9, 128, 128, 1e6, 1.0, 1e-6, False, "rand", (8, 9, 2, 1)),
        (5, 13, 64, 64, 1e4, 1.0, 1e-6, True, "rand", (4, 4, 1, 1)),
        (4, 5, 256, 200, 1e6, 1.0, 1e-6, False, "deep", (1, 2, 4, 2)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        data = []
        for c, (nt, nh, d, n_rot, base, scale, eps, ff, pk, geo) in enumerate(cases):
            for neox in (False, True):
                k = 2 * c + int(neox)
                warps, hpb, gx, gy = geo or launch_geometry(nt, nh)
                x = rng.uniform(-3, 3, size=nt * nh * d).astype(np.float32)
                w = rng.uniform(-2, 2, size=d).astype(np.float32)
                f = rng.uniform(0.25, 40.0, size=n_rot // 2).astype(np.float32) if ff else None
                pos = {
                    "from0": np.arange(nt),
                    "from1": 1 + np.arange(nt),
                    "deep": 100_000 + np.arange(nt),
                    "rand": rng.integers(-50, 1_000_000, size=nt),
                }[pk].astype(np.int32)
                fbits = lambda v: int(np.array([v], dtype=np.float32).view(np.uint32)[0])
                np.array(
                    [nt, nh, d, n_rot, hpb, int(neox), int(ff), warps, gx, gy, fbits(base), fbits(scale), fbits(eps)],
                    dtype=np.uint64,
                ).tofile(t / f"c{k}.p")
                x.tofile(t / f"c{k}.x")
                w.tofile(t / f"c{k}.w")
                (f if f is not None else np.ones(1, np.float32)).tofile(t / f"c{k}.f")
                pos.tofile(t / f"c{k}.pos")
                want = reference(x, w, f, pos, nt, nh, d, n_rot, base, scale, eps, neox)
                data.append((k, cases[c], neox, (warps, hpb, gx, gy), want))
        src = "\n".join([PRELUDE, f"#define GUARD {GUARD}", device_src(), MAIN])
        (t / "emu.cpp").write_text(src)
        cc = subprocess.run(
            ["g++", "-std=c++20", "-O1", "-pthread", "-I", str(ROOT / "scripts"), "-o", str(t / "emu"), str(t / "emu.cpp")],
            capture_output=True,
            text=True,
        )
        if cc.returncode != 0:
            print(cc.stderr[-6000:])
            return 2
        if subprocess.run([str(t / "emu"), str(t)]).returncode != 0:
            print("emulator failed")
            return 2
        bad = 0
        worst = 0.0
        for k, case, neox, geo, want in data:
            out = np.fromfile(t / f"c{k}.out", dtype=np.float32)
            n = want.size
            guards = np.concatenate([out[:GUARD], out[GUARD + n :]])
            got = out[GUARD : GUARD + n]
            err = np.abs(got.astype(np.float64) - want)
            label = f"{case[:4]} {'neox' if neox else 'normal'} ff={case[7]} geometry={geo}"
            if not (guards == 12345.0).all():
                bad += 1
                print(f"{label}: guard overwritten")
            elif np.isnan(got).any():
                bad += 1
                print(f"{label}: {int(np.isnan(got).sum())} elements unwritten")
            elif err.max() > TOL:
                bad += 1
                i = int(err.argmax())
                print(f"{label}: max error {err.max():.3g} at {i}: got {got[i]} want {want[i]}")
            else:
                worst = max(worst, float(err.max()))
                print(f"{label}: ok (max error {err.max():.2g})")
    print(f"norm_rope: {len(data)} runs, worst error {worst:.2g} (tolerance {TOL})")
    print(f"seed {SEED}: {'ok' if bad == 0 else f'{bad} MISMATCHES'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
