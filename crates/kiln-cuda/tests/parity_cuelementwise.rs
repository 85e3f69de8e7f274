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

use kiln_core::ops::cast::{CastDst as HostDst, CastParams, CastSrc as HostSrc};
use kiln_core::DType;
use kiln_cuda::cast::{CastDst, CastSrc};
use kiln_cuda::CudaBackend;
use kiln_cuda::{add, cast, mul};
use kiln_testkit::cases as tk;
use kiln_testkit::Options;

mod common;
use common::*;

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
