//! matmul_id on CUDA: validate → launch (`kernels/matmul_id.cu`). Implements
//! `kiln_core::ops::matmul_id` (GGML `mul_mat_id`): output row
//! `r = t·top_k + s` is expert `ids[r]`'s matrix times x row `r` (per slot)
//! or `t` (per token).
//!
//! Two paths, chosen by [`select_matmul_id`], both with the dense mat-vec's
//! tiling and block decoders and f32 activations:
//! - [`MatmulIdKernel::PerRow`] (decode): every output row is its own
//!   mat-vec (`mul_mv_id_<w>_f32`), reading its expert's rows once.
//! - [`MatmulIdKernel::Grouped`] (prefill, at least [`GROUP_MIN_ROWS_PER_EXPERT`]
//!   rows per expert on average): `mm_id_plan` buckets the rows by expert
//!   on the device (in row order: deterministic) into the backend's scratch,
//!   then `mul_mm_id_<w>_f32` runs chunks of up to 8 rows of one expert, so
//!   each weight read serves 8 rows (the dense m8 mat-vec with gathered x
//!   rows). Not a tensor-core GEMM: large prefills still read each expert's
//!   weights `rows / 8` times.
//!
//! The formats are those of the dense CUDA mat-vec
//! ([`crate::matmul::supports`]): the GGML and float ones, and every MLX
//! format (its two kernels compiled per format on first use, `crate::mlx`;
//! the grouped path's plan kernel is the base module's). Others are refused
//! with `Error::UnsupportedDType`.
//!
//! The ids are read on the device and not checked by the host: an id
//! `>= n_experts` makes its output row NaN and reads no weights. Callers
//! holding the ids on the host check them first
//! (`MatmulIdParams::check_ids`), as the reference does.

use crate::kernels::MATMUL_ID;
use crate::launch::ExArgs;
use crate::matmul::{check_alignment, matvec_plan, MatmulKernel, MV_ROWS, MV_THREADS, MV_WARPS};
use crate::matvec_staged::{id_staged, stage_copy_width};
use crate::matvec_tile::{
    id_tile_bytes, id_tile_q8, q8_tile_supports, tile_plan, tile_target, tile_xq_bytes,
};
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{
    CudaFunction, CudaView, CudaViewMut, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
};
use kiln_core::ops::matmul_id::MatmulIdParams;
use kiln_core::{DType, Error};

const OP: &str = "matmul_id";

/// Output rows per launch (the grid's y dimension).
const MAX_ROWS_PER_LAUNCH: usize = 65_535;
/// Rows per grouped chunk (`MM_ID_ROWS` in matmul_id.cu).
const MM_ID_ROWS: usize = 8;
/// The grouped path pays off once experts get this many rows on average.
pub const GROUP_MIN_ROWS_PER_EXPERT: usize = 2;

/// Which kernel a matmul_id runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulIdKernel {
    /// Nothing to compute (no rows or n = 0).
    Empty,
    /// `mul_mv_id_<w>_f32`: one mat-vec per output row.
    PerRow,
    /// `mm_id_plan` + `mul_mm_id_<w>_f32`: rows grouped by expert, 8 per CTA.
    Grouped,
}

/// The kernel for `p` (pure: shapes only).
pub fn select_matmul_id(p: &MatmulIdParams) -> MatmulIdKernel {
    let rows = p.n_tokens.saturating_mul(p.top_k);
    if rows == 0 || p.n == 0 {
        MatmulIdKernel::Empty
    } else if p.n_tokens > 1
        && rows >= GROUP_MIN_ROWS_PER_EXPERT.saturating_mul(p.n_experts)
        && grouped_chunks(p.n_experts, rows) <= MAX_ROWS_PER_LAUNCH
    {
        MatmulIdKernel::Grouped
    } else {
        MatmulIdKernel::PerRow
    }
}

/// Upper bound on the grouped path's chunks: each of the `n_experts + 1`
/// buckets (the last one for bad ids) adds at most one partial chunk.
fn grouped_chunks(n_experts: usize, rows: usize) -> usize {
    rows.div_ceil(MM_ID_ROWS)
        .saturating_add(n_experts)
        .saturating_add(1)
}

/// u32 words of the grouped path's plan (`IdPlan` in matmul_id.cu).
fn plan_words(n_experts: usize, rows: usize) -> usize {
    1 + (n_experts + 2) + rows + 2 * grouped_chunks(n_experts, rows)
}

/// Mirrors `struct MatmulIdParams` in matmul_id.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct MatmulIdK {
    n: u64,
    k: u64,
    row_bytes: u64,
    kw: u64,
    expert_stride: u64,
    n_experts: u64,
    top_k: u64,
    rows: u64,
    r0: u64,
    x_per_slot: u64,
    /// Quantized weights staged through shared memory in pieces of this
    /// many bytes (matvec_staged.cuh), 0 = direct loads.
    cw: u64,
    /// The per-row path's tile kernels (matvec_tile.cuh): weight rows per
    /// CTA, 0 = the pair kernels; and shared bytes per stack.
    tile_rows: u64,
    tile_slot: u64,
    /// Shared bytes after the stacks: the int8 x area of the formats whose
    /// tiles quantize x (`tile_xq_bytes`), else 0.
    tile_xq: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for MatmulIdK {}

/// True for the weight formats matmul_id has kernels for on CUDA (those of
/// the dense mat-vec).
pub fn supports(wtype: DType) -> bool {
    kernel_names(wtype).is_some() || matches!(wtype, DType::Mlx(_))
}

/// An MLX format's kernels in its variant of matmul_id.cu: per row,
/// grouped, gated per row.
fn mlx_kernel_names(tag: &str) -> Vec<String> {
    vec![
        format!("mul_mv_id_mlx_{tag}_f32"),
        format!("mul_mm_id_mlx_{tag}_f32"),
        format!("mul_mv_id_swiglu_mlx_{tag}_f32"),
    ]
}

/// The per-row, grouped and gated per-row kernels of a supported format.
fn kernels(be: &CudaBackend, wtype: DType) -> Result<[CudaFunction; 3]> {
    if let DType::Mlx(f) = wtype {
        let fns = be
            .mlx
            .matmul_id
            .get(be, OP, MATMUL_ID, f, mlx_kernel_names)?;
        return match fns {
            [mv, mm, sw] => Ok([mv.clone(), mm.clone(), sw.clone()]),
            _ => Err(CudaError::driver(OP, "MLX kernel table")),
        };
    }
    let (mv, mm, sw) = kernel_names(wtype).ok_or_else(|| unsupported(wtype))?;
    Ok([
        be.function(OP, MATMUL_ID, mv)?,
        be.function(OP, MATMUL_ID, mm)?,
        be.function(OP, MATMUL_ID, sw)?,
    ])
}

/// matmul_id has no kernel for `wtype`.
fn unsupported(wtype: DType) -> CudaError {
    Error::UnsupportedDType {
        op: OP,
        dtype: wtype,
    }
    .into()
}

/// The per-row, grouped and gated per-row kernels of a GGML or float format.
fn kernel_names(wtype: DType) -> Option<(&'static str, &'static str, &'static str)> {
    macro_rules! k {
        ($w:literal) => {
            (
                concat!("mul_mv_id_", $w, "_f32"),
                concat!("mul_mm_id_", $w, "_f32"),
                concat!("mul_mv_id_swiglu_", $w, "_f32"),
            )
        };
    }
    Some(match wtype {
        DType::Q4_0 => k!("q4_0"),
        DType::Q4_1 => k!("q4_1"),
        DType::Q8_0 => k!("q8_0"),
        DType::Q5_0 => k!("q5_0"),
        DType::Q5_1 => k!("q5_1"),
        DType::IQ4_NL => k!("iq4_nl"),
        DType::Q4_K => k!("q4_K"),
        DType::Q5_K => k!("q5_K"),
        DType::Q6_K => k!("q6_K"),
        DType::IQ4_XS => k!("iq4_xs"),
        DType::Q3_K => k!("q3_K"),
        DType::Q2_K => k!("q2_K"),
        DType::IQ2_XXS => k!("iq2_xxs"),
        DType::IQ2_XS => k!("iq2_xs"),
        DType::IQ3_XXS => k!("iq3_xxs"),
        DType::IQ3_S => k!("iq3_s"),
        DType::F32 => k!("f32"),
        DType::F16 => k!("f16"),
        DType::BF16 => k!("bf16"),
        _ => return None,
    })
}

/// The tile kernels (plain, gated) of a quantized GGML format, by name:
/// float activations, or with `q8` the int8-activation ones
/// ([`q8_tile_supports`]).
pub fn tile_kernel_names(wtype: DType, q8: bool) -> Option<(&'static str, &'static str)> {
    macro_rules! k {
        ($kind:literal, $w:literal) => {
            (
                concat!("mul_mv_id_", $kind, "_", $w, "_f32"),
                concat!("mul_mv_id_swiglu_", $kind, "_", $w, "_f32"),
            )
        };
    }
    if q8 {
        return Some(match wtype {
            DType::Q4_0 => k!("q8tile", "q4_0"),
            DType::Q4_1 => k!("q8tile", "q4_1"),
            DType::Q8_0 => k!("q8tile", "q8_0"),
            DType::Q4_K => k!("q8tile", "q4_K"),
            DType::Q5_K => k!("q8tile", "q5_K"),
            DType::Q6_K => k!("q8tile", "q6_K"),
            _ => return None,
        });
    }
    Some(match wtype {
        DType::Q4_0 => k!("tile", "q4_0"),
        DType::Q4_1 => k!("tile", "q4_1"),
        DType::Q8_0 => k!("tile", "q8_0"),
        DType::Q5_0 => k!("tile", "q5_0"),
        DType::Q5_1 => k!("tile", "q5_1"),
        DType::IQ4_NL => k!("tile", "iq4_nl"),
        DType::Q4_K => k!("tile", "q4_K"),
        DType::Q5_K => k!("tile", "q5_K"),
        DType::Q6_K => k!("tile", "q6_K"),
        DType::IQ4_XS => k!("tile", "iq4_xs"),
        DType::Q3_K => k!("tile", "q3_K"),
        DType::Q2_K => k!("tile", "q2_K"),
        DType::IQ2_XXS => k!("tile", "iq2_xxs"),
        DType::IQ2_XS => k!("tile", "iq2_xs"),
        DType::IQ3_XXS => k!("tile", "iq3_xxs"),
        DType::IQ3_S => k!("tile", "iq3_s"),
        _ => return None,
    })
}

/// The tile kernels (plain, gated) of `wtype` for a launch whose params say
/// whether x is quantized (`tile_xq` > 0: the int8-activation kernels).
fn tile_kernels(be: &CudaBackend, wtype: DType, k: &MatmulIdK) -> Result<[CudaFunction; 2]> {
    let (mv, sw) = tile_kernel_names(wtype, k.tile_xq > 0).ok_or_else(|| unsupported(wtype))?;
    Ok([
        be.function(OP, MATMUL_ID, mv)?,
        be.function(OP, MATMUL_ID, sw)?,
    ])
}

/// `out[r] = w[ids[r]] · x_row(r)` for every output row (module docs).
///
/// `w`: the stacked experts (alignment as for [`crate::matmul::matmul`]'s
/// weights, and `expert_stride` a multiple of it); `x`: `[n_tokens or
/// n_tokens·top_k, k]` (16-byte aligned for quantized weights); `ids`:
/// `[n_tokens·top_k]` on the device; `out`: `[n_tokens·top_k, n]`.
pub fn matmul_id(
    be: &CudaBackend,
    p: &MatmulIdParams,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    ids: &CudaView<'_, u32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    matmul_id_with_kernel(be, p, select_matmul_id(p), w, x, ids, out)
}

/// [`matmul_id`] with a given kernel instead of [`select_matmul_id`]'s
/// (tests: both paths on every shape). `PerRow` and `Grouped` are correct
/// for any shape (`Grouped` needs at most 65535 chunks); `Empty` only when
/// there is nothing to compute.
pub fn matmul_id_with_kernel(
    be: &CudaBackend,
    p: &MatmulIdParams,
    kernel: MatmulIdKernel,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    ids: &CudaView<'_, u32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate(w.len(), x.len(), ids.len(), out.len())?;
    if !supports(p.wtype) {
        return Err(unsupported(p.wtype));
    }
    let rows = p.rows()?;
    let bad =
        |what: &str| -> CudaError { Error::invalid(OP, format!("plan {kernel:?} {what}")).into() };
    if rows == 0 || p.n == 0 {
        return Ok(());
    }
    match kernel {
        MatmulIdKernel::Empty => return Err(bad("skips a non-empty product")),
        MatmulIdKernel::Grouped if grouped_chunks(p.n_experts, rows) > MAX_ROWS_PER_LAUNCH => {
            return Err(bad("needs more than 65535 chunks"))
        }
        _ => {}
    }
    let per_row_path = kernel == MatmulIdKernel::PerRow;
    let (k, gx) = launch_shape(be, p, w, x, None, per_row_path)?;
    if per_row_path {
        let f = per_row_kernel(be, p.wtype, &k, false)?;
        per_row(be, k, &f, gx, (w, None), x, ids, out)
    } else {
        let [_, mm, _] = kernels(be, p.wtype)?;
        grouped(be, &k, &mm, gx, w, x, ids, out)
    }
}

/// The per-row path's kernel for launch params `k` (plain or `gated`): a
/// tile kernel when `k` plans tiles, else the pair kernel.
fn per_row_kernel(
    be: &CudaBackend,
    wtype: DType,
    k: &MatmulIdK,
    gated: bool,
) -> Result<CudaFunction> {
    let (mv, sw) = if k.tile_rows > 0 {
        let [mv, sw] = tile_kernels(be, wtype, k)?;
        (mv, sw)
    } else {
        let [mv, _, sw] = kernels(be, wtype)?;
        (mv, sw)
    };
    Ok(if gated { sw } else { mv })
}

/// `out[r, j] = silu(w_gate[ids[r]][j] · x_row(r)) * (w_up[ids[r]][j] ·
/// x_row(r))` in one launch (`mul_mv_id_swiglu_<w>_f32`; spec:
/// `kiln_core::ops::matmul_id::matmul_id_swiglu_ref`): the expert FFN's
/// gate, up and SiLU·mul for decode, reading x once per row and writing no
/// intermediates. Every output row is its own mat-vec (the per-row path),
/// so it is correct for any shape but meant for few rows; prefill runs the
/// two grouped products and `silu_mul`. Ids past the experts give NaN rows.
#[allow(clippy::too_many_arguments)]
pub fn matmul_id_swiglu(
    be: &CudaBackend,
    p: &MatmulIdParams,
    w_gate: &CudaView<'_, u8>,
    w_up: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    ids: &CudaView<'_, u32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate_swiglu(w_gate.len(), w_up.len(), x.len(), ids.len(), out.len())?;
    if p.rows()? == 0 || p.n == 0 {
        return Ok(());
    }
    check_alignment(be, &p.expert_matmul(1), w_up, x)?;
    let (k, gx) = launch_shape(be, p, w_gate, x, Some(w_up), true)?;
    let sw = per_row_kernel(be, p.wtype, &k, true)?;
    per_row(be, k, &sw, gx, (w_gate, Some(w_up)), x, ids, out)
}

/// The kernel params and grid width of a validated, non-empty matmul_id
/// over `w` (and the gated path's `w_up`; alignment and stride checked
/// here). `per_row`: the per-row path, which runs the tile kernels where
/// the format has them, the backend's tile target is not 0 and the stacks
/// start 16-byte aligned (`tile_rows` > 0 then).
fn launch_shape(
    be: &CudaBackend,
    p: &MatmulIdParams,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    w_up: Option<&CudaView<'_, u8>>,
    per_row: bool,
) -> Result<(MatmulIdK, usize)> {
    let rows = p.rows()?;
    // Expert 0 starts where w does; the others keep its alignment.
    check_alignment(be, &p.expert_matmul(1), w, x)?;
    let w_align = if p.wtype.type_size().is_multiple_of(4) {
        4
    } else {
        2
    };
    if !p.expert_stride.is_multiple_of(w_align) {
        return Err(Error::invalid(
            OP,
            format!(
                "expert_stride {} must be a multiple of {w_align} bytes for {} weights",
                p.expert_stride, p.wtype
            ),
        )
        .into());
    }
    // Staged weights (matvec_staged::id_staged: measured per format, or
    // the backend's switch): the widest copy that every expert's rows
    // allow, in both stacks of the gated path.
    let row_bytes = p.wtype.row_bytes(OP, p.k)?;
    let mut cw = 0;
    if p.wtype.is_quantized() && id_staged(be, p.wtype) {
        // Every expert's rows start at w (or w_up) + e * expert_stride: OR-ing
        // the stride and both bases gives an address with the alignment all
        // of them share (powers of two).
        let (wp, _g) = w.device_ptr(be.stream());
        let (xp, _gx) = x.device_ptr(be.stream());
        let mut starts = wp | p.expert_stride as u64;
        if let Some(u) = w_up {
            let (up, _gu) = u.device_ptr(be.stream());
            starts |= up;
        }
        cw = stage_copy_width(true, row_bytes, starts, xp);
    }
    let kw = match matvec_plan(&p.expert_matmul(1), 1, cw != 0) {
        MatmulKernel::MatVec { kw, .. } if p.wtype.is_quantized() => kw,
        _ => MV_WARPS,
    };
    let mut gx = p.n.div_ceil(MV_ROWS * (MV_WARPS / kw));
    let stacks = 1 + usize::from(w_up.is_some());
    let target = tile_target(id_tile_bytes(be), stacks);
    let mut tile = None;
    let q8 = id_tile_q8(be) && q8_tile_supports(p.wtype);
    let xq = if q8 { tile_xq_bytes(p.k) } else { 0 };
    if per_row && target > 0 && tile_kernel_names(p.wtype, q8).is_some() {
        let (wp, _g) = w.device_ptr(be.stream());
        let mut bases = wp;
        if let Some(u) = w_up {
            let (up, _gu) = u.device_ptr(be.stream());
            bases |= up;
        }
        if bases.is_multiple_of(16) {
            tile = tile_plan(row_bytes, stacks, target, xq);
        }
    }
    if let Some(t) = tile {
        gx = p.n.div_ceil(t.rows);
    }
    if gx > i32::MAX as usize {
        return Err(Error::invalid(OP, format!("n = {} is too large for the grid", p.n)).into());
    }
    let k = MatmulIdK {
        n: p.n as u64,
        k: p.k as u64,
        row_bytes: row_bytes as u64,
        kw: kw as u64,
        expert_stride: p.expert_stride as u64,
        n_experts: p.n_experts as u64,
        top_k: p.top_k as u64,
        rows: rows as u64,
        r0: 0,
        x_per_slot: u64::from(p.x_per_slot),
        cw,
        tile_rows: tile.map_or(0, |t| t.rows as u64),
        tile_slot: tile.map_or(0, |t| t.slot as u64),
        tile_xq: tile.map_or(0, |_| xq as u64),
    };
    Ok((k, gx))
}

#[allow(clippy::too_many_arguments)]
fn per_row(
    be: &CudaBackend,
    mut k: MatmulIdK,
    f: &CudaFunction,
    gx: usize,
    (w, w_up): (&CudaView<'_, u8>, Option<&CudaView<'_, u8>>),
    x: &CudaView<'_, f32>,
    ids: &CudaView<'_, u32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let rows = k.rows as usize;
    for r0 in (0..rows).step_by(MAX_ROWS_PER_LAUNCH) {
        k.r0 = r0 as u64;
        let gy = (rows - r0).min(MAX_ROWS_PER_LAUNCH);
        // The tile kernels' stacks in dynamic shared memory (<= 48 KiB,
        // matvec_tile::tile_plan).
        let stacks = 1 + u64::from(w_up.is_some());
        let cfg = LaunchConfig {
            grid_dim: (gx as u32, gy as u32, 1),
            block_dim: (MV_THREADS, 1, 1),
            shared_mem_bytes: (stacks * k.tile_slot + k.tile_xq) as u32,
        };
        let mut a = ExArgs::new(be);
        a.val(k).buf(w);
        if let Some(u) = w_up {
            a.buf(u);
        }
        a.buf(x).buf(ids).buf_mut(&mut *out);
        // SAFETY: arguments match mul_mv_id_<w>_f32(MatmulIdParams, const
        // u8*, const float*, const u32*, float*), or with w_up
        // mul_mv_id_swiglu_<w>_f32(MatmulIdParams, const u8* gate, const u8*
        // up, ...) whose two stacks have the same length (validate_swiglu)
        // and alignment (checked). Validated by the caller:
        // w holds n_experts matrices of n rows at expert_stride, x the rows
        // x_row reads, ids and out `rows` entries / rows; the kernel reads
        // ids[r] for r < rows, weights only of experts < n_experts, x rows
        // < its row count, and writes out[r * n + j] for r < rows, j < n.
        // Alignment of w, expert_stride and x checked by the caller. The
        // tile kernels (tile_rows > 0, chosen only for 16-byte aligned
        // stacks) read each tile's bytes from its start rounded down to 16
        // bytes (inside the stack) to its end, into tile_slot bytes per
        // stack of shared memory, which tile_plan sized for them. PDL: the
        // kernels wait (kiln_pdl_enter) before touching anything.
        unsafe { a.launch(be, f, cfg, be.pdl_entry()) }
            .map_err(|e| CudaError::driver("launch mul_mv_id", e))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn grouped(
    be: &CudaBackend,
    k: &MatmulIdK,
    f: &CudaFunction,
    gx: usize,
    w: &CudaView<'_, u8>,
    x: &CudaView<'_, f32>,
    ids: &CudaView<'_, u32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    let (ne, rows) = (k.n_experts as usize, k.rows as usize);
    let plan_fn = be.function(OP, MATMUL_ID, "mm_id_plan")?;
    // The plan lives in the backend's scratch (f32 words used as u32: the
    // kernels only store and load them).
    be.with_scratch_f32(plan_words(ne, rows), |plan| {
        let cfg = LaunchConfig {
            grid_dim: (1, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = be.stream().launch_builder(&plan_fn);
        l.arg(k).arg(ids).arg(&mut *plan);
        // SAFETY: mm_id_plan(MatmulIdParams, const u32*, u32*): reads
        // ids[0..rows], writes within plan_words(n_experts, rows) words of
        // plan (a 4-byte-element buffer of that length).
        unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch mm_id_plan", e))?;
        let cfg = LaunchConfig {
            grid_dim: (gx as u32, grouped_chunks(ne, rows) as u32, 1),
            block_dim: (MV_THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut l = be.stream().launch_builder(f);
        l.arg(k).arg(w).arg(x).arg(&mut *plan).arg(&mut *out);
        // SAFETY: mul_mm_id_<w>_f32(MatmulIdParams, const u8*, const
        // float*, const u32*, float*): the plan just written (chunk count
        // <= the grid's y, every listed row < rows, buckets <= n_experts);
        // weights, x and out as for the per-row kernel (see per_row).
        unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch mul_mm_id", e))?;
        Ok(())
    })
}
