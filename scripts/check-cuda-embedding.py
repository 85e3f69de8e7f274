#!/usr/bin/env python3
"""Check the CUDA embedding kernels without a GPU.

Builds crates/kiln-cuda/kernels/embedding.cu itself (every GGML entry point:
the one-value-a-thread rows of F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q8_1, Q8_K
and the decode_kq.cuh lane parts of Q5_0, Q5_1, IQ4_NL, Q2_K..Q6_K, IQ4_XS,
and decode_iq.cuh's of IQ2_XXS, IQ2_XS, IQ3_XXS, IQ3_S)
as host C++ with g++, behind cuda_host_shim.h, and runs each kernel's grid
serially (block by block, thread by thread: the kernels share nothing and
never synchronise), with

- the launch of crates/kiln-cuda/src/embedding.rs (grid.x over ids, grid.y
  x blockDim.x over a row's values or lane parts of 8), and a 2 x 1 grid of
  32 threads that leaves every row and every id to the grid-stride loops;
- __fmul_rn / __fadd_rn flushing subnormal inputs and results to zero, as
  they compile under --use_fast_math (mul.rn.ftz.f32), and kiln_mul_rn
  keeping them (mul.rn.f32);
- output rows between guard zones, every float of both filled with a
  sentinel first.

Tables are random bytes with sane scale fields (f16 in [-2, 2), Q8_K's f32
scale normal or subnormal) or random floats; ids cover the first and last
row, repeats, and out-of-range ids (n_vocab, 2^32 - 1). The reference is
kiln-core's embedding_ref (crates/kiln-core/examples/embedding_rows.rs) on
the in-range ids; out-of-range ids must give rows of NaN 0x7fc00000. Every
output float must equal the reference bit for bit, no sentinel may be left
in the output, and the guards must be untouched.

Usage: python3 scripts/check-cuda-embedding.py   (needs g++, numpy, cargo)
"""
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "crates/kiln-cuda/kernels"
SEED = 4321
# Format -> (entry point, values a thread, elements per block, block bytes,
# byte offsets of the f16 scale fields). Float formats: block of 1 element.
FORMATS = {
    "F32": ("embedding_f32_f32", 1, 1, 4, []),
    "F16": ("embedding_f16_f32", 1, 1, 2, []),
    "BF16": ("embedding_bf16_f32", 1, 1, 2, []),
    "Q4_0": ("embedding_q4_0_f32", 1, 32, 18, [0]),
    "Q4_1": ("embedding_q4_1_f32", 1, 32, 20, [0, 2]),
    "Q8_0": ("embedding_q8_0_f32", 1, 32, 34, [0]),
    "Q8_1": ("embedding_q8_1_f32", 1, 32, 36, [0, 2]),
    "Q8_K": ("embedding_q8_k_f32", 1, 256, 292, []),
    "Q5_0": ("embedding_q5_0_f32", 8, 32, 22, [0]),
    "Q5_1": ("embedding_q5_1_f32", 8, 32, 24, [0, 2]),
    "IQ4_NL": ("embedding_iq4_nl_f32", 8, 32, 18, [0]),
    "Q2_K": ("embedding_q2_k_f32", 8, 256, 84, [80, 82]),
    "Q3_K": ("embedding_q3_k_f32", 8, 256, 110, [108]),
    "Q4_K": ("embedding_q4_k_f32", 8, 256, 144, [0, 2]),
    "Q5_K": ("embedding_q5_k_f32", 8, 256, 176, [0, 2]),
    "Q6_K": ("embedding_q6_k_f32", 8, 256, 210, [208]),
    "IQ4_XS": ("embedding_iq4_xs_f32", 8, 256, 136, [0]),
    "IQ2_XXS": ("embedding_iq2_xxs_f32", 8, 256, 66, [0]),
    "IQ2_XS": ("embedding_iq2_xs_f32", 8, 256, 74, [0]),
    "IQ3_XXS": ("embedding_iq3_xxs_f32", 8, 256, 98, [0]),
    "IQ3_S": ("embedding_iq3_s_f32", 8, 256, 110, [0]),
}
# (n_vocab, dim in blocks, in-range ids); float formats: dim in elements.
SHAPES = [(3, 1, 5), (33, 3, 9), (7, 8, 4)]
FLOAT_DIMS = [1, 7, 33, 576]

PRELUDE = r"""
#define KILN_SHIM_SLURP
#include "cuda_host_shim.h"
// PDL (common.cuh): a no-op on the host, blocks run one grid at a time.
static inline void kiln_pdl_enter() {}
// --use_fast_math: __fmul_rn / __fadd_rn are mul.rn.ftz / add.rn.ftz (the
// flush of inputs and results to zero); kiln_mul_rn is mul.rn.f32.
static inline float ftz(float x) { return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x; }
static inline float __fmul_rn(float a, float b) { return ftz(ftz(a) * ftz(b)); }
static inline float __fadd_rn(float a, float b) { return ftz(ftz(a) + ftz(b)); }
static inline float kiln_mul_rn(float a, float b) { return a * b; }
"""

MAIN = r"""
typedef void (*Kern)(EmbeddingParams, const u8*, const u32*, float*);
static const u32 SENT = 0x7fbadbadu;  // a signalling NaN no kernel writes
static const u64 GUARD = 64;

static int run(const char* name, Kern k, u64 vpt, u64 n_vocab, u64 dim, u64 row_bytes, const std::string& dir) {
    const std::vector<u8> table = slurp<u8>(dir + "/table.bin");
    const std::vector<u32> ids = slurp<u32>(dir + "/ids.u32");
    const std::vector<u32> want = slurp<u32>(dir + "/want.f32");
    const u64 n_ids = ids.size();
    if (table.size() != n_vocab * row_bytes || want.size() != n_ids * dim) {
        printf("%s: bad fixture\n", name);
        return 1;
    }
    int bad = 0;
    for (int plan = 0; plan < 2 && n_ids > 0; plan++) {
        // plan 0: embedding.rs's launch; plan 1: 2 x 1 blocks of 32 threads.
        const u64 items = dim / vpt;
        const unsigned threads = plan ? 32 : (unsigned)std::clamp<u64>((items + 31) / 32, 1, 8) * 32;
        const unsigned gx = plan ? 2 : (unsigned)std::min<u64>(n_ids, 65535);
        const unsigned gy = plan ? 1 : (unsigned)std::min<u64>((items + threads - 1) / threads, 65535);
        std::vector<u32> out(n_ids * dim + 2 * GUARD, SENT);
        const EmbeddingParams p{n_ids, n_vocab, dim, row_bytes};
        blockDim.x = threads;
        gridDim.x = gx;
        gridDim.y = gy;
        for (unsigned by = 0; by < gy; by++)
            for (unsigned bx = 0; bx < gx; bx++)
                for (unsigned t = 0; t < threads; t++) {
                    blockIdx.x = bx;
                    blockIdx.y = by;
                    threadIdx.x = t;
                    k(p, table.data(), ids.data(), (float*)(out.data() + GUARD));
                }
        int mism = 0;
        for (u64 i = 0; i < GUARD; i++)
            if (out[i] != SENT || out[GUARD + n_ids * dim + i] != SENT) mism++;
        if (mism) printf("%s plan %d: %d guard floats written\n", name, plan, mism);
        for (u64 i = 0; i < n_ids * dim; i++) {
            const u32 got = out[GUARD + i];
            if (got != want[i]) {
                if (mism++ < 5) {
                    float g, w;
                    memcpy(&g, &got, 4);
                    memcpy(&w, &want[i], 4);
                    printf("%s plan %d: id %u (row %llu) element %llu: got %08x (%g) want %08x (%g)\n", name, plan,
                           ids[i / dim], (unsigned long long)(i / dim), (unsigned long long)(i % dim), got, g,
                           want[i], w);
                }
            }
        }
        printf("%s plan %d (grid %u x %u, %u threads): %llu ids x %llu values, %d mismatches\n", name, plan, gx,
               gy, threads, (unsigned long long)n_ids, (unsigned long long)dim, mism);
        bad += mism;
    }
    return bad != 0;
}
int main() {
    int bad = 0;
"""


def header(src: str, start: str, end: str) -> str:
    i = src.index(start)
    return src[i : src.index(end, i)]


def table_bytes(rng, fmt: str, n_vocab: int, dim: int, bs: int, ts: int, f16_offsets) -> np.ndarray:
    n = n_vocab * dim
    if fmt == "F32":
        return rng.uniform(-2, 2, n).astype(np.float32).view(np.uint8)
    if fmt == "F16":
        return rng.uniform(-2, 2, n).astype(np.float16).view(np.uint8)
    if fmt == "BF16":
        f = rng.uniform(-2, 2, n).astype(np.float32).view(np.uint32)
        return (f >> 16).astype(np.uint16).view(np.uint8)
    blocks = n // bs
    data = rng.integers(0, 256, size=(blocks, ts), dtype=np.uint8)
    for off in f16_offsets:
        scale = rng.uniform(-2, 2, size=blocks).astype(np.float16)
        data[:, off : off + 2] = scale.view(np.uint8).reshape(blocks, 2)
    if fmt == "Q8_K":
        # Every other block a subnormal f32 scale (the reference keeps the
        # subnormal values it gives), the others normal.
        d = rng.uniform(0.001, 0.02, size=blocks).astype(np.float32)
        sub = rng.integers(1, 1 << 23, size=blocks, dtype=np.uint32).view(np.float32)
        d = np.where(np.arange(blocks) % 2 == 1, sub, d).astype(np.float32)
        d = np.where(rng.integers(0, 2, size=blocks) == 1, -d, d).astype(np.float32)
        data[:, 0:4] = d.view(np.uint8).reshape(blocks, 4)
    return data.reshape(-1)


def main() -> int:
    common = (KERNELS / "common.cuh").read_text()
    matvec = (KERNELS / "matvec.cuh").read_text()
    kq = (KERNELS / "decode_kq.cuh").read_text().replace("#pragma once", "")
    for extra in ["iq23_grids.cuh", "decode_iq.cuh"]:
        text = (KERNELS / extra).read_text()
        kq += "\n".join(l for l in text.splitlines() if not l.startswith(("#pragma once", "#include")))
    emb = (KERNELS / "embedding.cu").read_text()
    emb = "\n".join(l for l in emb.splitlines() if not l.startswith("#include"))
    decls = [
        l
        for l in common.splitlines()
        if l.startswith(("typedef", "struct block", "static_assert", "#define QK"))
    ]
    helpers = header(matvec, "__device__ __forceinline__ float byte_f32", "// Each block format")
    blocks = header(matvec, "template <class Q>\nstruct FlatBlocks", "// acc[r][j] =")
    subprocess.run(
        ["cargo", "build", "-q", "-p", "kiln-core", "--example", "embedding_rows"], cwd=ROOT, check=True
    )
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    ref_bin = target / "debug/examples/embedding_rows"
    rng = np.random.default_rng(SEED)
    n_cases = 0
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        calls = []
        for fmt, (entry, vpt, bs, ts, f16_offsets) in FORMATS.items():
            shapes = (
                [(n_vocab, d, n) for (n_vocab, _, n), d in zip(SHAPES + [(5, 0, 3)], FLOAT_DIMS)]
                if bs == 1
                else [(n_vocab, nb * bs, n) for n_vocab, nb, n in SHAPES]
            )
            for n_vocab, dim, n_in in shapes:
                d = t / f"{fmt}_{n_vocab}_{dim}"
                d.mkdir()
                table = table_bytes(rng, fmt, n_vocab, dim, bs, ts, f16_offsets)
                row_bytes = dim // bs * ts
                assert table.size == n_vocab * row_bytes
                ids = rng.integers(0, n_vocab, size=n_in, dtype=np.uint32)
                ids[0] = 0
                ids[-1] = n_vocab - 1
                if n_in >= 3:
                    ids[1] = ids[-1]
                # Out-of-range ids at the start, inside and at the end.
                ids = np.concatenate([[n_vocab], ids[:2], [0xFFFFFFFF], ids[2:], [n_vocab]]).astype(np.uint32)
                good = ids[ids < n_vocab]
                table.tofile(d / "table.bin")
                good.tofile(d / "good.u32")
                ids.tofile(d / "ids.u32")
                with open(d / "good.f32", "wb") as f:
                    subprocess.run(
                        [str(ref_bin), fmt, str(n_vocab), str(dim), str(d / "table.bin"), str(d / "good.u32")],
                        stdout=f,
                        check=True,
                    )
                ref = np.fromfile(d / "good.f32", dtype=np.uint32).reshape(-1, dim)
                want = np.full((ids.size, dim), 0x7FC00000, dtype=np.uint32)
                want[ids < n_vocab] = ref
                want.tofile(d / "want.f32")
                calls.append(
                    f'    bad += run("{fmt} vocab={n_vocab} dim={dim}", {entry}, {vpt}, {n_vocab}, {dim}, '
                    f'{row_bytes}, "{d}");'
                )
                n_cases += 1
        src = (
            PRELUDE
            + "\n".join(decls)
            + "\n"
            + helpers
            + blocks
            + kq
            + emb
            + MAIN
            + "\n".join(calls)
            + "\n    return bad;\n}\n"
        )
        (t / "emu.cpp").write_text(src)
        subprocess.run(
            [
                "g++",
                "-std=c++17",
                "-O1",
                "-ffp-contract=off",
                "-fno-strict-aliasing",
                "-Wno-unknown-pragmas",
                "-I",
                str(ROOT / "scripts"),
                "-o",
                str(t / "emu"),
                str(t / "emu.cpp"),
            ],
            check=True,
        )
        rc = subprocess.run([str(t / "emu")]).returncode
    print(f"seed {SEED}: {n_cases} tables, {'ok' if rc == 0 else 'MISMATCH'}")
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
