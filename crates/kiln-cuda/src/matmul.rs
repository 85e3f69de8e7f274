//! matmul on CUDA: `out[m, n] = x[m, k] · w[n, k]ᵀ` with the semantics of
//! `kiln_core::ops::matmul::matmul_ref` (`kernels/matmul.cu`).
//!
//! Two paths, chosen by [`select_matmul`]:
//! - [`MatmulKernel::MatVec`] (m ≤ 8, decode): `mul_mv_<w>_f32_m<M>` reads
//!   each weight row once for all m activation rows; activations stay f32,
//!   so the result is the exact product up to f32 summation.
//! - [`MatmulKernel::Gemm`] (m ≥ 9, prefill): the weight is expanded into a
//!   scratch buffer and multiplied by cuBLAS with f32 accumulation.
//!   Quantized weights become **f16** and x is rounded to f16 too
//!   (`gemm_ex`, tensor cores): f16 keeps 11 significant bits, bf16 only 8,
//!   and both the dequantized weights (|w| < 16·d + |m|) and the activations
//!   (O(1–100)) fit f16's range, so f16 is 8x closer; the rounding (≤ 2^-11
//!   relative per operand) stays well inside the 8-bit-activation bound the
//!   parity tests hold fast kernels to. Activations beyond ±65504 would
//!   overflow f16. Float weights (F32/F16/BF16) use f32 operands and SGEMM
//!   (cuBLAS's default math mode, no TF32), i.e. no extra rounding.
//!   Without libcublas the launcher falls back to the mat-vec kernel over
//!   chunks of 8 rows (correct, reads the weights m/8 times).
//!
//! Scratch (f16 weight and activation copies, f32 weight copy, the 32 MiB
//! cuBLAS workspace) and the cuBLAS handle live in [`MatmulState`], a field
//! of [`CudaBackend`]: created at the first prefill, grown (never shrunk) by
//! stream-ordered allocation when a larger product arrives. Nothing in the
//! launch path synchronizes with the host.

use crate::kernels::MATMUL;
use crate::{CudaBackend, CudaError, Result};
use cudarc::cublas::{result as blas, sys as bsys, CudaBlas};
use cudarc::driver::{
    CudaSlice, CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::{DType, Error};
use std::ffi::c_void;
use std::sync::{Mutex, OnceLock};

const OP: &str = "matmul";

/// Most activation rows one mat-vec pass applies to each weight row.
pub const MV_MAX_ROWS: usize = 8;
/// Weight rows per mat-vec CTA and its threads (`MV_ROWS`, `MV_THREADS` in matmul.cu).
const MV_ROWS_PER_CTA: usize = 2;
const MV_THREADS: u32 = 128;
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
    /// `mul_mv_<w>_f32_m<rows>` over `ceil(m / rows)` chunks of x.
    MatVec { rows: usize },
    /// Expand the weight, then cuBLAS GEMM.
    Gemm { operand: GemmOperand },
}

/// The kernel for `p` (pure: shapes and format only).
pub fn select_matmul(p: &MatmulParams) -> MatmulKernel {
    if p.m == 0 || p.n == 0 {
        MatmulKernel::Empty
    } else if p.m <= MV_MAX_ROWS || p.k == 0 {
        MatmulKernel::MatVec {
            rows: p.m.min(MV_MAX_ROWS),
        }
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

/// cuBLAS handle and grow-only scratch for the prefill path, owned by the
/// backend (`CudaBackend::matmul`).
#[derive(Default)]
pub struct MatmulState {
    cublas_present: OnceLock<bool>,
    inner: Mutex<Option<GemmScratch>>,
}

struct GemmScratch {
    blas: CudaBlas,
    _workspace: CudaSlice<u8>,
    w16: Option<CudaSlice<u16>>,
    x16: Option<CudaSlice<u16>>,
    w32: Option<CudaSlice<f32>>,
}

impl MatmulState {
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
    Ok(())
}

/// `out = x · wᵀ` on the backend's stream (see the module docs).
///
/// `w`: `[n, k]` rows of `p.wtype` (`p.w_row_bytes()` bytes each; the view
/// must start 4-byte aligned for F32/Q4_1, 2-byte otherwise); `x`: `[m, k]`
/// (16-byte aligned for quantized weights); `out`: `[m, n]`.
pub fn matmul(
    be: &CudaBackend,
    p: &MatmulParams,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(w.len(), x.len(), out.len())?;
    let kernel = select_matmul(p);
    if kernel == MatmulKernel::Empty {
        return Ok(());
    }
    check_alignment(be, p, w, x)?;
    match kernel {
        MatmulKernel::Empty => Ok(()),
        MatmulKernel::MatVec { rows } => matvec(be, p, rows, w, x, out),
        MatmulKernel::Gemm { operand } => {
            if be.matmul.cublas_present() {
                gemm(be, p, operand, w, x, out)
            } else {
                matvec(be, p, MV_MAX_ROWS, w, x, out)
            }
        }
    }
}

fn check_alignment(
    be: &CudaBackend,
    p: &MatmulParams,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
) -> Result<()> {
    let w_align: u64 = match p.wtype {
        DType::F32 | DType::Q4_1 => 4,
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

fn kparams(p: &MatmulParams) -> Result<MatmulK> {
    Ok(MatmulK {
        m: p.m as u64,
        n: p.n as u64,
        k: p.k as u64,
        row_bytes: p.w_row_bytes()? as u64,
    })
}

fn wname(t: DType) -> Result<&'static str> {
    Ok(match t {
        DType::Q4_0 => "q4_0",
        DType::Q4_1 => "q4_1",
        DType::Q8_0 => "q8_0",
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        other => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: other,
            }
            .into())
        }
    })
}

fn matvec(
    be: &CudaBackend,
    p: &MatmulParams,
    rows: usize,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let rows = rows.clamp(1, MV_MAX_ROWS);
    let gx = p.n.div_ceil(MV_ROWS_PER_CTA);
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
    let name = format!("mul_mv_{}_f32_m{rows}", wname(p.wtype)?);
    let f = be.function("matmul", MATMUL, &name)?;
    let k = kparams(p)?;
    let cfg = LaunchConfig {
        grid_dim: (gx as u32, gy as u32, 1),
        block_dim: (MV_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k).arg(w).arg(x).arg(out);
    // SAFETY: arguments match `name(MatmulParams, const u8*, const float*, float*)`;
    // lengths were validated (w = n rows of row_bytes, x = m*k, out = m*n),
    // alignment checked, and the kernel reads rows < n / < m and writes
    // out[i*n + j] only for i < m, j < n.
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch mul_mv", e))?;
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
    let kp = kparams(p)?;
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
            let f = be.function(
                "matmul",
                MATMUL,
                &format!("dequant_{}_f16", wname(p.wtype)?),
            )?;
            let mut l = stream.launch_builder(&f);
            l.arg(&kp).arg(w).arg(&mut *w16);
            // SAFETY: dequant_<w>_f16(MatmulParams, const u8*, u16*): reads n
            // validated rows, writes n*k ≤ len(w16) halves.
            unsafe { l.launch(grid_for(p.n * (p.k / 32))) }
                .map_err(|e| CudaError::driver("launch dequant", e))?;
            let f = be.function("matmul", MATMUL, "convert_f32_f16")?;
            let ck = ConvK {
                n: (p.m * p.k) as u64,
            };
            let mut l = stream.launch_builder(&f);
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
                let f = be.function(
                    "matmul",
                    MATMUL,
                    &format!("convert_{}_f32", wname(p.wtype)?),
                )?;
                let ck = ConvK { n: wn as u64 };
                let mut l = stream.launch_builder(&f);
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
mod tests {
    use super::*;

    fn p(m: usize, wtype: DType) -> MatmulParams {
        MatmulParams {
            m,
            n: 7,
            k: 64,
            wtype,
        }
    }

    #[test]
    fn selection() {
        assert_eq!(select_matmul(&p(0, DType::Q4_1)), MatmulKernel::Empty);
        assert_eq!(
            select_matmul(&p(1, DType::Q4_1)),
            MatmulKernel::MatVec { rows: 1 }
        );
        assert_eq!(
            select_matmul(&p(8, DType::F16)),
            MatmulKernel::MatVec { rows: 8 }
        );
        assert_eq!(
            select_matmul(&p(9, DType::Q8_0)),
            MatmulKernel::Gemm {
                operand: GemmOperand::F16
            }
        );
        assert_eq!(
            select_matmul(&p(512, DType::BF16)),
            MatmulKernel::Gemm {
                operand: GemmOperand::F32
            }
        );
    }
}
