//! `kiln quantize IN.gguf OUT.gguf --type T`: llama-quantize's job without an
//! importance matrix. The rules and the writer live in
//! `kiln_models::quantize`; this file parses flags and prints progress.

use anyhow::{bail, Context, Result};
use clap::Args;
use kiln_core::DType;
use kiln_models::quantize::{self, FileType, QuantizeParams, TensorPlan};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct QuantizeArgs {
    /// Input GGUF file (any tensor types kiln reads).
    pub input: PathBuf,
    /// Output GGUF file (written via a temporary file, renamed at the end).
    pub output: PathBuf,
    /// Target type, as llama-quantize names it: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
    /// Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K,
    /// IQ4_NL, IQ4_XS, F16, BF16, F32 (Q3_K/Q4_K/Q5_K = the _M mixes).
    #[arg(long = "type", short = 'T')]
    pub ftype: String,
    /// No mixture: every quantizable tensor gets the base type.
    #[arg(long)]
    pub pure: bool,
    /// Type of output.weight (a GGML type name, e.g. Q8_0).
    #[arg(long = "output-tensor-type")]
    pub output_tensor_type: Option<String>,
    /// Type of token_embd.weight (a GGML type name).
    #[arg(long = "token-embedding-type")]
    pub token_embedding_type: Option<String>,
    /// Print the plan and sizes; write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
}

fn ggml_type(flag: &str, s: &str) -> Result<DType> {
    match DType::from_name(s) {
        Some(t) => Ok(t),
        None => bail!("{flag} {s:?}: unknown GGML type"),
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn describe(i: usize, n: usize, t: &TensorPlan) -> String {
    let shape: Vec<String> = t.dims.iter().map(u64::to_string).collect();
    let what = if t.choice.convert {
        format!(
            "{:>6} -> {:<6} {:>9.3} MiB -> {:>9.3} MiB",
            t.from.name(),
            t.choice.dtype.name(),
            t.bytes_in as f64 / MIB,
            t.bytes_out as f64 / MIB
        )
    } else {
        format!(
            "{:>6}    copy   {:>9.3} MiB",
            t.from.name(),
            t.bytes_in as f64 / MIB
        )
    };
    format!(
        "[{:>4}/{n}] {:<36} [{:>18}] {what}",
        i + 1,
        t.name,
        shape.join(", ")
    )
}

pub fn run(a: QuantizeArgs) -> Result<()> {
    let ftype = FileType::parse(&a.ftype).map_err(anyhow::Error::msg)?;
    let mut params = QuantizeParams::new(ftype);
    params.pure = a.pure;
    params.threads = a.threads;
    params.output_tensor_type = a
        .output_tensor_type
        .as_deref()
        .map(|s| ggml_type("--output-tensor-type", s))
        .transpose()?;
    params.token_embedding_type = a
        .token_embedding_type
        .as_deref()
        .map(|s| ggml_type("--token-embedding-type", s))
        .transpose()?;
    params.validate()?;
    quantize::check_paths(&a.input, &a.output)?;

    let f = kiln_core::gguf::GgufFile::open(&a.input)
        .with_context(|| format!("reading {}", a.input.display()))?;
    let plan = quantize::plan(&f, &params)?;
    drop(f);
    for t in &plan.tensors {
        if let Some(wanted) = t.choice.fallback_from {
            eprintln!(
                "warning: {}: row length {} is not a multiple of the {wanted} block ({}), using {}",
                t.name,
                t.dims.first().copied().unwrap_or(0),
                wanted.block_size(),
                t.choice.dtype
            );
        }
    }
    let n_req = plan.n_requantized();
    if n_req > 0 {
        eprintln!(
            "note: requantizing {n_req} tensors from a quantized type: quality is bounded by the input's"
        );
    }
    println!(
        "quantize: {} -> {} as {} (file type {}), {} tensors",
        a.input.display(),
        a.output.display(),
        ftype,
        ftype.id(),
        plan.tensors.len()
    );
    let n = plan.tensors.len();
    let t0 = Instant::now();
    let plan = if a.dry_run {
        for (i, t) in plan.tensors.iter().enumerate() {
            println!("{}", describe(i, n, t));
        }
        plan
    } else {
        quantize::quantize_file(&a.input, &a.output, &params, &mut |i, t| {
            println!("{}", describe(i, n, t));
        })
        .with_context(|| format!("quantizing {}", a.input.display()))?
    };
    let n_el = plan.n_elements().max(1) as f64;
    println!(
        "model size: {:>9.2} MiB ({:.2} bits/weight)",
        plan.bytes_in() as f64 / MIB,
        plan.bytes_in() as f64 * 8.0 / n_el
    );
    println!(
        "quant size: {:>9.2} MiB ({:.2} bits/weight)",
        plan.bytes_out() as f64 / MIB,
        plan.bytes_out() as f64 * 8.0 / n_el
    );
    let nf = plan.n_fallback();
    if nf > 0 {
        eprintln!("warning: {nf} of {n} tensors required fallback quantization");
    }
    if a.dry_run {
        println!("dry run: nothing written");
    } else {
        println!(
            "wrote {} in {:.1} s",
            a.output.display(),
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
