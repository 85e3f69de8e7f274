//! Weight rows repacked for the AVX-512 VNNI mat-vec (decode: `m` ≤
//! [`PACK_MAX_M`] activation rows): Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL,
//! IQ4_XS, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K.
//!
//! Why: the block-by-block kernels (`avx2.rs`, `avx2_k.rs`) spend ~13
//! vector operations per 32 weights of one row (unpack, two multiplies to
//! i32, a convert, a scale FMA and the header) and run at ~13 GB/s on one
//! Zen 4 core, about half the core's streaming read: decode was
//! compute-bound. Here 16 rows share every per-block step, and `vpdpbusd`
//! multiplies and sums four byte pairs per lane: ~2 operations per 32
//! weights of a row (40–90 GB/s per core on L2-resident weights).
//!
//! Layout, per group of [`PACK_ROWS`] = 16 consecutive rows and block `b`
//! (groups, then blocks, then lines, contiguous):
//!
//! - word lines: 64 bytes; line `j` holds, for rows `r = 0..16`, a 4-byte
//!   word of row `r`'s block `b` at bytes `4r..4r+4` (one i32 lane per
//!   row). Q4_0/Q4_1/IQ4_NL: 4 lines, the words of `qs` (a byte's low
//!   nibble is element `4j + i`, its high nibble element `16 + 4j + i`, as
//!   in GGML); Q5_0/Q5_1: the same and a fifth line, the `qh` word; Q8_0:
//!   8 lines, each code stored as `q + 128` (an unsigned byte, what
//!   `vpdpbusd` multiplies); Q4_K: the 3 words of its 12 scale bytes, then
//!   the 32 words of `qs` (Q5_K: its 8 words of `qh` between); Q6_K: 4
//!   words of its 16 scales, 32 of `ql`, 16 of `qh`; IQ4_XS: the words of
//!   `d | scales_h` and `scales_l`, then 32 of `qs` (its `d` travels there);
//!   Q2_K: 4 words of scale bytes, 16 of `qs`, the word `d | dmin`; Q3_K:
//!   its first 27 words (hmask, qs, scales) in order, `d` in the array.
//! - scales: Q4_1, Q5_1, Q4_K and Q5_K end each block with one line of the
//!   16 rows' `d` (bytes 0..32) and `m` / `dmin` (32..64), so a group is a
//!   single sequential stream (5 lines = 16 × 20 bytes; 6 = 16 × 24; 36 =
//!   16 × 144; 44 = 16 × 176); Q4_0, Q5_0, Q8_0, IQ4_NL and Q6_K keep the
//!   16 `d` per block in a second array (prefetched by the kernels: on its
//!   own, a stream that slow left the hardware prefetcher behind).
//!
//! The packed bytes equal the original ones in number (no f32 widening).
//! Rows past the last whole group stay in the original layout and go
//! through the tile kernels. The dot per row and 32-block is
//! `d_w * (d_x * Σ c_w c_x - off * s_x)` (+ `m_w * s_x` for Q4_1, Q5_1) with
//! `off` = 8 (Q4_0), 16 (Q5_0), 128 (Q8_0; IQ4_NL, whose grid values are
//! stored +128), 0 (Q4_1, Q5_1): the formula of `mod.rs` with the
//! code offset folded into the activation sum `s_x = d_x Σ c_x`; Q4_K, Q5_K and
//! Q6_K use those of `kquant.rs` (`packed_vnni::group_q45k`, `group_q6k`).

#[cfg(target_arch = "x86_64")]
use super::packed_vnni as vnni;
#[cfg(target_arch = "x86_64")]
use super::packed_vnni_k as vnni_k;
use super::{Q8Acts, Q8KActs, QFormat};
use crate::CpuFeatures;
use kiln_core::quant::{QK, QK_K};
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
pub(super) const PF_BYTES: usize = 1024;

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
    /// Q4_0 / Q8_0's `d`, f16 bits, `[groups][nb][16]` (empty for the
    /// layouts that carry their scales in a code line).
    d: Vec<u16>,
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

/// Where a packed block's parts come from in the original block.
struct Layout {
    format: QFormat,
    /// 64-byte lines per block: `words` lines of one 4-byte word of each
    /// of the 16 rows, then (when `lines > words`) one line holding the 16
    /// `d` and the 16 second f16s, so one stream carries the whole block.
    lines: usize,
    words: usize,
    /// Byte offset in the original block of line `j`'s word.
    word: fn(usize) -> usize,
    /// Offset of the f16 scale `d`, and of the second f16 (Q4_1's `m`,
    /// Q4_K's `dmin`) where there is one.
    d_off: usize,
    min_off: Option<usize>,
    /// XOR applied to every code word (Q8_0: signed codes to `q + 128`).
    flip: u32,
    /// Elements per block (32, or 256 for the Q8_K formats).
    qk: usize,
    /// The word lines already carry `d` (IQ4_XS: its first word): no
    /// separate array, no scale line.
    d_in_words: bool,
}

/// The packed layout of `wtype`, for the formats with a packed kernel.
fn layout_of(wtype: DType) -> Option<Layout> {
    let l = |format, lines, word, min_off, flip, qk| Layout {
        format,
        lines,
        words: lines,
        word,
        d_off: 0,
        min_off,
        flip,
        qk,
        d_in_words: false,
    };
    Some(match wtype {
        DType::Q4_0 => l(QFormat::Q4_0, 4, |j| 2 + 4 * j, None, 0, QK),
        // Q4_1: 4 words of nibbles, then the line of d and m (5 lines =
        // 320 bytes = 16 blocks: one stream).
        DType::Q4_1 => Layout {
            lines: 5,
            ..l(QFormat::Q4_1, 4, |j| 4 + 4 * j, Some(2), 0, QK)
        },
        DType::Q8_0 => l(QFormat::Q8_0, 8, |j| 2 + 4 * j, None, 0x8080_8080, QK),
        // Q5_0: 4 words of nibbles (qs at 6), then the line of qh words (at
        // 2); d (at 0) in the second array.
        DType::Q5_0 => l(
            QFormat::Q5_0,
            5,
            |j| if j < 4 { 6 + 4 * j } else { 2 },
            None,
            0,
            QK,
        ),
        // Q5_1: the same (qs at 8, qh at 4), then the line of d and m
        // (6 lines = 16 × 24 bytes).
        DType::Q5_1 => Layout {
            lines: 6,
            ..l(
                QFormat::Q5_1,
                5,
                |j| if j < 4 { 8 + 4 * j } else { 4 },
                Some(2),
                0,
                QK,
            )
        },
        // IQ4_NL: Q4_0's layout (the kernel maps the nibbles through the grid).
        DType::IQ4_NL => l(QFormat::IQ4_NL, 4, |j| 2 + 4 * j, None, 0, QK),
        // Q4_K: the 3 words of scale bytes (at 4), 32 words of nibbles (qs
        // at 16), then the line of d and dmin (36 lines = 2304 bytes = 16
        // blocks). The kernel reads the scales first: in address order, the
        // order the hardware prefetcher follows.
        DType::Q4_K => Layout {
            lines: 36,
            ..l(
                QFormat::Q4_K,
                35,
                |j| if j < 3 { 4 + 4 * j } else { 16 + 4 * (j - 3) },
                Some(2),
                0,
                QK_K,
            )
        },
        // Q5_K: the 3 scale words, 8 words of qh (at 16), 32 of qs (at
        // 48), then the line of d and dmin (44 lines = 16 × 176 bytes).
        DType::Q5_K => Layout {
            lines: 44,
            ..l(
                QFormat::Q5_K,
                43,
                |j| match j {
                    0..3 => 4 + 4 * j,
                    3..11 => 16 + 4 * (j - 3),
                    _ => 48 + 4 * (j - 11),
                },
                Some(2),
                0,
                QK_K,
            )
        },
        // Q2_K: 4 words of scale bytes, 16 words of qs (at 16), then the
        // word of d and dmin (at 80): 21 lines = 16 × 84 bytes.
        DType::Q2_K => Layout {
            d_in_words: true,
            ..l(
                QFormat::Q2_K,
                21,
                |j| match j {
                    0..4 => 4 * j,
                    4..20 => 16 + 4 * (j - 4),
                    _ => 80,
                },
                None,
                0,
                QK_K,
            )
        },
        // Q3_K: 8 words of hmask, 16 of qs (at 32), 3 of scales (at 96);
        // d (at 108) in the second array (27 lines + 32 bytes = 16 × 110).
        DType::Q3_K => Layout {
            d_off: 108,
            ..l(QFormat::Q3_K, 27, |j| 4 * j, None, 0, QK_K)
        },
        // IQ4_XS: the word of d and scales_h, the word of scales_l, then 32
        // words of qs (34 lines = 16 × 136 bytes: d travels in the words).
        DType::IQ4_XS => Layout {
            d_in_words: true,
            ..l(
                QFormat::IQ4_XS,
                34,
                |j| if j < 2 { 4 * j } else { 8 + 4 * (j - 2) },
                None,
                0,
                QK_K,
            )
        },
        // Q6_K: 4 words of signed scales (at 192), 32 of `ql`, 16 of `qh`
        // (52 lines); `d` (at 208) in the second array.
        DType::Q6_K => Layout {
            d_off: 208,
            ..l(
                QFormat::Q6_K,
                52,
                |j| match j {
                    0..4 => 192 + 4 * j,
                    4..36 => 4 * (j - 4),
                    _ => 128 + 4 * (j - 36),
                },
                None,
                0,
                QK_K,
            )
        },
        _ => return None,
    })
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
        let Some(lay) = layout_of(wtype) else {
            return Ok(None);
        };
        let (format, lines) = (lay.format, lay.lines);
        if !pack_supported(features) || n < PACK_ROWS {
            return Ok(None);
        }
        let rb = wtype.row_bytes(OP, k)?;
        let need = n
            .checked_mul(rb)
            .ok_or_else(|| Error::invalid(OP, format!("{n} rows of {rb} bytes overflow")))?;
        kiln_core::error::check_len(OP, "w", w.len(), need)?;
        let (nb, bs, groups) = (k / lay.qk, wtype.type_size(), n / PACK_ROWS);
        let mut codes = vec![Line([0; 64]); groups * nb * lines];
        let inline = lay.lines > lay.words;
        let own_d = !inline && !lay.d_in_words;
        let mut d = vec![0u16; if own_d { groups * nb * PACK_ROWS } else { 0 }];
        let f16_at = |blk: &[u8], o: usize| u16::from_le_bytes([blk[o], blk[o + 1]]);
        // One group: rows 16g..16g+16 into its codes / d slices.
        let group = |g: usize, codes: &mut [Line], d: &mut [u16]| {
            for b in 0..nb {
                for r in 0..PACK_ROWS {
                    let blk = &w[(g * PACK_ROWS + r) * rb + b * bs..][..bs];
                    let (dv, mv) = (f16_at(blk, lay.d_off), lay.min_off.map(|o| f16_at(blk, o)));
                    let bl = &mut codes[b * lines..(b + 1) * lines];
                    if inline {
                        let sl = &mut bl[lay.words].0;
                        sl[2 * r..2 * r + 2].copy_from_slice(&dv.to_le_bytes());
                        let mv = mv.unwrap_or(0).to_le_bytes();
                        sl[32 + 2 * r..32 + 2 * r + 2].copy_from_slice(&mv);
                    } else if own_d {
                        // Non-inline layouts have no second f16 (layout_of).
                        d[b * PACK_ROWS + r] = dv;
                    }
                    for (j, line) in bl[..lay.words].iter_mut().enumerate() {
                        let (o, mut q) = ((lay.word)(j), [0u8; 4]);
                        q.copy_from_slice(&blk[o..o + 4]);
                        let v = u32::from_le_bytes(q) ^ lay.flip;
                        line.0[4 * r..4 * r + 4].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        };
        // Groups in parallel on the current rayon pool (the engine's, when
        // called from its forward pass).
        let (cl, dl) = (nb * lines, nb * PACK_ROWS);
        if !own_d {
            codes
                .par_chunks_mut(cl)
                .enumerate()
                .for_each(|(g, c)| group(g, c, &mut []));
        } else {
            let parts = codes.par_chunks_mut(cl).zip(d.par_chunks_mut(dl));
            parts.enumerate().for_each(|(g, (c, d))| group(g, c, d));
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
        }))
    }

    /// The weight format.
    pub fn format(&self) -> QFormat {
        self.format
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
        let Some(lay) = layout_of(self.dtype()) else {
            return Vec::new();
        };
        let (bs, nb, lines) = (self.format.block_bytes(), self.nb, self.lines);
        let mut out = vec![0u8; self.groups * PACK_ROWS * nb * bs];
        for g in 0..self.groups {
            for b in 0..nb {
                let gb = g * nb + b;
                for r in 0..PACK_ROWS {
                    let blk = &mut out[((g * PACK_ROWS + r) * nb + b) * bs..][..bs];
                    let (dv, mv) = if lay.lines > lay.words {
                        let sl = &self.codes[gb * lines + lay.words].0;
                        let at = |o: usize| u16::from_le_bytes([sl[o], sl[o + 1]]);
                        (at(2 * r), at(32 + 2 * r))
                    } else {
                        (self.d.get(gb * PACK_ROWS + r).copied().unwrap_or(0), 0)
                    };
                    if !lay.d_in_words {
                        let o = lay.d_off;
                        blk[o..o + 2].copy_from_slice(&dv.to_le_bytes());
                    }
                    if let Some(o) = lay.min_off {
                        blk[o..o + 2].copy_from_slice(&mv.to_le_bytes());
                    }
                    for j in 0..lay.words {
                        let src = &self.codes[gb * lines + j].0[4 * r..4 * r + 4];
                        let mut q = [0u8; 4];
                        q.copy_from_slice(src);
                        let v = u32::from_le_bytes(q) ^ lay.flip;
                        let o = (lay.word)(j);
                        blk[o..o + 4].copy_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// Dots of group `g`'s 16 rows with the first `m` (≤ [`PACK_MAX_M`])
    /// rows of `acts` (32-element formats): `out[c][r]` = row `16g + r` ·
    /// activation row `c`. Errors (never reads out of bounds) when `g`, `m`
    /// or the activation shape do not fit, the format takes Q8_K
    /// activations, or this CPU cannot run the kernel.
    pub fn group_dots(
        &self,
        features: CpuFeatures,
        g: usize,
        acts: &Q8Acts,
        m: usize,
    ) -> Result<[[f32; PACK_ROWS]; PACK_MAX_M]> {
        self.one_group(features, g, Acts::Q8(acts), m)
    }

    /// [`PackedWeights::group_dots`] for the super-block formats (Q4_K,
    /// Q5_K, Q6_K, IQ4_XS), with Q8_K activations.
    pub fn group_dots_k(
        &self,
        features: CpuFeatures,
        g: usize,
        acts: &Q8KActs,
        m: usize,
    ) -> Result<[[f32; PACK_ROWS]; PACK_MAX_M]> {
        self.one_group(features, g, Acts::Q8K(acts), m)
    }

    fn one_group(
        &self,
        features: CpuFeatures,
        g: usize,
        acts: Acts<'_>,
        m: usize,
    ) -> Result<[[f32; PACK_ROWS]; PACK_MAX_M]> {
        let mut out = [[0.0f32; PACK_ROWS]; PACK_MAX_M];
        // SAFETY: `out` is 4 rows of 16 f32, ld 16: every write of groups
        // g..g+1 (offset 0, rows c < m <= 4) lies inside it.
        unsafe {
            self.dots_raw(
                features,
                g..g + 1,
                acts,
                m,
                out.as_mut_ptr().cast(),
                PACK_ROWS,
            )?
        };
        Ok(out)
    }

    /// Dots of the groups `gs` with the first `m` rows of `acts`: row
    /// `16g + r` · activation row `c` goes to `out[c * ld + 16 * (g -
    /// gs.start) + r]`. One call per strip: the per-group work of a short
    /// row (k = 576: ~10 KB) is too small to carry a checked call each.
    /// Errors (before any write) as [`PackedWeights::group_dots`].
    ///
    /// # Safety
    /// `out` must be valid for writes at every such index, and nothing
    /// else may access them during the call.
    pub(crate) unsafe fn dots_raw(
        &self,
        features: CpuFeatures,
        gs: std::ops::Range<usize>,
        acts: Acts<'_>,
        m: usize,
        out: *mut f32,
        ld: usize,
    ) -> Result<()> {
        let (acts_m, acts_nb, q8k) = match acts {
            Acts::Q8(a) => (a.m(), a.blocks_per_row(), false),
            Acts::Q8K(a) => (a.m(), a.blocks_per_row(), true),
        };
        let k = self.group_ref(features, gs.clone(), m, acts_m, acts_nb, q8k)?;
        let ng = gs.len();
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: AVX-512 F/BW/VNNI detected; `k` covers groups gs of
            // nb blocks and activation rows 0..m have nb blocks (group_ref);
            // `out` per the caller's contract.
            unsafe {
                match acts {
                    Acts::Q8(a) => {
                        let a = a.view();
                        macro_rules! run {
                            ($f:literal) => {
                                match m {
                                    1 => vnni::groups::<$f, 1>(&k, ng, &a, out, ld),
                                    2 => vnni::groups::<$f, 2>(&k, ng, &a, out, ld),
                                    3 => vnni::groups::<$f, 3>(&k, ng, &a, out, ld),
                                    _ => vnni::groups::<$f, 4>(&k, ng, &a, out, ld),
                                }
                            };
                        }
                        match self.format {
                            QFormat::Q4_1 => run!(1),
                            QFormat::Q8_0 => run!(2),
                            QFormat::IQ4_NL => run!(3),
                            QFormat::Q5_0 => run!(4),
                            QFormat::Q5_1 => run!(5),
                            _ => run!(0),
                        }
                    }
                    Acts::Q8K(a) => {
                        let a = a.all();
                        macro_rules! run {
                            ($f:literal) => {
                                match m {
                                    1 => vnni_k::groups_k::<$f, 1>(&k, ng, a, out, ld),
                                    2 => vnni_k::groups_k::<$f, 2>(&k, ng, a, out, ld),
                                    3 => vnni_k::groups_k::<$f, 3>(&k, ng, a, out, ld),
                                    _ => vnni_k::groups_k::<$f, 4>(&k, ng, a, out, ld),
                                }
                            };
                        }
                        match self.format {
                            QFormat::Q5_K => run!(1),
                            QFormat::Q6_K => run!(2),
                            QFormat::IQ4_XS => run!(3),
                            QFormat::Q2_K => run!(4),
                            QFormat::Q3_K => run!(5),
                            _ => run!(0),
                        }
                    }
                }
            }
            Ok(())
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (k, ng, out, ld);
            Err(no_kernel())
        }
    }

    /// Check a group call and return the group's data.
    fn group_ref(
        &self,
        features: CpuFeatures,
        gs: std::ops::Range<usize>,
        m: usize,
        acts_m: usize,
        acts_nb: usize,
        q8k: bool,
    ) -> Result<GroupRef> {
        let ok = gs.start < gs.end
            && gs.end <= self.groups
            && (1..=PACK_MAX_M).contains(&m)
            && m <= acts_m
            && acts_nb == self.nb
            && q8k == self.format.uses_q8k()
            && pack_supported(features);
        if !ok {
            return Err(Error::invalid(
                "matmul::group_dots",
                format!(
                    "{:?} groups {gs:?} of {}, {m} activation rows of {acts_m} ({acts_nb} {} blocks, want {}), packed kernel {}",
                    self.format,
                    self.groups,
                    if q8k { "Q8_K" } else { "Q8" },
                    self.nb,
                    if pack_supported(features) { "available" } else { "unavailable" }
                ),
            ));
        }
        let (lines, nb, g) = (self.lines, self.nb, gs.start);
        // Empty for the inline layouts (Q4_1, Q4_K: scales in the codes).
        let d = self
            .d
            .get(g * nb * PACK_ROWS..gs.end * nb * PACK_ROWS)
            .unwrap_or(&[]);
        Ok(GroupRef {
            codes: self.codes[g * nb * lines..gs.end * nb * lines]
                .as_ptr()
                .cast(),
            d: d.as_ptr(),
            nb,
        })
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn no_kernel() -> Error {
    Error::invalid(
        "matmul::group_dots",
        "no packed kernel on this architecture",
    )
}

/// The activations of a packed call.
#[derive(Clone, Copy)]
pub(crate) enum Acts<'a> {
    /// 32-element formats.
    Q8(&'a Q8Acts),
    /// Q4_K, Q5_K, Q6_K.
    Q8K(&'a Q8KActs),
}

/// Packed data from a group on (the kernels step by whole groups), as raw
/// pointers: per group, `nb` blocks of codes (64-byte aligned lines) and,
/// for the layouts with a second array, `nb * 16` f16 scales (the others
/// carry theirs in a line of each block; `d` is then not read).
pub(super) struct GroupRef {
    pub codes: *const u8,
    pub d: *const u16,
    pub nb: usize,
}
