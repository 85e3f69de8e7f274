//! Rows of a (possibly quantized) embedding table, dequantized to f32.
use crate::{ops::EmbeddingParams, Device, Error, Result, Stream, Tensor};

pub fn embedding(s: &Stream, table: &Tensor, ids: &[u32], out: &mut Tensor) -> Result<()> {
    const OP: &str = "embedding";
    let [n_vocab, dim] = table.dims() else {
        return Err(kiln_core::Error::invalid(
            OP,
            format!("table must be 2-D, got {:?}", table.shape()),
        )
        .into());
    };
    let p = EmbeddingParams {
        n_vocab: *n_vocab,
        dim: *dim,
        dtype: table.dtype(),
    };
    let need = ids.len().checked_mul(p.dim).ok_or(Error::TooSmall {
        op: OP,
        what: "out",
        got: 0,
        needed: usize::MAX,
    })?;
    let out = out.f32_prefix_mut(OP, "out", need)?;
    match s.device() {
        Device::Cpu => Ok(kiln_cpu::embedding::embedding(
            s.cpu_ctx(),
            &p,
            table.bytes(),
            ids,
            out,
        )?),
    }
}
