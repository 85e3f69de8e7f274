//! Unit tests of matmul.rs: the kernel table and the plan selection.
#![allow(clippy::panic, clippy::unwrap_used)]
use super::*;

fn p(m: usize, wtype: DType) -> MatmulParams {
    MatmulParams {
        m,
        n: 7,
        k: 64,
        wtype,
    }
}

/// Every kernel the launcher can ask for has a table slot holding its name.
#[test]
fn kernel_table() {
    let names = Kern::names();
    for t in WTYPES {
        for rows in 1..=MV_MAX_ROWS {
            let i = Kern::MatVec(t, rows).index().unwrap();
            assert_eq!(names[i], format!("mul_mv_{}_f32_m{rows}", wname_of(t)));
        }
        let dq = Kern::DequantF16(t).index();
        if t.is_quantized() {
            assert_eq!(names[dq.unwrap()], format!("dequant_{}_f16", wname_of(t)));
        } else {
            assert!(dq.is_none(), "{t}");
        }
        assert_ne!(wname_of(t), "unsupported");
    }
    assert_eq!(
        names[Kern::ToF32(DType::F16).index().unwrap()],
        "convert_f16_f32"
    );
    assert_eq!(
        names[Kern::ToF32(DType::BF16).index().unwrap()],
        "convert_bf16_f32"
    );
    assert_eq!(names[Kern::F32ToF16.index().unwrap()], "convert_f32_f16");
    assert_eq!(names.len(), WTYPES.len() * MV_MAX_ROWS + N_QUANT + 3);
    assert_eq!(WTYPES.iter().filter(|t| t.is_quantized()).count(), N_QUANT);
    assert!(WTYPES[..N_QUANT].iter().all(|t| t.is_quantized()));
}

#[test]
fn selection() {
    assert_eq!(select_matmul(&p(0, DType::Q4_1)), MatmulKernel::Empty);
    assert_eq!(
        select_matmul(&p(1, DType::Q4_1)),
        MatmulKernel::MatVec { rows: 1, kw: 1 }
    );
    assert_eq!(
        select_matmul(&p(8, DType::F16)),
        MatmulKernel::MatVec { rows: 8, kw: 4 }
    );
    assert_eq!(
        select_matmul(&p(9, DType::Q8_0)),
        MatmulKernel::Gemm {
            operand: GemmOperand::F16
        }
    );
    assert_eq!(
        select_matmul(&p(512, DType::BF16)),
        MatmulKernel::Gemm {
            operand: GemmOperand::F32
        }
    );
    let q = |n, k| MatmulParams {
        m: 1,
        n,
        k,
        wtype: DType::Q4_1,
    };
    let kw = |p: MatmulParams, staged: bool| match select_matmul_for(&p, staged) {
        MatmulKernel::MatVec { kw, .. } => kw,
        other => panic!("{other:?}"),
    };
    // Direct loads: warps split 8-block steps.
    assert_eq!(kw(q(576, 576), false), 2);
    assert_eq!(kw(q(576, 1536), false), 4);
    assert_eq!(kw(q(49152, 576), false), 1);
    assert_eq!(kw(q(4096, 4096), false), 2);
    // Staged rows (row bytes a multiple of 4): warps split 640-byte chunks.
    assert_eq!(kw(q(576, 576), true), 1);
    assert_eq!(kw(q(576, 1536), true), 2);
    assert_eq!(kw(q(49152, 576), true), 1);
    assert_eq!(kw(q(4096, 4096), true), 2);
    // Rows that cannot be staged (9 Q4_0 blocks = 162 bytes, not a
    // multiple of 4) plan as direct.
    let q0 = MatmulParams {
        wtype: DType::Q4_0,
        ..q(576, 288)
    };
    assert_eq!(kw(q0, true), kw(q0, false));
}

/// MLX formats: supported, planned like the other quantized formats
/// (mat-vec up to 8 rows, f16 GEMM beyond), and their variant's kernel
/// table holds the mat-vecs for 1..=8 rows, then the dequantize.
#[test]
fn mlx_formats() {
    use kiln_core::quant::MlxAffine;
    let dt = MlxAffine::new(3, 64, DType::BF16).unwrap().dtype().unwrap();
    assert!(supports(dt));
    assert_eq!(
        select_matmul(&p(8, dt)),
        MatmulKernel::MatVec { rows: 8, kw: 1 }
    );
    assert_eq!(
        select_matmul(&p(9, dt)),
        MatmulKernel::Gemm {
            operand: GemmOperand::F16
        }
    );
    let names = mlx_kernel_names("q3_g64_bf16");
    assert_eq!(names.len(), MV_MAX_ROWS + 1);
    assert_eq!(names[0], "mul_mv_mlx_q3_g64_bf16_f32_m1");
    assert_eq!(names[MV_MAX_ROWS - 1], "mul_mv_mlx_q3_g64_bf16_f32_m8");
    assert_eq!(names[MV_MAX_ROWS], "dequant_mlx_q3_g64_bf16_f16");
    assert!(!supports(DType::Q8_K) && !supports(DType::Q8_1));
}
