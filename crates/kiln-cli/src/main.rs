//! `kiln`: run, chat, serve, bench, perplexity, inspect, quantize and
//! synthesize quantized LLMs.
//! Flags follow llama.cpp's names (`-m`, `-p`, `-n`, `-c`, `-t`, `--temp`, ...).

mod cmd;
mod common;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Quantized LLM inference on CPU (CUDA next)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt.
    Run(cmd::run::RunArgs),
    /// Interactive multi-turn chat using the model's chat template.
    Chat(cmd::chat::ChatArgs),
    /// Show a GGUF file's metadata and tensors.
    Info(cmd::info::InfoArgs),
    /// Perplexity of a text file (llama.cpp's method).
    Perplexity(cmd::perplexity::PplArgs),
    /// Prompt-processing and generation speed, llama-bench style.
    Bench(cmd::bench::BenchArgs),
    /// HTTP server with llama.cpp-server / OpenAI-compatible endpoints.
    Serve(cmd::serve::ServeArgs),
    /// Run the parity case tables on every backend found.
    Selftest(cmd::selftest::SelftestArgs),
    /// Convert a GGUF file to another quantization type (llama-quantize's job).
    Quantize(cmd::quantize::QuantizeArgs),
    /// Write a llama GGUF of a given shape and type with random weights.
    Synth(cmd::synth::SynthArgs),
}

fn main() {
    #[cfg(unix)]
    // SAFETY: restoring the default SIGPIPE action at start-up, before any
    // thread exists, so `kiln info | head` ends quietly like other Unix tools
    // instead of failing a write.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("error: internal error (please report): {info}");
    }));
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Chat(a) => cmd::chat::run(a),
        Command::Info(a) => cmd::info::run(a),
        Command::Perplexity(a) => cmd::perplexity::run(a),
        Command::Bench(a) => cmd::bench::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Selftest(a) => cmd::selftest::run(a),
        Command::Quantize(a) => cmd::quantize::run(a),
        Command::Synth(a) => cmd::synth::run(a),
    };
    if let Err(e) = r {
        // One line: the chain of causes joined, no backtrace.
        let msg = e
            .chain()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
