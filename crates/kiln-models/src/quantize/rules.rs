//! Which GGML type each tensor gets: llama.cpp's file types (`llama_ftype`)
//! and its per-tensor mixture rules, as `llama-quantize` applies them without
//! an importance matrix (llama.cpp `src/llama-quant.cpp`,
//! `llama_tensor_get_type` and `tensor_type_fallback`; read, not copied).
//!
//! The rules, in the order they are applied to one tensor:
//!
//! 1. **Quantizable?** Only tensors with ≥ 2 dimensions whose name ends in
//!    `weight` and is not a norm (`_norm.weight`), an MoE router
//!    (`ffn_gate_inp.weight`), a position / token-type embedding, a conv1d or
//!    RWKV/T5 special (see [`allows_quantization`]). Anything else, 1-D norms
//!    and biases included, is copied unchanged in its input type.
//! 2. **Overrides:** `--output-tensor-type` for `output.weight`,
//!    `--token-embedding-type` for `token_embd.weight`.
//! 3. **Default:** the file type's base type (Q4_K for Q4_K_M, ...). For a
//!    float file type (F32, F16, BF16) that is all: no mixture, no fallback.
//! 4. **Mixture** (skipped with `--pure`), for quantized file types:
//!    - `output.weight`, or `token_embd.weight` when there is no
//!      `output.weight` (tied embeddings): Q8_0 if `ne[0]` is not a multiple
//!      of the base type's block (or the arch is falcon); else Q6_K unless
//!      the base type is Q8_0.
//!    - `attn_v` / `attn_qkv` / `attn_kv_b` (counter `i` over those tensors,
//!      `n` of them): Q2_K → Q4_K if n_gqa ≥ 4 else Q3_K; Q3_K_M → Q5_K for
//!      the first two, Q4_K after; Q3_K_L → Q5_K; IQ4_NL/IQ4_XS with
//!      n_gqa ≥ 4 → Q5_K; Q4_K_M/Q5_K_M → Q6_K where `use_more_bits(i, n)`;
//!      Q4_K_S → Q5_K for the first four. Then a 70B llama (80 layers, GQA)
//!      lifts Q3_K/Q4_K to Q5_K, and 8-expert models use Q8_0.
//!    - `attn_k`: Q8_0 in 8-expert models.
//!    - `ffn_down` (layer `i` of `n` = block_count; parsed from `blk.N.` in
//!      MoE models): Q2_K → Q3_K; Q3_K_M → Q5_K for i < n/16, else Q4_K
//!      (falcon: Q4_K only where use_more_bits, else Q3_K); Q3_K_L → Q5_K
//!      (falcon Q4_K); Q4_K_M → Q6_K where use_more_bits (falcon: Q6_K for
//!      i < n/16, Q5_K where use_more_bits); IQ4_NL/IQ4_XS → Q5_K for
//!      i < n/8; Q5_K_M → Q6_K where use_more_bits; Q4_K_S → Q5_K for
//!      i < n/8 (not falcon).
//!    - `attn_output`: 8-expert models: Q5_K for Q2_K, Q3_K_S, Q3_K_M,
//!      IQ4_NL, IQ4_XS, Q4_K_S, Q4_K_M; otherwise Q2_K → Q3_K, Q3_K_M →
//!      Q4_K, Q3_K_L → Q5_K (falcon: only Q3_K_L → Q4_K).
//!
//!    `use_more_bits(i, n) = i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2`.
//! 5. **Fallback** when `ne[0]` is not a multiple of the chosen type's block:
//!    IQ4_XS → IQ4_NL, Q2_K/Q3_K → Q4_0, Q4_K → Q5_0, Q5_K → Q5_1,
//!    Q6_K → Q8_0; and F16 when even that block does not divide `ne[0]`.
//!    llama.cpp stops with an error for a 32-block type whose `ne[0]` is not
//!    a multiple of 32; kiln falls back to F16 there too (and says so).
//! 6. A tensor whose chosen type equals its input type is copied unchanged.
//!
//! Not implemented (they need an importance matrix or formats kiln does not
//! quantize): the IQ1/IQ2/IQ3/TQ/MXFP4 file types and Q2_K_S.

use kiln_core::DType;

/// A llama.cpp file type (`llama_ftype`): what `--type` names and what
/// `general.file_type` records.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    AllF32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

/// File types llama.cpp knows that kiln cannot produce, with the reason.
const UNSUPPORTED: [(&str, &str); 14] = [
    (
        "IQ2_XXS",
        "needs an importance matrix, which kiln does not make (it reads and runs IQ2_XXS files)",
    ),
    (
        "IQ2_XS",
        "needs an importance matrix, which kiln does not make (it reads and runs IQ2_XS files)",
    ),
    ("IQ2_S", "needs an importance matrix"),
    ("IQ2_M", "needs an importance matrix"),
    ("IQ1_S", "needs an importance matrix"),
    ("IQ1_M", "needs an importance matrix"),
    ("Q2_K_S", "needs an importance matrix"),
    (
        "IQ3_XXS",
        "kiln has no IQ3 quantizer (it reads and runs IQ3_XXS files)",
    ),
    ("IQ3_XS", "kiln has no IQ3 quantizer"),
    (
        "IQ3_S",
        "kiln has no IQ3 quantizer (it reads and runs IQ3_S files)",
    ),
    ("IQ3_M", "kiln has no IQ3 quantizer"),
    ("TQ1_0", "kiln has no ternary quantizer"),
    ("TQ2_0", "kiln has no ternary quantizer"),
    ("MXFP4_MOE", "kiln has no MXFP4 quantizer"),
];

/// `general.file_type` ids (llama.h `llama_ftype`, as gguf's
/// `LlamaFileType`) of llama.cpp's i-quant mixes, which kiln does not
/// write; files of IQ2_XXS, IQ2_XS, IQ3_XXS and IQ3_S tensors it reads.
const OTHER_FTYPES: [(u32, &str); 11] = [
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (31, "IQ1_M"),
];

/// llama.cpp's name of a `general.file_type` id (kiln's file types and the
/// i-quant mixes it does not write), for `kiln info`.
pub fn llama_ftype_name(id: u32) -> Option<&'static str> {
    FileType::from_id(id)
        .map(FileType::name)
        .or_else(|| OTHER_FTYPES.iter().find(|(i, _)| *i == id).map(|(_, n)| *n))
}

impl FileType {
    /// Every supported file type, in `llama_ftype` id order.
    pub const ALL: [FileType; 19] = [
        FileType::AllF32,
        FileType::F16,
        FileType::Q4_0,
        FileType::Q4_1,
        FileType::Q8_0,
        FileType::Q5_0,
        FileType::Q5_1,
        FileType::Q2_K,
        FileType::Q3_K_S,
        FileType::Q3_K_M,
        FileType::Q3_K_L,
        FileType::Q4_K_S,
        FileType::Q4_K_M,
        FileType::Q5_K_S,
        FileType::Q5_K_M,
        FileType::Q6_K,
        FileType::IQ4_NL,
        FileType::IQ4_XS,
        FileType::BF16,
    ];

    /// The `llama_ftype` id written to `general.file_type`.
    pub fn id(self) -> u32 {
        match self {
            FileType::AllF32 => 0,
            FileType::F16 => 1,
            FileType::Q4_0 => 2,
            FileType::Q4_1 => 3,
            FileType::Q8_0 => 7,
            FileType::Q5_0 => 8,
            FileType::Q5_1 => 9,
            FileType::Q2_K => 10,
            FileType::Q3_K_S => 11,
            FileType::Q3_K_M => 12,
            FileType::Q3_K_L => 13,
            FileType::Q4_K_S => 14,
            FileType::Q4_K_M => 15,
            FileType::Q5_K_S => 16,
            FileType::Q5_K_M => 17,
            FileType::Q6_K => 18,
            FileType::IQ4_NL => 25,
            FileType::IQ4_XS => 30,
            FileType::BF16 => 32,
        }
    }

    /// The name `llama-quantize` uses (`Q4_K_M`, `F16`, `F32` ...).
    pub fn name(self) -> &'static str {
        match self {
            FileType::AllF32 => "F32",
            FileType::F16 => "F16",
            FileType::BF16 => "BF16",
            FileType::Q4_0 => "Q4_0",
            FileType::Q4_1 => "Q4_1",
            FileType::Q5_0 => "Q5_0",
            FileType::Q5_1 => "Q5_1",
            FileType::Q8_0 => "Q8_0",
            FileType::Q2_K => "Q2_K",
            FileType::Q3_K_S => "Q3_K_S",
            FileType::Q3_K_M => "Q3_K_M",
            FileType::Q3_K_L => "Q3_K_L",
            FileType::Q4_K_S => "Q4_K_S",
            FileType::Q4_K_M => "Q4_K_M",
            FileType::Q5_K_S => "Q5_K_S",
            FileType::Q5_K_M => "Q5_K_M",
            FileType::Q6_K => "Q6_K",
            FileType::IQ4_NL => "IQ4_NL",
            FileType::IQ4_XS => "IQ4_XS",
        }
    }

    /// The base tensor type (`llama_ftype_get_default_type`).
    pub fn default_type(self) -> DType {
        match self {
            FileType::AllF32 => DType::F32,
            FileType::F16 => DType::F16,
            FileType::BF16 => DType::BF16,
            FileType::Q4_0 => DType::Q4_0,
            FileType::Q4_1 => DType::Q4_1,
            FileType::Q5_0 => DType::Q5_0,
            FileType::Q5_1 => DType::Q5_1,
            FileType::Q8_0 => DType::Q8_0,
            FileType::Q2_K => DType::Q2_K,
            FileType::Q3_K_S | FileType::Q3_K_M | FileType::Q3_K_L => DType::Q3_K,
            FileType::Q4_K_S | FileType::Q4_K_M => DType::Q4_K,
            FileType::Q5_K_S | FileType::Q5_K_M => DType::Q5_K,
            FileType::Q6_K => DType::Q6_K,
            FileType::IQ4_NL => DType::IQ4_NL,
            FileType::IQ4_XS => DType::IQ4_XS,
        }
    }

    /// The file type with `general.file_type` id `id`, if kiln knows it.
    pub fn from_id(id: u32) -> Option<FileType> {
        FileType::ALL.iter().copied().find(|f| f.id() == id)
    }

    /// Parse a `--type` argument: a name as llama-quantize spells it (any
    /// case; `Q3_K`, `Q4_K`, `Q5_K` mean the `_M` mixes, `F32` all-F32) or a
    /// numeric `llama_ftype` id. The error is one line listing what works.
    pub fn parse(s: &str) -> Result<FileType, String> {
        let up = s.trim().to_ascii_uppercase();
        let alias = match up.as_str() {
            "Q3_K" => "Q3_K_M",
            "Q4_K" => "Q4_K_M",
            "Q5_K" => "Q5_K_M",
            "ALL_F32" => "F32",
            other => other,
        };
        if let Some(f) = FileType::ALL.iter().copied().find(|f| f.name() == alias) {
            return Ok(f);
        }
        if let Ok(id) = up.parse::<u32>() {
            if let Some(f) = FileType::from_id(id) {
                return Ok(f);
            }
        }
        if let Some((name, why)) = UNSUPPORTED.iter().find(|(n, _)| *n == alias) {
            return Err(format!(
                "quantization type {name} is not supported by kiln quantize ({why})"
            ));
        }
        let known: Vec<&str> = FileType::ALL.iter().map(|f| f.name()).collect();
        Err(format!(
            "unknown quantization type {s:?} (known: {})",
            known.join(", ")
        ))
    }
}

impl std::fmt::Display for FileType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Broad tensor categories the mixture rules look at (by name, as llama.cpp
/// matches them: substrings, first match wins in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    Output,
    TokenEmbd,
    AttnQkv,
    AttnKvB,
    AttnV,
    AttnK,
    AttnQ,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Other,
}

impl Category {
    /// The category of tensor `name`.
    pub fn of(name: &str) -> Category {
        match name {
            "output.weight" => return Category::Output,
            "token_embd.weight" | "per_layer_token_embd.weight" => return Category::TokenEmbd,
            _ => {}
        }
        const SUBSTR: [(&str, Category); 9] = [
            ("attn_qkv.weight", Category::AttnQkv),
            ("attn_kv_b.weight", Category::AttnKvB),
            ("attn_v.weight", Category::AttnV),
            ("attn_k.weight", Category::AttnK),
            ("attn_q.weight", Category::AttnQ),
            ("attn_output.weight", Category::AttnOutput),
            ("ffn_up", Category::FfnUp),
            ("ffn_gate", Category::FfnGate),
            ("ffn_down", Category::FfnDown),
        ];
        SUBSTR
            .iter()
            .find(|(s, _)| name.contains(s))
            .map_or(Category::Other, |&(_, c)| c)
    }

    /// attn_v-like tensors (more sensitive to quantization; share a counter).
    pub fn is_attn_v(self) -> bool {
        matches!(
            self,
            Category::AttnV | Category::AttnQkv | Category::AttnKvB
        )
    }
}

/// Whether llama.cpp would quantize this tensor at all (rule 1).
pub fn allows_quantization(name: &str, n_dims: usize) -> bool {
    const NEVER: [&str; 28] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "indexer.k_proj.weight",
        "indexer.q_proj.weight",
        "time_mix_first.weight",
        "time_mix_w0.weight",
        "time_mix_w1.weight",
        "time_mix_w2.weight",
        "time_mix_v0.weight",
        "time_mix_v1.weight",
        "time_mix_v2.weight",
        "time_mix_a0.weight",
        "time_mix_a1.weight",
        "time_mix_a2.weight",
        "time_mix_g1.weight",
        "time_mix_g2.weight",
        "time_mix_decay_w1.weight",
        "time_mix_decay_w2.weight",
        "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd",
        ".patch_embd",
    ];
    n_dims >= 2
        && name.ends_with("weight")
        && name != "position_embd.weight"
        && name != "token_types.weight"
        && !NEVER.iter().any(|s| name.contains(s))
}

/// What the mixture rules need to know about the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    /// `general.architecture` ("" when absent).
    pub arch: String,
    /// `{arch}.block_count` (else the number of `ffn_down` tensors).
    pub n_layer: usize,
    /// `head_count / head_count_kv` (1 when unknown).
    pub n_gqa: usize,
    /// `{arch}.expert_count` (0 for dense models).
    pub n_expert: usize,
    /// Whether the file has `output.weight` (else embeddings are tied).
    pub has_output: bool,
    /// Number of attn_v-like tensors (`n` of the attn_v counter).
    pub n_attention_wv: usize,
    /// llama.cpp's LLM_TYPE_70B: llama arch, 80 layers, GQA.
    pub is_llama_70b: bool,
}

impl ModelFacts {
    fn is_falcon(&self) -> bool {
        self.arch == "falcon"
    }
}

/// Knobs of the type choice (llama-quantize's flags of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeRules {
    pub ftype: FileType,
    /// `--pure`: every quantizable tensor gets the base type (fallbacks
    /// still apply).
    pub pure: bool,
    /// `--output-tensor-type`.
    pub output_tensor_type: Option<DType>,
    /// `--token-embedding-type`.
    pub token_embedding_type: Option<DType>,
}

/// One tensor as the rules see it. `i_attention_wv` / `i_ffn_down` are
/// llama.cpp's running counters: how many tensors of that category came
/// before this one in file order (for ffn_down in MoE models, the layer
/// parsed from `blk.N.`).
#[derive(Debug, Clone, Copy)]
pub struct TensorDesc<'a> {
    pub name: &'a str,
    /// GGUF order: `dims[0]` is the row length.
    pub dims: &'a [u64],
    pub dtype: DType,
    pub i_attention_wv: usize,
    pub i_ffn_down: usize,
}

/// The decision for one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeChoice {
    /// The type written.
    pub dtype: DType,
    /// `Some(wanted)`: the rules wanted `wanted` but its block does not
    /// divide the row length, so `dtype` is the fallback.
    pub fallback_from: Option<DType>,
    /// False when the tensor is copied unchanged (not quantizable, or the
    /// chosen type is its input type).
    pub convert: bool,
}

fn use_more_bits(i: usize, n: usize) -> bool {
    // The last term is only reached when i >= n/8, so it cannot underflow
    // (in C ints a negative left side would never equal 2 either).
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The type tensor `t` gets (rules 1-6 of the module docs). Pure: the same
/// inputs always give the same answer.
pub fn choose_type(rules: &TypeRules, facts: &ModelFacts, t: &TensorDesc<'_>) -> TypeChoice {
    let copy = TypeChoice {
        dtype: t.dtype,
        fallback_from: None,
        convert: false,
    };
    if !allows_quantization(t.name, t.dims.len()) {
        return copy;
    }
    let cat = Category::of(t.name);
    let base = rules.ftype.default_type();
    let wanted = match (cat, rules.output_tensor_type, rules.token_embedding_type) {
        (Category::Output, Some(o), _) => o,
        (Category::TokenEmbd, _, Some(e)) => e,
        _ if !base.is_quantized() || rules.pure => base,
        _ => mixture_type(rules.ftype, facts, t, cat),
    };
    let (dtype, fallback_from) = fallback(wanted, t.dims.first().copied().unwrap_or(0));
    TypeChoice {
        dtype,
        fallback_from,
        convert: dtype != t.dtype,
    }
}

/// Rule 4: the mixture for a quantized file type.
fn mixture_type(ftype: FileType, facts: &ModelFacts, t: &TensorDesc<'_>, cat: Category) -> DType {
    use FileType as F;
    let base = ftype.default_type();
    let nx = t.dims.first().copied().unwrap_or(0);
    let falcon = facts.is_falcon();
    if cat == Category::Output || (cat == Category::TokenEmbd && !facts.has_output) {
        return if falcon || !nx.is_multiple_of(base.block_size() as u64) {
            DType::Q8_0
        } else if base != DType::Q8_0 {
            DType::Q6_K
        } else {
            base
        };
    }
    if cat.is_attn_v() {
        let (i, n) = (t.i_attention_wv, facts.n_attention_wv);
        let mut ty = match ftype {
            F::Q2_K if facts.n_gqa >= 4 => DType::Q4_K,
            F::Q2_K => DType::Q3_K,
            F::Q3_K_M if i < 2 => DType::Q5_K,
            F::Q3_K_M => DType::Q4_K,
            F::Q3_K_L => DType::Q5_K,
            F::IQ4_NL | F::IQ4_XS if facts.n_gqa >= 4 => DType::Q5_K,
            F::Q4_K_M | F::Q5_K_M if use_more_bits(i, n) => DType::Q6_K,
            F::Q4_K_S if i < 4 => DType::Q5_K,
            _ => base,
        };
        if facts.is_llama_70b && matches!(ty, DType::Q3_K | DType::Q4_K) {
            ty = DType::Q5_K;
        }
        if facts.n_expert == 8 {
            ty = DType::Q8_0;
        }
        return ty;
    }
    match cat {
        Category::AttnK if facts.n_expert == 8 => DType::Q8_0,
        Category::FfnDown => {
            let (i, n) = (t.i_ffn_down, facts.n_layer);
            let umb = use_more_bits(i, n);
            match ftype {
                F::Q2_K => DType::Q3_K,
                F::Q3_K_M if i < n / 16 => DType::Q5_K,
                F::Q3_K_M if !falcon || umb => DType::Q4_K,
                F::Q3_K_M => DType::Q3_K,
                F::Q3_K_L if falcon => DType::Q4_K,
                F::Q3_K_L => DType::Q5_K,
                F::Q4_K_M if falcon && i < n / 16 => DType::Q6_K,
                F::Q4_K_M if falcon && umb => DType::Q5_K,
                F::Q4_K_M if !falcon && umb => DType::Q6_K,
                F::IQ4_NL | F::IQ4_XS if i < n / 8 => DType::Q5_K,
                F::Q5_K_M if umb => DType::Q6_K,
                F::Q4_K_S if !falcon && i < n / 8 => DType::Q5_K,
                _ => base,
            }
        }
        Category::AttnOutput if falcon => match ftype {
            F::Q3_K_L => DType::Q4_K,
            _ => base,
        },
        Category::AttnOutput if facts.n_expert == 8 => match ftype {
            F::Q2_K | F::Q3_K_S | F::Q3_K_M | F::IQ4_NL | F::Q4_K_S | F::Q4_K_M | F::IQ4_XS => {
                DType::Q5_K
            }
            _ => base,
        },
        Category::AttnOutput => match ftype {
            F::Q2_K => DType::Q3_K,
            F::Q3_K_M => DType::Q4_K,
            F::Q3_K_L => DType::Q5_K,
            _ => base,
        },
        _ => base,
    }
}

/// Rule 5: a type whose block divides the row length `nx`.
pub fn fallback(wanted: DType, nx: u64) -> (DType, Option<DType>) {
    let fits = |d: DType| nx.is_multiple_of(d.block_size() as u64);
    if fits(wanted) {
        return (wanted, None);
    }
    let next = match wanted {
        DType::IQ4_XS => DType::IQ4_NL,
        DType::Q2_K | DType::Q3_K => DType::Q4_0,
        DType::Q4_K => DType::Q5_0,
        DType::Q5_K => DType::Q5_1,
        DType::Q6_K => DType::Q8_0,
        _ => DType::F16,
    };
    let got = if fits(next) { next } else { DType::F16 };
    (got, Some(wanted))
}
