//! Guarded output buffers: an interior of `n` f32 poisoned with NaN, between
//! two guard zones filled with a sentinel bit pattern. After an op writes the
//! interior, [`Guarded::check_guards`] catches out-of-bounds writes and the
//! comparison catches elements left unwritten (still NaN).

/// Guard elements on each side; wider than any SIMD tail or 32-wide block.
pub const GUARD: usize = 64;

/// Bit pattern of the guard sentinel: a finite, distinctive value
/// (-6.2598534e18) that no op produces by accident.
pub const SENTINEL_BITS: u32 = 0xDEAD_BEEF;

/// The sentinel as an f32.
pub fn sentinel() -> f32 {
    f32::from_bits(SENTINEL_BITS)
}

/// An output buffer with guard zones; see the module docs.
#[derive(Debug, Clone)]
pub struct Guarded {
    buf: Vec<f32>,
    n: usize,
}

impl Guarded {
    /// `n` NaN-poisoned elements between two guard zones.
    pub fn new(n: usize) -> Self {
        let mut buf = vec![sentinel(); n + 2 * GUARD];
        buf[GUARD..GUARD + n].fill(f32::NAN);
        Guarded { buf, n }
    }

    /// Guarded buffer whose interior starts as a copy of `init` (for in-place ops).
    pub fn from_slice(init: &[f32]) -> Self {
        let mut g = Guarded::new(init.len());
        g.as_mut_slice().copy_from_slice(init);
        g
    }

    /// Interior length.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn as_slice(&self) -> &[f32] {
        &self.buf[GUARD..GUARD + self.n]
    }

    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[GUARD..GUARD + self.n]
    }

    /// Err naming every overwritten guard element (first few listed) and side.
    pub fn check_guards(&self) -> Result<(), String> {
        let bad = |zone: &[f32]| -> Vec<usize> {
            zone.iter()
                .enumerate()
                .filter(|(_, v)| v.to_bits() != SENTINEL_BITS)
                .map(|(i, _)| i)
                .collect()
        };
        let before = bad(&self.buf[..GUARD]);
        let after = bad(&self.buf[GUARD + self.n..]);
        if before.is_empty() && after.is_empty() {
            return Ok(());
        }
        let mut msg = String::from("guard zone overwritten:");
        if !before.is_empty() {
            let idx: Vec<String> = before
                .iter()
                .take(8)
                .map(|&i| format!("{}", i as isize - GUARD as isize))
                .collect();
            msg += &format!(
                " {} element(s) before the output (offsets {})",
                before.len(),
                idx.join(", ")
            );
        }
        if !after.is_empty() {
            let idx: Vec<String> = after
                .iter()
                .take(8)
                .map(|&i| format!("{}", self.n + i))
                .collect();
            msg += &format!(
                " {} element(s) after the output (indices {})",
                after.len(),
                idx.join(", ")
            );
        }
        Err(msg)
    }

    /// True when the interior is still entirely poison (an op that returned
    /// an error must not have written anything).
    pub fn untouched(&self) -> bool {
        self.as_slice()
            .iter()
            .all(|v| v.to_bits() == f32::NAN.to_bits())
    }
}

/// Sentinel of 16-bit guard zones: a finite value in both f16 and bf16
/// that no rounding of the cases' values produces by accident.
pub const SENTINEL_16: u16 = 0xDEAD;
/// Poison of 16-bit interiors: NaN in both f16 and bf16.
pub const POISON_16: u16 = 0xFFFF;

/// A guarded cache of any KV element type: [`Guarded`] for f32, else `n`
/// 16-bit elements poisoned with [`POISON_16`] between zones of
/// [`SENTINEL_16`].
#[derive(Debug, Clone)]
pub enum GuardedKv {
    F32(Guarded),
    Half {
        kv: kiln_core::KvType,
        buf: Vec<u16>,
        n: usize,
    },
}

impl GuardedKv {
    /// `n` poisoned elements of `kv` between guard zones.
    pub fn new(kv: kiln_core::KvType, n: usize) -> Self {
        match kv {
            kiln_core::KvType::F32 => GuardedKv::F32(Guarded::new(n)),
            _ => {
                let mut buf = vec![SENTINEL_16; n + 2 * GUARD];
                buf[GUARD..GUARD + n].fill(POISON_16);
                GuardedKv::Half { kv, buf, n }
            }
        }
    }

    pub fn kv_type(&self) -> kiln_core::KvType {
        match self {
            GuardedKv::F32(_) => kiln_core::KvType::F32,
            GuardedKv::Half { kv, .. } => *kv,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            GuardedKv::F32(g) => g.len(),
            GuardedKv::Half { n, .. } => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The interior, for the op under test to write.
    pub fn as_mut(&mut self) -> kiln_core::KvSliceMut<'_> {
        use kiln_core::{KvSliceMut, KvType};
        match self {
            GuardedKv::F32(g) => KvSliceMut::F32(g.as_mut_slice()),
            GuardedKv::Half { kv, buf, n } => {
                let s = &mut buf[GUARD..GUARD + *n];
                match kv {
                    KvType::F16 => KvSliceMut::F16(s),
                    _ => KvSliceMut::BF16(s),
                }
            }
        }
    }

    /// The interior, read-only.
    pub fn as_slice(&self) -> kiln_core::KvSlice<'_> {
        use kiln_core::{KvSlice, KvType};
        match self {
            GuardedKv::F32(g) => KvSlice::F32(g.as_slice()),
            GuardedKv::Half { kv, buf, n } => {
                let s = &buf[GUARD..GUARD + *n];
                match kv {
                    KvType::F16 => KvSlice::F16(s),
                    _ => KvSlice::BF16(s),
                }
            }
        }
    }

    /// Err when a guard element changed.
    pub fn check_guards(&self) -> Result<(), String> {
        match self {
            GuardedKv::F32(g) => g.check_guards(),
            GuardedKv::Half { buf, n, .. } => {
                let bad = buf[..GUARD]
                    .iter()
                    .chain(&buf[GUARD + n..])
                    .filter(|&&v| v != SENTINEL_16)
                    .count();
                if bad == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "guard zone overwritten: {bad} element(s) around a 16-bit output of {n}"
                    ))
                }
            }
        }
    }

    /// True when the interior is still entirely poison.
    pub fn untouched(&self) -> bool {
        match self {
            GuardedKv::F32(g) => g.untouched(),
            GuardedKv::Half { buf, n, .. } => buf[GUARD..GUARD + n].iter().all(|&v| v == POISON_16),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn detects_overruns_and_poison() {
        let mut g = Guarded::new(5);
        assert!(g.as_slice().iter().all(|v| v.is_nan()));
        assert!(g.untouched());
        g.as_mut_slice().fill(1.0);
        assert!(g.check_guards().is_ok());
        assert!(!g.untouched());
        g.buf[GUARD + 5] = 0.0;
        g.buf[GUARD - 1] = 0.0;
        let e = g.check_guards().unwrap_err();
        assert!(
            e.contains("before the output (offsets -1)") && e.contains("indices 5"),
            "{e}"
        );
    }

    #[test]
    fn guarded_kv_detects_overruns() {
        let mut g = GuardedKv::new(kiln_core::KvType::BF16, 3);
        assert!(g.untouched() && g.check_guards().is_ok());
        assert!(g.as_slice().to_f32().iter().all(|v| v.is_nan()));
        if let kiln_core::KvSliceMut::BF16(s) = g.as_mut() {
            s[0] = 0;
        }
        assert!(!g.untouched());
        if let GuardedKv::Half { buf, .. } = &mut g {
            buf[GUARD + 3] = 0;
        }
        assert!(g.check_guards().is_err());
    }

    #[test]
    fn empty_and_from_slice() {
        let g = Guarded::new(0);
        assert!(g.is_empty() && g.check_guards().is_ok());
        let g = Guarded::from_slice(&[1.0, 2.0]);
        assert_eq!(g.as_slice(), &[1.0, 2.0]);
    }
}
