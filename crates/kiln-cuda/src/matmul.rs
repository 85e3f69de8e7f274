//! matmul on CUDA: `out[m, n] = x[m, k] · w[n, k]ᵀ` with the semantics of
//! `kiln_core::ops::matmul::matmul_ref` (`kernels/matmul.cu`).
//!
//! Two paths, chosen by [`select_matmul`]:
//! - [`MatmulKernel::MatVec`] (m ≤ 8, decode): `mul_mv_<w>_f32_m<M>` reads
//!   each weight row once for all m activation rows; activations stay f32,
//!   so the result is the exact product up to f32 summation. Quantized rows
//!   whose length is a multiple of 4 bytes are staged through shared memory
//!   by cp.async (`kernels/matvec_staged.cuh`, [`stage_copy_width`]); float
//!   rows are read 16 bytes per thread where aligned. Both are off by
//!   default until measured on a GPU ([`staged`], `KILN_MV_STAGED=1`).
//! - [`MatmulKernel::Gemm`] (m ≥ 9, prefill): the weight is expanded into a
//!   scratch buffer and multiplied by cuBLAS with f32 accumulation.
//!   Quantized weights become **f16** and x is rounded to f16 too
//!   (`gemm_ex`, tensor cores): f16 keeps 11 significant bits, bf16 only 8,
//!   and both the dequantized weights (|w| ≤ 128·|d·sc| + |m|: at most 8
//!   code bits times the block or sub-block scale) and the activations
//!   (O(1–100)) fit f16's range, so f16 is 8x closer; the rounding (≤ 2^-11
//!   relative per operand) stays well inside the 8-bit-activation bound the
//!   parity tests hold fast kernels to. Activations beyond ±65504 would
//!   overflow f16. Float weights (F32/F16/BF16) use f32 operands and SGEMM
//!   (cuBLAS's default math mode, no TF32), i.e. no extra rounding.
//!   Without libcublas the launcher falls back to the mat-vec kernel over
//!   chunks of 8 rows (correct, reads the weights m/8 times).
//!
//! MLX affine weights ([`DType::Mlx`]) take both paths like the GGML
//! formats: their kernels are compiled per format on first use
//! (`crate::mlx`), the mat-vec walks each group as `group / 32` virtual
//! blocks (`kernels/mlx.cuh`), and prefill dequantizes to f16 (`scale * q +
//! bias` rounded once; the values lie within about one quantization step of
//! the weights mlx quantized, so they overflow f16 only where those would).
//!
//! Scratch (f16 weight and activation copies, f32 weight copy, the 32 MiB
//! cuBLAS workspace) and the cuBLAS handle live in [`MatmulState`], a field
//! of [`CudaBackend`]: created at the first prefill, grown (never shrunk) by
//! stream-ordered allocation when a larger product arrives. Nothing in the
//! launch path synchronizes with the host.

use crate::kernels::MATMUL;
use crate::launch::ExArgs;
use crate::matvec_staged::{stage_copy_width, stage_sblocks};
use crate::{CudaBackend, CudaError, Result};
use cudarc::cublas::{result as blas, sys as bsys, CudaBlas};
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr,
    LaunchConfig, PushKernelArg, ValidAsZeroBits,
};
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::{DType, Error};
use std::ffi::c_void;
use std::sync::atomic::AtomicU8;
use std::sync::{Mutex, OnceLock};

pub use crate::matvec_staged::{set_staged, staged};

const OP: &str = "matmul";

/// Most activation rows one mat-vec pass applies to each weight row.
pub const MV_MAX_ROWS: usize = 8;
/// Weight rows per mat-vec row pair, warps and threads per CTA (`MV_ROWS`,
/// `MV_WARPS`, `MV_THREADS` in matmul.cu).
pub(crate) const MV_ROWS: usize = 2;
pub(crate) const MV_WARPS: usize = 4;
pub(crate) const MV_THREADS: u32 = 128;
/// Blocks one mat-vec warp covers per step (`MV_BLOCKS_PER_WARP`).
const MV_BLOCKS_PER_WARP: usize = 8;
/// Warps a mat-vec grid aims for before it stops splitting k across warps:
/// about a quarter of an H100's resident warps (132 SMs × 64), enough to
/// cover memory latency; beyond that one warp per row pair wastes least.
const MV_TARGET_WARPS: usize = 4096;
/// cuBLAS workspace (NVIDIA recommends 32 MiB on Hopper).
const CUBLAS_WORKSPACE_BYTES: usize = 32 << 20;
/// Scratch grows in steps of this many elements, so slowly growing shapes
/// do not reallocate every call.
const SCRATCH_GRAIN: usize = 1 << 20;

/// Mirrors `struct MatmulParams` in matmul.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulK {
    m: u64,
    n: u64,
    k: u64,
    row_bytes: u64,
    kw: u64,
    cw: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for MatmulK {}

/// Mirrors `struct ConvParams` in matmul.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct ConvK {
    n: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for ConvK {}

/// Element type of the cuBLAS operands on the prefill path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmOperand {
    /// Dequantized weights and x rounded to f16, f32 accumulation and output.
    F16,
    /// f32 weights (converted from F16/BF16 where needed) and x: SGEMM.
    F32,
}

/// Which kernel a matmul runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulKernel {
    /// Nothing to compute (m = 0 or n = 0).
    Empty,
    /// `mul_mv_<w>_f32_m<rows>` over `ceil(m / rows)` chunks of x, with
    /// `kw` warps (1, 2 or 4) splitting k for each pair of weight rows.
    MatVec { rows: usize, kw: usize },
    /// Expand the weight, then cuBLAS GEMM.
    Gemm { operand: GemmOperand },
}

/// True for the weight formats this backend's matmul has kernels for
/// (a subset of `MatmulParams::supports`: the GGML and float formats of
/// its function table and every MLX format; the others are refused with
/// `Error::UnsupportedDType`).
pub fn supports(wtype: DType) -> bool {
    WTYPES.contains(&wtype) || matches!(wtype, DType::Mlx(_))
}

/// The kernel for `p` with staging off (pure: shapes and format only).
pub fn select_matmul(p: &MatmulParams) -> MatmulKernel {
    select_matmul_for(p, false)
}

/// The kernel for `p` when mat-vecs do (`staged`) or do not stage their
/// weights ([`staged`]); pure.
pub fn select_matmul_for(p: &MatmulParams, staged: bool) -> MatmulKernel {
    if p.m == 0 || p.n == 0 {
        MatmulKernel::Empty
    } else if p.m <= MV_MAX_ROWS || p.k == 0 {
        matvec_plan(p, p.m.min(MV_MAX_ROWS), staged)
    } else if p.wtype.is_quantized() {
        MatmulKernel::Gemm {
            operand: GemmOperand::F16,
        }
    } else {
        MatmulKernel::Gemm {
            operand: GemmOperand::F32,
        }
    }
}

/// The mat-vec plan for `rows` x rows per pass: float weights split k over
/// the whole CTA; quantized ones double `kw` while the grid is short of
/// [`MV_TARGET_WARPS`] and every warp still gets a step of blocks (with
/// `staged`, a staged chunk where the rows can be staged, see
/// [`stage_copy_width`]).
pub(crate) fn matvec_plan(p: &MatmulParams, rows: usize, staged: bool) -> MatmulKernel {
    if !p.wtype.is_quantized() {
        return MatmulKernel::MatVec { rows, kw: MV_WARPS };
    }
    let pairs = p.n.div_ceil(MV_ROWS);
    let ts = p.wtype.type_size();
    let sub = p.wtype.block_size() / 32;
    let row_bytes = p.k / p.wtype.block_size() * ts;
    let steps = if staged && row_bytes.is_multiple_of(4) {
        (row_bytes / ts).div_ceil(stage_sblocks(ts, sub)).max(1)
    } else {
        (p.k / 32).div_ceil(MV_BLOCKS_PER_WARP).max(1)
    };
    let mut kw = 1;
    while kw < MV_WARPS && pairs * kw < MV_TARGET_WARPS && kw * 2 <= steps {
        kw *= 2;
    }
    MatmulKernel::MatVec { rows, kw }
}

/// cuBLAS handle and grow-only scratch for the prefill path, owned by the
/// backend (`CudaBackend::matmul`).
#[derive(Default)]
pub struct MatmulState {
    cublas_present: OnceLock<bool>,
    /// See [`staged`]; initialised from `KILN_MV_STAGED` on first use.
    staged: OnceLock<AtomicU8>,
    /// The tile kernels' switches (`matvec_tile`).
    pub(crate) tiles: crate::matvec_tile::TileSwitches,
    /// Every kernel of matmul.cu, looked up once (see [`Kern::index`]).
    functions: OnceLock<Vec<CudaFunction>>,
    inner: Mutex<Option<GemmScratch>>,
}

/// The GGML and float weight formats, in the order of the function table:
/// the [`N_QUANT`] quantized ones (each with a mat-vec and a dequantize
/// kernel) first, then the float ones. (MLX formats have tables of their
/// own, [`mlx_kernel_names`].) matvec_fused has a kernel for each too.
pub(crate) const WTYPES: [DType; 19] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
    DType::Q5_0,
    DType::Q5_1,
    DType::IQ4_NL,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::IQ4_XS,
    DType::Q3_K,
    DType::Q2_K,
    DType::IQ2_XXS,
    DType::IQ2_XS,
    DType::IQ3_XXS,
    DType::IQ3_S,
    DType::F32,
    DType::F16,
    DType::BF16,
];
/// How many of [`WTYPES`] are quantized (they come first).
const N_QUANT: usize = 16;

/// One kernel of matmul.cu.
#[derive(Clone, Copy)]
enum Kern {
    MatVec(DType, usize),
    DequantF16(DType),
    ToF32(DType),
    F32ToF16,
}

impl Kern {
    /// Kernel names, in table order: mat-vec (format × rows), dequant
    /// ([`N_QUANT`]), to-f32 (F16, BF16), x to f16.
    fn names() -> Vec<String> {
        let mut v = Vec::new();
        for t in WTYPES {
            for rows in 1..=MV_MAX_ROWS {
                v.push(format!("mul_mv_{}_f32_m{rows}", wname_of(t)));
            }
        }
        for t in &WTYPES[..N_QUANT] {
            v.push(format!("dequant_{}_f16", wname_of(*t)));
        }
        v.push("convert_f16_f32".into());
        v.push("convert_bf16_f32".into());
        v.push("convert_f32_f16".into());
        v
    }

    fn index(self) -> Option<usize> {
        let t = |d: DType| WTYPES.iter().position(|&w| w == d);
        let n = WTYPES.len() * MV_MAX_ROWS;
        let c = n + N_QUANT;
        match self {
            Kern::MatVec(d, rows) if (1..=MV_MAX_ROWS).contains(&rows) => {
                Some(t(d)? * MV_MAX_ROWS + rows - 1)
            }
            Kern::DequantF16(d) => t(d).filter(|&i| i < N_QUANT).map(|i| n + i),
            Kern::ToF32(DType::F16) => Some(c),
            Kern::ToF32(DType::BF16) => Some(c + 1),
            Kern::F32ToF16 => Some(c + 2),
            _ => None,
        }
    }
}

/// An MLX format's kernels in its variant of matmul.cu, in table order:
/// the mat-vec for 1..=8 rows, then the dequantize.
fn mlx_kernel_names(tag: &str) -> Vec<String> {
    let mut v: Vec<String> = (1..=MV_MAX_ROWS)
        .map(|rows| format!("mul_mv_mlx_{tag}_f32_m{rows}"))
        .collect();
    v.push(format!("dequant_mlx_{tag}_f16"));
    v
}

struct GemmScratch {
    blas: CudaBlas,
    _workspace: CudaSlice<u8>,
    w16: Option<CudaSlice<u16>>,
    x16: Option<CudaSlice<u16>>,
    w32: Option<CudaSlice<f32>>,
}

impl MatmulState {
    /// The kernel `k`, from the table filled on first use (no lookup, lock
    /// or string formatting per launch); MLX formats from their own table,
    /// filled (and the format's variant compiled) on the format's first use.
    fn function<'a>(&'a self, be: &'a CudaBackend, k: Kern) -> Result<&'a CudaFunction> {
        if let Kern::MatVec(DType::Mlx(f), _) | Kern::DequantF16(DType::Mlx(f)) = k {
            let fns = be
                .mlx
                .matmul
                .get(be, "matmul", MATMUL, f, mlx_kernel_names)?;
            let i = match k {
                Kern::MatVec(_, rows) if (1..=MV_MAX_ROWS).contains(&rows) => Some(rows - 1),
                Kern::DequantF16(_) => Some(MV_MAX_ROWS),
                _ => None,
            };
            return i
                .and_then(|i| fns.get(i))
                .ok_or_else(|| CudaError::driver("matmul", "no such MLX kernel"));
        }
        if self.functions.get().is_none() {
            let table = Kern::names()
                .iter()
                .map(|name| be.function_named("matmul", MATMUL, name))
                .collect::<Result<Vec<_>>>()?;
            let _ = self.functions.set(table);
        }
        k.index()
            .and_then(|i| self.functions.get()?.get(i))
            .ok_or_else(|| CudaError::driver("matmul", "no such kernel"))
    }

    /// The staging mode (`matvec_staged::STAGED_*`): `KILN_MV_STAGED=1`
    /// on, `=0` off, unset auto.
    pub(crate) fn staged_flag(&self) -> &AtomicU8 {
        self.staged.get_or_init(|| {
            use crate::matvec_staged::{STAGED_AUTO, STAGED_OFF, STAGED_ON};
            AtomicU8::new(match std::env::var("KILN_MV_STAGED").as_deref() {
                Ok("1") => STAGED_ON,
                Ok("0") => STAGED_OFF,
                _ => STAGED_AUTO,
            })
        })
    }

    fn cublas_present(&self) -> bool {
        // SAFETY: only tries to dlopen libcublas.
        *self
            .cublas_present
            .get_or_init(|| unsafe { bsys::is_culib_present() })
    }
}

/// `slot` holding at least `n` elements (reallocated, stream-ordered, when short).
fn grow<T: DeviceRepr + ValidAsZeroBits>(
    be: &CudaBackend,
    slot: &mut Option<CudaSlice<T>>,
    n: usize,
) -> Result<()> {
    if slot.as_ref().is_some_and(|s| s.len() >= n) {
        return Ok(());
    }
    // Free the old buffer first (stream-ordered) so its memory can be reused.
    *slot = None;
    *slot = Some(be.alloc_zeros::<T>(n.div_ceil(SCRATCH_GRAIN) * SCRATCH_GRAIN)?);
    be.bump_epoch();
    Ok(())
}

/// `out = x · wᵀ` on the backend's stream (see the module docs).
///
/// `w`: `[n, k]` rows of `p.wtype` (`p.w_row_bytes()` bytes each; the view
/// must start 4-byte aligned for F32, MLX and the formats whose blocks are a
/// multiple of 4 bytes (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K, IQ4_XS), 2-byte
/// otherwise); `x`: `[m, k]`
/// (16-byte aligned for quantized weights); `out`: `[m, n]`.
pub fn matmul(
    be: &CudaBackend,
    p: &MatmulParams,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    if crate::matvec_tile::dense_tile_matvec(be, p, w, x, out)? {
        return Ok(());
    }
    matmul_with_kernel(be, p, select_matmul_for(p, staged(be)), w, x, out)
}

/// [`matmul`] with a given plan instead of [`select_matmul`]'s (tests and
/// benchmarks: e.g. the chunked mat-vec that replaces cuBLAS when it is
/// missing, or another `kw`). Any `MatVec { rows: 1..=8, kw: 1 | 2 | 4 }` is
/// correct for any shape (float weights always use `kw = 4`); `Gemm` needs
/// `F16` for quantized and `F32` for float weights; `Empty` only when
/// `m * n == 0`.
pub fn matmul_with_kernel(
    be: &CudaBackend,
    p: &MatmulParams,
    kernel: MatmulKernel,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(w.len(), x.len(), out.len())?;
    if !supports(p.wtype) {
        return Err(Error::UnsupportedDType {
            op: OP,
            dtype: p.wtype,
        }
        .into());
    }
    let bad = |what: &str| -> CudaError {
        Error::invalid(OP, format!("plan {kernel:?} {what} ({})", p.wtype)).into()
    };
    match kernel {
        MatmulKernel::Empty if p.m * p.n != 0 => return Err(bad("skips a non-empty product")),
        MatmulKernel::Empty => return Ok(()),
        MatmulKernel::MatVec { rows, kw }
            if !(1..=MV_MAX_ROWS).contains(&rows) || !matches!(kw, 1 | 2 | 4) =>
        {
            return Err(bad("is not a mat-vec plan"))
        }
        MatmulKernel::Gemm { operand }
            if (operand == GemmOperand::F16) != p.wtype.is_quantized() =>
        {
            return Err(bad("does not fit the weight format"))
        }
        _ => {}
    }
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    check_alignment(be, p, w, x)?;
    match kernel {
        MatmulKernel::Empty => Ok(()),
        MatmulKernel::MatVec { rows, kw } => matvec(be, p, rows, kw, w, x, out),
        MatmulKernel::Gemm { operand } => {
            if be.matmul.cublas_present() {
                gemm(be, p, operand, w, x, out)
            } else {
                match matvec_plan(p, MV_MAX_ROWS, staged(be)) {
                    MatmulKernel::MatVec { rows, kw } => matvec(be, p, rows, kw, w, x, out),
                    _ => Err(CudaError::driver("matmul", "no mat-vec plan")),
                }
            }
        }
    }
}

pub(crate) fn check_alignment(
    be: &CudaBackend,
    p: &MatmulParams,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
) -> Result<()> {
    // The kernels load 32-bit words from blocks whose size is a multiple of
    // 4 bytes (MLX blocks always are), 16-bit halves from the others.
    let w_align: u64 = match p.wtype {
        DType::F32
        | DType::Mlx(_)
        | DType::Q4_1
        | DType::Q5_1
        | DType::Q2_K
        | DType::Q4_K
        | DType::Q5_K
        | DType::IQ4_XS => 4,
        _ => 2,
    };
    let x_align: u64 = if p.wtype.is_quantized() { 16 } else { 4 };
    let (wp, _gw) = w.device_ptr(be.stream());
    let (xp, _gx) = x.device_ptr(be.stream());
    if wp % w_align != 0 {
        return Err(Error::invalid(
            OP,
            format!(
                "{} weights must start {w_align}-byte aligned on the device (address {wp:#x})",
                p.wtype
            ),
        )
        .into());
    }
    if xp % x_align != 0 {
        return Err(Error::invalid(
            OP,
            format!("x must start {x_align}-byte aligned on the device (address {xp:#x})"),
        )
        .into());
    }
    Ok(())
}

fn kparams(p: &MatmulParams, kw: usize) -> Result<MatmulK> {
    Ok(MatmulK {
        m: p.m as u64,
        n: p.n as u64,
        k: p.k as u64,
        row_bytes: p.w_row_bytes()? as u64,
        kw: kw as u64,
        cw: 0,
    })
}

/// Kernel-name spelling of a supported weight format.
pub(crate) fn wname_of(t: DType) -> &'static str {
    match t {
        DType::Q4_0 => "q4_0",
        DType::Q4_1 => "q4_1",
        DType::Q8_0 => "q8_0",
        DType::Q5_0 => "q5_0",
        DType::Q5_1 => "q5_1",
        DType::IQ4_NL => "iq4_nl",
        DType::Q2_K => "q2_K",
        DType::Q3_K => "q3_K",
        DType::Q4_K => "q4_K",
        DType::Q5_K => "q5_K",
        DType::Q6_K => "q6_K",
        DType::IQ4_XS => "iq4_xs",
        DType::IQ2_XXS => "iq2_xxs",
        DType::IQ2_XS => "iq2_xs",
        DType::IQ3_XXS => "iq3_xxs",
        DType::IQ3_S => "iq3_s",
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "unsupported",
    }
}

fn matvec(
    be: &CudaBackend,
    p: &MatmulParams,
    rows: usize,
    kw: usize,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let rows = rows.clamp(1, MV_MAX_ROWS);
    let kw = if p.wtype.is_quantized() && matches!(kw, 1 | 2 | 4) {
        kw
    } else {
        MV_WARPS
    };
    let gx = p.n.div_ceil(MV_ROWS * (MV_WARPS / kw));
    let gy = p.m.div_ceil(rows);
    if gx > i32::MAX as usize || gy > 65_535 {
        return Err(Error::invalid(
            OP,
            format!(
                "shape too large for the mat-vec grid (m={}, n={})",
                p.m, p.n
            ),
        )
        .into());
    }
    let f = be.matmul.function(be, Kern::MatVec(p.wtype, rows))?;
    let mut k = kparams(p, kw)?;
    {
        let (wp, _gw) = w.device_ptr(be.stream());
        let (xp, _gx) = x.device_ptr(be.stream());
        if staged(be) {
            k.cw = stage_copy_width(p.wtype.is_quantized(), k.row_bytes as usize, wp, xp);
        }
    }
    let cfg = LaunchConfig {
        grid_dim: (gx as u32, gy as u32, 1),
        block_dim: (MV_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut a = ExArgs::new(be);
    a.val(k).buf(w).buf(x).buf_mut(out);
    // SAFETY: arguments match `name(MatmulParams, const u8*, const float*, float*)`;
    // lengths were validated (w = n rows of row_bytes, x = m*k, out = m*n),
    // alignment checked, and the kernel reads rows < n / < m and writes
    // out[i*n + j] only for i < m, j < n. PDL: before its wait (mv_rows in
    // matmul.cu) the kernel reads only weights.
    unsafe { a.launch(be, f, cfg, be.pdl_entry()) }
        .map_err(|e| CudaError::driver("launch mul_mv", e))?;
    Ok(())
}

/// Grid for an elementwise grid-stride kernel over `n` items.
fn grid_for(n: usize) -> LaunchConfig {
    let threads = 256u32;
    let blocks = (n as u64).div_ceil(threads as u64).clamp(1, 65_535) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn cublas_err(e: impl std::fmt::Debug) -> CudaError {
    CudaError::driver("cublas", e)
}

fn new_scratch(be: &CudaBackend) -> Result<GemmScratch> {
    let blas = CudaBlas::new(be.stream().clone()).map_err(cublas_err)?;
    let workspace = be.alloc_zeros::<u8>(CUBLAS_WORKSPACE_BYTES)?;
    {
        let (wsp, _g) = workspace.device_ptr(be.stream());
        // SAFETY: `workspace` is a live device buffer of the stated size, kept
        // alive as long as the handle (both in GemmScratch).
        unsafe {
            bsys::cublasSetWorkspace_v2(*blas.handle(), wsp as *mut c_void, CUBLAS_WORKSPACE_BYTES)
        }
        .result()
        .map_err(cublas_err)?;
    }
    Ok(GemmScratch {
        blas,
        _workspace: workspace,
        w16: None,
        x16: None,
        w32: None,
    })
}

fn gemm(
    be: &CudaBackend,
    p: &MatmulParams,
    operand: GemmOperand,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let dim = |v: usize, what: &str| {
        i32::try_from(v).map_err(|_| {
            CudaError::from(Error::invalid(
                OP,
                format!("{what}={v} exceeds cuBLAS's i32 dimensions"),
            ))
        })
    };
    let (m, n, k) = (dim(p.m, "m")?, dim(p.n, "n")?, dim(p.k, "k")?);
    let wn =
        p.n.checked_mul(p.k)
            .ok_or_else(|| CudaError::from(Error::invalid(OP, "n*k overflows")))?;
    let mut guard = be
        .matmul
        .inner
        .lock()
        .map_err(|_| CudaError::driver("matmul scratch", "lock poisoned"))?;
    if guard.is_none() {
        *guard = Some(new_scratch(be)?);
    }
    let Some(st) = guard.as_mut() else {
        return Err(CudaError::driver("matmul scratch", "not initialised"));
    };
    let kp = kparams(p, MV_WARPS)?;
    let stream = be.stream();
    let handle = *st.blas.handle();
    let (alpha, beta) = (1.0f32, 0.0f32);
    // Column-major view: outᵀ [n, m] = (w as k×n col-major)ᵀ · (x as k×m col-major).
    let (ta, tb) = (
        bsys::cublasOperation_t::CUBLAS_OP_T,
        bsys::cublasOperation_t::CUBLAS_OP_N,
    );
    match operand {
        GemmOperand::F16 => {
            grow(be, &mut st.w16, wn)?;
            grow(be, &mut st.x16, p.m * p.k)?;
            let (Some(w16), Some(x16)) = (st.w16.as_mut(), st.x16.as_mut()) else {
                return Err(CudaError::driver("matmul scratch", "not allocated"));
            };
            let f = be.matmul.function(be, Kern::DequantF16(p.wtype))?;
            let mut l = stream.launch_builder(f);
            l.arg(&kp).arg(w).arg(&mut *w16);
            // SAFETY: dequant_<w>_f16(MatmulParams, const u8*, u16*): reads n
            // validated rows, writes n*k ≤ len(w16) halves.
            unsafe { l.launch(grid_for(p.n * (p.k / 32) * 4)) }
                .map_err(|e| CudaError::driver("launch dequant", e))?;
            let f = be.matmul.function(be, Kern::F32ToF16)?;
            let ck = ConvK {
                n: (p.m * p.k) as u64,
            };
            let mut l = stream.launch_builder(f);
            l.arg(&ck).arg(x).arg(&mut *x16);
            // SAFETY: convert_f32_f16(ConvParams, const float*, u16*): m*k
            // elements, within both buffers.
            unsafe { l.launch(grid_for(p.m * p.k)) }
                .map_err(|e| CudaError::driver("launch convert_f32_f16", e))?;
            let (wp, _g1) = w16.device_ptr(stream);
            let (xp, _g2) = x16.device_ptr(stream);
            let (op, _g3) = out.device_ptr_mut(stream);
            // SAFETY: A = w16 (k×n col-major, lda k), B = x16 (k×m, ldb k),
            // C = out (n×m, ldc n), all within their buffers; host scalars.
            unsafe {
                blas::gemm_ex(
                    handle,
                    ta,
                    tb,
                    n,
                    m,
                    k,
                    (&alpha as *const f32).cast(),
                    wp as *const c_void,
                    bsys::cudaDataType_t::CUDA_R_16F,
                    k,
                    xp as *const c_void,
                    bsys::cudaDataType_t::CUDA_R_16F,
                    k,
                    (&beta as *const f32).cast(),
                    op as *mut c_void,
                    bsys::cudaDataType_t::CUDA_R_32F,
                    n,
                    bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(cublas_err)?;
        }
        GemmOperand::F32 => {
            let wp = if p.wtype == DType::F32 {
                let (wp, _g) = w.device_ptr(stream);
                wp
            } else {
                grow(be, &mut st.w32, wn)?;
                let Some(w32) = st.w32.as_mut() else {
                    return Err(CudaError::driver("matmul scratch", "not allocated"));
                };
                let f = be.matmul.function(be, Kern::ToF32(p.wtype))?;
                let ck = ConvK { n: wn as u64 };
                let mut l = stream.launch_builder(f);
                l.arg(&ck).arg(w).arg(&mut *w32);
                // SAFETY: convert_<w>_f32(ConvParams, const u8*, float*): n*k
                // 2-byte elements = len(w), n*k ≤ len(w32) outputs.
                unsafe { l.launch(grid_for(wn)) }
                    .map_err(|e| CudaError::driver("launch convert", e))?;
                let (wp, _g) = w32.device_ptr(stream);
                wp
            };
            let (xp, _g2) = x.device_ptr(stream);
            let (op, _g3) = out.device_ptr_mut(stream);
            // SAFETY: as for gemm_ex above, with f32 operands; `wp` points to
            // `w` or to `st.w32`, both alive for this call.
            unsafe {
                blas::sgemm(
                    handle,
                    ta,
                    tb,
                    n,
                    m,
                    k,
                    &alpha,
                    wp as *const f32,
                    k,
                    xp as *const f32,
                    k,
                    &beta,
                    op as *mut f32,
                    n,
                )
            }
            .map_err(cublas_err)?;
        }
    }
    Ok(())
}

/// A streaming-read ceiling for benchmarks: enqueues a kernel that reads all
/// of `src` (length a multiple of 4 words, 16-byte aligned) and adds a
/// checksum into `sum`.
pub fn bench_read_sum(
    be: &CudaBackend,
    src: &CudaView<'_, u32>,
    sum: &mut CudaViewMut<'_, u32>,
) -> Result<()> {
    if src.len() % 4 != 0 || sum.is_empty() {
        return Err(Error::invalid(
            "bench_read_sum",
            format!("src length {} must be a multiple of 4", src.len()),
        )
        .into());
    }
    let f = be.function("matmul", MATMUL, "bench_read_sum")?;
    let ck = ConvK {
        n: src.len() as u64,
    };
    let blocks = (be.info().sm_count.max(1) as u32) * 8;
    let cfg = LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (256, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&ck).arg(src).arg(sum);
    // SAFETY: bench_read_sum(ConvParams, const uint4*, u32*): reads len/4
    // uint4 of src, one atomic on sum[0].
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch bench_read_sum", e))?;
    Ok(())
}

#[cfg(test)]
#[path = "matmul_tests.rs"]
mod tests;
