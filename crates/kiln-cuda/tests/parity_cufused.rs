//! GPU parity of `kiln_cuda::matvec_fused` against `matvec_fused_ref`: the
//! testkit's case table (every weight format, m 1..8, every epilogue, odd
//! shapes, SmolLM2's decode layer and head), with the output and both caches
//! between sentinel guards and NaN-poisoned. Skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::matvec_fused::{FusedRefIo, MatvecFusedParams};
use kiln_cuda::matvec_fused::{matvec_fused, FusedArgs};
use kiln_cuda::{CudaBackend, CudaError};
use kiln_testkit::cases::matvec_fused::check_matvec_fused_with;
use kiln_testkit::Options;

fn core(e: CudaError) -> kiln_core::Error {
    match e {
        CudaError::Core(e) => e,
        other => kiln_core::Error::invalid("matvec_fused (cuda)", other.to_string()),
    }
}

const GUARD: usize = 64;

fn up<T: cudarc::driver::DeviceRepr + Copy + Default>(
    be: &CudaBackend,
    v: &[T],
) -> kiln_core::Result<cudarc::driver::CudaSlice<T>> {
    let one = [T::default()];
    be.upload(if v.is_empty() { &one[..] } else { v })
        .map_err(core)
}

/// `init` (the caller's poison) between two sentinel zones, on the device.
fn guarded_up(be: &CudaBackend, init: &[f32]) -> kiln_core::Result<cudarc::driver::CudaSlice<f32>> {
    let s = kiln_testkit::guard::sentinel();
    let mut host = vec![s; init.len() + 2 * GUARD];
    host[GUARD..GUARD + init.len()].copy_from_slice(init);
    up(be, &host)
}

/// Check the sentinels and copy the interior back into `out`.
fn guarded_down(
    be: &CudaBackend,
    dev: &cudarc::driver::CudaSlice<f32>,
    what: &str,
    out: &mut [f32],
) -> kiln_core::Result<()> {
    let back = be.download(dev).map_err(core)?;
    let s = kiln_testkit::guard::sentinel().to_bits();
    let n = out.len();
    let bad = back[..GUARD]
        .iter()
        .chain(&back[GUARD + n..])
        .filter(|v| v.to_bits() != s)
        .count();
    if bad > 0 {
        return Err(kiln_core::Error::invalid(
            "guard",
            format!("{bad} guard values around {what} overwritten"),
        ));
    }
    out.copy_from_slice(&back[GUARD..GUARD + n]);
    Ok(())
}

fn run(be: &CudaBackend, p: &MatvecFusedParams, io: FusedRefIo<'_>) -> kiln_core::Result<()> {
    // What kiln::ops::matvec_fused does on the host before launching.
    p.check_positions(io.positions)?;
    let dw = up(be, io.w)?;
    let dx = up(be, io.x)?;
    let dn = up(be, io.norm_w)?;
    let dr = up(be, io.residual)?;
    let dp = up(be, io.positions)?;
    let mut dout = guarded_up(be, io.out)?;
    let mut dk = guarded_up(be, io.k_cache)?;
    let mut dv = guarded_up(be, io.v_cache)?;
    let (no, nk, nv) = (io.out.len(), io.k_cache.len(), io.v_cache.len());
    {
        let w = dw.slice(0..io.w.len());
        let x = dx.slice(0..io.x.len());
        let n = dn.slice(0..io.norm_w.len());
        let r = dr.slice(0..io.residual.len());
        let pos = dp.slice(0..io.positions.len());
        let mut out = dout.slice_mut(GUARD..GUARD + no);
        let mut kc = dk.slice_mut(GUARD..GUARD + nk);
        let mut vc = dv.slice_mut(GUARD..GUARD + nv);
        let has_kv = nk > 0;
        matvec_fused(
            be,
            p,
            FusedArgs {
                w: &w,
                x: &x,
                norm_w: (!io.norm_w.is_empty()).then_some(&n),
                residual: (!io.residual.is_empty()).then_some(&r),
                out: &mut out,
                k_cache: has_kv.then_some(&mut kc),
                v_cache: has_kv.then_some(&mut vc),
            },
            (!io.positions.is_empty()).then_some(&pos),
        )
        .map_err(core)?;
    }
    guarded_down(be, &dout, "out", io.out)?;
    guarded_down(be, &dk, "k_cache", io.k_cache)?;
    guarded_down(be, &dv, "v_cache", io.v_cache)
}

#[test]
fn matvec_fused_matches_reference() {
    let be = match CudaBackend::new(0) {
        Ok(be) => be,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return;
        }
    };
    let imp = |p: &MatvecFusedParams, io: FusedRefIo<'_>| run(&be, p, io);
    // Direct-load and staged weights (kiln_cuda::matmul::staged).
    for on in [false, true] {
        kiln_cuda::matmul::set_staged(&be, on);
        let report = check_matvec_fused_with(&imp, &Options::default());
        eprintln!("staged {on}: {}", report.summary());
        report.into_result().unwrap();
    }
}
