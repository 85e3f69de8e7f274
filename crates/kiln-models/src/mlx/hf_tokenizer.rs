//! Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) → kiln's
//! [`VocabSpec`], so the byte-level BPE tokenizer kiln uses for GGUF files
//! runs Hugging Face directories too.
//!
//! Supported: `model.type == "BPE"` over byte-level tokens (ByteLevel
//! decoder), merges as `"a b"` strings or `["a", "b"]` pairs, `added_tokens`
//! (special → control tokens, others → user-defined), and these
//! pre-tokenizers, mapped to kiln's `pre` kinds:
//!
//! - `ByteLevel { use_regex: true }` → `gpt2`;
//! - `Sequence [Digits { individual_digits: true }, ByteLevel { use_regex:
//!   true }]` → `smollm` (the starcoder / SmolLM family);
//! - `Sequence [Split { Regex: <pattern> }, ByteLevel { use_regex: false }]`
//!   with the Llama 3 or Qwen2 pattern → `llama-bpe` / `qwen2`.
//!
//! Anything else (Metaspace / SentencePiece-style BPE, other regexes, a
//! normalizer other than none or NFC) is a clear error naming it.

use crate::tokenizer::VocabSpec;
use crate::{ModelError, Result};
use serde_json::Value;

/// Llama 3's split pattern as its tokenizer.json spells it.
const LLAMA3_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split pattern.
const QWEN2_RE: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tk_err(msg: impl Into<String>) -> ModelError {
    ModelError::Unsupported(format!("tokenizer.json: {}", msg.into()))
}

fn ty(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or("?")
}

fn byte_level(v: &Value, use_regex: bool) -> bool {
    ty(v) == "ByteLevel"
        && v.get("use_regex").and_then(Value::as_bool).unwrap_or(true) == use_regex
        && !v
            .get("add_prefix_space")
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

/// kiln's `pre` name for a `pre_tokenizer` entry.
pub fn pre_name(pre: &Value) -> Result<&'static str> {
    if byte_level(pre, true) {
        return Ok("gpt2");
    }
    if ty(pre) == "Sequence" {
        let parts = pre
            .get("pretokenizers")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        match parts {
            [d, b]
                if ty(d) == "Digits"
                    && d.get("individual_digits").and_then(Value::as_bool) == Some(true)
                    && byte_level(b, true) =>
            {
                return Ok("smollm")
            }
            [s, b] if ty(s) == "Split" && byte_level(b, false) => {
                let re = s
                    .get("pattern")
                    .and_then(|p| p.get("Regex"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let isolated = s.get("behavior").and_then(Value::as_str) == Some("Isolated");
                if isolated && re == LLAMA3_RE {
                    return Ok("llama-bpe");
                }
                if isolated && re == QWEN2_RE {
                    return Ok("qwen2");
                }
            }
            _ => {}
        }
    }
    let mut s = pre.to_string();
    if s.len() > 200 {
        s.truncate(200);
        s.push('…');
    }
    Err(tk_err(format!(
        "unsupported pre_tokenizer {s} (kiln maps GPT-2 ByteLevel, Digits+ByteLevel \
         (smollm), and the Llama 3 / Qwen2 Split+ByteLevel patterns)"
    )))
}

/// A special-token entry of tokenizer_config.json: a string or `{"content": ..}`.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// First id of an `int | [int]` config entry.
fn first_id(v: Option<&Value>) -> Option<u32> {
    match v? {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Value::Array(a) => first_id(a.first()),
        _ => None,
    }
}

/// Inputs besides tokenizer.json: tokenizer_config.json, config.json and
/// generation_config.json (any may be `Null` when absent).
pub struct HfTokenizerFiles<'a> {
    pub tokenizer: &'a Value,
    pub tokenizer_config: &'a Value,
    pub config: &'a Value,
    pub generation_config: &'a Value,
}

/// Build the [`VocabSpec`] with `n_vocab` tokens (the model's embedding
/// rows: ids the tokenizer lacks become unused placeholders).
pub fn vocab_spec(f: &HfTokenizerFiles<'_>, n_vocab: usize) -> Result<VocabSpec> {
    let model = f
        .tokenizer
        .get("model")
        .ok_or_else(|| tk_err("missing \"model\""))?;
    if ty(model) != "BPE" {
        return Err(tk_err(format!(
            "model type {:?} (kiln reads byte-level BPE tokenizers)",
            ty(model)
        )));
    }
    if model.get("byte_fallback").and_then(Value::as_bool) == Some(true) {
        return Err(tk_err(
            "SentencePiece-style BPE (byte_fallback) is not supported from tokenizer.json",
        ));
    }
    match f.tokenizer.get("normalizer") {
        None | Some(Value::Null) => {}
        Some(n) if ty(n) == "NFC" => {} // byte-level BPE text is NFC already in practice
        Some(n) => return Err(tk_err(format!("unsupported normalizer {:?}", ty(n)))),
    }
    let pre = f.tokenizer.get("pre_tokenizer").unwrap_or(&Value::Null);
    let pre = pre_name(pre)?;

    let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
    let mut types = vec![1i32; n_vocab];
    let mut put = |id: u64, text: &str, t: i32| -> Result<()> {
        let slot = usize::try_from(id)
            .ok()
            .and_then(|i| tokens.get_mut(i).map(|s| (i, s)));
        let Some((i, slot)) = slot else {
            return Err(tk_err(format!(
                "token {text:?} has id {id}, outside the model's vocabulary of {n_vocab}"
            )));
        };
        *slot = Some(text.to_string());
        types[i] = t;
        Ok(())
    };
    let vocab = model
        .get("vocab")
        .and_then(Value::as_object)
        .ok_or_else(|| tk_err("missing model.vocab"))?;
    for (text, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| tk_err(format!("vocab id of {text:?} is not an integer")))?;
        put(id, text, 1)?;
    }
    for a in f
        .tokenizer
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let (Some(id), Some(text)) = (
            a.get("id").and_then(Value::as_u64),
            a.get("content").and_then(Value::as_str),
        ) else {
            return Err(tk_err(format!("malformed added token {a}")));
        };
        let special = a.get("special").and_then(Value::as_bool).unwrap_or(false);
        put(id, text, if special { 3 } else { 4 })?;
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5; // unused
                format!("<kiln_unused_{i}>")
            })
        })
        .collect();
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| tk_err("missing model.merges"))?
        .iter()
        .map(|m| match m {
            Value::String(s) => Ok(s.clone()),
            Value::Array(p) => match p.as_slice() {
                [Value::String(a), Value::String(b)] => Ok(format!("{a} {b}")),
                _ => Err(tk_err(format!("malformed merge {m}"))),
            },
            _ => Err(tk_err(format!("malformed merge {m}"))),
        })
        .collect::<Result<Vec<String>>>()?;

    let id_of = |text: Option<String>| -> Option<u32> {
        let t = text?;
        tokens.iter().position(|x| *x == t).map(|i| i as u32)
    };
    let tc = f.tokenizer_config;
    let bos = id_of(token_text(tc.get("bos_token")))
        .or_else(|| first_id(f.config.get("bos_token_id")))
        .or_else(|| first_id(f.generation_config.get("bos_token_id")));
    let eos = id_of(token_text(tc.get("eos_token")))
        .or_else(|| first_id(f.generation_config.get("eos_token_id")))
        .or_else(|| first_id(f.config.get("eos_token_id")));
    // A second end-of-turn id: generation_config's first eos when it differs.
    let eot = first_id(f.generation_config.get("eos_token_id")).filter(|&e| Some(e) != eos);
    let pad = id_of(token_text(tc.get("pad_token")));
    // add_bos: tokenizer_config's flag, else whether the post-processor
    // template starts with a special token (Llama 3 style).
    let add_bos = tc
        .get("add_bos_token")
        .and_then(Value::as_bool)
        .or_else(|| {
            let single = f
                .tokenizer
                .get("post_processor")?
                .get("single")?
                .as_array()?;
            Some(single.first()?.get("SpecialToken").is_some())
        });
    Ok(VocabSpec {
        model: "gpt2".into(),
        pre: Some(pre.into()),
        tokens,
        scores: None,
        token_types: Some(types),
        merges: Some(merges),
        bos,
        eos,
        unk: None,
        pad,
        eot,
        add_bos: Some(add_bos.unwrap_or(false)),
        add_eos: Some(false),
        add_space_prefix: Some(false),
    })
}

/// The chat template: `tokenizer_config.json`'s `chat_template` (a string,
/// or a list of `{name, template}` where `default` wins), else the
/// `chat_template.jinja` file's text passed as `jinja`.
pub fn chat_template(tokenizer_config: &Value, jinja: Option<String>) -> Option<String> {
    match tokenizer_config.get("chat_template") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .or_else(|| list.first())
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => jinja,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn pre_tokenizers_map_or_error() {
        let smollm = v(
            r#"{"type":"Sequence","pretokenizers":[{"type":"Digits","individual_digits":true},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":true}]}"#,
        );
        assert_eq!(pre_name(&smollm).unwrap(), "smollm");
        let gpt2 = v(r#"{"type":"ByteLevel","add_prefix_space":false,"use_regex":true}"#);
        assert_eq!(pre_name(&gpt2).unwrap(), "gpt2");
        let l3 = serde_json::json!({"type":"Sequence","pretokenizers":[
            {"type":"Split","pattern":{"Regex":LLAMA3_RE},"behavior":"Isolated","invert":false},
            {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]});
        assert_eq!(pre_name(&l3).unwrap(), "llama-bpe");
        let meta = v(r#"{"type":"Metaspace","replacement":"▁"}"#);
        let e = pre_name(&meta).unwrap_err().to_string();
        assert!(
            e.contains("Metaspace") && e.contains("unsupported pre_tokenizer"),
            "{e}"
        );
    }

    #[test]
    fn vocab_specials_and_template() {
        let tok = v(
            r#"{"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":[["a","b"]]},
            "added_tokens":[{"id":3,"content":"<|end|>","special":true}],
            "pre_tokenizer":{"type":"ByteLevel","use_regex":true}}"#,
        );
        let tc = v(r#"{"eos_token":{"content":"<|end|>"},"chat_template":"{{ x }}"}"#);
        let files = HfTokenizerFiles {
            tokenizer: &tok,
            tokenizer_config: &tc,
            config: &v(r#"{"bos_token_id":[0]}"#),
            generation_config: &Value::Null,
        };
        let s = vocab_spec(&files, 5).unwrap();
        assert_eq!(s.tokens[2], "ab");
        assert_eq!(s.tokens[4], "<kiln_unused_4>");
        assert_eq!(s.token_types.as_deref(), Some(&[1, 1, 1, 3, 5][..]));
        assert_eq!(s.merges.as_deref(), Some(&["a b".to_string()][..]));
        assert_eq!((s.bos, s.eos, s.add_bos), (Some(0), Some(3), Some(false)));
        assert!(vocab_spec(&files, 3)
            .unwrap_err()
            .to_string()
            .contains("id 3"));
        assert_eq!(chat_template(&tc, None).as_deref(), Some("{{ x }}"));
        assert_eq!(
            chat_template(&Value::Null, Some("j".into())).as_deref(),
            Some("j")
        );
    }
}
