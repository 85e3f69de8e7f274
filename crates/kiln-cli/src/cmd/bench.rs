//! `kiln bench`: llama-bench style speed test. `pp N`: N prompt tokens in
//! one go from an empty cache; `tg N`: N tokens generated one at a time from
//! an empty cache. Each test repeats `-r` times; mean ± stddev in t/s.

use crate::common::ModelArgs;
use anyhow::{bail, Result};
use clap::Args;
use kiln::Stream;
use kiln_models::Model;
use std::time::Instant;

#[derive(Args)]
pub struct BenchArgs {
    /// Model file (GGUF). Default: the cached SmolLM2-135M-Instruct Q4_1.
    #[arg(short = 'm', long = "model")]
    pub model: Option<std::path::PathBuf>,
    /// Prompt lengths to test (comma separated; 0 skips).
    #[arg(
        short = 'p',
        long = "n-prompt",
        value_delimiter = ',',
        default_value = "512"
    )]
    pub n_prompt: Vec<usize>,
    /// Generation lengths to test (comma separated; 0 skips).
    #[arg(
        short = 'n',
        long = "n-gen",
        value_delimiter = ',',
        default_value = "128"
    )]
    pub n_gen: Vec<usize>,
    /// Thread counts to test (comma separated; 0 = all cores).
    #[arg(
        short = 't',
        long = "threads",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub threads: Vec<usize>,
    /// Repetitions per test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    pub reps: usize,
    /// Prompt-processing batch size.
    #[arg(short = 'b', long = "batch-size", default_value_t = 512)]
    pub batch: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long = "device", default_value = "auto")]
    pub device: String,
    /// KV cache element type: f32, f16 or bf16.
    #[arg(long = "kv-type", default_value = "f32", value_parser = crate::common::parse_kv_type)]
    pub kv_type: kiln_core::KvType,
    /// Full caches for sliding-window layers instead of rings.
    #[arg(long = "swa-full")]
    pub swa_full: bool,
    /// After the timed runs, one profiled pass of each test: time per op
    /// family (the stream synchronizes after every op while profiling).
    #[arg(long)]
    pub profile: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn print_profile(test: &str, s: &Stream) {
    let p = s.profile();
    let total: f64 = p.iter().map(|r| r.2).sum();
    eprintln!("profile {test} on {} (synchronized per op):", s.device());
    eprintln!(
        "  {:<12} {:>8} {:>10} {:>10} {:>6}",
        "op", "calls", "total ms", "us/call", "share"
    );
    for (op, n, t) in p {
        eprintln!(
            "  {op:<12} {n:>8} {:>10.3} {:>10.2} {:>5.1}%",
            t * 1e3,
            t * 1e6 / n.max(1) as f64,
            100.0 * t / total.max(1e-12)
        );
    }
}

struct Row {
    test: String,
    threads: usize,
    samples: Vec<f64>,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Deterministic, valid token ids (avoid special tokens at the vocab's start).
fn bench_tokens(n: usize, vocab: usize) -> Vec<u32> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (256 + (x % (vocab as u64 - 256).max(1))) as u32
        })
        .collect()
}

fn time_pp(model: &Model, s: &Stream, n: usize, batch: usize) -> Result<f64> {
    let toks = bench_tokens(n, model.config.n_vocab);
    let mut st = model.new_state(s, n + 1, batch, false)?;
    let t = Instant::now();
    model.feed(s, &mut st, &toks)?;
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Greedy generation of `n` tokens, one forward each, starting from one
/// bench token: every step waits for its token id (chosen on the device
/// where there is one), so the figure includes what a real decode loop pays.
fn time_tg(model: &Model, s: &Stream, n: usize) -> Result<f64> {
    let mut tok = bench_tokens(1, model.config.n_vocab)[0];
    let mut st = model.new_state(s, n + 1, 1, false)?;
    let t = Instant::now();
    for _ in 0..n {
        tok = model.feed_greedy(s, &mut st, &[tok])?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.reps == 0 {
        bail!("-r must be at least 1");
    }
    let mut rows = Vec::new();
    let mut desc = (String::new(), 0u64, 0u64, String::new(), String::new());
    for &t in &a.threads {
        let margs = ModelArgs {
            model: a.model.clone(),
            threads: t,
            device: a.device.clone(),
            kv_type: a.kv_type,
            swa_full: a.swa_full,
        };
        let (stream, model) = margs.load()?;
        let (params, bytes) = model.totals;
        desc = (
            model.config.name.clone(),
            bytes,
            params,
            stream.describe(),
            stream.device().to_string(),
        );
        // Warm-up, untimed: one pass of every prompt size (kernel compile or
        // cache load, cuBLAS set-up, scratch growth happen here) and a few
        // decode steps.
        for &n in a.n_prompt.iter().filter(|&&n| n > 0) {
            time_pp(&model, &stream, n, a.batch)?;
        }
        time_tg(&model, &stream, 8)?;
        for &n in a.n_prompt.iter().filter(|&&n| n > 0) {
            let samples = (0..a.reps)
                .map(|_| time_pp(&model, &stream, n, a.batch))
                .collect::<Result<Vec<_>>>()?;
            rows.push(Row {
                test: format!("pp{n}"),
                threads: stream.threads(),
                samples,
            });
            if a.profile {
                stream.set_profiling(true);
                time_pp(&model, &stream, n, a.batch)?;
                print_profile(&format!("pp{n}"), &stream);
                stream.set_profiling(false);
            }
        }
        for &n in a.n_gen.iter().filter(|&&n| n > 0) {
            let samples = (0..a.reps)
                .map(|_| time_tg(&model, &stream, n))
                .collect::<Result<Vec<_>>>()?;
            rows.push(Row {
                test: format!("tg{n}"),
                threads: stream.threads(),
                samples,
            });
            if a.profile {
                stream.set_profiling(true);
                time_tg(&model, &stream, n)?;
                print_profile(&format!("tg{n}"), &stream);
                stream.set_profiling(false);
            }
        }
    }
    if a.json {
        let j: Vec<_> = rows
            .iter()
            .map(|r| {
                let (m, sd) = mean_sd(&r.samples);
                serde_json::json!({"model": desc.0, "size_bytes": desc.1, "params": desc.2, "backend": desc.4.clone(),
                    "kv_type": a.kv_type.name(), "threads": r.threads, "test": r.test, "avg_ts": m, "stddev_ts": sd, "samples_ts": r.samples})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("| model | size | params | backend | threads | test | t/s |");
    println!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
    for r in &rows {
        let (m, sd) = mean_sd(&r.samples);
        println!(
            "| {} | {:.2} MiB | {:.2} M | {} | {} | {} | {m:.2} ± {sd:.2} |",
            desc.0,
            desc.1 as f64 / 1048576.0,
            desc.2 as f64 / 1e6,
            desc.4,
            r.threads,
            r.test
        );
    }
    eprintln!("device: {}, KV cache {}", desc.3, a.kv_type);
    Ok(())
}
