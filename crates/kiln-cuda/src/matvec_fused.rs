//! matvec_fused on CUDA: the decode mat-vec with RMSNorm before and one
//! epilogue after, the semantics of
//! `kiln_core::ops::matvec_fused::matvec_fused_ref` (`kernels/matvec_fused.cu`).
//!
//! Same tiling, block decoding and accumulation as matmul's mat-vec
//! (`matvec.cuh`, the `kw` plan of [`crate::matmul::select_matmul`]); the
//! normalized input rows and the norm weight are staged in shared memory,
//! so `(m + 1) * k` floats must fit in 48 KiB
//! ([`fused_supported`]).

use crate::kernels::MATVEC_FUSED;
use crate::kv::KvViewMut;
use crate::launch::{arg, launch_ex};
use crate::matmul::{
    check_alignment, matvec_plan, wname_of, MatmulKernel, MV_ROWS, MV_THREADS, MV_WARPS,
};
use crate::matvec_staged::{stage_bytes, stage_copy_width, staged};
use crate::matvec_tile::{
    fused_tile, id_tile_bytes, q8_dot_type, tile_plan, tile_target, tile_xq_bytes, FusedTile,
    TilePlan,
};
use crate::registry::Variant;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaView, CudaViewMut, DevicePtr, DevicePtrMut, DeviceRepr, LaunchConfig};
use kiln_core::ops::matvec_fused::{FusedEpilogue, FusedLens, MatvecFusedParams, FUSED_MAX_ROWS};
use kiln_core::{DType, Error, KvType};

const OP: &str = "matvec_fused";
/// Dynamic shared memory a pair-kernel launch may use: the 48 KiB a block
/// gets without opting in, less 1 KiB for the kernel's static arrays
/// (`red`, `part`: at most 384 bytes; the same reserve as
/// `matvec_tile::tile_plan`).
const SMEM_LIMIT: usize = 47 * 1024;
/// Weight formats with a kernel: every format of the plain mat-vec
/// (`matmul.cu`), in the order of the backend's per-format function tables.
const WTYPES: [DType; N_WTYPES] = crate::matmul::WTYPES;
/// How many weight formats have a fused kernel.
pub const N_WTYPES: usize = 19;

/// Every weight format with a fused kernel (the compile test builds each
/// one's variant).
pub fn fused_wtypes() -> &'static [DType] {
    &WTYPES
}

/// The `#define`s of `wtype`'s variant of matvec_fused.cu: its block type
/// (`KILN_MVF_W`) and accumulation loop (`KILN_MVF_KIND`: 0 float, 1 the
/// 32-element block formats of matvec.cuh, 2 decode_kq.cuh's sub-block
/// formats).
pub fn variant_defines(wtype: DType) -> String {
    let ty = match wtype {
        DType::Q4_0 => "Q4_0T",
        DType::Q4_1 => "Q4_1T",
        DType::Q8_0 => "Q8_0T",
        DType::Q5_0 => "Q5_0T",
        DType::Q5_1 => "Q5_1T",
        DType::IQ4_NL => "IQ4_NLT",
        DType::Q4_K => "Q4_KT",
        DType::Q5_K => "Q5_KT",
        DType::Q6_K => "Q6_KT",
        DType::IQ4_XS => "IQ4_XST",
        DType::Q3_K => "Q3_KT",
        DType::Q2_K => "Q2_KT",
        DType::IQ2_XXS => "IQ2_XXST",
        DType::IQ2_XS => "IQ2_XST",
        DType::IQ3_XXS => "IQ3_XXST",
        DType::IQ3_S => "IQ3_ST",
        DType::F32 => "F32T",
        DType::F16 => "F16T",
        _ => "BF16T",
    };
    let kind = match wtype {
        DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => 1,
        t if t.is_quantized() => 2,
        _ => 0,
    };
    let mut d = format!("#define KILN_MVF_W {ty}\n#define KILN_MVF_KIND {kind}\n");
    if let Some(dot) = q8_dot_type(wtype) {
        d.push_str(&format!("#define KILN_MVF_Q8DOT {dot}\n"));
    }
    d
}

/// Mirrors `struct FusedParams` in matvec_fused.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct FusedK {
    m: u64,
    n: u64,
    k: u64,
    row_bytes: u64,
    kw: u64,
    norm: u32,
    eps: f32,
    epi: u32,
    q_dim: u32,
    kv_dim: u32,
    head_dim: u32,
    n_rot: u32,
    n_ctx: u32,
    freq_base: f32,
    freq_scale: f32,
    log2_base: f64,
    cw: u64,
    stage_off: u64,
    /// QKV epilogue cache type: 0 f32, 1 f16, 2 bf16 (`KV_*` in the .cu).
    kv_type: u32,
    /// QKV epilogue: 1 = the caches are rings of `n_ctx` rows
    /// (`QkvRope::ring`: position `p` to row `p % n_ctx`).
    ring: u32,
    /// Tile kernels: weight rows per CTA and stack, shared bytes per stack.
    tile_rows: u64,
    tile_slot: u64,
}
const _: () = assert!(std::mem::size_of::<FusedK>() == 128);
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for FusedK {}

/// Why `p` has no fused kernel, or `None` when it has one (pure).
pub fn fused_supported(p: &MatvecFusedParams) -> Option<String> {
    let mm = &p.mm;
    if !WTYPES.contains(&mm.wtype) {
        return Some(format!("no fused mat-vec for {} weights", mm.wtype));
    }
    if mm.m == 0 || mm.m > FUSED_MAX_ROWS {
        return Some(format!(
            "m = {} (fused mat-vec takes 1..={FUSED_MAX_ROWS})",
            mm.m
        ));
    }
    if p.norm_eps.is_some() && (mm.m + 1).saturating_mul(mm.k).saturating_mul(4) > SMEM_LIMIT {
        return Some(format!(
            "normalized rows m {} x k {} exceed {SMEM_LIMIT} bytes of shared memory",
            mm.m, mm.k
        ));
    }
    let too_big = |v: usize| v > u32::MAX as usize;
    if too_big(mm.k) {
        return Some(format!("k = {} exceeds 32 bits", mm.k));
    }
    if let FusedEpilogue::Qkv(q) = p.epilogue {
        if too_big(mm.n) || too_big(q.n_ctx) {
            return Some("qkv dims exceed 32 bits".into());
        }
    }
    None
}

/// Device buffers of one fused launch (`None` for the absent ones).
pub struct FusedArgs<'a, 'b> {
    pub w: &'a CudaView<'b, u8>,
    pub x: &'a CudaView<'b, f32>,
    pub norm_w: Option<&'a CudaView<'b, f32>>,
    pub residual: Option<&'a CudaView<'b, f32>>,
    pub out: &'a mut CudaViewMut<'b, f32>,
    /// The caches of the QKV epilogue (both of one element type).
    pub k_cache: Option<KvViewMut<'a, 'b>>,
    pub v_cache: Option<KvViewMut<'a, 'b>>,
}

/// Which kernel of a format's variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kern {
    /// The pair kernel for `m` rows (`matvec_fused_m<m>`).
    Rows(usize),
    /// The tile kernels (m = 1): float or int8 activations.
    Tile,
    Q8Tile,
}

/// The kernel `which` of `wtype` weights: its format's variant of
/// matvec_fused.cu is compiled (or read from the disk cache) on first use;
/// its table holds the pair kernels for m = 1..=FUSED_MAX_ROWS, then the
/// tile kernels the format has.
fn function(be: &CudaBackend, wtype: DType, which: Kern) -> Result<&cudarc::driver::CudaFunction> {
    let i = WTYPES
        .iter()
        .position(|&t| t == wtype)
        .ok_or_else(|| CudaError::driver(OP, format!("no kernel for {wtype}")))?;
    let slot = &be.fused_fns[i];
    if slot.get().is_none() {
        let (label, defines) = (wname_of(wtype), variant_defines(wtype));
        let v = Variant {
            label,
            defines: &defines,
        };
        let mut names: Vec<String> = (1..=FUSED_MAX_ROWS)
            .map(|rows| format!("matvec_fused_m{rows}"))
            .collect();
        if wtype.is_quantized() {
            names.push("matvec_fused_tile_m1".into());
        }
        if q8_dot_type(wtype).is_some() {
            names.push("matvec_fused_q8tile_m1".into());
        }
        let table = names
            .iter()
            .map(|name| {
                be.registry()
                    .variant_function(be.context(), "matvec_fused", MATVEC_FUSED, v, name)
            })
            .collect::<Result<Vec<_>>>()?;
        let _ = slot.set(table);
    }
    let at = match which {
        Kern::Rows(m) => m.checked_sub(1),
        Kern::Tile => Some(FUSED_MAX_ROWS),
        Kern::Q8Tile => Some(FUSED_MAX_ROWS + 1),
    };
    slot.get()
        .and_then(|t| t.get(at?))
        .ok_or_else(|| CudaError::driver(OP, format!("no {which:?} kernel for {wtype}")))
}

/// Compile (or read from the disk cache) and load the matvec_fused
/// variants of every format the backend has, in parallel: one thread per
/// format, since NVRTC takes seconds per variant and runs outside the
/// registry's lock. What a later launch of any format would do on first
/// use, done at once (test and benchmark set-up on a cold machine).
pub fn warm_all(be: &CudaBackend) -> Result<()> {
    std::thread::scope(|s| {
        let jobs: Vec<_> = WTYPES
            .iter()
            .map(|&t| s.spawn(move || function(be, t, Kern::Rows(1)).map(|_| ())))
            .collect();
        jobs.into_iter().try_for_each(|j| {
            j.join()
                .map_err(|_| CudaError::driver(OP, "a warm-up thread panicked"))?
        })
    })
}

/// The tile launch of `p` when `be`'s tile mode is on and it applies (one
/// quantized row, 16-byte aligned weights, the tile and the optional
/// normalized x and int8 area fit the shared memory): the kernel, the
/// plan, the CTAs and the dynamic shared bytes.
fn tile_launch(
    be: &CudaBackend,
    p: &MatvecFusedParams,
    w: &CudaView<'_, u8>,
) -> Result<Option<(Kern, TilePlan, usize, usize)>> {
    let mm = &p.mm;
    let mode = fused_tile(be);
    if mode == FusedTile::Off || mm.m != 1 || !mm.wtype.is_quantized() || mm.n == 0 {
        return Ok(None);
    }
    let (wp, _g) = w.device_ptr(be.stream());
    if !wp.is_multiple_of(16) {
        return Ok(None);
    }
    let q8 = mode == FusedTile::Int8 && q8_dot_type(mm.wtype).is_some();
    let stacks = if p.epilogue == FusedEpilogue::SwiGlu {
        2
    } else {
        1
    };
    let rows = mm.n / stacks;
    let norm = if p.norm_eps.is_some() { 4 * mm.k } else { 0 };
    let extra = norm + if q8 { tile_xq_bytes(mm.k) } else { 0 };
    let target = tile_target(id_tile_bytes(be), stacks);
    let Some(t) = tile_plan(mm.w_row_bytes()?, stacks, target, extra) else {
        return Ok(None);
    };
    let kern = if q8 { Kern::Q8Tile } else { Kern::Tile };
    Ok(Some((
        kern,
        t,
        rows.div_ceil(t.rows),
        stacks * t.slot + extra,
    )))
}

/// Run one fused mat-vec on the backend's stream. `positions`: `[m]`
/// positions for the QKV epilogue, already checked against the cache
/// ([`MatvecFusedParams::check_positions`]); each goes to cache row
/// `QkvRope::cache_row` (itself, or modulo `n_ctx` in a ring), and the
/// kernel drops any that is not a row (negative, or past a non-ring cache).
pub fn matvec_fused(
    be: &CudaBackend,
    p: &MatvecFusedParams,
    a: FusedArgs<'_, '_>,
    positions: Option<&CudaView<'_, i32>>,
) -> Result<()> {
    let len = |v: Option<usize>| v.unwrap_or(0);
    p.validate(&FusedLens {
        w: a.w.len(),
        x: a.x.len(),
        norm_w: len(a.norm_w.map(|v| v.len())),
        residual: len(a.residual.map(|v| v.len())),
        positions: len(positions.map(|v| v.len())),
        out: a.out.len(),
        k_cache: len(a.k_cache.as_ref().map(|v| v.len())),
        v_cache: len(a.v_cache.as_ref().map(|v| v.len())),
    })?;
    if let Some(why) = fused_supported(p) {
        return Err(Error::invalid(OP, why).into());
    }
    let mm = &p.mm;
    check_alignment(be, mm, a.w, a.x)?;
    // Decode mat-vecs are latency-bound (a few hundred CTAs, one warp per
    // scheduler): all four warps of a CTA split k over one row pair, which
    // halves each warp's serial work against matmul's bandwidth plan.
    // matmul's plan (kw warps per row pair): measured against kw = 4 for
    // every shape, it is faster on SmolLM2's decode (1212 vs 1037 t/s).
    let kw = match matvec_plan(mm, mm.m, staged(be)) {
        MatmulKernel::MatVec { kw, .. } if mm.wtype.is_quantized() => kw,
        _ => MV_WARPS,
    };
    let mut k = FusedK {
        m: mm.m as u64,
        n: mm.n as u64,
        k: mm.k as u64,
        row_bytes: mm.w_row_bytes()? as u64,
        kw: kw as u64,
        norm: p.norm_eps.is_some() as u32,
        eps: p.norm_eps.unwrap_or(0.0),
        ..Default::default()
    };
    k.epi = match p.epilogue {
        FusedEpilogue::Store => 0,
        FusedEpilogue::Residual => 1,
        FusedEpilogue::SwiGlu => 2,
        FusedEpilogue::Qkv(q) => {
            k.q_dim = q.q_dim as u32;
            k.kv_dim = q.kv_dim as u32;
            k.head_dim = q.head_dim as u32;
            k.n_rot = q.n_rot as u32;
            k.n_ctx = q.n_ctx as u32;
            k.freq_base = q.freq_base;
            k.freq_scale = q.freq_scale;
            k.log2_base = f64::from(q.freq_base).log2();
            k.ring = u32::from(q.ring);
            3
        }
    };
    if let (Some(kc), Some(vc)) = (&a.k_cache, &a.v_cache) {
        if kc.kv_type() != vc.kv_type() {
            return Err(Error::invalid(
                OP,
                format!(
                    "k cache is {} but v cache is {}",
                    kc.kv_type(),
                    vc.kv_type()
                ),
            )
            .into());
        }
        k.kv_type = match kc.kv_type() {
            KvType::F32 => 0,
            KvType::F16 => 1,
            KvType::BF16 => 2,
        };
    }
    let mut gx = mm.n.div_ceil(MV_ROWS * (MV_WARPS / kw));
    let tile = tile_launch(be, p, a.w)?;
    if let Some((_, t, ctas, _)) = tile {
        gx = ctas;
        k.tile_rows = t.rows as u64;
        k.tile_slot = t.slot as u64;
    }
    if gx > i32::MAX as usize {
        return Err(Error::invalid(OP, format!("n = {} is too large for the grid", mm.n)).into());
    }
    // Dynamic shared memory: the normalized rows and norm weight, then the
    // staging area (quantized rows staged by cp.async, matvec_staged.cuh)
    // where it fits the limit; otherwise the direct-load loop runs.
    let norm_bytes = if p.norm_eps.is_some() {
        (mm.m + 1) * mm.k * 4
    } else {
        0
    };
    let mut shared = norm_bytes;
    if let Some((_, _, _, bytes)) = tile {
        shared = bytes;
    } else if staged(be) {
        let (wp, _gw) = a.w.device_ptr(be.stream());
        let (xp, _gx) = a.x.device_ptr(be.stream());
        let cw = stage_copy_width(mm.wtype.is_quantized(), k.row_bytes as usize, wp, xp);
        if mm.wtype.is_quantized() && cw != 0 {
            let off = norm_bytes.next_multiple_of(16);
            let bytes = stage_bytes(mm.wtype);
            if off + bytes <= SMEM_LIMIT {
                k.cw = cw;
                k.stage_off = off as u64;
                shared = off + bytes;
            }
        } else {
            k.cw = cw;
        }
    }
    let cfg = LaunchConfig {
        grid_dim: (gx as u32, 1, 1),
        block_dim: (MV_THREADS, 1, 1),
        shared_mem_bytes: shared as u32,
    };
    if matches!(p.epilogue, FusedEpilogue::Qkv(_)) && (a.k_cache.is_none() || a.v_cache.is_none()) {
        return Err(Error::invalid(OP, "qkv epilogue without both caches").into());
    }
    let f = function(be, mm.wtype, tile.map_or(Kern::Rows(mm.m), |t| t.0))?;
    let st = be.stream();
    // Absent buffers are passed as x (never dereferenced: the params say so).
    let (mut pw, _gw) = a.w.device_ptr(st);
    let (mut px, _gx) = a.x.device_ptr(st);
    let (mut pn, _gn) = a.norm_w.unwrap_or(a.x).device_ptr(st);
    let (mut pr, _gr) = a.residual.unwrap_or(a.x).device_ptr(st);
    let (mut pp, _gp) = match positions {
        Some(v) => v.device_ptr(st),
        None => a.x.device_ptr(st),
    };
    let (mut po, _go) = a.out.device_ptr_mut(st);
    let (mut kc, mut vc) = (a.k_cache, a.v_cache);
    let (mut pk, _gk) = match kc.as_mut() {
        Some(v) => v.device_ptr_mut(st),
        None => a.x.device_ptr(st),
    };
    let (mut pv, _gv) = match vc.as_mut() {
        Some(v) => v.device_ptr_mut(st),
        None => a.x.device_ptr(st),
    };
    let mut params = [
        arg(&mut k),
        arg(&mut pw),
        arg(&mut px),
        arg(&mut pn),
        arg(&mut pr),
        arg(&mut pp),
        arg(&mut po),
        arg(&mut pk),
        arg(&mut pv),
    ];
    // SAFETY: `params` match matvec_fused_<w>_f32_m<M>(FusedParams, const
    // u8* w, const float* x, const float* norm_w, const float* res, const
    // i32* pos, float* out, void* kc, void* vc) with kc / vc of the element
    // type params.kv_type names (both caches checked to be of it); every length was validated
    // for the stages the params enable, absent buffers are never read or
    // written (their stage is off), dynamic shared memory holds the m
    // normalized rows and the norm weight (the tile kernels: tile_launch's
    // bytes, the tiles as tile_plan sized them, then the normalized row and
    // the int8 area), alignment was checked (tiles: 16-byte aligned
    // weights, each tile read from its start rounded down to 16 bytes, inside
    // the weights, to its end), the kernel writes out and
    // cache rows only inside their bounds (cache rows below n_ctx: the
    // position, or it modulo n_ctx in a ring, others dropped; validate
    // checked both caches hold n_ctx rows), and it waits for the previous
    // kernel (kiln_grid_wait) before touching anything but the weights.
    unsafe { launch_ex(be, f, cfg, be.pdl(), &mut params) }
        .map_err(|e| CudaError::driver("launch matvec_fused", e))?;
    Ok(())
}
