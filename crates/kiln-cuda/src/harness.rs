//! The testkit's parity case tables on a CUDA device: each case's host inputs
//! are uploaded, the output lives in a device buffer with sentinel guard zones
//! on both sides and a NaN-poisoned interior, and after the launch the guards
//! are checked on the downloaded buffer. Used by `kiln selftest` and the GPU
//! parity test, so users and CI run the same tables.

use crate::{CudaBackend, CudaError};
use kiln_core::{KvSlice, KvSliceMut};
use kiln_testkit::cases::matmul_mlx::{mlx_cover, mlx_wtypes};
use kiln_testkit::guard::SENTINEL_U16;
use kiln_testkit::{check_all, AllOps, Options, Report};

/// Floats of guard on each side of a device output.
pub(crate) const GUARD: usize = 64;

fn err(e: CudaError) -> kiln_core::Error {
    match e {
        CudaError::Core(c) => c,
        other => kiln_core::Error::invalid("cuda", other.to_string()),
    }
}

/// Upload `out`'s current contents (the caller's poison) between two
/// sentinel guard zones, run `launch` on the interior view, check the guards
/// and copy the interior back into `out`. The GPU tests use it too.
pub fn guarded(
    be: &CudaBackend,
    out: &mut [f32],
    launch: impl FnOnce(&mut crate::CudaViewMut<'_, f32>) -> crate::Result<()>,
) -> kiln_core::Result<()> {
    guarded_with(be, out, kiln_testkit::guard::sentinel(), launch)
}

/// [`guarded`] for bf16 outputs (bits), guards of a pattern no rounding makes.
pub fn guarded_bf16(
    be: &CudaBackend,
    out: &mut [u16],
    launch: impl FnOnce(&mut crate::CudaViewMut<'_, u16>) -> crate::Result<()>,
) -> kiln_core::Result<()> {
    guarded_with(be, out, 0xDEAD_u16, launch)
}

/// [`guarded`] for any element type, with guards of `sentinel`.
pub fn guarded_with<T>(
    be: &CudaBackend,
    out: &mut [T],
    sentinel: T,
    launch: impl FnOnce(&mut crate::CudaViewMut<'_, T>) -> crate::Result<()>,
) -> kiln_core::Result<()>
where
    T: crate::DeviceRepr + crate::ValidAsZeroBits + bytemuck::Pod + Default,
{
    let n = out.len();
    let mut host = vec![sentinel; n + 2 * GUARD];
    host[GUARD..GUARD + n].copy_from_slice(out);
    let mut dev = be.upload(&host).map_err(err)?;
    {
        let mut view = dev.slice_mut(GUARD..GUARD + n);
        launch(&mut view).map_err(err)?;
    }
    let back = be.download(&dev).map_err(err)?;
    let same = |v: &T| bytemuck::bytes_of(v) == bytemuck::bytes_of(&sentinel);
    let bad = back[..GUARD]
        .iter()
        .chain(&back[GUARD + n..])
        .filter(|v| !same(v))
        .count();
    if bad > 0 {
        return Err(kiln_core::Error::invalid(
            "cuda",
            format!("{bad} guard values around an output of {n} were overwritten"),
        ));
    }
    out.copy_from_slice(&back[GUARD..GUARD + n]);
    Ok(())
}

/// A K or V cache uploaded from the host, by element type.
pub enum KvDev {
    F32(crate::CudaSlice<f32>),
    F16(crate::CudaSlice<u16>),
    BF16(crate::CudaSlice<u16>),
}

impl KvDev {
    /// Upload `s` (an empty slice uploads one element; views are of `s.len()`).
    pub fn upload(be: &CudaBackend, s: KvSlice<'_>) -> kiln_core::Result<(KvDev, usize)> {
        let n = s.len();
        let up16 = |v: &[u16]| be.upload(if v.is_empty() { &[0u16][..] } else { v });
        let d = match s {
            KvSlice::F32(v) => KvDev::F32(
                be.upload(if v.is_empty() { &[0f32][..] } else { v })
                    .map_err(err)?,
            ),
            KvSlice::F16(v) => KvDev::F16(up16(v).map_err(err)?),
            KvSlice::BF16(v) => KvDev::BF16(up16(v).map_err(err)?),
        };
        Ok((d, n))
    }
}

impl KvDev {
    /// The whole buffer downloaded and widened to f32.
    pub fn to_f32(&self, be: &CudaBackend) -> kiln_core::Result<Vec<f32>> {
        use kiln_core::quant::float::{bf16_bits_to_f32, f16_bits_to_f32};
        Ok(match self {
            KvDev::F32(s) => be.download(s).map_err(err)?,
            KvDev::F16(s) => be
                .download(s)
                .map_err(err)?
                .into_iter()
                .map(f16_bits_to_f32)
                .collect(),
            KvDev::BF16(s) => be
                .download(s)
                .map_err(err)?
                .into_iter()
                .map(bf16_bits_to_f32)
                .collect(),
        })
    }
}

/// Run `f` on a writable view of the first `n` elements of an uploaded cache.
pub fn with_kv_view_mut<R>(
    (d, n): &mut (KvDev, usize),
    f: impl FnOnce(crate::KvViewMut<'_, '_>) -> R,
) -> R {
    match d {
        KvDev::F32(s) => f(crate::KvViewMut::F32(&mut s.slice_mut(0..*n))),
        KvDev::F16(s) => f(crate::KvViewMut::F16(&mut s.slice_mut(0..*n))),
        KvDev::BF16(s) => f(crate::KvViewMut::BF16(&mut s.slice_mut(0..*n))),
    }
}

/// Run `f` on a view of the first `n` elements of an uploaded cache.
pub fn with_kv_view<R>((d, n): &(KvDev, usize), f: impl FnOnce(crate::KvView<'_, '_>) -> R) -> R {
    match d {
        KvDev::F32(s) => f(crate::KvView::F32(&s.slice(0..*n))),
        KvDev::F16(s) => f(crate::KvView::F16(&s.slice(0..*n))),
        KvDev::BF16(s) => f(crate::KvView::BF16(&s.slice(0..*n))),
    }
}

/// rope_multi's device inputs: the (validated) positions as i32 and the pack.
fn rope_multi_inputs(
    be: &CudaBackend,
    p: &kiln_core::ops::rope_multi::RopeMultiParams,
    pos: &kiln_core::ops::rope_multi::RopePositions<'_>,
) -> kiln_core::Result<(
    crate::CudaSlice<i32>,
    crate::rope_multi::RopeMultiDevicePack,
)> {
    let host: Vec<i32> = (0..pos.len()).map(|i| pos.get(i)).collect();
    let pd = be.upload(&host).map_err(err)?;
    let pack = crate::rope_multi::RopeMultiDevicePack::upload(be, &p.pack()).map_err(err)?;
    Ok((pd, pack))
}

/// Run every op family's case table on `be`.
pub fn check_all_cuda(be: &CudaBackend, opts: &Options) -> Report {
    // matmul (and matmul_id) run only the weight formats this backend has
    // kernels for; the prefill path (m > 8) rounds operands to f16, the
    // tensor-core attention prefill to bf16.
    let opts = &Options {
        matmul_wtypes: crate::matmul::supports,
        matmul_f16_from_m: Some(crate::matmul::MV_MAX_ROWS + 1),
        attention_bf16: crate::attention::uses_bf16,
        ..*opts
    };
    // The MLX tables' formats, compiled in parallel up front instead of one
    // after another at their first case (a compile error resurfaces there).
    let _ = crate::mlx::prepare(be, &["matmul"], &mlx_wtypes());
    let _ = crate::mlx::prepare(be, &["matmul_id", "embedding"], &mlx_cover());

    let up_f32 = |x: &[f32]| {
        be.upload(if x.is_empty() { &[0.0f32][..] } else { x })
            .map_err(err)
    };
    check_all(
        &AllOps {
            add: &|p, a, b, out| {
                p.validate(a.len(), b.len(), out.len())?;
                let (a, b) = (up_f32(a)?, up_f32(b)?);
                guarded(be, out, |o| {
                    crate::add::add(be, p, &a.slice(0..p.n), &b.slice(0..p.n), o)
                })
            },
            cast: &|p, src, dst| cast_host(be, p, src, dst),
            add_rows: &|p, x, b| {
                p.validate(x.len(), b.len())?;
                let bd = up_f32(b)?;
                guarded(be, x, |o| {
                    crate::add_rows::add_rows(be, p, o, &bd.slice(0..b.len()))
                })
            },
            argmax: &|x| {
                kiln_core::ops::argmax::validate(x.len())?;
                let d = up_f32(x)?;
                crate::argmax::argmax_host(be, &d.slice(0..x.len())).map_err(err)
            },
            attention: &|p, q, k, v, out| {
                p.validate(q.len(), k.len(), v.len(), out.len())?;
                let q = up_f32(q)?;
                let (k, v) = (KvDev::upload(be, k)?, KvDev::upload(be, v)?);
                let nq = out.len();
                guarded(be, out, |o| {
                    with_kv_view(&k, |kv| {
                        with_kv_view(&v, |vv| {
                            crate::attention::attention(be, p, &q.slice(0..nq), kv, vv, o)
                        })
                    })
                })
            },
            copy_rows: &|p, src, dst| copy_rows_host(be, p, src, dst),
            embedding: &|p, table, ids, out| {
                p.validate(table.len(), ids, out.len())?;
                let t = be.upload(table).map_err(err)?;
                let i = be
                    .upload(if ids.is_empty() { &[0u32][..] } else { ids })
                    .map_err(err)?;
                guarded(be, out, |o| {
                    crate::embedding::embedding(
                        be,
                        p,
                        &t.slice(0..table.len()),
                        &i.slice(0..ids.len()),
                        ids.len(),
                        o,
                    )
                })
            },
            gelu_mul: &|p, g, u, out| {
                p.validate(g.len(), u.len(), out.len())?;
                let (gd, ud) = (up_f32(g)?, up_f32(u)?);
                guarded(be, out, |o| {
                    crate::gelu_mul::gelu_mul(be, p, &gd.slice(0..p.n), &ud.slice(0..p.n), o)
                })
            },
            matmul: &|p, w, x, out| {
                p.validate(w.len(), x.len(), out.len())?;
                let wd = be
                    .upload(if w.is_empty() { &[0u8][..] } else { w })
                    .map_err(err)?;
                let xd = up_f32(x)?;
                guarded(be, out, |o| {
                    crate::matmul::matmul(be, p, &wd.slice(0..w.len()), &xd.slice(0..x.len()), o)
                })
            },
            matmul_id: &|p, w, x, ids, out| matmul_id_host(be, p, w, x, ids, out),
            matmul_id_swiglu: &|p, g, u, x, ids, out| {
                matmul_id_swiglu_host(be, p, g, u, x, ids, out)
            },
            moe_combine: &|p, y, w, res, out| moe_combine_host(be, p, y, w, res, out),
            moe_route: &|p, logits, bias, ids, w| moe_route_host(be, p, logits, bias, ids, w),
            mul: &|p, a, b, out| {
                p.validate(a.len(), b.len(), out.len())?;
                let (a, b) = (up_f32(a)?, up_f32(b)?);
                guarded(be, out, |o| {
                    crate::mul::mul(be, p, &a.slice(0..p.n), &b.slice(0..p.n), o)
                })
            },
            norm_rope: &|p, x, w, f, pos, out| norm_rope_host(be, p, x, w, f, pos, out),
            qk_norm_rope_kv: &|rows, p, io| {
                crate::harness_qk::qk_norm_rope_kv_host(be, rows, p, io)
            },
            rms_norm: &|p, x, w, out| {
                p.validate(x.len(), w.len(), out.len())?;
                let (xd, wd) = (up_f32(x)?, up_f32(w)?);
                guarded(be, out, |o| {
                    crate::rms_norm::rms_norm(
                        be,
                        p,
                        &xd.slice(0..x.len()),
                        &wd.slice(0..w.len()),
                        o,
                    )
                })
            },
            rope: &|p, pos, x| {
                p.validate(pos.len(), x.len())?;
                let pd = be
                    .upload(if pos.is_empty() { &[0i32][..] } else { pos })
                    .map_err(err)?;
                guarded(be, x, |o| {
                    crate::rope::rope(be, p, &pd.slice(0..pos.len()), o)
                })
            },
            scale: &|p, x, out| {
                p.validate(x.len(), out.len())?;
                let xd = up_f32(x)?;
                guarded(be, out, |o| {
                    crate::scale::scale(be, p, &xd.slice(0..p.n), o)
                })
            },
            softcap: &|p, x, out| {
                p.validate(x.len(), out.len())?;
                let xd = up_f32(x)?;
                guarded(be, out, |o| {
                    crate::softcap::softcap(be, p, &xd.slice(0..p.n), o)
                })
            },
            l2_norm: &|p, x, out| {
                p.validate(x.len(), out.len())?;
                let xd = up_f32(x)?;
                guarded(be, out, |o| {
                    crate::l2_norm::l2_norm(be, p, &xd.slice(0..x.len()), o)
                })
            },
            layer_norm: &|p, x, w, b, out| {
                p.validate(x.len(), w.map(<[f32]>::len), b.map(<[f32]>::len), out.len())?;
                let xd = up_f32(x)?;
                let wd = w.map(&up_f32).transpose()?;
                let bd = b.map(&up_f32).transpose()?;
                let wv = wd.as_ref().zip(w).map(|(d, w)| d.slice(0..w.len()));
                let bv = bd.as_ref().zip(b).map(|(d, b)| d.slice(0..b.len()));
                guarded(be, out, |o| {
                    crate::layer_norm::layer_norm(
                        be,
                        p,
                        &xd.slice(0..x.len()),
                        wv.as_ref(),
                        bv.as_ref(),
                        o,
                    )
                })
            },
            rope_factors: &|p, f, pos, x| {
                p.validate(pos.len(), x.len())?;
                // The factors are on the host here: full validation, as a
                // caller checks them once where it loads them.
                kiln_core::ops::rope::check_factors(p, Some(f))?;
                let pd = be
                    .upload(if pos.is_empty() { &[0i32][..] } else { pos })
                    .map_err(err)?;
                let fd = up_f32(f)?;
                guarded(be, x, |o| {
                    crate::rope::rope_with_factors(
                        be,
                        p,
                        Some(&fd.slice(0..f.len())),
                        &pd.slice(0..pos.len()),
                        o,
                    )
                })
            },
            rope_multi: &|p, pos, x, out| {
                p.validate(pos, x.len(), out.len())?;
                let (pd, pack) = rope_multi_inputs(be, p, pos)?;
                let xd = up_f32(x)?;
                guarded(be, out, |o| {
                    crate::rope_multi::rope_multi(
                        be,
                        p,
                        &pack,
                        &pd.slice(..),
                        &xd.slice(0..x.len()),
                        o,
                    )
                })
            },
            rope_multi_bf16: &|p, pos, x, out| {
                p.validate(pos, x.len(), out.len())?;
                let (pd, pack) = rope_multi_inputs(be, p, pos)?;
                let xd = be.upload(x).map_err(err)?;
                guarded_bf16(be, out, |o| {
                    crate::rope_multi::rope_multi_bf16(
                        be,
                        p,
                        &pack,
                        &pd.slice(..),
                        &xd.slice(..),
                        o,
                    )
                })
            },
            sample: &|p, x, ids, u| sample_guarded(be, p, x, ids, u),
            sigmoid_mul: &|p, g, u, out| {
                p.validate(g.len(), u.len(), out.len())?;
                let (gd, ud) = (up_f32(g)?, up_f32(u)?);
                guarded(be, out, |o| {
                    crate::sigmoid_mul::sigmoid_mul(be, p, &gd.slice(0..p.n), &ud.slice(0..p.n), o)
                })
            },
            silu_mul: &|p, g, u, out| {
                p.validate(g.len(), u.len(), out.len())?;
                let (gd, ud) = (up_f32(g)?, up_f32(u)?);
                guarded(be, out, |o| {
                    crate::silu_mul::silu_mul(be, p, &gd.slice(0..p.n), &ud.slice(0..p.n), o)
                })
            },
            softmax: &|p, x, out| {
                p.validate(x.len(), out.len())?;
                let xd = up_f32(x)?;
                guarded(be, out, |o| {
                    crate::softmax::softmax(be, p, &xd.slice(0..x.len()), o)
                })
            },
        },
        opts,
    )
}

/// copy_rows (`copy_rows_kv`) from host buffers: the source uploaded, the
/// destination (f32, f16 or bf16) guarded on the device.
pub fn copy_rows_host(
    be: &CudaBackend,
    p: &kiln_core::ops::copy_rows::CopyRowsParams,
    src: &[f32],
    dst: KvSliceMut<'_>,
) -> kiln_core::Result<()> {
    p.validate(src.len(), dst.len())?;
    let sd = be
        .upload(if src.is_empty() { &[0.0f32][..] } else { src })
        .map_err(err)?;
    let s = sd.slice(0..src.len());
    use crate::copy_rows::copy_rows_kv;
    match dst {
        KvSliceMut::F32(d) => guarded(be, d, |o| copy_rows_kv(be, p, &s, crate::KvViewMut::F32(o))),
        KvSliceMut::F16(d) => guarded_with(be, d, SENTINEL_U16, |o| {
            copy_rows_kv(be, p, &s, crate::KvViewMut::F16(o))
        }),
        KvSliceMut::BF16(d) => guarded_with(be, d, SENTINEL_U16, |o| {
            copy_rows_kv(be, p, &s, crate::KvViewMut::BF16(o))
        }),
    }
}

/// cast from host buffers: the source uploaded as f32 or 16-bit patterns,
/// the destination guarded on the device (16-bit guards of 0xDEAD).
pub fn cast_host(
    be: &CudaBackend,
    p: &kiln_core::ops::cast::CastParams,
    src: kiln_core::ops::cast::CastSrc<'_>,
    dst: kiln_core::ops::cast::CastDst<'_>,
) -> kiln_core::Result<()> {
    use crate::cast::{cast, CastDst, CastSrc};
    use kiln_core::ops::cast as host;
    p.validate_bufs(&src, &dst)?;
    let n = p.n;
    let run = |s: CastSrc<'_, '_>| match dst {
        host::CastDst::F32(o) => guarded(be, o, |o| cast(be, p, s, CastDst::F32(o))),
        host::CastDst::Bits(o) => guarded_bf16(be, o, |o| cast(be, p, s, CastDst::Bits(o))),
    };
    match src {
        host::CastSrc::F32(x) => run(CastSrc::F32(&up(be, x)?.slice(0..n))),
        host::CastSrc::Bits(x) => run(CastSrc::Bits(&up(be, x)?.slice(0..n))),
    }
}

/// `x` on the device (one element where `x` is empty, so the allocation is valid).
fn up<T: crate::DeviceRepr + Copy + Default>(
    be: &CudaBackend,
    x: &[T],
) -> kiln_core::Result<crate::CudaSlice<T>> {
    let one = [T::default()];
    be.upload(if x.is_empty() { &one[..] } else { x })
        .map_err(err)
}

/// `kiln_cuda::matmul_id` on host slices (the testkit signature): the host
/// checks the ids, as the kiln op does, then uploads and launches.
pub fn matmul_id_host(
    be: &CudaBackend,
    p: &kiln_core::ops::matmul_id::MatmulIdParams,
    w: &[u8],
    x: &[f32],
    ids: &[u32],
    out: &mut [f32],
) -> kiln_core::Result<()> {
    p.validate(w.len(), x.len(), ids.len(), out.len())?;
    p.check_ids(ids)?;
    let (wd, xd, idd) = (up(be, w)?, up(be, x)?, up(be, ids)?);
    guarded(be, out, |o| {
        crate::matmul_id::matmul_id(
            be,
            p,
            &wd.slice(0..w.len()),
            &xd.slice(0..x.len()),
            &idd.slice(0..ids.len()),
            o,
        )
    })
}

/// `kiln_cuda::matmul_id_swiglu` on host slices (the testkit signature),
/// the ids checked on the host first as for [`matmul_id_host`].
pub fn matmul_id_swiglu_host(
    be: &CudaBackend,
    p: &kiln_core::ops::matmul_id::MatmulIdParams,
    wg: &[u8],
    wu: &[u8],
    x: &[f32],
    ids: &[u32],
    out: &mut [f32],
) -> kiln_core::Result<()> {
    p.validate_swiglu(wg.len(), wu.len(), x.len(), ids.len(), out.len())?;
    p.check_ids(ids)?;
    let (gd, ud, xd, idd) = (up(be, wg)?, up(be, wu)?, up(be, x)?, up(be, ids)?);
    guarded(be, out, |o| {
        crate::matmul_id::matmul_id_swiglu(
            be,
            p,
            &gd.slice(0..wg.len()),
            &ud.slice(0..wu.len()),
            &xd.slice(0..x.len()),
            &idd.slice(0..ids.len()),
            o,
        )
    })
}

/// `kiln_cuda::moe_combine` on host slices (the testkit signature).
pub fn moe_combine_host(
    be: &CudaBackend,
    p: &kiln_core::ops::moe_combine::MoeCombineParams,
    y: &[f32],
    w: &[f32],
    res: &[f32],
    out: &mut [f32],
) -> kiln_core::Result<()> {
    p.validate(y.len(), w.len(), res.len(), out.len())?;
    let (yd, wd, rd) = (up(be, y)?, up(be, w)?, up(be, res)?);
    guarded(be, out, |o| {
        crate::moe_combine::moe_combine(
            be,
            p,
            &yd.slice(0..y.len()),
            &wd.slice(0..w.len()),
            &rd.slice(0..res.len()),
            o,
        )
    })
}

/// `kiln_cuda::moe_route` on host slices (the testkit signature): the host
/// reports non-finite logits as the reference does (the kernel's own
/// marking of them is tested in tests/parity_cumoe.rs); ids and weights
/// are both guarded.
pub fn moe_route_host(
    be: &CudaBackend,
    p: &kiln_core::ops::moe_route::MoeRouteParams,
    logits: &[f32],
    bias: Option<&[f32]>,
    ids: &mut [u32],
    weights: &mut [f32],
) -> kiln_core::Result<()> {
    p.validate(
        logits.len(),
        bias.map_or(0, <[f32]>::len),
        ids.len(),
        weights.len(),
    )?;
    p.check_finite(logits, bias)?;
    let ld = up(be, logits)?;
    let bd = bias.map(|b| up(be, b)).transpose()?;
    let bview = bd.as_ref().zip(bias).map(|(d, b)| d.slice(0..b.len()));
    guarded_with(be, ids, kiln_testkit::guard::SENTINEL_BITS, |iv| {
        guarded(be, weights, |wv| {
            crate::moe_route::moe_route(be, p, &ld.slice(0..logits.len()), bview.as_ref(), iv, wv)
        })
        .map_err(CudaError::from)
    })
}

/// `kiln_cuda::sample` on host slices (the testkit signature): logits and
/// penalty ids uploaded, the id and the threshold key written into a
/// guarded two-word device buffer and returned raw (`NO_TOKEN` included).
pub fn sample_guarded(
    be: &CudaBackend,
    p: &kiln_core::ops::sample::SampleParams,
    logits: &[f32],
    ids: &[u32],
    u: f64,
) -> kiln_core::Result<kiln_core::ops::sample::Sampled> {
    p.validate_call(logits.len(), ids.len(), u)?;
    let (ld, idd) = (up(be, logits)?, up(be, ids)?);
    let mut out = [kiln_testkit::guard::SENTINEL_BITS; 2];
    guarded_with(be, &mut out, kiln_testkit::guard::SENTINEL_BITS, |o| {
        crate::sample::sample(
            be,
            p,
            &ld.slice(0..logits.len()),
            &idd.slice(0..ids.len()),
            u,
            o,
        )
    })?;
    Ok(kiln_core::ops::sample::Sampled {
        id: out[0],
        threshold: out[1],
    })
}

/// `kiln_cuda::norm_rope` on host slices (the testkit signature): the host
/// checks the factors' values, as a loader does once (the launcher checks
/// their length only), then uploads and launches.
pub fn norm_rope_host(
    be: &CudaBackend,
    p: &kiln_core::ops::norm_rope::NormRopeParams,
    x: &[f32],
    w: &[f32],
    factors: Option<&[f32]>,
    positions: &[i32],
    out: &mut [f32],
) -> kiln_core::Result<()> {
    p.validate(x.len(), w.len(), positions.len(), out.len())?;
    kiln_core::ops::norm_rope::check_norm_rope_factors(p, factors)?;
    let (xd, wd, pd) = (up(be, x)?, up(be, w)?, up(be, positions)?);
    let fd = factors.map(|f| up(be, f)).transpose()?;
    let fview = fd.as_ref().zip(factors).map(|(d, f)| d.slice(0..f.len()));
    guarded(be, out, |o| {
        crate::norm_rope::norm_rope(
            be,
            p,
            &xd.slice(0..x.len()),
            &wd.slice(0..w.len()),
            fview.as_ref(),
            &pd.slice(0..positions.len()),
            o,
        )
    })
}
