//! GGUF → GGUF re-quantization: `llama-quantize`'s job (without an
//! importance matrix), as the library behind `kiln quantize`.
//!
//! The per-tensor type rules (llama.cpp's file types and mixtures) live in
//! [`rules`]; this module plans a whole file with them and writes it:
//!
//! - metadata copied in order; `general.file_type` set to the `llama_ftype`
//!   id and `general.quantization_version` to 2 (GGML_QNT_VERSION), as
//!   llama.cpp does (it writes no other provenance key without an imatrix);
//!   `general.alignment` kept; split files refused.
//! - every tensor in file order: copied unchanged when its type stays, else
//!   dequantized to f32 row by row (any input type kiln reads) and quantized
//!   to the chosen type with kiln-core's reference quantizers, rows spread
//!   over rayon threads.
//! - streamed: one output tensor is held at a time (plus the input mmap),
//!   written through a temporary file renamed into place at the end, so a
//!   failure leaves no partial output.
//!
//! Why kiln-models and not kiln-core: choosing types needs model knowledge
//! (tensor names, `{arch}.*` hyper-parameters), which is this crate's domain;
//! kiln-core keeps the format-level pieces (row quantizers, GGUF writer).

pub mod rules;

#[cfg(test)]
mod tests;

pub use rules::{
    allows_quantization, choose_type, fallback, Category, FileType, ModelFacts, TensorDesc,
    TypeChoice, TypeRules,
};

use crate::{ModelError, Result};
use kiln_core::gguf::{GgufFile, GgufWriter, TensorInfo, Value};
use kiln_core::quant::{dequantize_row, quantize_row};
use kiln_core::DType;
use rayon::prelude::*;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// `general.quantization_version` (ggml's GGML_QNT_VERSION).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Rows are converted in chunks of at least this many elements (one rayon
/// task each), so small rows still make tasks worth scheduling.
const MIN_CHUNK_ELEMENTS: usize = 32 * 512;

/// What to quantize to and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantizeParams {
    /// The target file type (`--type`).
    pub ftype: FileType,
    /// `--pure`: no mixture, every quantizable tensor gets the base type.
    pub pure: bool,
    /// `--output-tensor-type`: the type of `output.weight`.
    pub output_tensor_type: Option<DType>,
    /// `--token-embedding-type`: the type of `token_embd.weight`.
    pub token_embedding_type: Option<DType>,
    /// Worker threads; 0 = rayon's default (all cores).
    pub threads: usize,
}

impl QuantizeParams {
    /// The defaults for `ftype`: mixture on, no overrides, all cores.
    pub fn new(ftype: FileType) -> Self {
        QuantizeParams {
            ftype,
            pure: false,
            output_tensor_type: None,
            token_embedding_type: None,
            threads: 0,
        }
    }

    fn rules(&self) -> TypeRules {
        TypeRules {
            ftype: self.ftype,
            pure: self.pure,
            output_tensor_type: self.output_tensor_type,
            token_embedding_type: self.token_embedding_type,
        }
    }

    /// Reject override types that are not weight formats.
    pub fn validate(&self) -> Result<()> {
        for (flag, t) in [
            ("--output-tensor-type", self.output_tensor_type),
            ("--token-embedding-type", self.token_embedding_type),
        ] {
            if let Some(t @ (DType::Q8_1 | DType::Q8_K)) = t {
                return Err(ModelError::Input(format!(
                    "{flag} {t}: {t} is an activation format, not a weight type"
                )));
            }
            if let Some(t) = t.filter(|t| !t.has_quantizer()) {
                // The typed error of the quantizer itself, named by the flag.
                let e = kiln_core::quant::quantize_row(t, &[], &mut []).err();
                let why = e.map_or_else(|| "no quantizer".to_string(), |e| e.to_string());
                return Err(ModelError::Input(format!("{flag} {t}: {why}")));
            }
        }
        Ok(())
    }
}

/// The plan for one tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPlan {
    pub name: String,
    /// GGUF order (`dims[0]` = row length).
    pub dims: Vec<u64>,
    /// Input type.
    pub from: DType,
    pub choice: TypeChoice,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub n_elements: u64,
}

/// The plan for a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantizePlan {
    pub facts: ModelFacts,
    pub tensors: Vec<TensorPlan>,
}

impl QuantizePlan {
    /// Tensors that needed a fallback type.
    pub fn n_fallback(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| t.choice.fallback_from.is_some())
            .count()
    }
    /// Tensors dequantized from a block-quantized type and quantized again.
    pub fn n_requantized(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| t.choice.convert && t.from.is_quantized())
            .count()
    }
    pub fn bytes_in(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_in).sum()
    }
    pub fn bytes_out(&self) -> u64 {
        self.tensors.iter().map(|t| t.bytes_out).sum()
    }
    pub fn n_elements(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_elements).sum()
    }
}

fn meta_usize(f: &GgufFile, key: &str) -> Option<usize> {
    f.get(key)
        .and_then(Value::as_u32)
        .and_then(|v| usize::try_from(v).ok())
}

/// The model facts the rules need, from `f`'s metadata and tensor names.
/// Missing keys get neutral defaults (a file without `{arch}.*` keys still
/// quantizes, with counts taken from its tensors).
pub fn model_facts(f: &GgufFile) -> ModelFacts {
    let arch = f
        .get("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let n_ffn_down = f
        .tensors()
        .iter()
        .filter(|t| Category::of(&t.name) == Category::FfnDown)
        .count();
    let n_layer = meta_usize(f, &format!("{arch}.block_count")).unwrap_or(n_ffn_down);
    let n_head = meta_usize(f, &format!("{arch}.attention.head_count"));
    let n_head_kv = meta_usize(f, &format!("{arch}.attention.head_count_kv")).or(n_head);
    let n_gqa = match (n_head, n_head_kv) {
        (Some(h), Some(kv)) if kv > 0 => (h / kv).max(1),
        _ => 1,
    };
    let n_expert = meta_usize(f, &format!("{arch}.expert_count")).unwrap_or(0);
    let has_output = f.tensors().iter().any(|t| t.name == "output.weight");
    let n_attention_wv = f
        .tensors()
        .iter()
        .filter(|t| Category::of(&t.name).is_attn_v())
        .count();
    let is_llama_70b = arch == "llama" && n_layer == 80 && n_gqa > 1;
    ModelFacts {
        arch,
        n_layer,
        n_gqa,
        n_expert,
        has_output,
        n_attention_wv,
        is_llama_70b,
    }
}

/// The layer of `blk.N.…` names.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// Plan every tensor of `f` (no data is read).
pub fn plan(f: &GgufFile, params: &QuantizeParams) -> Result<QuantizePlan> {
    params.validate()?;
    let facts = model_facts(f);
    let rules = params.rules();
    let (mut i_wv, mut i_down) = (0usize, 0usize);
    let mut tensors = Vec::with_capacity(f.tensors().len());
    for t in f.tensors() {
        let cat = Category::of(&t.name);
        // llama.cpp parses the layer from the name in MoE models, whose
        // expert tensors are not in layer order.
        let i_ffn_down = if facts.n_expert > 1 && cat == Category::FfnDown {
            layer_of(&t.name).ok_or_else(|| {
                ModelError::Weights(format!(
                    "cannot tell the layer of tensor '{}' (expected blk.N.*)",
                    t.name
                ))
            })?
        } else {
            i_down
        };
        let desc = TensorDesc {
            name: &t.name,
            dims: &t.dims,
            dtype: t.dtype,
            i_attention_wv: i_wv,
            i_ffn_down,
        };
        let choice = choose_type(&rules, &facts, &desc);
        if allows_quantization(&t.name, t.dims.len()) {
            i_wv += usize::from(cat.is_attn_v());
            i_down += usize::from(cat == Category::FfnDown);
        }
        let bytes_out = if choice.convert {
            out_bytes(t, choice.dtype)?
        } else {
            t.n_bytes
        };
        tensors.push(TensorPlan {
            name: t.name.clone(),
            dims: t.dims.clone(),
            from: t.dtype,
            choice,
            bytes_in: t.n_bytes,
            bytes_out,
            n_elements: t.n_elements(),
        });
    }
    Ok(QuantizePlan { facts, tensors })
}

fn out_bytes(t: &TensorInfo, to: DType) -> Result<u64> {
    let nx = t.dims.first().copied().unwrap_or(0);
    let ne0 = usize::try_from(nx).unwrap_or(usize::MAX);
    let row = to.row_bytes("quantize", ne0)? as u64;
    let rows = t.n_elements() / nx.max(1);
    row.checked_mul(rows)
        .ok_or_else(|| ModelError::Weights(format!("tensor '{}' as {to} is too large", t.name)))
}

/// The output metadata: `f`'s pairs in order with `general.file_type` and
/// `general.quantization_version` set (in place, or appended when absent).
/// Split files are refused: quantize the merged file.
pub fn output_metadata(f: &GgufFile, ftype: FileType) -> Result<Vec<(String, Value)>> {
    if let Some(n) = f.get("split.count").and_then(Value::as_u32) {
        if n > 1 {
            return Err(ModelError::Unsupported(format!(
                "split GGUF file ({n} parts): merge the parts first (llama-gguf-split --merge)"
            )));
        }
    }
    let mut kvs: Vec<(String, Value)> = f
        .metadata()
        .iter()
        .filter(|(k, _)| !k.starts_with("split."))
        .cloned()
        .collect();
    for (key, value) in [
        (
            "general.quantization_version",
            Value::U32(QUANTIZATION_VERSION),
        ),
        ("general.file_type", Value::U32(ftype.id())),
    ] {
        match kvs.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value,
            None => kvs.push((key.to_string(), value)),
        }
    }
    Ok(kvs)
}

/// Convert one tensor's bytes from `from` to `to`: every row dequantized to
/// f32 and quantized again, chunks of rows in parallel on the current rayon
/// pool. A non-finite input value is an error naming the tensor and row.
pub fn convert_tensor(
    name: &str,
    ne0: usize,
    from: DType,
    to: DType,
    src: &[u8],
) -> kiln_core::Result<Vec<u8>> {
    const OP: &str = "quantize";
    let in_row = from.row_bytes(OP, ne0)?;
    let out_row = to.row_bytes(OP, ne0)?;
    if in_row == 0 || !src.len().is_multiple_of(in_row) {
        return Err(kiln_core::Error::invalid(
            OP,
            format!(
                "tensor '{name}': {} bytes is not a whole number of {from} rows of {ne0}",
                src.len()
            ),
        ));
    }
    let n_rows = src.len() / in_row;
    let rows_per_chunk = MIN_CHUNK_ELEMENTS.div_ceil(ne0).max(1);
    let mut out = vec![0u8; n_rows * out_row];
    out.par_chunks_mut(rows_per_chunk * out_row)
        .zip(src.par_chunks(rows_per_chunk * in_row))
        .enumerate()
        .try_for_each_init(Vec::new, |buf: &mut Vec<f32>, (ci, (o, s))| {
            buf.resize(ne0, 0.0);
            for (r, (orow, srow)) in o
                .chunks_exact_mut(out_row)
                .zip(s.chunks_exact(in_row))
                .enumerate()
            {
                dequantize_row(from, srow, buf)?;
                if let Some(v) = buf.iter().find(|v| !v.is_finite()) {
                    return Err(kiln_core::Error::invalid(
                        OP,
                        format!(
                            "tensor '{name}' row {} holds a non-finite value ({v}); refusing to quantize it",
                            ci * rows_per_chunk + r
                        ),
                    ));
                }
                quantize_row(to, buf, orow)?;
            }
            Ok(())
        })?;
    Ok(out)
}

/// Whether `a` and `b` name the same file (`b` may not exist yet).
fn same_file(a: &Path, b: &Path) -> bool {
    let resolve = |p: &Path| -> Option<PathBuf> {
        if let Ok(c) = p.canonicalize() {
            return Some(c);
        }
        let parent = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        Some(parent.canonicalize().ok()?.join(p.file_name()?))
    };
    match (resolve(a), resolve(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Refuse an output path that names the input file (also through another
/// spelling of the path, or a link to it).
pub fn check_paths(input: &Path, output: &Path) -> Result<()> {
    if same_file(input, output) {
        return Err(ModelError::Input(format!(
            "output {} is the input file; choose another output path",
            output.display()
        )));
    }
    Ok(())
}

/// Quantize `input` into `output` (see the module docs). `progress(i, t)` is
/// called before tensor `i` is converted or copied. Returns the plan that
/// was carried out. On error nothing is left at `output`.
pub fn quantize_file(
    input: &Path,
    output: &Path,
    params: &QuantizeParams,
    progress: &mut dyn FnMut(usize, &TensorPlan),
) -> Result<QuantizePlan> {
    params.validate()?;
    check_paths(input, output)?;
    let f = GgufFile::open(input)?;
    let plan = plan(&f, params)?;
    let mut w = GgufWriter::new().version(f.version());
    for (k, v) in output_metadata(&f, params.ftype)? {
        w.add_kv(k, v);
    }
    if !f
        .metadata()
        .iter()
        .any(|(k, _)| k == kiln_core::gguf::ALIGNMENT_KEY)
    {
        w.alignment(f.alignment());
    }
    for t in &plan.tensors {
        w.add_tensor_info(t.name.clone(), t.dims.clone(), t.choice.dtype)?;
    }
    let pool = match params.threads {
        0 => None,
        n => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| ModelError::Input(format!("cannot start {n} threads: {e}")))?,
        ),
    };
    let infos = f.tensors();
    let mut data = |i: usize, _name: &str| -> kiln_core::Result<Cow<'_, [u8]>> {
        let (t, info) = match (plan.tensors.get(i), infos.get(i)) {
            (Some(t), Some(info)) => (t, info),
            _ => {
                return Err(kiln_core::Error::invalid(
                    "quantize",
                    "tensor index out of range",
                ))
            }
        };
        progress(i, t);
        let src = f.tensor_data(info)?;
        if !t.choice.convert {
            return Ok(Cow::Borrowed(src));
        }
        let nx = t.dims.first().copied().unwrap_or(0);
        let ne0 = usize::try_from(nx).unwrap_or(usize::MAX);
        let run = || convert_tensor(&t.name, ne0, t.from, t.choice.dtype, src);
        let out = match &pool {
            Some(p) => p.install(run),
            None => run(),
        }?;
        Ok(Cow::Owned(out))
    };
    w.write_file_with(output, &mut data)?;
    Ok(plan)
}
