//! Scale searches shared by the K-quant and IQ4 reference quantizers.
//!
//! These follow the algorithms of ggml's plain (no importance matrix)
//! reference quantizers as described in `ggml-quants.c` (`make_qx_quants`,
//! `make_q3_quants`, `make_qkx2_quants`, `best_index_int8`), rewritten here
//! from their description; all arithmetic is f32 in the same order, with
//! round-half-to-even `nearest_int`. gguf.quants has no K-quant quantizer, so
//! bit-exactness with ggml's quantizers is *not* checked: tests check the
//! resulting blocks through gguf's dequantizer and by error bounds.
//!
//! Never panics: non-finite inputs give arbitrary (but in-range) codes.

/// Weights below this max |x| are treated as an all-zero group (ggml's
/// `GROUP_MAX_EPS`).
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even, saturating to i32 (NaN -> 0). Equals
/// ggml's `nearest_int` (the 1.5*2^23 trick) for |x| < 2^22, its domain.
#[inline]
pub(crate) fn nearest_int(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// Copy up to N values into a zero-padded array (short input = zero-padded).
#[inline]
pub(crate) fn load<const N: usize>(x: &[f32]) -> [f32; N] {
    let mut b = [0.0f32; N];
    for (d, s) in b.iter_mut().zip(x) {
        *d = *s;
    }
    b
}

/// The element of largest |x| (first on ties, sign kept) and that |x|.
#[inline]
pub(crate) fn signed_amax(x: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    let mut max = 0.0f32;
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Symmetric codes in `[-nmax, nmax-1]` for one group, weight `w = x^2`,
/// ggml's `make_qx_quants(n, nmax, x, L, rmse_type = 1, NULL)`: start from
/// `iscale = -nmax / max`, then try the 18 scales `-(nmax + 0.1 k) / max`
/// (k = ±1..±9) and keep the codes maximising `(Σ w x l)^2 / Σ w l^2`;
/// the returned scale is the weighted least-squares `Σ w x l / Σ w l^2`.
/// `l_out` receives `l + nmax` (so `0..2*nmax`).
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let (max, amax) = signed_amax(x);
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let fnmax = nmax as f32;
    let code = |iscale: f32, v: f32| nearest_int(iscale * v).clamp(-nmax, nmax - 1);
    let sums = |iscale: f32| {
        let mut sumlx = 0.0f32;
        let mut suml2 = 0.0f32;
        for &v in x {
            let l = code(iscale, v) as f32;
            let w = v * v;
            sumlx += w * v * l;
            suml2 += w * l * l;
        }
        (sumlx, suml2)
    };
    let store = |iscale: f32, l_out: &mut [u8]| {
        for (o, &v) in l_out.iter_mut().zip(x) {
            *o = (code(iscale, v) + nmax) as u8;
        }
    };
    let iscale = -fnmax / max;
    store(iscale, l_out);
    let (sumlx, suml2) = sums(iscale);
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9i32..=9 {
        if is == 0 {
            continue;
        }
        let iscale = -(fnmax + 0.1 * is as f32) / max;
        let (sumlx, suml2) = sums(iscale);
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            store(iscale, l_out);
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// Symmetric codes in `[-nmax, nmax-1]` with iterative refinement, ggml's
/// `make_q3_quants(n, nmax, x, L, do_rmse = true)`: start from
/// `round(-nmax/max * x)`, then up to 5 passes where each code is moved to
/// `round(x * Σ_{-i} w l^2 / Σ_{-i} w x l)` (w = x^2) when that raises
/// `(Σ w x l)^2 / Σ w l^2`. Returns `Σ w x l / Σ w l^2`; `l_out` receives
/// `l + nmax`.
pub(crate) fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [u8]) -> f32 {
    let (max, amax) = signed_amax(x);
    if amax < GROUP_MAX_EPS {
        l_out.iter_mut().for_each(|l| *l = 0);
        return 0.0;
    }
    let n = x.len().min(l_out.len()).min(256);
    let mut ls = [0i32; 256];
    let ls = &mut ls[..n];
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (l, &v) in ls.iter_mut().zip(x) {
        *l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        let w = v * v;
        let lf = *l as f32;
        sumlx += w * v * lf;
        suml2 += w * lf * lf;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for (l, &v) in ls.iter_mut().zip(x) {
            let w = v * v;
            let lf = *l as f32;
            let mut slx = sumlx - w * v * lf;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * lf * lf;
                let new_l = nearest_int(v * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *l {
                    let nf = new_l as f32;
                    slx += w * v * nf;
                    sl2 += w * nf * nf;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *l = new_l;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for (o, &l) in l_out.iter_mut().zip(ls.iter()) {
        *o = (l + nmax) as u8;
    }
    sumlx / suml2
}

/// Search parameters of [`make_qkx2_quants`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Qkx2Params {
    /// Largest code (codes are `0..=nmax`).
    pub nmax: i32,
    /// First trial offset added to `nmax` for the inverse scale.
    pub rmin: f32,
    /// Step between trial offsets.
    pub rdelta: f32,
    /// Number of steps (`nstep + 1` trials).
    pub nstep: i32,
    /// Absolute (true) or squared (false) error.
    pub use_mad: bool,
}

/// Asymmetric codes `x ≈ scale * l - min_out` with `l` in `0..=nmax`, ggml's
/// `make_qkx2_quants`: `min = min(0, min x)`, start with
/// `scale = (max - min) / nmax`, then for each trial inverse scale
/// `(nmax + rmin + rdelta*k) / (max - min)` take the rounded codes and the
/// weighted least-squares (scale, min) for them (min clamped to ≤ 0), keeping
/// the one with the smallest weighted error. Returns the scale and writes
/// `-min` (≥ 0) to `the_min`.
pub(crate) fn make_qkx2_quants(
    p: Qkx2Params,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    the_min: &mut f32,
) -> f32 {
    let n = x.len().min(weights.len()).min(l_out.len()).min(256);
    let (x, weights) = (&x[..n], &weights[..n]);
    if n == 0 {
        *the_min = 0.0;
        return 0.0;
    }
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for (&v, &w) in x.iter().zip(weights).skip(1) {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
        sum_w += w;
        sum_x += w * v;
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.iter_mut().for_each(|l| *l = 0);
        *the_min = -min;
        return 0.0;
    }
    let err = |d: f32| if p.use_mad { d.abs() } else { d * d };
    let code = |iscale: f32, v: f32, min: f32| nearest_int(iscale * (v - min)).clamp(0, p.nmax);
    let mut iscale = p.nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for ((o, &v), &w) in l_out.iter_mut().zip(x).zip(weights) {
        let l = code(iscale, v, min);
        *o = l as u8;
        best_error += w * err(scale * l as f32 + min - v);
    }
    let mut laux = [0u8; 256];
    let laux = &mut laux[..n];
    for is in 0..=p.nstep {
        iscale = (p.rmin + p.rdelta * is as f32 + p.nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for ((a, &v), &w) in laux.iter_mut().zip(x).zip(weights) {
            let l = code(iscale, v, min);
            *a = l as u8;
            let lf = l as f32;
            sum_l += w * lf;
            sum_l2 += w * lf * lf;
            sum_xl += w * lf * v;
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for ((&a, &v), &w) in laux.iter().zip(x).zip(weights) {
                cur_error += w * err(this_scale * f32::from(a) + this_min - v);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    scale
}

/// Index of the grid value nearest to `x` (`values` ascending, length ≥ 1;
/// ties go to the upper value; below / above the grid clamp to the ends),
/// as ggml's `best_index_int8`.
pub(crate) fn best_index(values: &[i8], x: f32) -> usize {
    let (Some(&first), Some(&last)) = (values.first(), values.last()) else {
        return 0;
    };
    if x <= f32::from(first) {
        return 0;
    }
    if x >= f32::from(last) {
        return values.len() - 1;
    }
    let (mut lo, mut hi) = (0usize, values.len() - 1);
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if x < f32::from(values[mid]) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    if x - f32::from(values[lo]) < f32::from(values[hi]) - x {
        lo
    } else {
        hi
    }
}
