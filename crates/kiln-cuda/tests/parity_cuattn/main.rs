//! GPU parity of `kiln_cuda::attention` against `attention_ref`: the
//! testkit's case tables (causal and sliding-window), plus long-context
//! decode, prefill continuing a cache, every tiled head_dim, wide GQA
//! groups, sliding windows on every kernel and forced kernel plans (with
//! windows: splits that see no key), each with f32, f16 and bf16 caches
//! (the reference reads the stored values widened: [`KvData`]), decode head
//! dims up to 512, soft caps, and the tensor-core prefill
//! (`AttentionKernel::Mma2` and `Mma`, bf16 operands: held to
//! `Tol::ATTENTION_BF16`, whose derivation is in kiln-testkit's compare.rs),
//! each forced on every prefill shape: `prefill.rs`. Device outputs sit
//! between sentinel
//! guard zones and start NaN-poisoned; cache rows past the causal window,
//! and before the first query's sliding window, are NaN. Ring caches (a
//! window, positions past `kv_stride`, position `j` in row `j % kv_stride`)
//! run on every kernel that takes them, forced, with every row no query sees
//! NaN. The decode kernels, each forced on every decode shape, are in
//! `decode.rs`. Skips without a GPU. Timing lives in `benches/attention.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod decode;
mod prefill;

use kiln_core::ops::attention::{attention_ref, AttentionParams};
use kiln_core::{KvSlice, KvType};
use kiln_cuda::attention::{
    attention, attention_with_kernel, key_span, select_attention, split_kv_plan, uses_bf16,
    AttentionKernel, SplitKvPlan, MMA_HEAD_DIMS, TILED_HEAD_DIMS,
};
use kiln_cuda::harness::{with_kv_view, KvDev};
use kiln_cuda::{CudaBackend, CudaError};
use kiln_testkit::cases::attention::{check_attention_window_with, check_attention_with, KvData};
use kiln_testkit::{case_rng, compare, rand_f32, test_seed, Options, Tol};

fn backend() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(be) => Some(be),
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

fn to_core(e: CudaError) -> kiln_core::Error {
    match e {
        CudaError::Core(e) => e,
        other => kiln_core::Error::invalid("attention (cuda)", other.to_string()),
    }
}

/// Run attention on the GPU (`kernel: None` = the launcher's own choice) into
/// a NaN-poisoned device output between sentinel guards; check the guards and
/// copy the interior into `out`.
fn run_gpu(
    be: &CudaBackend,
    p: &AttentionParams,
    kernel: Option<&AttentionKernel>,
    q: &[f32],
    k: KvSlice<'_>,
    v: KvSlice<'_>,
    out: &mut [f32],
) -> Result<(), CudaError> {
    let dq = be.upload(q)?;
    let dk = KvDev::upload(be, k).map_err(CudaError::Core)?;
    let dv = KvDev::upload(be, v).map_err(CudaError::Core)?;
    out.fill(f32::NAN);
    kiln_cuda::harness::guarded(be, out, |view| {
        let q = dq.slice(..);
        with_kv_view(&dk, |k| {
            with_kv_view(&dv, |v| match kernel {
                None => attention(be, p, &q, k, v, view),
                Some(kern) => attention_with_kernel(be, p, kern, &q, k, v, view),
            })
        })
    })
    .map_err(CudaError::Core)
}

/// The tables' options on CUDA: calls the tensor-core kernel takes are held
/// to the bf16 bound.
fn cuda_options() -> Options {
    Options {
        attention_bf16: uses_bf16,
        ..Options::default()
    }
}

/// The bound for a kernel's output: bf16 operands on tensor cores, else f32.
fn tol_for(kernel: &AttentionKernel) -> Tol {
    match kernel {
        AttentionKernel::Mma { .. } | AttentionKernel::Mma2 { .. } => Tol::ATTENTION_BF16,
        _ => Tol::ATTENTION,
    }
}

#[test]
fn testkit_attention_cases() {
    let Some(be) = backend() else { return };
    let report = check_attention_with(
        &|p, q, k, v, out| run_gpu(&be, p, None, q, k, v, out).map_err(to_core),
        &cuda_options(),
    );
    report.into_result().unwrap();
}

#[test]
fn testkit_attention_window_cases() {
    let Some(be) = backend() else { return };
    let report = check_attention_window_with(
        &|p, q, k, v, out| run_gpu(&be, p, None, q, k, v, out).map_err(to_core),
        &cuda_options(),
    );
    println!("{report}");
    report.into_result().unwrap();
}

/// One of our own cases: shape, and an optional forced kernel.
struct Case {
    n_tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    /// Spare cache rows past pos0 + n_tokens (NaN-filled).
    spare: usize,
    /// Sliding window (0: none).
    window: usize,
    /// Logit soft cap (0: none).
    softcap: f32,
    /// A ring cache of this many rows (0: none; `spare` is then unused).
    ring: usize,
}

const fn c(
    n_tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    spare: usize,
) -> Case {
    Case {
        n_tokens,
        n_heads,
        n_kv_heads,
        head_dim,
        pos0,
        spare,
        window: 0,
        softcap: 0.0,
        ring: 0,
    }
}

/// [`c`] with a soft cap.
const fn cs(
    n_tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    softcap: f32,
) -> Case {
    Case {
        softcap,
        ..c(n_tokens, n_heads, n_kv_heads, head_dim, pos0, 1)
    }
}

/// [`c`] with a sliding window.
const fn cw(
    n_tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    window: usize,
) -> Case {
    Case {
        window,
        ..c(n_tokens, n_heads, n_kv_heads, head_dim, pos0, 2)
    }
}

/// [`cw`] with a ring cache of `ring` rows (`window + n_tokens - 1 <= ring`).
const fn cr(
    n_tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    pos0: usize,
    window: usize,
    ring: usize,
) -> Case {
    Case {
        ring,
        ..cw(n_tokens, n_heads, n_kv_heads, head_dim, pos0, window)
    }
}

/// Long-context decode (every split-KV branch: head_dim > 128 uses 16-key
/// tiles, groups wider than 8 heads take several blocks), prefill continuing
/// a cache at odd offsets for every tiled head_dim, split-KV fallback prefill.
const CASES: &[Case] = &[
    c(1, 9, 3, 64, 4095, 100),
    c(1, 9, 3, 64, 8191, 0),
    c(1, 9, 3, 64, 16_383, 7),
    c(4, 9, 3, 64, 4200, 3),
    c(3, 32, 8, 128, 5000, 0),
    c(1, 32, 2, 128, 4100, 50),
    c(2, 8, 1, 256, 4097, 0),
    c(1, 12, 4, 200, 999, 1),
    c(1, 16, 16, 80, 2047, 1),
    c(77, 9, 3, 64, 1000, 13),
    c(100, 32, 8, 128, 3001, 0),
    c(45, 10, 2, 80, 517, 5),
    c(70, 12, 4, 96, 33, 2),
    c(33, 4, 4, 96, 0, 0),
    c(300, 9, 3, 64, 4000, 0),
    c(40, 6, 3, 48, 200, 9),
    // Windows: decode deep into a context (the splits cover only the
    // window), a window of 1, a window reaching key 0 exactly, GQA groups
    // over several blocks, prefill on every tiled head_dim with windows
    // shorter than, equal to and longer than a key tile, and the split-KV
    // prefill fallback.
    cw(1, 9, 3, 64, 16_383, 512),
    cw(1, 8, 1, 256, 30_000, 1024),
    cw(2, 8, 1, 256, 4097, 1),
    cw(4, 9, 3, 64, 4200, 4201),
    cw(3, 32, 8, 128, 5000, 700),
    cw(77, 9, 3, 64, 1000, 5),
    cw(100, 32, 8, 128, 3001, 32),
    cw(45, 10, 2, 80, 517, 100),
    cw(70, 12, 4, 96, 33, 64),
    cw(300, 9, 3, 64, 0, 128),
    cw(40, 6, 3, 48, 200, 17),
    // The decode shape at 32k keys, and the decode head dims 80,
    // 96, 192 (6 values per lane: 2-element pieces), 320 and 512 (the wide
    // instance, 2 heads per block), with GQA groups over several blocks.
    c(1, 32, 8, 128, 32_767, 0),
    c(2, 16, 4, 80, 3000, 3),
    c(1, 16, 8, 96, 1500, 0),
    c(3, 16, 4, 192, 2500, 1),
    c(1, 8, 2, 320, 700, 0),
    c(1, 8, 1, 512, 4000, 2),
    c(4, 4, 1, 512, 100, 0),
    // Soft caps: decode (warp kernel), split-KV prefill (d 48), tiled prefill.
    cs(1, 8, 2, 128, 2000, 5.0),
    cs(40, 6, 3, 48, 200, 3.0),
    cs(70, 8, 2, 128, 33, 30.0),
];

/// Ring caches: decode many laps in, rings of one to three rows, rings
/// shorter than a key tile, tiles that straddle the ring's end, a 600-token
/// prefill 100k positions in, soft caps.
const RING_CASES: &[Case] = &[
    cr(1, 4, 1, 256, 3000, 512, 512),
    cr(2, 9, 3, 64, 3000, 100, 101),
    cr(1, 1, 1, 64, 777, 1, 1),
    cr(2, 4, 2, 40, 20, 2, 3),
    cr(1, 8, 1, 512, 4000, 64, 64),
    cr(6, 2, 1, 32, 300, 60, 65),
    cr(64, 4, 1, 256, 1000, 512, 575),
    cr(70, 9, 3, 64, 200, 16, 85),
    cr(100, 8, 2, 128, 3000, 40, 139),
    cr(45, 10, 2, 80, 517, 100, 144),
    cr(33, 4, 4, 96, 40, 1, 33),
    cr(20, 2, 1, 64, 100, 5, 24),
    cr(130, 9, 3, 64, 5000, 171, 300),
    cr(600, 32, 8, 128, 100_000, 512, 1111),
    Case {
        softcap: 30.0,
        ..cr(40, 4, 2, 128, 900, 32, 71)
    },
    Case {
        softcap: 5.0,
        ..cr(1, 8, 2, 128, 2000, 300, 300)
    },
];

/// The case's params, q, the caches stored as `kv` and the reference on
/// the stored values.
fn inputs(
    cs: &Case,
    index: usize,
    kv: KvType,
) -> (AttentionParams, Vec<f32>, KvData, KvData, Vec<f32>) {
    let p = AttentionParams {
        n_tokens: cs.n_tokens,
        n_heads: cs.n_heads,
        n_kv_heads: cs.n_kv_heads,
        head_dim: cs.head_dim,
        pos0: cs.pos0,
        kv_stride: if cs.ring > 0 {
            cs.ring
        } else {
            cs.pos0 + cs.n_tokens + cs.spare
        },
        scale: 1.0 / (cs.head_dim as f32).sqrt(),
        window: (cs.window > 0).then_some(cs.window),
        softcap: (cs.softcap > 0.0).then_some(cs.softcap),
    };
    let mut rng = case_rng(test_seed(), "attention-cuda", index);
    let row = p.n_kv_heads * p.head_dim;
    let q = rand_f32(&mut rng, p.n_tokens * p.n_heads * p.head_dim, -1.0, 1.0);
    let mut k = rand_f32(&mut rng, p.kv_stride * row, -1.0, 1.0);
    let mut v = rand_f32(&mut rng, p.kv_stride * row, -1.0, 1.0);
    // Rows no query reads (past the last token, before the first query's
    // window, in a ring those of overwritten positions) are NaN.
    let mut seen = vec![false; p.kv_stride];
    for j in p.key_range(0).0..p.pos0 + p.n_tokens {
        seen[p.kv_row(j)] = true;
    }
    for (r, _) in seen.iter().enumerate().filter(|(_, &s)| !s) {
        k[r * row..][..row].fill(f32::NAN);
        v[r * row..][..row].fill(f32::NAN);
    }
    let (k, v) = (KvData::encode(kv, &k), KvData::encode(kv, &v));
    let mut want = vec![0.0; q.len()];
    attention_ref(&p, &q, &k.widened(), &v.widened(), &mut want).unwrap();
    (p, q, k, v, want)
}

#[test]
fn long_context_and_continued_prefill() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    eprintln!("seed {:#x} (KILN_TEST_SEED)", test_seed());
    let mut failures = Vec::new();
    for (i, cs) in CASES.iter().enumerate() {
        for kv in KvType::ALL {
            let (p, q, k, v, want) = inputs(cs, i, kv);
            let kernel = select_attention(&p, sm).unwrap();
            let mut out = vec![f32::NAN; want.len()];
            let name = format!("kv {kv} {p:?} via {kernel:?}");
            match run_gpu(&be, &p, None, &q, k.slice(), v.slice(), &mut out) {
                Ok(()) => match compare("out", &out, &want, tol_for(&kernel)) {
                    Ok(()) => eprintln!("ok   {name}"),
                    Err(e) => failures.push(format!("{name}: {e}")),
                },
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The same inputs through forced plans: one split (direct write), the
/// most splits, heads one per block, and split-KV against tiled for prefill;
/// then with sliding windows, where the larger plans have splits that see
/// no key at all (they must add exactly nothing).
#[test]
fn forced_kernels_agree() {
    let Some(be) = backend() else { return };
    let mut failures = Vec::new();
    let mut check = |cs: &Case, i: usize, kernel: AttentionKernel| {
        // Each forced plan with one cache type in turn.
        let kv = KvType::ALL[i % 3];
        let (p, q, k, v, want) = inputs(cs, 100 + i, kv);
        let mut out = vec![f32::NAN; want.len()];
        let name = format!("kv {kv} {p:?} forced {kernel:?}");
        let r = run_gpu(&be, &p, Some(&kernel), &q, k.slice(), v.slice(), &mut out)
            .map_err(|e| e.to_string())
            .and_then(|()| compare("out", &out, &want, tol_for(&kernel)));
        match r {
            Ok(()) => eprintln!("ok   {name}"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    };
    let decode = c(2, 9, 3, 64, 3000, 4);
    let base = split_kv_plan(
        &AttentionParams {
            n_tokens: 2,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            pos0: 3000,
            kv_stride: 3006,
            scale: 0.125,
            window: None,
            softcap: None,
        },
        132,
    );
    let one = kiln_cuda::attention::SplitKvPlan {
        splits: 1,
        chunk: 3008,
        ..base
    };
    let most = kiln_cuda::attention::SplitKvPlan {
        splits: 95,
        chunk: 32,
        ..base
    };
    let narrow = kiln_cuda::attention::SplitKvPlan {
        heads_per_block: 1,
        key_tile: 16,
        chunk: 96,
        splits: 32,
    };
    check(&decode, 0, AttentionKernel::SplitKv(one));
    check(&decode, 1, AttentionKernel::SplitKv(most));
    check(&decode, 2, AttentionKernel::SplitKv(narrow));
    let prefill = c(50, 8, 2, 128, 70, 3);
    let p50 = AttentionParams {
        n_tokens: 50,
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 128,
        pos0: 70,
        kv_stride: 123,
        scale: 0.1,
        window: None,
        softcap: None,
    };
    check(
        &prefill,
        3,
        AttentionKernel::SplitKv(split_kv_plan(&p50, 132)),
    );
    check(&prefill, 4, AttentionKernel::Tiled { head_dim: 128 });
    check(&prefill, 5, AttentionKernel::Mma { head_dim: 128 });
    check(&prefill, 6, AttentionKernel::Mma2 { head_dim: 128 });
    for (i, window) in [1usize, 100, 3001].into_iter().enumerate() {
        let decode = cw(2, 9, 3, 64, 3000, window);
        check(&decode, 10 + 3 * i, AttentionKernel::SplitKv(one));
        check(&decode, 11 + 3 * i, AttentionKernel::SplitKv(most));
        check(&decode, 12 + 3 * i, AttentionKernel::SplitKv(narrow));
    }
    for (i, window) in [1usize, 20, 33, 119].into_iter().enumerate() {
        let prefill = Case {
            window,
            ..c(50, 8, 2, 128, 70, 3)
        };
        let pw = AttentionParams {
            window: Some(window),
            ..p50
        };
        check(
            &prefill,
            20 + 2 * i,
            AttentionKernel::SplitKv(split_kv_plan(&pw, 132)),
        );
        check(
            &prefill,
            21 + 2 * i,
            AttentionKernel::Tiled { head_dim: 128 },
        );
        check(&prefill, 30 + i, AttentionKernel::Mma { head_dim: 128 });
        check(&prefill, 40 + i, AttentionKernel::Mma2 { head_dim: 128 });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Ring caches on every kernel that can take the call, forced: the
/// launcher's choice, its split plan, one split, 32-key splits (decode and
/// split-KV prefill), the tiled kernel and the tensor-core one where they
/// have the head_dim; decode many laps in, rings of one to three rows,
/// rings shorter than a key tile, tiles that straddle the ring's end, a
/// 600-token prefill 100k positions in, a soft cap. Each with f32, f16
/// and bf16 caches.
#[test]
fn ring_caches_on_every_kernel() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    let mut failures = Vec::new();
    for (i, cs) in RING_CASES.iter().enumerate() {
        for kv in KvType::ALL {
            let (p, q, k, v, want) = inputs(cs, 300 + i, kv);
            let mut kernels = vec![None];
            let plan = split_kv_plan(&p, sm);
            let span = key_span(&p);
            // Split-KV takes head dims up to 256, decode (<= 4 tokens) 512.
            if p.head_dim <= 256 || p.n_tokens <= 4 {
                let one = SplitKvPlan {
                    splits: 1,
                    chunk: span.div_ceil(plan.key_tile) * plan.key_tile,
                    ..plan
                };
                let narrow = SplitKvPlan {
                    splits: span.div_ceil(32),
                    chunk: 32,
                    key_tile: 32.min(plan.key_tile),
                    ..plan
                };
                kernels.extend([plan, one, narrow].map(|pl| Some(AttentionKernel::SplitKv(pl))));
            }
            if TILED_HEAD_DIMS.contains(&p.head_dim) {
                kernels.push(Some(AttentionKernel::Tiled {
                    head_dim: p.head_dim,
                }));
            }
            if MMA_HEAD_DIMS.contains(&p.head_dim) && be.info().cc.0 >= 8 {
                kernels.push(Some(AttentionKernel::Mma {
                    head_dim: p.head_dim,
                }));
                kernels.push(Some(AttentionKernel::Mma2 {
                    head_dim: p.head_dim,
                }));
            }
            for kernel in kernels {
                let shown = kernel.unwrap_or_else(|| select_attention(&p, sm).unwrap());
                let mut out = vec![f32::NAN; want.len()];
                let name = format!("kv {kv} {p:?} via {shown:?}");
                let r = run_gpu(&be, &p, kernel.as_ref(), &q, k.slice(), v.slice(), &mut out)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        let tol = match kernel {
                            Some(kern) => tol_for(&kern),
                            None if uses_bf16(&p) => Tol::ATTENTION_BF16,
                            None => Tol::ATTENTION,
                        };
                        compare("out", &out, &want, tol)
                    });
                match r {
                    Ok(()) => eprintln!("ok   {name}"),
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Unsupported head dims and mismatched forced kernels are errors that name
/// the value and leave the output untouched.
#[test]
fn rejects_unsupported() {
    let Some(be) = backend() else { return };
    let p = AttentionParams {
        n_tokens: 8,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 512,
        pos0: 0,
        kv_stride: 8,
        scale: 0.05,
        window: None,
        softcap: None,
    };
    let q = vec![0.5; 8 * 2 * 512];
    let kv = vec![0.5; 8 * 512];
    let mut out = vec![f32::NAN; q.len()];
    let kvs = KvSlice::F32(&kv);
    let e = run_gpu(&be, &p, None, &q, kvs, kvs, &mut out).unwrap_err();
    assert!(e.to_string().contains("head_dim 512"), "{e}");
    assert!(out.iter().all(|x| x.is_nan()));
    // K and V caches of different types.
    let bits = KvData::encode(KvType::BF16, &kv);
    let e = run_gpu(
        &be,
        &AttentionParams { n_tokens: 1, ..p },
        None,
        &q[..1024],
        bits.slice(),
        kvs,
        &mut out[..1024],
    )
    .unwrap_err();
    assert!(e.to_string().contains("v cache"), "{e}");
    let p = AttentionParams { head_dim: 64, ..p };
    let q = vec![0.5; 8 * 2 * 64];
    let kv = vec![0.5; 8 * 64];
    let mut out = vec![f32::NAN; q.len()];
    let e = run_gpu(
        &be,
        &p,
        Some(&AttentionKernel::Tiled { head_dim: 96 }),
        &q,
        KvSlice::F32(&kv),
        KvSlice::F32(&kv),
        &mut out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("head_dim 64"), "{e}");
    // The tensor-core kernel has no head_dim 96 instance, and one forced for
    // another head_dim is refused.
    let p96 = AttentionParams { head_dim: 96, ..p };
    let q = vec![0.5; 8 * 2 * 96];
    let kv = vec![0.5; 8 * 96];
    let mut out = vec![f32::NAN; q.len()];
    let e = run_gpu(
        &be,
        &p96,
        Some(&AttentionKernel::Mma { head_dim: 96 }),
        &q,
        KvSlice::F32(&kv),
        KvSlice::F32(&kv),
        &mut out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("head_dim 96"), "{e}");
    assert!(out.iter().all(|x| x.is_nan()));
    let q = vec![0.5; 8 * 2 * 64];
    let kv = vec![0.5; 8 * 64];
    let mut out = vec![f32::NAN; q.len()];
    let e = run_gpu(
        &be,
        &p,
        Some(&AttentionKernel::Mma { head_dim: 128 }),
        &q,
        KvSlice::F32(&kv),
        KvSlice::F32(&kv),
        &mut out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("head_dim 64"), "{e}");
}
