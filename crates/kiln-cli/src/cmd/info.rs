//! `kiln info FILE`: metadata, tensor table and per-type summary (tensor
//! count, weights, bytes, share of the file, bits per weight) of a GGUF file,
//! with `general.file_type` named as llama.cpp names it.

use anyhow::{Context, Result};
use clap::Args;
use kiln_core::gguf::{GgufFile, Value};
use kiln_models::quantize::rules::llama_ftype_name;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct InfoArgs {
    /// GGUF file (default: the default model).
    pub file: Option<PathBuf>,
    /// Print every tensor (default: the first 40 and a summary).
    #[arg(long)]
    pub all: bool,
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let one: String = s.chars().take(80).collect::<String>().replace('\n', "\\n");
            if s.chars().count() > 80 {
                format!("{one:?}... ({} chars)", s.chars().count())
            } else {
                format!("{one:?}")
            }
        }
        Value::Array(a) => {
            let head: Vec<String> = a.items.iter().take(6).map(show).collect();
            let more = if a.items.len() > 6 { ", ..." } else { "" };
            format!(
                "[{}{more}] ({} x {:?})",
                head.join(", "),
                a.items.len(),
                a.elem_type
            )
        }
        other => format!("{}", other),
    }
}

pub fn run(a: InfoArgs) -> Result<()> {
    let path = crate::common::model_path(&a.file)?;
    let f = GgufFile::open(&path).with_context(|| format!("reading {}", path.display()))?;
    println!("file: {}", path.display());
    println!(
        "GGUF v{}, alignment {}, {} metadata keys, {} tensors",
        f.version(),
        f.alignment(),
        f.metadata().len(),
        f.tensors().len()
    );
    if let Some(v) = f.get("general.file_type") {
        let id = v.as_u32();
        let name = id.and_then(llama_ftype_name).unwrap_or("unknown to kiln");
        println!("file type: {name} ({v})");
    }
    println!("\nmetadata:");
    for (k, v) in f.metadata() {
        println!("  {k:<44} {}", show(v));
    }
    println!("\ntensors:");
    println!(
        "  {:<36} {:<6} {:>18} {:>12}",
        "name", "type", "shape", "bytes"
    );
    let mut by_type: BTreeMap<&str, (usize, u64, u64)> = BTreeMap::new();
    let (mut total_b, mut total_n) = (0u64, 0u64);
    for (i, t) in f.tensors().iter().enumerate() {
        if a.all || i < 40 {
            println!(
                "  {:<36} {:<6} {:>18} {:>12}",
                t.name,
                t.dtype.name(),
                format!("{:?}", t.shape()),
                t.n_bytes
            );
        }
        let e = by_type.entry(t.dtype.name()).or_default();
        e.0 += 1;
        e.1 += t.n_elements();
        e.2 += t.n_bytes;
        total_b += t.n_bytes;
        total_n += t.n_elements();
    }
    if !a.all && f.tensors().len() > 40 {
        println!(
            "  ... {} more (--all shows every tensor)",
            f.tensors().len() - 40
        );
    }
    println!("\ntypes:");
    println!(
        "  {:<6} {:>7} {:>12} {:>14} {:>10} {:>6} {:>11}",
        "type", "tensors", "weights", "bytes", "MiB", "%", "bits/weight"
    );
    let row = |name: &str, count: usize, n: u64, b: u64| {
        println!(
            "  {name:<6} {count:>7} {n:>12} {b:>14} {:>10.2} {:>5.1}% {:>11.3}",
            b as f64 / 1048576.0,
            100.0 * b as f64 / total_b.max(1) as f64,
            b as f64 * 8.0 / n.max(1) as f64
        );
    };
    for (name, (count, n, b)) in &by_type {
        row(name, *count, *n, *b);
    }
    row("total", f.tensors().len(), total_n, total_b);
    Ok(())
}
