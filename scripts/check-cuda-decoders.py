#!/usr/bin/env python3
"""Check the CUDA mat-vec block decoders without a GPU.

Builds the decoders of crates/kiln-cuda/kernels/decode_kq.cuh (Q5_0, Q5_1,
IQ4_NL, Q2_K..Q6_K, IQ4_XS) and decode_iq.cuh (IQ2_XXS, IQ2_XS, IQ3_XXS,
IQ3_S, with the generated grids of iq23_grids.cuh) as host C++ with g++, with cuda_host_shim.h's
shims for the CUDA intrinsics they use (__byte_perm, __uint_as_float, f16 ->
f32), and compares, for random blocks (random bytes, sane f16 scale fields),
every weight they decode -- d * c + mo at the element offsets xoff0 / xoff1 of
each lane part, located through matvec.cuh's SubBlocks -- with the dequantizer
of the independent `gguf` Python package (gguf.quants.dequantize). Exact match
is required (both round d * sc once in f32, then multiply or add once).

Usage: python3 scripts/check-cuda-decoders.py   (needs g++, numpy, gguf)
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
SEED = 1234
BLOCKS = 64
# Format -> (decoder struct, byte offsets of its f16 scale fields).
FORMATS = {
    "Q5_0": ("Q5_0T", [0]),
    "Q5_1": ("Q5_1T", [0, 2]),
    "IQ4_NL": ("IQ4_NLT", [0]),
    "Q2_K": ("Q2_KT", [80, 82]),
    "Q3_K": ("Q3_KT", [108]),
    "Q4_K": ("Q4_KT", [0, 2]),
    "Q5_K": ("Q5_KT", [0, 2]),
    "Q6_K": ("Q6_KT", [208]),
    "IQ4_XS": ("IQ4_XST", [0]),
    "IQ2_XXS": ("IQ2_XXST", [0]),
    "IQ2_XS": ("IQ2_XST", [0]),
    "IQ3_XXS": ("IQ3_XXST", [0]),
    "IQ3_S": ("IQ3_ST", [0]),
}

PRELUDE = r"""
#include <cstddef>
#include "cuda_host_shim.h"
"""

MAIN = r"""
template <class Q> int check(const char* name, const char* wpath, const char* rpath, size_t nvals) {
    std::vector<u8> w(1 << 20);
    std::vector<float> ref(nvals);
    FILE* f = fopen(wpath, "rb"); size_t nw = fread(w.data(), 1, w.size(), f); fclose(f);
    f = fopen(rpath, "rb"); size_t nr = fread(ref.data(), 4, nvals, f); fclose(f);
    if (nr != nvals || nw == 0) { printf("%s: short input\n", name); return 1; }
    int bad = 0;
    for (u64 b = 0; b < nvals / 32; b++)
        for (int s = 0; s < 4; s++) {
            float d, mo, c[8];
            Q::decode(SubBlocks<Q>::at(w.data(), b, s), d, mo, c);
            for (int e = 0; e < 8; e++) {
                const int at = e < 4 ? Q::xoff0(s) + e : Q::xoff1(s) + e - 4;
                const float got = Q::MIN ? d * c[e] + mo : d * c[e], want = ref[b * 32 + at];
                if (got != want && !(std::isnan(got) && std::isnan(want))) {
                    if (bad++ < 5) printf("%s: block %llu lane part %d element %d: got %g want %g\n",
                                          name, (unsigned long long)b, s, at, got, want);
                }
            }
        }
    printf("%s: %zu weights, %d mismatches\n", name, nvals, bad);
    return bad != 0;
}
int main() {
    int bad = 0;
"""


def header(src: str, start: str, end: str) -> str:
    i = src.index(start)
    return src[i : src.index(end, i)]


def main() -> int:
    common = (KERNELS / "common.cuh").read_text()
    matvec = (KERNELS / "matvec.cuh").read_text()
    kq = (KERNELS / "decode_kq.cuh").read_text().replace("#pragma once", "")
    for extra in ["iq23_grids.cuh", "decode_iq.cuh"]:
        text = (KERNELS / extra).read_text()
        kq += "\n".join(l for l in text.splitlines() if not l.startswith(("#pragma once", "#include")))
    decls = [
        l
        for l in common.splitlines()
        if l.startswith(("typedef", "struct block", "static_assert", "#define QK"))
    ]
    helpers = header(matvec, "__device__ __forceinline__ float byte_f32", "// Each block format")
    blocks = header(matvec, "template <class Q>\nstruct FlatBlocks", "// acc[r][j] =")
    rng = np.random.default_rng(SEED)
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        calls = []
        for name, (struct, f16_offsets) in FORMATS.items():
            qt = getattr(gguf.GGMLQuantizationType, name)
            bs, ts = gguf.GGML_QUANT_SIZES[qt]
            data = rng.integers(0, 256, size=(BLOCKS, ts), dtype=np.uint8)
            for off in f16_offsets:
                scale = rng.uniform(-2, 2, size=BLOCKS).astype(np.float16)
                data[:, off : off + 2] = scale.view(np.uint8).reshape(BLOCKS, 2)
            ref = gguf.quants.dequantize(data.reshape(-1), qt).astype(np.float32)
            data.tofile(t / f"{name}.bin")
            ref.tofile(t / f"{name}.ref")
            calls.append(
                f'    bad += check<{struct}>("{name}", "{t}/{name}.bin", "{t}/{name}.ref", {BLOCKS * bs});'
            )
        src = (
            PRELUDE
            + "\n".join(decls)
            + "\n"
            + MAIN.split("template <class Q>")[0]
            + helpers
            + blocks
            + kq
            + "template <class Q>"
            + MAIN.split("template <class Q>", 1)[1]
            + "\n".join(calls)
            + "\n    return bad;\n}\n"
        )
        (t / "emu.cpp").write_text(src)
        subprocess.run(["g++", "-std=c++17", "-O1", "-I", str(ROOT / "scripts"), "-o", str(t / "emu"), str(t / "emu.cpp")], check=True)
        rc = subprocess.run([str(t / "emu")]).returncode
    print(f"seed {SEED}: {'ok' if rc == 0 else 'MISMATCH'}")
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
