//! kiln::ops dispatch of the dense-model op families that gained CUDA
//! kernels (gelu_mul in both GELU modes, sigmoid_mul, scale, add_rows, rope_with_factors, windowed
//! attention, norm_rope): the same inputs through a CPU stream and, where there is
//! one, a CUDA stream, each against the kiln-core reference (the kernels
//! themselves are held to the testkit tables by kiln-cuda's parity tests;
//! this checks the tensors, prefixes and stream plumbing around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::ops::{
    self, AddRowsParams, AttentionParams, GeluMode, GeluMulParams, NormRopeParams, RopeMode,
    RopeParams, ScaleParams, SigmoidMulParams,
};
use kiln::{Stream, Tensor};
use kiln_core::ops as refs;
use kiln_testkit::{case_rng, compare, rand_f32, test_seed, Tol};

fn streams() -> Vec<Stream> {
    let mut v = vec![Stream::cpu(2).unwrap()];
    match Stream::cuda(0) {
        Ok(s) => v.push(s),
        Err(e) => eprintln!("SKIPPED on CUDA: no CUDA stream ({e})"),
    }
    v
}

fn t(s: &Stream, x: &[f32]) -> Tensor {
    Tensor::from_f32(s, &[x.len()], x.to_vec()).unwrap()
}

#[test]
fn elementwise_ops_match_the_references() {
    let mut rng = case_rng(test_seed(), "kiln-dense-ops", 0);
    // Buffers longer than the ops' prefixes, as a model's scratch is.
    let (n, spare) = (2051, 13);
    let g = rand_f32(&mut rng, n + spare, -6.0, 6.0);
    let u = rand_f32(&mut rng, n + spare, -2.0, 2.0);
    let bias = rand_f32(&mut rng, 7, -1.0, 1.0);
    let sp = ScaleParams { n, alpha: -1.75 };
    let ap = AddRowsParams { rows: 293, dim: 7 };
    let mut want_sg = vec![0.0; n];
    let sgp = SigmoidMulParams { n };
    refs::sigmoid_mul::sigmoid_mul_ref(&sgp, &g[..n], &u[..n], &mut want_sg).unwrap();
    let mut want_s = vec![0.0; n];
    refs::scale::scale_ref(&sp, &g[..n], &mut want_s).unwrap();
    let mut want_a = g[..n].to_vec();
    refs::add_rows::add_rows_ref(&ap, &mut want_a, &bias).unwrap();
    for s in streams() {
        let dev = s.device();
        let (gt, ut) = (t(&s, &g), t(&s, &u));
        let mut out = t(&s, &vec![f32::NAN; n + spare]);
        for mode in [GeluMode::Tanh, GeluMode::Erf] {
            let gp = GeluMulParams { n, mode };
            let mut want_g = vec![0.0; n];
            refs::gelu_mul::gelu_mul_ref(&gp, &g[..n], &u[..n], &mut want_g).unwrap();
            ops::gelu_mul(&s, &gp, &gt, &ut, &mut out).unwrap();
            let got = out.to_f32_vec(&s).unwrap();
            compare("gelu_mul", &got[..n], &want_g, Tol::ELEMENTWISE).unwrap();
            assert!(
                got[n..].iter().all(|v| v.is_nan()),
                "{dev}: gelu_mul {mode:?} wrote past n"
            );
        }
        ops::sigmoid_mul(&s, &sgp, &gt, &ut, &mut out).unwrap();
        let got = out.to_f32_vec(&s).unwrap();
        compare("sigmoid_mul", &got[..n], &want_sg, Tol::ELEMENTWISE).unwrap();
        assert!(
            got[n..].iter().all(|v| v.is_nan()),
            "{dev}: sigmoid_mul wrote past n"
        );
        ops::scale(&s, &sp, &gt, &mut out).unwrap();
        compare(
            "scale",
            &out.to_f32_vec(&s).unwrap()[..n],
            &want_s,
            Tol::EXACT,
        )
        .unwrap();
        let mut x = t(&s, &g);
        ops::add_rows(&s, &ap, &mut x, &t(&s, &bias)).unwrap();
        let got = x.to_f32_vec(&s).unwrap();
        compare("add_rows", &got[..n], &want_a, Tol::EXACT).unwrap();
        assert_eq!(&got[n..], &g[n..], "{dev}: add_rows wrote past rows * dim");
        let e = ops::add_rows(&s, &ap, &mut x, &t(&s, &bias[..6])).unwrap_err();
        assert!(e.to_string().contains("bias"), "{dev}: {e}");
    }
}

#[test]
fn rope_with_factors_matches_the_reference() {
    let mut rng = case_rng(test_seed(), "kiln-dense-ops", 1);
    let p = RopeParams {
        n_tokens: 5,
        n_heads: 4,
        head_dim: 128,
        n_rot: 128,
        freq_base: 500_000.0,
        freq_scale: 1.0,
        mode: RopeMode::Normal,
    };
    let factors: Vec<f32> = (0..64).map(|i| 1.0 + (i % 8) as f32).collect();
    let pos = [7000, 7001, 7002, 7003, 7004];
    let x = rand_f32(&mut rng, 5 * 4 * 128, -2.0, 2.0);
    let mut want = x.clone();
    refs::rope::rope_ref_with_factors(&p, Some(&factors), &pos, &mut want).unwrap();
    for s in streams() {
        let mut xt = t(&s, &x);
        ops::rope_with_factors(&s, &p, Some(&t(&s, &factors)), &pos, &mut xt).unwrap();
        compare("rope", &xt.to_f32_vec(&s).unwrap(), &want, Tol::ROPE).unwrap();
        let e = ops::rope_with_factors(&s, &p, Some(&t(&s, &factors[..63])), &pos, &mut xt)
            .unwrap_err();
        assert!(e.to_string().contains("factors"), "{}: {e}", s.device());
    }
}

#[test]
fn windowed_attention_matches_the_reference() {
    let mut rng = case_rng(test_seed(), "kiln-dense-ops", 2);
    for (n_tokens, pos0, window) in [(1usize, 900usize, 512usize), (40, 600, 512), (7, 30, 4)] {
        let p = AttentionParams {
            n_tokens,
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 256,
            pos0,
            kv_stride: pos0 + n_tokens + 3,
            scale: 0.0625,
            window: Some(window),
            softcap: None,
        };
        let q = rand_f32(&mut rng, n_tokens * 4 * 256, -1.0, 1.0);
        let k = rand_f32(&mut rng, p.kv_stride * 256, -1.0, 1.0);
        let v = rand_f32(&mut rng, p.kv_stride * 256, -1.0, 1.0);
        let mut want = vec![0.0; q.len()];
        refs::attention::attention_ref(&p, &q, &k, &v, &mut want).unwrap();
        for s in streams() {
            let mut out = t(&s, &vec![f32::NAN; q.len()]);
            ops::attention(&s, &p, &t(&s, &q), &t(&s, &k), &t(&s, &v), &mut out).unwrap();
            compare(
                &format!("attention {p:?} on {}", s.device()),
                &out.to_f32_vec(&s).unwrap(),
                &want,
                Tol::ATTENTION,
            )
            .unwrap();
        }
    }
}

/// f16 / bf16 caches through the kiln ops: `Tensor::zeros_of`, the KV
/// append (`copy_rows`, rounding), attention with a soft cap on the stored
/// values, the cache read back, and K / V caches of different types refused.
#[test]
fn half_kv_caches_append_and_attend() {
    use kiln::ops::CopyRowsParams;
    use kiln_core::KvType;
    let mut rng = case_rng(test_seed(), "kiln-dense-ops", 5);
    let (heads, kv_heads, d, stride) = (8usize, 2usize, 128usize, 300usize);
    let p = AttentionParams {
        n_tokens: 1,
        n_heads: heads,
        n_kv_heads: kv_heads,
        head_dim: d,
        pos0: stride - 2,
        kv_stride: stride,
        scale: 1.0 / (d as f32).sqrt(),
        window: None,
        softcap: Some(10.0),
    };
    let row = kv_heads * d;
    let q = rand_f32(&mut rng, heads * d, -2.0, 2.0);
    let k = rand_f32(&mut rng, stride * row, -2.0, 2.0);
    let v = rand_f32(&mut rng, stride * row, -1.0, 1.0);
    let append = CopyRowsParams {
        row_len: row,
        n_rows: stride - 1,
        src_row: 0,
        dst_row: 0,
        dst_ring: None,
    };
    for kv in [KvType::F16, KvType::BF16] {
        let round = |x: &[f32]| -> Vec<f32> {
            let mut r: Vec<f32> = x.iter().map(|&y| kv.round(y)).collect();
            r[(stride - 1) * row..].fill(0.0); // the last row is never appended
            r
        };
        let (kr, vr) = (round(&k), round(&v));
        let mut want = vec![0.0; q.len()];
        refs::attention::attention_ref(&p, &q, &kr, &vr, &mut want).unwrap();
        for s in streams() {
            let shape = [stride, kv_heads, d];
            let mut kc = Tensor::zeros_of(&s, kv.dtype(), &shape).unwrap();
            let mut vc = Tensor::zeros_of(&s, kv.dtype(), &shape).unwrap();
            ops::copy_rows(&s, &append, &t(&s, &k), &mut kc).unwrap();
            ops::copy_rows(&s, &append, &t(&s, &v), &mut vc).unwrap();
            assert_eq!(
                kc.to_f32_vec(&s).unwrap(),
                kr,
                "{kv} k cache on {}",
                s.device()
            );
            let mut out = t(&s, &vec![f32::NAN; q.len()]);
            ops::attention(&s, &p, &t(&s, &q), &kc, &vc, &mut out).unwrap();
            compare(
                &format!("{kv} attention on {}", s.device()),
                &out.to_f32_vec(&s).unwrap(),
                &want,
                Tol::ATTENTION,
            )
            .unwrap();
            let f32_v = t(&s, &v);
            let e = ops::attention(&s, &p, &t(&s, &q), &kc, &f32_v, &mut out).unwrap_err();
            assert!(e.to_string().contains("v cache"), "{}: {e}", s.device());
        }
    }
}

#[test]
fn norm_rope_matches_the_reference() {
    let mut rng = case_rng(test_seed(), "kiln-dense-ops", 3);
    // Qwen3-shaped q (head_dim 128, NeoX) with YaRN-like factors, and a
    // Gemma-3-shaped k (head_dim 256, one head) without, at positions deep
    // in a context; buffers longer than the op's prefix, as a model's scratch.
    for (n_heads, head_dim, with_factors) in [(5usize, 128usize, true), (1, 256, false)] {
        let p = NormRopeParams {
            rope: RopeParams {
                n_tokens: 3,
                n_heads,
                head_dim,
                n_rot: head_dim,
                freq_base: 1e6,
                freq_scale: 1.0,
                mode: RopeMode::Neox,
            },
            eps: 1e-6,
        };
        let (n, spare) = (3 * n_heads * head_dim, 19);
        let x = rand_f32(&mut rng, n + spare, -3.0, 3.0);
        let w = rand_f32(&mut rng, head_dim, -2.0, 2.0);
        let f: Vec<f32> = (0..head_dim / 2).map(|i| 1.0 + (i % 5) as f32).collect();
        let factors = with_factors.then_some(&f[..]);
        let pos = [40_000, 40_001, 40_002];
        let mut want = vec![0.0; n];
        refs::norm_rope::norm_rope_ref(&p, &x[..n], &w, factors, &pos, &mut want).unwrap();
        for s in streams() {
            let dev = s.device();
            let ft = factors.map(|f| t(&s, f));
            let mut out = t(&s, &vec![f32::NAN; n + spare]);
            ops::norm_rope(&s, &p, &t(&s, &x), &t(&s, &w), ft.as_ref(), &pos, &mut out).unwrap();
            let got = out.to_f32_vec(&s).unwrap();
            compare("norm_rope", &got[..n], &want, Tol::NORM_ROPE).unwrap();
            assert!(
                got[n..].iter().all(|v| v.is_nan()),
                "{dev}: norm_rope wrote past n"
            );
            // Typed errors naming the op, nothing written.
            let mut out = t(&s, &vec![f32::NAN; n]);
            let e = ops::norm_rope(&s, &p, &t(&s, &x), &t(&s, &w[1..]), None, &pos, &mut out)
                .unwrap_err();
            assert!(e.to_string().contains("norm_rope"), "{dev}: {e}");
            let e = ops::norm_rope(&s, &p, &t(&s, &x), &t(&s, &w), None, &pos[..2], &mut out)
                .unwrap_err();
            assert!(e.to_string().contains("positions"), "{dev}: {e}");
            let bad = NormRopeParams { eps: 0.0, ..p };
            let e =
                ops::norm_rope(&s, &bad, &t(&s, &x), &t(&s, &w), None, &pos, &mut out).unwrap_err();
            assert!(e.to_string().contains("eps"), "{dev}: {e}");
            let short = t(&s, &f[..f.len() - 1]);
            let e = ops::norm_rope(&s, &p, &t(&s, &x), &t(&s, &w), Some(&short), &pos, &mut out)
                .unwrap_err();
            assert!(e.to_string().contains("factors"), "{dev}: {e}");
            let got = out.to_f32_vec(&s).unwrap();
            assert!(
                got.iter().all(|v| v.is_nan()),
                "{dev}: a refused call wrote out"
            );
        }
    }
}
