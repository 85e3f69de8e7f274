//! Gemma 3 270M (the second real model): its `gemma3.*` hyper-parameters,
//! the clean "not supported yet" error when loading it for generation, and
//! its SentencePiece tokenizer (262k pieces, byte fallback, no space prefix,
//! user-defined whitespace runs and HTML tags, control chat markers) against
//! `sentencepiece` ids (scripts/fixtures/make_gemma_tokenizer_fixtures.py).
//! The file is `$KILN_GEMMA`, else kiln's cache (`scripts/fetch-gemma.sh`,
//! which scripts/test.sh runs); without it those tests print SKIPPED and the
//! reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "tokenizer_support/gguf_vocab.rs"]
mod gguf_vocab;

use std::path::PathBuf;
use std::time::Instant;

use kiln_core::gguf::{GgufFile, GgufWriter, Value as Gv};
use kiln_models::config::{ArchParams, ModelConfig};
use kiln_models::tokenizer::{TokenType, Tokenizer};
use kiln_models::Model;
use serde_json::Value;

fn fixture() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/tokenizer/gemma3_spm.json");
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

/// Gemma's tokenizer and its build time, or `None` (SKIPPED printed) without the file.
fn gemma(test: &str) -> Option<(Tokenizer, f64)> {
    let Some(path) = kiln_testkit::gemma_model() else {
        eprintln!("SKIPPED {test}: no Gemma file");
        return None;
    };
    let spec = gguf_vocab::read_vocab_spec(&path).unwrap();
    let t0 = Instant::now();
    let tok = Tokenizer::from_spec(spec).unwrap();
    Some((tok, t0.elapsed().as_secs_f64()))
}

fn gemma3_keys(w: &mut GgufWriter, n_layer: u32) {
    w.add_kv("general.architecture", Gv::String("gemma3".into()));
    for (k, v) in [
        ("context_length", 32768),
        ("embedding_length", 640),
        ("block_count", n_layer),
        ("feed_forward_length", 2048),
        ("attention.head_count", 4),
        ("attention.head_count_kv", 1),
        ("attention.key_length", 256),
        ("attention.value_length", 256),
        ("attention.sliding_window", 512),
        ("vocab_size", 1000),
    ] {
        w.add_kv(format!("gemma3.{k}"), Gv::U32(v));
    }
    w.add_kv("gemma3.rope.freq_base", Gv::F32(1e6));
    w.add_kv("gemma3.attention.layer_norm_rms_epsilon", Gv::F32(1e-6));
}

fn check_gemma_270m(cfg: &ModelConfig) {
    assert_eq!(cfg.arch, "gemma3");
    assert_eq!(
        (cfg.n_layer, cfg.n_embd, cfg.n_ff, cfg.n_head, cfg.n_head_kv),
        (18, 640, 2048, 4, 1)
    );
    assert_eq!(
        (cfg.head_dim, cfg.n_rot, cfg.n_ctx_train),
        (256, 256, 32768)
    );
    assert_eq!(
        (cfg.rope_base, cfg.rope_freq_scale, cfg.rms_eps),
        (1e6, 1.0, 1e-6)
    );
    let ArchParams::Gemma3(g) = &cfg.arch_params else {
        panic!("not gemma3 params: {:?}", cfg.arch_params)
    };
    assert_eq!(
        (g.head_dim_v, g.sliding_window, g.swa_period),
        (256, 512, 6)
    );
    assert_eq!(g.rope_base_local, 10_000.0);
    assert_eq!(g.attn_scale, 1.0 / 16.0);
    assert_eq!((g.final_logit_softcap, g.attn_logit_softcap), (None, None));
    let local: Vec<bool> = (0..12).map(|il| g.is_local(il)).collect();
    assert_eq!(local, [true, true, true, true, true, false].repeat(2));
}

/// `gemma3.*` keys parse into the config; a missing sliding window or a bad
/// softcap is a typed error naming the key.
#[test]
fn gemma3_config_from_metadata() {
    let mut w = GgufWriter::new();
    gemma3_keys(&mut w, 18);
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let mut cfg = ModelConfig::parse(&f).unwrap();
    assert_eq!(cfg.n_vocab, 1000);
    cfg.n_vocab = 262144;
    check_gemma_270m(&cfg);
    assert!(ModelConfig::from_gguf(&f).is_ok());

    // 27B (62 layers) scales queries by 1/sqrt(n_embd / n_head).
    let mut w = GgufWriter::new();
    gemma3_keys(&mut w, 62);
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let ArchParams::Gemma3(g) = ModelConfig::parse(&f).unwrap().arch_params else {
        panic!()
    };
    assert_eq!(g.attn_scale, 1.0 / (160f32).sqrt());

    let mut w = GgufWriter::new();
    gemma3_keys(&mut w, 18);
    w.add_kv("gemma3.final_logit_softcapping", Gv::F32(-1.0));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let e = ModelConfig::parse(&f).unwrap_err().to_string();
    assert!(e.contains("gemma3.final_logit_softcapping -1"), "{e}");

    let mut w = GgufWriter::new();
    w.add_kv("general.architecture", Gv::String("gemma3".into()));
    let f = GgufFile::from_bytes(w.to_bytes().unwrap()).unwrap();
    let e = ModelConfig::parse(&f).unwrap_err().to_string();
    assert!(e.contains("missing metadata key gemma3.block_count"), "{e}");
}

/// The real file: its config parses and it loads to run, with its extra
/// norms and Gemma's turn format as the chat template (the file has none).
#[test]
fn gemma_file_config_and_load() {
    let Some(path) = kiln_testkit::gemma_model() else {
        return;
    };
    let f = GgufFile::open(&path).unwrap();
    let cfg = ModelConfig::parse(&f).unwrap();
    assert_eq!(cfg.n_vocab, 262144);
    assert_eq!(cfg.name, "Gemma 3 270m");
    check_gemma_270m(&cfg);
    let stream = kiln::Stream::cpu(1).unwrap();
    let m = Model::load(&path, &stream, &mut |_, _| {}).unwrap();
    let kiln_models::model::ArchWeights::Gemma3(g) = &m.arch_weights else {
        panic!("gemma3 file loaded without its extra weights")
    };
    assert_eq!(g.layers.len(), 18);
    let chat = m.chat_template.as_ref().unwrap();
    assert_eq!(chat.eos_token(), "<end_of_turn>");
}

#[test]
fn gemma_matches_sentencepiece() {
    let Some((tok, build_s)) = gemma("gemma_matches_sentencepiece") else {
        return;
    };
    eprintln!(
        "gemma tokenizer: {} tokens built in {:.0} ms",
        tok.n_vocab(),
        build_s * 1e3
    );
    let fx = fixture();
    assert_eq!(tok.n_vocab() as u64, fx["n_vocab"].as_u64().unwrap());
    for (id, v) in fx["probe_tokens"].as_object().unwrap() {
        let id: u32 = id.parse().unwrap();
        assert_eq!(tok.token_text(id), v[0].as_str(), "token {id}");
    }
    assert_eq!(tok.model(), "llama");
    assert_eq!(tok.bos().map(u64::from), fx["bos"].as_u64());
    assert_eq!(tok.eos().map(u64::from), fx["eos"].as_u64());
    assert_eq!(tok.unk().map(u64::from), fx["unk"].as_u64());
    assert_eq!(tok.pad().map(u64::from), fx["pad"].as_u64());
    assert_eq!(Some(tok.add_bos()), fx["add_bos"].as_bool());
    assert_eq!(Some(tok.add_eos()), fx["add_eos"].as_bool());
    assert_eq!(
        Some(tok.add_space_prefix()),
        fx["add_space_prefix"].as_bool()
    );
    assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
    let bos = tok.bos().unwrap();
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
        // sentencepiece's decode of the plain ids (the text, unless the text
        // held a literal U+2581, which decodes as a space).
        let decoded = case["decoded"].as_str().unwrap_or(text);
        let got_decoded = tok.decode(&want_plain).unwrap();
        if got_decoded != decoded {
            failures.push(format!(
                "decode {want_plain:?}:\n  got  {got_decoded:?}\n  want {decoded:?}"
            ));
        }
        // Control tokens render back to their text on request.
        if case.get("decoded").is_none() {
            assert_eq!(tok.decode_with(&want, true).unwrap(), text);
        }
        // add_special prepends BOS (Gemma's add_bos_token = true) and nothing else.
        let with_bos = tok.encode(text, true, true).unwrap();
        assert_eq!(with_bos.first(), Some(&bos), "{text:?}");
        assert_eq!(&with_bos[1..], &got[..], "{text:?}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks differ:\n{}",
        failures.len(),
        3 * cases.len(),
        failures.join("\n")
    );
}

#[test]
fn gemma_specials_and_bytes() {
    let Some((tok, _)) = gemma("gemma_specials_and_bytes") else {
        return;
    };
    let id = |t: &str| tok.token_id(t).unwrap();
    assert_eq!(tok.eot(), Some(id("<end_of_turn>")));
    assert!(tok.is_eog(id("<end_of_turn>")));
    assert!(tok.is_eog(id("<eos>")));
    assert!(!tok.is_eog(id("<start_of_turn>")));
    assert_eq!(
        tok.token_type(id("<start_of_turn>")),
        Some(TokenType::Control)
    );
    assert_eq!(tok.token_type(id("\n")), Some(TokenType::UserDefined));
    assert_eq!(tok.token_type(id("<0x0A>")), Some(TokenType::Byte));
    // Control tokens render only on request; user-defined ones always.
    let ids = tok
        .encode("<start_of_turn>user\nhi<end_of_turn>", false, true)
        .unwrap();
    assert_eq!(ids[0], id("<start_of_turn>"));
    assert_eq!(*ids.last().unwrap(), id("<end_of_turn>"));
    assert_eq!(tok.decode(&ids).unwrap(), "user\nhi");
    assert_eq!(tok.token_to_piece(id("<b>"), false).unwrap(), b"<b>");
    // Whitespace runs are user-defined tokens with real spaces.
    assert_eq!(tok.encode("a  b", false, false).unwrap()[1], id("  "));
    // Byte fallback: a private-use character is spelled as its three bytes.
    let ids = tok.encode("\u{e00b}", false, false).unwrap();
    let bytes: Vec<u32> = "\u{e00b}"
        .bytes()
        .map(|b| tok.byte_token(b).unwrap())
        .collect();
    assert_eq!(ids, bytes);
    assert_eq!(tok.decode(&ids).unwrap(), "\u{e00b}");
}

/// A 10 KB text (prose, code, chat markers, whitespace runs) must encode in
/// milliseconds: the merge loop is a heap (n log n), and special-token
/// partitioning must not scan the text once per each of the 6,414
/// control / user-defined tokens.
#[test]
fn gemma_encode_speed() {
    let Some((tok, build_s)) = gemma("gemma_encode_speed") else {
        return;
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/text/ppl.txt");
    let base = std::fs::read_to_string(&path).unwrap();
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 10_000 {
        text.push_str(&format!(
            "<start_of_turn>user\n{}  <b>{i}</b>\n\n\t<end_of_turn>\n",
            &base[..base.len().min(300 + i)]
        ));
        i += 1;
    }
    let mut end = 10_240.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text[..end];
    let t0 = Instant::now();
    let ids = tok.encode(text, true, true).unwrap();
    let special = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let plain = tok.encode(text, false, false).unwrap();
    let plain_s = t1.elapsed().as_secs_f64();
    eprintln!(
        "gemma: build {:.0} ms; encode {} bytes → {} tokens: parse_special {:.1} ms, plain {:.1} ms ({} tokens)",
        build_s * 1e3,
        text.len(),
        ids.len(),
        special * 1e3,
        plain_s * 1e3,
        plain.len()
    );
    assert_eq!(tok.decode_with(&ids[1..], true).unwrap(), text);
    assert_eq!(tok.decode(&plain).unwrap(), text);
    // Generous bounds for unoptimised builds on a busy 2-core machine;
    // release builds take a few milliseconds.
    const MAX_ENCODE_SECONDS: f64 = 2.0;
    const MAX_BUILD_SECONDS: f64 = 10.0;
    assert!(special < MAX_ENCODE_SECONDS, "encode too slow: {special} s");
    assert!(plain_s < MAX_ENCODE_SECONDS, "encode too slow: {plain_s} s");
    assert!(build_s < MAX_BUILD_SECONDS, "build too slow: {build_s} s");
}
