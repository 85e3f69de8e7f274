//! Weights of an mlx-lm / Hugging Face llama directory → [`LlamaWeights`].
//!
//! Tensor names are Hugging Face's (`model.embed_tokens`, `model.layers.N.
//! self_attn.q_proj`, `mlp.gate_proj`, `input_layernorm`, `model.norm`,
//! `lm_head`). A linear is MLX-quantized when `<name>.scales` exists: then
//! `<name>.weight` is `[rows, cols*bits/32]` uint32 and `.scales` /
//! `.biases` are `[rows, cols/group]` in the scale dtype; bits and group
//! size follow from the shapes and must agree with config.json's
//! `quantization` entry (per-module overrides included). Quantized matrices
//! are repacked into [`DType::Mlx`] blocks (one copy); float matrices are
//! borrowed zero-copy from the mmap. Both run on the CPU and on CUDA (whose
//! matmul and embedding have kernels for every MLX format); the check below
//! still refuses, up front, a format a device's matmul lacks.
//!
//! RoPE layout: Hugging Face checkpoints keep each head's q/k rows as
//! `[first halves of the pairs; second halves]` (rotate-half, NeoX style),
//! while kiln's llama forward (like GGUF files) rotates adjacent pairs. The
//! loader permutes q/k rows into GGUF order: GGUF row `h*hd + 2i + j` =
//! HF row `h*hd + j*hd/2 + i`. Rows are whole quantization rows, so this is
//! exact for quantized weights too.

use super::config::QuantConfig;
use crate::config::ModelConfig;
use crate::weights::{LayerWeights, LlamaWeights};
use crate::{ModelError, Result};
use kiln::{HostBytes, Stream, Tensor};
use kiln_core::quant::{repack_mlx_matrix, MlxAffine, MlxArrays};
use kiln_core::safetensors::{SafetensorsFile, StDType, StTensorInfo};
use kiln_core::DType;
use std::collections::HashMap;
use std::sync::Arc;

/// Every tensor of a directory's safetensors shards, by name.
pub struct Shards {
    files: Vec<Arc<SafetensorsFile>>,
    by_name: HashMap<String, (usize, StTensorInfo)>,
}

impl Shards {
    /// Index already-opened shards; a name in two shards is an error.
    pub fn new(files: Vec<Arc<SafetensorsFile>>) -> Result<Shards> {
        let mut by_name = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for t in f.tensors() {
                if by_name.insert(t.name.clone(), (i, t.clone())).is_some() {
                    return Err(ModelError::Weights(format!(
                        "tensor {} appears in two safetensors shards",
                        t.name
                    )));
                }
            }
        }
        Ok(Shards { files, by_name })
    }

    fn get(&self, name: &str) -> Option<(&Arc<SafetensorsFile>, &StTensorInfo)> {
        let (i, t) = self.by_name.get(name)?;
        Some((self.files.get(*i)?, t))
    }

    fn need(&self, name: &str) -> Result<(&Arc<SafetensorsFile>, &StTensorInfo)> {
        self.get(name)
            .ok_or_else(|| ModelError::Weights(format!("missing tensor {name}")))
    }

    /// Total elements and bytes of every tensor (for `kiln bench`).
    pub fn totals(&self) -> (u64, u64) {
        self.by_name.values().fold((0, 0), |(p, b), (_, t)| {
            (p + t.numel() as u64, b + t.range.len() as u64)
        })
    }
}

fn float_dtype(name: &str, t: &StTensorInfo) -> Result<DType> {
    t.dtype.to_float_dtype().ok_or_else(|| {
        ModelError::Unsupported(format!(
            "tensor {name} has dtype {} (expected F32, F16 or BF16)",
            t.dtype
        ))
    })
}

struct Loader<'a> {
    shards: &'a Shards,
    quant: &'a QuantConfig,
    device: &'a Stream,
}

/// Row permutation of a q/k projection (HF rotate-half → adjacent pairs).
fn rope_perm(rows: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    (0..rows)
        .map(|r| {
            let (h, within) = (r / head_dim, r % head_dim);
            let (i, j) = (within / 2, within % 2);
            h * head_dim + j * half + i
        })
        .collect()
}

fn permute_rows(bytes: &[u8], row_bytes: usize, perm: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    for &src in perm {
        out.extend_from_slice(&bytes[src * row_bytes..(src + 1) * row_bytes]);
    }
    out
}

impl Loader<'_> {
    fn check_device(&self, name: &str, dtype: DType) -> Result<()> {
        let dev = self.device.device();
        if kiln::ops::matmul::supports(dev, dtype) {
            return Ok(());
        }
        Err(ModelError::Unsupported(format!(
            "tensor {name} has type {dtype}, which matmul on {dev} does not support"
        )))
    }

    /// Linear `module` (no `.weight`) as a `[rows, cols]` tensor; `perm`
    /// reorders its rows (q/k projections).
    fn matrix(
        &self,
        module: &str,
        rows: usize,
        cols: usize,
        perm: Option<usize>,
    ) -> Result<Tensor> {
        let wname = format!("{module}.weight");
        let (file, w) = self.shards.need(&wname)?;
        let perm = perm.map(|hd| rope_perm(rows, hd));
        if self.shards.get(&format!("{module}.scales")).is_none() {
            let dtype = float_dtype(&wname, w)?;
            if w.shape != [rows, cols] {
                return Err(ModelError::Weights(format!(
                    "tensor {wname} has shape {:?}, expected [{rows}, {cols}]",
                    w.shape
                )));
            }
            self.check_device(&wname, dtype)?;
            return Ok(match perm {
                None => {
                    let src: Arc<dyn HostBytes> = file.clone();
                    Tensor::from_shared(self.device, dtype, &[rows, cols], src, w.range.start)?
                }
                Some(p) => {
                    let rb = dtype.row_bytes("mlx load", cols)?;
                    let bytes = permute_rows(file.data(w)?, rb, &p);
                    Tensor::from_bytes(self.device, dtype, &[rows, cols], bytes)?
                }
            });
        }
        let p = self.quant_params(module, rows, cols)?;
        let dtype = p.dtype()?;
        self.check_device(&wname, dtype)?;
        let data = |suffix: &str| -> Result<&[u8]> {
            let (f, t) = self.shards.need(&format!("{module}.{suffix}"))?;
            Ok(f.data(t)?)
        };
        let arrays = MlxArrays {
            packed: data("weight")?,
            scales: data("scales")?,
            biases: data("biases")?,
        };
        let mut bytes = repack_mlx_matrix(&p, rows, cols, arrays)
            .map_err(|e| ModelError::Weights(format!("{module}: {e}")))?;
        if let Some(p) = perm {
            bytes = permute_rows(&bytes, dtype.row_bytes("mlx load", cols)?, &p);
        }
        Ok(Tensor::from_bytes(
            self.device,
            dtype,
            &[rows, cols],
            bytes,
        )?)
    }

    /// Bits, group size and scale dtype of a quantized linear, from its
    /// shapes, checked against config.json.
    fn quant_params(&self, module: &str, rows: usize, cols: usize) -> Result<MlxAffine> {
        let bad = |msg: String| ModelError::Weights(format!("{module}: {msg}"));
        let (_, w) = self.shards.need(&format!("{module}.weight"))?;
        let (_, s) = self.shards.need(&format!("{module}.scales"))?;
        let (_, b) = self.shards.need(&format!("{module}.biases"))?;
        let (&[wr, wc], &[sr, sc]) = (w.shape.as_slice(), s.shape.as_slice()) else {
            return Err(bad(format!(
                "weight {:?} / scales {:?} are not 2-D",
                w.shape, s.shape
            )));
        };
        if w.dtype != StDType::U32 || wr != rows || sr != rows || wc == 0 || sc == 0 {
            return Err(bad(format!(
                "packed weight {} {:?} and scales {:?} do not fit a [{rows}, {cols}] matrix",
                w.dtype, w.shape, s.shape
            )));
        }
        if b.shape != s.shape || b.dtype != s.dtype {
            return Err(bad(format!(
                "biases {} {:?} differ from scales {} {:?}",
                b.dtype, b.shape, s.dtype, s.shape
            )));
        }
        let (bits, group) = (wc * 32 / cols, cols / sc);
        if bits * cols != wc * 32 || group * sc != cols {
            return Err(bad(format!(
                "packed width {wc} / {sc} groups do not divide {cols} columns"
            )));
        }
        let scale_dtype = float_dtype(&format!("{module}.scales"), s)?;
        let p = MlxAffine::new(bits as u32, group, scale_dtype).map_err(|e| bad(e.to_string()))?;
        match self.quant.for_module(module) {
            Some((cb, cg)) if (cb, cg) != (p.bits, p.group_size) => Err(bad(format!(
                "config.json says bits {cb} group {cg}, the tensors have bits {} group {}",
                p.bits, p.group_size
            ))),
            _ => Ok(p),
        }
    }

    fn vector(&self, name: &str, n: usize) -> Result<Tensor> {
        let (file, t) = self.shards.need(name)?;
        if t.shape != [n] {
            return Err(ModelError::Weights(format!(
                "tensor {name} has shape {:?}, expected [{n}]",
                t.shape
            )));
        }
        let mut v = vec![0f32; n];
        kiln_core::quant::dequantize_row(float_dtype(name, t)?, file.data(t)?, &mut v)?;
        Ok(Tensor::from_f32(self.device, &[n], v)?)
    }
}

/// Load every weight of a llama model; `tied`: config.json's
/// `tie_word_embeddings` (an `lm_head` tensor, when present, wins).
pub fn load_weights(
    shards: &Shards,
    quant: &QuantConfig,
    cfg: &ModelConfig,
    tied: bool,
    device: &Stream,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LlamaWeights> {
    let l = Loader {
        shards,
        quant,
        device,
    };
    let (d, hd) = (cfg.n_embd, cfg.head_dim);
    let token_embd = l.matrix("model.embed_tokens", cfg.n_vocab, d, None)?;
    let output = if shards.get("lm_head.weight").is_some() {
        Some(l.matrix("lm_head", cfg.n_vocab, d, None)?)
    } else if tied {
        None
    } else {
        return Err(ModelError::Weights(
            "missing tensor lm_head.weight (and tie_word_embeddings is false)".into(),
        ));
    };
    let (qd, kvd, ff) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
    let mut layers = Vec::with_capacity(cfg.n_layer);
    for i in 0..cfg.n_layer {
        let m = |s: &str| format!("model.layers.{i}.{s}");
        layers.push(LayerWeights {
            attn_norm: l.vector(&m("input_layernorm.weight"), d)?,
            wq: l.matrix(&m("self_attn.q_proj"), qd, d, Some(hd))?,
            wk: l.matrix(&m("self_attn.k_proj"), kvd, d, Some(hd))?,
            wv: l.matrix(&m("self_attn.v_proj"), kvd, d, None)?,
            wo: l.matrix(&m("self_attn.o_proj"), d, qd, None)?,
            ffn_norm: l.vector(&m("post_attention_layernorm.weight"), d)?,
            w_gate: l.matrix(&m("mlp.gate_proj"), ff, d, None)?,
            w_up: l.matrix(&m("mlp.up_proj"), ff, d, None)?,
            w_down: l.matrix(&m("mlp.down_proj"), d, ff, None)?,
            wqkv: None,
            w_gate_up: None,
        });
        progress(i + 1, cfg.n_layer);
    }
    Ok(LlamaWeights {
        token_embd,
        layers,
        output_norm: l.vector("model.norm.weight", d)?,
        output,
        rope_freqs: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_perm_interleaves_halves() {
        // One head of 8: GGUF rows 0..8 come from HF rows 0,4,1,5,2,6,3,7.
        assert_eq!(rope_perm(8, 8), [0, 4, 1, 5, 2, 6, 3, 7]);
        assert_eq!(rope_perm(8, 4)[4..], [4, 6, 5, 7]);
    }
}
