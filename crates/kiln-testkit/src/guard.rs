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

/// Guard pattern of [`GuardedU16`]: neither a value an f16 / bf16 cast
/// makes from a random input often, nor the poison.
pub const SENTINEL_U16: u16 = 0xDEAD;

/// Poison of [`GuardedU16`]'s interior: a NaN in both f16 and bf16.
pub const POISON_U16: u16 = 0xFFFF;

/// [`Guarded`] for 16-bit outputs (f16 / bf16 bits): `n` elements of
/// [`POISON_U16`] between two guard zones of [`SENTINEL_U16`].
#[derive(Debug, Clone)]
pub struct GuardedU16 {
    buf: Vec<u16>,
    n: usize,
}

impl GuardedU16 {
    pub fn new(n: usize) -> Self {
        let mut buf = vec![SENTINEL_U16; n + 2 * GUARD];
        buf[GUARD..GUARD + n].fill(POISON_U16);
        GuardedU16 { buf, n }
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn as_slice(&self) -> &[u16] {
        &self.buf[GUARD..GUARD + self.n]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u16] {
        &mut self.buf[GUARD..GUARD + self.n]
    }

    /// Err counting the overwritten guard elements on each side.
    pub fn check_guards(&self) -> Result<(), String> {
        let bad = |zone: &[u16]| zone.iter().filter(|&&v| v != SENTINEL_U16).count();
        let (before, after) = (bad(&self.buf[..GUARD]), bad(&self.buf[GUARD + self.n..]));
        if before + after == 0 {
            return Ok(());
        }
        Err(format!(
            "guard zone overwritten: {before} element(s) before the output, {after} after"
        ))
    }

    /// True when the interior is still entirely poison.
    pub fn untouched(&self) -> bool {
        self.as_slice().iter().all(|&v| v == POISON_U16)
    }
}

/// A guarded cache of any KV element type: [`Guarded`] for f32, else a
/// [`GuardedU16`] holding f16 or bf16 bits.
#[derive(Debug, Clone)]
pub enum GuardedKv {
    F32(Guarded),
    Half {
        kv: kiln_core::KvType,
        g: GuardedU16,
    },
}

impl GuardedKv {
    /// `n` poisoned elements of `kv` between guard zones.
    pub fn new(kv: kiln_core::KvType, n: usize) -> Self {
        match kv {
            kiln_core::KvType::F32 => GuardedKv::F32(Guarded::new(n)),
            _ => GuardedKv::Half {
                kv,
                g: GuardedU16::new(n),
            },
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
            GuardedKv::Half { g, .. } => g.len(),
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
            GuardedKv::Half { kv: KvType::F16, g } => KvSliceMut::F16(g.as_mut_slice()),
            GuardedKv::Half { g, .. } => KvSliceMut::BF16(g.as_mut_slice()),
        }
    }

    /// The interior, read-only.
    pub fn as_slice(&self) -> kiln_core::KvSlice<'_> {
        use kiln_core::{KvSlice, KvType};
        match self {
            GuardedKv::F32(g) => KvSlice::F32(g.as_slice()),
            GuardedKv::Half { kv: KvType::F16, g } => KvSlice::F16(g.as_slice()),
            GuardedKv::Half { g, .. } => KvSlice::BF16(g.as_slice()),
        }
    }

    /// Err when a guard element changed.
    pub fn check_guards(&self) -> Result<(), String> {
        match self {
            GuardedKv::F32(g) => g.check_guards(),
            GuardedKv::Half { g, .. } => g.check_guards(),
        }
    }

    /// True when the interior is still entirely poison.
    pub fn untouched(&self) -> bool {
        match self {
            GuardedKv::F32(g) => g.untouched(),
            GuardedKv::Half { g, .. } => g.untouched(),
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
        if let GuardedKv::Half { g, .. } = &mut g {
            g.buf[GUARD + 3] = 0;
        }
        assert!(g.check_guards().is_err());
    }

    #[test]
    fn u16_guards() {
        let mut g = GuardedU16::new(3);
        assert!(g.untouched() && g.check_guards().is_ok());
        g.as_mut_slice()[2] = 1;
        assert!(!g.untouched());
        g.buf[GUARD + 3] = 0;
        let e = g.check_guards().unwrap_err();
        assert!(e.contains("0 element(s) before the output, 1 after"), "{e}");
    }

    #[test]
    fn empty_and_from_slice() {
        let g = Guarded::new(0);
        assert!(g.is_empty() && g.check_guards().is_ok());
        let g = Guarded::from_slice(&[1.0, 2.0]);
        assert_eq!(g.as_slice(), &[1.0, 2.0]);
    }
}
