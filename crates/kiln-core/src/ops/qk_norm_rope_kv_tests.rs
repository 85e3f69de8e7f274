//! The reference against the composition it is defined as (norm_rope_ref on
//! q and k, copy_rows_ref_kv into the caches), built here by hand from the
//! strided `[q | k | v]` rows, and its validation.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::ops::rope::{RopeMode, RopeParams};
use crate::KvType;

fn params(n_tokens: usize, mode: RopeMode) -> QkNormRopeKvParams {
    QkNormRopeKvParams {
        q: NormRopeParams {
            rope: RopeParams {
                n_tokens,
                n_heads: 3,
                head_dim: 8,
                n_rot: 6,
                freq_base: 10000.0,
                freq_scale: 1.0,
                mode,
            },
            eps: 1e-6,
        },
        n_heads_kv: 1,
        dst_row: 2,
        dst_ring: None,
    }
}

fn vals(n: usize, mul: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * mul) % 17) as f32 * 0.37 - 3.0)
        .collect()
}

/// Every cache type, plain and ring, both modes, with and without factors:
/// the same values as the hand-made composition, and the cache rows
/// outside the append keep their contents.
#[test]
fn is_the_composition_of_the_references() {
    // 2 tokens; q_dim 24, kv_dim 8: rows of 40.
    for mode in [RopeMode::Normal, RopeMode::Neox] {
        for (ring, dst_row, rows) in [(None, 2, 5), (Some(3), 5, 3)] {
            for kv in KvType::ALL {
                for f in [None, Some(&[1.0f32, 2.0, 8.0][..])] {
                    let p = QkNormRopeKvParams {
                        dst_row,
                        dst_ring: ring,
                        ..params(2, mode)
                    };
                    let qkv = vals(80, 7);
                    let (qn, kn) = (vals(8, 3), vals(8, 5));
                    let pos = [7, 100_000];
                    // The hand-made composition.
                    let q: Vec<f32> = [&qkv[0..24], &qkv[40..64]].concat();
                    let k: Vec<f32> = [&qkv[24..32], &qkv[64..72]].concat();
                    let v: Vec<f32> = [&qkv[32..40], &qkv[72..80]].concat();
                    let mut want_q = vec![0.0; 48];
                    norm_rope_ref(&p.q, &q, &qn, f, &pos, &mut want_q).unwrap();
                    let mut kr = vec![0.0; 16];
                    norm_rope_ref(&p.k(), &k, &kn, f, &pos, &mut kr).unwrap();
                    let a = CopyRowsParams {
                        row_len: 8,
                        n_rows: 2,
                        src_row: 0,
                        dst_row,
                        dst_ring: ring,
                    };
                    let init: Vec<u16> = (0..rows * 8).map(|i| 0x1000 + i as u16).collect();
                    let initf: Vec<f32> = (0..rows * 8).map(|i| -(i as f32)).collect();
                    let caches = || match kv {
                        KvType::F32 => (Cache::F32(initf.clone()), Cache::F32(initf.clone())),
                        _ => (Cache::U16(kv, init.clone()), Cache::U16(kv, init.clone())),
                    };
                    let (mut wk, mut wv) = caches();
                    copy_rows_ref_kv(&a, &kr, wk.slice()).unwrap();
                    copy_rows_ref_kv(&a, &v, wv.slice()).unwrap();
                    let (mut gk, mut gv) = caches();
                    let mut got_q = vec![f32::NAN; 48];
                    let io = QkNormRopeKvIo {
                        qkv: &qkv,
                        q_norm: &qn,
                        k_norm: &kn,
                        factors: f,
                        positions: &pos,
                        q_out: &mut got_q,
                        k_cache: gk.slice(),
                        v_cache: gv.slice(),
                    };
                    qk_norm_rope_kv_ref(&p, io).unwrap();
                    assert_eq!(got_q, want_q);
                    assert_eq!(gk, wk, "{mode:?} {ring:?} {kv}");
                    assert_eq!(gv, wv, "{mode:?} {ring:?} {kv}");
                    // Some rows kept their initial contents.
                    assert_ne!(gk, caches().0);
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Cache {
    F32(Vec<f32>),
    U16(KvType, Vec<u16>),
}

impl Cache {
    fn slice(&mut self) -> KvSliceMut<'_> {
        match self {
            Cache::F32(v) => KvSliceMut::F32(v),
            Cache::U16(KvType::F16, v) => KvSliceMut::F16(v),
            Cache::U16(_, v) => KvSliceMut::BF16(v),
        }
    }
}

#[test]
fn at_takes_the_row_from_the_first_position() {
    let p = QkNormRopeKvParams {
        dst_row: 10,
        ..params(1, RopeMode::Neox)
    };
    assert_eq!(p.at(&[4]).unwrap().dst_row, 4);
    assert_eq!(p.at(&[10]).unwrap().dst_row, 10);
    for bad in [&[11][..], &[-1], &[]] {
        let e = p.at(bad).unwrap_err().to_string();
        assert!(
            e.starts_with("qk_norm_rope_kv: ") && e.contains("0..=10"),
            "{e}"
        );
    }
}

#[test]
fn validation_names_the_op_and_writes_nothing() {
    let p = params(2, RopeMode::Neox);
    let ok = QkNormRopeKvLens {
        qkv: 80,
        q_norm: 8,
        k_norm: 8,
        positions: 2,
        q_out: 48,
        k_cache: 40,
        v_cache: 40,
    };
    assert!(p.validate(&ok).is_ok());
    let ring = QkNormRopeKvParams {
        dst_ring: Some(2),
        dst_row: 1000,
        ..p
    };
    assert!(ring.validate(&ok).is_ok());
    let odd = QkNormRopeKvParams {
        q: NormRopeParams {
            rope: RopeParams {
                n_rot: 5,
                ..p.q.rope
            },
            ..p.q
        },
        ..p
    };
    let huge = QkNormRopeKvParams {
        n_heads_kv: usize::MAX / 2,
        ..p
    };
    let cases: Vec<(QkNormRopeKvParams, QkNormRopeKvLens, &str)> = vec![
        (odd, ok, "n_rot 5"),
        (
            QkNormRopeKvParams {
                q: NormRopeParams { eps: 0.0, ..p.q },
                ..p
            },
            ok,
            "eps 0",
        ),
        (huge, ok, "overflow"),
        (p, QkNormRopeKvLens { qkv: 79, ..ok }, "qkv has length 79"),
        (p, QkNormRopeKvLens { q_norm: 7, ..ok }, "w has length 7"),
        (p, QkNormRopeKvLens { k_norm: 9, ..ok }, "w has length 9"),
        (p, QkNormRopeKvLens { positions: 1, ..ok }, "positions"),
        (p, QkNormRopeKvLens { q_out: 47, ..ok }, "out has length 47"),
        (
            p,
            QkNormRopeKvLens { k_cache: 31, ..ok },
            "k_cache: destination rows 2..4",
        ),
        (
            p,
            QkNormRopeKvLens { v_cache: 8, ..ok },
            "v_cache: destination",
        ),
        (
            QkNormRopeKvParams {
                dst_ring: Some(1),
                ..p
            },
            ok,
            "k_cache: a ring of 1 rows",
        ),
        (
            QkNormRopeKvParams {
                dst_ring: Some(6),
                ..p
            },
            ok,
            "k_cache: a ring of 6 rows",
        ),
    ];
    for (bad, l, what) in cases {
        let e = bad.validate(&l).unwrap_err().to_string();
        assert!(
            e.starts_with("qk_norm_rope_kv: ") && e.contains(what),
            "{what}: {e}"
        );
    }
    let e = check_qk_factors(&p, Some(&[1.0, f32::NAN, 1.0]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("qk_norm_rope_kv: ") && e.contains("factor 1"),
        "{e}"
    );
    // A rejected call leaves every output alone.
    let (qkv, w) = (vals(80, 7), [1.0f32; 8]);
    let mut q_out = [7.0f32; 48];
    let (mut kc, mut vc) = ([7u16; 40], [7u16; 40]);
    let io = QkNormRopeKvIo {
        qkv: &qkv,
        q_norm: &w,
        k_norm: &w,
        factors: Some(&[1.0, 0.0, 1.0]),
        positions: &[0, 1],
        q_out: &mut q_out,
        k_cache: KvSliceMut::F16(&mut kc),
        v_cache: KvSliceMut::BF16(&mut vc),
    };
    assert!(qk_norm_rope_kv_ref(&p, io).is_err());
    assert_eq!(q_out, [7.0; 48]);
    assert_eq!((kc, vc), ([7; 40], [7; 40]));
}
