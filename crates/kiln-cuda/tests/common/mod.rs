//! The device scaffolding shared by the op parity tests (parity_cuops,
//! parity_cuelementwise): the backend or a SKIPPED line, device copies at an
//! element shift, guarded outputs with sentinels on both sides, and the
//! per-shift driver loop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use kiln_cuda::{CudaBackend, CudaError, CudaSlice, CudaView, CudaViewMut};
use kiln_testkit::{Options, Report};

/// Guard elements on each side of a device output.
pub const GUARD: usize = 64;
/// Guard pattern of f32 outputs: a NaN payload no kernel writes.
pub const SENTINEL_F32: u32 = 0x7fc0_beef;
/// Guard pattern of u32 outputs (argmax): not a plausible index nor u32::MAX.
pub const SENTINEL_U32: u32 = 0xdead_beef;
/// Guard pattern of 16-bit outputs.
pub const SENTINEL_U16: u16 = 0xdead;
/// Element offsets every driver runs with: aligned, then misaligned by one.
pub const SHIFTS: [usize; 2] = [0, 1];

pub fn backend() -> Option<CudaBackend> {
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

pub fn core(e: CudaError) -> kiln_core::Error {
    match e {
        CudaError::Core(c) => c,
        other => kiln_core::Error::invalid("cuda", other.to_string()),
    }
}

/// `x` on the device, `shift` elements into its buffer (one spare element
/// after it, so even an empty `x` is a valid allocation).
pub struct Dev<T> {
    pub buf: CudaSlice<T>,
    pub shift: usize,
    pub n: usize,
}

impl<T> Dev<T> {
    pub fn view(&self) -> CudaView<'_, T> {
        self.buf.slice(self.shift..self.shift + self.n)
    }
}

pub fn up<T: DeviceRepr + Copy + Default>(
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

/// Upload `out`'s current contents (the testkit's poison, or the input of an
/// in-place op) between guards of `sentinel`, the front one `shift` longer;
/// run `launch` on the interior; check both guards; copy the interior back.
pub fn guarded<T>(
    be: &CudaBackend,
    out: &mut [T],
    sentinel: T,
    shift: usize,
    launch: impl FnOnce(&mut CudaViewMut<'_, T>) -> kiln_cuda::Result<()>,
) -> kiln_core::Result<()>
where
    T: DeviceRepr + ValidAsZeroBits + Default + Clone + Copy + bytemuck::Pod,
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

pub fn f32_guarded(
    be: &CudaBackend,
    out: &mut [f32],
    shift: usize,
    launch: impl FnOnce(&mut CudaViewMut<'_, f32>) -> kiln_cuda::Result<()>,
) -> kiln_core::Result<()> {
    guarded(be, out, f32::from_bits(SENTINEL_F32), shift, launch)
}

/// Run `driver` once per shift; print each report; fail with every failure.
pub fn check(op: &str, driver: impl Fn(usize, &Options) -> Report) {
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
