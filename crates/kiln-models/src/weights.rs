//! Weight loading for the llama family: GGUF tensors → device tensors.
//! Quantized matrices stay as GGML blocks borrowed zero-copy from the mmap;
//! 1-D norm weights are converted to f32.

use crate::config::ModelConfig;
use crate::{ModelError, Result};
use kiln::{HostBytes, Stream, Tensor};
use kiln_core::gguf::GgufFile;
use kiln_core::DType;
use std::sync::Arc;

/// The weight formats the llama forward accepts for its matrices (every
/// format the CPU matmul implements; a device may support fewer, checked by
/// `kiln::ops::matmul::supports` when a tensor is loaded).
pub const MATRIX_DTYPES: &[DType] = &[
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2_K,
    DType::Q3_K,
    DType::Q4_K,
    DType::Q5_K,
    DType::Q6_K,
    DType::IQ4_NL,
    DType::IQ4_XS,
    DType::IQ2_XXS,
    DType::IQ2_XS,
    DType::IQ3_XXS,
    DType::IQ3_S,
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
    /// On GPUs: `[wq; wk; wv]` in one tensor (wq, wk and wv are row views of
    /// it), for the fused decode mat-vec; `None` on the CPU or when the three
    /// differ in type.
    pub wqkv: Option<Tensor>,
    /// On GPUs: `[w_gate; w_up]` in one tensor (both are row views of it).
    pub w_gate_up: Option<Tensor>,
}

/// All weights of a llama-family model.
pub struct LlamaWeights {
    pub token_embd: Tensor,
    pub layers: Vec<LayerWeights>,
    pub output_norm: Tensor,
    /// `None` when the output projection is tied to `token_embd`.
    pub output: Option<Tensor>,
    /// `rope_freqs.weight` (Llama 3.1 / 3.2), or the factors of YaRN
    /// scaling: per-pair RoPE frequency factors, f32 `[n_rot / 2]` (on
    /// CUDA, llama layers then run their QKV unfused: `rope_with_factors`).
    pub rope_freqs: Option<Tensor>,
}

impl LlamaWeights {
    /// The output projection (tied or not).
    pub fn output(&self) -> &Tensor {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }
}

/// Reads tensors of one file for one stream (shared with the other
/// architectures' loaders, e.g. `gemma3`).
pub(crate) struct Loader<'a> {
    file: &'a Arc<GgufFile>,
    device: &'a Stream,
}

impl<'a> Loader<'a> {
    pub(crate) fn new(file: &'a Arc<GgufFile>, device: &'a Stream) -> Self {
        Loader { file, device }
    }
}

impl Loader<'_> {
    /// The device's matmul must implement `dtype` (CUDA has kernels for
    /// fewer formats than the CPU).
    fn check_device(&self, name: &str, dtype: DType) -> Result<()> {
        let dev = self.device.device();
        if kiln::ops::matmul::supports(dev, dtype) {
            return Ok(());
        }
        Err(ModelError::Unsupported(format!(
            "tensor {name} has type {dtype}, which matmul on {dev} does not support yet \
             (run on the CPU instead)"
        )))
    }

    /// A matrix with row-major shape `[rows, cols]` (GGUF ne = [cols, rows]).
    pub(crate) fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Tensor> {
        self.shaped(name, &[rows, cols], rows, cols)
    }

    /// A vector `[cols]` (GGUF shape `[cols]`) as a one-row matrix `[1, cols]`.
    pub(crate) fn row(&self, name: &str, cols: usize) -> Result<Tensor> {
        self.shaped(name, &[cols], 1, cols)
    }

    /// A stack of `n` expert matrices `[rows, cols]` (GGUF shape `[n, rows,
    /// cols]`) as one `[n * rows, cols]` tensor: expert `e` is rows
    /// `e * rows..(e + 1) * rows`.
    pub(crate) fn experts(&self, name: &str, n: usize, rows: usize, cols: usize) -> Result<Tensor> {
        self.shaped(name, &[n, rows, cols], n * rows, cols)
    }

    /// Tensor `name` of GGUF shape `want`, as a `[rows, cols]` tensor.
    fn shaped(&self, name: &str, want: &[usize], rows: usize, cols: usize) -> Result<Tensor> {
        let info = self
            .file
            .tensor(name)
            .ok_or_else(|| ModelError::Weights(format!("missing tensor {name}")))?;
        let shape = info.shape();
        if shape != want {
            return Err(ModelError::Weights(format!(
                "tensor {name} has shape {shape:?}, expected {want:?}"
            )));
        }
        let shape = [rows, cols];
        if !MATRIX_DTYPES.contains(&info.dtype) {
            return Err(ModelError::Unsupported(format!(
                "tensor {name} has type {}",
                info.dtype
            )));
        }
        self.check_device(name, info.dtype)?;
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

    /// Matrices `names` (rows each, `cols` columns, one type) stacked into
    /// one tensor, plus a row view of it per part: one upload, no copies.
    fn stacked(&self, names: &[(&str, usize)], cols: usize) -> Result<(Tensor, Vec<Tensor>)> {
        let mut dtype = None;
        let mut bytes = Vec::new();
        for &(name, rows) in names {
            let info = self
                .file
                .tensor(name)
                .ok_or_else(|| ModelError::Weights(format!("missing tensor {name}")))?;
            if info.shape() != [rows, cols] {
                return Err(ModelError::Weights(format!(
                    "tensor {name} has shape {:?}, expected [{rows}, {cols}]",
                    info.shape()
                )));
            }
            if !MATRIX_DTYPES.contains(&info.dtype) || dtype.is_some_and(|d| d != info.dtype) {
                return Err(ModelError::Unsupported(format!(
                    "tensor {name} has type {} (stacking {names:?})",
                    info.dtype
                )));
            }
            self.check_device(name, info.dtype)?;
            dtype = Some(info.dtype);
            bytes.extend_from_slice(self.file.tensor_data(info)?);
        }
        let dtype = dtype.ok_or_else(|| ModelError::Weights("nothing to stack".into()))?;
        let total: usize = names.iter().map(|&(_, r)| r).sum();
        let all = Tensor::from_bytes(self.device, dtype, &[total, cols], bytes)?;
        let mut views = Vec::with_capacity(names.len());
        let mut r0 = 0;
        for &(_, rows) in names {
            views.push(all.row_view(r0, rows)?);
            r0 += rows;
        }
        Ok((all, views))
    }

    /// Like [`Loader::stacked`] when the parts share a type, else `None`.
    fn try_stacked(
        &self,
        names: &[(&str, usize)],
        cols: usize,
    ) -> Result<Option<(Tensor, Vec<Tensor>)>> {
        let types: Vec<_> = names
            .iter()
            .map(|(n, _)| self.file.tensor(n).map(|t| t.dtype))
            .collect();
        if types.windows(2).any(|w| w[0] != w[1]) {
            return Ok(None);
        }
        self.stacked(names, cols).map(Some)
    }

    /// A 1-D vector of length `n`, converted to f32.
    pub(crate) fn vector(&self, name: &str, n: usize) -> Result<Tensor> {
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
            let (qd, kvd, ff) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
            // Mixture-of-experts layers have no dense FFN: its three fields
            // are empty placeholders (the experts live in the arch weights,
            // e.g. `crate::qwen3moe::Qwen3MoeWeights`).
            let moe = cfg.arch_params.moe().is_some();
            // GPUs run the decode step with fused mat-vecs over stacked weights.
            // (MoE layers stack only q, k and v: their FFN is the experts'.)
            let (qkv, gate_up) = if device.device() == kiln::Device::Cpu {
                (None, None)
            } else {
                let (q, k, v) = (n("attn_q"), n("attn_k"), n("attn_v"));
                let (g, u) = (n("ffn_gate"), n("ffn_up"));
                (
                    l.try_stacked(&[(&q, qd), (&k, kvd), (&v, kvd)], d)?,
                    if moe {
                        None
                    } else {
                        l.try_stacked(&[(&g, ff), (&u, ff)], d)?
                    },
                )
            };
            let (wqkv, [wq, wk, wv]) = match qkv {
                Some((all, views)) => (Some(all), take3(views)?),
                None => (
                    None,
                    [
                        l.matrix(&n("attn_q"), qd, d)?,
                        l.matrix(&n("attn_k"), kvd, d)?,
                        l.matrix(&n("attn_v"), kvd, d)?,
                    ],
                ),
            };
            let (w_gate_up, [w_gate, w_up]) = match gate_up {
                Some((all, views)) => (Some(all), take2(views)?),
                None if moe => (
                    None,
                    [Tensor::zeros(device, &[0])?, Tensor::zeros(device, &[0])?],
                ),
                None => (
                    None,
                    [
                        l.matrix(&n("ffn_gate"), ff, d)?,
                        l.matrix(&n("ffn_up"), ff, d)?,
                    ],
                ),
            };
            let w_down = if moe {
                Tensor::zeros(device, &[0])?
            } else {
                l.matrix(&n("ffn_down"), d, ff)?
            };
            layers.push(LayerWeights {
                attn_norm: l.vector(&n("attn_norm"), d)?,
                wq,
                wk,
                wv,
                wo: l.matrix(&n("attn_output"), d, qd)?,
                ffn_norm: l.vector(&n("ffn_norm"), d)?,
                w_gate,
                w_up,
                w_down,
                wqkv,
                w_gate_up,
            });
            progress(i + 1, cfg.n_layer);
        }
        if cfg.arch_params.moe().is_none() && file.tensor("blk.0.ffn_gate_inp.weight").is_some() {
            return Err(ModelError::Unsupported(
                "mixture-of-experts llama files (ffn_gate_inp) are not supported yet".into(),
            ));
        }
        let rope_freqs = match (file.tensor("rope_freqs.weight").is_some(), &cfg.rope_yarn) {
            (true, Some(_)) => {
                return Err(ModelError::Unsupported(
                    "both rope_freqs.weight and yarn rope scaling".into(),
                ))
            }
            // The fused QKV decode on GPUs rotates without factors, so
            // llama::FusedPlan runs those layers' QKV unfused (plain_rope).
            (true, None) => Some(l.vector("rope_freqs.weight", cfg.n_rot / 2)?),
            // YaRN: its per-pair factors, as a rope_freqs tensor.
            (false, Some(y)) => {
                let f = y
                    .factors(cfg.n_rot, cfg.rope_base)
                    .map_err(|e| ModelError::Config(e.to_string()))?;
                Some(Tensor::from_f32(device, &[f.len()], f)?)
            }
            (false, None) => None,
        };
        Ok(LlamaWeights {
            token_embd,
            layers,
            output_norm: l.vector("output_norm.weight", d)?,
            output,
            rope_freqs,
        })
    }
}

fn take3(v: Vec<Tensor>) -> Result<[Tensor; 3]> {
    <[Tensor; 3]>::try_from(v).map_err(|_| ModelError::Weights("expected 3 stacked parts".into()))
}

fn take2(v: Vec<Tensor>) -> Result<[Tensor; 2]> {
    <[Tensor; 2]>::try_from(v).map_err(|_| ModelError::Weights("expected 2 stacked parts".into()))
}
