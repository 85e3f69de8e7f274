//! kiln::ops::sample dispatch: the same logits through a CPU stream and,
//! where there is one, a CUDA stream, against the kiln-core reference id
//! (the kernel itself is held to the testkit table by kiln-cuda's
//! parity_cuops; this checks the tensor prefix, the stream's penalty-id
//! copy as the ids change between calls, and the sentinel's error).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::ops::{self, SampleParams};
use kiln::{Stream, Tensor};
use kiln_core::ops::sample::sample_ref;
use kiln_testkit::{case_rng, rand_f32, test_seed};
use rand::Rng;

fn streams() -> Vec<Stream> {
    let mut v = vec![Stream::cpu(2).unwrap()];
    match Stream::cuda(0) {
        Ok(s) => v.push(s),
        Err(e) => eprintln!("SKIPPED on CUDA: no CUDA stream ({e})"),
    }
    v
}

#[test]
fn sample_matches_the_reference_as_penalty_ids_change() {
    let mut rng = case_rng(test_seed(), "kiln-sample", 0);
    // A logits buffer longer than the vocabulary, as a model's scratch is.
    let (n, spare) = (50_003, 29);
    let mut x = rand_f32(&mut rng, n + spare, -6.0, 6.0);
    x[n..].fill(1e30); // must never be read
    for s in streams() {
        let dev = s.device();
        let xt = Tensor::from_f32(&s, &[n + spare], x.clone()).unwrap();
        let mut history: Vec<u32> = Vec::new();
        for step in 0..24 {
            // Grow, then slide a window, then repeat an earlier set: the
            // device copy must follow every change (and every non-change).
            if step < 12 {
                history.push(rng.gen_range(0..n as u32));
            } else if step % 3 != 0 {
                history.remove(0);
                history.push(rng.gen_range(0..n as u32 + 10));
            }
            let p = SampleParams {
                n_vocab: n,
                temperature: [0.0, 0.8, 1.5][step % 3],
                top_k: [0, 40, 1000][step % 3],
                top_p: 0.95,
                min_p: [0.05, 0.0][step % 2],
                repeat_penalty: 1.3,
                n_penalty_ids: history.len(),
            };
            let u = rng.gen_range(0.0..1.0);
            let want = sample_ref(&p, &x[..n], &history, u).unwrap();
            let got = ops::sample(&s, &p, &xt, &history, u).unwrap();
            assert_eq!(got, want, "{dev} step {step}");
        }
        // No usable logit: the sentinel becomes a typed error.
        let bad = Tensor::from_f32(
            &s,
            &[5],
            vec![f32::NAN, f32::NEG_INFINITY, f32::NAN, 1.0, 2.0],
        )
        .unwrap();
        let p = SampleParams {
            n_vocab: 3,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            n_penalty_ids: 0,
        };
        let e = ops::sample(&s, &p, &bad, &[], 0.5).unwrap_err().to_string();
        assert!(
            e.contains("sample: none of the 3 logits is usable"),
            "{dev}: {e}"
        );
        // Bad settings and a short tensor are rejected before any launch.
        let e = ops::sample(&s, &SampleParams { n_vocab: 6, ..p }, &bad, &[], 0.5).unwrap_err();
        assert!(e.to_string().contains("logits"), "{dev}: {e}");
        let e = ops::sample(&s, &SampleParams { top_p: 0.0, ..p }, &bad, &[], 0.5).unwrap_err();
        assert!(e.to_string().contains("top_p 0"), "{dev}: {e}");
        let e = ops::sample(&s, &p, &bad, &[], 1.0).unwrap_err();
        assert!(e.to_string().contains("draw u 1"), "{dev}: {e}");
    }
}
