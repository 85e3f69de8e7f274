//! kiln::ops dispatch of `mul` and `cast`: the same inputs through a CPU
//! stream and, where there is one, a CUDA stream, each against the kiln-core
//! reference (the kernels themselves are held to the testkit tables by
//! kiln-cpu's and kiln-cuda's parity tests; this checks the tensors,
//! dtypes, prefixes and errors around them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use kiln::ops::{self, MulParams};
use kiln::{Stream, Tensor};
use kiln_core::ops::cast::{cast_bits, CAST_DTYPES};
use kiln_core::quant::float::{bf16_bits_to_f32, f16_bits_to_f32};
use kiln_core::DType;
use kiln_testkit::{case_rng, compare, rand_f32, test_seed, Tol};
use rand::Rng;

fn streams() -> Vec<Stream> {
    let mut v = vec![Stream::cpu(2).unwrap()];
    match Stream::cuda(0) {
        Ok(s) => v.push(s),
        Err(e) => eprintln!("SKIPPED on CUDA: no CUDA stream ({e})"),
    }
    v
}

#[test]
fn mul_matches_the_reference_and_leaves_the_rest() {
    let mut rng = case_rng(test_seed(), "kiln-mul", 0);
    let (n, spare) = (2051, 13);
    let a = rand_f32(&mut rng, n + spare, -4.0, 4.0);
    let b = rand_f32(&mut rng, n + spare, -2.0, 2.0);
    let p = MulParams { n };
    let mut want = vec![0.0; n];
    kiln_core::ops::mul::mul_ref(&p, &a[..n], &b[..n], &mut want).unwrap();
    for s in streams() {
        let dev = s.device();
        let t = |x: &[f32]| Tensor::from_f32(&s, &[x.len()], x.to_vec()).unwrap();
        let mut out = t(&vec![f32::NAN; n + spare]);
        ops::mul(&s, &p, &t(&a), &t(&b), &mut out).unwrap();
        let got = out.to_f32_vec(&s).unwrap();
        compare("mul", &got[..n], &want, Tol::EXACT).unwrap();
        assert!(
            got[n..].iter().all(|v| v.is_nan()),
            "{dev}: mul wrote past n"
        );
        let e = ops::mul(
            &s,
            &MulParams { n: n + spare + 1 },
            &t(&a),
            &t(&b),
            &mut out,
        )
        .unwrap_err();
        assert!(e.to_string().contains("mul"), "{dev}: {e}");
    }
}

/// A tensor of `dtype` holding `bits` (f32 bits, or 16-bit patterns).
fn tensor(s: &Stream, dtype: DType, bits: &[u32]) -> Tensor {
    if dtype == DType::F32 {
        let v = bits.iter().map(|&b| f32::from_bits(b)).collect();
        return Tensor::from_f32(s, &[bits.len()], v).unwrap();
    }
    let bytes = bits
        .iter()
        .flat_map(|&b| (b as u16).to_le_bytes())
        .collect();
    Tensor::from_bytes(s, dtype, &[bits.len()], bytes).unwrap()
}

/// f32 bits of a `dtype` element as `Tensor::to_f32_vec` widens it.
fn widened(dtype: DType, bits: u32) -> u32 {
    match dtype {
        DType::F16 => f16_bits_to_f32(bits as u16).to_bits(),
        DType::BF16 => bf16_bits_to_f32(bits as u16).to_bits(),
        _ => bits,
    }
}

#[test]
fn cast_picks_the_direction_from_the_dtypes() {
    let mut rng = case_rng(test_seed(), "kiln-cast", 0);
    let n = 1537;
    // Ordinary values, ties, subnormals, NaN payloads: random bits.
    let f32_in: Vec<u32> = (0..n)
        .map(|i| match i % 3 {
            0 => rng.gen(),
            1 => rng.gen_range(-70000.0f32..70000.0).to_bits(),
            _ => rng.gen_range(-1e-5f32..1e-5).to_bits(),
        })
        .collect();
    let h_in: Vec<u32> = (0..n).map(|_| u32::from(rng.gen::<u16>())).collect();
    for s in streams() {
        let dev = s.device();
        for src in CAST_DTYPES {
            let x = if src == DType::F32 { &f32_in } else { &h_in };
            let st = tensor(&s, src, x);
            for dst in CAST_DTYPES {
                let mut dt = tensor(&s, dst, &vec![0; n]);
                ops::cast(&s, &st, &mut dt).unwrap();
                let got: Vec<u32> = dt
                    .to_f32_vec(&s)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                for (i, (&g, &b)) in got.iter().zip(x).enumerate() {
                    let w = widened(dst, cast_bits(src, dst, b));
                    assert_eq!(
                        g, w,
                        "{dev}: {src}->{dst} [{i}] {b:#x}: got {g:#x}, want {w:#x}"
                    );
                }
            }
        }
        // Length mismatch and a quantized dtype: typed errors naming them.
        let st = tensor(&s, DType::F32, &f32_in);
        let mut short = tensor(&s, DType::F16, &vec![0; n - 1]);
        let e = ops::cast(&s, &st, &mut short).unwrap_err();
        assert!(e.to_string().contains("cast: dst has length"), "{dev}: {e}");
        let q = Tensor::from_bytes(&s, DType::Q8_0, &[32], vec![0; 34]).unwrap();
        let mut out = tensor(&s, DType::F32, &[0; 32]);
        let e = ops::cast(&s, &q, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("unsupported dtype Q8_0"),
            "{dev}: {e}"
        );
    }
}
