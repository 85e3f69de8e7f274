//! Tokenizer tests against fixtures from independent implementations
//! (scripts/fixtures/make_tokenizer_fixtures.py): Hugging Face `tokenizers`
//! for SmolLM2's byte-level BPE (vocab read from the real GGUF), and
//! `sentencepiece` for a tiny SPM model stored in the fixture.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "tokenizer_support/gguf_vocab.rs"]
mod gguf_vocab;

use std::path::PathBuf;
use std::time::Instant;

use kiln_models::tokenizer::{TokenType, Tokenizer, TokenizerError, VocabSpec};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizer")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("fixture {} unreadable: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn model_path() -> PathBuf {
    std::env::var_os("KILN_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_default();
            PathBuf::from(home).join(".cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

/// The default model's tokenizer, or `None` (with a message) if the file is missing.
fn smollm() -> Option<Tokenizer> {
    let path = model_path();
    if !path.exists() {
        eprintln!(
            "skipped: model {} not found (set KILN_MODEL)",
            path.display()
        );
        return None;
    }
    let spec = gguf_vocab::read_vocab_spec(&path).unwrap();
    Some(Tokenizer::from_spec(spec).unwrap())
}

#[test]
fn smollm_matches_hf_tokenizers() {
    let Some(tok) = smollm() else { return };
    let fx = fixture("smollm_bpe.json");
    assert_eq!(tok.n_vocab() as u64, fx["n_vocab"].as_u64().unwrap());
    for (id, text) in fx["probe_tokens"].as_object().unwrap() {
        let id: u32 = id.parse().unwrap();
        assert_eq!(tok.token_text(id), text.as_str(), "token {id}");
        assert_eq!(tok.token_id(text.as_str().unwrap()), Some(id));
    }
    assert_eq!(tok.model(), "gpt2");
    assert_eq!(tok.pre(), Some("smollm"));
    assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
    let mut failures = Vec::new();
    let cases = fx["cases"].as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let want_plain = ids_of(&case["ids_plain"]);
        let got = tok.encode(text, false, true).unwrap();
        let got_plain = tok.encode(text, false, false).unwrap();
        if got != want {
            failures.push(format!(
                "parse_special {text:?}:\n  got  {got:?}\n  want {want:?}"
            ));
        }
        if got_plain != want_plain {
            failures.push(format!(
                "plain {text:?}:\n  got  {got_plain:?}\n  want {want_plain:?}"
            ));
        }
        // Round trips: plain ids decode to the text; special ids need rendering.
        assert_eq!(tok.decode(&want_plain).unwrap(), text);
        assert_eq!(tok.decode_with(&want, true).unwrap(), text);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        2 * cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm_specials_and_eog() {
    let Some(tok) = smollm() else { return };
    assert_eq!(tok.bos(), Some(1));
    assert_eq!(tok.eos(), Some(2));
    assert!(!tok.add_bos(), "SmolLM2's GGUF says add_bos_token = false");
    assert!(!tok.add_space_prefix());
    // <|im_end|> is EOS; <|endoftext|> is EOG by text; <|im_start|> is not.
    assert!(tok.is_eog(2));
    assert!(tok.is_eog(0));
    assert!(!tok.is_eog(1));
    assert!(!tok.is_eog(198));
    assert_eq!(tok.eot(), Some(2), "<|im_end|> is SmolLM2's end of turn");
    assert_eq!(tok.token_type(1), Some(TokenType::Control));
    assert_eq!(tok.token_type(198), Some(TokenType::Normal));
    // add_special follows the vocab: no BOS for SmolLM2.
    assert_eq!(
        tok.encode("hi", true, false).unwrap(),
        tok.encode("hi", false, false).unwrap()
    );
    // Control tokens render only on request.
    let ids = tok
        .encode("<|im_start|>user\nhi<|im_end|>", false, true)
        .unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    assert_eq!(tok.decode(&ids).unwrap(), "user\nhi");
    assert_eq!(tok.token_to_piece(1, false).unwrap(), b"");
    assert_eq!(tok.token_to_piece(1, true).unwrap(), b"<|im_start|>");
    // Bytes the vocab cannot spell are dropped (as llama.cpp and HF do).
    assert_eq!(tok.encode("a\u{4}b", false, false).unwrap(), vec![81, 82]);
    // Newline token is byte-level 'Ċ'.
    assert_eq!(tok.token_to_piece(198, false).unwrap(), b"\n");
    assert_eq!(tok.byte_token(b'\n'), Some(198));
    // A multi-byte character split across tokens concatenates back.
    let emoji = tok.encode("😀", false, false).unwrap();
    let bytes: Vec<u8> = emoji
        .iter()
        .flat_map(|&id| tok.token_to_piece(id, false).unwrap())
        .collect();
    assert_eq!(bytes, "😀".as_bytes());
    let err = tok.decode(&[60000]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "tokenizer: token id 60000 out of range (vocab 49152)"
    );
    assert!(matches!(
        tok.token_to_piece(49152, false),
        Err(TokenizerError::IdOutOfRange { id: 49152, .. })
    ));
}

/// Seeded random strings over a mixed alphabet must round-trip exactly.
#[test]
fn smollm_random_round_trip() {
    let Some(tok) = smollm() else { return };
    let seed: u64 = std::env::var("KILN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("smollm_random_round_trip seed = {seed} (set KILN_SEED to replay)");
    let alphabet: Vec<char> = "abcXYZ 019 \t\n\r.,'!?-_<>|éüß日本😀🇫\u{a0}\u{200b}\u{301}"
        .chars()
        .collect();
    let mut state = seed | 1;
    let mut next = || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..300 {
        let len = (next() % 40) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let ids = tok.encode(&s, false, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), s, "seed {seed}");
        assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
    }
}

/// Tokenizing 1000 lines of prose must take milliseconds, not seconds.
#[test]
fn smollm_encode_speed() {
    let Some(tok) = smollm() else { return };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/text/ppl.txt");
    let Ok(base) = std::fs::read_to_string(&path) else {
        eprintln!("skipped: {} missing", path.display());
        return;
    };
    let lines: Vec<&str> = base.lines().collect();
    let text: String = (0..1000)
        .map(|i| format!("{} {i}\n", lines[i % lines.len()]))
        .collect();
    let t0 = Instant::now();
    let ids = tok.encode(&text, false, false).unwrap();
    let cold = t0.elapsed();
    let t1 = Instant::now();
    let ids2 = tok.encode(&text, false, false).unwrap();
    let warm = t1.elapsed();
    assert_eq!(ids, ids2);
    eprintln!(
        "encode {} bytes (1000 lines) → {} tokens: cold {:.1} ms, warm {:.1} ms",
        text.len(),
        ids.len(),
        cold.as_secs_f64() * 1e3,
        warm.as_secs_f64() * 1e3
    );
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // Generous bound (unoptimised builds, busy 2-core machine); typical is
    // tens of milliseconds.
    const MAX_SECONDS: f64 = 3.0;
    assert!(cold.as_secs_f64() < MAX_SECONDS, "too slow: {cold:?}");
}

fn spm_spec(fx: &Value) -> VocabSpec {
    let tokens = fx["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let scores = fx["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap() as f32)
        .collect();
    let types = fx["token_types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap() as i32)
        .collect();
    VocabSpec {
        model: "llama".into(),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        bos: Some(fx["bos"].as_u64().unwrap() as u32),
        eos: Some(fx["eos"].as_u64().unwrap() as u32),
        unk: Some(fx["unk"].as_u64().unwrap() as u32),
        ..VocabSpec::default()
    }
}

#[test]
fn spm_matches_sentencepiece() {
    let fx = fixture("spm_tiny.json");
    let tok = Tokenizer::from_spec(spm_spec(&fx)).unwrap();
    assert!(tok.add_bos(), "SPM default: add BOS");
    assert!(tok.add_space_prefix(), "SPM default: space prefix");
    let mut failures = Vec::new();
    let cases = fx["cases"].as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let got = tok.encode(text, false, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}:\n  got  {got:?}\n  want {want:?}"));
        }
        assert_eq!(
            tok.decode(&want).unwrap(),
            text,
            "decode of sentencepiece ids"
        );
        // With BOS: prepended, and decode still strips only the prefix space.
        let with_bos = tok.encode(text, true, false).unwrap();
        assert_eq!(with_bos[0], 1);
        assert_eq!(&with_bos[1..], &got[..]);
        assert_eq!(tok.decode(&with_bos).unwrap(), text);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn spm_specials_and_bytes() {
    let fx = fixture("spm_tiny.json");
    let tok = Tokenizer::from_spec(spm_spec(&fx)).unwrap();
    assert_eq!(tok.encode("", true, false).unwrap(), vec![1]);
    assert!(tok.encode("", false, false).unwrap().is_empty());
    assert_eq!(tok.byte_token(b'\n'), tok.token_id("<0x0A>"));
    assert_eq!(
        tok.token_to_piece(tok.token_id("<0x0A>").unwrap(), false)
            .unwrap(),
        b"\n"
    );
    // "<s>" in text is BOS only with parse_special; a space prefix follows it.
    let ids = tok.encode("<s>hi</s>", false, true).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    assert_eq!(
        &ids[1..ids.len() - 1],
        &tok.encode("hi", false, false).unwrap()[..]
    );
    let literal = tok.encode("<s>", false, false).unwrap();
    assert!(!literal.contains(&1));
    assert_eq!(tok.decode(&literal).unwrap(), "<s>");
    assert_eq!(tok.decode_with(&[1, 2], true).unwrap(), "<s></s>");
    assert!(tok.is_eog(2));
}

fn tiny_bpe(pre: Option<&str>) -> VocabSpec {
    // A toy byte-level vocab: all 256 byte characters, a few merges,
    // a control token and a user-defined token.
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| {
            let c = match b {
                33..=126 | 161..=172 | 174..=255 => char::from(b),
                _ => {
                    let n = (0..b)
                        .filter(|x| !matches!(x, 33..=126 | 161..=172 | 174..=255))
                        .count() as u32;
                    char::from_u32(256 + n).unwrap()
                }
            };
            c.to_string()
        })
        .collect();
    for t in ["he", "ll", "hell", "hello", "Ġw", "<|ctl|>", "<user>"] {
        tokens.push(t.to_string());
    }
    let mut types = vec![1; tokens.len()];
    types[261] = 3;
    types[262] = 4;
    VocabSpec {
        model: "gpt2".into(),
        pre: pre.map(str::to_string),
        merges: Some(vec![
            "h e".into(),
            "l l".into(),
            "he ll".into(),
            "hell o".into(),
            "Ġ w".into(),
        ]),
        tokens,
        token_types: Some(types),
        eos: Some(261),
        ..VocabSpec::default()
    }
}

#[test]
fn bpe_special_partition_rules() {
    let tok = Tokenizer::from_spec(tiny_bpe(Some("gpt2"))).unwrap();
    assert_eq!(tok.encode("hello", false, false).unwrap(), vec![259]);
    // User-defined tokens are matched even without parse_special.
    assert_eq!(tok.encode("<user>", false, false).unwrap(), vec![262]);
    // Control tokens only with parse_special.
    assert_eq!(
        tok.encode("hello<|ctl|>", false, true).unwrap(),
        vec![259, 261]
    );
    let plain = tok.encode("hello<|ctl|>", false, false).unwrap();
    assert!(!plain.contains(&261));
    assert_eq!(tok.decode(&plain).unwrap(), "hello<|ctl|>");
    // User-defined text renders verbatim.
    assert_eq!(tok.decode(&[262]).unwrap(), "<user>");
    assert!(tok.is_eog(261));
    assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
}

#[test]
fn bpe_missing_pre_defaults_with_warning() {
    let tok = Tokenizer::from_spec(tiny_bpe(None)).unwrap();
    assert_eq!(tok.pre(), Some("default"));
    assert!(tok.warnings().iter().any(|w| w.contains("default")));
    assert_eq!(
        tok.decode(&tok.encode("hello  world 1234", false, false).unwrap())
            .unwrap(),
        "hello  world 1234"
    );
    for pre in [
        "llama3",
        "llama-bpe",
        "qwen2",
        "smollm",
        "gpt2",
        "default",
        "deepseek-coder",
    ] {
        let mut spec = tiny_bpe(Some(pre));
        spec.bos = Some(261);
        let tok = Tokenizer::from_spec(spec).unwrap();
        let text = "Hello world's 12345\n\n  x";
        let ids = tok.encode(text, false, false).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), text, "{pre}");
    }
    // llama3 family adds BOS by default, and needs a BOS id for that.
    let err = Tokenizer::from_spec(tiny_bpe(Some("llama3")))
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("BOS"), "{err}");
}

#[test]
fn spec_errors_name_the_bad_value() {
    let mut spec = tiny_bpe(Some("gpt2"));
    spec.model = "wordpiece".into();
    let e = Tokenizer::from_spec(spec).unwrap_err();
    assert!(e.to_string().contains("\"wordpiece\""), "{e}");

    let e = Tokenizer::from_spec(tiny_bpe(Some("klingon"))).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"klingon\"") && msg.contains("smollm"),
        "{msg}"
    );

    let mut spec = tiny_bpe(Some("gpt2"));
    spec.token_types = Some(vec![1; 3]);
    let e = Tokenizer::from_spec(spec).unwrap_err();
    assert!(
        e.to_string()
            .contains("token_types has 3 entries, expected 263"),
        "{e}"
    );

    let mut spec = tiny_bpe(Some("gpt2"));
    spec.eos = Some(9999);
    let e = Tokenizer::from_spec(spec).unwrap_err();
    assert!(e.to_string().contains("eos token id 9999"), "{e}");

    let mut spec = tiny_bpe(Some("gpt2"));
    spec.merges = None;
    assert!(matches!(
        Tokenizer::from_spec(spec),
        Err(TokenizerError::Missing { what: "merges", .. })
    ));
}
