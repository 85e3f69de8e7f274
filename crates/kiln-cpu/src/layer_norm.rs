//! layer_norm on the CPU (spec: [`kiln_core::ops::layer_norm`]): per row the
//! mean and the centred sum of squares accumulated in f64 (two passes, so a
//! large mean does not cancel the variance), then
//! `out = (x - mean) * inv_std * w + b` (centred in f64, scaled in f32); rows spread over the rayon
//! pool when the batch is large.

use crate::rows::for_rows;
use crate::CpuContext;
use kiln_core::ops::layer_norm::LayerNormParams;
use kiln_core::Result;

/// `out[r] = (x[r] - mean) / sqrt(var + eps) * w + b` (`w` 1 and `b` 0 when
/// absent).
pub fn layer_norm(
    ctx: &CpuContext,
    p: &LayerNormParams,
    x: &[f32],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    out: &mut [f32],
) -> Result<()> {
    p.validate(x.len(), w.map(<[f32]>::len), b.map(<[f32]>::len), out.len())?;
    let (dim, eps) = (p.dim as f64, f64::from(p.eps));
    for_rows(ctx, p.dim, x, out, |xr, or| {
        let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / dim;
        let var = xr
            .iter()
            .map(|&v| {
                let c = f64::from(v) - mean;
                c * c
            })
            .sum::<f64>()
            / dim;
        let inv = (1.0 / (var + eps).sqrt()) as f32;
        // Centred in f64: with a large common offset an f32 mean's rounding
        // (|mean| · 2^-24) would be a visible share of a small deviation.
        let c = |v: f32| (f64::from(v) - mean) as f32;
        match (w, b) {
            (Some(w), Some(b)) => {
                for (((o, &v), &wi), &bi) in or.iter_mut().zip(xr).zip(w).zip(b) {
                    *o = c(v) * inv * wi + bi;
                }
            }
            (Some(w), None) => {
                for ((o, &v), &wi) in or.iter_mut().zip(xr).zip(w) {
                    *o = c(v) * inv * wi;
                }
            }
            (None, Some(b)) => {
                for ((o, &v), &bi) in or.iter_mut().zip(xr).zip(b) {
                    *o = c(v) * inv + bi;
                }
            }
            (None, None) => {
                for (o, &v) in or.iter_mut().zip(xr) {
                    *o = c(v) * inv;
                }
            }
        }
    });
    Ok(())
}
