//! The MoE ops through kiln's public API: route a batch with moe_route, run
//! the routed experts with matmul_id and combine them with moe_combine,
//! against the kiln-core references, on a CPU stream and (built with the
//! `cuda` feature, where a device opens) on a CUDA stream, whose moe_route
//! hands its ids to matmul_id through the stream's device copy. The
//! op-level case tables run in kiln-cpu's tests/parity_moe.rs and
//! kiln-cuda's tests/parity_cumoe.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::ops::{
    matmul_id, moe_combine, moe_route, MatmulIdParams, MoeCombineParams, MoeRouteParams,
};
use kiln::{Stream, Tensor};
use kiln_core::ops::matmul_id::matmul_id_ref;
use kiln_core::ops::moe_combine::moe_combine_ref;
use kiln_core::ops::moe_route::moe_route_ref;
use kiln_core::DType;
use kiln_testkit::{case_rng, rand_f32, rand_rows, test_seed};

/// Routing and expert-matmul params, their tensors on `s`, and the host data.
struct Fixture {
    rp: MoeRouteParams,
    mp: MatmulIdParams,
    lt: Tensor,
    wt: Tensor,
    xt: Tensor,
    w: Vec<u8>,
    x: Vec<f32>,
    logits: Vec<f32>,
}

fn tensors(s: &Stream) -> Fixture {
    let mut rng = case_rng(test_seed(), "kiln-moe", 0);
    let (n_tokens, n_experts, top_k, n, k) = (3, 16, 4, 24, 512);
    let rp = MoeRouteParams::softmax_topk(n_tokens, n_experts, top_k, true);
    let logits = rand_f32(&mut rng, n_tokens * n_experts, -3.0, 3.0);
    let w = rand_rows(&mut rng, DType::Q4_K, n_experts * n, k);
    let x = rand_f32(&mut rng, n_tokens * k, -1.0, 1.0);
    let mp = MatmulIdParams {
        n_tokens,
        top_k,
        n,
        k,
        n_experts,
        expert_stride: n * DType::Q4_K.row_bytes("t", k).unwrap(),
        wtype: DType::Q4_K,
        x_per_slot: false,
    };
    let lt = Tensor::from_f32(s, &[n_tokens, n_experts], logits.clone()).unwrap();
    let wt = Tensor::from_bytes(s, DType::Q4_K, &[n_experts * n, k], w.clone()).unwrap();
    let xt = Tensor::from_f32(s, &[n_tokens, k], x.clone()).unwrap();
    Fixture {
        rp,
        mp,
        lt,
        wt,
        xt,
        w,
        x,
        logits,
    }
}

/// Route, expert matmul and combine on `s` against the references.
fn route_matmul_combine(s: &Stream) {
    let Fixture {
        rp,
        mp,
        lt,
        wt,
        xt,
        w,
        x,
        logits,
    } = tensors(s);
    let rows = rp.n_tokens * rp.top_k;
    let mut ids = vec![u32::MAX; rows];
    let mut wts = Tensor::from_f32(s, &[rows], vec![f32::NAN; rows]).unwrap();
    moe_route(s, &rp, &lt, None, &mut ids, &mut wts).unwrap();
    let (mut want_ids, mut want_w) = (vec![0u32; rows], vec![0.0f32; rows]);
    moe_route_ref(&rp, &logits, None, &mut want_ids, &mut want_w).unwrap();
    assert_eq!(ids, want_ids);
    let got_w = wts.to_f32_vec(s).unwrap();
    for (g, r) in got_w.iter().zip(&want_w) {
        assert!((g - r).abs() < 1e-5, "{g} vs {r}");
    }
    let mut out = Tensor::from_f32(s, &[rows, mp.n], vec![f32::NAN; rows * mp.n]).unwrap();
    matmul_id(s, &mp, &wt, &xt, &ids, &mut out).unwrap();
    let mut want = vec![0.0f32; rows * mp.n];
    matmul_id_ref(&mp, &w, &x, &ids, &mut want).unwrap();
    // CPU: 8-bit activations (Q8_K) against the f32 reference; CUDA: f32
    // activations. Relative to the output scale (|dot| of 512 terms of
    // |w| <~ 1, |x| < 1), well within the per-element bounds the tables check.
    let got = out.to_f32_vec(s).unwrap();
    let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    for (g, r) in got.iter().zip(&want) {
        assert!((g - r).abs() <= 0.02 * scale, "{g} vs {r} (scale {scale})");
    }
    // Combine the routed rows (as y) into a residual.
    let cp = MoeCombineParams {
        n_tokens: rp.n_tokens,
        top_k: rp.top_k,
        dim: mp.n,
    };
    let res: Vec<f32> = (0..rp.n_tokens * mp.n)
        .map(|i| (i % 7) as f32 - 3.0)
        .collect();
    let rt = Tensor::from_f32(s, &[rp.n_tokens, mp.n], res.clone()).unwrap();
    let mut ct = Tensor::from_f32(s, &[rp.n_tokens, mp.n], vec![f32::NAN; res.len()]).unwrap();
    moe_combine(s, &cp, &out, &wts, &rt, &mut ct).unwrap();
    let mut want_c = vec![0.0f32; res.len()];
    moe_combine_ref(&cp, &got, &got_w, &res, &mut want_c).unwrap();
    for (g, r) in ct.to_f32_vec(s).unwrap().iter().zip(&want_c) {
        assert!(
            (g - r).abs() <= 1e-5 * (1.0 + r.abs()),
            "combine {g} vs {r}"
        );
    }
    // An out-of-range id is refused before anything is written.
    let mut bad = ids.clone();
    bad[5] = 16;
    let mut out2 = Tensor::from_f32(s, &[rows, mp.n], vec![f32::NAN; rows * mp.n]).unwrap();
    let e = matmul_id(s, &mp, &wt, &xt, &bad, &mut out2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ids[5] = 16"), "{e}");
    assert!(out2.to_f32_vec(s).unwrap().iter().all(|v| v.is_nan()));
    // A non-finite logit is an error naming its token and expert.
    let mut l2 = logits.clone();
    l2[rp.n_experts + 3] = f32::INFINITY;
    let lt2 = Tensor::from_f32(s, &[rp.n_tokens, rp.n_experts], l2).unwrap();
    let e = moe_route(s, &rp, &lt2, None, &mut ids, &mut wts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("token 1 expert 3"), "{e}");
}

#[test]
fn route_matmul_combine_on_cpu() {
    route_matmul_combine(&Stream::cpu(2).unwrap());
}

#[test]
fn route_matmul_combine_on_cuda() {
    match Stream::cuda(0) {
        Ok(s) => route_matmul_combine(&s),
        Err(e) => eprintln!("SKIPPED: no CUDA stream ({e})"),
    }
}
