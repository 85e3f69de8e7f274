//! Test-only: read the `tokenizer.ggml.*` metadata of a GGUF file into a
//! [`VocabSpec`] with `kiln_core::gguf::GgufFile`, independently of the
//! engine's loader (so the tokenizer tests check the tokenizer alone).

use std::path::Path;

use kiln_core::gguf::GgufFile;
use kiln_models::tokenizer::VocabSpec;

fn strings(f: &GgufFile, key: &str) -> Option<Vec<String>> {
    f.get(key)?;
    let v = f.get_str_array(key).unwrap();
    Some(v.into_iter().map(str::to_string).collect())
}

pub fn read_vocab_spec(path: &Path) -> kiln_core::Result<VocabSpec> {
    let f = GgufFile::open(path)?;
    let opt_u32 = |key: &str| f.get(key).and_then(|v| v.as_u32());
    let opt_bool = |key: &str| f.get(key).and_then(|v| v.as_bool());
    Ok(VocabSpec {
        model: f.get_str("tokenizer.ggml.model")?.to_string(),
        pre: f
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        tokens: strings(&f, "tokenizer.ggml.tokens").unwrap_or_default(),
        scores: f
            .get("tokenizer.ggml.scores")
            .map(|_| f.get_f32_array("tokenizer.ggml.scores"))
            .transpose()?,
        token_types: f
            .get("tokenizer.ggml.token_type")
            .map(|_| f.get_i32_array("tokenizer.ggml.token_type"))
            .transpose()?,
        merges: strings(&f, "tokenizer.ggml.merges"),
        bos: opt_u32("tokenizer.ggml.bos_token_id"),
        eos: opt_u32("tokenizer.ggml.eos_token_id"),
        unk: opt_u32("tokenizer.ggml.unknown_token_id"),
        pad: opt_u32("tokenizer.ggml.padding_token_id"),
        eot: opt_u32("tokenizer.ggml.eot_token_id"),
        add_bos: opt_bool("tokenizer.ggml.add_bos_token"),
        add_eos: opt_bool("tokenizer.ggml.add_eos_token"),
        add_space_prefix: opt_bool("tokenizer.ggml.add_space_prefix"),
    })
}
