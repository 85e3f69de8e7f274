//! GPU parity of the elementwise families add, mul and cast against their
//! kiln-core references: the testkit tables (cast: all nine directions,
//! every 16-bit pattern, f32 specials, NaN payloads and subnormals, compared
//! bit for bit), each run twice — with every device view at the start of
//! its buffer (16-byte aligned: mul's float4 path) and shifted by one
//! element (the scalar paths; 2-byte offsets for 16-bit buffers). Outputs
//! live in device buffers with sentinel guards on both sides around the
//! testkit's poisoned interior. Also the same tables through
//! `harness::cast_host` (what `kiln selftest --device cuda` runs), and the
//! launcher's own rejections. Skipped, with the reason, where no CUDA
//! device opens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use kiln_core::ops::cast::{CastDst as HostDst, CastParams, CastSrc as HostSrc};
use kiln_core::DType;
use kiln_cuda::cast::{CastDst, CastSrc};
use kiln_cuda::{add, cast, mul};
use kiln_cuda::{CudaBackend, CudaError, CudaSlice, CudaView, CudaViewMut};
use kiln_testkit::cases as tk;
use kiln_testkit::{Options, Report};

/// Guard elements on each side of a device output.
const GUARD: usize = 64;
/// Guard pattern of f32 outputs: a NaN payload no kernel here writes.
const SENTINEL_F32: u32 = 0x7fc0_beef;
/// Guard pattern of 16-bit outputs.
const SENTINEL_U16: u16 = 0xdead;
/// Element offsets every driver runs with: aligned, then misaligned by one.
const SHIFTS: [usize; 2] = [0, 1];

fn backend() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(be) => {
            eprintln!(
                "device: {} (sm_{}{}), seed {}",
                be.info().name,
                be.info().cc.0,
                be.info().cc.1,
                kiln_testkit::test_seed()
            );
            Some(be)
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn core(e: CudaError) -> kiln_core::Error {
    match e {
        CudaError::Core(c) => c,
        other => kiln_core::Error::invalid("cuda", other.to_string()),
    }
}

/// `x` on the device, `shift` elements into its buffer (one spare element
/// after it, so even an empty `x` is a valid allocation).
struct Dev<T> {
    buf: CudaSlice<T>,
    shift: usize,
    n: usize,
}

impl<T> Dev<T> {
    fn view(&self) -> CudaView<'_, T> {
        self.buf.slice(self.shift..self.shift + self.n)
    }
}

fn up<T: DeviceRepr + Copy + Default>(
    be: &CudaBackend,
    x: &[T],
    shift: usize,
) -> kiln_core::Result<Dev<T>> {
    let mut h = vec![T::default(); shift];
    h.extend_from_slice(x);
    h.push(T::default());
    Ok(Dev {
        buf: be.upload(&h).map_err(core)?,
        shift,
        n: x.len(),
    })
}

/// Upload `out` (the testkit's poison) between guards of `sentinel`, the
/// front one `shift` longer; run `launch` on the interior; check both
/// guards; copy the interior back.
fn guarded<T>(
    be: &CudaBackend,
    out: &mut [T],
    sentinel: T,
    shift: usize,
    launch: impl FnOnce(&mut CudaViewMut<'_, T>) -> kiln_cuda::Result<()>,
) -> kiln_core::Result<()>
where
    T: DeviceRepr + ValidAsZeroBits + Default + Copy + bytemuck::Pod,
{
    let n = out.len();
    let front = GUARD + shift;
    let mut host = vec![sentinel; front + n + GUARD];
    host[front..front + n].copy_from_slice(out);
    let mut dev = be.upload(&host).map_err(core)?;
    {
        let mut view = dev.slice_mut(front..front + n);
        launch(&mut view).map_err(core)?;
    }
    let back = be.download(&dev).map_err(core)?;
    let same = |a: &T| bytemuck::bytes_of(a) == bytemuck::bytes_of(&sentinel);
    let before = back[..front].iter().filter(|v| !same(v)).count();
    let after = back[front + n..].iter().filter(|v| !same(v)).count();
    if before + after > 0 {
        return Err(kiln_core::Error::invalid(
            "cuda",
            format!("guards overwritten around an output of {n}: {before} before, {after} after"),
        ));
    }
    out.copy_from_slice(&back[front..front + n]);
    Ok(())
}

/// Run `driver` once per shift; print each report; fail with every failure.
fn check(op: &str, driver: impl Fn(usize, &Options) -> Report) {
    let opts = Options::default();
    let mut failed = Vec::new();
    for shift in SHIFTS {
        let r = driver(shift, &opts);
        println!("== {op} [shift {shift}] ==\n{r}");
        eprintln!("{op} [shift {shift}]: {}", r.summary());
        if !r.is_ok() {
            failed.push(format!("[shift {shift}]\n{r}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{op} parity failed:\n{}",
        failed.join("\n")
    );
}

#[test]
fn parity_add() {
    let Some(be) = backend() else { return };
    check("add", |shift, o| {
        tk::add::check_add_with(
            &|p, a, b, out| {
                let (ad, bd) = (up(&be, a, shift)?, up(&be, b, shift)?);
                guarded(&be, out, f32::from_bits(SENTINEL_F32), shift, |o| {
                    add::add(&be, p, &ad.view(), &bd.view(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_mul() {
    let Some(be) = backend() else { return };
    check("mul", |shift, o| {
        tk::mul::check_mul_with(
            &|p, a, b, out| {
                let (ad, bd) = (up(&be, a, shift)?, up(&be, b, shift)?);
                guarded(&be, out, f32::from_bits(SENTINEL_F32), shift, |o| {
                    mul::mul(&be, p, &ad.view(), &bd.view(), o)
                })
            },
            o,
        )
    });
}

/// cast from host buffers at `shift`: the launcher validates (the rejection
/// cases reach it with the lengths and storage the testkit gives).
fn cast_shifted(
    be: &CudaBackend,
    shift: usize,
    p: &CastParams,
    src: HostSrc<'_>,
    dst: HostDst<'_>,
) -> kiln_core::Result<()> {
    let run = |s: CastSrc<'_, '_>| match dst {
        HostDst::F32(o) => guarded(be, o, f32::from_bits(SENTINEL_F32), shift, |o| {
            cast::cast(be, p, s, CastDst::F32(o))
        }),
        HostDst::Bits(o) => guarded(be, o, SENTINEL_U16, shift, |o| {
            cast::cast(be, p, s, CastDst::Bits(o))
        }),
    };
    match src {
        HostSrc::F32(x) => run(CastSrc::F32(&up(be, x, shift)?.view())),
        HostSrc::Bits(x) => run(CastSrc::Bits(&up(be, x, shift)?.view())),
    }
}

#[test]
fn parity_cast() {
    let Some(be) = backend() else { return };
    check("cast", |shift, o| {
        tk::cast::check_cast_with(&|p, s, d| cast_shifted(&be, shift, p, s, d), o)
    });
    // The selftest's path (harness::cast_host, validation before upload).
    let r = tk::cast::check_cast_with(
        &|p, s, d| kiln_cuda::harness::cast_host(&be, p, s, d),
        &Options::default(),
    );
    println!("== cast [harness] ==\n{r}");
    r.into_result().unwrap();
}

#[test]
fn cast_launcher_rejects_bad_dtypes_and_storage() {
    let Some(be) = backend() else { return };
    let x = up(&be, &[0x3c00u16; 4], 0).unwrap();
    let mut o = be.alloc_zeros::<f32>(4).unwrap();
    let mut ov = o.slice_mut(0..4);
    let p = |src, dst| CastParams { n: 4, src, dst };
    // A quantized source: UnsupportedDType naming it.
    let e = cast::cast(
        &be,
        &p(DType::Q8_0, DType::F32),
        CastSrc::Bits(&x.view()),
        CastDst::F32(&mut ov),
    )
    .unwrap_err();
    assert!(e.to_string().contains("unsupported dtype Q8_0"), "{e}");
    // F16 params on an f32 destination buffer.
    let e = cast::cast(
        &be,
        &p(DType::BF16, DType::F16),
        CastSrc::Bits(&x.view()),
        CastDst::F32(&mut ov),
    )
    .unwrap_err();
    assert!(e.to_string().contains("dst is F16"), "{e}");
    // n past the buffers.
    let e = cast::cast(
        &be,
        &CastParams {
            n: 5,
            src: DType::F16,
            dst: DType::F32,
        },
        CastSrc::Bits(&x.view()),
        CastDst::F32(&mut ov),
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("src has length 4, expected 5"),
        "{e}"
    );
}
