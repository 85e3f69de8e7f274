//! argmax: index of the largest finite value of a vector (greedy sampling).
//!
//! Spec: NaN and ±inf are ignored; ties go to the lowest index; an empty
//! vector or one with no finite value is an error.

use crate::{Error, Result};

/// Check that `len` values can be indexed by a `u32`.
pub fn validate(len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::invalid("argmax", "empty input"));
    }
    if u32::try_from(len).is_err() {
        return Err(Error::invalid(
            "argmax",
            format!("input of {len} values exceeds u32 indices"),
        ));
    }
    Ok(())
}

/// Reference: one scan, strict `>` so the first maximum wins.
pub fn argmax_ref(x: &[f32]) -> Result<u32> {
    validate(x.len())?;
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in x.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    match best {
        Some((i, _)) => Ok(i as u32),
        None => Err(Error::invalid(
            "argmax",
            format!("no finite value among {} inputs", x.len()),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn picks_max_lowest_index_on_ties() {
        assert_eq!(argmax_ref(&[1.0, 3.0, -2.0, 3.0]).unwrap(), 1);
        assert_eq!(argmax_ref(&[-5.0]).unwrap(), 0);
        assert_eq!(argmax_ref(&[-0.0, 0.0]).unwrap(), 0);
    }

    #[test]
    fn ignores_non_finite() {
        let x = [
            f32::NAN,
            f32::INFINITY,
            -1.0,
            f32::NEG_INFINITY,
            2.0,
            f32::NAN,
        ];
        assert_eq!(argmax_ref(&x).unwrap(), 4);
    }

    #[test]
    fn errors() {
        assert!(argmax_ref(&[]).is_err());
        let err = argmax_ref(&[f32::NAN, f32::INFINITY]).unwrap_err();
        assert!(err.to_string().contains("argmax"), "{err}");
    }
}
