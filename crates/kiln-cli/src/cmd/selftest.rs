//! `kiln selftest`: run the testkit's parity case tables (every op family
//! against its kiln-core scalar reference) on every backend this machine has:
//! the CPU with its detected SIMD path and with the scalar path forced.

use anyhow::{bail, Result};
use clap::Args;
use kiln_cpu::{CpuContext, CpuFeatures};
use kiln_testkit::{check_all, AllOps, Options, Report};

#[derive(Args)]
pub struct SelftestArgs {
    /// Threads for the CPU backend (0 = all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
    /// Skip the large (prefill-sized, long-context) cases.
    #[arg(long)]
    pub quick: bool,
    /// Print every case, not only failures.
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

fn run_cpu(ctx: &CpuContext, opts: &Options) -> Report {
    use kiln_cpu as k;
    check_all(
        &AllOps {
            add: &|p, a, b, o| k::add::add(ctx, p, a, b, o),
            argmax: &|x| k::argmax::argmax(ctx, x),
            attention: &|p, q, kc, vc, o| k::attention::attention(ctx, p, q, kc, vc, o),
            embedding: &|p, t, ids, o| k::embedding::embedding(ctx, p, t, ids, o),
            matmul: &|p, w, x, o| k::matmul::matmul(ctx, p, w, x, o),
            rms_norm: &|p, x, w, o| k::rms_norm::rms_norm(ctx, p, x, w, o),
            rope: &|p, pos, x| k::rope::rope(ctx, p, pos, x),
            silu_mul: &|p, g, u, o| k::silu_mul::silu_mul(ctx, p, g, u, o),
            softmax: &|p, x, o| k::softmax::softmax(ctx, p, x, o),
        },
        opts,
    )
}

pub fn run(a: SelftestArgs) -> Result<()> {
    let opts = Options {
        quick: a.quick,
        ..Options::default()
    };
    let detected = CpuFeatures::detect();
    let mut backends = vec![("cpu", CpuContext::with_features(a.threads, detected)?)];
    if detected.has_avx2_fma() {
        backends.push((
            "cpu-scalar",
            CpuContext::with_features(a.threads, CpuFeatures::default())?,
        ));
    }
    let (mut passed, mut failed) = (0, 0);
    for (name, ctx) in &backends {
        let r = run_cpu(ctx, &opts);
        for c in &r.results {
            if a.verbose || c.outcome.is_err() {
                match &c.outcome {
                    Ok(()) => println!("{name} {} {}: ok", c.op, c.case),
                    Err(e) => println!("{name} {} {}: FAIL {e}", c.op, c.case),
                }
            }
        }
        println!(
            "{name} ({} threads): {} passed, {} failed",
            ctx.threads(),
            r.passed(),
            r.failed()
        );
        passed += r.passed();
        failed += r.failed();
    }
    println!(
        "selftest seed {:#x} (replay with KILN_TEST_SEED)",
        opts.seed
    );
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} parity cases failed");
    }
    Ok(())
}
