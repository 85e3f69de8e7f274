#!/usr/bin/env python3
"""Check the KV-cache element handling of the CUDA kernels without a GPU,
by running the device code as host C++ (g++, small shims).

From crates/kiln-cuda/kernels:
- attention.cu and attention_kv.cuh, compiled as each cache variant
  (KILN_KV 0 f32, 1 f16, 2 bf16): the warp decode kernel's per-lane row
  loads (dec_load_kv with its vector pieces, DecPiece, kv_piece, kv_cvt2) for every instance's
  values per lane (1..8, 16), full rows (vector pieces) and partial rows
  (d < 32 * DPL: element loads, zeros past d), and the tiled kernel's tile
  loads (tile_load, element pairs and single elements) for every tiled
  head_dim, checked element by element against the cache widened by numpy,
  also from ring caches (position j in row j % kv_rows: tiles many laps
  in, tiles that straddle the ring's end, rings shorter than a tile, a
  ring of one row); the position -> row maps kv_row and kv_row_step
  against j % kv_rows for every small ring, position and step;
- common.cuh's f32 -> f16 / bf16 rounding (kiln_f32_to_f16 with the PTX
  cvt.rn replaced by C++'s _Float16 conversion, which rounds to nearest
  even too; kiln_f32_to_bf16 as written) and copy_rows.cu's copy_range_16
  (the 4-wide path and the tail, several grid sizes), checked bit for bit
  against numpy's float16 and a numpy bf16 rounding written from the
  ggml rule; copy_rows.cu's entry points for every destination type
  (copy_rows_<t> with the launcher's split of a ring append, copy_rows_at_<t>
  with the device row clamped and wrapped into a ring by the kernel), rows
  landing where (row + i) % ring says, bit for bit, and nothing else of the
  destination (nor a guard past it) written.

What it cannot check: the kernels' timing, and the f16 cvt instruction
itself (the GPU parity tests do: parity_cuattn, parity_graph,
parity_cuops / the testkit copy_rows table).

Usage: python3 scripts/check-cuda-kv.py   (needs g++ with C++20 and numpy)
"""
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "crates/kiln-cuda/kernels"

PRELUDE = r"""
#include "cuda_host_shim.h"
#define extern_c_global
// PDL (common.cuh, cut off by common_host): no-ops on the host, one grid at a time.
static inline void kiln_pdl_enter() {}
static inline void kiln_grid_wait() {}
static inline void kiln_grid_launch_dependents() {}
"""

# common.cuh less its inline-PTX f16 / bf16 conversions (cuda_host_shim.h has
# host ones).
def common_host():
    src = (KERNELS / "common.cuh").read_text()
    src = src.replace("#pragma once", "")
    start = src.index("// f16 / bf16 bits -> f32 without cuda_fp16.h.")
    end = src.index("// Programmatic dependent launch")
    bf = src[src.index("// f32 -> bf16 bits as kiln-core's"):end]
    return src[:start] + bf


def slice_between(src, a, b):
    return src[src.index(a):src.index(b)]


def attention_parts():
    """The KV type block, kv_cvt/kv_cvt2, DecPiece/kv_piece/dec_load_kv,
    AttnParams with kv_row/kv_row_step, and tile_load."""
    kv = (KERNELS / "attention_kv.cuh").read_text()
    head = slice_between(kv, "#ifndef KILN_KV", "// Elements per vector piece")
    src = (KERNELS / "attention.cu").read_text()
    dec = kv[kv.index("// Elements per vector piece"):] + slice_between(
        src, "// Lane `lane`'s values c = lane * DPL + i", "// Dynamic shared memory: DEC_WARPS"
    )
    tile_defs = "#define TILE_Q 32\n#define TILE_K 32\n#define TILE_THREADS 128\n"
    params = slice_between(src, "struct AttnParams {", "// A score from the dot product")
    rows = slice_between(src, "// The cache row of position j:", "__device__ __forceinline__ float warp_max")
    tile = slice_between(src, "// The keys of positions k0 .. k0 + nk of a K or V cache", "// 128 threads: thread (r = tid / 4")
    return head, dec, tile_defs, params + rows + tile


MAIN = r"""
#include <random>
static int failures = 0;
static void fail(const char* what, int a, int b, int c, float got, float want) {
    if (failures++ < 10) printf("FAIL %s (%d, %d, %d): got %g want %g\n", what, a, b, c, got, want);
}
// The widened cache element (what numpy computes, independently, below).
static float widen(const kv_t* p, size_t i) { return kv_cvt(p[i]); }

template <int DPL>
static void check_dec(const kv_t* cache, size_t n_rows, u32 d) {
    // Rows laid out [n_rows][d] (one kv head); full rows load whole pieces.
    const bool vec = d == 32u * DPL;
    for (size_t j = 0; j < n_rows; ++j)
        for (u32 lane = 0; lane < 32; ++lane) {
            float r[DPL];
            dec_load_kv<DPL>(cache + j * d, lane, d, vec, r);
            for (int i = 0; i < DPL; ++i) {
                const u32 c = lane * DPL + i;
                const float want = c < d ? widen(cache, j * d + c) : 0.f;
                if (memcmp(&r[i], &want, 4) != 0) fail("dec_load_kv", DPL, (int)d, (int)c, r[i], want);
            }
        }
}

// The tile of positions k0 .. k0 + nk from a cache of kv_rows rows
// (position j in row j % kv_rows: a ring when positions pass kv_rows).
template <int D>
static void check_tile(const kv_t* cache, u32 n_kv_heads, u32 kvh, u32 k0, u32 nk, bool pairs,
                       u32 kv_rows = 0xffffffffu) {
    const u64 row = (u64)n_kv_heads * D, kv_off = (u64)kvh * D;
    std::vector<float> tile(TILE_K * (D + 1), -1.f);
    AttnParams p = {};
    p.kv_rows = kv_rows;
    for (u32 t = 0; t < TILE_THREADS; ++t) {
        threadIdx.x = t;
        tile_load<D>(p, tile.data(), cache, k0, nk, row, kv_off, pairs);
    }
    for (u32 j = 0; j < TILE_K; ++j)
        for (u32 c = 0; c < (u32)D; ++c) {
            const u64 r = ((u64)k0 + j) % kv_rows;
            const float want = j < nk ? widen(cache, r * row + kv_off + c) : 0.f;
            const float got = tile[j * (D + 1) + c];
            if (memcmp(&got, &want, 4) != 0) fail("tile_load", D, (int)j, (int)c, got, want);
        }
}

int main(int argc, char** argv) {
    // argv[1]: raw cache file (elements of kv_t), argv[2]: widened f32 file.
    FILE* f = fopen(argv[1], "rb");
    std::vector<kv_t> cache(1 << 20);
    const size_t n = fread(cache.data(), sizeof(kv_t), cache.size(), f);
    fclose(f);
    FILE* g = fopen(argv[2], "rb");
    std::vector<float> wide(n);
    if (fread(wide.data(), 4, n, g) != n) return 2;
    fclose(g);
    for (size_t i = 0; i < n; ++i) {
        const float w = kv_cvt(cache[i]);
        if (memcmp(&wide[i], &w, 4) != 0) fail("kv_cvt vs numpy", (int)i, 0, 0, w, wide[i]);
    }
    for (u32 d : {1u, 7u, 31u, 32u}) check_dec<1>(cache.data(), 5, d);
    for (u32 d : {33u, 64u}) check_dec<2>(cache.data(), 5, d);
    for (u32 d : {65u, 80u, 96u}) check_dec<3>(cache.data(), 5, d);
    for (u32 d : {100u, 128u}) check_dec<4>(cache.data(), 5, d);
    check_dec<5>(cache.data(), 5, 160);
    for (u32 d : {192u, 170u}) check_dec<6>(cache.data(), 5, d);
    check_dec<7>(cache.data(), 5, 224);
    for (u32 d : {256u, 200u}) check_dec<8>(cache.data(), 5, d);
    for (u32 d : {512u, 320u, 300u}) check_dec<16>(cache.data(), 5, d);
    for (bool pairs : {false, true}) {
        check_tile<64>(cache.data(), 3, 2, 5, 32, pairs);
        check_tile<80>(cache.data(), 2, 1, 40, 17, pairs);
        check_tile<96>(cache.data(), 4, 3, 0, 1, pairs);
        check_tile<128>(cache.data(), 8, 5, 100, 32, pairs);
        // Rings: laps in without a wrap, straddling the end (positions
        // 150..169 of 40 rows: rows 30..39 then 0..9), a wrap at the tile's
        // last key, rings shorter than a tile, one row, a ring not yet full.
        check_tile<64>(cache.data(), 2, 1, 3000, 32, pairs, 512);
        check_tile<64>(cache.data(), 2, 1, 3070, 32, pairs, 512);
        check_tile<80>(cache.data(), 3, 2, 150, 20, pairs, 40);
        check_tile<96>(cache.data(), 1, 0, 31 + 32 * 9, 32, pairs, 32);
        check_tile<128>(cache.data(), 4, 3, 1002, 5, pairs, 5);
        check_tile<64>(cache.data(), 3, 0, 77, 1, pairs, 1);
        check_tile<128>(cache.data(), 2, 1, 7, 17, pairs, 139);
    }
    // kv_row / kv_row_step against j % kv_rows.
    for (u32 rows = 1; rows <= 70; ++rows) {
        AttnParams p = {};
        p.kv_rows = rows;
        for (u32 j = 0; j < 300; ++j) {
            if (kv_row(p, j) != j % rows) fail("kv_row", (int)rows, (int)j, 0, kv_row(p, j), j % rows);
            for (u32 dj = 0; dj < rows + 5; ++dj) {
                const u32 got = kv_row_step(p, kv_row(p, j), j, dj);
                if (got != (j + dj) % rows) fail("kv_row_step", (int)rows, (int)j, (int)dj, got, (j + dj) % rows);
            }
        }
    }
    printf("%s: %d failures\n", KV_NAME_STR, failures);
    return failures != 0;
}
"""

COPY_MAIN = r"""
// Run an entry point as a grid of `grid` blocks of 32 threads.
template <class F>
static void grid_run(unsigned grid, F f) {
    gridDim.x = grid;
    blockDim.x = 32;
    for (unsigned b = 0; b < grid; ++b)
        for (unsigned t = 0; t < 32; ++t) {
            blockIdx.x = b;
            threadIdx.x = t;
            f();
        }
}

// The ring appends of copy_rows_<t> (the launcher's split, as
// src/copy_rows.rs computes it) and copy_rows_at_<t> (the kernel clamps the
// device row to max_row and wraps it into the ring), into a destination of
// ring + 1 rows (the last, and 8 guard elements, must stay poisoned):
// row i of the batch at row (pos + i) % ring, converted by S::cvt.
template <class S>
static int check_ring(const char* what, const float* src, u64 row_len, u64 n_rows, u64 src_row,
                      u64 ring, u64 dst_row, bool at, i32 dev_row, u64 max_row, unsigned grid) {
    typedef typename S::T T;
    const u64 n = n_rows * row_len, len = (ring + 1) * row_len + 8;
    std::vector<T> dst(len), want(len);
    for (u64 i = 0; i < len; ++i) memset(&dst[i], 0xA5, sizeof(T));
    want = dst;
    const u64 pos = at ? (dev_row < 0 ? 0 : std::min((u64)dev_row, max_row)) : dst_row;
    for (u64 i = 0; i < n_rows; ++i)
        for (u64 c = 0; c < row_len; ++c) {
            const float x = src[(src_row + i) * row_len + c];
            T y;
            if constexpr (sizeof(T) == 4) y = x; else y = S::cvt(x);
            want[((pos + i) % ring) * row_len + c] = y;
        }
    const i32 dev[1] = {dev_row};
    grid_run(grid, [&] {
        if (at) {
            CopyRowsAtParams p = {n, src_row * row_len, row_len, max_row, ring};
            if constexpr (sizeof(T) == 4) copy_rows_at_f32(p, dev, src, (float*)dst.data());
            else if constexpr (std::is_same_v<S, StoreF16>) copy_rows_at_f16(p, dev, src, dst.data());
            else copy_rows_at_bf16(p, dev, src, dst.data());
        } else {
            const u64 first = dst_row % ring;
            CopyRowsParams p = {n, src_row * row_len, first * row_len, std::min(n, (ring - first) * row_len)};
            if constexpr (sizeof(T) == 4) copy_rows_f32(p, src, (float*)dst.data());
            else if constexpr (std::is_same_v<S, StoreF16>) copy_rows_f16(p, src, dst.data());
            else copy_rows_bf16(p, src, dst.data());
        }
    });
    int bad = 0;
    for (u64 i = 0; i < len; ++i)
        if (memcmp(&dst[i], &want[i], sizeof(T)) != 0 && bad++ < 5)
            printf("FAIL ring %s row_len %llu n_rows %llu ring %llu dst_row %llu at %d dev %d grid %u: [%llu]\n",
                   what, row_len, n_rows, ring, dst_row, at, dev_row, grid, i);
    return bad;
}

template <class S>
static int check_rings(const char* what, const float* src) {
    int bad = 0;
    // (row_len, n_rows, src_row, ring, position): one row many laps in, a
    // batch that wraps, one that fills the ring exactly, odd row lengths
    // (element path), a ring of one row, a batch ending at the ring's end.
    const u64 cases[][5] = {{192, 1, 0, 7, 3000}, {64, 9, 3, 20, 115}, {33, 5, 0, 5, 13},
                            {7, 3, 1, 4, 2},      {8, 1, 2, 1, 99},    {16, 4, 0, 10, 26}};
    for (const auto& c : cases)
        for (unsigned grid : {1u, 3u, 64u}) {
            bad += check_ring<S>(what, src, c[0], c[1], c[2], c[3], c[4], false, 0, 0, grid);
            // Device rows: the position, clamped from above and below.
            for (i32 dev : {(i32)c[4], (i32)c[4] + 1000, -5, 0})
                bad += check_ring<S>(what, src, c[0], c[1], c[2], c[3], c[4], true, dev, c[4] + 3, grid);
        }
    return bad;
}

int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb");
    std::vector<float> src(1 << 16);
    const size_t n = fread(src.data(), 4, src.size(), f);
    fclose(f);
    int failures = 0;
    for (int kind = 0; kind < 2; ++kind) {
        FILE* g = fopen(argv[2 + kind], "rb");
        std::vector<u16> want(n);
        if (fread(want.data(), 2, n, g) != n) return 2;
        fclose(g);
        // Offsets: aligned (4-wide path) and not (element path); several grids.
        for (size_t off : {0, 1, 3, 4}) {
            for (unsigned grid : {1u, 3u, 64u}) {
                std::vector<u16> dst(n + 8, 0xDEAD);
                const size_t len = n - 8;
                gridDim.x = grid;
                blockDim.x = 32;
                for (unsigned b = 0; b < grid; ++b)
                    for (unsigned t = 0; t < 32; ++t) {
                        blockIdx.x = b;
                        threadIdx.x = t;
                        if (kind == 0) copy_range_16<StoreF16>(src.data() + off, dst.data() + off, len);
                        else copy_range_16<StoreBF16>(src.data() + off, dst.data() + off, len);
                    }
                for (size_t i = 0; i < n + 8; ++i) {
                    const bool inside = i >= off && i < off + len;
                    const u16 w = inside ? want[i] : 0xDEAD;
                    if (dst[i] != w && failures++ < 10)
                        printf("FAIL %s off %zu grid %u [%zu]: %04x want %04x (src %g)\n",
                               kind ? "bf16" : "f16", off, grid, i, dst[i], w, inside ? src[i] : 0.f);
                }
            }
        }
    }
    failures += check_rings<StoreF32>("f32", src.data());
    failures += check_rings<StoreF16>("f16", src.data());
    failures += check_rings<StoreBF16>("bf16", src.data());
    printf("copy_rows f16/bf16, ring appends: %d failures\n", failures);
    return failures != 0;
}
"""


def bf16_round(x):
    """numpy f32 -> bf16 bits by ggml's rule (NaN quiet, else round to nearest even)."""
    u = x.view(np.uint32).astype(np.uint64)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    return np.where(nan, (u >> 16) | 0x40, r).astype(np.uint16)


def build_run(tmp, name, source, args):
    cpp = tmp / f"{name}.cpp"
    exe = tmp / name
    cpp.write_text(source)
    subprocess.run(
        ["g++", "-std=c++20", "-O1", "-fsanitize=address,undefined", "-w", "-I", str(ROOT / "scripts"),
         "-o", str(exe), str(cpp)],
        check=True,
    )
    return subprocess.run([str(exe), *args]).returncode


def main():
    rng = np.random.default_rng(2024)
    head, dec, tile_defs, tile = attention_parts()
    common = common_host()
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        tmp = pathlib.Path(d)
        n = 1 << 16
        x = rng.uniform(-4, 4, n).astype(np.float32)
        x[::97] = rng.uniform(-1e-6, 1e-6, len(x[::97])).astype(np.float32)  # f16 subnormals
        for kv, name in [(0, "f32"), (1, "f16"), (2, "bf16")]:
            if kv == 0:
                raw, wide = x, x
            elif kv == 1:
                h = x.astype(np.float16)
                raw, wide = h.view(np.uint16), h.astype(np.float32)
            else:
                b = bf16_round(x)
                raw, wide = b, (b.astype(np.uint32) << 16).view(np.float32)
            (tmp / f"raw_{name}").write_bytes(raw.tobytes())
            (tmp / f"wide_{name}").write_bytes(wide.astype(np.float32).tobytes())
            src = (
                PRELUDE
                + common
                + f"#define KILN_KV {kv}\n"
                + head
                + f'#define KV_NAME_STR "attention.cu [KILN_KV {kv}]"\n'
                + dec
                + tile_defs
                + tile
                + MAIN
            )
            bad |= build_run(tmp, f"attn_{name}", src, [str(tmp / f"raw_{name}"), str(tmp / f"wide_{name}")])
        # copy_rows: values that test the rounding (ties, overflow, subnormals).
        m = 4096
        y = rng.uniform(-4, 4, m).astype(np.float32)
        ties16 = (0x3F800000 + (rng.integers(0, 1024, 256) << 13) + (1 << 12)).astype(np.uint32).view(np.float32)
        tiesbf = (0x3F800000 + (rng.integers(0, 128, 256) << 16) + (1 << 15)).astype(np.uint32).view(np.float32)
        y[:256], y[256:512] = ties16, -tiesbf
        y[512:600] = rng.uniform(65504, 70000, 88).astype(np.float32)
        y[600:700] = rng.uniform(-1e-6, 1e-6, 100).astype(np.float32)
        y[700] = -0.0
        (tmp / "src").write_bytes(y.tobytes())
        (tmp / "want16").write_bytes(y.astype(np.float16).view(np.uint16).tobytes())
        (tmp / "wantbf").write_bytes(bf16_round(y).tobytes())
        cr = (KERNELS / "copy_rows.cu").read_text()
        cr = cr.replace('#include "common.cuh"', "")
        src = PRELUDE + "#include <algorithm>\n#include <type_traits>\n" + common + cr + COPY_MAIN
        bad |= build_run(tmp, "copy_rows", src, [str(tmp / "src"), str(tmp / "want16"), str(tmp / "wantbf")])
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
