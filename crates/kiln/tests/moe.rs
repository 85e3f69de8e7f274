//! The MoE ops through kiln's public API: route a batch with moe_route, run
//! the routed experts with matmul_id and combine them with moe_combine,
//! against the kiln-core references, on a CPU stream and (built with the
//! `cuda` feature, where a device opens) on a CUDA stream, where the ids
//! stay on the device between the two ops (`kiln::Ids`). The
//! op-level case tables run in kiln-cpu's tests/parity_moe.rs and
//! kiln-cuda's tests/parity_cumoe.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::ops::{
    matmul_id, moe_combine, moe_route, MatmulIdParams, MoeCombineParams, MoeRouteParams,
};
use kiln::{Device, Ids, Stream, Tensor};
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
    // Room for more rows than this call's, as a model's batch-sized buffer
    // has (the ops use the first `rows`).
    let mut dev_ids = Ids::from_host(s, &vec![u32::MAX; rows + 7]).unwrap();
    let mut wts = Tensor::from_f32(s, &[rows], vec![f32::NAN; rows]).unwrap();
    moe_route(s, &rp, &lt, None, &mut dev_ids, &mut wts).unwrap();
    let (mut want_ids, mut want_w) = (vec![0u32; rows], vec![0.0f32; rows]);
    moe_route_ref(&rp, &logits, None, &mut want_ids, &mut want_w).unwrap();
    let mut ids = Vec::new();
    dev_ids.read(s, rows, &mut ids).unwrap();
    assert_eq!(ids, want_ids);
    let got_w = wts.to_f32_vec(s).unwrap();
    for (g, r) in got_w.iter().zip(&want_w) {
        assert!((g - r).abs() < 1e-5, "{g} vs {r}");
    }
    let mut out = Tensor::from_f32(s, &[rows, mp.n], vec![f32::NAN; rows * mp.n]).unwrap();
    matmul_id(s, &mp, &wt, &xt, &dev_ids, &mut out).unwrap();
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
    bad_ids_and_logits(s, &tensors(s), &ids);
}

/// An out-of-range id and a non-finite router logit: the CPU refuses them
/// with typed errors naming the value; CUDA (which never looks at the ids
/// on the host) poisons exactly the affected rows with NaN.
fn bad_ids_and_logits(s: &Stream, f: &Fixture, ids: &[u32]) {
    let (rp, mp) = (f.rp, f.mp);
    let rows = rp.n_tokens * rp.top_k;
    let cuda = s.device() != Device::Cpu;
    let mut bad = ids.to_vec();
    bad[5] = 16;
    let bad = Ids::from_host(s, &bad).unwrap();
    let mut out2 = Tensor::from_f32(s, &[rows, mp.n], vec![f32::NAN; rows * mp.n]).unwrap();
    let r = matmul_id(s, &mp, &f.wt, &f.xt, &bad, &mut out2);
    let got = out2.to_f32_vec(s).unwrap();
    if cuda {
        r.unwrap();
        for (i, row) in got.chunks(mp.n).enumerate() {
            let nan = row.iter().filter(|v| v.is_nan()).count();
            let want = if i == 5 { mp.n } else { 0 };
            assert_eq!(nan, want, "row {i}: {nan} NaN of {}", mp.n);
        }
    } else {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("ids[5] = 16"), "{e}");
        // Refused before anything is written.
        assert!(got.iter().all(|v| v.is_nan()));
    }
    let mut l2 = f.logits.clone();
    l2[rp.n_experts + 3] = f32::INFINITY;
    let lt2 = Tensor::from_f32(s, &[rp.n_tokens, rp.n_experts], l2).unwrap();
    let mut ids2 = Ids::zeros(s, rows).unwrap();
    let mut wts = Tensor::from_f32(s, &[rows], vec![0.0; rows]).unwrap();
    let r = moe_route(s, &rp, &lt2, None, &mut ids2, &mut wts);
    if cuda {
        r.unwrap();
        let mut got = Vec::new();
        ids2.read(s, rows, &mut got).unwrap();
        let w = wts.to_f32_vec(s).unwrap();
        for t in 0..rp.n_tokens {
            let slots = t * rp.top_k..(t + 1) * rp.top_k;
            let marked = got[slots.clone()]
                .iter()
                .all(|&e| e as usize >= rp.n_experts);
            let nan_w = w[slots].iter().all(|v| v.is_nan());
            assert_eq!((marked, nan_w), (t == 1, t == 1), "token {t}: {got:?}");
        }
    } else {
        let e = r.unwrap_err().to_string();
        assert!(e.contains("token 1 expert 3"), "{e}");
    }
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
