//! `kiln selftest`: run the testkit's parity case tables (every op family
//! against its kiln-core scalar reference) on every backend this machine has:
//! the CPU with its detected SIMD path and with the scalar path forced, and
//! the GPU when there is one (every family has a CUDA kernel).

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
    /// Backends to test: all (every backend found), cpu, or cuda.
    #[arg(long = "device", default_value = "all")]
    pub device: String,
}

fn run_cpu(ctx: &CpuContext, opts: &Options) -> Report {
    use kiln_cpu as k;
    use kiln_testkit::cases::qk_norm_rope_kv::Rows;
    check_all(
        &AllOps {
            add: &|p, a, b, o| k::add::add(ctx, p, a, b, o),
            add_rows: &|p, x, b| k::add_rows::add_rows(ctx, p, x, b),
            argmax: &|x| k::argmax::argmax(ctx, x),
            attention: &|p, q, kc, vc, o| k::attention::attention(ctx, p, q, kc, vc, o),
            copy_rows: &|p, src, dst| k::copy_rows::copy_rows_kv(ctx, p, src, dst),
            cast: &|p, src, dst| k::cast::cast(ctx, p, src, dst),
            embedding: &|p, t, ids, o| k::embedding::embedding(ctx, p, t, ids, o),
            gelu_mul: &|p, g, u, o| k::gelu_mul::gelu_mul(ctx, p, g, u, o),
            matmul: &|p, w, x, o| k::matmul::matmul(ctx, p, w, x, o),
            matmul_id: &|p, w, x, ids, o| k::matmul_id::matmul_id(ctx, p, w, x, ids, o),
            matmul_id_swiglu: &|p, g, u, x, ids, o| {
                k::matmul_id::matmul_id_swiglu(ctx, p, g, u, x, ids, o)
            },
            moe_combine: &|p, y, w, res, o| k::moe_combine::moe_combine(ctx, p, y, w, res, o),
            moe_route: &|p, l, b, ids, w| k::moe_route::moe_route(ctx, p, l, b, ids, w),
            mul: &|p, a, b, o| k::mul::mul(ctx, p, a, b, o),
            norm_rope: &|p, x, w, f, pos, o| k::norm_rope::norm_rope(ctx, p, x, w, f, pos, o),
            qk_norm_rope_kv: &|rows, p, io| match rows {
                Rows::Params => k::qk_norm_rope_kv::qk_norm_rope_kv(ctx, p, io),
                Rows::FirstPosition => k::qk_norm_rope_kv::qk_norm_rope_kv_at(ctx, p, io),
            },
            rms_norm: &|p, x, w, o| k::rms_norm::rms_norm(ctx, p, x, w, o),
            rope: &|p, pos, x| k::rope::rope(ctx, p, pos, x),
            rope_factors: &|p, f, pos, x| k::rope::rope_with_factors(ctx, p, Some(f), pos, x),
            rope_multi: &|p, pos, x, o| k::rope_multi::rope_multi(ctx, p, &p.pack(), pos, x, o),
            rope_multi_bf16: &|p, pos, x, o| {
                k::rope_multi::rope_multi_bf16(ctx, p, &p.pack(), pos, x, o)
            },
            sample: &|p, x, ids, u| k::sample::sample_full(ctx, p, x, ids, u),
            scale: &|p, x, o| k::scale::scale(ctx, p, x, o),
            sigmoid_mul: &|p, g, u, o| k::sigmoid_mul::sigmoid_mul(ctx, p, g, u, o),
            silu_mul: &|p, g, u, o| k::silu_mul::silu_mul(ctx, p, g, u, o),
            softmax: &|p, x, o| k::softmax::softmax(ctx, p, x, o),
            layer_norm: &|p, x, w, b, o| k::layer_norm::layer_norm(ctx, p, x, w, b, o),
            l2_norm: &|p, x, o| k::l2_norm::l2_norm(ctx, p, x, o),
            softcap: &|p, x, o| k::softcap::softcap(ctx, p, x, o),
        },
        opts,
    )
}

fn print(name: &str, r: &Report, verbose: bool) {
    for c in &r.results {
        if verbose || c.outcome.is_err() {
            match &c.outcome {
                Ok(()) => println!("{name} {} {}: ok", c.op, c.case),
                Err(e) => println!("{name} {} {}: FAIL {e}", c.op, c.case),
            }
        }
    }
}

pub fn run(a: SelftestArgs) -> Result<()> {
    if !matches!(a.device.as_str(), "all" | "cpu" | "cuda") {
        bail!("--device {:?}: expected all, cpu or cuda", a.device);
    }
    let opts = Options {
        quick: a.quick,
        ..Options::default()
    };
    let (mut passed, mut failed) = (0, 0);
    if a.device != "cpu" {
        #[cfg(feature = "cuda")]
        match kiln_cuda::CudaBackend::new(0) {
            Ok(be) => {
                let r = kiln_cuda::harness::check_all_cuda(&be, &opts);
                print("cuda", &r, a.verbose);
                println!(
                    "cuda ({}): {} passed, {} failed",
                    be.info().name,
                    r.passed(),
                    r.failed()
                );
                passed += r.passed();
                failed += r.failed();
            }
            Err(e) if a.device == "cuda" => bail!("{e}"),
            Err(e) => println!("cuda: skipped ({e})"),
        }
        #[cfg(not(feature = "cuda"))]
        {
            if a.device == "cuda" {
                bail!("this kiln was built without the cuda feature");
            }
            println!("cuda: skipped (built without the cuda feature)");
        }
    }
    let detected = CpuFeatures::detect();
    let mut backends = Vec::new();
    if a.device != "cuda" {
        backends.push(("cpu", CpuContext::with_features(a.threads, detected)?));
        if detected.has_avx2_fma() {
            backends.push((
                "cpu-scalar",
                CpuContext::with_features(a.threads, CpuFeatures::default())?,
            ));
        }
    }
    for (name, ctx) in &backends {
        let r = run_cpu(ctx, &opts);
        print(name, &r, a.verbose);
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
