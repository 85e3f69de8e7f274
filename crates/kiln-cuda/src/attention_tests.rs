//! Unit tests of attention.rs (plans, selection, kernel names): no GPU needed.
#![allow(clippy::panic, clippy::unwrap_used)]
use super::*;

fn p(n_tokens: usize, n_heads: usize, n_kv: usize, d: usize, pos0: usize) -> AttentionParams {
    AttentionParams {
        n_tokens,
        n_heads,
        n_kv_heads: n_kv,
        head_dim: d,
        pos0,
        kv_stride: pos0 + n_tokens,
        scale: 0.125,
        window: None,
        softcap: None,
    }
}

#[test]
fn selection() {
    assert_eq!(
        select_attention(&p(512, 9, 3, 64, 0), 132).unwrap(),
        AttentionKernel::Mma2 { head_dim: 64 }
    );
    // Tensor cores from MMA_MIN_TOKENS queries, for head_dim 64 and 128
    // (v1 up to MMA_BM queries, the pipelined v2 above); the f32 tiled
    // kernel below that and for the other head dims.
    for (n, d, want) in [
        (16, 128, AttentionKernel::Mma { head_dim: 128 }),
        (64, 64, AttentionKernel::Mma { head_dim: 64 }),
        (65, 64, AttentionKernel::Mma2 { head_dim: 64 }),
        (4096, 128, AttentionKernel::Mma2 { head_dim: 128 }),
        (15, 64, AttentionKernel::Tiled { head_dim: 64 }),
        (5, 128, AttentionKernel::Tiled { head_dim: 128 }),
        (512, 96, AttentionKernel::Tiled { head_dim: 96 }),
        (512, 80, AttentionKernel::Tiled { head_dim: 80 }),
    ] {
        assert_eq!(select_attention(&p(n, 32, 8, d, 7), 132).unwrap(), want);
        assert_eq!(
            uses_bf16(&p(n, 32, 8, d, 7)),
            matches!(
                want,
                AttentionKernel::Mma { .. } | AttentionKernel::Mma2 { .. }
            )
        );
    }
    // Prefill with a head_dim the tiled kernel lacks falls back to split-KV.
    assert!(matches!(
        select_attention(&p(33, 6, 6, 16, 0), 132).unwrap(),
        AttentionKernel::SplitKv(_)
    ));
    // A window is no reason to change kernel; its splits cover only the
    // window's keys.
    let windowed = AttentionParams {
        window: Some(512),
        ..p(1, 4, 1, 256, 8000)
    };
    let AttentionKernel::DecodeGroups(plan) = select_attention(&windowed, 132).unwrap() else {
        panic!("decode at head_dim 256 must be the lane-group kernel");
    };
    assert!(plan.splits * plan.chunk >= 512 && (plan.splits - 1) * plan.chunk < 512);
    // Decode: the lane-group kernel for its head dims, up to 4 tokens; the
    // warp decode kernel (split-KV) for the others; KILN_ATTN_DEC=old turns
    // the former into the latter on the split-KV plan.
    for (n, d) in [(1, 64), (4, 64), (1, 128), (3, 128), (1, 256), (2, 256)] {
        let pp = p(n, 32, 8, d, 1000);
        let k = select_attention(&pp, 132).unwrap();
        assert_eq!(k, AttentionKernel::DecodeGroups(decg_plan(&pp, 132)));
        assert!(decg_eligible(&pp));
        assert_eq!(
            dec::adjust_for(&pp, k, 132, true),
            AttentionKernel::SplitKv(split_kv_plan(&pp, 132))
        );
        assert_eq!(dec::adjust_for(&pp, k, 132, false), k);
    }
    for (n, d) in [(1, 80), (1, 96), (2, 192), (1, 32), (4, 512)] {
        let pp = p(n, 8, 2, d, 1000);
        assert!(!decg_eligible(&pp));
        let k = select_attention(&pp, 132).unwrap();
        assert_eq!(k, AttentionKernel::SplitKv(split_kv_plan(&pp, 132)));
        assert_eq!(dec::adjust_for(&pp, k, 132, true), k);
    }
    assert!(!decg_eligible(&p(5, 8, 2, 128, 1000)));
    assert_eq!(
        select_attention(
            &AttentionParams {
                window: Some(512),
                ..p(600, 4, 1, 64, 0)
            },
            132
        )
        .unwrap(),
        AttentionKernel::Mma2 { head_dim: 64 }
    );
    // Decode takes head dims up to 512 (the wide decode instance, at
    // most 2 heads per block); prefill outside the tiled dims only up to 256.
    for d in [300, 512] {
        let AttentionKernel::SplitKv(plan) = select_attention(&p(1, 8, 1, d, 9000), 132).unwrap()
        else {
            panic!("decode at head_dim {d} must be split-KV (the warp decode kernel)");
        };
        assert!(plan.heads_per_block <= DEC_WIDE_MAX_HEADS, "{plan:?}");
        check_plan(&p(1, 8, 1, d, 9000), &plan).unwrap();
    }
    let e = select_attention(&p(1, 1, 1, 513, 0), 132).unwrap_err();
    assert!(e.to_string().contains("head_dim 513"), "{e}");
    let e = select_attention(&p(64, 1, 1, 512, 0), 132).unwrap_err();
    assert!(e.to_string().contains("head_dim 512"), "{e}");
}

#[test]
fn kernel_table_names() {
    let names = kernel_names(KvType::BF16);
    assert_eq!(names.len(), Kern::COUNT);
    for (k, want) in [
        (
            Kern::Split {
                at: false,
                direct: false,
            },
            "attention_split_bf16",
        ),
        (
            Kern::Split {
                at: true,
                direct: true,
            },
            "attention_split_direct_at_bf16",
        ),
        (
            Kern::Decode { i: 3, at: true },
            "attention_decode_l4_at_bf16",
        ),
        (
            Kern::Decode { i: 8, at: false },
            "attention_decode_l16_bf16",
        ),
        (Kern::Tiled { i: 3 }, "attention_tiled_d128_bf16"),
        (
            Kern::DecodeGroups { i: 0, at: false },
            "attention_decg_d64_bf16",
        ),
        (
            Kern::DecodeGroups { i: 2, at: true },
            "attention_decg_d256_at_bf16",
        ),
        (Kern::Mma { i: 1 }, "attention_mma_d128_bf16"),
        (Kern::Mma2 { i: 0 }, "attention_mma2_d64_bf16"),
        (Kern::Mma2 { i: 1 }, "attention_mma2_d128_bf16"),
    ] {
        assert_eq!(names[k.slot()], want);
    }
    assert_eq!(kernel_names(KvType::F32)[0], "attention_split_f32");
    // Every slot once, in table order.
    let mut slots: Vec<usize> = Kern::all().into_iter().map(Kern::slot).collect();
    assert!(slots.iter().enumerate().all(|(i, &s)| i == s), "{slots:?}");
    slots.dedup();
    assert_eq!(slots.len(), Kern::COUNT);
    // v2's shared memory: 3 stages for 16-bit caches (cp.async), 2
    // register-staged ones for f32, each a K and a V tile of 64 keys; d128
    // fits sm_86/89's 99 KiB opt-in.
    assert_eq!(mma2_smem_bytes(128, KvType::BF16), 98_304);
    assert_eq!(mma2_smem_bytes(128, KvType::F16), 98_304);
    assert_eq!(mma2_smem_bytes(128, KvType::F32), 65_536);
    assert_eq!(mma2_smem_bytes(64, KvType::F16), 49_152);
    let sc = base_params(&AttentionParams {
        softcap: Some(50.0),
        ..p(1, 1, 1, 64, 3)
    })
    .unwrap();
    assert!((sc.scale_log2 - 0.125 / 50.0).abs() < 1e-9);
    assert!((sc.cap_log2 - 50.0 * std::f32::consts::LOG2_E).abs() < 1e-4);
    assert_eq!(base_params(&p(1, 1, 1, 64, 3)).unwrap().cap_log2, 0.0);
}

#[test]
fn key_span_and_kernel_window() {
    let base = p(1, 1, 1, 64, 99); // keys 0..100
    assert_eq!(key_span(&base), 100);
    let w = |window, pp: AttentionParams| AttentionParams {
        window: Some(window),
        ..pp
    };
    assert_eq!(key_span(&w(1, base)), 1);
    assert_eq!(key_span(&w(40, base)), 40);
    assert_eq!(key_span(&w(100, base)), 100);
    assert_eq!(key_span(&w(usize::MAX, base)), 100);
    // 7 queries at 93..=99 with window 40: keys 54..=99.
    assert_eq!(key_span(&w(40, p(7, 1, 1, 64, 93))), 46);
    assert_eq!(kernel_window(&base), 0);
    assert_eq!(kernel_window(&w(99, base)), 99);
    assert_eq!(kernel_window(&w(100, base)), 0);
    assert_eq!(kernel_window(&w(usize::MAX, base)), 0);
    // Plans cover the span, not the context.
    let plan = split_kv_plan(&w(512, p(1, 4, 1, 256, 100_000)), 132);
    assert!(plan.splits * plan.chunk >= 512 && plan.splits * plan.chunk < 1024);
    check_plan(&w(512, p(1, 4, 1, 256, 100_000)), &plan).unwrap();
    // A forced plan whose offsets would overflow u32 is refused.
    let huge = SplitKvPlan {
        splits: 2,
        chunk: 1 << 31,
        ..plan
    };
    assert!(check_plan(&base, &huge).is_err());
}

#[test]
fn split_plans_cover_the_keys_and_fill_the_gpu() {
    for kv in [1usize, 31, 33, 1000, 1024, 4096, 8192, 100_000] {
        for (h, hk, d) in [(9, 3, 64), (32, 8, 128), (8, 1, 256), (64, 4, 80)] {
            let pp = p(1, h, hk, d, kv - 1);
            // The warp decode kernel's plan (every head dim) and the
            // lane-group kernel's (its head dims).
            let mut plans = vec![(split_kv_plan(&pp, 132), MAX_HEADS_PER_BLOCK)];
            check_plan(&pp, &plans[0].0).unwrap();
            if decg_eligible(&pp) {
                let plan = decg_plan(&pp, 132);
                dec::check_plan(&pp, &plan).unwrap();
                plans.push((plan, DECG_MAX_HEADS));
            }
            for (plan, max_heads) in plans {
                assert!(plan.splits * plan.chunk >= kv);
                assert!(
                    (plan.splits - 1) * plan.chunk < kv,
                    "{plan:?}: an empty split"
                );
                assert!(plan.heads_per_block <= max_heads.min(h / hk), "{plan:?}");
                if kv >= 8192 {
                    let blocks = plan.splits * hk * h.div_ceil(hk).div_ceil(plan.heads_per_block);
                    assert!(blocks >= 132, "kv {kv}: {plan:?} gives {blocks} blocks");
                }
            }
        }
    }
}

#[test]
fn lane_group_plans() {
    // SmolLM2 (9/3, d 64) at 1k keys: 16 key streams per block, two keys
    // each per split, 32 splits x 3 blocks; at 8k the grid is about
    // DECG_BLOCKS_PER_SM blocks per SM.
    let smol = |kv: usize| p(1, 9, 3, 64, kv - 1);
    let plan = decg_plan(&smol(1024), 132);
    assert_eq!((plan.splits, plan.chunk, plan.heads_per_block), (32, 32, 3));
    let plan = decg_plan(&smol(8192), 132);
    let blocks = plan.splits * 3;
    assert!(
        blocks <= DECG_BLOCKS_PER_SM * 132 && blocks * 10 >= DECG_BLOCKS_PER_SM * 132 * 9,
        "{plan:?}"
    );
    // Short contexts still get several blocks per kv head; one key gives
    // one split.
    assert_eq!(decg_plan(&smol(128), 132).splits, 4);
    assert_eq!(decg_plan(&smol(1), 132).splits, 1);
    // 32/8 at d 128: 4 heads per block, 16-key splits at short contexts.
    let plan = decg_plan(&p(1, 32, 8, 128, 99), 132);
    assert_eq!((plan.splits, plan.chunk, plan.heads_per_block), (7, 16, 4));
    // Wide groups take several head chunks of at most 4 heads.
    assert_eq!(decg_plan(&p(1, 9, 1, 128, 99), 132).heads_per_block, 4);
    // Rejections name the value.
    let pp = p(1, 8, 2, 128, 1000);
    let plan = decg_plan(&pp, 132);
    for (bad, what) in [
        (SplitKvPlan { splits: 0, ..plan }, "splits"),
        (
            SplitKvPlan {
                splits: 257,
                ..plan
            },
            "splits",
        ),
        (SplitKvPlan { chunk: 0, ..plan }, "chunk"),
        (
            SplitKvPlan {
                splits: 1,
                chunk: 16,
                ..plan
            },
            "cover",
        ),
        (
            SplitKvPlan {
                heads_per_block: 5,
                ..plan
            },
            "heads_per_block",
        ),
        (
            SplitKvPlan {
                splits: 2,
                chunk: 1 << 31,
                ..plan
            },
            "2^30",
        ),
    ] {
        let e = dec::check_plan(&pp, &bad).unwrap_err();
        assert!(e.to_string().contains(what), "{bad:?}: {e}");
    }
    let e = dec::check_plan(&p(1, 8, 2, 96, 1000), &plan).unwrap_err();
    assert!(e.to_string().contains("head_dim 96"), "{e}");
    let e = dec::check_plan(&p(5, 8, 2, 128, 1000), &plan).unwrap_err();
    assert!(e.to_string().contains("not 5"), "{e}");
}

#[test]
fn ring_caches() {
    // Decode 3000 positions into a 512-row ring with window 512: the splits
    // cover the window (512 keys, all in distinct rows), the kernels get
    // the ring's rows and the window.
    let ring = AttentionParams {
        window: Some(512),
        kv_stride: 512,
        ..p(1, 4, 1, 256, 3000)
    };
    ring.validate(4 * 256, 512 * 256, 512 * 256, 4 * 256)
        .unwrap();
    assert_eq!(key_span(&ring), 512);
    let k = base_params(&ring).unwrap();
    assert_eq!((k.pos0, k.kv_rows, k.window), (3000, 512, 512));
    let AttentionKernel::DecodeGroups(plan) = select_attention(&ring, 132).unwrap() else {
        panic!("decode at head_dim 256 must be the lane-group kernel");
    };
    dec::check_plan(&ring, &plan).unwrap();
    assert!(plan.splits * plan.chunk >= 512 && (plan.splits - 1) * plan.chunk < 512);
    let plan = split_kv_plan(&ring, 132);
    check_plan(&ring, &plan).unwrap();
    assert!(plan.splits * plan.chunk >= 512 && (plan.splits - 1) * plan.chunk < 512);
    // A prefill whose keys wrap: w + n_tokens - 1 = 16 + 70 - 1 rows; the
    // tensor-core kernel as without a ring.
    let prefill = AttentionParams {
        window: Some(16),
        kv_stride: 85,
        ..p(70, 9, 3, 64, 200)
    };
    assert_eq!(key_span(&prefill), 85);
    assert_eq!(
        select_attention(&prefill, 132).unwrap(),
        AttentionKernel::Mma2 { head_dim: 64 }
    );
    // Positions are checked themselves, whatever the ring's size.
    let far = AttentionParams {
        pos0: 1 << 30,
        ..ring
    };
    let e = base_params(&far).unwrap_err();
    assert!(e.to_string().contains("pos0 1073741824"), "{e}");
    // kv_rows: the stride, or u32::MAX past it (positions map to themselves).
    assert_eq!(base_params(&p(3, 1, 1, 64, 5)).unwrap().kv_rows, 8);
    let huge = AttentionParams {
        kv_stride: 1 << 33,
        ..p(1, 1, 1, 64, 5)
    };
    assert_eq!(kv_rows(&huge), u32::MAX);
}
