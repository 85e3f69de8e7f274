//! GPU parity of the device-position variants used by CUDA-graph decode
//! (`copy_rows::copy_rows_at`, `attention::attention_at`) against the
//! kiln-core references at the position the device buffer holds, and the
//! same launches recorded once as a CUDA graph and replayed at several
//! positions (the position staged with a copy before each replay), with
//! f32, f16 and bf16 caches (16-bit appends round to nearest even, and the
//! reference attends over the stored values); each also with ring caches
//! (a sliding window, position `p` in row `p % rows`: appends that wrap,
//! attention many laps in, a recorded step replayed over three laps).
//! attention_at runs the launcher's choice and, forced
//! (`attention_at_with_kernel`), both decode kernels: the lane-group one
//! where it has the head dim and the warp decode one (`KILN_ATTN_DEC=old`);
//! the recorded step replays each.
//! Outputs live between sentinel guards; interiors are NaN-poisoned before
//! each call.
//! Skipped, with the reason, where no CUDA device opens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln_core::ops::attention::{attention_ref, AttentionParams};
use kiln_core::ops::copy_rows::{copy_rows_ref, copy_rows_ref_kv, CopyRowsParams};
use kiln_core::{KvSliceMut, KvType};
use kiln_cuda::attention::{decg_eligible, decg_plan, split_kv_plan, AttentionKernel};
use kiln_cuda::harness::{with_kv_view, with_kv_view_mut, KvDev};
use kiln_cuda::{attention, copy_rows, CudaBackend, CudaSlice, CudaView, CudaViewMut, KvView};
use kiln_testkit::cases::attention::KvData;
use kiln_testkit::{case_rng, compare, rand_f32, Tol};

/// Guard elements on each side of a device output.
const GUARD: usize = 64;
/// Guard pattern: a NaN payload no kernel writes.
const SENTINEL: u32 = 0x7fc0_beef;

fn backend() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(be) => {
            eprintln!(
                "device: {}, seed {}",
                be.info().name,
                kiln_testkit::test_seed()
            );
            Some(be)
        }
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            None
        }
    }
}

/// A device buffer of `n` elements between guards, interior NaN-poisoned.
fn guarded(be: &CudaBackend, interior: &[f32]) -> CudaSlice<f32> {
    let mut h = vec![f32::from_bits(SENTINEL); interior.len() + 2 * GUARD];
    h[GUARD..GUARD + interior.len()].copy_from_slice(interior);
    be.upload(&h).unwrap()
}

/// Interior of a guarded buffer; panics if a guard was touched.
fn interior(be: &CudaBackend, buf: &CudaSlice<f32>, what: &str) -> Vec<f32> {
    let h = be.download(buf).unwrap();
    let n = h.len() - 2 * GUARD;
    for (i, g) in h[..GUARD].iter().chain(&h[GUARD + n..]).enumerate() {
        assert_eq!(g.to_bits(), SENTINEL, "{what}: guard {i} overwritten");
    }
    h[GUARD..GUARD + n].to_vec()
}

#[test]
fn copy_rows_at_matches_reference() {
    let Some(be) = backend() else { return };
    let seed = kiln_testkit::test_seed();
    // (row_len, n_rows, rows in dst, device rows to try (the last beyond max))
    for (ci, &(row_len, n_rows, dst_rows)) in
        [(192usize, 1usize, 37usize), (7, 2, 11), (576, 1, 300)]
            .iter()
            .enumerate()
    {
        let mut rng = case_rng(seed, "copy_rows_at", ci);
        let src = rand_f32(&mut rng, n_rows * row_len, -4.0, 4.0);
        let dst0 = rand_f32(&mut rng, dst_rows * row_len, -4.0, 4.0);
        let max_row = dst_rows - n_rows;
        let p = CopyRowsParams {
            row_len,
            n_rows,
            src_row: 0,
            dst_row: max_row,
            dst_ring: None,
        };
        let ds = be.upload(&src).unwrap();
        for row in [0, 1, max_row / 2, max_row] {
            let mut dd = guarded(&be, &dst0);
            let dr = be.upload(&[row as i32]).unwrap();
            {
                let mut out = dd.slice_mut(GUARD..GUARD + dst0.len());
                copy_rows::copy_rows_at(
                    &be,
                    &p,
                    &dr.slice(0..1),
                    &ds.slice(0..src.len()),
                    &mut out,
                )
                .unwrap();
            }
            let got = interior(&be, &dd, "copy_rows_at");
            let mut want = dst0.clone();
            copy_rows_ref(&CopyRowsParams { dst_row: row, ..p }, &src, &mut want).unwrap();
            compare(
                &format!("copy_rows_at case {ci} row {row}"),
                &got,
                &want,
                Tol::EXACT,
            )
            .unwrap();
        }
    }
}

/// copy_rows_at into ring destinations: the launch validated for the
/// largest position, device positions before the first wrap, at the
/// ring's end (the batch wraps), many laps in, past the largest (clamped)
/// and negative (clamped to 0); f32 between guards (the row past the ring
/// must keep its values too), f16 and bf16 bit for bit.
#[test]
fn copy_rows_at_wraps_into_rings() {
    let Some(be) = backend() else { return };
    let seed = kiln_testkit::test_seed();
    // (row_len, n_rows, ring rows, largest position)
    for (ci, &(row_len, n_rows, ring, max_pos)) in [
        (192usize, 1usize, 7usize, 3000usize),
        (64, 9, 20, 115),
        (33, 5, 5, 13),
        (7, 3, 4, 1000),
    ]
    .iter()
    .enumerate()
    {
        let kv = KvType::ALL[ci % 3];
        let mut rng = case_rng(seed, "copy_rows_at_ring", ci);
        let src = rand_f32(&mut rng, (n_rows + 1) * row_len, -70000.0, 70000.0);
        // One row past the ring: never written.
        let init = KvData::encode(kv, &rand_f32(&mut rng, (ring + 1) * row_len, -1.0, 1.0));
        let p = CopyRowsParams {
            row_len,
            n_rows,
            src_row: 1,
            dst_row: max_pos,
            dst_ring: Some(ring),
        };
        let ds = be.upload(&src).unwrap();
        let positions = [
            0i64,
            ring as i64 - 1,
            max_pos as i64 / 2,
            max_pos as i64,
            max_pos as i64 + 77,
            -4,
        ];
        for dev in positions {
            let row = dev.clamp(0, max_pos as i64) as usize;
            let dr = be.upload(&[dev as i32]).unwrap();
            let got: Vec<u32> = if kv == KvType::F32 {
                let KvData::F32(init) = &init else {
                    panic!("f32 cache expected")
                };
                let mut dd = guarded(&be, init);
                {
                    let mut out = dd.slice_mut(GUARD..GUARD + init.len());
                    copy_rows::copy_rows_at(
                        &be,
                        &p,
                        &dr.slice(0..1),
                        &ds.slice(0..src.len()),
                        &mut out,
                    )
                    .unwrap();
                }
                interior(&be, &dd, "copy_rows_at ring")
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            } else {
                let mut dd = KvDev::upload(&be, init.slice()).unwrap();
                with_kv_view_mut(&mut dd, |c| {
                    copy_rows::copy_rows_at_kv(&be, &p, &dr.slice(0..1), &ds.slice(0..src.len()), c)
                })
                .unwrap();
                dd.0.to_f32(&be)
                    .unwrap()
                    .iter()
                    .map(|x| x.to_bits())
                    .collect()
            };
            let mut want = init.clone();
            let dst = match &mut want {
                KvData::F32(w) => KvSliceMut::F32(w),
                KvData::F16(w) => KvSliceMut::F16(w),
                KvData::BF16(w) => KvSliceMut::BF16(w),
            };
            copy_rows_ref_kv(&CopyRowsParams { dst_row: row, ..p }, &src, dst).unwrap();
            let want: Vec<u32> = want.widened().iter().map(|x| x.to_bits()).collect();
            let bad = got.iter().zip(&want).position(|(a, b)| a != b);
            assert!(
                bad.is_none(),
                "copy_rows_at ring case {ci} ({kv}) device row {dev}: element {bad:?} differs"
            );
        }
    }
}

/// The kernels the attention_at tests run: the launcher's choice (`None`),
/// the warp decode / split-KV kernel on its plan (`KILN_ATTN_DEC=old`) and,
/// where it has the head dim, the lane-group decode kernel, both forced.
fn at_kernels(p: &AttentionParams, sm: usize) -> Vec<Option<AttentionKernel>> {
    let mut v = vec![None, Some(AttentionKernel::SplitKv(split_kv_plan(p, sm)))];
    if decg_eligible(p) {
        v.push(Some(AttentionKernel::DecodeGroups(decg_plan(p, sm))));
    }
    v
}

/// attention_at, or attention_at_with_kernel when `kernel` is given.
fn run_at(
    be: &CudaBackend,
    p: &AttentionParams,
    kernel: Option<&AttentionKernel>,
    pos: &CudaView<'_, i32>,
    q: &CudaView<'_, f32>,
    kv: (KvView<'_, '_>, KvView<'_, '_>),
    out: &mut CudaViewMut<'_, f32>,
) -> kiln_cuda::Result<()> {
    match kernel {
        None => attention::attention_at(be, p, pos, q, kv, out),
        Some(kern) => attention::attention_at_with_kernel(be, p, kern, pos, q, kv, out),
    }
}

/// attention_at at position `pos` (plan for `p.pos0`) vs the reference at
/// `pos`, without and with sliding windows (the plan covers the window at
/// `p.pos0`; at earlier positions some of its splits see no key).
#[test]
fn attention_at_matches_reference() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    let seed = kiln_testkit::test_seed();
    // (n_tokens, n_heads, n_kv_heads, head_dim, kv_stride, window or 0)
    let cases = [
        (1usize, 9usize, 3usize, 64usize, 1000usize, 0usize),
        (1, 9, 3, 64, 24, 0),
        (2, 4, 2, 40, 333, 0),
        (1, 32, 8, 128, 4096, 0),
        (1, 4, 1, 256, 2000, 512),
        (1, 9, 3, 64, 1000, 31),
        (2, 4, 2, 40, 333, 1),
        (1, 8, 1, 128, 700, 64),
    ];
    for (ci, &(n, h, hkv, d, stride, window)) in cases.iter().enumerate() {
        let mut rng = case_rng(seed, "attention_at", ci);
        let p = AttentionParams {
            n_tokens: n,
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: d,
            pos0: stride - n,
            kv_stride: stride,
            scale: 1.0 / (d as f32).sqrt(),
            window: (window > 0).then_some(window),
            softcap: None,
        };
        let q = rand_f32(&mut rng, n * h * d, -1.0, 1.0);
        let k = rand_f32(&mut rng, stride * hkv * d, -1.0, 1.0);
        let v = rand_f32(&mut rng, stride * hkv * d, -1.0, 1.0);
        // Each case with one cache type in turn.
        let kv = KvType::ALL[ci % 3];
        let (k, v) = (KvData::encode(kv, &k), KvData::encode(kv, &v));
        let dq = be.upload(&q).unwrap();
        let dk = KvDev::upload(&be, k.slice()).unwrap();
        let dv = KvDev::upload(&be, v.slice()).unwrap();
        let (k, v) = (k.widened(), v.widened());
        let out_len = n * h * d;
        let positions = [0, 1, 31, 32, 33, (stride - n) / 2, stride - n];
        for (pos, kernel) in positions
            .into_iter()
            .flat_map(|pos| at_kernels(&p, sm).into_iter().map(move |kern| (pos, kern)))
        {
            if pos > stride - n {
                continue;
            }
            let mut dout = guarded(&be, &vec![f32::NAN; out_len]);
            let dp = be.upload(&[pos as i32]).unwrap();
            {
                let mut out = dout.slice_mut(GUARD..GUARD + out_len);
                with_kv_view(&dk, |kc| {
                    with_kv_view(&dv, |vc| {
                        run_at(
                            &be,
                            &p,
                            kernel.as_ref(),
                            &dp.slice(0..1),
                            &dq.slice(0..q.len()),
                            (kc, vc),
                            &mut out,
                        )
                    })
                })
                .unwrap();
            }
            let got = interior(&be, &dout, "attention_at");
            let mut want = vec![0.0; out_len];
            attention_ref(&AttentionParams { pos0: pos, ..p }, &q, &k, &v, &mut want).unwrap();
            compare(
                &format!("attention_at case {ci} ({kv} cache) pos {pos} kernel {kernel:?}"),
                &got,
                &want,
                Tol::ATTENTION,
            )
            .unwrap();
        }
    }
}

/// attention_at on ring caches: planned for the largest position (many
/// laps in), run at device positions before the ring fills, at its end,
/// many laps in and past the largest (clamped), against the reference at
/// the clamped position; rows that position's queries do not see are NaN.
#[test]
fn attention_at_on_rings() {
    let Some(be) = backend() else { return };
    let sm = be.info().sm_count as usize;
    let seed = kiln_testkit::test_seed();
    // (n_tokens, n_heads, n_kv_heads, head_dim, ring rows, window, largest position)
    let cases = [
        (
            1usize, 4usize, 1usize, 256usize, 512usize, 512usize, 5000usize,
        ),
        (1, 9, 3, 64, 48, 48, 999),
        (2, 4, 2, 40, 33, 32, 700),
        (1, 8, 1, 128, 64, 60, 100_000),
        (1, 1, 1, 64, 1, 1, 77),
    ];
    for (ci, &(n, h, hkv, d, ring, window, max_pos)) in cases.iter().enumerate() {
        let mut rng = case_rng(seed, "attention_at_ring", ci);
        let p = AttentionParams {
            n_tokens: n,
            n_heads: h,
            n_kv_heads: hkv,
            head_dim: d,
            pos0: max_pos,
            kv_stride: ring,
            scale: 1.0 / (d as f32).sqrt(),
            window: Some(window),
            softcap: None,
        };
        let kv = KvType::ALL[ci % 3];
        let row = hkv * d;
        let q = rand_f32(&mut rng, n * h * d, -1.0, 1.0);
        let dq = be.upload(&q).unwrap();
        let out_len = n * h * d;
        for dev in [
            0,
            1,
            ring - 1,
            ring,
            ring + 5,
            max_pos / 2,
            max_pos,
            max_pos + 50,
        ] {
            let at = AttentionParams {
                pos0: dev.min(max_pos),
                ..p
            };
            let mut k = rand_f32(&mut rng, ring * row, -1.0, 1.0);
            let mut v = rand_f32(&mut rng, ring * row, -1.0, 1.0);
            let mut seen = vec![false; ring];
            for j in at.key_range(0).0..at.pos0 + n {
                seen[at.kv_row(j)] = true;
            }
            for (r, _) in seen.iter().enumerate().filter(|(_, &s)| !s) {
                k[r * row..][..row].fill(f32::NAN);
                v[r * row..][..row].fill(f32::NAN);
            }
            let (k, v) = (KvData::encode(kv, &k), KvData::encode(kv, &v));
            let dk = KvDev::upload(&be, k.slice()).unwrap();
            let dv = KvDev::upload(&be, v.slice()).unwrap();
            let mut want = vec![0.0; out_len];
            attention_ref(&at, &q, &k.widened(), &v.widened(), &mut want).unwrap();
            let dp = be.upload(&[dev as i32]).unwrap();
            for kernel in at_kernels(&p, sm) {
                let mut dout = guarded(&be, &vec![f32::NAN; out_len]);
                {
                    let mut out = dout.slice_mut(GUARD..GUARD + out_len);
                    with_kv_view(&dk, |kc| {
                        with_kv_view(&dv, |vc| {
                            run_at(
                                &be,
                                &p,
                                kernel.as_ref(),
                                &dp.slice(0..1),
                                &dq.slice(0..q.len()),
                                (kc, vc),
                                &mut out,
                            )
                        })
                    })
                    .unwrap();
                }
                let got = interior(&be, &dout, "attention_at ring");
                compare(
                    &format!(
                        "attention_at ring case {ci} ({kv} cache) device pos {dev} kernel {kernel:?}"
                    ),
                    &got,
                    &want,
                    Tol::ATTENTION,
                )
                .unwrap();
            }
        }
    }
}

/// One decode-like step (append k/v at the device row, attend) recorded as a
/// graph once, replayed at positions 0..steps with the position copied in
/// before each replay; checked against the reference after every step, with
/// caches of each type (the reference holds the rounded appends). Then the
/// same with ring caches (window 48, 48 rows) over three laps of the ring.
#[test]
fn recorded_step_replays_at_every_position() {
    let Some(be) = backend() else { return };
    for kv in KvType::ALL {
        for old in [false, true] {
            recorded_step(&be, kv, false, old);
            recorded_step(&be, kv, true, old);
        }
    }
}

/// `old`: the warp decode kernel (forced, as `KILN_ATTN_DEC=old` picks it)
/// instead of the launcher's choice (the lane-group kernel at head_dim 64).
fn recorded_step(be: &CudaBackend, kv: KvType, ring: bool, old: bool) {
    let seed = kiln_testkit::test_seed();
    let (h, hkv, d) = (9usize, 3usize, 64usize);
    // Cache rows, the largest position the launches allow, steps replayed.
    let (stride, max_pos, steps) = if ring { (48, 999, 150) } else { (200, 199, 70) };
    let row = hkv * d;
    let mut rng = case_rng(seed, "graph_step", usize::from(ring));
    let p = AttentionParams {
        n_tokens: 1,
        n_heads: h,
        n_kv_heads: hkv,
        head_dim: d,
        pos0: max_pos,
        kv_stride: stride,
        scale: 0.125,
        window: ring.then_some(stride),
        softcap: None,
    };
    let append = CopyRowsParams {
        row_len: row,
        n_rows: 1,
        src_row: 0,
        dst_row: max_pos,
        dst_ring: ring.then_some(stride),
    };
    let sm = be.info().sm_count as usize;
    let kernel = old.then(|| AttentionKernel::SplitKv(split_kv_plan(&p, sm)));
    let zeros = KvData::encode(kv, &vec![0.0f32; stride * row]);
    let mut kc = KvDev::upload(be, zeros.slice()).unwrap();
    let mut vc = KvDev::upload(be, zeros.slice()).unwrap();
    let mut dq = be.alloc_zeros::<f32>(h * d).unwrap();
    let mut dk = be.alloc_zeros::<f32>(row).unwrap();
    let mut dv = be.alloc_zeros::<f32>(row).unwrap();
    let mut dpos = be.alloc_zeros::<i32>(1).unwrap();
    let mut dout = be.alloc_zeros::<f32>(h * d).unwrap();
    let (mut hk, mut hv) = (vec![0.0f32; stride * row], vec![0.0f32; stride * row]);
    let step = |be: &CudaBackend,
                kc: &mut (KvDev, usize),
                vc: &mut (KvDev, usize),
                dq: &CudaSlice<f32>,
                dk: &CudaSlice<f32>,
                dv: &CudaSlice<f32>,
                dpos: &CudaSlice<i32>,
                dout: &mut CudaSlice<f32>| {
        let pos = dpos.slice(0..1);
        with_kv_view_mut(kc, |c| {
            copy_rows::copy_rows_at_kv(be, &append, &pos, &dk.slice(0..row), c)
        })?;
        with_kv_view_mut(vc, |c| {
            copy_rows::copy_rows_at_kv(be, &append, &pos, &dv.slice(0..row), c)
        })?;
        with_kv_view(kc, |k| {
            with_kv_view(vc, |v| {
                run_at(
                    be,
                    &p,
                    kernel.as_ref(),
                    &pos,
                    &dq.slice(0..h * d),
                    (k, v),
                    &mut dout.slice_mut(0..h * d),
                )
            })
        })
    };
    // Warm up eagerly (loads the kernels, grows the split scratch), then record.
    step(be, &mut kc, &mut vc, &dq, &dk, &dv, &dpos, &mut dout).unwrap();
    be.synchronize().unwrap();
    be.begin_capture().unwrap();
    let r = step(be, &mut kc, &mut vc, &dq, &dk, &dv, &dpos, &mut dout);
    let g = be.end_capture().unwrap();
    r.unwrap();
    let g = g.expect("the capture recorded launches");
    for pos in 0..steps {
        let q = rand_f32(&mut rng, h * d, -1.0, 1.0);
        let k = rand_f32(&mut rng, row, -1.0, 1.0);
        let v = rand_f32(&mut rng, row, -1.0, 1.0);
        let s = be.stream();
        s.memcpy_htod(&q, &mut dq).unwrap();
        s.memcpy_htod(&k, &mut dk).unwrap();
        s.memcpy_htod(&v, &mut dv).unwrap();
        s.memcpy_htod(&[pos as i32], &mut dpos).unwrap();
        s.memcpy_htod(&vec![f32::NAN; h * d], &mut dout).unwrap();
        g.launch().unwrap();
        let got = be.download(&dout).unwrap();
        let r = p.kv_row(pos);
        for (c, (&x, &y)) in k.iter().zip(&v).enumerate() {
            hk[r * row + c] = kv.round(x);
            hv[r * row + c] = kv.round(y);
        }
        let mut want = vec![0.0; h * d];
        attention_ref(&AttentionParams { pos0: pos, ..p }, &q, &hk, &hv, &mut want).unwrap();
        compare(
            &format!("graph step ({kv} cache, ring {ring}, old {old}) pos {pos}"),
            &got,
            &want,
            Tol::ATTENTION,
        )
        .unwrap();
    }
    // The cache rows the replays appended are the ones the reference holds
    // (rounded exactly as the reference rounds).
    let got_k = kc.0.to_f32(be).unwrap();
    let filled = steps.min(stride) * row;
    compare(
        &format!("graph k cache ({kv}, ring {ring})"),
        &got_k[..filled],
        &hk[..filled],
        Tol::EXACT,
    )
    .unwrap();
}

/// copy_rows_at into f16 and bf16 caches: the rows the device position
/// names, rounded bit-exactly as the reference (`copy_rows_ref_kv`).
#[test]
fn copy_rows_at_rounds_into_half_caches() {
    let Some(be) = backend() else { return };
    let seed = kiln_testkit::test_seed();
    for (ci, kv) in [KvType::F16, KvType::BF16].into_iter().enumerate() {
        let mut rng = case_rng(seed, "copy_rows_at_kv", ci);
        let (row_len, n_rows, dst_rows) = (192usize, 2usize, 40usize);
        let src = rand_f32(&mut rng, n_rows * row_len, -70000.0, 70000.0);
        let init = KvData::encode(kv, &rand_f32(&mut rng, dst_rows * row_len, -1.0, 1.0));
        let p = CopyRowsParams {
            row_len,
            n_rows,
            src_row: 0,
            dst_row: dst_rows - n_rows,
            dst_ring: None,
        };
        let ds = be.upload(&src).unwrap();
        for row in [0, 17, dst_rows - n_rows] {
            let mut dd = KvDev::upload(&be, init.slice()).unwrap();
            let dr = be.upload(&[row as i32]).unwrap();
            with_kv_view_mut(&mut dd, |c| {
                copy_rows::copy_rows_at_kv(&be, &p, &dr.slice(0..1), &ds.slice(0..src.len()), c)
            })
            .unwrap();
            let got = dd.0.to_f32(&be).unwrap();
            let (KvData::F16(mut want) | KvData::BF16(mut want)) = init.clone() else {
                panic!("16-bit cache expected");
            };
            let dst = match kv {
                KvType::F16 => KvSliceMut::F16(&mut want),
                _ => KvSliceMut::BF16(&mut want),
            };
            copy_rows_ref_kv(&CopyRowsParams { dst_row: row, ..p }, &src, dst).unwrap();
            let want: Vec<f32> = want.iter().map(|&b| kv.decode(b)).collect();
            let same = got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
            assert!(same, "copy_rows_at ({kv}) row {row}: bits differ");
        }
    }
}
