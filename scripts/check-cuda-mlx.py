#!/usr/bin/env python3
"""Check the CUDA kernels for MLX affine weights without a GPU, by running
their device code as host C++ (the technique of check-cuda-staged.py).

crates/kiln-cuda/kernels/mlx.cuh (the MlxT block decoder and the MlxRow
element reader), with matvec.cuh's accumulation loop, matvec_staged.cuh's
staged loop and matmul.cu's dequant_f16, is compiled with g++ behind small
shims (CUDA vector types, __byte_perm, f16/bf16 conversions, __fmul_rn /
__fadd_rn, the thread indices as thread_locals; one std::thread per CUDA
thread, __syncwarp a std::barrier per warp, cp.async its synchronous
pre-sm_80 path), once per format: every bits (2, 3, 4, 5, 6, 8) x group
size (32, 64, 128) x scale dtype (f16, bf16, f32), as the registry compiles
one variant per format.

Inputs and reference:
- mlx's own packed words, scales and biases for every format, from the
  committed fixture tests/fixtures/mlx/mlx_affine.bin (made by mlx.core.
  quantize, scripts/fixtures/make_mlx_fixtures.py), plus random words and
  scales for longer rows (1 to 130 groups, odd row counts);
- repacked here into kiln's blocks (scale | bias | the group's words, as
  kiln-core quant/mlx_block.rs), and the reference values computed here
  from the spec of kiln-core's dequantize (quant/mlx.rs): code i = bits
  i*bits.. of the little-endian word stream, value = f32(scale * q) + bias,
  two f32 roundings. That reference is first checked against mlx's own
  dequantize on the fixture's f32-scale cases (bit-exact; mlx rounds in the
  scale dtype otherwise).

Checks per format:
- decoder: for every virtual 32-value block and lane part, d and mo are
  exactly the group's scale and bias and the 8 codes exactly the spec's;
- embedding reader (MlxRow::get): every value bit-exact;
- dequant_f16 (grid-stride, 4 threads per virtual block): the reference
  rounded to f16, exactly for f16 / bf16 scales (d * c is exact in f32, so
  the kernel's fmaf(d, c, mo) is the reference's f32 value); for f32 scales
  within the reference's rounding of d * c (which fmaf skips) plus one f16
  step (values near 0 from cancellation differ in relative terms);
- mat-vec (mv_blocks_acc direct, and mv_staged_acc at every copy width the
  row length allows, kw = 1, 2, 4): each row within 1e-5 of sum |w x| of
  the float64 dot product of the reference values.

The program is built with AddressSanitizer and each data set's blocks fill
their buffer exactly, so a read past a row's last block aborts the run
(checked: reading the code word after a lane's last one is caught).

What this cannot check: NVRTC's code generation, fast-math and timing
(the GPU parity tests do: crates/kiln-cuda/tests/parity_cumatmul.rs,
parity_cumoe.rs, parity_cuops.rs and `kiln selftest --device cuda`).

Usage: python3 scripts/check-cuda-mlx.py   (needs g++ with C++20 and ASan,
numpy; about 1.5 minutes on 2 cores)
"""
import json
import pathlib
import struct
import subprocess
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
KERNELS = ROOT / "crates/kiln-cuda/kernels"
FIXTURE = ROOT / "tests/fixtures/mlx/mlx_affine.bin"
SEED = 5150
BITS = [2, 3, 4, 5, 6, 8]
GROUPS = [32, 64, 128]
SCALES = {"f16": 0, "bf16": 1, "f32": 2}
# Random rows: (groups per row, rows); mat-vec on the ones marked True.
RANDOM_SHAPES = [(1, 3, True), (2, 5, True), (3, 2, True), (8, 3, True), (41, 2, True), (130, 3, False)]

PRELUDE = r"""
#include <barrier>
#include <memory>
#include <thread>
#include "cuda_host_shim.h"
// One IEEE rounding each (g++ runs with -ffp-contract=off).
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
"""

SHIMS = r"""
static thread_local std::barrier<>* warp_barrier;
static inline void __syncwarp() { warp_barrier->arrive_and_wait(); }
"""

MAIN = r"""
template <class T>
static std::vector<T> slurp(const std::string& path) {
    std::vector<T> v;
    FILE* f = fopen(path.c_str(), "rb");
    if (!f) return v;
    fseek(f, 0, SEEK_END);
    const long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    v.resize((size_t)n / sizeof(T));
    if (fread(v.data(), sizeof(T), v.size(), f) != v.size()) v.clear();
    fclose(f);
    return v;
}

// The mat-vec accumulation over rows [n, row_bytes] (x: [k]) as CTAs of
// MV_THREADS std::threads; out[j] = the sum of the partial sums the kw warps
// of row j's pair hold (mv_reduce's job on the GPU).
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

static int report(int& count, const char* fmt_name, const char* what) {
    if (count++ < 5) printf("%s: %s\n", fmt_name, what);
    return 1;
}

// One data set of format <BITS, GROUP, SCALE>: n rows of nblk blocks.
template <int BITS, int GROUP, int SCALE>
int check(const char* name, const std::string& base, u64 n, u64 nblk, bool matvec) {
    using Q = MlxT<BITS, GROUP, SCALE>;
    using B = SubBlocks<Q>;
    using R = MlxRow<BITS, GROUP, SCALE>;
    const auto w = slurp<unsigned char>(base + ".w");
    const auto q = slurp<unsigned char>(base + ".q");
    const auto sb = slurp<float>(base + ".sb");
    const auto val = slurp<float>(base + ".val");
    const auto x = slurp<float>(base + ".x");
    const auto ref = slurp<double>(base + ".ref");
    const auto h16 = slurp<u16>(base + ".f16");
    const u64 k = nblk * GROUP, row_bytes = nblk * Q::TS;
    if (w.size() != n * row_bytes || q.size() != n * k || sb.size() != 2 * n * nblk || val.size() != n * k ||
        h16.size() != n * k || x.size() != k || ref.size() != 2 * n) {
        printf("%s %s: bad inputs\n", name, base.c_str());
        return 1;
    }
    int dbad = 0, ebad = 0, hbad = 0, mbad = 0, ulp1 = 0, runs = 0;
    char msg[256];
    for (u64 r = 0; r < n; r++) {
        const unsigned char* row = w.data() + r * row_bytes;
        // Decoder: scale, bias and codes of every lane part, exactly.
        for (u64 vb = 0; vb < k / 32; vb++)
            for (int s = 0; s < 4; s++) {
                float d, mo, c[8];
                Q::decode(B::at(row, vb, s), d, mo, c);
                const u64 g = r * nblk + vb / Q::SUB;
                if (__float_as_uint(d) != __float_as_uint(sb[2 * g]) ||
                    __float_as_uint(mo) != __float_as_uint(sb[2 * g + 1])) {
                    snprintf(msg, sizeof msg, "row %llu block %llu lane %d: d %g mo %g, want %g %g",
                             (unsigned long long)r, (unsigned long long)vb, s, d, mo, sb[2 * g], sb[2 * g + 1]);
                    report(dbad, name, msg);
                }
                for (int e = 0; e < 8; e++) {
                    const u64 at = vb * 32 + (e < 4 ? Q::xoff0(s) + e : Q::xoff1(s) + e - 4);
                    if (c[e] != (float)q[r * k + at]) {
                        snprintf(msg, sizeof msg, "row %llu value %llu: code %g, want %d", (unsigned long long)r,
                                 (unsigned long long)at, c[e], q[r * k + at]);
                        report(dbad, name, msg);
                    }
                }
            }
        // Embedding reader: bit-exact values.
        for (u64 j = 0; j < k; j++) {
            const float v = R::get(row, j);
            if (__float_as_uint(v) != __float_as_uint(val[r * k + j])) {
                snprintf(msg, sizeof msg, "embedding row %llu value %llu: %.9g, want %.9g", (unsigned long long)r,
                         (unsigned long long)j, v, val[r * k + j]);
                report(ebad, name, msg);
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
    // f16 / bf16 scales: d * c is exact in f32, so fmaf(d, c, mo) is the
    // reference's f32 value and the f16 results must be equal. f32 scales:
    // the kernel skips the reference's rounding of d * c, so its value may
    // differ by that rounding, then by one f16 rounding step.
    for (u64 i = 0; i < n * k; i++) {
        const u16 want = h16[i], got = dq[i];
        if (got == want || ((got | want) & 0x7FFF) == 0) continue;
        if (SCALE == KILN_MLX_F32) {
            const double sv = sb[2 * (i / GROUP)], cq = q[i];
            const double prod_err = std::fabs(sv * cq - (double)(float)(sv * cq));
            const double g = kiln_f16_to_f32(got), r = val[i];
            const double mag = std::fmax(std::fabs(g), std::fabs(r));
            const double ulp16 = std::fmax(std::ldexp(1.0, -24), std::ldexp(1.0, std::ilogb(mag) - 10));
            if (std::fabs(g - r) <= prod_err + ulp16 + 1e-7 * mag) {
                ulp1++;
                continue;
            }
        }
        snprintf(msg, sizeof msg, "dequant value %llu: %04x, want %04x", (unsigned long long)i, got, want);
        report(hbad, name, msg);
    }
    // Mat-vec: direct, and staged at every copy width the rows allow.
    if (matvec) {
        for (int cw : {16, 8, 4, 0}) {
            if (cw != 0 && row_bytes % cw != 0) continue;
            for (int kw : {1, 2, 4}) {
                runs++;
                const auto got = run_mv<Q, B>(w, x, n, k, row_bytes, kw, cw);
                for (u64 j = 0; j < n; j++) {
                    const double err = std::fabs(got[j] - ref[2 * j]), tol = 1e-5 * ref[2 * j + 1] + 1e-30;
                    if (!(err <= tol)) {
                        snprintf(msg, sizeof msg, "mat-vec nblk=%llu cw=%d kw=%d row %llu: %.9g, want %.9g",
                                 (unsigned long long)nblk, cw, kw, (unsigned long long)j, got[j], ref[2 * j]);
                        report(mbad, name, msg);
                    }
                }
            }
        }
    }
    printf("%-12s %3llu rows x %3llu groups: decoder %d, embedding %d, dequant %d (%d within the rounding of "
           "d * c and one f16 step), "
           "mat-vec %d runs %d mismatches\n",
           name, (unsigned long long)n, (unsigned long long)nblk, dbad, ebad, hbad, ulp1, runs, mbad);
    return dbad + ebad + hbad + mbad != 0;
}

int main() {
    int bad = 0;
"""


def segment(src: str, start: str, end: str) -> str:
    i = src.index(start)
    return src[i : src.index(end, i)]


def bf16_bits(v: np.ndarray) -> np.ndarray:
    """f32 -> bf16 bits, round to nearest even (finite inputs)."""
    u = v.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def scale_bytes(kind: str, v: np.ndarray) -> np.ndarray:
    """Values (already representable) as the little-endian bytes of the scale dtype."""
    if kind == "f32":
        return v.astype("<f4").view(np.uint8)
    if kind == "f16":
        return v.astype("<f2").view(np.uint8)
    return bf16_bits(v).astype("<u2").view(np.uint8)


def scale_values(kind: str, raw: bytes) -> np.ndarray:
    """Little-endian scale-dtype bytes -> f32 values (exact)."""
    if kind == "f32":
        return np.frombuffer(raw, "<f4").astype(np.float32)
    if kind == "f16":
        return np.frombuffer(raw, "<f2").astype(np.float32)
    return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)


def codes(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """The spec's codes: value i is bits i*bits .. of the little-endian word stream."""
    b = np.unpackbits(packed.astype("<u4").view(np.uint8), bitorder="little")[: n * bits]
    return (b.reshape(n, bits).astype(np.uint32) << np.arange(bits, dtype=np.uint32)).sum(axis=1)


def reference(q: np.ndarray, s: np.ndarray, b: np.ndarray, group: int) -> np.ndarray:
    """kiln-core's dequantize: f32(scale * q), then + bias, in f32."""
    sg = np.repeat(s, group)
    bg = np.repeat(b, group)
    return (sg * q.astype(np.float32)).astype(np.float32) + bg


def write_case(t: pathlib.Path, base: str, kind: str, bits: int, group: int, rows: int, row_len: int,
               packed: np.ndarray, s: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> None:
    """Repack one [rows, row_len] matrix into kiln blocks and write the
    inputs and references the C++ side reads."""
    words = group * bits // 32
    groups = row_len // group
    packed = packed.reshape(rows, groups, words)
    s = s.reshape(rows, groups)
    b = b.reshape(rows, groups)
    blocks = bytearray()
    for r in range(rows):
        for g in range(groups):
            blocks += scale_bytes(kind, s[r, g : g + 1]).tobytes()
            blocks += scale_bytes(kind, b[r, g : g + 1]).tobytes()
            blocks += packed[r, g].astype("<u4").tobytes()
    q = np.concatenate([codes(packed[r].reshape(-1), bits, row_len) for r in range(rows)])
    val = reference(q, s.reshape(-1), b.reshape(-1), group).reshape(rows, row_len)
    x = rng.uniform(-1, 1, size=row_len).astype(np.float32)
    v64 = val.astype(np.float64)
    ref = np.stack([v64 @ x.astype(np.float64), np.abs(v64) @ np.abs(x.astype(np.float64))], axis=1)
    (t / f"{base}.w").write_bytes(bytes(blocks))
    q.astype(np.uint8).tofile(t / f"{base}.q")
    np.stack([s.reshape(-1), b.reshape(-1)], axis=1).astype(np.float32).tofile(t / f"{base}.sb")
    val.astype(np.float32).tofile(t / f"{base}.val")
    x.tofile(t / f"{base}.x")
    ref.astype(np.float64).tofile(t / f"{base}.ref")
    val.astype(np.float16).tofile(t / f"{base}.f16")


def fixture_cases():
    blob = FIXTURE.read_bytes()
    assert blob[:8] == b"KMLXAF01", "not an MLX affine fixture"
    (hlen,) = struct.unpack("<I", blob[8:12])
    header = json.loads(blob[12 : 12 + hlen])
    data = blob[12 + hlen :]
    for c in header["cases"]:
        part = lambda key: data[c[key][0] : c[key][0] + c[key][1]]  # noqa: E731
        yield c, part


def main() -> int:
    common = (KERNELS / "common.cuh").read_text()
    matvec = (KERNELS / "matvec.cuh").read_text()
    staged = (KERNELS / "matvec_staged.cuh").read_text().replace("#pragma once", "")
    mlx = (KERNELS / "mlx.cuh").read_text().replace("#pragma once", "")
    matmul = (KERNELS / "matmul.cu").read_text()
    decls = [
        l
        for l in common.splitlines()
        if l.startswith(("typedef", "struct block", "static_assert", "#define QK"))
    ]
    defines = [l for l in matvec.splitlines() if l.startswith("#define MV_")]
    body = segment(matvec, "__device__ __forceinline__ float byte_f32", "// Reduce acc over the warp")
    params = segment(matmul, "struct MatmulParams {", "struct ConvParams")
    dequant = segment(matmul, "template <class Q, class B = FlatBlocks<Q>>", "#define DEQUANT_SUB")
    rng = np.random.default_rng(SEED)
    calls = []
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        # mlx's own arrays; the reference checked against mlx's dequantize.
        seen = set()
        for c, part in fixture_cases():
            kind, bits, group = c["scale_dtype"], c["bits"], c["group_size"]
            rows, row_len = c["rows"], c["row_len"]
            packed = np.frombuffer(part("packed"), "<u4")
            s = scale_values(kind, part("scales"))
            b = scale_values(kind, part("biases"))
            if kind == "f32":
                q = np.concatenate(
                    [codes(pr, bits, row_len) for pr in packed.reshape(rows, -1)]
                )
                mlx_out = np.frombuffer(part("dequant"), "<f4")
                mine = reference(q, s, b, group)
                if not np.array_equal(mine.view(np.uint32), mlx_out.view(np.uint32)):
                    print(f"{c['name']}: reference differs from mlx's dequantize")
                    return 1
            tag = f"q{bits}_g{group}_{kind}"
            base = f"fx_{tag}"
            write_case(t, base, kind, bits, group, rows, row_len, packed, s, b, rng)
            calls.append(
                f'    bad += check<{bits}, {group}, {SCALES[kind]}>("{tag}", "{t}/{base}", {rows}, '
                f"{row_len // group}, true);"
            )
            seen.add(tag)
        if len(seen) != len(BITS) * len(GROUPS) * len(SCALES):
            print(f"fixture has {len(seen)} formats, expected {len(BITS) * len(GROUPS) * len(SCALES)}")
            return 1
        # Random words and scales: long rows, several copy widths and chunks.
        for kind in SCALES:
            for bits in BITS:
                for group in GROUPS:
                    tag = f"q{bits}_g{group}_{kind}"
                    for idx, (groups, rows, mv) in enumerate(RANDOM_SHAPES):
                        row_len = groups * group
                        packed = rng.integers(0, 2**32, size=rows * row_len * bits // 32, dtype=np.uint64)
                        s = rng.uniform(-1, 1, size=rows * groups).astype(np.float32)
                        b = rng.uniform(-1, 1, size=rows * groups).astype(np.float32)
                        if kind == "f16":
                            s, b = s.astype(np.float16).astype(np.float32), b.astype(np.float16).astype(np.float32)
                        elif kind == "bf16":
                            s = (bf16_bits(s).astype(np.uint32) << 16).view(np.float32)
                            b = (bf16_bits(b).astype(np.uint32) << 16).view(np.float32)
                        base = f"rnd{idx}_{tag}"
                        write_case(t, base, kind, bits, group, rows, row_len, packed, s, b, rng)
                        calls.append(
                            f'    bad += check<{bits}, {group}, {SCALES[kind]}>("{tag}", "{t}/{base}", '
                            f"{rows}, {groups}, {'true' if mv else 'false'});"
                        )
        src = "\n".join(
            [PRELUDE, "\n".join(decls), SHIMS, "\n".join(defines), body, staged, mlx, params, dequant]
        ) + MAIN + "\n".join(calls) + "\n    return bad != 0;\n}\n"
        (t / "emu.cpp").write_text(src)
        cc = subprocess.run(
            ["g++", "-std=c++20", "-O1", "-ffp-contract=off", "-fsanitize=address", "-pthread", "-I", str(ROOT / "scripts"), "-o", str(t / "emu"), str(t / "emu.cpp")],
            capture_output=True,
            text=True,
        )
        if cc.returncode != 0:
            print(cc.stderr[-6000:])
            return 2
        rc = subprocess.run([str(t / "emu")]).returncode
    print(f"seed {SEED}: {'ok' if rc == 0 else 'MISMATCH'}")
    return 1 if rc else 0


if __name__ == "__main__":
    sys.exit(main())
