//! kiln::ops::qk_norm_rope_kv (and `_at`) against the sequence of ops it
//! replaces in Qwen3's decode step (qwen3.rs before it: `copy_rows` of k out
//! of the `[q | k | v]` row, `norm_rope` on q and on k, `copy_rows` /
//! `copy_rows_at` of k and v into the caches), bit for bit, on a CPU stream
//! and, where there is one, a CUDA stream (the CUDA kernel shares
//! norm_rope.cu's device code and copy_rows.cu's rounding): f32, f16 and
//! bf16 caches, plain and ring, eager and, on CUDA, recorded once as a graph
//! and replayed at other positions. Cache rows the step does not write
//! keep their contents. The kernels themselves are held to the kiln-core
//! reference by the testkit tables (kiln-cpu's parity_ops, kiln-cuda's
//! parity_cuops).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::ops::{
    self, CopyRowsParams, NormRopeParams, QkNormRopeKvInputs, QkNormRopeKvOutputs,
    QkNormRopeKvParams, RopeMode, RopeParams,
};
use kiln::{Device, Stream, Tensor};
use kiln_core::KvType;
use kiln_testkit::{case_rng, rand_f32, test_seed};

fn streams() -> Vec<Stream> {
    let mut v = vec![Stream::cpu(2).unwrap()];
    match Stream::cuda(0) {
        Ok(s) => v.push(s),
        Err(e) => eprintln!("SKIPPED on CUDA: no CUDA stream ({e})"),
    }
    v
}

fn t(s: &Stream, x: &[f32]) -> Tensor {
    Tensor::from_f32(s, &[1, x.len()], x.to_vec()).unwrap()
}

/// 6 q heads, 2 kv heads of 64 (q_dim a multiple of kv_dim, as the old
/// path's row copy needed).
const HEADS: usize = 6;
const KV_HEADS: usize = 2;
const HD: usize = 64;
const QD: usize = HEADS * HD;
const KVD: usize = KV_HEADS * HD;

struct Step {
    p: QkNormRopeKvParams,
    at: bool,
}

/// One decode token's layer state on a stream.
struct Layer {
    qkv: Tensor,
    qn: Tensor,
    kn: Tensor,
    ff: Option<Tensor>,
    kc: Tensor,
    vc: Tensor,
    q_out: Tensor,
}

impl Layer {
    fn new(s: &Stream, kv: KvType, rows: usize, seed: usize, factors: bool) -> Layer {
        let mut rng = case_rng(test_seed(), "kiln-qk-norm-rope-kv", seed);
        let qkv = rand_f32(&mut rng, QD + 2 * KVD, -3.0, 3.0);
        let (qn, kn) = (
            rand_f32(&mut rng, HD, -2.0, 2.0),
            rand_f32(&mut rng, HD, -2.0, 2.0),
        );
        let ff: Vec<f32> = (0..HD / 2).map(|i| 1.0 + (i % 5) as f32).collect();
        // Caches with earlier rows in them, which the step must keep.
        let fill = rand_f32(&mut rng, rows * KVD, -1.0, 1.0);
        let cache = || {
            let mut c = Tensor::zeros_of(s, kv.dtype(), &[rows, KVD]).unwrap();
            let all = CopyRowsParams {
                row_len: KVD,
                n_rows: rows,
                src_row: 0,
                dst_row: 0,
                dst_ring: None,
            };
            let src = Tensor::from_f32(s, &[rows, KVD], fill.clone()).unwrap();
            ops::copy_rows(s, &all, &src, &mut c).unwrap();
            c
        };
        Layer {
            qkv: t(s, &qkv),
            qn: t(s, &qn),
            kn: t(s, &kn),
            ff: factors.then(|| t(s, &ff)),
            kc: cache(),
            vc: cache(),
            q_out: t(s, &vec![f32::NAN; QD]),
        }
    }

    /// The old sequence (scratch k / o as in qwen3.rs).
    fn unfused(&mut self, s: &Stream, st: &Step, pos: &[i32]) {
        let mut k = t(s, &[0.0; KVD]);
        let mut o = t(s, &[0.0; KVD]);
        let take = |src_row| CopyRowsParams {
            row_len: KVD,
            n_rows: 1,
            src_row,
            dst_row: 0,
            dst_ring: None,
        };
        ops::copy_rows(s, &take(QD / KVD), &self.qkv, &mut k).unwrap();
        let ff = self.ff.as_ref();
        let (pq, pk) = (st.p.q, st.p.k());
        ops::norm_rope(s, &pq, &self.qkv, &self.qn, ff, pos, &mut self.q_out).unwrap();
        ops::norm_rope(s, &pk, &k, &self.kn, ff, pos, &mut o).unwrap();
        let a = |src_row| CopyRowsParams {
            src_row,
            ..st.p.append()
        };
        if st.at {
            ops::copy_rows_at(s, &a(0), pos, &o, &mut self.kc).unwrap();
            ops::copy_rows_at(s, &a((QD + KVD) / KVD), pos, &self.qkv, &mut self.vc).unwrap();
        } else {
            ops::copy_rows(s, &a(0), &o, &mut self.kc).unwrap();
            ops::copy_rows(s, &a((QD + KVD) / KVD), &self.qkv, &mut self.vc).unwrap();
        }
    }

    fn fused(&mut self, s: &Stream, st: &Step, pos: &[i32]) -> kiln::Result<()> {
        let i = QkNormRopeKvInputs {
            qkv: &self.qkv,
            q_norm: &self.qn,
            k_norm: &self.kn,
            factors: self.ff.as_ref(),
            positions: pos,
        };
        let o = QkNormRopeKvOutputs {
            q_out: &mut self.q_out,
            k_cache: &mut self.kc,
            v_cache: &mut self.vc,
        };
        if st.at {
            ops::qk_norm_rope_kv_at(s, &st.p, i, o)
        } else {
            ops::qk_norm_rope_kv(s, &st.p, i, o)
        }
    }

    /// q_out, k cache, v cache as f32 bits (16-bit caches widened exactly).
    fn bits(&self, s: &Stream) -> [Vec<u32>; 3] {
        let b = |x: &Tensor| -> Vec<u32> {
            x.to_f32_vec(s)
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        [b(&self.q_out), b(&self.kc), b(&self.vc)]
    }
}

fn params(mode: RopeMode, ring: Option<usize>, dst_row: usize) -> QkNormRopeKvParams {
    QkNormRopeKvParams {
        q: NormRopeParams {
            rope: RopeParams {
                n_tokens: 1,
                n_heads: HEADS,
                head_dim: HD,
                n_rot: HD,
                freq_base: 1e6,
                freq_scale: 1.0,
                mode,
            },
            eps: 1e-6,
        },
        n_heads_kv: KV_HEADS,
        dst_row,
        dst_ring: ring,
    }
}

#[test]
fn matches_the_ops_it_replaces_bit_for_bit() {
    let mut case = 0;
    for s in streams() {
        let dev = s.device();
        for kv in KvType::ALL {
            // (cache rows, ring?, position, the largest position for _at)
            for (rows, ring, pos, max) in [
                (20usize, false, 13i32, 19usize),
                (20, false, 0, 19),
                (7, true, 3000, 4095),
            ] {
                for mode in [RopeMode::Normal, RopeMode::Neox] {
                    for at in [false, true] {
                        case += 1;
                        let ring = ring.then_some(rows);
                        let dst = if at { max } else { pos as usize };
                        let st = Step {
                            p: params(mode, ring, dst),
                            at,
                        };
                        let what = format!(
                            "{dev} {kv} rows={rows} ring={ring:?} pos={pos} {mode:?} at={at}"
                        );
                        let factors = case % 3 == 0;
                        let mut old = Layer::new(&s, kv, rows, case, factors);
                        let mut new = Layer::new(&s, kv, rows, case, factors);
                        old.unfused(&s, &st, &[pos]);
                        new.fused(&s, &st, &[pos]).unwrap();
                        let (a, b) = (old.bits(&s), new.bits(&s));
                        for (i, name) in ["q_out", "k_cache", "v_cache"].iter().enumerate() {
                            assert!(a[i] == b[i], "{what}: {name} differs");
                        }
                    }
                }
            }
        }
        // A CUDA graph recorded once at one position replays at others as
        // the eager ops give.
        if dev != Device::Cpu {
            graph_replays(&s);
        }
        // Typed errors naming the op.
        let st = Step {
            p: params(RopeMode::Neox, None, 10),
            at: true,
        };
        let mut l = Layer::new(&s, KvType::F32, 20, 0, false);
        let e = l.fused(&s, &st, &[11]).unwrap_err().to_string();
        assert!(
            e.contains("qk_norm_rope_kv") && e.contains("0..=10"),
            "{dev}: {e}"
        );
        let st = Step {
            p: params(RopeMode::Neox, None, 20),
            at: false,
        };
        let e = l.fused(&s, &st, &[20]).unwrap_err().to_string();
        assert!(
            e.contains("qk_norm_rope_kv") && e.contains("k_cache"),
            "{dev}: {e}"
        );
    }
}

fn graph_replays(s: &Stream) {
    for kv in [KvType::F32, KvType::BF16] {
        for ring in [None, Some(7)] {
            let rows = 20;
            let max = if ring.is_some() { 4095 } else { rows - 1 };
            let st = Step {
                p: params(RopeMode::Neox, ring.map(|_| rows), max),
                at: true,
            };
            let mut g = Layer::new(s, kv, rows, 99, true);
            let mut e = Layer::new(s, kv, rows, 99, true);
            s.stage_inputs(&[0], &[5]).unwrap();
            let graph = s
                .capture(|| -> kiln::Result<()> { g.fused(s, &st, &[5]) })
                .unwrap();
            for pos in [5i32, 6, 19, if ring.is_some() { 3001 } else { 0 }] {
                s.stage_inputs(&[0], &[pos]).unwrap();
                graph.launch().unwrap();
                e.fused(s, &st, &[pos]).unwrap();
                assert!(
                    g.bits(s) == e.bits(s),
                    "{kv} ring={ring:?}: graph replay at {pos} differs from eager"
                );
            }
        }
    }
}
