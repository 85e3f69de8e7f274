//! rope_multi on CUDA: validate → launch (`kernels/rope_multi.cu`).
//! Implements `kiln_core::ops::rope_multi` (MROPE / IMROPE / Vision, both
//! pairings) from `x` into `out`, `[seq_len, n_heads, head_dim]`, f32 or
//! bf16 (as `u16` bits). The per-pair pack (`RopeMultiParams::pack`) lives
//! on the device as a [`RopeMultiDevicePack`], uploaded once per parameter
//! set by the caller; positions are `4 * seq_len` i32 on the device
//! (axis-major; u32 positions are converted by the caller after
//! `RopeMultiParams::validate` has checked that they fit).

use crate::kernels::ROPE_MULTI;
use crate::{CudaBackend, CudaError, Result};
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
use kiln_core::ops::rope_multi::{RopeMultiPack, RopeMultiParams};
use kiln_core::Error;

const OP: &str = "rope_multi";

/// Mirrors `struct RopeMultiParams` in rope_multi.cu.
#[repr(C)]
#[derive(Clone, Copy)]
struct RopeMultiK {
    seq_len: u64,
    n_heads: u64,
    head_dim: u64,
    half: u64,
    n_pairs: u64,
}
// SAFETY: plain-old-data with the same layout as the .cu struct.
unsafe impl DeviceRepr for RopeMultiK {}

/// A [`RopeMultiPack`] on the device: per pair its axis (`RopeMultiPack::PASS`
/// = passes through) and f64 inverse frequency.
pub struct RopeMultiDevicePack {
    axis: CudaSlice<u8>,
    inv_freq: CudaSlice<f64>,
    half: usize,
    n_pairs: usize,
}

impl RopeMultiDevicePack {
    /// Upload `pack` (a few hundred bytes; once per parameter set).
    pub fn upload(be: &CudaBackend, pack: &RopeMultiPack) -> Result<RopeMultiDevicePack> {
        if pack.axis.len() != pack.n_pairs || pack.inv_freq.len() != pack.n_pairs {
            return Err(Error::invalid(
                OP,
                format!(
                    "pack of {} pairs has {} axes and {} frequencies",
                    pack.n_pairs,
                    pack.axis.len(),
                    pack.inv_freq.len()
                ),
            )
            .into());
        }
        // One spare element each, so an empty pack is still an allocation.
        let mut axis = pack.axis.clone();
        axis.push(RopeMultiPack::PASS);
        let mut inv_freq = pack.inv_freq.clone();
        inv_freq.push(0.0);
        Ok(RopeMultiDevicePack {
            axis: be.upload(&axis)?,
            inv_freq: be.upload(&inv_freq)?,
            half: pack.half,
            n_pairs: pack.n_pairs,
        })
    }

    /// The pack must be `p`'s: same pairing offsets (so no index leaves a head).
    fn check(&self, p: &RopeMultiParams) -> std::result::Result<(), Error> {
        if self.half != p.half() || self.n_pairs != p.n_pairs() {
            return Err(Error::invalid(
                OP,
                format!(
                    "device pack (half {}, {} pairs) was built for other params (half {}, {} pairs)",
                    self.half,
                    self.n_pairs,
                    p.half(),
                    p.n_pairs()
                ),
            ));
        }
        Ok(())
    }
}

/// `out = rope_multi(x)`, f32.
pub fn rope_multi(
    be: &CudaBackend,
    p: &RopeMultiParams,
    pack: &RopeMultiDevicePack,
    positions: &CudaView<'_, i32>,
    x: &CudaView<'_, f32>,
    out: &mut CudaViewMut<'_, f32>,
) -> Result<()> {
    p.validate_shape(positions.len(), x.len(), out.len())?;
    pack.check(p)?;
    launch(be, p, pack, "rope_multi_f32", positions, x, out)
}

/// `out = rope_multi(x)`, bf16 bits.
pub fn rope_multi_bf16(
    be: &CudaBackend,
    p: &RopeMultiParams,
    pack: &RopeMultiDevicePack,
    positions: &CudaView<'_, i32>,
    x: &CudaView<'_, u16>,
    out: &mut CudaViewMut<'_, u16>,
) -> Result<()> {
    p.validate_shape(positions.len(), x.len(), out.len())?;
    pack.check(p)?;
    launch(be, p, pack, "rope_multi_bf16", positions, x, out)
}

fn launch<T: DeviceRepr>(
    be: &CudaBackend,
    p: &RopeMultiParams,
    pack: &RopeMultiDevicePack,
    name: &'static str,
    positions: &CudaView<'_, i32>,
    x: &CudaView<'_, T>,
    out: &mut CudaViewMut<'_, T>,
) -> Result<()> {
    let n = p.elements()?;
    let f = be.function("rope_multi", ROPE_MULTI, name)?;
    let threads = 256u32;
    let cfg = LaunchConfig {
        grid_dim: (n.div_ceil(threads as usize).clamp(1, 65_535) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    };
    let k = RopeMultiK {
        seq_len: p.seq_len as u64,
        n_heads: p.n_heads as u64,
        head_dim: p.head_dim as u64,
        half: pack.half as u64,
        n_pairs: pack.n_pairs as u64,
    };
    let mut l = be.stream().launch_builder(&f);
    l.arg(&k)
        .arg(positions)
        .arg(&pack.axis)
        .arg(&pack.inv_freq)
        .arg(x)
        .arg(out);
    // SAFETY: arguments match rope_multi_{f32,bf16}(RopeMultiParams, const
    // i32* pos, const u8* axis, const double* inv_freq, const T* x, T* out)
    // (T = f32 for rope_multi_f32, u16 for rope_multi_bf16: the callers pair
    // them);
    // validate_shape checked positions (4 * seq_len), x and out (n elements);
    // the pack matches p (half + n_pairs <= head_dim: second elements stay in
    // their head) and holds n_pairs axes (< 4 or PASS) and frequencies.
    unsafe { l.launch(cfg) }.map_err(|e| CudaError::driver("launch rope_multi", e))?;
    Ok(())
}
