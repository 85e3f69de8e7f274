//! Copy whole rows between f32 tensors (KV-cache append, last-row pick).
use crate::{ops::CopyRowsParams, Device, Result, Stream, Tensor};

pub fn copy_rows(s: &Stream, p: &CopyRowsParams, src: &Tensor, dst: &mut Tensor) -> Result<()> {
    const OP: &str = "copy_rows";
    let src = src.f32_prefix(OP, "src", src.numel())?;
    let n = dst.numel();
    let dst = dst.f32_prefix_mut(OP, "dst", n)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::copy_rows::copy_rows(s.cpu_ctx(), p, src, dst)?),
    }
}
