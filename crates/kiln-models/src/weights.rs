//! Weight loading for the llama family: GGUF tensors → device tensors.
//! Quantized matrices stay as GGML blocks borrowed zero-copy from the mmap;
//! 1-D norm weights are converted to f32.

use crate::config::ModelConfig;
use crate::{ModelError, Result};
use kiln::{HostBytes, Stream, Tensor};
use kiln_core::gguf::GgufFile;
use kiln_core::DType;
use std::sync::Arc;

/// The weight formats the llama forward accepts for its matrices.
pub const MATRIX_DTYPES: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
];

/// One transformer block.
pub struct LayerWeights {
    pub attn_norm: Tensor,
    pub wq: Tensor,
    pub wk: Tensor,
    pub wv: Tensor,
    pub wo: Tensor,
    pub ffn_norm: Tensor,
    pub w_gate: Tensor,
    pub w_up: Tensor,
    pub w_down: Tensor,
}

/// All weights of a llama-family model.
pub struct LlamaWeights {
    pub token_embd: Tensor,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Tensor,
    /// `None` when the output projection is tied to `token_embd`.
    pub output: Option<Tensor>,
}

impl LlamaWeights {
    /// The output projection (tied or not).
    pub fn output(&self) -> &Tensor {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}

struct Loader<'a> {
    file: &'a Arc<GgufFile>,
    device: &'a Stream,
}

impl Loader<'_> {
    /// A matrix with row-major shape `[rows, cols]` (GGUF ne = [cols, rows]).
    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::Weights(format!("missing tensor {name}")))?;
        let shape = info.shape();
        if shape != [rows, cols] {
            return Err(ModelError::Weights(format!(
                "tensor {name} has shape {shape:?}, expected [{rows}, {cols}]"
            )));
        }
        if !MATRIX_DTYPES.contains(&info.dtype) {
            return Err(ModelError::Unsupported(format!(
                "tensor {name} has type {}",
                info.dtype
            )));
        }
        let offset = usize::try_from(self.file.data_offset() + info.offset)
            .map_err(|_| ModelError::Weights(format!("tensor {name} offset overflows")))?;
        let src: Arc<dyn HostBytes> = self.file.clone();
        Ok(Tensor::from_shared(
            self.device,
            info.dtype,
            &shape,
            src,
            offset,
        )?)
    }

    /// A 1-D vector of length `n`, converted to f32.
    fn vector(&self, name: &str, n: usize) -> Result<Tensor> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::Weights(format!("missing tensor {name}")))?;
        if info.shape() != [n] {
            return Err(ModelError::Weights(format!(
                "tensor {name} has shape {:?}, expected [{n}]",
                info.shape()
            )));
        }
        let bytes = self.file.tensor_data(info)?;
        let mut v = vec![0f32; n];
        kiln_core::quant::dequantize_row(info.dtype, bytes, &mut v)?;
        Ok(Tensor::from_f32(self.device, &[n], v)?)
    }
}

impl LlamaWeights {
    /// Load and shape-check every tensor; `progress(done, total)` is called per layer.
    pub fn load(
        file: &Arc<GgufFile>,
        cfg: &ModelConfig,
        device: &Stream,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<LlamaWeights> {
        let l = Loader { file, device };
        let d = cfg.n_embd;
        let token_embd = l.matrix("token_embd.weight", cfg.n_vocab, d)?;
        let output = if file.tensor("output.weight").is_some() {
            Some(l.matrix("output.weight", cfg.n_vocab, d)?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm"), d)?,
                wq: l.matrix(&n("attn_q"), cfg.q_dim(), d)?,
                wk: l.matrix(&n("attn_k"), cfg.kv_dim(), d)?,
                wv: l.matrix(&n("attn_v"), cfg.kv_dim(), d)?,
                wo: l.matrix(&n("attn_output"), d, cfg.q_dim())?,
                ffn_norm: l.vector(&n("ffn_norm"), d)?,
                w_gate: l.matrix(&n("ffn_gate"), cfg.n_ff, d)?,
                w_up: l.matrix(&n("ffn_up"), cfg.n_ff, d)?,
                w_down: l.matrix(&n("ffn_down"), d, cfg.n_ff)?,
            });
            progress(i + 1, cfg.n_layer);
        }
        if file.tensor("blk.0.ffn_gate_inp.weight").is_some() {
            return Err(ModelError::Unsupported(
                "mixture-of-experts llama files (ffn_gate_inp) are not supported yet".into(),
            ));
        }
        Ok(LlamaWeights {
            token_embd,
            layers,
            output_norm: l.vector("output_norm.weight", d)?,
            output,
        })
    }
}
