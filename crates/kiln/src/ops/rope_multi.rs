//! Multi-section RoPE (MROPE / IMROPE / Vision) from `x` into `out`, both
//! `[seq_len, n_heads, head_dim]` of one dtype, F32 or BF16
//! (spec: [`kiln_core::ops::rope_multi`]).
//!
//! [`rope_multi`] builds the per-pair parameter pack for each call;
//! [`rope_multi_cached`] takes it from the stream's [`RopeMultiPacks`],
//! keyed by the device and every parameter, so a decode loop builds it once.
//! Both give bit-identical results. On a CUDA stream the pack lives on the
//! device: [`rope_multi`] uploads it for the call, [`rope_multi_cached`]
//! keeps one device copy per key in the same cache; the positions go
//! through the stream's device position buffer (as i32). A BF16 output on
//! CUDA must own its buffer (not a row view).
use crate::device::Backend;
use crate::{Device, Error, Result, Stream, Tensor};
use kiln_core::ops::rope_multi::{RopeMultiPack, RopeMultiParams, RopePairing, RopePositions};
use kiln_core::DType;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const OP: &str = "rope_multi";

/// Everything a pack depends on, plus the device it serves and the shape
/// (n_heads, seq_len) it was asked for (the seed keys every parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PackKey {
    device: Device,
    head_dim: usize,
    rope_dim: usize,
    n_heads: usize,
    seq_len: usize,
    freq_base_bits: u32,
    mode: u32,
    sections: [u32; 4],
    pairing: RopePairing,
}

impl PackKey {
    fn new(device: Device, p: &RopeMultiParams) -> PackKey {
        PackKey {
            device,
            head_dim: p.head_dim,
            rope_dim: p.rope_dim,
            n_heads: p.n_heads,
            seq_len: p.seq_len,
            freq_base_bits: p.freq_base.to_bits(),
            mode: p.mode as u32,
            sections: p.sections,
            pairing: p.pairing,
        }
    }
}

/// A cache of rope_multi parameter packs (one per stream,
/// [`Stream::rope_multi_packs`]).
#[derive(Default)]
pub struct RopeMultiPacks {
    map: Mutex<HashMap<PackKey, Arc<RopeMultiPack>>>,
    /// Device copies of the packs, by the same key (CUDA streams).
    #[cfg(feature = "cuda")]
    dev: Mutex<HashMap<PackKey, Arc<kiln_cuda::rope_multi::RopeMultiDevicePack>>>,
}

impl RopeMultiPacks {
    /// The pack of `p` on `device`, built on first use.
    pub fn get(&self, device: Device, p: &RopeMultiParams) -> Arc<RopeMultiPack> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map of finished packs is still consistent.
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            map.entry(PackKey::new(device, p))
                .or_insert_with(|| Arc::new(p.pack())),
        )
    }

    /// The device copy of `p`'s pack on `device` (served by `be`), uploaded on
    /// first use.
    #[cfg(feature = "cuda")]
    fn get_device(
        &self,
        be: &kiln_cuda::CudaBackend,
        device: Device,
        p: &RopeMultiParams,
    ) -> Result<Arc<kiln_cuda::rope_multi::RopeMultiDevicePack>> {
        let key = PackKey::new(device, p);
        let mut dev = self.dev.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = dev.get(&key) {
            return Ok(Arc::clone(d));
        }
        let pack = self.get(device, p);
        let d = Arc::new(
            kiln_cuda::rope_multi::RopeMultiDevicePack::upload(be, &pack)
                .map_err(super::cuda_err)?,
        );
        dev.insert(key, Arc::clone(&d));
        Ok(d)
    }

    /// Packs held.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop every pack (e.g. when a model is unloaded).
    pub fn clear(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).clear();
        #[cfg(feature = "cuda")]
        self.dev.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// `out = rope_multi(x)`, the parameter pack built for this call.
pub fn rope_multi(
    s: &Stream,
    p: &RopeMultiParams,
    positions: &RopePositions<'_>,
    x: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    let n = p.elements()?;
    p.validate(positions, n, n)?;
    dispatch(s, p, &Pack::Fresh(p.pack()), positions, x, out)
}

/// [`rope_multi`] with the pack from the stream's cache.
pub fn rope_multi_cached(
    s: &Stream,
    p: &RopeMultiParams,
    positions: &RopePositions<'_>,
    x: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    let n = p.elements()?;
    p.validate(positions, n, n)?;
    let pack = s.rope_multi_packs().get(s.device(), p);
    dispatch(s, p, &Pack::Cached(pack), positions, x, out)
}

/// The host pack of a call: built for it, or from the stream's cache (whose
/// device copies a CUDA stream then uses too).
enum Pack {
    Fresh(RopeMultiPack),
    Cached(Arc<RopeMultiPack>),
}

impl Pack {
    fn host(&self) -> &RopeMultiPack {
        match self {
            Pack::Fresh(p) => p,
            Pack::Cached(p) => p,
        }
    }
}

fn dispatch(
    s: &Stream,
    p: &RopeMultiParams,
    pack: &Pack,
    positions: &RopePositions<'_>,
    x: &Tensor,
    out: &mut Tensor,
) -> Result<()> {
    let _timer = s.scope(OP);
    let n = p.elements()?;
    let dtype = x.dtype();
    if !matches!(dtype, DType::F32 | DType::BF16) {
        return Err(Error::DType {
            op: OP,
            what: "input",
            got: dtype,
            expected: "F32 or BF16",
        });
    }
    if out.dtype() != dtype {
        return Err(Error::DType {
            op: OP,
            what: "output",
            got: out.dtype(),
            expected: if dtype == DType::F32 {
                "F32 (the input's dtype)"
            } else {
                "BF16 (the input's dtype)"
            },
        });
    }
    match s.backend() {
        Backend::Cpu(ctx) => {
            if dtype == DType::F32 {
                let xs = x.f32_prefix(OP, "input", n)?;
                let os = out.f32_prefix_mut(OP, "output", n)?;
                Ok(kiln_cpu::rope_multi::rope_multi(
                    ctx,
                    p,
                    pack.host(),
                    positions,
                    xs,
                    os,
                )?)
            } else {
                let xs = x.u16_prefix(OP, "input", n)?;
                let os = out.u16_prefix_mut(OP, "output", n)?;
                Ok(kiln_cpu::rope_multi::rope_multi_bf16(
                    ctx,
                    p,
                    pack.host(),
                    positions,
                    xs,
                    os,
                )?)
            }
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            use kiln_cuda::rope_multi::RopeMultiDevicePack;
            let dev = match pack {
                Pack::Fresh(host) => {
                    Arc::new(RopeMultiDevicePack::upload(be, host).map_err(super::cuda_err)?)
                }
                Pack::Cached(_) => s.rope_multi_packs().get_device(be, s.device(), p)?,
            };
            // Validated above: u32 positions fit i32.
            let host_pos: Vec<i32> = (0..positions.len()).map(|i| positions.get(i)).collect();
            s.with_device_positions(be, &host_pos, |pos| {
                if dtype == DType::F32 {
                    let xs = x.cuda_f32(OP, "input", n)?;
                    let mut os = out.cuda_f32_mut(OP, "output", n)?;
                    kiln_cuda::rope_multi::rope_multi(be, p, &dev, pos, &xs, &mut os)
                        .map_err(super::cuda_err)
                } else {
                    let xs = x.cuda_u16(OP, "input", n)?;
                    let mut os = out.cuda_u16_mut(OP, "output", n)?;
                    kiln_cuda::rope_multi::rope_multi_bf16(be, p, &dev, pos, &xs, &mut os)
                        .map_err(super::cuda_err)
                }
            })
        }
    }
}
