//! Rows of a (possibly quantized) embedding table, dequantized to f32.
use crate::device::Backend;
use crate::{ops::EmbeddingParams, Error, Result, Stream, Tensor};

pub fn embedding(s: &Stream, table: &Tensor, ids: &[u32], out: &mut Tensor) -> Result<()> {
    const OP: &str = "embedding";
    let _timer = s.scope(OP);
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
    match s.backend() {
        Backend::Cpu(ctx) => {
            let out = out.f32_prefix_mut(OP, "out", need)?;
            Ok(kiln_cpu::embedding::embedding(
                ctx,
                &p,
                table.cpu_bytes_for(OP, "table")?,
                ids,
                out,
            )?)
        }
        #[cfg(feature = "cuda")]
        Backend::Cuda(be) => {
            // Host ids are checked here, where they are cheap to see.
            p.validate(table.byte_len(), ids, need)?;
            let t = table.cuda_bytes(OP, "table")?;
            let mut out = out.cuda_f32_mut(OP, "out", need)?;
            s.with_device_ids(be, ids, |d| {
                kiln_cuda::embedding::embedding(be, &p, &t, d, ids.len(), &mut out)
                    .map_err(super::cuda_err)
            })
        }
    }
}
