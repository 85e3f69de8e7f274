//! `kiln_cuda::qk_norm_rope_kv` on host slices (the testkit signature), for
//! the parity tests and `kiln selftest`: the host checks what a caller with
//! host data checks (the factors' values, as a loader does once; the first
//! position of the device-position variant, as `kiln::ops` does), then
//! uploads, launches and downloads. `q_out` and both caches live on the
//! device between guard zones; every guard is checked after the launch.

use crate::harness::GUARD;
use crate::qk_norm_rope_kv::{qk_norm_rope_kv, qk_norm_rope_kv_at, QkNormRopeKvArgs};
use crate::{CudaBackend, CudaError, CudaSlice, KvViewMut};
use kiln_core::ops::qk_norm_rope_kv::{check_qk_factors, QkNormRopeKvIo, QkNormRopeKvParams};
use kiln_core::KvSliceMut;
use kiln_testkit::cases::qk_norm_rope_kv::Rows;
use kiln_testkit::guard::{sentinel, SENTINEL_U16};

fn err(e: CudaError) -> kiln_core::Error {
    match e {
        CudaError::Core(c) => c,
        other => kiln_core::Error::invalid("cuda", other.to_string()),
    }
}

/// `x` on the device (one element where `x` is empty).
fn up<T: crate::DeviceRepr + Copy + Default>(
    be: &CudaBackend,
    x: &[T],
) -> kiln_core::Result<CudaSlice<T>> {
    let one = [T::default()];
    be.upload(if x.is_empty() { &one[..] } else { x })
        .map_err(err)
}

/// `x` between two guard zones of `s`.
fn up_guarded<T: crate::DeviceRepr + Copy + Default>(
    be: &CudaBackend,
    x: &[T],
    s: T,
) -> kiln_core::Result<CudaSlice<T>> {
    let mut h = vec![s; x.len() + 2 * GUARD];
    h[GUARD..GUARD + x.len()].copy_from_slice(x);
    up(be, &h)
}

/// Download `d` (uploaded by [`up_guarded`]), check its guards, copy the
/// interior into `out`.
fn down_guarded<T>(
    be: &CudaBackend,
    d: &CudaSlice<T>,
    s: T,
    out: &mut [T],
    what: &str,
) -> kiln_core::Result<()>
where
    T: crate::DeviceRepr + crate::ValidAsZeroBits + bytemuck::Pod + Default,
{
    let h = be.download(d).map_err(err)?;
    let n = out.len();
    let same = |v: &T| bytemuck::bytes_of(v) == bytemuck::bytes_of(&s);
    let bad = h[..GUARD]
        .iter()
        .chain(&h[GUARD + n..])
        .filter(|v| !same(v))
        .count();
    if bad > 0 {
        return Err(kiln_core::Error::invalid(
            "cuda",
            format!("{bad} guard values around {what} ({n} elements) were overwritten"),
        ));
    }
    out.copy_from_slice(&h[GUARD..GUARD + n]);
    Ok(())
}

/// A guarded cache on the device, by element type.
enum DevKv {
    F32(CudaSlice<f32>),
    F16(CudaSlice<u16>),
    BF16(CudaSlice<u16>),
}

impl DevKv {
    fn up(be: &CudaBackend, c: &KvSliceMut<'_>) -> kiln_core::Result<DevKv> {
        Ok(match c {
            KvSliceMut::F32(v) => DevKv::F32(up_guarded(be, v, sentinel())?),
            KvSliceMut::F16(v) => DevKv::F16(up_guarded(be, v, SENTINEL_U16)?),
            KvSliceMut::BF16(v) => DevKv::BF16(up_guarded(be, v, SENTINEL_U16)?),
        })
    }

    /// Run `f` on the interior of `n` elements.
    fn with_view<R>(&mut self, n: usize, f: impl FnOnce(KvViewMut<'_, '_>) -> R) -> R {
        let r = GUARD..GUARD + n;
        match self {
            DevKv::F32(s) => f(KvViewMut::F32(&mut s.slice_mut(r))),
            DevKv::F16(s) => f(KvViewMut::F16(&mut s.slice_mut(r))),
            DevKv::BF16(s) => f(KvViewMut::BF16(&mut s.slice_mut(r))),
        }
    }

    fn down(&self, be: &CudaBackend, c: KvSliceMut<'_>, what: &str) -> kiln_core::Result<()> {
        match (self, c) {
            (DevKv::F32(d), KvSliceMut::F32(o)) => down_guarded(be, d, sentinel(), o, what),
            (DevKv::F16(d), KvSliceMut::F16(o)) | (DevKv::BF16(d), KvSliceMut::BF16(o)) => {
                down_guarded(be, d, SENTINEL_U16, o, what)
            }
            _ => Err(kiln_core::Error::invalid("cuda", "cache type changed")),
        }
    }
}

/// See the module docs. `rows` picks the launcher: `qk_norm_rope_kv` or
/// the device-position `qk_norm_rope_kv_at`.
pub fn qk_norm_rope_kv_host(
    be: &CudaBackend,
    rows: Rows,
    p: &QkNormRopeKvParams,
    io: QkNormRopeKvIo<'_>,
) -> kiln_core::Result<()> {
    p.validate(&io.lens())?;
    check_qk_factors(p, io.factors)?;
    if rows == Rows::FirstPosition {
        p.at(io.positions)?;
    }
    let (qkv, qn, kn, pos) = (
        up(be, io.qkv)?,
        up(be, io.q_norm)?,
        up(be, io.k_norm)?,
        up(be, io.positions)?,
    );
    let fd = io.factors.map(|f| up(be, f)).transpose()?;
    let mut qo = up_guarded(be, io.q_out, sentinel())?;
    let (mut kd, mut vd) = (DevKv::up(be, &io.k_cache)?, DevKv::up(be, &io.v_cache)?);
    let (nq, nk, nv) = (io.q_out.len(), io.k_cache.len(), io.v_cache.len());
    {
        let qkv_v = qkv.slice(0..io.qkv.len());
        let qn_v = qn.slice(0..io.q_norm.len());
        let kn_v = kn.slice(0..io.k_norm.len());
        let pos_v = pos.slice(0..io.positions.len());
        let f_v = fd
            .as_ref()
            .zip(io.factors)
            .map(|(d, f)| d.slice(0..f.len()));
        let mut qo_v = qo.slice_mut(GUARD..GUARD + nq);
        kd.with_view(nk, |k_cache| {
            vd.with_view(nv, |v_cache| {
                let a = QkNormRopeKvArgs {
                    qkv: &qkv_v,
                    q_norm: &qn_v,
                    k_norm: &kn_v,
                    factors: f_v.as_ref(),
                    positions: &pos_v,
                    q_out: &mut qo_v,
                    k_cache,
                    v_cache,
                };
                match rows {
                    Rows::Params => qk_norm_rope_kv(be, p, a),
                    Rows::FirstPosition => qk_norm_rope_kv_at(be, p, a),
                }
            })
        })
        .map_err(err)?;
    }
    down_guarded(be, &qo, sentinel(), io.q_out, "q_out")?;
    kd.down(be, io.k_cache, "k_cache")?;
    vd.down(be, io.v_cache, "v_cache")
}
