#!/usr/bin/env python3
"""Check the staged CUDA mat-vec and the 4-threads-per-block dequantize
without a GPU, by running the kernel code as host C++.

The device code of crates/kiln-cuda/kernels (matvec.cuh, decode_kq.cuh,
decode_iq.cuh with its grids,
matvec_staged.cuh, and dequant_f16 from matmul.cu) is compiled with g++
behind small shims (CUDA vector types, __byte_perm, f16 conversions, the
thread indices as thread_locals). One std::thread per CUDA thread of a CTA
runs the accumulation loop; __syncwarp is a std::barrier per warp, cp.async
takes the synchronous path the header keeps for pre-sm_80 devices. So the
index math -- chunk geometry, partial last chunks, 16/8/4-byte copies,
warps splitting a row's chunks (kw), row pairs, odd n -- runs as written;
what it cannot check is cp.async's own semantics and timing on the GPU
(the GPU parity tests do: parity_cumatmul's staged_copy_widths, and the
fused and table tests with kiln_cuda::matmul::set_staged(true)).

Checked against the `gguf` package's dequantizer (gguf.quants.dequantize),
not against kiln code: each mat-vec output (lanes' and warps' partial sums
added here, as mv_reduce does) within 1e-5 of sum |w x| of the float64 dot
product; the direct loop (mv_blocks_acc) is run too as a control; dequant
output against gguf's values rounded to f16: equal, or one f16 ulp off
where gguf's f32 rounding of d * c + m before the f16 rounding differs from
the kernel's single rounding of fmaf(d, c, m) (counted and printed).

Usage: python3 scripts/check-cuda-staged.py   (needs g++ with C++20, numpy, gguf)
"""
import pathlib
import subprocess
import sys
import tempfile

import gguf
import gguf.quants
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "crates/kiln-cuda/kernels"
SEED = 4321
# kiln name -> (decoder struct, block walker, f16 scale-field offsets)
FORMATS = {
    "Q4_0": ("Q4_0T", "FlatBlocks", [0]),
    "Q4_1": ("Q4_1T", "FlatBlocks", [0, 2]),
    "Q8_0": ("Q8_0T", "FlatBlocks", [0]),
    "Q5_0": ("Q5_0T", "SubBlocks", [0]),
    "Q5_1": ("Q5_1T", "SubBlocks", [0, 2]),
    "IQ4_NL": ("IQ4_NLT", "SubBlocks", [0]),
    "Q2_K": ("Q2_KT", "SubBlocks", [80, 82]),
    "Q3_K": ("Q3_KT", "SubBlocks", [108]),
    "Q4_K": ("Q4_KT", "SubBlocks", [0, 2]),
    "Q5_K": ("Q5_KT", "SubBlocks", [0, 2]),
    "Q6_K": ("Q6_KT", "SubBlocks", [208]),
    "IQ4_XS": ("IQ4_XST", "SubBlocks", [0]),
    "IQ2_XXS": ("IQ2_XXST", "SubBlocks", [0]),
    "IQ2_XS": ("IQ2_XST", "SubBlocks", [0]),
    "IQ3_XXS": ("IQ3_XXST", "SubBlocks", [0]),
    "IQ3_S": ("IQ3_ST", "SubBlocks", [0]),
}
# (blocks per row, rows): one block, copy widths 4/8/16, several chunks and
# a partial last chunk; odd row counts (the last pair repeats a row).
SHAPES = [(1, 3), (2, 5), (3, 7), (4, 2), (8, 9), (41, 5), (97, 3), (130, 4)]

PRELUDE = r"""
#include <barrier>
#include <functional>
#include <memory>
#include <thread>
#include "cuda_host_shim.h"
"""

SHIMS = r"""
static thread_local std::barrier<>* warp_barrier;
static inline void __syncwarp() { warp_barrier->arrive_and_wait(); }
"""

MAIN = r"""
static std::vector<unsigned char> slurp(const char* path) {
    FILE* f = fopen(path, "rb");
    std::vector<unsigned char> v;
    if (!f) return v;
    unsigned char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) v.insert(v.end(), buf, buf + n);
    fclose(f);
    return v;
}

// Run the mat-vec accumulation of one format over rows [n, row_bytes] (x:
// [k]) as CTAs of MV_THREADS std::threads; out[j] = the sum of the partial
// sums the kw warps of row j's pair hold (mv_reduce's job on the GPU).
template <class Q, class B>
std::vector<double> run_mv(const std::vector<unsigned char>& w, const std::vector<float>& x, u64 n, u64 k,
                           u64 row_bytes, int kw, int cw) {
    const MvShape sh = {n, k, row_bytes, kw, false, cw};
    const u64 pairs_per_cta = MV_WARPS / kw;
    const u64 ctas = (n + MV_ROWS * pairs_per_cta - 1) / (MV_ROWS * pairs_per_cta);
    std::vector<double> out(n, 0.0);
    std::vector<std::vector<float>> acc_of(MV_THREADS, std::vector<float>(2));
    for (u64 c = 0; c < ctas; c++) {
        alignas(16) static unsigned char smem[StagePlan<Q, B>::BYTES];
        memset(smem, 0xCD, sizeof smem);
        std::vector<std::unique_ptr<std::barrier<>>> bars;
        for (int i = 0; i < MV_WARPS; i++) bars.emplace_back(new std::barrier<>(32));
        std::vector<std::thread> th;
        for (unsigned t = 0; t < MV_THREADS; t++) {
            th.emplace_back([&, t] {
                threadIdx.x = t;
                blockIdx.x = (unsigned)c;
                warp_barrier = bars[t / 32].get();
                float acc[1][MV_ROWS];
                auto pro = [&](const float* (&xr)[1]) { xr[0] = x.data(); };
                if (cw != 0) {
                    mv_staged_acc<Q, B, 1>(sh, w.data(), pro, acc, smem);
                } else {
                    mv_blocks_acc<Q, B, 1>(sh, w.data(), pro, acc);
                }
                acc_of[t][0] = acc[0][0];
                acc_of[t][1] = acc[0][1];
            });
        }
        for (auto& t : th) t.join();
        for (unsigned t = 0; t < MV_THREADS; t++) {
            const int warp = (int)t / 32, pair = warp / kw;
            const u64 j0 = (c * pairs_per_cta + pair) * MV_ROWS;
            if (j0 < n) out[j0] += acc_of[t][0];
            if (j0 + 1 < n) out[j0 + 1] += acc_of[t][1];
        }
    }
    return out;
}

template <class Q, class B>
int check(const char* name, const char* dir, int idx, u64 n, u64 nb) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s_%d.w", dir, name, idx);
    const auto w = slurp(path);
    snprintf(path, sizeof path, "%s/%s_%d.x", dir, name, idx);
    const auto xb = slurp(path);
    snprintf(path, sizeof path, "%s/%s_%d.ref", dir, name, idx);
    const auto rb = slurp(path);
    snprintf(path, sizeof path, "%s/%s_%d.f16", dir, name, idx);
    const auto hb = slurp(path);
    const u64 k = nb * B::SUB * QK, row_bytes = nb * Q::TS;
    std::vector<float> x(k);
    memcpy(x.data(), xb.data(), k * 4);
    std::vector<double> ref(2 * n);  // dot, sum |w x|
    memcpy(ref.data(), rb.data(), 2 * n * 8);
    if (w.size() != n * row_bytes || hb.size() != n * k * 2) {
        printf("%s: bad inputs\n", name);
        return 1;
    }
    int bad = 0, runs = 0;
    const int widths[4] = {16, 8, 4, 0};
    for (int cw : widths) {
        if (cw != 0 && row_bytes % cw != 0) continue;
        for (int kw : {1, 2, 4}) {
            runs++;
            const auto got = run_mv<Q, B>(w, x, n, k, row_bytes, kw, cw);
            for (u64 j = 0; j < n; j++) {
                const double err = std::fabs(got[j] - ref[2 * j]), tol = 1e-5 * ref[2 * j + 1] + 1e-30;
                if (!(err <= tol)) {
                    if (bad++ < 5)
                        printf("%s nb=%llu n=%llu cw=%d kw=%d row %llu: got %.9g want %.9g\n", name,
                               (unsigned long long)nb, (unsigned long long)n, cw, kw,
                               (unsigned long long)j, got[j], ref[2 * j]);
                }
            }
        }
    }
    // dequant_f16: every thread of a grid-stride launch smaller than the work.
    std::vector<u16> dq(n * k, 0xFFFF);
    const MatmulParams mp = {1, n, k, row_bytes, 1, 0};
    blockDim.x = 64;
    gridDim.x = 3;
    for (unsigned b = 0; b < gridDim.x; b++)
        for (unsigned t = 0; t < blockDim.x; t++) {
            blockIdx.x = b;
            threadIdx.x = t;
            dequant_f16<Q, B>(mp, w.data(), dq.data());
        }
    // The kernel rounds fmaf(d, c, m) to f16 once; gguf rounds d * c + m in
    // f32 first: a double rounding that may move the f16 by one ulp.
    int dbad = 0, ulp1 = 0;
    for (u64 i = 0; i < n * k; i++) {
        u16 want;
        memcpy(&want, hb.data() + 2 * i, 2);
        const int diff = (int)(dq[i] & 0x7FFF) - (int)(want & 0x7FFF);
        const bool same_sign = ((dq[i] ^ want) & 0x8000) == 0 || ((dq[i] | want) & 0x7FFF) == 0;
        // Equal values (+0 and -0 too: fmaf(d, 0, 0) with d < 0 is -0 or +0
        // by the sign rules, gguf's (d * 0) + 0 is +0).
        if (dq[i] == want || ((dq[i] | want) & 0x7FFF) == 0) continue;
        if (same_sign && (diff == 1 || diff == -1)) {
            ulp1++;
            continue;
        }
        if (dbad++ < 5)
            printf("%s dequant element %llu: got %04x want %04x\n", name, (unsigned long long)i, dq[i], want);
    }
    printf("%s nb=%llu n=%llu: %d mat-vec runs, %d mismatches; dequant %llu values, %d mismatches (%d one f16 ulp off)\n",
           name, (unsigned long long)nb, (unsigned long long)n, runs, bad, (unsigned long long)(n * k), dbad, ulp1);
    return bad != 0 || dbad != 0;
}
int main() {
    int bad = 0;
"""


def segment(src: str, start: str, end: str) -> str:
    i = src.index(start)
    return src[i : src.index(end, i)]


def main() -> int:
    common = (KERNELS / "common.cuh").read_text()
    matvec = (KERNELS / "matvec.cuh").read_text()
    kq = (KERNELS / "decode_kq.cuh").read_text().replace("#pragma once", "")
    for extra in ["iq23_grids.cuh", "decode_iq.cuh"]:
        text = (KERNELS / extra).read_text()
        kq += "\n".join(l for l in text.splitlines() if not l.startswith(("#pragma once", "#include")))
    staged = (KERNELS / "matvec_staged.cuh").read_text().replace("#pragma once", "")
    matmul = (KERNELS / "matmul.cu").read_text()
    decls = [
        l
        for l in common.splitlines()
        if l.startswith(("typedef", "struct block", "static_assert", "#define QK"))
    ]
    defines = [l for l in matvec.splitlines() if l.startswith("#define MV_")]
    body = segment(matvec, "__device__ __forceinline__ float byte_f32", "// Reduce acc over the warp")
    params = segment(matmul, "struct MatmulParams {", "struct ConvParams")
    dequant = segment(matmul, "template <class Q, class B = FlatBlocks<Q>>", 'extern "C"')
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        calls = []
        for name, (struct, walker, f16_offsets) in FORMATS.items():
            qt = getattr(gguf.GGMLQuantizationType, name)
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            for idx, (nb, n) in enumerate(SHAPES):
                data = rng.integers(0, 256, size=(n * nb, ts), dtype=np.uint8)
                for off in f16_offsets:
                    scale = rng.uniform(-1, 1, size=n * nb).astype(np.float16)
                    data[:, off : off + 2] = scale.view(np.uint8).reshape(-1, 2)
                wf = gguf.quants.dequantize(data.reshape(-1), qt).astype(np.float64).reshape(n, nb * bs)
                x = rng.uniform(-1, 1, size=nb * bs).astype(np.float32)
                ref = np.stack([wf @ x, np.abs(wf) @ np.abs(x)], axis=1).astype(np.float64)
                data.tofile(t / f"{name}_{idx}.w")
                x.tofile(t / f"{name}_{idx}.x")
                ref.tofile(t / f"{name}_{idx}.ref")
                wf.astype(np.float32).astype(np.float16).tofile(t / f"{name}_{idx}.f16")
                calls.append(
                    f'    bad += check<{struct}, {walker}<{struct}>>("{name}", "{t}", {idx}, {n}, {nb});'
                )
        src = "\n".join(
            [PRELUDE, "\n".join(decls), SHIMS, "\n".join(defines), body, kq, staged, params, dequant]
        ) + MAIN + "\n".join(calls) + "\n    return bad;\n}\n"
        (t / "emu.cpp").write_text(src)
        cc = subprocess.run(
            ["g++", "-std=c++20", "-O1", "-pthread", "-I", str(ROOT / "scripts"), "-o", str(t / "emu"), str(t / "emu.cpp")],
            capture_output=True,
            text=True,
        )
        if cc.returncode != 0:
            print(cc.stderr[-4000:])
            return 2
        rc = subprocess.run([str(t / "emu")]).returncode
    print(f"seed {SEED}: {'ok' if rc == 0 else 'MISMATCH'}")
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
