//! Quantize little-endian f32 rows from stdin with kiln's reference
//! quantizer and write the blocks to stdout:
//! `cargo run -q -p kiln-core --example quantize_rows -- Q4_K < x.f32 > x.q`
//!
//! Used by scripts/fixtures/make_ggml_quant_fixtures.py to feed kiln's
//! quantized bytes to gguf.quants' dequantizer (formats gguf cannot quantize).

use kiln_core::quant::quantize_row;
use kiln_core::{DType, Error};
use std::io::{Read, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const OP: &str = "quantize_rows";
    let name = std::env::args()
        .nth(1)
        .ok_or_else(|| Error::invalid(OP, "usage: quantize_rows TYPE < f32 > bytes"))?;
    let dtype = DType::from_name(&name)
        .ok_or_else(|| Error::invalid(OP, format!("unknown type {name:?}")))?;
    let mut raw = Vec::new();
    std::io::stdin().read_to_end(&mut raw)?;
    if raw.len() % 4 != 0 {
        return Err(
            Error::invalid(OP, format!("stdin has {} bytes, not whole f32s", raw.len())).into(),
        );
    }
    let x: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let mut out = vec![0u8; dtype.row_bytes(OP, x.len())?];
    quantize_row(dtype, &x, &mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(())
}
