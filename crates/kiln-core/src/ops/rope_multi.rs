//! rope_multi: multi-section rotary position embedding (Qwen2-VL / Qwen3-VL
//! MROPE, Qwen3.5's interleaved IMROPE, the vision tower's 2-D rope), from
//! `input: [seq_len, n_heads, head_dim]` into `output` of the same shape and
//! dtype (f32 or bf16).
//!
//! Spec (mlx-native's `rope_multi`, shared/seeds/001; the mode codes are
//! ggml's `GGML_ROPE_TYPE_*`):
//! - `positions` holds `4 * seq_len` integers (i32 or u32): axis `a`
//!   (0 time, 1 height, 2 width, 3 extra) of token `t` is
//!   `positions[a * seq_len + t]`. Text puts the token index on every axis.
//! - [`RopeMultiMode::Mrope`] / [`RopeMultiMode::Imrope`]: pair
//!   `p < rope_dim / 2` has `sector = p % (s0 + s1 + s2 + s3)` (the sum taken
//!   as at least 1); MROPE maps contiguous sector ranges to axes
//!   (`[0, s0)` → 0, `[s0, s0 + s1)` → 1, then 2, else 3); IMROPE cycles
//!   (`sector % 3 == 0 && sector < 3 s0` → 0, `== 1 && < 3 s1` → 1,
//!   `== 2 && < 3 s2` → 2, else 3). The angle is
//!   `pos[axis] * freq_base^(-2p / rope_dim)`. Pairs `p >= rope_dim / 2`
//!   pass through.
//! - [`RopeMultiMode::Vision`]: `rope_dim == head_dim` and
//!   `s0 + s1 == head_dim / 2`; pair `p < s0` uses axis 0 with local index
//!   `p`, pair `p >= s0` axis 1 with local index `p - s0`; the angle is
//!   `pos[axis] * freq_base^(-2 local / (head_dim / 2))` (the exponent
//!   restarts at each section). Every pair rotates.
//! - A pair is `(x[p], x[p + half])`, rotated as `(a cos - b sin, a sin + b
//!   cos)`. The seed's kernel uses `half = head_dim / 2`
//!   ([`RopePairing::HeadHalf`]); ggml and Hugging Face rotate a partial
//!   rotary prefix with `half = rope_dim / 2` and keep `rope_dim..head_dim`
//!   unchanged ([`RopePairing::RopeHalf`], what GGUF Qwen3.5 files need).
//!   The two agree when `rope_dim == head_dim`.
//!
//! Validation: sizes non-zero, `head_dim` and `rope_dim` even, `rope_dim <=
//! head_dim`, `freq_base` finite and positive, the Vision rules above,
//! positions of length `4 * seq_len` (u32 positions must fit i32), input and
//! output of `seq_len * n_heads * head_dim` elements.
//!
//! [`RopeMultiParams::pack`] is the per-pair table (axis, inverse
//! frequency) that the fast paths and the per-device pack caches share; the
//! reference recomputes everything from the definitions above in f64.

use crate::error::check_len;
use crate::quant::float::{bf16_bits_to_f32, f32_to_bf16_bits};
use crate::{Error, Result};

const OP: &str = "rope_multi";

/// The mode, with ggml's `GGML_ROPE_TYPE_*` codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RopeMultiMode {
    /// Contiguous sections (Qwen2-VL).
    Mrope = 8,
    /// 2-D positions of a vision tower, exponent restarting per section.
    Vision = 24,
    /// Interleaved sections, `sector % 3` (Qwen3.5 / Qwen3.6).
    Imrope = 40,
}

impl RopeMultiMode {
    /// The mode with ggml code `code` (8, 24 or 40).
    pub fn from_code(code: u32) -> Result<RopeMultiMode> {
        match code {
            8 => Ok(RopeMultiMode::Mrope),
            24 => Ok(RopeMultiMode::Vision),
            40 => Ok(RopeMultiMode::Imrope),
            other => Err(Error::invalid(
                OP,
                format!("mode {other} is not MROPE (8), Vision (24) or IMROPE (40)"),
            )),
        }
    }
}

/// Which element a pair's first element `p` is rotated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RopePairing {
    /// `p + head_dim / 2` (the seed's kernel).
    HeadHalf,
    /// `p + rope_dim / 2` (ggml, Hugging Face partial rotary).
    RopeHalf,
}

/// Positions: `4 * seq_len` integers, axis-major.
#[derive(Debug, Clone, Copy)]
pub enum RopePositions<'a> {
    I32(&'a [i32]),
    U32(&'a [u32]),
}

impl RopePositions<'_> {
    pub fn len(&self) -> usize {
        match self {
            RopePositions::I32(v) => v.len(),
            RopePositions::U32(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position `i` (validated: u32 values fit i32).
    pub fn get(&self, i: usize) -> i32 {
        match self {
            RopePositions::I32(v) => v[i],
            RopePositions::U32(v) => v[i] as i32,
        }
    }
}

/// Params of [`rope_multi_ref`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeMultiParams {
    pub head_dim: usize,
    /// Rotated dims: even, `<= head_dim` (`== head_dim` for Vision).
    pub rope_dim: usize,
    pub n_heads: usize,
    pub seq_len: usize,
    pub freq_base: f32,
    pub mode: RopeMultiMode,
    /// Section counts `[s0, s1, s2, s3]` (Vision reads s0 and s1).
    pub sections: [u32; 4],
    pub pairing: RopePairing,
}

/// Per-pair table of a [`RopeMultiParams`]: for pair `p < head_dim / 2`,
/// `axis[p]` (0..4, or [`RopeMultiPack::PASS`] for a pair that is not
/// rotated) and `inv_freq[p]`, the angle per unit of position.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeMultiPack {
    pub axis: Vec<u8>,
    pub inv_freq: Vec<f64>,
    /// Offset of a pair's second element (`half` in the module docs).
    pub half: usize,
    /// Pairs that may rotate: `p < n_pairs` (the rest pass through).
    pub n_pairs: usize,
}

impl RopeMultiPack {
    /// Axis value of a pair that passes through.
    pub const PASS: u8 = u8::MAX;
}

impl RopeMultiParams {
    /// Elements of the input (and output).
    pub fn elements(&self) -> Result<usize> {
        self.seq_len
            .checked_mul(self.n_heads)
            .and_then(|v| v.checked_mul(self.head_dim))
            .ok_or_else(|| Error::invalid(OP, "seq_len * n_heads * head_dim overflows"))
    }

    /// Shape, mode and positions rules of the module docs.
    pub fn validate(
        &self,
        positions: &RopePositions<'_>,
        x_len: usize,
        out_len: usize,
    ) -> Result<()> {
        self.validate_shape(positions.len(), x_len, out_len)?;
        if let RopePositions::U32(v) = positions {
            if let Some(&bad) = v.iter().find(|&&p| p > i32::MAX as u32) {
                return Err(Error::invalid(
                    OP,
                    format!("position {bad} does not fit a signed 32-bit position"),
                ));
            }
        }
        Ok(())
    }

    /// [`validate`](Self::validate) without looking at the position values
    /// (for positions already on a device, as i32): every shape and mode
    /// rule, and `positions_len == 4 * seq_len`.
    pub fn validate_shape(&self, positions_len: usize, x_len: usize, out_len: usize) -> Result<()> {
        if self.head_dim == 0 || self.rope_dim == 0 || self.n_heads == 0 || self.seq_len == 0 {
            return Err(Error::invalid(
                OP,
                format!(
                    "head_dim {}, rope_dim {}, n_heads {}, seq_len {} must all be > 0",
                    self.head_dim, self.rope_dim, self.n_heads, self.seq_len
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) || !self.rope_dim.is_multiple_of(2) {
            return Err(Error::invalid(
                OP,
                format!(
                    "head_dim {} and rope_dim {} must be even",
                    self.head_dim, self.rope_dim
                ),
            ));
        }
        if self.rope_dim > self.head_dim {
            return Err(Error::invalid(
                OP,
                format!(
                    "rope_dim {} exceeds head_dim {}",
                    self.rope_dim, self.head_dim
                ),
            ));
        }
        if !(self.freq_base.is_finite() && self.freq_base > 0.0) {
            return Err(Error::invalid(
                OP,
                format!("freq_base {} must be finite and > 0", self.freq_base),
            ));
        }
        if self.mode == RopeMultiMode::Vision {
            if self.rope_dim != self.head_dim {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "Vision mode rotates every pair: rope_dim {} must equal head_dim {}",
                        self.rope_dim, self.head_dim
                    ),
                ));
            }
            let (s0, s1) = (u64::from(self.sections[0]), u64::from(self.sections[1]));
            if s0 + s1 != (self.head_dim / 2) as u64 {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "Vision mode: sections[0] + sections[1] = {s0} + {s1} must equal head_dim / 2 = {}",
                        self.head_dim / 2
                    ),
                ));
            }
        }
        let n_pos = self
            .seq_len
            .checked_mul(4)
            .ok_or_else(|| Error::invalid(OP, "4 * seq_len overflows"))?;
        check_len(OP, "positions", positions_len, n_pos)?;
        let n = self.elements()?;
        check_len(OP, "input", x_len, n)?;
        check_len(OP, "output", out_len, n)
    }

    /// The axis of pair `p` (`None`: passes through), by the definitions.
    pub fn axis_of(&self, p: usize) -> Option<u32> {
        let s = self.sections;
        match self.mode {
            RopeMultiMode::Vision => {
                if p < self.head_dim / 2 {
                    Some(if (p as u64) < u64::from(s[0]) { 0 } else { 1 })
                } else {
                    None
                }
            }
            RopeMultiMode::Mrope | RopeMultiMode::Imrope => {
                if p >= self.rope_dim / 2 {
                    return None;
                }
                let total: u64 = s.iter().map(|&v| u64::from(v)).sum::<u64>().max(1);
                let sector = p as u64 % total;
                let s = s.map(u64::from);
                Some(if self.mode == RopeMultiMode::Mrope {
                    if sector < s[0] {
                        0
                    } else if sector < s[0] + s[1] {
                        1
                    } else if sector < s[0] + s[1] + s[2] {
                        2
                    } else {
                        3
                    }
                } else if sector.is_multiple_of(3) && sector < 3 * s[0] {
                    0
                } else if sector % 3 == 1 && sector < 3 * s[1] {
                    1
                } else if sector % 3 == 2 && sector < 3 * s[2] {
                    2
                } else {
                    3
                })
            }
        }
    }

    /// `freq_base^(-exponent)` of pair `p`, in f64.
    pub fn inv_freq(&self, p: usize) -> f64 {
        let base = f64::from(self.freq_base);
        match self.mode {
            RopeMultiMode::Vision => {
                let n_dims = (self.head_dim / 2) as f64;
                let local = if (p as u64) < u64::from(self.sections[0]) {
                    p as u64
                } else {
                    p as u64 - u64::from(self.sections[0])
                };
                base.powf(-2.0 * local as f64 / n_dims)
            }
            _ => base.powf(-2.0 * p as f64 / self.rope_dim as f64),
        }
    }

    /// Offset of a pair's second element.
    pub fn half(&self) -> usize {
        match self.pairing {
            RopePairing::HeadHalf => self.head_dim / 2,
            RopePairing::RopeHalf => self.rope_dim / 2,
        }
    }

    /// Pairs whose first element may rotate (the others pass through).
    pub fn n_pairs(&self) -> usize {
        match self.pairing {
            RopePairing::HeadHalf => self.head_dim / 2,
            RopePairing::RopeHalf => self.rope_dim / 2,
        }
    }

    /// The per-pair table (see [`RopeMultiPack`]).
    pub fn pack(&self) -> RopeMultiPack {
        let n = self.n_pairs();
        let mut axis = Vec::with_capacity(n);
        let mut inv_freq = Vec::with_capacity(n);
        for p in 0..n {
            match self.axis_of(p) {
                Some(a) => {
                    axis.push(a as u8);
                    inv_freq.push(self.inv_freq(p));
                }
                None => {
                    axis.push(RopeMultiPack::PASS);
                    inv_freq.push(0.0);
                }
            }
        }
        RopeMultiPack {
            axis,
            inv_freq,
            half: self.half(),
            n_pairs: n,
        }
    }
}

/// Reference (f64 angles and rotations): `out = rope_multi(x)`.
pub fn rope_multi_ref(
    p: &RopeMultiParams,
    positions: &RopePositions<'_>,
    x: &[f32],
    out: &mut [f32],
) -> Result<()> {
    p.validate(positions, x.len(), out.len())?;
    out.copy_from_slice(x);
    let half = p.half();
    for t in 0..p.seq_len {
        for h in 0..p.n_heads {
            let base = (t * p.n_heads + h) * p.head_dim;
            for pair in 0..p.n_pairs() {
                let Some(axis) = p.axis_of(pair) else {
                    continue;
                };
                let pos = positions.get(axis as usize * p.seq_len + t);
                let (s, c) = (f64::from(pos) * p.inv_freq(pair)).sin_cos();
                let (a, b) = (f64::from(x[base + pair]), f64::from(x[base + pair + half]));
                out[base + pair] = (a * c - b * s) as f32;
                out[base + pair + half] = (a * s + b * c) as f32;
            }
        }
    }
    Ok(())
}

/// Reference for bf16 tensors (bits): widen, [`rope_multi_ref`], round to
/// nearest even.
pub fn rope_multi_ref_bf16(
    p: &RopeMultiParams,
    positions: &RopePositions<'_>,
    x: &[u16],
    out: &mut [u16],
) -> Result<()> {
    p.validate(positions, x.len(), out.len())?;
    let xf: Vec<f32> = x.iter().map(|&b| bf16_bits_to_f32(b)).collect();
    let mut of = vec![0.0f32; xf.len()];
    rope_multi_ref(p, positions, &xf, &mut of)?;
    for (o, v) in out.iter_mut().zip(of) {
        *o = f32_to_bf16_bits(v);
    }
    Ok(())
}

#[cfg(test)]
#[path = "rope_multi_tests.rs"]
mod tests;
