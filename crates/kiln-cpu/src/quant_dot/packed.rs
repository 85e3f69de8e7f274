//! Weight rows repacked for the AVX-512 VNNI mat-vec (decode: `m` ≤
//! [`PACK_MAX_M`] activation rows), Q4_0, Q4_1 and Q8_0.
//!
//! Why: the block-by-block kernels (`avx2.rs`) spend ~13 vector operations
//! per weight block on one row (unpack, two multiplies to i32, a convert, a
//! scale FMA and the header) and run at ~13 GB/s on one Zen 4 core, about
//! half the core's streaming read: decode was compute-bound. Here 16 rows
//! share every per-block step, and `vpdpbusd` multiplies and sums four byte
//! pairs per lane: ~2 operations per row-block.
//!
//! Layout, per group of [`PACK_ROWS`] = 16 consecutive rows and block `b`:
//!
//! - codes: 64-byte lines; line `j` holds, for rows `r = 0..16`, the four
//!   code bytes `qs[4j..4j+4]` of row `r`'s block `b` at bytes `4r..4r+4`
//!   (one i32 lane per row). Q4_0/Q4_1: 4 lines (a byte's low nibble is
//!   element `4j + i`, its high nibble element `16 + 4j + i`, as in GGML);
//!   Q8_0: 8 lines, each code stored as `q + 128` (an unsigned byte, what
//!   `vpdpbusd` multiplies).
//! - `d` (and Q4_1's `m`): the 16 rows' f16 bits, contiguous.
//!
//! The packed bytes equal the original ones in number (no f32 widening).
//! Rows past the last whole group stay in the original layout and go
//! through the tile kernels. The dot per row and block is
//! `d_w * (d_x * Σ c_w c_x - off * s_x)` (+ `m_w * s_x` for Q4_1) with
//! `off` = 8 (Q4_0), 128 (Q8_0), 0 (Q4_1): the formula of `mod.rs` with the
//! code offset folded into the activation sum `s_x = d_x Σ c_x`.

use super::{ActsView, Q8Acts, QFormat};
use crate::CpuFeatures;
use kiln_core::quant::QK;
use kiln_core::{DType, Error, Result};
use rayon::prelude::*;

/// Rows per packed group (one 32-bit lane each in a 512-bit register).
pub const PACK_ROWS: usize = 16;
/// Most activation rows the packed kernel takes in one pass; a matmul with
/// more rows uses the tile kernels.
pub const PACK_MAX_M: usize = 4;

const OP: &str = "matmul::pack";

/// Software prefetch distance in the code stream. The hardware prefetcher
/// alone left Q4_0/Q4_1 at 47–75% of the one-thread streaming read on the
/// dev VM; 1–2 KiB ahead gave 66–91% (noisy; docs/perf.md §27).
const PF_BYTES: usize = 1024;

/// One 64-byte line of packed codes (aligned so each is one load).
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([u8; 64]);

/// A `[n, k]` weight matrix repacked for [`PackedWeights::group_dots`]:
/// rows `0..groups * 16`; the remaining `n % 16` rows are not held here.
pub struct PackedWeights {
    format: QFormat,
    n: usize,
    k: usize,
    nb: usize,
    groups: usize,
    lines: usize,
    /// `[groups][nb][lines]`.
    codes: Vec<Line>,
    /// f16 bits, `[groups][nb][16]`.
    d: Vec<u16>,
    /// Q4_1's min, f16 bits, `[groups][nb][16]` (empty otherwise).
    mins: Vec<u16>,
}

impl std::fmt::Debug for PackedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PackedWeights({:?}, {} x {}, {} groups)",
            self.format, self.n, self.k, self.groups
        )
    }
}

/// Whether this CPU runs the packed kernel (AVX-512 F, BW and VNNI).
pub fn pack_supported(features: CpuFeatures) -> bool {
    features.avx512_vnni
}

/// Code lines per packed block, for the formats with a packed kernel.
fn lines_of(wtype: DType) -> Option<(QFormat, usize)> {
    match wtype {
        DType::Q4_0 => Some((QFormat::Q4_0, 4)),
        DType::Q4_1 => Some((QFormat::Q4_1, 4)),
        DType::Q8_0 => Some((QFormat::Q8_0, 8)),
        _ => None,
    }
}

impl PackedWeights {
    /// Repack the whole groups of `w` (`[n, k]` rows of `wtype`). `Ok(None)`
    /// when there is nothing to gain: the CPU lacks AVX-512 VNNI
    /// (`KILN_CPU_PACK=0` also says so), the format has no packed kernel, or
    /// `n < 16`. Errors name the bad length.
    pub fn pack(
        features: CpuFeatures,
        wtype: DType,
        n: usize,
        k: usize,
        w: &[u8],
    ) -> Result<Option<PackedWeights>> {
        let Some((format, lines)) = lines_of(wtype) else {
            return Ok(None);
        };
        if !pack_supported(features) || n < PACK_ROWS {
            return Ok(None);
        }
        let rb = wtype.row_bytes(OP, k)?;
        let need = n
            .checked_mul(rb)
            .ok_or_else(|| Error::invalid(OP, format!("{n} rows of {rb} bytes overflow")))?;
        kiln_core::error::check_len(OP, "w", w.len(), need)?;
        let (nb, bs, groups) = (k / QK, wtype.type_size(), n / PACK_ROWS);
        let hdr = if format == QFormat::Q4_1 { 4 } else { 2 };
        let mut codes = vec![Line([0; 64]); groups * nb * lines];
        let mut d = vec![0u16; groups * nb * PACK_ROWS];
        let mut mins = if format == QFormat::Q4_1 {
            vec![0u16; groups * nb * PACK_ROWS]
        } else {
            Vec::new()
        };
        let flip = if format == QFormat::Q8_0 {
            0x8080_8080
        } else {
            0
        };
        // One group: rows 16g..16g+16 into its codes / d / mins slices.
        let group = |g: usize, codes: &mut [Line], d: &mut [u16], mins: &mut [u16]| {
            for b in 0..nb {
                for r in 0..PACK_ROWS {
                    let blk = &w[(g * PACK_ROWS + r) * rb + b * bs..][..bs];
                    d[b * PACK_ROWS + r] = u16::from_le_bytes([blk[0], blk[1]]);
                    if let Some(m) = mins.get_mut(b * PACK_ROWS + r) {
                        *m = u16::from_le_bytes([blk[2], blk[3]]);
                    }
                    for (j, line) in codes[b * lines..(b + 1) * lines].iter_mut().enumerate() {
                        let mut q = [0u8; 4];
                        q.copy_from_slice(&blk[hdr + 4 * j..hdr + 4 * j + 4]);
                        let v = u32::from_le_bytes(q) ^ flip;
                        line.0[4 * r..4 * r + 4].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        };
        // Groups in parallel on the current rayon pool (the engine's, when
        // called from its forward pass).
        let (cl, dl) = (nb * lines, nb * PACK_ROWS);
        let parts = codes
            .par_chunks_mut(cl)
            .zip(d.par_chunks_mut(dl))
            .enumerate();
        if mins.is_empty() {
            parts.for_each(|(g, (c, d))| group(g, c, d, &mut []));
        } else {
            parts
                .zip(mins.par_chunks_mut(dl))
                .for_each(|((g, (c, d)), m)| group(g, c, d, m));
        }
        Ok(Some(PackedWeights {
            format,
            n,
            k,
            nb,
            groups,
            lines,
            codes,
            d,
            mins,
        }))
    }

    /// The weight dtype.
    pub fn dtype(&self) -> DType {
        self.format.dtype()
    }

    /// Rows of the matrix (packed or not).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Rows held packed (`groups * 16`); the rest use the original bytes.
    pub fn packed_rows(&self) -> usize {
        self.groups * PACK_ROWS
    }

    /// The original bytes of the packed rows (layout round trip, for tests).
    pub fn unpack(&self) -> Vec<u8> {
        let (bs, nb, lines) = (self.format.block_bytes(), self.nb, self.lines);
        let hdr = if self.format == QFormat::Q4_1 { 4 } else { 2 };
        let flip = if self.format == QFormat::Q8_0 {
            0x80
        } else {
            0
        };
        let mut out = vec![0u8; self.groups * PACK_ROWS * nb * bs];
        for g in 0..self.groups {
            for b in 0..nb {
                let gb = g * nb + b;
                for r in 0..PACK_ROWS {
                    let blk = &mut out[((g * PACK_ROWS + r) * nb + b) * bs..][..bs];
                    blk[..2].copy_from_slice(&self.d[gb * PACK_ROWS + r].to_le_bytes());
                    if self.format == QFormat::Q4_1 {
                        blk[2..4].copy_from_slice(&self.mins[gb * PACK_ROWS + r].to_le_bytes());
                    }
                    for j in 0..lines {
                        let src = &self.codes[gb * lines + j].0[4 * r..4 * r + 4];
                        for (o, &s) in blk[hdr + 4 * j..hdr + 4 * j + 4].iter_mut().zip(src) {
                            *o = s ^ flip;
                        }
                    }
                }
            }
        }
        out
    }

    /// Dots of group `g`'s 16 rows with the first `m` (≤ [`PACK_MAX_M`])
    /// rows of `acts`: `out[c][r]` = row `16g + r` · activation row `c`.
    /// Errors (never reads out of bounds) when `g`, `m` or the activation
    /// shape do not fit, or when this CPU cannot run the kernel.
    pub fn group_dots(
        &self,
        features: CpuFeatures,
        g: usize,
        acts: &Q8Acts,
        m: usize,
    ) -> Result<[[f32; PACK_ROWS]; PACK_MAX_M]> {
        let ok = g < self.groups
            && (1..=PACK_MAX_M).contains(&m)
            && m <= acts.m()
            && acts.blocks_per_row() == self.nb;
        if !ok || !pack_supported(features) {
            return Err(Error::invalid(
                "matmul::group_dots",
                format!(
                    "group {g} of {}, {m} activation rows of {} ({} blocks, want {}), packed kernel {}",
                    self.groups,
                    acts.m(),
                    acts.blocks_per_row(),
                    self.nb,
                    if pack_supported(features) { "available" } else { "unavailable" }
                ),
            ));
        }
        let a = acts.view();
        let (lines, nb) = (self.lines, self.nb);
        let codes = &self.codes[g * nb * lines..(g + 1) * nb * lines];
        let d = &self.d[g * nb * PACK_ROWS..(g + 1) * nb * PACK_ROWS];
        let mins = if self.format == QFormat::Q4_1 {
            &self.mins[g * nb * PACK_ROWS..(g + 1) * nb * PACK_ROWS]
        } else {
            d
        };
        #[cfg(target_arch = "x86_64")]
        {
            let k = GroupRef {
                codes: codes.as_ptr().cast(),
                d: d.as_ptr(),
                mins: mins.as_ptr(),
                nb,
            };
            // SAFETY: AVX-512 F/BW/VNNI detected (pack_supported); the group's
            // slices hold nb blocks of `lines` lines and 16 scales each, and
            // activation rows 0..m have nb blocks (checked above).
            Ok(unsafe {
                match (self.format, m) {
                    (QFormat::Q4_1, 1) => vnni::group::<1, 1>(&k, &a),
                    (QFormat::Q4_1, 2) => vnni::group::<1, 2>(&k, &a),
                    (QFormat::Q4_1, 3) => vnni::group::<1, 3>(&k, &a),
                    (QFormat::Q4_1, _) => vnni::group::<1, 4>(&k, &a),
                    (QFormat::Q8_0, 1) => vnni::group::<2, 1>(&k, &a),
                    (QFormat::Q8_0, 2) => vnni::group::<2, 2>(&k, &a),
                    (QFormat::Q8_0, 3) => vnni::group::<2, 3>(&k, &a),
                    (QFormat::Q8_0, _) => vnni::group::<2, 4>(&k, &a),
                    (_, 1) => vnni::group::<0, 1>(&k, &a),
                    (_, 2) => vnni::group::<0, 2>(&k, &a),
                    (_, 3) => vnni::group::<0, 3>(&k, &a),
                    (_, _) => vnni::group::<0, 4>(&k, &a),
                }
            })
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (codes, d, mins, a);
            Err(Error::invalid(
                "matmul::group_dots",
                "no packed kernel on this architecture",
            ))
        }
    }
}

/// One group's packed data, as raw pointers for the kernel.
#[cfg(target_arch = "x86_64")]
struct GroupRef {
    codes: *const u8,
    d: *const u16,
    mins: *const u16,
    nb: usize,
}

#[cfg(target_arch = "x86_64")]
mod vnni {
    use super::{ActsView, GroupRef, PACK_MAX_M, PACK_ROWS, PF_BYTES};
    use std::arch::x86_64::*;

    /// 16 f16 at `p` widened to f32.
    ///
    /// # Safety
    /// AVX-512F present; `p` readable for 16 u16.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn half16(p: *const u16) -> __m512 {
        // SAFETY: caller's bound; unaligned 32-byte load.
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.cast()) })
    }

    /// The 4 activation codes `4j..4j+4` of a block, broadcast to all lanes.
    ///
    /// # Safety
    /// `x` readable for 32 bytes, `j < 8`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn xq4(x: *const i8, j: usize) -> __m512i {
        // SAFETY: caller's bound; unaligned 4-byte read.
        _mm512_set1_epi32(unsafe { std::ptr::read_unaligned(x.add(4 * j).cast::<i32>()) })
    }

    /// Format `F`: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0; `M` activation rows.
    ///
    /// # Safety
    /// AVX-512 F/BW/VNNI present; `k` points at one group's `nb` blocks
    /// (codes: `nb * lines` 64-byte lines, 64-byte aligned; `d`/`mins`:
    /// `nb * 16` u16); `a` has `M` rows of `k.nb` blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn group<const F: u8, const M: usize>(
        k: &GroupRef,
        a: &ActsView<'_>,
    ) -> [[f32; PACK_ROWS]; PACK_MAX_M] {
        let nb = k.nb;
        let lines = if F == 2 { 8 } else { 4 };
        let off = match F {
            0 => -8.0f32,
            2 => -128.0,
            _ => 0.0,
        };
        let mask = _mm512_set1_epi8(0x0f);

        let mut acc = [_mm512_setzero_ps(); M];
        let qs = a.qs.as_ptr();
        let ds = a.ds.as_ptr();
        for b in 0..nb {
            // SAFETY: block b < nb of this group (caller's bound).
            let (v, dw) = unsafe {
                let base = k.codes.add(b * lines * 64);
                // Software prefetch PF_BYTES ahead in the code stream (and
                // as many blocks ahead in the scales); never faults, and the
                // address is formed with wrapping arithmetic, so running past
                // the group (into the next, or past the end) is harmless.
                let ahead = base.wrapping_add(PF_BYTES);
                for j in 0..lines {
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64 * j).cast());
                }
                let d_ahead = k.d.wrapping_add((b + PF_BYTES / (lines * 64)) * PACK_ROWS);
                _mm_prefetch::<_MM_HINT_T0>(d_ahead.cast());
                let mut v = [_mm512_setzero_si512(); 8];
                for (j, vj) in v.iter_mut().enumerate().take(lines) {
                    *vj = _mm512_load_si512(base.add(64 * j).cast());
                }
                (v, half16(k.d.add(b * PACK_ROWS)))
            };
            // Q4: low nibbles (elements 4j..) and high nibbles (16 + 4j..).
            let mut c = [_mm512_setzero_si512(); 8];
            if F == 2 {
                c = v;
            } else {
                for j in 0..4 {
                    c[j] = _mm512_and_si512(v[j], mask);
                    c[4 + j] = _mm512_and_si512(_mm512_srli_epi16::<4>(v[j]), mask);
                }
            }
            for (i, acc_i) in acc.iter_mut().enumerate() {
                // SAFETY: activation row i < M, block b < nb (caller's bound).
                let (x, dx, sx) = unsafe {
                    let idx = i * nb + b;
                    let [dx, sx] = *ds.add(idx);
                    (qs.add(idx).cast::<i8>(), dx, sx)
                };
                // Two chains of four dot-adds (c[j] pairs with codes 4j..4j+4).
                // SAFETY: x holds 32 codes.
                let (s0, s1) = unsafe {
                    let mut s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[0], xq4(x, 0));
                    let mut s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), c[4], xq4(x, 4));
                    for j in 1..4 {
                        s0 = _mm512_dpbusd_epi32(s0, c[j], xq4(x, j));
                        s1 = _mm512_dpbusd_epi32(s1, c[4 + j], xq4(x, 4 + j));
                    }
                    (s0, s1)
                };
                let isum = _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1));
                if F == 1 {
                    // SAFETY: mins holds nb * 16 u16 for Q4_1.
                    let mw = unsafe { half16(k.mins.add(b * PACK_ROWS)) };
                    let t = _mm512_mul_ps(isum, _mm512_set1_ps(dx));
                    *acc_i = _mm512_fmadd_ps(t, dw, *acc_i);
                    *acc_i = _mm512_fmadd_ps(mw, _mm512_set1_ps(sx), *acc_i);
                } else {
                    let t = _mm512_fmadd_ps(isum, _mm512_set1_ps(dx), _mm512_set1_ps(off * sx));
                    *acc_i = _mm512_fmadd_ps(t, dw, *acc_i);
                }
            }
        }
        let mut out = [[0.0f32; PACK_ROWS]; PACK_MAX_M];
        for (o, v) in out.iter_mut().zip(acc) {
            // SAFETY: o is 16 f32.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), v) };
        }
        out
    }
}
