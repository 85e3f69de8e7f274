//! matmul on the CPU (`kiln_core::ops::matmul`): `out[m, n] = x[m, k] · w[n, k]ᵀ`.
//!
//! Validate → quantize activations once → tiles over threads:
//!
//! - Quantized weights stay in their blocks; `x` is quantized once per call
//!   into a per-thread scratch that only grows, and every output is a sum
//!   of integer block dots ([`crate::quant_dot`]): 8-bit codes with f32
//!   scales per 32 elements ([`Q8Acts`], the Q8_0/Q8_1 codes) for Q4_0,
//!   Q4_1, Q5_0, Q5_1, Q8_0 and IQ4_NL; GGML Q8_K blocks per 256 elements
//!   ([`Q8KActs`]) for Q2_K..Q6_K and IQ4_XS.
//! - The work is cut into column strips (runs of weight rows) × activation
//!   row blocks; a task computes tiles of `R` weight rows × `C` activation
//!   rows so each weight block is expanded once and reused for `C` tokens
//!   while it sits in registers (mat-vec: 4 × 1; mat-mat: 2 × 4).
//! - Mat-vec (decode, `m` small) uses exactly `threads` strips: these calls
//!   take microseconds and rayon's per-task overhead would show.
//! - F32 / F16 / BF16 weights: one f32 FMA dot per output, same split.
//! - MLX affine weights ([`DType::Mlx`]): activations stay f32. Mat-vec:
//!   per group `scale * sum q*x + bias * sum x` ([`quant_dot::dot_mlx_row`],
//!   group sums of `x` once per call). Mat-mat (a task with 2+ activation
//!   rows): weight rows are dequantized to f32 once per task, 4 at a time,
//!   and multiplied with the task's activation rows in 4 × 2 register tiles
//!   ([`quant_dot::dot_f32_tile`]).
//!
//! Threading cost: a split call enters `ctx.pool()`. From a thread outside the
//! pool that is a cross-thread wake-up (measured ~10 µs median on the idle
//! 2-core VM, ~13 µs under load: comparable to a whole 576×576 mat-vec, so
//! such small calls run on the calling thread instead); an engine should run its
//! forward pass inside one `ctx.pool().install(..)`, where the split costs a
//! work-steal between already-running workers.
//!
//! Non-finite activations give unspecified (but memory-safe) outputs: the
//! block scale of a block holding NaN or ±inf is not meaningful.

use crate::quant_dot::{
    self, dot_float_row, pack_supported, Acts, PackedWeights, Q8Acts, Q8KActs, QFormat, Tile,
    TileSpec, PACK_MAX_M, PACK_ROWS, TILE_C, TILE_R,
};
use crate::CpuContext;
use kiln_core::ops::matmul::MatmulParams;
use kiln_core::quant::MlxFormat;
use kiln_core::quant::{QK, QK_K};
use kiln_core::{DType, Error, Result};
use rayon::prelude::*;
use std::cell::RefCell;

const OP: &str = "matmul";

/// Activation rows per task block for mat-mat: 64 rows of k ≤ 2048 codes
/// (≈ 140 KB with scales) stay in L2 while a strip's weight tiles pass by.
const ROW_BLOCK: usize = 64;

/// Below this many multiply-adds (`m*n*k`) the call is split into exactly
/// `threads` tasks; above it, into `STRIPS_PER_THREAD` strips per thread
/// for load balance.
const SMALL_WORK: usize = 1 << 22;
const STRIPS_PER_THREAD: usize = 2;

/// Called from outside the pool, a call below this many multiply-adds runs
/// on the calling thread: waking a pool worker (~10 µs median measured on
/// the idle 2-core VM) costs more than it saves (576×576 Q4_1 takes ~16 µs on one
/// core). Inside the pool, work is always split.
const OUTSIDE_POOL_MIN_SPLIT: usize = 1 << 19;

thread_local! {
    /// Quantized-activation scratch of the calling thread (grows, never shrinks).
    static ACTS: RefCell<Q8Acts> = RefCell::new(Q8Acts::new());
    /// The same for the Q8_K activations of the super-block formats.
    static ACTS_K: RefCell<Q8KActs> = RefCell::new(Q8KActs::new());
    /// MLX: group sums of the activations (calling thread) and one
    /// dequantized weight row (each worker); grow, never shrink.
    static MLX_GSUM: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static MLX_ROW: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out = x · wᵀ` (see the module docs). `w`: `[n, k]` rows of
/// `p.wtype.row_bytes(k)` bytes; `x`: `[m, k]`; `out`: `[m, n]`.
pub fn matmul(
    ctx: &CpuContext,
    p: &MatmulParams,
    w: &[u8],
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(w.len(), x.len(), out.len())?;
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    if let DType::Mlx(f) = p.wtype {
        return matmul_mlx(ctx, p, f, w, x, out);
    }
    let Some(f) = QFormat::of(p.wtype) else {
        return matmul_float(ctx, p, w, x, out);
    };
    if f.uses_q8k() {
        return with_scratch(&ACTS_K, |acts| quantize_and_run_k(ctx, p, w, x, acts, out));
    }
    with_scratch(&ACTS, |acts| quantize_and_run(ctx, p, w, x, acts, out))
}

/// Run `f` with this thread's scratch in `key` (grows, never shrinks); when
/// it is already borrowed (re-entered on this thread: cannot happen through
/// this module, but stay correct), with a one-off buffer.
fn with_scratch<T: Default, R>(
    key: &'static std::thread::LocalKey<RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => f(&mut s),
        Err(_) => f(&mut T::default()),
    })
}

fn quantize_and_run(
    ctx: &CpuContext,
    p: &MatmulParams,
    w: &[u8],
    x: &[f32],
    acts: &mut Q8Acts,
    out: &mut [f32],
) -> Result<()> {
    quantize_activations(ctx, x, p.m, p.k, acts)?;
    matmul_quantized(ctx, p, w, acts, out)
}

fn quantize_and_run_k(
    ctx: &CpuContext,
    p: &MatmulParams,
    w: &[u8],
    x: &[f32],
    acts: &mut Q8KActs,
    out: &mut [f32],
) -> Result<()> {
    quantize_activations_k(ctx, x, p.m, p.k, acts)?;
    matmul_quantized_k(ctx, p, w, acts, out)
}

/// `out = x · wᵀ` with the whole 16-row groups of `w` taken from `packed`
/// (the same matrix repacked by [`PackedWeights::pack`]; AVX-512 VNNI
/// kernel, see `quant_dot::packed`) and the remaining rows from `w`. For
/// `m > PACK_MAX_M`, or a CPU without the kernel, this is [`matmul`].
pub fn matmul_packed(
    ctx: &CpuContext,
    p: &MatmulParams,
    packed: &PackedWeights,
    w: &[u8],
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(w.len(), x.len(), out.len())?;
    if (packed.dtype(), packed.n(), packed.k()) != (p.wtype, p.n, p.k) {
        return Err(Error::invalid(
            OP,
            format!(
                "packed weights are {} [{}, {}], the call wants {} [{}, {}]",
                packed.dtype(),
                packed.n(),
                packed.k(),
                p.wtype,
                p.n,
                p.k
            ),
        ));
    }
    if p.m > PACK_MAX_M || !pack_supported(ctx.features()) {
        return matmul(ctx, p, w, x, out);
    }
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    let row_bytes = p.w_row_bytes()?;
    let (feat, f) = (ctx.features(), packed.format());
    if f.uses_q8k() {
        return with_scratch(&ACTS_K, |acts| {
            quantize_activations_k(ctx, x, p.m, p.k, acts)?;
            run_packed(ctx, p, packed, out, Acts::Q8K(acts), |j0, nr| {
                let wt = &w[j0 * row_bytes..(j0 + nr) * row_bytes];
                quant_dot::dot_tile_k(feat, f, wt, acts, TileSpec { nr, i0: 0, nc: p.m })
            })
        });
    }
    with_scratch(&ACTS, |acts| {
        quantize_activations(ctx, x, p.m, p.k, acts)?;
        run_packed(ctx, p, packed, out, Acts::Q8(acts), |j0, nr| {
            let wt = &w[j0 * row_bytes..(j0 + nr) * row_bytes];
            quant_dot::dot_tile(feat, f, wt, acts, TileSpec { nr, i0: 0, nc: p.m })
        })
    })
}

/// Strips of whole 16-row groups over threads: one packed call per strip
/// for its groups, then `tile(j0, nr)` for the rows `j0..j0 + nr` past the
/// packed ones (the last strip's tail) from the original bytes.
fn run_packed<T>(
    ctx: &CpuContext,
    p: &MatmulParams,
    packed: &PackedWeights,
    out: &mut [f32],
    acts: Acts<'_>,
    tile: T,
) -> Result<()>
where
    T: Fn(usize, usize) -> Result<Tile> + Sync,
{
    let (plan, full, feat) = (
        Plan::new(ctx, p, PACK_ROWS),
        packed.packed_rows(),
        ctx.features(),
    );
    let sink = OutSink::new(out);
    let m = p.m;
    run_tasks(ctx, &plan, |_rows, cols| {
        // m <= PACK_MAX_M == TILE_C: one row block, rows 0..m.
        let packed_end = cols.end.min(full);
        if cols.start < packed_end {
            let gs = cols.start / PACK_ROWS..packed_end.div_ceil(PACK_ROWS);
            // SAFETY: the writes go to (c, 16g + r) for c < m and the groups
            // of this task's columns (strips are multiples of 16 rows, tasks
            // disjoint); `out` holds m * n >= (m - 1) * n + 16 * gs.end.
            unsafe {
                packed.dots_raw(feat, gs, acts, m, sink.ptr.add(cols.start), p.n)?;
            }
        }
        for j0 in (cols.start.max(full)..cols.end).step_by(TILE_R) {
            let nr = TILE_R.min(cols.end - j0);
            let t = tile(j0, nr)?;
            for (r, tr) in t.iter().enumerate().take(nr) {
                for (c, v) in tr.iter().enumerate().take(m) {
                    // SAFETY: (c, j0+r) lies in this task's rows × cols.
                    unsafe { sink.write(c * p.n + j0 + r, *v) };
                }
            }
        }
        Ok(())
    })
}

/// Quantize `x: [m, k]` to Q8_K blocks (`k` a multiple of 256), rows split
/// over the pool when `m` is large.
pub fn quantize_activations_k(
    ctx: &CpuContext,
    x: &[f32],
    m: usize,
    k: usize,
    acts: &mut Q8KActs,
) -> Result<()> {
    let feat = ctx.features();
    let threads = ctx.threads();
    if m < 2 * threads || threads == 1 {
        return acts.quantize(feat, x, m, k);
    }
    acts.quantize_with(x, m, k, |x, blocks| {
        let nb = k / QK_K;
        let rows = m.div_ceil(threads);
        ctx.pool().install(|| {
            x.par_chunks(rows * k.max(1))
                .zip(blocks.par_chunks_mut((rows * nb).max(1)))
                .for_each(|(x, b)| quant_dot::quantize_rows_k(feat, x, b));
        });
    })
}

/// Quantize `x: [m, k]` into `acts`, rows split over the pool when `m` is large.
pub fn quantize_activations(
    ctx: &CpuContext,
    x: &[f32],
    m: usize,
    k: usize,
    acts: &mut Q8Acts,
) -> Result<()> {
    let feat = ctx.features();
    let threads = ctx.threads();
    if m < 2 * threads || threads == 1 {
        return acts.quantize(feat, x, m, k);
    }
    acts.quantize_with(x, m, k, |x, qs, ds| {
        let nb = k / QK;
        let rows = m.div_ceil(threads);
        ctx.pool().install(|| {
            x.par_chunks(rows * k.max(1))
                .zip(qs.par_chunks_mut((rows * nb).max(1)))
                .zip(ds.par_chunks_mut((rows * nb).max(1)))
                .for_each(|((x, qs), ds)| quant_dot::quantize_rows(feat, x, qs, ds));
        });
    })
}

/// The matmul over activations already quantized (`acts`: `m` rows of
/// `k/32` blocks). Public so tests can feed GGML Q8_0/Q8_1 blocks and compare
/// with the reference dots to f32 rounding.
pub fn matmul_quantized(
    ctx: &CpuContext,
    p: &MatmulParams,
    w: &[u8],
    acts: &Q8Acts,
    out: &mut [f32],
) -> Result<()> {
    let Some(f) = QFormat::of(p.wtype) else {
        return Err(Error::UnsupportedDType {
            op: OP,
            dtype: p.wtype,
        });
    };
    p.validate(w.len(), p.m.saturating_mul(p.k), out.len())?;
    if acts.m() != p.m || acts.blocks_per_row() * QK != p.k {
        return Err(Error::invalid(
            OP,
            format!(
                "activations are {} x {}, expected {} x {}",
                acts.m(),
                acts.blocks_per_row() * QK,
                p.m,
                p.k
            ),
        ));
    }
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    let feat = ctx.features();
    run_tiles(ctx, p, w, out, |wt, spec| {
        quant_dot::dot_tile(feat, f, wt, acts, spec)
    })
}

/// The matmul over Q8_K activations already quantized (`acts`: `m` rows of
/// `k/256` blocks) for the super-block formats (Q2_K..Q6_K, IQ4_XS).
/// Public so tests can feed GGML Q8_K blocks and compare with the reference
/// dots to f32 rounding.
pub fn matmul_quantized_k(
    ctx: &CpuContext,
    p: &MatmulParams,
    w: &[u8],
    acts: &Q8KActs,
    out: &mut [f32],
) -> Result<()> {
    let f = match QFormat::of(p.wtype) {
        Some(f) if f.uses_q8k() => f,
        _ => {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: p.wtype,
            })
        }
    };
    p.validate(w.len(), p.m.saturating_mul(p.k), out.len())?;
    if acts.m() != p.m || acts.blocks_per_row() * QK_K != p.k {
        return Err(Error::invalid(
            OP,
            format!(
                "Q8_K activations are {} x {}, expected {} x {}",
                acts.m(),
                acts.blocks_per_row() * QK_K,
                p.m,
                p.k
            ),
        ));
    }
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    let feat = ctx.features();
    run_tiles(ctx, p, w, out, |wt, spec| {
        quant_dot::dot_tile_k(feat, f, wt, acts, spec)
    })
}

/// Cut `out` into tasks (see [`Plan`]) and tiles, computing each tile with
/// `tile(weight rows, spec)`.
fn run_tiles<F>(
    ctx: &CpuContext,
    p: &MatmulParams,
    w: &[u8],
    out: &mut [f32],
    tile: F,
) -> Result<()>
where
    F: Fn(&[u8], TileSpec) -> Result<Tile> + Sync,
{
    let row_bytes = p.w_row_bytes()?;
    // Tile shape: mat-vec streams 4 weight rows against one activation row;
    // mat-mat reuses each pair of weight rows for 4 activation rows.
    let (tr, tc) = if p.m == 1 { (TILE_R, 1) } else { (2, TILE_C) };
    let plan = Plan::new(ctx, p, tr);
    let sink = OutSink::new(out);
    run_tasks(ctx, &plan, |rows, cols| {
        for j0 in cols.clone().step_by(tr) {
            let nr = tr.min(cols.end - j0);
            let wt = &w[j0 * row_bytes..(j0 + nr) * row_bytes];
            for i0 in rows.clone().step_by(tc) {
                let nc = tc.min(rows.end - i0);
                let t = tile(wt, TileSpec { nr, i0, nc })?;
                for (r, tr_) in t.iter().enumerate().take(nr) {
                    for (c, v) in tr_.iter().enumerate().take(nc) {
                        // SAFETY: (i0+c, j0+r) lies in this task's rows × cols,
                        // and tasks' column/row ranges are disjoint.
                        unsafe { sink.write((i0 + c) * p.n + j0 + r, *v) };
                    }
                }
            }
        }
        Ok(())
    })
}

/// F32 / F16 / BF16 weights: one FMA dot per output.
fn matmul_float(
    ctx: &CpuContext,
    p: &MatmulParams,
    w: &[u8],
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    let row_bytes = p.w_row_bytes()?;
    let feat = ctx.features();
    let plan = Plan::new(ctx, p, 1);
    let sink = OutSink::new(out);
    run_tasks(ctx, &plan, |rows, cols| {
        for i in rows {
            let xi = &x[i * p.k..(i + 1) * p.k];
            for j in cols.clone() {
                let v = dot_float_row(feat, p.wtype, &w[j * row_bytes..(j + 1) * row_bytes], xi);
                // SAFETY: (i, j) lies in this task's disjoint rows × cols.
                unsafe { sink.write(i * p.n + j, v) };
            }
        }
        Ok(())
    })
}

/// MLX affine weights (see the module docs).
fn matmul_mlx(
    ctx: &CpuContext,
    p: &MatmulParams,
    f: MlxFormat,
    w: &[u8],
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    if p.k == 0 {
        out.fill(0.0); // empty dots
        return Ok(());
    }
    with_scratch(&MLX_GSUM, |gsum| {
        matmul_mlx_with(ctx, p, f, w, x, out, gsum)
    })
}

fn matmul_mlx_with(
    ctx: &CpuContext,
    p: &MatmulParams,
    f: MlxFormat,
    w: &[u8],
    x: &[f32],
    out: &mut [f32],
    gsum: &mut Vec<f32>,
) -> Result<()> {
    let row_bytes = p.w_row_bytes()?;
    let (g, feat) = (f.group_size(), ctx.features());
    let ng = p.k / g;
    {
        gsum.clear();
        gsum.resize(p.m * ng, 0.0);
        for (xi, gi) in x.chunks_exact(p.k).zip(gsum.chunks_exact_mut(ng.max(1))) {
            quant_dot::mlx_group_sums(g, xi, gi);
        }
        let gsum: &[f32] = gsum;
        let plan = Plan::new(ctx, p, 1);
        let sink = OutSink::new(out);
        run_tasks(ctx, &plan, |rows, cols| {
            if rows.len() == 1 {
                let i = rows.start;
                let (xi, gi) = (&x[i * p.k..(i + 1) * p.k], &gsum[i * ng..(i + 1) * ng]);
                for j in cols {
                    let wj = &w[j * row_bytes..(j + 1) * row_bytes];
                    let v = quant_dot::dot_mlx_row(feat, f, wj, xi, gi);
                    // SAFETY: (i, j) lies in this task's disjoint rows × cols.
                    unsafe { sink.write(i * p.n + j, v) };
                }
                return Ok(());
            }
            // Tiles of 4 weight rows (dequantized once per task) × 2
            // activation rows; missing rows of a remainder tile repeat
            // row 0 and their results are dropped.
            let (tr, tc) = (quant_dot::F32_TILE_R, quant_dot::F32_TILE_C);
            let run = |buf: &mut Vec<f32>| -> Result<()> {
                buf.resize(tr * p.k, 0.0);
                for j0 in cols.clone().step_by(tr) {
                    let nr = tr.min(cols.end - j0);
                    for (r, wb) in buf.chunks_exact_mut(p.k).take(nr).enumerate() {
                        let wj = &w[(j0 + r) * row_bytes..(j0 + r + 1) * row_bytes];
                        quant_dot::dequantize_mlx_row(feat, f, wj, wb);
                    }
                    let wrow = |r: usize| &buf[if r < nr { r } else { 0 } * p.k..][..p.k];
                    let ws = [wrow(0), wrow(1), wrow(2), wrow(3)];
                    for i0 in rows.clone().step_by(tc) {
                        let nc = tc.min(rows.end - i0);
                        let xrow = |c: usize| {
                            let i = if c < nc { i0 + c } else { i0 };
                            &x[i * p.k..(i + 1) * p.k]
                        };
                        let t = quant_dot::dot_f32_tile(feat, ws, [xrow(0), xrow(1)]);
                        for (c, tcol) in t.iter().enumerate().take(nc) {
                            for (r, v) in tcol.iter().enumerate().take(nr) {
                                // SAFETY: (i0+c, j0+r) lies in this task's
                                // disjoint rows × cols.
                                unsafe { sink.write((i0 + c) * p.n + j0 + r, *v) };
                            }
                        }
                    }
                }
                Ok(())
            };
            with_scratch(&MLX_ROW, run)
        })
    }
}

/// How the `m × n` output is cut: `row_blocks` × `strips` tasks.
struct Plan {
    m: usize,
    n: usize,
    row_block: usize,
    strip: usize,
    tasks: usize,
    work: usize,
}

impl Plan {
    fn new(ctx: &CpuContext, p: &MatmulParams, align: usize) -> Plan {
        let threads = ctx.threads().max(1);
        let work = p.m.saturating_mul(p.n).saturating_mul(p.k);
        let strips = if work < SMALL_WORK || p.m <= TILE_C {
            threads
        } else {
            threads * STRIPS_PER_THREAD
        };
        // Strip width: a multiple of the tile rows, at least one tile.
        let strip = p.n.div_ceil(strips).div_ceil(align).max(1) * align;
        let row_block = if p.m <= TILE_C { p.m } else { ROW_BLOCK };
        let tasks = p.m.div_ceil(row_block) * p.n.div_ceil(strip);
        Plan {
            m: p.m,
            n: p.n,
            row_block,
            strip,
            tasks,
            work,
        }
    }
}

/// Run `f(rows, cols)` for every task of the plan on the pool (inline when
/// there is a single task); the first error wins.
fn run_tasks<F>(ctx: &CpuContext, plan: &Plan, f: F) -> Result<()>
where
    F: Fn(std::ops::Range<usize>, std::ops::Range<usize>) -> Result<()> + Sync,
{
    let n_strips = plan.n.div_ceil(plan.strip);
    let task = |t: usize| {
        let (ib, js) = (t / n_strips, t % n_strips);
        let rows = ib * plan.row_block..((ib + 1) * plan.row_block).min(plan.m);
        let cols = js * plan.strip..((js + 1) * plan.strip).min(plan.n);
        f(rows, cols)
    };
    let outside = ctx.pool().current_thread_index().is_none();
    if plan.tasks == 1 || ctx.threads() == 1 || (outside && plan.work < OUTSIDE_POOL_MIN_SPLIT) {
        return (0..plan.tasks).try_for_each(task);
    }
    ctx.pool().install(|| {
        (0..plan.tasks)
            .into_par_iter()
            .with_max_len(1)
            .try_for_each(task)
    })
}

/// Shared write access to `out` for tasks that own disjoint index sets.
struct OutSink<'a> {
    ptr: *mut f32,
    len: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: OutSink is only handed to tasks that write disjoint indices (see
// `write`), and the borrow of `out` outlives all of them (rayon joins before
// `run_tasks` returns).
unsafe impl Sync for OutSink<'_> {}

impl<'a> OutSink<'a> {
    fn new(out: &'a mut [f32]) -> Self {
        OutSink {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            _out: std::marker::PhantomData,
        }
    }

    /// Store `v` at `idx` (ignored when out of range).
    ///
    /// # Safety
    /// No other thread may access `idx` during the call's lifetime of the sink.
    #[inline]
    unsafe fn write(&self, idx: usize, v: f32) {
        if idx < self.len {
            // SAFETY: idx in bounds; exclusive per the caller's contract.
            unsafe { self.ptr.add(idx).write(v) };
        }
    }
}
