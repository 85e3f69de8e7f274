//! Look rows up with kiln's reference embedding (`ops::embedding::
//! embedding_ref`: validation, then the scalar dequantizer of the format)
//! and write them to stdout as little-endian f32:
//! `cargo run -q -p kiln-core --example embedding_rows -- Q4_K N_VOCAB DIM table.bin ids.u32 > out.f32`
//!
//! `table.bin`: `N_VOCAB` rows of raw GGML bytes; `ids.u32`: little-endian
//! u32 ids, each `< N_VOCAB`. Used by scripts/check-cuda-embedding.py for the
//! reference values of the CUDA kernels it runs on the host.

use kiln_core::ops::embedding::{embedding_ref, EmbeddingParams};
use kiln_core::{DType, Error};
use std::io::Write;

const OP: &str = "embedding_rows";

fn arg(args: &[String], i: usize) -> Result<&str, Error> {
    args.get(i).map(String::as_str).ok_or_else(|| {
        Error::invalid(
            OP,
            "usage: embedding_rows TYPE N_VOCAB DIM table.bin ids.u32 > out.f32",
        )
    })
}

fn number(s: &str) -> Result<usize, Error> {
    s.parse()
        .map_err(|_| Error::invalid(OP, format!("{s:?} is not a number")))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = arg(&args, 0)?;
    let dtype = DType::from_name(name)
        .ok_or_else(|| Error::invalid(OP, format!("unknown type {name:?}")))?;
    let p = EmbeddingParams {
        n_vocab: number(arg(&args, 1)?)?,
        dim: number(arg(&args, 2)?)?,
        dtype,
    };
    let table = std::fs::read(arg(&args, 3)?)?;
    let raw = std::fs::read(arg(&args, 4)?)?;
    if raw.len() % 4 != 0 {
        return Err(Error::invalid(
            OP,
            format!("ids file has {} bytes, not whole u32s", raw.len()),
        )
        .into());
    }
    let ids: Vec<u32> = raw
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let n = ids
        .len()
        .checked_mul(p.dim)
        .ok_or_else(|| Error::invalid(OP, "ids * dim overflows"))?;
    let mut out = vec![0.0f32; n];
    embedding_ref(&p, &table, &ids, &mut out)?;
    let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}
