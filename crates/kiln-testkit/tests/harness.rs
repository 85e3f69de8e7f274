//! The harness checks itself: every driver passes with the kiln-core
//! reference as the implementation, and catches deliberately broken ones
//! (wrong math, unwritten output, out-of-bounds writes, missing validation).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops as k;
use kiln_testkit::cases as tk;
use kiln_testkit::{check_all, AllOps, Options, Report};

fn quick() -> Options {
    Options {
        quick: true,
        ..Options::default()
    }
}

fn assert_all_fail(r: &Report, what: &str) {
    let runs = r
        .results
        .iter()
        .filter(|c| !c.case.starts_with("rejects"))
        .collect::<Vec<_>>();
    let passed: Vec<_> = runs
        .iter()
        .filter(|c| c.outcome.is_ok())
        .map(|c| c.case.clone())
        .collect();
    // Empty outputs cannot show a wrong value; everything else must fail.
    assert!(
        passed
            .iter()
            .all(|c| c.contains("n=0") || c.contains("rows=0") || c.contains("ids=0")),
        "{what}: broken impl passed {passed:?}"
    );
}

/// The qk_norm_rope_kv reference under both row sources (the
/// device-position one: validated with the largest row, then at
/// `positions[0]`).
fn qk_ref(
    rows: tk::qk_norm_rope_kv::Rows,
    p: &k::qk_norm_rope_kv::QkNormRopeKvParams,
    io: k::qk_norm_rope_kv::QkNormRopeKvIo<'_>,
) -> kiln_core::Result<()> {
    match rows {
        tk::qk_norm_rope_kv::Rows::Params => k::qk_norm_rope_kv::qk_norm_rope_kv_ref(p, io),
        tk::qk_norm_rope_kv::Rows::FirstPosition => {
            p.validate(&io.lens())?;
            k::qk_norm_rope_kv::qk_norm_rope_kv_ref(&p.at(io.positions)?, io)
        }
    }
}

/// Broken qk_norm_rope_kv implementations fail every case: cache rows one
/// off, k normed with q's weight, the device-position variant using
/// `dst_row`.
#[test]
fn qk_norm_rope_kv_catches_broken_impls() {
    use k::qk_norm_rope_kv::{qk_norm_rope_kv_ref, QkNormRopeKvIo, QkNormRopeKvParams};
    use tk::qk_norm_rope_kv::{check_qk_norm_rope_kv_with, Rows};
    let one_off = |rows: Rows, p: &QkNormRopeKvParams, io: QkNormRopeKvIo<'_>| {
        let q = match rows {
            Rows::Params => *p,
            Rows::FirstPosition => p.at(io.positions)?,
        };
        // Rows one later (a plain cache's last row then fails validation:
        // an error, which fails the case too).
        qk_norm_rope_kv_ref(
            &QkNormRopeKvParams {
                dst_row: q.dst_row + 1,
                ..q
            },
            io,
        )
    };
    assert_all_fail(
        &check_qk_norm_rope_kv_with(&one_off, &quick()),
        "one row off",
    );
    let k_with_q_norm = |rows: Rows, p: &QkNormRopeKvParams, io: QkNormRopeKvIo<'_>| {
        let q = match rows {
            Rows::Params => *p,
            Rows::FirstPosition => p.at(io.positions)?,
        };
        qk_norm_rope_kv_ref(
            &q,
            QkNormRopeKvIo {
                k_norm: io.q_norm,
                ..io
            },
        )
    };
    assert_all_fail(
        &check_qk_norm_rope_kv_with(&k_with_q_norm, &quick()),
        "k_norm ignored",
    );
    let ignores_position =
        |_: Rows, p: &QkNormRopeKvParams, io: QkNormRopeKvIo<'_>| qk_norm_rope_kv_ref(p, io);
    let r = check_qk_norm_rope_kv_with(&ignores_position, &quick());
    // Every device-position case fails but those whose row is the largest
    // allowed (a plain cache's last batch: dst_row is then right).
    for cs in tk::qk_norm_rope_kv::CASES {
        let last = !cs.ring && cs.dst_row == cs.cache_rows - cs.n_tokens;
        let name = format!("{cs:?}");
        let at = r
            .results
            .iter()
            .filter(|c| c.case.contains("FirstPosition") && c.case.ends_with(&name));
        let mut n = 0;
        for c in at {
            n += 1;
            assert_eq!(c.outcome.is_ok(), last, "device row ignored: {}", c.case);
        }
        assert_eq!(n, 6, "{name}");
    }
}

#[test]
fn references_pass_every_driver() {
    let imps = AllOps {
        add: &k::add::add_ref,
        add_rows: &k::add_rows::add_rows_ref,
        argmax: &k::argmax::argmax_ref,
        attention: &k::attention::attention_ref_kv,
        copy_rows: &k::copy_rows::copy_rows_ref_kv,
        cast: &k::cast::cast_ref,
        embedding: &k::embedding::embedding_ref,
        gelu_mul: &k::gelu_mul::gelu_mul_ref,
        l2_norm: &k::l2_norm::l2_norm_ref,
        layer_norm: &k::layer_norm::layer_norm_ref,
        matmul: &k::matmul::matmul_ref,
        matmul_id: &k::matmul_id::matmul_id_ref,
        matmul_id_swiglu: &k::matmul_id::matmul_id_swiglu_ref,
        moe_combine: &k::moe_combine::moe_combine_ref,
        moe_route: &k::moe_route::moe_route_ref,
        mul: &k::mul::mul_ref,
        norm_rope: &k::norm_rope::norm_rope_ref,
        qk_norm_rope_kv: &qk_ref,
        rms_norm: &k::rms_norm::rms_norm_ref,
        rope: &k::rope::rope_ref,
        rope_factors: &|p, f, pos, x| k::rope::rope_ref_with_factors(p, Some(f), pos, x),
        rope_multi: &k::rope_multi::rope_multi_ref,
        rope_multi_bf16: &k::rope_multi::rope_multi_ref_bf16,
        sample: &k::sample::sample_ref_full,
        scale: &k::scale::scale_ref,
        sigmoid_mul: &k::sigmoid_mul::sigmoid_mul_ref,
        silu_mul: &k::silu_mul::silu_mul_ref,
        softcap: &k::softcap::softcap_ref,
        softmax: &k::softmax::softmax_ref,
    };
    let r = check_all(&imps, &quick());
    println!("{r}");
    assert!(r.passed() > 150, "{}", r.summary());
    assert!(r.skipped > 0);
    r.into_result().unwrap();
}

#[test]
fn catches_wrong_math() {
    let r = tk::add::check_add_with(
        &|p, a, b, out| {
            k::add::add_ref(p, a, b, out)?;
            if let Some(o) = out.last_mut() {
                *o += 1e-3;
            }
            Ok(())
        },
        &quick(),
    );
    assert_all_fail(&r, "add off by 1e-3 at the end");
    let text = r.to_string();
    assert!(
        text.contains("FAIL") && text.contains("KILN_TEST_SEED="),
        "{text}"
    );

    // rope with the pair layout of the other mode.
    let r = tk::rope::check_rope_with(
        &|p, pos, x| {
            let other = match p.mode {
                kiln_core::ops::rope::RopeMode::Normal => kiln_core::ops::rope::RopeMode::Neox,
                kiln_core::ops::rope::RopeMode::Neox => kiln_core::ops::rope::RopeMode::Normal,
            };
            k::rope::rope_ref(
                &kiln_core::ops::rope::RopeParams { mode: other, ..*p },
                pos,
                x,
            )
        },
        &quick(),
    );
    let failed: Vec<_> = r.failures().map(|c| c.case.clone()).collect();
    // Only cases with at least 2 pairs (n_rot >= 4) and a non-zero position can tell.
    assert!(failed.len() >= 14, "{failed:?}");

    // rope that ignores its frequency factors: every rotating case fails
    // (no case has all factors 1), and the reject cases catch the missing check.
    let r =
        tk::rope::check_rope_factors_with(&|p, _f, pos, x| k::rope::rope_ref(p, pos, x), &quick());
    assert_eq!(r.passed(), 0, "{r}");

    // attention mapping heads to kv heads round-robin instead of grouped.
    let r = tk::attention::check_attention_with(
        &|p, q, k, v, out| {
            let d = p.head_dim;
            for h in 0..p.n_heads {
                let kvh = h % p.n_kv_heads;
                let one = kiln_core::ops::attention::AttentionParams {
                    n_heads: 1,
                    n_kv_heads: 1,
                    ..*p
                };
                let sel = |src: &[f32]| -> Vec<f32> {
                    src.chunks(d)
                        .skip(kvh)
                        .step_by(p.n_kv_heads)
                        .flatten()
                        .copied()
                        .collect()
                };
                let qh: Vec<f32> = q
                    .chunks(d)
                    .skip(h)
                    .step_by(p.n_heads)
                    .flatten()
                    .copied()
                    .collect();
                let mut oh = vec![0.0; qh.len()];
                k::attention::attention_ref(
                    &one,
                    &qh,
                    &sel(&k.to_f32()),
                    &sel(&v.to_f32()),
                    &mut oh,
                )?;
                for (t, row) in oh.chunks(d).enumerate() {
                    out[(t * p.n_heads + h) * d..][..d].copy_from_slice(row);
                }
            }
            Ok(())
        },
        &quick(),
    );
    let failed: Vec<_> = r.failures().map(|c| c.case.clone()).collect();
    assert!(failed.iter().any(|c| c.contains("heads=9/3")), "{failed:?}");
    assert!(
        failed.iter().all(|c| !c.contains("heads=6/6")),
        "MHA cannot tell: {failed:?}"
    );
}

#[test]
fn catches_unwritten_and_out_of_bounds() {
    let r = tk::silu_mul::check_silu_mul_with(
        &|p, g, u, out| {
            p.validate(g.len(), u.len(), out.len())?;
            let n = out.len();
            k::silu_mul::silu_mul_ref(
                &kiln_core::ops::silu_mul::SiluMulParams { n: n / 2 },
                &g[..n / 2],
                &u[..n / 2],
                &mut out[..n / 2],
            )
        },
        &quick(),
    );
    assert!(r.failures().any(|c| c
        .outcome
        .as_ref()
        .unwrap_err()
        .contains("NaN where the reference is not")));

    // Writing past the end is impossible through a slice, so simulate a
    // kernel overrun with raw pointers (like an FFI/GPU copy would).
    let r = tk::softmax::check_softmax_with(
        &|p, x, out| {
            k::softmax::softmax_ref(p, x, out)?;
            // SAFETY: test only — deliberately writes one element past `out`,
            // which Guarded backs with its guard zone.
            unsafe { *out.as_mut_ptr().add(out.len()) = 0.0 };
            Ok(())
        },
        &quick(),
    );
    assert!(r.failures().any(|c| c
        .outcome
        .as_ref()
        .unwrap_err()
        .contains("guard zone overwritten")));
}

#[test]
fn catches_missing_validation() {
    let r = tk::rms_norm::check_rms_norm_with(
        &|p, x, w, out| {
            // "Validates" nothing and writes before failing.
            out.fill(0.0);
            k::rms_norm::rms_norm_ref(p, x, w, out)
        },
        &quick(),
    );
    let failed: Vec<_> = r.failures().map(|c| c.case.clone()).collect();
    assert!(
        failed.iter().any(|c| c.starts_with("rejects")),
        "{failed:?}"
    );
    let r = tk::argmax::check_argmax_with(&|x| Ok(x.len() as u32 / 2), &quick());
    assert!(r.failures().any(|c| c.case == "rejects empty input"));
    assert!(r.failed() > 30);
}

#[test]
fn add_rows_driver_catches_a_wrong_bias_column_and_a_missed_row() {
    // Bias read one column off (wrapping): every non-empty case with dim > 1 fails.
    let r = tk::add_rows::check_add_rows_with(
        &|p, x, b| {
            p.validate(x.len(), b.len())?;
            for row in x.chunks_exact_mut(p.dim.max(1)) {
                for (c, v) in row.iter_mut().enumerate() {
                    *v += b[(c + 1) % p.dim];
                }
            }
            Ok(())
        },
        &quick(),
    );
    let passed: Vec<_> = r
        .results
        .iter()
        .filter(|c| c.outcome.is_ok() && !c.case.starts_with("rejects"))
        .map(|c| c.case.clone())
        .collect();
    assert_eq!(
        passed,
        ["rows=0 dim=5", "rows=3 dim=0", "rows=1 dim=1"],
        "{r}"
    );
    // The last row left alone: every case with rows > 0 and dim > 0 fails.
    let r = tk::add_rows::check_add_rows_with(
        &|p, x, b| {
            p.validate(x.len(), b.len())?;
            let n = p.rows.saturating_sub(1) * p.dim;
            k::add_rows::add_rows_ref(
                &k::add_rows::AddRowsParams {
                    rows: p.rows.saturating_sub(1),
                    dim: p.dim,
                },
                &mut x[..n],
                b,
            )
        },
        &quick(),
    );
    assert_eq!(r.failed(), r.results.len() - 3 - 2, "{r}");
}

#[test]
fn panics_are_reported_not_propagated() {
    let r = tk::embedding::check_embedding_with(&|_, _, _, _| panic!("boom"), &quick());
    assert_eq!(r.passed(), 0);
    assert!(r
        .failures()
        .all(|c| c.outcome.as_ref().unwrap_err().contains("boom")));
}

#[test]
fn matvec_fused_driver_passes_the_reference_and_catches_bugs() {
    use kiln_core::ops::matvec_fused::{
        matvec_fused_ref, FusedEpilogue, FusedRefIo, MatvecFusedParams,
    };
    let r = tk::matvec_fused::check_matvec_fused_with(&matvec_fused_ref, &quick());
    eprintln!("{}", r.summary());
    r.into_result().unwrap();
    // 5% (+1e-2) off on every output: must fail. The worst-case bounds sit
    // near 0.1% of plain outputs for k = 576, but a SwiGLU output's bound
    // carries |up| times its gate's bound, which for k = 2560 quantized rows
    // reaches ~1%: a 1% nudge passed whole SwiGLU cases in about one run in
    // three (measured 2 of 6); 5% failed as required in 40 of 40 runs.
    let nudged = |p: &MatvecFusedParams, io: FusedRefIo<'_>| {
        let out_ptr = io.out.as_ptr() as usize;
        let len = io.out.len();
        matvec_fused_ref(p, io)?;
        // SAFETY: test-only: re-borrow of the output the reference just wrote.
        let out = unsafe { std::slice::from_raw_parts_mut(out_ptr as *mut f32, len) };
        for v in out {
            *v = *v * 1.05 + 1e-2;
        }
        Ok(())
    };
    let r = tk::matvec_fused::check_matvec_fused_with(&nudged, &quick());
    // A single SwiGLU output near zero (silu(g) ~ 0 with a large up value)
    // may legitimately sit inside its bound (|u| times the error of g):
    // require all but those few to fail.
    let runs: Vec<_> = r
        .results
        .iter()
        .filter(|c| !c.case.starts_with("rejects"))
        .collect();
    let passed: Vec<_> = runs
        .iter()
        .filter(|c| c.outcome.is_ok())
        .map(|c| &c.case)
        .collect();
    assert!(
        passed
            .iter()
            .all(|c| c.contains("n=2 ") && c.contains("SwiGlu"))
            && passed.len() * 10 < runs.len(),
        "nudged matvec_fused passed {passed:?}"
    );
    // Forgetting the rotation of k (q still rotated) must fail the QKV cases.
    let no_k_rope = |p: &MatvecFusedParams, io: FusedRefIo<'_>| {
        let FusedEpilogue::Qkv(mut q) = p.epilogue else {
            return matvec_fused_ref(p, io);
        };
        q.freq_scale = 0.0; // theta = 0 everywhere: no rotation at all
        matvec_fused_ref(
            &MatvecFusedParams {
                epilogue: FusedEpilogue::Qkv(q),
                ..*p
            },
            io,
        )
    };
    let r = tk::matvec_fused::check_matvec_fused_with(&no_k_rope, &quick());
    assert!(
        r.results
            .iter()
            .filter(|c| c.case.contains("Qkv"))
            .all(|c| c.outcome.is_err()),
        "unrotated qkv passed"
    );
}

#[test]
fn catches_the_wrong_gelu_mode() {
    use kiln_core::ops::gelu_mul::{GeluMode, GeluMulParams};
    let r = tk::gelu_mul::check_gelu_mul_with(
        &|p, g, u, out| {
            let other = match p.mode {
                GeluMode::Tanh => GeluMode::Erf,
                GeluMode::Erf => GeluMode::Tanh,
            };
            k::gelu_mul::gelu_mul_ref(
                &GeluMulParams {
                    n: p.n,
                    mode: other,
                },
                g,
                u,
                out,
            )
        },
        &quick(),
    );
    let failed: Vec<_> = r.failures().map(|c| c.case.clone()).collect();
    for mode in ["Tanh", "Erf"] {
        assert!(
            failed
                .iter()
                .any(|c| c.starts_with(mode) && c.contains("n=257")),
            "{mode}: {failed:?}"
        );
    }
    // Near 0 the two forms agree to ~1e-9: that case cannot tell them apart.
    assert!(failed.iter().all(|c| !c.contains("-0.01")), "{failed:?}");
}

/// The MLX matmul table's f16-operand bound (`Options::matmul_f16_from_m`):
/// an implementation that rounds weights and activations to f16 from
/// m = 9 on (as CUDA's prefill GEMM does) passes with the option and fails
/// the f32-activation bound of those cases without it; the mat-vec cases
/// (exact f32 here) pass either way.
#[test]
fn mlx_table_bounds_f16_prefill_operands_only_when_told() {
    use half::f16;
    use kiln_core::ops::matmul::MatmulParams;
    use kiln_core::quant::dequantize_row;
    let f16_from_9 = |p: &MatmulParams, w: &[u8], x: &[f32], out: &mut [f32]| {
        if p.m < 9 {
            return k::matmul::matmul_ref(p, w, x, out);
        }
        p.validate(w.len(), x.len(), out.len())?;
        let row = p.w_row_bytes()?;
        let r16 = |v: f32| f64::from(f16::from_f32(v).to_f32());
        let mut wf = vec![0.0f32; p.k];
        for j in 0..p.n {
            dequantize_row(p.wtype, &w[j * row..(j + 1) * row], &mut wf)?;
            for i in 0..p.m {
                let xi = &x[i * p.k..(i + 1) * p.k];
                let s: f64 = wf.iter().zip(xi).map(|(&a, &b)| r16(a) * r16(b)).sum();
                out[i * p.n + j] = s as f32;
            }
        }
        Ok(())
    };
    let told = Options {
        matmul_f16_from_m: Some(9),
        ..Options::default()
    };
    let r = tk::matmul_mlx::check_matmul_mlx_with(&f16_from_9, &told);
    assert_eq!(r.failed(), 0, "{}", r.summary());
    let r = tk::matmul_mlx::check_matmul_mlx_with(&f16_from_9, &Options::default());
    let failed: Vec<_> = r.results.iter().filter(|c| c.outcome.is_err()).collect();
    assert!(!failed.is_empty(), "f16 operands passed the f32 bound");
    for c in &failed {
        let m: usize = c
            .case
            .split(" m=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(m >= 9, "{}: a mat-vec case failed", c.case);
    }
    eprintln!(
        "{} of {} f16 prefill cases over the f32 bound",
        failed.len(),
        r.results.len()
    );
}

#[test]
fn sample_driver_catches_common_mistakes() {
    use kiln_core::ops::sample::{penalize, sample_ref_full as sample_ref, SampleParams, NO_TOKEN};
    let failed = |r: &Report| -> Vec<String> { r.failures().map(|c| c.case.clone()).collect() };

    // Walking the ids from the top end (u mirrored): most stochastic cases.
    let r = tk::sample::check_sample_with(
        &|p, x, ids, u| sample_ref(p, x, ids, (1.0 - u - f64::EPSILON).max(0.0)),
        &quick(),
    );
    assert!(r.failed() > 100, "{}", r.summary());

    // The penalty applied once per occurrence instead of per distinct id.
    let r = tk::sample::check_sample_with(
        &|p, x, ids, u| {
            let mut y = x.to_vec();
            if p.penalizes() {
                for &i in ids {
                    if let Some(v) = y.get_mut(i as usize) {
                        *v = penalize(*v, p.repeat_penalty);
                    }
                }
            }
            let q = SampleParams {
                n_penalty_ids: 0,
                ..*p
            };
            p.validate_call(x.len(), ids.len(), u)?;
            sample_ref(&q, &y, &[], u)
        },
        &quick(),
    );
    let f = failed(&r);
    assert!(
        !f.is_empty() && f.iter().all(|c| c.contains("penalty")),
        "{f:?}"
    );

    // Token 0 instead of the sentinel when nothing is usable.
    let r = tk::sample::check_sample_with(
        &|p, x, ids, u| {
            let mut r = sample_ref(p, x, ids, u)?;
            if r.id == NO_TOKEN {
                r.id = 0;
            }
            Ok(r)
        },
        &quick(),
    );
    let f = failed(&r);
    // Every NoneUsable case, and short NonFinite rows that drew no usable value.
    assert_eq!(
        f.iter().filter(|c| c.contains("NoneUsable")).count(),
        64,
        "{f:?}"
    );
    assert!(
        f.iter()
            .all(|c| c.contains("NoneUsable") || c.contains("NonFinite")),
        "{f:?}"
    );

    // No validation of the draw.
    let r = tk::sample::check_sample_with(
        &|p, x, ids, u| sample_ref(p, x, ids, if u.is_nan() { 0.0 } else { u.min(0.5) }),
        &quick(),
    );
    let f = failed(&r);
    assert!(f.iter().any(|c| c == "rejects u = 1"), "{f:?}");
    assert!(f.iter().any(|c| c == "rejects u NaN"), "{f:?}");
}

#[test]
fn norm_rope_driver_catches_bugs() {
    use kiln_core::ops::norm_rope::{norm_rope_ref, NormRopeParams};
    use kiln_core::ops::rope::{RopeMode, RopeParams};
    let failed = |r: &Report| -> Vec<String> { r.failures().map(|c| c.case.clone()).collect() };
    // The other pairing: every case with two or more pairs fails.
    let r = tk::norm_rope::check_norm_rope_with(
        &|p, x, w, f, pos, out| {
            let mode = match p.rope.mode {
                RopeMode::Normal => RopeMode::Neox,
                RopeMode::Neox => RopeMode::Normal,
            };
            let rope = RopeParams { mode, ..p.rope };
            norm_rope_ref(&NormRopeParams { rope, ..*p }, x, w, f, pos, out)
        },
        &quick(),
    );
    let runs = r
        .results
        .iter()
        .filter(|c| !c.case.starts_with("rejects"))
        .count();
    let f = failed(&r);
    let one_pair = |c: &String| c.contains("n_rot=2 ") || c.contains("n_rot=0 ");
    assert_eq!(f.len(), runs - 3 * 2, "{f:?}");
    assert!(f.iter().all(|c| !one_pair(c)), "{f:?}");
    // Ignoring the frequency factors: every case with factors fails.
    let r = tk::norm_rope::check_norm_rope_with(
        &|p, x, w, f, pos, out| {
            if let Some(f) = f {
                k::rope::check_factors(&p.rope, Some(f))?;
            }
            norm_rope_ref(p, x, w, None, pos, out)
        },
        &quick(),
    );
    let f = failed(&r);
    assert!(
        !f.is_empty() && f.iter().all(|c| !c.contains("factors=None")),
        "{f:?}"
    );
    // Quick mode: the big Llama 3.1 prefill is skipped.
    assert_eq!(f.len(), 2 * 6, "{f:?}");
    // The tail dims (>= n_rot) left unnormalized (x * w): the partial cases fail.
    let r = tk::norm_rope::check_norm_rope_with(
        &|p, x, w, f, pos, out| {
            norm_rope_ref(p, x, w, f, pos, out)?;
            let d = p.rope.head_dim;
            for (xr, or) in x.chunks(d).zip(out.chunks_mut(d)) {
                for j in p.rope.n_rot..d {
                    or[j] = xr[j] * w[j];
                }
            }
            Ok(())
        },
        &quick(),
    );
    let f = failed(&r);
    assert_eq!(f.len(), 2 * 4, "{f:?}");
    assert!(
        f.iter()
            .all(|c| c.contains("n_rot=0 ") || c.contains("n_rot=34 ") || c.contains("n_rot=48 ")),
        "{f:?}"
    );
    // eps left out of the mean square: the case where eps dominates fails.
    let r = tk::norm_rope::check_norm_rope_with(
        &|p, x, w, f, pos, out| {
            norm_rope_ref(&NormRopeParams { eps: 1e-30, ..*p }, x, w, f, pos, out)
        },
        &quick(),
    );
    assert!(failed(&r).iter().any(|c| c.contains("|x|<0.001")), "{r}");
    // The two unfused references, one after the other: rope's checks come
    // after the norm wrote `out`, which the reject cases catch.
    let unfused = |p: &NormRopeParams,
                   x: &[f32],
                   w: &[f32],
                   f: Option<&[f32]>,
                   pos: &[i32],
                   out: &mut [f32]| {
        k::rms_norm::rms_norm_ref(&p.norm(), x, w, out)?;
        k::rope::rope_ref_with_factors(&p.rope, f, pos, out)
    };
    let r = tk::norm_rope::check_norm_rope_with(&unfused, &quick());
    let f = failed(&r);
    assert!(
        f.len() >= 5 && f.iter().all(|c| c.starts_with("rejects")),
        "{f:?}"
    );
    // With rope's checks first, only eps 0 gets through: rms_norm accepts
    // it, the fused op's stricter check is what the case holds a backend to.
    let r = tk::norm_rope::check_norm_rope_with(
        &|p, x, w, f, pos, out| {
            p.rope.validate(pos.len(), x.len())?;
            k::rope::check_factors(&p.rope, f)?;
            unfused(p, x, w, f, pos, out)
        },
        &quick(),
    );
    assert_eq!(failed(&r), ["rejects eps 0"], "{r}");
}

/// cast implementations that are right for ordinary values but truncate
/// instead of rounding to nearest even, canonicalize NaN (as the GPU's cvt
/// instructions do), flush subnormals, or leave one element unwritten:
/// each is caught by its direction's specials.
#[test]
fn cast_catches_rounding_nan_and_subnormal_mistakes() {
    use kiln_core::ops::cast::{cast_bits, CastDst, CastParams, CastSrc};
    use kiln_core::DType;
    type Elem = dyn Fn(DType, DType, u32) -> u32;
    let run = |f: &Elem| {
        tk::cast::check_cast_with(
            &|p: &CastParams, src: CastSrc<'_>, dst: CastDst<'_>| {
                p.validate_bufs(&src, &dst)?;
                let x: Vec<u32> = match src {
                    CastSrc::F32(v) => v.iter().map(|v| v.to_bits()).collect(),
                    CastSrc::Bits(v) => v.iter().map(|&v| u32::from(v)).collect(),
                };
                match dst {
                    CastDst::F32(o) => o
                        .iter_mut()
                        .zip(&x)
                        .for_each(|(o, &b)| *o = f32::from_bits(f(p.src, p.dst, b))),
                    CastDst::Bits(o) => o
                        .iter_mut()
                        .zip(&x)
                        .for_each(|(o, &b)| *o = f(p.src, p.dst, b) as u16),
                }
                Ok(())
            },
            &quick(),
        )
    };
    let failing = |r: &Report| -> Vec<String> {
        r.failures()
            .filter(|c| c.case.contains("specials") || c.case.contains("patterns"))
            .map(|c| c.case.clone())
            .collect()
    };
    // The reference itself passes.
    run(&cast_bits).into_result().unwrap();
    // f32 -> bf16 by truncation.
    let r = run(&|s, d, b| {
        if (s, d) == (DType::F32, DType::BF16) && !f32::from_bits(b).is_nan() {
            b >> 16
        } else {
            cast_bits(s, d, b)
        }
    });
    assert_eq!(failing(&r), ["F32->BF16 specials"], "{r}");
    // NaN canonicalized in every 16-bit result.
    let r = run(&|s, d, b| {
        let o = cast_bits(s, d, b);
        match d {
            DType::F16 if o & 0x7c00 == 0x7c00 && o & 0x3ff != 0 => 0x7fff,
            DType::BF16 if o & 0x7f80 == 0x7f80 && o & 0x7f != 0 => 0x7fff,
            _ => o,
        }
    });
    assert_eq!(failing(&r).len(), 6, "{r}");
    // f16 subnormal results flushed to zero.
    let r = run(&|s, d, b| {
        let o = cast_bits(s, d, b);
        if d == DType::F16 && s != d && o & 0x7c00 == 0 {
            o & 0x8000
        } else {
            o
        }
    });
    assert_eq!(
        failing(&r),
        ["F32->F16 specials", "BF16->F16 all 65536 patterns"],
        "{r}"
    );
}
