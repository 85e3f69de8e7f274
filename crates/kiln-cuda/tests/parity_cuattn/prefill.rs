//! The tensor-core prefill kernels of parity_cuattn, each forced: the
//! pipelined v2 (`AttentionKernel::Mma2`: 128-query tiles, 64-key tiles,
//! cp.async for bf16 caches) and v1 (`AttentionKernel::Mma`: what
//! `KILN_ATTN_MMA=v1` selects, and the choice up to 64 queries). Both run
//! the testkit tables' prefill calls, every prefill shape of this binary
//! with head_dim 64 or 128 (continued caches, windows, soft caps, ring
//! caches) and the shapes below, with f32, f16 and bf16 caches, at the bf16
//! bound (`Tol::ATTENTION_BF16`); the f32 tiled kernel runs the shapes below
//! too, at the f32 bound, as a control; and q·scale beyond f16's range
//! (v2 with f16 caches multiplies in f16). sm_80+ only.

use super::*;
use kiln_cuda::attention::DECODE_MAX_TOKENS;
use kiln_testkit::cases::attention::AttentionFn;

/// Whether a call can be forced onto the tensor-core kernels (their head
/// dims, more tokens than decode): the testkit then holds it to the bf16
/// bound.
fn mma_forceable(p: &AttentionParams) -> bool {
    p.n_tokens > DECODE_MAX_TOKENS && MMA_HEAD_DIMS.contains(&p.head_dim)
}

/// The two tensor-core kernels for `p`'s head_dim: v2, then v1.
fn mma_kernels(p: &AttentionParams) -> [AttentionKernel; 2] {
    let head_dim = p.head_dim;
    [
        AttentionKernel::Mma2 { head_dim },
        AttentionKernel::Mma { head_dim },
    ]
}

fn sm80(be: &CudaBackend) -> bool {
    if be.info().cc.0 < 8 {
        eprintln!("SKIPPED: the tensor-core kernels need sm_80+");
        return false;
    }
    true
}

/// Shapes the tiles make awkward: query counts around and between 64- and
/// 128-row tiles, caches continued at odd positions (key tiles then start
/// off the tile grid), GQA 9/3 (SmolLM2) and 32/8 (Llama 3 8B), windows
/// shorter than a key tile, of one key, spanning warps and longer than
/// several tiles; soft caps; head_dim 64 and 128.
const MMA_CASES: &[Case] = &[
    c(16, 9, 3, 64, 0, 0),
    c(63, 9, 3, 64, 0, 1),
    c(64, 9, 3, 64, 0, 0),
    c(65, 9, 3, 64, 0, 7),
    c(127, 9, 3, 64, 5, 0),
    c(128, 9, 3, 64, 0, 0),
    c(129, 9, 3, 64, 64, 1),
    c(130, 9, 3, 64, 37, 2),
    c(512, 9, 3, 64, 0, 0),
    c(333, 9, 3, 64, 3000, 5),
    c(16, 32, 8, 128, 5, 0),
    c(100, 32, 8, 128, 3001, 0),
    c(257, 32, 8, 128, 0, 3),
    c(600, 32, 8, 128, 64, 0),
    c(200, 4, 4, 128, 1, 0),
    c(1000, 8, 2, 128, 77, 0),
    cw(150, 4, 1, 64, 0, 16),
    cw(64, 4, 2, 64, 10, 1),
    cw(300, 9, 3, 64, 500, 200),
    cw(100, 8, 2, 128, 300, 40),
    cw(200, 32, 8, 128, 1000, 64),
    cw(90, 32, 8, 128, 7, 65),
    cw(400, 8, 2, 128, 0, 1),
    cw(256, 8, 2, 64, 100, 8),
    cw(700, 4, 1, 128, 33, 129),
    cs(200, 8, 2, 128, 33, 30.0),
    cs(150, 9, 3, 64, 0, 5.0),
];

/// The testkit tables with every call the tensor-core kernels can take
/// forced to v2, then to v1 (the other calls take the launcher's choice).
#[test]
fn testkit_tables_on_both_mma_kernels() {
    let Some(be) = backend() else { return };
    if !sm80(&be) {
        return;
    }
    let opts = Options {
        attention_bf16: mma_forceable,
        ..Options::default()
    };
    // Both kernels run every table before anything fails, so a failure
    // says whether the other kernel fails the same inputs too.
    let mut failed = Vec::new();
    for (which, v) in [("v2", 0usize), ("v1", 1)] {
        let pick = |p: &AttentionParams| mma_forceable(p).then(|| mma_kernels(p)[v]);
        let imp: &AttentionFn<'_> =
            &|p, q, k, v, out| run_gpu(&be, p, pick(p).as_ref(), q, k, v, out).map_err(to_core);
        for (table, report) in [
            ("", check_attention_with(imp, &opts)),
            (", windows", check_attention_window_with(imp, &opts)),
        ] {
            println!("tensor-core {which}{table}:\n{report}");
            if let Err(e) = report.into_result() {
                failed.push(format!("{which}{table}: {e}"));
            }
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Every prefill shape of this binary with a tensor-core head_dim (CASES,
/// RING_CASES, MMA_CASES) on v2 and v1, and MMA_CASES also on the f32
/// tiled kernel; each with f32, f16 and bf16 caches.
#[test]
fn both_mma_kernels_on_every_prefill_shape() {
    let Some(be) = backend() else { return };
    if !sm80(&be) {
        return;
    }
    let mut failures = Vec::new();
    let all = CASES
        .iter()
        .map(|c| (c, false))
        .chain(RING_CASES.iter().map(|c| (c, false)))
        .chain(MMA_CASES.iter().map(|c| (c, true)));
    for (i, (cs, control)) in all.enumerate() {
        if cs.n_tokens <= DECODE_MAX_TOKENS || !MMA_HEAD_DIMS.contains(&cs.head_dim) {
            continue;
        }
        for kv in KvType::ALL {
            let (p, q, k, v, want) = inputs(cs, 700 + i, kv);
            let mut kernels = mma_kernels(&p).to_vec();
            if control {
                kernels.push(AttentionKernel::Tiled {
                    head_dim: p.head_dim,
                });
            }
            for kernel in kernels {
                let mut out = vec![f32::NAN; want.len()];
                let name = format!("kv {kv} {p:?} forced {kernel:?}");
                let r = run_gpu(&be, &p, Some(&kernel), &q, k.slice(), v.slice(), &mut out)
                    .map_err(|e| e.to_string())
                    .and_then(|()| compare("out", &out, &want, tol_for(&kernel)));
                match r {
                    Ok(()) => eprintln!(
                        "ok   {name}: max abs err {:.2e}",
                        kiln_testkit::max_abs_err(&out, &want)
                    ),
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the launcher picks for tensor-core shapes: v1 up to 64 queries,
/// v2 above (unless `KILN_ATTN_MMA` says otherwise), and a v2 forced for
/// another head_dim or an unsupported one is refused, naming it.
#[test]
fn mma_choice_and_refusals() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    for (n, want) in [
        (64, AttentionKernel::Mma { head_dim: 128 }),
        (65, AttentionKernel::Mma2 { head_dim: 128 }),
    ] {
        let p = AttentionParams {
            n_tokens: n,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 128,
            pos0: 0,
            kv_stride: n,
            scale: 0.1,
            window: None,
            softcap: None,
        };
        assert_eq!(select_attention(&p, sm).unwrap(), want);
    }
    if !sm80(&be) {
        return;
    }
    let p = AttentionParams {
        n_tokens: 100,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 96,
        pos0: 0,
        kv_stride: 100,
        scale: 0.1,
        window: None,
        softcap: None,
    };
    let q = vec![0.5; 100 * 2 * 96];
    let kv = vec![0.5; 100 * 96];
    let mut out = vec![f32::NAN; q.len()];
    // No head_dim 96 instance, and one forced for another head_dim: both
    // refused, naming the call's head_dim, before writing anything.
    for head_dim in [96, 128] {
        let kernel = AttentionKernel::Mma2 { head_dim };
        let (k, v) = (KvSlice::F32(&kv), KvSlice::F32(&kv));
        let e = run_gpu(&be, &p, Some(&kernel), &q, k, v, &mut out).unwrap_err();
        assert!(e.to_string().contains("head_dim 96"), "{e}");
        assert!(out.iter().all(|x| x.is_nan()));
    }
}

/// q·scale beyond f16's range (65504): v2 with an f16 cache rounds q·scale
/// to f16, so it scales each warp's q down by a power of two and the scores
/// back up. scale 5e4 with |q| <= 1 puts |q·scale·log2 e| near 7e4; k is
/// scaled by 5e-6 so the scores are as spread as the testkit's uniform ones
/// (std ~0.7-1: the bf16 bound's premise) and a wrong correction (a power of
/// two on every score) moves the output by ~0.3 (emulated: 0.31 and 0.64).
/// Both tensor-core kernels, every cache type.
#[test]
fn mma_q_beyond_f16_range() {
    let Some(be) = backend() else { return };
    if !sm80(&be) {
        return;
    }
    let mut failures = Vec::new();
    for (i, (n, pos0, d)) in [(90usize, 10usize, 64usize), (300, 3, 128)]
        .into_iter()
        .enumerate()
    {
        let p = AttentionParams {
            n_tokens: n,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: d,
            pos0,
            kv_stride: pos0 + n,
            scale: 5e4,
            window: None,
            softcap: None,
        };
        let mut rng = case_rng(test_seed(), "attention-cuda-q-range", i);
        let q = rand_f32(&mut rng, n * 8 * d, -1.0, 1.0);
        let k: Vec<f32> = rand_f32(&mut rng, p.kv_stride * 2 * d, -1.0, 1.0)
            .into_iter()
            .map(|x| x * 5e-6)
            .collect();
        let v = rand_f32(&mut rng, p.kv_stride * 2 * d, -1.0, 1.0);
        for kv in KvType::ALL {
            let (k, v) = (KvData::encode(kv, &k), KvData::encode(kv, &v));
            let mut want = vec![0.0; q.len()];
            attention_ref(&p, &q, &k.widened(), &v.widened(), &mut want).unwrap();
            for kernel in mma_kernels(&p) {
                let mut out = vec![f32::NAN; want.len()];
                let name = format!("kv {kv} {p:?} forced {kernel:?}");
                let r = run_gpu(&be, &p, Some(&kernel), &q, k.slice(), v.slice(), &mut out)
                    .map_err(|e| e.to_string())
                    .and_then(|()| compare("out", &out, &want, tol_for(&kernel)));
                match r {
                    Ok(()) => eprintln!("ok   {name}"),
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
