#!/usr/bin/env python3
"""Check the qk_norm_rope_kv CUDA kernel without a GPU, by running its device
code as host C++ (the technique of check-cuda-norm-rope.py, whose shims and
reference it reuses).

crates/kiln-cuda/kernels/qk_norm_rope_kv.cu (with norm_rope.cuh pasted in)
is compiled with g++: one std::thread per CUDA thread of a block, the
barriers and shuffles of cuda_host_shim.h, blocks one after another. Every
entry point runs (both pairings, f32 / f16 / bf16 caches, the host-row and
the device-position `_at` kernels, factors or a null pointer) under the
launcher's geometry (kiln-cuda/src/qk_norm_rope_kv.rs,
qk_norm_rope_kv_launch, mirrored below) and under others: rows per block
not a multiple of the warps, a block holding only v rows, grids smaller
than the work. q_out starts as NaN and the caches hold earlier rows, all
between guard zones, so an unwritten element, a stray write or a row
written in the wrong place shows.

The reference is kiln-core's composition, in numpy: norm_rope on q and on k
(check-cuda-norm-rope.py's reference), then the KV append (rows
(base + t) % ring, f16 by numpy's float16, bf16 by ggml's rule on the
bits). q_out and an f32 K cache must be within 2e-5 (Tol::NORM_ROPE); a
16-bit K cache between the roundings of ref -/+ 2e-5 (the testkit's rule);
the V cache and every row not appended bit for bit. With --mutate, a
copy of the kernel with a v-row offset error must fail (the check checks).

What this cannot check: timing and the GPU's rsqrtf / f64 pow and sincos,
PDL (GPU: parity_qk_norm_rope_kv in kiln-cuda/tests/parity_cuops.rs, and
kiln's tests/qk_norm_rope_kv.rs, which compares with norm_rope and
copy_rows bit for bit and replays a CUDA graph).

Usage: python3 scripts/check-cuda-qknr.py [--mutate]   (needs g++ with C++20 and numpy)
"""
import importlib.util
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "crates/kiln-cuda/kernels"
SEED = 777
GUARD = 64
TOL = 2e-5
# kiln-cuda/src/qk_norm_rope_kv.rs (norm_rope's constants)
MAX_WARPS = 8
BLOCK_PER_TOKEN_MIN_TOKENS = 128

_spec = importlib.util.spec_from_file_location("nr", ROOT / "scripts/check-cuda-norm-rope.py")
nr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(nr)

PRELUDE = nr.PRELUDE + r"""
typedef unsigned short u16;
static inline u16 kiln_f32_to_bf16(float x) {
    const u32 u = __float_as_uint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
"""

MAIN = r"""
static float bits(u64 b) { u32 u = (u32)b; float f; memcpy(&f, &u, 4); return f; }

template <class T, class F>
static void run(const std::string& b, const std::vector<u64>& pv, F kernel) {
    QkNormRopeKvParams p = {pv[0], pv[1], pv[2], pv[3], pv[4], pv[5], pv[6], pv[7],
                            bits(pv[8]), bits(pv[9]), bits(pv[10]), 0};
    const unsigned warps = (unsigned)pv[11], gx = (unsigned)pv[12], gy = (unsigned)pv[13];
    const bool ff = pv[14];
    const u64 cache_rows = pv[15];
    const auto qkv = slurp<float>(b + ".qkv");
    const auto qn = slurp<float>(b + ".qn");
    const auto kn = slurp<float>(b + ".kn");
    const auto f = slurp<float>(b + ".f");
    const auto pos = slurp<i32>(b + ".pos");
    const auto k0 = slurp<T>(b + ".k0");
    const auto v0 = slurp<T>(b + ".v0");
    const u64 nq = p.n_tokens * p.n_heads * p.head_dim, nc = cache_rows * p.n_heads_kv * p.head_dim;
    std::vector<float> q(nq + 2 * GUARD, 12345.0f);
    std::fill(q.begin() + GUARD, q.begin() + GUARD + nq, NAN);
    std::vector<T> kc(nc + 2 * GUARD), vc(nc + 2 * GUARD);
    memset(kc.data(), 0x5a, kc.size() * sizeof(T));
    memset(vc.data(), 0x5a, vc.size() * sizeof(T));
    std::copy(k0.begin(), k0.end(), kc.begin() + GUARD);
    std::copy(v0.begin(), v0.end(), vc.begin() + GUARD);
    launch(gx, gy, 32 * warps, [&] {
        kernel(p, qkv.data(), qn.data(), kn.data(), ff ? f.data() : nullptr, pos.data(), q.data() + GUARD,
               kc.data() + GUARD, vc.data() + GUARD);
    });
    auto put = [&](const char* ext, const void* d, size_t n) {
        FILE* fo = fopen((b + ext).c_str(), "wb");
        fwrite(d, 1, n, fo);
        fclose(fo);
    };
    put(".q", q.data(), q.size() * 4);
    put(".k", kc.data(), kc.size() * sizeof(T));
    put(".v", vc.data(), vc.size() * sizeof(T));
}

int main(int argc, char** argv) {
    const std::string dir = argv[1];
    for (int c = 0;; c++) {
        const std::string b = dir + "/c" + std::to_string(c);
        const auto pv = slurp<u64>(b + ".p");
        if (pv.empty()) break;
        const int sel = (int)pv[16];  // at * 6 + neox * 3 + kv
#define K(N) [](auto... a) { N(a...); }
        switch (sel) {
            case 0: run<float>(b, pv, K(qk_norm_rope_kv_normal_f32)); break;
            case 1: run<u16>(b, pv, K(qk_norm_rope_kv_normal_f16)); break;
            case 2: run<u16>(b, pv, K(qk_norm_rope_kv_normal_bf16)); break;
            case 3: run<float>(b, pv, K(qk_norm_rope_kv_neox_f32)); break;
            case 4: run<u16>(b, pv, K(qk_norm_rope_kv_neox_f16)); break;
            case 5: run<u16>(b, pv, K(qk_norm_rope_kv_neox_bf16)); break;
            case 6: run<float>(b, pv, K(qk_norm_rope_kv_at_normal_f32)); break;
            case 7: run<u16>(b, pv, K(qk_norm_rope_kv_at_normal_f16)); break;
            case 8: run<u16>(b, pv, K(qk_norm_rope_kv_at_normal_bf16)); break;
            case 9: run<float>(b, pv, K(qk_norm_rope_kv_at_neox_f32)); break;
            case 10: run<u16>(b, pv, K(qk_norm_rope_kv_at_neox_f16)); break;
            case 11: run<u16>(b, pv, K(qk_norm_rope_kv_at_neox_bf16)); break;
        }
    }
    return 0;
}
"""


def device_src(mutate: bool) -> str:
    header = (KERNELS / "norm_rope.cuh").read_text()
    src = (KERNELS / "qk_norm_rope_kv.cu").read_text().replace('#include "norm_rope.cuh"', header)
    if mutate:
        bad = "src + q_dim + kv_dim + vh * dim"
        assert bad in src
        src = src.replace(bad, "src + q_dim + kv_dim + vh * dim + 1")
    return "\n".join(l for l in src.splitlines() if not l.startswith("#include"))


def launch_geometry(n_tokens, n_rows):
    """kiln-cuda's qk_norm_rope_kv_launch: (warps, rows per block, gx, gy)."""
    n_tokens, n_rows = max(n_tokens, 1), max(n_rows, 1)
    warps = min(n_rows, MAX_WARPS)
    rpb = n_rows if n_tokens >= BLOCK_PER_TOKEN_MIN_TOKENS else warps
    return warps, rpb, min(n_tokens, 65535), min(-(-n_rows // rpb), 65535)


def to_bf16(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), r)


def encode(kv, x):
    """f32 values as the cache stores them (f32, or 16-bit bits)."""
    x = np.asarray(x, dtype=np.float32)
    if kv == 0:
        return x.copy()
    if kv == 1:
        return x.astype(np.float16).view(np.uint16)
    return to_bf16(x)


def decode(kv, b):
    if kv == 0:
        return b.astype(np.float64)
    if kv == 1:
        return b.view(np.float16).astype(np.float64)
    return (b.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def main() -> int:
    mutate = "--mutate" in sys.argv
    rng = np.random.default_rng(SEED)
    # (n_tokens, heads, kv_heads, head_dim, n_rot, factors?, cache_rows, ring?, dst_row, geometry)
    # geometry: None = the launcher's; else (warps, rows per block, gx, gy).
    cases = [
        (1, 32, 4, 128, 128, False, 40, False, 37, None),  # Qwen3-30B-A3B decode
        (1, 4, 2, 64, 64, True, 16, False, 0, None),
        (1, 7, 3, 128, 128, True, 40, False, 39, None),
        (1, 9, 1, 64, 64, False, 9, False, 4, None),
        (1, 3, 3, 2, 2, False, 7, False, 5, None),
        (1, 5, 1, 66, 34, True, 7, True, 3000, None),
        (1, 1, 1, 16, 0, False, 3, False, 2, None),
        (3, 5, 3, 80, 48, True, 12, False, 9, None),
        (3, 4, 2, 64, 64, False, 4, True, 115, None),
        (5, 3, 1, 128, 128, True, 5, True, 13, None),
        (2, 2, 2, 512, 510, False, 6, False, 1, None),
        (130, 2, 1, 64, 64, False, 200, False, 20, None),  # prefill geometry
        # 11 rows in groups of 3 on 2 warps (a block of only v rows); small grids.
        (3, 5, 3, 64, 64, True, 8, False, 2, (2, 3, 2, 2)),
        (4, 6, 2, 128, 128, False, 9, True, 7, (8, 10, 1, 1)),
        (2, 1, 4, 32, 32, False, 5, False, 3, (1, 2, 1, 3)),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        runs = []
        k = 0
        for case in cases:
            nt, nh, nkv, d, n_rot, ff, rows, ring, dst, geo = case
            for neox in (False, True):
                for kv in (0, 1, 2):
                    for at in (False, True):
                        warps, rpb, gx, gy = geo or launch_geometry(nt, nh + 2 * nkv)
                        qd, kvd = nh * d, nkv * d
                        qkv = rng.uniform(-3, 3, size=(nt, qd + 2 * kvd)).astype(np.float32)
                        qn = rng.uniform(-2, 2, size=d).astype(np.float32)
                        kn = rng.uniform(-2, 2, size=d).astype(np.float32)
                        f = rng.uniform(0.25, 40.0, size=max(n_rot // 2, 1)).astype(np.float32)
                        if at:
                            # The launch's largest row; the device row is pos[0].
                            p_dst = dst + 10 * rows + 1 if ring else rows - nt
                            pos = (dst + np.arange(nt)).astype(np.int32)
                        else:
                            p_dst = dst
                            pos = rng.integers(-50, 1_000_000, size=nt).astype(np.int32)
                        c0 = rng.uniform(-1, 1, size=rows * kvd).astype(np.float32)
                        k0, v0 = encode(kv, c0), encode(kv, c0[::-1].copy())
                        fb = lambda v: int(np.array([v], dtype=np.float32).view(np.uint32)[0])
                        np.array(
                            [nt, nh, nkv, d, n_rot, rpb, p_dst, rows if ring else 0,
                             fb(1e6), fb(1.0), fb(1e-6), warps, gx, gy, int(ff), rows,
                             int(at) * 6 + int(neox) * 3 + kv],
                            dtype=np.uint64,
                        ).tofile(t / f"c{k}.p")
                        qkv.tofile(t / f"c{k}.qkv")
                        qn.tofile(t / f"c{k}.qn")
                        kn.tofile(t / f"c{k}.kn")
                        f.tofile(t / f"c{k}.f")
                        pos.tofile(t / f"c{k}.pos")
                        k0.tofile(t / f"c{k}.k0")
                        v0.tofile(t / f"c{k}.v0")
                        fr = f[: n_rot // 2] if ff else None
                        wq = nr.reference(qkv[:, :qd].reshape(-1), qn, fr, pos, nt, nh, d, n_rot, 1e6, 1.0, 1e-6, neox)
                        wk = nr.reference(qkv[:, qd:qd + kvd].reshape(-1), kn, fr, pos, nt, nkv, d, n_rot, 1e6, 1.0, 1e-6, neox)
                        wk = wk.reshape(nt, kvd)
                        v = qkv[:, qd + kvd:]
                        crow = [(dst + i) % rows if ring else dst + i for i in range(nt)]
                        runs.append((k, case, neox, kv, at, (warps, rpb, gx, gy), wq, wk, v, crow, k0, v0, kvd))
                        k += 1
        src = "\n".join([PRELUDE, f"#define GUARD {GUARD}", device_src(mutate), MAIN])
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
        bad, worst = 0, 0.0
        for k, case, neox, kv, at, geo, wq, wk, v, crow, k0, v0, kvd in runs:
            label = (f"{case[:5]} rows={case[6]} ring={case[7]} {'neox' if neox else 'normal'} "
                     f"{['f32', 'f16', 'bf16'][kv]} {'at' if at else 'host'} geometry={geo}")
            dt = np.float32 if kv == 0 else np.uint16
            q = np.fromfile(t / f"c{k}.q", dtype=np.float32)
            kc = np.fromfile(t / f"c{k}.k", dtype=dt)
            vc = np.fromfile(t / f"c{k}.v", dtype=dt)
            errs = []
            n = wq.size
            if not (q[:GUARD] == 12345.0).all() or not (q[GUARD + n:] == 12345.0).all():
                errs.append("q_out guard overwritten")
            qi = q[GUARD:GUARD + n].astype(np.float64)
            if np.isnan(qi).any():
                errs.append(f"{int(np.isnan(qi).sum())} q_out elements unwritten")
            else:
                e = np.abs(qi - wq).max()
                worst = max(worst, float(e))
                if e > TOL:
                    errs.append(f"q_out max error {e:.3g}")
            g0 = np.full(GUARD, 0x5A5A5A5A, np.uint32).view(np.float32) if kv == 0 else np.full(GUARD, 0x5A5A, np.uint16)
            for name, c in (("k_cache", kc), ("v_cache", vc)):
                if c[:GUARD].tobytes() != g0.tobytes() or c[-GUARD:].tobytes() != g0.tobytes():
                    errs.append(f"{name} guard overwritten")
            ki, vi = kc[GUARD:-GUARD].copy(), vc[GUARD:-GUARD].copy()
            want_v = v0.copy()
            for i, r in enumerate(crow):
                want_v[r * kvd:(r + 1) * kvd] = encode(kv, v[i])
            if vi.tobytes() != want_v.tobytes():
                errs.append("v_cache differs")
            keep = np.ones(ki.size, bool)
            for i, r in enumerate(crow):
                keep[r * kvd:(r + 1) * kvd] = False
                got = decode(kv, ki[r * kvd:(r + 1) * kvd])
                w = wk[i].astype(np.float64)
                if kv == 0:
                    e = np.abs(got - w).max()
                    worst = max(worst, float(e))
                    ok = e <= TOL
                else:
                    lo = decode(kv, encode(kv, (w - TOL).astype(np.float32)))
                    hi = decode(kv, encode(kv, (w + TOL).astype(np.float32)))
                    ok = bool(((lo <= got) & (got <= hi)).all())
                if not ok:
                    errs.append(f"k_cache row {r} (token {i}) off")
            if ki[keep].tobytes() != k0[keep].tobytes():
                errs.append("k_cache rows outside the append changed")
            if errs:
                bad += 1
                print(f"{label}: {'; '.join(errs)}")
        print(f"qk_norm_rope_kv: {len(runs)} runs, worst f32 error {worst:.2g} (tolerance {TOL})")
        if mutate:
            print("mutant " + ("caught" if bad else "NOT CAUGHT"))
            return 0 if bad else 1
        print(f"seed {SEED}: {'ok' if bad == 0 else f'{bad} MISMATCHES'}")
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
