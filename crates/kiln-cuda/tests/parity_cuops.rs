//! GPU parity of the small op families (embedding, MLX tables included;
//! rms_norm, rope, norm_rope, qk_norm_rope_kv, copy_rows, silu_mul, sigmoid_mul, gelu_mul
//! (tanh and erf), scale, add_rows, rope_multi, softmax, argmax, layer_norm,
//! l2_norm, softcap, sample) against their kiln-core references: the
//! kiln-testkit drivers (copy_rows: a table here, then the testkit's with
//! 16-bit destinations and ring appends), each run twice — with
//! every device view at the start of its buffer (16-byte aligned, the float4
//! paths) and shifted by one element (the scalar paths). Outputs live in
//! device buffers with sentinel guards on both sides around the testkit's
//! poisoned interior. Skipped, with the reason, where no CUDA device opens.
//! Timing lives in `benches/ops.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::copy_rows::{copy_rows_ref, CopyRowsParams};
use kiln_core::ops::embedding::{embedding_ref, EmbeddingParams};
use kiln_core::DType;
use kiln_cuda::CudaBackend;
use kiln_cuda::{add_rows, argmax, copy_rows, embedding, gelu_mul, rms_norm, rope, scale};
use kiln_cuda::{
    l2_norm, layer_norm, norm_rope, rope_multi, sample, sigmoid_mul, silu_mul, softcap, softmax,
};
use kiln_testkit::cases as tk;
use kiln_testkit::{case_rng, compare, rand_f32, rand_rows, Options, Report, Tol};

mod common;
use common::*;

#[test]
fn parity_embedding() {
    let Some(be) = backend() else { return };
    check("embedding", |shift, o| {
        tk::embedding::check_embedding_with(
            &|p, table, ids, out| {
                // The host has the ids here: full validation, as a caller with host ids does.
                p.validate(table.len(), ids, out.len())?;
                // Tables shift by whole f32s: the launcher requires 4-byte alignment for F32.
                let mut padded = vec![0u8; 4 * shift];
                padded.extend_from_slice(table);
                let t = up(&be, &padded, 0)?;
                let t_view = t.buf.slice(4 * shift..4 * shift + table.len());
                let i = up(&be, ids, shift)?;
                f32_guarded(&be, out, shift, |o| {
                    embedding::embedding(&be, p, &t_view, &i.view(), ids.len(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_rms_norm() {
    let Some(be) = backend() else { return };
    check("rms_norm", |shift, o| {
        tk::rms_norm::check_rms_norm_with(
            &|p, x, w, out| {
                let (xd, wd) = (up(&be, x, shift)?, up(&be, w, shift)?);
                f32_guarded(&be, out, shift, |o| {
                    rms_norm::rms_norm(&be, p, &xd.view(), &wd.view(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_rope() {
    let Some(be) = backend() else { return };
    check("rope", |shift, o| {
        tk::rope::check_rope_with(
            &|p, pos, x| {
                let pd = up(&be, pos, shift)?;
                f32_guarded(&be, x, shift, |o| rope::rope(&be, p, &pd.view(), o))
            },
            o,
        )
    });
}

#[test]
fn parity_rope_factors() {
    let Some(be) = backend() else { return };
    check("rope_factors", |shift, o| {
        tk::rope::check_rope_factors_with(
            &|p, f, pos, x| {
                // Host factors: their values are checked here, as by a
                // loader; a wrong length is left to the launcher to reject.
                if f.len() == p.n_rot / 2 {
                    kiln_core::ops::rope::check_factors(p, Some(f))?;
                }
                let (pd, fd) = (up(&be, pos, shift)?, up(&be, f, shift)?);
                f32_guarded(&be, x, shift, |o| {
                    rope::rope_with_factors(&be, p, Some(&fd.view()), &pd.view(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_norm_rope() {
    let Some(be) = backend() else { return };
    check("norm_rope", |shift, o| {
        tk::norm_rope::check_norm_rope_with(
            &|p, x, w, f, pos, out| {
                // Host factors: their values are checked here, as by a
                // loader; a wrong length is left to the launcher to reject.
                if f.is_some_and(|f| f.len() == p.rope.n_rot / 2) {
                    kiln_core::ops::norm_rope::check_norm_rope_factors(p, f)?;
                }
                let (xd, wd, pd) = (up(&be, x, shift)?, up(&be, w, shift)?, up(&be, pos, shift)?);
                let fd = f.map(|f| up(&be, f, shift)).transpose()?;
                let fv = fd.as_ref().map(Dev::view);
                f32_guarded(&be, out, shift, |o| {
                    norm_rope::norm_rope(&be, p, &xd.view(), &wd.view(), fv.as_ref(), &pd.view(), o)
                })
            },
            o,
        )
    });
}

/// qk_norm_rope_kv (q/k norm + RoPE + KV append in one launch): the
/// testkit table (f32 / f16 / bf16 caches, plain and ring, both pairings,
/// frequency factors, odd head counts, decode and small batches; the
/// host-row launcher and the device-position `_at` one), outputs and
/// caches NaN-/0xFFFF-poisoned between device guard zones
/// (`harness_qk`); the rows the append does not name must keep their
/// poison. Then the refusals the launcher adds: mixed cache types and
/// heads longer than 512.
#[test]
fn parity_qk_norm_rope_kv() {
    let Some(be) = backend() else { return };
    let r = tk::qk_norm_rope_kv::check_qk_norm_rope_kv_with(
        &|rows, p, io| kiln_cuda::harness_qk::qk_norm_rope_kv_host(&be, rows, p, io),
        &Options::default(),
    );
    println!("== qk_norm_rope_kv ==\n{r}");
    eprintln!("qk_norm_rope_kv: {}", r.summary());
    assert!(r.is_ok(), "qk_norm_rope_kv parity failed:\n{r}");
    use kiln_core::ops::norm_rope::NormRopeParams;
    use kiln_core::ops::qk_norm_rope_kv::{QkNormRopeKvIo, QkNormRopeKvParams};
    use kiln_core::ops::rope::{RopeMode, RopeParams};
    use kiln_core::KvSliceMut;
    use tk::qk_norm_rope_kv::Rows;
    let p = |head_dim| QkNormRopeKvParams {
        q: NormRopeParams {
            rope: RopeParams {
                n_tokens: 1,
                n_heads: 1,
                head_dim,
                n_rot: head_dim - 2,
                freq_base: 1e4,
                freq_scale: 1.0,
                mode: RopeMode::Neox,
            },
            eps: 1e-6,
        },
        n_heads_kv: 1,
        dst_row: 0,
        dst_ring: None,
    };
    for (hd, mixed, what) in [
        (64, true, "both must be of one type"),
        (514, false, "head_dim 514"),
    ] {
        let qkv = vec![1.0f32; 3 * hd];
        let w = vec![1.0f32; hd];
        let mut q_out = vec![f32::NAN; hd];
        let mut kc = vec![f32::NAN; hd];
        let (mut v16, mut v32) = (vec![0xFFFFu16; hd], vec![f32::NAN; hd]);
        let io = QkNormRopeKvIo {
            qkv: &qkv,
            q_norm: &w,
            k_norm: &w,
            factors: None,
            positions: &[0],
            q_out: &mut q_out,
            k_cache: KvSliceMut::F32(&mut kc),
            v_cache: if mixed {
                KvSliceMut::F16(&mut v16)
            } else {
                KvSliceMut::F32(&mut v32)
            },
        };
        let e = kiln_cuda::harness_qk::qk_norm_rope_kv_host(&be, Rows::Params, &p(hd), io)
            .unwrap_err()
            .to_string();
        assert!(e.contains("qk_norm_rope_kv") && e.contains(what), "{e}");
        assert!(q_out.iter().chain(&kc).all(|v| v.is_nan()));
    }
}

/// head_dim above the kernel's shared rows is refused with an error naming
/// the op, before anything is written.
#[test]
fn norm_rope_rejects_heads_longer_than_512() {
    let Some(be) = backend() else { return };
    let p = kiln_core::ops::norm_rope::NormRopeParams {
        rope: kiln_core::ops::rope::RopeParams {
            n_tokens: 1,
            n_heads: 1,
            head_dim: 514,
            n_rot: 512,
            freq_base: 10000.0,
            freq_scale: 1.0,
            mode: kiln_core::ops::rope::RopeMode::Neox,
        },
        eps: 1e-6,
    };
    let x = up(&be, &vec![1.0f32; 514], 0).unwrap();
    let w = up(&be, &vec![1.0f32; 514], 0).unwrap();
    let pos = up(&be, &[3i32], 0).unwrap();
    let mut out = vec![f32::NAN; 514];
    let e = f32_guarded(&be, &mut out, 0, |o| {
        norm_rope::norm_rope(&be, &p, &x.view(), &w.view(), None, &pos.view(), o)
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("norm_rope") && e.contains("head_dim 514"), "{e}");
    assert!(out.iter().all(|v| v.is_nan()));
}

#[test]
fn parity_rope_multi() {
    let Some(be) = backend() else { return };
    check("rope_multi", |shift, o| {
        // Host positions (validated by the caller, as kiln::ops does) as i32.
        let inputs = |p: &kiln_core::ops::rope_multi::RopeMultiParams,
                      pos: &kiln_core::ops::rope_multi::RopePositions<'_>|
         -> kiln_core::Result<(Dev<i32>, rope_multi::RopeMultiDevicePack)> {
            let host: Vec<i32> = (0..pos.len()).map(|i| pos.get(i)).collect();
            let pack = rope_multi::RopeMultiDevicePack::upload(&be, &p.pack()).map_err(core)?;
            Ok((up(&be, &host, shift)?, pack))
        };
        tk::rope_multi::check_rope_multi_with(
            &|p, pos, x, out| {
                p.validate(pos, x.len(), out.len())?;
                let (pd, pack) = inputs(p, pos)?;
                let xd = up(&be, x, shift)?;
                f32_guarded(&be, out, shift, |o| {
                    rope_multi::rope_multi(&be, p, &pack, &pd.view(), &xd.view(), o)
                })
            },
            &|p, pos, x, out| {
                p.validate(pos, x.len(), out.len())?;
                let (pd, pack) = inputs(p, pos)?;
                let xd = up(&be, x, shift)?;
                guarded(&be, out, 0xDEAD_u16, shift, |o| {
                    rope_multi::rope_multi_bf16(&be, p, &pack, &pd.view(), &xd.view(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_silu_mul() {
    let Some(be) = backend() else { return };
    check("silu_mul", |shift, o| {
        tk::silu_mul::check_silu_mul_with(
            &|p, g, u, out| {
                let (gd, ud) = (up(&be, g, shift)?, up(&be, u, shift)?);
                f32_guarded(&be, out, shift, |o| {
                    silu_mul::silu_mul(&be, p, &gd.view(), &ud.view(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_sigmoid_mul() {
    let Some(be) = backend() else { return };
    check("sigmoid_mul", |shift, o| {
        tk::sigmoid_mul::check_sigmoid_mul_with(
            &|p, g, u, out| {
                let (gd, ud) = (up(&be, g, shift)?, up(&be, u, shift)?);
                f32_guarded(&be, out, shift, |o| {
                    sigmoid_mul::sigmoid_mul(&be, p, &gd.view(), &ud.view(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_gelu_mul() {
    let Some(be) = backend() else { return };
    check("gelu_mul", |shift, o| {
        tk::gelu_mul::check_gelu_mul_with(
            &|p, g, u, out| {
                let (gd, ud) = (up(&be, g, shift)?, up(&be, u, shift)?);
                f32_guarded(&be, out, shift, |o| {
                    gelu_mul::gelu_mul(&be, p, &gd.view(), &ud.view(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_scale() {
    let Some(be) = backend() else { return };
    check("scale", |shift, o| {
        tk::scale::check_scale_with(
            &|p, x, out| {
                let xd = up(&be, x, shift)?;
                f32_guarded(&be, out, shift, |o| scale::scale(&be, p, &xd.view(), o))
            },
            o,
        )
    });
}

#[test]
fn parity_softcap() {
    let Some(be) = backend() else { return };
    check("softcap", |shift, o| {
        tk::softcap::check_softcap_with(
            &|p, x, out| {
                let xd = up(&be, x, shift)?;
                f32_guarded(&be, out, shift, |o| softcap::softcap(&be, p, &xd.view(), o))
            },
            o,
        )
    });
}

#[test]
fn parity_l2_norm() {
    let Some(be) = backend() else { return };
    check("l2_norm", |shift, o| {
        tk::l2_norm::check_l2_norm_with(
            &|p, x, out| {
                let xd = up(&be, x, shift)?;
                f32_guarded(&be, out, shift, |o| l2_norm::l2_norm(&be, p, &xd.view(), o))
            },
            o,
        )
    });
}

#[test]
fn parity_layer_norm() {
    let Some(be) = backend() else { return };
    check("layer_norm", |shift, o| {
        tk::layer_norm::check_layer_norm_with(
            &|p, x, w, b, out| {
                let xd = up(&be, x, shift)?;
                let wd = w.map(|w| up(&be, w, shift)).transpose()?;
                let bd = b.map(|b| up(&be, b, shift)).transpose()?;
                let (wv, bv) = (wd.as_ref().map(Dev::view), bd.as_ref().map(Dev::view));
                f32_guarded(&be, out, shift, |o| {
                    layer_norm::layer_norm(&be, p, &xd.view(), wv.as_ref(), bv.as_ref(), o)
                })
            },
            o,
        )
    });
}

#[test]
fn parity_add_rows() {
    let Some(be) = backend() else { return };
    check("add_rows", |shift, o| {
        tk::add_rows::check_add_rows_with(
            &|p, x, b| {
                let bd = up(&be, b, shift)?;
                f32_guarded(&be, x, shift, |o| add_rows::add_rows(&be, p, o, &bd.view()))
            },
            o,
        )
    });
}

#[test]
fn parity_softmax() {
    let Some(be) = backend() else { return };
    check("softmax", |shift, o| {
        tk::softmax::check_softmax_with(
            &|p, x, out| {
                let xd = up(&be, x, shift)?;
                f32_guarded(&be, out, shift, |o| softmax::softmax(&be, p, &xd.view(), o))
            },
            o,
        )
    });
}

#[test]
fn parity_argmax() {
    let Some(be) = backend() else { return };
    check("argmax", |shift, o| {
        tk::argmax::check_argmax_with(
            &|x| {
                let xd = up(&be, x, shift)?;
                if shift == 0 {
                    // Device-side entry: guarded u32 output, sentinel mapped here.
                    let mut idx = [0u32];
                    guarded(&be, &mut idx, SENTINEL_U32, 0, |o| {
                        argmax::argmax(&be, &xd.view(), o)
                    })?;
                    if idx[0] == argmax::NO_FINITE {
                        return Err(kiln_core::Error::invalid("argmax", "no finite value"));
                    }
                    Ok(idx[0])
                } else {
                    argmax::argmax_host(&be, &xd.view()).map_err(core)
                }
            },
            o,
        )
    });
}

#[test]
fn parity_sample() {
    let Some(be) = backend() else { return };
    check("sample", |shift, o| {
        tk::sample::check_sample_with(
            &|p, x, ids, u| {
                p.validate_call(x.len(), ids.len(), u)?;
                let (xd, idd) = (up(&be, x, shift)?, up(&be, ids, shift)?);
                // Id and threshold key into a guarded two-word output.
                let mut out = [SENTINEL_U32; 2];
                guarded(&be, &mut out, SENTINEL_U32, shift, |o| {
                    sample::sample(&be, p, &xd.view(), &idd.view(), u, o)
                })?;
                if shift == 1 {
                    // The one-word entry the kiln op uses: the same id.
                    let id =
                        sample::sample_host(&be, p, &xd.view(), &idd.view(), u).map_err(core)?;
                    if id != out[0] {
                        return Err(kiln_core::Error::invalid(
                            "sample",
                            format!("sample_host gave {id}, the two-word launch {}", out[0]),
                        ));
                    }
                }
                Ok(kiln_core::ops::sample::Sampled {
                    id: out[0],
                    threshold: out[1],
                })
            },
            o,
        )
    });
}

/// copy_rows has no testkit table yet: (row_len, n_rows, src rows, src_row,
/// dst rows, dst_row, large?). Decode append into a KV cache, last-token pick,
/// odd lengths, zero rows, a prefill-sized append.
const COPY_ROWS_CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 0, 1, 0),
    (7, 3, 5, 2, 4, 1),
    (33, 2, 2, 0, 9, 7),
    (576, 1, 7, 6, 1, 0),
    (192, 1, 1, 0, 2048, 37),
    (64, 9, 9, 0, 100, 91),
    (5, 0, 3, 3, 2, 2),
    (1000, 257, 300, 40, 600, 111),
    (576, 512, 512, 0, 2048, 1000),
];

/// copy_rows cases against copy_rows_ref; `dst` starts random (the rows
/// outside the copy must survive exactly), `Tol::EXACT` (a copy).
fn check_copy_rows(be: &CudaBackend, shift: usize, o: &Options) -> Report {
    let mut report = Report::new(o.seed);
    let run = |p: &CopyRowsParams, src: &[f32], dst: &mut [f32]| -> kiln_core::Result<()> {
        let sd = up(be, src, shift)?;
        f32_guarded(be, dst, shift, |d| {
            copy_rows::copy_rows(be, p, &sd.view(), d)
        })
    };
    for (index, &(row_len, n_rows, src_rows, src_row, dst_rows, dst_row)) in
        COPY_ROWS_CASES.iter().enumerate()
    {
        let p = CopyRowsParams {
            row_len,
            n_rows,
            src_row,
            dst_row,
            dst_ring: None,
        };
        let mut rng = case_rng(o.seed, "copy_rows", index);
        let src = rand_f32(&mut rng, row_len * src_rows, -4.0, 4.0);
        let init = rand_f32(&mut rng, row_len * dst_rows, -4.0, 4.0);
        let mut want = init.clone();
        let outcome = copy_rows_ref(&p, &src, &mut want)
            .map_err(|e| format!("reference: {e}"))
            .and_then(|()| {
                let mut got = init.clone();
                run(&p, &src, &mut got).map_err(|e| format!("implementation: {e}"))?;
                compare("dst", &got, &want, Tol::EXACT)
            });
        report.push(
            "copy_rows",
            &format!("{p:?} src_len={}", src.len()),
            outcome,
        );
    }
    let rejects = [
        ("rejects source rows past the end", 4, 2, 3, 0, 12, 12),
        ("rejects destination rows past the end", 4, 2, 0, 3, 12, 12),
        (
            "rejects an overflowing dst_row",
            4,
            2,
            0,
            usize::MAX,
            12,
            12,
        ),
    ];
    for (name, row_len, n_rows, src_row, dst_row, src_len, dst_len) in rejects {
        let p = CopyRowsParams {
            row_len,
            n_rows,
            src_row,
            dst_row,
            dst_ring: None,
        };
        let src = vec![1.0f32; src_len];
        let init = vec![-1.0f32; dst_len];
        let mut got = init.clone();
        let outcome = match run(&p, &src, &mut got) {
            Ok(()) => Err("accepted an invalid call".to_string()),
            Err(_) if got != init => Err("returned an error but wrote dst".to_string()),
            Err(_) => Ok(()),
        };
        report.push("copy_rows", name, outcome);
    }
    report
}

#[test]
fn parity_copy_rows() {
    let Some(be) = backend() else { return };
    check("copy_rows", |shift, o| check_copy_rows(&be, shift, o));
}

/// The testkit's copy_rows table (f32, f16 and bf16 destinations, ring
/// appends that wrap, rejections) through the harness, as `kiln selftest`
/// runs it.
#[test]
fn testkit_copy_rows_table() {
    let Some(be) = backend() else { return };
    let r = tk::copy_rows::check_copy_rows_with(
        &|p, src, dst| kiln_cuda::harness::copy_rows_host(&be, p, src, dst),
        &Options::default(),
    );
    println!("{r}");
    r.into_result().unwrap();
}

/// Ids the host did not check: rows of out-of-range ids come back NaN, the
/// others as the reference; nothing outside the output is written.
#[test]
fn embedding_out_of_range_ids_give_nan_rows() {
    let Some(be) = backend() else { return };
    let mut rng = case_rng(kiln_testkit::test_seed(), "embedding-bad-ids", 0);
    // MLX: 2-bit codes in groups of 32 with f16 scales (a variant module).
    // Q5_0, Q4_K, Q6_K: the decode_kq.cuh kernels (8 values a thread).
    let mlx = tk::matmul_mlx::mlx_cover()[0];
    let dtypes = [
        DType::F32,
        DType::Q4_1,
        DType::Q8_0,
        DType::Q5_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::Q8_K,
        mlx,
    ];
    for dtype in dtypes {
        let p = EmbeddingParams {
            n_vocab: 5,
            dim: 512,
            dtype,
        };
        let table = rand_rows(&mut rng, dtype, p.n_vocab, p.dim);
        let ids = [0u32, 5, 4, u32::MAX, 2];
        let t = up(&be, &table, 0).unwrap();
        let i = up(&be, &ids, 0).unwrap();
        let mut out = vec![0.0f32; ids.len() * p.dim];
        f32_guarded(&be, &mut out, 0, |o| {
            embedding::embedding(&be, &p, &t.view(), &i.view(), ids.len(), o)
        })
        .unwrap();
        for (row, (&id, got)) in ids.iter().zip(out.chunks(p.dim)).enumerate() {
            if id as usize >= p.n_vocab {
                assert!(
                    got.iter().all(|v| v.is_nan()),
                    "{dtype} row {row} (id {id}) not NaN"
                );
            } else {
                let mut want = vec![0.0f32; p.dim];
                embedding_ref(&p, &table, &[id], &mut want).unwrap();
                compare("row", got, &want, Tol::EXACT)
                    .unwrap_or_else(|e| panic!("{dtype} row {row}: {e}"));
            }
        }
    }
}

#[test]
fn embedding_rejects_misaligned_tables_and_bad_lengths() {
    let Some(be) = backend() else { return };
    let p = EmbeddingParams {
        n_vocab: 2,
        dim: 32,
        dtype: DType::Q8_0,
    };
    let rb = p.row_bytes().unwrap();
    let bytes = vec![0u8; 2 * rb + 1];
    let t = be.upload(&bytes).unwrap();
    let ids = be.upload(&[0u32, 1]).unwrap();
    let mut out = be.alloc_zeros::<f32>(64).unwrap();
    let e = embedding::embedding(
        &be,
        &p,
        &t.slice(1..1 + 2 * rb),
        &ids.slice(..),
        2,
        &mut out.slice_mut(..),
    )
    .unwrap_err();
    assert!(e.to_string().contains("aligned"), "{e}");
    let e = embedding::embedding(
        &be,
        &p,
        &t.slice(..2 * rb),
        &ids.slice(..),
        1,
        &mut out.slice_mut(..32),
    )
    .unwrap_err();
    assert!(e.to_string().contains("ids"), "{e}");
    let e = embedding::embedding(
        &be,
        &p,
        &t.slice(..2 * rb),
        &ids.slice(..),
        2,
        &mut out.slice_mut(..63),
    )
    .unwrap_err();
    assert!(e.to_string().contains("out"), "{e}");
    embedding::embedding(
        &be,
        &p,
        &t.slice(..2 * rb),
        &ids.slice(..),
        2,
        &mut out.slice_mut(..),
    )
    .unwrap();
    // Formats whose decoders load 32-bit words (block sizes a multiple of 4
    // bytes) want a 4-byte aligned table; the 16-bit ones 2 bytes.
    let mut out = be.alloc_zeros::<f32>(2 * 256).unwrap();
    for (dtype, align) in [(DType::Q4_K, 4), (DType::Q8_K, 4), (DType::Q6_K, 2)] {
        let p = EmbeddingParams {
            n_vocab: 2,
            dim: 256,
            dtype,
        };
        let rb = p.row_bytes().unwrap();
        let t = be.upload(&vec![0u8; 2 * rb + 4]).unwrap();
        let r = embedding::embedding(
            &be,
            &p,
            &t.slice(2..2 + 2 * rb),
            &ids.slice(..),
            2,
            &mut out.slice_mut(..),
        );
        if align == 4 {
            let e = r.unwrap_err();
            assert!(e.to_string().contains("aligned"), "{dtype}: {e}");
        } else {
            r.unwrap_or_else(|e| panic!("{dtype} at 2 bytes: {e}"));
        }
    }
}

#[test]
fn argmax_without_finite_values() {
    let Some(be) = backend() else { return };
    let x = be
        .upload(&[
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::NAN,
        ])
        .unwrap();
    let mut idx = [0u32];
    guarded(&be, &mut idx, SENTINEL_U32, 0, |o| {
        argmax::argmax(&be, &x.slice(..), o)
    })
    .unwrap();
    assert_eq!(idx[0], argmax::NO_FINITE);
    let e = argmax::argmax_host(&be, &x.slice(..)).unwrap_err();
    assert!(e.to_string().contains("no finite value among 5"), "{e}");
    let empty = be.upload(&[0.0f32]).unwrap();
    assert!(argmax::argmax_host(&be, &empty.slice(0..0)).is_err());
}
