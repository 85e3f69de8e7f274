//! Test-only: small synthetic llama models written with kiln's own GGUF
//! writer, and a naive reference forward pass for them built from the
//! `kiln_core::ops::*_ref` scalar references (the oracle of every op).
//!
//! The weights, tensor names and metadata come from the library's
//! generator (`kiln_models::synth`, also behind `kiln synth`); this file
//! keeps them in memory for the reference. A [`SynthModel`] holds the stored weights (raw GGML bytes for matrices,
//! f32 for norms) and the hyper-parameters. [`SynthModel::write_gguf`] turns
//! it into a llama GGUF with the SentencePiece vocabulary of
//! `tests/fixtures/tokenizer/spm_tiny.json`; [`SynthModel::reference_logits`]
//! runs the llama forward on the same stored weights with f32 activations
//! (the references' dots accumulate in f64), full sequence, no KV cache.

use kiln_core::gguf::{ArrayValue, GgufWriter, Value, ValueType};
use kiln_core::ops::add::{add_ref, AddParams};
use kiln_core::ops::attention::{attention_ref, AttentionParams};
use kiln_core::ops::embedding::{embedding_ref, EmbeddingParams};
use kiln_core::ops::matmul::{matmul_ref, MatmulParams};
use kiln_core::ops::rms_norm::{rms_norm_ref, RmsNormParams};
use kiln_core::ops::rope::{rope_ref, RopeMode, RopeParams};
use kiln_core::ops::silu_mul::{silu_mul_ref, SiluMulParams};
use kiln_core::DType;
use kiln_models::synth::{self, SynthParams, SynthVocab, TensorSpec};
use rand::Rng;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The SentencePiece vocabulary fixture (pieces, scores, types, specials,
/// and encode cases checked against the `sentencepiece` library).
pub struct SpmVocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    pub bos: u32,
    pub eos: u32,
    pub unk: u32,
    pub json: Json,
}

impl SpmVocab {
    pub fn load() -> SpmVocab {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/tokenizer/spm_tiny.json");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let json: Json = serde_json::from_str(&text).unwrap();
        let arr = |k: &str| json[k].as_array().unwrap().clone();
        SpmVocab {
            tokens: arr("tokens")
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect(),
            scores: arr("scores")
                .iter()
                .map(|s| s.as_f64().unwrap() as f32)
                .collect(),
            types: arr("token_types")
                .iter()
                .map(|t| t.as_i64().unwrap() as i32)
                .collect(),
            bos: json["bos"].as_u64().unwrap() as u32,
            eos: json["eos"].as_u64().unwrap() as u32,
            unk: json["unk"].as_u64().unwrap() as u32,
            json,
        }
    }

    /// The `tokenizer.*` metadata pairs of this vocabulary.
    pub fn kvs(&self) -> Vec<(String, Value)> {
        let array = |t, items| Value::Array(ArrayValue::new(t, items));
        vec![
            ("tokenizer.ggml.model".into(), Value::String("llama".into())),
            (
                "tokenizer.ggml.tokens".into(),
                array(
                    ValueType::String,
                    self.tokens.iter().cloned().map(Value::String).collect(),
                ),
            ),
            (
                "tokenizer.ggml.scores".into(),
                array(
                    ValueType::F32,
                    self.scores.iter().copied().map(Value::F32).collect(),
                ),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                array(
                    ValueType::I32,
                    self.types.iter().copied().map(Value::I32).collect(),
                ),
            ),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(self.bos)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(self.eos)),
            (
                "tokenizer.ggml.unknown_token_id".into(),
                Value::U32(self.unk),
            ),
            ("tokenizer.ggml.add_bos_token".into(), Value::Bool(true)),
            ("tokenizer.ggml.add_eos_token".into(), Value::Bool(false)),
        ]
    }

    /// The fixture's expected ids (no BOS) for `text`, if it has that case.
    pub fn case_ids(&self, text: &str) -> Option<Vec<u32>> {
        self.json["cases"]
            .as_array()?
            .iter()
            .find(|c| c["text"].as_str() == Some(text))
            .map(|c| {
                c["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i.as_u64().unwrap() as u32)
                    .collect()
            })
    }
}

/// Shape and formats of one synthetic model.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    /// Format of every matrix, `token_embd` (and `output`) included.
    pub dtype: DType,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Rotated dims per head (`llama.rope.dimension_count`).
    pub n_rot: usize,
    /// A separate `output.weight` (else tied to `token_embd`).
    pub untied: bool,
    pub rope_base: f32,
    pub rms_eps: f32,
}

impl Spec {
    /// 2 layers, n_embd 64, n_ff 96, 4 heads of 16, full rotation.
    pub fn small(name: &'static str, dtype: DType, n_head_kv: usize, untied: bool) -> Spec {
        Spec {
            name,
            dtype,
            n_layer: 2,
            n_embd: 64,
            n_ff: 96,
            n_head: 4,
            n_head_kv,
            n_rot: 16,
            untied,
            rope_base: 10000.0,
            rms_eps: 1e-5,
        }
    }
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim()
    }
    /// The library's description of this shape (context 256, every matrix
    /// in `dtype`, token_embd included).
    pub fn params(&self) -> SynthParams {
        SynthParams {
            arch: kiln_models::synth::SynthArch::Llama,
            name: self.name.into(),
            n_layer: self.n_layer,
            n_embd: self.n_embd,
            n_ff: self.n_ff,
            n_head: self.n_head,
            n_head_kv: self.n_head_kv,
            n_rot: self.n_rot,
            n_ctx: 256,
            dtype: self.dtype,
            embd_dtype: self.dtype,
            untied: self.untied,
            rope_base: self.rope_base,
            rms_eps: self.rms_eps,
            seed: 0,
            pool_rows: None,
            yarn: None,
            sliding_window: None,
        }
    }
}

/// A matrix as stored: `rows` (outputs) rows of `cols` (inputs) in `dtype`.
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub bytes: Vec<u8>,
}

pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Matrix,
    pub wk: Matrix,
    pub wv: Matrix,
    pub wo: Matrix,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Matrix,
    pub w_up: Matrix,
    pub w_down: Matrix,
}

/// A synthetic model: spec plus stored weights.
pub struct SynthModel {
    pub spec: Spec,
    /// Reference only: round matmul inputs to 8-bit blocks as the engine
    /// does for quantized weights (see [`fake_quant_q8`]).
    pub act_quant: bool,
    pub n_vocab: usize,
    pub token_embd: Matrix,
    pub output: Option<Matrix>,
    pub output_norm: Vec<f32>,
    pub layers: Vec<Layer>,
}

/// One tensor on its way into the GGUF (editable by the bad-file tests).
pub struct TensorEntry {
    pub name: String,
    /// GGUF order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub dtype: DType,
    pub data: Vec<u8>,
}

fn take_matrix(data: &mut HashMap<String, (TensorSpec, Vec<u8>)>, name: &str) -> Matrix {
    let (t, bytes) = data
        .remove(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    let (rows, cols) = t.rows_cols();
    Matrix { rows, cols, bytes }
}

fn take_vector(data: &mut HashMap<String, (TensorSpec, Vec<u8>)>, name: &str) -> Vec<f32> {
    let (_, bytes) = data
        .remove(name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

impl SynthModel {
    /// Weights drawn by the library's generator (`kiln_models::synth`), in
    /// file order from `rng`, kept in memory for the reference forward.
    pub fn random(spec: Spec, n_vocab: usize, rng: &mut impl Rng) -> SynthModel {
        let params = spec.params();
        let mut data = HashMap::new();
        for t in synth::tensor_specs(&params, n_vocab) {
            let bytes = synth::generate_tensor(&t, &mut *rng, None).unwrap();
            data.insert(t.name.clone(), (t, bytes));
        }
        let d = &mut data;
        let token_embd = take_matrix(d, "token_embd.weight");
        let layers = (0..spec.n_layer)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Layer {
                    attn_norm: take_vector(d, &n("attn_norm")),
                    wq: take_matrix(d, &n("attn_q")),
                    wk: take_matrix(d, &n("attn_k")),
                    wv: take_matrix(d, &n("attn_v")),
                    wo: take_matrix(d, &n("attn_output")),
                    ffn_norm: take_vector(d, &n("ffn_norm")),
                    w_gate: take_matrix(d, &n("ffn_gate")),
                    w_up: take_matrix(d, &n("ffn_up")),
                    w_down: take_matrix(d, &n("ffn_down")),
                }
            })
            .collect();
        let output_norm = take_vector(d, "output_norm.weight");
        let output = spec.untied.then(|| take_matrix(d, "output.weight"));
        assert!(data.is_empty(), "unused tensors");
        SynthModel {
            spec,
            act_quant: false,
            n_vocab,
            token_embd,
            output,
            output_norm,
            layers,
        }
    }

    /// Metadata pairs of the GGUF, in order (the library's, with the SPM
    /// fixture's tokenizer).
    pub fn metadata(&self, vocab: &SpmVocab) -> Vec<(String, Value)> {
        let v = SynthVocab::from_kvs(vocab.kvs()).unwrap();
        synth::metadata(&self.spec.params(), &v)
    }

    /// Every tensor, norms in F32 and matrices in the spec's dtype.
    pub fn tensors(&self) -> Vec<TensorEntry> {
        let t = self.spec.dtype;
        let mat = |name: String, m: &Matrix| TensorEntry {
            name,
            dims: vec![m.cols as u64, m.rows as u64],
            dtype: t,
            data: m.bytes.clone(),
        };
        let vec = |name: String, v: &[f32]| TensorEntry {
            name,
            dims: vec![v.len() as u64],
            dtype: DType::F32,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let mut out = vec![mat("token_embd.weight".into(), &self.token_embd)];
        for (i, l) in self.layers.iter().enumerate() {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            out.push(vec(n("attn_norm"), &l.attn_norm));
            out.push(mat(n("attn_q"), &l.wq));
            out.push(mat(n("attn_k"), &l.wk));
            out.push(mat(n("attn_v"), &l.wv));
            out.push(mat(n("attn_output"), &l.wo));
            out.push(vec(n("ffn_norm"), &l.ffn_norm));
            out.push(mat(n("ffn_gate"), &l.w_gate));
            out.push(mat(n("ffn_up"), &l.w_up));
            out.push(mat(n("ffn_down"), &l.w_down));
        }
        out.push(vec("output_norm.weight".into(), &self.output_norm));
        if let Some(o) = &self.output {
            out.push(mat("output.weight".into(), o));
        }
        out
    }

    /// Write the model as GGUF to a fresh temporary file, after `edit` has
    /// had its way with the metadata and tensors (bad-file tests).
    pub fn write_gguf_with(
        &self,
        vocab: &SpmVocab,
        edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<TensorEntry>),
    ) -> TempFile {
        let mut kvs = self.metadata(vocab);
        let mut tensors = self.tensors();
        edit(&mut kvs, &mut tensors);
        let mut w = GgufWriter::new();
        for (k, v) in kvs {
            w.add_kv(k, v);
        }
        for t in tensors {
            w.add_tensor(t.name, t.dims, t.dtype, t.data).unwrap();
        }
        let file = TempFile::new(self.spec.name);
        w.write_file(&file.path).unwrap();
        file
    }

    pub fn write_gguf(&self, vocab: &SpmVocab) -> TempFile {
        self.write_gguf_with(vocab, |_, _| {})
    }

    /// `out = x · Wᵀ` for `m` rows with the reference matmul (stored weights,
    /// f32 activations, f64 accumulation).
    fn matmul(&self, w: &Matrix, x: &[f32], m: usize) -> Vec<f32> {
        let fq;
        let x = if self.act_quant && is_block_quantized(self.spec.dtype) {
            fq = fake_quant_q8(x);
            &fq[..]
        } else {
            x
        };
        let p = MatmulParams {
            m,
            n: w.rows,
            k: w.cols,
            wtype: self.spec.dtype,
        };
        let mut out = vec![f32::NAN; m * w.rows];
        matmul_ref(&p, &w.bytes, x, &mut out).unwrap();
        out
    }

    fn rms_norm(&self, x: &[f32], w: &[f32], rows: usize) -> Vec<f32> {
        let p = RmsNormParams {
            rows,
            dim: self.spec.n_embd,
            eps: self.spec.rms_eps,
        };
        let mut out = vec![f32::NAN; x.len()];
        rms_norm_ref(&p, x, w, &mut out).unwrap();
        out
    }

    fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut out = vec![f32::NAN; a.len()];
        add_ref(&AddParams { n: a.len() }, a, b, &mut out).unwrap();
        out
    }

    /// Every position's logits `[tokens.len(), n_vocab]` for the whole
    /// sequence at positions `0..`, from the scalar references.
    pub fn reference_logits(&self, tokens: &[u32]) -> Vec<f32> {
        let s = &self.spec;
        let (n, d) = (tokens.len(), s.n_embd);
        let mut x = vec![f32::NAN; n * d];
        let ep = EmbeddingParams {
            n_vocab: self.n_vocab,
            dim: d,
            dtype: s.dtype,
        };
        embedding_ref(&ep, &self.token_embd.bytes, tokens, &mut x).unwrap();
        let positions: Vec<i32> = (0..n as i32).collect();
        let rope = |heads| RopeParams {
            n_tokens: n,
            n_heads: heads,
            head_dim: s.head_dim(),
            n_rot: s.n_rot,
            freq_base: s.rope_base,
            freq_scale: 1.0,
            mode: RopeMode::Normal,
        };
        let attn = AttentionParams {
            n_tokens: n,
            n_heads: s.n_head,
            n_kv_heads: s.n_head_kv,
            head_dim: s.head_dim(),
            pos0: 0,
            kv_stride: n,
            scale: 1.0 / (s.head_dim() as f32).sqrt(),
            window: None,
            softcap: None,
        };
        for l in &self.layers {
            let h = self.rms_norm(&x, &l.attn_norm, n);
            let mut q = self.matmul(&l.wq, &h, n);
            let mut k = self.matmul(&l.wk, &h, n);
            let v = self.matmul(&l.wv, &h, n);
            rope_ref(&rope(s.n_head), &positions, &mut q).unwrap();
            rope_ref(&rope(s.n_head_kv), &positions, &mut k).unwrap();
            let mut att = vec![f32::NAN; n * s.q_dim()];
            attention_ref(&attn, &q, &k, &v, &mut att).unwrap();
            let x2 = Self::add(&x, &self.matmul(&l.wo, &att, n));
            let h = self.rms_norm(&x2, &l.ffn_norm, n);
            let gate = self.matmul(&l.w_gate, &h, n);
            let up = self.matmul(&l.w_up, &h, n);
            let mut act = vec![f32::NAN; gate.len()];
            silu_mul_ref(&SiluMulParams { n: gate.len() }, &gate, &up, &mut act).unwrap();
            x = Self::add(&x2, &self.matmul(&l.w_down, &act, n));
        }
        let h = self.rms_norm(&x, &self.output_norm, n);
        self.matmul(self.output.as_ref().unwrap_or(&self.token_embd), &h, n)
    }
}

/// A temporary GGUF path, removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    fn new(tag: &str) -> TempFile {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let i = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("kiln-synth-{}-{i}-{tag}.gguf", std::process::id());
        TempFile {
            path: std::env::temp_dir().join(name),
        }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Best effort: a leftover file in the temp dir is harmless.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Max |got - want| and the logit scale max |want|.
pub fn max_err(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "logit counts differ");
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_finite() {
                (g - w).abs()
            } else {
                f32::INFINITY
            }
        })
        .fold(0f32, f32::max);
    let scale = want.iter().map(|w| w.abs()).fold(0f32, f32::max);
    (err, scale)
}

pub fn is_block_quantized(t: DType) -> bool {
    matches!(t, DType::Q4_0 | DType::Q4_1 | DType::Q8_0)
}

/// Activation quantization as llama.cpp's Q8_0 / Q8_1 codes (and kiln-cpu's
/// `Q8Acts`): per 32-element block `d = amax/127` (kept in f32),
/// `q = round_half_away(x * (1/d))`, value `q * d`.
pub fn fake_quant_q8(x: &[f32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for b in x.chunks(kiln_core::quant::QK) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(b.iter().map(|v| (v * id).round() * d));
    }
    out
}
