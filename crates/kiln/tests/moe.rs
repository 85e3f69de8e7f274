//! The MoE ops through kiln's public API on a CPU stream: route a batch
//! with moe_route, then run the routed experts with matmul_id, against the
//! kiln-core references (the op-level case tables run in kiln-cpu's
//! tests/parity_moe.rs); on a CUDA stream both are refused with a typed
//! error (no kernels yet).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::ops::{matmul_id, moe_route, MatmulIdParams, MoeRouteParams};
use kiln::{Stream, Tensor};
use kiln_core::ops::matmul_id::matmul_id_ref;
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

#[test]
fn route_then_matmul_id_on_cpu() {
    let s = Stream::cpu(2).unwrap();
    let Fixture {
        rp,
        mp,
        lt,
        wt,
        xt,
        w,
        x,
        logits,
    } = tensors(&s);
    let rows = rp.n_tokens * rp.top_k;
    let mut ids = vec![u32::MAX; rows];
    let mut wts = Tensor::from_f32(&s, &[rows], vec![f32::NAN; rows]).unwrap();
    moe_route(&s, &rp, &lt, None, &mut ids, &mut wts).unwrap();
    let (mut want_ids, mut want_w) = (vec![0u32; rows], vec![0.0f32; rows]);
    moe_route_ref(&rp, &logits, None, &mut want_ids, &mut want_w).unwrap();
    assert_eq!(ids, want_ids);
    for (g, r) in wts.to_f32_vec(&s).unwrap().iter().zip(&want_w) {
        assert!((g - r).abs() < 1e-5, "{g} vs {r}");
    }
    let mut out = Tensor::from_f32(&s, &[rows, mp.n], vec![f32::NAN; rows * mp.n]).unwrap();
    matmul_id(&s, &mp, &wt, &xt, &ids, &mut out).unwrap();
    let mut want = vec![0.0f32; rows * mp.n];
    matmul_id_ref(&mp, &w, &x, &ids, &mut want).unwrap();
    // 8-bit activations (Q8_K) against the f32 reference: relative to the
    // output scale (|dot| of 512 terms of |w| <~ 1, |x| < 1), well within
    // the per-element bounds the kiln-cpu table checks.
    let got = out.to_f32_vec(&s).unwrap();
    let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs()));
    for (g, r) in got.iter().zip(&want) {
        assert!((g - r).abs() <= 0.02 * scale, "{g} vs {r} (scale {scale})");
    }
    // An out-of-range id is refused before anything is written.
    let mut bad = ids.clone();
    bad[5] = 16;
    let mut out2 = Tensor::from_f32(&s, &[rows, mp.n], vec![f32::NAN; rows * mp.n]).unwrap();
    let e = matmul_id(&s, &mp, &wt, &xt, &bad, &mut out2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ids[5] = 16"), "{e}");
    assert!(out2.to_f32_vec(&s).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn cuda_stream_refuses_moe_ops() {
    let s = match Stream::cuda(0) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIPPED: no CUDA stream ({e})");
            return;
        }
    };
    let Fixture {
        rp, mp, lt, wt, xt, ..
    } = tensors(&s);
    let rows = rp.n_tokens * rp.top_k;
    let mut ids = vec![0u32; rows];
    let mut wts = Tensor::zeros(&s, &[rows]).unwrap();
    assert!(moe_route(&s, &rp, &lt, None, &mut ids, &mut wts)
        .unwrap_err()
        .to_string()
        .contains("CUDA"));
    let mut out = Tensor::zeros(&s, &[rows, mp.n]).unwrap();
    assert!(matmul_id(&s, &mp, &wt, &xt, &ids, &mut out)
        .unwrap_err()
        .to_string()
        .contains("CUDA"));
}
