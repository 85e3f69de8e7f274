//! The decode kernels (`n_tokens <= DECODE_MAX_TOKENS`) of parity_cuattn,
//! each forced: the lane-group kernel (`AttentionKernel::DecodeGroups`,
//! head dims 64, 128 and 256) and the warp decode kernel
//! (`AttentionKernel::SplitKv` with few queries; what `KILN_ATTN_DEC=old`
//! selects). Both run the testkit tables' decode calls, every decode shape
//! of this binary (long contexts, GQA groups over several head chunks,
//! windows, soft caps, ring caches) and the shapes below, with f32, f16 and
//! bf16 caches; the lane-group kernel also on forced plans (one split,
//! 16-key splits, one and two heads per block) and on cache views that
//! start off the 16-byte alignment its vector loads want.

use super::*;
use kiln_cuda::attention::{
    attention_at_with_kernel, decg_eligible, decg_plan, DECODE_MAX_TOKENS, MAX_SPLITS,
};
use kiln_cuda::KvView;
use kiln_testkit::cases::attention::AttentionFn;

/// More decode shapes for both kernels: GQA 9/3 two tokens 3000 in with
/// windows of 1, 100 and all keys; MHA; MQA groups of 8 (two head chunks
/// of the lane-group kernel) at every head dim; 3 and 4 tokens with
/// windows; soft caps at head dims 64 and 256; a context shorter than a
/// block's key streams; rings shorter than those streams.
const DECODE_CASES: &[Case] = &[
    c(2, 9, 3, 64, 3000, 4),
    cw(2, 9, 3, 64, 3000, 1),
    cw(2, 9, 3, 64, 3000, 100),
    cw(2, 9, 3, 64, 3000, 3001),
    c(1, 16, 16, 64, 500, 0),
    c(1, 8, 1, 64, 2000, 1),
    c(2, 8, 1, 128, 1000, 0),
    c(1, 8, 1, 256, 1500, 3),
    cw(3, 32, 8, 128, 777, 50),
    cw(4, 6, 1, 256, 90, 5),
    cs(1, 8, 1, 256, 700, 30.0),
    cs(4, 9, 3, 64, 900, 5.0),
    c(1, 4, 2, 64, 2, 0),
    c(1, 9, 3, 64, 0, 7),
    cr(3, 7, 1, 64, 1000, 15, 17),
    cr(4, 6, 1, 128, 90, 5, 8),
    cr(1, 8, 1, 256, 500, 33, 40),
];

/// The warp decode kernel on its split plan and, where it has the head
/// dim, the lane-group kernel on its plan (what `attention` picks with and
/// without `KILN_ATTN_DEC=old`).
fn decode_kernels(p: &AttentionParams, sm: usize) -> Vec<AttentionKernel> {
    let mut v = vec![AttentionKernel::SplitKv(split_kv_plan(p, sm))];
    if decg_eligible(p) {
        v.push(AttentionKernel::DecodeGroups(decg_plan(p, sm)));
    }
    v
}

/// Forced lane-group plans beside its own: one split, the shortest splits
/// (16 keys, or as many as MAX_SPLITS allows), one head per block, two
/// heads per block (a partial last head chunk for odd groups).
fn forced_decg_plans(p: &AttentionParams, sm: usize) -> Vec<AttentionKernel> {
    let plan = decg_plan(p, sm);
    let span = key_span(p);
    let short = span.div_ceil(MAX_SPLITS).div_ceil(16).max(1) * 16;
    [
        SplitKvPlan {
            splits: 1,
            chunk: span.div_ceil(16) * 16,
            ..plan
        },
        SplitKvPlan {
            splits: span.div_ceil(short),
            chunk: short,
            ..plan
        },
        SplitKvPlan {
            heads_per_block: 1,
            ..plan
        },
        SplitKvPlan {
            heads_per_block: 2.min(p.group()),
            ..plan
        },
    ]
    .map(AttentionKernel::DecodeGroups)
    .to_vec()
}

/// Run the kernels `kernels(p)` picks on one case and cache type; failures
/// are collected.
fn check_kernels(
    be: &CudaBackend,
    (cs, index, kv): (&Case, usize, KvType),
    kernels: impl Fn(&AttentionParams) -> Vec<AttentionKernel>,
    failures: &mut Vec<String>,
) {
    let (p, q, k, v, want) = inputs(cs, index, kv);
    for kernel in kernels(&p) {
        let mut out = vec![f32::NAN; want.len()];
        let name = format!("kv {kv} {p:?} forced {kernel:?}");
        let r = run_gpu(be, &p, Some(&kernel), &q, k.slice(), v.slice(), &mut out)
            .map_err(|e| e.to_string())
            .and_then(|()| compare("out", &out, &want, Tol::ATTENTION));
        match r {
            Ok(()) => eprintln!("ok   {name}"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
}

/// The testkit tables with every decode call the lane-group kernel can
/// take forced to it, then to the warp decode kernel (the other calls take
/// the launcher's choice).
#[test]
fn testkit_tables_on_both_decode_kernels() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    for old in [false, true] {
        let pick = |p: &AttentionParams| {
            decg_eligible(p).then(|| {
                if old {
                    AttentionKernel::SplitKv(split_kv_plan(p, sm))
                } else {
                    AttentionKernel::DecodeGroups(decg_plan(p, sm))
                }
            })
        };
        let imp: &AttentionFn<'_> =
            &|p, q, k, v, out| run_gpu(&be, p, pick(p).as_ref(), q, k, v, out).map_err(to_core);
        let which = if old { "warp decode" } else { "lane-group" };
        let report = check_attention_with(imp, &cuda_options());
        println!("{which}:\n{report}");
        report.into_result().unwrap();
        let report = check_attention_window_with(imp, &cuda_options());
        println!("{which}, windows:\n{report}");
        report.into_result().unwrap();
    }
}

/// Every decode shape of this binary (CASES, RING_CASES, DECODE_CASES) on
/// both decode kernels, and on the forced lane-group plans; each with f32,
/// f16 and bf16 caches.
#[test]
fn both_decode_kernels_on_every_decode_shape() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    let mut failures = Vec::new();
    let all = CASES.iter().chain(RING_CASES).chain(DECODE_CASES);
    for (i, cs) in all.enumerate() {
        if cs.n_tokens > DECODE_MAX_TOKENS {
            continue;
        }
        for kv in KvType::ALL {
            let kernels = |p: &AttentionParams| {
                let mut v = decode_kernels(p, sm);
                if decg_eligible(p) {
                    v.extend(forced_decg_plans(p, sm));
                }
                v
            };
            check_kernels(&be, (cs, 500 + i, kv), kernels, &mut failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `x` uploaded behind `shift` leading zeros; `f` gets a view of `x`.
fn with_shifted<R>(
    be: &CudaBackend,
    x: KvSlice<'_>,
    shift: usize,
    f: impl FnOnce(KvView<'_, '_>) -> R,
) -> R {
    let n = x.len();
    let padded = match x {
        KvSlice::F32(v) => KvData::F32([&vec![0.0; shift][..], v].concat()),
        KvSlice::F16(v) => KvData::F16([&vec![0; shift][..], v].concat()),
        KvSlice::BF16(v) => KvData::BF16([&vec![0; shift][..], v].concat()),
    };
    let (dev, _) = KvDev::upload(be, padded.slice()).unwrap();
    match &dev {
        KvDev::F32(s) => f(KvView::F32(&s.slice(shift..shift + n))),
        KvDev::F16(s) => f(KvView::F16(&s.slice(shift..shift + n))),
        KvDev::BF16(s) => f(KvView::BF16(&s.slice(shift..shift + n))),
    }
}

/// Cache views 1 and 4 elements past an aligned base (the lane-group
/// kernel then loads element by element instead of 16 bytes at a time;
/// 4 f32 elements are 16 bytes, so that one stays on the vector path) on
/// both decode kernels and through the launcher, every head dim.
#[test]
fn decode_kernels_on_shifted_caches() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    let mut failures = Vec::new();
    let shapes = [
        c(1, 9, 3, 64, 1000, 0),
        cr(2, 32, 8, 128, 3000, 100, 101),
        cs(1, 8, 1, 256, 2000, 20.0),
    ];
    for (i, cs) in shapes.iter().enumerate() {
        for kv in KvType::ALL {
            let (p, q, k, v, want) = inputs(cs, 600 + i, kv);
            let dq = be.upload(&q).unwrap();
            let kernels = decode_kernels(&p, sm).into_iter().map(Some);
            for (kernel, shift) in kernels.chain([None]).flat_map(|k| [(k, 1), (k, 4)]) {
                let mut out = vec![f32::NAN; want.len()];
                let name = format!("kv {kv} {p:?} shift {shift} kernel {kernel:?}");
                let r = kiln_cuda::harness::guarded(&be, &mut out, |view| {
                    let q = dq.slice(..);
                    with_shifted(&be, k.slice(), shift, |k| {
                        with_shifted(&be, v.slice(), shift, |v| match kernel {
                            None => attention(&be, &p, &q, k, v, view),
                            Some(kern) => attention_with_kernel(&be, &p, &kern, &q, k, v, view),
                        })
                    })
                })
                .map_err(|e| e.to_string())
                .and_then(|()| compare("out", &out, &want, Tol::ATTENTION));
                match r {
                    Ok(()) => eprintln!("ok   {name}"),
                    Err(e) => failures.push(format!("{name}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A forced lane-group kernel it cannot run is an error naming the value,
/// and leaves the output untouched: a head_dim without an instance, more
/// than DECODE_MAX_TOKENS queries, a plan that misses keys or holds too
/// many heads; attention_at refuses the prefill kernels.
#[test]
fn lane_group_rejections() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    let base = AttentionParams {
        n_tokens: 1,
        n_heads: 8,
        n_kv_heads: 1,
        head_dim: 128,
        pos0: 99,
        kv_stride: 100,
        scale: 0.1,
        window: None,
        softcap: None,
    };
    let plan = decg_plan(&base, sm);
    let short = SplitKvPlan {
        splits: 1,
        chunk: 16,
        ..plan
    };
    let wide = SplitKvPlan {
        heads_per_block: 8,
        ..plan
    };
    for (p, plan, what) in [
        (
            AttentionParams {
                head_dim: 96,
                ..base
            },
            plan,
            "head_dim 96",
        ),
        (
            AttentionParams {
                n_tokens: 5,
                pos0: 95,
                ..base
            },
            plan,
            "not 5",
        ),
        (base, short, "cover"),
        (base, wide, "heads_per_block"),
    ] {
        let nq = p.n_tokens * p.n_heads * p.head_dim;
        let q = vec![0.5; nq];
        let kv = vec![0.5; p.kv_stride * p.head_dim];
        let mut out = vec![f32::NAN; nq];
        let kern = AttentionKernel::DecodeGroups(plan);
        let e = run_gpu(
            &be,
            &p,
            Some(&kern),
            &q,
            KvSlice::F32(&kv),
            KvSlice::F32(&kv),
            &mut out,
        )
        .unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
        assert!(out.iter().all(|x| x.is_nan()));
    }
    let q = be.upload(&vec![0.5f32; 8 * 128]).unwrap();
    let kv = be.upload(&vec![0.5f32; 100 * 128]).unwrap();
    let pos = be.upload(&[50i32]).unwrap();
    let mut out = be.alloc_zeros::<f32>(8 * 128).unwrap();
    let (kc, vc) = (kv.slice(..), kv.slice(..));
    let e = attention_at_with_kernel(
        &be,
        &base,
        &AttentionKernel::Tiled { head_dim: 128 },
        &pos.slice(..),
        &q.slice(..),
        (KvView::F32(&kc), KvView::F32(&vc)),
        &mut out.slice_mut(..),
    )
    .unwrap_err();
    assert!(e.to_string().contains("Tiled"), "{e}");
}
