//! What the CUDA benches share: opening the GPU (or saying why not), GPU
//! timing with CUDA events, and the streaming-read ceiling measured in the
//! same run (`kiln_cuda::matmul::bench_read_sum` over 2 GiB, uint4 loads),
//! which every table reports its bandwidth against.
#![allow(dead_code)]

use cudarc::driver::sys::CUevent_flags;
use kiln_cuda::matmul::bench_read_sum;
use kiln_cuda::{CudaBackend, CudaError, CudaSlice};

/// The GPU, or `None` after printing why the bench is skipped.
pub fn backend(bench: &str) -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(be) => {
            let i = be.info();
            println!(
                "{bench} bench on {} (sm_{}{}, {} SMs)",
                i.name, i.cc.0, i.cc.1, i.sm_count
            );
            Some(be)
        }
        Err(e) => {
            println!("SKIPPED: {bench} bench needs a CUDA GPU: {e}");
            None
        }
    }
}

/// GPU time (ms) of calls of `f(i)`: (median of `iters` event-bracketed
/// calls, mean of `iters` back-to-back calls). Before the bracketed calls
/// `busy` keeps the GPU occupied while the host enqueues them all, so each
/// bracket holds the kernels' own time, not the host's launch gaps; the
/// back-to-back mean (no busy kernel) includes any host-side bottleneck.
/// Three warm-up calls first (kernel load, cuBLAS heuristics, scratch).
pub fn time_ms(
    be: &CudaBackend,
    iters: usize,
    mut busy: impl FnMut() -> Result<(), CudaError>,
    mut f: impl FnMut(usize) -> Result<(), CudaError>,
) -> (f64, f64) {
    for i in 0..3 {
        f(i).unwrap();
    }
    be.synchronize().unwrap();
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    busy().unwrap();
    let mut ev = Vec::with_capacity(iters);
    for i in 0..iters {
        let a = be.stream().record_event(flags).unwrap();
        f(i).unwrap();
        let b = be.stream().record_event(flags).unwrap();
        ev.push((a, b));
    }
    be.synchronize().unwrap();
    let mut t: Vec<f64> = ev
        .iter()
        .map(|(a, b)| f64::from(a.elapsed_ms(b).unwrap()))
        .collect();
    t.sort_by(f64::total_cmp);
    let a = be.stream().record_event(flags).unwrap();
    for i in 0..iters {
        f(i).unwrap();
    }
    let b = be.stream().record_event(flags).unwrap();
    be.synchronize().unwrap();
    let mean = f64::from(a.elapsed_ms(&b).unwrap()) / iters as f64;
    (t[iters / 2], mean)
}

/// The streaming-read ceiling: a 2 GiB buffer summed by `bench_read_sum`.
pub struct Ceiling {
    src: CudaSlice<u32>,
    sum: CudaSlice<u32>,
    /// Measured read bandwidth, GB/s.
    pub gbs: f64,
}

impl Ceiling {
    /// Allocate the buffer and measure (median of 10 reads).
    pub fn measure(be: &CudaBackend) -> Ceiling {
        let words = 512usize << 20;
        let src = be.alloc_zeros::<u32>(words).unwrap();
        let mut sum = be.alloc_zeros::<u32>(1).unwrap();
        let mut sum2 = be.alloc_zeros::<u32>(1).unwrap();
        let (ms, _) = time_ms(
            be,
            10,
            || busy_reads(be, &src, &mut sum),
            |_| bench_read_sum(be, &src.slice(..), &mut sum2.slice_mut(..)),
        );
        let gbs = (words * 4) as f64 / ms / 1e6;
        println!("read ceiling: 2 GiB in {ms:.3} ms = {gbs:.0} GB/s (same run)");
        Ceiling { src, sum, gbs }
    }

    /// Three 2 GiB reads: keeps the GPU busy (a few ms) while the host
    /// enqueues the timed calls (see [`time_ms`]).
    pub fn busy(&mut self, be: &CudaBackend) -> Result<(), CudaError> {
        busy_reads(be, &self.src, &mut self.sum)
    }

    /// `gbs` as a percentage of the ceiling.
    pub fn pct(&self, gbs: f64) -> f64 {
        100.0 * gbs / self.gbs
    }
}

fn busy_reads(
    be: &CudaBackend,
    src: &CudaSlice<u32>,
    sum: &mut CudaSlice<u32>,
) -> Result<(), CudaError> {
    for _ in 0..3 {
        bench_read_sum(be, &src.slice(..), &mut sum.slice_mut(..))?;
    }
    Ok(())
}
