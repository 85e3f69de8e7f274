//! End to end on the default model (SmolLM2-135M-Instruct Q4_1) against
//! fixtures from an implementation nobody here wrote: Hugging Face
//! `transformers` loading the same GGUF (dequantized, float32), made by
//! scripts/fixtures/make_model_fixtures.py. Skipped, with a message, when the
//! model file is absent (scripts/fetch-model.sh fetches it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::Stream;
use kiln_models::perplexity::perplexity;
use kiln_models::Model;
use serde_json::Value;
use std::path::PathBuf;

/// kiln quantizes activations to 8 bits (Q8_1/Q8_0 blocks) before every
/// matmul, as llama.cpp does, while the reference runs float32 activations.
/// Measured on this model the last-position logits differ by up to ~0.1;
/// where the reference's top-1/top-2 margin is below this, either token is a
/// legitimate greedy choice and the step is not compared.
const MIN_MARGIN: f64 = 0.25;
/// Max |logit difference| over the reference's top-10 at the last prompt
/// position. Measured (2026-11-22): 0.52 at most with kiln's 8-bit
/// activations; with the reference matmul (f32 activations) swapped in, the
/// same comparison gives < 1e-4 and PPL equal to 4e-8 relative, so the
/// engine itself is exact and this bound covers activation quantization only
/// (logits here are 13..38, so 0.75 is 2..6%).
const TOP10_LOGIT_TOL: f64 = 0.75;
/// Relative perplexity tolerance vs the float32 reference. Activation
/// quantization moves llama.cpp's own PPL by a few tenths of a percent here.
const PPL_REL_TOL: f64 = 0.01;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn model_path() -> Option<PathBuf> {
    kiln_testkit::default_model()
}

fn load() -> Option<(Stream, Model)> {
    let p = model_path()?;
    let s = Stream::cpu(2).unwrap();
    let m = Model::load(&p, &s, &mut |_, _| {}).unwrap();
    Some((s, m))
}

fn json(name: &str) -> Value {
    let p = fixtures().join(name);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn greedy_matches_transformers() {
    let Some((s, model)) = load() else { return };
    let g = json("model/greedy.json");
    let mut compared = 0;
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = case["prompt"].as_str().unwrap();
        let want_prompt = ids(&case["prompt_ids"]);
        let got_prompt = model.tokenizer.encode(prompt, true, true).unwrap();
        assert_eq!(got_prompt, want_prompt, "{name}: prompt token ids");

        // Last prompt position: same top-1, top-10 logits close.
        let mut st = model.new_state(&s, 256, 64, false).unwrap();
        let logits = model.feed(&s, &mut st, &got_prompt).unwrap().to_vec();
        let top10 = case["prompt_last_top10"].as_array().unwrap();
        let mut max_diff = 0f64;
        let want_top = top10[0][0].as_u64().unwrap() as u32;
        assert_eq!(argmax(&logits), want_top, "{name}: top-1 after the prompt");
        for e in top10 {
            let (id, want) = (e[0].as_u64().unwrap() as usize, e[1].as_f64().unwrap());
            let d = (logits[id] as f64 - want).abs();
            max_diff = max_diff.max(d);
            assert!(
                d <= TOP10_LOGIT_TOL,
                "{name}: logit of token {id}: kiln {} vs reference {want}",
                logits[id]
            );
        }

        eprintln!("{name}: max |logit diff| over the reference top-10: {max_diff:.4}");

        // Teacher-forced: feed the reference's tokens, and wherever the
        // reference was decisive, kiln's argmax must be the reference's token.
        let gen = ids(&case["generated_ids"]);
        let margins: Vec<f64> = case["step_margin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let mut next = argmax(&logits);
        for (step, &tok) in gen.iter().enumerate() {
            if margins[step] >= MIN_MARGIN {
                assert_eq!(
                    next, tok,
                    "{name}: step {step} (reference margin {:.3})",
                    margins[step]
                );
                compared += 1;
            }
            let l = model.feed(&s, &mut st, &[tok]).unwrap();
            next = argmax(l);
        }
    }
    eprintln!("greedy: {compared} decisive steps compared");
    assert!(
        compared > 100,
        "too few decisive steps compared: {compared}"
    );
}

#[test]
fn free_running_greedy_text() {
    // Free-running greedy generation (kiln's own tokens fed back) through the
    // public generate() loop: the text matches the reference until the
    // reference's first near-tie.
    use kiln_models::generate::{generate, GenParams};
    use kiln_models::sampler::{Sampler, SamplerParams};
    let Some((s, model)) = load() else { return };
    let g = json("model/greedy.json");
    for case in g["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["generated_ids"]);
        let margins: Vec<f64> = case["step_margin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let sure = margins.iter().take_while(|&&m| m >= MIN_MARGIN).count();
        let mut st = model.new_state(&s, 256, 64, false).unwrap();
        let mut sampler = Sampler::new(SamplerParams {
            temperature: 0.0,
            ..Default::default()
        })
        .unwrap();
        let (got, _) = generate(
            &model,
            &s,
            &mut st,
            &prompt,
            GenParams {
                n_predict: want.len(),
                ignore_eos: true,
            },
            &mut sampler,
            &mut |_| std::ops::ControlFlow::Continue(()),
        )
        .unwrap();
        assert_eq!(
            &got[..sure],
            &want[..sure],
            "{name}: first {sure} greedy tokens"
        );
        if name == "capital_france" {
            let text = model.tokenizer.decode(&got[..sure.max(2)]).unwrap();
            assert!(text.starts_with(" Paris"), "{text}");
        }
    }
}

#[test]
fn perplexity_matches_transformers() {
    let Some((s, model)) = load() else { return };
    let p = json("model/perplexity.json");
    let text = std::fs::read_to_string(fixtures().join("text/ppl.txt")).unwrap();
    let tokens = model.tokenizer.encode(&text, true, false).unwrap();
    assert_eq!(tokens, ids(&p["token_ids"]), "perplexity text token ids");
    let run = p["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["n_ctx"] == 128)
        .unwrap();
    let want = run["ppl"].as_f64().unwrap();
    let r = perplexity(&model, &s, &tokens, 128, 0, &mut |_, _| {}).unwrap();
    assert_eq!(r.chunks as u64, run["n_chunk"].as_u64().unwrap());
    assert_eq!(r.scored_tokens as u64, run["count"].as_u64().unwrap());
    let rel = (r.ppl - want).abs() / want;
    eprintln!(
        "perplexity n_ctx=128: kiln {:.4}, transformers {want:.4} (rel {rel:.2e})",
        r.ppl
    );
    assert!(rel <= PPL_REL_TOL, "kiln PPL {} vs reference {want}", r.ppl);
}
