//! GPU parity of `kiln_cuda::matvec_fused` against `matvec_fused_ref`: the
//! testkit's case table (every weight format, m 1..8, every epilogue, odd
//! shapes, SmolLM2's decode layer and head; the QKV cases with f32, f16 and
//! bf16 caches), with the output and both caches between sentinel guards
//! and NaN-poisoned. Skips without a GPU.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::matvec_fused::{FusedRefIo, MatvecFusedParams};
use kiln_core::KvSliceMut;
use kiln_cuda::matvec_fused::{matvec_fused, FusedArgs};
use kiln_cuda::matvec_tile::{set_fused_tile, set_id_tile, FusedTile, TILE_AUTO};
use kiln_cuda::{CudaBackend, CudaError, KvViewMut};
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

/// `init` (the caller's poison) between two zones of `sentinel`, on the device.
fn guarded_up<T: cudarc::driver::DeviceRepr + Copy + Default>(
    be: &CudaBackend,
    init: &[T],
    sentinel: T,
) -> kiln_core::Result<cudarc::driver::CudaSlice<T>> {
    let mut host = vec![sentinel; init.len() + 2 * GUARD];
    host[GUARD..GUARD + init.len()].copy_from_slice(init);
    up(be, &host)
}

/// Check the sentinels and copy the interior back into `out`.
fn guarded_down<T: cudarc::driver::DeviceRepr + bytemuck::Pod + Default>(
    be: &CudaBackend,
    dev: &cudarc::driver::CudaSlice<T>,
    sentinel: T,
    what: &str,
    out: &mut [T],
) -> kiln_core::Result<()> {
    let back = be.download(dev).map_err(core)?;
    let n = out.len();
    let same = |v: &T| bytemuck::bytes_of(v) == bytemuck::bytes_of(&sentinel);
    let bad = back[..GUARD]
        .iter()
        .chain(&back[GUARD + n..])
        .filter(|v| !same(v))
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

/// A cache between guards on the device, by element type.
enum DevKv {
    F32(cudarc::driver::CudaSlice<f32>),
    F16(cudarc::driver::CudaSlice<u16>),
    BF16(cudarc::driver::CudaSlice<u16>),
}

impl DevKv {
    fn up(be: &CudaBackend, c: &KvSliceMut<'_>) -> kiln_core::Result<DevKv> {
        let s16 = kiln_testkit::guard::SENTINEL_U16;
        Ok(match c {
            KvSliceMut::F32(v) => DevKv::F32(guarded_up(be, v, kiln_testkit::guard::sentinel())?),
            KvSliceMut::F16(v) => DevKv::F16(guarded_up(be, v, s16)?),
            KvSliceMut::BF16(v) => DevKv::BF16(guarded_up(be, v, s16)?),
        })
    }

    /// The interior of `n` elements.
    fn view_mut(&mut self, n: usize) -> ViewKv<'_> {
        match self {
            DevKv::F32(s) => ViewKv::F32(s.slice_mut(GUARD..GUARD + n)),
            DevKv::F16(s) => ViewKv::F16(s.slice_mut(GUARD..GUARD + n)),
            DevKv::BF16(s) => ViewKv::BF16(s.slice_mut(GUARD..GUARD + n)),
        }
    }

    fn down(&self, be: &CudaBackend, what: &str, c: KvSliceMut<'_>) -> kiln_core::Result<()> {
        let s16 = kiln_testkit::guard::SENTINEL_U16;
        match (self, c) {
            (DevKv::F32(d), KvSliceMut::F32(o)) => {
                guarded_down(be, d, kiln_testkit::guard::sentinel(), what, o)
            }
            (DevKv::F16(d), KvSliceMut::F16(o)) | (DevKv::BF16(d), KvSliceMut::BF16(o)) => {
                guarded_down(be, d, s16, what, o)
            }
            _ => Err(kiln_core::Error::invalid("test", "cache type changed")),
        }
    }
}

/// A device cache's interior view, by element type.
enum ViewKv<'a> {
    F32(cudarc::driver::CudaViewMut<'a, f32>),
    F16(cudarc::driver::CudaViewMut<'a, u16>),
    BF16(cudarc::driver::CudaViewMut<'a, u16>),
}

impl<'a> ViewKv<'a> {
    fn kv(&mut self) -> KvViewMut<'_, 'a> {
        match self {
            ViewKv::F32(v) => KvViewMut::F32(v),
            ViewKv::F16(v) => KvViewMut::F16(v),
            ViewKv::BF16(v) => KvViewMut::BF16(v),
        }
    }
}

fn run(be: &CudaBackend, p: &MatvecFusedParams, io: FusedRefIo<'_>) -> kiln_core::Result<()> {
    // What kiln::ops::matvec_fused does on the host before launching.
    p.check_positions(io.positions)?;
    let dw = up(be, io.w)?;
    let dx = up(be, io.x)?;
    let dn = up(be, io.norm_w)?;
    let dr = up(be, io.residual)?;
    let dp = up(be, io.positions)?;
    let mut dout = guarded_up(be, io.out, kiln_testkit::guard::sentinel())?;
    let mut dk = DevKv::up(be, &io.k_cache)?;
    let mut dv = DevKv::up(be, &io.v_cache)?;
    let (no, nk, nv) = (io.out.len(), io.k_cache.len(), io.v_cache.len());
    {
        let w = dw.slice(0..io.w.len());
        let x = dx.slice(0..io.x.len());
        let n = dn.slice(0..io.norm_w.len());
        let r = dr.slice(0..io.residual.len());
        let pos = dp.slice(0..io.positions.len());
        let mut out = dout.slice_mut(GUARD..GUARD + no);
        let has_kv = nk > 0;
        let (mut kc, mut vc) = (dk.view_mut(nk), dv.view_mut(nv));
        matvec_fused(
            be,
            p,
            FusedArgs {
                w: &w,
                x: &x,
                norm_w: (!io.norm_w.is_empty()).then_some(&n),
                residual: (!io.residual.is_empty()).then_some(&r),
                out: &mut out,
                k_cache: has_kv.then(|| kc.kv()),
                v_cache: has_kv.then(|| vc.kv()),
            },
            (!io.positions.is_empty()).then_some(&pos),
        )
        .map_err(core)?;
    }
    guarded_down(be, &dout, kiln_testkit::guard::sentinel(), "out", io.out)?;
    dk.down(be, "k_cache", io.k_cache)?;
    dv.down(be, "v_cache", io.v_cache)
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
    // Every format's variant compiled at once (on a cold machine the
    // variants compiled one after another took longer than a device call).
    kiln_cuda::matvec_fused::warm_all(&be).unwrap();
    let imp = |p: &MatvecFusedParams, io: FusedRefIo<'_>| run(&be, p, io);
    // Direct-load and staged weights (kiln_cuda::matmul::staged).
    for on in [false, true] {
        kiln_cuda::matmul::set_staged(&be, on);
        let report = check_matvec_fused_with(&imp, &Options::default());
        eprintln!("staged {on}: {}", report.summary());
        report.into_result().unwrap();
    }
    kiln_cuda::matmul::set_staged(&be, false);
    // One-row products as tiles (matvec_tile::fused_tile): float
    // activations at the default tile size and in 2-row tiles (target 1
    // byte: partial last tiles, tiles across the q | k | v seams), then
    // int8 activations (the formats with a Q8 dot unit; their rounding is
    // what Options::fused_int8_x adds to the bound).
    for (mode, target) in [
        (FusedTile::Float, TILE_AUTO),
        (FusedTile::Float, 1),
        (FusedTile::Int8, TILE_AUTO),
        (FusedTile::Int8, 1),
    ] {
        set_fused_tile(&be, mode);
        set_id_tile(&be, target);
        let opts = Options {
            fused_int8_x: mode == FusedTile::Int8,
            ..Options::default()
        };
        let report = check_matvec_fused_with(&imp, &opts);
        eprintln!("tiles {mode:?} target {target}: {}", report.summary());
        set_fused_tile(&be, FusedTile::Off);
        set_id_tile(&be, TILE_AUTO);
        report.into_result().unwrap();
    }
}
